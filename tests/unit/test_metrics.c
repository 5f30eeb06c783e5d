/* The metrics: what they count, the bounds of their tables, and text that
 * Prometheus' own parser accepts. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "buf.h"
#include "metrics.h"

/* The clock every render here uses. */
#define NOW_MONO_MS 500000
#define NOW_S 1700000000

static int
reset(void **state)
{
    metrics_reset();
    return 0;
}

static void
render(struct buf *b)
{
    buf_init(b, 1024 * 1024);
    metrics_render(b, NOW_MONO_MS, NOW_S);
    assert_false(buf_overflowed(b));
}

/* Whether line is one whole line of text. */
static int
has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n') {
            return 1;
        }
        p++;
    }
    return 0;
}

static void
assert_line(const char *text, const char *line)
{
    if (!has_line(text, line)) {
        fail_msg("missing line: %s", line);
    }
}

static void
test_counters_and_gauges_count(void **state)
{
    struct buf b;

    metrics_inc(METRICS_EVENTS_INVITE);
    metrics_inc(METRICS_EVENTS_INVITE);
    metrics_add(METRICS_EVENTS_CANCEL, 5);
    metrics_inc(METRICS_SUPPRESSED_DUPLICATE);
    metrics_add(METRICS_RETRIES, 3);
    metrics_set(METRICS_INFLIGHT, 17);
    metrics_set(METRICS_ASSIGNED, 4);
    metrics_set(METRICS_APNS_CONNECTIONS, 2);
    assert_int_equal(metrics_get(METRICS_EVENTS_INVITE), 2);
    assert_int_equal(metrics_get(METRICS_EVENTS_CANCEL), 5);
    assert_int_equal(metrics_get(METRICS_EVENTS_INVALID), 0);
    assert_int_equal(metrics_gauge(METRICS_INFLIGHT), 17);

    render(&b);
    assert_line(b.data, "callpush_events_consumed_total{type=\"invite\"} 2");
    assert_line(b.data, "callpush_events_consumed_total{type=\"cancel\"} 5");
    assert_line(b.data, "callpush_events_consumed_total{type=\"invalid\"} 0");
    assert_line(b.data, "callpush_suppressed_total{cause=\"duplicate\"} 1");
    assert_line(b.data, "callpush_suppressed_total{cause=\"late\"} 0");
    assert_line(b.data, "callpush_push_retries_total 3");
    assert_line(b.data, "callpush_dead_letters_total 0");
    assert_line(b.data, "callpush_pushes_in_flight 17");
    assert_line(b.data, "callpush_assigned_partitions 4");
    assert_line(b.data, "callpush_apns_connections 2");
    assert_line(b.data, "callpush_up 1");
    assert_line(b.data, "# TYPE callpush_events_consumed_total counter");
    assert_line(b.data, "# TYPE callpush_pushes_in_flight gauge");
    buf_release(&b);
}

static void
test_pushes_by_status_and_reason(void **state)
{
    struct buf b;

    metrics_push(200, "");
    metrics_push(200, "");
    metrics_push(410, "Unregistered");
    metrics_push(0, "");
    metrics_push(400, "BadDeviceToken");
    metrics_push(400, "TopicDisallowed");
    assert_int_equal(metrics_pushes(200), 2);
    assert_int_equal(metrics_pushes(400), 2);
    assert_int_equal(metrics_pushes(0), 1);
    assert_int_equal(metrics_pushes(503), 0);

    render(&b);
    assert_line(b.data, "callpush_pushes_total{status=\"200\",reason=\"\"} 2");
    assert_line(b.data,
                "callpush_pushes_total{status=\"410\",reason=\"Unregistered\"} "
                "1");
    assert_line(b.data, "callpush_pushes_total{status=\"0\",reason=\"\"} 1");
    assert_line(b.data, "callpush_pushes_total{status=\"400\","
                        "reason=\"TopicDisallowed\"} 1");
    assert_null(strstr(b.data, "reason=\"other\""));
    buf_release(&b);
}

