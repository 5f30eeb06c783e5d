#include "cmd_send.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apns.h"
#include "buf.h"
#include "cmd_check.h"
#include "config.h"
#include "event.h"
#include "jwt.h"
#include "log.h"
#include "payload.h"
#include "pipeline.h"
#include "util.h"

#define SEND_ERR_MAX 512
#define SEND_PRIORITY 10
#define SEND_PUSH_TYPE "alert"
#define SEND_MSGID_MAX_DIGITS 19 /* 2^63-1 has 19 */
#define SEND_URL_MAX 512
#define SEND_WAIT_MS 1000

/* What the command line asked for; the strings point into argv. */
struct send_args {
    char *token;
    char *type;
    char *call_id;
    char *msgid;
    char *caller;
    int video;
    int sandbox;
    int help;
    char **rest; /* argv for config_load(): argv[0] and the worker flags */
    int nrest;
};

/* APNs' final answer, copied out of the done callback, whose strings do
 * not outlive it. */
struct send_answer {
    int done;
    int status;
    enum apns_action action;
    char reason[APNS_REASON_MAX];
    char apns_id[64];
    int64_t timestamp_ms;
    int attempts;
    int gave_up;
};

static void
send_usage(FILE *out)
{
    fprintf(out,
            "usage: callpush send --token HEX [--type invite|cancel] "
            "[--call-id ID]\n"
            "                     [--msgid N] [--caller NAME] [--video] "
            "[--sandbox]\n"
            "                     [WORKER FLAGS...]\n"
            "\n"
            "Sends one push to one device the way the worker would for an\n"
            "event with these fields, created now, and prints the request\n"
            "and APNs' answer. The configuration is the worker's: every\n"
            "CALLPUSH_* variable and flag applies (callpush --help), except\n"
            "that CALLPUSH_BROKERS is not needed.\n"
            "\n"
            "  --token HEX       device token: an even number of hex digits,\n"
            "                    from %d to %d\n"
            "  --type TYPE       invite (default) or cancel\n"
            "  --call-id ID      collapse id, 1 to %d printable ASCII "
            "characters;\n"
            "                    default send-<unix time>\n"
            "  --msgid N         _j_msgid, up to 2^63-1; default the current "
            "time in ms\n"
            "  --caller NAME     caller's name, the alert body\n"
            "  --video           a video call (the video title)\n"
            "  --sandbox         the sandbox environment, whatever "
            "CALLPUSH_APNS_ENV says\n"
            "\n"
            "Exit status: 0 when APNs accepted the push, 1 on any other "
            "answer,\n"
            "2 on a usage or configuration error.\n",
            EVENT_TOKEN_MIN_HEX, EVENT_TOKEN_MAX_HEX, EVENT_CALL_ID_MAX);
}

/*
 * Takes the value of a flag named name (without "--") that arg spells: as
 * "--name=value" or as "--name" followed by a value that does not start
 * with "--", the way worker flags are read. Returns 1 when arg is this
 * flag (with *value set, NULL when none was given), 0 when it is not.
 */
static int
send_flag(char *arg, const char *name, char **argv, int argc, int *i,
          char **value)
{
    size_t n = strlen(name);

    if (strncmp(arg, "--", 2) != 0 || strncmp(arg + 2, name, n) != 0) {
        return 0;
    }
    if (arg[2 + n] == '=') {
        *value = arg + 2 + n + 1;
        return 1;
    }
    if (arg[2 + n] != '\0') {
        return 0;
    }
    if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        *value = argv[++*i];
    } else {
        *value = NULL;
    }
    return 1;
}

/* Sets *slot to value, refusing a missing value and a second one. */
static int
send_take(char **slot, char *value, const char *name, char *err)
{
    if (value == NULL) {
        snprintf(err, SEND_ERR_MAX, "--%s needs a value", name);
        return -1;
    }
    if (*slot != NULL) {
        snprintf(err, SEND_ERR_MAX, "--%s given twice", name);
        return -1;
    }
    *slot = value;
    return 0;
}

/*
 * Splits argv into this command's flags and the worker's, which go to
 * args->rest (an array the caller frees) behind argv[0]. Returns 0, or -1
 * with the reason in err.
 */
