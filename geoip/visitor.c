/*
 * geoip/visitor.c: who the visitor is, given the socket peer and the
 * X-Forwarded-For header (DESIGN.md section 5).
 *
 * Only a trusted proxy's word is taken: a client can write anything into the
 * header, but each trusted proxy appends the address it saw on the right. So
 * the header is read from the right, past our own proxies, and the first
 * address that is not one of them is the furthest hop we can vouch for.
 */
#include "geoip.h"

#include <string.h>

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

/* One header entry, already trimmed: an address, "[v6]", "[v6]:port" or
 * "a.b.c.d:port". Some proxies (Azure's, IIS) append the client's port; the
 * port says nothing about the visitor and is dropped. */
static bool parse_entry(geoip_addr_t *out, const char *s, size_t n)
{
    const char *colon;

    if (n == 0)
        return false;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return false;
        size_t inner = (size_t)(close - s) + 1;
        if (inner != n && !(s[inner] == ':' && all_digits(s + inner + 1, n - inner - 1)))
            return false;
        return geoip_addr_parse(out, s, inner);
    }
    if (geoip_addr_parse(out, s, n))
        return true;
    /* A single colon can only be IPv4 with a port; IPv6 has at least two. */
    colon = memchr(s, ':', n);
    if (colon == NULL || memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) != NULL)
        return false;
    if (!all_digits(colon + 1, n - (size_t)(colon - s) - 1))
        return false;
    return geoip_addr_parse(out, s, (size_t)(colon - s)) && out->family == AF_INET;
}

geoip_addr_t geoip_visitor(const geoip_addr_t *peer, const char *xff, size_t xff_len,
                           const geoip_cidr_t *trusted, size_t n_trusted)
{
    geoip_addr_t leftmost_valid = *peer;
    size_t end = xff_len;

    if (xff == NULL || xff_len == 0 || !geoip_cidr_list_contains(trusted, n_trusted, peer))
        return *peer;

    /* Walk entries right to left; [start, stop) is the current entry. */
    while (end > 0) {
        size_t start = end;
        size_t stop = end;
        geoip_addr_t a;

        while (start > 0 && xff[start - 1] != ',')
            start--;
        end = start > 0 ? start - 1 : 0;

        size_t first = start;
        while (first < stop && is_ows(xff[first]))
            first++;
        while (stop > first && is_ows(xff[stop - 1]))
            stop--;
        if (!parse_entry(&a, xff + first, stop - first))
            continue;
        if (!geoip_cidr_list_contains(trusted, n_trusted, &a))
            return a;
        leftmost_valid = a;
    }
    return leftmost_valid;
}
