#define _DEFAULT_SOURCE
#include "pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apns.h"
#include "buf.h"
#include "consumer.h"
#include "event.h"
#include "gate.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "admin.h"
#include "payload.h"
#include "producer.h"
#include "util.h"

/* Messages read per pass before APNs gets its turn again. */
#define PIPELINE_BATCH 256
#define PIPELINE_IDLE_MS 1000
/* Of the shutdown budget, what is kept for committing and leaving. */
#define PIPELINE_CLOSE_MS 5000
/* Kept at the very end of the budget for logging and exiting. */
#define PIPELINE_EXIT_MARGIN_MS 300
/* A created_at further ahead of the local clock than this is not trusted:
 * clocks disagree by seconds, not minutes. */
#define PIPELINE_FUTURE_SLACK_MS (5 * 60 * 1000)
/* Tombstones outlive the longest ring window an event may ask for, with a
 * margin for clocks that disagree. */
#define PIPELINE_TOMBSTONE_TTL_MS ((EVENT_RING_TIMEOUT_MAX + 60) * 1000LL)
/* The longest value a dead letter carries: an event above EVENT_MAX_BYTES
 * is refused for its size, so its head is all anyone needs to see. */
#define PIPELINE_DLQ_VALUE_MAX EVENT_MAX_BYTES

enum push_state {
    PUSH_PENDING,
    PUSH_DELIVERED,
    PUSH_DEAD_TOKEN, /* reported on the feedback topic */
    PUSH_EXPIRED,    /* the invite's ring window ended before APNs took it */
    PUSH_CANCELLED,  /* its call was cancelled while it waited to retry */
    PUSH_FAILED      /* APNs refused it for good, or retries ran out */
};

struct job;

/* What a Kafka message produced for a job was, so that its
 * acknowledgement is counted under the right name. */
struct ack {
    struct job *job;
    enum metrics_counter counter;
};

struct push {
    struct job *job;
    struct ack feedback_ack;
    const char *token;
    char apns_id[PAYLOAD_APNS_ID_LEN + 1];
    enum push_state state;
};

/* One Kafka message on its way to its outcome. */
struct job {
    struct pipeline *pl;
    struct job *prev, *next; /* the pipeline's list of open jobs */
    struct consumer_ticket ticket;
    char *value; /* the original bytes, for a dead letter */
    size_t len;
    int null_value; /* a tombstone: its dead letter keeps the null */
    char *key;
    size_t key_len;

    struct event ev;
    int decoded;
    struct buf payload;
    const char *apns_topic;
    /* apns-topic of voip pushes: the bundle id with ".voip" added. */
    char voip_topic[EVENT_TOPIC_MAX + sizeof(".voip")];
    int sandbox;

    struct push pushes[EVENT_MAX_TOKENS];
    size_t npending; /* pushes without a final result */
    size_t nacks;    /* Kafka messages sent and not yet acknowledged */
    int ack_failed;  /* one of them was not delivered: do not commit */
    struct ack dlq_ack;
    char dlq_reason[256];
    const char *outcome; /* set when the event is settled without pushes */
    const char *cause;
};

struct pipeline {
    const struct config *cfg;
    struct payload_opts popts;
    struct jwt *jwt;
    struct apns *apns;
    struct consumer *consumer;
    struct producer *producer;
    int wake[2]; /* librdkafka and signals write, the loop reads */
    volatile sig_atomic_t stopping;
    struct job *jobs; /* open jobs, newest first */
    size_t njobs;
    struct admin *admin;
    struct gate *gate;
    int voip;             /* CALLPUSH_PUSH_TYPE=voip */
    int64_t next_summary; /* monotonic ms */
};

static void job_settle(struct job *job);

static const char *
push_state_name(enum push_state s)
{
    switch (s) {
    case PUSH_PENDING:
        return "pending";
    case PUSH_DELIVERED:
        return "pushed";
    case PUSH_DEAD_TOKEN:
        return "dead_token";
    case PUSH_EXPIRED:
    case PUSH_CANCELLED:
        return "suppressed";
    case PUSH_FAILED:
        return "failed";
    }
    return "unknown";
}

/* Fields that identify an event and where it came from, on every line. */
static void
log_source(struct buf *line, const struct job *job)
{
    log_str(line, "topic",
            consumer_lane_topic(job->pl->consumer, job->ticket.lane));
    log_int(line, "partition", job->ticket.partition);
    log_int(line, "offset", job->ticket.offset);
    if (job->decoded) {
        log_str(line, "call_id", job->ev.call_id);
        log_raw(line, "_j_msgid", job->ev.msgid);
        log_str(line, "type", event_type_name(job->ev.type));
    }
}

static void
job_free(struct job *job)
{
    struct pipeline *pl = job->pl;

    if (job->prev != NULL) {
        job->prev->next = job->next;
    } else {
        pl->jobs = job->next;
    }
    if (job->next != NULL) {
        job->next->prev = job->prev;
    }
    pl->njobs--;
    if (job->decoded) {
        event_release(&job->ev);
    }
    buf_release(&job->payload);
    free(job->value);
    free(job->key);
    free(job);
}

