#define _GNU_SOURCE
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tlsconn.h"
#include "util.h"

#define KAFKA_ENV_PREFIX "CALLPUSH_KAFKA_"
#define TEXT_MAX 256
#define HELP_WIDTH 80
#define HELP_INDENT 6

#define TEXT_SETTING(member)                                                   \
    CONFIG_RULE_TEXT, 0, 0, offsetof(struct config, member)

const struct config_setting config_settings[] = {
    {"CALLPUSH_BROKERS", "brokers", "HOST:PORT,...", NULL,
     "Kafka bootstrap servers, comma-separated.", CONFIG_RULE_BROKERS, 0, 0,
     offsetof(struct config, brokers)},
    {"CALLPUSH_GROUP", "group", "NAME", "callpush",
     "Kafka consumer group. Every worker of one deployment shares it, so "
     "that each partition is served by one of them.",
     CONFIG_RULE_GROUP, 0, 0, offsetof(struct config, group)},
    {"CALLPUSH_INVITE_TOPIC", "invite-topic", "TOPIC", "call.invite",
     "Topic the call invites are read from.", CONFIG_RULE_TOPIC, 0, 0,
     offsetof(struct config, invite_topic)},
    {"CALLPUSH_CANCEL_TOPIC", "cancel-topic", "TOPIC", "call.cancel",
     "Topic the call cancels are read from. It must have as many "
     "partitions as the invite topic and be keyed the same way, so that a "
     "call's invite and cancel meet in the same worker.",
     CONFIG_RULE_TOPIC, 0, 0, offsetof(struct config, cancel_topic)},
    {"CALLPUSH_FEEDBACK_TOPIC", "feedback-topic", "TOPIC", "push.feedback",
     "Topic the worker writes device token feedback to, such as tokens "
     "that APNs no longer accepts.",
     CONFIG_RULE_TOPIC, 0, 0, offsetof(struct config, feedback_topic)},
    {"CALLPUSH_DLQ_TOPIC", "dlq-topic", "TOPIC", "call.dlq",
     "Topic the worker writes events it cannot push to, with the reason.",
     CONFIG_RULE_TOPIC, 0, 0, offsetof(struct config, dlq_topic)},
    {"CALLPUSH_APNS_ENV", "apns-env", "production|sandbox", "production",
     "APNs environment that device tokens belong to, unless an event names "
     "its own.",
     CONFIG_RULE_APNS_ENV, 0, 0, offsetof(struct config, apns_env)},
    {"CALLPUSH_APNS_URL", "apns-url", "https://HOST[:PORT]", "",
     "Sends every push to this server instead of the environment's APNs "
     "host, for a stand-in or a forwarding proxy. No path.",
     CONFIG_RULE_URL, 0, 0, offsetof(struct config, apns_url)},
    {"CALLPUSH_APNS_SANDBOX_URL", "apns-sandbox-url", "https://HOST[:PORT]", "",
     "Sends pushes for sandbox device tokens to this server instead; empty "
     "means CALLPUSH_APNS_URL when that is set, else Apple's sandbox host.",
     CONFIG_RULE_URL, 0, 0, offsetof(struct config, apns_sandbox_url)},
    {"CALLPUSH_APNS_CA_FILE", "apns-ca-file", "FILE", "",
     "PEM file of the certificate authorities trusted for the APNs server; "
     "empty means the system's.",
     CONFIG_RULE_FILE_OPT, 0, 0, offsetof(struct config, apns_ca_file)},
    {"CALLPUSH_APNS_TOPIC", "apns-topic", "BUNDLE_ID", NULL,
     "The app's bundle id, sent as apns-topic.", CONFIG_RULE_BUNDLE, 0, 0,
     offsetof(struct config, apns_topic)},
    {"CALLPUSH_APNS_KEY_FILE", "apns-key-file", "FILE", NULL,
     "The .p8 signing key (PEM, P-256) from the Apple developer account. "
     "Token authentication: not set with CALLPUSH_APNS_CERT_FILE.",
     CONFIG_RULE_FILE, 0, 0, offsetof(struct config, apns_key_file)},
    {"CALLPUSH_APNS_KEY_ID", "apns-key-id", "KEY_ID", NULL,
     "Id of the signing key: 10 characters from A-Z and 0-9. Token "
     "authentication: not set with CALLPUSH_APNS_CERT_FILE.",
     CONFIG_RULE_APPLE_ID, 0, 0, offsetof(struct config, apns_key_id)},
    {"CALLPUSH_APNS_TEAM_ID", "apns-team-id", "TEAM_ID", NULL,
     "Apple developer team id: 10 characters from A-Z and 0-9. Token "
     "authentication: not set with CALLPUSH_APNS_CERT_FILE.",
     CONFIG_RULE_APPLE_ID, 0, 0, offsetof(struct config, apns_team_id)},
    {"CALLPUSH_APNS_CERT_FILE", "apns-cert-file", "FILE", "",
     "PEM client certificate for certificate authentication to APNs, "
     "instead of the provider token; needs CALLPUSH_APNS_CERT_KEY_FILE.",
     CONFIG_RULE_FILE_OPT, 0, 0, offsetof(struct config, apns_cert_file)},
    {"CALLPUSH_APNS_CERT_KEY_FILE", "apns-cert-key-file", "FILE", "",
     "PEM private key of CALLPUSH_APNS_CERT_FILE, encrypted or not.",
     CONFIG_RULE_FILE_OPT, 0, 0, offsetof(struct config, apns_cert_key_file)},
    {"CALLPUSH_APNS_CERT_PASSWORD_FILE", "apns-cert-password-file", "FILE", "",
     "File whose first line is the passphrase of an encrypted "
     "CALLPUSH_APNS_CERT_KEY_FILE.",
     CONFIG_RULE_FILE_OPT, 0, 0,
     offsetof(struct config, apns_cert_password_file)},
    {"CALLPUSH_PUSH_TYPE", "push-type", "alert|voip", "alert",
     "APNs push type of every push. voip sends to the topic BUNDLE_ID.voip "
     "and allows payloads of 5120 bytes instead of 4096.",
     CONFIG_RULE_PUSH_TYPE, 0, 0, offsetof(struct config, push_type)},
    {"CALLPUSH_APNS_CONNECTIONS", "apns-connections", "N", "2",
     "HTTP/2 connections kept open to APNs, from 1 to 64.", CONFIG_RULE_INT, 1,
     64, offsetof(struct config, apns_connections)},
    {"CALLPUSH_APNS_TIMEOUT_MS", "apns-timeout-ms", "MS", "10000",
     "Deadline of one request to APNs, from 100 to 120000 milliseconds.",
     CONFIG_RULE_INT, 100, 120000, offsetof(struct config, apns_timeout_ms)},
    {"CALLPUSH_APNS_PING_INTERVAL_MS", "apns-ping-interval-ms", "MS", "60000",
     "A connection to APNs that received nothing for this long is sent an "
     "HTTP/2 PING, and replaced when no answer comes as fast; from 100 to "
     "3600000 milliseconds.",
     CONFIG_RULE_INT, 100, 3600000,
     offsetof(struct config, apns_ping_interval_ms)},
    {"CALLPUSH_APNS_PROXY", "apns-proxy", "http://[USER:PASS@]HOST[:PORT]", "",
     "HTTP proxy for APNs, used through CONNECT; the port defaults to 1080. "
     "Empty means HTTPS_PROXY (or https_proxy), unless NO_PROXY names the "
     "APNs host.",
     CONFIG_RULE_PROXY, 0, 0, offsetof(struct config, apns_proxy)},
    {"CALLPUSH_MAX_INFLIGHT", "max-inflight", "N", "1000",
     "Most pushes in flight at once, from 1 to 100000; the worker stops "
     "reading Kafka while it is reached.",
     CONFIG_RULE_INT, 1, 100000, offsetof(struct config, max_inflight)},
    {"CALLPUSH_RING_TIMEOUT_S", "ring-timeout-s", "SECONDS", "60",
     "How long an invite rings when the event does not say, from 1 to 600 "
     "seconds. An invite older than that is not pushed.",
     CONFIG_RULE_INT, 1, 600, offsetof(struct config, ring_timeout_s)},
    {"CALLPUSH_CANCEL_EXPIRATION_S", "cancel-expiration-s", "SECONDS", "300",
     "How long APNs keeps trying to deliver a cancel to a phone that is "
     "offline, from 0 to 86400 seconds after the event was created.",
     CONFIG_RULE_INT, 0, 86400, offsetof(struct config, cancel_expiration_s)},
    {"CALLPUSH_INVITE_TITLE", "invite-title", "TEXT", "来电邀请",
     "Alert title of a voice call invite.", TEXT_SETTING(invite_title)},
    {"CALLPUSH_INVITE_VIDEO_TITLE", "invite-video-title", "TEXT",
     "视频来电邀请", "Alert title of a video call invite.",
     TEXT_SETTING(invite_video_title)},
    {"CALLPUSH_CANCEL_TITLE", "cancel-title", "TEXT", "语音通话取消",
     "Alert title of a voice call cancel.", TEXT_SETTING(cancel_title)},
    {"CALLPUSH_CANCEL_VIDEO_TITLE", "cancel-video-title", "TEXT",
     "视频通话取消", "Alert title of a video call cancel.",
     TEXT_SETTING(cancel_video_title)},
    {"CALLPUSH_SOUND", "sound", "FILE_NAME", "laidian.caf",
     "Sound file in the app bundle played by an invite.", TEXT_SETTING(sound)},
    {"CALLPUSH_MIN_RING_LEFT_S", "min-ring-left-s", "SECONDS", "3",
     "An invite with less ring time left than this is not pushed: it "
     "would reach the phone after the caller gave up.",
     CONFIG_RULE_INT, 0, 600, offsetof(struct config, min_ring_left_s)},
    {"CALLPUSH_DEDUPE_WINDOW_S", "dedupe-window-s", "SECONDS", "600",
     "How long a _j_msgid is remembered, so that the same message read "
     "again (a producer retry, a redelivery) is not pushed twice.",
     CONFIG_RULE_INT, 1, 86400, offsetof(struct config, dedupe_window_s)},
    {"CALLPUSH_DEDUPE_ENTRIES", "dedupe-entries", "COUNT", "1000000",
     "Capacity of the _j_msgid table (about 22 bytes each, allocated at "
     "start); the oldest go first when it is full.",
     CONFIG_RULE_INT, 1000, 100000000, offsetof(struct config, dedupe_entries)},
    {"CALLPUSH_TOMBSTONE_ENTRIES", "tombstone-entries", "COUNT", "200000",
     "Capacity of the table of cancelled calls (about 85 bytes each, "
     "allocated at start); each is kept for the longest ring window.",
     CONFIG_RULE_INT, 1000, 10000000,
     offsetof(struct config, tombstone_entries)},
    {"CALLPUSH_HTTP_ADDR", "http-addr", "[HOST]:PORT", ":8080",
     "Where /healthz, /readyz and /metrics are served; an empty host "
     "listens on every address, port 0 on a free port (logged).",
     CONFIG_RULE_LISTEN, 0, 0, offsetof(struct config, http_addr)},
    {"CALLPUSH_SHUTDOWN_BUDGET_S", "shutdown-budget-s", "SECONDS", "25",
     "On SIGTERM, how long pushes in flight may take to settle before the "
     "worker commits and exits; keep it below the pod's grace period.",
     CONFIG_RULE_INT, 1, 3600, offsetof(struct config, shutdown_budget_s)},
    {"CALLPUSH_SUMMARY_INTERVAL_S", "summary-interval-s", "SECONDS", "60",
     "Seconds between summary log lines with the counters and the "
     "consumer lag; 0 turns them off.",
     CONFIG_RULE_INT, 0, 86400, offsetof(struct config, summary_interval_s)},
    {"CALLPUSH_LOG_LEVEL", "log-level", "LEVEL", "info",
     "Lowest level logged: debug, info, warn or error.", CONFIG_RULE_LEVEL, 0,
     0, offsetof(struct config, log_level)},
};

