/*
 * Tests of config: defaults, where values come from, every rule's refusal
 * and its message, the Kafka pass-through, the description and the help.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "buf.h"
#include "config.h"
#include "util.h"

#define MAX_ARGS 32

static char key_path[64];

/* A fixture: an environment with the required settings, and an argv, both
 * built up by each test. */
struct fixture {
    char *env[MAX_ARGS];
    int nenv;
    char *argv[MAX_ARGS];
    int argc;
    struct config cfg;
    char err[CONFIG_ERR_MAX];
};

static void env_add(struct fixture *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
env_add(struct fixture *f, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    assert_true(f->nenv < MAX_ARGS - 1);
    f->env[f->nenv++] = xstrdup(line);
    f->env[f->nenv] = NULL;
}

/* Drops the variable name from the environment. */
static void
env_del(struct fixture *f, const char *name)
{
    size_t n = strlen(name);
    int i, j = 0;

    for (i = 0; i < f->nenv; i++) {
        if (strncmp(f->env[i], name, n) == 0 && f->env[i][n] == '=') {
            free(f->env[i]);
            continue;
        }
        f->env[j++] = f->env[i];
    }
    f->nenv = j;
    f->env[j] = NULL;
}

static void
arg_add(struct fixture *f, const char *arg)
{
    assert_true(f->argc < MAX_ARGS - 1);
    f->argv[f->argc++] = xstrdup(arg);
    f->argv[f->argc] = NULL;
}

static int
setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    arg_add(f, "callpush");
    env_add(f, "PATH=/usr/bin");
    env_add(f, "CALLPUSH_BROKERS=127.0.0.1:9092");
    env_add(f, "CALLPUSH_APNS_TOPIC=com.example.chat");
    env_add(f, "CALLPUSH_APNS_KEY_FILE=%s", key_path);
    env_add(f, "CALLPUSH_APNS_KEY_ID=ABC123DEFG");
    env_add(f, "CALLPUSH_APNS_TEAM_ID=TEAM123456");
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    int i;

    config_release(&f->cfg);
    for (i = 0; i < f->nenv; i++) {
        free(f->env[i]);
    }
    for (i = 0; i < f->argc; i++) {
        free(f->argv[i]);
    }
    free(f);
    return 0;
}

static int
load(struct fixture *f)
{
    config_release(&f->cfg);
    return config_load(&f->cfg, f->argc, f->argv, f->env, f->err);
}

static void
assert_loads(struct fixture *f)
{
    if (load(f) != 0) {
        fail_msg("config_load failed: %s", f->err);
    }
}

/* Asserts that loading fails with an error that contains every given
 * piece (NULL-terminated). */
static void
assert_fails_with(struct fixture *f, ...)
{
    const char *piece;
    va_list ap;

    assert_int_equal(load(f), -1);
    assert_null(strchr(f->err, '\n'));
    va_start(ap, f);
    while ((piece = va_arg(ap, const char *)) != NULL) {
        if (strstr(f->err, piece) == NULL) {
            fail_msg("error \"%s\" lacks \"%s\"", f->err, piece);
        }
    }
    va_end(ap);

    /* A failed load leaves nothing behind. */
    assert_null(f->cfg.brokers);
    assert_null(f->cfg.kafka);
}

static const struct config_setting *
setting_by_flag(const char *flag)
{
    size_t i;

    for (i = 0; i < config_nsettings; i++) {
        if (strcmp(config_settings[i].flag, flag) == 0) {
            return &config_settings[i];
        }
    }
    fail_msg("no setting with flag --%s", flag);
    return NULL;
}

