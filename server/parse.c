/*
 * server/parse: client input to checked values. Long URLs are split here only
 * as far as needed to find the authority and the path; libcurl's URL API
 * validates the whole URL and normalises the host (IPv4 forms, percent-escapes)
 * and libidn2 turns international hosts into their ASCII form. Nothing here
 * allocates except what libcurl and libidn2 do internally, nothing prints.
 */
#include "parse.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <idn2.h>
#include <stdlib.h>
#include <string.h>

/* An ASCII host name fits in 253 bytes; an IPv6 literal with brackets in 47.
 * Anything longer cannot be resolved, so it is refused rather than stored. */
#define HOST_MAX 255
/* A User-Agent longer than this is scanned only up to here: every token we look
 * for appears early, and the cost per request stays bounded. */
#define UA_SCAN_MAX 1024

/* Why the code alphabet in parse.h looks the way it does: no vowels, so that
 * generated codes never spell words, and none of 0, 1, l, o, i, whose glyphs are
 * confused when a code is read aloud or typed from print. Upper-case L stays, as
 * it is not mistaken for 1. 49 symbols in 7 places give about 6.8e11 codes. */

/* Route names that a custom back-half must not shadow. Some cannot pass the
 * character check anyway; they are listed so the list is the route table. */
static const char *const reserved_names[] = {
    "v4", "app", "healthz", "metrics", "qr", "bio", "api", "static", "favicon.ico", "robots.txt",
};

/* A bounded writer into a caller's buffer; ok turns false for good on the first
 * byte that does not fit, so call sites check once at the end. */
typedef struct writer {
    char *p;
    size_t len;
    size_t cap; /* bytes usable, the NUL excluded */
    bool ok;
} writer_t;

static void put(writer_t *w, const char *s, size_t n)
{
    if (!w->ok || n > w->cap - w->len) {
        w->ok = false;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void put_escaped(writer_t *w, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    char esc[3] = {'%', hex[c >> 4], hex[c & 15]};

    put(w, esc, sizeof(esc));
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    }
    return true;
}

/* Case-insensitive search for a NUL-terminated needle in hay[0..len), returning
 * the offset or -1. The needles are short constants, so the naive scan is fine. */
static long find_ci(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);

    for (size_t i = 0; n <= len && i <= len - n; i++) {
        if (ieq(hay + i, needle, n))
            return (long)i;
    }
    return -1;
}

const char *parse_url_strerror(parse_url_error_t e)
{
    switch (e) {
    case PARSE_URL_OK:
        return "The URL is valid.";
    case PARSE_URL_EMPTY:
        return "The URL is empty.";
    case PARSE_URL_TOO_LONG:
        return "The URL is longer than 16384 bytes.";
    case PARSE_URL_CONTROL_CHAR:
        return "The URL contains a control character such as a line break or tab.";
    case PARSE_URL_NOT_ABSOLUTE:
        return "The URL must be absolute and start with http:// or https://.";
    case PARSE_URL_BAD_SCHEME:
        return "Only http and https URLs can be shortened.";
    case PARSE_URL_BAD_HOST:
        return "The URL's host name is missing or is not a valid domain name.";
    case PARSE_URL_OWN_DOMAIN:
        return "The URL points at this shortener's own domain.";
    case PARSE_URL_MALFORMED:
        return "The URL is malformed.";
    }
    return "The URL is invalid.";
}

/* --- long URLs ------------------------------------------------------------- */

/* The pieces of the input found before libcurl sees it. Offsets are into the
 * candidate URL built in the caller's output buffer. */
typedef struct url_split {
    bool https;
    size_t hostport_off, hostport_len; /* host[:port] as written */
    size_t rest_off, rest_len;         /* path, query, fragment after encoding */
} url_split_t;

static bool has_control_byte(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f)
            return true;
    }
    return false;
}

/* Reads the scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":")
 * and accepts http and https only. Input without a scheme is a relative
 * reference; a "scheme" holding a dot is really a host followed by a port
 * ("example.com:8080/x"), so both are NOT_ABSOLUTE rather than BAD_SCHEME. */
