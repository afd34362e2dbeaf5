/*
 * storage/engagements.c: the engagement log and the click counters.
 *
 * engagements: key = seq (u64 BE), appended in order by the writer.
 *   value = version, event id[16], time (i64), kind, device, bot, country[2],
 *           group guid[11], code (u8 length + bytes), referrer (u8 + bytes),
 *           query (u16 + bytes), long URL (u32 + bytes); integers little-endian.
 * counters: key = code length (u8) + code + hour (u32 BE) + facet (u8) + value.
 *   The code is length-prefixed so that the keys of "ab" can never be read as
 *   those of "abc". value = version + count (u64).
 *
 * TODO: retention (DESIGN.md §3) is not implemented: raw engagements and the
 * delivery log grow until a pruning job deletes old keys. The sequence survives
 * such pruning through the meta high-water mark.
 */
#include "storage_internal.h"

#include <stdlib.h>

#define COUNTER_KEY_MAX       (1 + STORAGE_CODE_MAX + 4 + 1 + STORAGE_REFERRER_MAX)
#define FACETS_PER_ENGAGEMENT 5

struct counter_entry {
    uint64_t count;
    uint16_t klen;
    uint8_t key[COUNTER_KEY_MAX];
};

#define ENGAGEMENT_FIXED (1 + 16 + 8 + 3 + 2 + STORAGE_GUID_LEN + 1 + 1 + 2 + 4)
#define ENGAGEMENT_MAX                                                                             \
    (ENGAGEMENT_FIXED + STORAGE_CODE_MAX + STORAGE_REFERRER_MAX + STORAGE_QUERY_MAX +              \
     STORAGE_URL_MAX)

size_t storage__counter_entry_size(void)
{
    return sizeof(counter_entry_t);
}

static const char *device_name(uint8_t device)
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

static const char *kind_name(uint8_t kind)
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

static void counter_add(storage_t *s, size_t *n, const char *code, uint32_t hour, uint8_t facet,
                        const char *value)
{
    counter_entry_t *c;
    size_t code_len = strlen(code), vlen = strlen(value);

    /* The array holds FACETS_PER_ENGAGEMENT entries per batch slot, and the
     * writer never stores more than batch_max engagements per batch. */
    if (*n >= s->counters_cap)
        abort();
    c = &s->counters[(*n)++];
    c->count = 1;
    c->key[0] = (uint8_t)code_len;
    memcpy(c->key + 1, code, code_len);
    put_be32(c->key + 1 + code_len, hour);
    c->key[1 + code_len + 4] = facet;
    memcpy(c->key + 1 + code_len + 5, value, vlen);
    c->klen = (uint16_t)(1 + code_len + 5 + vlen);
}

static void counters_collect(storage_t *s, const storage_engagement_t *e, size_t *n)
{
    uint32_t hour = (uint32_t)((e->time_us > 0 ? e->time_us : 0) / INT64_C(3600000000));

    /* Bots are redirected and logged, but a crawler's preview is not a click. */
    if (e->bot)
        return;
    counter_add(s, n, e->code, hour, STORAGE_FACET_TOTAL, "");
    counter_add(s, n, e->code, hour, STORAGE_FACET_COUNTRY, e->country);
    counter_add(s, n, e->code, hour, STORAGE_FACET_REFERRER, e->referrer);
    counter_add(s, n, e->code, hour, STORAGE_FACET_DEVICE, device_name(e->device));
    counter_add(s, n, e->code, hour, STORAGE_FACET_KIND, kind_name(e->kind));
}

int storage__engagement_store(storage_txn_t *txn, storage_engagement_t *e, size_t *ncounters)
{
    storage_t *s = txn->s;
    storage_link_t link;
    uint8_t key[8];
    int rc = storage_link_get(txn, e->code, strlen(e->code), &link);

    if (rc != STORAGE_OK)
        return rc;
    memcpy(e->group_guid, link.group_guid, sizeof(e->group_guid));
    e->long_url = link.long_url;

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
    counters_collect(s, e, ncounters);
    return STORAGE_OK;
}

static int counter_cmp(const void *a, const void *b)
{
    const counter_entry_t *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);

    if (c != 0)
        return c;
    return (int)x->klen - (int)y->klen;
}

static int counter_increment(storage_txn_t *txn, const counter_entry_t *c)
{
    MDB_dbi dbi = txn->s->dbi[DB_COUNTERS];
    MDB_val k = {c->klen, (void *)c->key}, v;
    uint64_t count = 0;
    uint8_t buf[9];
    wbuf_t w = {buf, 0, sizeof(buf)};
    int rc = mdb_get(txn->txn, dbi, &k, &v);

    if (rc == 0) {
        rbuf_t r = {v.mv_data, v.mv_size, false};
        if (rb_u8(&r) != STORAGE_VERSION || r.left != 8) {
            return storage__damaged("counters");
        }
        count = rb_u64(&r);
    } else if (rc != MDB_NOTFOUND) {
        return storage__fail(rc, "read", "counters");
    }
    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, count + c->count);
    v.mv_data = buf;
    v.mv_size = sizeof(buf);
    rc = mdb_put(txn->txn, dbi, &k, &v, 0);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "update", "counters");
}

int storage__counters_apply(storage_txn_t *txn, size_t n)
{
    counter_entry_t *c = txn->s->counters;
    size_t out = 0;

    if (n == 0)
        return STORAGE_OK;
    /* Sorting merges the batch's duplicates into one increment each and makes
     * the puts run in key order, which touches each page once. */
    qsort(c, n, sizeof(*c), counter_cmp);
    for (size_t i = 1; i < n; i++) {
        if (counter_cmp(&c[out], &c[i]) == 0)
            c[out].count += c[i].count;
        else
            c[++out] = c[i];
    }
    for (size_t i = 0; i <= out; i++) {
        if (counter_increment(txn, &c[i]) != STORAGE_OK)
            return STORAGE_ERROR;
    }
    return STORAGE_OK;
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

int storage_counter_scan(storage_txn_t *txn, const char *code, size_t code_len,
                         storage_facet_t facet, uint32_t hour_from, uint32_t hour_to,
                         int (*cb)(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count),
                         void *ctx)
{
    MDB_cursor *cur = NULL;
    uint8_t start[1 + STORAGE_CODE_MAX + 4];
    size_t prefix = 1 + code_len;
    MDB_val k = {prefix + 4, start}, v;
    int ret = STORAGE_OK, rc;

    if (code_len == 0 || code_len > STORAGE_CODE_MAX)
        return STORAGE_INVALID;
    if (hour_from >= hour_to)
        return STORAGE_OK;
    start[0] = (uint8_t)code_len;
    memcpy(start + 1, code, code_len);
    put_be32(start + prefix, hour_from);
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_COUNTERS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "counters");

    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *kp = k.mv_data;
        if (k.mv_size < prefix + 5 || memcmp(kp, start, prefix) != 0)
            break;
        uint32_t hour = get_be32(kp + prefix);
        if (hour >= hour_to)
            break;
        if (kp[prefix + 4] != (uint8_t)facet)
            continue;

        rbuf_t r = {v.mv_data, v.mv_size, false};
        if (rb_u8(&r) != STORAGE_VERSION || r.left != 8) {
            ret = storage__damaged("counters");
            goto out;
        }
        storage_bytes_t value = {(const char *)kp + prefix + 5, k.mv_size - prefix - 5};
        if ((ret = cb(ctx, hour, value, rb_u64(&r))) != 0)
            goto out;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = storage__fail(rc, "scan", "counters");
out:
    mdb_cursor_close(cur);
    return ret;
}