static void
test_config_defaults(void **state)
{
    struct fixture *f = *state;
    struct config *c = &f->cfg;

    assert_loads(f);
    assert_string_equal(c->brokers, "127.0.0.1:9092");
    assert_string_equal(c->group, "callpush");
    assert_string_equal(c->invite_topic, "call.invite");
    assert_string_equal(c->cancel_topic, "call.cancel");
    assert_string_equal(c->feedback_topic, "push.feedback");
    assert_string_equal(c->dlq_topic, "call.dlq");
    assert_string_equal(c->apns_env, "production");
    assert_string_equal(c->apns_url, "");
    assert_string_equal(c->apns_ca_file, "");
    assert_string_equal(c->apns_topic, "com.example.chat");
    assert_string_equal(c->apns_key_file, key_path);
    assert_string_equal(c->apns_key_id, "ABC123DEFG");
    assert_string_equal(c->apns_team_id, "TEAM123456");
    assert_int_equal(c->apns_connections, 2);
    assert_int_equal(c->apns_timeout_ms, 10000);
    assert_int_equal(c->max_inflight, 1000);
    assert_int_equal(c->ring_timeout_s, 60);
    assert_int_equal(c->cancel_expiration_s, 300);
    assert_string_equal(c->invite_title, "来电邀请");
    assert_string_equal(c->invite_video_title, "视频来电邀请");
    assert_string_equal(c->cancel_title, "语音通话取消");
    assert_string_equal(c->cancel_video_title, "视频通话取消");
    assert_string_equal(c->sound, "laidian.caf");
    assert_int_equal(c->log_level, LOG_INFO);
    assert_int_equal(c->nkafka, 0);
}

static void
test_config_every_required_setting_is_named_when_missing(void **state)
{
    struct fixture *f = *state;
    size_t i;
    int required = 0;

    for (i = 0; i < config_nsettings; i++) {
        const struct config_setting *s = &config_settings[i];
        char flag[64], saved[1024] = "";
        int j;

        if (s->def != NULL) {
            continue;
        }
        required++;
        for (j = 0; j < f->nenv; j++) {
            if (strncmp(f->env[j], s->env, strlen(s->env)) == 0) {
                util_strlcpy(saved, f->env[j], sizeof(saved));
            }
        }
        assert_true(saved[0] != '\0');

        env_del(f, s->env);
        snprintf(flag, sizeof(flag), "(--%s)", s->flag);
        assert_fails_with(f, s->env, flag, "is required", NULL);
        env_add(f, "%s", saved);
    }
    assert_int_equal(required, 5);
}

static void
test_config_all_missing_names_the_first(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[CONFIG_ERR_MAX];
    char *argv[] = {"callpush", NULL};
    char *env[] = {NULL};

    (void)f;
    assert_int_equal(config_load(&c, 1, argv, env, err), -1);
    assert_string_equal(
        err, "CALLPUSH_BROKERS (--brokers): is required and not set");
}

static void
test_config_flag_overrides_env(void **state)
{
    struct fixture *f = *state;

    env_add(f, "CALLPUSH_GROUP=from-env");
    env_add(f, "CALLPUSH_RING_TIMEOUT_S=30");
    assert_loads(f);
    assert_string_equal(f->cfg.group, "from-env");
    assert_int_equal(f->cfg.ring_timeout_s, 30);

    arg_add(f, "--group");
    arg_add(f, "from-flag");
    arg_add(f, "--ring-timeout-s=45");
    assert_loads(f);
    assert_string_equal(f->cfg.group, "from-flag");
    assert_int_equal(f->cfg.ring_timeout_s, 45);
}

static void
test_config_flag_forms_equal_and_space(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--apns-env=sandbox");
    arg_add(f, "--log-level");
    arg_add(f, "debug");
    arg_add(f, "--invite-title=a=b");
    arg_add(f, "--max-inflight");
    arg_add(f, "7");
    assert_loads(f);
    assert_string_equal(f->cfg.apns_env, "sandbox");
    assert_int_equal(f->cfg.log_level, LOG_DEBUG);
    assert_string_equal(f->cfg.invite_title, "a=b");
    assert_int_equal(f->cfg.max_inflight, 7);
}

static void
test_config_flags_alone_satisfy_required(void **state)
{
    struct fixture *f = *state;
    char *env[] = {NULL};
    char key[600];

    snprintf(key, sizeof(key), "--apns-key-file=%s", key_path);
    arg_add(f, "--brokers=k1:9092,k2:9093");
    arg_add(f, "--apns-topic=com.example.chat");
    arg_add(f, key);
    arg_add(f, "--apns-key-id=ABC123DEFG");
    arg_add(f, "--apns-team-id=TEAM123456");
    config_release(&f->cfg);
    if (config_load(&f->cfg, f->argc, f->argv, env, f->err) != 0) {
        fail_msg("%s", f->err);
    }
    assert_string_equal(f->cfg.brokers, "k1:9092,k2:9093");
}

static void
test_config_first_of_duplicate_env_wins(void **state)
{
    struct fixture *f = *state;

    env_add(f, "CALLPUSH_GROUP=first");
    env_add(f, "CALLPUSH_GROUP=second");
    assert_loads(f);
    assert_string_equal(f->cfg.group, "first");
}

