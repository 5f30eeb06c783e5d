/*
 * Tests of log: every line is one valid JSON object, values are escaped,
 * levels filter, repeats are suppressed and counted, tokens are masked, and
 * an over-long line is cut but stays valid JSON.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "log.h"
#include "util.h"

/* 2026-12-04T16:30:00.123Z */
#define T0 INT64_C(1796401800123)

static int64_t fake_now;

static int64_t
fake_clock(void)
{
    return fake_now;
}

struct capture {
    char *text;
    size_t len;
    FILE *out;
    size_t read; /* bytes of text already handed out as lines */
};

static struct capture cap;

static int
setup(void **state)
{
    cap.text = NULL;
    cap.len = 0;
    cap.read = 0;
    cap.out = open_memstream(&cap.text, &cap.len);
    assert_non_null(cap.out);
    log_init(LOG_DEBUG, cap.out);
    fake_now = T0;
    log_set_clock(fake_clock);
    return 0;
}

static int
teardown(void **state)
{
    log_set_clock(NULL);
    log_init(LOG_INFO, stderr);
    fclose(cap.out);
    free(cap.text);
    return 0;
}

/* Returns the number of lines written since the last call. */
static int
count_new_lines(void)
{
    int n = 0;

    log_flush();
    while (cap.read < cap.len) {
        char *nl = memchr(cap.text + cap.read, '\n', cap.len - cap.read);

        assert_non_null(nl);
        cap.read = (size_t)(nl - cap.text) + 1;
        n++;
    }
    return n;
}

/* Parses the next unread line, which must be one JSON object ending in a
 * newline. The caller deletes the result. */
static cJSON *
next_line(void)
{
    char *start, *nl;
    cJSON *obj;

    log_flush();
    assert_true(cap.read < cap.len);
    start = cap.text + cap.read;
    nl = memchr(start, '\n', cap.len - cap.read);
    assert_non_null(nl);
    assert_true((size_t)(nl - start) + 1 <= LOG_LINE_MAX);
    *nl = '\0';
    obj = cJSON_Parse(start);
    if (obj == NULL || !cJSON_IsObject(obj)) {
        fail_msg("not a JSON object: %.200s", start);
    }
    *nl = '\n';
    cap.read = (size_t)(nl - cap.text) + 1;
    return obj;
}

static const char *
get_str(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!cJSON_IsString(item)) {
        fail_msg("no string member %s", key);
    }
    return item->valuestring;
}

static void
test_log_line_is_json_with_fixed_keys(void **state)
{
    struct buf *line = log_begin(LOG_INFO, "push sent");
    cJSON *obj;

    assert_non_null(line);
    log_str(line, "event_id", "e-1");
    log_int(line, "status", 200);
    log_raw(line, "extra", "{\"a\":[1,2]}");
    log_str(line, "none", NULL);
    log_end(line);

    obj = next_line();
    assert_string_equal(get_str(obj, "ts"), "2026-12-04T16:30:00.123Z");
    assert_string_equal(get_str(obj, "level"), "info");
    assert_string_equal(get_str(obj, "msg"), "push sent");
    assert_string_equal(get_str(obj, "event_id"), "e-1");
    assert_int_equal(cJSON_GetObjectItem(obj, "status")->valuedouble, 200);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(obj, "extra")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(obj, "none")));
    assert_null(cJSON_GetObjectItem(obj, "truncated"));

    /* The keys come in the order written, ts first. */
    assert_string_equal(obj->child->string, "ts");
    assert_string_equal(obj->child->next->string, "level");
    assert_string_equal(obj->child->next->next->string, "msg");
    cJSON_Delete(obj);
    assert_int_equal(count_new_lines(), 0);
}

static void
test_log_int64_extremes(void **state)
{
    struct buf *line = log_begin(LOG_INFO, "ints");
    char *start;

    log_int(line, "max", INT64_MAX);
    log_int(line, "min", INT64_MIN);
    log_end(line);
    log_flush();

    /* A double cannot hold these; compare the text. */
    start = cap.text + cap.read;
    assert_non_null(strstr(start, "\"max\":9223372036854775807,"));
    assert_non_null(strstr(start, "\"min\":-9223372036854775808}"));
    assert_int_equal(count_new_lines(), 1);
}

