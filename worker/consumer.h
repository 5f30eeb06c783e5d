/*
 * consumer: the Kafka consumer group member, and for each assigned
 * partition the ledger of offsets in flight, from which it decides how far
 * the committed offset may move.
 *
 * Offsets are never committed automatically as messages are read: the
 * worker marks each message final (consumer_done()) once its outcome is
 * settled, the partition's ledger turns that into a watermark, and the
 * watermark is stored for librdkafka's periodic commit. So a worker killed
 * mid-flight leaves the unsettled messages uncommitted, and they are read
 * again by whoever owns the partition next.
 *
 * A message handed out carries a ticket. When its partition is revoked
 * and assigned again, older tickets go stale, and marking them done is
 * ignored, so an old generation can never move the new one's watermark.
 *
 * Thread safety: loop thread only; librdkafka's threads wake the loop
 * through the descriptor given to consumer_new().
 */
#ifndef CALLPUSH_CONSUMER_H
#define CALLPUSH_CONSUMER_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

#define CONSUMER_ERR_MAX 512

/* Which of the subscribed topics a message came from. */
enum consumer_lane { LANE_INVITE = 0, LANE_CANCEL = 1, LANE_COUNT };

struct consumer_ticket {
    enum consumer_lane lane;
    int32_t partition;
    int64_t offset;
    uint32_t generation;
    int replay; /* read back to rebuild state: feed the gate, push nothing */
};

struct consumer;

/* Called when partitions are about to be revoked, before what is final is
 * committed: the caller's chance to let work in flight settle. */
typedef void consumer_revoke_fn(void *ctx);

/* replay_ms: on assignment, how far back each cancel partition is read
 * again, up to its committed offset, to rebuild tombstones (0: not at
 * all). Those messages come with ticket->replay set. */
struct consumer *consumer_new(const struct config *cfg, int wake_fd,
                              int64_t replay_ms, consumer_revoke_fn *on_revoke,
                              void *ctx, char *err);

/* The next message of the lane (owned by the caller:
 * rd_kafka_message_destroy()), with its ticket, or NULL when that lane has
 * nothing waiting. Reading one lane never waits behind the other, which
 * is how cancels overtake a backlog of invites. Error events are logged
 * and skipped; rebalances are served here too. The offset is recorded as
 * in flight. With one topic for both types everything is LANE_INVITE. */
rd_kafka_message_t *consumer_next(struct consumer *c, enum consumer_lane lane,
                                  struct consumer_ticket *ticket);

/* Marks a message final. */
void consumer_done(struct consumer *c, const struct consumer_ticket *t);

/* Stores the watermarks that moved since the last call, for the next
 * commit. Cheap when nothing moved; the loop calls it every iteration. */
void consumer_store(struct consumer *c);

/* Commits what is final and leaves the group, waiting at most timeout_ms.
 * Returns 0 when it left, -1 when the time ran out (the brokers may be
 * down: what was committed before stays committed). */
int consumer_close(struct consumer *c, int timeout_ms);
void consumer_free(struct consumer *c);

const char *consumer_lane_topic(const struct consumer *c,
                                enum consumer_lane lane);

#endif
