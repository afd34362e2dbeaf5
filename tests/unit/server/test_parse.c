/*
 * Unit tests for server/parse: the handed cases C01-C09 and C14 with their
 * expected values from ../shared/cases/README.md, and hostile input for every
 * parser (CR/LF, oversized, non-ASCII, disallowed schemes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parse.h"

#define OWN "s.example"

static char out[PARSE_URL_MAX + 1];

/* Parses in with OWN as our domain and checks the error and, on success, the
 * normalised URL. */
static void expect_url(const char *in, parse_url_error_t want, const char *want_out)
{
    parse_url_error_t e = parse_long_url(in, strlen(in), OWN, out, sizeof(out));

    assert_int_equal(e, want);
    if (want == PARSE_URL_OK)
        assert_string_equal(out, want_out);
    else
        assert_string_equal(out, "");
}

/* Accepted URLs stay the same when normalised again: what is stored is what a
 * second parse (an update, an expand) would store. */
static void expect_stable(const char *in)
{
    char again[PARSE_URL_MAX + 1];

    assert_int_equal(parse_long_url(in, strlen(in), OWN, out, sizeof(out)), PARSE_URL_OK);
    assert_int_equal(parse_long_url(out, strlen(out), OWN, again, sizeof(again)), PARSE_URL_OK);
    assert_string_equal(again, out);
}

/* C01 */
static void parse_long_url_idn_host(void **state)
{
    (void)state;
    expect_url("http://tübingen.de/", PARSE_URL_OK, "http://xn--tbingen-n2a.de/");
    expect_url("https://bücher.example/straße", PARSE_URL_OK,
               "https://xn--bcher-kva.example/stra%C3%9Fe");
}

static void parse_long_url_idn_alabel_same(void **state)
{
    (void)state;
    expect_url("http://xn--tbingen-n2a.de/", PARSE_URL_OK, "http://xn--tbingen-n2a.de/");
    expect_url("https://xn--bcher-kva.example/stra%C3%9Fe", PARSE_URL_OK,
               "https://xn--bcher-kva.example/stra%C3%9Fe");
    expect_url("http://XN--TBINGEN-N2A.DE/", PARSE_URL_OK, "http://xn--tbingen-n2a.de/");
}

static void parse_long_url_idn_forms(void **state)
{
    (void)state;
    /* Upper-case and decomposed (u + combining diaeresis) forms of the same
     * name, and the host written with percent-escapes. */
    expect_url("http://TÜBINGEN.de/", PARSE_URL_OK, "http://xn--tbingen-n2a.de/");
    expect_url("http://tu\xcc\x88"
               "bingen.de/",
               PARSE_URL_OK, "http://xn--tbingen-n2a.de/");
    expect_url("http://t%C3%BCbingen.de/", PARSE_URL_OK, "http://xn--tbingen-n2a.de/");
    /* Non-transitional: ß is kept as itself, not mapped to "ss". */
    expect_url("http://faß.de/", PARSE_URL_OK, "http://xn--fa-hia.de/");
}

static void parse_long_url_idn_invalid(void **state)
{
    (void)state;
    expect_url("http://xn--zz.de/", PARSE_URL_BAD_HOST, NULL);
    expect_url("http://\xff\xfe.de/", PARSE_URL_BAD_HOST, NULL);
    expect_url("http://a%2fb.com/", PARSE_URL_BAD_HOST, NULL);
    expect_url("http://a b.com/", PARSE_URL_BAD_HOST, NULL);
}

/* C02 */
static void parse_long_url_escapes_kept(void **state)
{
    (void)state;
    expect_url("http://example.com/bad%20space/", PARSE_URL_OK, "http://example.com/bad%20space/");
    expect_url("http://example.com/a%zz%", PARSE_URL_OK, "http://example.com/a%zz%");
    expect_url("http://example.com/%e2%82%ac", PARSE_URL_OK, "http://example.com/%e2%82%ac");
}

static void parse_long_url_space_encoded(void **state)
{
    (void)state;
    expect_url("https://www.example.com/some path", PARSE_URL_OK,
               "https://www.example.com/some%20path");
    expect_url("https://example.com/?q=a b#x y", PARSE_URL_OK,
               "https://example.com/?q=a%20b#x%20y");
}

static void parse_long_url_non_ascii_encoded(void **state)
{
    (void)state;
    expect_url("https://example.com/caf\xc3\xa9?q=\xc3\xa9#\xc3\xa9", PARSE_URL_OK,
               "https://example.com/caf%C3%A9?q=%C3%A9#%C3%A9");
    /* Invalid UTF-8 in the path is not ours to judge; it is encoded as bytes. */
    expect_url("https://example.com/\xff", PARSE_URL_OK, "https://example.com/%FF");
}

