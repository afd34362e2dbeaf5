/*
 * geoip/addr.c: textual and socket forms of addresses, and CIDR ranges.
 *
 * Every address that leaves this file is normalised: an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) becomes plain IPv4, so that a visitor reaching us
 * over a dual-stack socket is the same visitor, range and country as over IPv4.
 */
#include "geoip.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* Longest text inet_pton could accept for IPv6 ("ffff:...:255.255.255.255"),
 * plus brackets; anything longer is not an address and is refused unread. */
#define ADDR_TEXT_MAX 64

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* b may point into out itself, as when a mapped address is narrowed. */
static void set_v4(geoip_addr_t *out, const uint8_t b[4])
{
    uint8_t v4[4];

    memcpy(v4, b, sizeof(v4));
    memset(out, 0, sizeof(*out));
    out->family = AF_INET;
    memcpy(out->bytes, v4, sizeof(v4));
}

static void set_v6_normalised(geoip_addr_t *out, const uint8_t b[16])
{
    if (memcmp(b, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
        set_v4(out, b + 12);
        return;
    }
    memset(out, 0, sizeof(*out));
    out->family = AF_INET6;
    memcpy(out->bytes, b, 16);
}

/* Parses without normalising, so that a CIDR range can clear its host bits
 * before deciding whether it is still a mapped range. */
static bool parse_raw(geoip_addr_t *out, const char *s, size_t len)
{
    char text[ADDR_TEXT_MAX];
    uint8_t b[16];

    if (s == NULL || len == 0 || len >= sizeof(text))
        return false;
    /* inet_pton stops at a NUL; an embedded one would hide trailing bytes. */
    if (memchr(s, '\0', len) != NULL)
        return false;
    if (s[0] == '[') {
        if (len < 3 || s[len - 1] != ']')
            return false;
        s++;
        len -= 2;
        memcpy(text, s, len);
        text[len] = '\0';
        /* Brackets only ever wrap IPv6 (RFC 3986 IP-literal). */
        if (inet_pton(AF_INET6, text, b) != 1)
            return false;
        memset(out, 0, sizeof(*out));
        out->family = AF_INET6;
        memcpy(out->bytes, b, 16);
        return true;
    }
    memcpy(text, s, len);
    text[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, text, b) == 1) {
        out->family = AF_INET;
        memcpy(out->bytes, b, 4);
        return true;
    }
    if (inet_pton(AF_INET6, text, b) == 1) {
        out->family = AF_INET6;
        memcpy(out->bytes, b, 16);
        return true;
    }
    return false;
}

bool geoip_addr_parse(geoip_addr_t *out, const char *s, size_t len)
{
    geoip_addr_t raw;

    if (!parse_raw(&raw, s, len))
        return false;
    if (raw.family == AF_INET6)
        set_v6_normalised(out, raw.bytes);
    else
        *out = raw;
    return true;
}

bool geoip_addr_from_sockaddr(geoip_addr_t *out, const struct sockaddr *sa)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        set_v4(out, (const uint8_t *)&sin->sin_addr);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        set_v6_normalised(out, sin6->sin6_addr.s6_addr);
        return true;
    }
    return false;
}

void geoip_addr_format(const geoip_addr_t *a, char *buf, size_t buflen)
{
    if (buf == NULL || buflen == 0)
        return;
    buf[0] = '\0';
    if (a == NULL || (a->family != AF_INET && a->family != AF_INET6))
        return;
    /* inet_ntop fails rather than truncating, which leaves "" as promised. */
    if (inet_ntop(a->family, a->bytes, buf, (socklen_t)(buflen > 64 ? 64 : buflen)) == NULL)
        buf[0] = '\0';
}

static unsigned addr_bits(const geoip_addr_t *a)
{
    return a->family == AF_INET ? 32 : 128;
}

static void clear_host_bits(geoip_addr_t *a, unsigned prefix)
{
    unsigned total = addr_bits(a);

    for (unsigned bit = prefix; bit < total; bit++)
        a->bytes[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
}

/* A prefix is plain decimal: no sign, no spaces, no leading zeros (which some
 * parsers read as octal), at most three digits. */
static bool parse_prefix(const char *s, unsigned *out)
{
    size_t n = strlen(s);
    unsigned v = 0;

    if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

bool geoip_cidr_parse(geoip_cidr_t *out, const char *s)
{
    geoip_addr_t a;
    const char *slash;
    size_t addr_len;
    unsigned prefix;

    if (out == NULL || s == NULL)
        return false;
    slash = strchr(s, '/');
    addr_len = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (!parse_raw(&a, s, addr_len))
        return false;
    if (slash == NULL)
        prefix = addr_bits(&a);
    else if (!parse_prefix(slash + 1, &prefix) || prefix > addr_bits(&a))
        return false;
    clear_host_bits(&a, prefix);

    /* ::ffff:a.b.c.d/N with N >= 96 is the IPv4 range a.b.c.d/(N-96), which is
     * how every address compared against it will have been normalised. */
    if (a.family == AF_INET6 && prefix >= 96 &&
        memcmp(a.bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
        set_v4(&a, a.bytes + 12);
        prefix -= 96;
    }
    memset(out, 0, sizeof(*out));
    out->addr = a;
    out->prefix = (uint8_t)prefix;
    return true;
}

bool geoip_cidr_contains(const geoip_cidr_t *c, const geoip_addr_t *a)
{
    unsigned full, rest;

    if (c == NULL || a == NULL || c->addr.family != a->family)
        return false;
    if (a->family != AF_INET && a->family != AF_INET6)
        return false;
    if (c->prefix > addr_bits(a))
        return false;
    full = c->prefix / 8;
    rest = c->prefix % 8;
    if (memcmp(c->addr.bytes, a->bytes, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (c->addr.bytes[full] & mask) == (a->bytes[full] & mask);
}

bool geoip_cidr_list_contains(const geoip_cidr_t *list, size_t n, const geoip_addr_t *a)
{
    for (size_t i = 0; i < n; i++) {
        if (geoip_cidr_contains(&list[i], a))
            return true;
    }
    return false;
}
