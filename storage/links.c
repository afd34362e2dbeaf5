/*
 * storage/links.c: short links and the (group, long URL) index.
 *
 * links: key = short code. value = version, flags (bit 0: archived), redirect
 *   status (u16), group guid[11], created (i64), modified (i64), code (u8 length +
 *   bytes), long URL (u32 + bytes), title (u32 + bytes), tags (u32 + bytes);
 *   integers little-endian. The code is kept in the value too so that a link read
 *   through the URL index can hand out a borrowed code.
 * links_by_url: key = group guid[11] + SHA-256 of the long URL (long URLs exceed
 *   LMDB's key limit). value = version + code.
 */
#include "storage_internal.h"

#include <openssl/evp.h>

#define LINK_FIXED    (1 + 1 + 2 + STORAGE_GUID_LEN + 8 + 8 + 1 + 4 + 4 + 4)
#define URL_KEY_LEN   (STORAGE_GUID_LEN + 32)
#define FLAG_ARCHIVED 0x01

static int link_validate(const storage_link_t *l)
{
    if (l->code.ptr == NULL || l->code.len == 0 || l->code.len > STORAGE_CODE_MAX) {
        storage__set_error("storage: a short code must have 1 to %d bytes", STORAGE_CODE_MAX);
        return STORAGE_INVALID;
    }
    if (l->long_url.ptr == NULL || l->long_url.len == 0 || l->long_url.len > STORAGE_URL_MAX) {
        storage__set_error("storage: a long URL must have 1 to %d bytes", STORAGE_URL_MAX);
        return STORAGE_INVALID;
    }
    if (!guid_valid(l->group_guid)) {
        storage__set_error("storage: a group guid must have 1 to %d bytes", STORAGE_GUID_LEN);
        return STORAGE_INVALID;
    }
    if ((l->title.len > 0 && l->title.ptr == NULL) || (l->tags.len > 0 && l->tags.ptr == NULL) ||
        l->title.len > UINT32_MAX || l->tags.len > UINT32_MAX) {
        storage__set_error("storage: a link's title or tags are malformed");
        return STORAGE_INVALID;
    }
    return STORAGE_OK;
}

static void link_encode(wbuf_t *w, const storage_link_t *l)
{
    uint8_t guid[STORAGE_GUID_LEN];

    guid_field(guid, l->group_guid);
    wb_u8(w, STORAGE_VERSION);
    wb_u8(w, l->archived ? FLAG_ARCHIVED : 0);
    wb_u16(w, l->redirect_status);
    wb_bytes(w, guid, sizeof(guid));
    wb_u64(w, (uint64_t)l->created_us);
    wb_u64(w, (uint64_t)l->modified_us);
    wb_u8(w, (uint8_t)l->code.len);
    wb_bytes(w, l->code.ptr, l->code.len);
    wb_u32(w, (uint32_t)l->long_url.len);
    wb_bytes(w, l->long_url.ptr, l->long_url.len);
    wb_u32(w, (uint32_t)l->title.len);
    wb_bytes(w, l->title.ptr, l->title.len);
    wb_u32(w, (uint32_t)l->tags.len);
    wb_bytes(w, l->tags.ptr, l->tags.len);
}

static int link_decode(const MDB_val *val, storage_link_t *out)
{
    rbuf_t r = {val->mv_data, val->mv_size, false};
    const uint8_t *p;

    memset(out, 0, sizeof(*out));
    if (rb_u8(&r) != STORAGE_VERSION)
        return storage__damaged("links");
    out->archived = (rb_u8(&r) & FLAG_ARCHIVED) != 0;
    out->redirect_status = rb_u16(&r);
    if ((p = rb_bytes(&r, STORAGE_GUID_LEN)) != NULL)
        guid_string(out->group_guid, p);
    out->created_us = (int64_t)rb_u64(&r);
    out->modified_us = (int64_t)rb_u64(&r);
    out->code.len = rb_u8(&r);
    out->code.ptr = (const char *)rb_bytes(&r, out->code.len);
    out->long_url.len = rb_u32(&r);
    out->long_url.ptr = (const char *)rb_bytes(&r, out->long_url.len);
    out->title.len = rb_u32(&r);
    out->title.ptr = (const char *)rb_bytes(&r, out->title.len);
    out->tags.len = rb_u32(&r);
    out->tags.ptr = (const char *)rb_bytes(&r, out->tags.len);
    if (r.bad)
        return storage__damaged("links");
    return STORAGE_OK;
}

