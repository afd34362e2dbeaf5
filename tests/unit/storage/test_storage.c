/*
 * tests/unit/storage/test_storage.c: links, records, deliveries, attempts, ids,
 * backups and errors, each against a fresh LMDB directory.
 */
#include "helpers.h"

#include <pthread.h>
#include <sys/stat.h>

/* ---- links ---- */

static void storage_open_creates_private_dir(void **state)
{
    fixture_t *f = fixture_new();
    char nested[128], err[256] = "";
    struct stat st;
    storage_t *s = NULL;

    (void)state;
    snprintf(nested, sizeof(nested), "%s/a/b", f->dir);
    f->opts.dir = nested;
    assert_int_equal(storage_open(&s, &f->opts, err, sizeof(err)), STORAGE_OK);
    assert_int_equal(stat(nested, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    storage_close(s);

    /* A path through a regular file cannot be a data directory. */
    char file[128], bad[160];
    snprintf(file, sizeof(file), "%s/file", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(bad, sizeof(bad), "%s/sub", file);
    f->opts.dir = bad;
    assert_int_equal(storage_open(&s, &f->opts, err, sizeof(err)), STORAGE_ERROR);
    assert_null(s);
    assert_non_null(strstr(err, bad));

    remove_tree(f->dir);
    free(f);
}

static int old_schema_job(storage_txn_t *txn, void *arg)
{
    static const char key[] = "storage.schema";
    const uint8_t one[8] = {1}; /* version 1, little-endian */

    (void)arg;
    return storage_record_put(txn, STORAGE_DB_META, key, strlen(key), one, sizeof(one), 0);
}

/* A directory written with schema 1 (counter keys led by the code) is refused
 * with its name and what to do, not read with the wrong key layout. */
static void storage_open_refuses_schema_1(void **state)
{
    fixture_t *f = fixture_new();
    char err[256] = "";
    storage_t *s = NULL;

    (void)state;
    fixture_open(f);
    assert_int_equal(storage_run(f->s, old_schema_job, NULL), STORAGE_OK);
    storage_close(f->s);

    assert_int_equal(storage_open(&s, &f->opts, err, sizeof(err)), STORAGE_ERROR);
    assert_null(s);
    assert_non_null(strstr(err, f->dir));
    assert_non_null(strstr(err, "schema version 1"));
    assert_non_null(strstr(err, "start with a new one"));

    remove_tree(f->dir);
    free(f);
}

static void storage_link_insert_get(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    storage_link_t l;

    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/x"), STORAGE_OK);
    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_non_null(txn);
    assert_int_equal(storage_link_get(txn, "abc", 3, &l), STORAGE_OK);
    assert_int_equal(l.code.len, 3);
    assert_memory_equal(l.code.ptr, "abc", 3);
    assert_string_equal(l.group_guid, "Bgroup00001");
    assert_int_equal(l.long_url.len, strlen("https://example.com/x"));
    assert_memory_equal(l.long_url.ptr, "https://example.com/x", l.long_url.len);
    assert_int_equal(l.title.len, 7);
    assert_memory_equal(l.tags.ptr, "[\"x\"]", 5);
    assert_int_equal(l.redirect_status, 301);
    assert_int_equal(l.created_us, 1700000000000000);
    assert_false(l.archived);

    /* Codes are case-sensitive, and impossible codes are simply absent. */
    assert_int_equal(storage_link_get(txn, "ABC", 3, &l), STORAGE_NOTFOUND);
    assert_int_equal(storage_link_get(txn, "ab", 2, &l), STORAGE_NOTFOUND);
    assert_int_equal(storage_link_get(txn, "", 0, &l), STORAGE_NOTFOUND);
    storage_reader_end(r);
    storage_reader_close(r);
}

static void storage_link_insert_conflict(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    storage_link_t l;

    assert_int_equal(add_link(f->s, "taken", "Bgroup00001", "https://a.example/"), STORAGE_OK);
    assert_int_equal(add_link(f->s, "taken", "Bgroup00002", "https://b.example/"), STORAGE_EXISTS);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_link_get(txn, "taken", 5, &l), STORAGE_OK);
    assert_memory_equal(l.long_url.ptr, "https://a.example/", l.long_url.len);
    /* The losing insert's index entry was rolled back with it. */
    assert_int_equal(storage_link_find_by_url(txn, "Bgroup00002", "https://b.example/", 18, &l),
                     STORAGE_NOTFOUND);
    storage_reader_end(r);
    storage_reader_close(r);
}

static void storage_link_insert_invalid(void **state)
{
    fixture_t *f = *state;
    char code[STORAGE_CODE_MAX + 2], *url = malloc(STORAGE_URL_MAX + 2);

    memset(code, 'a', sizeof(code) - 1);
    code[sizeof(code) - 1] = '\0';
    assert_int_equal(add_link(f->s, code, "Bgroup00001", "https://a.example/"), STORAGE_INVALID);
    code[STORAGE_CODE_MAX] = '\0';
    assert_int_equal(add_link(f->s, code, "Bgroup00001", "https://a.example/"), STORAGE_OK);

    assert_non_null(url);
    memset(url, 'u', STORAGE_URL_MAX + 1);
    url[STORAGE_URL_MAX + 1] = '\0';
    assert_int_equal(add_link(f->s, "long", "Bgroup00001", url), STORAGE_INVALID);
    url[STORAGE_URL_MAX] = '\0';
    assert_int_equal(add_link(f->s, "long", "Bgroup00001", url), STORAGE_OK);
    assert_int_equal(add_link(f->s, "", "Bgroup00001", "https://a.example/"), STORAGE_INVALID);
    assert_int_equal(add_link(f->s, "nogroup", "", "https://a.example/"), STORAGE_INVALID);
    assert_int_equal(add_link(f->s, "nourl", "Bgroup00001", ""), STORAGE_INVALID);
    free(url);
}

static void storage_link_find_by_url_per_group(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    storage_link_t l;
    const char *url = "https://example.com/very/long";
    link_job_t custom = {"custom", "Bgroup00001", url, false, false};

    assert_int_equal(add_link(f->s, "first", "Bgroup00001", url), STORAGE_OK);
    /* A second link for the same URL does not steal the index entry. */
    assert_int_equal(add_link(f->s, "second", "Bgroup00001", url), STORAGE_OK);
    assert_int_equal(storage_run(f->s, link_job, &custom), STORAGE_OK);
    assert_int_equal(add_link(f->s, "other", "Bgroup00002", url), STORAGE_OK);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_link_find_by_url(txn, "Bgroup00001", url, strlen(url), &l),
                     STORAGE_OK);
    assert_memory_equal(l.code.ptr, "first", 5);
    assert_int_equal(storage_link_find_by_url(txn, "Bgroup00002", url, strlen(url), &l),
                     STORAGE_OK);
    assert_memory_equal(l.code.ptr, "other", 5);
    assert_int_equal(storage_link_find_by_url(txn, "Bgroup00003", url, strlen(url), &l),
                     STORAGE_NOTFOUND);
    assert_int_equal(storage_link_find_by_url(txn, "Bgroup00001", url, strlen(url) - 1, &l),
                     STORAGE_NOTFOUND);
    storage_reader_end(r);
    storage_reader_close(r);
}

static void storage_link_update_moves_url_index(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    storage_link_t l;
    link_job_t upd = {"code1", "Bgroup00001", "https://new.example/", false, true};
    link_job_t absent = {"nope", "Bgroup00001", "https://new.example/", false, true};

    assert_int_equal(add_link(f->s, "code1", "Bgroup00001", "https://old.example/"), STORAGE_OK);
    assert_int_equal(storage_run(f->s, link_job, &upd), STORAGE_OK);
    assert_int_equal(storage_run(f->s, link_job, &absent), STORAGE_NOTFOUND);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_link_get(txn, "code1", 5, &l), STORAGE_OK);
    assert_memory_equal(l.long_url.ptr, "https://new.example/", l.long_url.len);
    assert_int_equal(storage_link_find_by_url(txn, "Bgroup00001", "https://old.example/", 20, &l),
                     STORAGE_NOTFOUND);
    assert_int_equal(storage_link_find_by_url(txn, "Bgroup00001", "https://new.example/", 20, &l),
                     STORAGE_OK);
    assert_memory_equal(l.code.ptr, "code1", 5);
    storage_reader_end(r);
    storage_reader_close(r);
}

