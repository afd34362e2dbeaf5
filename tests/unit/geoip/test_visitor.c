/*
 * tests/unit/geoip/test_visitor.c: the visitor behind trusted proxies, cases
 * C10 and C11 of ../shared/cases/README.md, and hostile headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "geoip.h"

static geoip_cidr_t trusted[2];

static int setup(void **state)
{
    if (!geoip_cidr_parse(&trusted[0], "127.0.0.1/32") ||
        !geoip_cidr_parse(&trusted[1], "10.0.0.0/8"))
        return -1;
    return 0;
}

static geoip_addr_t addr(const char *s)
{
    geoip_addr_t a;

    if (!geoip_addr_parse(&a, s, strlen(s)))
        fail_msg("cannot parse \"%s\"", s);
    return a;
}

/* The visitor for peer and header, as text. */
static const char *visitor_n(const char *peer, const char *xff, size_t xff_len)
{
    static char buf[64];
    geoip_addr_t p = addr(peer);
    geoip_addr_t v = geoip_visitor(&p, xff, xff_len, trusted, 2);

    geoip_addr_format(&v, buf, sizeof(buf));
    return buf;
}

static const char *visitor(const char *peer, const char *xff)
{
    return visitor_n(peer, xff, xff ? strlen(xff) : 0);
}

static void geoip_visitor_c10_forwarded_chain(void **state)
{
    assert_string_equal(visitor("127.0.0.1", "81.2.69.160, 10.0.0.18, 127.0.0.1"), "81.2.69.160");
    /* Anything the client wrote left of the first untrusted hop is ignored. */
    assert_string_equal(visitor("127.0.0.1", "1.1.1.1, 81.2.69.160, 10.0.0.18"), "81.2.69.160");
}

static void geoip_visitor_c11_untrusted_peer_ignores_header(void **state)
{
    assert_string_equal(visitor("192.0.2.7", "81.2.69.160"), "192.0.2.7");
    assert_string_equal(visitor("::1", "81.2.69.160"), "::1");
    assert_string_equal(visitor("89.160.20.112", "10.0.0.1, 81.2.69.160"), "89.160.20.112");
}

static void geoip_visitor_c12_mapped_peer_and_entries(void **state)
{
    /* A dual-stack listener sees the proxy as ::ffff:127.0.0.1. */
    assert_string_equal(visitor("::ffff:127.0.0.1", "::ffff:81.2.69.160"), "81.2.69.160");
    assert_string_equal(visitor("127.0.0.1", "2001:218::1"), "2001:218::1");
    assert_string_equal(visitor("127.0.0.1", "::ffff:10.0.0.1, 127.0.0.1"), "10.0.0.1");
}

static void geoip_visitor_no_or_empty_header(void **state)
{
    assert_string_equal(visitor("127.0.0.1", NULL), "127.0.0.1");
    assert_string_equal(visitor("127.0.0.1", ""), "127.0.0.1");
    assert_string_equal(visitor("127.0.0.1", " , ,, "), "127.0.0.1");
}

static void geoip_visitor_all_trusted_gives_leftmost(void **state)
{
    assert_string_equal(visitor("127.0.0.1", "10.0.0.5, 10.0.0.6, 127.0.0.1"), "10.0.0.5");
    assert_string_equal(visitor("127.0.0.1", "garbage, 10.0.0.5, bad, 10.0.0.6"), "10.0.0.5");
}

static void geoip_visitor_entry_forms(void **state)
{
    assert_string_equal(visitor("127.0.0.1", "81.2.69.160:4711"), "81.2.69.160");
    assert_string_equal(visitor("127.0.0.1", "[2001:218::1]"), "2001:218::1");
    assert_string_equal(visitor("127.0.0.1", "[2001:218::1]:443"), "2001:218::1");
    assert_string_equal(visitor("127.0.0.1", "\t81.2.69.160\t,10.0.0.1"), "81.2.69.160");
    assert_string_equal(visitor("127.0.0.1", "81.2.69.160,10.0.0.1,"), "81.2.69.160");
}

static void geoip_visitor_skips_invalid_entries(void **state)
{
    static const char *const junk[] = {
        "unknown",          "_hidden",        "81.2.69.160:",    "81.2.69.160:123456",
        "81.2.69.160:80:1", "[81.2.69.160]",  "[2001:218::1]x",  "[2001:218::1]:",
        "2001:218::1:80x",  "81.2.69.160 80", "81.2.69.160;x",   "0x51024 5a0",
        "1.2.3.4/8",        "[[::1]]",        "\"81.2.69.160\"", "for=81.2.69.160",
    };
    char header[128];

    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        /* An invalid entry right of a valid one is passed over... */
        snprintf(header, sizeof(header), "89.160.20.112, %s", junk[i]);
        if (strcmp(visitor("127.0.0.1", header), "89.160.20.112") != 0)
            fail_msg("\"%s\" gave %s", header, visitor("127.0.0.1", header));
        /* ...and alone it leaves the peer. */
        if (strcmp(visitor("127.0.0.1", junk[i]), "127.0.0.1") != 0)
            fail_msg("\"%s\" alone gave %s", junk[i], visitor("127.0.0.1", junk[i]));
    }
}

static void geoip_visitor_embedded_nul(void **state)
{
    static const char header[] = "81.2.69.160, 10.0.0.1\0, 89.160.20.112";
    static const char nul_inside[] = "89.160.20.112, 81.2.69\0.160";

    /* The length is what counts: the entry holding a NUL is invalid and the
     * ones around it are read as usual. */
    assert_string_equal(visitor_n("127.0.0.1", header, sizeof(header) - 1), "89.160.20.112");
    assert_string_equal(visitor_n("127.0.0.1", nul_inside, sizeof(nul_inside) - 1),
                        "89.160.20.112");
}

static void geoip_visitor_very_long_header(void **state)
{
    size_t n = 1 << 20;
    char *h = malloc(n);
    size_t len = 0;

    assert_non_null(h);
    /* A megabyte of trusted entries with the visitor at the far left... */
    len += (size_t)snprintf(h, n, "81.2.69.160");
    while (len + 16 < n)
        len += (size_t)snprintf(h + len, n - len, ", 10.0.0.1");
    assert_string_equal(visitor_n("127.0.0.1", h, len), "81.2.69.160");

    /* ...a megabyte without a comma, and one of commas only. */
    memset(h, '9', n);
    assert_string_equal(visitor_n("127.0.0.1", h, n), "127.0.0.1");
    memset(h, ',', n);
    assert_string_equal(visitor_n("127.0.0.1", h, n), "127.0.0.1");
    free(h);
}

static void geoip_visitor_no_trusted_list(void **state)
{
    geoip_addr_t p = addr("127.0.0.1");
    geoip_addr_t v = geoip_visitor(&p, "81.2.69.160", 11, NULL, 0);
    char buf[64];

    geoip_addr_format(&v, buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(geoip_visitor_c10_forwarded_chain),
        cmocka_unit_test(geoip_visitor_c11_untrusted_peer_ignores_header),
        cmocka_unit_test(geoip_visitor_c12_mapped_peer_and_entries),
        cmocka_unit_test(geoip_visitor_no_or_empty_header),
        cmocka_unit_test(geoip_visitor_all_trusted_gives_leftmost),
        cmocka_unit_test(geoip_visitor_entry_forms),
        cmocka_unit_test(geoip_visitor_skips_invalid_entries),
        cmocka_unit_test(geoip_visitor_embedded_nul),
        cmocka_unit_test(geoip_visitor_very_long_header),
        cmocka_unit_test(geoip_visitor_no_trusted_list),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