static void
test_push_table_overflows_into_other(void **state)
{
    char reason[32];
    struct buf b;
    int i;

    for (i = 0; i < METRICS_PUSH_ROWS; i++) {
        snprintf(reason, sizeof(reason), "r%d", i);
        metrics_push(400, reason);
    }

    /* The table is full: new pairs land in their status's "other" row,
     * while pairs already kept go on counting in their own. */
    metrics_push(400, "new-one");
    metrics_push(400, "new-two");
    metrics_push(503, "ServiceUnavailable");
    metrics_push(400, "r5");
    assert_int_equal(metrics_pushes(400), METRICS_PUSH_ROWS + 3);
    assert_int_equal(metrics_pushes(503), 1);

    render(&b);
    assert_line(b.data,
                "callpush_pushes_total{status=\"400\",reason=\"r5\"} 2");
    assert_line(b.data,
                "callpush_pushes_total{status=\"400\",reason=\"r63\"} 1");
    assert_line(b.data,
                "callpush_pushes_total{status=\"400\",reason=\"other\"} 2");
    assert_line(b.data,
                "callpush_pushes_total{status=\"503\",reason=\"other\"} 1");
    assert_null(strstr(b.data, "new-one"));
    assert_null(strstr(b.data, "ServiceUnavailable"));
    buf_release(&b);
}

static void
test_label_values_are_escaped(void **state)
{
    struct buf b;

    metrics_push(400, "say \"hi\"\\now\nthen");
    metrics_lag("odd\"topic\\", 3, 9);

    render(&b);
    assert_line(b.data, "callpush_pushes_total{status=\"400\","
                        "reason=\"say \\\"hi\\\"\\\\now\\nthen\"} 1");
    assert_line(b.data, "callpush_consumer_lag{topic=\"odd\\\"topic\\\\\","
                        "partition=\"3\"} 9");
    buf_release(&b);
}

static void
test_histogram_buckets_are_cumulative(void **state)
{
    static const char *const want[] = {
        "le=\"0.005\"} 3", "le=\"0.01\"} 3", "le=\"0.025\"} 3",
        "le=\"0.05\"} 3",  "le=\"0.1\"} 3",  "le=\"0.25\"} 3",
        "le=\"0.5\"} 4",   "le=\"1\"} 4",    "le=\"2.5\"} 4",
        "le=\"5\"} 4",     "le=\"10\"} 5",   "le=\"30\"} 5",
        "le=\"+Inf\"} 6"};
    char line[128];
    struct buf b;
    size_t i;

    /* A bound belongs to its own bucket; a negative latency (a sender's
     * clock ahead of ours) counts as none. */
    metrics_latency(METRICS_INVITE, 0.001);
    metrics_latency(METRICS_INVITE, 0.005);
    metrics_latency(METRICS_INVITE, -2.0);
    metrics_latency(METRICS_INVITE, 0.3);
    metrics_latency(METRICS_INVITE, 7.0);
    metrics_latency(METRICS_INVITE, 100.0);
    metrics_latency(METRICS_CANCEL, 0.02);

    render(&b);
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(line, sizeof(line),
                 "callpush_push_latency_seconds_bucket{type=\"invite\",%s",
                 want[i]);
        assert_line(b.data, line);
    }
    assert_line(b.data,
                "callpush_push_latency_seconds_count{type=\"invite\"} 6");
    assert_line(b.data,
                "callpush_push_latency_seconds_sum{type=\"invite\"} 107.306");
    assert_line(b.data, "callpush_push_latency_seconds_bucket{type=\"cancel\","
                        "le=\"0.01\"} 0");
    assert_line(b.data, "callpush_push_latency_seconds_bucket{type=\"cancel\","
                        "le=\"0.025\"} 1");
    assert_line(b.data, "callpush_push_latency_seconds_bucket{type=\"cancel\","
                        "le=\"+Inf\"} 1");
    assert_line(b.data, "# TYPE callpush_push_latency_seconds histogram");
    buf_release(&b);
}