/* The event's outcome is settled and every message about it acknowledged:
 * log it, let the commit pass it, and forget it. */
static void
job_final(struct job *job)
{
    size_t i, pushed = 0, dead = 0, expired = 0, failed = 0, cancelled = 0;
    const char *outcome = job->outcome;
    struct buf *line;

    for (i = 0; job->decoded && i < job->ev.ntokens; i++) {
        pushed += job->pushes[i].state == PUSH_DELIVERED;
        dead += job->pushes[i].state == PUSH_DEAD_TOKEN;
        expired += job->pushes[i].state == PUSH_EXPIRED;
        failed += job->pushes[i].state == PUSH_FAILED;
        cancelled += job->pushes[i].state == PUSH_CANCELLED;
    }
    if (outcome == NULL) {
        outcome = job->dlq_reason[0] != '\0' ? "dead_lettered"
                  : pushed > 0               ? "pushed"
                  : dead > 0                 ? "dead_token"
                                             : "suppressed";
        if (strcmp(outcome, "suppressed") == 0 && cancelled > 0) {
            job->cause = "cancelled";
            metrics_inc(METRICS_SUPPRESSED_CANCELLED);
        } else if (strcmp(outcome, "suppressed") == 0 && expired > 0) {
            job->cause = "expired";
            metrics_inc(METRICS_SUPPRESSED_EXPIRED);
        }
    }
    line = log_begin(job->ack_failed                         ? LOG_ERROR
                     : strcmp(outcome, "dead_lettered") == 0 ? LOG_WARN
                                                             : LOG_INFO,
                     "event settled");
    if (line != NULL) {
        log_source(line, job);
        log_str(line, "outcome", job->ack_failed ? "uncommitted" : outcome);
        if (job->cause != NULL) {
            log_str(line, "cause", job->cause);
        }
        if (job->dlq_reason[0] != '\0') {
            log_str(line, "reason", job->dlq_reason);
        }
        if (job->decoded) {
            log_int(line, "pushed", (int64_t)pushed);
            log_int(line, "dead_tokens", (int64_t)dead);
            log_int(line, "expired", (int64_t)expired);
            log_int(line, "failed", (int64_t)failed);
            log_int(line, "cancelled", (int64_t)cancelled);
        }
        log_end(line);
    }
    /* A Kafka message that could not be written leaves the event
     * uncommitted: it will be read again rather than lost. */
    if (!job->ack_failed) {
        consumer_done(job->pl->consumer, &job->ticket);
    }
    job_free(job);
}

static void
job_maybe_final(struct job *job)
{
    if (job->npending == 0 && job->nacks == 0) {
        job_final(job);
    }
}

static void
on_ack(void *opaque, const char *err)
{
    struct ack *ack = opaque;
    struct job *job = ack->job;

    job->nacks--;
    if (err == NULL) {
        metrics_inc(ack->counter);
    } else {
        job->ack_failed = 1;
        log_msg(LOG_ERROR, "Kafka did not take a message", "%s", err);
    }
    job_maybe_final(job);
}

static void
add_header(rd_kafka_headers_t *h, const char *name, const char *value)
{
    rd_kafka_header_add(h, name, -1, value, -1);
}

/* Produces the original bytes to the dead-letter topic, with headers that
 * say why and where they came from. */
static void
job_dead_letter(struct job *job)
{
    struct pipeline *pl = job->pl;
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);
    char num[32], err[PRODUCER_ERR_MAX];
    size_t len = job->len;

    add_header(h, "callpush-reason", job->dlq_reason);
    add_header(h, "callpush-source-topic",
               consumer_lane_topic(pl->consumer, job->ticket.lane));
    snprintf(num, sizeof(num), "%d", (int)job->ticket.partition);
    add_header(h, "callpush-source-partition", num);
    snprintf(num, sizeof(num), "%lld", (long long)job->ticket.offset);
    add_header(h, "callpush-source-offset", num);

    if (len > PIPELINE_DLQ_VALUE_MAX) {
        /* Whatever got in can still be refused on the way out (the DLQ
         * topic may allow less): keep the head, and say so. */
        snprintf(num, sizeof(num), "%zu", len);
        add_header(h, "callpush-original-bytes", num);
        len = PIPELINE_DLQ_VALUE_MAX;
    }

    if (producer_send(pl->producer, pl->cfg->dlq_topic, job->key, job->key_len,
                      job->null_value ? NULL : job->value, len, h,
                      &job->dlq_ack, err) < 0) {
        job->ack_failed = 1;
        log_msg(LOG_ERROR, "dead letter not produced", "%s", err);
        return;
    }
    job->nacks++;
}

/* Dead-letters an event that cannot be pushed; what names the stage that
 * refused it ("invalid event", "payload"). */