/* C03 */
static void parse_long_url_query_kept(void **state)
{
    (void)state;
    expect_url("https://example.com/?abc#123", PARSE_URL_OK, "https://example.com/?abc#123");
    expect_url("https://example.com/?123=foo", PARSE_URL_OK, "https://example.com/?123=foo");
    expect_url("https://example.com/?", PARSE_URL_OK, "https://example.com/?");
    expect_url("https://example.com/#", PARSE_URL_OK, "https://example.com/#");
    expect_url("https://example.com/p?a=1&b=%2F&c={x}|y#f#g", PARSE_URL_OK,
               "https://example.com/p?a=1&b=%2F&c={x}|y#f#g");
}

static void parse_long_url_empty_path_slash(void **state)
{
    (void)state;
    expect_url("http://example.com", PARSE_URL_OK, "http://example.com/");
    expect_url("http://example.com?x=1", PARSE_URL_OK, "http://example.com/?x=1");
    expect_url("http://example.com#top", PARSE_URL_OK, "http://example.com/#top");
}

static void parse_long_url_path_as_is(void **state)
{
    (void)state;
    expect_url("https://example.com/a/../b/./c", PARSE_URL_OK, "https://example.com/a/../b/./c");
}

/* C04 */
static void parse_long_url_3000_kept(void **state)
{
    char *in = malloc(3001);
    const char *head = "https://example.com/";

    (void)state;
    memset(in, 'a', 3000);
    memcpy(in, head, strlen(head));
    in[3000] = '\0';
    assert_int_equal(parse_long_url(in, 3000, OWN, out, sizeof(out)), PARSE_URL_OK);
    assert_string_equal(out, in);
    free(in);
}

static void parse_long_url_max_kept_and_over_refused(void **state)
{
    size_t n = 70000;
    char *in = malloc(n + 1);
    const char *head = "https://example.com/";

    (void)state;
    memset(in, 'a', n);
    memcpy(in, head, strlen(head));
    in[n] = '\0';

    assert_int_equal(parse_long_url(in, PARSE_URL_MAX, OWN, out, sizeof(out)), PARSE_URL_OK);
    assert_int_equal(strlen(out), PARSE_URL_MAX);
    assert_memory_equal(out, in, PARSE_URL_MAX);

    assert_int_equal(parse_long_url(in, PARSE_URL_MAX + 1, OWN, out, sizeof(out)),
                     PARSE_URL_TOO_LONG);
    assert_string_equal(out, "");
    assert_int_equal(parse_long_url(in, n, OWN, out, sizeof(out)), PARSE_URL_TOO_LONG);
    assert_string_equal(out, "");
    free(in);
}

static void parse_long_url_encoding_past_max_refused(void **state)
{
    /* Under the limit as written, over it once the spaces are encoded. */
    size_t n = 10000;
    char *in = malloc(n + 1);
    const char *head = "https://example.com/";

    (void)state;
    memset(in, ' ', n);
    memcpy(in, head, strlen(head));
    in[n - 1] = 'x';
    in[n] = '\0';
    assert_int_equal(parse_long_url(in, n, OWN, out, sizeof(out)), PARSE_URL_TOO_LONG);
    free(in);
}

static void parse_long_url_small_buffer_refused(void **state)
{
    char small[16];

    (void)state;
    assert_int_equal(parse_long_url("https://example.com/long", 24, OWN, small, sizeof(small)),
                     PARSE_URL_TOO_LONG);
    assert_string_equal(small, "");
}

/* C05 */
static void parse_long_url_dangerous_schemes(void **state)
{
    (void)state;
    expect_url("javascript:alert(1)", PARSE_URL_BAD_SCHEME, NULL);
    expect_url(" JavaScript:alert(1)", PARSE_URL_BAD_SCHEME, NULL);
    expect_url("data:text/html,x", PARSE_URL_BAD_SCHEME, NULL);
    expect_url("ftp://example.com/", PARSE_URL_BAD_SCHEME, NULL);
    expect_url("file:///etc/passwd", PARSE_URL_BAD_SCHEME, NULL);
    expect_url("vbscript:msgbox", PARSE_URL_BAD_SCHEME, NULL);
    expect_url("httpx://example.com/", PARSE_URL_BAD_SCHEME, NULL);
}

static void parse_long_url_relative_refused(void **state)
{
    (void)state;
    expect_url("example.com", PARSE_URL_NOT_ABSOLUTE, NULL);
    expect_url("example.com:8080/x", PARSE_URL_NOT_ABSOLUTE, NULL);
    expect_url("/path/only", PARSE_URL_NOT_ABSOLUTE, NULL);
    expect_url("//example.com/", PARSE_URL_NOT_ABSOLUTE, NULL);
}

