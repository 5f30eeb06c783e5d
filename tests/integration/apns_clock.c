/*
 * apns-clock: drives callpush's APNs client against the stand-in on a
 * simulated clock, to test what only shows over hours of provider tokens.
 *
 * The client gets a clock that runs ahead of the real one by an offset,
 * and the offset (in seconds) is written to the stand-in's --clock-file,
 * so both sides agree on the simulated time.
 *
 *   apns-clock URL CA KEY KEY_ID TEAM_ID TOPIC CLOCK_FILE hour
 *     8 senders (clients with one connection each, sharing one token
 *     signer, as the worker's connections do) push once per simulated
 *     minute for 125 minutes.
 *
 *   apns-clock URL CA KEY KEY_ID TEAM_ID TOPIC CLOCK_FILE expired T0 T1 T2
 *     one client pushes to T0 at minute 0, to T1 at minute 25 and to T2 at
 *     minute 30; the stand-in is expected to call the token expired once
 *     for T1 and once for T2.
 *
 * Each push's result is printed as a JSON line; the caller checks them and
 * the stand-in's record. Exit status 0 when every push got a result.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apns.h"
#include "jwt.h"
#include "log.h"
#include "util.h"

#define SENDERS 8
#define HOUR_MINUTES 125

static int64_t offset_ms;
static const char *clock_file;
static int outstanding;

static int64_t
sim_now_ms(void)
{
    return util_now_ms() + offset_ms;
}

static void
set_minute(int minute)
{
    FILE *f = fopen(clock_file, "w");

    offset_ms = (int64_t)minute * 60 * 1000;
    if (f == NULL) {
        perror(clock_file);
        exit(1);
    }
    fprintf(f, "%" PRId64 "\n", offset_ms / 1000);
    fclose(f);
}

static void
on_done(void *ctx, const struct apns_push *push, const struct apns_result *res)
{
    int minute = (int)(intptr_t)ctx;

    printf("{\"minute\":%d,\"token\":\"%s\",\"status\":%d,\"action\":\"%s\","
           "\"attempts\":%d,\"reason\":\"",
           minute, push->token, res->status, apns_action_name(res->action),
           res->attempts);
    for (const char *p = res->reason; *p != '\0'; p++) {
        putchar(*p == '"' || *p == '\\' ? '\'' : *p);
    }
    printf("\"}\n");
    outstanding--;
}

static struct apns *
client(const char **argv, struct jwt *jwt)
{
    struct apns_opts o;
    char err[APNS_ERR_MAX];
    struct apns *a;

    memset(&o, 0, sizeof(o));
    o.production_url = argv[1];
    o.sandbox_url = argv[1];
    o.ca_file = argv[2];
    o.connections = 1;
    o.timeout_ms = 5000;
    o.jwt = jwt;
    o.clock_ms = sim_now_ms;
    a = apns_new(&o, on_done, err);
    if (a == NULL) {
        fprintf(stderr, "apns-clock: %s\n", err);
        exit(1);
    }
    return a;
}

static void
submit(struct apns *a, const char *token, int minute, int n)
{
    static char ids[64][37];
    static int next;
    static const char body[] = "{\"aps\":{\"alert\":\"clock\"}}";
    struct apns_push p;
    char *id = ids[next++ % 64];

    snprintf(id, 37, "00000000-0000-4000-8000-%012d", minute * 100 + n);
    memset(&p, 0, sizeof(p));
    p.token = token;
    p.apns_id = id;
    p.topic = "com.example.callpush";
    p.push_type = "alert";
    p.priority = 10;
    p.body = body;
    p.body_len = sizeof(body) - 1;
    p.give_up_ms = sim_now_ms() + 20000;
    p.ctx = (void *)(intptr_t)minute;
    outstanding++;
    apns_submit(a, &p);
}

static void
drain(struct apns **as, int n)
{
    /* Each client polls only its own sockets: take turns, briefly. */
    while (outstanding > 0) {
        for (int i = 0; i < n; i++) {
            apns_run(as[i]);
            apns_wait(as[i], NULL, 0, n > 1 ? 0 : 5);
        }
    }
}

int
main(int argc, const char **argv)
{
    char err[JWT_ERR_MAX];
    struct apns *as[SENDERS];
    struct jwt *jwt;
    static char tokens[SENDERS][65];

    if (argc < 9) {
        fputs("usage: apns-clock URL CA KEY KEY_ID TEAM_ID TOPIC CLOCK_FILE "
              "hour|expired T0 T1 T2\n",
              stderr);
        return 2;
    }
    clock_file = argv[7];
    set_minute(0);
    jwt = jwt_new(argv[3], argv[4], argv[5], err);
    if (jwt == NULL) {
        fprintf(stderr, "apns-clock: %s\n", err);
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    log_init(LOG_WARN, stderr);
    if (strcmp(argv[8], "hour") == 0) {
        for (int i = 0; i < SENDERS; i++) {
            as[i] = client(argv, jwt);
        }
        for (int m = 0; m <= HOUR_MINUTES; m++) {
            set_minute(m);
            for (int i = 0; i < SENDERS; i++) {
                snprintf(tokens[i], sizeof(tokens[i]), "%064x", 0x1000 + i);
                submit(as[i], tokens[i], m, i);
            }
            drain(as, SENDERS);
        }
        for (int i = 0; i < SENDERS; i++) {
            apns_free(as[i]);
        }
    } else if (strcmp(argv[8], "expired") == 0 && argc == 12) {
        static const int minutes[] = {0, 25, 30};

        as[0] = client(argv, jwt);
        for (int k = 0; k < 3; k++) {
            set_minute(minutes[k]);
            submit(as[0], argv[9 + k], minutes[k], k);
            drain(as, 1);
        }
        apns_free(as[0]);
    } else {
        fprintf(stderr, "apns-clock: unknown mode %s\n", argv[8]);
        return 2;
    }
    jwt_free(jwt);
    return 0;
}
