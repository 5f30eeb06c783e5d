/*
 * config: every setting of the worker, read from the environment and then
 * from command-line flags, which override it.
 *
 * One table (config_settings[]) holds each setting's environment variable,
 * flag, default, help text, rule and place in struct config; loading,
 * validation, --help and the startup description are all driven by it, so
 * a new setting is one row plus one struct member.
 *
 * Kafka client properties pass through unchecked, in the order given:
 * CALLPUSH_KAFKA_SECURITY_PROTOCOL=SASL_SSL becomes security.protocol (the
 * rest of the name in lower case, '_' read as '.'), and the repeatable flag
 * --kafka security.protocol=SASL_SSL takes the librdkafka name as it is. A
 * flag overrides the variable for the same property. Properties owned by
 * other settings (bootstrap.servers, metadata.broker.list, group.id) are
 * refused. Environment variables that start with CALLPUSH_ but name no
 * setting are ignored, because Kubernetes injects CALLPUSH_SERVICE_HOST and
 * the like for a Service named callpush.
 *
 * Ownership: config_load() fills every string member with memory that
 * config_release() frees. On failure it leaves nothing to release.
 *
 * Thread safety: load once at startup; afterwards the struct is read-only
 * and may be read from any thread.
 */
#ifndef CALLPUSH_CONFIG_H
#define CALLPUSH_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "buf.h"
#include "log.h"

/* Size of the err buffer that config_load() writes its one line into. */
#define CONFIG_ERR_MAX 512

struct config_kv {
    char *name;
    char *value;
};

struct config {
    char *brokers, *group, *invite_topic, *cancel_topic, *feedback_topic,
        *dlq_topic, *apns_env, *apns_url, *apns_sandbox_url, *apns_ca_file,
        *apns_topic, *apns_key_file, *apns_key_id, *apns_team_id;
    /* Certificate authentication: "" when the provider token is used. */
    char *apns_cert_file, *apns_cert_key_file, *apns_cert_password_file;
    char *push_type;  /* "alert" or "voip" */
    char *apns_proxy; /* "": HTTPS_PROXY and NO_PROXY decide */
    int apns_connections, apns_timeout_ms, apns_ping_interval_ms, max_inflight,
        ring_timeout_s, cancel_expiration_s;
    char *http_addr;
    int shutdown_budget_s, summary_interval_s;
    int dedupe_window_s, dedupe_entries, tombstone_entries, min_ring_left_s;
    char *invite_title, *invite_video_title, *cancel_title, *cancel_video_title,
        *sound;
    enum log_level log_level;
    struct config_kv *kafka; /* librdkafka properties, in order */
    size_t nkafka;
};

/* How a setting's value is checked and stored. */
enum config_rule {
    CONFIG_RULE_BROKERS,   /* host:port[,host:port...] */
    CONFIG_RULE_TOPIC,     /* a legal Kafka topic name */
    CONFIG_RULE_GROUP,     /* 1..255 bytes, no control characters */
    CONFIG_RULE_APNS_ENV,  /* production | sandbox */
    CONFIG_RULE_URL,       /* https://host[:port], empty for none */
    CONFIG_RULE_PROXY,     /* http://[user:pass@]host[:port], or empty */
    CONFIG_RULE_FILE,      /* a readable regular file */
    CONFIG_RULE_FILE_OPT,  /* the same, or empty for none */
    CONFIG_RULE_BUNDLE,    /* an app bundle id: [A-Za-z0-9.-] */
    CONFIG_RULE_APPLE_ID,  /* 10 characters [A-Z0-9] */
    CONFIG_RULE_INT,       /* an integer from min to max; stored as int */
    CONFIG_RULE_TEXT,      /* valid UTF-8, 1..256 bytes */
    CONFIG_RULE_LEVEL,     /* a log level; stored as enum log_level */
    CONFIG_RULE_LISTEN,    /* [host]:port to listen on, port 0 = any */
    CONFIG_RULE_PUSH_TYPE, /* alert | voip */
};

struct config_setting {
    const char *env;  /* CALLPUSH_... */
    const char *flag; /* without the leading "--" */
    const char *arg;  /* what the value is, for --help */
    const char *def;  /* NULL when required; "" for none */
    const char *help;
    enum config_rule rule;
    int min, max;  /* CONFIG_RULE_INT only */
    size_t offset; /* of the member in struct config */
};

extern const struct config_setting config_settings[];
extern const size_t config_nsettings;

/* Reads envp (a NULL-terminated array of "NAME=VALUE", so that tests pass
 * their own) and then argv (argv[0] is skipped; the caller strips any
 * subcommand first). Flags take "--name value" or "--name=value"; a value
 * that itself starts with "--" needs the second form. Returns 0, or -1
 * with one line in err (CONFIG_ERR_MAX bytes) that names the setting by
 * variable and flag and says the rule it broke.
 *
 * APNs authentication takes exactly one of two forms: a provider token
 * (CALLPUSH_APNS_KEY_FILE, _KEY_ID and _TEAM_ID, all three) or a client
 * certificate (CALLPUSH_APNS_CERT_FILE and _CERT_KEY_FILE, with an optional
 * _CERT_PASSWORD_FILE). Both, or neither, is refused; in certificate mode
 * the three token members are "". */
int config_load(struct config *cfg, int argc, char **argv, char **envp,
                char *err);

/* Frees every member and zeroes the struct; safe on a zeroed struct. */
void config_release(struct config *cfg);

/* Prints the usage lines, then every setting: flag, variable, default and
 * help, wrapped to 80 columns. */
void config_print_help(FILE *out);

/* Appends the effective settings to b as one JSON object keyed by member
 * name, with "kafka" as an object of properties. Kafka properties whose
 * name contains "password", "secret", "sasl.oauthbearer" or "ssl.key" show
 * "<redacted>" as their value. */
void config_describe(const struct config *cfg, struct buf *b);

#endif
