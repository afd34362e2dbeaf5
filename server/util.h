/*
 * server/util: small helpers shared by the handlers: randomness, identifiers,
 * clocks and date formats, digests, and allocation that aborts on exhaustion.
 */
#ifndef SHORTLINKD_UTIL_H
#define SHORTLINKD_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define UTIL_GUID_LEN  11
#define UTIL_TOKEN_LEN 40

/* Allocation wrappers: out of memory is fatal, logged with the location. */
void *util_malloc_at(size_t n, const char *where);
void *util_calloc_at(size_t n, size_t size, const char *where);
char *util_strndup_at(const char *s, size_t n, const char *where);
#define UTIL_STR2(x)   #x
#define UTIL_STR(x)    UTIL_STR2(x)
#define xmalloc(n)     util_malloc_at((n), __FILE__ ":" UTIL_STR(__LINE__))
#define xcalloc(n, s)  util_calloc_at((n), (s), __FILE__ ":" UTIL_STR(__LINE__))
#define xstrndup(s, n) util_strndup_at((s), (n), __FILE__ ":" UTIL_STR(__LINE__))

/* Cryptographically random bytes (getrandom); aborts if the kernel refuses. */
void util_random(void *buf, size_t n);
/* Fast per-thread random numbers for the hot path (not for secrets). */
uint64_t util_fast_random(void);

/* A Bitly-style guid: an upper-case letter and ten base62 characters + NUL. */
void util_guid(char out[UTIL_GUID_LEN + 1]);
/* A UUIDv7 for the given time. */
void util_uuid7(uint8_t out[16], int64_t time_us);
/* An API token: 40 lower-case hex characters + NUL. */
void util_token(char out[UTIL_TOKEN_LEN + 1]);
/* A short code of the given length from PARSE_CODE_ALPHABET + NUL. */
void util_code(char *out, size_t len);

int64_t util_now_us(void);
/* "2026-01-02T03:04:05+0000" (Bitly's format) into out[32]. */
void util_format_bitly_time(int64_t time_us, char out[32]);

/* Parses an RFC 3339 time ("2026-01-02T03:04:05Z", "...+05:30", fractions
 * kept to the microsecond), and Bitly's own "+0530" offset form, into Unix
 * microseconds and the offset in seconds east of UTC. The year must be 1970 to
 * 9999 in the time's own offset, and the date must exist. Returns NULL, or
 * what the time must be, as a phrase for an error message. */
const char *util_parse_rfc3339(const char *s, int64_t *out_us, int *offset_s);

/* SHA-256 of data into out[32]. */
void util_sha256(const void *data, size_t len, uint8_t out[32]);
/* Lower-case hex of n bytes into out (2n+1 bytes). */
void util_hex(const uint8_t *in, size_t n, char *out);

#endif
