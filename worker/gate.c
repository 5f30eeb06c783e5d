/*
 * The gate's two tables share one shape, a FIFO with a hash index:
 *
 *  - a ring of entries in the order they were recorded, kept as parallel
 *    arrays: the time recorded, a keyed 64-bit hash of the key and, for
 *    call_ids only, the key itself padded with NULs to EVENT_CALL_ID_MAX
 *    bytes. The head is the oldest entry; expired entries are popped from
 *    the head before every lookup and insert, so reclaiming them costs
 *    O(1) amortised and needs no timer;
 *  - an open-addressing index (linear probing, load at most 3/4) of 32-bit
 *    slots, each the entry's ring position plus one in the low bits and
 *    the top bits of its hash above them as a tag, so that a probe only
 *    reads the ring for an entry whose tag matches. Removal shifts the
 *    rest of a cluster back rather than leaving deleted markers, so a
 *    table that turns over forever never needs a rebuild.
 *
 * All memory is allocated once, in gate_new(), from the capacities in the
 * options, and never grows with the input: a full table evicts its oldest
 * entry to make room. A _j_msgid entry takes 16 bytes in the ring plus
 * 4 bytes per index slot; a call_id entry takes 80 bytes plus 4. At
 * 10,000 events a second over a 10-minute window, 6,000,000 msgids take
 * 96,000,000 bytes of ring and 8,388,608 index slots (load 0.72) of
 * 33,554,432 bytes: 129,554,432 bytes, 21.6 per msgid. Capacities are
 * taken between 1 and 2^30 entries; a negative min_ring_left_ms counts
 * as 0, so an invite past the end of its ring window is always late.
 *
 * A _j_msgid is stored as its hash only: the hash is a bijection of the
 * msgid (a seeded xor followed by an invertible mixer), so equal hashes
 * mean equal msgids. Call_ids are hashed with SipHash-2-4 under a key from
 * getrandom(), so that nobody who picks call_ids can make them collide in
 * the index and turn lookups into scans.
 *
 * Times are the caller's; entries are expected in non-decreasing time. If
 * the clock steps back, lookups stay correct (an entry is live for its
 * lifetime after the time it carries), but reclaiming waits for the head.
 */
#include "gate.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "util.h"

/* Ring positions plus one must fit below the tag in a 32-bit slot, with
 * at least one tag bit left. */
#define GATE_CAP_MAX ((size_t)1 << 30)

#define GATE_KEY_MAX EVENT_CALL_ID_MAX

#define NOT_FOUND SIZE_MAX

struct table {
    int64_t *at;                /* when each entry was recorded */
    uint64_t *hash;             /* its keyed hash */
    char (*keys)[GATE_KEY_MAX]; /* NUL-padded call_ids; NULL for msgids */
    size_t cap;                 /* ring positions */
    size_t head;                /* ring position of the oldest entry */
    size_t count;               /* entries in the ring, live or not */
    int64_t lifetime_ms;        /* an entry this old is dead */

    uint32_t *slots;   /* the index: 0 empty, else tag | position + 1 */
    size_t mask;       /* index slots - 1; the slot count is a power of 2 */
    unsigned pos_bits; /* bits below the tag */
};

struct gate {
    struct table msgids;
    struct table tombs;
    int64_t min_ring_left_ms;
    uint64_t msgid_seed;
    uint64_t sip_k0;
    uint64_t sip_k1;
};

/* A stateless 64-bit mixer: each step (xor with a shift, multiplication
 * by an odd constant) can be undone, so the whole is a bijection. */
static uint64_t
mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static uint64_t
rotl64(uint64_t x, unsigned n)
{
    return (x << n) | (x >> (64 - n));
}

struct sip {
    uint64_t v0, v1, v2, v3;
};

