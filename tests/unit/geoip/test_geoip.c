/*
 * tests/unit/geoip/test_geoip.c: the country database. Uses the MaxMind test
 * databases in ../shared/geoip-test-data (case C12, C13) and small files
 * written at run time by mmdb_writer.h for the layouts they do not cover.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "geoip.h"
#include "mmdb_writer.h"

#define DATA_DIR SHARED_DIR "/geoip-test-data"

static const char *const country_dbs[] = {
    DATA_DIR "/GeoIP2-Country-Test.mmdb",
    DATA_DIR "/GeoLite2-Country-Test.mmdb",
};

static geoip_addr_t addr(const char *s)
{
    geoip_addr_t a;

    if (!geoip_addr_parse(&a, s, strlen(s)))
        fail_msg("cannot parse \"%s\"", s);
    return a;
}

/* The country of s as text, "" for none. */
static const char *country(const geoip_db_t *db, const char *s)
{
    static char out[3];
    geoip_addr_t a = addr(s);
    bool found = geoip_country(db, &a, out);

    assert_int_equal(found, out[0] != '\0');
    return out;
}

static geoip_db_t *open_ok(const char *path)
{
    char err[512];
    geoip_db_t *db = geoip_open(path, err, sizeof(err));

    if (db == NULL)
        fail_msg("geoip_open(%s): %s", path, err);
    return db;
}

static void geoip_country_known_addresses(void **state)
{
    for (size_t i = 0; i < sizeof(country_dbs) / sizeof(country_dbs[0]); i++) {
        geoip_db_t *db = open_ok(country_dbs[i]);

        assert_string_equal(country(db, "81.2.69.160"), "GB");
        assert_string_equal(country(db, "89.160.20.112"), "SE");
        assert_string_equal(country(db, "216.160.83.56"), "US");
        assert_string_equal(country(db, "2001:218::1"), "JP");
        geoip_close(db);
    }
}

static void geoip_country_c12_mapped_and_documentation(void **state)
{
    for (size_t i = 0; i < sizeof(country_dbs) / sizeof(country_dbs[0]); i++) {
        geoip_db_t *db = open_ok(country_dbs[i]);
        geoip_addr_t a = addr("::ffff:81.2.69.160");
        char text[64];

        geoip_addr_format(&a, text, sizeof(text));
        assert_string_equal(text, "81.2.69.160");
        assert_string_equal(country(db, "::ffff:81.2.69.160"), "GB");
        assert_string_equal(country(db, "2001:db8::1"), "");
        geoip_close(db);
    }
}

static void geoip_country_special_and_unknown_have_none(void **state)
{
    geoip_db_t *db = open_ok(country_dbs[0]);
    char out[3] = "XX";

    assert_string_equal(country(db, "10.0.0.1"), "");
    assert_string_equal(country(db, "127.0.0.1"), "");
    assert_string_equal(country(db, "169.254.169.254"), "");
    assert_string_equal(country(db, "::1"), "");
    assert_string_equal(country(db, "fe80::1"), "");
    /* Public but absent from the small test file. */
    assert_string_equal(country(db, "8.8.4.4"), "");
    /* NAT64 of a public address is looked up as that address. */
    assert_string_equal(country(db, "64:ff9b::81.2.69.160"), "GB");

    assert_false(geoip_country(NULL, NULL, out));
    assert_string_equal(out, "");
    geoip_close(db);
}

static void geoip_describe_names_type_and_time(void **state)
{
    geoip_db_t *db = open_ok(country_dbs[0]);
    const char *d = geoip_describe(db);

    assert_non_null(strstr(d, "GeoIP2-Country"));
    assert_non_null(strstr(d, "built 20"));
    assert_non_null(strstr(d, "country.iso_code"));
    geoip_close(db);
    assert_non_null(geoip_describe(NULL));
    geoip_close(NULL);
}

