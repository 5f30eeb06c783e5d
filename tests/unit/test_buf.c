/* The capped buffer: its cap, its growth and its JSON string escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "buf.h"

static void
test_cap_is_reached_exactly(void **state)
{
    struct buf b;

    buf_init(&b, 8);
    buf_adds(&b, "1234");
    buf_adds(&b, "5678");
    assert_false(buf_overflowed(&b));
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    buf_release(&b);
}

static void
test_overflow_is_sticky(void **state)
{
    struct buf b;

    buf_init(&b, 8);
    buf_adds(&b, "12345");

    /* One byte too many: nothing of it is written. */
    buf_adds(&b, "6789");
    assert_true(buf_overflowed(&b));
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");

    /* A later append that would fit is ignored all the same, so a caller
     * checking once at the end never sees a buffer with a hole. */
    buf_addc(&b, '6');
    buf_addf(&b, "%d", 7);
    buf_json_strz(&b, "");
    assert_true(buf_overflowed(&b));
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");

    buf_reset(&b);
    assert_false(buf_overflowed(&b));
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    buf_adds(&b, "abc");
    assert_string_equal(b.data, "abc");
    buf_release(&b);
}

static void
test_addf_grows_past_its_stack_buffer(void **state)
{
    char big[1001];
    struct buf b;

    memset(big, 'x', 1000);
    big[1000] = '\0';

    buf_init(&b, 4096);
    buf_adds(&b, "<");
    buf_addf(&b, "%s|%d", big, 42);
    assert_false(buf_overflowed(&b));
    assert_int_equal(b.len, 1 + 1000 + 3);
    assert_int_equal(b.data[0], '<');
    assert_memory_equal(b.data + 1, big, 1000);
    assert_string_equal(b.data + 1001, "|42");
    assert_int_equal(strlen(b.data), b.len);

    /* The long path must honour the cap as the short one does. */
    buf_addf(&b, "%s%s%s%s", big, big, big, big);
    assert_true(buf_overflowed(&b));
    assert_int_equal(b.len, 1004);
    assert_int_equal(strlen(b.data), 1004);
    buf_release(&b);
}

static void
test_addf_exactly_at_the_stack_buffer_size(void **state)
{
    char s[257];
    struct buf b;

    /* 255 and 256 characters sit on either side of the 256-byte first
     * attempt (which needs room for its NUL). */
    memset(s, 'y', 256);
    s[256] = '\0';
    buf_init(&b, 1024);
    buf_addf(&b, "%.255s", s);
    assert_int_equal(b.len, 255);
    buf_reset(&b);
    buf_addf(&b, "%s", s);
    assert_int_equal(b.len, 256);
    assert_string_equal(b.data, s);
    buf_release(&b);
}

static void
test_every_control_character_is_escaped(void **state)
{
    struct buf b;
    int c;

    buf_init(&b, 64);
    for (c = 0; c < 0x20; c++) {
        char in = (char)c, want[16];
        cJSON *parsed;

        switch (c) {
        case '\n':
            snprintf(want, sizeof(want), "\"\\n\"");
            break;
        case '\r':
            snprintf(want, sizeof(want), "\"\\r\"");
            break;
        case '\t':
            snprintf(want, sizeof(want), "\"\\t\"");
            break;
        default:
            snprintf(want, sizeof(want), "\"\\u%04x\"", c);
            break;
        }
        buf_reset(&b);
        buf_json_str(&b, &in, 1);
        assert_string_equal(b.data, want);

        /* A JSON parser must read back the same character (cJSON stops
         * strings at NUL, so that one is checked by its text only). */
        if (c == 0) {
            continue;
        }
        parsed = cJSON_Parse(b.data);
        assert_non_null(parsed);
        assert_true(cJSON_IsString(parsed));
        assert_int_equal(strlen(parsed->valuestring), 1);
        assert_int_equal(parsed->valuestring[0], c);
        cJSON_Delete(parsed);
    }
    buf_release(&b);
}

static void
test_quotes_backslashes_and_utf8(void **state)
{
    const char *in = "a\"b\\c/d\x7f\xe6\x9d\xa5\xe7\x94\xb5";
    struct buf b;

    buf_init(&b, 64);
    buf_json_strz(&b, in);

    /* Slash, DEL and UTF-8 bytes need no escape and get none. */
    assert_string_equal(b.data,
                        "\"a\\\"b\\\\c/d\x7f\xe6\x9d\xa5\xe7\x94\xb5\"");
    buf_release(&b);
}

static void
test_escaping_respects_the_cap(void **state)
{
    struct buf b;

    /* "\u0001" is 6 bytes: with the quotes 8, one over a cap of 7. */
    buf_init(&b, 7);
    buf_json_str(&b, "\x01", 1);
    assert_true(buf_overflowed(&b));
    buf_release(&b);

    buf_init(&b, 8);
    buf_json_str(&b, "\x01", 1);
    assert_false(buf_overflowed(&b));
    assert_string_equal(b.data, "\"\\u0001\"");
    buf_release(&b);
}

static void
test_json_key(void **state)
{
    struct buf b;

    buf_init(&b, 64);
    buf_json_key(&b, "push\"Type");
    buf_adds(&b, "1");
    assert_string_equal(b.data, "\"push\\\"Type\":1");
    buf_release(&b);
}

static void
test_truncate(void **state)
{
    struct buf b;

    buf_init(&b, 64);
    buf_adds(&b, "abcdef");
    buf_truncate(&b, 3);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");

    /* Truncating to a longer length leaves the contents alone. */
    buf_truncate(&b, 10);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");

    buf_adds(&b, "XY");
    assert_string_equal(b.data, "abcXY");
    buf_truncate(&b, 0);
    assert_string_equal(b.data, "");
    buf_release(&b);
}

static void
test_release_leaves_a_reusable_buffer(void **state)
{
    struct buf b;

    buf_init(&b, 16);
    buf_adds(&b, "0123456789abcdefX");
    assert_true(buf_overflowed(&b));
    buf_release(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.max, 16);
    assert_false(buf_overflowed(&b));

    buf_adds(&b, "again");
    assert_string_equal(b.data, "again");
    buf_release(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_is_reached_exactly),
        cmocka_unit_test(test_overflow_is_sticky),
        cmocka_unit_test(test_addf_grows_past_its_stack_buffer),
        cmocka_unit_test(test_addf_exactly_at_the_stack_buffer_size),
        cmocka_unit_test(test_every_control_character_is_escaped),
        cmocka_unit_test(test_quotes_backslashes_and_utf8),
        cmocka_unit_test(test_escaping_respects_the_cap),
        cmocka_unit_test(test_json_key),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_release_leaves_a_reusable_buffer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
