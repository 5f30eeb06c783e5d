#include "producer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

struct producer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    producer_ack_fn *ack;
    size_t outstanding;
};

int
kafka_conf_apply(rd_kafka_conf_t *conf, const struct config *cfg, char *err,
                 size_t errlen)
{
    size_t i;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->brokers, err,
                          errlen) != RD_KAFKA_CONF_OK) {
        return -1;
    }
    /* librdkafka logs from its own threads; queue the lines so the loop
     * thread writes them with everything else. */
    if (rd_kafka_conf_set(conf, "log.queue", "true", err, errlen) !=
        RD_KAFKA_CONF_OK) {
        return -1;
    }
    for (i = 0; i < cfg->nkafka; i++) {
        char msg[256];

        if (rd_kafka_conf_set(conf, cfg->kafka[i].name, cfg->kafka[i].value,
                              msg, sizeof(msg)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen,
                     "Kafka property %s (CALLPUSH_KAFKA_*, --kafka): %s",
                     cfg->kafka[i].name, msg);
            return -1;
        }
    }
    return 0;
}

void
kafka_log(int level, const char *fac, const char *text)
{
    /* syslog levels: 0-3 errors, 4 warning, 5-6 info, 7 debug. */
    enum log_level lv = level <= 3   ? LOG_ERROR
                        : level == 4 ? LOG_WARN
                        : level <= 6 ? LOG_INFO
                                     : LOG_DEBUG;
    struct buf *line = log_begin_limited(lv, "kafka", text);

    if (line == NULL) {
        return;
    }
    log_str(line, "facility", fac);
    log_str(line, "detail", text);
    log_end(line);
}

static void
log_event(rd_kafka_event_t *ev)
{
    const char *fac, *text;
    int level;

    if (rd_kafka_event_log(ev, &fac, &text, &level) == 0) {
        kafka_log(level, fac, text);
    }
}

struct producer *
producer_new(const struct config *cfg, int wake_fd, producer_ack_fn *ack,
             char *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    struct producer *p;
    char msg[PRODUCER_ERR_MAX / 2];
    rd_kafka_t *rk;

    if (kafka_conf_apply(conf, cfg, msg, sizeof(msg)) < 0 ||
        rd_kafka_conf_set(conf, "acks", "all", msg, sizeof(msg)) ||
        rd_kafka_conf_set(conf, "message.timeout.ms", "0", msg, sizeof(msg)) ||
        rd_kafka_conf_set(conf, "linger.ms", "5", msg, sizeof(msg))) {
        snprintf(err, PRODUCER_ERR_MAX, "producer: %s", msg);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_LOG |
                                       RD_KAFKA_EVENT_ERROR);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, msg, sizeof(msg));
    if (rk == NULL) {
        snprintf(err, PRODUCER_ERR_MAX, "producer: %s", msg);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    p = xcalloc(1, sizeof(*p));
    p->rk = rk;
    p->ack = ack;
    p->queue = rd_kafka_queue_get_main(rk);
    rd_kafka_set_log_queue(rk, p->queue);
    rd_kafka_queue_io_event_enable(p->queue, wake_fd, "p", 1);
    return p;
}

int
producer_send(struct producer *p, const char *topic, const void *key,
              size_t key_len, const void *value, size_t len,
              rd_kafka_headers_t *hdrs, void *opaque, char *err)
{
    rd_kafka_resp_err_t code;

    code = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (code != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* On failure the headers were not taken over by librdkafka. */
        if (hdrs != NULL) {
            rd_kafka_headers_destroy(hdrs);
        }
        snprintf(err, PRODUCER_ERR_MAX, "produce to %s: %s", topic,
                 rd_kafka_err2str(code));
        return -1;
    }
    p->outstanding++;
    return 0;
}

static void
serve_event(struct producer *p, rd_kafka_event_t *ev)
{
    const rd_kafka_message_t *m;

    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_DR:
        while ((m = rd_kafka_event_message_next(ev)) != NULL) {
            p->outstanding--;
            p->ack(m->_private, m->err ? rd_kafka_err2str(m->err) : NULL);
        }
        break;
    case RD_KAFKA_EVENT_LOG:
        log_event(ev);
        break;
    case RD_KAFKA_EVENT_ERROR: {
        /* A transport error repeats what librdkafka's log already said. */
        if (rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TRANSPORT) {
            break;
        }
        struct buf *line = log_begin_limited(
            rd_kafka_event_error_is_fatal(ev) ? LOG_ERROR : LOG_WARN,
            "kafka producer error", rd_kafka_event_error_string(ev));

        if (line != NULL) {
            log_str(line, "detail", rd_kafka_event_error_string(ev));
            log_end(line);
        }
        break;
    }
    default:
        break;
    }
}

void
producer_poll(struct producer *p)
{
    rd_kafka_event_t *ev;

    while ((ev = rd_kafka_queue_poll(p->queue, 0)) != NULL) {
        serve_event(p, ev);
        rd_kafka_event_destroy(ev);
    }
}

int
producer_flush(struct producer *p, int timeout_ms)
{
    int64_t end = util_mono_ms() + timeout_ms;

    /* rd_kafka_flush() would serve the queue itself and swallow the acks;
     * serve it here so every ack still reaches its event. */
    while (p->outstanding > 0 && util_mono_ms() < end) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(p->queue, 100);

        if (ev != NULL) {
            serve_event(p, ev);
            rd_kafka_event_destroy(ev);
        }
    }
    return (int)p->outstanding;
}

void
producer_free(struct producer *p)
{
    if (p == NULL) {
        return;
    }
    /* Whatever is still unacknowledged belongs to events that were not
     * committed: dropping it here is safe, Kafka redelivers the events. */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_queue_destroy(p->queue);
    rd_kafka_destroy(p->rk);
    free(p);
}
