#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ledger.h"
#include "metrics.h"
#include "log.h"
#include "producer.h"
#include "util.h"

struct part {
    struct ledger *ledger;
    uint32_t generation;
    int assigned;
    int dirty; /* watermark moved since the last store */
    /* A cancel partition being read back from before its committed offset
     * to rebuild tombstones: offsets below this are replays. 0: none. */
    int64_t replay_until;
    /* A cancel partition whose invites wait until it has been read up to
     * here (its end when it was assigned). 0: not holding them. */
    int64_t hold_until;
};

struct lane {
    const char *topic;
    struct part *parts;
    int32_t nparts;
};

/* Bounds on reading back recent cancels at assignment. */
#define CONSUMER_LOOKUP_MS 5000
#define CONSUMER_REPLAY_MAX_MS 30000
#define CONSUMER_REPLAY_MAX_MSGS 200000
/* At most this often an explicit commit of what settled. */
#define CONSUMER_COMMIT_MS 50

struct consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    /* Each assigned partition's messages are redirected to its lane's
     * queue, so the worker can read cancels ahead of any invite backlog. */
    rd_kafka_queue_t *lane_q[LANE_COUNT];
    struct lane lanes[LANE_COUNT];
    int nlanes; /* 1 when invites and cancels share one topic */
    int assigned;
    int dirty;
    consumer_revoke_fn *on_revoke;
    void *revoke_ctx;
    int64_t replay_ms;       /* how far back cancels are read on assignment */
    int64_t replay_deadline; /* monotonic ms; 0 when nothing is replaying */
    int closing;             /* consumer_close() started */
    int64_t last_commit;     /* monotonic ms */
    int close_timed_out;     /* consumer_close() gave up waiting */
};

static int
lane_of(const struct consumer *c, const char *topic)
{
    int i;

    for (i = 0; i < c->nlanes; i++) {
        if (strcmp(c->lanes[i].topic, topic) == 0) {
            return i;
        }
    }
    return -1;
}

static struct part *
part_get(struct consumer *c, int lane, int32_t partition)
{
    struct lane *l = &c->lanes[lane];

    if (partition >= l->nparts) {
        int32_t n = partition + 1;

        l->parts = xrealloc(l->parts, (size_t)n * sizeof(*l->parts));
        memset(l->parts + l->nparts, 0,
               (size_t)(n - l->nparts) * sizeof(*l->parts));
        l->nparts = n;
    }
    if (l->parts[partition].ledger == NULL) {
        l->parts[partition].ledger = ledger_new();
    }
    return &l->parts[partition];
}

static void
log_partitions(const char *msg, const rd_kafka_topic_partition_list_t *list)
{
    struct buf *line = log_begin(LOG_INFO, msg);
    int i;

    if (line == NULL) {
        return;
    }
    buf_adds(line, ",\"partitions\":[");
    for (i = 0; i < list->cnt; i++) {
        buf_addf(line, "%s{\"topic\":", i ? "," : "");
        buf_json_strz(line, list->elems[i].topic);
        buf_addf(line, ",\"partition\":%d}", (int)list->elems[i].partition);
    }
    buf_addc(line, ']');
    log_end(line);
}

/* Marks each listed partition as (un)assigned and starts a new generation,
 * so tickets from before the change are ignored. */
static void
mark_partitions(struct consumer *c, const rd_kafka_topic_partition_list_t *list,
                int assigned)
{
    int i;

    for (i = 0; i < list->cnt; i++) {
        int lane = lane_of(c, list->elems[i].topic);
        struct part *p;

        if (lane < 0) {
            continue;
        }
        p = part_get(c, lane, list->elems[i].partition);
        p->generation++;
        p->dirty = 0;
        p->replay_until = 0;
        p->hold_until = 0;
        ledger_reset(p->ledger);
        if (p->assigned != assigned) {
            c->assigned += assigned ? 1 : -1;
        }
        p->assigned = assigned;
    }
}

static void
forward_partitions(struct consumer *c,
                   const rd_kafka_topic_partition_list_t *list)
{
    int i;

    for (i = 0; i < list->cnt; i++) {
        int lane = lane_of(c, list->elems[i].topic);
        rd_kafka_queue_t *pq;

        if (lane < 0) {
            continue;
        }
        pq = rd_kafka_queue_get_partition(c->rk, list->elems[i].topic,
                                          list->elems[i].partition);
        if (pq != NULL) {
            rd_kafka_queue_forward(pq, c->lane_q[lane]);
            rd_kafka_queue_destroy(pq);
        }
    }
}