static int
send_parse(struct send_args *args, int argc, char **argv, char *err)
{
    static const char *const valued[] = {"token", "type", "call-id", "msgid",
                                         "caller"};
    int i;

    memset(args, 0, sizeof(*args));
    args->rest = xcalloc((size_t)argc + 1, sizeof(*args->rest));
    args->rest[args->nrest++] = argv[0];

    for (i = 1; i < argc; i++) {
        char **slots[] = {&args->token, &args->type, &args->call_id,
                          &args->msgid, &args->caller};
        char *arg = argv[i], *value;
        size_t k;
        int mine = 0;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            args->help = 1;
            return 0;
        }
        if (strcmp(arg, "--video") == 0) {
            args->video = 1;
            continue;
        }
        if (strcmp(arg, "--sandbox") == 0) {
            args->sandbox = 1;
            continue;
        }
        for (k = 0; k < UTIL_ARRAY_LEN(valued) && !mine; k++) {
            mine = send_flag(arg, valued[k], argv, argc, &i, &value);
            if (mine && send_take(slots[k], value, valued[k], err) < 0) {
                return -1;
            }
        }
        if (!mine) {
            args->rest[args->nrest++] = argv[i];
        }
    }

    if (args->token == NULL) {
        snprintf(err, SEND_ERR_MAX, "--token is required");
        return -1;
    }
    return 0;
}

/* The device token rules of the event decoder, with the same words. */
static int
send_check_token(const char *token, char *err)
{
    size_t len = strlen(token);

    if (strspn(token, "0123456789abcdefABCDEF") != len) {
        snprintf(err, SEND_ERR_MAX, "--token: not hexadecimal");
        return -1;
    }
    if (len < EVENT_TOKEN_MIN_HEX || len > EVENT_TOKEN_MAX_HEX) {
        snprintf(err, SEND_ERR_MAX,
                 "--token: must have %d to %d hex digits, not %zu",
                 EVENT_TOKEN_MIN_HEX, EVENT_TOKEN_MAX_HEX, len);
        return -1;
    }
    if (len % 2 != 0) {
        snprintf(err, SEND_ERR_MAX, "--token: odd number of hex digits");
        return -1;
    }
    return 0;
}

static int
send_check_call_id(const char *id, char *err)
{
    size_t len = strlen(id), i;

    if (len == 0 || len > EVENT_CALL_ID_MAX) {
        snprintf(err, SEND_ERR_MAX, "--call-id: must be 1 to %d bytes",
                 EVENT_CALL_ID_MAX);
        return -1;
    }
    for (i = 0; i < len; i++) {
        if (id[i] < 0x20 || id[i] > 0x7e) {
            snprintf(err, SEND_ERR_MAX, "--call-id: not printable ASCII");
            return -1;
        }
    }
    return 0;
}

/* Canonical decimal digits up to 2^63-1, as the event decoder wants a
 * _j_msgid string; stores the value in ev. */
static int
send_check_msgid(const char *s, struct event *ev, char *err)
{
    size_t len = strlen(s), i;
    uint64_t v = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            break;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (len == 0 || i < len || len > SEND_MSGID_MAX_DIGITS ||
        (len > 1 && s[0] == '0') || v > (uint64_t)INT64_MAX) {
        snprintf(err, SEND_ERR_MAX,
                 "--msgid: must be decimal digits without a leading zero, "
                 "at most 2^63-1");
        return -1;
    }
    ev->msgid_num = v;
    snprintf(ev->msgid, sizeof(ev->msgid), "%" PRIu64, v);
    return 0;
}

static int
send_check_caller(const char *name, char *err)
{
    size_t len = strlen(name);

    if (len == 0 || len > EVENT_NAME_MAX ||
        util_utf8_valid_prefix(name, len) != len) {
        snprintf(err, SEND_ERR_MAX,
                 "--caller: must be valid UTF-8 of 1 to %d bytes",
                 EVENT_NAME_MAX);
        return -1;
    }
    return 0;
}

/*
 * Fills ev from the arguments, with the defaults of a hand-made push.
 * call_id_buf holds the default call id, so ev borrows every string and
 * needs no event_release(). Returns 0, or -1 with err set.
 */
static int
send_event(struct event *ev, const struct send_args *args, char *call_id_buf,
           size_t call_id_len, char *err)
{
    int64_t now_ms = util_now_ms();

    memset(ev, 0, sizeof(*ev));
    if (send_check_token(args->token, err) < 0) {
        return -1;
    }
    ev->tokens[0] = args->token;
    ev->ntokens = 1;

    if (args->type == NULL || strcmp(args->type, "invite") == 0) {
        ev->type = EVENT_INVITE;
    } else if (strcmp(args->type, "cancel") == 0) {
        ev->type = EVENT_CANCEL;
    } else {
        snprintf(err, SEND_ERR_MAX, "--type: must be invite or cancel");
        return -1;
    }

    snprintf(call_id_buf, call_id_len, "send-%" PRId64, now_ms / 1000);
    if (args->call_id != NULL) {
        if (send_check_call_id(args->call_id, err) < 0) {
            return -1;
        }
        util_strlcpy(call_id_buf, args->call_id, call_id_len);
    }
    ev->call_id = call_id_buf;

    if (args->msgid != NULL) {
        if (send_check_msgid(args->msgid, ev, err) < 0) {
            return -1;
        }
    } else {
        ev->msgid_num = (uint64_t)now_ms;
        snprintf(ev->msgid, sizeof(ev->msgid), "%" PRIu64, ev->msgid_num);
    }

    if (args->caller != NULL) {
        if (send_check_caller(args->caller, err) < 0) {
            return -1;
        }
        ev->caller_name = args->caller;
    }
    ev->media = args->video ? EVENT_VIDEO : EVENT_AUDIO;
    ev->environment = args->sandbox ? EVENT_ENV_SANDBOX : EVENT_ENV_DEFAULT;
    ev->created_at_ms = now_ms;
    return 0;
}

