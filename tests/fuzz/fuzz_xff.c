/*
 * tests/fuzz/fuzz_xff.c: libFuzzer target for the client-controlled address
 * parsers in geoip/: X-Forwarded-For (geoip_visitor), single addresses
 * (geoip_addr_parse) and CIDR ranges (geoip_cidr_parse).
 *
 * Besides crashes it checks properties that must hold for any input: a parsed
 * address formats and parses back to itself, is never IPv4-mapped IPv6, and a
 * range contains its own base address.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "geoip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void check_addr(const char *s, size_t n)
{
    geoip_addr_t a, b;
    char text[64];

    if (!geoip_addr_parse(&a, s, n))
        return;
    if (a.family == AF_INET6 && memcmp(a.bytes, mapped_prefix, 12) == 0)
        abort();
    geoip_addr_format(&a, text, sizeof(text));
    if (!geoip_addr_parse(&b, text, strlen(text)) || memcmp(&a, &b, sizeof(a)) != 0)
        abort();
    (void)geoip_addr_special(&a);
}

static void check_cidr(const char *s)
{
    geoip_cidr_t c;

    if (!geoip_cidr_parse(&c, s))
        return;
    if (c.prefix > (c.addr.family == AF_INET ? 32 : 128) || !geoip_cidr_contains(&c, &c.addr))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static geoip_cidr_t trusted[3];
    static int ready;
    geoip_addr_t peer, v;
    char text[64];
    char *s;

    if (!ready) {
        if (!geoip_cidr_parse(&trusted[0], "127.0.0.1/32") ||
            !geoip_cidr_parse(&trusted[1], "10.0.0.0/8") ||
            !geoip_cidr_parse(&trusted[2], "fd00::/8"))
            abort();
        ready = 1;
    }

    /* The header as the server hands it over: bytes and a length, no NUL. */
    if (!geoip_addr_parse(&peer, "127.0.0.1", 9))
        abort();
    v = geoip_visitor(&peer, (const char *)data, size, trusted, 3);
    geoip_addr_format(&v, text, sizeof(text));
    if (text[0] == '\0')
        abort();

    check_addr((const char *)data, size);

    /* geoip_cidr_parse takes a C string, as configuration gives it. */
    s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    check_cidr(s);
    free(s);
    return 0;
}
