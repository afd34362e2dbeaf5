/* server/util: identifiers, clocks, digests, aborting allocation. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"
#include "parse.h"
#include "util.h"

static _Noreturn void out_of_memory(size_t n, const char *where)
{
    log_msg(LOG_ERROR, "server", "out of memory allocating %zu bytes at %s", n, where);
    abort();
}

void *util_malloc_at(size_t n, const char *where)
{
    void *p = malloc(n == 0 ? 1 : n);

    if (p == NULL)
        out_of_memory(n, where);
    return p;
}

void *util_calloc_at(size_t n, size_t size, const char *where)
{
    void *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);

    if (p == NULL)
        out_of_memory(n * size, where);
    return p;
}

char *util_strndup_at(const char *s, size_t n, const char *where)
{
    char *p = util_malloc_at(n + 1, where);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void util_random(void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            log_msg(LOG_ERROR, "server", "getrandom failed; cannot make identifiers");
            abort();
        }
        p += got;
        n -= (size_t)got;
    }
}

uint64_t util_fast_random(void)
{
    /* xorshift64*, seeded once per thread from the kernel. */
    static _Thread_local uint64_t state;

    if (state == 0) {
        util_random(&state, sizeof(state));
        state |= 1;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
}

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void util_guid(char out[UTIL_GUID_LEN + 1])
{
    uint8_t r[UTIL_GUID_LEN];

    util_random(r, sizeof(r));
    /* 256 is not a multiple of 62 or 26: the bias is a fraction of a percent,
     * harmless for identifiers that only need to be unique. */
    out[0] = (char)('A' + r[0] % 26);
    for (size_t i = 1; i < UTIL_GUID_LEN; i++)
        out[i] = base62[r[i] % 62];
    out[UTIL_GUID_LEN] = '\0';
}

void util_code(char *out, size_t len)
{
    static const char alphabet[] = PARSE_CODE_ALPHABET;
    const size_t n = sizeof(alphabet) - 1;
    uint8_t r[64];

    util_random(r, len);
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[r[i] % n];
    out[len] = '\0';
}

void util_uuid7(uint8_t out[16], int64_t time_us)
{
    uint64_t ms = (uint64_t)(time_us / 1000);
    uint64_t r1 = util_fast_random(), r2 = util_fast_random();

    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t)(ms >> (40 - 8 * i));
    memcpy(out + 6, &r1, 2);
    memcpy(out + 8, &r2, 8);
    out[6] = (uint8_t)(0x70 | (out[6] & 0x0f));
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));
}

void util_token(char out[UTIL_TOKEN_LEN + 1])
{
    uint8_t r[UTIL_TOKEN_LEN / 2];

    util_random(r, sizeof(r));
    util_hex(r, sizeof(r), out);
}

int64_t util_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void util_format_bitly_time(int64_t time_us, char out[32])
{
    time_t t = (time_t)(time_us / 1000000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%S+0000", &tm);
}

void util_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 32;

    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

void util_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}
