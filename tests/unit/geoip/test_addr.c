/*
 * tests/unit/geoip/test_addr.c: address parsing and formatting, CIDR ranges
 * and the special (non-public) ranges.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "geoip.h"

static bool parse(geoip_addr_t *a, const char *s)
{
    return geoip_addr_parse(a, s, strlen(s));
}

static void assert_formats_as(const char *in, int family, const char *want)
{
    geoip_addr_t a;
    char buf[64];

    assert_true(parse(&a, in));
    assert_int_equal(a.family, family);
    geoip_addr_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void geoip_addr_parse_valid_forms(void **state)
{
    assert_formats_as("81.2.69.160", AF_INET, "81.2.69.160");
    assert_formats_as("2001:db8::1", AF_INET6, "2001:db8::1");
    assert_formats_as("2001:DB8:0:0:0:0:0:1", AF_INET6, "2001:db8::1");
    assert_formats_as("[::1]", AF_INET6, "::1");
    assert_formats_as("::", AF_INET6, "::");
}

static void geoip_addr_parse_mapped_becomes_v4(void **state)
{
    assert_formats_as("::ffff:81.2.69.160", AF_INET, "81.2.69.160");
    assert_formats_as("::FFFF:5102:45a0", AF_INET, "81.2.69.160");
    assert_formats_as("[::ffff:127.0.0.1]", AF_INET, "127.0.0.1");
    /* IPv4-compatible (::a.b.c.d) is not mapped and stays IPv6. */
    assert_formats_as("::1.2.3.4", AF_INET6, "::1.2.3.4");
}

static void geoip_addr_parse_rejects_garbage(void **state)
{
    static const char *const bad[] = {
        "",           "1.2.3",        "1.2.3.4.5",    "256.1.1.1",    "01.2.3.4",
        "2130706433", "0x7f.0.0.1",   " 1.2.3.4",     "1.2.3.4 ",     "[1.2.3.4]",
        "[::1",       "::1]",         "[]",           "fe80::1%eth0", "1.2.3.4/32",
        "1.2.3.4:80", "::ffff:1.2.3", "2001:db8:::1", "gggg::1",      "localhost",
    };
    geoip_addr_t a;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(&a, bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_false(geoip_addr_parse(&a, NULL, 0));
    assert_false(geoip_addr_parse(&a, "1.2.3.4", 0));
}

static void geoip_addr_parse_rejects_embedded_nul(void **state)
{
    geoip_addr_t a;

    assert_false(geoip_addr_parse(&a, "1.2.3.4\0garbage", 15));
    assert_false(geoip_addr_parse(&a, "1.2.3.4\0", 8));
    /* The length is honoured: the prefix of a longer buffer parses alone. */
    assert_true(geoip_addr_parse(&a, "1.2.3.45", 7));
    assert_int_equal(a.bytes[3], 4);
}

static void geoip_addr_parse_rejects_oversized(void **state)
{
    char big[4096];
    geoip_addr_t a;

    memset(big, '1', sizeof(big));
    assert_false(geoip_addr_parse(&a, big, sizeof(big)));
    memset(big, ':', sizeof(big));
    assert_false(geoip_addr_parse(&a, big, sizeof(big)));
}

static void geoip_addr_from_sockaddr_both_families(void **state)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr sa;
    geoip_addr_t a;
    char buf[64];

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    inet_pton(AF_INET, "89.160.20.112", &sin.sin_addr);
    assert_true(geoip_addr_from_sockaddr(&a, (struct sockaddr *)&sin));
    geoip_addr_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "89.160.20.112");

    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:81.2.69.160", &sin6.sin6_addr);
    assert_true(geoip_addr_from_sockaddr(&a, (struct sockaddr *)&sin6));
    assert_int_equal(a.family, AF_INET);
    geoip_addr_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "81.2.69.160");

    inet_pton(AF_INET6, "2001:218::1", &sin6.sin6_addr);
    assert_true(geoip_addr_from_sockaddr(&a, (struct sockaddr *)&sin6));
    assert_int_equal(a.family, AF_INET6);

    memset(&sa, 0, sizeof(sa));
    sa.sa_family = AF_UNIX;
    assert_false(geoip_addr_from_sockaddr(&a, &sa));
    assert_false(geoip_addr_from_sockaddr(&a, NULL));
}

