/*
 * metrics: the worker's counters, gauges and latency histograms, and their
 * rendering in the Prometheus text exposition format.
 *
 * The loop thread updates them; the admin listener's thread renders them.
 * Counters and gauges are C11 atomics (relaxed: each value stands alone);
 * the tables whose rows appear at run time (pushes by status and reason,
 * consumer lag by partition) and the histograms are guarded by one mutex,
 * held only for a few instructions on either side.
 *
 * Nothing secret is ever recorded here: no tokens, keys or payloads, only
 * counts, statuses, APNs reasons, topic names and partition numbers.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef CALLPUSH_METRICS_H
#define CALLPUSH_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum metrics_counter {
    METRICS_EVENTS_INVITE, /* events consumed, by type */
    METRICS_EVENTS_CANCEL,
    METRICS_EVENTS_INVALID,  /* could not be decoded */
    METRICS_SUPPRESSED_LATE, /* suppressions, by cause */
    METRICS_SUPPRESSED_EXPIRED,
    METRICS_SUPPRESSED_DUPLICATE,
    METRICS_SUPPRESSED_CANCELLED,
    METRICS_RETRIES,      /* APNs attempts after the first */
    METRICS_DEAD_LETTERS, /* acknowledged by Kafka */
    METRICS_FEEDBACK,     /* dead-token messages acknowledged */
    METRICS_COUNTER_COUNT
};

enum metrics_gauge {
    METRICS_INFLIGHT,          /* pushes submitted, not yet answered */
    METRICS_APNS_CONNECTIONS,  /* open TLS connections to APNs */
    METRICS_JWT_IAT,           /* iat of the current provider token, s */
    METRICS_ASSIGNED,          /* partitions assigned */
    METRICS_LOOP_HEARTBEAT_MS, /* monotonic ms of the loop's last pass */
    METRICS_APNS_OK,           /* 1 unless the last APNs attempt failed to
                                * connect or was refused for credentials */
    METRICS_CREDENTIALS_OK,    /* 1 once a provider token was signed */
    METRICS_GAUGE_COUNT
};

/* For latency histograms: which kind of event. */
enum metrics_kind { METRICS_INVITE, METRICS_CANCEL };

void metrics_inc(enum metrics_counter c);
void metrics_add(enum metrics_counter c, uint64_t n);
uint64_t metrics_get(enum metrics_counter c);

void metrics_set(enum metrics_gauge g, int64_t value);
int64_t metrics_gauge(enum metrics_gauge g);

/* Counts one final APNs answer: status 0 for no answer (a transport
 * error); reason "" for none. At most METRICS_PUSH_ROWS distinct pairs are
 * kept; later new pairs are counted under reason "other". */
#define METRICS_PUSH_ROWS 64
void metrics_push(int status, const char *reason);

/* Total pushes counted with this status (any reason); for tests and the
 * summary line. */
uint64_t metrics_pushes(int status);

/* Sets a partition's consumer lag (messages). At most METRICS_LAG_ROWS
 * partitions are kept. */
#define METRICS_LAG_ROWS 512
void metrics_lag(const char *topic, int32_t partition, int64_t lag);

/* Forgets the lag rows (after a revocation). */
void metrics_lag_clear(void);

/* Sum of every partition's lag. */
int64_t metrics_lag_total(void);

/* Records one push's latency, from the event's created_at to APNs'
 * answer, in seconds. */
void metrics_latency(enum metrics_kind kind, double seconds);

/* Appends every metric in the Prometheus text format (version 0.0.4):
 * HELP and TYPE lines, names prefixed "callpush_". now_mono_ms lets the
 * caller (and tests) fix the clock used for ages. */
void metrics_render(struct buf *out, int64_t now_mono_ms, int64_t now_s);

/* Zeroes everything (tests only). */
void metrics_reset(void);

#endif