/*
 * State is soft, Kafka is the source of truth: a cancel another worker
 * handled before this one got the partition still has to stop its invite
 * here. So each newly assigned cancel partition is read from
 * (now - replay_ms) up to its committed offset before anything else: those
 * messages only rebuild tombstones (the ticket says "replay"), they are not
 * pushed again. Sets the start offsets in list, and marks the partitions
 * whose invites must wait for it.
 */
static void
plan_replay(struct consumer *c, rd_kafka_topic_partition_list_t *list)
{
    rd_kafka_topic_partition_list_t *committed, *times;
    /* With one topic for both types, its partitions carry the cancels. */
    int lane = c->nlanes > 1 ? LANE_CANCEL : LANE_INVITE;
    const char *topic = c->lanes[lane].topic;
    int64_t since = util_now_ms() - c->replay_ms;
    int i;

    if (c->replay_ms <= 0) {
        return;
    }
    committed = rd_kafka_topic_partition_list_new(list->cnt);
    times = rd_kafka_topic_partition_list_new(list->cnt);
    for (i = 0; i < list->cnt; i++) {
        if (strcmp(list->elems[i].topic, topic) == 0) {
            rd_kafka_topic_partition_list_add(committed, topic,
                                              list->elems[i].partition);
            rd_kafka_topic_partition_list_add(times, topic,
                                              list->elems[i].partition)
                ->offset = since;
        }
    }
    if (committed->cnt == 0 ||
        rd_kafka_committed(c->rk, committed, CONSUMER_LOOKUP_MS) ||
        rd_kafka_offsets_for_times(c->rk, times, CONSUMER_LOOKUP_MS)) {
        log_msg(LOG_WARN, "cannot read back recent cancels",
                "tombstones of calls cancelled before this assignment are "
                "missing");
        goto out;
    }
    for (i = 0; i < committed->cnt; i++) {
        int64_t from = times->elems[i].offset;
        int64_t upto = committed->elems[i].offset;
        int32_t pnum = committed->elems[i].partition;
        int64_t lo = 0, hi = 0;
        struct part *p = part_get(c, lane, pnum);

        if (rd_kafka_query_watermark_offsets(c->rk, topic, pnum, &lo, &hi,
                                             CONSUMER_LOOKUP_MS) != 0) {
            continue;
        }
        if (from < 0 && upto > 0) {
            /* No offset for that time: on a broker, nothing that recent;
             * some brokers (and librdkafka's mock) do not look times up.
             * Read back a bounded tail instead; the caller skips what is
             * older than the window by each message's timestamp. */
            from = upto - CONSUMER_REPLAY_MAX_MSGS > lo
                       ? upto - CONSUMER_REPLAY_MAX_MSGS
                       : lo;
        }
        if (from >= 0 && upto > from) {
            rd_kafka_topic_partition_list_find(list, topic, pnum)->offset =
                from;
            p->replay_until = upto;
        }
        /* The invites of this partition number wait for every cancel
         * already there, replayed or new, so that none of them can ring
         * for a call whose cancel is queued a few messages away. (With one
         * topic, the order within the partition already sees to that.) */
        if (c->nlanes > 1 && hi > (p->replay_until > 0 ? from
                                   : upto < 0          ? lo
                                                       : upto)) {
            p->hold_until = hi;
            c->replay_deadline = util_mono_ms() + CONSUMER_REPLAY_MAX_MS;
        }
    }
out:
    rd_kafka_topic_partition_list_destroy(committed);
    rd_kafka_topic_partition_list_destroy(times);
}

/* Pauses (or resumes) the invite partition with the same number as a
 * cancel partition being replayed. */