const size_t config_nsettings = UTIL_ARRAY_LEN(config_settings);

/* Kafka properties that other settings own; passing them through would
 * make the two disagree. */
static const char *const kafka_owned[] = {
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
};

/* Parts of a Kafka property name that mark its value as a secret. */
static const char *const kafka_secret[] = {
    "password",
    "secret",
    "sasl.oauthbearer",
    "ssl.key",
};

/* Kafka properties from one source, in the order they were read. */
struct kafka_list {
    struct config_kv *kv;
    size_t n, alloc;
};

/* What a load has read so far: the raw value of each setting and where it
 * came from, plus the Kafka properties from each source. */
struct config_input {
    const char *value[UTIL_ARRAY_LEN(config_settings)];
    int from_flag[UTIL_ARRAY_LEN(config_settings)];
    struct kafka_list kafka_env;
    struct kafka_list kafka_flag;
};

static int
is_rule_string(enum config_rule rule)
{
    return rule != CONFIG_RULE_INT && rule != CONFIG_RULE_LEVEL;
}

static void *
member(struct config *cfg, const struct config_setting *s)
{
    return (char *)cfg + s->offset;
}

static const void *
member_const(const struct config *cfg, const struct config_setting *s)
{
    return (const char *)cfg + s->offset;
}

/*
 * Writes value into out as a double-quoted string fit for a one-line error:
 * at most 64 bytes of it, cut at a character boundary and followed by "..."
 * when longer, with quotes, backslashes and control characters escaped, and
 * every byte escaped as \xNN when value is not valid UTF-8.
 */
