/*
 * storage/deliveries.c: pending webhook deliveries and the attempt log.
 *
 * deliveries: key = due time (u64 BE) + id (u64 BE), so a forward walk is the
 *   order in which deliveries fall due. value = version, webhook guid[11],
 *   engagement seq (u64), attempts (u32), last status (i32); little-endian.
 * delivery_log: key = webhook guid[11] + time (i64 BE, sign flipped) + delivery
 *   id (u64 BE) + attempt (u32 BE), so one webhook's attempts are contiguous and
 *   a reverse walk gives them newest first. value = version, engagement seq
 *   (u64), HTTP status (i32), duration ms (u32), outcome (u8), error (u8 length
 *   + bytes), response (u16 length + bytes).
 */
#include "storage_internal.h"

#define DELIVERY_VALUE       (1 + STORAGE_GUID_LEN + 8 + 4 + 4)
#define ATTEMPT_KEY          (STORAGE_GUID_LEN + 8 + 8 + 4)
#define ATTEMPT_FIXED        (1 + 8 + 4 + 4 + 1 + 1 + 2)
#define ATTEMPT_ERROR_MAX    255
#define ATTEMPT_RESPONSE_MAX 512

/* ---- deliveries ---- */

static void delivery_key(uint8_t key[16], uint64_t due_us, uint64_t id)
{
    put_be64(key, due_us);
    put_be64(key + 8, id);
}

int storage_delivery_put(storage_txn_t *txn, const storage_delivery_t *d)
{
    uint8_t key[16], val[DELIVERY_VALUE], guid[STORAGE_GUID_LEN];
    wbuf_t w = {val, 0, sizeof(val)};
    MDB_val k = {sizeof(key), key}, v = {sizeof(val), val};
    int rc;

    if (!guid_valid(d->webhook_guid)) {
        storage__set_error("storage: a delivery needs a webhook guid of 1 to %d bytes",
                           STORAGE_GUID_LEN);
        return STORAGE_INVALID;
    }
    delivery_key(key, d->due_us, d->id);
    guid_field(guid, d->webhook_guid);
    wb_u8(&w, STORAGE_VERSION);
    wb_bytes(&w, guid, sizeof(guid));
    wb_u64(&w, d->engagement_seq);
    wb_u32(&w, d->attempts);
    wb_u32(&w, (uint32_t)d->last_status);
    rc = mdb_put(txn->txn, txn->s->dbi[DB_DELIVERIES], &k, &v, 0);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "write", "deliveries");
}

int storage_delivery_del(storage_txn_t *txn, uint64_t due_us, uint64_t id)
{
    uint8_t key[16];
    MDB_val k = {sizeof(key), key};
    int rc;

    delivery_key(key, due_us, id);
    rc = mdb_del(txn->txn, txn->s->dbi[DB_DELIVERIES], &k, NULL);
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "delete from", "deliveries");
}

static int delivery_decode(const MDB_val *k, const MDB_val *v, storage_delivery_t *out)
{
    rbuf_t r = {v->mv_data, v->mv_size, false};
    const uint8_t *p;

    memset(out, 0, sizeof(*out));
    if (k->mv_size != 16 || rb_u8(&r) != STORAGE_VERSION)
        return storage__damaged("deliveries");
    out->due_us = get_be64(k->mv_data);
    out->id = get_be64((const uint8_t *)k->mv_data + 8);
    if ((p = rb_bytes(&r, STORAGE_GUID_LEN)) != NULL)
        guid_string(out->webhook_guid, p);
    out->engagement_seq = rb_u64(&r);
    out->attempts = rb_u32(&r);
    out->last_status = (int32_t)rb_u32(&r);
    if (r.bad)
        return storage__damaged("deliveries");
    return STORAGE_OK;
}

/* Walks deliveries in due order from the first one due at or after from_us,
 * and stops after the first one due later than limit_us (UINT64_MAX: walk
 * them all). */
static int delivery_walk_from(storage_txn_t *txn, uint64_t from_us, uint64_t limit_us,
                              int (*cb)(void *ctx, const storage_delivery_t *d), void *ctx)
{
    MDB_cursor *cur = NULL;
    uint8_t start[16];
    MDB_val k = {sizeof(start), start}, v;
    storage_delivery_t d;
    int ret = STORAGE_OK, rc;

    delivery_key(start, from_us, 0);
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_DELIVERIES], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "deliveries");
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if ((ret = delivery_decode(&k, &v, &d)) != STORAGE_OK)
            goto out;
        if (d.due_us > limit_us)
            break;
        if ((ret = cb(ctx, &d)) != 0)
            goto out;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = storage__fail(rc, "scan", "deliveries");