static void
pause_invites(struct consumer *c, int32_t partition, int pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);

    rd_kafka_topic_partition_list_add(l, c->lanes[LANE_INVITE].topic,
                                      partition);
    if (pause) {
        rd_kafka_pause_partitions(c->rk, l);
    } else {
        rd_kafka_resume_partitions(c->rk, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void
hold_invites(struct consumer *c)
{
    int32_t i;

    /* Resumed explicitly too: a partition paused in an earlier assignment
     * must not stay paused in this one. */
    for (i = 0; c->nlanes > 1 && i < c->lanes[LANE_CANCEL].nparts; i++) {
        const struct part *p = &c->lanes[LANE_CANCEL].parts[i];

        if (p->assigned) {
            pause_invites(c, i, p->hold_until > 0);
        }
    }
}

/* The cancel partition has caught up: its invites may flow. */
static void
hold_done(struct consumer *c, int32_t partition)
{
    part_get(c, LANE_CANCEL, partition)->hold_until = 0;
    pause_invites(c, partition, 0);
}

/* A replay that never reaches its end (the messages before the committed
 * offset were compacted away, say) must not hold invites for ever. */
static void
replay_expire(struct consumer *c)
{
    int32_t i;

    if (c->replay_deadline == 0 || util_mono_ms() < c->replay_deadline) {
        return;
    }
    c->replay_deadline = 0;
    for (i = 0; c->nlanes > 1 && i < c->lanes[LANE_CANCEL].nparts; i++) {
        if (c->lanes[LANE_CANCEL].parts[i].hold_until > 0) {
            hold_done(c, i);
        }
    }
}

static void
on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t code,
             rd_kafka_topic_partition_list_t *list, void *opaque)
{
    struct consumer *c = opaque;
    rd_kafka_resp_err_t cerr;

    if (code == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        mark_partitions(c, list, 1);
        plan_replay(c, list);
        rd_kafka_assign(rk, list);
        forward_partitions(c, list);
        hold_invites(c);
        metrics_set(METRICS_ASSIGNED, c->assigned);
        log_partitions("partitions assigned", list);
        return;
    }

    /* Revoked (or the group failed): commit what is final now, while the
     * partitions are still ours, so the next owner starts right after it. */
    if (c->on_revoke != NULL) {
        c->on_revoke(c->revoke_ctx);
    }
    consumer_store(c);
    /* Synchronous in a rebalance, so that when this member gets the same
     * partitions back it reads on from the new commit, not the old one.
     * Asynchronous when closing: with the brokers down a synchronous commit
     * would hold the shutdown for as long as librdkafka keeps trying (it
     * also commits stored offsets as it unassigns). */
    cerr = rd_kafka_commit(rk, NULL, c->closing);
    if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR &&
        cerr != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        log_msg(LOG_WARN, "commit on revocation failed", "%s",
                rd_kafka_err2str(cerr));
    }
    mark_partitions(c, list, 0);
    rd_kafka_assign(rk, NULL);
    metrics_lag_clear();
    metrics_set(METRICS_ASSIGNED, c->assigned);
    log_partitions("partitions revoked", list);
}

static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *text)
{
    kafka_log(level, fac, text);
}

static void
on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    /* librdkafka's own log line already says so, with more detail. */
    if (code == RD_KAFKA_RESP_ERR__TRANSPORT) {
        return;
    }
    struct buf *line =
        log_begin_limited(LOG_WARN, "kafka consumer error", reason);

    if (line == NULL) {
        return;
    }
    log_str(line, "code", rd_kafka_err2name((rd_kafka_resp_err_t)code));
    log_str(line, "detail", reason);
    log_end(line);
}

/* Whether partition of the topic is assigned to this member now. */
static int
is_assigned(struct consumer *c, const char *topic, int32_t partition)
{
    int lane = lane_of(c, topic);
    struct lane *l;

    if (lane < 0) {
        return 0;
    }
    l = &c->lanes[lane];
    return partition >= 0 && partition < l->nparts &&
           l->parts[partition].assigned;
}

/*
 * librdkafka's statistics (JSON, every statistics.interval.ms) carry each
 * partition's consumer lag: the distance from the committed offset to the
 * high watermark. Served by the loop thread, inside the consumer's poll.
 */
static int
on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct consumer *c = opaque;
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *topic, *part;

    cJSON_ArrayForEach(topic, cJSON_GetObjectItemCaseSensitive(root, "topics"))
    {
        const cJSON *parts =
            cJSON_GetObjectItemCaseSensitive(topic, "partitions");

        cJSON_ArrayForEach(part, parts)
        {
            const cJSON *lag =
                cJSON_GetObjectItemCaseSensitive(part, "consumer_lag");
            const cJSON *id =
                cJSON_GetObjectItemCaseSensitive(part, "partition");

            if (!cJSON_IsNumber(lag) || !cJSON_IsNumber(id) ||
                lag->valuedouble < 0 ||
                !is_assigned(c, topic->string, (int32_t)id->valuedouble)) {
                continue;
            }
            metrics_lag(topic->string, (int32_t)id->valuedouble,
                        (int64_t)lag->valuedouble);
        }
    }
    cJSON_Delete(root);
    return 0; /* librdkafka frees json */
}