typedef struct collected {
    char codes[16][16];
    int n;
    int stop_after;
} collected_t;

static int collect_link(void *ctx, const storage_link_t *l)
{
    collected_t *c = ctx;

    snprintf(c->codes[c->n], sizeof(c->codes[0]), "%.*s", (int)l->code.len, l->code.ptr);
    c->n++;
    return c->n == c->stop_after ? 42 : 0;
}

static void storage_link_scan_group_and_after(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    collected_t c = {.stop_after = -1};

    assert_int_equal(add_link(f->s, "d", "Bgroup00001", "https://d/"), STORAGE_OK);
    assert_int_equal(add_link(f->s, "a", "Bgroup00001", "https://a/"), STORAGE_OK);
    assert_int_equal(add_link(f->s, "b", "Bgroup00002", "https://b/"), STORAGE_OK);
    assert_int_equal(add_link(f->s, "c", "Bgroup00001", "https://c/"), STORAGE_OK);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_link_scan(txn, "Bgroup00001", NULL, 0, collect_link, &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.codes[0], "a");
    assert_string_equal(c.codes[1], "c");
    assert_string_equal(c.codes[2], "d");

    memset(&c, 0, sizeof(c));
    c.stop_after = -1;
    assert_int_equal(storage_link_scan(txn, NULL, "b", 1, collect_link, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.codes[0], "c");

    memset(&c, 0, sizeof(c));
    c.stop_after = 2;
    assert_int_equal(storage_link_scan(txn, NULL, NULL, 0, collect_link, &c), 42);
    assert_int_equal(c.n, 2);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* ---- the NOOVERWRITE race ---- */

typedef struct racer {
    storage_t *s;
    int rc;
    char url[64];
    pthread_barrier_t *barrier;
} racer_t;

static void *race_insert(void *arg)
{
    racer_t *rc = arg;
    link_job_t j = {"race", "Bgroup00001", rc->url, true, false};

    pthread_barrier_wait(rc->barrier);
    rc->rc = storage_run(rc->s, link_job, &j);
    return NULL;
}

static void race(storage_t *s)
{
    enum { N = 20 };
    pthread_t th[N];
    racer_t racers[N];
    pthread_barrier_t barrier;
    int ok = 0, exists = 0;

    pthread_barrier_init(&barrier, NULL, N);
    for (int i = 0; i < N; i++) {
        racers[i] = (racer_t){.s = s, .rc = -100, .barrier = &barrier};
        snprintf(racers[i].url, sizeof(racers[i].url), "https://racer%d.example/", i);
        assert_int_equal(pthread_create(&th[i], NULL, race_insert, &racers[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += racers[i].rc == STORAGE_OK;
        exists += racers[i].rc == STORAGE_EXISTS;
    }
    pthread_barrier_destroy(&barrier);
    assert_int_equal(ok, 1);
    assert_int_equal(exists, N - 1);
}

static void storage_run_race_same_code_writer(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    race(f->s);
    storage_writer_stop(f->s);
}

static void storage_run_race_same_code_direct(void **state)
{
    fixture_t *f = *state;

    race(f->s);
}

/* ---- opaque records and ids ---- */

static int put_job(storage_txn_t *txn, void *arg)
{
    const char **kv = arg;
    unsigned flags = kv[2] != NULL ? STORAGE_NOOVERWRITE : 0;

    return storage_record_put(txn, STORAGE_DB_WEBHOOKS, kv[0], strlen(kv[0]), kv[1], strlen(kv[1]),
                              flags);
}

static int del_job(storage_txn_t *txn, void *arg)
{
    return storage_record_del(txn, STORAGE_DB_WEBHOOKS, arg, strlen(arg));
}

static int count_record(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    char *order = ctx;
    size_t n = strlen(order);

    order[n] = key.ptr[0];
    order[n + 1] = '\0';
    return 0;
}

static void storage_record_put_get_del_scan(void **state)
{
    fixture_t *f = *state;
    const char *b1[] = {"b", "one", "x"}, *b2[] = {"b", "two", "x"}, *b3[] = {"b", "three", NULL};
    const char *a[] = {"a", "", "x"};
    storage_reader_t *r;
    storage_bytes_t v;
    char order[8] = "";

    assert_int_equal(storage_run(f->s, put_job, b1), STORAGE_OK);
    assert_int_equal(storage_run(f->s, put_job, b2), STORAGE_EXISTS);
    assert_int_equal(storage_run(f->s, put_job, a), STORAGE_OK);
    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);

    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_WEBHOOKS, "b", 1, &v), STORAGE_OK);
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.ptr, "one", 3);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_WEBHOOKS, "a", 1, &v), STORAGE_OK);
    assert_int_equal(v.len, 0);
    /* Databases are separate namespaces. */
    assert_int_equal(storage_record_get(txn, STORAGE_DB_GROUPS, "b", 1, &v), STORAGE_NOTFOUND);
    assert_int_equal(storage_record_scan(txn, STORAGE_DB_WEBHOOKS, count_record, order), 0);
    assert_string_equal(order, "ab");
    storage_reader_end(r);

    assert_int_equal(storage_run(f->s, put_job, b3), STORAGE_OK);
    assert_int_equal(storage_run(f->s, del_job, "a"), STORAGE_OK);
    assert_int_equal(storage_run(f->s, del_job, "a"), STORAGE_NOTFOUND);
    txn = storage_reader_begin(r);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_WEBHOOKS, "b", 1, &v), STORAGE_OK);
    assert_memory_equal(v.ptr, "three", 5);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_WEBHOOKS, "a", 1, &v), STORAGE_NOTFOUND);

    char big[300];
    memset(big, 'k', sizeof(big));
    assert_int_equal(storage_record_get(txn, STORAGE_DB_WEBHOOKS, big, 257, &v), STORAGE_INVALID);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_WEBHOOKS, big, 0, &v), STORAGE_INVALID);
    storage_reader_end(r);
    storage_reader_close(r);
}

