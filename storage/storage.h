/*
 * storage/: shortlinkd's LMDB layer, and the only code that opens transactions.
 *
 * One environment under the data directory with named databases (DESIGN.md §3).
 * One writer thread owns every write transaction: engagements arrive through a
 * bounded lock-free queue, everything else through jobs (storage_submit), and both
 * are committed in groups so one fsync covers many records.
 *
 * Return codes, used by every function below that returns int:
 *   STORAGE_OK        success
 *   STORAGE_NOTFOUND  the key is absent (a result, not a failure)
 *   STORAGE_EXISTS    the key is taken (MDB_NOOVERWRITE said no)
 *   STORAGE_FULL      a queue is full; nothing was queued
 *   STORAGE_INVALID   the caller's input breaks a documented limit
 *   STORAGE_ERROR     LMDB or the system failed; storage_strerror() tells why
 *
 * Borrowed memory: every storage_bytes_t and every pointer inside a record read
 * from a transaction points into LMDB's map and is valid only until that
 * transaction ends (storage_reader_end, or the end of the job). Copy what must
 * outlive it.
 */
#ifndef SHORTLINKD_STORAGE_H
#define SHORTLINKD_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    STORAGE_OK = 0,
    STORAGE_NOTFOUND = 1,
    STORAGE_EXISTS = 2,
    STORAGE_FULL = 3,
    STORAGE_INVALID = 4,
    STORAGE_ERROR = -1,
};

#define STORAGE_CODE_MAX        64         /* bytes in a short code */
#define STORAGE_GUID_LEN        11         /* Bitly-style guid: a letter and ten base62 chars */
#define STORAGE_URL_MAX         16384      /* bytes in a long URL */
#define STORAGE_REFERRER_MAX    255        /* bytes in a referrer host */
#define STORAGE_REFERRER_DIRECT "direct"   /* a click without a referrer (server/parse.c) */
#define STORAGE_QUERY_MAX       4096       /* bytes of a forwarded query kept per engagement */
#define STORAGE_DUE_FAILED      UINT64_MAX /* due time of a delivery that gave up */

typedef struct storage storage_t;
typedef struct storage_txn storage_txn_t;
typedef struct storage_reader storage_reader_t;

typedef struct storage_bytes {
    const char *ptr;
    size_t len;
} storage_bytes_t;

typedef struct storage_options {
    const char *dir;            /* created if missing (mode 0700) */
    size_t map_size;            /* bytes; 0 gives 64 GiB (sparse) */
    unsigned flush_interval_ms; /* longest a group waits before commit; 0 gives 2 */
    /* Least time from the start of a group that took clicks to the next
     * one's; 0: none. Each commit costs its fdatasyncs whatever it holds,
     * so under steady traffic this bounds their number, while a click that
     * comes this long after the last group began waits only
     * flush_interval_ms. A full batch (seen within flush_interval_ms), a
     * half-full queue, a job and a group due for counters do not wait for
     * it, and take the waiting clicks along. */
    unsigned group_spacing_ms;
    /* Added by storage: how much nicer than the process the writer thread
     * runs (0 to 19; the result stops at 19). Above the workers it yields a
     * shared core to the redirect path; a backlog of clicks still gets it the
     * CPU (storage_engagement_backlog). */
    int writer_nice;
    unsigned batch_max;      /* records per write transaction; 0 gives 4096 */
    unsigned queue_capacity; /* engagement slots, rounded up to a power of 2; 0 gives 65536 */
    /* A sealed batch of counters over at least this many links (a link
     * clicked in two hours counts twice) is written as a run of its own
     * rather than added into the hours' counters; 0 gives 131072. A run is
     * cheap to write and costs each read of its hour a seek or two more, so
     * only batches that would otherwise dirty that many pages take one. See
     * storage/engagements.c. */
    unsigned counter_run_links;
    /* Called on the writer thread after each commit that stored engagements,
     * with the sequence number of the last one; may be NULL. Must not block. */
    void (*on_commit)(void *ctx, uint64_t last_seq);
    void *on_commit_ctx;
} storage_options_t;