static int
conf_set_all(rd_kafka_conf_t *conf, const char *const (*kv)[2], size_t n,
             char *msg, size_t msglen)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], msg, msglen) !=
            RD_KAFKA_CONF_OK) {
            return -1;
        }
    }
    return 0;
}

static int
consumer_conf(rd_kafka_conf_t *conf, const struct config *cfg, char *msg,
              size_t msglen)
{
    /* Defaults an operator may tune with CALLPUSH_KAFKA_*. */
    static const char *const tunable[][2] = {
        {"auto.commit.interval.ms", "1000"},
        {"statistics.interval.ms", "5000"},
        {"auto.offset.reset", "earliest"},
        {"queued.min.messages", "20000"},
        /* librdkafka's default (64 MB) makes a backlog the biggest thing
         * in memory; 8 MB (about 20,000 events) still keeps the loop fed
         * at full speed (measured with tests/bench/compare.py). */
        {"queued.max.messages.kbytes", "8192"},
    };
    /* What the commit rule and the lanes depend on: applied after the
     * operator's properties, so they cannot be overridden by mistake. */
    static const char *const fixed[][2] = {
        {"enable.auto.commit", "true"},
        {"enable.auto.offset.store", "false"},
        /* The range assignor gives one member the same partition numbers
         * of both topics, so a call's invite and cancel meet there. */
        {"partition.assignment.strategy", "range"},
    };

    if (conf_set_all(conf, tunable, UTIL_ARRAY_LEN(tunable), msg, msglen) < 0 ||
        kafka_conf_apply(conf, cfg, msg, msglen) < 0 ||
        conf_set_all(conf, fixed, UTIL_ARRAY_LEN(fixed), msg, msglen) < 0 ||
        rd_kafka_conf_set(conf, "group.id", cfg->group, msg, msglen) !=
            RD_KAFKA_CONF_OK) {
        return -1;
    }
    return 0;
}

/* Partitions of topic per the cluster's metadata: -1 when it cannot be
 * told (brokers unreachable), 0 when the topic does not exist. */
static int
topic_partitions(struct consumer *c, const char *topic)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->rk, topic, NULL);
    int n = -1;

    if (rd_kafka_metadata(c->rk, 0, rkt, &md, CONSUMER_LOOKUP_MS) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        n = md->topic_cnt == 1 && md->topics[0].err == 0
                ? md->topics[0].partition_cnt
                : 0;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    return n;
}

/*
 * A call's invite and cancel meet on the same partition number only when
 * both topics have as many partitions; otherwise tombstones and cancel
 * priority silently stop working, so the worker refuses to start.
 */
static int
check_lanes(struct consumer *c, char *err)
{
    int invites, cancels;

    if (c->nlanes < 2) {
        return 0;
    }
    invites = topic_partitions(c, c->lanes[LANE_INVITE].topic);
    cancels = topic_partitions(c, c->lanes[LANE_CANCEL].topic);
    if (invites < 0 || cancels < 0) {
        log_msg(LOG_WARN, "cannot compare the topics' partition counts",
                "the brokers did not answer within %d ms", CONSUMER_LOOKUP_MS);
        return 0;
    }
    if (invites != cancels || invites == 0) {
        snprintf(err, CONSUMER_ERR_MAX,
                 "the invite topic %s has %d partitions and the cancel "
                 "topic %s has %d: they must have the same number (and "
                 "exist), so that a call's invite and cancel share a "
                 "partition",
                 c->lanes[LANE_INVITE].topic, invites,
                 c->lanes[LANE_CANCEL].topic, cancels);
        return -1;
    }
    return 0;
}