static void
quote_value(char *out, size_t outlen, const char *value)
{
    size_t n = strlen(value), shown = n, i, len = 0;
    int utf8 = util_utf8_valid_prefix(value, n) == n;

    if (shown > 64) {
        shown = utf8 ? util_utf8_valid_prefix(value, 64) : 64;
    }

    out[len++] = '"';
    for (i = 0; i < shown && len + 8 < outlen; i++) {
        unsigned char c = (unsigned char)value[i];

        if (c == '"' || c == '\\') {
            out[len++] = '\\';
            out[len++] = (char)c;
        } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) {
            snprintf(out + len, outlen - len, "\\x%02x", c);
            len += 4;
        } else {
            out[len++] = (char)c;
        }
    }
    snprintf(out + len, outlen - len, "\"%s", i < n ? "..." : "");
}

/* Writes "ENV (--flag): <what>" into err. */
static int
fail_setting(char *err, const struct config_setting *s, const char *what)
{
    snprintf(err, CONFIG_ERR_MAX, "%s (--%s): %s", s->env, s->flag, what);
    return -1;
}

/* Writes the rule of s as a phrase, e.g. "must be an integer from 1 to 8". */
static void
rule_text(const struct config_setting *s, char *out, size_t len)
{
    switch (s->rule) {
    case CONFIG_RULE_BROKERS:
        util_strlcpy(out, "must be a comma-separated list of host:port", len);
        break;
    case CONFIG_RULE_TOPIC:
        util_strlcpy(out,
                     "must be a Kafka topic name: 1 to 249 characters "
                     "from A-Z a-z 0-9 . _ -",
                     len);
        break;
    case CONFIG_RULE_GROUP:
        util_strlcpy(out, "must be 1 to 255 bytes without control characters",
                     len);
        break;
    case CONFIG_RULE_APNS_ENV:
        util_strlcpy(out, "must be \"production\" or \"sandbox\"", len);
        break;
    case CONFIG_RULE_URL:
        util_strlcpy(out, "must be https://host or https://host:port, no path",
                     len);
        break;
    case CONFIG_RULE_PROXY:
        util_strlcpy(out, "must be http://[user:password@]host[:port]", len);
        break;
    case CONFIG_RULE_FILE:
    case CONFIG_RULE_FILE_OPT:
        util_strlcpy(out, "must be a readable file", len);
        break;
    case CONFIG_RULE_BUNDLE:
        util_strlcpy(out,
                     "must be a bundle id: 1 to 255 characters from "
                     "A-Z a-z 0-9 . -",
                     len);
        break;
    case CONFIG_RULE_APPLE_ID:
        util_strlcpy(out, "must be 10 characters from A-Z 0-9", len);
        break;
    case CONFIG_RULE_INT:
        snprintf(out, len, "must be an integer from %d to %d", s->min, s->max);
        break;
    case CONFIG_RULE_TEXT:
        snprintf(out, len, "must be valid UTF-8 text of 1 to %d bytes",
                 TEXT_MAX);
        break;
    case CONFIG_RULE_LEVEL:
        util_strlcpy(out, "must be one of debug, info, warn, error", len);
        break;
    case CONFIG_RULE_PUSH_TYPE:
        util_strlcpy(out, "must be \"alert\" or \"voip\"", len);
        break;
    case CONFIG_RULE_LISTEN:
        util_strlcpy(out,
                     "must be [host]:port with an IPv4 host or name, and a "
                     "port from 0 to 65535",
                     len);
        break;
    }
}