static void
test_log_escapes_values(void **state)
{
    static const char nasty[] = "q\"b\\n\nr\rt\tc\x01 e\x1f 来电邀请";
    struct buf *line = log_begin(LOG_WARN, "a \"quoted\"\nmsg");
    cJSON *obj;

    log_str(line, "v", nasty);
    log_strn(line, "part", "abcdef", 3);
    log_str(line, "k\"ey", "x");
    log_end(line);

    obj = next_line();
    assert_string_equal(get_str(obj, "msg"), "a \"quoted\"\nmsg");
    assert_string_equal(get_str(obj, "v"), nasty);
    assert_string_equal(get_str(obj, "part"), "abc");
    assert_string_equal(get_str(obj, "k\"ey"), "x");
    cJSON_Delete(obj);
}

static void
test_log_replaces_invalid_utf8(void **state)
{
    struct buf *line = log_begin(LOG_INFO, "bytes");
    cJSON *obj;

    /* A stray byte, a cut sequence, an overlong '/', and a surrogate. */
    log_str(line, "v",
            "a\xff"
            "b\xe6\x9d"
            "c\xc0\xaf"
            "d\xed\xa0\x80");
    log_end(line);

    obj = next_line();
    assert_string_equal(get_str(obj, "v"), "a\xef\xbf\xbd"
                                           "b\xef\xbf\xbd\xef\xbf\xbd"
                                           "c\xef\xbf\xbd\xef\xbf\xbd"
                                           "d\xef\xbf\xbd\xef\xbf\xbd"
                                           "\xef\xbf\xbd");
    cJSON_Delete(obj);
}

static void
test_log_level_filtering(void **state)
{
    enum log_level level;

    log_init(LOG_WARN, cap.out);
    assert_false(log_enabled(LOG_DEBUG));
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_WARN));
    assert_true(log_enabled(LOG_ERROR));

    assert_null(log_begin(LOG_INFO, "hidden"));
    assert_null(log_begin_limited(LOG_DEBUG, "hidden", "k"));
    log_msg(LOG_INFO, "hidden", "n=%d", 1);

    /* The field functions take the NULL of a disabled line. */
    log_str(NULL, "k", "v");
    log_int(NULL, "k", 1);
    log_raw(NULL, "k", "1");
    log_token(NULL, "k", "t");
    log_end(NULL);
    assert_int_equal(count_new_lines(), 0);

    log_msg(LOG_WARN, "shown", NULL);
    log_msg(LOG_ERROR, "shown too", "n=%d", 2);
    assert_int_equal(count_new_lines(), 2);

    assert_int_equal(log_parse_level("warn", &level), 0);
    assert_int_equal(level, LOG_WARN);
    assert_int_equal(log_parse_level("debug", &level), 0);
    assert_int_equal(level, LOG_DEBUG);
    assert_int_equal(log_parse_level("WARN", &level), -1);
    assert_int_equal(log_parse_level("warning", &level), -1);
    assert_int_equal(level, LOG_DEBUG);
}

static void
test_log_msg_detail(void **state)
{
    cJSON *obj;

    log_msg(LOG_ERROR, "kafka down", "broker %s: %d tries", "k1:9092", 3);
    obj = next_line();
    assert_string_equal(get_str(obj, "level"), "error");
    assert_string_equal(get_str(obj, "detail"), "broker k1:9092: 3 tries");
    cJSON_Delete(obj);

    log_msg(LOG_INFO, "started", NULL);
    obj = next_line();
    assert_null(cJSON_GetObjectItem(obj, "detail"));
    cJSON_Delete(obj);
}

static void
test_log_error_lines_are_flushed_at_once(void **state)
{
    size_t before;

    /* open_memstream updates its length only on a flush. */
    fflush(cap.out);
    before = cap.len;
    log_msg(LOG_INFO, "buffered", NULL);
    log_msg(LOG_ERROR, "urgent", NULL);
    assert_true(cap.len > before);
    assert_non_null(strstr(cap.text + before, "urgent"));
}

static void
test_log_token_is_masked(void **state)
{
    static const char token[] = "0123456789abcdef0123456789abcdef"
                                "0123456789abcdef01234567fedcba";
    struct buf *line = log_begin(LOG_INFO, "push sent");
    cJSON *obj;
    const char *shown;

    log_token(line, "token", token);
    log_token(line, "none", NULL);
    log_end(line);
    log_flush();
    assert_null(strstr(cap.text + cap.read, token));
    assert_null(strstr(cap.text + cap.read, "89abcdef01234567"));

    obj = next_line();
    shown = get_str(obj, "token");
    assert_int_equal(strncmp(shown, "012345", 6), 0);
    assert_non_null(strstr(shown, "fedcba"));
    assert_true(strlen(shown) < 20);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(obj, "none")));
    cJSON_Delete(obj);
}