out:
    mdb_cursor_close(cur);
    return ret;
}

static int delivery_walk(storage_txn_t *txn, uint64_t limit_us,
                         int (*cb)(void *ctx, const storage_delivery_t *d), void *ctx)
{
    return delivery_walk_from(txn, 0, limit_us, cb, ctx);
}

int storage_delivery_scan_due(storage_txn_t *txn, uint64_t now_us,
                              int (*cb)(void *ctx, const storage_delivery_t *d), void *ctx)
{
    /* Given-up deliveries sit at STORAGE_DUE_FAILED and are never due. */
    if (now_us == STORAGE_DUE_FAILED)
        now_us--;
    return delivery_walk(txn, now_us, cb, ctx);
}

int storage_delivery_scan_all(storage_txn_t *txn, int (*cb)(void *ctx, const storage_delivery_t *d),
                              void *ctx)
{
    return delivery_walk(txn, UINT64_MAX, cb, ctx);
}

int storage_delivery_get_failed(storage_txn_t *txn, uint64_t id, storage_delivery_t *out)
{
    uint8_t key[16];
    MDB_val k = {sizeof(key), key}, v;
    int rc;

    delivery_key(key, STORAGE_DUE_FAILED, id);
    rc = mdb_get(txn->txn, txn->s->dbi[DB_DELIVERIES], &k, &v);
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", "deliveries");
    return delivery_decode(&k, &v, out);
}

static int on_first(void *ctx, const storage_delivery_t *d)
{
    *(uint64_t *)ctx = d->due_us;
    return 1;
}

int storage_delivery_next_due(storage_txn_t *txn, uint64_t from_us, uint64_t *due_us)
{
    uint64_t due = STORAGE_DUE_FAILED;
    int rc;

    if (from_us == STORAGE_DUE_FAILED)
        return STORAGE_NOTFOUND;
    rc = delivery_walk_from(txn, from_us, STORAGE_DUE_FAILED - 1, on_first, &due);
    if (rc != STORAGE_OK && rc != 1)
        return rc;
    if (due == STORAGE_DUE_FAILED)
        return STORAGE_NOTFOUND;
    *due_us = due;
    return STORAGE_OK;
}

int storage_delivery_scan_failed(storage_txn_t *txn,
                                 int (*cb)(void *ctx, const storage_delivery_t *d), void *ctx)
{
    return delivery_walk_from(txn, STORAGE_DUE_FAILED, UINT64_MAX, cb, ctx);
}

static int on_count(void *ctx, const storage_delivery_t *d)
{
    (void)d;
    (*(uint64_t *)ctx)++;
    return 0;
}

int storage_delivery_count(storage_txn_t *txn, uint64_t *pending, uint64_t *failed)
{
    MDB_stat st;
    uint64_t n_failed = 0;
    int rc;

    /* The entry count is kept by LMDB itself; only the failed rows, which
     * all sort at the end, are walked. */
    rc = mdb_stat(txn->txn, txn->s->dbi[DB_DELIVERIES], &st);
    if (rc != 0)
        return storage__fail(rc, "stat", "deliveries");
    rc = storage_delivery_scan_failed(txn, on_count, &n_failed);
    if (rc != STORAGE_OK)
        return rc;
    *failed = n_failed;
    *pending = (uint64_t)st.ms_entries >= n_failed ? (uint64_t)st.ms_entries - n_failed : 0;
    return STORAGE_OK;
}

/* ---- attempts ---- */

