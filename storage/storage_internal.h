/*
 * storage/: what the files of the storage layer share and nobody else sees.
 *
 * The environment struct, the transaction and reader wrappers, the error helper
 * and the byte codecs used by every record format. LMDB types stay in this folder.
 */
#ifndef SHORTLINKD_STORAGE_INTERNAL_H
#define SHORTLINKD_STORAGE_INTERNAL_H

#include "storage.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

/* Named databases, in the order they are opened. */
enum {
    DB_LINKS = 0,
    DB_LINKS_BY_URL,
    DB_ENGAGEMENTS,
    DB_COUNTERS,
    DB_GROUPS,
    DB_ORGANIZATIONS,
    DB_WEBHOOKS,
    DB_BIO_PAGES,
    DB_DELIVERIES,
    DB_DELIVERY_LOG,
    DB_TOKENS,
    DB_META,
    DB_COUNT
};

/* Every value written by this version of storage starts with this byte, so a
 * later version can tell old records from new ones and convert them. */
#define STORAGE_VERSION 1

/* Meta keys that storage itself owns; callers keep away from "storage.". */
#define META_SCHEMA            "storage.schema"
#define META_ENGAGEMENT_SEQ    "storage.engagement_seq"
#define META_COUNTERS_SEQ      "storage.counters_seq"
#define META_COUNTERS_PROGRESS "storage.counters_progress"
#define META_ID_PREFIX         "storage.id."

struct storage_txn {
    MDB_txn *txn;
    storage_t *s;
};

struct storage_reader {
    storage_txn_t t;
    bool active;
};

/* Bytes of a queued engagement's code, referrer, query and long URL kept in
 * its slot; past that they go to one heap block. Chosen so that a slot is 512
 * bytes and the longest code with the longest referrer always fits. */
#define QUEUED_INLINE_BYTES 448

/* One queued engagement. Its strings are packed one after another (code,
 * referrer, query, long URL) with only their lengths in the header, so a
 * typical click fills two or three cache lines of one slot and the ring is
 * read in order. */
typedef struct queued_engagement {
    _Atomic size_t seq;
    int64_t time_us;
    uint8_t event_id[16];
    uint8_t kind;
    uint8_t device;
    bool bot;
    char country[2];
    uint8_t code_len;
    uint8_t referrer_len;
    uint16_t query_len;
    uint16_t url_len; /* 0: the writer looks the link up */
    char group_guid[STORAGE_GUID_LEN];
    char *heap; /* the packed strings when over QUEUED_INLINE_BYTES; the writer frees it */
    char bytes[QUEUED_INLINE_BYTES];
} queued_engagement_t;

typedef struct storage_job storage_job_t;

/* Writer-side scratch for one batch of counter increments, aggregated by key
 * (engagements.c). */
typedef struct counter_batch counter_batch_t;

/* Where the counters stand after storage__counters_restore. */
typedef struct counters_state {
    uint64_t base;  /* the gathering batch counts the engagements after this */
    size_t pending; /* how many that is */
    bool out_busy;  /* counters_out is sealed and partly written */
    uint64_t out_from, out_to;
    size_t out_pos; /* its keys already in the counters */
} counters_state_t;

struct storage {
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    storage_options_t opts;

    /* Engagement ring: bounded, multi-producer, single consumer (the writer). */
    queued_engagement_t *slots;
    size_t mask;
    _Atomic size_t enqueue_pos;
    _Atomic size_t dequeue_pos; /* written by the writer only; atomic for stats */
    _Atomic unsigned pushers;   /* producers between their accept check and push */
    _Atomic bool accepting;

    /* Jobs: API traffic, so a plain mutex-protected FIFO is enough. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    storage_job_t *jobs_head;
    storage_job_t *jobs_tail;
    size_t jobs_len;
    bool running;  /* under lock */
    bool stopping; /* under lock */
    pthread_t writer;
    char writer_error[256]; /* under lock: the last failed group's reason */