static void
reject(struct job *job, const char *what, const char *reason)
{
    snprintf(job->dlq_reason, sizeof(job->dlq_reason), "%s: %s", what, reason);
    job_dead_letter(job);
}

/* Reports a dead device token on the feedback topic, keyed by the token so
 * that whoever owns tokens sees each one's history in order. */
static void
report_dead_token(struct push *push, const struct apns_result *res)
{
    struct job *job = push->job;
    struct pipeline *pl = job->pl;
    char err[PRODUCER_ERR_MAX];
    struct buf b;

    buf_init(&b, 4096);
    buf_adds(&b, "{\"device_token\":");
    buf_json_strz(&b, push->token);
    buf_adds(&b, ",\"reason\":");
    buf_json_strz(&b, res->reason);
    buf_addf(&b, ",\"status\":%d,\"timestamp\":", res->status);
    if (res->timestamp_ms > 0) {
        buf_addf(&b, "%lld", (long long)res->timestamp_ms);
    } else {
        buf_adds(&b, "null");
    }
    buf_adds(&b, ",\"apns_topic\":");
    buf_json_strz(&b, job->apns_topic);
    buf_addf(&b, ",\"environment\":\"%s\",\"_j_uid\":",
             job->sandbox ? "sandbox" : "production");
    if (job->ev.uid_len == 0) {
        buf_adds(&b, "null");
    } else if (job->ev.uid_is_string) {
        buf_json_str(&b, job->ev.uid, job->ev.uid_len);
    } else {
        buf_add(&b, job->ev.uid, job->ev.uid_len);
    }
    buf_adds(&b, ",\"call_id\":");
    buf_json_strz(&b, job->ev.call_id);
    buf_addf(&b, ",\"_j_msgid\":%s}", job->ev.msgid);

    push->feedback_ack.job = job;
    push->feedback_ack.counter = METRICS_FEEDBACK;
    if (producer_send(pl->producer, pl->cfg->feedback_topic, push->token,
                      strlen(push->token), b.data, b.len, NULL,
                      &push->feedback_ack, err) < 0) {
        job->ack_failed = 1;
        log_msg(LOG_ERROR, "token feedback not produced", "%s", err);
    } else {
        job->nacks++;
    }
    buf_release(&b);
}

static void
log_push(const struct push *push, const struct apns_result *res)
{
    enum log_level lv = push->state == PUSH_FAILED ? LOG_WARN : LOG_INFO;
    struct buf *line;

    if (res->action == APNS_FIX) {
        /* Our request or configuration is wrong: say so loudly, once per
         * reason in a while, not once per push. */
        line = log_begin_limited(LOG_ERROR, "APNs rejected the request",
                                 res->reason);
        if (line != NULL) {
            log_int(line, "status", res->status);
            log_str(line, "reason", res->reason);
            log_str(line, "hint",
                    "configuration or payload error; "
                    "not retried");
            if (strcmp(res->reason, "ExpiredProviderToken") == 0) {
                /* A fresh token refused as expired: the clocks disagree. */
                log_int(line, "local_clock_s", util_now_ms() / 1000);
                log_int(line, "jwt_iat",
                        push->job->pl->jwt != NULL
                            ? jwt_issued_at(push->job->pl->jwt)
                            : 0);
            }
            log_end(line);
        }
    }
    line = log_begin(lv, "push");
    if (line == NULL) {
        return;
    }
    log_source(line, push->job);
    log_token(line, "token", push->token);
    log_int(line, "status", res->status);
    log_str(line, "reason", res->reason[0] != '\0' ? res->reason : NULL);
    log_str(line, "apns_id", res->apns_id);
    log_int(line, "attempts", res->attempts);
    log_str(line, "outcome", push_state_name(push->state));
    if (res->action == APNS_INVALIDATE &&
        strcmp(res->reason, "BadDeviceToken") == 0) {
        log_str(line, "hint",
                "a sandbox token sent to production (or the "
                "reverse) also looks like this");
    }
    log_end(line);
}

/* Counts an APNs answer, and what it says about reachability and
 * credentials for /readyz. */
static void
push_metrics(const struct job *job, const struct apns_result *res)
{
    if (res->dropped) {
        return; /* a suppression, counted when its event settles */
    }
    /* Without an answer the reason is free text (hosts, ports, library
     * errors): one label value for all of them keeps the series few. */
    metrics_push(res->status, res->status != 0 ? res->reason : "no answer");
    if (res->attempts > 1) {
        metrics_add(METRICS_RETRIES, (uint64_t)(res->attempts - 1));
    }
    if (res->status == 200) {
        metrics_latency(
            job->ev.type == EVENT_INVITE ? METRICS_INVITE : METRICS_CANCEL,
            (double)(util_now_ms() - job->ev.created_at_ms) / 1000.0);
        metrics_set(METRICS_APNS_OK, 1);
        metrics_set(METRICS_CREDENTIALS_OK, 1);
    } else if (res->status == 0) {
        metrics_set(METRICS_APNS_OK, 0);
    } else if (res->status == 403) {
        metrics_set(METRICS_CREDENTIALS_OK, 0);
    }
}

