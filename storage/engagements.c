/*
 * storage/engagements.c: the engagement log and the click counters.
 *
 * engagements: key = seq (u64 BE), appended in order by the writer.
 *   value = version, event id[16], time (i64), kind, device, bot, country[2],
 *           group guid[11], code (u8 length + bytes), referrer (u8 + bytes),
 *           query (u16 + bytes), long URL (u32 + bytes); integers little-endian.
 * counters: key = hour (u32 BE) + code length (u8) + code + facet (u8) + value.
 *   Hour first, so that a flush writes only into the current hour's range,
 *   which holds one hour of clicks, not into a tree of every hour of every
 *   link. A click's six keys sit side by side there (same hour and code), so
 *   a flush still dirties about one leaf page per distinct link it counts:
 *   clicks spread evenly over millions of links remain costly.
 *   The code is length-prefixed so that the keys of "ab" can never be read as
 *   those of "abc". value = version + count (u64). The minute facet's value
 *   is one byte, the minute within the hour.
 *   A sealed batch spread over opts.counter_run_links links or more is
 *   written as a run instead: key = hour + 0 + run (u64 BE, the first
 *   engagement it counts) + code length + code + facet + value, each key
 *   new and holding its whole count. A run's keys sort together, before the
 *   hour's added-up keys (no code is 0 bytes long), so writing one fills
 *   pages in order: a few dozen links per page where adding into the hour's
 *   keys dirtied a page per link. Readers sum each run's keys and the hour's,
 *   a seek or two per run; the writer merges a past hour's runs into its
 *   first (see "merging runs"), so only the current hour holds several.
 *
 * Counters trail the engagement log. Each click adds to an in-memory batch
 * (per link and hour: total, minute, device, kind; per key: country,
 * referrer). Every so often the writer seals the batch (folds and sorts it)
 * and writes it in key order, a slice per group commit, while a second batch
 * gathers the clicks that follow. Meta's "storage.counters_seq" is the last
 * engagement the counters hold; while a sealed batch is part written,
 * "storage.counters_progress" says which engagements it counts and the last
 * key written. After a crash the writer gathers the sealed batch again from
 * the log, writes only the keys past that one, then counts the engagements
 * after it again, so counters always end up equal to what the log holds.
 * Writing the counters with every group rewrote the same pages hundreds of
 * times a second; writing a whole batch in one group stalled clicks behind
 * it when the batch spanned thousands of links.
 *
 * TODO: retention (DESIGN.md §3) is not implemented: raw engagements and the
 * delivery log grow until a pruning job deletes old keys. The sequence survives
 * such pruning through the meta high-water mark.
 */
#include "storage_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define COUNTER_KEY_MAX  (4 + 1 + STORAGE_CODE_MAX + 1 + STORAGE_REFERRER_MAX)
#define COUNTER_PREFETCH 8       /* entries ahead that a sorted write asks the cache for */
#define RUN_TAG          (1 + 8) /* a zero where a code's length would be, and the run */
#define RUN_KEY_MAX      (COUNTER_KEY_MAX + RUN_TAG)
#define PREFIX_MAX       (4 + 1 + STORAGE_CODE_MAX)
#define DEVICES          5 /* STORAGE_DEVICE_OTHER .. STORAGE_DEVICE_BOT */
#define KINDS            3 /* STORAGE_KIND_CLICK .. STORAGE_KIND_BIO_CLICK */
/* Entries a click can add, at most. For a link of c clicks: a referrer or a
 * share of the link's "direct" key each (c), a minute set aside each time the
 * running minute changes (c - 1), and at a seal a country each (c), the total
 * and the running minute (2), and devices and kinds (2c at most): 5c + 1. */
#define KEYS_PER_ENGAGEMENT 7

/* 32 bytes, the key itself in the batch's arena: with the key inline (up to
 * 325 bytes) a flush's few thousand entries spread over megabytes and each
 * increment missed the cache. */
struct counter_entry {
    uint64_t count;
    uint64_t hash;
    const uint8_t *key; /* klen bytes in the batch's key arena */
    uint16_t klen;
};
typedef struct counter_entry counter_entry_t;

/* One link in one hour: the facets with a handful of values (total, device,
 * kind) and the running minute are counted here, so a click costs one probe
 * for them instead of one per facet. */
typedef struct link_counts {
    uint64_t hash;
    const uint8_t *prefix; /* hour + code length + code, plen bytes in the arena */
    uint8_t plen;
    uint8_t minute; /* the minute minute_count counts */
    uint32_t minute_count;
    uint32_t total;
    uint32_t device[DEVICES];
    uint32_t kind[KINDS];
    uint32_t direct; /* clicks without a referrer (STORAGE_REFERRER_DIRECT) */
} link_counts_t;

/* A link's clicks from one country: the key is the link's number in the
 * batch and the country's (up to two) letters, so a click's country costs a
 * probe on an integer, with no key to build or compare. */
typedef struct country_count {
    uint64_t key; /* link << 24 | length << 16 | letters */
    uint64_t count;
} country_count_t;

/* An entry to sort, with the first 16 bytes of its key big-endian in two words,
 * so most comparisons settle without following the pointer. */
typedef struct counter_order {
    uint64_t k0, k1;
    counter_entry_t *c;
} counter_order_t;

/* Counter increments gathered in memory, in two open-addressing tables of
 * entry numbers: links (per hour and code) and keys (per hour, code, facet and
 * value: countries, referrers, minutes). Sealing folds the links into the
 * keyed table and sorts it for writing. Nothing is ever taken back out: when
 * a group does not commit, the writer gathers everything again from the
 * engagement log (storage__counters_restore). */
/* An open-addressing index of entry numbers (+ 1; 0 is an empty slot) over
 * an array of entries that carry their own hashes. It starts small and
 * doubles at half full, within the slots allocated for the largest batch. */
typedef struct slot_index {
    uint32_t *slots;
    size_t mask;     /* of the slots in use */
    size_t mask_max; /* of the slots allocated */
} slot_index_t;

struct counter_batch {
    size_t n, cap;
    slot_index_t index; /* of entries */
    counter_entry_t *entries;
    size_t nlinks, links_cap;
    slot_index_t links_index; /* of links */
    link_counts_t *links;
    size_t ncountries;
    slot_index_t countries_index; /* of countries, per link */
    country_count_t *countries;   /* links_cap of them at most: one per click */
    uint8_t *keys;                /* the keys and link prefixes, back to back */
    size_t keys_len, keys_cap;
    counter_order_t *order;     /* entries sorted by key, for the writes */
    counter_order_t *order_tmp; /* the radix sort's other buffer */
    size_t nkeys;               /* of order, once sealed: one per distinct key */
    uint64_t run;               /* written as this run; 0: added into the hours' counters */
};