static void geoip_addr_format_small_buffer_is_empty(void **state)
{
    geoip_addr_t a;
    char buf[8] = "xxxxxxx";

    assert_true(parse(&a, "255.255.255.255"));
    geoip_addr_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "");
    memset(&a, 0, sizeof(a));
    a.family = 99;
    geoip_addr_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "");
}

static void assert_cidr(const char *text, int family, const char *want_addr, unsigned want_prefix)
{
    geoip_cidr_t c;
    char buf[64];

    if (!geoip_cidr_parse(&c, text))
        fail_msg("refused \"%s\"", text);
    assert_int_equal(c.addr.family, family);
    geoip_addr_format(&c.addr, buf, sizeof(buf));
    assert_string_equal(buf, want_addr);
    assert_int_equal(c.prefix, want_prefix);
}

static void geoip_cidr_parse_valid_and_host_bits_cleared(void **state)
{
    assert_cidr("10.0.0.0/8", AF_INET, "10.0.0.0", 8);
    assert_cidr("10.1.2.3/8", AF_INET, "10.0.0.0", 8);
    assert_cidr("172.31.255.255/12", AF_INET, "172.16.0.0", 12);
    assert_cidr("0.0.0.0/0", AF_INET, "0.0.0.0", 0);
    assert_cidr("1.2.3.4", AF_INET, "1.2.3.4", 32);
    assert_cidr("::1/128", AF_INET6, "::1", 128);
    assert_cidr("::1", AF_INET6, "::1", 128);
    assert_cidr("2001:db8:ffff::1/32", AF_INET6, "2001:db8::", 32);
    assert_cidr("fe80::1/10", AF_INET6, "fe80::", 10);
    assert_cidr("[::1]/128", AF_INET6, "::1", 128);
    assert_cidr("::/0", AF_INET6, "::", 0);
    /* A mapped range is the IPv4 range it stands for. */
    assert_cidr("::ffff:10.0.0.0/104", AF_INET, "10.0.0.0", 8);
    assert_cidr("::ffff:127.0.0.1", AF_INET, "127.0.0.1", 32);
}

