#define _POSIX_C_SOURCE 200809L
#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Longest APNs reason kept, counting the NUL; Apple's longest is well under
 * it. A longer one is cut, at a character boundary. */
#define METRICS_REASON_MAX 128

/* Kafka caps topic names at 249 characters. */
#define METRICS_TOPIC_MAX 256

/* HTTP statuses have three digits. Anything else is not an answer, so it is
 * counted with the transport errors, as status 0. */
#define METRICS_STATUS_LIMIT 1000

/* Upper bounds of the latency buckets, in seconds, and the same bounds as
 * they appear in the le label, so that the label never depends on how a
 * double happens to print. */
static const double bucket_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,    2.5,   5,    10,  30};
static const char *const bucket_labels[] = {"0.005", "0.01", "0.025", "0.05",
                                            "0.1",   "0.25", "0.5",   "1",
                                            "2.5",   "5",    "10",    "30"};

#define METRICS_BUCKETS (UTIL_ARRAY_LEN(bucket_bounds) + 1) /* with +Inf */

struct push_row {
    int status;
    char reason[METRICS_REASON_MAX];
    uint64_t count;
};

struct lag_row {
    char topic[METRICS_TOPIC_MAX];
    int32_t partition;
    int64_t lag;
};

/* Counts per bucket, not yet cumulative: rendering adds them up. */
struct histogram {
    uint64_t buckets[METRICS_BUCKETS];
    double sum;
    uint64_t count;
};

/* Everything the mutex guards. Pushes whose pair found no free row are
 * counted only in by_status; rendering shows the difference between a
 * status's total and its kept rows as that status's "other" row. */
struct tables {
    struct push_row pushes[METRICS_PUSH_ROWS];
    size_t npushes;
    uint64_t by_status[METRICS_STATUS_LIMIT];
    struct lag_row lags[METRICS_LAG_ROWS];
    size_t nlags;
    struct histogram latency[2]; /* by enum metrics_kind */
};

static _Atomic uint64_t counters[METRICS_COUNTER_COUNT];
static _Atomic int64_t gauges[METRICS_GAUGE_COUNT];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct tables T;

void
metrics_inc(enum metrics_counter c)
{
    metrics_add(c, 1);
}

void
metrics_add(enum metrics_counter c, uint64_t n)
{
    atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

uint64_t
metrics_get(enum metrics_counter c)
{
    return atomic_load_explicit(&counters[c], memory_order_relaxed);
}

void
metrics_set(enum metrics_gauge g, int64_t value)
{
    atomic_store_explicit(&gauges[g], value, memory_order_relaxed);
}

int64_t
metrics_gauge(enum metrics_gauge g)
{
    return atomic_load_explicit(&gauges[g], memory_order_relaxed);
}

static int
status_index(int status)
{
    return status >= 0 && status < METRICS_STATUS_LIMIT ? status : 0;
}

void
metrics_push(int status, const char *reason)
{
    char kept[METRICS_REASON_MAX];
    size_t len, i;

    /* A label value must be UTF-8: keep the longest valid prefix that
     * fits, so that a cut never splits a character either. */
    len = strlen(reason);
    if (len > sizeof(kept) - 1) {
        len = sizeof(kept) - 1;
    }
    len = util_utf8_valid_prefix(reason, len);
    memcpy(kept, reason, len);
    kept[len] = '\0';
    status = status_index(status);

    pthread_mutex_lock(&lock);
    T.by_status[status]++;
    for (i = 0; i < T.npushes; i++) {
        if (T.pushes[i].status == status &&
            strcmp(T.pushes[i].reason, kept) == 0) {
            T.pushes[i].count++;
            goto done;
        }
    }
    if (T.npushes < METRICS_PUSH_ROWS) {
        struct push_row *row = &T.pushes[T.npushes++];

        row->status = status;
        memcpy(row->reason, kept, len + 1);
        row->count = 1;
    }
done:
    pthread_mutex_unlock(&lock);
}

uint64_t
metrics_pushes(int status)
{
    uint64_t n;

    pthread_mutex_lock(&lock);
    n = T.by_status[status_index(status)];
    pthread_mutex_unlock(&lock);
    return n;
}

void
metrics_lag(const char *topic, int32_t partition, int64_t lag)
{
    size_t i;

    pthread_mutex_lock(&lock);
    for (i = 0; i < T.nlags; i++) {
        if (T.lags[i].partition == partition &&
            strncmp(T.lags[i].topic, topic, METRICS_TOPIC_MAX - 1) == 0) {
            T.lags[i].lag = lag;
            goto done;
        }
    }
    if (T.nlags < METRICS_LAG_ROWS) {
        struct lag_row *row = &T.lags[T.nlags++];

        util_strlcpy(row->topic, topic, sizeof(row->topic));
        row->partition = partition;
        row->lag = lag;
    }
done:
    pthread_mutex_unlock(&lock);
}

void
metrics_lag_clear(void)
{
    pthread_mutex_lock(&lock);
    T.nlags = 0;
    pthread_mutex_unlock(&lock);
}

int64_t
metrics_lag_total(void)
{
    int64_t total = 0;
    size_t i;

    pthread_mutex_lock(&lock);
    for (i = 0; i < T.nlags; i++) {
        total += T.lags[i].lag;
    }
    pthread_mutex_unlock(&lock);
    return total;
}

void
metrics_latency(enum metrics_kind kind, double seconds)
{
    struct histogram *h;
    size_t i = 0;

    /* created_at comes from another machine's clock, which may run ahead
     * of ours; a negative (or NaN) latency would also poison the sum for
     * good, so it counts as no wait at all. */
    if (!(seconds >= 0)) {
        seconds = 0;
    }
    while (i < UTIL_ARRAY_LEN(bucket_bounds) && seconds > bucket_bounds[i]) {
        i++;
    }

    pthread_mutex_lock(&lock);
    h = &T.latency[kind];
    h->buckets[i]++;
    h->sum += seconds;
    h->count++;
    pthread_mutex_unlock(&lock);
}

void
metrics_reset(void)
{
    size_t i;

    for (i = 0; i < METRICS_COUNTER_COUNT; i++) {
        atomic_store_explicit(&counters[i], 0, memory_order_relaxed);
    }
    for (i = 0; i < METRICS_GAUGE_COUNT; i++) {
        atomic_store_explicit(&gauges[i], 0, memory_order_relaxed);
    }
    pthread_mutex_lock(&lock);
    memset(&T, 0, sizeof(T));
    pthread_mutex_unlock(&lock);
}

/* Rendering. */

/* Appends a label value, escaped as the text format asks: backslash,
 * double quote and line feed. */
static void
add_label_value(struct buf *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\') {
            buf_adds(out, "\\\\");
        } else if (*s == '"') {
            buf_adds(out, "\\\"");
        } else if (*s == '\n') {
            buf_adds(out, "\\n");
        } else {
            buf_addc(out, *s);
        }
    }
}

