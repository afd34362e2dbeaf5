/*
 * tests/bench/bench_links: fills a data directory with COUNT links through the
 * storage layer (not the API), for the redirect benchmark's large store.
 *
 *   bench_links DATA_DIR COUNT
 *
 * Links go into the default group the server made on its first start (read
 * from meta), so run the server once on DATA_DIR before this. Each link is
 * indexed by URL as the API would, and written in transactions of BATCH links.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "storage.h"

#define BATCH 50000

typedef struct fill {
    char group[STORAGE_GUID_LEN + 1];
    uint64_t from, to;
    int64_t now_us;
} fill_t;

static int read_group(storage_txn_t *txn, void *arg)
{
    fill_t *f = arg;
    storage_bytes_t v;
    int rc = storage_record_get(txn, STORAGE_DB_META, "default_group_guid", 18, &v);

    if (rc != STORAGE_OK || v.len == 0 || v.len > STORAGE_GUID_LEN)
        return rc == STORAGE_OK ? STORAGE_INVALID : rc;
    memcpy(f->group, v.ptr, v.len);
    f->group[v.len] = '\0';
    return STORAGE_OK;
}

static int insert_batch(storage_txn_t *txn, void *arg)
{
    fill_t *f = arg;
    char code[BENCH_CODE_LEN + 1], url[128];

    for (uint64_t i = f->from; i < f->to; i++) {
        bench_code(code, i);
        int n = snprintf(url, sizeof(url),
                         "https://www.example.com/landing/%" PRIu64 "?utm_source=bench", i);
        storage_link_t l = {
            .code = {code, BENCH_CODE_LEN},
            .created_us = f->now_us,
            .modified_us = f->now_us,
            .long_url = {url, (size_t)n},
        };
        memcpy(l.group_guid, f->group, sizeof(l.group_guid));
        int rc = storage_link_insert(txn, &l, true);
        if (rc != STORAGE_OK && rc != STORAGE_EXISTS)
            return rc;
    }
    return STORAGE_OK;
}

int main(int argc, char **argv)
{
    storage_t *s;
    char err[512];
    fill_t f = {0};
    struct timespec t0, t1;

    if (argc != 3) {
        fprintf(stderr, "usage: %s DATA_DIR COUNT\n", argv[0]);
        return 2;
    }
    uint64_t count = strtoull(argv[2], NULL, 10);
    storage_options_t o = {.dir = argv[1]};
    if (storage_open(&s, &o, err, sizeof(err)) != STORAGE_OK) {
        fprintf(stderr, "bench_links: %s\n", err);
        return 1;
    }
    if (storage_run(s, read_group, &f) != STORAGE_OK) {
        fprintf(stderr, "bench_links: no default group in %s (start the server on it once)\n",
                argv[1]);
        storage_close(s);
        return 1;
    }
    clock_gettime(CLOCK_REALTIME, &t0);
    f.now_us = (int64_t)t0.tv_sec * 1000000 + t0.tv_nsec / 1000;
    for (f.from = 0; f.from < count; f.from = f.to) {
        f.to = f.from + BATCH < count ? f.from + BATCH : count;
        if (storage_run(s, insert_batch, &f) != STORAGE_OK) {
            fprintf(stderr, "bench_links: insert failed: %s\n", storage_strerror());
            storage_close(s);
            return 1;
        }
    }
    clock_gettime(CLOCK_REALTIME, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "bench_links: %" PRIu64 " links in group %s in %.1f s\n", count, f.group, secs);
    storage_close(s);
    return 0;
}