static void parse_long_url_own_domain(void **state)
{
    (void)state;
    expect_url("https://s.example/abc", PARSE_URL_OWN_DOMAIN, NULL);
    expect_url("HTTPS://S.EXAMPLE/abc", PARSE_URL_OWN_DOMAIN, NULL);
    expect_url("https://s.example:443/abc", PARSE_URL_OWN_DOMAIN, NULL);
    expect_url("http://s.example./abc", PARSE_URL_OWN_DOMAIN, NULL);
    expect_url("https://evil.example@s.example/abc", PARSE_URL_OWN_DOMAIN, NULL);
    /* Full-width letters map to the same name under IDNA. */
    expect_url("https://\xef\xbd\x93.example/abc", PARSE_URL_OWN_DOMAIN, NULL);
    /* Another port is another service, and userinfo does not make a host. */
    expect_url("https://s.example:8443/abc", PARSE_URL_OK, "https://s.example:8443/abc");
    expect_url("https://s.example@evil.example/", PARSE_URL_OK, "https://s.example@evil.example/");
    expect_url("https://sub.s.example/", PARSE_URL_OK, "https://sub.s.example/");
}

static void parse_long_url_own_domain_with_port(void **state)
{
    (void)state;
    assert_int_equal(
        parse_long_url("http://s.example:8080/x", 23, "s.example:8080", out, sizeof(out)),
        PARSE_URL_OWN_DOMAIN);
    assert_int_equal(parse_long_url("http://s.example/x", 18, "s.example:8080", out, sizeof(out)),
                     PARSE_URL_OK);
    /* A configured default port also covers URLs that give none. */
    assert_int_equal(parse_long_url("https://s.example/x", 19, "s.example:443", out, sizeof(out)),
                     PARSE_URL_OWN_DOMAIN);
    assert_int_equal(parse_long_url("https://s.example/x", 19, NULL, out, sizeof(out)),
                     PARSE_URL_OK);
}

static void expect_own(const char *in, const char *own, parse_url_error_t want)
{
    assert_int_equal(parse_long_url(in, strlen(in), own, out, sizeof(out)), want);
}

/* Another spelling of our own address is still us: a mapped or uncompressed
 * IPv6 form, a numeric IPv4 form, either way round. */
static void parse_long_url_own_domain_ip_spellings(void **state)
{
    (void)state;
    expect_own("http://[::ffff:127.0.0.1]:8080/x", "127.0.0.1:8080", PARSE_URL_OWN_DOMAIN);
    expect_own("http://[::FFFF:7f00:1]:8080/x", "127.0.0.1:8080", PARSE_URL_OWN_DOMAIN);
    expect_own("http://2130706433:8080/x", "127.0.0.1:8080", PARSE_URL_OWN_DOMAIN);
    expect_own("http://127.0.0.1:8080/x", "[::ffff:127.0.0.1]:8080", PARSE_URL_OWN_DOMAIN);
    expect_own("http://[0:0:0:0:0:0:0:1]:8080/x", "[::1]:8080", PARSE_URL_OWN_DOMAIN);
    expect_own("http://[::1]:8080/x", "[0000::0001]:8080", PARSE_URL_OWN_DOMAIN);
    expect_own("https://[2001:DB8::1]/x", "[2001:db8:0::1]", PARSE_URL_OWN_DOMAIN);
    expect_own("http://[::ffff:127.0.0.2]:8080/x", "127.0.0.1:8080", PARSE_URL_OK);
    expect_own("http://[::2]:8080/x", "[::1]:8080", PARSE_URL_OK);
    expect_own("http://127.0.0.1:8081/x", "[::ffff:127.0.0.1]:8080", PARSE_URL_OK);
    /* A name is never an address, even one made of digits and dots. */
    expect_own("https://127.0.0.1.example/x", "127.0.0.1", PARSE_URL_OK);
}

/* An international own domain may be configured in Unicode, any case. */
static void parse_long_url_own_domain_unicode(void **state)
{
    (void)state;
    /* "b\303\274cher" is "bücher" in UTF-8; octal, as a hex escape would run on. */
    expect_own("https://b\303\274cher.example/x", "b\303\274cher.example", PARSE_URL_OWN_DOMAIN);
    expect_own("https://xn--bcher-kva.example/x", "b\303\274cher.example", PARSE_URL_OWN_DOMAIN);
    expect_own("https://B\303\234CHER.example/x", "xn--bcher-kva.example", PARSE_URL_OWN_DOMAIN);
    expect_own("https://bucher.example/x", "b\303\274cher.example", PARSE_URL_OK);
}

/* C06 */
static void parse_long_url_encoded_crlf_kept(void **state)
{
    (void)state;
    expect_url("https://example.com/%0D%0ASet-Cookie:x=1", PARSE_URL_OK,
               "https://example.com/%0D%0ASet-Cookie:x=1");
}