/* Opens (creating if needed) the environment and its databases. On failure
 * returns STORAGE_ERROR and writes a sentence naming the directory and the
 * reason into err. */
int storage_open(storage_t **out, const storage_options_t *opts, char *err, size_t errlen);
/* Stops the writer if it runs (draining its queues first) and closes. */
void storage_close(storage_t *s);
/* Starts the writer thread. Jobs and engagements are accepted only after this. */
int storage_writer_start(storage_t *s);
/* Stops accepting, drains both queues, commits, joins the writer thread. */
void storage_writer_stop(storage_t *s);
/* A human-readable reason for the last STORAGE_ERROR on this thread. */
const char *storage_strerror(void);

/* ---- readers: one per thread, a long-lived read transaction ---- */

int storage_reader_open(storage_t *s, storage_reader_t **out);
/* Renews the reader's transaction and returns it; never blocks on writers. */
storage_txn_t *storage_reader_begin(storage_reader_t *r);
/* Resets the transaction; everything borrowed from it is gone. */
void storage_reader_end(storage_reader_t *r);
void storage_reader_close(storage_reader_t *r);

/* ---- jobs: the way everything but engagements is written ---- */

/* Runs on the writer thread inside its own nested transaction. Returning
 * STORAGE_OK keeps its writes; any other value discards them (and only them). */
typedef int (*storage_job_fn)(storage_txn_t *txn, void *arg);
/* Runs on the writer thread once the group holding the job is durable, with the
 * job's result, or STORAGE_ERROR when the commit itself failed. May be NULL. */
typedef void (*storage_done_fn)(void *arg, int rc);

/* Queues a job; never blocks. STORAGE_ERROR when the writer is not running. */
int storage_submit(storage_t *s, storage_job_fn fn, storage_done_fn done, void *arg);
/* Runs a job and waits until it is durable: through the writer when it runs,
 * else in a write transaction of its own (for the CLI and start-up). Must not be
 * called from the writer thread. Returns the job's result or STORAGE_ERROR. */
int storage_run(storage_t *s, storage_job_fn fn, void *arg);

/* ---- links ---- */

typedef struct storage_link {
    storage_bytes_t code; /* the short code, case-sensitive */
    char group_guid[STORAGE_GUID_LEN + 1];
    int64_t created_us;
    int64_t modified_us;
    bool archived;
    uint16_t redirect_status; /* 0: the server's default */
    storage_bytes_t long_url;
    storage_bytes_t title; /* may be empty */
    storage_bytes_t tags;  /* a JSON array of strings, or empty */
} storage_link_t;

int storage_link_get(storage_txn_t *txn, const char *code, size_t len, storage_link_t *out);
/* The link that long_url (already normalised) has in that group, if any. */
int storage_link_find_by_url(storage_txn_t *txn, const char *group_guid, const char *long_url,
                             size_t len, storage_link_t *out);
/* Inserts a new link; STORAGE_EXISTS when its code is taken. With index_url, the
 * (group, long URL) index points at it unless it already points elsewhere. */
int storage_link_insert(storage_txn_t *txn, const storage_link_t *link, bool index_url);
/* Replaces an existing link's record (same code); STORAGE_NOTFOUND when absent.
 * Keeps the (group, long URL) index in step when the long URL changes. */
int storage_link_update(storage_txn_t *txn, const storage_link_t *link);
/* Calls cb for each link of the group (all groups when group_guid is NULL), in
 * code order, starting after after_code (NULL: from the first). cb returns
 * non-zero to stop, and that value is returned. */
int storage_link_scan(storage_txn_t *txn, const char *group_guid, const char *after_code,
                      size_t after_len, int (*cb)(void *ctx, const storage_link_t *link),
                      void *ctx);

