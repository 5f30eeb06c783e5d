#include "ledger.h"

#include <stdlib.h>

#include "util.h"

/*
 * A ring of (offset, done) slots in consumption order. The head is the
 * oldest offset not yet final; finished slots at the head are dropped as
 * soon as they finish, so the ring holds at most the in-flight window.
 * Marking an offset done finds its slot by binary search, since offsets in
 * the ring only increase.
 */
struct slot {
    int64_t offset;
    int done;
};

struct ledger {
    struct slot *ring;
    size_t cap;     /* power of two */
    size_t head;    /* index of the oldest slot */
    size_t count;   /* slots in use */
    size_t pending; /* slots not done */
    int64_t last;   /* highest offset tracked, -1 if none */
    int64_t commit; /* offset to commit, -1 if none */
};

struct ledger *
ledger_new(void)
{
    struct ledger *lg = xcalloc(1, sizeof(*lg));

    lg->cap = 64;
    lg->ring = xcalloc(lg->cap, sizeof(*lg->ring));
    ledger_reset(lg);
    return lg;
}

void
ledger_free(struct ledger *lg)
{
    if (lg == NULL) {
        return;
    }
    free(lg->ring);
    free(lg);
}

void
ledger_reset(struct ledger *lg)
{
    lg->head = 0;
    lg->count = 0;
    lg->pending = 0;
    lg->last = -1;
    lg->commit = -1;
}

static struct slot *
slot_at(const struct ledger *lg, size_t i)
{
    return &lg->ring[(lg->head + i) & (lg->cap - 1)];
}

static void
ledger_grow(struct ledger *lg)
{
    struct slot *ring = xcalloc(lg->cap * 2, sizeof(*ring));
    size_t i;

    for (i = 0; i < lg->count; i++) {
        ring[i] = *slot_at(lg, i);
    }
    free(lg->ring);
    lg->ring = ring;
    lg->cap *= 2;
    lg->head = 0;
}

int
ledger_track(struct ledger *lg, int64_t offset)
{
    struct slot *s;

    if (offset <= lg->last) {
        return -1;
    }
    if (lg->count == lg->cap) {
        ledger_grow(lg);
    }
    s = slot_at(lg, lg->count);
    s->offset = offset;
    s->done = 0;
    lg->count++;
    lg->pending++;
    lg->last = offset;
    return 0;
}

/* Drops finished slots from the head and moves the watermark past them. */
static void
ledger_advance(struct ledger *lg)
{
    while (lg->count > 0 && slot_at(lg, 0)->done) {
        lg->commit = slot_at(lg, 0)->offset + 1;
        lg->head = (lg->head + 1) & (lg->cap - 1);
        lg->count--;
    }
}

int
ledger_done(struct ledger *lg, int64_t offset)
{
    size_t lo = 0, hi = lg->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct slot *s = slot_at(lg, mid);

        if (s->offset == offset) {
            if (s->done) {
                return -1;
            }
            s->done = 1;
            lg->pending--;
            if (mid == 0) {
                ledger_advance(lg);
            }
            return 0;
        }
        if (s->offset < offset) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

int64_t
ledger_commit_offset(const struct ledger *lg)
{
    return lg->commit;
}

size_t
ledger_pending(const struct ledger *lg)
{
    return lg->pending;
}
