/* server/util: identifiers, clocks, digests, aborting allocation. */
#include <openssl/evp.h>
#include <stdbool.h>
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

/* Reads exactly n digits at s. Stops at the terminating NUL like at any other
 * non-digit, so a caller that checks each part in order never reads past the
 * end of s. */
static bool read_digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Reads "+05:30", "+0530", "Z" or "z" to the end of p into seconds east of
 * UTC. */
static bool read_offset(const char *p, int *offset_s)
{
    int hh, mm;

    if ((p[0] == 'Z' || p[0] == 'z') && p[1] == '\0') {
        *offset_s = 0;
        return true;
    }
    if ((p[0] != '+' && p[0] != '-') || !read_digits(p + 1, 2, &hh))
        return false;
    bool colon = p[3] == ':';
    if (!read_digits(p + (colon ? 4 : 3), 2, &mm) || p[colon ? 6 : 5] != '\0')
        return false;
    if (hh > 23 || mm > 59)
        return false;
    *offset_s = (p[0] == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    return true;
}

const char *util_parse_rfc3339(const char *s, int64_t *out_us, int *offset_s)
{
    static const char syntax[] = "an RFC 3339 time, such as 2026-01-02T03:04:05+05:30";
    struct tm tm = {0};
    int year, mon, mday, hour, min, sec, off;
    int64_t frac = 0, scale = 100000;

    if (!read_digits(s, 4, &year) || s[4] != '-' || !read_digits(s + 5, 2, &mon) || s[7] != '-' ||
        !read_digits(s + 8, 2, &mday) || (s[10] != 'T' && s[10] != 't') ||
        !read_digits(s + 11, 2, &hour) || s[13] != ':' || !read_digits(s + 14, 2, &min) ||
        s[16] != ':' || !read_digits(s + 17, 2, &sec))
        return syntax;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return syntax;
        for (; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (!read_offset(p, &off))
        return syntax;
    /* No click is older than 1970, and a year past 9999 has no four-digit
     * form: dates written from such a time would be nonsense. */
    if (year < 1970 || year > 9999)
        return "a time in the years 1970 to 9999";
    if (sec > 60)
        return "a real date and time";

    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = mday;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec == 60 ? 59 : sec; /* a leap second counts as the one before */
    int64_t t = (int64_t)timegm(&tm);
    /* timegm normalises what it is given (February 30th into March); any
     * field it moved did not exist. */
    if (tm.tm_year != year - 1900 || tm.tm_mon != mon - 1 || tm.tm_mday != mday ||
        tm.tm_hour != hour || tm.tm_min != min)
        return "a real date and time: that day, hour or minute does not exist";
    *out_us = (t - off) * 1000000 + frac;
    *offset_s = off;
    return NULL;
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