static void
test_log_repeat_suppressed_with_count(void **state)
{
    struct buf *line;
    cJSON *obj;
    int i;

    line = log_begin_limited(LOG_WARN, "apns refused", "peer-a");
    assert_non_null(line);
    log_str(line, "reason", "TooManyRequests");
    log_end(line);
    obj = next_line();
    assert_null(cJSON_GetObjectItem(obj, "repeated"));
    assert_string_equal(get_str(obj, "reason"), "TooManyRequests");
    cJSON_Delete(obj);

    /* Five more inside the window are swallowed and counted. */
    for (i = 0; i < 5; i++) {
        fake_now += 5000;
        assert_null(log_begin_limited(LOG_WARN, "apns refused", "peer-a"));
    }
    assert_int_equal(count_new_lines(), 0);

    /* Another key, message or level is a line of its own. */
    log_end(log_begin_limited(LOG_WARN, "apns refused", "peer-b"));
    log_end(log_begin_limited(LOG_WARN, "apns slow", "peer-a"));
    log_end(log_begin_limited(LOG_ERROR, "apns refused", "peer-a"));
    assert_int_equal(count_new_lines(), 3);

    /* 29.999 s after the first: still inside. */
    fake_now = T0 + LOG_REPEAT_WINDOW_S * 1000 - 1;
    assert_null(log_begin_limited(LOG_WARN, "apns refused", "peer-a"));

    /* 30 s after the first: through, carrying the six it swallowed. */
    fake_now = T0 + LOG_REPEAT_WINDOW_S * 1000;
    line = log_begin_limited(LOG_WARN, "apns refused", "peer-a");
    assert_non_null(line);
    log_end(line);
    obj = next_line();
    assert_int_equal(cJSON_GetObjectItem(obj, "repeated")->valueint, 6);
    cJSON_Delete(obj);

    /* A new window starts there, with a fresh count. */
    fake_now += 1000;
    assert_null(log_begin_limited(LOG_WARN, "apns refused", "peer-a"));
    fake_now += LOG_REPEAT_WINDOW_S * 1000;
    log_end(log_begin_limited(LOG_WARN, "apns refused", "peer-a"));
    obj = next_line();
    assert_int_equal(cJSON_GetObjectItem(obj, "repeated")->valueint, 1);
    cJSON_Delete(obj);

    /* A quiet window: no count at all. */
    fake_now += LOG_REPEAT_WINDOW_S * 1000;
    log_end(log_begin_limited(LOG_WARN, "apns refused", "peer-a"));
    obj = next_line();
    assert_null(cJSON_GetObjectItem(obj, "repeated"));
    cJSON_Delete(obj);
}

static void
test_log_repeat_table_evicts_oldest_with_its_count(void **state)
{
    char key[32];
    cJSON *obj;
    int i;

    log_end(log_begin_limited(LOG_WARN, "refused", "first"));
    assert_null(log_begin_limited(LOG_WARN, "refused", "first"));
    assert_null(log_begin_limited(LOG_WARN, "refused", "first"));
    assert_int_equal(count_new_lines(), 1);

    /* 63 more keys fill the table; the 64th new one evicts "first". */
    for (i = 1; i < 64; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        log_end(log_begin_limited(LOG_WARN, "refused", key));
    }
    assert_int_equal(count_new_lines(), 63);
    log_end(log_begin_limited(LOG_WARN, "refused", "one too many"));

    obj = next_line();
    assert_string_equal(get_str(obj, "msg"), "refused");
    assert_string_equal(get_str(obj, "repeat_key"), "first");
    assert_int_equal(cJSON_GetObjectItem(obj, "repeated")->valueint, 2);
    cJSON_Delete(obj);
    assert_int_equal(count_new_lines(), 1);

    /* Forgotten, "first" is let through again at once. */
    assert_non_null(log_begin_limited(LOG_WARN, "refused", "first"));
}

static void
test_log_long_string_is_cut_and_marked(void **state)
{
    size_t big = 3 * LOG_LINE_MAX, i;
    char *value = xmalloc(big + 1);
    struct buf *line;
    const char *shown;
    cJSON *obj;

    memset(value, 'x', big);
    value[big] = '\0';
    line = log_begin(LOG_INFO, "big");
    log_str(line, "before", "b");
    log_str(line, "value", value);
    log_str(line, "after", "a");
    log_end(line);

    obj = next_line();
    shown = get_str(obj, "value");
    assert_true(strlen(shown) > LOG_LINE_MAX / 2);
    for (i = 0; shown[i] != '\0'; i++) {
        assert_int_equal(shown[i], 'x');
    }
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(obj, "truncated")));
    assert_string_equal(get_str(obj, "before"), "b");
    cJSON_Delete(obj);
    free(value);
}