static void
test_config_unknown_callpush_env_is_ignored(void **state)
{
    struct fixture *f = *state;

    /* What Kubernetes injects for a Service named callpush. */
    env_add(f, "CALLPUSH_SERVICE_HOST=10.0.0.1");
    env_add(f, "CALLPUSH_PORT=tcp://10.0.0.1:80");
    env_add(f, "NOT_CALLPUSH_GROUP=x");
    assert_loads(f);
    assert_string_equal(f->cfg.group, "callpush");
}

struct bad_case {
    const char *flag;
    const char *value;
    const char *rule; /* a piece of the message */
};

static const struct bad_case bad_cases[] = {
    {"brokers", "", "comma-separated list of host:port"},
    {"brokers", "kafka", "host:port"},
    {"brokers", "kafka:0", "host:port"},
    {"brokers", "kafka:65536", "host:port"},
    {"brokers", "a:1,,b:2", "host:port"},
    {"brokers", "a:1, b:2", "host:port"},
    {"brokers", "::1:9092", "host:port"},
    {"brokers", "[::1:9092", "host:port"},
    {"group", "", "1 to 255 bytes"},
    {"group", "a\tb", "without control characters"},
    {"invite-topic", "", "Kafka topic name"},
    {"cancel-topic", "call cancel", "Kafka topic name"},
    {"feedback-topic", "..", "Kafka topic name"},
    {"dlq-topic", "dlq/x", "Kafka topic name"},
    {"apns-env", "prod", "\"production\" or \"sandbox\""},
    {"apns-url", "http://127.0.0.1", "https://host"},
    {"apns-url", "https://", "no path"},
    {"apns-url", "https://host/3/device", "no path"},
    {"apns-url", "https://host:0", "no path"},
    {"apns-url", "https://host:443//", "no path"},
    {"apns-ca-file", "/nonexistent/ca.pem", "No such file or directory"},
    {"apns-ca-file", "/tmp", "not a regular file"},
    {"apns-topic", "", "bundle id"},
    {"apns-topic", "com.example_chat", "bundle id"},
    {"apns-key-file", "", "readable file"},
    {"apns-key-file", "/nonexistent/key.p8", "readable file"},
    {"apns-key-id", "ABC123", "10 characters from A-Z 0-9"},
    {"apns-key-id", "abc123defg", "10 characters from A-Z 0-9"},
    {"apns-team-id", "TEAM1234567", "10 characters from A-Z 0-9"},
    {"apns-connections", "0", "integer from 1 to 64"},
    {"apns-connections", "65", "integer from 1 to 64"},
    {"apns-connections", "", "integer from 1 to 64"},
    {"apns-connections", " 2", "integer from 1 to 64"},
    {"apns-connections", "2x", "integer from 1 to 64"},
    {"apns-timeout-ms", "99", "integer from 100 to 120000"},
    {"apns-timeout-ms", "120001", "integer from 100 to 120000"},
    {"max-inflight", "100001", "integer from 1 to 100000"},
    {"ring-timeout-s", "601", "integer from 1 to 600"},
    {"cancel-expiration-s", "-1", "integer from 0 to 86400"},
    {"cancel-expiration-s", "99999999999999999999", "integer from 0 to 86400"},
    {"invite-title", "", "valid UTF-8 text of 1 to 256 bytes"},
    {"invite-video-title", "\xff\xfe", "valid UTF-8"},
    {"cancel-title", "\xed\xa0\x80", "valid UTF-8"},
    {"cancel-video-title", "\xc0\xaf", "valid UTF-8"},
    {"sound", "", "valid UTF-8"},
    {"log-level", "verbose", "one of debug, info, warn, error"},
};