static parse_url_error_t read_scheme(const char *in, size_t len, url_split_t *sp, size_t *end)
{
    size_t i = 0;
    bool dot = false;

    if (len == 0 || !is_alpha((unsigned char)in[0]))
        return PARSE_URL_NOT_ABSOLUTE;
    while (i < len && (is_alpha((unsigned char)in[i]) || is_digit((unsigned char)in[i]) ||
                       in[i] == '+' || in[i] == '-' || in[i] == '.')) {
        dot = dot || in[i] == '.';
        i++;
    }
    if (i == len || in[i] != ':' || dot)
        return PARSE_URL_NOT_ABSOLUTE;

    if (i == 4 && ieq(in, "http", 4)) {
        sp->https = false;
    } else if (i == 5 && ieq(in, "https", 5)) {
        sp->https = true;
    } else {
        return PARSE_URL_BAD_SCHEME;
    }
    *end = i + 1;
    return PARSE_URL_OK;
}

/* Percent-encodes what may not appear raw in a URL we hand out: spaces and
 * bytes outside ASCII. Control bytes were refused before this point. Existing
 * escapes are copied as they are, so nothing is ever encoded twice. */
static void put_url_bytes(writer_t *w, const char *s, size_t n)
{
    size_t run = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == ' ' || c >= 0x80) {
            put(w, s + run, i - run);
            put_escaped(w, c);
            run = i + 1;
        }
    }
    put(w, s + run, n - run);
}

/* Userinfo is kept, encoded like the path, and with every '@' but the one that
 * ends it escaped: browsers take the last '@' as the end of userinfo while
 * libcurl takes the first, and the two must agree on which host we redirect to. */
static void put_userinfo(writer_t *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '@')
            put_escaped(w, '@');
        else
            put_url_bytes(w, s + i, 1);
    }
    put(w, "@", 1);
}

/* Writes the candidate URL into w: lower-case scheme, userinfo, the host and
 * port as written (libcurl and libidn2 take them from here), and the encoded
 * rest, with "/" for an empty path so that "http://example.com" and
 * "http://example.com/" are stored alike. */
static parse_url_error_t build_candidate(const char *in, size_t len, writer_t *w, url_split_t *sp)
{
    size_t pos = 0;
    parse_url_error_t e = read_scheme(in, len, sp, &pos);

    if (e != PARSE_URL_OK)
        return e;

    /* One form only: scheme, "//", authority. libcurl also takes "http:/x" and
     * "http:///x", which browsers read differently from each other. */
    if (len - pos < 2 || in[pos] != '/' || in[pos + 1] != '/')
        return PARSE_URL_MALFORMED;
    pos += 2;

    size_t auth = pos;
    while (pos < len && !strchr("/?#\\", in[pos]))
        pos++;
    /* Browsers end the authority at a backslash and libcurl does not, so
     * "https://a.example\@b.example/" would go to a different host than the one
     * we checked. */
    if (pos < len && in[pos] == '\\')
        return PARSE_URL_MALFORMED;
    if (pos == auth)
        return PARSE_URL_BAD_HOST;

    size_t at = pos;
    while (at > auth && in[at - 1] != '@')
        at--;

    put(w, sp->https ? "https://" : "http://", sp->https ? 8 : 7);
    if (at > auth)
        put_userinfo(w, in + auth, at - 1 - auth);
    sp->hostport_off = w->len;
    sp->hostport_len = pos - at;
    put(w, in + at, pos - at);
    sp->rest_off = w->len;
    if (pos == len || in[pos] != '/')
        put(w, "/", 1);
    put_url_bytes(w, in + pos, len - pos);
    sp->rest_len = w->len - sp->rest_off;
    return w->ok ? PARSE_URL_OK : PARSE_URL_TOO_LONG;
}

static parse_url_error_t from_curl_error(CURLUcode rc)
{
    switch (rc) {
    case CURLUE_OK:
        return PARSE_URL_OK;
    case CURLUE_OUT_OF_MEMORY:
        /* The project's policy: out of memory is fatal (see server/util.h). */
        abort();
    case CURLUE_BAD_HOSTNAME:
    case CURLUE_NO_HOST:
    case CURLUE_BAD_IPV6:
    case CURLUE_LACKS_IDN:
        return PARSE_URL_BAD_HOST;
    default:
        return PARSE_URL_MALFORMED;
    }
}