/* Whether a push waiting to retry is still worth sending: not an invite
 * whose call was cancelled meanwhile. */
static int
push_wanted(void *ctx)
{
    struct push *push = ctx;
    struct job *job = push->job;

    return job->ev.type != EVENT_INVITE ||
           !gate_cancelled(job->pl->gate, job->ev.call_id, util_now_ms());
}

static void
on_push_done(void *ctx, const struct apns_push *ap,
             const struct apns_result *res)
{
    struct push *push = ctx;
    struct job *job = push->job;

    switch (res->action) {
    case APNS_DELIVERED:
        push->state = PUSH_DELIVERED;
        break;
    case APNS_RETRY:
    case APNS_RECONNECT:
    case APNS_REFRESH:
        if (res->dropped) {
            push->state = PUSH_CANCELLED;
            break;
        }
        /* An invite that ran out of ring time is not worth a dead letter:
         * nobody can answer that call any more. */
        push->state = res->gave_up && job->ev.type == EVENT_INVITE
                          ? PUSH_EXPIRED
                          : PUSH_FAILED;
        break;
    case APNS_INVALIDATE:
        push->state = PUSH_DEAD_TOKEN;
        break;
    case APNS_FIX:
        /* Our request or configuration is wrong: retrying cannot help. */
        push->state = PUSH_FAILED;
        break;
    }
    push_metrics(job, res);
    log_push(push, res);
    if (push->state == PUSH_DEAD_TOKEN) {
        report_dead_token(push, res);
    }
    if (push->state == PUSH_FAILED && job->dlq_reason[0] == '\0') {
        snprintf(job->dlq_reason, sizeof(job->dlq_reason),
                 "apns: %d %s (%s, after %d attempts)", res->status,
                 res->reason, apns_action_name(res->action), res->attempts);
    }
    job->npending--;
    if (job->npending == 0) {
        job_settle(job);
    }
}

/* Every push of the event has its result: dead-letter it if one failed. */
static void
job_settle(struct job *job)
{
    if (job->dlq_reason[0] != '\0') {
        job_dead_letter(job);
    }
    job_maybe_final(job);
}

static void
job_push(struct job *job)
{
    struct pipeline *pl = job->pl;
    const struct event *ev = &job->ev;
    struct apns_push ap;
    size_t i;

    memset(&ap, 0, sizeof(ap));
    ap.collapse_id = ev->call_id;
    ap.topic = job->apns_topic;
    ap.push_type = pl->cfg->push_type;
    if (pl->voip) {
        /* APNs takes voip pushes only on the app's ".voip" topic. */
        snprintf(job->voip_topic, sizeof(job->voip_topic), "%s.voip",
                 job->apns_topic);
        ap.topic = job->voip_topic;
    }
    ap.priority = 10;
    ap.expiration = payload_expiration(ev, &pl->popts);
    ap.sandbox = job->sandbox;
    ap.body = job->payload.data;
    ap.body_len = job->payload.len;
    /* A cancel must never wait for a stream behind a backlog of invites. */
    ap.urgent = ev->type == EVENT_CANCEL;
    ap.give_up_ms = ev->type == EVENT_INVITE
                        ? payload_ring_end_ms(ev, &pl->popts)
                        : ap.expiration * 1000;

    job->npending = ev->ntokens;
    for (i = 0; i < ev->ntokens; i++) {
        struct push *push = &job->pushes[i];

        push->job = job;
        push->token = ev->tokens[i];
        push->state = PUSH_PENDING;
        payload_apns_id(push->apns_id, ev->msgid, push->token);
        ap.token = push->token;
        ap.apns_id = push->apns_id;
        ap.ctx = push;
        apns_submit(pl->apns, &ap);
    }
}

/*
 * Asks the gate whether the event is worth pushing. An invite for a call
 * already cancelled, or whose ring window has passed, would ring a phone
 * for a call nobody is making any more; a message handled already would
 * ring twice. Returns -1 when the event is settled as suppressed.
 */