typedef struct ids {
    uint64_t got[4];
} ids_t;

static int ids_job(storage_txn_t *txn, void *arg)
{
    ids_t *ids = arg;

    ids->got[0] = storage_next_id(txn, "delivery");
    ids->got[1] = storage_next_id(txn, "delivery");
    ids->got[2] = storage_next_id(txn, "other");
    ids->got[3] = storage_next_id(txn, "");
    return STORAGE_OK;
}

static void storage_next_id_counts_per_name(void **state)
{
    fixture_t *f = *state;
    ids_t ids;
    storage_reader_t *r;

    assert_int_equal(storage_run(f->s, ids_job, &ids), STORAGE_OK);
    assert_int_equal(ids.got[0], 1);
    assert_int_equal(ids.got[1], 2);
    assert_int_equal(ids.got[2], 1);
    assert_int_equal(ids.got[3], 0);

    storage_close(f->s);
    fixture_open(f);
    assert_int_equal(storage_run(f->s, ids_job, &ids), STORAGE_OK);
    assert_int_equal(ids.got[0], 3);
    assert_int_equal(ids.got[2], 2);

    /* Ids come from write transactions only. */
    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    assert_int_equal(storage_next_id(storage_reader_begin(r), "delivery"), 0);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* ---- deliveries and attempts ---- */

typedef struct dlist {
    uint64_t ids[8];
    int n;
} dlist_t;

static int collect_delivery(void *ctx, const storage_delivery_t *d)
{
    dlist_t *l = ctx;

    assert_string_equal(d->webhook_guid, "Whook000001");
    assert_int_equal(d->engagement_seq, d->id * 10);
    l->ids[l->n++] = d->id;
    return 0;
}

static int deliveries_job(storage_txn_t *txn, void *arg)
{
    static const uint64_t due[] = {300, 100, STORAGE_DUE_FAILED, 200, 100};
    int rc = STORAGE_OK;

    for (uint64_t i = 0; i < 5 && rc == STORAGE_OK; i++) {
        storage_delivery_t d = {.due_us = due[i],
                                .id = i + 1,
                                .engagement_seq = (i + 1) * 10,
                                .attempts = 1,
                                .last_status = 500};
        memcpy(d.webhook_guid, "Whook000001", 12);
        rc = storage_delivery_put(txn, &d);
    }
    return rc;
}

static int del_delivery_job(storage_txn_t *txn, void *arg)
{
    int rc = storage_delivery_del(txn, 100, 2);

    if (rc != STORAGE_OK)
        return rc;
    return storage_delivery_del(txn, 100, 2) == STORAGE_NOTFOUND ? STORAGE_OK : STORAGE_ERROR;
}

static void storage_delivery_put_scan_due_del(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    dlist_t l = {0};

    assert_int_equal(storage_run(f->s, deliveries_job, NULL), STORAGE_OK);
    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_delivery_scan_due(txn, 250, collect_delivery, &l), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.ids[0], 2); /* due 100, id 2 */
    assert_int_equal(l.ids[1], 5); /* due 100, id 5 */
    assert_int_equal(l.ids[2], 4); /* due 200 */

    memset(&l, 0, sizeof(l));
    assert_int_equal(storage_delivery_scan_due(txn, UINT64_MAX, collect_delivery, &l), 0);
    assert_int_equal(l.n, 4); /* the given-up one is never due */
    memset(&l, 0, sizeof(l));
    assert_int_equal(storage_delivery_scan_all(txn, collect_delivery, &l), 0);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.ids[4], 3);
    storage_reader_end(r);

    assert_int_equal(storage_run(f->s, del_delivery_job, NULL), STORAGE_OK);
    memset(&l, 0, sizeof(l));
    txn = storage_reader_begin(r);
    assert_int_equal(storage_delivery_scan_due(txn, 250, collect_delivery, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.ids[0], 5);
    storage_reader_end(r);
    storage_reader_close(r);
}