#define ENGAGEMENT_FIXED (1 + 16 + 8 + 3 + 2 + STORAGE_GUID_LEN + 1 + 1 + 2 + 4)
#define ENGAGEMENT_MAX                                                                             \
    (ENGAGEMENT_FIXED + STORAGE_CODE_MAX + STORAGE_REFERRER_MAX + STORAGE_QUERY_MAX +              \
     STORAGE_URL_MAX)

/* The tables start this small and double at half full: a batch of a thousand
 * links' clicks then probes a table that fits in the CPU's cache, not one
 * sized for the largest batch (megabytes, a cache miss per probe). */
#define TABLE_SLOTS_MIN ((size_t)4096)

static size_t table_slots(size_t cap);

/* A batch's tables are sized for its worst case (every key new and as long as
 * a key can be), hundreds of megabytes of which a workload touches a few. They
 * are mapped without reserving swap for them, so that with the kernel's
 * default overcommit policy that address space costs nothing until it is
 * used, however little memory the machine has. Fresh mappings read as zeros. */
static void *reserve_zeroed(size_t n, size_t size)
{
    void *p = mmap(NULL, n * size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    if (p == MAP_FAILED) {
        fprintf(stderr, "fatal: cannot map %zu bytes for counters: %s\n", n * size,
                strerror(errno));
        abort();
    }
    return p;
}

static void index_init(slot_index_t *ix, size_t cap)
{
    ix->mask_max = table_slots(cap) - 1;
    ix->mask = TABLE_SLOTS_MIN - 1 < ix->mask_max ? TABLE_SLOTS_MIN - 1 : ix->mask_max;
    ix->slots = reserve_zeroed(ix->mask_max + 1, sizeof(*ix->slots));
}

static void index_reset(slot_index_t *ix, size_t n)
{
    if (n > 0)
        memset(ix->slots, 0, (ix->mask + 1) * sizeof(*ix->slots));
    if (ix->mask > TABLE_SLOTS_MIN - 1)
        ix->mask = TABLE_SLOTS_MIN - 1;
}

/* The slot of the entry with hash h that same(ctx, entry number) accepts, or
 * the empty slot where it belongs; the index first doubles when its n
 * entries fill half of it, putting each back by hash_of(ctx, entry number). */
static uint32_t *index_slot(slot_index_t *ix, size_t n, uint64_t h,
                            bool (*same)(const void *ctx, size_t e),
                            uint64_t (*hash_of)(const void *ctx, size_t e), const void *ctx)
{
    if (n + 1 > (ix->mask + 1) / 2 && ix->mask < ix->mask_max) {
        ix->mask = ix->mask * 2 + 1;
        memset(ix->slots, 0, (ix->mask + 1) * sizeof(*ix->slots));
        for (size_t e = 0; e < n; e++) {
            size_t i = hash_of(ctx, e) & ix->mask;
            while (ix->slots[i] != 0)
                i = (i + 1) & ix->mask;
            ix->slots[i] = (uint32_t)(e + 1);
        }
    }
    for (size_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
        if (ix->slots[i] == 0 || same(ctx, ix->slots[i] - 1))
            return &ix->slots[i];
    }
}

static size_t table_slots(size_t cap)
{
    size_t slots = 1;

    while (slots < cap * 2)
        slots <<= 1;
    return slots;
}

counter_batch_t *storage__counters_new(size_t max_engagements)
{
    counter_batch_t *b = xcalloc(1, sizeof(*b));

    b->cap = max_engagements * KEYS_PER_ENGAGEMENT;
    index_init(&b->index, b->cap);
    b->entries = reserve_zeroed(b->cap, sizeof(*b->entries));
    b->links_cap = max_engagements;
    index_init(&b->links_index, b->links_cap);
    b->links = reserve_zeroed(b->links_cap, sizeof(*b->links));
    index_init(&b->countries_index, b->links_cap);
    b->countries = reserve_zeroed(b->links_cap, sizeof(*b->countries));
    b->keys_cap = b->cap * COUNTER_KEY_MAX + b->links_cap * PREFIX_MAX;
    b->keys = reserve_zeroed(b->keys_cap, 1);
    b->order = reserve_zeroed(b->cap, sizeof(*b->order));
    b->order_tmp = reserve_zeroed(b->cap, sizeof(*b->order_tmp));
    return b;
}

void storage__counters_free(counter_batch_t *b)
{
    if (b == NULL)
        return;
    munmap(b->index.slots, (b->index.mask_max + 1) * sizeof(*b->index.slots));
    munmap(b->entries, b->cap * sizeof(*b->entries));
    munmap(b->links_index.slots, (b->links_index.mask_max + 1) * sizeof(*b->links_index.slots));
    munmap(b->links, b->links_cap * sizeof(*b->links));
    munmap(b->countries_index.slots,
           (b->countries_index.mask_max + 1) * sizeof(*b->countries_index.slots));
    munmap(b->countries, b->links_cap * sizeof(*b->countries));
    munmap(b->keys, b->keys_cap);
    munmap(b->order, b->cap * sizeof(*b->order));
    munmap(b->order_tmp, b->cap * sizeof(*b->order_tmp));
    free(b);
}

void storage__counters_reset(counter_batch_t *b)
{
    index_reset(&b->index, b->n);
    index_reset(&b->links_index, b->nlinks);
    index_reset(&b->countries_index, b->ncountries);
    b->n = 0;
    b->nlinks = 0;
    b->ncountries = 0;
    b->keys_len = 0;
    b->nkeys = 0;
    b->run = 0;
}

const char *storage_device_name(uint8_t device)
{
    switch (device) {
    case STORAGE_DEVICE_DESKTOP:
        return "desktop";
    case STORAGE_DEVICE_MOBILE:
        return "mobile";
    case STORAGE_DEVICE_TABLET:
        return "tablet";
    case STORAGE_DEVICE_BOT:
        return "bot";
    default:
        return "other";
    }
}

const char *storage_kind_name(uint8_t kind)
{
    switch (kind) {
    case STORAGE_KIND_QR_SCAN:
        return "qr_scan";
    case STORAGE_KIND_BIO_CLICK:
        return "bio_click";
    default:
        return "click";
    }
}

/* ---- encoding ---- */

static size_t engagement_size(const storage_engagement_t *e)
{
    return ENGAGEMENT_FIXED + strlen(e->code) + strlen(e->referrer) + e->query.len +
           e->long_url.len;
}

static void engagement_encode(wbuf_t *w, const storage_engagement_t *e)
{
    uint8_t guid[STORAGE_GUID_LEN];
    size_t code_len = strlen(e->code), ref_len = strlen(e->referrer);

    guid_field(guid, e->group_guid);
    wb_u8(w, STORAGE_VERSION);
    wb_bytes(w, e->event_id, sizeof(e->event_id));
    wb_u64(w, (uint64_t)e->time_us);
    wb_u8(w, e->kind);
    wb_u8(w, e->device);
    wb_u8(w, e->bot ? 1 : 0);
    wb_bytes(w, e->country, 2);
    wb_bytes(w, guid, sizeof(guid));
    wb_u8(w, (uint8_t)code_len);
    wb_bytes(w, e->code, code_len);
    wb_u8(w, (uint8_t)ref_len);
    wb_bytes(w, e->referrer, ref_len);
    wb_u16(w, (uint16_t)e->query.len);
    wb_bytes(w, e->query.ptr, e->query.len);
    wb_u32(w, (uint32_t)e->long_url.len);
    wb_bytes(w, e->long_url.ptr, e->long_url.len);
}

static void copy_string(char *dst, size_t cap, const uint8_t *src, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

static int engagement_decode(const MDB_val *key, const MDB_val *val, storage_engagement_t *out)
{
    rbuf_t r = {val->mv_data, val->mv_size, false};
    const uint8_t *p;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (key->mv_size != 8 || rb_u8(&r) != STORAGE_VERSION)
        return storage__damaged("engagements");
    out->seq = get_be64(key->mv_data);
    if ((p = rb_bytes(&r, 16)) != NULL)
        memcpy(out->event_id, p, 16);
    out->time_us = (int64_t)rb_u64(&r);
    out->kind = rb_u8(&r);
    out->device = rb_u8(&r);
    out->bot = rb_u8(&r) != 0;
    if ((p = rb_bytes(&r, 2)) != NULL)
        copy_string(out->country, sizeof(out->country), p, strnlen((const char *)p, 2));
    if ((p = rb_bytes(&r, STORAGE_GUID_LEN)) != NULL)
        guid_string(out->group_guid, p);
    n = rb_u8(&r);
    if ((p = rb_bytes(&r, n)) != NULL)
        copy_string(out->code, sizeof(out->code), p, n);
    n = rb_u8(&r);
    if ((p = rb_bytes(&r, n)) != NULL)
        copy_string(out->referrer, sizeof(out->referrer), p, n);
    out->query.len = rb_u16(&r);
    out->query.ptr = (const char *)rb_bytes(&r, out->query.len);
    out->long_url.len = rb_u32(&r);
    out->long_url.ptr = (const char *)rb_bytes(&r, out->long_url.len);
    if (r.bad)
        return storage__damaged("engagements");
    return STORAGE_OK;
}

/* ---- writer side ---- */

/* Eight bytes at a time, each word mixed in with a multiply; the table only
 * needs a fair spread of short keys, not a cryptographic hash. */
static uint64_t key_hash(const uint8_t *p, size_t n)
{
    uint64_t h = n * UINT64_C(0x9E3779B97F4A7C15), word;

    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&word, p, 8);
        h = (h ^ word) * UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 32;
    }
    word = 0;
    memcpy(&word, p, n);
    h = (h ^ word) * UINT64_C(0xc4ceb9fe1a85ec53);
    return h ^ (h >> 29);
}

