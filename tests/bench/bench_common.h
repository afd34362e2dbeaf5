/*
 * tests/bench: what the benchmark helpers share: the short codes they make.
 *
 * Link i has the code "b" followed by i in base62 over seven digits, so codes
 * sort in the order they are made (inserts append to the B-tree) and the load
 * generator's Lua script can make the same code from a random i.
 */
#ifndef SHORTLINKD_BENCH_COMMON_H
#define SHORTLINKD_BENCH_COMMON_H

#include <stdint.h>

#define BENCH_CODE_LEN 8

static const char bench_digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static inline void bench_code(char out[BENCH_CODE_LEN + 1], uint64_t i)
{
    out[0] = 'b';
    for (int d = BENCH_CODE_LEN - 1; d >= 1; d--) {
        out[d] = bench_digits[i % 62];
        i /= 62;
    }
    out[BENCH_CODE_LEN] = '\0';
}

#endif
