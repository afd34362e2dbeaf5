/*
 * libFuzzer target for the short-code checks and parse_redirect_target. The
 * input's first byte says where to split the rest into a stored long URL and a
 * visitor query, and how large the output buffer is. The redirect target must
 * never hold a byte that could split a header (CR, LF, any control, space) or
 * leave ASCII, must be NUL-terminated at the length returned, and with no
 * visitor query must be the stored URL itself.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_codes(const char *s, size_t len)
{
    bool valid = parse_backhalf_valid(s, len);
    bool plausible = parse_code_plausible(s, len);

    /* Every acceptable back-half must also be reachable as a code. */
    CHECK(!valid || plausible);
    CHECK(!plausible || (len >= 1 && len <= PARSE_BACKHALF_MAX));
}

static bool all_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    }
    return true;
}

static void check_redirect(const char *url, size_t url_len, const char *q, size_t q_len,
                           size_t outlen)
{
    char *out = malloc(outlen);
    bool qr = false;
    size_t n;

    CHECK(out != NULL);
    n = parse_redirect_target(url, url_len, q, q_len, out, outlen, &qr);
    CHECK(n < outlen);
    CHECK(out[n] == '\0');
    CHECK(all_printable(out, n));
    CHECK(memchr(out, '\r', n) == NULL && memchr(out, '\n', n) == NULL);

    /* Nothing to forward: the stored URL comes back byte for byte. */
    bool no_query = q_len == 0 || (q_len == 1 && q[0] == '?');
    if (no_query && n > 0 && all_printable(url, url_len)) {
        CHECK(n == url_len);
        CHECK(memcmp(out, url, n) == 0);
        CHECK(!qr);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;

    check_codes(in, size);
    if (size == 0)
        return 0;

    size_t rest = size - 1;
    size_t split = rest == 0 ? 0 : data[0] % (rest + 1);
    const char *url = in + 1;
    const char *query = url + split;

    check_redirect(url, split, query, rest - split, PARSE_URL_MAX * 3 + 1);
    check_redirect(url, split, query, rest - split, 1 + data[0] % 48);
    return 0;
}
