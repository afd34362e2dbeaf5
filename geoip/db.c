/*
 * geoip/db.c: the country database, one memory-mapped MaxMind DB file.
 *
 * The file is copied once into a private, sealed memory file, which is what
 * libmaxminddb maps: nothing done to the file on disk afterwards can reach the
 * lookups, and lookups from many threads need no lock (libmaxminddb in
 * MMDB_MODE_MMAP only reads the mapping). Everything that can go wrong with a
 * bad file is checked at open, so that an operator learns at start-up, not at
 * the first click.
 */
#include "geoip.h"

#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Where the country code lives in a record. */
typedef enum db_layout {
    LAYOUT_UNKNOWN,
    LAYOUT_GEOIP2,   /* country.iso_code, else registered_country.iso_code */
    LAYOUT_TOPLEVEL, /* country_code, as in the ip-location-db files */
} db_layout_t;

struct geoip_db {
    MMDB_s mmdb; /* entries point back here, so the struct must not move */
    db_layout_t layout;
    char description[160];
};

/* Data records sampled from the search tree at open; enough to see the
 * layout, small enough to keep start-up instant. */
#define SAMPLE_RECORDS 16
/* Search-tree nodes read while sampling, bounding the walk on a tree that a
 * corrupt file turned into a cycle. */
#define SAMPLE_NODE_BUDGET 4096
/* 9999-12-31T23:59:59Z: a build time past it is a corrupt field, not a date. */
#define MAX_BUILD_EPOCH 253402300799ULL
/* The largest file copied into memory. Country databases are tens of
 * megabytes and even a city database is well below this; a larger file is
 * not one to hold in memory by mistake. */
#define MAX_DB_BYTES (1ULL << 30)
/* Bytes read per step of that copy. */
#define COPY_CHUNK (1U << 20)

/* Public addresses the self-check looks up: they must not make the library
 * report an error, whether or not the file knows them. */
static const char *const probe_v4[] = {"1.1.1.1", "8.8.8.8", "81.2.69.160", "89.160.20.112"};
static const char *const probe_v6[] = {"2001:4860:4860::8888", "2001:218::1", "2a02:ff0::1"};

static void fail(char *err, size_t errlen, const char *path, const char *what, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "GeoIP database %s: %s%s%s", path, what, why[0] ? ": " : "", why);
}

