/*
 * tests/unit/storage/helpers.h: fixtures shared by the storage unit tests: a
 * fresh LMDB directory per test, and small jobs that insert links and records.
 */
#ifndef SHORTLINKD_TEST_STORAGE_HELPERS_H
#define SHORTLINKD_TEST_STORAGE_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage.h"

typedef struct fixture {
    char dir[64];
    storage_t *s;
    storage_options_t opts;
} fixture_t;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void fixture_open(fixture_t *f)
{
    char err[256] = "";

    assert_int_equal(storage_open(&f->s, &f->opts, err, sizeof(err)), STORAGE_OK);
}

static inline fixture_t *fixture_new(void)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/shortlinkd-storage-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->opts.dir = f->dir;
    f->opts.map_size = (size_t)256 << 20;
    return f;
}

static inline int fixture_setup(void **state)
{
    fixture_t *f = fixture_new();

    fixture_open(f);
    *state = f;
    return 0;
}

/* Closes the store and removes it with its directory. */
static inline void fixture_done(fixture_t *f)
{
    storage_close(f->s);
    remove_tree(f->dir);
    free(f);
}

static inline int fixture_teardown(void **state)
{
    fixture_done(*state);
    return 0;
}

/* A link to insert through a job. */
typedef struct link_job {
    const char *code;
    const char *group;
    const char *url;
    bool index_url;
    bool update;
} link_job_t;

static inline storage_link_t link_of(const link_job_t *j)
{
    storage_link_t l;

    memset(&l, 0, sizeof(l));
    l.code.ptr = j->code;
    l.code.len = strlen(j->code);
    snprintf(l.group_guid, sizeof(l.group_guid), "%s", j->group);
    l.long_url.ptr = j->url;
    l.long_url.len = strlen(j->url);
    l.created_us = 1700000000000000;
    l.modified_us = l.created_us;
    l.title.ptr = "a title";
    l.title.len = 7;
    l.tags.ptr = "[\"x\"]";
    l.tags.len = 5;
    l.redirect_status = 301;
    return l;
}

static inline int link_job(storage_txn_t *txn, void *arg)
{
    link_job_t *j = arg;
    storage_link_t l = link_of(j);

    return j->update ? storage_link_update(txn, &l) : storage_link_insert(txn, &l, j->index_url);
}

static inline int add_link(storage_t *s, const char *code, const char *group, const char *url)
{
    link_job_t j = {code, group, url, true, false};
    return storage_run(s, link_job, &j);
}

#endif
