/*
 * gate: decides whether an event is worth pushing, from what the worker
 * has seen recently and a clock, with no I/O of its own:
 *
 *  - duplicates: an event whose _j_msgid was already handled (pushed or
 *    suppressed) within the dedupe window is not handled again; an invite
 *    and a cancel count apart, as they may share an id;
 *  - cancelled calls: a cancel leaves a tombstone for its call_id; an
 *    invite for a call with a tombstone is never pushed;
 *  - late invites: an invite whose ring window (created_at + ring timeout,
 *    less the minimum ring time left) has passed is never pushed.
 *
 * Both tables are bounded: entries expire by age (the dedupe window, the
 * tombstone lifetime), and when a table is full the oldest entry goes
 * first. Time is passed in by the caller, so tests drive it.
 *
 * Ownership: gate_new() / gate_free(). Thread safety: one thread.
 */
#ifndef CALLPUSH_GATE_H
#define CALLPUSH_GATE_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct gate_opts {
    int64_t dedupe_window_ms; /* how long a _j_msgid is remembered */
    int64_t tombstone_ttl_ms; /* how long a cancelled call_id is */
    size_t max_msgids;        /* dedupe table capacity */
    size_t max_tombstones;    /* tombstone table capacity */
    int64_t min_ring_left_ms; /* an invite with less left is late */
};

enum gate_verdict {
    GATE_PASS,      /* push it (an invite or a cancel) */
    GATE_DUPLICATE, /* its _j_msgid was handled already */
    GATE_CANCELLED, /* an invite whose call has a tombstone */
    GATE_LATE       /* an invite whose ring window has passed */
};

struct gate;

struct gate *gate_new(const struct gate_opts *opts);
void gate_free(struct gate *g);

/*
 * The verdict for ev at now_ms, where ring_end_ms is the end of an
 * invite's ring window (ignored for a cancel). Records what must be
 * remembered: the _j_msgid as handled (whatever the verdict but
 * GATE_DUPLICATE), and for a cancel a tombstone for its call_id.
 * Duplicates are checked first, then tombstones, then lateness.
 */
enum gate_verdict gate_check(struct gate *g, const struct event *ev,
                             int64_t ring_end_ms, int64_t now_ms);

/* Records a tombstone without an event (rebuilding state from the cancel
 * topic's recent past). */
void gate_tombstone(struct gate *g, const char *call_id, int64_t now_ms);

/* Whether call_id has a live tombstone: an invite waiting to retry asks
 * before each attempt. */
int gate_cancelled(struct gate *g, const char *call_id, int64_t now_ms);

/* Entries held now, and the bytes they take (for the design notes and
 * the metrics). */
size_t gate_msgids(const struct gate *g);
size_t gate_tombstones(const struct gate *g);
size_t gate_bytes(const struct gate *g);

const char *gate_verdict_name(enum gate_verdict v);

#endif
