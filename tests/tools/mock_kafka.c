/*
 * mock-kafka: runs librdkafka's mock cluster as a process of its own, so
 * that the worker, kcat and test scripts can all reach one Kafka on
 * 127.0.0.1.
 *
 *   mock-kafka [--brokers N] [--topic NAME:PARTITIONS]...
 *              [--bootstrap-file FILE]
 *
 * It creates the topics, prints the bootstrap servers as one line on stdout
 * (and, atomically, into FILE), then serves until SIGTERM or SIGINT and
 * exits 0. For fault tests, SIGUSR1 takes every broker down (connections
 * dropped, new ones refused) and SIGUSR2 brings them back; each change is
 * confirmed by one line on stderr.
 *
 * The mock listens on 127.0.0.1 only, on ports the system picks; the
 * launcher checks the bootstrap list says so and refuses to run otherwise.
 * Each mock partition keeps about 5 MB of messages and at most 100,000
 * produce batches, dropping the oldest beyond that: 120,000 small batched
 * messages were all kept, while of 8 MB in 100-byte messages only the
 * newest 44,000 were. A large test spreads over more partitions.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64
#define MAX_BROKERS 16
#define MAX_PARTITIONS 1024

struct topic {
    char name[250];
    int partitions;
};

struct options {
    int brokers;
    struct topic topics[MAX_TOPICS];
    int ntopics;
    const char *bootstrap_file;
};

static const struct topic default_topics[] = {
    {"call.invite", 4},
    {"call.cancel", 4},
    {"push.feedback", 1},
    {"call.dlq", 1},
};

/* Set by the handlers, acted on by the main loop: the mock's calls take
 * locks and allocate, which a signal handler must not do. */
static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t down_requested;
static volatile sig_atomic_t up_requested;

static void
on_signal(int sig)
{
    if (sig == SIGUSR1) {
        down_requested = 1;
    } else if (sig == SIGUSR2) {
        up_requested = 1;
    } else {
        stop_requested = 1;
    }
}

static void
usage(FILE *out)
{
    fputs("Usage: mock-kafka [--brokers N] [--topic NAME:PARTITIONS]...\n"
          "                  [--bootstrap-file FILE]\n"
          "\n"
          "Runs librdkafka's mock Kafka cluster on 127.0.0.1 and prints its\n"
          "bootstrap servers on stdout, until SIGTERM or SIGINT.\n"
          "\n"
          "  --brokers N               brokers, 1 to 16 (default 1)\n"
          "  --topic NAME:PARTITIONS   a topic to create; repeatable (default\n"
          "                            call.invite:4 call.cancel:4\n"
          "                            push.feedback:1 call.dlq:1)\n"
          "  --bootstrap-file FILE     also write the bootstrap servers to\n"
          "                            FILE, through a temporary and rename\n"
          "\n"
          "SIGUSR1 takes every broker down; SIGUSR2 brings them back up.\n"
          "Each partition keeps about 5 MB (at most 100,000 batches), then\n"
          "drops the oldest.\n",
          out);
}

/* Parses a whole decimal number from min to max. Returns 0 or -1. */
static int
parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || n < min || n > max) {
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int
parse_topic(const char *arg, struct topic *t)
{
    const char *colon = strrchr(arg, ':');
    size_t n;

    if (colon == NULL || colon == arg) {
        return -1;
    }
    n = (size_t)(colon - arg);
    if (n >= sizeof(t->name)) {
        return -1;
    }
    memcpy(t->name, arg, n);
    t->name[n] = '\0';
    return parse_int(colon + 1, 1, MAX_PARTITIONS, &t->partitions);
}

/* Takes the value of the flag at argv[*i], as "--flag=value" or as the
 * next argument. Returns NULL when it is missing. */
static const char *
flag_value(int argc, char **argv, int *i, const char *flag)
{
    size_t n = strlen(flag);
    const char *arg = argv[*i];

    if (strncmp(arg, flag, n) != 0) {
        return NULL;
    }
    if (arg[n] == '=') {
        return arg + n + 1;
    }
    if (arg[n] == '\0' && *i + 1 < argc) {
        return argv[++*i];
    }
    return NULL;
}

static int
parse_args(int argc, char **argv, struct options *opt)
{
    int i;

    opt->brokers = 1;
    for (i = 1; i < argc; i++) {
        const char *v;

        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if ((v = flag_value(argc, argv, &i, "--brokers")) != NULL) {
            if (parse_int(v, 1, MAX_BROKERS, &opt->brokers) < 0) {
                fprintf(stderr,
                        "mock-kafka: --brokers: must be 1 to %d, "
                        "got \"%s\"\n",
                        MAX_BROKERS, v);
                return -1;
            }
        } else if ((v = flag_value(argc, argv, &i, "--topic")) != NULL) {
            if (opt->ntopics == MAX_TOPICS ||
                parse_topic(v, &opt->topics[opt->ntopics]) < 0) {
                fprintf(stderr,
                        "mock-kafka: --topic: must be NAME:PARTITIONS with "
                        "1 to %d partitions (at most %d topics), got \"%s\"\n",
                        MAX_PARTITIONS, MAX_TOPICS, v);
                return -1;
            }
            opt->ntopics++;
        } else if ((v = flag_value(argc, argv, &i, "--bootstrap-file")) !=
                   NULL) {
            opt->bootstrap_file = v;
        } else {
            fprintf(stderr,
                    "mock-kafka: unknown or incomplete argument "
                    "\"%s\"\n",
                    argv[i]);
            usage(stderr);
            return -1;
        }
    }

    if (opt->ntopics == 0) {
        memcpy(opt->topics, default_topics, sizeof(default_topics));
        opt->ntopics = (int)(sizeof(default_topics) / sizeof(*default_topics));
    }
    return 0;
}

/* Returns 0 when every server in the comma-separated list is on
 * 127.0.0.1. */
static int
check_loopback(const char *bootstraps)
{
    static const char prefix[] = "127.0.0.1:";
    const char *p = bootstraps;

    for (;;) {
        if (strncmp(p, prefix, sizeof(prefix) - 1) != 0) {
            return -1;
        }
        p = strchr(p, ',');
        if (p == NULL) {
            return 0;
        }
        p++;
    }
}

/* Writes text and a newline to path through a temporary in the same
 * directory and a rename, so a reader never sees half of it. */
static int
write_file_atomic(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    FILE *f;
    int result = -1;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof(tmp)) {
        fprintf(stderr, "mock-kafka: %s: path too long\n", path);
        return -1;
    }

    f = fopen(tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "mock-kafka: %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    if (fprintf(f, "%s\n", text) < 0 || fflush(f) != 0 || fsync(fileno(f))) {
        fprintf(stderr, "mock-kafka: %s: %s\n", tmp, strerror(errno));
        goto done;
    }
    if (fclose(f) != 0) {
        f = NULL;
        fprintf(stderr, "mock-kafka: %s: %s\n", tmp, strerror(errno));
        goto done;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "mock-kafka: %s: %s\n", path, strerror(errno));
        goto done;
    }
    result = 0;

