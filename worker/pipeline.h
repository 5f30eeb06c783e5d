/*
 * pipeline: the worker's loop. It reads call events from the consumer,
 * decodes them, builds each device's push, hands the pushes to the APNs
 * client, and settles every event's outcome: pushed, suppressed, reported
 * as a dead device token, or dead-lettered. Only a settled event is marked
 * final for the commit.
 *
 * One thread drives everything: it sleeps in apns_wait() on libcurl's
 * sockets and on one pipe that librdkafka's queues and the signal handler
 * write to, so neither Kafka nor APNs can block the other.
 *
 * Thread safety: pipeline_stop() may be called from a signal handler; the
 * rest from the thread that runs pipeline_run().
 */
#ifndef CALLPUSH_PIPELINE_H
#define CALLPUSH_PIPELINE_H

#include "config.h"

#define PIPELINE_ERR_MAX 512

/* How long a stopping worker waits for pushes in flight to settle. */
#define PIPELINE_DRAIN_MS 20000

struct pipeline;

/* Builds every part from cfg (which must outlive the pipeline): loads the
 * signing key, creates the Kafka clients and the APNs client. Returns NULL
 * with err set when any part cannot start. */
struct pipeline *pipeline_new(const struct config *cfg, char *err);

/* Runs until pipeline_stop(); then drains, commits and leaves the group.
 * Returns 0 when everything in flight settled, -1 otherwise. */
int pipeline_run(struct pipeline *pl);

/* Async-signal-safe. */
void pipeline_stop(struct pipeline *pl);

void pipeline_free(struct pipeline *pl);

#endif