static bool is_host_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '.' || c == '_';
}

static bool is_ipv6_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'f') || is_digit(c) || c == ':' || c == '.';
}

/* Turns the host libcurl parsed (percent-escapes already decoded, numeric IPv4
 * forms already dotted) into the form we store: lower case, ASCII, with
 * international names in their punycode form. Plain ASCII names do not go
 * through libidn2, which would refuse names that work in practice (a leading
 * hyphen, an underscore, "--" in the third place). */
static parse_url_error_t normalise_host(const char *host, char *out, size_t outlen)
{
    size_t n = strlen(host);
    bool needs_idn = false;

    if (n == 0)
        return PARSE_URL_BAD_HOST;
    for (size_t i = 0; i < n; i++)
        needs_idn = needs_idn || (unsigned char)host[i] >= 0x80;
    needs_idn = needs_idn || (host[0] != '[' && find_ci(host, n, "xn--") >= 0);

    /* TODO: names IDNA2008 disallows (emoji domains) are refused, though some
     * browsers still open them. */
    if (needs_idn) {
        char *ascii = NULL;
        int rc = idn2_lookup_u8((const uint8_t *)host, (uint8_t **)&ascii, IDN2_NONTRANSITIONAL);

        if (rc == IDN2_MALLOC)
            abort();
        if (rc != IDN2_OK)
            return PARSE_URL_BAD_HOST;
        n = strlen(ascii);
        if (n >= outlen) {
            idn2_free(ascii);
            return PARSE_URL_BAD_HOST;
        }
        memcpy(out, ascii, n + 1);
        idn2_free(ascii);
    } else {
        if (n >= outlen)
            return PARSE_URL_BAD_HOST;
        for (size_t i = 0; i <= n; i++)
            out[i] = ascii_lower(host[i]);
    }

    /* Whatever the libraries let through, only these bytes reach a Location
     * header: a decoded "%2f" or a space in a host ends here. */
    if (out[0] == '[') {
        if (n < 3 || out[n - 1] != ']')
            return PARSE_URL_BAD_HOST;
        for (size_t i = 1; i + 1 < n; i++) {
            if (!is_ipv6_byte((unsigned char)out[i]))
                return PARSE_URL_BAD_HOST;
        }
        return PARSE_URL_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_host_byte((unsigned char)out[i]))
            return PARSE_URL_BAD_HOST;
    }
    return n > 0 && strcmp(out, ".") != 0 ? PARSE_URL_OK : PARSE_URL_BAD_HOST;
}

/* Parses "http://<host>/" and normalises the host libcurl reads from it. */
static parse_url_error_t reparse_host(const char *host, char *out, size_t outlen)
{
    char url[HOST_MAX + 16];
    writer_t w = {url, 0, sizeof(url) - 1, true};
    parse_url_error_t e = PARSE_URL_BAD_HOST;
    CURLU *u = curl_url();
    char *part = NULL;
    CURLUcode rc;

    if (u == NULL)
        abort();
    put(&w, "http://", 7);
    put(&w, host, strlen(host));
    put(&w, "/", 1);
    if (!w.ok)
        goto out;
    url[w.len] = '\0';

    rc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (rc == CURLUE_OK)
        rc = curl_url_get(u, CURLUPART_HOST, &part, 0);
    e = rc == CURLUE_OK ? normalise_host(part, out, outlen) : from_curl_error(rc);

out:
    curl_free(part);
    curl_url_cleanup(u);
    return e;
}

/* Normalising a host can yield a host that normalises further: libcurl
 * decodes "%32130706433" after it has read numeric IPv4 forms, and IDNA maps
 * full-width digits to ASCII ones. Browsers read the end result, so we store
 * it, and what we store parses to itself. */
static parse_url_error_t settle_host(char *host, size_t hostlen)
{
    char next[HOST_MAX + 1];

    for (int round = 0; round < 3; round++) {
        parse_url_error_t e = reparse_host(host, next, sizeof(next));

        if (e != PARSE_URL_OK)
            return e;
        if (strcmp(next, host) == 0)
            return PARSE_URL_OK;
        if (strlen(next) >= hostlen)
            return PARSE_URL_BAD_HOST;
        memcpy(host, next, strlen(next) + 1);
    }
    return PARSE_URL_BAD_HOST;
}