static void
send_on_done(void *ctx, const struct apns_push *push,
             const struct apns_result *res)
{
    struct send_answer *ans = ctx;

    ans->done = 1;
    ans->status = res->status;
    ans->action = res->action;
    util_strlcpy(ans->reason, res->reason != NULL ? res->reason : "",
                 sizeof(ans->reason));
    util_strlcpy(ans->apns_id, res->apns_id != NULL ? res->apns_id : "",
                 sizeof(ans->apns_id));
    ans->timestamp_ms = res->timestamp_ms;
    ans->attempts = res->attempts;
    ans->gave_up = res->gave_up;
}

/* The request as apns.c sends it, in its header order; the provider
 * token is never shown. */
static void
send_print_request(const char *url, const struct apns_push *p, int with_token)
{
    printf("POST %s\n", url);
    if (with_token) {
        printf("authorization: bearer <redacted>\n");
    }
    printf("apns-push-type: %s\n", p->push_type);
    printf("apns-topic: %s\n", p->topic);
    printf("apns-priority: %d\n", p->priority);
    printf("apns-id: %s\n", p->apns_id);
    printf("apns-expiration: %" PRId64 "\n", p->expiration);
    printf("apns-collapse-id: %s\n", p->collapse_id);
    printf("content-type: application/json\n");
    printf("\n%.*s\n\n", (int)p->body_len, p->body);
    fflush(stdout);
}

/* What the worker does with a final answer of this kind, in words. */
static const char *
send_action_words(enum apns_action action)
{
    switch (action) {
    case APNS_DELIVERED:
        return "counts the push as delivered";
    case APNS_FIX:
        return "dead-letters the event without a retry: the request or "
               "the configuration is wrong";
    case APNS_INVALIDATE:
        return "reports the device token as dead on the feedback topic";
    case APNS_RETRY:
        return "retries with back-off until the push's give-up time";
    case APNS_RECONNECT:
        return "retries on a new connection until the push's give-up time";
    case APNS_REFRESH:
        return "signs a new provider token and resends once";
    }
    return "does not know this answer";
}

static void
send_print_answer(const struct send_answer *ans)
{
    printf("status: %d%s\n", ans->status,
           ans->status == 0 ? " (no answer from APNs)" : "");
    printf("reason: %s\n", ans->reason[0] != '\0' ? ans->reason : "(none)");
    printf("apns-id: %s\n", ans->apns_id);
    if (ans->timestamp_ms != 0) {
        printf("timestamp: %" PRId64 "\n", ans->timestamp_ms);
    }
    printf("attempts: %d%s\n", ans->attempts,
           ans->gave_up ? " (gave up: the push's give-up time passed)" : "");
    printf("action: %s (the worker %s)\n", apns_action_name(ans->action),
           send_action_words(ans->action));
    fflush(stdout);
}

/* Sends the push and waits for its final answer. */
static int
send_push(const struct config *cfg, struct jwt *jwt, struct apns_push *push,
          const char *url, struct send_answer *ans, char *err)
{
    char msg[APNS_ERR_MAX];
    struct apns_opts ao;
    struct apns *a;

    /* The worker's own settings, on one connection. */
    pipeline_apns_opts(cfg, jwt, &ao);
    ao.connections = 1;
    a = apns_new(&ao, send_on_done, msg);
    if (a == NULL) {
        snprintf(err, SEND_ERR_MAX, "APNs client: %s", msg);
        return -1;
    }

    send_print_request(url, push, jwt != NULL);
    push->ctx = ans;
    apns_submit(a, push);

    /* Every attempt has a deadline and no retry starts after give_up_ms,
     * so the done callback always fires. */
    while (!ans->done) {
        apns_run(a);
        if (!ans->done) {
            apns_wait(a, NULL, 0, SEND_WAIT_MS);
        }
    }
    apns_free(a);
    return 0;
}

