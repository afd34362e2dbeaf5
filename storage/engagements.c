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
 *
 * Counters trail the engagement log. Each click adds to an in-memory table
 * (one entry per key), and the writer writes the table out every so often in
 * the transaction of a group commit, with meta's "storage.counters_seq" set to
 * the last engagement counted. Writing them with every group rewrote the same
 * counter pages hundreds of times a second. After a crash the engagements past
 * the mark are counted again when the writer starts, so counters always end up
 * equal to what the log holds.
 *
 * TODO: retention (DESIGN.md §3) is not implemented: raw engagements and the
 * delivery log grow until a pruning job deletes old keys. The sequence survives
 * such pruning through the meta high-water mark.
 */
#include "storage_internal.h"

#include <stdlib.h>

#define COUNTER_KEY_MAX       (4 + 1 + STORAGE_CODE_MAX + 1 + STORAGE_REFERRER_MAX)
#define FACETS_PER_ENGAGEMENT 6

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

/* An entry to sort, with the first 16 bytes of its key big-endian in two words,
 * so most comparisons settle without following the pointer. */
typedef struct counter_order {
    uint64_t k0, k1;
    counter_entry_t *c;
} counter_order_t;

/* A group's counter increments, one entry per distinct key: an open-addressing
 * table of entry numbers over an array of entries, so a click adds to the
 * entries it shares with earlier clicks of the group instead of appending. */
struct counter_batch {
    size_t n, cap;
    size_t mask;
    uint32_t *table; /* entry number + 1; 0 is empty */
    counter_entry_t *entries;
    uint8_t *keys; /* the entries' keys, back to back */
    size_t keys_len;
    counter_order_t *order; /* entries sorted by key, for the writes */
    /* The entries the open group added to, so a group that does not commit
     * can take its clicks back out (an entry left at 0 is skipped). */
    uint32_t *undo;
    size_t undo_len, undo_cap;
};

#define ENGAGEMENT_FIXED (1 + 16 + 8 + 3 + 2 + STORAGE_GUID_LEN + 1 + 1 + 2 + 4)
#define ENGAGEMENT_MAX                                                                             \
    (ENGAGEMENT_FIXED + STORAGE_CODE_MAX + STORAGE_REFERRER_MAX + STORAGE_QUERY_MAX +              \
     STORAGE_URL_MAX)

counter_batch_t *storage__counters_new(size_t max_engagements, size_t per_group)
{
    counter_batch_t *b = xcalloc(1, sizeof(*b));
    size_t slots = 1;

    /* calloc'd arrays this size are fresh zero pages: only what a workload
     * touches becomes resident. */
    b->cap = max_engagements * FACETS_PER_ENGAGEMENT;
    b->undo_cap = per_group * FACETS_PER_ENGAGEMENT;
    b->undo = xcalloc(b->undo_cap, sizeof(*b->undo));
    while (slots < b->cap * 2)
        slots <<= 1;
    b->mask = slots - 1;
    b->table = xcalloc(slots, sizeof(*b->table));
    b->entries = xcalloc(b->cap, sizeof(*b->entries));
    b->keys = xcalloc(b->cap, COUNTER_KEY_MAX);
    b->order = xcalloc(b->cap, sizeof(*b->order));
    return b;
}

void storage__counters_free(counter_batch_t *b)
{
    if (b == NULL)
        return;
    free(b->table);
    free(b->entries);
    free(b->keys);
    free(b->order);
    free(b->undo);
    free(b);
}

void storage__counters_reset(storage_t *s)
{
    counter_batch_t *b = s->counters;

    if (b->n > 0)
        memset(b->table, 0, (b->mask + 1) * sizeof(*b->table));
    b->n = 0;
    b->keys_len = 0;
    b->undo_len = 0;
}

void storage__counters_group_begin(storage_t *s)
{
    s->counters->undo_len = 0;
}

