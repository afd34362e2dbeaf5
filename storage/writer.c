/*
 * storage/writer.c: the writer thread, the only code that opens write
 * transactions while it runs, and the two queues that feed it.
 *
 * Engagements come from the redirect path through a bounded ring of
 * sequence-numbered slots (after Dmitry Vyukov's bounded queue): producers claim a
 * slot with one compare-and-swap and publish it with one store, so they never
 * take a lock, never allocate and never make a system call. The writer does not
 * get woken for them; it polls the ring at most flush_interval_ms apart, which is
 * the longest a click waits before its group commit starts.
 *
 * Jobs are API traffic, a few per second, so they sit on a mutex-protected FIFO
 * and their producers signal the writer's condition variable.
 */
#include "storage_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct storage_job {
    storage_job_fn fn;
    storage_done_fn done;
    void *arg;
    int rc;
    char error[256]; /* the job's own reason when rc is STORAGE_ERROR */
    storage_job_t *next;
};

/* What storage_run waits on while the writer runs its job. */
typedef struct run_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool finished;
    int rc;
    char error[256];
    storage_job_fn fn;
    void *arg;
} run_wait_t;

/* Counters are written out once COUNTER_FLUSH_GROUPS full groups' worth of
 * engagements wait in memory (storage_internal.h), or once the oldest has
 * waited COUNTER_FLUSH_US (or the flush interval, when that is longer) or
 * COUNTER_FLUSH_COST times as long as the last group that wrote them took, at
 * most COUNTER_FLUSH_MAX_US; and when the writer stops. A flush writes one
 * counter page per distinct link it counts: cheap with a thousand links, and
 * with clicks spread over millions of links (about one page each) a long wait
 * lets more clicks share a page. A batch costs about as many keys whatever its
 * clicks (a link's countries, devices, minute), so under load the wait keeps
 * the writes to a fortieth of the writer's time: at a tenth, a thousand links
 * clicked 20 k times a second spent 2.3 us of writer CPU per click more. */
#define COUNTER_FLUSH_US     100000u
#define COUNTER_FLUSH_COST   40u
#define COUNTER_FLUSH_MAX_US 30000000u

/* ---- the engagement ring ---- */

static size_t round_up_pow2(size_t n)
{
    size_t p = 1;

    while (p < n)
        p <<= 1;
    return p;
}

int storage__queue_init(storage_t *s)
{
    size_t cap = round_up_pow2(s->opts.queue_capacity);
    pthread_condattr_t attr;

    /* Page-aligned, so each 512-byte slot starts a cache line. */
    s->slots = mmap(NULL, cap * sizeof(*s->slots), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->slots == MAP_FAILED) {
        s->slots = NULL;
        storage__set_error("storage: cannot map the engagement queue: %s", strerror(errno));
        return STORAGE_ERROR;
    }
    s->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        atomic_init(&s->slots[i].seq, i);

    s->counters = storage__counters_new((COUNTER_FLUSH_GROUPS + 2) * (size_t)s->opts.batch_max);
    s->counters_out = storage__counters_new((COUNTER_FLUSH_GROUPS + 2) * (size_t)s->opts.batch_max);
    s->batch_times = xcalloc(s->opts.batch_max, sizeof(*s->batch_times));
    s->scratch_query = xcalloc(1, QUEUED_INLINE_BYTES);

    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &attr);
    pthread_condattr_destroy(&attr);
    return STORAGE_OK;
}

void storage__queue_free(storage_t *s)
{
    if (s->slots != NULL)
        munmap(s->slots, (s->mask + 1) * sizeof(*s->slots));
    storage__counters_free(s->counters);
    storage__counters_free(s->counters_out);
    free(s->batch_times);
    free(s->scratch_query);
    free(s->scratch_record);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
}

static size_t queue_depth(storage_t *s)
{
    size_t enq = atomic_load_explicit(&s->enqueue_pos, memory_order_acquire);
    size_t deq = atomic_load_explicit(&s->dequeue_pos, memory_order_relaxed);
    return enq - deq;
}

/* Claims a slot; NULL when the ring is full. */
static queued_engagement_t *claim_slot(storage_t *s, size_t *pos_out)
{
    size_t pos = atomic_load_explicit(&s->enqueue_pos, memory_order_relaxed);

    for (;;) {
        queued_engagement_t *slot = &s->slots[pos & s->mask];
        size_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        intptr_t diff = (intptr_t)seq - (intptr_t)pos;

        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&s->enqueue_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                *pos_out = pos;
                return slot;
            }
        } else if (diff < 0) {
            return NULL; /* the writer has not yet emptied this slot: full */
        } else {
            pos = atomic_load_explicit(&s->enqueue_pos, memory_order_relaxed);
        }
    }
}

static int push_validate(const storage_engagement_t *e)
{
    size_t code_len = strnlen(e->code, sizeof(e->code));

    if (code_len == 0 || code_len > STORAGE_CODE_MAX ||
        strnlen(e->referrer, sizeof(e->referrer)) > STORAGE_REFERRER_MAX ||
        strnlen(e->country, sizeof(e->country)) > 2 ||
        strnlen(e->group_guid, sizeof(e->group_guid)) > STORAGE_GUID_LEN ||
        (e->query.len > 0 && e->query.ptr == NULL) ||
        (e->long_url.len > 0 && e->long_url.ptr == NULL))
        return STORAGE_INVALID;
    return STORAGE_OK;
}

