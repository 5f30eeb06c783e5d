/*
 * The gate: duplicates within the dedupe window, cancel tombstones, late
 * invites, and tables that stay bounded and correct under any input.
 * Time is the tests' own: every call passes now explicitly.
 *
 * Run one test by name: test_gate test_tombstone_expires_after_its_ttl
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "gate.h"
#include "util.h"

#define T0 INT64_C(1780000000000) /* a wall-clock time in ms */
#define WINDOW 600000             /* dedupe window: 10 minutes */
#define TTL 120000                /* tombstone lifetime: 2 minutes */
#define MIN_LEFT 5000             /* an invite with less ring left is late */
#define RING_OPEN (T0 + 10 * WINDOW)

/* Options small enough that the tests can fill the tables. */
static struct gate *
gate_small(size_t max_msgids, size_t max_tombstones)
{
    struct gate_opts opts = {
        .dedupe_window_ms = WINDOW,
        .tombstone_ttl_ms = TTL,
        .max_msgids = max_msgids,
        .max_tombstones = max_tombstones,
        .min_ring_left_ms = MIN_LEFT,
    };

    return gate_new(&opts);
}

static struct event
ev_of(enum event_type type, const char *call_id, uint64_t msgid)
{
    struct event ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    ev.call_id = (char *)call_id;
    ev.msgid_num = msgid;
    snprintf(ev.msgid, sizeof(ev.msgid), "%llu", (unsigned long long)msgid);
    return ev;
}

/* An invite whose ring window is far from over, checked at now. */
static enum gate_verdict
invite(struct gate *g, const char *call_id, uint64_t msgid, int64_t now)
{
    struct event ev = ev_of(EVENT_INVITE, call_id, msgid);

    return gate_check(g, &ev, RING_OPEN, now);
}

static enum gate_verdict
cancel(struct gate *g, const char *call_id, uint64_t msgid, int64_t now)
{
    struct event ev = ev_of(EVENT_CANCEL, call_id, msgid);

    /* The ring end means nothing for a cancel; one long past proves it. */
    return gate_check(g, &ev, 0, now);
}

static void
test_duplicate_within_window_is_dropped(void **state)
{
    struct gate *g = gate_small(100, 100);

    assert_int_equal(invite(g, "c1", 18101194842707757u, T0), GATE_PASS);
    assert_int_equal(invite(g, "c1", 18101194842707757u, T0), GATE_DUPLICATE);
    assert_int_equal(invite(g, "c1", 18101194842707757u, T0 + WINDOW - 1),
                     GATE_DUPLICATE);

    /* Msgids above 2^53 that a double would merge stay distinct. */
    assert_int_equal(invite(g, "c1", 18101194842707758u, T0 + 1), GATE_PASS);
    gate_free(g);
}

static void
test_cancel_sharing_its_invites_msgid_still_cancels(void **state)
{
    struct gate *g = gate_small(100, 100);

    /* Some producers give a call's invite and cancel one message id. */
    assert_int_equal(invite(g, "c1", 9223372036854775807u, T0), GATE_PASS);
    assert_int_equal(cancel(g, "c1", 9223372036854775807u, T0 + 1), GATE_PASS);
    assert_true(gate_cancelled(g, "c1", T0 + 2));
    assert_int_equal(cancel(g, "c1", 9223372036854775807u, T0 + 2),
                     GATE_DUPLICATE);
    assert_int_equal(invite(g, "c1", 9223372036854775807u, T0 + 3),
                     GATE_DUPLICATE);
    gate_free(g);
}

static void
test_msgid_passes_again_after_the_window(void **state)
{
    struct gate *g = gate_small(100, 100);

    assert_int_equal(invite(g, "c1", 7, T0), GATE_PASS);

    /* The duplicate at T0 + WINDOW - 1 must not have stretched the
     * window: it ends WINDOW after the first check. */
    assert_int_equal(invite(g, "c1", 7, T0 + WINDOW - 1), GATE_DUPLICATE);
    assert_int_equal(invite(g, "c1", 7, T0 + WINDOW), GATE_PASS);
    assert_int_equal(invite(g, "c1", 7, T0 + WINDOW + 1), GATE_DUPLICATE);
    gate_free(g);
}