/* The bytes of an IP literal host ("a.b.c.d" or "[v6]"), an IPv4-mapped IPv6
 * address read as its IPv4 address, since that is the socket it reaches.
 * Returns 4 or 16, or 0 when the host is a name. */
static size_t ip_literal_bytes(const char *s, size_t len, unsigned char out[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char text[64];
    unsigned char b[16];

    if (len == 0 || len >= sizeof(text))
        return 0;
    if (s[0] != '[') {
        memcpy(text, s, len);
        text[len] = '\0';
        return inet_pton(AF_INET, text, out) == 1 ? 4 : 0;
    }
    if (len < 3 || s[len - 1] != ']')
        return 0;
    memcpy(text, s + 1, len - 2);
    text[len - 2] = '\0';
    if (inet_pton(AF_INET6, text, b) != 1)
        return 0;
    if (memcmp(b, mapped, sizeof(mapped)) == 0) {
        memcpy(out, b + 12, 4);
        return 4;
    }
    memcpy(out, b, 16);
    return 16;
}

/* Host names compare case-insensitively and with or without the final dot of
 * a fully qualified name, which resolves the same; IP literals compare as
 * addresses, so that "[::ffff:127.0.0.1]" or an uncompressed IPv6 address is
 * the host it spells. */
static bool same_host(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char ia[16], ib[16];

    if (alen > 0 && a[alen - 1] == '.')
        alen--;
    if (blen > 0 && b[blen - 1] == '.')
        blen--;
    size_t na = ip_literal_bytes(a, alen, ia);
    size_t nb = ip_literal_bytes(b, blen, ib);
    if (na != 0 || nb != 0)
        return na == nb && memcmp(ia, ib, na) == 0;
    return alen == blen && ieq(a, b, alen);
}

/* Splits "host", "host:port", "[v6]" or "[v6]:port"; *port is 0 when absent or
 * not a number. */
static size_t split_host_port(const char *s, size_t len, unsigned *port)
{
    size_t hlen = len;
    const char *colon = NULL;

    *port = 0;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        hlen = close ? (size_t)(close - s) + 1 : len;
        if (hlen < len && s[hlen] == ':')
            colon = s + hlen;
    } else {
        colon = memrchr(s, ':', len);
        if (colon)
            hlen = (size_t)(colon - s);
    }
    if (colon) {
        for (const char *p = colon + 1; p < s + len && is_digit((unsigned char)*p); p++) {
            *port = *port * 10 + (unsigned)(*p - '0');
            if (*port > 65535) {
                *port = 0;
                break;
            }
        }
    }
    return hlen;
}

/* own_host names our short domain as the operator configured it. Without a
 * port it stands for the default ports of both schemes; with one, a URL that
 * gives no port matches when the configured port is a default one. */
static bool is_own_host(const char *own_host, const char *host, unsigned port, bool https,
                        bool explicit_port)
{
    unsigned own_port;
    size_t own_len;

    if (own_host == NULL || own_host[0] == '\0')
        return false;
    own_len = split_host_port(own_host, strlen(own_host), &own_port);
    if (own_len > HOST_MAX)
        return false;

    /* The operator may have written the domain in Unicode or in another
     * spelling of an address; compare the form a target's host is stored in. */
    char configured[HOST_MAX + 1], own[HOST_MAX + 1];
    memcpy(configured, own_host, own_len);
    configured[own_len] = '\0';
    if (reparse_host(configured, own, sizeof(own)) != PARSE_URL_OK)
        memcpy(own, configured, own_len + 1);
    if (!same_host(own, strlen(own), host, strlen(host)))
        return false;

    unsigned effective = explicit_port ? port : (https ? 443u : 80u);
    if (own_port == 0)
        return effective == 80 || effective == 443;
    return own_port == effective || (!explicit_port && (own_port == 80 || own_port == 443));
}

/* Asks libcurl to validate the candidate and returns its view of host and port:
 * the port only when written and not the scheme's default. */