static void
test_lag_rows(void **state)
{
    struct buf b;
    int i;

    metrics_lag("calls", 0, 5);
    metrics_lag("calls", 1, 7);
    metrics_lag("other", 0, 100);
    metrics_lag("calls", 0, 3);
    assert_int_equal(metrics_lag_total(), 110);

    render(&b);
    assert_line(b.data,
                "callpush_consumer_lag{topic=\"calls\",partition=\"0\"} 3");
    assert_line(b.data,
                "callpush_consumer_lag{topic=\"calls\",partition=\"1\"} 7");
    assert_line(b.data,
                "callpush_consumer_lag{topic=\"other\",partition=\"0\"} 100");
    assert_line(b.data, "callpush_consumer_lag_total 110");
    buf_release(&b);

    metrics_lag_clear();
    assert_int_equal(metrics_lag_total(), 0);
    render(&b);
    assert_null(strstr(b.data, "callpush_consumer_lag{"));
    assert_line(b.data, "callpush_consumer_lag_total 0");
    buf_release(&b);

    /* Rows past the table's size are dropped, not stored. */
    for (i = 0; i < METRICS_LAG_ROWS + 10; i++) {
        metrics_lag("calls", i, 1);
    }
    assert_int_equal(metrics_lag_total(), METRICS_LAG_ROWS);
}

static void
test_ages_follow_the_given_clock(void **state)
{
    struct buf b;

    render(&b);
    assert_line(b.data, "callpush_jwt_age_seconds 0");
    buf_release(&b);

    metrics_set(METRICS_JWT_IAT, NOW_S - 60);
    metrics_set(METRICS_LOOP_HEARTBEAT_MS, NOW_MONO_MS - 2500);
    render(&b);
    assert_line(b.data, "callpush_jwt_age_seconds 60");
    assert_line(b.data, "callpush_loop_heartbeat_age_seconds 2.500");
    buf_release(&b);
}

static void
test_reset_zeroes_everything(void **state)
{
    struct buf b;

    metrics_inc(METRICS_FEEDBACK);
    metrics_set(METRICS_ASSIGNED, 3);
    metrics_push(200, "");
    metrics_lag("calls", 0, 5);
    metrics_latency(METRICS_CANCEL, 1.0);

    metrics_reset();
    assert_int_equal(metrics_get(METRICS_FEEDBACK), 0);
    assert_int_equal(metrics_gauge(METRICS_ASSIGNED), 0);
    assert_int_equal(metrics_pushes(200), 0);
    assert_int_equal(metrics_lag_total(), 0);

    render(&b);
    assert_null(strstr(b.data, "callpush_pushes_total{"));
    assert_null(strstr(b.data, "callpush_consumer_lag{"));
    assert_line(b.data,
                "callpush_push_latency_seconds_count{type=\"cancel\"} 0");
    assert_line(b.data, "callpush_feedback_messages_total 0");
    buf_release(&b);
}

/*
 * Reads the exposition from stdin with prometheus_client's parser, which
 * raises on lines it cannot read, then checks that every family is there
 * with its type, that nothing else is (a stray sample would show as an
 * untyped family), that an escaped label value reads back as written and
 * that the histogram's buckets add up.
 */