static uint64_t key_word(const uint8_t *key, size_t klen, size_t at)
{
    uint8_t b[8] = {0};

    if (at < klen)
        memcpy(b, key + at, klen - at < 8 ? klen - at : 8);
    return (uint64_t)get_be32(b) << 32 | get_be32(b + 4);
}

/* What an index probe looks for: a key (or link prefix) and its hash. */
typedef struct probe {
    const counter_batch_t *b;
    const uint8_t *key;
    size_t len;
    uint64_t hash;
} probe_t;

static bool same_entry(const void *ctx, size_t e)
{
    const probe_t *p = ctx;
    const counter_entry_t *c = &p->b->entries[e];
    return c->hash == p->hash && c->klen == p->len && memcmp(c->key, p->key, p->len) == 0;
}

static bool same_link(const void *ctx, size_t e)
{
    const probe_t *p = ctx;
    const link_counts_t *l = &p->b->links[e];
    return l->hash == p->hash && l->plen == p->len && memcmp(l->prefix, p->key, p->len) == 0;
}

static uint64_t entry_hash(const void *ctx, size_t e)
{
    return ((const probe_t *)ctx)->b->entries[e].hash;
}

static uint64_t link_hash(const void *ctx, size_t e)
{
    return ((const probe_t *)ctx)->b->links[e].hash;
}

static uint64_t country_hash(uint64_t key)
{
    key *= UINT64_C(0x9E3779B97F4A7C15);
    return key ^ (key >> 31);
}

static bool same_country(const void *ctx, size_t e)
{
    const probe_t *p = ctx;
    return p->b->countries[e].key == p->hash;
}

static uint64_t country_rehash(const void *ctx, size_t e)
{
    return country_hash(((const probe_t *)ctx)->b->countries[e].key);
}

/* Copies n bytes into the batch's arena. The tables hold at most their
 * capacity of keys, and the arena room for each at its longest. */
static const uint8_t *arena_copy(counter_batch_t *b, const uint8_t *p, size_t n)
{
    if (b->keys_len + n > b->keys_cap)
        abort();
    uint8_t *at = b->keys + b->keys_len;
    memcpy(at, p, n);
    b->keys_len += n;
    return at;
}

static void counter_add_n(counter_batch_t *b, const uint8_t *prefix, size_t plen, uint8_t facet,
                          const void *value, size_t vlen, uint64_t count)
{
    uint8_t key[COUNTER_KEY_MAX];
    size_t klen = plen + 1 + vlen;

    memcpy(key, prefix, plen);
    key[plen] = facet;
    if (vlen > 0)
        memcpy(key + plen + 1, value, vlen);
    probe_t want = {b, key, klen, key_hash(key, klen)};
    uint32_t *slot = index_slot(&b->index, b->n, want.hash, same_entry, entry_hash, &want);
    if (*slot != 0) {
        b->entries[*slot - 1].count += count;
        return;
    }
    /* The writer seals a batch before more engagements are pending than it
     * was made for, so the entries cannot run out. */
    if (b->n >= b->cap)
        abort();
    counter_entry_t *c = &b->entries[b->n];
    c->count = count;
    c->hash = want.hash;
    c->klen = (uint16_t)klen;
    c->key = arena_copy(b, key, klen);
    *slot = (uint32_t)++b->n;
}

static void counter_add_string(counter_batch_t *b, const uint8_t *prefix, size_t plen,
                               uint8_t facet, const char *value, uint64_t count)
{
    counter_add_n(b, prefix, plen, facet, value, strlen(value), count);
}

/* Adds an entry without looking for its key: sealing sums entries of one key
 * once they are sorted next to each other. Folding a link's counts needs no
 * probe of the index, which over hundreds of thousands of links missed the
 * cache twice per key. */
static void counter_append(counter_batch_t *b, const uint8_t *prefix, size_t plen, uint8_t facet,
                           const void *value, size_t vlen, uint64_t count)
{
    uint8_t *key;

    if (b->n >= b->cap || b->keys_len + plen + 1 + vlen > b->keys_cap)
        abort();
    key = b->keys + b->keys_len;
    memcpy(key, prefix, plen);
    key[plen] = facet;
    if (vlen > 0)
        memcpy(key + plen + 1, value, vlen);
    b->keys_len += plen + 1 + vlen;
    b->entries[b->n++] = (counter_entry_t){count, 0, key, (uint16_t)(plen + 1 + vlen)};
}