static int url_key(uint8_t key[URL_KEY_LEN], const char *group_guid, const char *url, size_t len)
{
    unsigned int dlen = 0;

    guid_field(key, group_guid);
    if (EVP_Digest(url, len, key + STORAGE_GUID_LEN, &dlen, EVP_sha256(), NULL) != 1 ||
        dlen != 32) {
        storage__set_error("storage: SHA-256 of a long URL failed (OpenSSL)");
        return STORAGE_ERROR;
    }
    return STORAGE_OK;
}

int storage_link_get(storage_txn_t *txn, const char *code, size_t len, storage_link_t *out)
{
    MDB_val k = {len, (void *)code}, v;
    int rc;

    /* A code no link can have is simply absent; redirects pass client paths. */
    if (len == 0 || len > STORAGE_CODE_MAX)
        return STORAGE_NOTFOUND;
    rc = mdb_get(txn->txn, txn->s->dbi[DB_LINKS], &k, &v);
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", "links");
    return link_decode(&v, out);
}

int storage_link_find_by_url(storage_txn_t *txn, const char *group_guid, const char *long_url,
                             size_t len, storage_link_t *out)
{
    uint8_t key[URL_KEY_LEN];
    MDB_val k = {sizeof(key), key}, v;
    int rc;

    if (!guid_valid(group_guid) || len == 0 || len > STORAGE_URL_MAX)
        return STORAGE_NOTFOUND;
    if (url_key(key, group_guid, long_url, len) != STORAGE_OK)
        return STORAGE_ERROR;
    rc = mdb_get(txn->txn, txn->s->dbi[DB_LINKS_BY_URL], &k, &v);
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", "links_by_url");
    if (v.mv_size < 2 || ((const uint8_t *)v.mv_data)[0] != STORAGE_VERSION) {
        return storage__damaged("links_by_url");
    }
    rc = storage_link_get(txn, (const char *)v.mv_data + 1, v.mv_size - 1, out);
    if (rc != STORAGE_OK)
        return rc;
    /* Guard against a stale index entry: only an exact match is an answer. */
    if (strcmp(out->group_guid, group_guid) != 0 || out->long_url.len != len ||
        memcmp(out->long_url.ptr, long_url, len) != 0)
        return STORAGE_NOTFOUND;
    return STORAGE_OK;
}

static int put_link(storage_txn_t *txn, const storage_link_t *l, unsigned flags)
{
    size_t size = LINK_FIXED + l->code.len + l->long_url.len + l->title.len + l->tags.len;
    MDB_val k = {l->code.len, (void *)l->code.ptr}, v = {size, NULL};
    int rc = mdb_put(txn->txn, txn->s->dbi[DB_LINKS], &k, &v, flags | MDB_RESERVE);

    if (rc == MDB_KEYEXIST) {
        storage__set_error("storage: the short code '%.*s' is taken", (int)l->code.len,
                           l->code.ptr);
        return STORAGE_EXISTS;
    }
    if (rc != 0)
        return storage__fail(rc, "write", "links");
    wbuf_t w = {v.mv_data, 0, size};
    link_encode(&w, l);
    return STORAGE_OK;
}

/* Points the (group, URL) key at code unless it already points somewhere. */
static int put_url_index(storage_txn_t *txn, const uint8_t key[URL_KEY_LEN], const char *code,
                         size_t code_len)
{
    uint8_t val[1 + STORAGE_CODE_MAX];
    MDB_val k = {URL_KEY_LEN, (void *)key}, v = {1 + code_len, val};
    int rc;

    val[0] = STORAGE_VERSION;
    memcpy(val + 1, code, code_len);
    rc = mdb_put(txn->txn, txn->s->dbi[DB_LINKS_BY_URL], &k, &v, MDB_NOOVERWRITE);
    if (rc != 0 && rc != MDB_KEYEXIST)
        return storage__fail(rc, "write", "links_by_url");
    return STORAGE_OK;
}