void storage__counters_group_undo(storage_t *s)
{
    counter_batch_t *b = s->counters;

    for (size_t i = 0; i < b->undo_len; i++)
        b->entries[b->undo[i]].count--;
    b->undo_len = 0;
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

static void counter_add(counter_batch_t *b, const uint8_t *prefix, size_t plen, uint8_t facet,
                        const void *value, size_t vlen)
{
    uint8_t key[COUNTER_KEY_MAX];
    size_t klen = plen + 1 + vlen;

    memcpy(key, prefix, plen);
    key[plen] = facet;
    if (vlen > 0)
        memcpy(key + plen + 1, value, vlen);
    uint64_t h = key_hash(key, klen);
    for (size_t i = h & b->mask;; i = (i + 1) & b->mask) {
        uint32_t at = b->table[i];
        if (at == 0) {
            /* The table holds FACETS_PER_ENGAGEMENT entries per engagement, and
             * the writer never stores more than batch_max in a group. */
            if (b->n >= b->cap || b->undo_len >= b->undo_cap)
                abort();
            counter_entry_t *c = &b->entries[b->n];
            c->count = 1;
            c->hash = h;
            c->klen = (uint16_t)klen;
            c->key = b->keys + b->keys_len;
            memcpy(b->keys + b->keys_len, key, klen);
            b->keys_len += klen;
            b->undo[b->undo_len++] = (uint32_t)b->n;
            b->table[i] = (uint32_t)++b->n;
            return;
        }
        counter_entry_t *c = &b->entries[at - 1];
        if (c->hash == h && c->klen == klen && memcmp(c->key, key, klen) == 0) {
            if (b->undo_len >= b->undo_cap)
                abort();
            b->undo[b->undo_len++] = at - 1;
            c->count++;
            return;
        }
    }
}

static void counter_add_string(counter_batch_t *b, const uint8_t *prefix, size_t plen,
                               uint8_t facet, const char *value)
{
    counter_add(b, prefix, plen, facet, value, strlen(value));
}

static void counters_collect(storage_t *s, const storage_engagement_t *e)
{
    int64_t t = e->time_us > 0 ? e->time_us : 0;
    uint32_t hour = (uint32_t)(t / INT64_C(3600000000));
    uint8_t minute = (uint8_t)(t / INT64_C(60000000) % 60);
    uint8_t prefix[4 + 1 + STORAGE_CODE_MAX];
    size_t code_len = strlen(e->code);

    /* Bots are redirected and logged, but a crawler's preview is not a click. */
    if (e->bot)
        return;
    put_be32(prefix, hour);
    prefix[4] = (uint8_t)code_len;
    memcpy(prefix + 5, e->code, code_len);
    size_t plen = 5 + code_len;
    counter_add(s->counters, prefix, plen, STORAGE_FACET_TOTAL, "", 0);
    counter_add(s->counters, prefix, plen, STORAGE_FACET_MINUTE, &minute, 1);
    counter_add_string(s->counters, prefix, plen, STORAGE_FACET_COUNTRY, e->country);
    counter_add_string(s->counters, prefix, plen, STORAGE_FACET_REFERRER, e->referrer);
    counter_add_string(s->counters, prefix, plen, STORAGE_FACET_DEVICE,
                       storage_device_name(e->device));
    counter_add_string(s->counters, prefix, plen, STORAGE_FACET_KIND, storage_kind_name(e->kind));
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
    counters_collect(s, e);
    return STORAGE_OK;
}

static int counter_cmp(const void *a, const void *b)
{
    const counter_order_t *p = a, *q = b;

    if (p->k0 != q->k0)
        return p->k0 < q->k0 ? -1 : 1;
    if (p->k1 != q->k1)
        return p->k1 < q->k1 ? -1 : 1;
    const counter_entry_t *x = p->c, *y = q->c;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);

    if (c != 0)
        return c;
    return (int)x->klen - (int)y->klen;
}

/* One descent per counter: the cursor finds the key and overwrites the value in
 * place, or inserts where it stopped. */
static int counter_increment(MDB_cursor *cur, const counter_entry_t *c)
{
    MDB_val k = {c->klen, (void *)c->key}, v;
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
    wb_u64(&w, count + c->count);
    v.mv_data = buf;
    v.mv_size = sizeof(buf);
    rc = mdb_cursor_put(cur, &k, &v, flags);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "update", "counters");
}

static int write_counters_seq(storage_txn_t *txn, uint64_t seq)
{
    uint8_t val[9];
    wbuf_t w = {val, 0, sizeof(val)};
    MDB_val k = {strlen(META_COUNTERS_SEQ), (void *)META_COUNTERS_SEQ}, v = {sizeof(val), val};

    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, seq);
    int rc = mdb_put(txn->txn, txn->s->dbi[DB_META], &k, &v, 0);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "record the counted sequence in", "meta");
}

int storage__counters_apply(storage_txn_t *txn, uint64_t last_seq)
{
    counter_batch_t *b = txn->s->counters;
    MDB_cursor *cur;
    size_t n = 0;
    int ret = STORAGE_OK, rc;

    if (write_counters_seq(txn, last_seq) != STORAGE_OK)
        return STORAGE_ERROR;
    /* Writing in key order touches each page once and keeps the cursor close
     * to its next key. */
    /* Zero padding sorts a key before its extensions, as memcmp order does. */
    for (size_t i = 0; i < b->n; i++) {
        counter_entry_t *c = &b->entries[i];
        if (c->count == 0)
            continue; /* added by a group that then failed */
        b->order[n++] =
            (counter_order_t){key_word(c->key, c->klen, 0), key_word(c->key, c->klen, 8), c};
    }
    if (n == 0)
        return STORAGE_OK;
    qsort(b->order, n, sizeof(*b->order), counter_cmp);
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_COUNTERS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "counters");
    for (size_t i = 0; i < n && ret == STORAGE_OK; i++)
        ret = counter_increment(cur, b->order[i].c);
    mdb_cursor_close(cur);
    return ret;
}