static const char parse_script[] =
    "import sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "want = {\n"
    "    \"callpush_events_consumed\": \"counter\",\n"
    "    \"callpush_pushes\": \"counter\",\n"
    "    \"callpush_suppressed\": \"counter\",\n"
    "    \"callpush_push_retries\": \"counter\",\n"
    "    \"callpush_dead_letters\": \"counter\",\n"
    "    \"callpush_feedback_messages\": \"counter\",\n"
    "    \"callpush_pushes_in_flight\": \"gauge\",\n"
    "    \"callpush_apns_connections\": \"gauge\",\n"
    "    \"callpush_assigned_partitions\": \"gauge\",\n"
    "    \"callpush_jwt_age_seconds\": \"gauge\",\n"
    "    \"callpush_consumer_lag\": \"gauge\",\n"
    "    \"callpush_consumer_lag_total\": \"gauge\",\n"
    "    \"callpush_push_latency_seconds\": \"histogram\",\n"
    "    \"callpush_loop_heartbeat_age_seconds\": \"gauge\",\n"
    "    \"callpush_up\": \"gauge\",\n"
    "}\n"
    "got = {}\n"
    "for f in text_string_to_metric_families(sys.stdin.read()):\n"
    "    if f.name in got:\n"
    "        sys.exit(\"family twice: \" + f.name)\n"
    "    got[f.name] = f\n"
    "for name, typ in want.items():\n"
    "    if name not in got or got[name].type != typ:\n"
    "        sys.exit(\"missing or mistyped: \" + name)\n"
    "if set(got) != set(want):\n"
    "    sys.exit(\"unexpected: \" + str(set(got) - set(want)))\n"
    "odd = \"a\" + chr(34) + \"b\" + chr(92) + \"c\" + chr(10) + \"d\"\n"
    "reasons = [s.labels[\"reason\"] for s in "
    "got[\"callpush_pushes\"].samples]\n"
    "if odd not in reasons:\n"
    "    sys.exit(\"escaped reason read back as \" + repr(reasons))\n"
    "for kind in (\"invite\", \"cancel\"):\n"
    "    s = [x for x in got[\"callpush_push_latency_seconds\"].samples\n"
    "         if x.labels[\"type\"] == kind]\n"
    "    b = [x.value for x in s if x.name.endswith(\"_bucket\")]\n"
    "    n = [x.value for x in s if x.name.endswith(\"_count\")]\n"
    "    if len(b) != 13 or b != sorted(b) or n != [b[-1]]:\n"
    "        sys.exit(\"bad histogram for \" + kind)\n"
    "ev = {s.labels[\"type\"]: s.value\n"
    "      for s in got[\"callpush_events_consumed\"].samples}\n"
    "if ev != {\"invite\": 3.0, \"cancel\": 1.0, \"invalid\": 0.0}:\n"
    "    sys.exit(\"events read back as \" + repr(ev))\n";

static void
test_prometheus_client_parses_the_output(void **state)
{
    char cmd[sizeof(parse_script) + 64];
    struct buf b;
    FILE *p;
    int rc;

    metrics_add(METRICS_EVENTS_INVITE, 3);
    metrics_inc(METRICS_EVENTS_CANCEL);
    metrics_push(200, "");
    metrics_push(410, "a\"b\\c\nd");
    metrics_lag("calls", 0, 4);
    metrics_lag("calls", 1, 0);
    metrics_latency(METRICS_INVITE, 0.2);
    metrics_latency(METRICS_CANCEL, 40.0);
    metrics_set(METRICS_JWT_IAT, NOW_S - 10);
    metrics_set(METRICS_LOOP_HEARTBEAT_MS, NOW_MONO_MS - 10);
    render(&b);

    /* The script holds no single quote, so the shell passes it whole. */
    assert_null(strchr(parse_script, '\''));
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c '%s'", parse_script);

    /* A parser that exits early must fail the test, not kill it. */
    signal(SIGPIPE, SIG_IGN);
    p = popen(cmd, "w");
    assert_non_null(p);
    fwrite(b.data, 1, b.len, p);
    rc = pclose(p);
    assert_true(WIFEXITED(rc));
    assert_int_equal(WEXITSTATUS(rc), 0);
    buf_release(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_counters_and_gauges_count, reset),
        cmocka_unit_test_setup(test_pushes_by_status_and_reason, reset),
        cmocka_unit_test_setup(test_push_table_overflows_into_other, reset),
        cmocka_unit_test_setup(test_label_values_are_escaped, reset),
        cmocka_unit_test_setup(test_histogram_buckets_are_cumulative, reset),
        cmocka_unit_test_setup(test_lag_rows, reset),
        cmocka_unit_test_setup(test_ages_follow_the_given_clock, reset),
        cmocka_unit_test_setup(test_reset_zeroes_everything, reset),
        cmocka_unit_test_setup(test_prometheus_client_parses_the_output, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