static void geoip_cidr_parse_rejects_garbage(void **state)
{
    static const char *const bad[] = {
        "",
        "/",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/08",
        "10.0.0.0/8 ",
        " 10.0.0.0/8",
        "10.0.0.0/8/8",
        "::1/129",
        "::1/1000",
        "10.0.0.0/0x8",
        "10.0.0/8",
        "garbage",
        "10.0.0.0/a",
        "::/",
        "[10.0.0.0]/8",
        "10.0.0.0//8",
    };
    geoip_cidr_t c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (geoip_cidr_parse(&c, bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_false(geoip_cidr_parse(&c, NULL));
}

static bool in(const char *cidr, const char *addr)
{
    geoip_cidr_t c;
    geoip_addr_t a;

    assert_true(geoip_cidr_parse(&c, cidr));
    assert_true(parse(&a, addr));
    return geoip_cidr_contains(&c, &a);
}

static void geoip_cidr_contains_edges(void **state)
{
    assert_true(in("10.0.0.0/8", "10.255.255.255"));
    assert_false(in("10.0.0.0/8", "11.0.0.0"));
    assert_true(in("172.16.0.0/12", "172.31.0.1"));
    assert_false(in("172.16.0.0/12", "172.32.0.1"));
    assert_true(in("0.0.0.0/0", "203.0.113.9"));
    assert_false(in("0.0.0.0/0", "2001:db8::1"));
    assert_true(in("1.2.3.4", "1.2.3.4"));
    assert_false(in("1.2.3.4", "1.2.3.5"));
    assert_true(in("2001:db8::/32", "2001:db8:1::1"));
    assert_false(in("2001:db8::/32", "2001:db9::1"));
    assert_true(in("fe80::/10", "febf::1"));
    assert_false(in("fe80::/10", "fec0::1"));
    assert_true(in("::/0", "::1"));
    assert_false(in("::/0", "127.0.0.1"));
    /* A mapped visitor is matched by an IPv4 range, and the other way round. */
    assert_true(in("127.0.0.0/8", "::ffff:127.0.0.1"));
    assert_true(in("::ffff:10.0.0.0/104", "10.9.9.9"));
}

static void geoip_cidr_list_contains_any(void **state)
{
    geoip_cidr_t list[2];
    geoip_addr_t a;

    assert_true(geoip_cidr_parse(&list[0], "127.0.0.1/32"));
    assert_true(geoip_cidr_parse(&list[1], "10.0.0.0/8"));
    assert_true(parse(&a, "10.0.0.18"));
    assert_true(geoip_cidr_list_contains(list, 2, &a));
    assert_false(geoip_cidr_list_contains(list, 1, &a));
    assert_false(geoip_cidr_list_contains(list, 0, &a));
    assert_true(parse(&a, "81.2.69.160"));
    assert_false(geoip_cidr_list_contains(list, 2, &a));
}

static void assert_special(const char *addr, const char *want)
{
    geoip_addr_t a;
    const char *got;

    if (!parse(&a, addr))
        fail_msg("cannot parse \"%s\"", addr);
    got = geoip_addr_special(&a);
    if (want == NULL && got != NULL)
        fail_msg("%s: expected public, got \"%s\"", addr, got);
    if (want != NULL && (got == NULL || strcmp(got, want) != 0))
        fail_msg("%s: expected \"%s\", got \"%s\"", addr, want, got ? got : "(public)");
}

static void geoip_addr_special_v4_ranges(void **state)
{
    assert_special("0.0.0.0", "unspecified");
    assert_special("0.255.255.255", "unspecified");
    assert_special("127.0.0.1", "loopback");
    assert_special("127.255.255.254", "loopback");
    assert_special("10.0.0.1", "private");
    assert_special("172.16.0.1", "private");
    assert_special("172.31.255.255", "private");
    assert_special("172.32.0.1", NULL);
    assert_special("192.168.1.1", "private");
    assert_special("169.254.0.1", "link-local");
    assert_special("169.254.169.254", "metadata");
    assert_special("100.64.0.1", "CGNAT");
    assert_special("100.127.255.255", "CGNAT");
    assert_special("100.128.0.1", NULL);
    assert_special("224.0.0.1", "multicast");
    assert_special("239.255.255.255", "multicast");
    assert_special("240.0.0.1", "reserved");
    assert_special("255.255.255.254", "reserved");
    assert_special("255.255.255.255", "broadcast");
    assert_special("192.0.0.8", "ietf-protocol");
    assert_special("198.18.0.1", "benchmarking");
    assert_special("198.19.255.255", "benchmarking");
    assert_special("198.20.0.1", NULL);
    assert_special("192.0.2.1", "documentation");
    assert_special("198.51.100.1", "documentation");
    assert_special("203.0.113.1", "documentation");
    assert_special("192.88.99.1", "6to4-relay");
    assert_special("192.88.98.255", NULL);
    assert_special("192.88.100.0", NULL);
    assert_special("81.2.69.160", NULL);
    assert_special("8.8.8.8", NULL);
    assert_special("1.1.1.1", NULL);
}

static void geoip_addr_special_v6_ranges(void **state)
{
    assert_special("::", "unspecified");
    assert_special("::1", "loopback");
    assert_special("fc00::1", "private");
    assert_special("fdff:ffff::1", "private");
    assert_special("fe80::1", "link-local");
    assert_special("febf:ffff::1", "link-local");
    assert_special("fec0::1", NULL);
    assert_special("ff02::1", "multicast");
    assert_special("2001:db8::1", "documentation");
    assert_special("fd00:ec2::254", "metadata");
    assert_special("fd00:ec2::253", "private");
    assert_special("::2", "ipv4-compatible");
    assert_special("::127.0.0.1", "ipv4-compatible");
    assert_special("100::1", "discard");
    assert_special("100::ffff:ffff:ffff:ffff", "discard");
    assert_special("100:0:0:1::1", NULL);
    assert_special("2001:218::1", NULL);
    assert_special("2a00:1450:4001::1", NULL);
}

static void geoip_addr_special_teredo_and_ietf_protocol(void **state)
{
    /* Teredo, whatever client it hides: 4136:e378:8000:63bf:3fff:fdd2 is the
     * RFC 4380 example, client 192.0.2.45; ffff:ffff is 0.0.0.0 obfuscated,
     * 80ff:fffe is 127.0.0.1 obfuscated, 7eb4:ba5d is 129.75.69.162. */
    assert_special("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo");
    assert_special("2001::80ff:fffe", "teredo");
    assert_special("2001:0:1:2:3:4:7eb4:ba5d", "teredo");
    assert_special("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", "teredo");
    /* The rest of 2001::/23. */
    assert_special("2001:1::1", "ietf-protocol");
    assert_special("2001:4:112::1", "ietf-protocol");
    assert_special("2001:20::1", "ietf-protocol");
    assert_special("2001:1ff:ffff::1", "ietf-protocol");
    assert_special("2001:200::1", NULL);
}

static void geoip_addr_special_6to4_judged_by_embedded_v4(void **state)
{
    assert_special("2002:7f00:1::", "loopback");
    assert_special("2002:7f00:0001:ffff::1", "loopback");
    assert_special("2002:a9fe:a9fe::", "metadata");
    assert_special("2002:a00:1::1", "private");
    assert_special("2002:c0a8:101::", "private");
    assert_special("2002::", "unspecified");
    assert_special("2002:e000:1::", "multicast");
    assert_special("2002:c058:6301::", "6to4-relay");
    assert_special("2002:0808:0808::1", NULL);
    assert_special("2002:5102:45a0::", NULL);
    assert_special("2003::1", NULL);
}

static void geoip_addr_special_embedded_v4(void **state)
{
    geoip_addr_t a;

    /* NAT64 reaches its embedded IPv4 address, which decides. */
    assert_special("64:ff9b::127.0.0.1", "loopback");
    assert_special("64:ff9b::a9fe:a9fe", "metadata");
    assert_special("64:ff9b::10.1.1.1", "private");
    assert_special("64:ff9b::8.8.8.8", NULL);
    /* The mapped form is normalised by the parser... */
    assert_special("::ffff:127.0.0.1", "loopback");
    assert_special("::ffff:169.254.169.254", "metadata");
    /* ...and also recognised when a caller builds the bytes by hand. */
    memset(&a, 0, sizeof(a));
    a.family = AF_INET6;
    a.bytes[10] = a.bytes[11] = 0xff;
    a.bytes[12] = 10;
    assert_string_equal(geoip_addr_special(&a), "private");
    /* An unknown family is never public. */
    a.family = 0;
    assert_non_null(geoip_addr_special(&a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(geoip_addr_parse_valid_forms),
        cmocka_unit_test(geoip_addr_parse_mapped_becomes_v4),
        cmocka_unit_test(geoip_addr_parse_rejects_garbage),
        cmocka_unit_test(geoip_addr_parse_rejects_embedded_nul),
        cmocka_unit_test(geoip_addr_parse_rejects_oversized),
        cmocka_unit_test(geoip_addr_from_sockaddr_both_families),
        cmocka_unit_test(geoip_addr_format_small_buffer_is_empty),
        cmocka_unit_test(geoip_cidr_parse_valid_and_host_bits_cleared),
        cmocka_unit_test(geoip_cidr_parse_rejects_garbage),
        cmocka_unit_test(geoip_cidr_contains_edges),
        cmocka_unit_test(geoip_cidr_list_contains_any),
        cmocka_unit_test(geoip_addr_special_v4_ranges),
        cmocka_unit_test(geoip_addr_special_v6_ranges),
        cmocka_unit_test(geoip_addr_special_embedded_v4),
        cmocka_unit_test(geoip_addr_special_teredo_and_ietf_protocol),
        cmocka_unit_test(geoip_addr_special_6to4_judged_by_embedded_v4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
