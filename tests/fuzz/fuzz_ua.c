/*
 * libFuzzer target for parse_user_agent and parse_referrer_host: the device is
 * one of the enum's values, and the referrer host is NUL-terminated inside the
 * buffer and made only of host-name bytes (it is stored and shown in reports).
 */
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

static void check_referrer(const char *ref, size_t len, size_t outlen)
{
    char *out = malloc(outlen);
    const char *nul;

    CHECK(out != NULL);
    parse_referrer_host(ref, len, out, outlen);
    nul = memchr(out, '\0', outlen);
    CHECK(nul != NULL);
    for (const char *p = out; p < nul; p++) {
        unsigned char c = (unsigned char)*p;
        CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._[]:", c));
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    parse_device_t d = parse_user_agent(in, size);

    CHECK(d >= PARSE_DEVICE_OTHER && d <= PARSE_DEVICE_BOT);
    check_referrer(in, size, 256);
    check_referrer(in, size, 1 + size % 16);
    return 0;
}