static void
sip_round(struct sip *s)
{
    s->v0 += s->v1;
    s->v1 = rotl64(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl64(s->v0, 32);

    s->v2 += s->v3;
    s->v3 = rotl64(s->v3, 16);
    s->v3 ^= s->v2;

    s->v0 += s->v3;
    s->v3 = rotl64(s->v3, 21);
    s->v3 ^= s->v0;

    s->v2 += s->v1;
    s->v1 = rotl64(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl64(s->v2, 32);
}

static void
sip_absorb(struct sip *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

/* Reads eight bytes as little-endian whatever the host's byte order, so
 * that the hash is SipHash as specified. */
static uint64_t
load_le64(const unsigned char *p, size_t n)
{
    uint64_t m = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        m |= (uint64_t)p[i] << (8 * i);
    }
    return m;
}

/* SipHash-2-4 of len bytes under the key (k0, k1). */
static uint64_t
siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const unsigned char *p = data;
    struct sip s;
    size_t i;
    int r;

    s.v0 = k0 ^ UINT64_C(0x736f6d6570736575);
    s.v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    s.v2 = k0 ^ UINT64_C(0x6c7967656e657261);
    s.v3 = k1 ^ UINT64_C(0x7465646279746573);

    for (i = 0; i + 8 <= len; i += 8) {
        sip_absorb(&s, load_le64(p + i, 8));
    }

    /* The last block carries the leftover bytes and the length. */
    sip_absorb(&s, load_le64(p + i, len - i) | ((uint64_t)len << 56));

    s.v2 ^= 0xff;
    for (r = 0; r < 4; r++) {
        sip_round(&s);
    }
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

/*
 * Fills out with random bytes. getrandom() only fails on kernels older
 * than 3.17 or under a seccomp policy that forbids it; the gate then
 * still works, seeded from clocks and addresses, and only loses its
 * resistance to chosen call_ids.
 */
static void
seed_bytes(uint64_t *out, size_t n)
{
    size_t i;

    if (getrandom(out, n * sizeof(*out), 0) == (ssize_t)(n * sizeof(*out))) {
        return;
    }
    for (i = 0; i < n; i++) {
        out[i] = mix64((uint64_t)util_now_ms() ^ (uint64_t)util_mono_ms() ^
                       (uint64_t)(uintptr_t)out ^ (i + 1) * 0x9e3779b97f4a7c15);
    }
}

/*
 * Whether an entry recorded at at is still live at now. An entry from the
 * future (the clock stepped back) is live. The difference is taken in
 * unsigned arithmetic, where it cannot overflow.
 */
static int
is_live(int64_t at, int64_t now, int64_t lifetime_ms)
{
    if (lifetime_ms <= 0) {
        return 0;
    }
    if (at >= now) {
        return 1;
    }
    return (uint64_t)now - (uint64_t)at < (uint64_t)lifetime_ms;
}

static void
table_init(struct table *t, size_t cap, int64_t lifetime_ms, int with_keys)
{
    size_t nslots = 2;

    if (cap < 1) {
        cap = 1;
    }
    if (cap > GATE_CAP_MAX) {
        cap = GATE_CAP_MAX;
    }

    /* A load of at most 3/4 keeps linear probing short; a power of two
     * makes the home slot a mask of the hash. */
    while (nslots / 4 * 3 < cap) {
        nslots *= 2;
    }

    memset(t, 0, sizeof(*t));
    t->cap = cap;
    t->lifetime_ms = lifetime_ms;
    t->at = xcalloc(cap, sizeof(*t->at));
    t->hash = xcalloc(cap, sizeof(*t->hash));
    if (with_keys) {
        t->keys = xcalloc(cap, sizeof(*t->keys));
    }

    t->slots = xcalloc(nslots, sizeof(*t->slots));
    t->mask = nslots - 1;
    t->pos_bits = 1;
    while (((size_t)1 << t->pos_bits) <= cap) {
        t->pos_bits++;
    }
}

static void
table_release(struct table *t)
{
    free(t->at);
    free(t->hash);
    free(t->keys);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static size_t
table_bytes(const struct table *t)
{
    size_t per_entry = sizeof(*t->at) + sizeof(*t->hash);

    if (t->keys != NULL) {
        per_entry += sizeof(*t->keys);
    }
    return t->cap * per_entry + (t->mask + 1) * sizeof(*t->slots);
}

/* The tag is the hash's top bits, disjoint from the low bits that pick
 * the home slot. */
static uint32_t
slot_tag(const struct table *t, uint64_t h)
{
    return (uint32_t)(h >> (32 + t->pos_bits));
}

static size_t
slot_pos(const struct table *t, uint32_t slot)
{
    return (size_t)(slot & (((uint32_t)1 << t->pos_bits) - 1)) - 1;
}

/* The ring position of the entry with hash h (and key, for call_ids), or
 * NOT_FOUND. The index always has an empty slot, so the probe ends. */
static size_t
table_find(const struct table *t, uint64_t h, const char *key)
{
    uint32_t tag = slot_tag(t, h);
    size_t i;

    for (i = h & t->mask; t->slots[i] != 0; i = (i + 1) & t->mask) {
        uint32_t slot = t->slots[i];
        size_t pos;

        if (slot >> t->pos_bits != tag) {
            continue;
        }
        pos = slot_pos(t, slot);
        if (t->hash[pos] != h) {
            continue;
        }
        if (key == NULL || memcmp(t->keys[pos], key, GATE_KEY_MAX) == 0) {
            return pos;
        }
    }
    return NOT_FOUND;
}

/* The index slot that points at ring position pos, whose hash is h. */
static size_t
index_slot_of(const struct table *t, uint64_t h, size_t pos)
{
    size_t i = h & t->mask;

    while (slot_pos(t, t->slots[i]) != pos) {
        i = (i + 1) & t->mask;
    }
    return i;
}

/*
 * Empties index slot i, then walks the rest of its cluster moving back
 * into the hole every entry whose home slot does not lie between the hole
 * and where it sits (cyclically), so that no probe sequence is broken.
 */
static void
index_remove(struct table *t, size_t i)
{
    size_t j = i;

    for (;;) {
        size_t home;

        j = (j + 1) & t->mask;
        if (t->slots[j] == 0) {
            break;
        }
        home = t->hash[slot_pos(t, t->slots[j])] & t->mask;
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) {
            continue;
        }
        t->slots[i] = t->slots[j];
        i = j;
    }
    t->slots[i] = 0;
}

static void
index_insert(struct table *t, uint64_t h, size_t pos)
{
    size_t i = h & t->mask;

    while (t->slots[i] != 0) {
        i = (i + 1) & t->mask;
    }
    t->slots[i] = (slot_tag(t, h) << t->pos_bits) | (uint32_t)(pos + 1);
}

static void
table_pop(struct table *t)
{
    size_t pos = t->head;

    index_remove(t, index_slot_of(t, t->hash[pos], pos));
    t->head = pos + 1 == t->cap ? 0 : pos + 1;
    t->count--;
}

static void
table_expire(struct table *t, int64_t now)
{
    while (t->count > 0 && !is_live(t->at[t->head], now, t->lifetime_ms)) {
        table_pop(t);
    }
}

/*
 * Records the key as seen at now, where pos is what table_find() returned
 * for it. A key already held is refreshed in place rather than appended
 * again, so that one key repeated cannot crowd the others out of the
 * ring; only its age changes, never its place in the eviction order.
 */
static void
table_put(struct table *t, size_t pos, uint64_t h, const char *key, int64_t now)
{
    if (pos != NOT_FOUND) {
        if (now > t->at[pos]) {
            t->at[pos] = now;
        }
        return;
    }

    if (t->count == t->cap) {
        table_pop(t);
    }

    pos = t->head + t->count;
    if (pos >= t->cap) {
        pos -= t->cap;
    }
    t->at[pos] = now;
    t->hash[pos] = h;
    if (key != NULL) {
        memcpy(t->keys[pos], key, GATE_KEY_MAX);
    }
    index_insert(t, h, pos);
    t->count++;
}

static uint64_t
msgid_hash(const struct gate *g, uint64_t msgid)
{
    return mix64(msgid ^ g->msgid_seed);
}

/*
 * Pads call_id with NULs to GATE_KEY_MAX bytes in key and returns its
 * keyed hash. Call_ids are NUL-free, so the padding cannot make two of
 * them equal. The event decoder refuses longer call_ids; were one to come
 * here, its first GATE_KEY_MAX bytes would stand for it, which can only
 * suppress an invite, never push one after its cancel.
 */
static uint64_t
call_id_key(const struct gate *g, const char *call_id, char key[GATE_KEY_MAX])
{
    size_t len = 0;

    memset(key, 0, GATE_KEY_MAX);
    if (call_id != NULL) {
        while (len < GATE_KEY_MAX && call_id[len] != '\0') {
            len++;
        }
        memcpy(key, call_id, len);
    }
    return siphash24(g->sip_k0, g->sip_k1, key, len);
}

struct gate *
gate_new(const struct gate_opts *opts)
{
    struct gate *g = xcalloc(1, sizeof(*g));
    uint64_t seed[3];

    table_init(&g->msgids, opts->max_msgids, opts->dedupe_window_ms, 0);
    table_init(&g->tombs, opts->max_tombstones, opts->tombstone_ttl_ms, 1);
    g->min_ring_left_ms = opts->min_ring_left_ms;

    seed_bytes(seed, UTIL_ARRAY_LEN(seed));
    g->msgid_seed = seed[0];
    g->sip_k0 = seed[1];
    g->sip_k1 = seed[2];
    return g;
}

void
gate_free(struct gate *g)
{
    if (g == NULL) {
        return;
    }
    table_release(&g->msgids);
    table_release(&g->tombs);
    free(g);
}

/*
 * Whether an invite ending its ring at ring_end_ms has at most
 * min_ring_left_ms left at now_ms. The remaining time is computed in
 * unsigned arithmetic once it is known to be positive, so extreme values
 * cannot overflow.
 */
static int
is_late(int64_t ring_end_ms, int64_t now_ms, int64_t min_ring_left_ms)
{
    uint64_t left;

    if (ring_end_ms <= now_ms) {
        return 1;
    }
    if (min_ring_left_ms <= 0) {
        return 0;
    }
    left = (uint64_t)ring_end_ms - (uint64_t)now_ms;
    return left <= (uint64_t)min_ring_left_ms;
}

enum gate_verdict
gate_check(struct gate *g, const struct event *ev, int64_t ring_end_ms,
           int64_t now_ms)
{
    /* An invite and its cancel may share a _j_msgid: duplicates are of
     * the same type. Message ids stay below 2^63, so the top bit is free
     * to tell them apart and the key stays exact. */
    uint64_t key =
        ev->msgid_num | (ev->type == EVENT_CANCEL ? UINT64_C(1) << 63 : 0);
    uint64_t h = msgid_hash(g, key);
    size_t pos;

    /* A duplicate changes nothing, so that redelivering a message cannot
     * stretch how long it, or its call's tombstone, is remembered. */
    table_expire(&g->msgids, now_ms);
    pos = table_find(&g->msgids, h, NULL);
    if (pos != NOT_FOUND &&
        is_live(g->msgids.at[pos], now_ms, g->msgids.lifetime_ms)) {
        return GATE_DUPLICATE;
    }
    table_put(&g->msgids, pos, h, NULL, now_ms);

    if (ev->type == EVENT_CANCEL) {
        gate_tombstone(g, ev->call_id, now_ms);
        return GATE_PASS;
    }

    if (gate_cancelled(g, ev->call_id, now_ms)) {
        return GATE_CANCELLED;
    }
    if (is_late(ring_end_ms, now_ms, g->min_ring_left_ms)) {
        return GATE_LATE;
    }
    return GATE_PASS;
}

void
gate_tombstone(struct gate *g, const char *call_id, int64_t now_ms)
{
    char key[GATE_KEY_MAX];
    uint64_t h = call_id_key(g, call_id, key);

    table_expire(&g->tombs, now_ms);
    table_put(&g->tombs, table_find(&g->tombs, h, key), h, key, now_ms);
}

int
gate_cancelled(struct gate *g, const char *call_id, int64_t now_ms)
{
    char key[GATE_KEY_MAX];
    uint64_t h = call_id_key(g, call_id, key);
    size_t pos;

    table_expire(&g->tombs, now_ms);
    pos = table_find(&g->tombs, h, key);
    if (pos == NOT_FOUND) {
        return 0;
    }
    return is_live(g->tombs.at[pos], now_ms, g->tombs.lifetime_ms);
}

size_t
gate_msgids(const struct gate *g)
{
    return g->msgids.count;
}

size_t
gate_tombstones(const struct gate *g)
{
    return g->tombs.count;
}

size_t
gate_bytes(const struct gate *g)
{
    return sizeof(*g) + table_bytes(&g->msgids) + table_bytes(&g->tombs);
}

const char *
gate_verdict_name(enum gate_verdict v)
{
    switch (v) {
    case GATE_PASS:
        return "pass";
    case GATE_DUPLICATE:
        return "duplicate";
    case GATE_CANCELLED:
        return "cancelled";
    case GATE_LATE:
        return "late";
    }
    return "unknown";
}