static int
gate_event(struct job *job, const rd_kafka_message_t *m)
{
    struct pipeline *pl = job->pl;
    int64_t now = util_now_ms();
    enum gate_verdict v;

    if (job->ev.created_at_ms == 0 ||
        job->ev.created_at_ms > now + PIPELINE_FUTURE_SLACK_MS) {
        /* Without created_at, or with one far ahead of this clock (which
         * would stretch the ring window), the broker's timestamp is the
         * best guess at when the call started. */
        struct buf *line = log_begin_limited(
            LOG_WARN,
            job->ev.created_at_ms == 0
                ? "created_at missing: using the Kafka timestamp"
                : "created_at in the future: using the Kafka timestamp",
            job->ev.call_id);

        if (line != NULL) {
            log_source(line, job);
            log_int(line, "created_at", job->ev.created_at_ms);
            log_int(line, "kafka_timestamp",
                    rd_kafka_message_timestamp(m, NULL));
            log_end(line);
        }
        job->ev.created_at_ms = rd_kafka_message_timestamp(m, NULL);
    }
    v = gate_check(pl->gate, &job->ev,
                   payload_ring_end_ms(&job->ev, &pl->popts), now);
    if (v == GATE_PASS && job->ev.type == EVENT_CANCEL &&
        pl->cfg->cancel_expiration_s > 0 &&
        payload_expiration(&job->ev, &pl->popts) * 1000 <= now) {
        /* Past its own expiration APNs would drop it anyway; its
         * tombstone is recorded all the same. */
        v = GATE_LATE;
    }
    if (v == GATE_PASS) {
        return 0;
    }
    job->outcome = "suppressed";
    job->cause = gate_verdict_name(v);
    metrics_inc(v == GATE_DUPLICATE   ? METRICS_SUPPRESSED_DUPLICATE
                : v == GATE_CANCELLED ? METRICS_SUPPRESSED_CANCELLED
                                      : METRICS_SUPPRESSED_LATE);
    return -1;
}

/* Takes one consumed message as far as it can go now. */
static void
job_start(struct pipeline *pl, rd_kafka_message_t *m,
          const struct consumer_ticket *t)
{
    struct job *job = xcalloc(1, sizeof(*job));
    char err[EVENT_ERR_MAX > PAYLOAD_ERR_MAX ? EVENT_ERR_MAX : PAYLOAD_ERR_MAX];
    int cut = 0;

    pl->njobs++;
    job->pl = pl;
    job->next = pl->jobs;
    if (pl->jobs != NULL) {
        pl->jobs->prev = job;
    }
    pl->jobs = job;
    job->ticket = *t;
    job->dlq_ack.job = job;
    job->dlq_ack.counter = METRICS_DEAD_LETTERS;
    /* An oversize message is refused unread: only its head is kept, for
     * the dead letter. */
    job->value = xstrndup(
        m->payload ? m->payload : "",
        m->len < PIPELINE_DLQ_VALUE_MAX ? m->len : PIPELINE_DLQ_VALUE_MAX);
    job->len = m->len;
    job->null_value = m->payload == NULL;
    if (m->key != NULL) {
        job->key = xstrndup(m->key, m->key_len);
        job->key_len = m->key_len;
    }
    buf_init(&job->payload, PAYLOAD_VOIP_MAX + 64);

    if (m->len > EVENT_MAX_BYTES) {
        snprintf(err, sizeof(err), "message of %zu bytes exceeds %d", m->len,
                 EVENT_MAX_BYTES);
        metrics_inc(METRICS_EVENTS_INVALID);
        reject(job, "invalid event", err);
        goto out;
    }
    if (event_decode_flags(&job->ev, job->value, job->len,
                           EVENT_DECODE_NO_CREATED_AT, err) < 0) {
        metrics_inc(METRICS_EVENTS_INVALID);
        reject(job, "invalid event", err);
        goto out;
    }
    job->decoded = 1;
    metrics_inc(job->ev.type == EVENT_INVITE ? METRICS_EVENTS_INVITE
                                             : METRICS_EVENTS_CANCEL);
    job->apns_topic =
        job->ev.apns_topic ? job->ev.apns_topic : pl->cfg->apns_topic;
    job->sandbox = job->ev.environment == EVENT_ENV_DEFAULT
                       ? strcmp(pl->cfg->apns_env, "sandbox") == 0
                       : job->ev.environment == EVENT_ENV_SANDBOX;

    if (gate_event(job, m) < 0) {
        goto out;
    }
    if (payload_build(&job->payload, &job->ev, &pl->popts,
                      pl->voip ? PAYLOAD_VOIP_MAX : PAYLOAD_ALERT_MAX, &cut,
                      err) < 0) {
        reject(job, "payload", err);
        goto out;
    }
    job_push(job);
    return;

out:
    job_maybe_final(job);
}

static void
drain_wake(struct pipeline *pl)
{
    char junk[256];

    while (read(pl->wake[0], junk, sizeof(junk)) > 0) {
    }
}

/* A cancel read back from before the committed offset (another worker
 * settled it): it only leaves its tombstone and its _j_msgid behind. */
static void
replay_message(struct pipeline *pl, const rd_kafka_message_t *m)
{
    char err[EVENT_ERR_MAX];
    struct event ev;

    if (m->payload == NULL || m->len > EVENT_MAX_BYTES ||
        rd_kafka_message_timestamp(m, NULL) <
            util_now_ms() - PIPELINE_TOMBSTONE_TTL_MS ||
        event_decode(&ev, m->payload, m->len, err) < 0) {
        return;
    }
    if (ev.type == EVENT_CANCEL) {
        gate_check(pl->gate, &ev, 0, util_now_ms());
    }
    event_release(&ev);
}

