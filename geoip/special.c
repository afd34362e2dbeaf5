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
    /* The 6to4 relay anycast prefix, deprecated (RFC 7526): whichever relay
     * answers is no one's public service. */
    {{192, 88, 99, 0}, 24, "6to4-relay"},
    {{198, 18, 0, 0}, 15, "benchmarking"},
    {{192, 0, 2, 0}, 24, "documentation"},
    {{198, 51, 100, 0}, 24, "documentation"},
    {{203, 0, 113, 0}, 24, "documentation"},
};

/* 6to4 (2002::/16) is judged by its embedded IPv4 address before this table,
 * in geoip_addr_special. */
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
    /* Teredo tunnels to the client's IPv4 address and port, obfuscated in the
     * last 48 bits, through a relay chosen by routing; neither a visitor's
     * country nor where a webhook would end up can be told from the address,
     * so the whole prefix is special. It lies inside 2001::/23 and comes
     * first so that it is named. */
    {{0x20, 0x01, 0x00, 0x00}, 32, "teredo"},
    /* IETF protocol assignments (RFC 2928, RFC 6890): ORCHID, AMT, AS112 and
     * other infrastructure, none of it a service to call. */
    {{0x20, 0x01, 0x00, 0x00}, 23, "ietf-protocol"},
};

static const uint8_t nat64_prefix[12] = {0, 0x64, 0xff, 0x9b};
static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
static const uint8_t six_to_four_prefix[2] = {0x20, 0x02};

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

/* The range of the IPv4 address in the 4 bytes at bytes. */
static const char *special_v4(const uint8_t *bytes)
{
    geoip_addr_t v4;

    memset(&v4, 0, sizeof(v4));
    v4.family = AF_INET;
    memcpy(v4.bytes, bytes, 4);
    return geoip_addr_special(&v4);
}

const char *geoip_addr_special(const geoip_addr_t *a)
{
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
    if (memcmp(a->bytes, v4_mapped_prefix, 12) == 0 || memcmp(a->bytes, nat64_prefix, 12) == 0)
        return special_v4(a->bytes + 12);
    /* A 6to4 address (2002:AABB:CCDD::/48) is routed, through a relay, to
     * the IPv4 address in bits 16 to 47, so 2002:7f00:1:: is 127.0.0.1. */
    if (memcmp(a->bytes, six_to_four_prefix, 2) == 0)
        return special_v4(a->bytes + 2);
    return match(v6_ranges, sizeof(v6_ranges) / sizeof(v6_ranges[0]), a);
}
