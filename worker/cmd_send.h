/*
 * cmd_send: "callpush send", one push made by hand through the worker's
 * own payload builder and APNs client.
 *
 *   callpush send --token HEX [--type invite|cancel] [--call-id ID]
 *                 [--msgid N] [--caller NAME] [--video] [--sandbox]
 *                 [WORKER FLAGS...]
 *
 * The configuration is the worker's (every CALLPUSH_* variable and flag
 * applies; CALLPUSH_BROKERS may be left out, as Kafka is not involved).
 * The push is the one the worker would make for an event with these
 * fields, created now: the same body, apns-id, expiration, push type
 * alert, priority 10 and the call id as collapse id. It is retried like
 * the worker retries, for at most CALLPUSH_APNS_TIMEOUT_MS.
 *
 * Standard output shows the request (the provider token redacted), the
 * body exactly as sent, then APNs' answer: status, reason, apns-id,
 * attempts, and what the worker would do with that answer. Errors go to
 * standard error.
 *
 * Exit status: 0 when APNs accepted the push (200), 1 on any other final
 * answer or none, 2 on a usage error or a configuration that cannot push
 * (a bad setting, key or CA file).
 *
 * Thread safety: meant for main() only; it writes to stdout and stderr.
 */
#ifndef CALLPUSH_CMD_SEND_H
#define CALLPUSH_CMD_SEND_H

/* argv[0] is "send"; the rest are its flags and worker flags. */
int cmd_send(int argc, char **argv);

#endif