/* Writes "ENV (--flag): <rule>, got "<value>"[: cause]" into err. */
/* v with the password of a proxy URL's "user:password@", if any, replaced
 * by "***", into out. */
static void
mask_password(char *out, size_t outlen, const char *v)
{
    const char *scheme = strstr(v, "://");
    const char *user = scheme != NULL ? scheme + 3 : v;
    /* The last '@' before the path ends the credentials, as the proxy
     * parser reads them. */
    const char *at = memrchr(user, '@', strcspn(user, "/"));
    const char *colon =
        at != NULL ? memchr(user, ':', (size_t)(at - user)) : NULL;

    if (colon == NULL) {
        util_strlcpy(out, v, outlen);
        return;
    }
    snprintf(out, outlen, "%.*s:***%s", (int)(colon - v), v, at);
}

static int
fail_rule(char *err, const struct config_setting *s, const char *value,
          const char *cause)
{
    char rule[128], quoted[300], masked[300];

    rule_text(s, rule, sizeof(rule));
    if (s->rule == CONFIG_RULE_PROXY) {
        mask_password(masked, sizeof(masked), value);
        value = masked;
    }
    quote_value(quoted, sizeof(quoted), value);
    snprintf(err, CONFIG_ERR_MAX, "%s (--%s): %s, got %s%s%s", s->env, s->flag,
             rule, quoted, cause != NULL ? ": " : "",
             cause != NULL ? cause : "");
    return -1;
}

static int
all_chars(const char *s, size_t n, const char *extra)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        /* By hand rather than isalnum(), which follows the locale. */
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9');

        if (!alnum && (c == '\0' || strchr(extra, c) == NULL)) {
            return 0;
        }
    }
    return 1;
}

/* Parses a decimal port of n bytes at s. Returns it, or -1. */
static long
parse_port(const char *s, size_t n)
{
    long port = 0;
    size_t i;

    if (n == 0 || n > 5) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        port = port * 10 + (s[i] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

/*
 * Checks "host[:port]" (n bytes at s), where host is a name or an address,
 * IPv6 in brackets. With need_port the port must be there. Returns 0 or -1.
 */
static int
check_host_port(const char *s, size_t n, int need_port)
{
    const char *colon;
    size_t host_len;

    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);

        if (close == NULL || close == s + 1 ||
            !all_chars(s + 1, (size_t)(close - s - 1), ":.")) {
            return -1;
        }
        host_len = (size_t)(close - s) + 1;
        colon = host_len < n ? s + host_len : NULL;
        if (colon != NULL && *colon != ':') {
            return -1;
        }
    } else {
        colon = memchr(s, ':', n);
        host_len = colon != NULL ? (size_t)(colon - s) : n;
        if (host_len == 0 || !all_chars(s, host_len, ".-_")) {
            return -1;
        }
    }

    if (colon == NULL) {
        return need_port ? -1 : 0;
    }
    return parse_port(colon + 1, n - host_len - 1) < 0 ? -1 : 0;
}

/* "[host]:port" to listen on: the host may be empty (every address), the
 * port may be 0 (any free one). */
static int
check_listen(const char *v)
{
    const char *colon = strrchr(v, ':');
    size_t n = strlen(v);

    /* The listener binds IPv4 only; a host of digits and dots must be an
     * IPv4 address, and a name at most 253 bytes. */
    if (colon == NULL || strchr(v, '[') != NULL || colon - v > 253) {
        return -1;
    }
    if (colon > v && strspn(v, "0123456789.") == (size_t)(colon - v)) {
        char host[64];
        struct in_addr addr;

        if (colon - v >= (ptrdiff_t)sizeof(host)) {
            return -1;
        }
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
        if (inet_pton(AF_INET, host, &addr) != 1) {
            return -1;
        }
    }
    if (colon == v) {
        return strcmp(v, ":0") == 0 || parse_port(v + 1, n - 1) >= 0 ? 0 : -1;
    }
    if (strcmp(colon, ":0") == 0) {
        return check_host_port(v, (size_t)(colon - v), 0);
    }
    return check_host_port(v, n, 1);
}

static int
check_brokers(const char *v)
{
    const char *p = v;

    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);

        if (check_host_port(p, n, 1) < 0) {
            return -1;
        }
        if (comma == NULL) {
            return 0;
        }
        p = comma + 1;
    }
}

/* Checks an https URL with no path and returns a copy of it without the
 * one trailing slash it may have; NULL when it breaks the rule. */
static int
check_proxy(const char *value)
{
    struct tlsconn_target t;
    char err[TLSCONN_ERR_MAX];
    int rc;

    memset(&t, 0, sizeof(t));
    rc = tlsconn_parse_proxy(&t, value, err);
    free(t.proxy_auth);
    return rc;
}

static char *
check_url(const char *v)
{
    static const char scheme[] = "https://";
    const char *host = v + sizeof(scheme) - 1;
    size_t n;

    if (strncmp(v, scheme, sizeof(scheme) - 1) != 0) {
        return NULL;
    }
    n = strlen(host);
    if (n > 0 && host[n - 1] == '/') {
        n--;
    }
    if (n == 0 || check_host_port(host, n, 0) < 0) {
        return NULL;
    }
    return xstrndup(v, (size_t)(host - v) + n);
}

static int
check_topic(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > 249 || strcmp(v, ".") == 0 || strcmp(v, "..") == 0) {
        return -1;
    }
    return all_chars(v, n, "._-") ? 0 : -1;
}

static int
check_group(const char *v)
{
    size_t n = strlen(v), i;

    if (n == 0 || n > 255) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];

        if (c < 0x20 || c == 0x7f) {
            return -1;
        }
    }
    return 0;
}