/* ---- engagements ---- */

typedef enum storage_kind {
    STORAGE_KIND_CLICK = 0,
    STORAGE_KIND_QR_SCAN = 1,
    STORAGE_KIND_BIO_CLICK = 2,
} storage_kind_t;

typedef enum storage_device {
    STORAGE_DEVICE_OTHER = 0,
    STORAGE_DEVICE_DESKTOP = 1,
    STORAGE_DEVICE_MOBILE = 2,
    STORAGE_DEVICE_TABLET = 3,
    STORAGE_DEVICE_BOT = 4,
} storage_device_t;

typedef struct storage_engagement {
    uint64_t seq;         /* set by the writer; 0 when pushing */
    uint8_t event_id[16]; /* UUIDv7 */
    int64_t time_us;      /* UTC */
    uint8_t kind;         /* storage_kind_t */
    uint8_t device;       /* storage_device_t */
    bool bot;
    char country[3]; /* ISO 3166 alpha-2, or "" */
    char code[STORAGE_CODE_MAX + 1];
    char referrer[STORAGE_REFERRER_MAX + 1]; /* host, or "direct" */
    storage_bytes_t query;                   /* forwarded query without '?'; pushed: the caller's
                                                bytes, copied (up to STORAGE_QUERY_MAX); read: borrowed */
    /* The link's group and long URL when the click was served. A pusher that
     * has the link (the redirect path) gives both and they are recorded as
     * given, sparing the writer a second lookup; with either left empty the
     * writer takes them from the link at commit time, and a link gone by then
     * makes the engagement unknown. */
    char group_guid[STORAGE_GUID_LEN + 1];
    storage_bytes_t long_url; /* pushed: copied; read: borrowed */
} storage_engagement_t;

/* The names used in counters, metrics and webhook bodies: "click", "qr_scan",
 * "bio_click"; "desktop", "mobile", "tablet", "bot", "other". Static strings. */
const char *storage_kind_name(uint8_t kind);
const char *storage_device_name(uint8_t device);

/* Copies the engagement into the writer's queue. Lock-free, never blocks, and
 * allocates only when its code, referrer, query and long URL together pass
 * the 448 bytes a queue slot holds. STORAGE_FULL (and a drop counted in
 * the stats) when the queue is full. */
int storage_engagement_push(storage_t *s, const storage_engagement_t *e);
/* Added by storage: how full the queue is, in eighths (0 to 8), the sign for
 * producers to slow down before clicks have to be dropped. From half full on
 * it also wakes the writer, whose group is then due at once. */
unsigned storage_engagement_backlog(storage_t *s);
int storage_engagement_get(storage_txn_t *txn, uint64_t seq, storage_engagement_t *out);
/* The sequence number of the last stored engagement; 0 when there is none. */
uint64_t storage_engagement_last_seq(storage_txn_t *txn);
/* Calls cb for each stored engagement with seq > after_seq, in order. */
int storage_engagement_scan(storage_txn_t *txn, uint64_t after_seq,
                            int (*cb)(void *ctx, const storage_engagement_t *e), void *ctx);

/* ---- counters: per code, per UTC hour, per facet; bots are never counted ---- */

typedef enum storage_facet {
    STORAGE_FACET_TOTAL = 0,    /* value "" */
    STORAGE_FACET_COUNTRY = 1,  /* value: alpha-2 or "" */
    STORAGE_FACET_REFERRER = 2, /* value: host or "direct" */
    STORAGE_FACET_DEVICE = 3,   /* value: "desktop", "mobile", ... */
    STORAGE_FACET_KIND = 4,     /* value: "click", "qr_scan", "bio_click" */
    STORAGE_FACET_MINUTE = 5,   /* value: one byte, the minute in the hour (0..59);
                                   counted like TOTAL */
} storage_facet_t;