static parse_url_error_t check_with_curl(const char *candidate, bool https, char *host,
                                         size_t hostlen, unsigned *port)
{
    parse_url_error_t e = PARSE_URL_MALFORMED;
    CURLU *u = curl_url();
    char *part = NULL;
    CURLUcode rc;

    if (u == NULL)
        abort();
    *port = 0;

    /* PATH_AS_IS: dot segments are the target site's business, and removing them
     * would be the only change made to a path that is otherwise kept as written. */
    rc = curl_url_set(u, CURLUPART_URL, candidate, CURLU_PATH_AS_IS);
    if (rc != CURLUE_OK) {
        e = from_curl_error(rc);
        goto out;
    }

    /* A zone id only means something on the machine that wrote the link. */
    rc = curl_url_get(u, CURLUPART_ZONEID, &part, 0);
    curl_free(part);
    part = NULL;
    if (rc != CURLUE_NO_ZONEID) {
        e = rc == CURLUE_OK ? PARSE_URL_BAD_HOST : from_curl_error(rc);
        goto out;
    }

    rc = curl_url_get(u, CURLUPART_PORT, &part, 0);
    if (rc == CURLUE_OK) {
        unsigned p = 0;

        for (const char *c = part; *c && p <= 65535; c++)
            p = p * 10 + (unsigned)(*c - '0');
        *port = p == (https ? 443u : 80u) ? 0 : p;
    } else if (rc != CURLUE_NO_PORT) {
        e = from_curl_error(rc);
        goto out;
    }
    curl_free(part);
    part = NULL;

    rc = curl_url_get(u, CURLUPART_HOST, &part, 0);
    if (rc != CURLUE_OK) {
        e = from_curl_error(rc);
        goto out;
    }
    e = normalise_host(part, host, hostlen);
    if (e == PARSE_URL_OK)
        e = settle_host(host, hostlen);

out:
    curl_free(part);
    curl_url_cleanup(u);
    return e;
}

/* Replaces host[:port] as written in the candidate with the normalised form,
 * moving the path after it. */
static bool splice_host(writer_t *w, const url_split_t *sp, const char *host, unsigned port)
{
    char hp[HOST_MAX + 8];
    writer_t h = {hp, 0, sizeof(hp) - 1, true};

    put(&h, host, strlen(host));
    if (port != 0) {
        char digits[8];
        size_t n = sizeof(digits);

        do {
            digits[--n] = (char)('0' + port % 10);
            port /= 10;
        } while (port != 0);
        put(&h, ":", 1);
        put(&h, digits + n, sizeof(digits) - n);
    }
    if (!h.ok || h.len > w->cap - sp->hostport_off - sp->rest_len)
        return false;

    memmove(w->p + sp->hostport_off + h.len, w->p + sp->rest_off, sp->rest_len);
    memcpy(w->p + sp->hostport_off, hp, h.len);
    w->len = sp->hostport_off + h.len + sp->rest_len;
    w->p[w->len] = '\0';
    return true;
}

parse_url_error_t parse_long_url(const char *in, size_t len, const char *own_host, char *out,
                                 size_t outlen)
{
    url_split_t sp = {0};
    char host[HOST_MAX + 1];
    unsigned port = 0;
    parse_url_error_t e;

    if (out == NULL || outlen == 0)
        return PARSE_URL_TOO_LONG;
    out[0] = '\0';
    if (in == NULL || len == 0)
        return PARSE_URL_EMPTY;
    if (len > PARSE_URL_MAX)
        return PARSE_URL_TOO_LONG;
    /* Checked over the untrimmed input: a trailing CR LF is an injection
     * attempt, not whitespace to forgive. */
    if (has_control_byte(in, len))
        return PARSE_URL_CONTROL_CHAR;

    /* Spaces around a pasted URL are a copy-and-paste accident; trimming them
     * leaves " JavaScript:alert(1)" to be refused for its scheme. */
    while (len > 0 && in[0] == ' ') {
        in++;
        len--;
    }
    while (len > 0 && in[len - 1] == ' ')
        len--;
    if (len == 0)
        return PARSE_URL_EMPTY;

    size_t cap = outlen - 1 < PARSE_URL_MAX ? outlen - 1 : PARSE_URL_MAX;
    writer_t w = {out, 0, cap, true};

    e = build_candidate(in, len, &w, &sp);
    if (e != PARSE_URL_OK)
        goto out;
    out[w.len] = '\0';

    e = check_with_curl(out, sp.https, host, sizeof(host), &port);
    if (e != PARSE_URL_OK)
        goto out;
    if (is_own_host(own_host, host, port, sp.https, port != 0)) {
        e = PARSE_URL_OWN_DOMAIN;
        goto out;
    }
    if (!splice_host(&w, &sp, host, port)) {
        e = PARSE_URL_TOO_LONG;
        goto out;
    }

    /* The promise callers rely on for the Location header: printable ASCII only.
     * Everything above should already ensure it; this makes it unconditional. */
    for (size_t i = 0; i < w.len; i++) {
        if ((unsigned char)out[i] < 0x21 || (unsigned char)out[i] > 0x7e) {
            e = PARSE_URL_MALFORMED;
            goto out;
        }
    }

out:
    if (e != PARSE_URL_OK)
        out[0] = '\0';
    return e;
}