static void
test_cancel_then_invite_is_cancelled_for_that_call_only(void **state)
{
    struct gate *g = gate_small(100, 100);

    assert_int_equal(cancel(g, "call-7f3a9c", 2, T0), GATE_PASS);
    assert_int_equal(invite(g, "call-7f3a9c", 1, T0 + 10), GATE_CANCELLED);
    assert_int_equal(invite(g, "call-other", 3, T0 + 10), GATE_PASS);
    gate_free(g);
}

static void
test_invite_then_cancel_both_pass_and_leave_a_tombstone(void **state)
{
    struct gate *g = gate_small(100, 100);

    assert_false(gate_cancelled(g, "call-a", T0));
    assert_int_equal(invite(g, "call-a", 1, T0), GATE_PASS);
    assert_int_equal(cancel(g, "call-a", 2, T0 + 1000), GATE_PASS);
    assert_true(gate_cancelled(g, "call-a", T0 + 1000));
    assert_false(gate_cancelled(g, "call-b", T0 + 1000));
    assert_int_equal(gate_tombstones(g), 1);
    gate_free(g);
}

static void
test_tombstone_expires_after_its_ttl(void **state)
{
    struct gate *g = gate_small(100, 100);

    assert_int_equal(cancel(g, "call-a", 1, T0), GATE_PASS);
    assert_true(gate_cancelled(g, "call-a", T0 + TTL - 1));
    assert_false(gate_cancelled(g, "call-a", T0 + TTL));
    assert_int_equal(invite(g, "call-a", 2, T0 + TTL), GATE_PASS);
    gate_free(g);
}

static void
test_tombstone_without_event_cancels_invites(void **state)
{
    struct gate *g = gate_small(100, 100);

    /* Rebuilding from the cancel topic records no msgid: the invite's
     * own msgid is new and still meets the tombstone. */
    gate_tombstone(g, "call-a", T0);
    assert_int_equal(gate_msgids(g), 0);
    assert_int_equal(invite(g, "call-a", 1, T0 + 1), GATE_CANCELLED);
    gate_free(g);
}

static void
test_invite_past_its_ring_end_is_late(void **state)
{
    struct gate *g = gate_small(100, 100);
    struct event ev = ev_of(EVENT_INVITE, "call-a", 1);

    assert_int_equal(gate_check(g, &ev, T0 - 1, T0), GATE_LATE);
    ev.msgid_num = 2;
    assert_int_equal(gate_check(g, &ev, T0 - 600000, T0), GATE_LATE);
    ev.msgid_num = 3;
    assert_int_equal(gate_check(g, &ev, INT64_MIN, T0), GATE_LATE);
    gate_free(g);
}

static void
test_invite_within_min_ring_left_is_late(void **state)
{
    struct gate *g = gate_small(100, 100);
    struct event ev = ev_of(EVENT_INVITE, "call-a", 1);

    /* Exactly MIN_LEFT left is too little; one millisecond more is not. */
    assert_int_equal(gate_check(g, &ev, T0 + MIN_LEFT, T0), GATE_LATE);
    ev.msgid_num = 2;
    assert_int_equal(gate_check(g, &ev, T0 + 1, T0), GATE_LATE);
    ev.msgid_num = 3;
    assert_int_equal(gate_check(g, &ev, T0 + MIN_LEFT + 1, T0), GATE_PASS);
    ev.msgid_num = 4;
    assert_int_equal(gate_check(g, &ev, INT64_MAX, T0), GATE_PASS);
    gate_free(g);
}

