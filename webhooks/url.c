/*
 * webhooks/url.c: the SSRF rules for webhook and token URLs. A URL is checked
 * twice: here, when it is saved (scheme, host, and the host when it is a
 * literal address in any spelling curl would accept), and again by the
 * dispatcher on every address it is about to connect to, which is what defeats
 * names that resolve, or later re-resolve, to private ranges.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <idn2.h>

#include "webhooks_internal.h"

/* Longer URLs are refused before curl allocates anything for them. */
#define URL_MAX 4096

static void set_msg(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

/* "an" before a vowel, so the messages read as sentences. */
static const char *article(const char *word)
{
    return strchr("aeiouAEIOU", word[0]) != NULL ? "an" : "a";
}

static bool addr_refused(const geoip_addr_t *a, const webhook_net_policy_t *policy,
                         const char **range)
{
    *range = geoip_addr_special(a);
    if (*range == NULL)
        return false;
    if (policy != NULL && geoip_cidr_list_contains(policy->allow, policy->n_allow, a))
        return false;
    return true;
}

bool webhook__addr_allowed(const struct sockaddr *sa, const webhook_net_policy_t *policy, char *why,
                           size_t whylen)
{
    geoip_addr_t a;
    char text[64];
    const char *range;

    if (!geoip_addr_from_sockaddr(&a, sa)) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "blocked address of an unknown family");
        return false;
    }
    if (!addr_refused(&a, policy, &range))
        return true;
    geoip_addr_format(&a, text, sizeof text);
    if (why != NULL && whylen > 0)
        snprintf(why, whylen,
                 "blocked address %s: it is in a %s range, which webhooks may not reach", text,
                 range);
    return false;
}

/* Reads host into a literal address when it is one. inet_aton is used for
 * IPv4 on purpose: it takes the same legacy spellings curl and the system
 * resolver take (2130706433, 0x7f.1, 0177.0.0.1, 127.1), which inet_pton
 * refuses and which would otherwise slip through as "names". */
static bool host_literal(const char *host, geoip_addr_t *out)
{
    char buf[INET6_ADDRSTRLEN + 16];
    size_t len = strlen(host);
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;

    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        if (len - 2 >= sizeof buf)
            return false;
        memcpy(buf, host + 1, len - 2);
        buf[len - 2] = '\0';
        /* A zone id ("%25eth0" or "%eth0") does not change the range. */
        char *pct = strchr(buf, '%');
        if (pct != NULL)
            *pct = '\0';
        sin6.sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, buf, &sin6.sin6_addr) != 1)
            return false;
        /* geoip turns ::ffff:a.b.c.d into a.b.c.d, so the v4 ranges apply. */
        return geoip_addr_from_sockaddr(out, (const struct sockaddr *)&sin6);
    }
    /* "127.0.0.1." is the same address to the resolver, so one trailing dot
     * is dropped before parsing. */
    if (len > 0 && host[len - 1] == '.')
        len--;
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, host, len);
    buf[len] = '\0';
    sin.sin_family = AF_INET;
    if (inet_aton(buf, &sin.sin_addr) == 0)
        return false;
    return geoip_addr_from_sockaddr(out, (const struct sockaddr *)&sin);
}

static bool is_localhost_name(const char *host)
{
    size_t len = strlen(host);
    static const char suffix[] = ".localhost";

    /* A trailing dot names the same host. */
    if (len > 0 && host[len - 1] == '.')
        len--;
    if (len == 9 && strncasecmp(host, "localhost", 9) == 0)
        return true;
    return len > sizeof suffix - 1 &&
           strncasecmp(host + len - (sizeof suffix - 1), suffix, sizeof suffix - 1) == 0;
}

static bool has_control_bytes(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c == 0x7f)
            return true;
    }
    return false;
}