/* Calls cb for each counter of the code and facet with hour in [from, to), where
 * hour is Unix seconds / 3600, in hour order. Within an hour a value may come
 * more than once, once per run of counters the hour holds (see
 * storage/engagements.c), each time with its share: callers sum. Costs one
 * seek per hour in the range that holds a counter of any link, and one or two
 * more per run, so callers may pass 0 for "since the beginning". */
int storage_counter_scan(storage_txn_t *txn, const char *code, size_t code_len,
                         storage_facet_t facet, uint32_t hour_from, uint32_t hour_to,
                         int (*cb)(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count),
                         void *ctx);

/* ---- webhook deliveries ---- */

typedef struct storage_delivery {
    uint64_t due_us; /* when the next attempt is due; STORAGE_DUE_FAILED once given up */
    uint64_t id;     /* unique, from storage_next_id(txn, "delivery") */
    char webhook_guid[STORAGE_GUID_LEN + 1];
    uint64_t engagement_seq;
    uint32_t attempts;   /* attempts made so far */
    int32_t last_status; /* last HTTP status, 0 for none */
} storage_delivery_t;

int storage_delivery_put(storage_txn_t *txn, const storage_delivery_t *d);
int storage_delivery_del(storage_txn_t *txn, uint64_t due_us, uint64_t id);
/* Calls cb for each delivery with due_us <= now_us, earliest first. */
int storage_delivery_scan_due(storage_txn_t *txn, uint64_t now_us,
                              int (*cb)(void *ctx, const storage_delivery_t *d), void *ctx);
/* Calls cb for every delivery, pending or failed. */
int storage_delivery_scan_all(storage_txn_t *txn, int (*cb)(void *ctx, const storage_delivery_t *d),
                              void *ctx);

/* Added by webhooks: */
/* The given-up delivery with this id (one lookup: failed rows all sit at
 * STORAGE_DUE_FAILED); STORAGE_NOTFOUND when there is none. */
int storage_delivery_get_failed(storage_txn_t *txn, uint64_t id, storage_delivery_t *out);
/* The due time of the earliest pending (not failed) delivery due at or after
 * from_us; STORAGE_NOTFOUND when there is none. */
int storage_delivery_next_due(storage_txn_t *txn, uint64_t from_us, uint64_t *due_us);
/* Calls cb for each given-up delivery, in id order. */
int storage_delivery_scan_failed(storage_txn_t *txn,
                                 int (*cb)(void *ctx, const storage_delivery_t *d), void *ctx);
/* Counts pending and given-up deliveries; costs one walk of the failed ones. */
int storage_delivery_count(storage_txn_t *txn, uint64_t *pending, uint64_t *failed);

typedef enum storage_outcome {
    STORAGE_OUTCOME_DELIVERED = 0,
    STORAGE_OUTCOME_RETRY = 1,  /* failed, another attempt is scheduled */
    STORAGE_OUTCOME_FAILED = 2, /* failed, no attempt left */
} storage_outcome_t;

typedef struct storage_attempt {
    char webhook_guid[STORAGE_GUID_LEN + 1];
    int64_t time_us;
    uint64_t delivery_id;
    uint64_t engagement_seq;
    uint32_t attempt;    /* 1 for the first */
    int32_t http_status; /* 0 when there was no response */
    uint32_t duration_ms;
    uint8_t outcome;          /* storage_outcome_t */
    storage_bytes_t error;    /* short sentence, may be empty; truncated at 255 */
    storage_bytes_t response; /* first bytes of the body; truncated at 512 */
} storage_attempt_t;

int storage_attempt_append(storage_txn_t *txn, const storage_attempt_t *a);
/* Calls cb for the webhook's attempts, newest first. */
int storage_attempt_scan(storage_txn_t *txn, const char *webhook_guid,
                         int (*cb)(void *ctx, const storage_attempt_t *a), void *ctx);