/* --- codes ----------------------------------------------------------------- */

static bool is_code_byte(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '_' || c == '-';
}

bool parse_code_plausible(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > PARSE_BACKHALF_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_code_byte((unsigned char)s[i]))
            return false;
    }
    return true;
}

bool parse_backhalf_valid(const char *s, size_t len)
{
    if (len < PARSE_BACKHALF_MIN || !parse_code_plausible(s, len))
        return false;

    /* Case-insensitive, so that "/Metrics" cannot be taken either: a reader
     * would not tell it from the route. */
    for (size_t i = 0; i < sizeof(reserved_names) / sizeof(reserved_names[0]); i++) {
        if (strlen(reserved_names[i]) == len && ieq(s, reserved_names[i], len))
            return false;
    }
    return true;
}

/* --- redirect target ------------------------------------------------------- */

/* Bytes that must not go raw into a Location header or could change how the
 * target is split: controls and spaces (header injection), non-ASCII, '#'
 * (would start a fragment), and the characters RFC 3986 never allows raw. */
static bool query_byte_needs_escape(unsigned char c)
{
    return c < 0x21 || c > 0x7e || strchr("\"#<>\\^`{|}", c) != NULL;
}

/* The stored URL was normalised when accepted, so this changes nothing in it;
 * it is here so that no stored value, however it got there, can split a
 * header. */
static void put_printable(writer_t *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x21 || c > 0x7e)
            put_escaped(w, c);
        else
            put(w, s + i, 1);
    }
}

/* Appends the visitor's parameters, without empty ones and without the QR
 * marker (named exactly PARSE_QR_MARKER, with or without a value), in their
 * order. The first one written gets the separator the base URL needs. */
static void put_visitor_query(writer_t *w, const char *base, size_t base_len, const char *q,
                              size_t qlen, bool *is_qr)
{
    bool first = true;
    const char *qmark = memchr(base, '?', base_len);
    size_t marker_len = strlen(PARSE_QR_MARKER);

    while (qlen > 0) {
        const char *amp = memchr(q, '&', qlen);
        size_t n = amp ? (size_t)(amp - q) : qlen;
        const char *eq = memchr(q, '=', n);
        size_t name_len = eq ? (size_t)(eq - q) : n;

        if (name_len == marker_len && memcmp(q, PARSE_QR_MARKER, marker_len) == 0) {
            *is_qr = true;
        } else if (n > 0) {
            if (!first)
                put(w, "&", 1);
            else if (qmark == NULL)
                put(w, "?", 1);
            else if (base[base_len - 1] != '?' && base[base_len - 1] != '&')
                put(w, "&", 1);
            first = false;

            for (size_t i = 0; i < n; i++) {
                if (query_byte_needs_escape((unsigned char)q[i]))
                    put_escaped(w, (unsigned char)q[i]);
                else
                    put(w, q + i, 1);
            }
        }
        q += amp ? n + 1 : n;
        qlen -= amp ? n + 1 : n;
    }
}