done:
    if (f != NULL) {
        fclose(f);
    }
    if (result < 0) {
        unlink(tmp);
    }
    return result;
}

/* Takes every broker down or up: -1 reaches all of them at once. */
static void
set_brokers(rd_kafka_mock_cluster_t *mcluster, int up)
{
    rd_kafka_resp_err_t err;

    err = up ? rd_kafka_mock_broker_set_up(mcluster, -1)
             : rd_kafka_mock_broker_set_down(mcluster, -1);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "mock-kafka: setting brokers %s: %s\n",
                up ? "up" : "down", rd_kafka_err2str(err));
        return;
    }
    fprintf(stderr, "mock-kafka: brokers %s\n", up ? "up" : "down");
}

/* Sleeps until a signal arrives and acts on it, until told to stop. The
 * signals stay blocked outside sigsuspend(), so none is lost between the
 * check of a flag and the wait. */
static void
serve(rd_kafka_mock_cluster_t *mcluster, const sigset_t *waitmask)
{
    while (!stop_requested) {
        sigsuspend(waitmask);
        if (down_requested) {
            down_requested = 0;
            set_brokers(mcluster, 0);
        }
        if (up_requested) {
            up_requested = 0;
            set_brokers(mcluster, 1);
        }
    }
}

static int
install_signals(sigset_t *waitmask)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    sigset_t block;
    size_t i;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&block);
    for (i = 0; i < sizeof(sigs) / sizeof(*sigs); i++) {
        sigaddset(&block, sigs[i]);
        if (sigaction(sigs[i], &sa, NULL) != 0) {
            return -1;
        }
    }

    /* Blocked from here on, in this thread and in librdkafka's threads,
     * which inherit the mask: only sigsuspend() in serve() takes them. */
    return sigprocmask(SIG_BLOCK, &block, waitmask);
}

int
main(int argc, char **argv)
{
    struct options opt;
    rd_kafka_mock_cluster_t *mcluster = NULL;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    sigset_t waitmask;
    const char *bootstraps;
    char errstr[512];
    int i, result = 1;

    memset(&opt, 0, sizeof(opt));
    if (parse_args(argc, argv, &opt) < 0) {
        return 2;
    }
    if (install_signals(&waitmask) != 0) {
        fprintf(stderr, "mock-kafka: signals: %s\n", strerror(errno));
        return 1;
    }

    /* The mock cluster needs a client handle for its bookkeeping; this one
     * never connects anywhere, and at warning level it does not say that
     * it has no bootstrap servers. */
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "mock-kafka: client: %s\n", errstr);
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "mock-kafka: client: %s\n", errstr);
        return 1;
    }

    mcluster = rd_kafka_mock_cluster_new(rk, opt.brokers);
    if (mcluster == NULL) {
        fprintf(stderr, "mock-kafka: could not create the mock cluster\n");
        goto done;
    }
    for (i = 0; i < opt.ntopics; i++) {
        const struct topic *t = &opt.topics[i];
        int replicas = opt.brokers < 3 ? opt.brokers : 3;
        rd_kafka_resp_err_t err;

        err = rd_kafka_mock_topic_create(mcluster, t->name, t->partitions,
                                         replicas);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "mock-kafka: topic %s: %s\n", t->name,
                    rd_kafka_err2str(err));
            goto done;
        }
    }

    bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
    if (check_loopback(bootstraps) != 0) {
        fprintf(stderr,
                "mock-kafka: the mock listens beyond 127.0.0.1 (%s); "
                "refusing to run\n",
                bootstraps);
        goto done;
    }
    if (opt.bootstrap_file != NULL &&
        write_file_atomic(opt.bootstrap_file, bootstraps) < 0) {
        goto done;
    }
    printf("%s\n", bootstraps);
    fflush(stdout);

    serve(mcluster, &waitmask);
    result = 0;

done:
    if (mcluster != NULL) {
        rd_kafka_mock_cluster_destroy(mcluster);
    }
    rd_kafka_destroy(rk);
    return result;
}
