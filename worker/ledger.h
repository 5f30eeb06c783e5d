/*
 * ledger: which offsets of one partition are still in flight, and so how
 * far the partition's committed offset may advance.
 *
 * Kafka commits one offset per partition: "everything before this is done".
 * Events of a partition finish out of order (a push to one device may take
 * longer than the next event's), so the offset to commit is the lowest one
 * whose outcome is not yet final. The ledger tracks offsets in the order
 * they were consumed and advances that watermark as they finish.
 *
 * Ownership: ledger_new() / ledger_free(). Thread safety: loop thread only.
 */
#ifndef CALLPUSH_LEDGER_H
#define CALLPUSH_LEDGER_H

#include <stddef.h>
#include <stdint.h>

struct ledger;

struct ledger *ledger_new(void);
void ledger_free(struct ledger *lg);

/* Records that offset was consumed and is in flight. Offsets must increase
 * from call to call; returns -1 (and records nothing) if one does not,
 * which means the partition was rewound (a seek or a reassignment): the
 * caller resets the ledger first. */
int ledger_track(struct ledger *lg, int64_t offset);

/* Marks a tracked offset final. Returns 0, or -1 if it is not tracked. */
int ledger_done(struct ledger *lg, int64_t offset);

/* The offset to commit: one past the highest offset below which every
 * tracked offset is final; -1 when nothing was tracked since the last
 * reset. */
int64_t ledger_commit_offset(const struct ledger *lg);

/* How many tracked offsets are not final yet. */
size_t ledger_pending(const struct ledger *lg);

/* Forgets everything (after a revocation or a rewind). */
void ledger_reset(struct ledger *lg);

#endif