    /* Writer-owned state. */
    uint64_t next_seq;
    counter_batch_t *counters;     /* gathering: the engagements after counters_base */
    counter_batch_t *counters_out; /* sealed and being written, a slice per group */
    counters_state_t cs;
    int64_t *batch_times; /* click times of the engagements in the open group */
    size_t batch_times_len;
    bool counters_lost;              /* memory holds increments of clicks never stored */
    uint64_t counters_out_us;        /* time spent writing counters_out so far */
    uint64_t counters_flush_cost_us; /* ... and for the last one written whole */
    uint64_t counters_since_us;      /* monotonic time of the oldest gathered */
    uint32_t merge_hour;             /* runs are merged from this hour on (engagements.c) */
    uint64_t merge_after_us;         /* ... and not before this monotonic time */
    char *scratch_query;             /* a popped slot's query and URL, when they were inline */
    char *scratch_record;            /* one encoded engagement, allocated on first use */
    char *popped_heap;               /* the popped slot's heap block, freed once stored */
    uint64_t ran_since_us;           /* the writer last slept or paused then */
    uint64_t group_started_us;       /* monotonic start of the last group that took clicks */
    unsigned pace_count;             /* calls to storage__writer_pace since it read the clock */
    bool pacing;                     /* set by the writer thread: it shares cores with workers */

    /* Statistics, read by any thread. */
    _Atomic uint64_t st_recorded;
    _Atomic uint64_t st_dropped;
    _Atomic uint64_t st_unknown;
    _Atomic uint64_t st_commits;
    _Atomic uint64_t st_commit_failures;
    _Atomic uint64_t st_last_batch;
    _Atomic uint64_t st_commit_us;
    _Atomic uint64_t st_latency[STORAGE_LATENCY_BUCKETS];
    _Atomic uint64_t st_latency_us;
    _Atomic uint64_t st_warm_bytes;
    _Atomic bool st_warm_done;
};

/* ---- errors ---- */

/* Records a sentence for storage_strerror() on this thread. */
void storage__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Records "<op> <db>: <LMDB's reason>" and returns STORAGE_ERROR. */
int storage__fail(int mdb_rc, const char *op, const char *db);
/* Copies this thread's last error out (for handing it to another thread). */
void storage__get_error(char *buf, size_t len);
const char *storage__db_name(int db);
/* Records that a value in db failed to decode and returns STORAGE_ERROR. */
int storage__damaged(const char *db);

/* ---- allocation: out of memory is fatal, with the place it happened ---- */

void *storage__xcalloc(size_t n, size_t size, const char *file, int line);
#define xcalloc(n, size) storage__xcalloc((n), (size), __FILE__, __LINE__)

/* ---- writer-side record operations (writer.c calls them) ---- */

/* Stores one engagement and adds its counters to the batch; STORAGE_NOTFOUND when
 * its code has no link any more. */
int storage__engagement_store(storage_txn_t *txn, storage_engagement_t *e);
/* Forgets the counter increments gathered in b. */
void storage__counters_reset(counter_batch_t *b);
/* Folds and sorts b's increments for writing, summing the entries of each
 * key; returns how many keys. Once per batch: a second seal would add the
 * links' counts again. */
size_t storage__counters_seal(storage_t *s, counter_batch_t *b);
/* Called by the writer between small steps of long work (an engagement, a
 * counter key, a pass of the sort): after WRITER_RUN_US on the CPU it pauses,
 * leaving the core to the workers for a moment. */
void storage__writer_pace(storage_t *s);
size_t storage__counters_keys(const counter_batch_t *b);
/* Clicks gathered in memory before their counters are sealed, in full groups
 * (batch_max each). With clicks over millions of links, a page of counters
 * takes the keys of more links the more are sealed at once: over a minute on
 * 10 M links, 128 groups served 1.2-1.3 times the clicks per second of 32, with
 * the server's anonymous memory at 830 MB instead of 260 MB. The tables are
 * sized for the worst case (about 3 GB of address space for the two batches
 * at 128 groups), mapped without reserving swap, so only what is used costs
 * memory. */
#define COUNTER_FLUSH_GROUPS 128
/* Counter keys written per group commit, at least: a sealed batch is written
 * over several commits rather than in one, so no group waits for all of it. */
#define COUNTER_SLICE 4096u
/* The sealed keys the writer's next group writes (writer.c). */
size_t storage__counters_slice(const storage_t *s);
/* For tests: gathers one engagement's increments into b; after seal, the
 * i-th key in write order. */
void storage__counters_add(counter_batch_t *b, const storage_engagement_t *e);
/* Decides, once sealed, how b is written: spread over at least
 * opts.counter_run_links links, as a run of its own numbered first_seq (the
 * first engagement it counts), else added into the hours' counters. */
void storage__counters_plan(const storage_t *s, counter_batch_t *b, uint64_t first_seq);
/* b's run, 0 when it is added into the hours' counters. */
uint64_t storage__counters_run(const counter_batch_t *b);
/* The hour of b's first key once sealed (UINT32_MAX when it has none). */
uint32_t storage__counters_first_hour(const counter_batch_t *b);
/* Moves up to limit keys (*moved says how many) of later runs into the first
 * run of their hour, for the hours from *hour on, before before, that hold two
 * runs or more. *hour is left at the hour being merged, or past the hours
 * found with nothing to merge. An hour holding the run numbered busy waits
 * (its batch is being written). See storage/engagements.c. */
