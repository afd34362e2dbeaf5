/*
 * storage/storage.c: the environment (open, close, readers, stats, backup), the
 * thread-local error message and the byte codecs every record format uses.
 */
#include "storage_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE ((size_t)64 << 30)
#define MAX_READERS      1024

/* 2: counter keys begin with the hour, and a minute facet joined them. Older
 * directories are refused, not converted: nothing was released with 1. */
#define SCHEMA_VERSION 2

static const char *const db_names[DB_COUNT] = {
    [DB_LINKS] = "links",
    [DB_LINKS_BY_URL] = "links_by_url",
    [DB_ENGAGEMENTS] = "engagements",
    [DB_COUNTERS] = "counters",
    [DB_GROUPS] = "groups",
    [DB_ORGANIZATIONS] = "organizations",
    [DB_WEBHOOKS] = "webhooks",
    [DB_BIO_PAGES] = "bio_pages",
    [DB_DELIVERIES] = "deliveries",
    [DB_DELIVERY_LOG] = "delivery_log",
    [DB_TOKENS] = "tokens",
    [DB_META] = "meta",
};

static _Thread_local char last_error[512];

/* ---- errors ---- */

void storage__set_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

int storage__fail(int mdb_rc, const char *op, const char *db)
{
    /* A full map is the one failure an operator can fix without reading the
     * source, so it says what to do. */
    if (mdb_rc == MDB_MAP_FULL)
        storage__set_error("storage: %s %s: the LMDB map is full (%s); raise the map size", op, db,
                           mdb_strerror(mdb_rc));
    else
        storage__set_error("storage: %s %s: %s", op, db, mdb_strerror(mdb_rc));
    return STORAGE_ERROR;
}

int storage__damaged(const char *db)
{
    storage__set_error("storage: a record in %s is damaged or of an unknown version", db);
    return STORAGE_ERROR;
}

void storage__get_error(char *buf, size_t len)
{
    snprintf(buf, len, "%s", last_error);
}

const char *storage__db_name(int db)
{
    return db >= 0 && db < DB_COUNT ? db_names[db] : "?";
}

const char *storage_strerror(void)
{
    return last_error[0] != '\0' ? last_error : "storage: no error recorded";
}

/* ---- allocation ---- */

void *storage__xcalloc(size_t n, size_t size, const char *file, int line)
{
    void *p = calloc(n, size);

    if (p == NULL && n != 0 && size != 0) {
        fprintf(stderr, "fatal: out of memory at %s:%d\n", file, line);
        abort();
    }
    return p;
}

/* ---- codecs ---- */

