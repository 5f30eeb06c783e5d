/*
 * pipeline: the worker's loop. It reads call events from the consumer,
 * decodes them, builds each device's push, hands the pushes to the APNs
 * client, and settles every event's outcome: pushed, suppressed, reported
 * as a dead device token, or dead-lettered. Only a settled event is marked
 * final for the commit.
 *
 * One thread drives everything: it sleeps in apns_wait() on the APNs
 * connections' sockets and on one pipe that librdkafka's queues and the signal
 * handler write to, so neither Kafka nor APNs can block the other.
 *
 * Thread safety: pipeline_stop() may be called from a signal handler; the
 * rest from the thread that runs pipeline_run().
 */
#ifndef CALLPUSH_PIPELINE_H
#define CALLPUSH_PIPELINE_H

#include "apns.h"
#include "config.h"
#include "jwt.h"

#define PIPELINE_ERR_MAX 512

struct pipeline;

/* Builds every part from cfg (which must outlive the pipeline): loads the
 * signing key, creates the Kafka clients and the APNs client. Returns NULL
 * with err set when any part cannot start. */
struct pipeline *pipeline_new(const struct config *cfg, char *err);

/* pipeline_run() used the whole shutdown budget: exit at once. */
#define PIPELINE_OUT_OF_TIME (-2)

/* Runs until pipeline_stop(); then, within CALLPUSH_SHUTDOWN_BUDGET_S,
 * lets what is in flight settle, commits, leaves the group and flushes the
 * producer. Returns 0 when everything settled, -1 when something was left
 * to be read again, PIPELINE_OUT_OF_TIME when the budget ran out. */
int pipeline_run(struct pipeline *pl);

/* Async-signal-safe. Asks the loop to stop; returns 1 when it had been
 * asked already. */
int pipeline_stop(struct pipeline *pl);

void pipeline_free(struct pipeline *pl);

/* The APNs base URL pushes for one environment go to. */
const char *pipeline_apns_url(const struct config *cfg, int sandbox);

/* The APNs client's options for cfg, as the worker uses them; jwt is the
 * provider token signer (ignored with certificate authentication). The
 * caller sets the callbacks it needs. */
void pipeline_apns_opts(const struct config *cfg, struct jwt *jwt,
                        struct apns_opts *ao);

#endif
