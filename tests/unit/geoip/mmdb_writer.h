/*
 * tests/unit/geoip/mmdb_writer.h: a tiny MaxMind DB writer, test-only.
 *
 * libmaxminddb only reads, and the ip-location-db layout (a top-level
 * "country_code") has no small test file, so the tests write their own: an
 * IPv4 search tree with 32-bit records, a data section and the metadata map,
 * as the MaxMind DB format specification (version 2.0) lays them out. Only
 * what the tests need: non-overlapping IPv4 networks, maps, arrays, strings
 * and unsigned integers.
 */
#ifndef SHORTLINKD_TESTS_MMDB_WRITER_H
#define SHORTLINKD_TESTS_MMDB_WRITER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MW_STRING = 2,
    MW_UINT16 = 5,
    MW_UINT32 = 6,
    MW_MAP = 7,
    MW_UINT64 = 9,
    MW_ARRAY = 11,
};

typedef struct mw_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
} mw_buf_t;

static inline void mw_put(mw_buf_t *b, const void *src, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static inline void mw_byte(mw_buf_t *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    mw_put(b, &c, 1);
}

/* A control byte: type in the top three bits (types past 7 are "extended" and
 * follow in the next byte), then the payload size, long sizes spilling into
 * one or two more bytes. */
static inline void mw_ctrl(mw_buf_t *b, unsigned type, size_t size)
{
    unsigned top = type <= 7 ? type : 0;
    unsigned small = size < 29 ? (unsigned)size : size < 285 ? 29 : 30;

    mw_byte(b, top << 5 | small);
    if (type > 7)
        mw_byte(b, type - 7);
    if (small == 29) {
        mw_byte(b, (unsigned)(size - 29));
    } else if (small == 30) {
        mw_byte(b, (unsigned)((size - 285) >> 8));
        mw_byte(b, (unsigned)((size - 285) & 0xff));
    }
}

static inline void mw_str(mw_buf_t *b, const char *s)
{
    mw_ctrl(b, MW_STRING, strlen(s));
    mw_put(b, s, strlen(s));
}

static inline void mw_uint(mw_buf_t *b, unsigned type, uint64_t v)
{
    uint8_t be[8];
    size_t n = 0;

    for (uint64_t x = v; x != 0; x >>= 8)
        n++;
    for (size_t i = 0; i < n; i++)
        be[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    mw_ctrl(b, type, n);
    mw_put(b, be, n);
}

static inline void mw_map(mw_buf_t *b, size_t pairs)
{
    mw_ctrl(b, MW_MAP, pairs);
}

static inline void mw_array(mw_buf_t *b, size_t items)
{
    mw_ctrl(b, MW_ARRAY, items);
}

static inline void mw_free(mw_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* One network and the encoded data record it points to. */
typedef struct mw_network {
    uint8_t addr[4];
    uint8_t prefix; /* 1..32 */
    mw_buf_t data;
} mw_network_t;

#define MW_EMPTY UINT32_MAX
#define MW_DATA  0x80000000u /* tag: record points at network index (low bits) */

static inline void mw_put_be32(mw_buf_t *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mw_put(b, be, 4);
}

/* Writes an IPv4 database to path. Returns 0, or -1 when the file cannot be
 * written. build_epoch and database_type go into the metadata as given. */
static inline int mw_write_v4(const char *path, const char *database_type, uint64_t build_epoch,
                              const mw_network_t *nets, size_t n)
{
    uint32_t(*nodes)[2] = NULL;
    size_t node_count = 1, node_cap = 64;
    size_t *offsets = calloc(n ? n : 1, sizeof(size_t));
    mw_buf_t file = {0}, data = {0}, meta = {0};
    int rc = -1;
    FILE *f = NULL;

    nodes = malloc(node_cap * sizeof(*nodes));
    if (nodes == NULL || offsets == NULL)
        abort();
    nodes[0][0] = nodes[0][1] = MW_EMPTY;

    /* The trie: one node per bit until the prefix length, where the record
     * holds the data instead of a child. */
    for (size_t i = 0; i < n; i++) {
        size_t node = 0;
        for (unsigned bit = 0; bit < nets[i].prefix; bit++) {
            unsigned side = (nets[i].addr[bit / 8] >> (7 - bit % 8)) & 1;
            if (bit + 1 == nets[i].prefix) {
                nodes[node][side] = MW_DATA | (uint32_t)i;
                break;
            }
            if (nodes[node][side] == MW_EMPTY) {
                if (node_count == node_cap) {
                    node_cap *= 2;
                    nodes = realloc(nodes, node_cap * sizeof(*nodes));
                    if (nodes == NULL)
                        abort();
                }
                nodes[node_count][0] = nodes[node_count][1] = MW_EMPTY;
                nodes[node][side] = (uint32_t)node_count++;
            }
            if (nodes[node][side] & MW_DATA)
                abort(); /* overlapping networks: not supported here */
            node = nodes[node][side];
        }
        offsets[i] = data.len;
        mw_put(&data, nets[i].data.p, nets[i].data.len);
    }

    /* Record values: a node number, node_count for "no data", or
     * node_count + 16 + the record's offset in the data section. */
    for (size_t i = 0; i < node_count; i++) {
        for (int side = 0; side < 2; side++) {
            uint32_t r = nodes[i][side];
            if (r == MW_EMPTY)
                r = (uint32_t)node_count;
            else if (r & MW_DATA)
                r = (uint32_t)(node_count + 16 + offsets[r & ~MW_DATA]);
            mw_put_be32(&file, r);
        }
    }
    static const uint8_t separator[16];
    mw_put(&file, separator, sizeof(separator));
    mw_put(&file, data.p, data.len);
    mw_put(&file, "\xAB\xCD\xEFMaxMind.com", 14);

    mw_map(&meta, 9);
    mw_str(&meta, "node_count");
    mw_uint(&meta, MW_UINT32, node_count);
    mw_str(&meta, "record_size");
    mw_uint(&meta, MW_UINT16, 32);
    mw_str(&meta, "ip_version");
    mw_uint(&meta, MW_UINT16, 4);
    mw_str(&meta, "database_type");
    mw_str(&meta, database_type);
    mw_str(&meta, "languages");
    mw_array(&meta, 1);
    mw_str(&meta, "en");
    mw_str(&meta, "binary_format_major_version");
    mw_uint(&meta, MW_UINT16, 2);
    mw_str(&meta, "binary_format_minor_version");
    mw_uint(&meta, MW_UINT16, 0);
    mw_str(&meta, "build_epoch");
    mw_uint(&meta, MW_UINT64, build_epoch);
    mw_str(&meta, "description");
    mw_map(&meta, 1);
    mw_str(&meta, "en");
    mw_str(&meta, "shortlinkd test database");
    mw_put(&file, meta.p, meta.len);

    f = fopen(path, "wb");
    if (f == NULL)
        goto out;
    if (fwrite(file.p, 1, file.len, f) != file.len)
        goto out;
    rc = 0;

out:
    if (f != NULL && fclose(f) != 0)
        rc = -1;
    mw_free(&file);
    mw_free(&data);
    mw_free(&meta);
    free(nodes);
    free(offsets);
    return rc;
}

#endif