static void geoip_open_missing_path_names_it(void **state)
{
    char err[512] = "";
    const char *path = "/nonexistent/shortlinkd/GeoLite2-Country.mmdb";

    assert_null(geoip_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file or directory"));

    assert_null(geoip_open(DATA_DIR, err, sizeof(err)));
    assert_non_null(strstr(err, DATA_DIR));
    assert_null(geoip_open("", err, sizeof(err)));
    assert_true(err[0] != '\0');
    /* A tiny error buffer is filled, truncated, never overrun. */
    assert_null(geoip_open(path, err, 8));
    assert_int_equal(strlen(err), 7);
}

/* Addresses looked up in a database that opened despite being broken. */
static const char *const broken_probes[] = {
    "1.1.1.1",         "1.1.1.3",     "1.1.1.32", "81.2.69.160", "216.160.83.56",
    "255.255.255.254", "2001:218::1", "::2",      "::1.1.1.1",   "ffff::1",
};

/* Each broken file must fail cleanly: open refuses it naming the file and the
 * reason, or, where the damage is in a region open does not reach, it opens
 * and lookups answer without crashing (ASan watches both). Which of the two
 * happened is printed per file. */
static void check_broken(const char *path, const char *name, unsigned *refused)
{
    char err[512] = "";
    geoip_db_t *db = geoip_open(path, err, sizeof(err));

    if (db == NULL) {
        if (strstr(err, path) == NULL || strlen(err) <= strlen(path) + 2)
            fail_msg("%s: error lacks path or reason: \"%s\"", name, err);
        print_message("  %-48s refused at open: %s\n", name, strstr(err, path) + strlen(path));
        (*refused)++;
        return;
    }
    unsigned found = 0;
    for (size_t i = 0; i < sizeof(broken_probes) / sizeof(broken_probes[0]); i++) {
        char out[3];
        geoip_addr_t a = addr(broken_probes[i]);
        if (geoip_country(db, &a, out))
            found++;
    }
    print_message("  %-48s opened (%s); %u of %zu lookups found a country\n", name,
                  geoip_describe(db), found, sizeof(broken_probes) / sizeof(broken_probes[0]));
    geoip_close(db);
}

static void geoip_open_broken_databases_fail_cleanly(void **state)
{
    static const char *const broken[] = {
        "MaxMind-DB-test-broken-pointers-24.mmdb",
        "MaxMind-DB-test-broken-search-tree-24.mmdb",
    };
    char path[1024];
    unsigned total = 0, refused = 0;
    DIR *dir = opendir(DATA_DIR "/bad");
    struct dirent *de;

    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", DATA_DIR, broken[i]);
        check_broken(path, broken[i], &refused);
        total++;
    }
    assert_non_null(dir);
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/bad/%s", DATA_DIR, de->d_name);
        check_broken(path, de->d_name, &refused);
        total++;
    }
    closedir(dir);
    print_message("  %u of %u broken files refused at open\n", refused, total);
    assert_true(total >= 20);
}

/* ---- files written by the test ---- */

static char tmpdir[64];