static int
check_apple_id(const char *v)
{
    size_t i;

    if (strlen(v) != 10) {
        return -1;
    }
    for (i = 0; i < 10; i++) {
        if (!(v[i] >= 'A' && v[i] <= 'Z') && !(v[i] >= '0' && v[i] <= '9')) {
            return -1;
        }
    }
    return 0;
}

/* Checks that path names a regular file this process can open for reading.
 * Returns 0, or -1 with *cause set to why not. */
static int
check_file(const char *path, const char **cause)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        *cause = strerror(errno);
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        *cause = strerror(errno);
        close(fd);
        return -1;
    }
    close(fd);
    if (!S_ISREG(st.st_mode)) {
        *cause = "not a regular file";
        return -1;
    }
    return 0;
}

static int
parse_int(const char *v, long *out)
{
    char *end;
    long n;

    if (*v == '\0' || isspace((unsigned char)*v)) {
        return -1;
    }
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = n;
    return 0;
}

/* Checks value against s's rule and stores it in cfg. Returns 0, or -1 with
 * the error in err. */
static int
setting_apply(struct config *cfg, const struct config_setting *s,
              const char *value, char *err)
{
    const char *cause = NULL;
    char *copy = NULL;
    size_t n = strlen(value);
    long num;
    int bad = 0;

    switch (s->rule) {
    case CONFIG_RULE_BROKERS:
        bad = check_brokers(value) < 0;
        break;
    case CONFIG_RULE_TOPIC:
        bad = check_topic(value) < 0;
        break;
    case CONFIG_RULE_GROUP:
        bad = check_group(value) < 0;
        break;
    case CONFIG_RULE_APNS_ENV:
        bad = strcmp(value, "production") != 0 && strcmp(value, "sandbox") != 0;
        break;
    case CONFIG_RULE_URL:
        if (n > 0) {
            copy = check_url(value);
            bad = copy == NULL;
        }
        break;
    case CONFIG_RULE_PROXY:
        bad = n > 0 && check_proxy(value) < 0;
        break;
    case CONFIG_RULE_FILE_OPT:
        bad = n > 0 && check_file(value, &cause) < 0;
        break;
    case CONFIG_RULE_FILE:
        bad = n == 0 || check_file(value, &cause) < 0;
        break;
    case CONFIG_RULE_BUNDLE:
        bad = n == 0 || n > 255 || !all_chars(value, n, ".-");
        break;
    case CONFIG_RULE_APPLE_ID:
        bad = check_apple_id(value) < 0;
        break;
    case CONFIG_RULE_TEXT:
        bad = n == 0 || n > TEXT_MAX || util_utf8_valid_prefix(value, n) != n;
        break;
    case CONFIG_RULE_INT:
        bad = parse_int(value, &num) < 0 || num < s->min || num > s->max;
        if (!bad) {
            *(int *)member(cfg, s) = (int)num;
        }
        return bad ? fail_rule(err, s, value, NULL) : 0;
    case CONFIG_RULE_LEVEL:
        bad = log_parse_level(value, (enum log_level *)member(cfg, s)) < 0;
        return bad ? fail_rule(err, s, value, NULL) : 0;
    case CONFIG_RULE_LISTEN:
        bad = check_listen(value) < 0;
        break;
    case CONFIG_RULE_PUSH_TYPE:
        bad = strcmp(value, "alert") != 0 && strcmp(value, "voip") != 0;
        break;
    }

    if (bad) {
        free(copy);
        return fail_rule(err, s, value, cause);
    }
    *(char **)member(cfg, s) = copy != NULL ? copy : xstrdup(value);
    return 0;
}

static void
kafka_list_push(struct kafka_list *l, struct config_kv kv)
{
    if (l->n == l->alloc) {
        l->alloc = l->alloc ? l->alloc * 2 : 8;
        l->kv = xrealloc(l->kv, l->alloc * sizeof(*l->kv));
    }
    l->kv[l->n++] = kv;
}

/* Appends name (which the list takes over) with a copy of value. */
static void
kafka_list_add(struct kafka_list *l, char *name, const char *value)
{
    struct config_kv kv = {name, xstrdup(value)};

    kafka_list_push(l, kv);
}

static struct config_kv *
kafka_list_find(struct kafka_list *l, const char *name)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        if (strcmp(l->kv[i].name, name) == 0) {
            return &l->kv[i];
        }
    }
    return NULL;
}

static void
kafka_list_release(struct kafka_list *l)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        free(l->kv[i].name);
        free(l->kv[i].value);
    }
    free(l->kv);
    memset(l, 0, sizeof(*l));
}

/* Refuses properties that other settings own. origin names the variable or
 * flag the property came from. */
static int
kafka_check_owned(const char *name, const char *origin, char *err)
{
    size_t i;

    for (i = 0; i < UTIL_ARRAY_LEN(kafka_owned); i++) {
        if (strcmp(name, kafka_owned[i]) == 0) {
            snprintf(err, CONFIG_ERR_MAX,
                     "%s: Kafka property %s is set by %s, not passed through",
                     origin, name,
                     strcmp(name, "group.id") == 0
                         ? "CALLPUSH_GROUP (--group)"
                         : "CALLPUSH_BROKERS (--brokers)");
            return -1;
        }
    }
    return 0;
}

/* Takes CALLPUSH_KAFKA_<NAME>=value from the environment. name is what
 * follows the prefix, n bytes long. */