int storage_attempt_append(storage_txn_t *txn, const storage_attempt_t *a)
{
    uint8_t key[ATTEMPT_KEY];
    size_t elen = a->error.len < ATTEMPT_ERROR_MAX ? a->error.len : ATTEMPT_ERROR_MAX;
    size_t rlen = a->response.len < ATTEMPT_RESPONSE_MAX ? a->response.len : ATTEMPT_RESPONSE_MAX;
    size_t size = ATTEMPT_FIXED + elen + rlen;
    MDB_val k = {sizeof(key), key}, v = {size, NULL};
    int rc;

    if (!guid_valid(a->webhook_guid) || (elen > 0 && a->error.ptr == NULL) ||
        (rlen > 0 && a->response.ptr == NULL)) {
        storage__set_error("storage: an attempt needs a webhook guid and valid buffers");
        return STORAGE_INVALID;
    }
    guid_field(key, a->webhook_guid);
    put_time_be(key + STORAGE_GUID_LEN, a->time_us);
    put_be64(key + STORAGE_GUID_LEN + 8, a->delivery_id);
    put_be32(key + STORAGE_GUID_LEN + 16, a->attempt);

    rc = mdb_put(txn->txn, txn->s->dbi[DB_DELIVERY_LOG], &k, &v, MDB_RESERVE);
    if (rc != 0)
        return storage__fail(rc, "write", "delivery_log");
    wbuf_t w = {v.mv_data, 0, size};
    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, a->engagement_seq);
    wb_u32(&w, (uint32_t)a->http_status);
    wb_u32(&w, a->duration_ms);
    wb_u8(&w, a->outcome);
    wb_u8(&w, (uint8_t)elen);
    wb_bytes(&w, a->error.ptr, elen);
    wb_u16(&w, (uint16_t)rlen);
    wb_bytes(&w, a->response.ptr, rlen);
    return STORAGE_OK;
}

static int attempt_decode(const MDB_val *k, const MDB_val *v, storage_attempt_t *out)
{
    const uint8_t *kp = k->mv_data;
    rbuf_t r = {v->mv_data, v->mv_size, false};

    memset(out, 0, sizeof(*out));
    if (k->mv_size != ATTEMPT_KEY || rb_u8(&r) != STORAGE_VERSION)
        return storage__damaged("delivery_log");
    guid_string(out->webhook_guid, kp);
    out->time_us = get_time_be(kp + STORAGE_GUID_LEN);
    out->delivery_id = get_be64(kp + STORAGE_GUID_LEN + 8);
    out->attempt = get_be32(kp + STORAGE_GUID_LEN + 16);
    out->engagement_seq = rb_u64(&r);
    out->http_status = (int32_t)rb_u32(&r);
    out->duration_ms = rb_u32(&r);
    out->outcome = rb_u8(&r);
    out->error.len = rb_u8(&r);
    out->error.ptr = (const char *)rb_bytes(&r, out->error.len);
    out->response.len = rb_u16(&r);
    out->response.ptr = (const char *)rb_bytes(&r, out->response.len);
    if (r.bad)
        return storage__damaged("delivery_log");
    return STORAGE_OK;
}

/* Puts the cursor on the webhook's newest attempt: the last key before the
 * first key past its prefix. */
static int seek_newest(MDB_cursor *cur, const uint8_t guid[STORAGE_GUID_LEN], MDB_val *k,
                       MDB_val *v)
{
    uint8_t past[ATTEMPT_KEY];
    int rc;

    memcpy(past, guid, STORAGE_GUID_LEN);
    memset(past + STORAGE_GUID_LEN, 0xff, ATTEMPT_KEY - STORAGE_GUID_LEN);
    k->mv_size = sizeof(past);
    k->mv_data = past;
    rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (rc == 0 && k->mv_size == sizeof(past) && memcmp(k->mv_data, past, sizeof(past)) == 0)
        return 0; /* an attempt at the very last representable time */
    if (rc == MDB_NOTFOUND)
        return mdb_cursor_get(cur, k, v, MDB_LAST);
    if (rc != 0)
        return rc;
    return mdb_cursor_get(cur, k, v, MDB_PREV);
}

int storage_attempt_scan(storage_txn_t *txn, const char *webhook_guid,
                         int (*cb)(void *ctx, const storage_attempt_t *a), void *ctx)
{
    MDB_cursor *cur = NULL;
    uint8_t guid[STORAGE_GUID_LEN];
    MDB_val k, v;
    storage_attempt_t a;
    int ret = STORAGE_OK, rc;

    if (!guid_valid(webhook_guid))
        return STORAGE_OK;
    guid_field(guid, webhook_guid);
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_DELIVERY_LOG], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "delivery_log");
    for (rc = seek_newest(cur, guid, &k, &v); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        if (k.mv_size < STORAGE_GUID_LEN || memcmp(k.mv_data, guid, STORAGE_GUID_LEN) != 0)
            break;
        if ((ret = attempt_decode(&k, &v, &a)) != STORAGE_OK)
            goto out;
        if ((ret = cb(ctx, &a)) != 0)
            goto out;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = storage__fail(rc, "scan", "delivery_log");
out:
    mdb_cursor_close(cur);
    return ret;
}