static int attempts_job(storage_txn_t *txn, void *arg)
{
    static char big[1000];
    int rc = STORAGE_OK;

    memset(big, 'r', sizeof(big));
    for (int i = 0; i < 6 && rc == STORAGE_OK; i++) {
        storage_attempt_t a = {.time_us = 1000 + (i % 3) * 100 + i,
                               .delivery_id = (uint64_t)i,
                               .attempt = 1,
                               .http_status = 500 + i,
                               .duration_ms = 7,
                               .outcome = STORAGE_OUTCOME_RETRY};
        /* Even attempts belong to the first webhook, odd ones to the second. */
        memcpy(a.webhook_guid, i % 2 == 0 ? "Whook000001" : "Whook000002", 12);
        a.error.ptr = big;
        a.error.len = i == 4 ? sizeof(big) : 5;
        a.response.ptr = big;
        a.response.len = i == 4 ? sizeof(big) : 3;
        rc = storage_attempt_append(txn, &a);
    }
    return rc;
}

typedef struct alist {
    int64_t times[8];
    int32_t status[8];
    size_t error_len[8], response_len[8];
    int n;
} alist_t;

static int collect_attempt(void *ctx, const storage_attempt_t *a)
{
    alist_t *l = ctx;

    assert_string_equal(a->webhook_guid, "Whook000001");
    l->times[l->n] = a->time_us;
    l->status[l->n] = a->http_status;
    l->error_len[l->n] = a->error.len;
    l->response_len[l->n] = a->response.len;
    l->n++;
    return 0;
}

