/*
 * producer: messages the worker writes back to Kafka (dead letters and
 * dead-device-token feedback), with their delivery acknowledgements.
 *
 * An event whose outcome is a Kafka message is final only once that
 * message is acknowledged by the brokers, so every send carries an opaque
 * pointer that comes back through the ack callback, exactly once, from
 * producer_poll(). Delivery is retried by librdkafka without a time limit
 * (message.timeout.ms=0): a message is never given up while the worker runs.
 *
 * Thread safety: loop thread only; librdkafka's own threads wake the loop
 * through the descriptor given to producer_new().
 */
#ifndef CALLPUSH_PRODUCER_H
#define CALLPUSH_PRODUCER_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

#define PRODUCER_ERR_MAX 512

/* err is NULL on success, else librdkafka's description. */
typedef void producer_ack_fn(void *opaque, const char *err);

struct producer;

struct producer *producer_new(const struct config *cfg, int wake_fd,
                              producer_ack_fn *ack, char *err);

/* Sends value to topic. hdrs (may be NULL) is taken over in every case.
 * Returns 0, or -1 with err set when librdkafka refused the message at
 * once (the ack callback will not run for it). */
int producer_send(struct producer *p, const char *topic, const void *key,
                  size_t key_len, const void *value, size_t len,
                  rd_kafka_headers_t *hdrs, void *opaque, char *err);

/* Serves delivery reports (ack callbacks) and librdkafka's logs. */
void producer_poll(struct producer *p);

/* Waits up to timeout_ms for every message to be acknowledged; returns the
 * number still unacknowledged. */
int producer_flush(struct producer *p, int timeout_ms);

void producer_free(struct producer *p);

/* Shared with the consumer: applies the worker's Kafka settings (brokers,
 * CALLPUSH_KAFKA_* pass-through) to a librdkafka configuration, routes its
 * logs to a queue the loop serves, and makes its queue write to wake_fd. */
int kafka_conf_apply(rd_kafka_conf_t *conf, const struct config *cfg, char *err,
                     size_t errlen);
/* Writes one of librdkafka's log lines (syslog level, facility, text) as
 * a JSON line, repeats rate-limited. */
void kafka_log(int level, const char *fac, const char *text);

#endif