static void parse_long_url_control_refused(void **state)
{
    static const char *const bad[] = {
        "https://example.com/\r\nSet-Cookie:x=1",
        "https://example.com/\n",
        "https://example.com/\r",
        "https://example.com/\t",
        "https://example.com/\x7f",
        "https://exa\nmple.com/",
        "\r\nhttps://example.com/",
        "https://example.com/?a=\x01",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_url(bad[i], PARSE_URL_CONTROL_CHAR, NULL);

    /* An embedded NUL is a control byte too, not the end of the input. */
    assert_int_equal(parse_long_url("https://example.com/\0x", 22, OWN, out, sizeof(out)),
                     PARSE_URL_CONTROL_CHAR);
}

static void parse_long_url_empty(void **state)
{
    (void)state;
    expect_url("", PARSE_URL_EMPTY, NULL);
    expect_url("   ", PARSE_URL_EMPTY, NULL);
    assert_int_equal(parse_long_url(NULL, 0, OWN, out, sizeof(out)), PARSE_URL_EMPTY);
}

static void parse_long_url_whitespace_trimmed(void **state)
{
    (void)state;
    expect_url("  https://example.com/x  ", PARSE_URL_OK, "https://example.com/x");
    expect_url("https://example.com/x\t", PARSE_URL_CONTROL_CHAR, NULL);
}

static void parse_long_url_uppercase_lowered(void **state)
{
    (void)state;
    /* Scheme and host are case-insensitive and lowered; the path is not. */
    expect_url("HTTPS://WWW.EXAMPLE.COM/Path?Q=A#F", PARSE_URL_OK,
               "https://www.example.com/Path?Q=A#F");
    expect_url("hTtP://Example.Com/", PARSE_URL_OK, "http://example.com/");
}

static void parse_long_url_ports(void **state)
{
    (void)state;
    expect_url("http://example.com:80/", PARSE_URL_OK, "http://example.com/");
    expect_url("https://example.com:443/", PARSE_URL_OK, "https://example.com/");
    expect_url("http://example.com:443/", PARSE_URL_OK, "http://example.com:443/");
    expect_url("http://example.com:0080/", PARSE_URL_OK, "http://example.com/");
    expect_url("http://example.com:8080", PARSE_URL_OK, "http://example.com:8080/");
    expect_url("http://example.com:/x", PARSE_URL_OK, "http://example.com/x");
    expect_url("http://example.com:99999/", PARSE_URL_MALFORMED, NULL);
    expect_url("http://example.com:8a/", PARSE_URL_MALFORMED, NULL);
}

static void parse_long_url_ip_hosts(void **state)
{
    (void)state;
    expect_url("http://[2001:DB8::1]/", PARSE_URL_OK, "http://[2001:db8::1]/");
    expect_url("http://[2001:db8::1]:8080/x", PARSE_URL_OK, "http://[2001:db8::1]:8080/x");
    expect_url("http://[::ffff:127.0.0.1]/", PARSE_URL_OK, "http://[::ffff:127.0.0.1]/");
    expect_url("http://[fe80::1%25eth0]/", PARSE_URL_BAD_HOST, NULL);
    expect_url("http://[2001:db8::zz]/", PARSE_URL_BAD_HOST, NULL);
    expect_url("http://203.0.113.7/", PARSE_URL_OK, "http://203.0.113.7/");
    /* Numeric forms are written the way browsers read them. */
    expect_url("http://2130706433/", PARSE_URL_OK, "http://127.0.0.1/");
    /* Found by fuzz_url: forms that only become numeric once decoded or mapped
     * are normalised to the end, as browsers read them. */
    expect_url("http://%32130706433/", PARSE_URL_OK, "http://127.0.0.1/");
    expect_url("http://21%30706433/", PARSE_URL_OK, "http://12.143.32.1/");
    expect_url("http://\xef\xbc\x91\xef\xbc\x92\xef\xbc\x97.0.0.1/", PARSE_URL_OK,
               "http://127.0.0.1/");
}

static void parse_long_url_userinfo_kept(void **state)
{
    (void)state;
    expect_url("https://user:pw@example.com/", PARSE_URL_OK, "https://user:pw@example.com/");
    /* Browsers end userinfo at the last '@'; the earlier ones are escaped so
     * libcurl reads the same host. */
    expect_url("http://a@b@example.com/", PARSE_URL_OK, "http://a%40b@example.com/");
    expect_url("http://us er@example.com/", PARSE_URL_OK, "http://us%20er@example.com/");
}

static void parse_long_url_malformed(void **state)
{
    (void)state;
    expect_url("http:example.com", PARSE_URL_MALFORMED, NULL);
    expect_url("http:/example.com", PARSE_URL_MALFORMED, NULL);
    expect_url("https:\\\\example.com", PARSE_URL_MALFORMED, NULL);
    /* Browsers go to a.example, libcurl would read b.example: refused. */
    expect_url("https://a.example\\@b.example/", PARSE_URL_MALFORMED, NULL);
    expect_url("http:///example.com", PARSE_URL_BAD_HOST, NULL);
    expect_url("http://", PARSE_URL_BAD_HOST, NULL);
    expect_url("http://user@/x", PARSE_URL_BAD_HOST, NULL);
}

static void parse_long_url_idempotent(void **state)
{
    static const char *const in[] = {
        "http://tübingen.de/",
        "https://bücher.example/straße",
        "https://www.example.com/some path",
        "HTTP://User:Pw@EXAMPLE.COM:8080/A?B#C",
        "http://a@b@example.com/",
        "http://2130706433/",
        "http://[2001:DB8::1]:80/",
        "https://example.com/?abc#123",
        "http://example.com",
        "http://t%C3%BCbingen.de/%41?%zz",
        "http://21%30706433/",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        expect_stable(in[i]);
}

static void parse_url_strerror_all(void **state)
{
    (void)state;
    for (int e = PARSE_URL_OK; e <= PARSE_URL_MALFORMED; e++)
        assert_true(strlen(parse_url_strerror((parse_url_error_t)e)) > 0);
    assert_non_null(strstr(parse_url_strerror(PARSE_URL_TOO_LONG), "16384"));
}

/* C07 */
static void parse_backhalf_valid_case_kept(void **state)
{
    (void)state;
    assert_true(parse_backhalf_valid("MySlug", 6));
    assert_true(parse_backhalf_valid("my-slug_2", 9));
    assert_true(parse_code_plausible("MySlug", 6));
}

static void parse_backhalf_valid_length(void **state)
{
    char s[PARSE_BACKHALF_MAX + 2];

    (void)state;
    memset(s, 'a', sizeof(s));
    assert_false(parse_backhalf_valid("ab", 2));
    assert_true(parse_backhalf_valid("abc", 3));
    assert_true(parse_backhalf_valid(s, PARSE_BACKHALF_MAX));
    assert_false(parse_backhalf_valid(s, PARSE_BACKHALF_MAX + 1));
    assert_false(parse_backhalf_valid(NULL, 0));
}

static void parse_backhalf_valid_charset(void **state)
{
    (void)state;
    assert_false(parse_backhalf_valid("my slug", 7));
    assert_false(parse_backhalf_valid("my/slug", 7));
    assert_false(parse_backhalf_valid("my.slug", 7));
    assert_false(parse_backhalf_valid("caf\xc3\xa9", 5));
    assert_false(parse_backhalf_valid("ab\r\ncd", 6));
    assert_false(parse_backhalf_valid("abc\0def", 7));
    assert_false(parse_backhalf_valid("%41bc", 5));
}

static void parse_backhalf_valid_reserved(void **state)
{
    static const char *const reserved[] = {"v4",      "V4",          "app",       "APP", "healthz",
                                           "metrics", "Metrics",     "qr",        "bio", "api",
                                           "static",  "favicon.ico", "robots.txt"};

    (void)state;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        assert_false(parse_backhalf_valid(reserved[i], strlen(reserved[i])));
    /* Only whole names are reserved. */
    assert_true(parse_backhalf_valid("apps", 4));
    assert_true(parse_backhalf_valid("metrics2", 8));
    assert_true(parse_backhalf_valid("v4x", 3));
}

/* C08 */
static void parse_code_plausible_non_ascii(void **state)
{
    (void)state;
    assert_false(parse_code_plausible("\xf0\x9f\x8d\x9e", 4));
    assert_false(parse_code_plausible("%F0%9F%8D%9E", 12));
    assert_false(parse_code_plausible("", 0));
    assert_false(parse_code_plausible(NULL, 0));
    assert_true(parse_code_plausible("a", 1));
    assert_true(parse_code_plausible("v4", 2));
}

static void parse_code_plausible_generated(void **state)
{
    const char *alphabet = PARSE_CODE_ALPHABET;

    (void)state;
    assert_true(parse_code_plausible(alphabet, strlen(alphabet)));
    assert_true(parse_backhalf_valid(alphabet, PARSE_CODE_LEN));
    assert_null(strpbrk(alphabet, "01ilo"));
    assert_null(strpbrk(alphabet, "aeiouAEIOU"));
}

/* C09: expects the redirect target for a long URL and visitor query. */
static void expect_target(const char *url, const char *query, const char *want, bool want_qr)
{
    char buf[PARSE_URL_MAX * 3];
    bool qr = !want_qr;
    size_t n = parse_redirect_target(url, strlen(url), query, query ? strlen(query) : 0, buf,
                                     sizeof(buf), &qr);

    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
    assert_int_equal(qr, want_qr);
}

static void parse_redirect_target_query_before_fragment(void **state)
{
    (void)state;
    expect_target("https://example.com/p?ref=x#top", "utm_source=y",
                  "https://example.com/p?ref=x&utm_source=y#top", false);
    expect_target("https://example.com/p#top", "utm_source=y",
                  "https://example.com/p?utm_source=y#top", false);
    expect_target("https://example.com/p", "utm_source=y", "https://example.com/p?utm_source=y",
                  false);
    expect_target("https://example.com/p", "?utm_source=y", "https://example.com/p?utm_source=y",
                  false);
    /* A '?' inside the fragment is not the URL's query. */
    expect_target("https://example.com/p#a?b", "x=1", "https://example.com/p?x=1#a?b", false);
}

static void parse_redirect_target_empty_query(void **state)
{
    (void)state;
    expect_target("https://example.com/p?ref=x#top", "", "https://example.com/p?ref=x#top", false);
    expect_target("https://example.com/p?ref=x#top", NULL, "https://example.com/p?ref=x#top",
                  false);
    expect_target("https://example.com/?abc#123", "?", "https://example.com/?abc#123", false);
    expect_target("https://example.com/?abc#123", "&&", "https://example.com/?abc#123", false);
}

static void parse_redirect_target_no_double_separator(void **state)
{
    (void)state;
    expect_target("https://example.com/p?", "a=1", "https://example.com/p?a=1", false);
    expect_target("https://example.com/p?x=1&", "a=1", "https://example.com/p?x=1&a=1", false);
    expect_target("https://example.com/p?x=1&#f", "a=1&&b=2", "https://example.com/p?x=1&a=1&b=2#f",
                  false);
}

static void parse_redirect_target_qr_marker(void **state)
{
    (void)state;
    expect_target("https://example.com/p", "sl_qr", "https://example.com/p", true);
    expect_target("https://example.com/p", "sl_qr=1", "https://example.com/p", true);
    expect_target("https://example.com/p?r=1#t", "a=1&sl_qr&b=2",
                  "https://example.com/p?r=1&a=1&b=2#t", true);
    expect_target("https://example.com/p", "sl_qr=&a=1", "https://example.com/p?a=1", true);
    /* Only the exact name is the marker. */
    expect_target("https://example.com/p", "sl_qrx=1&xsl_qr=2",
                  "https://example.com/p?sl_qrx=1&xsl_qr=2", false);
}

static void parse_redirect_target_hostile_query(void **state)
{
    (void)state;
    expect_target("https://example.com/p", "a=1\r\nSet-Cookie: x=1",
                  "https://example.com/p?a=1%0D%0ASet-Cookie:%20x=1", false);
    expect_target("https://example.com/p#f", "a=<script>\"`{|}^\\#x",
                  "https://example.com/p?a=%3Cscript%3E%22%60%7B%7C%7D%5E%5C%23x#f", false);
    expect_target("https://example.com/p", "q=caf\xc3\xa9\x7f",
                  "https://example.com/p?q=caf%C3%A9%7F", false);
    /* Existing escapes are forwarded as they came. */
    expect_target("https://example.com/p", "q=%20a%2B", "https://example.com/p?q=%20a%2B", false);
}

static void parse_redirect_target_hostile_stored_url(void **state)
{
    char buf[128];
    bool qr;
    size_t n = parse_redirect_target("https://e.com/\r\n", 16, "a=1", 3, buf, sizeof(buf), &qr);

    (void)state;
    assert_string_equal(buf, "https://e.com/%0D%0A?a=1");
    assert_int_equal(n, strlen(buf));
}

static void parse_redirect_target_small_buffer(void **state)
{
    char buf[32];
    bool qr = true;
    const char *url = "https://example.com/p?ref=x#top";

    (void)state;
    assert_int_equal(
        parse_redirect_target(url, strlen(url), "utm_source=y", 12, buf, sizeof(buf), &qr), 0);
    assert_string_equal(buf, "");
    /* Exactly enough: 31 bytes and the NUL. */
    assert_int_equal(parse_redirect_target(url, strlen(url), NULL, 0, buf, sizeof(buf), &qr),
                     strlen(url));
    assert_int_equal(parse_redirect_target(url, strlen(url), NULL, 0, buf, 0, &qr), 0);
    assert_int_equal(parse_redirect_target("", 0, "a=1", 3, buf, sizeof(buf), &qr), 0);
}

/* User agents, C14 and one of each class. */
static void expect_ua(const char *ua, parse_device_t want)
{
    assert_int_equal(parse_user_agent(ua, ua ? strlen(ua) : 0), want);
}

static void parse_user_agent_bots(void **state)
{
    static const char *const bots[] = {
        "Twitterbot/1.0",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; Facebot)",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "TelegramBot (like TwitterBot)",
        "WhatsApp/2.23.20.0 A",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, "
        "like Gecko) Chrome/120.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
        "+http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1)",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
        "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
        "Pinterestbot/1.0",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
        "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
        "curl/8.5.0",
        "Wget/1.21.4",
        "python-requests/2.31.0",
        "Go-http-client/2.0",
        "okhttp/4.12.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0)",
        "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
        "SomeCrawler/1.0",
        "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)",
        "LinkPreview/1.0",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bots) / sizeof(bots[0]); i++)
        expect_ua(bots[i], PARSE_DEVICE_BOT);
}