static void
test_config_each_rule_rejects_with_its_message(void **state)
{
    struct fixture *f = *state;
    size_t i;

    for (i = 0; i < UTIL_ARRAY_LEN(bad_cases); i++) {
        const struct bad_case *bc = &bad_cases[i];
        const struct config_setting *s = setting_by_flag(bc->flag);
        char flag[64], arg[300], saved[1024];
        int j;

        /* Once as a flag... */
        snprintf(arg, sizeof(arg), "--%s=%s", bc->flag, bc->value);
        snprintf(flag, sizeof(flag), "%s (--%s): ", s->env, bc->flag);
        arg_add(f, arg);
        assert_fails_with(f, flag, bc->rule, ", got \"", NULL);
        free(f->argv[--f->argc]);
        f->argv[f->argc] = NULL;

        /* ...and once from the environment, with the same message. */
        saved[0] = '\0';
        for (j = 0; j < f->nenv; j++) {
            if (strncmp(f->env[j], s->env, strlen(s->env)) == 0 &&
                f->env[j][strlen(s->env)] == '=') {
                util_strlcpy(saved, f->env[j], sizeof(saved));
            }
        }
        env_del(f, s->env);
        env_add(f, "%s=%s", s->env, bc->value);
        assert_fails_with(f, flag, bc->rule, NULL);
        env_del(f, s->env);
        if (saved[0] != '\0') {
            env_add(f, "%s", saved);
        }
    }
}

static void
test_config_int_message_is_exact(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--ring-timeout-s");
    arg_add(f, "abc");
    assert_int_equal(load(f), -1);
    assert_string_equal(f->err,
                        "CALLPUSH_RING_TIMEOUT_S (--ring-timeout-s): "
                        "must be an integer from 1 to 600, got \"abc\"");
}

static void
test_config_text_length_limit(void **state)
{
    struct fixture *f = *state;
    char title[300];

    /* 85 three-byte characters: 255 bytes, then one more is 258. */
    title[0] = '\0';
    while (strlen(title) + 3 <= 255) {
        strcat(title, "邀");
    }
    env_add(f, "CALLPUSH_INVITE_TITLE=%s", title);
    assert_loads(f);
    assert_string_equal(f->cfg.invite_title, title);

    env_del(f, "CALLPUSH_INVITE_TITLE");
    strcat(title, "邀");
    env_add(f, "CALLPUSH_INVITE_TITLE=%s", title);
    assert_fails_with(f, "CALLPUSH_INVITE_TITLE (--invite-title)",
                      "1 to 256 bytes", "...", NULL);
}

static void
test_config_error_quotes_control_characters(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--group=a\nb\"c");
    assert_fails_with(f, "got \"a\\x0ab\\\"c\"", NULL);
}

static void
test_config_accepted_edge_values(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--brokers=[::1]:9092,kafka-0.kafka.svc:9093,10.0.0.1:1");
    arg_add(f, "--apns-url=https://127.0.0.1:8443/");
    arg_add(f, "--apns-connections=64");
    arg_add(f, "--cancel-expiration-s=0");
    arg_add(f, "--apns-topic=com.example.chat.voip");
    assert_loads(f);
    assert_string_equal(f->cfg.brokers,
                        "[::1]:9092,kafka-0.kafka.svc:9093,10.0.0.1:1");
    assert_string_equal(f->cfg.apns_url, "https://127.0.0.1:8443");
    assert_int_equal(f->cfg.apns_connections, 64);
    assert_int_equal(f->cfg.cancel_expiration_s, 0);

    env_add(f, "CALLPUSH_APNS_URL=https://[::1]");
    env_add(f, "CALLPUSH_APNS_CA_FILE=%s", key_path);
    assert_loads(f);
    assert_string_equal(f->cfg.apns_ca_file, key_path);
}

static void
test_config_unknown_flag(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--ring-timeout=5");
    assert_fails_with(f, "unknown flag \"--ring-timeout\"", NULL);
}

static void
test_config_positional_argument(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "run");
    assert_fails_with(f, "unexpected argument \"run\"", NULL);
}

static void
test_config_missing_value_at_end(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--group");
    assert_fails_with(f, "CALLPUSH_GROUP (--group): needs a value", NULL);
}

static void
test_config_missing_value_before_flag(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--sound");
    arg_add(f, "--group=x");
    assert_fails_with(f, "CALLPUSH_SOUND (--sound): needs a value", NULL);
}

static void
test_config_flag_twice(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--group=a");
    arg_add(f, "--group");
    arg_add(f, "b");
    assert_fails_with(f, "CALLPUSH_GROUP (--group): given twice", NULL);
}

static void
test_config_kafka_env_name_mapping(void **state)
{
    struct fixture *f = *state;

    env_add(f, "CALLPUSH_KAFKA_SASL_MECHANISMS=PLAIN");
    env_add(f, "CALLPUSH_KAFKA_SECURITY_PROTOCOL=SASL_SSL");
    env_add(f, "CALLPUSH_KAFKA_QUEUED_MIN_MESSAGES=");
    assert_loads(f);
    assert_int_equal(f->cfg.nkafka, 3);
    assert_string_equal(f->cfg.kafka[0].name, "sasl.mechanisms");
    assert_string_equal(f->cfg.kafka[0].value, "PLAIN");
    assert_string_equal(f->cfg.kafka[1].name, "security.protocol");
    assert_string_equal(f->cfg.kafka[1].value, "SASL_SSL");
    assert_string_equal(f->cfg.kafka[2].name, "queued.min.messages");
    assert_string_equal(f->cfg.kafka[2].value, "");
}