static int setup_tmpdir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sl-geoip-XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown_tmpdir(void **state)
{
    char path[512];
    DIR *dir = opendir(tmpdir);
    struct dirent *de;

    while (dir != NULL && (de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", tmpdir, de->d_name);
        unlink(path);
    }
    if (dir != NULL)
        closedir(dir);
    return rmdir(tmpdir);
}

static mw_network_t net(uint8_t a, uint8_t b, uint8_t c, uint8_t prefix)
{
    mw_network_t n;

    memset(&n, 0, sizeof(n));
    n.addr[0] = a;
    n.addr[1] = b;
    n.addr[2] = c;
    n.prefix = prefix;
    return n;
}

/* {"country_code": code} as the ip-location-db files have it. */
static mw_network_t toplevel(uint8_t a, uint8_t b, uint8_t c, const char *code)
{
    mw_network_t n = net(a, b, c, 24);

    mw_map(&n.data, 1);
    mw_str(&n.data, "country_code");
    mw_str(&n.data, code);
    return n;
}

static const char *write_db(const char *name, const char *type, uint64_t epoch, mw_network_t *nets,
                            size_t n)
{
    static char path[128];

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    assert_int_equal(mw_write_v4(path, type, epoch, nets, n), 0);
    for (size_t i = 0; i < n; i++)
        mw_free(&nets[i].data);
    return path;
}

static void geoip_country_toplevel_layout(void **state)
{
    mw_network_t nets[5];
    const char *path;
    geoip_db_t *db;

    nets[0] = toplevel(81, 2, 69, "GB");
    nets[1] = toplevel(1, 0, 0, "AU");
    nets[2] = toplevel(5, 5, 5, "se"); /* lower case still means SE */
    nets[3] = toplevel(6, 6, 6, "USA");
    nets[4] = net(7, 7, 7, 24);
    mw_map(&nets[4].data, 1);
    mw_str(&nets[4].data, "country_code");
    mw_uint(&nets[4].data, MW_UINT16, 840);
    path = write_db("geo-whois-asn-country.mmdb", "geo-whois-asn-country", 1700000000, nets, 5);

    db = open_ok(path);
    assert_non_null(strstr(geoip_describe(db), "country_code"));
    assert_non_null(strstr(geoip_describe(db), "2023-11-14T22:13:20Z"));
    assert_string_equal(country(db, "81.2.69.160"), "GB");
    assert_string_equal(country(db, "::ffff:1.0.0.1"), "AU");
    assert_string_equal(country(db, "5.5.5.5"), "SE");
    assert_string_equal(country(db, "6.6.6.6"), "");
    assert_string_equal(country(db, "7.7.7.7"), "");
    assert_string_equal(country(db, "9.9.9.9"), "");
    /* An IPv6 visitor against an IPv4-only file is unknown, not an error. */
    assert_string_equal(country(db, "2001:218::1"), "");
    geoip_close(db);
}

static void geoip_country_registered_country_fallback(void **state)
{
    mw_network_t nets[3];
    const char *path;
    geoip_db_t *db;

    nets[0] = net(81, 2, 69, 24);
    mw_map(&nets[0].data, 2);
    mw_str(&nets[0].data, "country");
    mw_map(&nets[0].data, 1);
    mw_str(&nets[0].data, "iso_code");
    mw_str(&nets[0].data, "GB");
    mw_str(&nets[0].data, "registered_country");
    mw_map(&nets[0].data, 1);
    mw_str(&nets[0].data, "iso_code");
    mw_str(&nets[0].data, "IE");
    nets[1] = net(9, 9, 9, 24);
    mw_map(&nets[1].data, 1);
    mw_str(&nets[1].data, "registered_country");
    mw_map(&nets[1].data, 1);
    mw_str(&nets[1].data, "iso_code");
    mw_str(&nets[1].data, "DE");
    nets[2] = net(7, 7, 7, 24);
    mw_map(&nets[2].data, 1);
    mw_str(&nets[2].data, "continent");
    mw_map(&nets[2].data, 1);
    mw_str(&nets[2].data, "code");
    mw_str(&nets[2].data, "EU");
    path = write_db("country.mmdb", "GeoIP2-Country", 1700000000, nets, 3);

    db = open_ok(path);
    assert_string_equal(country(db, "81.2.69.1"), "GB");
    assert_string_equal(country(db, "9.9.9.9"), "DE");
    assert_string_equal(country(db, "7.7.7.7"), "");
    geoip_close(db);
}

static void geoip_open_unknown_layout_refused(void **state)
{
    mw_network_t nets[1];
    const char *path;
    char err[512];

    nets[0] = net(8, 8, 8, 24);
    mw_map(&nets[0].data, 1);
    mw_str(&nets[0].data, "autonomous_system_number");
    mw_uint(&nets[0].data, MW_UINT32, 15169);
    path = write_db("asn.mmdb", "GeoLite2-ASN", 1700000000, nets, 1);

    assert_null(geoip_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "country_code"));
}

static void geoip_open_empty_database_refused(void **state)
{
    const char *path = write_db("empty.mmdb", "GeoIP2-Country", 1700000000, NULL, 0);
    char err[512];

    assert_null(geoip_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, "no data records"));
}

static void geoip_open_absurd_build_time_refused(void **state)
{
    mw_network_t nets[1];
    const char *path;
    char err[512];

    nets[0] = toplevel(81, 2, 69, "GB");
    path = write_db("epoch.mmdb", "geo-whois-asn-country", UINT64_MAX, nets, 1);
    assert_null(geoip_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, "build time"));
}