static void parse_user_agent_twitterbot_c14(void **state)
{
    (void)state;
    expect_ua("Twitterbot/1.0", PARSE_DEVICE_BOT);
    expect_ua("twitterbot/1.0", PARSE_DEVICE_BOT);
}

static void parse_user_agent_empty_is_bot(void **state)
{
    (void)state;
    expect_ua(NULL, PARSE_DEVICE_BOT);
    expect_ua("", PARSE_DEVICE_BOT);
}

static void parse_user_agent_cubot_is_phone(void **state)
{
    (void)state;
    expect_ua("Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Mobile Safari/537.36",
              PARSE_DEVICE_MOBILE);
    expect_ua("Mozilla/5.0 (Linux; Android 10; Cubot_NOTE_20) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/119.0 Mobile Safari/537.36",
              PARSE_DEVICE_MOBILE);
    /* "bot" not at the end of a word is no bot either. */
    expect_ua("Mozilla/5.0 (Windows NT 10.0; Botanic) Firefox/120.0", PARSE_DEVICE_DESKTOP);
}

static void parse_user_agent_mobile(void **state)
{
    (void)state;
    expect_ua("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
              PARSE_DEVICE_MOBILE);
    expect_ua("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Mobile Safari/537.36",
              PARSE_DEVICE_MOBILE);
    expect_ua("Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
              PARSE_DEVICE_MOBILE);
    expect_ua("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) "
              "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0 Mobile Safari/537.36 "
              "Edge/15.14977",
              PARSE_DEVICE_MOBILE);
}