static int
kafka_from_env(struct config_input *in, const char *var, const char *name,
               size_t n, const char *value, char *err)
{
    char origin[128];
    char *prop;
    size_t i;

    snprintf(origin, sizeof(origin), "%.*s", (int)(name - var + n), var);
    prop = xstrndup(name, n);
    for (i = 0; i < n; i++) {
        prop[i] = prop[i] == '_' ? '.' : (char)tolower((unsigned char)prop[i]);
    }

    /* Each '.'-separated part of the property name must be non-empty. */
    if (n == 0 || prop[0] == '.' || prop[n - 1] == '.' ||
        strstr(prop, "..") != NULL || !all_chars(name, n, "_")) {
        snprintf(err, CONFIG_ERR_MAX,
                 "%s: must be " KAFKA_ENV_PREFIX
                 "<NAME> with NAME a librdkafka property in capitals and "
                 "'_' for '.'",
                 origin);
        goto fail;
    }
    if (kafka_check_owned(prop, origin, err) < 0) {
        goto fail;
    }
    if (kafka_list_find(&in->kafka_env, prop) != NULL) {
        snprintf(err, CONFIG_ERR_MAX,
                 "%s: Kafka property %s is set by two variables", origin, prop);
        goto fail;
    }

    kafka_list_add(&in->kafka_env, prop, value);
    return 0;

fail:
    free(prop);
    return -1;
}

/* Takes the PROP=VALUE of a --kafka flag. The value is never echoed in an
 * error: it may be a password. */
static int
kafka_from_flag(struct config_input *in, const char *arg, char *err)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    char origin[128], quoted[300];
    char *prop;

    if (eq == NULL || n == 0 || !all_chars(arg, n, "._-")) {
        char *name = xstrndup(arg, n);

        quote_value(quoted, sizeof(quoted), name);
        free(name);
        snprintf(err, CONFIG_ERR_MAX,
                 "--kafka (" KAFKA_ENV_PREFIX "<NAME>): must be PROP=VALUE "
                 "with PROP a librdkafka property name, got %s",
                 quoted);
        return -1;
    }

    prop = xstrndup(arg, n);
    snprintf(origin, sizeof(origin), "--kafka %s", prop);
    if (kafka_check_owned(prop, origin, err) < 0) {
        free(prop);
        return -1;
    }
    if (kafka_list_find(&in->kafka_flag, prop) != NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: given twice on the command line",
                 origin);
        free(prop);
        return -1;
    }
    kafka_list_add(&in->kafka_flag, prop, eq + 1);
    return 0;
}

static const struct config_setting *
find_env(const char *name, size_t n, size_t *index)
{
    size_t i;

    for (i = 0; i < config_nsettings; i++) {
        if (strlen(config_settings[i].env) == n &&
            memcmp(config_settings[i].env, name, n) == 0) {
            *index = i;
            return &config_settings[i];
        }
    }
    return NULL;
}

static const struct config_setting *
find_flag(const char *name, size_t n, size_t *index)
{
    size_t i;

    for (i = 0; i < config_nsettings; i++) {
        if (strlen(config_settings[i].flag) == n &&
            memcmp(config_settings[i].flag, name, n) == 0) {
            *index = i;
            return &config_settings[i];
        }
    }
    return NULL;
}

/* Picks the settings out of envp. The first of two entries with one name
 * wins, as getenv() would have it. */
static int
read_env(struct config_input *in, char **envp, char *err)
{
    const size_t plen = strlen(KAFKA_ENV_PREFIX);
    size_t i, index;

    for (i = 0; envp != NULL && envp[i] != NULL; i++) {
        const char *var = envp[i];
        const char *eq = strchr(var, '=');
        size_t n;

        if (eq == NULL || strncmp(var, "CALLPUSH_", 9) != 0) {
            continue;
        }
        n = (size_t)(eq - var);

        if (n >= plen && strncmp(var, KAFKA_ENV_PREFIX, plen) == 0) {
            if (kafka_from_env(in, var, var + plen, n - plen, eq + 1, err) <
                0) {
                return -1;
            }
            continue;
        }
        if (find_env(var, n, &index) != NULL && in->value[index] == NULL) {
            in->value[index] = eq + 1;
        }
    }
    return 0;
}

/* Reads the flags after argv[0]; each overrides its variable. */
static int
read_flags(struct config_input *in, int argc, char **argv, char *err)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *name, *eq, *value;
        const struct config_setting *s;
        size_t n, index;
        char quoted[300];

        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            quote_value(quoted, sizeof(quoted), arg);
            snprintf(err, CONFIG_ERR_MAX,
                     "unexpected argument %s: settings are given as "
                     "--name value or --name=value",
                     quoted);
            return -1;
        }
        name = arg + 2;
        eq = strchr(name, '=');
        n = eq != NULL ? (size_t)(eq - name) : strlen(name);

        /* A following word that starts with "--" is taken for the next
         * flag, not a value: that is the usual cause of it. */
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];
        } else {
            value = NULL;
        }

        if (n == 5 && strncmp(name, "kafka", 5) == 0) {
            if (value == NULL) {
                snprintf(err, CONFIG_ERR_MAX,
                         "--kafka (" KAFKA_ENV_PREFIX
                         "<NAME>): needs a value, PROP=VALUE");
                return -1;
            }
            if (kafka_from_flag(in, value, err) < 0) {
                return -1;
            }
            continue;
        }

        s = find_flag(name, n, &index);
        if (s == NULL) {
            char *flag = xstrndup(arg, n + 2);

            quote_value(quoted, sizeof(quoted), flag);
            free(flag);
            snprintf(err, CONFIG_ERR_MAX,
                     "unknown flag %s (callpush --help lists them)", quoted);
            return -1;
        }
        if (value == NULL) {
            return fail_setting(err, s, "needs a value");
        }
        if (in->from_flag[index]) {
            return fail_setting(err, s, "given twice on the command line");
        }
        in->value[index] = value;
        in->from_flag[index] = 1;
    }
    return 0;
}

/* Builds cfg->kafka: the environment's properties in order, each replaced
 * by a flag for the same property, then the flags' new ones. The lists'
 * strings move into cfg. */