void wb_bytes(wbuf_t *w, const void *src, size_t n)
{
    if (w->len + n > w->cap) {
        fprintf(stderr, "fatal: storage record encoder overflow\n");
        abort();
    }
    if (n > 0)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

void wb_u8(wbuf_t *w, uint8_t v)
{
    wb_bytes(w, &v, 1);
}

void wb_u16(wbuf_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    wb_bytes(w, b, sizeof(b));
}

void wb_u32(wbuf_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wb_bytes(w, b, sizeof(b));
}

void wb_u64(wbuf_t *w, uint64_t v)
{
    wb_u32(w, (uint32_t)v);
    wb_u32(w, (uint32_t)(v >> 32));
}

const uint8_t *rb_bytes(rbuf_t *r, size_t n)
{
    const uint8_t *p = r->p;

    if (r->bad || n > r->left) {
        r->bad = true;
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

uint8_t rb_u8(rbuf_t *r)
{
    const uint8_t *p = rb_bytes(r, 1);
    return p != NULL ? p[0] : 0;
}

uint16_t rb_u16(rbuf_t *r)
{
    const uint8_t *p = rb_bytes(r, 2);
    return p != NULL ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

uint32_t rb_u32(rbuf_t *r)
{
    const uint8_t *p = rb_bytes(r, 4);

    if (p == NULL)
        return 0;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t rb_u64(rbuf_t *r)
{
    uint64_t lo = rb_u32(r);
    return lo | (uint64_t)rb_u32(r) << 32;
}

/* ---- open and close ---- */

/* Creates dir and any missing parents; only the components created here get
 * mode 0700, existing ones are left as they are. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    size_t n = strlen(dir);

    if (n == 0 || n >= sizeof(path)) {
        snprintf(err, errlen, "storage: data directory '%s' is empty or too long", dir);
        return STORAGE_ERROR;
    }
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "storage: cannot create data directory '%s': %s", path,
                     strerror(errno));
            return STORAGE_ERROR;
        }
        path[i] = saved;
    }
    return STORAGE_OK;
}

static int read_meta_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, dbi, &k, &v);

    *out = 0;
    if (rc == MDB_NOTFOUND)
        return STORAGE_NOTFOUND;
    if (rc != 0)
        return storage__fail(rc, "read", "meta");
    rbuf_t r = {v.mv_data, v.mv_size, false};
    if (rb_u8(&r) != STORAGE_VERSION || r.left != 8) {
        storage__set_error("storage: meta key '%s' has an unknown format", name);
        return STORAGE_ERROR;
    }
    *out = rb_u64(&r);
    return STORAGE_OK;
}

static int write_meta_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t value)
{
    uint8_t buf[9];
    wbuf_t w = {buf, 0, sizeof(buf)};
    MDB_val k = {strlen(name), (void *)name}, v = {sizeof(buf), buf};

    wb_u8(&w, STORAGE_VERSION);
    wb_u64(&w, value);
    int rc = mdb_put(txn, dbi, &k, &v, 0);
    return rc == 0 ? STORAGE_OK : storage__fail(rc, "write", "meta");
}

/* Opens every named database, checks the schema version and finds where the
 * engagement sequence continues, all in one write transaction. */
static int open_databases(storage_t *s, char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    uint64_t schema = 0, seq_meta = 0;
    int ret = STORAGE_ERROR;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);

    if (rc != 0) {
        snprintf(err, errlen, "storage: cannot begin a transaction in '%s': %s", s->opts.dir,
                 mdb_strerror(rc));
        goto out;
    }
    for (int i = 0; i < DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
        if (rc != 0) {
            snprintf(err, errlen, "storage: cannot open database '%s' in '%s': %s", db_names[i],
                     s->opts.dir, mdb_strerror(rc));
            goto out;
        }
    }

    rc = read_meta_u64(txn, s->dbi[DB_META], META_SCHEMA, &schema);
    if (rc == STORAGE_NOTFOUND)
        rc = write_meta_u64(txn, s->dbi[DB_META], META_SCHEMA, SCHEMA_VERSION);
    else if (rc == STORAGE_OK && schema != SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "storage: '%s' has schema version %llu, this build reads only %d and does "
                 "not convert it: move the directory aside and start with a new one",
                 s->opts.dir, (unsigned long long)schema, SCHEMA_VERSION);
        goto out;
    }
    if (rc == STORAGE_OK || rc == STORAGE_NOTFOUND)
        rc = read_meta_u64(txn, s->dbi[DB_META], META_ENGAGEMENT_SEQ, &seq_meta);
    if (rc == STORAGE_ERROR) {
        snprintf(err, errlen, "%s (in '%s')", storage_strerror(), s->opts.dir);
        goto out;
    }

    /* The meta high-water mark keeps the sequence going even when retention
     * has removed every engagement; the last key covers older files. */
    storage_txn_t t = {txn, s};
    uint64_t last = storage_engagement_last_seq(&t);
    s->next_seq = (last > seq_meta ? last : seq_meta) + 1;

    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0) {
        snprintf(err, errlen, "storage: cannot commit the databases of '%s': %s", s->opts.dir,
                 mdb_strerror(rc));
        goto out;
    }
    ret = STORAGE_OK;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return ret;
}

static int open_env(storage_t *s, char *err, size_t errlen)
{
    int rc = mdb_env_create(&s->env);

    if (rc != 0) {
        s->env = NULL;
        snprintf(err, errlen, "storage: cannot create an LMDB environment: %s", mdb_strerror(rc));
        return STORAGE_ERROR;
    }
    if ((rc = mdb_env_set_maxdbs(s->env, DB_COUNT)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, s->opts.map_size)) != 0 ||
        (rc = mdb_env_open(s->env, s->opts.dir, MDB_NOTLS, 0600)) != 0) {
        snprintf(err, errlen, "storage: cannot open the LMDB environment in '%s': %s", s->opts.dir,
                 mdb_strerror(rc));
        return STORAGE_ERROR;
    }

    /* Reader slots left behind by a process that died are reclaimed now, or they
     * would pin old pages and let the file grow. */
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    return STORAGE_OK;
}

int storage_open(storage_t **out, const storage_options_t *opts, char *err, size_t errlen)
{
    storage_t *s = NULL;
    int ret = STORAGE_ERROR;

    *out = NULL;
    if (opts == NULL || opts->dir == NULL) {
        snprintf(err, errlen, "storage: no data directory given");
        goto out;
    }
    s = xcalloc(1, sizeof(*s));
    s->opts = *opts;
    if (s->opts.map_size == 0)
        s->opts.map_size = DEFAULT_MAP_SIZE;
    if (s->opts.flush_interval_ms == 0)
        s->opts.flush_interval_ms = 2;
    if (s->opts.batch_max == 0)
        s->opts.batch_max = 4096;
    if (s->opts.queue_capacity == 0)
        s->opts.queue_capacity = 65536;
    if (s->opts.counter_run_links == 0)
        s->opts.counter_run_links = 131072;

    if (make_dirs(opts->dir, err, errlen) != STORAGE_OK)
        goto out;
    if (open_env(s, err, errlen) != STORAGE_OK)
        goto out;
    if (open_databases(s, err, errlen) != STORAGE_OK)
        goto out;
    if (storage__queue_init(s) != STORAGE_OK) {
        snprintf(err, errlen, "storage: cannot set up the writer for '%s': %s", opts->dir,
                 storage_strerror());
        goto out;
    }
    *out = s;
    s = NULL;
    ret = STORAGE_OK;
out:
    if (s != NULL) {
        if (s->env != NULL)
            mdb_env_close(s->env);
        free(s);
    }
    return ret;
}

void storage_close(storage_t *s)
{
    if (s == NULL)
        return;
    storage_writer_stop(s);
    storage__queue_free(s);
    mdb_env_close(s->env);
    free(s);
}

/* ---- readers ---- */

int storage_reader_open(storage_t *s, storage_reader_t **out)
{
    storage_reader_t *r = xcalloc(1, sizeof(*r));
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->t.txn);

    *out = NULL;
    if (rc != 0) {
        free(r);
        return storage__fail(rc, "begin a read transaction on", "the environment");
    }
    /* Reset at once: a held snapshot would keep old pages from being reused. */
    mdb_txn_reset(r->t.txn);
    r->t.s = s;
    *out = r;
    return STORAGE_OK;
}