/* Reads up to a batch from one lane; invites only while APNs has room.
 * Returns 1 when more may be waiting. */
static int
consume_lane(struct pipeline *pl, enum consumer_lane lane)
{
    struct consumer_ticket t;
    rd_kafka_message_t *m;
    int n;

    for (n = 0; n < PIPELINE_BATCH; n++) {
        /* Cancels never wait for room: a cancel stuck behind a backlog of
         * invites would leave phones ringing for nobody. */
        if (lane == LANE_INVITE &&
            apns_inflight(pl->apns) >= (size_t)pl->cfg->max_inflight) {
            return 0;
        }
        m = consumer_next(pl->consumer, lane, &t);
        if (m == NULL) {
            return 0;
        }
        if (t.replay) {
            replay_message(pl, m);
        } else {
            job_start(pl, m, &t);
        }
        rd_kafka_message_destroy(m);
    }
    return 1;
}

/* Reads what is waiting, cancels first. Returns 1 when more may be
 * waiting. */
static int
consume(struct pipeline *pl)
{
    size_t before = apns_inflight(pl->apns);
    int more = consume_lane(pl, LANE_CANCEL);

    /* Cancels just read go out now, not after a batch of invites. */
    if (apns_inflight(pl->apns) != before) {
        apns_run(pl->apns);
    }
    return consume_lane(pl, LANE_INVITE) | more;
}

/* What the APNs connections went through since start, for the summary. */
static void
log_apns_stats(struct buf *line, const struct apns *a)
{
    struct apns_stats st;

    apns_get_stats(a, &st);
    log_int(line, "apns_connects", (int64_t)st.connects);
    log_int(line, "apns_connect_fails", (int64_t)st.connect_fails);
    log_int(line, "apns_goaways", (int64_t)st.goaways);
    log_int(line, "apns_resent", (int64_t)st.resent);
    log_int(line, "apns_timeouts", (int64_t)st.timeouts);
    log_int(line, "apns_ping_fails", (int64_t)st.ping_fails);
    log_int(line, "apns_token_renewals", (int64_t)st.token_renewals);
    log_int(line, "apns_token_moves", (int64_t)st.token_moves);
}

/* One line with the counters and the lag, for operators who read logs
 * rather than dashboards. */
static void
log_summary(struct pipeline *pl)
{
    struct buf *line = log_begin(LOG_INFO, "summary");

    if (line == NULL) {
        return;
    }
    log_int(line, "invites", (int64_t)metrics_get(METRICS_EVENTS_INVITE));
    log_int(line, "cancels", (int64_t)metrics_get(METRICS_EVENTS_CANCEL));
    log_int(line, "invalid", (int64_t)metrics_get(METRICS_EVENTS_INVALID));
    log_int(line, "pushed", (int64_t)metrics_pushes(200));
    log_int(line, "suppressed_late",
            (int64_t)metrics_get(METRICS_SUPPRESSED_LATE));
    log_int(line, "suppressed_expired",
            (int64_t)metrics_get(METRICS_SUPPRESSED_EXPIRED));
    log_int(line, "retries", (int64_t)metrics_get(METRICS_RETRIES));
    log_int(line, "dead_letters", (int64_t)metrics_get(METRICS_DEAD_LETTERS));
    log_int(line, "feedback", (int64_t)metrics_get(METRICS_FEEDBACK));
    log_int(line, "in_flight", metrics_gauge(METRICS_INFLIGHT));
    log_int(line, "apns_connections", metrics_gauge(METRICS_APNS_CONNECTIONS));
    log_int(line, "assigned_partitions", metrics_gauge(METRICS_ASSIGNED));
    log_int(line, "consumer_lag", metrics_lag_total());
    log_apns_stats(line, pl->apns);
    log_end(line);
}

/* Gauges the admin listener reads, refreshed once per pass. */
static void
update_gauges(struct pipeline *pl)
{
    int64_t now = util_mono_ms();

    metrics_set(METRICS_LOOP_HEARTBEAT_MS, now);
    metrics_set(METRICS_INFLIGHT, (int64_t)apns_inflight(pl->apns));
    metrics_set(METRICS_APNS_CONNECTIONS, apns_connections(pl->apns));
    if (pl->jwt != NULL) {
        metrics_set(METRICS_JWT_IAT, jwt_issued_at(pl->jwt));
    }
    if (pl->cfg->summary_interval_s > 0 && now >= pl->next_summary) {
        if (pl->next_summary > 0) {
            log_summary(pl);
        }
        pl->next_summary = now + pl->cfg->summary_interval_s * 1000LL;
    }
}

static void
step(struct pipeline *pl, int more)
{
    struct pollfd wfd;

    update_gauges(pl);
    wfd.fd = pl->wake[0];
    wfd.events = POLLIN;
    wfd.revents = 0;
    consumer_store(pl->consumer);
    log_flush();
    apns_wait(pl->apns, &wfd, 1, more ? 0 : PIPELINE_IDLE_MS);
    drain_wake(pl);
    producer_poll(pl->producer);
    apns_run(pl->apns);
}