/* The link's counts for the hour the prefix names, made on first use. */
static link_counts_t *link_counts(counter_batch_t *b, const uint8_t *prefix, size_t plen)
{
    probe_t want = {b, prefix, plen, key_hash(prefix, plen)};
    uint32_t *slot = index_slot(&b->links_index, b->nlinks, want.hash, same_link, link_hash, &want);

    if (*slot != 0)
        return &b->links[*slot - 1];
    if (b->nlinks >= b->links_cap)
        abort();
    link_counts_t *l = &b->links[b->nlinks];
    memset(l, 0, sizeof(*l));
    l->hash = want.hash;
    l->plen = (uint8_t)plen;
    l->prefix = arena_copy(b, prefix, plen);
    *slot = (uint32_t)++b->nlinks;
    return l;
}

/* One more click of link l from country cc ("" when unknown). */
static void country_add(counter_batch_t *b, const link_counts_t *l, const char *cc)
{
    size_t len = strnlen(cc, 2);
    uint64_t key = (uint64_t)(l - b->links) << 24 | (uint64_t)len << 16 |
                   (uint64_t)(len > 0 ? (uint8_t)cc[0] : 0) << 8 | (len > 1 ? (uint8_t)cc[1] : 0);
    /* same_country compares the whole key, carried in the probe's hash field. */
    probe_t want = {b, NULL, 0, key};
    uint32_t *slot = index_slot(&b->countries_index, b->ncountries, country_hash(key), same_country,
                                country_rehash, &want);

    if (*slot != 0) {
        b->countries[*slot - 1].count++;
        return;
    }
    if (b->ncountries >= b->links_cap)
        abort();
    b->countries[b->ncountries] = (country_count_t){key, 1};
    *slot = (uint32_t)++b->ncountries;
}

static void counters_collect(counter_batch_t *b, const storage_engagement_t *e)
{
    int64_t t = e->time_us > 0 ? e->time_us : 0;
    uint32_t hour = (uint32_t)(t / INT64_C(3600000000));
    uint8_t minute = (uint8_t)(t / INT64_C(60000000) % 60);
    uint8_t prefix[PREFIX_MAX];
    size_t code_len = strlen(e->code);

    /* Bots are redirected and logged, but a crawler's preview is not a click. */
    if (e->bot)
        return;
    put_be32(prefix, hour);
    prefix[4] = (uint8_t)code_len;
    memcpy(prefix + 5, e->code, code_len);
    size_t plen = 5 + code_len;

    link_counts_t *l = link_counts(b, prefix, plen);
    if (l->minute_count > 0 && l->minute != minute) {
        /* Clicks of one link in one flush are nearly always in one minute;
         * when the minute moves on, the last one's count is set aside. */
        counter_add_n(b, prefix, plen, STORAGE_FACET_MINUTE, &l->minute, 1, l->minute_count);
        l->minute_count = 0;
    }
    l->minute = minute;
    l->minute_count++;
    l->total++;
    /* Unknown values count under the name the readers get for them: "other"
     * for a device, "click" for a kind. */
    l->device[e->device < DEVICES ? e->device : STORAGE_DEVICE_OTHER]++;
    l->kind[e->kind < KINDS ? e->kind : STORAGE_KIND_CLICK]++;
    country_add(b, l, e->country);
    if (strcmp(e->referrer, STORAGE_REFERRER_DIRECT) == 0)
        l->direct++;
    else
        counter_add_string(b, prefix, plen, STORAGE_FACET_REFERRER, e->referrer, 1);
}

/* Turns the per-link counts into keyed increments, ready to sort. The index
 * is not used past this point: these entries are appended, and a link's
 * minute may repeat one set aside while gathering. */
static void counters_fold_links(storage_t *s, counter_batch_t *b)
{
    for (size_t i = 0; i < b->nlinks; i++) {
        link_counts_t *l = &b->links[i];
        if (l->total == 0)
            continue;
        counter_append(b, l->prefix, l->plen, STORAGE_FACET_TOTAL, "", 0, l->total);
        if (l->minute_count > 0)
            counter_append(b, l->prefix, l->plen, STORAGE_FACET_MINUTE, &l->minute, 1,
                           l->minute_count);
        for (uint8_t d = 0; d < DEVICES; d++) {
            if (l->device[d] > 0)
                counter_append(b, l->prefix, l->plen, STORAGE_FACET_DEVICE, storage_device_name(d),
                               strlen(storage_device_name(d)), l->device[d]);
        }
        for (uint8_t k = 0; k < KINDS; k++) {
            if (l->kind[k] > 0)
                counter_append(b, l->prefix, l->plen, STORAGE_FACET_KIND, storage_kind_name(k),
                               strlen(storage_kind_name(k)), l->kind[k]);
        }
        if (l->direct > 0)
            counter_append(b, l->prefix, l->plen, STORAGE_FACET_REFERRER, STORAGE_REFERRER_DIRECT,
                           strlen(STORAGE_REFERRER_DIRECT), l->direct);
        storage__writer_pace(s);
    }
    for (size_t i = 0; i < b->ncountries; i++) {
        const country_count_t *c = &b->countries[i];
        const link_counts_t *l = &b->links[c->key >> 24];
        uint8_t cc[2] = {(uint8_t)(c->key >> 8), (uint8_t)c->key};
        counter_append(b, l->prefix, l->plen, STORAGE_FACET_COUNTRY, cc, (c->key >> 16) & 0xff,
                       c->count);
        storage__writer_pace(s);
    }
}

int storage__engagement_store(storage_txn_t *txn, storage_engagement_t *e)
{
    storage_t *s = txn->s;
    uint8_t key[8];
    int rc;

    /* Clicks from the redirect path carry their link as served; anything else
     * takes it from the link now. */
    if (e->group_guid[0] == '\0' || e->long_url.len == 0) {
        storage_link_t link;
        if ((rc = storage_link_get(txn, e->code, strlen(e->code), &link)) != STORAGE_OK)
            return rc;
        memcpy(e->group_guid, link.group_guid, sizeof(e->group_guid));
        e->long_url = link.long_url;
    }

    /* Encode before the put: what mdb_get returned is only valid until the next
     * update in this transaction. */
    size_t size = engagement_size(e);
    if (s->scratch_record == NULL)
        s->scratch_record = xcalloc(1, ENGAGEMENT_MAX);
    wbuf_t w = {(uint8_t *)s->scratch_record, 0, ENGAGEMENT_MAX};
    engagement_encode(&w, e);

    put_be64(key, e->seq);
    MDB_val k = {sizeof(key), key}, v = {size, s->scratch_record};
    rc = mdb_put(txn->txn, s->dbi[DB_ENGAGEMENTS], &k, &v, MDB_APPEND);
    if (rc != 0)
        return storage__fail(rc, "append to", "engagements");
    counters_collect(s->counters, e);
    return STORAGE_OK;
}