static void
test_verdicts_come_in_contract_order(void **state)
{
    struct gate *g = gate_small(100, 100);
    struct event ev = ev_of(EVENT_INVITE, "call-a", 1);

    /* Tombstone before lateness: a cancelled call says why, even when
     * its invite is late as well. */
    assert_int_equal(cancel(g, "call-a", 2, T0), GATE_PASS);
    assert_int_equal(gate_check(g, &ev, T0 - 1, T0 + 1), GATE_CANCELLED);

    /* Duplicate before tombstone, and a suppressed invite counts as
     * handled: its redelivery is a duplicate. */
    assert_int_equal(gate_check(g, &ev, T0 - 1, T0 + 2), GATE_DUPLICATE);

    ev = ev_of(EVENT_INVITE, "call-b", 3);
    assert_int_equal(gate_check(g, &ev, T0 - 1, T0 + 3), GATE_LATE);
    assert_int_equal(gate_check(g, &ev, RING_OPEN, T0 + 4), GATE_DUPLICATE);
    gate_free(g);
}

static void
test_duplicate_cancel_leaves_tombstones_alone(void **state)
{
    struct gate *g = gate_small(100, 100);

    assert_int_equal(cancel(g, "call-a", 9, T0), GATE_PASS);

    /* Redelivered late in the tombstone's life: dropped, and the
     * tombstone still dies TTL after the first cancel. */
    assert_int_equal(cancel(g, "call-a", 9, T0 + TTL - 1), GATE_DUPLICATE);
    assert_false(gate_cancelled(g, "call-a", T0 + TTL));

    /* The same msgid claiming another call leaves no tombstone for it. */
    assert_int_equal(cancel(g, "call-b", 9, T0 + TTL), GATE_DUPLICATE);
    assert_false(gate_cancelled(g, "call-b", T0 + TTL));
    assert_int_equal(invite(g, "call-b", 10, T0 + TTL), GATE_PASS);
    gate_free(g);
}

static void
test_second_cancel_refreshes_without_taking_room(void **state)
{
    struct gate *g = gate_small(100, 3);
    uint64_t msgid;

    assert_int_equal(cancel(g, "call-a", 1, T0), GATE_PASS);
    assert_int_equal(cancel(g, "call-b", 2, T0), GATE_PASS);
    assert_int_equal(cancel(g, "call-c", 3, T0), GATE_PASS);

    /* Many cancels for one call (distinct msgids) must not evict the
     * tombstones of other calls. */
    for (msgid = 100; msgid < 200; msgid++) {
        assert_int_equal(cancel(g, "call-a", msgid, T0 + 1000), GATE_PASS);
    }
    assert_int_equal(gate_tombstones(g), 3);
    assert_true(gate_cancelled(g, "call-b", T0 + 1000));
    assert_true(gate_cancelled(g, "call-c", T0 + 1000));

    /* The last cancel counts: call-a outlives the others. */
    assert_false(gate_cancelled(g, "call-b", T0 + TTL));
    assert_true(gate_cancelled(g, "call-a", T0 + TTL));
    assert_false(gate_cancelled(g, "call-a", T0 + 1000 + TTL));
    gate_free(g);
}

static void
test_full_msgid_table_evicts_the_oldest(void **state)
{
    enum { CAP = 64, EXTRA = 5 };
    struct gate *g = gate_small(CAP, 16);
    uint64_t id;

    for (id = 1; id <= CAP + EXTRA; id++) {
        assert_int_equal(invite(g, "call-a", id, T0 + (int64_t)id), GATE_PASS);
    }
    assert_int_equal(gate_msgids(g), CAP);

    /* Newest first: duplicates record nothing, so these checks leave the
     * table as it was. */
    for (id = CAP + EXTRA; id > EXTRA; id--) {
        assert_int_equal(invite(g, "call-a", id, T0 + 500), GATE_DUPLICATE);
    }
    for (id = 1; id <= EXTRA; id++) {
        assert_int_equal(invite(g, "call-a", id, T0 + 500), GATE_PASS);
    }
    assert_int_equal(gate_msgids(g), CAP);
    gate_free(g);
}

static void
test_full_tombstone_table_evicts_the_oldest(void **state)
{
    enum { CAP = 8, EXTRA = 3 };
    struct gate *g = gate_small(1000, CAP);
    char call_id[32];
    int i;

    for (i = 0; i < CAP + EXTRA; i++) {
        snprintf(call_id, sizeof(call_id), "call-%d", i);
        gate_tombstone(g, call_id, T0 + i);
    }
    assert_int_equal(gate_tombstones(g), CAP);
    for (i = 0; i < CAP + EXTRA; i++) {
        snprintf(call_id, sizeof(call_id), "call-%d", i);
        assert_int_equal(gate_cancelled(g, call_id, T0 + 100), i >= EXTRA);
    }
    gate_free(g);
}