/*
 * Partitions are about to be revoked (a rebalance). The eager protocol
 * takes every partition away, so let everything in flight settle, up to
 * one APNs deadline, before the consumer commits and lets go: otherwise
 * the next owner reads the unsettled events again and pushes them twice.
 * Runs inside consumer_next(), so it never reads new messages.
 */
static void
on_revoke(void *ctx)
{
    struct pipeline *pl = ctx;
    int64_t deadline;

    if (pl->stopping) {
        return; /* the shutdown drain already waited */
    }
    deadline = util_mono_ms() + pl->cfg->apns_timeout_ms + 1000;
    while (pl->njobs > 0 && util_mono_ms() < deadline) {
        step(pl, 0);
    }
    if (pl->njobs > 0) {
        log_msg(LOG_WARN, "partitions revoked with events in flight",
                "%zu events will be read again by the next owner", pl->njobs);
    }
}

int
pipeline_run(struct pipeline *pl)
{
    int64_t end, settle_end, reserve;
    int more = 0, left;

    log_msg(LOG_INFO, "worker running", NULL);
    while (!pl->stopping) {
        step(pl, more);
        more = consume(pl);
        apns_run(pl->apns);
    }

    /* Stop reading. Pushes in flight get the budget, less a reserve for
     * committing, leaving the group and flushing the producer. */
    end = util_mono_ms() + pl->cfg->shutdown_budget_s * 1000LL;
    reserve = pl->cfg->shutdown_budget_s * 1000LL / 4;
    settle_end =
        end - (reserve < PIPELINE_CLOSE_MS ? reserve : PIPELINE_CLOSE_MS);
    log_msg(LOG_INFO, "stopping", "%zu events in flight, %d s to settle",
            pl->njobs, pl->cfg->shutdown_budget_s);
    while (pl->njobs > 0 && util_mono_ms() < settle_end) {
        step(pl, 0);
    }
    consumer_store(pl->consumer);
    /* Leaving a margin, so that a close that runs out of time still ends
     * inside the budget. */
    if (consumer_close(pl->consumer, (int)(end - PIPELINE_EXIT_MARGIN_MS -
                                           util_mono_ms())) < 0) {
        log_msg(LOG_WARN, "left the group without a goodbye",
                "the brokers did not answer in time; offsets committed "
                "before stay committed");
    }
    left = producer_flush(
        pl->producer, (int)(end - PIPELINE_EXIT_MARGIN_MS - util_mono_ms()));
    log_msg(LOG_INFO, "stopped",
            "%zu events left unsettled (read again by the next owner), "
            "%d Kafka messages unacknowledged",
            pl->njobs, left);
    log_flush();
    if (util_mono_ms() >= end - PIPELINE_EXIT_MARGIN_MS) {
        return PIPELINE_OUT_OF_TIME;
    }
    return pl->njobs == 0 && left == 0 ? 0 : -1;
}

int
pipeline_stop(struct pipeline *pl)
{
    int saved = errno;

    if (pl->stopping) {
        return 1;
    }
    pl->stopping = 1;
    if (write(pl->wake[1], "s", 1) < 0) {
        /* The pipe is full, so the loop is awake anyway. */
    }
    errno = saved;
    return 0;
}