storage_txn_t *storage_reader_begin(storage_reader_t *r)
{
    int rc;

    if (r->active)
        mdb_txn_reset(r->t.txn);
    rc = mdb_txn_renew(r->t.txn);
    if (rc != 0) {
        r->active = false;
        storage__fail(rc, "renew a read transaction on", "the environment");
        return NULL;
    }
    r->active = true;
    return &r->t;
}

void storage_reader_end(storage_reader_t *r)
{
    if (r->active)
        mdb_txn_reset(r->t.txn);
    r->active = false;
}

void storage_reader_close(storage_reader_t *r)
{
    if (r == NULL)
        return;
    mdb_txn_abort(r->t.txn);
    free(r);
}

/* ---- operation ---- */

void storage_get_stats(storage_t *s, storage_stats_t *out)
{
    MDB_envinfo info;
    MDB_stat st;
    size_t enq = atomic_load_explicit(&s->enqueue_pos, memory_order_relaxed);
    size_t deq = atomic_load_explicit(&s->dequeue_pos, memory_order_relaxed);

    memset(out, 0, sizeof(*out));
    out->engagements_recorded = atomic_load(&s->st_recorded);
    out->engagements_dropped = atomic_load(&s->st_dropped);
    out->engagements_unknown = atomic_load(&s->st_unknown);
    out->commits = atomic_load(&s->st_commits);
    out->commit_failures = atomic_load(&s->st_commit_failures);
    out->last_batch = atomic_load(&s->st_last_batch);
    out->commit_us_total = atomic_load(&s->st_commit_us);
    out->queue_depth = enq > deq ? enq - deq : 0;
    for (unsigned i = 0; i < STORAGE_LATENCY_BUCKETS; i++)
        out->click_to_commit[i] = atomic_load_explicit(&s->st_latency[i], memory_order_relaxed);
    out->click_to_commit_us_total = atomic_load_explicit(&s->st_latency_us, memory_order_relaxed);
    out->warm_bytes = atomic_load_explicit(&s->st_warm_bytes, memory_order_relaxed);
    out->warm_done = atomic_load(&s->st_warm_done);
    if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &st) == 0) {
        out->map_used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
        out->map_size = info.me_mapsize;
    }
}

/* Pages at a time, so that a stop is noticed within a fraction of a second. */
#define WARM_CHUNK ((size_t)64 << 20)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

/* Where this process maps the data file, and how long the mapping is. LMDB
 * reports the address only for MDB_FIXEDMAP environments, so it is read from
 * /proc/self/maps by the file's inode. NULL when not found. */
