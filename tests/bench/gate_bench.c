/*
 * gate-bench: how fast the gate decides and how much memory it holds at
 * the sizes production needs: 10,000 events a second, a 10-minute dedupe
 * window (6,000,000 _j_msgids) and 1,000,000 tombstones.
 *
 * Time is simulated (10 events per millisecond), so the run takes as long
 * as the gate needs, not ten minutes. One call in two is cancelled, so a
 * third of the events are cancels. Three phases are timed:
 *
 *   fill       the first 6,000,000 events, into empty tables;
 *   steady     6,000,000 more, each insert reclaiming an expired msgid
 *              and the tombstone table turning over at capacity;
 *   duplicate  the last 1,000,000 msgids again, all of them duplicates.
 *
 * Usage: gate-bench [events per phase]   (default 6000000)
 * A benchmark, not a test: it asserts nothing about speed.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "event.h"
#include "gate.h"

#define RATE_PER_MS 10
#define WINDOW_MS (10 * 60 * 1000)
#define TTL_MS (10 * 60 * 1000)
#define MAX_TOMBSTONES 1000000
#define MIN_LEFT_MS 5000
#define RING_MS 30000
#define FIRST_MSGID UINT64_C(18101194842707757)
#define T0 INT64_C(1780000000000)

struct counts {
    size_t verdicts[4];
};

static double
mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* "call-" and 16 hex digits, without the cost of snprintf in the loop. */
static void
call_id_of(char out[22], uint64_t call)
{
    static const char hex[] = "0123456789abcdef";
    int i;

    out[0] = 'c';
    out[1] = 'a';
    out[2] = 'l';
    out[3] = 'l';
    out[4] = '-';
    for (i = 0; i < 16; i++) {
        out[5 + i] = hex[(call >> (60 - 4 * i)) & 0xf];
    }
    out[21] = '\0';
}

/* Event i of the stream: calls 0, 1, 2, ... each get an invite, and every
 * odd call a cancel right after it. */
static void
event_at(uint64_t i, struct event *ev, char call_id[22])
{
    uint64_t call = i / 3 * 2 + (i % 3 == 0 ? 0 : 1);

    ev->type = i % 3 == 2 ? EVENT_CANCEL : EVENT_INVITE;
    ev->msgid_num = FIRST_MSGID + i * 7;
    call_id_of(call_id, call);
    ev->call_id = call_id;
}

static double
run(struct gate *g, uint64_t from, uint64_t n, struct counts *c)
{
    char call_id[22];
    struct event ev = {0};
    double start = mono_ns();
    uint64_t i;

    for (i = from; i < from + n; i++) {
        int64_t now = T0 + (int64_t)(i / RATE_PER_MS);
        enum gate_verdict v;

        event_at(i, &ev, call_id);
        v = gate_check(g, &ev, now + RING_MS, now);
        c->verdicts[v]++;
    }
    return (mono_ns() - start) / (double)n;
}

static double
run_duplicates(struct gate *g, uint64_t from, uint64_t n, int64_t now,
               struct counts *c)
{
    char call_id[22];
    struct event ev = {0};
    double start = mono_ns();
    uint64_t i;

    for (i = from; i < from + n; i++) {
        event_at(i, &ev, call_id);
        c->verdicts[gate_check(g, &ev, now + RING_MS, now)]++;
    }
    return (mono_ns() - start) / (double)n;
}

static void
print_phase(const char *name, double ns, const struct counts *c)
{
    printf("%-9s %7.1f ns/check   pass %zu  duplicate %zu  cancelled %zu"
           "  late %zu\n",
           name, ns, c->verdicts[GATE_PASS], c->verdicts[GATE_DUPLICATE],
           c->verdicts[GATE_CANCELLED], c->verdicts[GATE_LATE]);
}

int
main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 6000000;
    uint64_t dups = n < 1000000 ? n : 1000000;
    struct gate_opts opts = {
        .dedupe_window_ms = WINDOW_MS,
        .tombstone_ttl_ms = TTL_MS,
        .max_msgids = (size_t)WINDOW_MS * RATE_PER_MS,
        .max_tombstones = MAX_TOMBSTONES,
        .min_ring_left_ms = MIN_LEFT_MS,
    };
    struct gate_opts msgids_only = opts;
    struct counts fill = {{0}}, steady = {{0}}, dup = {{0}};
    struct gate *g;
    struct rusage ru;
    double ns;
    size_t bytes;

    if (n == 0) {
        fprintf(stderr, "usage: gate-bench [events per phase, > 0]\n");
        return 2;
    }

    /* The msgid table alone: a gate whose tombstone table has one slot. */
    msgids_only.max_tombstones = 1;
    g = gate_new(&msgids_only);
    bytes = gate_bytes(g);
    gate_free(g);
    printf("msgid table for %zu msgids: %zu bytes (%.1f per msgid)\n",
           opts.max_msgids, bytes, (double)bytes / (double)opts.max_msgids);

    g = gate_new(&opts);
    bytes = gate_bytes(g);
    printf("gate_bytes with %zu msgids and %zu tombstones: %zu (%.1f MiB)\n",
           opts.max_msgids, opts.max_tombstones, bytes,
           (double)bytes / 1048576.0);

    ns = run(g, 0, n, &fill);
    print_phase("fill", ns, &fill);
    printf("          msgids %zu  tombstones %zu\n", gate_msgids(g),
           gate_tombstones(g));

    ns = run(g, n, n, &steady);
    print_phase("steady", ns, &steady);
    printf("          msgids %zu  tombstones %zu\n", gate_msgids(g),
           gate_tombstones(g));

    ns = run_duplicates(g, 2 * n - dups, dups,
                        T0 + (int64_t)((2 * n - 1) / RATE_PER_MS), &dup);
    print_phase("duplicate", ns, &dup);

    getrusage(RUSAGE_SELF, &ru);
    printf("gate_bytes %zu (%s since gate_new); peak RSS %ld KiB\n",
           gate_bytes(g), gate_bytes(g) == bytes ? "unchanged" : "CHANGED",
           ru.ru_maxrss);
    gate_free(g);
    return 0;
}
