/*
 * Unit tests for webhooks/url.c: the SSRF rules of case C18, on the URL as
 * saved and on the address about to be connected to. Nothing here connects
 * anywhere; the addresses are only parsed and judged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "webhooks.h"
#include "webhooks_internal.h"

static const webhook_net_policy_t closed = {NULL, 0};

static void expect_refused(const char *url, const webhook_net_policy_t *policy, const char *range)
{
    char err[256] = "";

    assert_int_equal(webhook_url_check(url, policy, err, sizeof err), -1);
    assert_true(strncmp(err, "url: ", 5) == 0);
    if (range != NULL) {
        if (strstr(err, range) == NULL)
            fail_msg("%s: message \"%s\" does not name the %s range", url, err, range);
    }
}

static void webhook_url_check_c18_literals_refused(void **state)
{
    char err[256];

    expect_refused("http://169.254.169.254/latest/meta-data/", &closed, NULL);
    expect_refused("http://127.0.0.1:6379/", &closed, "loopback");
    expect_refused("http://[::ffff:127.0.0.1]/", &closed, "loopback");
    expect_refused("http://2130706433/", &closed, "loopback");

    assert_int_equal(webhook_url_check("http://127.0.0.1:6379/", &closed, err, sizeof err), -1);
    assert_string_equal(err, "url: 127.0.0.1 is in a loopback range, which webhooks may not reach");
    assert_int_equal(webhook_url_check("http://2130706433/", &closed, err, sizeof err), -1);
    assert_non_null(strstr(err, "127.0.0.1"));
}

static void webhook_url_check_other_spellings_refused(void **state)
{
    const char *urls[] = {
        "http://127.1/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://017700000001/",
        "http://[::1]/",
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        "http://[::ffff:7f00:1]/",
        "http://0.0.0.0/",
        "http://0/",
        "http://10.1.2.3/",
        "http://192.168.0.1:8080/x",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://[fe80::1%25eth0]/",
        "http://[fc00::1]/",
        "http://224.0.0.1/",
        "http://169.254.169.254./",
        "HTTP://LOCALHOST/",
        "http://localhost./",
        "http://api.localhost/",
        "https://127.0.0.1.:443/",
    };

    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++)
        expect_refused(urls[i], &closed, NULL);
}

static void webhook_url_check_bad_scheme_or_form_refused(void **state)
{
    const char *urls[] = {
        "javascript:alert(1)",
        " JavaScript:alert(1)",
        "ftp://files.example/x",
        "file:///etc/passwd",
        "gopher://crm.example/",
        "data:text/html,x",
        "crm.example/hook",
        "/hook",
        "",
        "http://",
        "http://crm.example/a b",
        "http://crm.example/\r\nX-Injected: 1",
    };

    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++)
        expect_refused(urls[i], &closed, NULL);
    expect_refused(NULL, &closed, NULL);
}

/* IPv6 prefixes that carry an IPv4 address to a relay or tunnel. */
static void webhook_url_check_6to4_and_teredo_refused(void **state)
{
    struct sockaddr_in6 sin6;
    char why[256] = "";

    /* 6to4 reaches the IPv4 address in bits 16..47: here 127.0.0.1. */
    expect_refused("http://[2002:7f00:1::]/", &closed, "loopback");
    expect_refused("http://[2002:a9fe:a9fe::1]/", &closed, "metadata");
    expect_refused("http://[2002:a00:1::]:8080/", &closed, "private");
    /* Teredo: wherever it leads cannot be told from the address. */
    expect_refused("http://[2001::80ff:fffe]/", &closed, "teredo");
    expect_refused("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", &closed, "teredo");
    expect_refused("http://[2001:4:112::1]/", &closed, "ietf-protocol");
    expect_refused("http://192.88.99.1/", &closed, "6to4-relay");

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2002:7f00:1::", &sin6.sin6_addr);
    assert_false(webhook__addr_allowed((struct sockaddr *)&sin6, &closed, why, sizeof why));
    assert_non_null(strstr(why, "loopback"));

    /* 6to4 of a public address is that public address. */
    assert_int_equal(webhook_url_check("http://[2002:5102:45a0::1]/", &closed, why, sizeof why), 0);
}

/* Hosts with bytes past ASCII: curl cannot deliver to them here, so none is
 * accepted; the message gives the ASCII form, or the range it falls in. */