/* memcmp order, shorter first on a tie: LMDB's order for these keys. */
static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int counter_cmp(const void *a, const void *b)
{
    const counter_order_t *p = a, *q = b;

    if (p->k0 != q->k0)
        return p->k0 < q->k0 ? -1 : 1;
    if (p->k1 != q->k1)
        return p->k1 < q->k1 ? -1 : 1;
    return key_cmp(p->c->key, p->c->klen, q->c->key, q->c->klen);
}

/* One descent per counter: the cursor finds the key and overwrites the value in
 * place, or inserts where it stopped. */
static int counter_add_into(MDB_cursor *cur, const uint8_t *key, size_t klen, uint64_t add)
{
    MDB_val k = {klen, (void *)key}, v;
    uint64_t count = 0;
    uint8_t buf[9];
    wbuf_t w = {buf, 0, sizeof(buf)};
    unsigned flags = 0;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);

    if (rc == 0) {
        rbuf_t r = {v.mv_data, v.mv_size, false};
        if (rb_u8(&r) != STORAGE_VERSION || r.left != 8) {
            return storage__damaged("counters");
        }
        count = rb_u64(&r);
        flags = MDB_CURRENT;
    } else if (rc != MDB_NOTFOUND) {
        return storage__fail(rc, "read", "counters");
    }
    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, count + add);
    v.mv_data = buf;
    v.mv_size = sizeof(buf);
    rc = mdb_cursor_put(cur, &k, &v, flags);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "update", "counters");
}

/* Sorts b->order by its two words, a byte at a time from the last (least
 * significant) one, skipping the bytes all keys share (the hour, most of the
 * code). qsort took 2.5 ms of the writer for a thousand links' 24,000 keys,
 * in one stretch a request could not interrupt. */
static void sort_by_words(storage_t *s, counter_batch_t *b)
{
    counter_order_t *from = b->order, *to = b->order_tmp;
    size_t count[256];

    for (unsigned byte = 0; byte < 16; byte++) {
        unsigned shift = 8 * (byte % 8);
        bool high = byte >= 8;
        memset(count, 0, sizeof(count));
        for (size_t i = 0; i < b->n; i++)
            count[((high ? from[i].k0 : from[i].k1) >> shift) & 0xff]++;
        if (count[((high ? from[0].k0 : from[0].k1) >> shift) & 0xff] == b->n)
            continue;
        for (size_t d = 0, at = 0; d < 256; d++) {
            size_t c = count[d];
            count[d] = at;
            at += c;
        }
        for (size_t i = 0; i < b->n; i++)
            to[count[((high ? from[i].k0 : from[i].k1) >> shift) & 0xff]++] = from[i];
        counter_order_t *t = from;
        from = to;
        to = t;
        storage__writer_pace(s);
    }
    if (from != b->order)
        memcpy(b->order, from, b->n * sizeof(*from));
}

size_t storage__counters_seal(storage_t *s, counter_batch_t *b)
{
    counters_fold_links(s, b);
    /* Zero padding sorts a key before its extensions, as memcmp order does. */
    for (size_t i = 0; i < b->n; i++) {
        counter_entry_t *c = &b->entries[i];
        b->order[i] =
            (counter_order_t){key_word(c->key, c->klen, 0), key_word(c->key, c->klen, 8), c};
    }
    if (b->n == 0)
        return 0;
    sort_by_words(s, b);
    /* Keys alike in their first 16 bytes (long referrers) are next to each
     * other now; those runs are sorted on the whole key. */
    for (size_t i = 0, j; i < b->n; i = j) {
        for (j = i + 1;
             j < b->n && b->order[j].k0 == b->order[i].k0 && b->order[j].k1 == b->order[i].k1; j++)
            ;
        if (j - i > 1)
            qsort(b->order + i, j - i, sizeof(*b->order), counter_cmp);
    }
    /* Entries of one key are next to each other: the first takes the sum. */
    size_t kept = 0;
    for (size_t i = 0; i < b->n; i++) {
        counter_order_t *o = &b->order[i];
        if (kept > 0 && counter_cmp(&b->order[kept - 1], o) == 0)
            b->order[kept - 1].c->count += o->c->count;
        else
            b->order[kept++] = *o;
        storage__writer_pace(s);
    }
    b->nkeys = kept;
    return kept;
}

size_t storage__counters_keys(const counter_batch_t *b)
{
    return b->nkeys;
}

void storage__counters_add(counter_batch_t *b, const storage_engagement_t *e)
{
    counters_collect(b, e);
}

const uint8_t *storage__counters_key(const counter_batch_t *b, size_t i, size_t *klen)
{
    *klen = b->order[i].c->klen;
    return b->order[i].c->key;
}

void storage__counters_plan(const storage_t *s, counter_batch_t *b, uint64_t first_seq)
{
    b->run = b->nlinks >= s->opts.counter_run_links ? first_seq : 0;
}

uint64_t storage__counters_run(const counter_batch_t *b)
{
    return b->run;
}

uint32_t storage__counters_first_hour(const counter_batch_t *b)
{
    return b->nkeys > 0 ? get_be32(b->order[0].c->key) : UINT32_MAX;
}

/* Puts one key of a run: hour, 0, run, then the rest of the hour's key. The
 * run's keys are new and each holds the whole count, so writing one again
 * (a slice redone after a crash) leaves the same value. */
static int run_put(MDB_cursor *cur, uint64_t run, const counter_entry_t *c)
{
    uint8_t key[RUN_KEY_MAX], buf[9];
    wbuf_t w = {buf, 0, sizeof(buf)};

    memcpy(key, c->key, 4);
    key[4] = 0;
    put_be64(key + 5, run);
    memcpy(key + 4 + RUN_TAG, c->key + 4, c->klen - 4u);
    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, c->count);
    MDB_val k = {c->klen + (size_t)RUN_TAG, key}, v = {sizeof(buf), buf};
    int rc = mdb_cursor_put(cur, &k, &v, 0);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "write", "counters");
}

int storage__counters_write(storage_txn_t *txn, const counter_batch_t *b, size_t *pos, size_t limit)
{
    MDB_cursor *cur;
    size_t end = b->nkeys - *pos > limit ? *pos + limit : b->nkeys;
    int ret = STORAGE_OK, rc;

    if (*pos >= b->nkeys)
        return STORAGE_OK;
    /* Writing in key order touches each page once and keeps the cursor close
     * to its next key. */
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_COUNTERS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "counters");
    for (size_t i = *pos; i < end && ret == STORAGE_OK; i++) {
        /* Sorted, the entries and their keys are visited out of the order
         * they were made in: over hundreds of thousands of links each was a
         * cache miss, most of the writer's time in a run. */
        if (i + 2 * COUNTER_PREFETCH < end)
            __builtin_prefetch(b->order[i + 2 * COUNTER_PREFETCH].c);
        if (i + COUNTER_PREFETCH < end)
            __builtin_prefetch(b->order[i + COUNTER_PREFETCH].c->key);
        const counter_entry_t *c = b->order[i].c;
        if (b->run != 0)
            ret = run_put(cur, b->run, c);
        else
            ret = counter_add_into(cur, c->key, c->klen, c->count);
        storage__writer_pace(txn->s);
    }
    mdb_cursor_close(cur);
    if (ret == STORAGE_OK)
        *pos = end;
    return ret;
}