static void parse_user_agent_tablet(void **state)
{
    (void)state;
    expect_ua("Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
              "Gecko) Mobile/15E148",
              PARSE_DEVICE_TABLET);
    expect_ua("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36",
              PARSE_DEVICE_TABLET);
    expect_ua("Mozilla/5.0 (Android 13; Tablet; rv:121.0) Gecko/121.0 Firefox/121.0",
              PARSE_DEVICE_TABLET);
    expect_ua("Mozilla/5.0 (X11; U; Linux x86_64; en-us) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Silk/3.68 like Chrome/39.0.2171.93 Safari/537.36",
              PARSE_DEVICE_TABLET);
    expect_ua("Mozilla/5.0 (Linux; U; en-US) AppleWebKit/528.5+ (KHTML, like Gecko, Safari/528.5+) "
              "Version/4.0 Kindle/3.0 (screen 600x800; rotate)",
              PARSE_DEVICE_TABLET);
}

static void parse_user_agent_desktop(void **state)
{
    (void)state;
    expect_ua("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36",
              PARSE_DEVICE_DESKTOP);
    expect_ua("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
              "Gecko) Version/17.2 Safari/605.1.15",
              PARSE_DEVICE_DESKTOP);
    expect_ua("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
              PARSE_DEVICE_DESKTOP);
    expect_ua("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36",
              PARSE_DEVICE_DESKTOP);
    expect_ua("Mozilla/5.0 (Windows NT 6.2; WOW64; Trident/7.0; Touch; Tablet PC 2.0)",
              PARSE_DEVICE_DESKTOP);
}

