/*
 * tests/bench/bench_lookup: the redirect's link lookup alone, on a store that
 * bench_links filled: codes drawn uniformly at random, as the load generator
 * draws them, looked up through the storage layer in one read transaction on
 * one thread, after the store is mapped into memory as the server maps it.
 *
 *   bench_lookup DATA_DIR COUNT [SECONDS]
 *
 * Prints one JSON line: lookups made and nanoseconds per lookup, drawing the
 * code included. tests/bench/redirect runs it on both stores: the difference
 * is what a large store adds to every redirect before anything else does.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_common.h"
#include "storage.h"

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t next_random(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

int main(int argc, char **argv)
{
    storage_t *s;
    storage_reader_t *r;
    char err[512], code[BENCH_CODE_LEN + 1];
    uint64_t x = 0x9e3779b97f4a7c15u, lookups = 0, missing = 0, url_bytes = 0;

    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s DATA_DIR COUNT [SECONDS]\n", argv[0]);
        return 2;
    }
    uint64_t count = strtoull(argv[2], NULL, 10);
    double seconds = argc == 4 ? strtod(argv[3], NULL) : 3.0;
    if (count == 0 || !(seconds > 0)) {
        fprintf(stderr, "bench_lookup: COUNT and SECONDS must be above 0\n");
        return 2;
    }
    storage_options_t o = {.dir = argv[1]};
    if (storage_open(&s, &o, err, sizeof(err)) != STORAGE_OK) {
        fprintf(stderr, "bench_lookup: %s\n", err);
        return 1;
    }
    storage_warm(s, NULL, NULL);
    if (storage_reader_open(s, &r) != STORAGE_OK) {
        fprintf(stderr, "bench_lookup: %s\n", storage_strerror());
        storage_close(s);
        return 1;
    }
    storage_txn_t *txn = storage_reader_begin(r);
    uint64_t t0 = now_ns(), until = t0 + (uint64_t)(seconds * 1e9), t1 = t0;
    while (t1 < until) {
        for (int i = 0; i < 4096; i++) {
            storage_link_t link;
            bench_code(code, next_random(&x) % count);
            if (storage_link_get(txn, code, BENCH_CODE_LEN, &link) == STORAGE_OK)
                url_bytes += link.long_url.len;
            else
                missing++;
        }
        lookups += 4096;
        t1 = now_ns();
    }
    storage_reader_end(r);
    storage_reader_close(r);
    storage_close(s);
    printf("{\"links\":%" PRIu64 ",\"lookups\":%" PRIu64 ",\"missing\":%" PRIu64
           ",\"ns_per_lookup\":%.1f,\"url_bytes\":%" PRIu64 "}\n",
           count, lookups, missing, (double)(t1 - t0) / (double)lookups, url_bytes);
    return missing == 0 ? 0 : 1;
}