static void
kafka_merge(struct config *cfg, struct config_input *in)
{
    struct kafka_list out = in->kafka_env;
    size_t i;

    memset(&in->kafka_env, 0, sizeof(in->kafka_env));
    for (i = 0; i < in->kafka_flag.n; i++) {
        struct config_kv *kv = &in->kafka_flag.kv[i];
        struct config_kv *old = kafka_list_find(&out, kv->name);

        if (old != NULL) {
            free(old->value);
            old->value = kv->value;
            free(kv->name);
        } else {
            kafka_list_push(&out, *kv);
        }
    }
    free(in->kafka_flag.kv);
    memset(&in->kafka_flag, 0, sizeof(in->kafka_flag));

    cfg->kafka = out.kv;
    cfg->nkafka = out.n;
}

/* The settings of provider token authentication. */
static int
is_token_setting(const struct config_setting *s)
{
    return s->offset == offsetof(struct config, apns_key_file) ||
           s->offset == offsetof(struct config, apns_key_id) ||
           s->offset == offsetof(struct config, apns_team_id);
}

static const struct config_setting *
setting_at(size_t offset)
{
    size_t i;

    for (i = 0; i < config_nsettings; i++) {
        if (config_settings[i].offset == offset) {
            return &config_settings[i];
        }
    }
    abort();
}

/*
 * Checks that exactly one form of APNs authentication is configured: the
 * provider token (all three of its settings) or the client certificate
 * (certificate and key). A worker with both would leave it unclear which
 * APNs sees, so that is refused too.
 */
static int
check_auth_mode(const struct config *cfg, char *err)
{
    int token = cfg->apns_key_file[0] != '\0' || cfg->apns_key_id[0] != '\0' ||
                cfg->apns_team_id[0] != '\0';
    int cert =
        cfg->apns_cert_file[0] != '\0' || cfg->apns_cert_key_file[0] != '\0';
    size_t i;

    if (token && cert) {
        snprintf(err, CONFIG_ERR_MAX,
                 "CALLPUSH_APNS_CERT_FILE (--apns-cert-file) and "
                 "CALLPUSH_APNS_KEY_FILE (--apns-key-file): configure either "
                 "certificate authentication (CALLPUSH_APNS_CERT_FILE, "
                 "CALLPUSH_APNS_CERT_KEY_FILE) or token authentication "
                 "(CALLPUSH_APNS_KEY_FILE, CALLPUSH_APNS_KEY_ID, "
                 "CALLPUSH_APNS_TEAM_ID), not both");
        return -1;
    }
    if (cert && cfg->apns_cert_file[0] == '\0') {
        return fail_setting(err,
                            setting_at(offsetof(struct config, apns_cert_file)),
                            "is required with CALLPUSH_APNS_CERT_KEY_FILE");
    }
    if (cert && cfg->apns_cert_key_file[0] == '\0') {
        return fail_setting(
            err, setting_at(offsetof(struct config, apns_cert_key_file)),
            "is required with CALLPUSH_APNS_CERT_FILE");
    }
    if (cert) {
        return 0;
    }
    if (cfg->apns_cert_password_file[0] != '\0') {
        return fail_setting(
            err, setting_at(offsetof(struct config, apns_cert_password_file)),
            "is only used with CALLPUSH_APNS_CERT_FILE and "
            "CALLPUSH_APNS_CERT_KEY_FILE, which are not set");
    }
    for (i = 0; i < config_nsettings; i++) {
        const struct config_setting *s = &config_settings[i];

        if (is_token_setting(s) &&
            (*(char *const *)member_const(cfg, s))[0] == '\0') {
            return fail_setting(err, s,
                                "is required and not set (or configure "
                                "certificate authentication instead: "
                                "CALLPUSH_APNS_CERT_FILE and "
                                "CALLPUSH_APNS_CERT_KEY_FILE)");
        }
    }
    return 0;
}

int
config_load(struct config *cfg, int argc, char **argv, char **envp, char *err)
{
    struct config_input in;
    size_t i;
    int result = -1;

    memset(cfg, 0, sizeof(*cfg));
    memset(&in, 0, sizeof(in));
    err[0] = '\0';

    if (read_env(&in, envp, err) < 0 || read_flags(&in, argc, argv, err) < 0) {
        goto done;
    }

    for (i = 0; i < config_nsettings; i++) {
        const struct config_setting *s = &config_settings[i];
        const char *value = in.value[i] != NULL ? in.value[i] : s->def;

        if (value == NULL && is_token_setting(s)) {
            /* Required only without a certificate: settled below. */
            *(char **)member(cfg, s) = xstrdup("");
            continue;
        }
        if (value == NULL) {
            fail_setting(err, s, "is required and not set");
            goto done;
        }
        if (setting_apply(cfg, s, value, err) < 0) {
            goto done;
        }
    }

    if (check_auth_mode(cfg, err) < 0) {
        goto done;
    }
    if (cfg->min_ring_left_s >= cfg->ring_timeout_s) {
        snprintf(err, CONFIG_ERR_MAX,
                 "CALLPUSH_MIN_RING_LEFT_S (--min-ring-left-s): must be less "
                 "than CALLPUSH_RING_TIMEOUT_S (%d), got %d: every invite "
                 "without its own ring timeout would be late",
                 cfg->ring_timeout_s, cfg->min_ring_left_s);
        goto done;
    }
    kafka_merge(cfg, &in);
    result = 0;

done:
    kafka_list_release(&in.kafka_env);
    kafka_list_release(&in.kafka_flag);
    if (result < 0) {
        config_release(cfg);
    }
    return result;
}

void
config_release(struct config *cfg)
{
    size_t i;

    for (i = 0; i < config_nsettings; i++) {
        if (is_rule_string(config_settings[i].rule)) {
            free(*(char **)member(cfg, &config_settings[i]));
        }
    }
    for (i = 0; i < cfg->nkafka; i++) {
        free(cfg->kafka[i].name);
        free(cfg->kafka[i].value);
    }
    free(cfg->kafka);
    memset(cfg, 0, sizeof(*cfg));
}