static void parse_user_agent_other(void **state)
{
    (void)state;
    expect_ua("Mozilla/5.0", PARSE_DEVICE_OTHER);
    expect_ua("\xff\xfe\r\n", PARSE_DEVICE_OTHER);
}

static void parse_user_agent_long_bounded(void **state)
{
    /* Tokens past the scanned prefix are not seen; nothing reads past len. */
    size_t n = 70000;
    char *ua = malloc(n);

    (void)state;
    memset(ua, 'x', n);
    memcpy(ua + n - 10, "Twitterbot", 10);
    assert_int_equal(parse_user_agent(ua, n), PARSE_DEVICE_OTHER);
    memcpy(ua, "Twitterbot", 10);
    assert_int_equal(parse_user_agent(ua, n), PARSE_DEVICE_BOT);
    free(ua);
}

/* Referrers */
static void expect_ref(const char *ref, const char *want)
{
    char buf[256];

    parse_referrer_host(ref, ref ? strlen(ref) : 0, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void parse_referrer_host_basic(void **state)
{
    (void)state;
    expect_ref("https://www.Example.COM/page?q=1", "www.example.com");
    expect_ref("http://t.co/abc", "t.co");
    expect_ref("https://news.example", "news.example");
    expect_ref("https://news.example?x", "news.example");
    expect_ref("HTTPS://NEWS.EXAMPLE#x", "news.example");
    expect_ref("https://news.example./", "news.example");
}

static void parse_referrer_host_port_dropped(void **state)
{
    (void)state;
    expect_ref("http://example.com:8080/x", "example.com");
    expect_ref("http://[2001:DB8::1]:8080/x", "[2001:db8::1]");
    expect_ref("http://[2001:db8::1]/", "[2001:db8::1]");
    expect_ref("https://user:pw@example.com/", "example.com");
}

static void parse_referrer_host_direct(void **state)
{
    (void)state;
    expect_ref(NULL, "direct");
    expect_ref("", "direct");
    expect_ref("android-app://com.google.android.gm/", "direct");
    expect_ref("javascript:alert(1)", "direct");
    expect_ref("example.com", "direct");
    expect_ref("https://", "direct");
    expect_ref("https:///x", "direct");
    expect_ref("http://exa mple.com/", "direct");
    expect_ref("http://exa\r\nmple.com/", "direct");
    expect_ref("http://t\xc3\xbc"
               "bingen.de/",
               "direct");
    expect_ref("http://example.com:80x/", "direct");
    expect_ref("http://[::1]x/", "direct");
    expect_ref("http://[zz]/", "direct");
}

static void parse_referrer_host_bounded(void **state)
{
    char small[8];
    char host[301];

    (void)state;
    parse_referrer_host("https://example.com/", 20, small, sizeof(small));
    assert_string_equal(small, "direct");
    parse_referrer_host("https://t.co/", 13, small, sizeof(small));
    assert_string_equal(small, "t.co");
    parse_referrer_host("https://t.co/", 13, small, 3);
    assert_string_equal(small, "di");

    /* A host longer than any DNS name is not a referrer worth counting. */
    memset(host, 'a', sizeof(host) - 1);
    memcpy(host, "https://", 8);
    host[sizeof(host) - 1] = '\0';
    expect_ref(host, "direct");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_long_url_idn_host),
        cmocka_unit_test(parse_long_url_idn_alabel_same),
        cmocka_unit_test(parse_long_url_idn_forms),
        cmocka_unit_test(parse_long_url_idn_invalid),
        cmocka_unit_test(parse_long_url_escapes_kept),
        cmocka_unit_test(parse_long_url_space_encoded),
        cmocka_unit_test(parse_long_url_non_ascii_encoded),
        cmocka_unit_test(parse_long_url_query_kept),
        cmocka_unit_test(parse_long_url_empty_path_slash),
        cmocka_unit_test(parse_long_url_path_as_is),
        cmocka_unit_test(parse_long_url_3000_kept),
        cmocka_unit_test(parse_long_url_max_kept_and_over_refused),
        cmocka_unit_test(parse_long_url_encoding_past_max_refused),
        cmocka_unit_test(parse_long_url_small_buffer_refused),
        cmocka_unit_test(parse_long_url_dangerous_schemes),
        cmocka_unit_test(parse_long_url_relative_refused),
        cmocka_unit_test(parse_long_url_own_domain),
        cmocka_unit_test(parse_long_url_own_domain_with_port),
        cmocka_unit_test(parse_long_url_own_domain_ip_spellings),
        cmocka_unit_test(parse_long_url_own_domain_unicode),
        cmocka_unit_test(parse_long_url_encoded_crlf_kept),
        cmocka_unit_test(parse_long_url_control_refused),
        cmocka_unit_test(parse_long_url_empty),
        cmocka_unit_test(parse_long_url_whitespace_trimmed),
        cmocka_unit_test(parse_long_url_uppercase_lowered),
        cmocka_unit_test(parse_long_url_ports),
        cmocka_unit_test(parse_long_url_ip_hosts),
        cmocka_unit_test(parse_long_url_userinfo_kept),
        cmocka_unit_test(parse_long_url_malformed),
        cmocka_unit_test(parse_long_url_idempotent),
        cmocka_unit_test(parse_url_strerror_all),
        cmocka_unit_test(parse_backhalf_valid_case_kept),
        cmocka_unit_test(parse_backhalf_valid_length),
        cmocka_unit_test(parse_backhalf_valid_charset),
        cmocka_unit_test(parse_backhalf_valid_reserved),
        cmocka_unit_test(parse_code_plausible_non_ascii),
        cmocka_unit_test(parse_code_plausible_generated),
        cmocka_unit_test(parse_redirect_target_query_before_fragment),
        cmocka_unit_test(parse_redirect_target_empty_query),
        cmocka_unit_test(parse_redirect_target_no_double_separator),
        cmocka_unit_test(parse_redirect_target_qr_marker),
        cmocka_unit_test(parse_redirect_target_hostile_query),
        cmocka_unit_test(parse_redirect_target_hostile_stored_url),
        cmocka_unit_test(parse_redirect_target_small_buffer),
        cmocka_unit_test(parse_user_agent_bots),
        cmocka_unit_test(parse_user_agent_twitterbot_c14),
        cmocka_unit_test(parse_user_agent_empty_is_bot),
        cmocka_unit_test(parse_user_agent_cubot_is_phone),
        cmocka_unit_test(parse_user_agent_mobile),
        cmocka_unit_test(parse_user_agent_tablet),
        cmocka_unit_test(parse_user_agent_desktop),
        cmocka_unit_test(parse_user_agent_other),
        cmocka_unit_test(parse_user_agent_long_bounded),
        cmocka_unit_test(parse_referrer_host_basic),
        cmocka_unit_test(parse_referrer_host_port_dropped),
        cmocka_unit_test(parse_referrer_host_direct),
        cmocka_unit_test(parse_referrer_host_bounded),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
