/*
 * libFuzzer target for parse_long_url. What it holds the parser to: an accepted
 * URL is NUL-terminated inside the buffer and printable ASCII only (it goes
 * into a Location header), a refused one leaves an empty string, and an
 * accepted URL parses again to itself (what we store is a fixed point).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

#define OWN_HOST "s.example"
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An accepted URL: terminated within bounds, nothing a header could be split
 * on, nothing outside ASCII. */
static size_t check_printable(const char *out, size_t outlen)
{
    const char *nul = memchr(out, '\0', outlen);

    CHECK(nul != NULL);
    for (const char *p = out; p < nul; p++)
        CHECK((unsigned char)*p >= 0x21 && (unsigned char)*p <= 0x7e);
    return (size_t)(nul - out);
}

/* The buffer is allocated at its exact size so that AddressSanitizer sees any
 * write past outlen. */
static void parse_into(const char *in, size_t len, size_t outlen)
{
    char *out = malloc(outlen);
    char *again = malloc(PARSE_URL_MAX + 1);
    parse_url_error_t e;

    CHECK(out != NULL && again != NULL);
    e = parse_long_url(in, len, OWN_HOST, out, outlen);
    if (e != PARSE_URL_OK) {
        CHECK(out[0] == '\0');
        goto out;
    }

    size_t n = check_printable(out, outlen);
    CHECK(n > 0 && n <= PARSE_URL_MAX);
    CHECK(parse_long_url(out, n, OWN_HOST, again, PARSE_URL_MAX + 1) == PARSE_URL_OK);
    CHECK(strcmp(again, out) == 0);

out:
    free(again);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;

    parse_into(in, size, PARSE_URL_MAX + 1);
    /* A small buffer exercises the paths where the result does not fit. */
    parse_into(in, size, 1 + size % 64);
    return 0;
}
