/*
 * server/parse: the parsers that stand between client input and storage: long
 * URL acceptance and normalisation (libcurl's URL API, libidn2), short code and
 * back-half validation, redirect target building, user-agent and referrer
 * classification. Pure functions, no I/O, safe from any thread; each one is a
 * libFuzzer target.
 */
#ifndef SHORTLINKD_PARSE_H
#define SHORTLINKD_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PARSE_URL_MAX 16384 /* bytes in an accepted long URL (STORAGE_URL_MAX) */

typedef enum parse_url_error {
    PARSE_URL_OK = 0,
    PARSE_URL_EMPTY,
    PARSE_URL_TOO_LONG,
    PARSE_URL_CONTROL_CHAR, /* raw CR, LF, NUL or other control byte */
    PARSE_URL_NOT_ABSOLUTE, /* no scheme, e.g. "example.com" */
    PARSE_URL_BAD_SCHEME,   /* javascript:, data:, ftp:, ... */
    PARSE_URL_BAD_HOST,     /* empty, or an IDN that does not convert */
    PARSE_URL_OWN_DOMAIN,   /* points at our own short domain */
    PARSE_URL_MALFORMED,
} parse_url_error_t;

/* A sentence describing an error, for the API's error body. */
const char *parse_url_strerror(parse_url_error_t e);

/* Accepts and normalises a long URL into out (NUL-terminated, at most outlen-1
 * bytes; outlen should be PARSE_URL_MAX + 1): absolute http or https only, the
 * host lowercased and converted to its ASCII (punycode) form, existing
 * percent-escapes kept byte for byte, bytes not allowed in a URL (spaces,
 * non-ASCII) percent-encoded, query and fragment kept as written. own_host is our
 * short domain's host (with port if any), or NULL. */
parse_url_error_t parse_long_url(const char *in, size_t len, const char *own_host, char *out,
                                 size_t outlen);

/* Alphabet of generated codes, and their length. */
#define PARSE_CODE_ALPHABET "23456789bcdfghjkmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ"
#define PARSE_CODE_LEN      7
#define PARSE_BACKHALF_MIN  3
#define PARSE_BACKHALF_MAX  64

/* Whether a custom back-half is acceptable: PARSE_BACKHALF_MIN..MAX bytes of
 * [A-Za-z0-9_-], not a reserved route name (v4, app, healthz, metrics, ...). */
bool parse_backhalf_valid(const char *s, size_t len);
/* Whether a request path segment can be a code at all (cheap check before any
 * lookup): 1..64 bytes of [A-Za-z0-9_-]. */
bool parse_code_plausible(const char *s, size_t len);

/* Builds the redirect target: the stored long URL with the visitor's query
 * appended to its own query (after '&', or after a new '?'), before any
 * fragment; and with the QR marker parameter removed from the visitor's query.
 * Returns the length written (not counting the NUL), or 0 when out is too small.
 * *is_qr is set when the marker was present. */
#define PARSE_QR_MARKER "sl_qr"
size_t parse_redirect_target(const char *long_url, size_t url_len, const char *query,
                             size_t query_len, char *out, size_t outlen, bool *is_qr);

typedef enum parse_device {
    PARSE_DEVICE_OTHER = 0,
    PARSE_DEVICE_DESKTOP = 1,
    PARSE_DEVICE_MOBILE = 2,
    PARSE_DEVICE_TABLET = 3,
    PARSE_DEVICE_BOT = 4,
} parse_device_t;

/* Classifies a User-Agent header (may be NULL): known crawlers, link-preview
 * fetchers and HTTP libraries are bots. */
parse_device_t parse_user_agent(const char *ua, size_t len);

/* The host of a Referer header, lowercased, into out (NUL-terminated); "direct"
 * when there is none or it cannot be parsed. */
void parse_referrer_host(const char *ref, size_t len, char *out, size_t outlen);

#endif