static void
test_log_cut_keeps_whole_characters(void **state)
{
    const char ch[] = "来"; /* three bytes */
    size_t n = LOG_LINE_MAX / 3 + 100, i, j;
    char *value = xmalloc(n * 3 + 1);
    struct buf *line;
    const char *shown;
    cJSON *obj;

    for (i = 0; i < n; i++) {
        memcpy(value + i * 3, ch, 3);
    }
    value[n * 3] = '\0';
    for (i = 0; i < 3; i++) {
        /* Shift the cut across every byte of a character. */
        line = log_begin(LOG_INFO, "cjk");
        log_str(line, "pad", i == 0 ? "" : i == 1 ? "a" : "ab");
        log_str(line, "value", value);
        log_end(line);

        obj = next_line();
        shown = get_str(obj, "value");
        assert_int_equal(strlen(shown) % 3, 0);
        assert_true(strlen(shown) > 0);
        for (j = 0; shown[j] != '\0'; j += 3) {
            assert_memory_equal(shown + j, ch, 3);
        }
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(obj, "truncated")));
        cJSON_Delete(obj);
    }
    free(value);
}

static void
test_log_cut_counts_escapes(void **state)
{
    size_t n = LOG_LINE_MAX / 2, i;
    char *value = xmalloc(n + 1);
    struct buf *line;
    const char *shown;
    cJSON *obj;

    /* Each byte becomes six ("\u0001"), so the raw length would fit but
     * the escaped one does not. */
    memset(value, 1, n);
    value[n] = '\0';
    line = log_begin(LOG_INFO, "escapes");
    log_str(line, "value", value);
    log_end(line);

    obj = next_line();
    shown = get_str(obj, "value");
    assert_true(strlen(shown) > LOG_LINE_MAX / 8);
    assert_true(strlen(shown) < n);
    for (i = 0; shown[i] != '\0'; i++) {
        assert_int_equal(shown[i], 1);
    }
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(obj, "truncated")));
    cJSON_Delete(obj);
    free(value);
}

static void
test_log_oversized_raw_is_left_out(void **state)
{
    size_t n = LOG_LINE_MAX + 10;
    char *json = xmalloc(n + 3);
    struct buf *line;
    cJSON *obj;

    json[0] = '"';
    memset(json + 1, 'r', n);
    json[n + 1] = '"';
    json[n + 2] = '\0';
    line = log_begin(LOG_INFO, "raw");
    log_raw(line, "payload", json);
    log_int(line, "after", 7);
    log_end(line);

    obj = next_line();
    assert_null(cJSON_GetObjectItem(obj, "payload"));
    assert_int_equal(cJSON_GetObjectItem(obj, "after")->valueint, 7);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(obj, "truncated")));
    cJSON_Delete(obj);
    free(json);
}

static void
test_log_line_fills_to_the_limit(void **state)
{
    struct buf *line = log_begin(LOG_INFO, "many");
    char key[16];
    cJSON *obj;
    int i;

    /* Many small fields: the last ones no longer fit and are dropped. */
    for (i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "f%d", i);
        log_int(line, key, 1234567890);
    }
    log_end(line);

    obj = next_line();
    assert_non_null(cJSON_GetObjectItem(obj, "f0"));
    assert_null(cJSON_GetObjectItem(obj, "f9999"));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(obj, "truncated")));
    cJSON_Delete(obj);

    /* The next line starts clean. */
    log_msg(LOG_INFO, "small", NULL);
    obj = next_line();
    assert_null(cJSON_GetObjectItem(obj, "truncated"));
    cJSON_Delete(obj);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_log_line_is_json_with_fixed_keys),
        T(test_log_int64_extremes),
        T(test_log_escapes_values),
        T(test_log_replaces_invalid_utf8),
        T(test_log_level_filtering),
        T(test_log_msg_detail),
        T(test_log_error_lines_are_flushed_at_once),
        T(test_log_token_is_masked),
        T(test_log_repeat_suppressed_with_count),
        T(test_log_repeat_table_evicts_oldest_with_its_count),
        T(test_log_long_string_is_cut_and_marked),
        T(test_log_cut_keeps_whole_characters),
        T(test_log_cut_counts_escapes),
        T(test_log_oversized_raw_is_left_out),
        T(test_log_line_fills_to_the_limit),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