/* ---- merging runs ----
 *
 * Each run of an hour costs its readers a seek or two, so once an hour is
 * over the writer folds its later runs into its first, a slice of keys per
 * group when it has time to spare: each key is added into the first run's and
 * deleted from its own in one transaction, so a reader, or a crash, sees
 * every click counted once whatever slices are done. The run a sealed batch
 * is being written to is left alone (its keys could be written again after a
 * crash, whole). */

/* The run of hour that k is a key of, or 0 when it is none. */
static uint64_t run_of(const MDB_val *k, uint32_t hour)
{
    const uint8_t *p = k->mv_data;

    if (k->mv_size < 4 + RUN_TAG + 2 || get_be32(p) != hour || p[4] != 0)
        return 0;
    return get_be64(p + 5);
}

/* Seeks the first key at or after hour + 0 + run. */
static int seek_run(MDB_cursor *cur, uint32_t hour, uint64_t run, MDB_val *k, MDB_val *v)
{
    uint8_t seek[4 + RUN_TAG];

    put_be32(seek, hour);
    seek[4] = 0;
    put_be64(seek + 5, run);
    *k = (MDB_val){sizeof(seek), seek};
    return mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
}

/* Finds, from *hour on and before before, an hour with two runs or more, and
 * its first two; looks at HOURS_PER_LOOK hours with counters at most. Leaves
 * *hour at the first hour not yet looked at, and returns STORAGE_NOTFOUND
 * when it found none. */
#define HOURS_PER_LOOK 1024
static int find_runs(MDB_cursor *cur, uint32_t *hour, uint32_t before, uint64_t *dst, uint64_t *src)
{
    MDB_val k, v;
    int rc;

    for (int looked = 0; *hour < before && looked < HOURS_PER_LOOK; looked++) {
        uint32_t h = *hour;
        rc = seek_run(cur, h, 0, &k, &v);
        if (rc == MDB_NOTFOUND) {
            *hour = before;
            break;
        }
        if (rc != 0)
            return storage__fail(rc, "scan", "counters");
        if (k.mv_size < 4)
            return storage__damaged("counters");
        if (get_be32(k.mv_data) != h) {
            *hour = get_be32(k.mv_data); /* no key at all in the hours between */
            continue;
        }
        uint64_t first = run_of(&k, h), second = 0;
        if (first != 0 && first != UINT64_MAX) {
            rc = seek_run(cur, h, first + 1, &k, &v);
            if (rc != 0 && rc != MDB_NOTFOUND)
                return storage__fail(rc, "scan", "counters");
            second = rc == 0 ? run_of(&k, h) : 0;
        }
        if (second != 0) {
            *dst = first;
            *src = second;
            return STORAGE_OK;
        }
        *hour = h + 1;
    }
    return STORAGE_NOTFOUND;
}

int storage__counters_merge(storage_txn_t *txn, uint32_t *hour, uint32_t before, uint64_t busy,
                            size_t limit, size_t *moved)
{
    MDB_cursor *src_cur = NULL, *dst_cur = NULL;
    uint8_t key[RUN_KEY_MAX];
    uint64_t dst = 0, src = 0;
    MDB_val k, v;
    int ret, rc;

    *moved = 0;
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_COUNTERS], &src_cur)) != 0)
        return storage__fail(rc, "open a cursor on", "counters");
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_COUNTERS], &dst_cur)) != 0) {
        mdb_cursor_close(src_cur);
        return storage__fail(rc, "open a cursor on", "counters");
    }
    ret = find_runs(src_cur, hour, before, &dst, &src);
    while (ret == STORAGE_OK && *moved < limit) {
        /* The hour waits (and *hour with it) until that batch is written. */
        if (dst == busy || src == busy)
            break;
        rc = seek_run(src_cur, *hour, src, &k, &v);
        if (rc == MDB_NOTFOUND || (rc == 0 && run_of(&k, *hour) != src)) {
            /* src is all in dst now: on to the next pair. */
            ret = find_runs(src_cur, hour, before, &dst, &src);
            continue;
        }
        if (rc != 0) {
            ret = storage__fail(rc, "scan", "counters");
            goto out;
        }
        rbuf_t r = {v.mv_data, v.mv_size, false};
        if (k.mv_size > sizeof(key) || rb_u8(&r) != STORAGE_VERSION || r.left != 8) {
            ret = storage__damaged("counters");
            goto out;
        }
        uint64_t count = rb_u64(&r);
        size_t klen = k.mv_size;
        memcpy(key, k.mv_data, klen);
        if ((rc = mdb_cursor_del(src_cur, 0)) != 0) {
            ret = storage__fail(rc, "delete from", "counters");
            goto out;
        }
        put_be64(key + 5, dst);
        if ((ret = counter_add_into(dst_cur, key, klen, count)) != STORAGE_OK)
            goto out;
        ++*moved;
        storage__writer_pace(txn->s);
    }
    if (ret == STORAGE_NOTFOUND)
        ret = STORAGE_OK;
out:
    mdb_cursor_close(dst_cur);
    mdb_cursor_close(src_cur);
    return ret;
}

/* ---- the counted mark ----
 *
 * meta "storage.counters_seq" = version + seq: the counters hold every
 * engagement up to seq. While a sealed batch is written a slice per group
 * commit, meta "storage.counters_progress" = version + from (u64) + to (u64)
 * + the last key written: of the engagements in (from, to], the counters hold
 * the increments of every key up to that one. from is always the mark. */

static int put_meta(storage_txn_t *txn, const char *name, const void *val, size_t len,
                    const char *what)
{
    MDB_val k = {strlen(name), (void *)name}, v = {len, (void *)val};
    int rc = mdb_put(txn->txn, txn->s->dbi[DB_META], &k, &v, 0);

    return rc == 0 ? STORAGE_OK : storage__fail(rc, what, "meta");
}

static int write_counters_seq(storage_txn_t *txn, uint64_t seq)
{
    uint8_t val[9];
    wbuf_t w = {val, 0, sizeof(val)};

    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, seq);
    return put_meta(txn, META_COUNTERS_SEQ, val, sizeof(val), "record the counted sequence in");
}

static int delete_progress(storage_txn_t *txn)
{
    MDB_val k = {strlen(META_COUNTERS_PROGRESS), (void *)META_COUNTERS_PROGRESS};
    int rc = mdb_del(txn->txn, txn->s->dbi[DB_META], &k, NULL);

    if (rc != 0 && rc != MDB_NOTFOUND)
        return storage__fail(rc, "clear the counters' progress in", "meta");
    return STORAGE_OK;
}