static bool is_letter(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Reads one string at a path of the record. A path the record does not have,
 * or has with another type, is "not there"; only damaged data is an error.
 * Returns 1 when a two-letter code was found, 0 when not, -MMDB error code. */
static int get_code(MMDB_entry_s *entry, const char *const *path, char out[3])
{
    MMDB_entry_data_s d;
    int rc = MMDB_aget_value(entry, &d, path);

    if (rc == MMDB_LOOKUP_PATH_DOES_NOT_MATCH_DATA_ERROR)
        return 0;
    if (rc != MMDB_SUCCESS)
        return -rc;
    if (!d.has_data || d.type != MMDB_DATA_TYPE_UTF8_STRING || d.data_size != 2)
        return 0;
    if (!is_letter(d.utf8_string[0]) || !is_letter(d.utf8_string[1]))
        return 0;
    /* ISO 3166 codes are upper case; a lower-case file still means them. */
    out[0] = (char)(d.utf8_string[0] & ~0x20);
    out[1] = (char)(d.utf8_string[1] & ~0x20);
    out[2] = '\0';
    return 1;
}

static const char *const path_country[] = {"country", "iso_code", NULL};
static const char *const path_registered[] = {"registered_country", "iso_code", NULL};
static const char *const path_toplevel[] = {"country_code", NULL};

/* 1 when a code was found, 0 when the record has none, -MMDB error code. */
static int record_country(MMDB_entry_s *entry, db_layout_t layout, char out[3])
{
    int rc;

    if (layout == LAYOUT_TOPLEVEL)
        return get_code(entry, path_toplevel, out);
    rc = get_code(entry, path_country, out);
    if (rc != 0)
        return rc;
    /* Anycast and satellite networks often have no country of their own but a
     * registered one, which is the best guess there is. */
    return get_code(entry, path_registered, out);
}

/* Checks one data record: its whole data must decode, and it may reveal the
 * layout. Returns 0, or -1 with err set. */
static int check_record(geoip_db_t *db, MMDB_entry_s *entry, const char *path, char *err,
                        size_t errlen)
{
    MMDB_entry_data_list_s *list = NULL;
    char code[3];
    int rc;

    /* Decoding the whole record, not only the keys we read, is what finds
     * broken pointers, bad lengths and cycles in the data section. */
    rc = MMDB_get_entry_data_list(entry, &list);
    MMDB_free_entry_data_list(list);
    if (rc != MMDB_SUCCESS) {
        fail(err, errlen, path, "corrupt data section", MMDB_strerror(rc));
        return -1;
    }
    if (db->layout != LAYOUT_UNKNOWN)
        return 0;
    rc = get_code(entry, path_toplevel, code);
    if (rc == 1) {
        db->layout = LAYOUT_TOPLEVEL;
        return 0;
    }
    if (rc == 0)
        rc = record_country(entry, LAYOUT_GEOIP2, code);
    if (rc == 1)
        db->layout = LAYOUT_GEOIP2;
    if (rc < 0) {
        fail(err, errlen, path, "corrupt data section", MMDB_strerror(-rc));
        return -1;
    }
    return 0;
}

static int check_metadata(const MMDB_s *m, const char *path, char *err, size_t errlen)
{
    const MMDB_metadata_s *md = &m->metadata;

    if (md->binary_format_major_version != 2) {
        fail(err, errlen, path, "unsupported binary format version", "");
        return -1;
    }
    if (md->node_count == 0 ||
        (md->record_size != 24 && md->record_size != 28 && md->record_size != 32)) {
        fail(err, errlen, path, "metadata describes an impossible search tree", "");
        return -1;
    }
    if (md->ip_version != 4 && md->ip_version != 6) {
        fail(err, errlen, path, "metadata names neither IPv4 nor IPv6", "");
        return -1;
    }
    if (md->database_type == NULL || md->database_type[0] == '\0') {
        fail(err, errlen, path, "metadata has no database type", "");
        return -1;
    }
    if (md->build_epoch > MAX_BUILD_EPOCH) {
        fail(err, errlen, path, "metadata build time is out of range", "");
        return -1;
    }
    return 0;
}

static int probe_one(geoip_db_t *db, int family, const char *text, const char *path, char *err,
                     size_t errlen)
{
    struct sockaddr_storage ss;
    MMDB_lookup_result_s res;
    int mmdb_error = MMDB_SUCCESS;
    char why[160];

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        inet_pton(AF_INET, text, &sin->sin_addr);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, text, &sin6->sin6_addr);
    }
    res = MMDB_lookup_sockaddr(&db->mmdb, (const struct sockaddr *)&ss, &mmdb_error);
    if (mmdb_error != MMDB_SUCCESS) {
        snprintf(why, sizeof(why), "%s: %s", text, MMDB_strerror(mmdb_error));
        fail(err, errlen, path, "lookup failed", why);
        return -1;
    }
    if (!res.found_entry)
        return 0;
    return check_record(db, &res.entry, path, err, errlen);
}

/* Looks up the probe addresses. The first IPv4 lookup also lets the library
 * settle where the IPv4 subtree starts before any other thread looks. */