static void storage_attempt_scan_newest_first(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    alist_t l = {0};

    assert_int_equal(storage_run(f->s, attempts_job, NULL), STORAGE_OK);
    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_attempt_scan(txn, "Whook000001", collect_attempt, &l), 0);
    /* Attempts 0, 2, 4 at times 1000, 1202, 1104. */
    assert_int_equal(l.n, 3);
    assert_int_equal(l.times[0], 1202);
    assert_int_equal(l.times[1], 1104);
    assert_int_equal(l.times[2], 1000);
    assert_int_equal(l.status[1], 504);
    assert_int_equal(l.error_len[1], 255);
    assert_int_equal(l.response_len[1], 512);
    assert_int_equal(l.error_len[0], 5);

    memset(&l, 0, sizeof(l));
    assert_int_equal(storage_attempt_scan(txn, "Whook000003", collect_attempt, &l), 0);
    assert_int_equal(l.n, 0);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* ---- operation ---- */

static void storage_backup_makes_openable_copy(void **state)
{
    fixture_t *f = *state;
    char dir[128], err[256] = "";
    storage_options_t opts = f->opts;
    storage_t *copy = NULL;
    storage_reader_t *r;
    storage_link_t l;

    assert_int_equal(add_link(f->s, "kept", "Bgroup00001", "https://kept.example/"), STORAGE_OK);
    snprintf(dir, sizeof(dir), "%s/backup", f->dir);
    assert_int_equal(storage_backup(f->s, dir, err, sizeof(err)), STORAGE_OK);
    /* The copy holds secrets: only its owner may read it, whatever the umask. */
    struct stat st;
    char file[200];
    snprintf(file, sizeof(file), "%s/data.mdb", dir);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    /* A second backup into the same, now non-empty, directory is refused. */
    assert_int_equal(storage_backup(f->s, dir, err, sizeof(err)), STORAGE_INVALID);
    assert_non_null(strstr(err, "not empty"));

    opts.dir = dir;
    assert_int_equal(storage_open(&copy, &opts, err, sizeof(err)), STORAGE_OK);
    assert_int_equal(storage_reader_open(copy, &r), STORAGE_OK);
    assert_int_equal(storage_link_get(storage_reader_begin(r), "kept", 4, &l), STORAGE_OK);
    assert_memory_equal(l.long_url.ptr, "https://kept.example/", l.long_url.len);
    storage_reader_end(r);
    storage_reader_close(r);
    storage_close(copy);
}