int storage__counters_progress(storage_txn_t *txn, uint64_t from, uint64_t to,
                               const counter_batch_t *b, size_t pos)
{
    if (pos >= b->nkeys) {
        int ret = write_counters_seq(txn, to);
        return ret == STORAGE_OK ? delete_progress(txn) : ret;
    }
    if (pos == 0)
        return STORAGE_OK; /* nothing of it written yet: the mark says it all */
    uint8_t val[1 + 8 + 8 + 2 + COUNTER_KEY_MAX];
    wbuf_t w = {val, 0, sizeof(val)};
    const counter_entry_t *c = b->order[pos - 1].c;

    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, from);
    wb_u64(&w, to);
    wb_u16(&w, c->klen);
    wb_bytes(&w, c->key, c->klen);
    return put_meta(txn, META_COUNTERS_PROGRESS, val, w.len, "record the counters' progress in");
}

int storage__counters_apply(storage_txn_t *txn, uint64_t last_seq)
{
    counter_batch_t *b = txn->s->counters;
    size_t pos = 0;
    int ret;

    storage__counters_seal(txn->s, b);
    if ((ret = storage__counters_write(txn, b, &pos, SIZE_MAX)) != STORAGE_OK)
        return ret;
    return write_counters_seq(txn, last_seq);
}

/* Finds meta's value under name and checks its version byte: STORAGE_NOTFOUND
 * when absent; *r then reads what follows the version. */
static int get_meta(storage_txn_t *txn, const char *name, rbuf_t *r)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn->txn, txn->s->dbi[DB_META], &k, &v);

    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", "meta");
    *r = (rbuf_t){v.mv_data, v.mv_size, false};
    return rb_u8(r) == STORAGE_VERSION ? STORAGE_OK : storage__damaged("meta");
}

static int read_counters_seq(storage_txn_t *txn, uint64_t *seq)
{
    rbuf_t r;
    int ret = get_meta(txn, META_COUNTERS_SEQ, &r);

    if (ret != STORAGE_OK)
        return ret;
    if (r.left != 8)
        return storage__damaged("meta");
    *seq = rb_u64(&r);
    return STORAGE_OK;
}

typedef struct progress {
    uint64_t from, to;
    uint8_t key[COUNTER_KEY_MAX];
    size_t klen;
} progress_t;

static int read_progress(storage_txn_t *txn, progress_t *p)
{
    rbuf_t r;
    int ret = get_meta(txn, META_COUNTERS_PROGRESS, &r);

    if (ret != STORAGE_OK)
        return ret;
    p->from = rb_u64(&r);
    p->to = rb_u64(&r);
    p->klen = rb_u16(&r);
    const uint8_t *key = p->klen <= sizeof(p->key) ? rb_bytes(&r, p->klen) : NULL;
    if (r.bad || key == NULL || r.left != 0 || p->to <= p->from)
        return storage__damaged("meta");
    memcpy(p->key, key, p->klen);
    return STORAGE_OK;
}

/* Gathers the engagements in (after, last] into b. */
static int recount_into(storage_txn_t *txn, counter_batch_t *b, uint64_t after, uint64_t last)
{
    MDB_cursor *cur = NULL;
    uint8_t key[8];
    MDB_val k = {sizeof(key), key}, v;
    storage_engagement_t e;
    int ret = STORAGE_OK, rc;

    if (after >= last)
        return STORAGE_OK;
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_ENGAGEMENTS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "engagements");
    put_be64(key, after + 1);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if ((ret = engagement_decode(&k, &v, &e)) != STORAGE_OK)
            goto out;
        if (e.seq > last)
            break;
        counters_collect(b, &e);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = storage__fail(rc, "scan", "engagements");
out:
    mdb_cursor_close(cur);
    return ret;
}

/* Counts (after, last] into the counters a group's worth at a time, moving
 * the mark with each. Uses the gathering batch as scratch. */
static int recount_apply(storage_txn_t *txn, uint64_t after, uint64_t last, size_t group)
{
    counter_batch_t *b = txn->s->counters;
    int ret = STORAGE_OK;

    while (after < last && ret == STORAGE_OK) {
        uint64_t upto = last - after > group ? after + group : last;
        storage__counters_reset(b);
        ret = recount_into(txn, b, after, upto);
        if (ret == STORAGE_OK)
            ret = storage__counters_apply(txn, upto);
        after = upto;
    }
    storage__counters_reset(b);
    return ret;
}

int storage__counters_restore(storage_txn_t *txn, bool write_all, counters_state_t *st)
{
    storage_t *s = txn->s;
    uint64_t mark = 0, last = s->next_seq - 1, base;
    progress_t p;
    size_t cap = s->counters->links_cap, group = s->opts.batch_max;
    int ret = read_counters_seq(txn, &mark);

    memset(st, 0, sizeof(*st));
    storage__counters_reset(s->counters);
    storage__counters_reset(s->counters_out);
    /* A store written before counters were deferred has them all. */
    if (ret == STORAGE_NOTFOUND) {
        st->base = last;
        return write_counters_seq(txn, last);
    }
    if (ret != STORAGE_OK)
        return ret;
    base = mark;
    ret = read_progress(txn, &p);
    if (ret == STORAGE_OK && p.from == mark && p.to <= last) {
        /* A sealed batch was being written: gather it again and go on after
         * the last key written. */
        counter_batch_t *out = s->counters_out;
        if ((ret = recount_into(txn, out, p.from, p.to)) != STORAGE_OK)
            return ret;
        size_t n = storage__counters_seal(s, out), lo = 0, hi = n;
        storage__counters_plan(s, out, p.from + 1);
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            const counter_entry_t *c = out->order[mid].c;
            if (key_cmp(c->key, c->klen, p.key, p.klen) <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        st->out_busy = true;
        st->out_from = p.from;
        st->out_to = p.to;
        st->out_pos = lo;
        base = p.to;
    } else if (ret == STORAGE_OK || ret == STORAGE_NOTFOUND) {
        /* None, or one a later mark overtook: nothing of it is pending. */
        if ((ret = delete_progress(txn)) != STORAGE_OK)
            return ret;
    } else {
        return ret;
    }
    if (write_all || last - base > cap / 2) {
        /* At start, or more than the batch holds: write it all here. */
        if (st->out_busy) {
            ret = storage__counters_write(txn, s->counters_out, &st->out_pos, SIZE_MAX);
            if (ret == STORAGE_OK)
                ret = storage__counters_progress(txn, st->out_from, st->out_to, s->counters_out,
                                                 st->out_pos);
            storage__counters_reset(s->counters_out);
            st->out_busy = false;
            if (ret != STORAGE_OK)
                return ret;
        }
        st->base = last;
        return recount_apply(txn, base, last, group);
    }
    st->base = base;
    st->pending = (size_t)(last - base);
    return recount_into(txn, s->counters, base, last);
}

int storage__counters_recover(storage_t *s)
{
    storage_txn_t t = {NULL, s};
    int rc = mdb_txn_begin(s->env, NULL, 0, &t.txn), ret;

    if (rc != 0)
        return storage__fail(rc, "begin a write transaction on", "the environment");
    ret = storage__counters_restore(&t, true, &s->cs);
    if (ret != STORAGE_OK) {
        mdb_txn_abort(t.txn);
        return ret;
    }
    rc = mdb_txn_commit(t.txn);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "commit", "the recounted counters");
}

