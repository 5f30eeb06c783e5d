/*
 * transport-bench: how fast callpush's own APNs client (apns.h) delivers
 * pushes when nothing else runs: no Kafka, no decoding, no gate, no
 * payload building. tests/bench/compare.py runs it as the "transport"
 * side, between the h2load ceiling and the whole worker.
 *
 *   transport-bench --url URL --ca FILE --key FILE --key-id ID
 *                   --team-id ID --topic BUNDLE --pushes FILE
 *                   [--connections N] [--inflight M] [--timeout-ms MS]
 *
 * The pushes file holds one push per line, five fields separated by tabs:
 * _j_msgid, device token, collapse id, apns-expiration (UNIX seconds) and
 * the JSON body, exactly as the worker would send it. The whole file is
 * read before the clock starts. Then up to M pushes are kept in flight
 * until every one has its final result, and one JSON line goes to stdout:
 * pushes, delivered, failed, seconds (first submit to last result) and
 * pushes_per_s. The client's own log lines, warnings and errors only, go
 * to stderr.
 *
 * It uses the API the daemon uses and nothing more: apns_new,
 * apns_submit, apns_wait with no extra descriptors, apns_run and
 * apns_inflight, so it builds against any client behind that header.
 * A benchmark, not a test: it asserts nothing about speed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apns.h"
#include "jwt.h"
#include "log.h"
#include "payload.h"
#include "util.h"

#define TB_FIELDS 5
#define TB_WAIT_MS 50

struct tb_push {
    char *line; /* owns the fields below, which point into it */
    const char *msgid;
    const char *token;
    const char *collapse_id;
    int64_t expiration;
    const char *body;
    size_t body_len;
    char apns_id[PAYLOAD_APNS_ID_LEN + 1];
};

struct tb_opts {
    const char *url;
    const char *ca;
    const char *key;
    const char *key_id;
    const char *team_id;
    const char *topic;
    const char *pushes;
    int connections;
    int inflight;
    int timeout_ms;
};

struct tb_counts {
    size_t delivered;
    size_t failed;
    int last_status;
    char last_reason[APNS_REASON_MAX];
};

static double
tb_mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
tb_usage(void)
{
    fputs("usage: transport-bench --url URL --ca FILE --key FILE "
          "--key-id ID\n"
          "           --team-id ID --topic BUNDLE --pushes FILE\n"
          "           [--connections N] [--inflight M] [--timeout-ms MS]\n",
          stderr);
}

/* Splits one line of the pushes file in place; -1 when it is malformed. */
static int
tb_parse_line(struct tb_push *p, char *line)
{
    char *field[TB_FIELDS];
    char *end;
    size_t n = strlen(line);
    int i;

    if (n > 0 && line[n - 1] == '\n') {
        line[--n] = '\0';
    }
    field[0] = line;
    for (i = 1; i < TB_FIELDS; i++) {
        char *tab = strchr(field[i - 1], '\t');

        if (tab == NULL) {
            return -1;
        }
        *tab = '\0';
        field[i] = tab + 1;
    }

    errno = 0;
    p->expiration = strtoll(field[3], &end, 10);
    if (errno != 0 || end == field[3] || *end != '\0') {
        return -1;
    }
    p->line = line;
    p->msgid = field[0];
    p->token = field[1];
    p->collapse_id = field[2];
    p->body = field[4];
    p->body_len = strlen(field[4]);
    payload_apns_id(p->apns_id, p->msgid, p->token);
    return 0;
}

/* Reads every push of path into *out; returns how many, or -1. */
static long
tb_load(const char *path, struct tb_push **out)
{
    FILE *f = fopen(path, "r");
    struct tb_push *pushes = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t linecap = 0;

    if (f == NULL) {
        fprintf(stderr, "transport-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (getline(&line, &linecap, f) > 0) {
        if (n == cap) {
            cap = cap == 0 ? 1024 : cap * 2;
            pushes = xrealloc(pushes, cap * sizeof(*pushes));
        }
        if (tb_parse_line(&pushes[n], line) < 0) {
            fprintf(stderr,
                    "transport-bench: %s: line %zu is not "
                    "msgid, token, collapse id, expiration and body "
                    "separated by tabs\n",
                    path, n + 1);
            free(line);
            fclose(f);
            return -1;
        }

        /* The push keeps the line; getline allocates the next one. */
        n++;
        line = NULL;
        linecap = 0;
    }
    free(line);
    fclose(f);
    *out = pushes;
    return (long)n;
}

static void
tb_done(void *ctx, const struct apns_push *push, const struct apns_result *res)
{
    struct tb_counts *counts = ctx;

    if (res->action == APNS_DELIVERED) {
        counts->delivered++;
        return;
    }
    counts->failed++;
    counts->last_status = res->status;
    util_strlcpy(counts->last_reason, res->reason != NULL ? res->reason : "",
                 sizeof(counts->last_reason));
}

static int
tb_parse_int(const char *s, int min, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > 1000000) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int
tb_parse_args(struct tb_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"ca", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"key-id", required_argument, NULL, 'i'},
        {"team-id", required_argument, NULL, 't'},
        {"topic", required_argument, NULL, 'o'},
        {"pushes", required_argument, NULL, 'p'},
        {"connections", required_argument, NULL, 'n'},
        {"inflight", required_argument, NULL, 'm'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    int opt, rc = 0;

    o->connections = 2;
    o->inflight = 1000;
    o->timeout_ms = 10000;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            o->url = optarg;
            break;
        case 'c':
            o->ca = optarg;
            break;
        case 'k':
            o->key = optarg;
            break;
        case 'i':
            o->key_id = optarg;
            break;
        case 't':
            o->team_id = optarg;
            break;
        case 'o':
            o->topic = optarg;
            break;
        case 'p':
            o->pushes = optarg;
            break;
        case 'n':
            rc |= tb_parse_int(optarg, 1, &o->connections);
            break;
        case 'm':
            rc |= tb_parse_int(optarg, 1, &o->inflight);
            break;
        case 'T':
            rc |= tb_parse_int(optarg, 1, &o->timeout_ms);
            break;
        default:
            return -1;
        }
    }
    if (rc != 0 || optind != argc || o->url == NULL || o->key == NULL ||
        o->key_id == NULL || o->team_id == NULL || o->topic == NULL ||
        o->pushes == NULL) {
        return -1;
    }
    return 0;
}