static void fill_slot(queued_engagement_t *slot, const storage_engagement_t *e)
{
    size_t code_len = strnlen(e->code, STORAGE_CODE_MAX);
    size_t ref_len = strnlen(e->referrer, STORAGE_REFERRER_MAX);
    size_t qlen = e->query.len < STORAGE_QUERY_MAX ? e->query.len : STORAGE_QUERY_MAX;
    /* The link as served, when it came with the click. */
    size_t ulen =
        e->group_guid[0] != '\0' && e->long_url.len <= STORAGE_URL_MAX ? e->long_url.len : 0;
    size_t total = code_len + ref_len + qlen + ulen;
    char *at = slot->bytes;

    memcpy(slot->event_id, e->event_id, sizeof(slot->event_id));
    slot->time_us = e->time_us;
    slot->kind = e->kind;
    slot->device = e->device;
    slot->bot = e->bot;
    memcpy(slot->country, e->country, sizeof(slot->country));
    slot->heap = NULL;
    if (total > sizeof(slot->bytes)) {
        if ((slot->heap = malloc(total)) != NULL) {
            at = slot->heap;
        } else {
            /* Out of memory: the writer looks the link up, and the query keeps
             * the parameters that fit (the code and referrer always do). */
            ulen = 0;
            if (qlen > sizeof(slot->bytes) - code_len - ref_len) {
                qlen = sizeof(slot->bytes) - code_len - ref_len;
                while (qlen > 0 && e->query.ptr[qlen] != '&')
                    qlen--;
            }
        }
    }
    slot->code_len = (uint8_t)code_len;
    slot->referrer_len = (uint8_t)ref_len;
    slot->query_len = (uint16_t)qlen;
    slot->url_len = (uint16_t)ulen;
    memcpy(at, e->code, code_len);
    at += code_len;
    memcpy(at, e->referrer, ref_len);
    at += ref_len;
    if (qlen > 0)
        memcpy(at, e->query.ptr, qlen);
    at += qlen;
    if (ulen > 0) {
        memcpy(at, e->long_url.ptr, ulen);
        memcpy(slot->group_guid, e->group_guid, sizeof(slot->group_guid));
    }
}

int storage_engagement_push(storage_t *s, const storage_engagement_t *e)
{
    queued_engagement_t *slot;
    size_t pos;
    int ret;

    if (push_validate(e) != STORAGE_OK) {
        storage__set_error("storage: engagement for code '%.64s' breaks a limit", e->code);
        return STORAGE_INVALID;
    }

    /* Announce the push before checking that the writer still accepts, so
     * storage_writer_stop can wait for every push that passed the check. */
    atomic_fetch_add(&s->pushers, 1);
    if (!atomic_load(&s->accepting)) {
        storage__set_error("storage: the writer is not running; engagement not queued");
        ret = STORAGE_ERROR;
        goto out;
    }
    if ((slot = claim_slot(s, &pos)) == NULL) {
        atomic_fetch_add_explicit(&s->st_dropped, 1, memory_order_relaxed);
        storage__set_error("storage: the engagement queue is full; engagement dropped");
        ret = STORAGE_FULL;
        goto out;
    }
    fill_slot(slot, e);
    atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
    ret = STORAGE_OK;
out:
    atomic_fetch_sub(&s->pushers, 1);
    return ret;
}

unsigned storage_engagement_backlog(storage_t *s)
{
    size_t depth = queue_depth(s), cap = s->mask + 1;
    unsigned eighths = depth >= cap ? 8 : (unsigned)(depth * 8 / cap);

    /* The writer sleeps until its group is due; a backlog makes it due now. */
    if (eighths >= 4)
        pthread_cond_signal(&s->wake);
    return eighths;
}

/* Takes the oldest published engagement into e (its query copied into the
 * writer's scratch buffer) and frees the slot; false when none is ready. */
static bool pop_engagement(storage_t *s, storage_engagement_t *e)
{
    size_t pos = atomic_load_explicit(&s->dequeue_pos, memory_order_relaxed);
    queued_engagement_t *slot = &s->slots[pos & s->mask];
    size_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);

    if (seq != pos + 1)
        return false;
    const char *at = slot->heap != NULL ? slot->heap : slot->bytes;
    e->seq = 0;
    memcpy(e->event_id, slot->event_id, sizeof(e->event_id));
    e->time_us = slot->time_us;
    e->kind = slot->kind;
    e->device = slot->device;
    e->bot = slot->bot;
    memcpy(e->country, slot->country, sizeof(slot->country));
    e->country[sizeof(slot->country)] = '\0';
    memcpy(e->code, at, slot->code_len);
    e->code[slot->code_len] = '\0';
    at += slot->code_len;
    memcpy(e->referrer, at, slot->referrer_len);
    e->referrer[slot->referrer_len] = '\0';
    at += slot->referrer_len;
    if (slot->heap == NULL) {
        memcpy(s->scratch_query, at, (size_t)slot->query_len + slot->url_len);
        at = s->scratch_query;
    }
    e->query.ptr = at;
    e->query.len = slot->query_len;
    s->popped_heap = slot->heap;
    if (slot->url_len > 0) {
        memcpy(e->group_guid, slot->group_guid, sizeof(slot->group_guid));
        e->group_guid[sizeof(slot->group_guid)] = '\0';
        e->long_url.ptr = at + slot->query_len;
        e->long_url.len = slot->url_len;
    } else {
        e->group_guid[0] = '\0';
        e->long_url.ptr = NULL;
        e->long_url.len = 0;
    }

    atomic_store_explicit(&slot->seq, pos + s->mask + 1, memory_order_release);
    atomic_store_explicit(&s->dequeue_pos, pos + 1, memory_order_relaxed);
    return true;
}