static const uint8_t *map_of_data_file(storage_t *s, size_t *len)
{
    struct stat st;
    mdb_filehandle_t fd;
    char line[512];
    const uint8_t *base = NULL;

    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0)
        return NULL;
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return NULL;
    while (base == NULL && fgets(line, sizeof(line), maps) != NULL) {
        unsigned long long start, end, offset, inode;
        unsigned major, minor;
        if (sscanf(line, "%llx-%llx %*s %llx %x:%x %llu", &start, &end, &offset, &major, &minor,
                   &inode) == 6 &&
            inode == (unsigned long long)st.st_ino && offset == 0 &&
            makedev(major, minor) == st.st_dev) {
            base = (const uint8_t *)(uintptr_t)start;
            *len = (size_t)(end - start);
        }
    }
    fclose(maps);
    return base;
}

uint64_t storage_warm(storage_t *s, bool (*keep_going)(void *ctx), void *ctx)
{
    MDB_envinfo info;
    MDB_stat st;
    size_t done = 0;
    bool populate = true;

    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0) {
        atomic_store(&s->st_warm_done, true);
        return 0;
    }
    /* The used pages only: past them the map may run beyond the file's end,
     * where a read is SIGBUS. The file never shrinks. */
    size_t mapped = 0;
    const uint8_t *base = map_of_data_file(s, &mapped);
    size_t len = ((size_t)info.me_last_pgno + 1) * st.ms_psize;
    if (base == NULL)
        len = 0;
    else if (len > mapped)
        len = mapped;
    /* A store larger than half the machine's memory would only push itself
     * (and everything else) out of the page cache: its lookups fault as
     * they come instead. */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && len > (size_t)pages / 2 * (size_t)page)
        len = 0;
    while (done < len && (keep_going == NULL || keep_going(ctx))) {
        size_t n = len - done < WARM_CHUNK ? len - done : WARM_CHUNK;
        if (populate && madvise((void *)(base + done), n, MADV_POPULATE_READ) != 0) {
            if (errno != EINVAL)
                break;        /* an I/O error, say: the lookups will meet it themselves */
            populate = false; /* an older kernel: touch one byte per page */
        }
        if (!populate) {
            for (size_t off = 0; off < n; off += st.ms_psize)
                (void)*(const volatile uint8_t *)(base + done + off);
        }
        done += n;
        atomic_store_explicit(&s->st_warm_bytes, done, memory_order_relaxed);
    }
    atomic_store(&s->st_warm_done, true);
    return done;
}

static int dir_is_empty(const char *dir, bool *created, char *err, size_t errlen)
{
    DIR *d;
    struct dirent *de;
    int ret = STORAGE_ERROR;

    *created = false;
    if (mkdir(dir, 0700) == 0) {
        *created = true;
        return STORAGE_OK;
    }
    if (errno != EEXIST) {
        snprintf(err, errlen, "storage: cannot create backup directory '%s': %s", dir,
                 strerror(errno));
        return STORAGE_ERROR;
    }
    if ((d = opendir(dir)) == NULL) {
        snprintf(err, errlen, "storage: cannot read backup directory '%s': %s", dir,
                 strerror(errno));
        return STORAGE_ERROR;
    }
    ret = STORAGE_OK;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            snprintf(err, errlen, "storage: backup directory '%s' is not empty", dir);
            ret = STORAGE_INVALID;
            break;
        }
    }
    closedir(d);
    return ret;
}

int storage_backup(storage_t *s, const char *dir, char *err, size_t errlen)
{
    bool created;
    int rc = dir_is_empty(dir, &created, err, errlen);

    if (rc != STORAGE_OK)
        return rc;
    /* Compacting copies skip free pages, so the copy is as small as the live
     * data; it runs in a read transaction and does not stop the writer. */
    /* The copy holds signing secrets and token digests: it must be as private
     * as the live store. LMDB creates the file with the process umask, so
     * narrow it for the copy (the backup command is single-threaded) and fix
     * the mode afterwards in case the file existed. */
    mode_t old_mask = umask(077);
    rc = mdb_env_copy2(s->env, dir, MDB_CP_COMPACT);
    umask(old_mask);
    if (rc == 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/data.mdb", dir);
        if (chmod(path, 0600) != 0 || chmod(dir, 0700) != 0)
            rc = errno;
    }
    if (rc != 0) {
        snprintf(err, errlen, "storage: backup into '%s' failed: %s", dir, mdb_strerror(rc));
        return STORAGE_ERROR;
    }
    return STORAGE_OK;
}
