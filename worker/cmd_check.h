/*
 * cmd_check: "callpush check", which tells whether a worker with this
 * configuration could push, without pushing anything.
 *
 * It loads the configuration exactly as the worker does (every CALLPUSH_*
 * variable and flag; CALLPUSH_BROKERS may be left out, as Kafka is not
 * involved), loads the signing key and signs a provider token (or loads
 * the client certificate), loads the CA bundle, connects to the APNs host
 * (through the CONNECT proxy the worker would use) with
 * CALLPUSH_APNS_TIMEOUT_MS as the deadline, completes the TLS handshake
 * with the certificate verified as the worker verifies it, and checks that
 * the server agreed to HTTP/2 (ALPN "h2"); with a client certificate it
 * also reads the server's first bytes, its verdict on the certificate.
 * Then it closes the connection: no HTTP/2 frame and no request is ever
 * sent. Each step prints one line on standard output:
 *
 *   ok: signing key /etc/callpush/AuthKey.p8 (EC P-256)
 *   FAIL: cannot connect to APNs at 127.0.0.1:1: Connection refused
 *
 * and the first failure ends the run. The provider token itself is never
 * printed.
 *
 * Exit status: 0 when every step passed, 1 when one failed, 2 on a usage
 * error or a setting the configuration refuses.
 *
 * Thread safety: meant for main() only; it writes to stdout and stderr.
 */
#ifndef CALLPUSH_CMD_CHECK_H
#define CALLPUSH_CMD_CHECK_H

#include "config.h"

/* The value config_load() is given for CALLPUSH_BROKERS when neither the
 * environment nor a flag sets it; never contacted. */
#define CMD_CHECK_PLACEHOLDER_BROKERS "unused:9092"

/* argv[0] is "check"; the rest are worker flags. */
int cmd_check(int argc, char **argv);

/*
 * config_load() for a command that never talks to Kafka: reads the
 * process environment and argv (argv[0] skipped) like the worker, with
 * CMD_CHECK_PLACEHOLDER_BROKERS standing in for an unset or empty
 * CALLPUSH_BROKERS. Returns 0, or -1 with one line in err
 * (CONFIG_ERR_MAX bytes). "callpush send" uses it too.
 */
int cmd_check_load_config(struct config *cfg, int argc, char **argv, char *err);

#endif