struct consumer *
consumer_new(const struct config *cfg, int wake_fd, int64_t replay_ms,
             consumer_revoke_fn *on_revoke, void *ctx, char *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *topics;
    struct consumer *c = xcalloc(1, sizeof(*c));
    char msg[CONSUMER_ERR_MAX / 2];
    rd_kafka_resp_err_t code;
    int i;

    c->on_revoke = on_revoke;
    c->replay_ms = replay_ms;
    c->revoke_ctx = ctx;
    c->lanes[LANE_INVITE].topic = cfg->invite_topic;
    c->lanes[LANE_CANCEL].topic = cfg->cancel_topic;
    c->nlanes = strcmp(cfg->invite_topic, cfg->cancel_topic) == 0 ? 1 : 2;

    if (consumer_conf(conf, cfg, msg, sizeof(msg)) < 0) {
        snprintf(err, CONSUMER_ERR_MAX, "consumer: %s", msg);
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, msg, sizeof(msg));
    if (c->rk == NULL) {
        snprintf(err, CONSUMER_ERR_MAX, "consumer: %s", msg);
        goto fail;
    }
    conf = NULL;
    rd_kafka_poll_set_consumer(c->rk);
    rd_kafka_set_log_queue(c->rk, NULL);
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    rd_kafka_queue_io_event_enable(c->queue, wake_fd, "c", 1);
    for (i = 0; i < c->nlanes; i++) {
        c->lane_q[i] = rd_kafka_queue_new(c->rk);
        rd_kafka_queue_io_event_enable(c->lane_q[i], wake_fd, "l", 1);
    }

    if (check_lanes(c, err) < 0) {
        goto fail;
    }
    topics = rd_kafka_topic_partition_list_new(c->nlanes);
    for (i = 0; i < c->nlanes; i++) {
        rd_kafka_topic_partition_list_add(topics, c->lanes[i].topic,
                                          RD_KAFKA_PARTITION_UA);
    }
    code = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (code != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, CONSUMER_ERR_MAX, "consumer: subscribe: %s",
                 rd_kafka_err2str(code));
        goto fail;
    }
    return c;

fail:
    if (conf != NULL) {
        rd_kafka_conf_destroy(conf);
    }
    consumer_free(c);
    return NULL;
}

/* Takes a message as far as a ticket: NULL (and the message destroyed)
 * when it is an error, from another topic, or from a partition no longer
 * ours (read before a revocation, still queued). */
static rd_kafka_message_t *
admit(struct consumer *c, rd_kafka_message_t *m, struct consumer_ticket *t)
{
    struct part *p;
    int lane;

    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            on_error(c->rk, m->err, rd_kafka_message_errstr(m), c);
        }
        rd_kafka_message_destroy(m);
        return NULL;
    }
    lane = lane_of(c, rd_kafka_topic_name(m->rkt));
    if (lane < 0 ||
        !is_assigned(c, rd_kafka_topic_name(m->rkt), m->partition)) {
        rd_kafka_message_destroy(m);
        return NULL;
    }
    p = part_get(c, lane, m->partition);
    t->replay = 0;
    if (p->hold_until > 0 && m->offset >= p->hold_until - 1) {
        hold_done(c, m->partition);
    }
    if (p->replay_until > 0) {
        int64_t until = p->replay_until;

        if (m->offset >= until - 1) {
            p->replay_until = 0;
        }
        if (m->offset < until) {
            /* Settled by the partition's previous owner: never tracked,
             * so the committed offset cannot move back. */
            t->lane = (enum consumer_lane)lane;
            t->partition = m->partition;
            t->offset = m->offset;
            t->generation = p->generation;
            t->replay = 1;
            return m;
        }
    }
    if (ledger_track(p->ledger, m->offset) < 0) {
        /* The partition was rewound under us (a seek or an offset
         * reset): what was in flight will be read again. */
        ledger_reset(p->ledger);
        p->generation++;
        ledger_track(p->ledger, m->offset);
    }
    t->lane = (enum consumer_lane)lane;
    t->partition = m->partition;
    t->offset = m->offset;
    t->generation = p->generation;
    return m;
}

rd_kafka_message_t *
consumer_next(struct consumer *c, enum consumer_lane lane,
              struct consumer_ticket *t)
{
    rd_kafka_message_t *m;

    replay_expire(c);

    /* The group's own queue carries rebalances, errors, logs and
     * statistics, and any message read before its partition's queue was
     * redirected to its lane: serve it first, every time. */
    while ((m = rd_kafka_consumer_poll(c->rk, 0)) != NULL) {
        if (admit(c, m, t) != NULL) {
            return m;
        }
    }
    if ((int)lane >= c->nlanes) {
        return NULL;
    }
    while ((m = rd_kafka_consume_queue(c->lane_q[lane], 0)) != NULL) {
        if (admit(c, m, t) != NULL) {
            return m;
        }
    }
    return NULL;
}