/* The request the worker would make for one event and device. */
struct send_request {
    struct buf body;
    char apns_id[PAYLOAD_APNS_ID_LEN + 1];
    char url[SEND_URL_MAX];
    struct apns_push push;
};

/*
 * Builds req from ev with the configured texts, sound and timeouts, the
 * way the worker builds a push; req->body is initialised here and the
 * caller releases it. Returns 0, or -1 with err set.
 */
static int
send_request_build(struct send_request *req, const struct config *cfg,
                   const struct event *ev, int sandbox, char *err)
{
    char perr[PAYLOAD_ERR_MAX];
    struct payload_opts po;
    struct apns_push *p = &req->push;
    int cut = 0;

    po.invite_title = cfg->invite_title;
    po.invite_video_title = cfg->invite_video_title;
    po.cancel_title = cfg->cancel_title;
    po.cancel_video_title = cfg->cancel_video_title;
    po.sound = cfg->sound;
    po.ring_timeout_s = cfg->ring_timeout_s;
    po.cancel_expiration_s = cfg->cancel_expiration_s;
    if (payload_build(&req->body, ev, &po, PAYLOAD_ALERT_MAX, &cut, perr) < 0) {
        snprintf(err, SEND_ERR_MAX, "payload: %s", perr);
        return -1;
    }
    payload_apns_id(req->apns_id, ev->msgid, ev->tokens[0]);

    memset(p, 0, sizeof(*p));
    p->token = ev->tokens[0];
    p->apns_id = req->apns_id;
    p->collapse_id = ev->call_id;
    p->topic = cfg->apns_topic;
    p->push_type = SEND_PUSH_TYPE;
    p->priority = SEND_PRIORITY;
    p->expiration = payload_expiration(ev, &po);
    p->sandbox = sandbox;
    p->body = req->body.data;
    p->body_len = req->body.len;

    /* A few retries at most: a person is waiting for the answer. */
    p->give_up_ms = util_now_ms() + cfg->apns_timeout_ms;
    snprintf(req->url, sizeof(req->url), "%s/3/device/%s",
             pipeline_apns_url(cfg, sandbox), p->token);
    return 0;
}

int
cmd_send(int argc, char **argv)
{
    char err[SEND_ERR_MAX], msg[JWT_ERR_MAX];
    char call_id[EVENT_CALL_ID_MAX + 1];
    struct send_request req;
    struct send_answer ans;
    struct send_args args;
    struct jwt *jwt = NULL;
    struct config cfg;
    struct event ev;
    int sandbox, rc = 2;

    log_init(LOG_ERROR, stderr);
    /* A server that drops the connection must not kill the command on a
     * TLS write: the error is reported instead. */
    signal(SIGPIPE, SIG_IGN);
    memset(&cfg, 0, sizeof(cfg));
    memset(&ans, 0, sizeof(ans));
    buf_init(&req.body, PAYLOAD_ALERT_MAX + 64);

    if (send_parse(&args, argc, argv, err) < 0) {
        fprintf(stderr,
                "callpush send: %s\n"
                "(callpush send --help shows the usage)\n",
                err);
        goto done;
    }
    if (args.help) {
        send_usage(stdout);
        rc = 0;
        goto done;
    }
    if (send_event(&ev, &args, call_id, sizeof(call_id), err) < 0) {
        fprintf(stderr, "callpush send: %s\n", err);
        goto done;
    }
    if (cmd_check_load_config(&cfg, args.nrest, args.rest, err) < 0) {
        fprintf(stderr, "callpush send: configuration: %s\n", err);
        goto done;
    }
    sandbox = args.sandbox || strcmp(cfg.apns_env, "sandbox") == 0;
    if (send_request_build(&req, &cfg, &ev, sandbox, err) < 0) {
        fprintf(stderr, "callpush send: %s\n", err);
        goto done;
    }

    /* With certificate authentication there is no token to sign. */
    if (cfg.apns_cert_file[0] == '\0') {
        jwt =
            jwt_new(cfg.apns_key_file, cfg.apns_key_id, cfg.apns_team_id, msg);
    }
    if (jwt == NULL && cfg.apns_cert_file[0] == '\0') {
        fprintf(stderr, "callpush send: APNs signing key: %s\n", msg);
        goto done;
    }
    if (send_push(&cfg, jwt, &req.push, req.url, &ans, err) < 0) {
        fprintf(stderr, "callpush send: %s\n", err);
        goto done;
    }
    send_print_answer(&ans);
    rc = ans.status == 200 ? 0 : 1;

done:
    jwt_free(jwt);
    config_release(&cfg);
    buf_release(&req.body);
    free(args.rest);
    return rc;
}
