/*
 * event: the bytes of one Kafka message become a validated call event, or a
 * precise reason why they cannot.
 *
 * The contract is published as schemas/call-event.schema.json; this module
 * and the schema must accept and reject the same documents (a test checks
 * every file in schemas/examples/ against both).
 *
 * Numbers that identify things (_j_msgid, _j_uid, numeric extras) are kept
 * as the exact digits received, never passed through a double: message ids
 * such as 18101194842707757 are above 2^53.
 *
 * Ownership: event_decode() fills a caller-owned struct event and allocates
 * its strings; event_release() frees them and leaves the struct empty. A
 * failed decode leaves nothing to release, though releasing is harmless.
 *
 * Thread safety: no shared state; any thread.
 */
#ifndef CALLPUSH_EVENT_H
#define CALLPUSH_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define EVENT_MAX_BYTES 65536 /* whole Kafka message value */
#define EVENT_MAX_TOKENS 16
#define EVENT_TOKEN_MIN_HEX 16  /* 8 bytes */
#define EVENT_TOKEN_MAX_HEX 200 /* 100 bytes; 64 hex digits today */
#define EVENT_CALL_ID_MAX 64    /* apns-collapse-id limit */
#define EVENT_UID_MAX 64        /* _j_uid as a string */
#define EVENT_NAME_MAX 256      /* caller.name, caller.id, alert.title */
#define EVENT_BODY_MAX 2048     /* alert.body */
#define EVENT_SOUND_MAX 256
#define EVENT_TOPIC_MAX 255 /* apns_topic (a bundle id) */
#define EVENT_MAX_EXTRAS 32
#define EVENT_EXTRA_KEY_MAX 64
#define EVENT_EXTRA_VALUE_MAX 2048 /* string values, in bytes */
#define EVENT_RING_TIMEOUT_MAX 600 /* seconds */

/* Room for a decoded-reason message, e.g. "call_id: longer than 64 bytes". */
#define EVENT_ERR_MAX 160

enum event_type {
    EVENT_INVITE = 1, /* its pushType in the payload */
    EVENT_CANCEL = 2
};

enum event_media { EVENT_AUDIO = 0, EVENT_VIDEO };

enum event_env {
    EVENT_ENV_DEFAULT = 0, /* not given: the worker's configured one */
    EVENT_ENV_PRODUCTION,
    EVENT_ENV_SANDBOX
};

enum event_extra_kind {
    EVENT_EXTRA_STRING, /* value holds the decoded UTF-8 string */
    EVENT_EXTRA_RAW     /* value holds JSON text: a number, true or false */
};

struct event_extra {
    char *key;
    char *value;
    size_t value_len;
    enum event_extra_kind kind;
};

struct event {
    enum event_type type;
    char *call_id;

    /* _j_msgid as canonical decimal digits (no sign, no leading zeros),
     * whether it came as a JSON integer or a string; and its value. */
    char msgid[21];
    uint64_t msgid_num;

    /* _j_uid, optional: uid_len == 0 when absent. The digits of an integer
     * (JSON text, exact), or the decoded string when uid_is_string. */
    char *uid;
    size_t uid_len;
    int uid_is_string;

    char *tokens[EVENT_MAX_TOKENS]; /* hex as received, duplicates removed */
    size_t ntokens;

    int64_t created_at_ms;
    int ring_timeout_s; /* 0 when absent: use the configured default */

    char *caller_name; /* NULL when absent */
    char *caller_id;   /* NULL when absent */
    enum event_media media;
    char *reason; /* cancel only; NULL when absent */

    char *alert_title; /* NULL when absent: the configured default */
    char *alert_body;  /* NULL when absent */
    char *sound;       /* NULL when absent: the configured default */

    struct event_extra *extras; /* in the order received */
    size_t nextras;

    char *apns_topic; /* NULL when absent */
    enum event_env environment;
};

/*
 * Decodes len bytes (not NUL-terminated) into ev. Returns 0, or -1 with a
 * human-readable reason in err (EVENT_ERR_MAX bytes) that names the field
 * and the rule, e.g. "device_tokens[2]: not hexadecimal".
 */
int event_decode(struct event *ev, const char *data, size_t len, char *err);

/* event_decode() with relaxations, for the worker (which has more to go on
 * than the bytes) rather than for checking the contract:
 * EVENT_DECODE_NO_CREATED_AT accepts an event without created_at and
 * leaves created_at_ms 0, for the caller to fill from the Kafka message's
 * timestamp. */
#define EVENT_DECODE_NO_CREATED_AT 0x1u
int event_decode_flags(struct event *ev, const char *data, size_t len,
                       unsigned flags, char *err);

void event_release(struct event *ev);

const char *event_type_name(enum event_type type);

/* Whether key is one the payload writes itself ("aps", "pushType",
 * "_j_msgid", "_j_uid", "call_id"), which an extra may not shadow. */
int event_reserved_key(const char *key);

#endif
