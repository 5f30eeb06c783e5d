/* The commit watermark of one partition under out-of-order completion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ledger.h"

static void
test_nothing_tracked_commits_nothing(void **state)
{
    struct ledger *lg = ledger_new();

    assert_int_equal(ledger_commit_offset(lg), -1);
    assert_int_equal(ledger_pending(lg), 0);
    ledger_free(lg);
}

static void
test_watermark_waits_for_the_oldest(void **state)
{
    struct ledger *lg = ledger_new();

    assert_int_equal(ledger_track(lg, 10), 0);
    assert_int_equal(ledger_track(lg, 11), 0);
    assert_int_equal(ledger_track(lg, 12), 0);

    /* Later events finishing first must not move the commit past 10. */
    assert_int_equal(ledger_done(lg, 12), 0);
    assert_int_equal(ledger_done(lg, 11), 0);
    assert_int_equal(ledger_commit_offset(lg), -1);
    assert_int_equal(ledger_pending(lg), 1);

    assert_int_equal(ledger_done(lg, 10), 0);
    assert_int_equal(ledger_commit_offset(lg), 13);
    assert_int_equal(ledger_pending(lg), 0);
    ledger_free(lg);
}

static void
test_gaps_in_offsets_are_allowed(void **state)
{
    struct ledger *lg = ledger_new();

    /* Compacted topics and transaction markers leave holes. */
    ledger_track(lg, 5);
    ledger_track(lg, 9);
    ledger_done(lg, 5);
    assert_int_equal(ledger_commit_offset(lg), 6);
    ledger_done(lg, 9);
    assert_int_equal(ledger_commit_offset(lg), 10);
    ledger_free(lg);
}

static void
test_rewind_and_double_done_are_refused(void **state)
{
    struct ledger *lg = ledger_new();

    ledger_track(lg, 3);
    assert_int_equal(ledger_track(lg, 3), -1);
    assert_int_equal(ledger_track(lg, 2), -1);
    assert_int_equal(ledger_done(lg, 4), -1);
    assert_int_equal(ledger_done(lg, 3), 0);
    assert_int_equal(ledger_done(lg, 3), -1);

    ledger_reset(lg);
    assert_int_equal(ledger_commit_offset(lg), -1);
    assert_int_equal(ledger_track(lg, 0), 0);
    ledger_free(lg);
}

static void
test_ring_grows_past_its_first_size(void **state)
{
    struct ledger *lg = ledger_new();
    int64_t i;

    /* Keep the head in flight while thousands more are tracked, with the
     * ring wrapped around (the first 40 finish and leave). */
    for (i = 0; i < 40; i++) {
        ledger_track(lg, i);
    }
    for (i = 1; i < 40; i++) {
        ledger_done(lg, i);
    }
    for (i = 40; i < 5000; i++) {
        assert_int_equal(ledger_track(lg, i), 0);
    }
    for (i = 4999; i >= 40; i--) {
        assert_int_equal(ledger_done(lg, i), 0);
    }
    assert_int_equal(ledger_commit_offset(lg), -1);
    assert_int_equal(ledger_done(lg, 0), 0);
    assert_int_equal(ledger_commit_offset(lg), 5000);
    assert_int_equal(ledger_pending(lg), 0);
    ledger_free(lg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_tracked_commits_nothing),
        cmocka_unit_test(test_watermark_waits_for_the_oldest),
        cmocka_unit_test(test_gaps_in_offsets_are_allowed),
        cmocka_unit_test(test_rewind_and_double_done_are_refused),
        cmocka_unit_test(test_ring_grows_past_its_first_size),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