void
consumer_done(struct consumer *c, const struct consumer_ticket *t)
{
    struct part *p = part_get(c, t->lane, t->partition);
    int64_t before;

    if (t->replay) {
        return;
    }
    if (p->generation != t->generation || !p->assigned) {
        return;
    }
    before = ledger_commit_offset(p->ledger);
    ledger_done(p->ledger, t->offset);
    if (ledger_commit_offset(p->ledger) != before) {
        p->dirty = 1;
        c->dirty = 1;
    }
}

void
consumer_store(struct consumer *c)
{
    rd_kafka_topic_partition_list_t *list;
    int lane;
    int32_t i;

    if (!c->dirty) {
        return;
    }
    c->dirty = 0;
    list = rd_kafka_topic_partition_list_new(8);
    for (lane = 0; lane < c->nlanes; lane++) {
        struct lane *l = &c->lanes[lane];

        for (i = 0; i < l->nparts; i++) {
            struct part *p = &l->parts[i];

            if (!p->dirty) {
                continue;
            }
            p->dirty = 0;
            rd_kafka_topic_partition_list_add(list, l->topic, i)->offset =
                ledger_commit_offset(p->ledger);
        }
    }
    if (list->cnt > 0) {
        rd_kafka_offsets_store(c->rk, list);
    }
    /* Commit soon after events settle rather than on the auto-commit
     * timer alone: what a killed worker settled but had not committed is
     * pushed again by the next owner. */
    if (util_mono_ms() - c->last_commit >= CONSUMER_COMMIT_MS) {
        c->last_commit = util_mono_ms();
        rd_kafka_commit(c->rk, NULL, 1);
    }
    rd_kafka_topic_partition_list_destroy(list);
}

const char *
consumer_lane_topic(const struct consumer *c, enum consumer_lane lane)
{
    return c->lanes[lane].topic;
}

int
consumer_close(struct consumer *c, int timeout_ms)
{
    int64_t end = util_mono_ms() + timeout_ms;
    rd_kafka_queue_t *q;
    rd_kafka_error_t *error;
    int closed;

    consumer_store(c);
    c->closing = 1;

    /* Closing through a queue instead of rd_kafka_consumer_close(), which
     * would block for as long as the brokers take: with them down, that
     * is longer than any shutdown budget. */
    q = rd_kafka_queue_new(c->rk);
    error = rd_kafka_consumer_close_queue(c->rk, q);
    if (error != NULL) {
        log_msg(LOG_WARN, "leaving the consumer group failed", "%s",
                rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rd_kafka_queue_destroy(q);
        return -1;
    }
    while (!rd_kafka_consumer_closed(c->rk) && util_mono_ms() < end) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);

        if (ev == NULL) {
            continue;
        }
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
            on_rebalance(c->rk, rd_kafka_event_error(ev),
                         rd_kafka_event_topic_partition_list(ev), c);
        }
        rd_kafka_event_destroy(ev);
    }
    closed = rd_kafka_consumer_closed(c->rk);
    rd_kafka_queue_destroy(q);
    c->close_timed_out = !closed;
    return closed ? 0 : -1;
}

void
consumer_free(struct consumer *c)
{
    int lane;
    int32_t i;

    if (c == NULL) {
        return;
    }
    if (c->queue != NULL) {
        rd_kafka_queue_destroy(c->queue);
    }
    for (lane = 0; lane < LANE_COUNT; lane++) {
        if (c->lane_q[lane] != NULL) {
            rd_kafka_queue_destroy(c->lane_q[lane]);
        }
    }
    if (c->rk != NULL) {
        /* A close that ran out of time must not be tried again here (the
         * brokers are not answering); a finished one lets destroy send
         * what is still queued, the LeaveGroup among it, so that the next
         * member gets the partitions at once, not a session timeout later. */
        rd_kafka_destroy_flags(c->rk, c->close_timed_out
                                          ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE
                                          : 0);
    }
    for (lane = 0; lane < LANE_COUNT; lane++) {
        for (i = 0; i < c->lanes[lane].nparts; i++) {
            ledger_free(c->lanes[lane].parts[i].ledger);
        }
        free(c->lanes[lane].parts);
    }
    free(c);
}