static int read_counters_seq(storage_txn_t *txn, uint64_t *seq)
{
    MDB_val k = {strlen(META_COUNTERS_SEQ), (void *)META_COUNTERS_SEQ}, v;
    int rc = mdb_get(txn->txn, txn->s->dbi[DB_META], &k, &v);

    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", "meta");
    rbuf_t r = {v.mv_data, v.mv_size, false};
    if (rb_u8(&r) != STORAGE_VERSION || r.left != 8)
        return storage__damaged("meta");
    *seq = rb_u64(&r);
    return STORAGE_OK;
}

/* Counts the engagements after the counted mark again, a group's worth at a
 * time, all in txn. */
static int recount(storage_txn_t *txn, uint64_t after, uint64_t last, size_t group)
{
    MDB_cursor *cur = NULL;
    uint8_t key[8];
    MDB_val k = {sizeof(key), key}, v;
    storage_engagement_t e;
    size_t in_group = 0;
    int ret = STORAGE_OK, rc;

    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_ENGAGEMENTS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "engagements");
    put_be64(key, after + 1);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if ((ret = engagement_decode(&k, &v, &e)) != STORAGE_OK)
            goto out;
        if (e.seq > last)
            break;
        counters_collect(txn->s, &e);
        /* The cursor's pages stay valid across the counter writes: they are
         * in another database, and engagements are not written here. */
        if (++in_group == group) {
            storage__counters_group_begin(txn->s);
            if ((ret = storage__counters_apply(txn, e.seq)) != STORAGE_OK)
                goto out;
            storage__counters_reset(txn->s);
            in_group = 0;
        }
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        ret = storage__fail(rc, "scan", "engagements");
        goto out;
    }
    storage__counters_group_begin(txn->s);
    ret = storage__counters_apply(txn, last);
out:
    storage__counters_reset(txn->s);
    mdb_cursor_close(cur);
    return ret;
}

int storage__counters_recover(storage_t *s, size_t group)
{
    storage_txn_t t = {NULL, s};
    uint64_t counted = 0, last = s->next_seq - 1;
    int rc = mdb_txn_begin(s->env, NULL, 0, &t.txn), ret;

    if (rc != 0)
        return storage__fail(rc, "begin a write transaction on", "the environment");
    ret = read_counters_seq(&t, &counted);
    /* A store written before counters were deferred has them all. */
    if (ret == STORAGE_NOTFOUND)
        ret = write_counters_seq(&t, last);
    else if (ret == STORAGE_OK && counted < last)
        ret = recount(&t, counted, last, group);
    if (ret != STORAGE_OK) {
        mdb_txn_abort(t.txn);
        return ret;
    }
    rc = mdb_txn_commit(t.txn);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "commit", "the recounted counters");
}

uint64_t storage__last_engagement_seq(storage_txn_t *txn)
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

int storage_counter_scan(storage_txn_t *txn, const char *code, size_t code_len,
                         storage_facet_t facet, uint32_t hour_from, uint32_t hour_to,
                         int (*cb)(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count),
                         void *ctx)
{
    MDB_cursor *cur = NULL;
    uint8_t seek[4 + 1 + STORAGE_CODE_MAX + 1];
    size_t plen = 4 + 1 + code_len + 1;
    MDB_val k;
    int ret = STORAGE_OK, rc;

    if (code_len == 0 || code_len > STORAGE_CODE_MAX)
        return STORAGE_INVALID;
    if (hour_from >= hour_to)
        return STORAGE_OK;
    seek[4] = (uint8_t)code_len;
    memcpy(seek + 5, code, code_len);
    seek[5 + code_len] = (uint8_t)facet;
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_COUNTERS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "counters");

    /* One seek per hour. Where the seek lands past the hour, no key at all
     * lies in the hours between, so the next seek starts at the hour it landed
     * in: hours without clicks on any link cost nothing, and an all-time scan
     * from hour 0 begins at the first hour that has a counter. */
    for (uint32_t hour = hour_from; hour < hour_to;) {
        put_be32(seek, hour);
        rc = scan_prefix(cur, &k, seek, plen, hour, &ret, cb, ctx);
        if (ret != STORAGE_OK || rc == MDB_NOTFOUND)
            goto out;
        if (rc != 0) {
            ret = storage__fail(rc, "scan", "counters");
            goto out;
        }
        if (k.mv_size < 4) {
            ret = storage__damaged("counters");
            goto out;
        }
        uint32_t landed = get_be32(k.mv_data);
        hour = landed > hour ? landed : hour + 1;
    }
out:
    mdb_cursor_close(cur);
    return ret;
}