int storage__counters_merge(storage_txn_t *txn, uint32_t *hour, uint32_t before, uint64_t busy,
                            size_t limit, size_t *moved);
const uint8_t *storage__counters_key(const counter_batch_t *b, size_t i, size_t *klen);
/* Writes up to limit of sealed b's keys from *pos on, advancing *pos. */
int storage__counters_write(storage_txn_t *txn, const counter_batch_t *b, size_t *pos,
                            size_t limit);
/* Records how far the writing of sealed b, which counts the engagements in
 * (from, to], has come: at its end, the counted mark moves to to. */
int storage__counters_progress(storage_txn_t *txn, uint64_t from, uint64_t to,
                               const counter_batch_t *b, size_t pos);
/* Seals and writes the gathering batch whole, and moves the mark to last_seq. */
int storage__counters_apply(storage_txn_t *txn, uint64_t last_seq);

/* Gathers the counters in memory again from the counted mark, the progress
 * record and the engagement log in txn, discarding what memory held (after a
 * group that did not commit, whose clicks were counted but never stored).
 * With write_all, or when more is pending than a batch holds, writes
 * everything instead and leaves memory empty. */
int storage__counters_restore(storage_txn_t *txn, bool write_all, counters_state_t *st);
/* Brings the counters level with the engagement log before the writer starts
 * (a crash may have left them behind it), in a transaction of its own. */
int storage__counters_recover(storage_t *s);
/* The aggregation tables for up to max_engagements engagements. */
counter_batch_t *storage__counters_new(size_t max_engagements);
void storage__counters_free(counter_batch_t *b);

/* ---- writer lifecycle pieces used by storage.c ---- */

int storage__queue_init(storage_t *s);
void storage__queue_free(storage_t *s);

/* ---- fixed-width codecs ---- */

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* Signed times are stored with the sign bit flipped so that byte order is
 * numeric order for negative values too. */
static inline void put_time_be(uint8_t *p, int64_t t)
{
    put_be64(p, (uint64_t)t ^ (UINT64_C(1) << 63));
}

static inline int64_t get_time_be(const uint8_t *p)
{
    return (int64_t)(get_be64(p) ^ (UINT64_C(1) << 63));
}

/* Writer for values: the caller sizes the buffer first (MDB_RESERVE), so the
 * writer never checks bounds; an assert catches a size computed wrong. */
typedef struct wbuf {
    uint8_t *p;
    size_t len;
    size_t cap;
} wbuf_t;

void wb_bytes(wbuf_t *w, const void *src, size_t n);
void wb_u8(wbuf_t *w, uint8_t v);
void wb_u16(wbuf_t *w, uint16_t v);
void wb_u32(wbuf_t *w, uint32_t v);
void wb_u64(wbuf_t *w, uint64_t v);

/* Reader for values: any read past the end sets bad, and decoders turn that
 * into STORAGE_ERROR instead of trusting a damaged record. */
typedef struct rbuf {
    const uint8_t *p;
    size_t left;
    bool bad;
} rbuf_t;

const uint8_t *rb_bytes(rbuf_t *r, size_t n);
uint8_t rb_u8(rbuf_t *r);
uint16_t rb_u16(rbuf_t *r);
uint32_t rb_u32(rbuf_t *r);
uint64_t rb_u64(rbuf_t *r);

/* Copies a guid (up to STORAGE_GUID_LEN bytes, NUL-terminated) into a fixed
 * zero-padded field, so keys holding a guid all have the same width. */
static inline void guid_field(uint8_t out[STORAGE_GUID_LEN], const char *guid)
{
    memset(out, 0, STORAGE_GUID_LEN);
    memcpy(out, guid, strnlen(guid, STORAGE_GUID_LEN));
}

static inline void guid_string(char out[STORAGE_GUID_LEN + 1], const uint8_t *field)
{
    memcpy(out, field, STORAGE_GUID_LEN);
    out[STORAGE_GUID_LEN] = '\0';
}

/* A guid as the header defines it: non-empty, at most STORAGE_GUID_LEN bytes. */
static inline bool guid_valid(const char *guid)
{
    size_t n = strnlen(guid, STORAGE_GUID_LEN + 1);
    return n > 0 && n <= STORAGE_GUID_LEN;
}

#endif