static int
make_wake_pipe(int fds[2], char *err)
{
    int i;

    if (pipe(fds) < 0) {
        snprintf(err, PIPELINE_ERR_MAX, "pipe: %s", strerror(errno));
        return -1;
    }
    for (i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

const char *
pipeline_apns_url(const struct config *cfg, int sandbox)
{
    /* An explicit URL replaces both hosts: stand-ins and proxies serve
     * either environment, unless sandbox has its own. */
    if (sandbox && cfg->apns_sandbox_url[0] != '\0') {
        return cfg->apns_sandbox_url;
    }
    if (cfg->apns_url[0] != '\0') {
        return cfg->apns_url;
    }
    return sandbox ? APNS_SANDBOX_URL : APNS_PRODUCTION_URL;
}

void
pipeline_apns_opts(const struct config *cfg, struct jwt *jwt,
                   struct apns_opts *ao)
{
    memset(ao, 0, sizeof(*ao));
    ao->production_url = pipeline_apns_url(cfg, 0);
    ao->sandbox_url = pipeline_apns_url(cfg, 1);
    ao->ca_file = cfg->apns_ca_file[0] != '\0' ? cfg->apns_ca_file : NULL;
    ao->connections = cfg->apns_connections;
    ao->timeout_ms = cfg->apns_timeout_ms;
    ao->ping_interval_ms = cfg->apns_ping_interval_ms;
    ao->proxy = cfg->apns_proxy[0] != '\0' ? cfg->apns_proxy : NULL;
    ao->proxy_from_env = ao->proxy == NULL;
    ao->jwt = jwt;
    if (cfg->apns_cert_file[0] != '\0') {
        ao->jwt = NULL;
        ao->cert_file = cfg->apns_cert_file;
        ao->cert_key_file = cfg->apns_cert_key_file;
        ao->cert_password_file = cfg->apns_cert_password_file[0] != '\0'
                                     ? cfg->apns_cert_password_file
                                     : NULL;
    }
}

struct pipeline *
pipeline_new(const struct config *cfg, char *err)
{
    struct pipeline *pl = xcalloc(1, sizeof(*pl));
    struct apns_opts ao;
    struct gate_opts go;
    char msg[PIPELINE_ERR_MAX / 2];

    pl->cfg = cfg;
    pl->voip = strcmp(cfg->push_type, "voip") == 0;
    pl->wake[0] = pl->wake[1] = -1;
    pl->popts.invite_title = cfg->invite_title;
    pl->popts.invite_video_title = cfg->invite_video_title;
    pl->popts.cancel_title = cfg->cancel_title;
    pl->popts.cancel_video_title = cfg->cancel_video_title;
    pl->popts.sound = cfg->sound;
    pl->popts.ring_timeout_s = cfg->ring_timeout_s;
    pl->popts.cancel_expiration_s = cfg->cancel_expiration_s;

    if (make_wake_pipe(pl->wake, err) < 0) {
        goto fail;
    }
    /* Configuration allows exactly one of the two: with a client
     * certificate there is no provider token to sign. */
    if (cfg->apns_cert_file[0] == '\0') {
        pl->jwt = jwt_new(cfg->apns_key_file, cfg->apns_key_id,
                          cfg->apns_team_id, msg);
        if (pl->jwt == NULL) {
            snprintf(err, PIPELINE_ERR_MAX,
                     "APNs signing key (CALLPUSH_APNS_KEY_FILE): %s", msg);
            goto fail;
        }
        if (jwt_token(pl->jwt, util_now_ms() / 1000, msg) == NULL) {
            snprintf(err, PIPELINE_ERR_MAX, "cannot sign a provider token: %s",
                     msg);
            goto fail;
        }
    }

    pipeline_apns_opts(cfg, pl->jwt, &ao);
    ao.wanted = push_wanted;
    go.dedupe_window_ms = cfg->dedupe_window_s * 1000LL;
    go.tombstone_ttl_ms = PIPELINE_TOMBSTONE_TTL_MS;
    go.max_msgids = (size_t)cfg->dedupe_entries;
    go.max_tombstones = (size_t)cfg->tombstone_entries;
    go.min_ring_left_ms = cfg->min_ring_left_s * 1000LL;
    pl->gate = gate_new(&go);
    pl->apns = apns_new(&ao, on_push_done, msg);
    if (pl->apns == NULL) {
        snprintf(err, PIPELINE_ERR_MAX, "APNs client: %s", msg);
        goto fail;
    }
    pl->producer = producer_new(cfg, pl->wake[1], on_ack, msg);
    if (pl->producer == NULL) {
        util_strlcpy(err, msg, PIPELINE_ERR_MAX);
        goto fail;
    }
    metrics_set(METRICS_CREDENTIALS_OK, 1);
    /* NEEDSWORK: assumed reachable until an attempt says otherwise. A TLS
     * probe at start (what "callpush check" does) would make /readyz wait
     * for a real connection, at the cost of delaying every start by up to
     * one APNs deadline when APNs is unreachable. */
    metrics_set(METRICS_APNS_OK, 1);
    pl->admin = admin_start(cfg->http_addr, msg);
    if (pl->admin == NULL) {
        snprintf(err, PIPELINE_ERR_MAX, "CALLPUSH_HTTP_ADDR (--http-addr): %s",
                 msg);
        goto fail;
    }
    log_msg(LOG_INFO, "serving health and metrics", "%s, port %d",
            cfg->http_addr, admin_port(pl->admin));
    pl->consumer = consumer_new(cfg, pl->wake[1], PIPELINE_TOMBSTONE_TTL_MS,
                                on_revoke, pl, msg);
    if (pl->consumer == NULL) {
        util_strlcpy(err, msg, PIPELINE_ERR_MAX);
        goto fail;
    }
    return pl;

fail:
    pipeline_free(pl);
    return NULL;
}

void
pipeline_free(struct pipeline *pl)
{
    if (pl == NULL) {
        return;
    }
    /* The consumer goes first: it may still write to the wake pipe. The
     * APNs client goes before the jobs its requests point into; jobs left
     * open were never committed and will be read again. */
    consumer_free(pl->consumer);
    apns_free(pl->apns);
    producer_free(pl->producer);
    while (pl->jobs != NULL) {
        job_free(pl->jobs);
    }
    jwt_free(pl->jwt);
    gate_free(pl->gate);
    if (pl->admin != NULL) {
        admin_stop(pl->admin);
    }
    if (pl->wake[0] >= 0) {
        close(pl->wake[0]);
        close(pl->wake[1]);
    }
    free(pl);
}