int storage_link_insert(storage_txn_t *txn, const storage_link_t *link, bool index_url)
{
    uint8_t key[URL_KEY_LEN];
    int rc = link_validate(link);

    if (rc != STORAGE_OK)
        return rc;
    if ((rc = put_link(txn, link, MDB_NOOVERWRITE)) != STORAGE_OK)
        return rc;
    if (!index_url)
        return STORAGE_OK;
    if (url_key(key, link->group_guid, link->long_url.ptr, link->long_url.len) != STORAGE_OK)
        return STORAGE_ERROR;
    return put_url_index(txn, key, link->code.ptr, link->code.len);
}

/* Whether the index entry at key names exactly this code. */
static int index_points_at(storage_txn_t *txn, const uint8_t key[URL_KEY_LEN], const char *code,
                           size_t code_len, bool *yes)
{
    MDB_val k = {URL_KEY_LEN, (void *)key}, v;
    int rc = mdb_get(txn->txn, txn->s->dbi[DB_LINKS_BY_URL], &k, &v);

    *yes = false;
    if (rc == MDB_NOTFOUND)
        return STORAGE_OK;
    if (rc != 0)
        return storage__fail(rc, "read", "links_by_url");
    *yes = v.mv_size == 1 + code_len && memcmp((const char *)v.mv_data + 1, code, code_len) == 0;
    return STORAGE_OK;
}

int storage_link_update(storage_txn_t *txn, const storage_link_t *link)
{
    storage_link_t old;
    uint8_t old_key[URL_KEY_LEN], new_key[URL_KEY_LEN];
    bool indexed = false;
    int rc = link_validate(link);

    if (rc != STORAGE_OK)
        return rc;
    if ((rc = storage_link_get(txn, link->code.ptr, link->code.len, &old)) != STORAGE_OK)
        return rc;

    /* Work out the index keys before the first put: old's pointers go stale
     * with any write in this transaction. */
    if (url_key(old_key, old.group_guid, old.long_url.ptr, old.long_url.len) != STORAGE_OK ||
        url_key(new_key, link->group_guid, link->long_url.ptr, link->long_url.len) != STORAGE_OK)
        return STORAGE_ERROR;
    if ((rc = index_points_at(txn, old_key, link->code.ptr, link->code.len, &indexed)) != 0)
        return rc;
    if ((rc = put_link(txn, link, 0)) != STORAGE_OK)
        return rc;

    /* Only a link that was its URL's entry moves with it; a custom back-half
     * made without the index stays out of it. */
    if (!indexed || memcmp(old_key, new_key, URL_KEY_LEN) == 0)
        return STORAGE_OK;
    MDB_val k = {URL_KEY_LEN, old_key};
    rc = mdb_del(txn->txn, txn->s->dbi[DB_LINKS_BY_URL], &k, NULL);
    if (rc != 0)
        return storage__fail(rc, "delete from", "links_by_url");
    return put_url_index(txn, new_key, link->code.ptr, link->code.len);
}

int storage_link_scan(storage_txn_t *txn, const char *group_guid, const char *after_code,
                      size_t after_len, int (*cb)(void *ctx, const storage_link_t *link), void *ctx)
{
    MDB_cursor *cur = NULL;
    MDB_val k = {after_len, (void *)after_code}, v;
    MDB_cursor_op op = MDB_FIRST;
    storage_link_t link;
    int ret = STORAGE_OK, rc;

    if ((rc = mdb_cursor_open(txn->txn, txn->s->dbi[DB_LINKS], &cur)) != 0)
        return storage__fail(rc, "open a cursor on", "links");
    if (after_code != NULL && after_len > 0)
        op = MDB_SET_RANGE;

    /* TODO: listing one group walks every link; add a (group, code) index once
     * groups hold more than a few thousand links. */
    for (rc = mdb_cursor_get(cur, &k, &v, op); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (op == MDB_SET_RANGE && k.mv_size == after_len &&
            memcmp(k.mv_data, after_code, after_len) == 0)
            continue;
        if ((ret = link_decode(&v, &link)) != STORAGE_OK)
            goto out;
        if (group_guid != NULL && strcmp(link.group_guid, group_guid) != 0)
            continue;
        if ((ret = cb(ctx, &link)) != 0)
            goto out;
    }
    if (rc != MDB_NOTFOUND)
        ret = storage__fail(rc, "scan", "links");
out:
    mdb_cursor_close(cur);
    return ret;
}
