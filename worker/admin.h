/*
 * admin: the small HTTP listener that Kubernetes and Prometheus talk to.
 *
 *   GET /healthz  200 "ok" while the loop's heartbeat is younger than
 *                 ADMIN_STALL_MS, else 503 saying for how long it stalled;
 *   GET /readyz   200 "ready" once partitions are assigned, APNs answers
 *                 and a provider token is signed, else 503 with one line
 *                 per condition not met;
 *   GET /metrics  the metrics in the Prometheus text format (metrics.h).
 *
 * Any other path is 404, any other method 405. Everything it reports comes
 * from metrics.h: the loop publishes its heartbeat and state there, and
 * this module only reads them, so it shares no other state with the loop.
 *
 * Threads: admin_start(), admin_port() and admin_stop() are called by the
 * thread that owns the listener (main). Requests are answered on one thread
 * of libmicrohttpd's own, which only reads metrics; nothing here logs.
 */
#ifndef CALLPUSH_ADMIN_H
#define CALLPUSH_ADMIN_H

#define ADMIN_ERR_MAX 256

/* A loop that has not completed a pass for this long is reported stalled,
 * so that the liveness probe restarts the worker. */
#define ADMIN_STALL_MS 30000

struct admin;

/*
 * Starts listening on addr, "[host]:port": an empty host listens on every
 * IPv4 address, a name is resolved to its first IPv4 address, and port 0
 * takes a free port (see admin_port()). Returns the listener, or NULL with
 * the reason in err (ADMIN_ERR_MAX bytes).
 */
struct admin *admin_start(const char *addr, char *err);

/* The port actually bound. */
int admin_port(const struct admin *a);

/* Stops answering, waits for the listener's thread to finish, closes the
 * socket and frees a. NULL is allowed. */
void admin_stop(struct admin *a);

#endif
