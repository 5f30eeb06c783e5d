/*
 * payload: a call event becomes the APNs request body and the per-request
 * header values, under the payload size cap.
 *
 * The body has the shape the iOS app's Notification Service Extension
 * reads (schemas/apns-payload.schema.json): "aps" with an alert, badge 0,
 * mutable-content 1 and the ring sound; "pushType" 1 (invite) or 2
 * (cancel); "_j_msgid" as an exact JSON integer; "_j_uid" as received;
 * "call_id"; then the event's extras in the order received.
 *
 * Thread safety: no shared state; any thread.
 */
#ifndef CALLPUSH_PAYLOAD_H
#define CALLPUSH_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"

#define PAYLOAD_ALERT_MAX 4096 /* alert push type */
#define PAYLOAD_VOIP_MAX 5120
#define PAYLOAD_ERR_MAX 160
#define PAYLOAD_APNS_ID_LEN 36 /* canonical UUID, without the NUL */

/* Default texts and sound, from configuration. */
struct payload_opts {
    const char *invite_title;       /* audio invite */
    const char *invite_video_title; /* video invite */
    const char *cancel_title;       /* audio cancel */
    const char *cancel_video_title; /* video cancel */
    const char *sound;
    int ring_timeout_s;      /* when the event has none */
    int cancel_expiration_s; /* cancel apns-expiration = created_at + it */
};

/*
 * Writes the JSON body for ev into out (reset first). If it would exceed
 * limit bytes, the alert body is shortened at a UTF-8 character boundary
 * (with "…" appended) until it fits; if it still does not fit without any
 * body, returns -1 with the reason in err (PAYLOAD_ERR_MAX bytes). Returns
 * 0 on success; *body_cut is set to 1 when the body was shortened.
 */
int payload_build(struct buf *out, const struct event *ev,
                  const struct payload_opts *opts, size_t limit, int *body_cut,
                  char *err);

/*
 * The apns-id for one (message id, device token) pair: a lowercase
 * canonical UUID (version 8, RFC 9562) derived from SHA-256 of both, so a
 * retry or a redelivery carries the same id. out has room for
 * PAYLOAD_APNS_ID_LEN + 1 bytes.
 */
void payload_apns_id(char *out, const char *msgid, const char *token);

/* apns-expiration in UNIX seconds: for an invite the end of its ring window
 * (created_at + ring timeout), for a cancel created_at plus the configured
 * cancel expiration. */
int64_t payload_expiration(const struct event *ev,
                           const struct payload_opts *opts);

/* End of an invite's ring window in milliseconds since the epoch. */
int64_t payload_ring_end_ms(const struct event *ev,
                            const struct payload_opts *opts);

#endif