/* Prints text from column HELP_INDENT, broken at spaces before column
 * HELP_WIDTH. Help texts are ASCII, so a byte is a column. */
static void
print_wrapped(FILE *out, const char *text)
{
    const size_t width = HELP_WIDTH - HELP_INDENT;

    while (*text != '\0') {
        size_t n = strlen(text);

        if (n > width) {
            n = width;
            while (n > 0 && text[n] != ' ') {
                n--;
            }
            if (n == 0) {
                n = strcspn(text, " ");
            }
        }
        fprintf(out, "%*s%.*s\n", HELP_INDENT, "", (int)n, text);
        text += n;
        while (*text == ' ') {
            text++;
        }
    }
}

void
config_print_help(FILE *out)
{
    size_t i;

    fputs("Usage: callpush [run] [FLAGS]      run the worker\n"
          "       callpush validate FILE...   check call event files\n"
          "       callpush send --token HEX   push one invite or cancel by "
          "hand\n"
          "       callpush check              check credentials and APNs, "
          "send nothing\n"
          "       callpush --help             show this help\n"
          "       callpush --version          show the version\n"
          "\n"
          "Every setting is read from its environment variable; a flag "
          "overrides it.\n"
          "Flags take --name value or --name=value.\n"
          "\n",
          out);

    for (i = 0; i < config_nsettings; i++) {
        const struct config_setting *s = &config_settings[i];

        fprintf(out, "  --%s %s\n", s->flag, s->arg);
        if (s->def == NULL && is_token_setting(s)) {
            fprintf(out, "%*s%s, required for token authentication.\n",
                    HELP_INDENT, "", s->env);
        } else if (s->def == NULL) {
            fprintf(out, "%*s%s, required.\n", HELP_INDENT, "", s->env);
        } else if (s->def[0] == '\0') {
            fprintf(out, "%*s%s, default none.\n", HELP_INDENT, "", s->env);
        } else if (s->rule == CONFIG_RULE_INT) {
            fprintf(out, "%*s%s, default %s.\n", HELP_INDENT, "", s->env,
                    s->def);
        } else {
            fprintf(out, "%*s%s, default \"%s\".\n", HELP_INDENT, "", s->env,
                    s->def);
        }
        print_wrapped(out, s->help);
    }

    fprintf(out, "  --kafka PROP=VALUE\n");
    fprintf(out, "%*s" KAFKA_ENV_PREFIX "<NAME>=VALUE, repeatable.\n",
            HELP_INDENT, "");
    print_wrapped(out,
                  "Passes a property to librdkafka. In the variable, NAME is "
                  "the property in capitals with '_' for '.' "
                  "(CALLPUSH_KAFKA_SECURITY_PROTOCOL sets security.protocol); "
                  "the flag takes the property's own name. A flag overrides "
                  "the variable for the same property.");
}

static int
is_secret(const char *name)
{
    size_t i, j, n = strlen(name);

    for (i = 0; i < UTIL_ARRAY_LEN(kafka_secret); i++) {
        size_t m = strlen(kafka_secret[i]);

        for (j = 0; j + m <= n; j++) {
            if (strncasecmp(name + j, kafka_secret[i], m) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* Appends s as a JSON string; bytes that are not UTF-8 (a file path may
 * hold any) become '?', so that the object stays valid JSON. */
static void
describe_str(struct buf *b, const char *s)
{
    size_t n = strlen(s), i = 0;
    char *copy;

    if (util_utf8_valid_prefix(s, n) == n) {
        buf_json_str(b, s, n);
        return;
    }

    copy = xstrdup(s);
    while (i < n) {
        size_t seq = util_utf8_seq((const unsigned char *)copy + i, n - i);

        if (seq == 0) {
            copy[i] = '?';
            seq = 1;
        }
        i += seq;
    }
    buf_json_str(b, copy, n);
    free(copy);
}

void
config_describe(const struct config *cfg, struct buf *b)
{
    size_t i;

    buf_addc(b, '{');
    for (i = 0; i < config_nsettings; i++) {
        const struct config_setting *s = &config_settings[i];
        char key[64];
        size_t j;

        /* The member's name is the flag's with '_' for '-'. */
        util_strlcpy(key, s->flag, sizeof(key));
        for (j = 0; key[j] != '\0'; j++) {
            key[j] = key[j] == '-' ? '_' : key[j];
        }

        if (i > 0) {
            buf_addc(b, ',');
        }
        buf_json_key(b, key);
        if (s->rule == CONFIG_RULE_INT) {
            buf_addf(b, "%d", *(const int *)member_const(cfg, s));
        } else if (s->rule == CONFIG_RULE_LEVEL) {
            const enum log_level *level = member_const(cfg, s);

            buf_json_strz(b, log_level_name(*level));
        } else if (s->rule == CONFIG_RULE_PROXY) {
            char masked[1024];

            mask_password(masked, sizeof(masked),
                          *(char *const *)member_const(cfg, s));
            describe_str(b, masked);
        } else {
            const char *v = *(char *const *)member_const(cfg, s);

            describe_str(b, v != NULL ? v : "");
        }
    }

    buf_adds(b, ",\"kafka\":{");
    for (i = 0; i < cfg->nkafka; i++) {
        const struct config_kv *kv = &cfg->kafka[i];

        if (i > 0) {
            buf_addc(b, ',');
        }
        buf_json_strz(b, kv->name);
        buf_addc(b, ':');
        describe_str(b, is_secret(kv->name) ? "<redacted>" : kv->value);
    }
    buf_adds(b, "}}");
}