uint64_t storage_engagement_last_seq(storage_txn_t *txn)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t seq = 0;

    if (mdb_cursor_open(txn->txn, txn->s->dbi[DB_ENGAGEMENTS], &cur) != 0)
        return 0;
    if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
        seq = get_be64(k.mv_data);
    mdb_cursor_close(cur);
    return seq;
}

/* ---- readers ---- */

int storage_engagement_get(storage_txn_t *txn, uint64_t seq, storage_engagement_t *out)
{
    uint8_t key[8];
    MDB_val k = {sizeof(key), key}, v;
    int rc;

    put_be64(key, seq);
    rc = mdb_get(txn->txn, txn->s->dbi[DB_ENGAGEMENTS], &k, &v);
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", "engagements");
    return engagement_decode(&k, &v, out);
}

int storage_engagement_scan(storage_txn_t *txn, uint64_t after_seq,
                            int (*cb)(void *ctx, const storage_engagement_t *e), void *ctx)
{
    MDB_cursor *cur = NULL;
    uint8_t key[8];
    MDB_val k = {sizeof(key), key}, v;
    storage_engagement_t e;
    int ret = STORAGE_OK, rc;

    if (after_seq == UINT64_MAX)
        return STORAGE_OK;
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_ENGAGEMENTS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "engagements");
    put_be64(key, after_seq + 1);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if ((ret = engagement_decode(&k, &v, &e)) != STORAGE_OK)
            goto out;
        if ((ret = cb(ctx, &e)) != 0)
            goto out;
    }
    if (rc != MDB_NOTFOUND)
        ret = storage__fail(rc, "scan", "engagements");
out:
    mdb_cursor_close(cur);
    return ret;
}

/* Calls cb for each counter of one hour under the prefix the cursor stands on
 * (hour + code + facet, plen bytes); leaves the cursor on the first key past
 * them, and returns MDB_NOTFOUND at the end of the database. */
static int scan_prefix(MDB_cursor *cur, MDB_val *k, const uint8_t *seek, size_t plen, uint32_t hour,
                       int *ret,
                       int (*cb)(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count),
                       void *ctx)
{
    MDB_val v;
    int rc;

    k->mv_size = plen;
    k->mv_data = (void *)seek;
    for (rc = mdb_cursor_get(cur, k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, k, &v, MDB_NEXT)) {
        const uint8_t *kp = k->mv_data;
        if (k->mv_size < plen || memcmp(kp, seek, plen) != 0)
            return 0;

        rbuf_t r = {v.mv_data, v.mv_size, false};
        if (rb_u8(&r) != STORAGE_VERSION || r.left != 8) {
            *ret = storage__damaged("counters");
            return 0;
        }
        storage_bytes_t value = {(const char *)kp + plen, k->mv_size - plen};
        if ((*ret = cb(ctx, hour, value, rb_u64(&r))) != 0)
            return 0;
    }
    return rc;
}

/* Scans one hour's counters under tail (code length, code, facet): each run's
 * first, then the counters added into the hour. Sets *next to the next hour
 * that may hold a key, and returns MDB_NOTFOUND past the last key. */
static int scan_hour(MDB_cursor *cur, uint32_t hour, const uint8_t *tail, size_t tlen,
                     uint32_t *next, int *ret,
                     int (*cb)(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count),
                     void *ctx)
{
    uint8_t seek[4 + RUN_TAG + 1 + STORAGE_CODE_MAX + 1];
    MDB_val k;
    int rc;

    *next = hour + 1;
    put_be32(seek, hour);
    seek[4] = 0;
    memcpy(seek + 4 + RUN_TAG, tail, tlen);
    /* Runs have no number 0: the first seek lands on the hour's first key. */
    for (uint64_t run = 0;;) {
        put_be64(seek + 5, run);
        rc = scan_prefix(cur, &k, seek, 4 + RUN_TAG + tlen, hour, ret, cb, ctx);
        if (*ret != STORAGE_OK || rc != 0)
            return rc;
        const uint8_t *kp = k.mv_data;
        if (k.mv_size < 5)
            return *ret = storage__damaged("counters"), 0;
        if (get_be32(kp) != hour) {
            /* Past every key of the hour: nothing was added into it either. */
            *next = get_be32(kp);
            return 0;
        }
        if (kp[4] != 0)
            break;
        if (k.mv_size < 4 + RUN_TAG)
            return *ret = storage__damaged("counters"), 0;
        uint64_t landed = get_be64(kp + 5);
        run = landed > run ? landed : run + 1;
        if (run == 0)
            break;
    }
    memcpy(seek + 4, tail, tlen);
    rc = scan_prefix(cur, &k, seek, 4 + tlen, hour, ret, cb, ctx);
    if (*ret != STORAGE_OK || rc != 0)
        return rc;
    if (k.mv_size < 4)
        return *ret = storage__damaged("counters"), 0;
    if (get_be32(k.mv_data) > hour)
        *next = get_be32(k.mv_data);
    return 0;
}

int storage_counter_scan(storage_txn_t *txn, const char *code, size_t code_len,
                         storage_facet_t facet, uint32_t hour_from, uint32_t hour_to,
                         int (*cb)(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count),
                         void *ctx)
{
    MDB_cursor *cur = NULL;
    uint8_t tail[1 + STORAGE_CODE_MAX + 1];
    size_t tlen = 1 + code_len + 1;
    int ret = STORAGE_OK, rc;

    if (code_len == 0 || code_len > STORAGE_CODE_MAX)
        return STORAGE_INVALID;
    if (hour_from >= hour_to)
        return STORAGE_OK;
    tail[0] = (uint8_t)code_len;
    memcpy(tail + 1, code, code_len);
    tail[1 + code_len] = (uint8_t)facet;
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_COUNTERS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "counters");

    /* Where a seek lands past the hour, no key at all lies in the hours
     * between, so the next hour scanned is the one it landed in: hours
     * without clicks on any link cost nothing, and an all-time scan from hour
     * 0 begins at the first hour that has a counter. */
    for (uint32_t hour = hour_from, next; hour < hour_to; hour = next) {
        rc = scan_hour(cur, hour, tail, tlen, &next, &ret, cb, ctx);
        if (ret != STORAGE_OK || rc == MDB_NOTFOUND)
            break;
        if (rc != 0) {
            ret = storage__fail(rc, "scan", "counters");
            break;
        }
        if (next <= hour)
            break; /* the last hour there is */
    }
    mdb_cursor_close(cur);
    return ret;
}