static int check_host(const char *host, const webhook_net_policy_t *policy, char *err,
                      size_t errlen)
{
    geoip_addr_t a;
    const char *range;
    char text[64];

    if (host_literal(host, &a)) {
        if (!addr_refused(&a, policy, &range))
            return 0;
        geoip_addr_format(&a, text, sizeof text);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "url: %s is in %s %s range, which webhooks may not reach", text,
                     article(range), range);
        return -1;
    }

    /* localhost never goes to DNS (RFC 6761): it stands for 127.0.0.1 and
     * ::1, and passes when either is allowed; the connect-time check then
     * refuses whichever of the two is not. */
    if (is_localhost_name(host)) {
        geoip_addr_t v6;
        memset(&a, 0, sizeof a);
        a.family = AF_INET;
        a.bytes[0] = 127;
        a.bytes[3] = 1;
        memset(&v6, 0, sizeof v6);
        v6.family = AF_INET6;
        v6.bytes[15] = 1;
        if (!addr_refused(&a, policy, &range) || !addr_refused(&v6, policy, &range))
            return 0;
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "url: %s is in a loopback range, which webhooks may not reach",
                     host);
        return -1;
    }
    return 0;
}

static bool is_ascii(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s >= 0x80)
            return false;
    }
    return true;
}

/* A host with bytes past ASCII (bücher.example, 127。0。0。1, or the same
 * percent-encoded, which curl decodes) is refused: the dispatcher's curl
 * fails every delivery to it ("URL using bad/illegal format"), and this
 * function only checks, it does not rewrite the URL that is stored. The
 * message gives the ASCII form to save instead, unless that form is itself
 * refused (127。0。0。1 is 127.0.0.1, loopback), in which case it says that. */
static int check_idn_host(const char *host, const webhook_net_policy_t *policy, char *err,
                          size_t errlen)
{
    uint8_t *ascii = NULL;
    int rc = idn2_lookup_u8((const uint8_t *)host, &ascii, IDN2_NONTRANSITIONAL);

    if (rc != IDN2_OK) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen,
                     "url: the host is not a valid internationalised domain name (%s); "
                     "use its ASCII form",
                     idn2_strerror(rc));
        return -1;
    }
    if (check_host((const char *)ascii, policy, err, errlen) == 0 && err != NULL && errlen > 0)
        snprintf(err, errlen, "url: use the ASCII (punycode) form of the host, %s",
                 (const char *)ascii);
    idn2_free(ascii);
    return -1;
}

int webhook_url_check(const char *url, const webhook_net_policy_t *policy, char *err, size_t errlen)
{
    CURLU *u = NULL;
    char *scheme = NULL;
    char *host = NULL;
    int rc = -1;

    if (url == NULL || url[0] == '\0') {
        set_msg(err, errlen, "url: is required");
        goto out;
    }
    if (strlen(url) > URL_MAX) {
        set_msg(err, errlen, "url: is longer than 4096 bytes");
        goto out;
    }
    if (has_control_bytes(url)) {
        set_msg(err, errlen, "url: holds spaces or control characters");
        goto out;
    }

    u = curl_url();
    if (u == NULL)
        goto out;
    /* Schemes curl does not know (javascript:, data:) must reach the scheme
     * check below with a clear message rather than a parse error. */
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        set_msg(err, errlen, "url: is not an absolute http or https URL");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        set_msg(err, errlen, "url: only http and https URLs are allowed");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        set_msg(err, errlen, "url: has no host");
        goto out;
    }
    if (!is_ascii(host)) {
        check_idn_host(host, policy, err, errlen);
        goto out;
    }
    if (check_host(host, policy, err, errlen) < 0)
        goto out;
    rc = 0;

out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

bool webhook__url_host(const char *url, char *out, size_t outlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    bool ok = false;

    if (u == NULL || outlen == 0)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    /* An endpoint is an origin: two receivers on one host but different
     * ports or schemes are different servers and must not share a cap. */
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    int n = snprintf(out, outlen, "%s://%s:%s", scheme, host, port);
    if (n < 0 || (size_t)n >= outlen)
        goto out;
    for (size_t i = 0; out[i] != '\0'; i++)
        out[i] = (char)tolower((unsigned char)out[i]);
    ok = true;

out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}