static void
test_lookups_survive_heavy_turnover(void **state)
{
    enum { CAP = 1000, TOTAL = 100000, EVERY = 997 };
    struct gate *g = gate_small(CAP, 16);
    uint64_t id, held;

    /* Each insert past CAP evicts one entry and closes the gap it leaves
     * in the index; a lost or stale index slot would show as a held
     * msgid that is no longer a duplicate. */
    for (id = 1; id <= TOTAL; id++) {
        assert_int_equal(invite(g, "call-a", id * 7919, T0), GATE_PASS);
        if (id % EVERY != 0 || id < CAP) {
            continue;
        }
        for (held = id - CAP + 1; held <= id; held++) {
            assert_int_equal(invite(g, "call-a", held * 7919, T0),
                             GATE_DUPLICATE);
        }
    }
    assert_int_equal(gate_msgids(g), CAP);
    gate_free(g);
}

static void
test_expired_entries_are_reclaimed(void **state)
{
    struct gate *g = gate_small(1000, 1000);
    size_t bytes = gate_bytes(g);
    char call_id[32];
    uint64_t id;

    for (id = 1; id <= 300; id++) {
        snprintf(call_id, sizeof(call_id), "call-%llu", (unsigned long long)id);
        assert_int_equal(cancel(g, call_id, id, T0 + (int64_t)id), GATE_PASS);
    }
    assert_int_equal(gate_msgids(g), 300);
    assert_int_equal(gate_tombstones(g), 300);

    /* Past the tombstones' lifetime, not yet past the dedupe window: the
     * next insert pops exactly the tombstones that died. */
    gate_tombstone(g, "call-new", T0 + 100 + TTL);
    assert_int_equal(gate_tombstones(g), 201);
    assert_int_equal(gate_msgids(g), 300);

    assert_int_equal(invite(g, "call-x", 5000, T0 + 1000 + WINDOW), GATE_PASS);
    assert_int_equal(gate_msgids(g), 1);

    /* Memory is fixed at creation, however the tables fill or drain. */
    assert_int_equal(gate_bytes(g), bytes);
    gate_free(g);
}

static void
test_call_ids_differing_in_one_byte_stay_distinct(void **state)
{
    struct gate *g = gate_small(16, 4096);
    static const size_t positions[] = {0, 31, EVENT_CALL_ID_MAX - 1};
    char call_id[EVENT_CALL_ID_MAX + 1];
    size_t p;
    int c;

    /* 64-byte call_ids that differ from one another in one byte, at the
     * first, a middle or the last position: every second one gets a
     * tombstone. */
    for (p = 0; p < UTIL_ARRAY_LEN(positions); p++) {
        for (c = 1; c < 256; c++) {
            memset(call_id, 'x', EVENT_CALL_ID_MAX);
            call_id[EVENT_CALL_ID_MAX] = '\0';
            call_id[positions[p]] = (char)c;
            if (c % 2 == 0) {
                gate_tombstone(g, call_id, T0);
            }
        }
    }
    for (p = 0; p < UTIL_ARRAY_LEN(positions); p++) {
        for (c = 1; c < 256; c++) {
            memset(call_id, 'x', EVENT_CALL_ID_MAX);
            call_id[EVENT_CALL_ID_MAX] = '\0';
            call_id[positions[p]] = (char)c;
            assert_int_equal(gate_cancelled(g, call_id, T0 + 1), c % 2 == 0);
        }
    }
    gate_free(g);
}