static void
test_config_kafka_flag_form_and_override(void **state)
{
    struct fixture *f = *state;

    env_add(f, "CALLPUSH_KAFKA_SASL_MECHANISMS=PLAIN");
    env_add(f, "CALLPUSH_KAFKA_CLIENT_ID=env");
    arg_add(f, "--kafka");
    arg_add(f, "sasl.mechanisms=SCRAM-SHA-512");
    arg_add(f, "--kafka=socket.keepalive.enable=true");
    assert_loads(f);
    assert_int_equal(f->cfg.nkafka, 3);
    assert_string_equal(f->cfg.kafka[0].name, "sasl.mechanisms");
    assert_string_equal(f->cfg.kafka[0].value, "SCRAM-SHA-512");
    assert_string_equal(f->cfg.kafka[1].name, "client.id");
    assert_string_equal(f->cfg.kafka[1].value, "env");
    assert_string_equal(f->cfg.kafka[2].name, "socket.keepalive.enable");
    assert_string_equal(f->cfg.kafka[2].value, "true");
}

static void
test_config_kafka_flag_twice(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--kafka=client.id=a");
    arg_add(f, "--kafka=client.id=b");
    assert_fails_with(f, "--kafka client.id: given twice", NULL);
}

static void
test_config_kafka_flag_without_equals_hides_nothing(void **state)
{
    struct fixture *f = *state;

    arg_add(f, "--kafka");
    arg_add(f, "sasl.password");
    assert_fails_with(f, "must be PROP=VALUE", "\"sasl.password\"", NULL);
}

static void
test_config_kafka_bad_env_name(void **state)
{
    struct fixture *f = *state;

    env_add(f, "CALLPUSH_KAFKA_=x");
    assert_fails_with(f, "CALLPUSH_KAFKA_: must be CALLPUSH_KAFKA_<NAME>",
                      NULL);
    env_del(f, "CALLPUSH_KAFKA_");
    env_add(f, "CALLPUSH_KAFKA_SASL__MECHANISMS=x");
    assert_fails_with(f, "CALLPUSH_KAFKA_SASL__MECHANISMS: must be", NULL);
}

static void
test_config_kafka_owned_properties_refused(void **state)
{
    struct fixture *f = *state;

    env_add(f, "CALLPUSH_KAFKA_BOOTSTRAP_SERVERS=x:1");
    assert_fails_with(f, "CALLPUSH_KAFKA_BOOTSTRAP_SERVERS",
                      "CALLPUSH_BROKERS (--brokers)", NULL);
    env_del(f, "CALLPUSH_KAFKA_BOOTSTRAP_SERVERS");
    arg_add(f, "--kafka=group.id=other");
    assert_fails_with(f, "--kafka group.id", "CALLPUSH_GROUP (--group)", NULL);
}