/* ---- one group commit ---- */

/* Keeps the writer thread's current error for storage_writer_last_error: the
 * writer has no caller to return it to. */
static void remember_failure(storage_t *s)
{
    pthread_mutex_lock(&s->lock);
    storage__get_error(s->writer_error, sizeof(s->writer_error));
    pthread_mutex_unlock(&s->lock);
}

/* remember_failure for a caller that holds s->lock. */
static void remember_failure_locked(storage_t *s)
{
    storage__get_error(s->writer_error, sizeof(s->writer_error));
}

void storage_writer_last_error(storage_t *s, char *buf, size_t len)
{
    pthread_mutex_lock(&s->lock);
    snprintf(buf, len, "%s", s->writer_error);
    pthread_mutex_unlock(&s->lock);
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The writer shares cores with the workers, and a thread on the CPU keeps it
 * until it blocks or the next scheduler tick (4 ms at 250 Hz): a writer that
 * sealed and wrote counters for milliseconds held every request of its core
 * that long. So long work pauses every WRITER_RUN_US on the CPU for
 * WRITER_PAUSE_NS: the workers run, and the timer's wakeup brings the writer
 * back. sched_yield was tried instead: the writer then waited for the next
 * tick, fell behind and the workers hit backpressure. Reading the clock every
 * WRITER_PACE_EVERY calls keeps the check cheap. */
#define WRITER_RUN_US     200u
#define WRITER_PAUSE_NS   100000L
#define WRITER_PACE_EVERY 16u

static void pace_reset(storage_t *s)
{
    s->ran_since_us = now_us();
    s->pace_count = 0;
}

void storage__writer_pace(storage_t *s)
{
    struct timespec pause = {0, WRITER_PAUSE_NS};

    if (!s->pacing || ++s->pace_count < WRITER_PACE_EVERY)
        return;
    s->pace_count = 0;
    if (now_us() - s->ran_since_us < WRITER_RUN_US)
        return;
    /* A writer a full group behind its clicks goes on: pausing then only
     * moved the wait into the workers' backpressure. */
    if (queue_depth(s) < s->opts.batch_max)
        nanosleep(&pause, NULL);
    pace_reset(s);
}

/* Stores up to limit engagements in a nested transaction of parent, so a failure
 * here (a full map, say) loses these engagements but not the batch's jobs.
 * Returns how many were stored; *taken counts those taken off the ring. */
static size_t store_engagements(storage_t *s, MDB_txn *parent, size_t limit, size_t *taken)
{
    storage_engagement_t e;
    storage_txn_t t = {NULL, s};
    size_t stored = 0, unknown = 0;
    uint64_t first_seq = s->next_seq;
    bool ok = false;
    int rc = mdb_txn_begin(s->env, parent, 0, &t.txn);

    *taken = 0;
    s->batch_times_len = 0;
    if (rc != 0) {
        t.txn = NULL;
        storage__fail(rc, "begin a nested transaction for", "engagements");
        goto out;
    }
    while (*taken < limit && pop_engagement(s, &e)) {
        (*taken)++;
        e.seq = s->next_seq;
        rc = storage__engagement_store(&t, &e);
        free(s->popped_heap);
        s->popped_heap = NULL;
        if (rc == STORAGE_NOTFOUND) {
            unknown++; /* the link was deleted between the click and now */
            continue;
        }
        if (rc != STORAGE_OK)
            goto out;
        s->next_seq++;
        s->batch_times[stored++] = e.time_us;
        storage__writer_pace(s);
    }
    rc = mdb_txn_commit(t.txn);
    t.txn = NULL;
    if (rc != 0) {
        storage__fail(rc, "commit", "engagements");
        goto out;
    }
    ok = true;
out:
    if (t.txn != NULL)
        mdb_txn_abort(t.txn);
    if (ok) {
        atomic_fetch_add_explicit(&s->st_unknown, unknown, memory_order_relaxed);
        s->batch_times_len = stored;
        return stored;
    }
    /* Everything taken off the ring in this group is lost, and said so. */
    s->batch_times_len = 0;
    s->counters_lost = true; /* what this group counted was not stored */
    remember_failure(s);
    s->next_seq = first_seq;
    atomic_fetch_add_explicit(&s->st_dropped, *taken, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->st_commit_failures, 1, memory_order_relaxed);
    return 0;
}

/* Runs each job in a nested transaction of its own, so a job that fails (or
 * returns anything but STORAGE_OK) takes only its own writes with it. */
static void run_jobs(storage_t *s, MDB_txn *parent, storage_job_t *jobs)
{
    for (storage_job_t *j = jobs; j != NULL; j = j->next) {
        storage_txn_t t = {NULL, s};
        int rc = mdb_txn_begin(s->env, parent, 0, &t.txn);

        if (rc != 0) {
            j->rc = storage__fail(rc, "begin a nested transaction for", "a job");
        } else {
            storage__set_error("storage: no error recorded");
            j->rc = j->fn(&t, j->arg);
            if (j->rc == STORAGE_OK && (rc = mdb_txn_commit(t.txn)) != 0)
                j->rc = storage__fail(rc, "commit", "a job");
            else if (j->rc != STORAGE_OK)
                mdb_txn_abort(t.txn);
        }
        if (j->rc == STORAGE_ERROR)
            storage__get_error(j->error, sizeof(j->error));
    }
}

/* Calls each job's done with its result (or STORAGE_ERROR when the group did not
 * commit), making the job's own reason this thread's error first so done can
 * read it with storage_strerror(). */
static void finish_jobs(storage_job_t *jobs, bool committed, const char *commit_error)
{
    while (jobs != NULL) {
        storage_job_t *next = jobs->next;
        int rc = committed ? jobs->rc : STORAGE_ERROR;

        if (rc == STORAGE_ERROR)
            storage__set_error("%s", committed ? jobs->error : commit_error);
        if (jobs->done != NULL)
            jobs->done(jobs->arg, rc);
        free(jobs);
        jobs = next;
    }
}

uint64_t storage_latency_bucket_le(unsigned i)
{
    if (i >= STORAGE_LATENCY_BUCKETS - 1)
        return UINT64_MAX;
    /* Even buckets end at 2^k, odd ones half-way up to the next power: 1.5 * 2^k. */
    return i % 2 == 0 ? UINT64_C(1) << (5 + i / 2) : UINT64_C(3) << (4 + i / 2);
}

static unsigned latency_bucket(uint64_t us)
{
    if (us <= 32)
        return 0;
    /* us is in (2^m, 2^(m+1)] with m >= 5. */
    unsigned m = 63u - (unsigned)__builtin_clzll(us - 1);
    unsigned i = us <= (UINT64_C(3) << (m - 1)) ? 2 * (m - 5) + 1 : 2 * (m - 4);
    return i < STORAGE_LATENCY_BUCKETS ? i : STORAGE_LATENCY_BUCKETS - 1;
}

/* Adds the group just made durable to the click-to-commit histogram. Click
 * times are wall-clock (they are stored), so a clock step can make one
 * negative: it counts as zero. */
static void record_latency(storage_t *s)
{
    uint64_t counts[STORAGE_LATENCY_BUCKETS] = {0}, total = 0;
    struct timespec ts;

    if (s->batch_times_len == 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    for (size_t i = 0; i < s->batch_times_len; i++) {
        uint64_t d = now > s->batch_times[i] ? (uint64_t)(now - s->batch_times[i]) : 0;
        counts[latency_bucket(d)]++;
        total += d;
    }
    for (unsigned i = 0; i < STORAGE_LATENCY_BUCKETS; i++) {
        if (counts[i] > 0)
            atomic_fetch_add_explicit(&s->st_latency[i], counts[i], memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&s->st_latency_us, total, memory_order_relaxed);
    s->batch_times_len = 0;
}

static uint64_t counter_flush_us(const storage_t *s)
{
    uint64_t flush = (uint64_t)s->opts.flush_interval_ms * 1000u;
    uint64_t cost = s->counters_flush_cost_us * COUNTER_FLUSH_COST;

    if (flush < COUNTER_FLUSH_US)
        flush = COUNTER_FLUSH_US;
    if (cost > COUNTER_FLUSH_MAX_US)
        cost = COUNTER_FLUSH_MAX_US;
    return flush > cost ? flush : cost;
}

/* Whether the counters gathered in memory are due to be sealed and written. */
static bool counters_due(const storage_t *s, uint64_t now, bool force)
{
    if (s->cs.pending == 0 || s->counters_lost)
        return false;
    return force || s->cs.pending >= COUNTER_FLUSH_GROUPS * (size_t)s->opts.batch_max ||
           now - s->counters_since_us >= counter_flush_us(s);
}

/* After a group that did not commit, gathers the counters in memory again
 * from the counted mark, the progress record and the engagement log in txn,
 * before anything more is counted. While that fails, memory is emptied each
 * time and the counters wait in the log behind the mark. */
static void restore_counters(storage_t *s, MDB_txn *txn, uint64_t now)
{
    storage_txn_t t = {txn, s};

    if (!s->counters_lost)
        return;
    if (storage__counters_restore(&t, false, &s->cs) != STORAGE_OK) {
        storage__counters_reset(s->counters);
        storage__counters_reset(s->counters_out);
        memset(&s->cs, 0, sizeof(s->cs));
        remember_failure(s);
        return;
    }
    s->counters_lost = false;
    s->counters_since_us = now;
    /* A batch may have been written whole there: look at every hour again. */
    s->merge_hour = 0;
}

/* The sealed counters are all written. */
static void finish_out(storage_t *s)
{
    /* A new run: its hours may need merging again. */
    uint32_t hour = storage__counters_first_hour(s->counters_out);
    if (storage__counters_run(s->counters_out) != 0 && hour < s->merge_hour)
        s->merge_hour = hour;
    s->cs.out_busy = false;
    storage__counters_reset(s->counters_out);
    s->counters_flush_cost_us = s->counters_out_us;
}

/* Seals the gathered counters for writing; they hold only engagements of
 * groups already committed. */
static void seal_counters(storage_t *s, uint64_t now)
{
    counter_batch_t *b = s->counters_out;

    s->counters_out = s->counters;
    s->counters = b;
    storage__counters_seal(s, s->counters_out);
    storage__counters_plan(s, s->counters_out, s->cs.base + 1);
    s->cs.out_busy = true;
    s->cs.out_from = s->cs.base;
    s->cs.out_to = s->next_seq - 1;
    s->cs.out_pos = 0;
    s->cs.base = s->cs.out_to;
    s->cs.pending = 0;
    s->counters_out_us = 0;
    s->counters_since_us = now;
}

/* Keys of the sealed counters to write in this group: a slice, or more when
 * the clicks gathering would fill memory before slices that size finished the
 * sealed batch (groups hold at most batch_max clicks). Spread like that, the
 * rest never has to be written whole in one group, which with clicks over
 * millions of links held every click behind it for most of a second. */
size_t storage__counters_slice(const storage_t *s)
{
    size_t room = COUNTER_FLUSH_GROUPS * (size_t)s->opts.batch_max;
    size_t left = storage__counters_keys(s->counters_out) - s->cs.out_pos;
    /* The groups, this one included, that start before memory is full. */
    size_t groups = s->cs.pending >= room ? 0 : (room - s->cs.pending) / s->opts.batch_max;
    size_t n = groups > 1 ? (left + groups - 1) / groups : left;

    return n > COUNTER_SLICE ? n : COUNTER_SLICE;
}

/* Writes the next slice of the sealed counters (all of them with whole) and
 * records how far that got. */
static int write_counters(storage_t *s, MDB_txn *txn, bool whole)
{
    storage_txn_t t = {txn, s};
    uint64_t t0 = now_us();
    int ret;

    if (!s->cs.out_busy)
        return STORAGE_OK;
    ret = storage__counters_write(&t, s->counters_out, &s->cs.out_pos,
                                  whole ? SIZE_MAX : storage__counters_slice(s));
    if (ret == STORAGE_OK)
        ret = storage__counters_progress(&t, s->cs.out_from, s->cs.out_to, s->counters_out,
                                         s->cs.out_pos);
    s->counters_out_us += now_us() - t0;
    return ret;
}

/* The counters' part of a group, before its engagements: gather again after a
 * failure, seal what is due (finishing the sealed batch first when memory is
 * full), and write a slice. */
static int counters_before(storage_t *s, MDB_txn *txn, uint64_t now)
{
    restore_counters(s, txn, now);
    if (s->counters_lost)
        return STORAGE_OK;
    bool full = s->cs.pending >= COUNTER_FLUSH_GROUPS * (size_t)s->opts.batch_max;
    if (s->cs.out_busy && full && write_counters(s, txn, true) != STORAGE_OK)
        return STORAGE_ERROR;
    /* Written whole (the mark moves past it in this group): its memory takes
     * the next seal. Should the group fail, all of it is gathered again. */
    if (s->cs.out_busy && s->cs.out_pos >= storage__counters_keys(s->counters_out))
        finish_out(s);
    if (!s->cs.out_busy && counters_due(s, now, false))
        seal_counters(s, now);
    return write_counters(s, txn, false);
}

/* Keys of runs merged per group, and the share of the writer's time merging
 * may take: a slice is about a millisecond, after which merging waits nine
 * times as long as the slice took. Under steady moderate load every group
 * has few clicks, and merging in each would have held every click's commit
 * back and taken the writer's whole core for minutes after a busy hour. */
#define MERGE_SLICE 256u
#define MERGE_SHARE 10u

/* In a group with time to spare (few clicks), merges a slice of the runs of
 * the hours before this one, in a nested transaction: should that fail, the
 * group goes on without it. */
static void merge_runs(storage_t *s, MDB_txn *parent, size_t stored)
{
    storage_txn_t t = {NULL, s};
    struct timespec ts;
    uint64_t t0 = now_us();
    size_t moved;

    if (s->counters_lost || stored >= s->opts.batch_max / 4 ||
        queue_depth(s) >= s->opts.batch_max || t0 < s->merge_after_us)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint32_t hour = (uint32_t)(ts.tv_sec / 3600);
    if (s->merge_hour >= hour)
        return;
    uint64_t busy = s->cs.out_busy ? storage__counters_run(s->counters_out) : 0;
    uint32_t was = s->merge_hour;
    int rc = mdb_txn_begin(s->env, parent, 0, &t.txn);
    if (rc != 0) {
        storage__fail(rc, "begin a nested transaction on", "the environment");
        goto failed;
    }
    if (storage__counters_merge(&t, &s->merge_hour, hour, busy, MERGE_SLICE, &moved) !=
        STORAGE_OK) {
        mdb_txn_abort(t.txn);
        goto failed;
    }
    if ((rc = mdb_txn_commit(t.txn)) == 0) {
        s->merge_after_us = t0 + MERGE_SHARE * (now_us() - t0);
        return;
    }
    storage__fail(rc, "commit", "a merge of counter runs");
failed:
    s->merge_hour = was;
    remember_failure(s);
}

/* When the writer stops: everything in memory, this group's clicks included,
 * is written whole. */
static int counters_final(storage_t *s, MDB_txn *txn, uint64_t now)
{
    if (s->counters_lost)
        return STORAGE_OK; /* the mark lets the next start count them */
    if (write_counters(s, txn, true) != STORAGE_OK)
        return STORAGE_ERROR;
    if (s->cs.pending == 0)
        return STORAGE_OK;
    finish_out(s);
    seal_counters(s, now);
    return write_counters(s, txn, true);
}

/* Returns whether the group committed. With force, counters in memory are
 * written whatever their age (the writer is stopping). */
static bool run_batch(storage_t *s, storage_job_t *jobs, size_t njobs, size_t eng_limit, bool force)
{
    MDB_txn *txn = NULL;
    uint64_t first_seq = s->next_seq, started = now_us();
    size_t taken = 0, stored = 0;
    char commit_error[256] = "";
    bool committed = false;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);

    if (rc != 0) {
        storage__fail(rc, "begin a write transaction on", "the environment");
        goto out;
    }
    pace_reset(s); /* the last commit slept in its fdatasyncs */
    if (counters_before(s, txn, started) != STORAGE_OK)
        goto out;
    stored = store_engagements(s, txn, eng_limit, &taken);
    if (stored > 0)
        s->group_started_us = started;
    /* A failed engagement group counted clicks it did not store. */
    restore_counters(s, txn, started);
    merge_runs(s, txn, stored);
    run_jobs(s, txn, jobs);
    if (stored > 0 && s->cs.pending == 0)
        s->counters_since_us = started;
    s->cs.pending += stored;
    if (force && counters_final(s, txn, started) != STORAGE_OK)
        goto out;

    if (stored > 0) {
        storage_txn_t t = {txn, s};
        uint8_t val[9];
        wbuf_t w = {val, 0, sizeof(val)};
        MDB_val k = {strlen(META_ENGAGEMENT_SEQ), (void *)META_ENGAGEMENT_SEQ};
        MDB_val v = {sizeof(val), val};

        wb_u8(&w, STORAGE_VERSION);
        wb_u64(&w, s->next_seq - 1);
        if ((rc = mdb_put(t.txn, s->dbi[DB_META], &k, &v, 0)) != 0) {
            storage__fail(rc, "record the engagement sequence in", "meta");
            goto out;
        }
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0) {
        storage__fail(rc, "commit a write transaction on", "the environment");
        goto out;
    }
    committed = true;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (committed) {
        if (s->cs.out_busy && s->cs.out_pos >= storage__counters_keys(s->counters_out))
            finish_out(s); /* the mark moved past it with this commit */
    } else {
        /* This group's clicks are not stored but were counted, and its slice
         * of counters was not written: the next group gathers them again. */
        s->counters_lost = true;
    }
    if (committed) {
        record_latency(s);
        atomic_fetch_add_explicit(&s->st_recorded, stored, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->st_commits, 1, memory_order_relaxed);
        atomic_store_explicit(&s->st_last_batch, stored + njobs, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->st_commit_us, now_us() - started, memory_order_relaxed);
    } else {
        storage__get_error(commit_error, sizeof(commit_error));
        remember_failure(s);
        s->next_seq = first_seq;
        atomic_fetch_add_explicit(&s->st_dropped, stored, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->st_commit_failures, 1, memory_order_relaxed);
    }
    finish_jobs(jobs, committed, commit_error);
    if (committed && stored > 0 && s->opts.on_commit != NULL)
        s->opts.on_commit(s->opts.on_commit_ctx, s->next_seq - 1);
    return committed;
}

/* After a failed group, waits one flush interval so a broken environment does
 * not turn the writer into a busy loop. */
static void back_off(storage_t *s)
{
    struct timespec ts = {.tv_sec = s->opts.flush_interval_ms / 1000,
                          .tv_nsec = (long)(s->opts.flush_interval_ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the writer thread ---- */

/* Whether the oldest claimed slot holds an engagement the writer can take. */
static bool head_published(storage_t *s)
{
    size_t pos = atomic_load_explicit(&s->dequeue_pos, memory_order_relaxed);
    return atomic_load_explicit(&s->slots[pos & s->mask].seq, memory_order_acquire) == pos + 1;
}

/* A producer that claimed the oldest slot has not published it yet: it may
 * have been preempted between the two, on the writer's own core. Spinning then
 * (the writer did, committing empty groups back to back) keeps that producer
 * off the CPU it needs to finish, so the writer sleeps this long instead. */
#define UNPUBLISHED_WAIT_US 200u

/* How long, in µs, until the oldest queued engagement has waited the flush
 * interval and the last group that took clicks started group_spacing_ms ago;
 * 0 when both have (or the ring holds a full group). A group starts only
 * then, not as soon as the previous commit returns, so a commit and its
 * fdatasyncs cover every click of the interval. */
static uint64_t group_wait_us(storage_t *s, size_t depth)
{
    size_t pos = atomic_load_explicit(&s->dequeue_pos, memory_order_relaxed);
    const queued_engagement_t *slot = &s->slots[pos & s->mask];
    struct timespec ts;

    if (depth == 0)
        return 0;
    if (!head_published(s))
        return UNPUBLISHED_WAIT_US;
    /* Half full is where storage_engagement_backlog wakes the writer. */
    if (depth >= s->opts.batch_max || depth >= (s->mask + 1) / 2)
        return 0;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    int64_t due = slot->time_us + (int64_t)s->opts.flush_interval_ms * 1000;
    uint64_t wait = 0;
    /* Click times are wall-clock: a clock step back must not hold a group. */
    if (due > now && due - now <= (int64_t)s->opts.flush_interval_ms * 1000)
        wait = (uint64_t)(due - now);
    /* Not while a sealed batch of counters is being written: its slices,
     * one a group, are planned to end before the gathering batch fills. */
    if (s->opts.group_spacing_ms > 0 && s->group_started_us > 0 && !s->cs.out_busy) {
        uint64_t next = s->group_started_us + (uint64_t)s->opts.group_spacing_ms * 1000u;
        uint64_t mono = now_us();
        if (next > mono && next - mono > wait)
            wait = next - mono;
    }
    return wait;
}

/* Sleeps until a job arrives, the writer is told to stop, or the group is due:
 * flush_interval_ms with an empty ring, else until group_wait_us says
 * (engagements do not wake it). Returns whether stop was requested. */
static bool wait_for_work(storage_t *s)
{
    uint64_t flush = (uint64_t)s->opts.flush_interval_ms * 1000u;
    struct timespec ts;
    bool stopping;

    pthread_mutex_lock(&s->lock);
    while (s->jobs_len == 0 && !s->stopping) {
        size_t depth = queue_depth(s);
        uint64_t wait = depth == 0 ? flush : group_wait_us(s, depth);
        if (wait == 0)
            break;
        /* Group spacing can hold clicks longer than the flush interval; the
         * ring is looked at again every interval meanwhile, so that a full
         * batch goes at once. */
        bool again = depth > 0 && wait > flush;
        if (again)
            wait = flush;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)(wait * 1000u);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->wake, &s->lock, &ts);
        /* Clicks that came while the ring was empty wait for their group to
         * be due, like any others; with none, or counters to write (their
         * group takes the waiting clicks along), the caller goes on. */
        if (!again && (depth > 0 || queue_depth(s) == 0))
            break;
        if (again && counters_due(s, now_us(), false))
            break;
    }
    stopping = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return stopping;
}

/* Detaches up to limit jobs from the head of the FIFO. */
static storage_job_t *take_jobs(storage_t *s, size_t limit, size_t *n)
{
    storage_job_t *head, *last = NULL;

    *n = 0;
    pthread_mutex_lock(&s->lock);
    head = s->jobs_head;
    for (storage_job_t *j = head; j != NULL && *n < limit; j = j->next) {
        last = j;
        (*n)++;
    }
    if (last != NULL) {
        s->jobs_head = last->next;
        if (s->jobs_head == NULL)
            s->jobs_tail = NULL;
        s->jobs_len -= *n;
        last->next = NULL;
    } else {
        head = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    return head;
}

static void *writer_main(void *arg)
{
    storage_t *s = arg;
    size_t batch_max = s->opts.batch_max;

    s->pacing = true; /* not the start-up recovery before, with no worker to make room for */

    /* Linux gives each thread its own nice value. The writer's is the
     * process's plus writer_nice (at most 19): raising it needs no privilege,
     * so this fails only on a system without per-thread nice. Such a writer
     * is also SCHED_BATCH: when its timer or an fdatasync wakes it, it waits
     * for the next scheduling point instead of preempting a worker in the
     * middle of its requests. On a core shared with a saturated worker that
     * took a keep-alive p99 from 1.8 to 1.1-1.4 ms and the writer's CPU down
     * by a third (fewer, larger groups; fewer switches), and made clicks wait
     * about ten times as long for their commit (tens of ms). */
    if (s->opts.writer_nice > 0) {
        id_t tid = (id_t)syscall(SYS_gettid);
        struct sched_param batch = {.sched_priority = 0};
        errno = 0;
        int base = getpriority(PRIO_PROCESS, tid);
        int nice = (errno == 0 ? base : 0) + s->opts.writer_nice;
        if (setpriority(PRIO_PROCESS, tid, nice < 19 ? nice : 19) != 0) {
            storage__set_error("storage: cannot lower the writer's priority: %s", strerror(errno));
            remember_failure(s);
        }
        int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &batch);
        if (rc != 0) {
            storage__set_error("storage: cannot make the writer a batch thread: %s", strerror(rc));
            remember_failure(s);
        }
    }

    for (;;) {
        bool stopping = wait_for_work(s);
        /* Read before the queues: once no push is in flight after stop, the
         * queues are final and empty ones mean the writer is done. */
        bool quiet = stopping && atomic_load(&s->pushers) == 0;
        size_t depth = queue_depth(s), njobs;
        /* Jobs get at most half a batch while engagements wait, so neither kind
         * can starve the other. */
        size_t job_limit = depth > 0 ? (batch_max + 1) / 2 : batch_max;
        storage_job_t *jobs = take_jobs(s, job_limit, &njobs);
        /* A sealed batch of counters is written on, a slice a group, with or
         * without clicks to commit. */
        bool due = counters_due(s, now_us(), quiet) || (s->cs.out_busy && !s->counters_lost);
        /* Clicks go when their group is due, which a click arriving just
         * after wait_for_work looked may not be yet; any group takes them. */
        bool clicks = depth > 0 && head_published(s) && (stopping || group_wait_us(s, depth) == 0);

        if (jobs == NULL && !due && !clicks) {
            if (quiet && depth == 0)
                break;
            continue;
        }
        if (!run_batch(s, jobs, njobs, batch_max - njobs, quiet)) {
            /* Stopping with a store that refuses writes: the counted mark in
             * meta lets the next start count these clicks again. */
            if (quiet && jobs == NULL && depth == 0)
                break;
            back_off(s);
        }
    }
    return NULL;
}

int storage_writer_start(storage_t *s)
{
    int ret = STORAGE_ERROR;

    pthread_mutex_lock(&s->lock);
    if (s->running) {
        storage__set_error("storage: the writer is already running");
        goto out;
    }
    /* Counters a crash left behind the log are made whole before any click
     * is taken (the server listens only after this returns), so a restart
     * neither drops clicks while it counts nor answers with old totals. If it
     * fails, the writer's first group tries again. */
    s->counters_lost = storage__counters_recover(s) != STORAGE_OK;
    if (s->counters_lost)
        remember_failure_locked(s);
    atomic_store(&s->accepting, true);
    int rc = pthread_create(&s->writer, NULL, writer_main, s);
    if (rc != 0) {
        atomic_store(&s->accepting, false);
        storage__set_error("storage: cannot start the writer thread: %s", strerror(rc));
        goto out;
    }
    s->running = true;
    s->stopping = false;
    ret = STORAGE_OK;
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

void storage_writer_stop(storage_t *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->running || s->stopping) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    atomic_store(&s->accepting, false);
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);

    pthread_join(s->writer, NULL);
    s->pacing = false; /* a later start's recovery runs on its caller's thread */

    pthread_mutex_lock(&s->lock);
    s->running = false;
    s->stopping = false;
    pthread_mutex_unlock(&s->lock);
}

/* ---- jobs ---- */

int storage_submit(storage_t *s, storage_job_fn fn, storage_done_fn done, void *arg)
{
    storage_job_t *j = xcalloc(1, sizeof(*j));
    int ret = STORAGE_ERROR;

    j->fn = fn;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&s->lock);
    if (!s->running || s->stopping) {
        storage__set_error("storage: the writer is not running; job not queued");
        goto out;
    }
    if (s->jobs_tail != NULL)
        s->jobs_tail->next = j;
    else
        s->jobs_head = j;
    s->jobs_tail = j;
    s->jobs_len++;
    j = NULL;
    pthread_cond_signal(&s->wake);
    ret = STORAGE_OK;
out:
    pthread_mutex_unlock(&s->lock);
    free(j);
    return ret;
}

static int run_trampoline(storage_txn_t *txn, void *arg)
{
    run_wait_t *w = arg;
    return w->fn(txn, w->arg);
}

static void on_run_done(void *arg, int rc)
{
    run_wait_t *w = arg;

    pthread_mutex_lock(&w->lock);
    w->rc = rc;
    if (rc == STORAGE_ERROR)
        storage__get_error(w->error, sizeof(w->error));
    w->finished = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* storage_run without a writer: the caller's thread writes, as the CLI and
 * start-up do; LMDB's own writer lock keeps concurrent callers in turn. */
static int run_direct(storage_t *s, storage_job_fn fn, void *arg)
{
    storage_txn_t t = {NULL, s};
    int rc = mdb_txn_begin(s->env, NULL, 0, &t.txn);
    int ret;

    if (rc != 0)
        return storage__fail(rc, "begin a write transaction on", "the environment");
    ret = fn(&t, arg);
    if (ret != STORAGE_OK) {
        mdb_txn_abort(t.txn);
        return ret;
    }
    rc = mdb_txn_commit(t.txn);
    return rc == 0 ? STORAGE_OK
                   : storage__fail(rc, "commit a write transaction on", "the environment");
}

static bool writer_running(storage_t *s)
{
    bool running;

    pthread_mutex_lock(&s->lock);
    running = s->running && !s->stopping;
    if (s->running)
        assert(!pthread_equal(pthread_self(), s->writer));
    pthread_mutex_unlock(&s->lock);
    return running;
}

int storage_run(storage_t *s, storage_job_fn fn, void *arg)
{
    run_wait_t w = {.fn = fn, .arg = arg, .rc = STORAGE_ERROR};
    int ret;

    if (!writer_running(s))
        return run_direct(s, fn, arg);

    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    ret = storage_submit(s, run_trampoline, on_run_done, &w);
    if (ret != STORAGE_OK) {
        /* The writer stopped between the check and the submit. */
        ret = run_direct(s, fn, arg);
        goto out;
    }
    pthread_mutex_lock(&w.lock);
    while (!w.finished)
        pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    ret = w.rc;
    if (ret == STORAGE_ERROR)
        storage__set_error("%s", w.error);
out:
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return ret;
}
