/*
 * geoip/special.c: the address ranges that are not the public Internet.
 *
 * Used twice with different stakes: a visitor in these ranges has no country,
 * and a webhook may not connect into them (DESIGN.md section 6, SSRF), so the
 * table errs towards naming a range rather than calling it public.
 */
#include "geoip.h"

#include <string.h>

typedef struct special_range {
    uint8_t bytes[16];
    uint8_t prefix;
    const char *name;
} special_range_t;

/* Order matters: the first match wins, so a narrow range comes before the wide
 * range around it (the metadata address inside link-local, broadcast inside
 * 240/4). */
static const special_range_t v4_ranges[] = {
    {{169, 254, 169, 254}, 32, "metadata"},
    {{255, 255, 255, 255}, 32, "broadcast"},
    {{0, 0, 0, 0}, 8, "unspecified"},
    {{127, 0, 0, 0}, 8, "loopback"},
    {{10, 0, 0, 0}, 8, "private"},
    {{172, 16, 0, 0}, 12, "private"},
    {{192, 168, 0, 0}, 16, "private"},
    {{169, 254, 0, 0}, 16, "link-local"},
    {{100, 64, 0, 0}, 10, "CGNAT"},
    {{224, 0, 0, 0}, 4, "multicast"},
    {{240, 0, 0, 0}, 4, "reserved"},
    {{192, 0, 0, 0}, 24, "ietf-protocol"},
    {{198, 18, 0, 0}, 15, "benchmarking"},
    {{192, 0, 2, 0}, 24, "documentation"},
    {{198, 51, 100, 0}, 24, "documentation"},
    {{203, 0, 113, 0}, 24, "documentation"},
};

/* TODO: 6to4 (2002::/16) and Teredo (2001::/32) also embed an IPv4 address
 * that could be private; they are treated as public for now. */
static const special_range_t v6_ranges[] = {
    {{0}, 128, "unspecified"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
    /* AWS's IPv6 instance metadata endpoint, fd00:ec2::254. */
    {{0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54}, 128, "metadata"},
    /* Deprecated IPv4-compatible addresses (::a.b.c.d); some stacks still
     * route them to the embedded IPv4 address. */
    {{0}, 96, "ipv4-compatible"},
    {{0xfc}, 7, "private"},
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xff}, 8, "multicast"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation"},
    {{0x01, 0x00}, 64, "discard"},
};

static const uint8_t nat64_prefix[12] = {0, 0x64, 0xff, 0x9b};
static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static const char *match(const special_range_t *ranges, size_t n, const geoip_addr_t *a)
{
    for (size_t i = 0; i < n; i++) {
        geoip_cidr_t c;

        memset(&c, 0, sizeof(c));
        c.addr.family = a->family;
        memcpy(c.addr.bytes, ranges[i].bytes, sizeof(c.addr.bytes));
        c.prefix = ranges[i].prefix;
        if (geoip_cidr_contains(&c, a))
            return ranges[i].name;
    }
    return NULL;
}

const char *geoip_addr_special(const geoip_addr_t *a)
{
    geoip_addr_t v4;

    if (a == NULL)
        return "unspecified";
    if (a->family == AF_INET)
        return match(v4_ranges, sizeof(v4_ranges) / sizeof(v4_ranges[0]), a);
    /* Not something geoip_addr_parse builds; an unknown family is never
     * treated as public. */
    if (a->family != AF_INET6)
        return "unspecified";

    /* A caller may have filled an address by hand without normalising it; a
     * mapped address is its IPv4 address wherever it is connected to. The
     * well-known NAT64 prefix 64:ff9b::/96 reaches its embedded IPv4 address
     * through the translator, so that address decides. */
    if (memcmp(a->bytes, v4_mapped_prefix, 12) == 0 || memcmp(a->bytes, nat64_prefix, 12) == 0) {
        memset(&v4, 0, sizeof(v4));
        v4.family = AF_INET;
        memcpy(v4.bytes, a->bytes + 12, 4);
        return geoip_addr_special(&v4);
    }
    return match(v6_ranges, sizeof(v6_ranges) / sizeof(v6_ranges[0]), a);
}