/* Keeps up to inflight pushes submitted until every one has finished. */
static void
tb_run(struct apns *a, const struct tb_opts *o, const struct tb_push *pushes,
       size_t n, struct tb_counts *counts)
{
    struct apns_push ap;
    size_t next = 0;

    memset(&ap, 0, sizeof(ap));
    ap.topic = o->topic;
    ap.push_type = "alert";
    ap.priority = 10;

    /* Every push shares the one counter: the done callback only counts. */
    ap.ctx = counts;

    while (next < n || apns_inflight(a) > 0) {
        while (next < n && apns_inflight(a) < (size_t)o->inflight) {
            const struct tb_push *p = &pushes[next++];

            ap.token = p->token;
            ap.apns_id = p->apns_id;
            ap.collapse_id = p->collapse_id;
            ap.expiration = p->expiration;
            ap.body = p->body;
            ap.body_len = p->body_len;
            ap.give_up_ms = p->expiration * 1000;
            apns_submit(a, &ap);
        }
        apns_wait(a, NULL, 0, TB_WAIT_MS);
        apns_run(a);
    }
}

int
main(int argc, char **argv)
{
    struct tb_opts o;
    struct tb_counts counts;
    struct tb_push *pushes = NULL;
    struct apns_opts ao;
    struct apns *a = NULL;
    struct jwt *jwt = NULL;
    char err[APNS_ERR_MAX > JWT_ERR_MAX ? APNS_ERR_MAX : JWT_ERR_MAX];
    double start, secs;
    long n, i;
    int rc = 1;

    memset(&o, 0, sizeof(o));
    memset(&counts, 0, sizeof(counts));
    if (tb_parse_args(&o, argc, argv) < 0) {
        tb_usage();
        return 2;
    }
    /* The client may log its connections: stdout is for the result. */
    log_init(LOG_WARN, stderr);
    n = tb_load(o.pushes, &pushes);
    if (n < 0) {
        goto fail;
    }
    jwt = jwt_new(o.key, o.key_id, o.team_id, err);
    if (jwt == NULL) {
        fprintf(stderr, "transport-bench: %s: %s\n", o.key, err);
        goto fail;
    }

    memset(&ao, 0, sizeof(ao));
    ao.production_url = o.url;
    ao.sandbox_url = o.url;
    ao.ca_file = o.ca;
    ao.connections = o.connections;
    ao.timeout_ms = o.timeout_ms;
    ao.jwt = jwt;
    a = apns_new(&ao, tb_done, err);
    if (a == NULL) {
        fprintf(stderr, "transport-bench: APNs client: %s\n", err);
        goto fail;
    }

    start = tb_mono_s();
    tb_run(a, &o, pushes, (size_t)n, &counts);
    secs = tb_mono_s() - start;

    printf("{\"pushes\":%ld,\"delivered\":%zu,\"failed\":%zu,"
           "\"seconds\":%.3f,\"pushes_per_s\":%.0f,\"connections\":%d,"
           "\"inflight\":%d}\n",
           n, counts.delivered, counts.failed, secs,
           secs > 0 ? (double)counts.delivered / secs : 0.0, o.connections,
           o.inflight);
    if (counts.failed > 0) {
        fprintf(stderr,
                "transport-bench: %zu pushes failed, the last with "
                "status %d %s\n",
                counts.failed, counts.last_status, counts.last_reason);
    }
    rc = counts.failed == 0 && counts.delivered == (size_t)n ? 0 : 1;

fail:
    apns_free(a);
    jwt_free(jwt);
    for (i = 0; i < n; i++) {
        free(pushes[i].line);
    }
    free(pushes);
    return rc;
}