static int probe_known(geoip_db_t *db, const char *path, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(probe_v4) / sizeof(probe_v4[0]); i++) {
        if (probe_one(db, AF_INET, probe_v4[i], path, err, errlen) != 0)
            return -1;
    }
    if (db->mmdb.metadata.ip_version != 6)
        return 0;
    for (size_t i = 0; i < sizeof(probe_v6) / sizeof(probe_v6[0]); i++) {
        if (probe_one(db, AF_INET6, probe_v6[i], path, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Walks the search tree depth first from the root, checking the first data
 * records it meets. The known addresses may all be absent from a small or
 * regional file; the tree always leads to whatever data it has. */
static int sample_tree(geoip_db_t *db, const char *path, char *err, size_t errlen, int *found)
{
    uint32_t stack[129];
    size_t depth = 0;
    unsigned budget = SAMPLE_NODE_BUDGET;
    unsigned max_depth = db->mmdb.metadata.ip_version == 6 ? 128 : 32;

    *found = 0;
    stack[depth++] = 0;
    while (depth > 0 && budget > 0 && *found < SAMPLE_RECORDS) {
        uint32_t node_number = stack[--depth];
        MMDB_search_node_s node;
        int rc;

        budget--;
        rc = MMDB_read_node(&db->mmdb, node_number, &node);
        if (rc != MMDB_SUCCESS) {
            fail(err, errlen, path, "corrupt search tree", MMDB_strerror(rc));
            return -1;
        }
        /* Right first onto the stack, so that the left subtree is read first. */
        uint8_t types[2] = {node.right_record_type, node.left_record_type};
        uint64_t records[2] = {node.right_record, node.left_record};
        MMDB_entry_s entries[2] = {node.right_record_entry, node.left_record_entry};
        for (int side = 0; side < 2; side++) {
            if (types[side] == MMDB_RECORD_TYPE_INVALID) {
                fail(err, errlen, path, "corrupt search tree",
                     "a record points past the end of the file");
                return -1;
            }
            if (types[side] == MMDB_RECORD_TYPE_DATA && *found < SAMPLE_RECORDS) {
                if (check_record(db, &entries[side], path, err, errlen) != 0)
                    return -1;
                (*found)++;
            }
            if (types[side] == MMDB_RECORD_TYPE_SEARCH_NODE && depth < max_depth)
                stack[depth++] = (uint32_t)records[side];
        }
    }
    return 0;
}

static void sanitize_copy(char *dst, size_t dstlen, const char *src)
{
    size_t n = 0;

    /* The type comes from the file and ends up in logs: printable ASCII only. */
    for (; src[n] != '\0' && n + 1 < dstlen && n < 64; n++)
        dst[n] = (src[n] >= 0x20 && src[n] < 0x7f) ? src[n] : '?';
    dst[n] = '\0';
}

static void describe(geoip_db_t *db)
{
    const MMDB_metadata_s *md = &db->mmdb.metadata;
    char type[72];
    char built[32] = "unknown";
    struct tm tm;
    time_t t = (time_t)md->build_epoch;

    sanitize_copy(type, sizeof(type), md->database_type);
    if (gmtime_r(&t, &tm) != NULL)
        strftime(built, sizeof(built), "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(db->description, sizeof(db->description), "%s built %s, IPv%u, %s", type, built,
             (unsigned)md->ip_version,
             db->layout == LAYOUT_TOPLEVEL ? "country_code" : "country.iso_code");
}

/* Tells a missing or unreadable path apart from a bad file; libmaxminddb
 * reports both as a failed open, without errno. O_NONBLOCK keeps a FIFO given
 * by mistake from hanging start-up; it changes nothing for a regular file.
 * Returns the open descriptor, or -1 with err set. */
static int open_regular(const char *path, char *err, size_t errlen)
{
    struct stat st;
    char why[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        fail(err, errlen, path, "cannot open", strerror_r(errno, why, sizeof(why)));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        fail(err, errlen, path, "not a regular file", "");
        return -1;
    }
    return fd;
}

/* Writes all of buf to fd. Returns 0, or -1 with errno set. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies the file at src into the memory file dst, to the end of src, at most
 * MAX_DB_BYTES. Returns 0, or -1 with err set. */
static int copy_into(int dst, int src, const char *path, char *err, size_t errlen)
{
    char why[128];
    char *buf = malloc(COPY_CHUNK);
    uint64_t total = 0;
    int rc = -1;

    if (buf == NULL) {
        fail(err, errlen, path, "out of memory", "");
        goto out;
    }
    for (;;) {
        ssize_t n = read(src, buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fail(err, errlen, path, "cannot read", strerror_r(errno, why, sizeof(why)));
            goto out;
        }
        if (n == 0)
            break;
        total += (uint64_t)n;
        /* Counted as read, not from fstat, so a file still growing while it
         * is copied is bounded too. */
        if (total > MAX_DB_BYTES) {
            fail(err, errlen, path, "larger than 1 GiB", "");
            goto out;
        }
        if (write_all(dst, buf, (size_t)n) != 0) {
            fail(err, errlen, path, "cannot copy into memory", strerror_r(errno, why, sizeof(why)));
            goto out;
        }
    }
    rc = 0;

out:
    free(buf);
    return rc;
}

/* Makes a private, sealed in-memory copy of the open file src, so that the
 * mapping libmaxminddb makes cannot change under the lookups. Mapping the
 * operator's file directly meant that a file truncated or rewritten in place
 * (": > file", an updater writing over it) took the mapped pages away and the
 * next lookup died of SIGBUS; a reload could not help, since it would only
 * refuse the broken file and keep the mapping of it. The cost is the file's
 * size in memory (twice during a reload) instead of shared page cache.
 *
 * Returns 0 with *out the memory file, 0 with *out = -1 when memory files are
 * not available here (the caller then maps the path itself), or -1 with err
 * set. */
static int private_copy(int src, const char *path, char *err, size_t errlen, int *out)
{
    int fd = memfd_create("shortlinkd-geoip", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    *out = -1;
    if (fd < 0)
        return 0;
    if (copy_into(fd, src, path, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    /* Nothing else holds this file, and the seals make that a guarantee:
     * neither a stray write nor a truncation can reach the mapping. A kernel
     * without seals still gives a copy no one else can name, so a failure
     * here changes nothing that matters. */
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    *out = fd;
    return 0;
}

/* Maps the database: the private copy in memfd through its /proc/self/fd
 * name, or path itself when there is no copy or no /proc. libmaxminddb opens
 * the name it is given, maps it and closes its own descriptor; the mapping
 * keeps the memory file alive after the caller closes memfd. Returns an MMDB
 * status code. */
static int map_db(MMDB_s *mmdb, int memfd, const char *path)
{
    char proc_path[48];
    int rc;

    if (memfd < 0)
        return MMDB_open(path, MMDB_MODE_MMAP, mmdb);
    snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", memfd);
    rc = MMDB_open(proc_path, MMDB_MODE_MMAP, mmdb);
    /* Only the open of the name can fail for want of /proc; the copy itself
     * is there. Mapping the file in place is what shortlinkd did before, and
     * better than no database. */
    if (rc == MMDB_FILE_OPEN_ERROR)
        rc = MMDB_open(path, MMDB_MODE_MMAP, mmdb);
    return rc;
}

geoip_db_t *geoip_open(const char *path, char *err, size_t errlen)
{
    geoip_db_t *db = NULL;
    geoip_db_t *result = NULL;
    bool opened = false;
    int found = 0;
    int fd = -1;
    int memfd = -1;
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL || path[0] == '\0') {
        fail(err, errlen, "(none)", "no path given", "");
        goto out;
    }
    fd = open_regular(path, err, errlen);
    if (fd < 0)
        goto out;
    if (private_copy(fd, path, err, errlen, &memfd) != 0)
        goto out;
    db = calloc(1, sizeof(*db));
    if (db == NULL) {
        fail(err, errlen, path, "out of memory", "");
        goto out;
    }
    /* Errors name path, the operator's file, never the /proc name. */
    rc = map_db(&db->mmdb, memfd, path);
    if (rc != MMDB_SUCCESS) {
        fail(err, errlen, path, "not a usable MaxMind database", MMDB_strerror(rc));
        goto out;
    }
    opened = true;
    if (check_metadata(&db->mmdb, path, err, errlen) != 0)
        goto out;
    if (probe_known(db, path, err, errlen) != 0)
        goto out;
    if (sample_tree(db, path, err, errlen, &found) != 0)
        goto out;
    if (db->layout == LAYOUT_UNKNOWN) {
        fail(err, errlen, path,
             found == 0 ? "no data records" : "no record holds country.iso_code or country_code",
             "");
        goto out;
    }
    describe(db);
    result = db;
    db = NULL;

out:
    if (memfd >= 0)
        close(memfd);
    if (fd >= 0)
        close(fd);
    if (db != NULL) {
        if (opened)
            MMDB_close(&db->mmdb);
        free(db);
    }
    return result;
}

/* TODO: no reference counting here: on reload, server/ must keep the old
 * handle open until lookups that may still hold it have finished. */
void geoip_close(geoip_db_t *db)
{
    if (db == NULL)
        return;
    MMDB_close(&db->mmdb);
    free(db);
}

bool geoip_country(const geoip_db_t *db, const geoip_addr_t *a, char out[3])
{
    struct sockaddr_storage ss;
    MMDB_lookup_result_s res;
    int mmdb_error = MMDB_SUCCESS;
    static const uint8_t nat64_prefix[12] = {0, 0x64, 0xff, 0x9b};

    out[0] = '\0';
    if (db == NULL || a == NULL || geoip_addr_special(a) != NULL)
        return false;
    memset(&ss, 0, sizeof(ss));
    if (a->family == AF_INET6 && memcmp(a->bytes, nat64_prefix, 12) != 0) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, a->bytes, 16);
    } else {
        /* A NAT64 address (64:ff9b::/96) is its embedded IPv4 visitor, whom
         * the database knows under the IPv4 address. */
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, a->family == AF_INET ? a->bytes : a->bytes + 12, 4);
    }
    res = MMDB_lookup_sockaddr(&db->mmdb, (const struct sockaddr *)&ss, &mmdb_error);
    /* An IPv6 visitor against an IPv4-only file is simply unknown; other
     * errors mean a damaged region of the file, and a click without a
     * country is better than none. */
    if (mmdb_error != MMDB_SUCCESS || !res.found_entry)
        return false;
    return record_country(&res.entry, db->layout, out) == 1;
}

const char *geoip_describe(const geoip_db_t *db)
{
    return db != NULL ? db->description : "no GeoIP database";
}
