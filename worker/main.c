/*
 * callpush: turns call events from Kafka into APNs pushes.
 *
 * main() only dispatches: a subcommand runs from its own file, and the
 * daemon itself is config -> pipeline -> run -> shutdown.
 */
#define _DEFAULT_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <nghttp2/nghttp2.h>
#include <librdkafka/rdkafka.h>
#include <openssl/crypto.h>

#include "buf.h"
#include "cmd_check.h"
#include "cmd_send.h"
#include "cmd_validate.h"
#include "config.h"
#include "log.h"
#include "pipeline.h"
#include "util.h"

extern char **environ;

static struct pipeline *running;

static void
on_signal(int sig)
{
    static const char msg[] =
        "{\"level\":\"warn\",\"msg\":\"second signal: exiting at once; "
        "what was committed stays committed\"}\n";

    if (running != NULL && pipeline_stop(running) == 1) {
        /* Only async-signal-safe calls here. Offsets committed so far are
         * in Kafka; everything else is read again by the next owner. */
        if (write(STDOUT_FILENO, msg, sizeof(msg) - 1) < 0) {
            _exit(1);
        }
        _exit(1);
    }
}

static void
log_startup(const struct config *cfg)
{
    struct buf *line = log_begin(LOG_INFO, "starting");
    struct buf desc;

    if (line == NULL) {
        return;
    }
    buf_init(&desc, 32 * 1024);
    config_describe(cfg, &desc);
    log_str(line, "version", CALLPUSH_VERSION);
    log_str(line, "librdkafka", rd_kafka_version_str());
    log_str(line, "nghttp2", nghttp2_version(0)->version_str);
    log_str(line, "openssl", OpenSSL_version(OPENSSL_VERSION));
    log_str(line, "cjson", cJSON_Version());
    if (!buf_overflowed(&desc)) {
        log_raw(line, "config", desc.data);
    }
    log_end(line);
    buf_release(&desc);
}

static int
cmd_run(int argc, char **argv)
{
    struct config cfg;
    struct pipeline *pl;
    char err[CONFIG_ERR_MAX > PIPELINE_ERR_MAX ? CONFIG_ERR_MAX
                                               : PIPELINE_ERR_MAX];
    struct sigaction sa;
    int rc;

    if (config_load(&cfg, argc, argv, environ, err) < 0) {
        log_msg(LOG_ERROR, "invalid configuration", "%s", err);
        log_flush();
        fprintf(stderr, "callpush: %s\n", err);
        return 2;
    }
    log_init(cfg.log_level, NULL);
    log_startup(&cfg);

    pl = pipeline_new(&cfg, err);
    if (pl == NULL) {
        log_msg(LOG_ERROR, "cannot start", "%s", err);
        log_flush();
        fprintf(stderr, "callpush: %s\n", err);
        config_release(&cfg);
        return 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    running = pl;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = pipeline_run(pl);
    if (rc == PIPELINE_OUT_OF_TIME) {
        /* Tearing down could wait on brokers that are gone: the budget is
         * spent, so leave now. */
        log_msg(LOG_WARN, "shutdown budget spent: exiting at once", NULL);
        log_flush();
        _exit(1);
    }
    running = NULL;
    pipeline_free(pl);
    config_release(&cfg);
    log_flush();
    /* Events left unsettled were abandoned on purpose: not committed, they
     * go to the next owner. That is a clean stop. */
    return 0;
}

int
main(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    cJSON_Hooks hooks = {xmalloc, free};

    /* cJSON's allocations then abort on exhaustion like ours, instead of
     * reading as a parse error and dead-lettering a valid event. */
    cJSON_InitHooks(&hooks);

    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 ||
        strcmp(sub, "help") == 0) {
        config_print_help(stdout);
        return 0;
    }
    if (strcmp(sub, "--version") == 0 || strcmp(sub, "version") == 0) {
        printf("callpush %s\n", CALLPUSH_VERSION);
        return 0;
    }
    if (strcmp(sub, "validate") == 0) {
        return cmd_validate(argc - 1, argv + 1);
    }
    if (strcmp(sub, "send") == 0) {
        return cmd_send(argc - 1, argv + 1);
    }
    if (strcmp(sub, "check") == 0) {
        return cmd_check(argc - 1, argv + 1);
    }
    if (strcmp(sub, "run") == 0) {
        /* config_load() skips its argv[0]: here, the subcommand. */
        return cmd_run(argc - 1, argv + 1);
    }
    return cmd_run(argc, argv);
}