size_t parse_redirect_target(const char *long_url, size_t url_len, const char *query,
                             size_t query_len, char *out, size_t outlen, bool *is_qr)
{
    bool qr = false;

    if (is_qr)
        *is_qr = false;
    if (out == NULL || outlen == 0)
        return 0;
    out[0] = '\0';
    if (long_url == NULL || url_len == 0)
        return 0;
    if (query == NULL)
        query_len = 0;
    /* Accept the query with or without its '?', as servers hand it either way. */
    if (query_len > 0 && query[0] == '?') {
        query++;
        query_len--;
    }

    const char *hash = memchr(long_url, '#', url_len);
    size_t base_len = hash ? (size_t)(hash - long_url) : url_len;
    writer_t w = {out, 0, outlen - 1, true};

    put_printable(&w, long_url, base_len);
    put_visitor_query(&w, long_url, base_len, query, query_len, &qr);
    put_printable(&w, long_url + base_len, url_len - base_len);
    if (is_qr)
        *is_qr = qr;
    if (!w.ok) {
        out[0] = '\0';
        return 0;
    }
    out[w.len] = '\0';
    return w.len;
}

/* --- user agents ----------------------------------------------------------- */

/* Crawlers, link-preview fetchers (they visit when a link is posted, not when
 * it is clicked), headless browsers and HTTP libraries. Matched anywhere,
 * case-insensitively. Names ending in "bot" are also caught by the generic
 * rule below; they are listed so the list says what we know of. */
static const char *const bot_tokens[] = {
    "Twitterbot",      "facebookexternalhit",
    "Facebot",         "LinkedInBot",
    "Slackbot",        "Discordbot",
    "TelegramBot",     "WhatsApp",
    "Googlebot",       "bingbot",
    "Applebot",        "YandexBot",
    "Baiduspider",     "DuckDuckBot",
    "redditbot",       "Pinterestbot",
    "SkypeUriPreview", "Embedly",
    "curl/",           "Wget/",
    "python-requests", "python-urllib",
    "Go-http-client",  "okhttp",
    "HeadlessChrome",  "PhantomJS",
    "libwww-perl",     "Apache-HttpClient",
    "node-fetch",      "axios/",
    "Iframely",        "Slurp",
    "ia_archiver",     "Mediapartners-Google",
    "crawler",         "spider",
    "preview",
};

/* The scanned prefix of a User-Agent, lowered once so that every token is a
 * plain memmem. On the stack: classification runs per click and allocates
 * nothing. */
typedef struct ua_text {
    char low[UA_SCAN_MAX];
    size_t len;
} ua_text_t;

/* Tokens are written as the agents spell them; they are lowered here. */
static bool ua_has(const ua_text_t *t, const char *token)
{
    char low[32];
    size_t n = strlen(token);

    if (n > sizeof(low))
        abort(); /* a token in this file is too long: our mistake */
    for (size_t i = 0; i < n; i++)
        low[i] = ascii_lower(token[i]);
    return memmem(t->low, t->len, low, n) != NULL;
}

static bool ua_has_any(const ua_text_t *t, const char *const *tokens, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ua_has(t, tokens[i]))
            return true;
    }
    return false;
}