static void webhook_url_check_non_ascii_host_refused(void **state)
{
    geoip_cidr_t allow;
    char err[256];

    assert_true(geoip_cidr_parse(&allow, "127.0.0.0/8"));
    webhook_net_policy_t open = {&allow, 1};

    /* Ideographic full stops and circled digits are 127.0.0.1 once mapped. */
    expect_refused("http://127\u30020\u30020\u30021/", &closed, "loopback");
    expect_refused("http://\u2460\u2461\u2466.0.0.1/", &closed, "loopback");
    assert_int_equal(
        webhook_url_check("http://127\u30020\u30020\u30021/", &closed, err, sizeof err), -1);
    assert_string_equal(err, "url: 127.0.0.1 is in a loopback range, which webhooks may not reach");
    /* Allowed, yet still not deliverable as written. */
    assert_int_equal(
        webhook_url_check("http://127\u30020\u30020\u30021:9/", &open, err, sizeof err), -1);
    assert_string_equal(err, "url: use the ASCII (punycode) form of the host, 127.0.0.1");

    assert_int_equal(webhook_url_check("http://b\u00fccher.example/hook", &closed, err, sizeof err),
                     -1);
    assert_string_equal(err,
                        "url: use the ASCII (punycode) form of the host, xn--bcher-kva.example");
    /* curl decodes a percent-encoded host, so the same applies. */
    assert_int_equal(webhook_url_check("https://b%C3%BCcher.example/", &closed, err, sizeof err),
                     -1);
    assert_string_equal(err,
                        "url: use the ASCII (punycode) form of the host, xn--bcher-kva.example");
    expect_refused("http://m\u00fcller.localhost/", &closed, "loopback");
    expect_refused("http://\uff41\uff50\uff49.example/", &closed, "api.example");

    /* Not UTF-8, or not a valid name. */
    expect_refused("http://b\xff.example/", &closed, "ASCII form");
    expect_refused("http://a\u202eb.example/", &closed, "ASCII form");

    /* The ASCII form itself is accepted. */
    assert_int_equal(webhook_url_check("http://xn--bcher-kva.example/", &closed, err, sizeof err),
                     0);
}

static void webhook_url_check_public_accepted(void **state)
{
    char err[256];
    const char *urls[] = {
        "https://crm.example/hook?x=1",   "http://81.2.69.160/hook",
        "https://[2001:218::1]:8443/",    "HTTPS://CRM.EXAMPLE/",
        "https://localhost.example.com/",
    };

    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        if (webhook_url_check(urls[i], &closed, err, sizeof err) != 0)
            fail_msg("%s refused: %s", urls[i], err);
    }
}

static void webhook_url_check_policy_opens_loopback(void **state)
{
    geoip_cidr_t allow[2];
    char err[256];

    assert_true(geoip_cidr_parse(&allow[0], "127.0.0.0/8"));
    assert_true(geoip_cidr_parse(&allow[1], "::1/128"));
    webhook_net_policy_t open = {allow, 2};

    assert_int_equal(webhook_url_check("http://127.0.0.1:6379/", &open, err, sizeof err), 0);
    assert_int_equal(webhook_url_check("http://2130706433/", &open, err, sizeof err), 0);
    assert_int_equal(webhook_url_check("http://[::ffff:127.0.0.1]/", &open, err, sizeof err), 0);
    assert_int_equal(webhook_url_check("http://[::1]:9/", &open, err, sizeof err), 0);
    assert_int_equal(webhook_url_check("http://localhost:9/", &open, err, sizeof err), 0);
    /* Opening loopback opens nothing else. */
    expect_refused("http://169.254.169.254/latest/meta-data/", &open, NULL);
    expect_refused("http://10.0.0.1/", &open, "private");
    expect_refused("javascript:alert(1)", &open, NULL);
}

static void webhook_addr_allowed_checks_connected_address(void **state)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    geoip_cidr_t allow;
    char why[256] = "";

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_false(webhook__addr_allowed((struct sockaddr *)&sin, &closed, why, sizeof why));
    assert_non_null(strstr(why, "blocked address 127.0.0.1"));
    assert_non_null(strstr(why, "loopback"));

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:169.254.169.254", &sin6.sin6_addr);
    assert_false(webhook__addr_allowed((struct sockaddr *)&sin6, &closed, why, sizeof why));
    assert_non_null(strstr(why, "169.254.169.254"));

    inet_pton(AF_INET, "81.2.69.160", &sin.sin_addr);
    assert_true(webhook__addr_allowed((struct sockaddr *)&sin, &closed, why, sizeof why));

    assert_true(geoip_cidr_parse(&allow, "127.0.0.0/8"));
    webhook_net_policy_t open = {&allow, 1};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_true(webhook__addr_allowed((struct sockaddr *)&sin, &open, why, sizeof why));
}

static void webhook_url_host_lowercases(void **state)
{
    char host[64];

    assert_true(webhook__url_host("https://CRM.Example:8443/x", host, sizeof host));
    assert_string_equal(host, "https://crm.example:8443");
    assert_true(webhook__url_host("http://crm.example/x", host, sizeof host));
    assert_string_equal(host, "http://crm.example:80");
    /* Two ports on one host are two endpoints, each with its own cap. */
    assert_true(webhook__url_host("http://127.0.0.1:9001/a", host, sizeof host));
    assert_string_equal(host, "http://127.0.0.1:9001");
    assert_false(webhook__url_host("not a url", host, sizeof host));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webhook_url_check_c18_literals_refused),
        cmocka_unit_test(webhook_url_check_other_spellings_refused),
        cmocka_unit_test(webhook_url_check_bad_scheme_or_form_refused),
        cmocka_unit_test(webhook_url_check_6to4_and_teredo_refused),
        cmocka_unit_test(webhook_url_check_non_ascii_host_refused),
        cmocka_unit_test(webhook_url_check_public_accepted),
        cmocka_unit_test(webhook_url_check_policy_opens_loopback),
        cmocka_unit_test(webhook_addr_allowed_checks_connected_address),
        cmocka_unit_test(webhook_url_host_lowercases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