static void
test_config_describe_redacts_secrets(void **state)
{
    struct fixture *f = *state;
    static const char *const secret[] = {
        "sasl.password",
        "ssl.key.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
    };
    cJSON *root, *kafka;
    struct buf b;
    char arg[200];
    size_t i;

    for (i = 0; i < UTIL_ARRAY_LEN(secret); i++) {
        snprintf(arg, sizeof(arg), "--kafka=%s=hunter2-%zu", secret[i], i);
        arg_add(f, arg);
    }
    arg_add(f, "--kafka=sasl.username=alice");
    env_add(f, "CALLPUSH_KAFKA_SSL_KEYSTORE_PASSWORD=hunter2-env");
    assert_loads(f);

    buf_init(&b, 1 << 16);
    config_describe(&f->cfg, &b);
    assert_false(buf_overflowed(&b));
    assert_null(strstr(b.data, "hunter2"));

    root = cJSON_Parse(b.data);
    assert_non_null(root);
    kafka = cJSON_GetObjectItemCaseSensitive(root, "kafka");
    for (i = 0; i < UTIL_ARRAY_LEN(secret); i++) {
        assert_string_equal(
            cJSON_GetStringValue(cJSON_GetObjectItem(kafka, secret[i])),
            "<redacted>");
    }
    assert_string_equal(
        cJSON_GetStringValue(cJSON_GetObjectItem(kafka, "sasl.username")),
        "alice");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(
                            kafka, "ssl.keystore.password")),
                        "<redacted>");

    /* The key file is a path, shown as it is. */
    assert_string_equal(
        cJSON_GetStringValue(cJSON_GetObjectItem(root, "apns_key_file")),
        key_path);
    assert_int_equal(
        cJSON_GetNumberValue(cJSON_GetObjectItem(root, "ring_timeout_s")), 60);
    assert_string_equal(
        cJSON_GetStringValue(cJSON_GetObjectItem(root, "log_level")), "info");
    assert_string_equal(
        cJSON_GetStringValue(cJSON_GetObjectItem(root, "invite_title")),
        "来电邀请");

    /* One member per setting, plus kafka. */
    assert_int_equal(cJSON_GetArraySize(root), (int)config_nsettings + 1);
    cJSON_Delete(root);
    buf_release(&b);
}

static void
test_config_help_lists_every_setting(void **state)
{
    char *text = NULL, *line, *save = NULL;
    size_t len = 0, i;
    FILE *out = open_memstream(&text, &len);

    (void)state;
    assert_non_null(out);
    config_print_help(out);
    fclose(out);

    assert_non_null(strstr(text, "callpush [run] [FLAGS]"));
    assert_non_null(strstr(text, "callpush validate FILE..."));
    assert_non_null(strstr(text, "callpush --help"));
    assert_non_null(strstr(text, "callpush --version"));
    assert_non_null(strstr(text, "--kafka PROP=VALUE"));
    assert_non_null(strstr(text, "CALLPUSH_KAFKA_<NAME>"));
    for (i = 0; i < config_nsettings; i++) {
        char flag[64];

        snprintf(flag, sizeof(flag), "--%s ", config_settings[i].flag);
        if (strstr(text, config_settings[i].env) == NULL ||
            strstr(text, flag) == NULL) {
            fail_msg("help lacks %s or %s", config_settings[i].env, flag);
        }
    }

    /* Every line fits 80 columns (counting characters, not bytes). */
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        size_t cols = 0, j;

        for (j = 0; line[j] != '\0'; j++) {
            cols += ((unsigned char)line[j] & 0xc0) != 0x80;
        }
        if (cols > 80) {
            fail_msg("help line over 80 columns: %s", line);
        }
    }
    free(text);
}

static void
test_config_release_twice_is_safe(void **state)
{
    struct fixture *f = *state;

    assert_loads(f);
    config_release(&f->cfg);
    config_release(&f->cfg);
    assert_null(f->cfg.group);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_config_defaults),
        T(test_config_every_required_setting_is_named_when_missing),
        T(test_config_all_missing_names_the_first),
        T(test_config_flag_overrides_env),
        T(test_config_flag_forms_equal_and_space),
        T(test_config_flags_alone_satisfy_required),
        T(test_config_first_of_duplicate_env_wins),
        T(test_config_unknown_callpush_env_is_ignored),
        T(test_config_each_rule_rejects_with_its_message),
        T(test_config_int_message_is_exact),
        T(test_config_text_length_limit),
        T(test_config_error_quotes_control_characters),
        T(test_config_accepted_edge_values),
        T(test_config_unknown_flag),
        T(test_config_positional_argument),
        T(test_config_missing_value_at_end),
        T(test_config_missing_value_before_flag),
        T(test_config_flag_twice),
        T(test_config_kafka_env_name_mapping),
        T(test_config_kafka_flag_form_and_override),
        T(test_config_kafka_flag_twice),
        T(test_config_kafka_flag_without_equals_hides_nothing),
        T(test_config_kafka_bad_env_name),
        T(test_config_kafka_owned_properties_refused),
        T(test_config_describe_redacts_secrets),
        T(test_config_help_lists_every_setting),
        T(test_config_release_twice_is_safe),
#undef T
    };
    int fd, result;

    /* A stand-in for the signing key: the config checks only that the file
     * can be read. */
    snprintf(key_path, sizeof(key_path), "/tmp/test_config_key_%ld",
             (long)getpid());
    fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        perror(key_path);
        return 1;
    }
    close(fd);

    result = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(key_path);
    return result;
}