static int fill_job(storage_txn_t *txn, void *arg)
{
    static char val[64 * 1024];
    int *i = arg;
    char key[32];

    snprintf(key, sizeof(key), "k%d", (*i)++);
    return storage_record_put(txn, STORAGE_DB_BIO_PAGES, key, strlen(key), val, sizeof(val), 0);
}

static void fill_until_error(storage_t *s)
{
    int i = 0, rc = STORAGE_OK;

    while (rc == STORAGE_OK && i < 1000)
        rc = storage_run(s, fill_job, &i);
    assert_int_equal(rc, STORAGE_ERROR);
    assert_non_null(strstr(storage_strerror(), "map is full"));
    assert_non_null(strstr(storage_strerror(), "bio_pages"));
}

static void storage_map_full_says_so(void **state)
{
    fixture_t *f = fixture_new();

    (void)state;
    f->opts.map_size = (size_t)1 << 20;
    fixture_open(f);
    fill_until_error(f->s);

    /* Through the writer, the reason reaches the caller's thread too. */
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    fill_until_error(f->s);
    storage_writer_stop(f->s);

    fixture_done(f);
}

static int nop_job(storage_txn_t *txn, void *arg)
{
    return STORAGE_OK;
}

static void storage_submit_needs_writer(void **state)
{
    fixture_t *f = *state;
    storage_engagement_t e;

    memset(&e, 0, sizeof(e));
    memcpy(e.code, "abc", 4);
    assert_int_equal(storage_submit(f->s, nop_job, NULL, NULL), STORAGE_ERROR);
    assert_non_null(strstr(storage_strerror(), "not running"));
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(storage_open_creates_private_dir),
        cmocka_unit_test(storage_open_refuses_schema_1),
        cmocka_unit_test_setup_teardown(storage_link_insert_get, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_link_insert_conflict, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_link_insert_invalid, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_link_find_by_url_per_group, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_link_update_moves_url_index, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_link_scan_group_and_after, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_run_race_same_code_writer, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_run_race_same_code_direct, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_record_put_get_del_scan, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_next_id_counts_per_name, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_delivery_put_scan_due_del, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_attempt_scan_newest_first, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_backup_makes_openable_copy, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test(storage_map_full_says_so),
        cmocka_unit_test_setup_teardown(storage_submit_needs_writer, fixture_setup,
                                        fixture_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