/* Copies a file byte for byte, as an operator's cp would. */
static void copy_file(const char *from, const char *to)
{
    char buf[8192];
    size_t n;
    FILE *in = fopen(from, "rb");
    FILE *out = fopen(to, "wb");

    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static int count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    assert_non_null(dir);
    while ((de = readdir(dir)) != NULL)
        n += de->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* Overwrites a file in place with as many zero bytes as it has, keeping its
 * inode, as an updater that writes over the file does. */
static void zero_in_place(const char *path)
{
    char zeros[4096] = {0};
    FILE *f = fopen(path, "r+b");
    long size;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    rewind(f);
    for (long done = 0; done < size; done += (long)sizeof(zeros)) {
        size_t n = size - done < (long)sizeof(zeros) ? (size_t)(size - done) : sizeof(zeros);
        assert_int_equal(fwrite(zeros, 1, n, f), n);
    }
    assert_int_equal(fclose(f), 0);
}

/* The handle must not depend on the file after geoip_open: truncating the
 * mapped file in place used to kill the next lookup with SIGBUS. */
static void geoip_open_file_truncated_in_place_keeps_answering(void **state)
{
    char path[128], err[512] = "";
    int fds = count_fds();
    geoip_db_t *db;

    snprintf(path, sizeof(path), "%s/truncated.mmdb", tmpdir);
    copy_file(country_dbs[0], path);
    db = open_ok(path);
    /* Neither our descriptors nor libmaxminddb's stay open; the mapping
     * alone keeps the copy. */
    assert_int_equal(count_fds(), fds);

    assert_int_equal(truncate(path, 0), 0);
    assert_string_equal(country(db, "81.2.69.160"), "GB");
    assert_string_equal(country(db, "2001:218::1"), "JP");

    /* The truncated file itself is refused, under its own name. */
    assert_null(geoip_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_null(strstr(err, "/proc/"));
    geoip_close(db);
}

static void geoip_open_file_zeroed_in_place_keeps_answering(void **state)
{
    char path[128];
    geoip_db_t *db;

    snprintf(path, sizeof(path), "%s/zeroed.mmdb", tmpdir);
    copy_file(country_dbs[0], path);
    db = open_ok(path);
    zero_in_place(path);
    assert_string_equal(country(db, "81.2.69.160"), "GB");
    assert_string_equal(country(db, "89.160.20.112"), "SE");
    geoip_close(db);
}

/* Many threads on one handle: with ASan this at least shows no thread writes
 * to freed or shared scratch memory; the handle itself is never written. */
static void *lookup_many(void *arg)
{
    const geoip_db_t *db = arg;
    static const char *const addrs[] = {"81.2.69.160", "89.160.20.112", "216.160.83.56",
                                        "2001:218::1"};
    static const char *const want[] = {"GB", "SE", "US", "JP"};

    for (int i = 0; i < 2000; i++) {
        char out[3];
        geoip_addr_t a;
        size_t k = (size_t)i % 4;
        if (!geoip_addr_parse(&a, addrs[k], strlen(addrs[k])) || !geoip_country(db, &a, out) ||
            strcmp(out, want[k]) != 0)
            return (void *)1;
    }
    return NULL;
}

static void geoip_country_many_threads(void **state)
{
    geoip_db_t *db = open_ok(country_dbs[1]);
    pthread_t t[8];
    void *rc;

    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&t[i], NULL, lookup_many, db), 0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(pthread_join(t[i], &rc), 0);
        assert_null(rc);
    }
    geoip_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(geoip_country_known_addresses),
        cmocka_unit_test(geoip_country_c12_mapped_and_documentation),
        cmocka_unit_test(geoip_country_special_and_unknown_have_none),
        cmocka_unit_test(geoip_describe_names_type_and_time),
        cmocka_unit_test(geoip_open_missing_path_names_it),
        cmocka_unit_test(geoip_open_broken_databases_fail_cleanly),
        cmocka_unit_test(geoip_country_toplevel_layout),
        cmocka_unit_test(geoip_country_registered_country_fallback),
        cmocka_unit_test(geoip_open_unknown_layout_refused),
        cmocka_unit_test(geoip_open_empty_database_refused),
        cmocka_unit_test(geoip_open_absurd_build_time_refused),
        cmocka_unit_test(geoip_country_many_threads),
        cmocka_unit_test(geoip_open_file_truncated_in_place_keeps_answering),
        cmocka_unit_test(geoip_open_file_zeroed_in_place_keeps_answering),
    };
    return cmocka_run_group_tests(tests, setup_tmpdir, teardown_tmpdir);
}
