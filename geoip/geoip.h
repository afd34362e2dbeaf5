/*
 * geoip/: what shortlinkd knows about IP addresses: their country (through one
 * memory-mapped MaxMind database, libmaxminddb), CIDR ranges, and which ranges
 * are private, loopback and the like.
 *
 * Addresses are geoip_addr_t: IPv4 is kept as 4 bytes, and IPv4-mapped IPv6
 * (::ffff:a.b.c.d) is turned into IPv4 by every function that builds one.
 *
 * Return codes: 0 on success, -1 on failure with a sentence in the caller's
 * err buffer; lookups return whether a country was found (a result, not a
 * failure). Nothing here prints.
 */
#ifndef SHORTLINKD_GEOIP_H
#define SHORTLINKD_GEOIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct geoip_addr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bytes[16];
} geoip_addr_t;

typedef struct geoip_cidr {
    geoip_addr_t addr;
    uint8_t prefix;
} geoip_cidr_t;

/* Parses a textual address ("81.2.69.160", "2001:db8::1", "::ffff:1.2.3.4",
 * "[::1]"); mapped addresses come out as IPv4. Returns false when invalid. */
bool geoip_addr_parse(geoip_addr_t *out, const char *s, size_t len);
bool geoip_addr_from_sockaddr(geoip_addr_t *out, const struct sockaddr *sa);
/* Writes the textual form (NUL-terminated) into buf of at least 46 bytes. */
void geoip_addr_format(const geoip_addr_t *a, char *buf, size_t buflen);

/* Parses "10.0.0.0/8", "::1/128" or a bare address (a host route). Host bits
 * past the prefix are cleared. Returns false when invalid. */
bool geoip_cidr_parse(geoip_cidr_t *out, const char *s);
bool geoip_cidr_contains(const geoip_cidr_t *c, const geoip_addr_t *a);
bool geoip_cidr_list_contains(const geoip_cidr_t *list, size_t n, const geoip_addr_t *a);

/* Why an address is not public: NULL when it is public, else a short name of
 * its range ("loopback", "private", "link-local", "CGNAT", "multicast",
 * "unspecified", "metadata", "reserved", "documentation", ...). */
const char *geoip_addr_special(const geoip_addr_t *a);

/* Finds the visitor among a peer and its X-Forwarded-For header: the peer,
 * unless it is a trusted proxy; then the header's entries from the right,
 * skipping trusted proxies and invalid entries, and the first untrusted one is
 * the visitor. When every entry is trusted, the leftmost valid one is. xff may
 * be NULL. */
geoip_addr_t geoip_visitor(const geoip_addr_t *peer, const char *xff, size_t xff_len,
                           const geoip_cidr_t *trusted, size_t n_trusted);

/* ---- the country database ---- */

typedef struct geoip_db geoip_db_t;

/* Opens a MaxMind database (memory-mapping a private copy of the file, so a
 * rewrite of the file in place cannot pull pages from under lookups) and checks
 * that it answers a lookup in a layout we understand (country.iso_code, or a
 * top-level country code as the ip-location-db files have). On failure err
 * names the file and reason. */
geoip_db_t *geoip_open(const char *path, char *err, size_t errlen);
void geoip_close(geoip_db_t *db);
/* The country of an address as ISO alpha-2 into out (NUL-terminated). Returns
 * false and writes "" when the address is special or unknown. Safe to call
 * from many threads at once. */
bool geoip_country(const geoip_db_t *db, const geoip_addr_t *a, char out[3]);
/* Database description for logs: type and build time. */
const char *geoip_describe(const geoip_db_t *db);

#endif