static void
add_family(struct buf *out, const char *name, const char *type,
           const char *help)
{
    buf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
add_counter(struct buf *out, const char *name, const char *help,
            enum metrics_counter c)
{
    add_family(out, name, "counter", help);
    buf_addf(out, "%s %" PRIu64 "\n", name, metrics_get(c));
}

static void
add_gauge(struct buf *out, const char *name, const char *help, int64_t v)
{
    add_family(out, name, "gauge", help);
    buf_addf(out, "%s %" PRId64 "\n", name, v);
}

static void
add_by_label(struct buf *out, const char *name, const char *label,
             const char *value, enum metrics_counter c)
{
    buf_addf(out, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, value,
             metrics_get(c));
}

static void
render_counters(struct buf *out)
{
    static const char events[] = "callpush_events_consumed_total";
    static const char suppressed[] = "callpush_suppressed_total";

    add_family(out, events, "counter",
               "Call events consumed from Kafka, by type.");
    add_by_label(out, events, "type", "invite", METRICS_EVENTS_INVITE);
    add_by_label(out, events, "type", "cancel", METRICS_EVENTS_CANCEL);
    add_by_label(out, events, "type", "invalid", METRICS_EVENTS_INVALID);

    add_family(out, suppressed, "counter",
               "Pushes not sent because the call no longer needed them, "
               "by cause.");
    add_by_label(out, suppressed, "cause", "late", METRICS_SUPPRESSED_LATE);
    add_by_label(out, suppressed, "cause", "expired",
                 METRICS_SUPPRESSED_EXPIRED);
    add_by_label(out, suppressed, "cause", "duplicate",
                 METRICS_SUPPRESSED_DUPLICATE);
    add_by_label(out, suppressed, "cause", "cancelled",
                 METRICS_SUPPRESSED_CANCELLED);

    add_counter(out, "callpush_push_retries_total",
                "APNs attempts after the first one of a push.",
                METRICS_RETRIES);
    add_counter(out, "callpush_dead_letters_total",
                "Dead-letter messages acknowledged by Kafka.",
                METRICS_DEAD_LETTERS);
    add_counter(out, "callpush_feedback_messages_total",
                "Dead-token feedback messages acknowledged by Kafka.",
                METRICS_FEEDBACK);
}

static void
add_push_row(struct buf *out, int status, const char *reason, uint64_t n)
{
    buf_addf(out, "callpush_pushes_total{status=\"%d\",reason=\"", status);
    add_label_value(out, reason);
    buf_addf(out, "\"} %" PRIu64 "\n", n);
}

/* Writes the kept rows, then one "other" row for every status with pushes
 * that found no row of their own. A row whose reason really is "other"
 * takes them instead, so that no series appears twice. */
static void
render_pushes(struct buf *out, const struct tables *t)
{
    uint64_t kept[METRICS_STATUS_LIMIT] = {0};
    int has_other[METRICS_STATUS_LIMIT] = {0};
    size_t i;

    add_family(out, "callpush_pushes_total", "counter",
               "Final APNs answers, by HTTP status (0: no answer) and "
               "reason.");
    for (i = 0; i < t->npushes; i++) {
        const struct push_row *row = &t->pushes[i];

        kept[row->status] += row->count;
        if (strcmp(row->reason, "other") == 0) {
            has_other[row->status] = 1;
        }
    }
    for (i = 0; i < t->npushes; i++) {
        const struct push_row *row = &t->pushes[i];
        uint64_t n = row->count;

        if (strcmp(row->reason, "other") == 0) {
            n += t->by_status[row->status] - kept[row->status];
        }
        add_push_row(out, row->status, row->reason, n);
    }
    for (i = 0; i < METRICS_STATUS_LIMIT; i++) {
        if (t->by_status[i] > kept[i] && !has_other[i]) {
            add_push_row(out, (int)i, "other", t->by_status[i] - kept[i]);
        }
    }
}

static void
render_lag(struct buf *out, const struct tables *t)
{
    int64_t total = 0;
    size_t i;

    add_family(out, "callpush_consumer_lag", "gauge",
               "Messages not yet consumed, by assigned partition.");
    for (i = 0; i < t->nlags; i++) {
        buf_adds(out, "callpush_consumer_lag{topic=\"");
        add_label_value(out, t->lags[i].topic);
        buf_addf(out, "\",partition=\"%" PRId32 "\"} %" PRId64 "\n",
                 t->lags[i].partition, t->lags[i].lag);
        total += t->lags[i].lag;
    }
    add_gauge(out, "callpush_consumer_lag_total",
              "Messages not yet consumed, over every assigned partition.",
              total);
}

static void
render_histogram(struct buf *out, const char *kind, const struct histogram *h)
{
    static const char name[] = "callpush_push_latency_seconds";
    uint64_t running = 0;
    size_t i;

    for (i = 0; i < METRICS_BUCKETS; i++) {
        const char *le =
            i < UTIL_ARRAY_LEN(bucket_labels) ? bucket_labels[i] : "+Inf";

        running += h->buckets[i];
        buf_addf(out, "%s_bucket{type=\"%s\",le=\"%s\"} %" PRIu64 "\n", name,
                 kind, le, running);
    }
    buf_addf(out, "%s_sum{type=\"%s\"} %.9g\n", name, kind, h->sum);
    buf_addf(out, "%s_count{type=\"%s\"} %" PRIu64 "\n", name, kind, h->count);
}

static void
render_gauges(struct buf *out, int64_t now_mono_ms, int64_t now_s)
{
    int64_t iat = metrics_gauge(METRICS_JWT_IAT);
    int64_t beat = metrics_gauge(METRICS_LOOP_HEARTBEAT_MS);

    add_gauge(out, "callpush_pushes_in_flight",
              "Pushes submitted to APNs and not yet answered.",
              metrics_gauge(METRICS_INFLIGHT));
    add_gauge(out, "callpush_apns_connections", "Open TLS connections to APNs.",
              metrics_gauge(METRICS_APNS_CONNECTIONS));
    add_gauge(out, "callpush_assigned_partitions",
              "Kafka partitions assigned to this worker.",
              metrics_gauge(METRICS_ASSIGNED));
    add_gauge(out, "callpush_jwt_age_seconds",
              "Age of the current APNs provider token (0: none yet).",
              iat > 0 ? now_s - iat : 0);

    add_family(out, "callpush_loop_heartbeat_age_seconds", "gauge",
               "Time since the event loop last completed a pass.");
    buf_addf(out, "callpush_loop_heartbeat_age_seconds %.3f\n",
             (double)(now_mono_ms - beat) / 1000.0);
}

void
metrics_render(struct buf *out, int64_t now_mono_ms, int64_t now_s)
{
    struct tables *t = xmalloc(sizeof(*t));

    /* Format from a copy, so that the loop thread never waits on the lock
     * while a scrape writes text. */
    pthread_mutex_lock(&lock);
    memcpy(t->pushes, T.pushes, T.npushes * sizeof(T.pushes[0]));
    t->npushes = T.npushes;
    memcpy(t->by_status, T.by_status, sizeof(T.by_status));
    memcpy(t->lags, T.lags, T.nlags * sizeof(T.lags[0]));
    t->nlags = T.nlags;
    memcpy(t->latency, T.latency, sizeof(T.latency));
    pthread_mutex_unlock(&lock);

    render_counters(out);
    render_pushes(out, t);
    render_gauges(out, now_mono_ms, now_s);
    render_lag(out, t);

    add_family(out, "callpush_push_latency_seconds", "histogram",
               "Time from a call event's creation to APNs' final answer.");
    render_histogram(out, "invite", &t->latency[METRICS_INVITE]);
    render_histogram(out, "cancel", &t->latency[METRICS_CANCEL]);

    add_gauge(out, "callpush_up", "1 while the worker runs.", 1);
    free(t);
}