#define UA_HAS_ANY(t, ...)                                                                         \
    ua_has_any((t), (const char *const[]){__VA_ARGS__},                                            \
               sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* The generic rule: a word ending in "bot" ("AhrefsBot", "GPTBot/1.0",
 * "MJ12bot;"). The word must end there, so "Botanic" is no bot, and the phone
 * brand Cubot ("Android 9; CUBOT X19") is named as the exception it is. */
static bool has_bot_word(const ua_text_t *t)
{
    const char *p = t->low;
    const char *end = t->low + t->len;
    const char *hit;

    while ((hit = memmem(p, (size_t)(end - p), "bot", 3)) != NULL) {
        const char *word = hit;

        p = hit + 1;
        if (hit + 3 < end && is_alpha((unsigned char)hit[3]))
            continue;
        while (word > t->low &&
               (is_alpha((unsigned char)word[-1]) || is_digit((unsigned char)word[-1])))
            word--;
        if (hit + 3 - word == 5 && memcmp(word, "cubot", 5) == 0)
            continue;
        return true;
    }
    return false;
}

/* A missing or empty User-Agent is classed as a bot: every browser sends one,
 * and what does not is a script or a probe, which should not count as a click. */
parse_device_t parse_user_agent(const char *ua, size_t len)
{
    ua_text_t t;

    if (ua == NULL || len == 0)
        return PARSE_DEVICE_BOT;
    t.len = len < UA_SCAN_MAX ? len : UA_SCAN_MAX;
    for (size_t i = 0; i < t.len; i++)
        t.low[i] = ascii_lower(ua[i]);

    if (ua_has_any(&t, bot_tokens, sizeof(bot_tokens) / sizeof(bot_tokens[0])) || has_bot_word(&t))
        return PARSE_DEVICE_BOT;

    /* Order matters: Windows Phone agents also claim Android, Android tablets
     * differ from phones only by the missing "Mobile", and Windows laptops with
     * touch screens say "Tablet PC". iPads since iPadOS 13 claim to be a
     * Macintosh and count as desktops; nothing in the header tells them apart. */
    if (UA_HAS_ANY(&t, "Windows Phone", "IEMobile"))
        return PARSE_DEVICE_MOBILE;
    if (UA_HAS_ANY(&t, "iPad", "Kindle", "Silk/", "PlayBook"))
        return PARSE_DEVICE_TABLET;
    if (ua_has(&t, "Tablet") && !ua_has(&t, "Tablet PC"))
        return PARSE_DEVICE_TABLET;
    if (UA_HAS_ANY(&t, "iPhone", "iPod"))
        return PARSE_DEVICE_MOBILE;
    if (ua_has(&t, "Android"))
        return ua_has(&t, "Mobile") ? PARSE_DEVICE_MOBILE : PARSE_DEVICE_TABLET;
    if (UA_HAS_ANY(&t, "Mobile", "Opera Mini", "BlackBerry", "BB10"))
        return PARSE_DEVICE_MOBILE;
    if (UA_HAS_ANY(&t, "Windows NT", "Macintosh", "X11", "Linux", "CrOS"))
        return PARSE_DEVICE_DESKTOP;
    return PARSE_DEVICE_OTHER;
}

/* --- referrers ------------------------------------------------------------- */

static void put_direct(char *out, size_t outlen)
{
    static const char direct[] = "direct";
    size_t n = sizeof(direct) - 1 < outlen - 1 ? sizeof(direct) - 1 : outlen - 1;

    memcpy(out, direct, n);
    out[n] = '\0';
}

/* TODO: app referrers ("android-app://com.google.android.gm/") count as
 * direct; their package name could be reported instead. */
/* Finds the host in an http(s) referrer. Browsers send the referrer already
 * normalised (punycode hosts, no userinfo), so a small scan suffices; anything
 * unusual is reported as "direct" rather than guessed at. The port is left out:
 * referrers are counted per site, and a site is its host. */
static bool referrer_host(const char *ref, size_t len, const char **host, size_t *hlen)
{
    size_t pos;

    if (len >= 7 && ieq(ref, "http://", 7))
        pos = 7;
    else if (len >= 8 && ieq(ref, "https://", 8))
        pos = 8;
    else
        return false;

    size_t auth = pos;
    while (pos < len && !strchr("/?#\\", ref[pos]))
        pos++;
    size_t at = pos;
    while (at > auth && ref[at - 1] != '@')
        at--;

    unsigned port;
    size_t n = split_host_port(ref + at, pos - at, &port);
    const char *h = ref + at;

    /* Whatever follows the host must be a port: "[::1]x" is not a referrer. */
    if (n < pos - at) {
        if (h[n] != ':')
            return false;
        for (size_t i = n + 1; i < pos - at; i++) {
            if (!is_digit((unsigned char)h[i]))
                return false;
        }
    }
    if (n > 0 && h[n - 1] == '.' && h[0] != '[')
        n--;
    if (n == 0 || n > HOST_MAX)
        return false;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)ascii_lower(h[i]);
        bool ok = h[0] == '[' ? (i == 0 || i == n - 1 ? true : is_ipv6_byte(c)) : is_host_byte(c);

        if (!ok)
            return false;
    }
    if (h[0] == '[' && (n < 3 || h[n - 1] != ']'))
        return false;
    *host = h;
    *hlen = n;
    return true;
}

void parse_referrer_host(const char *ref, size_t len, char *out, size_t outlen)
{
    const char *host;
    size_t n;

    if (out == NULL || outlen == 0)
        return;
    if (ref == NULL || !referrer_host(ref, len, &host, &n) || n > outlen - 1) {
        put_direct(out, outlen);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = ascii_lower(host[i]);
    out[n] = '\0';
}
