/*
 * storage/records.c: opaque records (groups, organizations, webhooks, bio pages,
 * tokens, meta) and the named id counters kept in meta.
 *
 * value = version byte + the caller's bytes; callers own the format inside.
 */
#include "storage_internal.h"

#include <stdio.h>

#define RECORD_KEY_MAX 256
#define ID_NAME_MAX    200

static int record_dbi(storage_db_t db, int *idx)
{
    static const int map[] = {
        [STORAGE_DB_GROUPS] = DB_GROUPS,     [STORAGE_DB_ORGANIZATIONS] = DB_ORGANIZATIONS,
        [STORAGE_DB_WEBHOOKS] = DB_WEBHOOKS, [STORAGE_DB_BIO_PAGES] = DB_BIO_PAGES,
        [STORAGE_DB_TOKENS] = DB_TOKENS,     [STORAGE_DB_META] = DB_META,
    };

    if ((unsigned)db >= sizeof(map) / sizeof(map[0])) {
        storage__set_error("storage: there is no record database number %d", (int)db);
        return STORAGE_INVALID;
    }
    *idx = map[db];
    return STORAGE_OK;
}

static int record_check(storage_db_t db, size_t klen, int *idx)
{
    if (record_dbi(db, idx) != STORAGE_OK)
        return STORAGE_INVALID;
    if (klen == 0 || klen > RECORD_KEY_MAX) {
        storage__set_error("storage: a key in %s must have 1 to %d bytes", storage__db_name(*idx),
                           RECORD_KEY_MAX);
        return STORAGE_INVALID;
    }
    return STORAGE_OK;
}

int storage_record_get(storage_txn_t *txn, storage_db_t db, const void *key, size_t klen,
                       storage_bytes_t *out)
{
    int idx, rc = record_check(db, klen, &idx);
    MDB_val k = {klen, (void *)key}, v;

    if (rc != STORAGE_OK)
        return rc;
    rc = mdb_get(txn->txn, txn->s->dbi[idx], &k, &v);
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", storage__db_name(idx));
    if (v.mv_size < 1 || ((const uint8_t *)v.mv_data)[0] != STORAGE_VERSION) {
        storage__set_error("storage: a record in %s has an unknown version", storage__db_name(idx));
        return STORAGE_ERROR;
    }
    out->ptr = (const char *)v.mv_data + 1;
    out->len = v.mv_size - 1;
    return STORAGE_OK;
}

int storage_record_put(storage_txn_t *txn, storage_db_t db, const void *key, size_t klen,
                       const void *val, size_t vlen, unsigned flags)
{
    int idx, rc = record_check(db, klen, &idx);
    MDB_val k = {klen, (void *)key}, v = {vlen + 1, NULL};

    if (rc != STORAGE_OK)
        return rc;
    if (vlen > 0 && val == NULL)
        return STORAGE_INVALID;
    rc = mdb_put(txn->txn, txn->s->dbi[idx], &k, &v,
                 MDB_RESERVE | ((flags & STORAGE_NOOVERWRITE) ? MDB_NOOVERWRITE : 0));
    if (rc == MDB_KEYEXIST) {
        storage__set_error("storage: the key is taken in %s", storage__db_name(idx));
        return STORAGE_EXISTS;
    }
    if (rc != 0)
        return storage__fail(rc, "write", storage__db_name(idx));
    ((uint8_t *)v.mv_data)[0] = STORAGE_VERSION;
    if (vlen > 0)
        memcpy((uint8_t *)v.mv_data + 1, val, vlen);
    return STORAGE_OK;
}

int storage_record_del(storage_txn_t *txn, storage_db_t db, const void *key, size_t klen)
{
    int idx, rc = record_check(db, klen, &idx);
    MDB_val k = {klen, (void *)key};

    if (rc != STORAGE_OK)
        return rc;
    rc = mdb_del(txn->txn, txn->s->dbi[idx], &k, NULL);
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "delete from", storage__db_name(idx));
}

int storage_record_scan(storage_txn_t *txn, storage_db_t db,
                        int (*cb)(void *ctx, storage_bytes_t key, storage_bytes_t val), void *ctx)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int idx, ret = STORAGE_OK, rc;

    if (record_dbi(db, &idx) != STORAGE_OK)
        return STORAGE_INVALID;
    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[idx], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", storage__db_name(idx));
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size < 1 || ((const uint8_t *)v.mv_data)[0] != STORAGE_VERSION) {
            storage__set_error("storage: a record in %s has an unknown version",
                               storage__db_name(idx));
            ret = STORAGE_ERROR;
            goto out;
        }
        storage_bytes_t key = {k.mv_data, k.mv_size};
        storage_bytes_t val = {(const char *)v.mv_data + 1, v.mv_size - 1};
        if ((ret = cb(ctx, key, val)) != 0)
            goto out;
    }
    if (rc != MDB_NOTFOUND)
        ret = storage__fail(rc, "scan", storage__db_name(idx));
out:
    mdb_cursor_close(cur);
    return ret;
}

uint64_t storage_next_id(storage_txn_t *txn, const char *name)
{
    char key[sizeof(META_ID_PREFIX) + ID_NAME_MAX];
    uint8_t buf[9];
    wbuf_t w = {buf, 0, sizeof(buf)};
    size_t nlen = strnlen(name, ID_NAME_MAX + 1);
    uint64_t id = 0;
    int n;

    if (nlen == 0 || nlen > ID_NAME_MAX) {
        storage__set_error("storage: an id counter name must have 1 to %d bytes", ID_NAME_MAX);
        return 0;
    }
    n = snprintf(key, sizeof(key), "%s%s", META_ID_PREFIX, name);
    MDB_val k = {(size_t)n, key}, v;
    int rc = mdb_get(txn->txn, txn->s->dbi[DB_META], &k, &v);
    if (rc == 0) {
        rbuf_t r = {v.mv_data, v.mv_size, false};
        if (rb_u8(&r) != STORAGE_VERSION || r.left != 8) {
            storage__set_error("storage: the id counter '%s' in meta is damaged", name);
            return 0;
        }
        id = rb_u64(&r);
    } else if (rc != MDB_NOTFOUND) {
        storage__fail(rc, "read an id counter from", "meta");
        return 0;
    }

    id++;
    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, id);
    v.mv_data = buf;
    v.mv_size = sizeof(buf);
    /* A read-only transaction fails here with EACCES, which is the answer. */
    rc = mdb_put(txn->txn, txn->s->dbi[DB_META], &k, &v, 0);
    if (rc != 0) {
        storage__fail(rc, "write an id counter to", "meta");
        return 0;
    }
    return id;
}