/* ---- opaque records: groups, organizations, webhooks, bio pages, tokens, meta ---- */

typedef enum storage_db {
    STORAGE_DB_GROUPS = 0,
    STORAGE_DB_ORGANIZATIONS,
    STORAGE_DB_WEBHOOKS,
    STORAGE_DB_BIO_PAGES,
    STORAGE_DB_TOKENS,
    STORAGE_DB_META,
} storage_db_t;

#define STORAGE_NOOVERWRITE 1u

/* Keys are at most 256 bytes; values carry storage's version byte, which these
 * functions add and strip. */
int storage_record_get(storage_txn_t *txn, storage_db_t db, const void *key, size_t klen,
                       storage_bytes_t *out);
int storage_record_put(storage_txn_t *txn, storage_db_t db, const void *key, size_t klen,
                       const void *val, size_t vlen, unsigned flags);
int storage_record_del(storage_txn_t *txn, storage_db_t db, const void *key, size_t klen);
int storage_record_scan(storage_txn_t *txn, storage_db_t db,
                        int (*cb)(void *ctx, storage_bytes_t key, storage_bytes_t val), void *ctx);

/* Next value of a named counter kept in meta (1, 2, ...); write transactions only.
 * Returns 0 on failure. */
uint64_t storage_next_id(storage_txn_t *txn, const char *name);

/* ---- operation ---- */

/* Buckets of the click-to-commit histogram: two per power of two, from 32 us to
 * 2^24 us (about 17 s), then one for anything longer. */
#define STORAGE_LATENCY_BUCKETS 40

/* The upper bound of bucket i in microseconds; UINT64_MAX for the last. */
uint64_t storage_latency_bucket_le(unsigned i);

typedef struct storage_stats {
    uint64_t engagements_recorded;
    uint64_t engagements_dropped;
    uint64_t commits;
    uint64_t last_batch;      /* records in the last commit */
    uint64_t queue_depth;     /* engagements waiting */
    uint64_t commit_us_total; /* summed commit durations */
    uint64_t map_used;        /* bytes */
    uint64_t map_size;
    /* Added by storage: engagements whose code had no link at commit time, and
     * commits that failed (their engagements are also counted as dropped). */
    uint64_t engagements_unknown;
    uint64_t commit_failures;
    /* Added by storage: time from click (the engagement's time_us) to the end of
     * the group commit that made it durable, as a histogram. click_to_commit[i]
     * counts engagements with storage_latency_bucket_le(i - 1) < t <=
     * storage_latency_bucket_le(i), in microseconds (not cumulative). */
    uint64_t click_to_commit[STORAGE_LATENCY_BUCKETS];
    uint64_t click_to_commit_us_total; /* summed over the same engagements */
    /* Added by storage: bytes of the store storage_warm has mapped so far, and
     * whether it has finished (or stopped). */
    uint64_t warm_bytes;
    bool warm_done;
} storage_stats_t;

void storage_get_stats(storage_t *s, storage_stats_t *out);
/* Added by storage: maps every page the store uses into this process ahead of
 * use, so that lookups in a store far larger than the CPU caches (10 M links)
 * do not each begin with a page fault until the whole store has been touched
 * once. Reads the file when it is not in the page cache; does nothing for a
 * store larger than half the machine's memory. Blocks: call it on a thread of
 * its own; it returns early once keep_going(ctx) says false. Returns the
 * bytes mapped. */
uint64_t storage_warm(storage_t *s, bool (*keep_going)(void *ctx), void *ctx);
/* Added by storage: the reason the writer's last failed group commit gave (the
 * engagements it lost are in engagements_dropped), or "" when none has failed,
 * so the server can log it. Any thread. */
void storage_writer_last_error(storage_t *s, char *buf, size_t len);
/* A compacting hot copy of the environment into dir (which must be empty). */
int storage_backup(storage_t *s, const char *dir, char *err, size_t errlen);

#endif