static void
test_call_ids_of_64_bytes_and_of_1_byte(void **state)
{
    struct gate *g = gate_small(100, 100);
    char longest[EVENT_CALL_ID_MAX + 1];
    char shorter[EVENT_CALL_ID_MAX + 1];

    memset(longest, 'a', EVENT_CALL_ID_MAX);
    longest[EVENT_CALL_ID_MAX] = '\0';
    memcpy(shorter, longest, sizeof(shorter));
    shorter[EVENT_CALL_ID_MAX - 1] = '\0';

    assert_int_equal(cancel(g, longest, 1, T0), GATE_PASS);
    assert_int_equal(invite(g, longest, 2, T0 + 1), GATE_CANCELLED);
    assert_int_equal(invite(g, shorter, 3, T0 + 1), GATE_PASS);

    assert_int_equal(cancel(g, "z", 4, T0), GATE_PASS);
    assert_int_equal(invite(g, "z", 5, T0 + 1), GATE_CANCELLED);
    assert_int_equal(invite(g, "y", 6, T0 + 1), GATE_PASS);
    assert_int_equal(invite(g, "zz", 7, T0 + 1), GATE_PASS);
    gate_free(g);
}

static void
test_call_id_prefixes_are_distinct_keys(void **state)
{
    struct gate *g = gate_small(100, 100);

    /* Keys are NUL-padded inside the table: the padding must never make
     * a call_id equal to its own prefix or extension. */
    gate_tombstone(g, "call-12", T0);
    assert_true(gate_cancelled(g, "call-12", T0));
    assert_false(gate_cancelled(g, "call-1", T0));
    assert_false(gate_cancelled(g, "call-123", T0));
    assert_false(gate_cancelled(g, "", T0));
    gate_free(g);
}

static void
test_bytes_cover_the_tables_and_stay_fixed(void **state)
{
    struct gate *g = gate_small(1000, 100);
    size_t bytes = gate_bytes(g);
    uint64_t id;

    /* At least a msgid and a time per _j_msgid, a 64-byte key and a time
     * per tombstone, and an index slot for each. */
    assert_true(bytes >= 1000 * (16 + 4) + 100 * (72 + 4));
    for (id = 1; id <= 5000; id++) {
        invite(g, "call-a", id, T0 + (int64_t)id);
    }
    assert_int_equal(gate_bytes(g), bytes);
    assert_int_equal(gate_msgids(g), 1000);
    gate_free(g);
}

static void
test_verdict_names(void **state)
{
    assert_string_equal(gate_verdict_name(GATE_PASS), "pass");
    assert_string_equal(gate_verdict_name(GATE_DUPLICATE), "duplicate");
    assert_string_equal(gate_verdict_name(GATE_CANCELLED), "cancelled");
    assert_string_equal(gate_verdict_name(GATE_LATE), "late");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_within_window_is_dropped),
        cmocka_unit_test(test_msgid_passes_again_after_the_window),
        cmocka_unit_test(test_cancel_sharing_its_invites_msgid_still_cancels),
        cmocka_unit_test(
            test_cancel_then_invite_is_cancelled_for_that_call_only),
        cmocka_unit_test(
            test_invite_then_cancel_both_pass_and_leave_a_tombstone),
        cmocka_unit_test(test_tombstone_expires_after_its_ttl),
        cmocka_unit_test(test_tombstone_without_event_cancels_invites),
        cmocka_unit_test(test_invite_past_its_ring_end_is_late),
        cmocka_unit_test(test_invite_within_min_ring_left_is_late),
        cmocka_unit_test(test_verdicts_come_in_contract_order),
        cmocka_unit_test(test_duplicate_cancel_leaves_tombstones_alone),
        cmocka_unit_test(test_second_cancel_refreshes_without_taking_room),
        cmocka_unit_test(test_full_msgid_table_evicts_the_oldest),
        cmocka_unit_test(test_full_tombstone_table_evicts_the_oldest),
        cmocka_unit_test(test_lookups_survive_heavy_turnover),
        cmocka_unit_test(test_expired_entries_are_reclaimed),
        cmocka_unit_test(test_call_ids_differing_in_one_byte_stay_distinct),
        cmocka_unit_test(test_call_ids_of_64_bytes_and_of_1_byte),
        cmocka_unit_test(test_call_id_prefixes_are_distinct_keys),
        cmocka_unit_test(test_bytes_cover_the_tables_and_stay_fixed),
        cmocka_unit_test(test_verdict_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
