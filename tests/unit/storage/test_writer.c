/*
 * tests/unit/storage/test_writer.c: the writer thread: engagements through the
 * ring, counters, group commits of jobs, a full queue, and draining on stop.
 */
#include "helpers.h"
#include "storage_internal.h" /* one test claims a ring slot by hand */

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define HOUR_US INT64_C(3600000000)
#define T0      (INT64_C(480000) * HOUR_US) /* the start of hour 480000 */

static storage_engagement_t engagement(const char *code, int64_t time_us, const char *country,
                                       const char *referrer, uint8_t device, uint8_t kind, bool bot)
{
    storage_engagement_t e;

    memset(&e, 0, sizeof(e));
    snprintf(e.code, sizeof(e.code), "%s", code);
    snprintf(e.country, sizeof(e.country), "%s", country);
    snprintf(e.referrer, sizeof(e.referrer), "%s", referrer);
    e.time_us = time_us;
    e.device = device;
    e.kind = kind;
    e.bot = bot;
    memcpy(e.event_id, &time_us, sizeof(time_us));
    return e;
}

static _Atomic uint64_t committed_seq;

static void on_commit(void *ctx, uint64_t last_seq)
{
    atomic_fetch_add((_Atomic int *)ctx, 1);
    atomic_store(&committed_seq, last_seq);
}

/* ---- engagements ---- */

static void storage_engagement_push_committed_with_link(void **state)
{
    fixture_t *f = fixture_new();
    _Atomic int commits = 0;
    storage_reader_t *r;
    storage_engagement_t e, got;
    storage_stats_t st;

    (void)state;
    f->opts.on_commit = on_commit;
    f->opts.on_commit_ctx = &commits;
    fixture_open(f);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/x"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);

    for (int i = 0; i < 3; i++) {
        e = engagement("abc", T0 + i, "DE", "news.example", STORAGE_DEVICE_MOBILE,
                       STORAGE_KIND_QR_SCAN, false);
        e.query.ptr = "utm_source=x";
        e.query.len = 12;
        assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    }
    e = engagement("gone", T0, "", "direct", 0, 0, false);
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    storage_writer_stop(f->s);

    storage_get_stats(f->s, &st);
    assert_int_equal(st.engagements_recorded, 3);
    assert_int_equal(st.engagements_unknown, 1);
    assert_int_equal(st.engagements_dropped, 0);
    assert_int_equal(st.queue_depth, 0);
    assert_true(st.commits >= 1); /* groups committed by the writer */
    assert_true(atomic_load(&commits) >= 1);
    assert_int_equal(atomic_load(&committed_seq), 3);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        assert_int_equal(storage_engagement_get(txn, seq, &got), STORAGE_OK);
        assert_int_equal(got.seq, seq);
        assert_int_equal(got.time_us, T0 + (int64_t)seq - 1);
        assert_string_equal(got.code, "abc");
        assert_string_equal(got.group_guid, "Bgroup00001");
        assert_string_equal(got.country, "DE");
        assert_string_equal(got.referrer, "news.example");
        assert_int_equal(got.kind, STORAGE_KIND_QR_SCAN);
        assert_int_equal(got.device, STORAGE_DEVICE_MOBILE);
        assert_false(got.bot);
        assert_int_equal(got.long_url.len, strlen("https://example.com/x"));
        assert_memory_equal(got.long_url.ptr, "https://example.com/x", got.long_url.len);
        assert_int_equal(got.query.len, 12);
        assert_memory_equal(got.query.ptr, "utm_source=x", 12);
        int64_t id;
        memcpy(&id, got.event_id, sizeof(id));
        assert_int_equal(id, got.time_us);
    }
    assert_int_equal(storage_engagement_get(txn, 4, &got), STORAGE_NOTFOUND);
    storage_reader_end(r);
    storage_reader_close(r);

    fixture_done(f);
}

typedef struct seqs {
    uint64_t seq[16];
    int n;
} seqs_t;

static int collect_seq(void *ctx, const storage_engagement_t *e)
{
    seqs_t *s = ctx;

    s->seq[s->n++] = e->seq;
    return 0;
}

/* The redirect path pushes the link as it served it: that group and long URL
 * are recorded, even when the link changed or went before the commit. */
static void storage_engagement_push_records_link_as_served(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    storage_engagement_t e, got;
    storage_stats_t st;
    static const char served[] = "https://example.com/as-served";

    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/now"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    e = engagement("abc", T0, "FR", "direct", STORAGE_DEVICE_DESKTOP, STORAGE_KIND_CLICK, false);
    snprintf(e.group_guid, sizeof(e.group_guid), "%s", "Bgroup00002");
    e.long_url = (storage_bytes_t){served, strlen(served)};
    e.query = (storage_bytes_t){"a=1", 3};
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    /* A code with no link at all: recorded as served, not counted unknown. */
    e = engagement("gone", T0 + 1, "", "direct", 0, 0, false);
    snprintf(e.group_guid, sizeof(e.group_guid), "%s", "Bgroup00001");
    e.long_url = (storage_bytes_t){served, strlen(served)};
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    storage_writer_stop(f->s);

    storage_get_stats(f->s, &st);
    assert_int_equal(st.engagements_recorded, 2);
    assert_int_equal(st.engagements_unknown, 0);
    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_engagement_get(txn, 1, &got), STORAGE_OK);
    assert_string_equal(got.group_guid, "Bgroup00002");
    assert_int_equal(got.long_url.len, strlen(served));
    assert_memory_equal(got.long_url.ptr, served, got.long_url.len);
    assert_int_equal(got.query.len, 3);
    assert_memory_equal(got.query.ptr, "a=1", 3);
    assert_int_equal(storage_engagement_get(txn, 2, &got), STORAGE_OK);
    assert_string_equal(got.code, "gone");
    assert_string_equal(got.group_guid, "Bgroup00001");
    storage_reader_end(r);
    storage_reader_close(r);
}

/* A long URL too big for its ring slot still reaches the record as served
 * (it goes through the heap), not as the link has it by the commit. */
static void storage_engagement_push_long_url_as_served(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    storage_engagement_t e, got;
    static char query[STORAGE_QUERY_MAX], url[STORAGE_QUERY_MAX];

    memset(query, 'q', sizeof(query));
    memcpy(url, "https://example.com/", 20);
    memset(url + 20, 'u', sizeof(url) - 20);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/own"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    e = engagement("abc", T0, "", "direct", 0, 0, false);
    snprintf(e.group_guid, sizeof(e.group_guid), "%s", "Bgroup00002");
    e.long_url = (storage_bytes_t){url, sizeof(url)};
    e.query = (storage_bytes_t){query, 100};
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    storage_writer_stop(f->s);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_engagement_get(txn, 1, &got), STORAGE_OK);
    assert_string_equal(got.group_guid, "Bgroup00002");
    assert_int_equal(got.long_url.len, sizeof(url));
    assert_memory_equal(got.long_url.ptr, url, sizeof(url));
    assert_int_equal(got.query.len, 100);
    assert_memory_equal(got.query.ptr, query, 100);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* A slot packs the code, referrer, query and long URL one after another, in
 * the slot up to its size and in one heap block past it. Every string comes
 * back whole on both sides of that edge, the longest code and referrer
 * included, in clicks queued one after another. */
static void storage_engagement_push_packs_strings(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    char code[STORAGE_CODE_MAX + 1], referrer[STORAGE_REFERRER_MAX + 1], query[200], url[300];
    const size_t room = sizeof(((queued_engagement_t *)0)->bytes);
    const size_t url_len = 24 + 40;
    enum { CLICKS = 7 };

    memset(code, 'c', STORAGE_CODE_MAX);
    code[STORAGE_CODE_MAX] = '\0';
    memset(referrer, 'r', STORAGE_REFERRER_MAX);
    referrer[STORAGE_REFERRER_MAX] = '\0';
    for (size_t i = 0; i < sizeof(query); i++)
        query[i] = (char)('a' + i % 26);
    memcpy(url, "https://example.com/own/", 24);
    for (size_t i = 24; i < sizeof(url); i++)
        url[i] = (char)('A' + i % 26);
    assert_int_equal(add_link(f->s, code, "Bgroup00001", "https://example.com/x"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    /* Query lengths around the slot's edge with the URL: 1 short, exact, 1 over. */
    size_t fixed = STORAGE_CODE_MAX + STORAGE_REFERRER_MAX + url_len;
    size_t qlens[CLICKS] = {0, room - fixed - 1, room - fixed, room - fixed + 1, 3, sizeof(query),
                            0};
    for (int i = 0; i < CLICKS; i++) {
        storage_engagement_t e = engagement(code, T0 + i, "NZ", i % 2 ? referrer : "direct",
                                            STORAGE_DEVICE_TABLET, STORAGE_KIND_BIO_CLICK, false);
        snprintf(e.group_guid, sizeof(e.group_guid), "%s", "Bgroup00002");
        e.long_url = (storage_bytes_t){url, i == CLICKS - 1 ? sizeof(url) : url_len};
        e.query = (storage_bytes_t){query, qlens[i]};
        assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    }
    storage_writer_stop(f->s);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    for (int i = 0; i < CLICKS; i++) {
        storage_engagement_t got;
        size_t ulen = i == CLICKS - 1 ? sizeof(url) : url_len;
        assert_int_equal(storage_engagement_get(txn, (uint64_t)i + 1, &got), STORAGE_OK);
        assert_string_equal(got.code, code);
        assert_string_equal(got.referrer, i % 2 ? referrer : "direct");
        assert_string_equal(got.country, "NZ");
        assert_string_equal(got.group_guid, "Bgroup00002");
        assert_int_equal(got.time_us, T0 + i);
        assert_int_equal(got.device, STORAGE_DEVICE_TABLET);
        assert_int_equal(got.kind, STORAGE_KIND_BIO_CLICK);
        assert_int_equal(got.query.len, qlens[i]);
        if (qlens[i] > 0)
            assert_memory_equal(got.query.ptr, query, qlens[i]);
        assert_int_equal(got.long_url.len, ulen);
        assert_memory_equal(got.long_url.ptr, url, ulen);
    }
    storage_reader_end(r);
    storage_reader_close(r);
}

/* The policy the writer thread runs under, once it has set it (it does so
 * first thing); the last one seen after a second otherwise. */
static int writer_policy(storage_t *s, int want)
{
    struct sched_param param;
    int policy = -1;

    for (int i = 0; i < 100; i++) {
        assert_int_equal(pthread_getschedparam(s->writer, &policy, &param), 0);
        if (policy == want)
            break;
        usleep(10000);
    }
    return policy;
}

/* A writer nicer than the workers is also SCHED_BATCH, so its wake-ups do not
 * preempt them; with writer_nice 0 it is a plain thread that preempts. */
static void storage_writer_batch_only_when_nicer(void **state)
{
    (void)state;
    for (int nice = 0; nice <= 5; nice += 5) {
        fixture_t *f = fixture_new();
        f->opts.writer_nice = nice;
        fixture_open(f);
        assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
        int want = nice > 0 ? SCHED_BATCH : SCHED_OTHER;
        assert_int_equal(writer_policy(f->s, want), want);
        storage_writer_stop(f->s);
        fixture_done(f);
    }
}

/* A producer preempted between claiming a slot and publishing it: the writer
 * must wait for it, not commit empty groups back to back (it did, and on a
 * shared core that kept the producer from running). */
static void storage_writer_waits_for_unpublished_slot(void **state)
{
    fixture_t *f = *state;
    storage_stats_t before, after;

    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/x"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    usleep(20000);
    storage_get_stats(f->s, &before);
    size_t pos = atomic_fetch_add(&f->s->enqueue_pos, 1); /* claimed, not published */
    usleep(100000);
    storage_get_stats(f->s, &after);
    assert_true(after.commits - before.commits <= 2);

    queued_engagement_t *slot = &f->s->slots[pos & f->s->mask];
    memcpy(slot->bytes, "abc", 3);
    slot->code_len = 3;
    slot->referrer_len = 0;
    slot->time_us = T0;
    slot->query_len = 0;
    slot->url_len = 0;
    slot->heap = NULL;
    memset(slot->country, 0, sizeof(slot->country));
    atomic_store(&slot->seq, pos + 1);
    storage_writer_stop(f->s);
    storage_get_stats(f->s, &after);
    assert_int_equal(after.engagements_recorded, 1);
}

static void push_n(storage_t *s, const char *code, int n)
{
    for (int i = 0; i < n; i++) {
        storage_engagement_t e = engagement(code, T0, "", "direct", 0, 0, false);
        assert_int_equal(storage_engagement_push(s, &e), STORAGE_OK);
    }
}

/* engagements_recorded once it reaches n, or after ms milliseconds. */
static uint64_t recorded_within(storage_t *s, uint64_t n, int ms)
{
    storage_stats_t st;

    for (int waited = 0;; waited += 5) {
        storage_get_stats(s, &st);
        if (st.engagements_recorded >= n || waited >= ms)
            return st.engagements_recorded;
        usleep(5000);
    }
}

static uint64_t total_clicks(storage_t *s, const char *code);

/* With group_spacing_ms, a group that took clicks holds the next one back
 * that long, while the first click, one after a quiet spell, a full batch
 * and the counters' own group (100 ms after a click) go within the flush
 * interval. Margins are wide: 2 s of spacing against checks at most 1 s
 * after the last group. */
static void storage_writer_spaces_groups(void **state)
{
    fixture_t *f = fixture_new();

    (void)state;
    f->opts.group_spacing_ms = 2000;
    f->opts.batch_max = 32;
    fixture_open(f);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/x"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);

    push_n(f->s, "abc", 1);
    assert_int_equal(recorded_within(f->s, 1, 500), 1);
    /* Held by the spacing, but the group that writes the first click's
     * counters takes it along. */
    push_n(f->s, "abc", 1);
    assert_int_equal(recorded_within(f->s, 2, 1000), 2);
    assert_true(total_clicks(f->s, "abc") >= 1);
    usleep(300000); /* past the counters' group for the second */
    push_n(f->s, "abc", 1);
    usleep(200000);
    assert_int_equal(recorded_within(f->s, 3, 0), 2); /* held back */
    push_n(f->s, "abc", 31);                          /* a full batch with the held one */
    assert_int_equal(recorded_within(f->s, 34, 500), 34);

    usleep(2100000); /* past the spacing since the last group began */
    push_n(f->s, "abc", 1);
    assert_int_equal(recorded_within(f->s, 35, 500), 35);
    push_n(f->s, "abc", 1);
    storage_writer_stop(f->s); /* stopping commits it */
    assert_int_equal(recorded_within(f->s, 36, 0), 36);
    fixture_done(f);
}

static void storage_engagement_seq_continues_after_reopen(void **state)
{
    fixture_t *f = *state;
    storage_reader_t *r;
    seqs_t s = {0};

    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    push_n(f->s, "abc", 2);
    storage_close(f->s); /* stops the writer, which drains first */

    fixture_open(f);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    push_n(f->s, "abc", 2);
    storage_writer_stop(f->s);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_engagement_scan(txn, 0, collect_seq, &s), 0);
    assert_int_equal(s.n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.seq[i], (uint64_t)i + 1);

    memset(&s, 0, sizeof(s));
    assert_int_equal(storage_engagement_scan(txn, 2, collect_seq, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seq[0], 3);
    storage_reader_end(r);
    storage_reader_close(r);
}

static void storage_engagement_push_invalid(void **state)
{
    fixture_t *f = *state;
    storage_engagement_t e = engagement("", T0, "", "direct", 0, 0, false);

    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_INVALID);
    memset(e.code, 'x', sizeof(e.code)); /* no terminator within the limit */
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_INVALID);
    storage_writer_stop(f->s);
}

static void storage_engagement_query_truncated(void **state)
{
    fixture_t *f = *state;
    static char query[STORAGE_QUERY_MAX + 100];
    storage_engagement_t e = engagement("abc", T0, "", "direct", 0, 0, false), got;
    storage_reader_t *r;

    memset(query, 'q', sizeof(query));
    e.query.ptr = query;
    e.query.len = sizeof(query);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    storage_writer_stop(f->s);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    assert_int_equal(storage_engagement_get(storage_reader_begin(r), 1, &got), STORAGE_OK);
    assert_int_equal(got.query.len, STORAGE_QUERY_MAX);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* ---- counters ---- */

static size_t run_keys(storage_t *s);

typedef struct counts {
    char values[8][32];
    uint32_t hours[8];
    uint64_t counts[8];
    int n;
} counts_t;

static int collect_count(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count)
{
    counts_t *c = ctx;

    snprintf(c->values[c->n], sizeof(c->values[0]), "%.*s", (int)value.len, value.ptr);
    c->hours[c->n] = hour;
    c->counts[c->n] = count;
    c->n++;
    return 0;
}

static counts_t scan_counts(storage_txn_t *txn, const char *code, storage_facet_t facet,
                            uint32_t from, uint32_t to)
{
    counts_t c;

    memset(&c, 0, sizeof(c));
    assert_int_equal(
        storage_counter_scan(txn, code, strlen(code), facet, from, to, collect_count, &c), 0);
    return c;
}

/* Starts the writer, queues the n engagements, and stops it: all recorded. */
static void record_all(storage_t *s, const storage_engagement_t *list, size_t n)
{
    assert_int_equal(storage_writer_start(s), STORAGE_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(storage_engagement_push(s, &list[i]), STORAGE_OK);
    storage_writer_stop(s);
}

static void storage_counter_scan_facets_skip_bots(void **state)
{
    fixture_t *f = *state;
    storage_engagement_t list[] = {
        engagement("ab", T0, "DE", "direct", STORAGE_DEVICE_MOBILE, STORAGE_KIND_CLICK, false),
        engagement("ab", T0 + 10, "DE", "t.co", STORAGE_DEVICE_DESKTOP, STORAGE_KIND_QR_SCAN,
                   false),
        engagement("ab", T0 + 20, "FR", "direct", STORAGE_DEVICE_MOBILE, STORAGE_KIND_CLICK, false),
        engagement("ab", T0 + HOUR_US, "", "direct", STORAGE_DEVICE_TABLET, STORAGE_KIND_BIO_CLICK,
                   false),
        engagement("ab", T0 + 30, "DE", "direct", STORAGE_DEVICE_BOT, STORAGE_KIND_CLICK, true),
        engagement("abc", T0, "US", "direct", STORAGE_DEVICE_MOBILE, STORAGE_KIND_CLICK, false),
    };
    storage_reader_t *r;
    counts_t c;
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    assert_int_equal(add_link(f->s, "ab", "Bgroup00001", "https://ab.example/"), STORAGE_OK);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://abc.example/"), STORAGE_OK);
    record_all(f->s, list, sizeof(list) / sizeof(list[0]));

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);

    /* The bot is stored but not counted; "abc" does not leak into "ab". */
    c = scan_counts(txn, "ab", STORAGE_FACET_TOTAL, h0, h0 + 2);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.hours[0], h0);
    assert_int_equal(c.counts[0], 3);
    assert_string_equal(c.values[0], "");
    assert_int_equal(c.hours[1], h0 + 1);
    assert_int_equal(c.counts[1], 1);

    c = scan_counts(txn, "ab", STORAGE_FACET_TOTAL, h0 + 1, h0 + 2);
    assert_int_equal(c.n, 1);
    c = scan_counts(txn, "ab", STORAGE_FACET_TOTAL, h0, h0);
    assert_int_equal(c.n, 0);

    c = scan_counts(txn, "ab", STORAGE_FACET_COUNTRY, h0, h0 + 1);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.values[0], "DE");
    assert_int_equal(c.counts[0], 2);
    assert_string_equal(c.values[1], "FR");
    assert_int_equal(c.counts[1], 1);

    c = scan_counts(txn, "ab", STORAGE_FACET_REFERRER, h0, h0 + 1);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.values[0], "direct");
    assert_int_equal(c.counts[0], 2);
    assert_string_equal(c.values[1], "t.co");

    c = scan_counts(txn, "ab", STORAGE_FACET_DEVICE, h0, h0 + 2);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.values[0], "desktop");
    assert_string_equal(c.values[1], "mobile");
    assert_int_equal(c.counts[1], 2);
    assert_string_equal(c.values[2], "tablet");

    c = scan_counts(txn, "ab", STORAGE_FACET_KIND, h0, h0 + 2);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.values[0], "click");
    assert_int_equal(c.counts[0], 2);
    assert_string_equal(c.values[1], "qr_scan");
    assert_string_equal(c.values[2], "bio_click");

    c = scan_counts(txn, "abc", STORAGE_FACET_TOTAL, 0, UINT32_MAX);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.counts[0], 1);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* Referrers alike in their first bytes (the counters' sort compares 16 bytes
 * of a key at once, then the rest), and the two kinds of "unknown". */
static const char *const REFERRERS[] = {"direct", "www.example-long-name.com", "t.co",
                                        "www.example-long-name.co", "www.example-long-name.com.x"};
static const char *const COUNTRIES[] = {"DE", "FR", "", "US"};
#define NREFERRERS (sizeof(REFERRERS) / sizeof(REFERRERS[0]))
#define NCOUNTRIES (sizeof(COUNTRIES) / sizeof(COUNTRIES[0]))

/* The count scan c holds for value, 0 when it has none. */
static uint64_t count_of(const counts_t *c, const char *value)
{
    for (int i = 0; i < c->n; i++) {
        if (strcmp(c->values[i], value) == 0)
            return c->counts[i];
    }
    return 0;
}

/* Thousands of clicks over three links, every country with every referrer,
 * gathered in memory together: each link's count per country and per referrer
 * is exactly what was clicked, none leaking into a link whose code shares a
 * prefix. */
static void storage_counters_exact_per_value(void **state)
{
    fixture_t *f = *state;
    static const char *const codes[] = {"ab", "abc", "b"};
    uint64_t by_country[3][NCOUNTRIES] = {{0}}, by_referrer[3][NREFERRERS] = {{0}};
    storage_reader_t *r;
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    for (int l = 0; l < 3; l++)
        assert_int_equal(add_link(f->s, codes[l], "Bgroup00001", "https://x.example/"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    for (int i = 0; i < 6000; i++) {
        int l = i % 3, c = (i / 3) % NCOUNTRIES, ref = (i / 7) % NREFERRERS;
        storage_engagement_t e = engagement(codes[l], T0 + i, COUNTRIES[c], REFERRERS[ref],
                                            STORAGE_DEVICE_MOBILE, STORAGE_KIND_CLICK, false);
        while (storage_engagement_push(f->s, &e) == STORAGE_FULL)
            usleep(100);
        by_country[l][c]++;
        by_referrer[l][ref]++;
    }
    storage_writer_stop(f->s);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    for (int l = 0; l < 3; l++) {
        counts_t c = scan_counts(txn, codes[l], STORAGE_FACET_COUNTRY, h0, h0 + 1);
        assert_int_equal(c.n, NCOUNTRIES);
        for (size_t i = 0; i < NCOUNTRIES; i++)
            assert_int_equal(count_of(&c, COUNTRIES[i]), by_country[l][i]);
        c = scan_counts(txn, codes[l], STORAGE_FACET_REFERRER, h0, h0 + 1);
        assert_int_equal(c.n, NREFERRERS);
        for (size_t i = 0; i < NREFERRERS; i++)
            assert_int_equal(count_of(&c, REFERRERS[i]), by_referrer[l][i]);
        c = scan_counts(txn, codes[l], STORAGE_FACET_TOTAL, h0, h0 + 1);
        assert_int_equal(c.counts[0], 2000);
    }
    storage_reader_end(r);
    storage_reader_close(r);
}

/* A sealed batch lists its keys in LMDB's order (memcmp, shorter first), which
 * the writer relies on to resume a part-written batch after a crash: keys
 * alike in their first 16 bytes included, whatever order they came in. */
static void storage_counters_sealed_in_key_order(void **state)
{
    fixture_t *f = *state;
    counter_batch_t *b = storage__counters_new(4096);
    char code[16];
    size_t n;

    for (int i = 0; i < 4000; i++) {
        snprintf(code, sizeof(code), "k%d", (i * 7919) % 97);
        storage_engagement_t e =
            engagement(code, T0 + (i % 3) * HOUR_US + i, COUNTRIES[(i / 5) % NCOUNTRIES],
                       REFERRERS[(i * 31) % NREFERRERS], (uint8_t)(i % 5), (uint8_t)(i % 3), false);
        storage__counters_add(b, &e);
    }
    n = storage__counters_seal(f->s, b);
    assert_true(n > 97 * 3 * (NCOUNTRIES + NREFERRERS));
    for (size_t i = 1; i < n; i++) {
        size_t alen, blen;
        const uint8_t *a = storage__counters_key(b, i - 1, &alen);
        const uint8_t *k = storage__counters_key(b, i, &blen);
        int c = memcmp(a, k, alen < blen ? alen : blen);
        if (c > 0 || (c == 0 && alen >= blen))
            fail_msg("key %zu is not after key %zu", i, i - 1);
    }
    storage__counters_free(b);
}

typedef struct run_batch_arg {
    counter_batch_t *b;
    uint64_t first_seq;
} run_batch_arg_t;

/* Writes a sealed batch whole, as a run when counter_run_links allows. */
static int write_run(storage_txn_t *txn, void *arg)
{
    run_batch_arg_t *a = arg;
    size_t pos = 0;

    storage__counters_plan(txn->s, a->b, a->first_seq);
    return storage__counters_write(txn, a->b, &pos, SIZE_MAX);
}

/* A link whose clicks come back to a minute it had left (clocks of several
 * workers) has that minute's clicks set aside twice: sealing sums them into
 * one key, which a run holds whole. */
static void storage_counters_minute_revisited_summed(void **state)
{
    fixture_t *f = fixture_new();
    counter_batch_t *b = storage__counters_new(64);
    static const int minutes[] = {0, 1, 0, 2, 1, 0};
    storage_reader_t *r;
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    (void)state;
    f->opts.counter_run_links = 1;
    fixture_open(f);
    for (size_t i = 0; i < sizeof(minutes) / sizeof(minutes[0]); i++) {
        storage_engagement_t e = engagement("m", T0 + minutes[i] * INT64_C(60000000) + (int64_t)i,
                                            "DE", "direct", 0, 0, false);
        storage__counters_add(b, &e);
    }
    size_t n = storage__counters_seal(f->s, b);
    for (size_t i = 1; i < n; i++) {
        size_t alen, blen;
        const uint8_t *a = storage__counters_key(b, i - 1, &alen);
        const uint8_t *k = storage__counters_key(b, i, &blen);
        if (alen == blen && memcmp(a, k, alen) == 0)
            fail_msg("key %zu repeats key %zu", i, i - 1);
    }
    run_batch_arg_t a = {b, 1};
    assert_int_equal(storage_run(f->s, write_run, &a), STORAGE_OK);
    assert_int_not_equal(storage__counters_run(b), 0);
    assert_int_equal(run_keys(f->s), n);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    counts_t c = scan_counts(storage_reader_begin(r), "m", STORAGE_FACET_MINUTE, h0, h0 + 1);
    uint64_t per_minute[3] = {0, 0, 0};
    for (int i = 0; i < c.n; i++) {
        assert_int_equal(strlen(c.values[i]) <= 1, true);
        per_minute[(uint8_t)c.values[i][0] % 3] += c.counts[i];
    }
    assert_int_equal(per_minute[0], 3);
    assert_int_equal(per_minute[1], 2);
    assert_int_equal(per_minute[2], 1);
    c = scan_counts(storage_reader_begin(r), "m", STORAGE_FACET_TOTAL, h0, h0 + 1);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.counts[0], 6);
    storage_reader_end(r);
    storage_reader_close(r);
    storage__counters_free(b);
    fixture_done(f);
}

/* A sealed batch bigger than the slices the gathering clicks leave room for
 * (clicks over millions of links) is spread over the groups until memory is
 * full, never left for one group to write whole: that held every click for
 * most of a second. A small one goes a plain slice a group. */
static void storage_counters_written_before_memory_fills(void **state)
{
    fixture_t *f = *state;
    storage_t *s = f->s;
    size_t room = COUNTER_FLUSH_GROUPS * (size_t)s->opts.batch_max;
    size_t groups_of_room = room / s->opts.batch_max;
    char code[32];

    /* Each link counts at least four keys: total, minute, device, kind. */
    for (size_t i = 0; i < groups_of_room * COUNTER_SLICE / 4 + 1; i++) {
        snprintf(code, sizeof(code), "m%zu", i);
        storage_engagement_t e = engagement(code, T0, COUNTRIES[i % NCOUNTRIES], "direct",
                                            (uint8_t)(i % 5), (uint8_t)(i % 3), false);
        storage__counters_add(s->counters_out, &e);
    }
    size_t keys = storage__counters_seal(s, s->counters_out);
    assert_true(keys > groups_of_room * COUNTER_SLICE); /* too many for plain slices */
    size_t fair = (keys + groups_of_room - 1) / groups_of_room;

    s->cs.out_busy = true;
    s->cs.out_pos = 0;
    s->cs.pending = 0;
    while (s->cs.out_pos < keys) {
        assert_true(s->cs.pending < room); /* or the rest goes whole */
        size_t n = storage__counters_slice(s);
        assert_true(n >= COUNTER_SLICE);
        assert_true(n <= fair + 1);
        s->cs.out_pos += n < keys - s->cs.out_pos ? n : keys - s->cs.out_pos;
        s->cs.pending += s->opts.batch_max; /* a full group of clicks */
    }

    /* With room to spare, a slice is a slice. */
    s->cs.out_pos = keys - 3 * COUNTER_SLICE;
    s->cs.pending = 0;
    assert_int_equal(storage__counters_slice(s), COUNTER_SLICE);
    memset(&s->cs, 0, sizeof(s->cs));
    storage__counters_reset(s->counters_out);
}

#define MINUTE_US INT64_C(60000000)

/* Minute counters hold the minute within the hour as one byte (0 is a value
 * like any other), skip bots like the totals, and a scan from hour 0 or across
 * hours no link was clicked in finds the hours that have counters. Codes that
 * share a prefix ("ab", "abc") and a code clicked only in between ("b") sit
 * among the keys of "ab" now that keys begin with the hour. */
static void storage_counter_scan_minutes_and_hours(void **state)
{
    fixture_t *f = *state;
    storage_engagement_t list[] = {
        engagement("ab", T0, "DE", "direct", 0, 0, false),
        engagement("ab", T0 + 59 * INT64_C(1000000), "DE", "direct", 0, 0, false),
        engagement("ab", T0 + MINUTE_US + 1, "DE", "direct", 0, 0, false),
        engagement("ab", T0 + 2 * MINUTE_US, "DE", "direct", STORAGE_DEVICE_BOT, 0, true),
        engagement("ab", T0 + HOUR_US - 1, "DE", "direct", 0, 0, false),
        engagement("abc", T0 + MINUTE_US, "US", "direct", 0, 0, false),
        engagement("ab", T0 + HOUR_US + 30 * MINUTE_US, "FR", "direct", 0, 0, false),
        engagement("b", T0 + 3 * HOUR_US + 5 * MINUTE_US, "FR", "direct", 0, 0, false),
        engagement("ab", T0 + 5 * HOUR_US, "FR", "direct", 0, 0, false),
    };
    storage_reader_t *r;
    counts_t c;
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    assert_int_equal(add_link(f->s, "ab", "Bgroup00001", "https://ab.example/"), STORAGE_OK);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://abc.example/"), STORAGE_OK);
    assert_int_equal(add_link(f->s, "b", "Bgroup00001", "https://b.example/"), STORAGE_OK);
    record_all(f->s, list, sizeof(list) / sizeof(list[0]));

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);

    /* Minutes 0 (two clicks, one at 00:59), 1 and 59; the bot's minute 2 is
     * not there. */
    c = scan_counts(txn, "ab", STORAGE_FACET_MINUTE, h0, h0 + 1);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.hours[0], h0);
    assert_int_equal(c.values[0][0], 0);
    assert_int_equal(c.counts[0], 2);
    assert_int_equal(c.values[1][0], 1);
    assert_int_equal(c.counts[1], 1);
    assert_int_equal(c.values[2][0], 59);
    assert_int_equal(c.counts[2], 1);

    c = scan_counts(txn, "ab", STORAGE_FACET_MINUTE, h0 + 1, h0 + 6);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.hours[0], h0 + 1);
    assert_int_equal(c.values[0][0], 30);
    assert_int_equal(c.hours[1], h0 + 5);
    assert_int_equal(c.values[1][0], 0);

    c = scan_counts(txn, "abc", STORAGE_FACET_MINUTE, 0, UINT32_MAX);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.hours[0], h0);
    assert_int_equal(c.values[0][0], 1);
    assert_int_equal(c.counts[0], 1);

    /* The hourly totals agree with the minutes, from hour 0 to the last. */
    c = scan_counts(txn, "ab", STORAGE_FACET_TOTAL, 0, UINT32_MAX);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.hours[0], h0);
    assert_int_equal(c.counts[0], 4);
    assert_int_equal(c.hours[1], h0 + 1);
    assert_int_equal(c.counts[1], 1);
    assert_int_equal(c.hours[2], h0 + 5);
    assert_int_equal(c.counts[2], 1);

    /* Hour h0 + 3 holds only "b"; the range ends before h0 + 5. */
    c = scan_counts(txn, "ab", STORAGE_FACET_TOTAL, h0 + 2, h0 + 5);
    assert_int_equal(c.n, 0);
    c = scan_counts(txn, "b", STORAGE_FACET_TOTAL, h0, h0 + 6);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.hours[0], h0 + 3);
    c = scan_counts(txn, "b", STORAGE_FACET_MINUTE, h0 + 3, h0 + 4);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.values[0][0], 5);

    c = scan_counts(txn, "ab", STORAGE_FACET_COUNTRY, h0, UINT32_MAX);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.values[0], "DE");
    assert_int_equal(c.counts[0], 4);
    assert_string_equal(c.values[1], "FR");
    assert_int_equal(c.hours[2], h0 + 5);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* ---- jobs ---- */

/* A job that holds the writer until the test lets it go, so that whatever is
 * queued meanwhile lands in the next group. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool entered;
    bool open;
} gate_t;

static int gate_job(storage_txn_t *txn, void *arg)
{
    gate_t *g = arg;

    pthread_mutex_lock(&g->lock);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return STORAGE_OK;
}

static void gate_close(storage_t *s, gate_t *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->entered = false;
    g->open = false;
    assert_int_equal(storage_submit(s, gate_job, NULL, g), STORAGE_OK);
    pthread_mutex_lock(&g->lock);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_open(gate_t *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void storage_engagement_push_full_counts_drop(void **state)
{
    fixture_t *f = fixture_new();
    storage_stats_t st;
    gate_t g;

    (void)state;
    f->opts.queue_capacity = 3; /* rounded up to 4 */
    fixture_open(f);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);

    gate_close(f->s, &g);
    push_n(f->s, "abc", 4);
    storage_engagement_t e = engagement("abc", T0, "", "direct", 0, 0, false);
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_FULL);
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_FULL);
    storage_get_stats(f->s, &st);
    assert_int_equal(st.engagements_dropped, 2);
    assert_int_equal(st.queue_depth, 4);

    gate_open(&g);
    storage_writer_stop(f->s);
    storage_get_stats(f->s, &st);
    assert_int_equal(st.engagements_recorded, 4);
    assert_int_equal(st.engagements_dropped, 2);

    fixture_done(f);
}

typedef struct put_arg {
    const char *key;
    int result;
    int done_rc;
} put_arg_t;

static int put_then_return(storage_txn_t *txn, void *arg)
{
    put_arg_t *p = arg;
    int rc = storage_record_put(txn, STORAGE_DB_GROUPS, p->key, strlen(p->key), "v", 1, 0);

    return rc != STORAGE_OK ? rc : p->result;
}

static void record_done(void *arg, int rc)
{
    ((put_arg_t *)arg)->done_rc = rc;
}

static void storage_job_failure_discards_only_its_writes(void **state)
{
    fixture_t *f = *state;
    put_arg_t jobs[] = {
        {"a", STORAGE_OK, -100},
        {"b", STORAGE_INVALID, -100},
        {"c", STORAGE_OK, -100},
    };
    storage_stats_t before, after;
    storage_reader_t *r;
    storage_bytes_t v;
    gate_t g;

    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    gate_close(f->s, &g);
    storage_get_stats(f->s, &before);
    for (int i = 0; i < 3; i++)
        assert_int_equal(storage_submit(f->s, put_then_return, record_done, &jobs[i]), STORAGE_OK);
    gate_open(&g);
    storage_writer_stop(f->s);
    storage_get_stats(f->s, &after);

    /* The gate's group and then one group for all three jobs. */
    assert_int_equal(after.commits - before.commits, 2);
    assert_int_equal(after.last_batch, 3);
    assert_int_equal(jobs[0].done_rc, STORAGE_OK);
    assert_int_equal(jobs[1].done_rc, STORAGE_INVALID);
    assert_int_equal(jobs[2].done_rc, STORAGE_OK);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_GROUPS, "a", 1, &v), STORAGE_OK);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_GROUPS, "b", 1, &v), STORAGE_NOTFOUND);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_GROUPS, "c", 1, &v), STORAGE_OK);
    storage_reader_end(r);
    storage_reader_close(r);

    /* storage_run hands back the job's own result. */
    put_arg_t failing = {"d", STORAGE_EXISTS, 0};
    assert_int_equal(storage_run(f->s, put_then_return, &failing), STORAGE_EXISTS);
}

/* ---- draining ---- */

typedef struct producer {
    storage_t *s;
    int n;
    int id;
    int full;
} producer_t;

static void *produce(void *arg)
{
    producer_t *p = arg;

    for (int i = 0; i < p->n; i++) {
        storage_engagement_t e = engagement("abc", T0 + i, "", "direct", 0, 0, false);
        e.event_id[15] = (uint8_t)p->id;
        if (storage_engagement_push(p->s, &e) != STORAGE_OK)
            p->full++;
    }
    return NULL;
}

typedef struct drained {
    uint64_t last_seq;
    int per_producer[4];
    int n;
    bool ordered;
} drained_t;

static int count_drained(void *ctx, const storage_engagement_t *e)
{
    drained_t *d = ctx;

    if (e->seq != d->last_seq + 1)
        d->ordered = false;
    d->last_seq = e->seq;
    d->per_producer[e->event_id[15] % 4]++;
    d->n++;
    return 0;
}

static void storage_writer_stop_drains_queue(void **state)
{
    fixture_t *f = *state;
    pthread_t th[4];
    producer_t p[4];
    drained_t d = {.ordered = true};
    storage_stats_t st;
    storage_reader_t *r;

    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    for (int i = 0; i < 4; i++) {
        p[i] = (producer_t){f->s, 2500, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].full, 0);
    }
    storage_writer_stop(f->s);

    storage_get_stats(f->s, &st);
    assert_int_equal(st.engagements_recorded, 10000);
    assert_int_equal(st.queue_depth, 0);
    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    assert_int_equal(storage_engagement_scan(storage_reader_begin(r), 0, count_drained, &d), 0);
    assert_int_equal(d.n, 10000);
    assert_true(d.ordered);
    for (int i = 0; i < 4; i++)
        assert_int_equal(d.per_producer[i], 2500);
    storage_reader_end(r);
    storage_reader_close(r);

    /* Once stopped, nothing is accepted, and jobs run directly. */
    storage_engagement_t e = engagement("abc", T0, "", "direct", 0, 0, false);
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_ERROR);
    assert_int_equal(add_link(f->s, "after", "Bgroup00001", "https://after.example/"), STORAGE_OK);
}

/* ---- failures ---- */

static int fill_job(storage_txn_t *txn, void *arg)
{
    static char val[4096];
    int *i = arg;
    char key[32];

    snprintf(key, sizeof(key), "k%d", (*i)++);
    return storage_record_put(txn, STORAGE_DB_BIO_PAGES, key, strlen(key), val, sizeof(val), 0);
}

static void storage_engagement_map_full_counts_loss(void **state)
{
    fixture_t *f = fixture_new();
    static char query[STORAGE_QUERY_MAX];
    char reason[256] = "unset";
    storage_stats_t st;
    int i = 0, rc = STORAGE_OK;

    (void)state;
    f->opts.map_size = (size_t)1 << 20;
    fixture_open(f);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/"), STORAGE_OK);
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    storage_writer_last_error(f->s, reason, sizeof(reason));
    assert_string_equal(reason, "");
    while (rc == STORAGE_OK && i < 1000)
        rc = storage_run(f->s, fill_job, &i);
    assert_int_equal(rc, STORAGE_ERROR);

    storage_engagement_t e = engagement("abc", T0, "", "direct", 0, 0, false);
    memset(query, 'q', sizeof(query));
    e.query.ptr = query;
    e.query.len = sizeof(query);
    assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
    storage_writer_stop(f->s);

    storage_get_stats(f->s, &st);
    assert_int_equal(st.engagements_recorded, 0);
    assert_int_equal(st.engagements_dropped, 1);
    assert_true(st.commit_failures >= 1);
    storage_writer_last_error(f->s, reason, sizeof(reason));
    assert_non_null(strstr(reason, "map is full"));

    fixture_done(f);
}

static int sum_counts(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count)
{
    (void)hour;
    (void)value;
    *(uint64_t *)ctx += count;
    return 0;
}

static uint64_t total_clicks(storage_t *s, const char *code)
{
    storage_reader_t *r;
    uint64_t total = 0;
    uint32_t hour = (uint32_t)(T0 / HOUR_US);

    assert_int_equal(storage_reader_open(s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_counter_scan(txn, code, strlen(code), STORAGE_FACET_TOTAL, hour,
                                          hour + 1, sum_counts, &total),
                     STORAGE_OK);
    storage_reader_end(r);
    storage_reader_close(r);
    return total;
}

/* Waits for a child that must have died of SIGKILL. */
static void expect_killed(pid_t pid)
{
    int status;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* The child pushes clicks, lets one counter flush happen, pushes more, and is
 * killed with SIGKILL as soon as all are durable: counters written and not. */
static void crash_after_commit(const char *dir, int first, int second)
{
    storage_options_t o = {.dir = dir, .map_size = (size_t)256 << 20};
    storage_t *s;
    storage_stats_t st;
    char err[256];

    if (storage_open(&s, &o, err, sizeof(err)) != STORAGE_OK || storage_writer_start(s) != 0)
        _exit(2);
    for (int i = 0; i < first + second; i++) {
        storage_engagement_t e = engagement("abc", T0 + i, "DE", "direct", 0, 0, false);
        while (storage_engagement_push(s, &e) == STORAGE_FULL)
            usleep(100);
        if (i + 1 == first)
            usleep(300000); /* past the counters' flush interval */
    }
    do {
        usleep(200);
        storage_get_stats(s, &st);
    } while (st.engagements_recorded < (uint64_t)(first + second));
    kill(getpid(), SIGKILL);
    _exit(3);
}

/* kill -9 right after a group commit: the clicks whose counters were still in
 * memory are counted again on the next start, exactly once. */
static void storage_counters_recounted_after_kill(void **state)
{
    fixture_t *f = fixture_new();

    (void)state;
    fixture_open(f);
    assert_int_equal(add_link(f->s, "abc", "Bgroup00001", "https://example.com/x"), STORAGE_OK);
    storage_close(f->s);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        crash_after_commit(f->dir, 1500, 2500);
    expect_killed(pid);

    for (int restart = 0; restart < 2; restart++) {
        fixture_open(f);
        assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
        storage_writer_stop(f->s);
        assert_int_equal(total_clicks(f->s, "abc"), 4000);
        storage_close(f->s);
    }
    remove_tree(f->dir);
    free(f);
}

#define SPREAD_LINKS 6000

/* Whether a sealed batch of counters is part written: the progress record. */
static bool counters_in_progress(storage_t *s)
{
    MDB_txn *txn;
    MDB_val k = {strlen(META_COUNTERS_PROGRESS), (void *)META_COUNTERS_PROGRESS}, v;
    bool found;

    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return false;
    found = mdb_get(txn, s->dbi[DB_META], &k, &v) == 0;
    mdb_txn_abort(txn);
    return found;
}

/* The child clicks once on each of many links, so their counters take several
 * group commits to write, and is killed with SIGKILL while they are part
 * written. */
static void crash_while_counters_written(const char *dir, unsigned run_links)
{
    storage_options_t o = {
        .dir = dir, .map_size = (size_t)256 << 20, .counter_run_links = run_links};
    storage_t *s;
    storage_stats_t st;
    char err[256];
    static const char url[] = "https://example.com/spread";

    if (storage_open(&s, &o, err, sizeof(err)) != STORAGE_OK || storage_writer_start(s) != 0)
        _exit(2);
    for (int i = 0; i < SPREAD_LINKS; i++) {
        char code[16];
        snprintf(code, sizeof(code), "c%05d", i);
        storage_engagement_t e = engagement(code, T0 + i, COUNTRIES[i % NCOUNTRIES],
                                            REFERRERS[i % NREFERRERS], 0, 0, false);
        snprintf(e.group_guid, sizeof(e.group_guid), "%s", "Bgroup00001");
        e.long_url = (storage_bytes_t){url, strlen(url)};
        while (storage_engagement_push(s, &e) == STORAGE_FULL)
            usleep(100);
    }
    do {
        usleep(100);
        storage_get_stats(s, &st);
    } while (st.engagements_recorded < SPREAD_LINKS);
    for (int i = 0; i < 100000; i++) {
        if (counters_in_progress(s))
            kill(getpid(), SIGKILL);
        usleep(50);
    }
    _exit(4); /* never saw them part written */
}

/* The link's counters of facet hold one click, of value. */
static void expect_single(storage_t *s, const char *code, storage_facet_t facet, const char *value)
{
    storage_reader_t *r;

    assert_int_equal(storage_reader_open(s, &r), STORAGE_OK);
    counts_t c = scan_counts(storage_reader_begin(r), code, facet, 0, UINT32_MAX);
    storage_reader_end(r);
    storage_reader_close(r);
    if (c.n != 1 || c.counts[0] != 1 || strcmp(c.values[0], value) != 0)
        fail_msg("%s: %d values, first \"%s\" x %llu, wanted \"%s\" once", code, c.n,
                 c.n > 0 ? c.values[0] : "", c.n > 0 ? (unsigned long long)c.counts[0] : 0ULL,
                 value);
}

/* Keys of the counters that belong to runs (a 0 where a code's length is). */
static size_t run_keys(storage_t *s)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t n = 0;

    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, s->dbi[DB_COUNTERS], &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        n += k.mv_size > 4 && ((const uint8_t *)k.mv_data)[4] == 0;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return n;
}

/* Killed while a sealed batch is part written: each link is counted once,
 * under its own country and referrer (not only in its total), after one
 * restart and after another. With run_links at most SPREAD_LINKS, the batch
 * was being written as a run. */
static void exact_after_kill_mid_write(unsigned run_links)
{
    fixture_t *f = fixture_new();

    f->opts.counter_run_links = run_links;
    fixture_open(f);
    storage_close(f->s);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        crash_while_counters_written(f->dir, run_links);
    expect_killed(pid);

    for (int restart = 0; restart < 2; restart++) {
        fixture_open(f);
        assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
        storage_writer_stop(f->s);
        assert_false(counters_in_progress(f->s));
        uint64_t sum = 0;
        for (int i = 0; i < SPREAD_LINKS; i++) {
            char code[16];
            snprintf(code, sizeof(code), "c%05d", i);
            uint64_t n = total_clicks(f->s, code);
            if (n != 1)
                fail_msg("%s counted %llu times after restart %d", code, (unsigned long long)n,
                         restart);
            sum += n;
            expect_single(f->s, code, STORAGE_FACET_COUNTRY, COUNTRIES[i % NCOUNTRIES]);
            expect_single(f->s, code, STORAGE_FACET_REFERRER, REFERRERS[i % NREFERRERS]);
        }
        assert_int_equal(sum, SPREAD_LINKS);
        if (run_links <= SPREAD_LINKS)
            assert_true(run_keys(f->s) >= SPREAD_LINKS);
        else
            assert_int_equal(run_keys(f->s), 0);
        storage_close(f->s);
    }
    remove_tree(f->dir);
    free(f);
}

static void storage_counters_exact_after_kill_mid_write(void **state)
{
    (void)state;
    exact_after_kill_mid_write(SPREAD_LINKS * 10);
}

static void storage_counters_exact_after_kill_mid_run(void **state)
{
    (void)state;
    exact_after_kill_mid_write(SPREAD_LINKS / 6);
}

#define RUN_LINKS 40

/* One click on link i of a batch spread over 5 * RUN_LINKS links, at hour
 * offset h. */
static storage_engagement_t spread_click(int i, int h)
{
    static const char url[] = "https://example.com/spread";
    char code[16];

    snprintf(code, sizeof(code), "r%03d", i);
    storage_engagement_t e = engagement(code, T0 + h * HOUR_US + i, COUNTRIES[i % NCOUNTRIES],
                                        REFERRERS[i % NREFERRERS], 0, 0, false);
    snprintf(e.group_guid, sizeof(e.group_guid), "%s", "Bgroup00001");
    e.long_url = (storage_bytes_t){url, strlen(url)};
    return e;
}

/* A batch spread over many links goes into a run of its own; clicks on a few
 * links later in the same hour are added into the hour's keys, and a link's
 * readers sum both, per value and per hour, skipping the empty hours. */
static void storage_counters_spread_batch_written_as_run(void **state)
{
    fixture_t *f = fixture_new();
    storage_engagement_t list[5 * RUN_LINKS];
    storage_reader_t *r;
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    (void)state;
    f->opts.counter_run_links = RUN_LINKS;
    fixture_open(f);
    for (int i = 0; i < 5 * RUN_LINKS; i++)
        list[i] = spread_click(i, 0);
    record_all(f->s, list, 5 * RUN_LINKS);
    size_t in_runs = run_keys(f->s);
    assert_true(in_runs >= 5 * RUN_LINKS); /* each link's total, at least */

    /* A few links: added into the hour (two clicks on link 0), and three
     * hours later (link 1). */
    list[0] = spread_click(0, 0);
    list[1] = spread_click(0, 0);
    list[2] = spread_click(1, 3);
    record_all(f->s, list, 3);
    assert_int_equal(run_keys(f->s), in_runs);

    assert_int_equal(storage_reader_open(f->s, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    counts_t c = scan_counts(txn, "r000", STORAGE_FACET_TOTAL, h0, h0 + 10);
    uint64_t total = 0;
    for (int i = 0; i < c.n; i++) {
        assert_int_equal(c.hours[i], h0);
        total += c.counts[i];
    }
    assert_int_equal(total, 3);
    c = scan_counts(txn, "r000", STORAGE_FACET_COUNTRY, h0, h0 + 1);
    total = 0;
    for (int i = 0; i < c.n; i++) {
        assert_string_equal(c.values[i], COUNTRIES[0]);
        total += c.counts[i];
    }
    assert_int_equal(total, 3);
    c = scan_counts(txn, "r001", STORAGE_FACET_TOTAL, 0, UINT32_MAX);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.hours[0], h0);
    assert_int_equal(c.counts[0], 1);
    assert_int_equal(c.hours[1], h0 + 3);
    assert_int_equal(c.counts[1], 1);
    c = scan_counts(txn, "r001", STORAGE_FACET_REFERRER, h0 + 1, h0 + 3);
    assert_int_equal(c.n, 0);
    /* Codes that start alike stay apart: r00 has no clicks. */
    c = scan_counts(txn, "r00", STORAGE_FACET_TOTAL, 0, UINT32_MAX);
    assert_int_equal(c.n, 0);
    storage_reader_end(r);
    for (int i = 2; i < 5 * RUN_LINKS; i++) {
        storage_engagement_t e = spread_click(i, 0);
        assert_int_equal(total_clicks(f->s, e.code), 1);
    }
    storage_reader_close(r);
    fixture_done(f);
}

/* The distinct runs the counters of hour hold. */
static size_t distinct_runs(storage_t *s, uint32_t hour)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t n = 0;
    uint64_t last = 0;

    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, s->dbi[DB_COUNTERS], &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *p = k.mv_data;
        if (k.mv_size > 13 && get_be32(p) == hour && p[4] == 0 && get_be64(p + 5) != last) {
            last = get_be64(p + 5);
            n++;
        }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return n;
}

typedef struct merge_arg {
    uint32_t hour, before;
    uint64_t busy;
    size_t limit, moved;
} merge_arg_t;

static int merge_slice(storage_txn_t *txn, void *arg)
{
    merge_arg_t *m = arg;
    return storage__counters_merge(txn, &m->hour, m->before, m->busy, m->limit, &m->moved);
}

/* Everything a link's readers see, summed per facet and value. */
static uint64_t facet_sum(storage_t *s, const char *code, storage_facet_t facet, const char *value)
{
    storage_reader_t *r;
    uint64_t n = 0;
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    assert_int_equal(storage_reader_open(s, &r), STORAGE_OK);
    counts_t c = scan_counts(storage_reader_begin(r), code, facet, h0, h0 + 1);
    for (int i = 0; i < c.n; i++)
        n += strcmp(c.values[i], value) == 0 ? c.counts[i] : 0;
    storage_reader_end(r);
    storage_reader_close(r);
    return n;
}

/* Three runs in one hour, over links they share in part, merge a few keys at
 * a time into the first: the hour ends with one run, and every count read
 * before, between and after the slices is the same. A run being written is
 * left alone. */
/* A store whose hour h0 holds three runs, numbered 1, 101 and 201: g0-g19,
 * g5-g24, g10-g29, one click each, from the run's country. */
static fixture_t *three_runs(void)
{
    fixture_t *f = fixture_new();
    char code[16];

    f->opts.counter_run_links = 1;
    fixture_open(f);
    for (int run = 0; run < 3; run++) {
        counter_batch_t *b = storage__counters_new(256);
        for (int i = run * 5; i < run * 5 + 20; i++) {
            snprintf(code, sizeof(code), "g%d", i);
            storage_engagement_t e = engagement(code, T0 + run * INT64_C(60000000) + i,
                                                COUNTRIES[run % NCOUNTRIES], "direct", 0, 0, false);
            storage__counters_add(b, &e);
        }
        storage__counters_seal(f->s, b);
        run_batch_arg_t a = {b, (uint64_t)run * 100 + 1};
        assert_int_equal(storage_run(f->s, write_run, &a), STORAGE_OK);
        storage__counters_free(b);
    }
    assert_int_equal(distinct_runs(f->s, (uint32_t)(T0 / HOUR_US)), 3);
    return f;
}

/* One slice with room for them merges every later run of the hour, one after
 * the other. */
static void storage_counters_runs_merged_in_one_slice(void **state)
{
    fixture_t *f = three_runs();
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    (void)state;
    merge_arg_t m = {0, h0 + 1, 0, SIZE_MAX, 0};
    assert_int_equal(storage_run(f->s, merge_slice, &m), STORAGE_OK);
    assert_int_equal(distinct_runs(f->s, h0), 1);
    assert_int_equal(m.moved, 2 * 20 * 6); /* total, minute, device, kind, country, referrer */
    assert_int_equal(facet_sum(f->s, "g12", STORAGE_FACET_TOTAL, ""), 3);
    fixture_done(f);
}

static void storage_counters_runs_merged(void **state)
{
    fixture_t *f = three_runs();
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);
    char code[16];

    (void)state;

    /* The run being written holds back its hour. */
    merge_arg_t m = {0, h0 + 1, 101, 7, 0};
    assert_int_equal(storage_run(f->s, merge_slice, &m), STORAGE_OK);
    assert_int_equal(m.moved, 0);
    assert_int_equal(distinct_runs(f->s, h0), 3);

    m = (merge_arg_t){0, h0 + 1, 0, 7, 0};
    int slices = 0;
    do {
        assert_int_equal(storage_run(f->s, merge_slice, &m), STORAGE_OK);
        slices += m.moved > 0;
        assert_true(slices < 1000); /* a merge that moves nothing forward */
        for (int i = 0; i < 30; i++) {
            snprintf(code, sizeof(code), "g%d", i);
            uint64_t want = (uint64_t)(i < 20) + (uint64_t)(i >= 5 && i < 25) + (uint64_t)(i >= 10);
            if (facet_sum(f->s, code, STORAGE_FACET_TOTAL, "") != want)
                fail_msg("%s: %llu clicks after %d slices, wanted %llu", code,
                         (unsigned long long)facet_sum(f->s, code, STORAGE_FACET_TOTAL, ""), slices,
                         (unsigned long long)want);
        }
    } while (m.moved > 0 || m.hour < m.before);
    assert_true(slices > 2);
    assert_int_equal(distinct_runs(f->s, h0), 1);
    assert_int_equal(facet_sum(f->s, "g12", STORAGE_FACET_COUNTRY, COUNTRIES[0]), 1);
    assert_int_equal(facet_sum(f->s, "g12", STORAGE_FACET_COUNTRY, COUNTRIES[1]), 1);
    assert_int_equal(facet_sum(f->s, "g12", STORAGE_FACET_COUNTRY, COUNTRIES[2]), 1);
    assert_int_equal(facet_sum(f->s, "g12", STORAGE_FACET_REFERRER, "direct"), 3);
    fixture_done(f);
}

/* The writer merges the runs of past hours in groups with few clicks. */
static void storage_writer_merges_past_runs(void **state)
{
    fixture_t *f = fixture_new();
    storage_engagement_t list[5 * RUN_LINKS];
    uint32_t h0 = (uint32_t)(T0 / HOUR_US);

    (void)state;
    f->opts.counter_run_links = RUN_LINKS;
    fixture_open(f);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 5 * RUN_LINKS; i++)
            list[i] = spread_click(i, 0);
        record_all(f->s, list, 5 * RUN_LINKS);
    }
    assert_true(distinct_runs(f->s, h0) >= 2);
    /* A click now and then: each group is light, and merges a slice. */
    assert_int_equal(storage_writer_start(f->s), STORAGE_OK);
    for (int i = 0; i < 4000 && distinct_runs(f->s, h0) > 1; i++) {
        storage_engagement_t e = spread_click(7, 5);
        assert_int_equal(storage_engagement_push(f->s, &e), STORAGE_OK);
        usleep(2000);
    }
    storage_writer_stop(f->s);
    assert_int_equal(distinct_runs(f->s, h0), 1);
    for (int i = 0; i < 5 * RUN_LINKS; i++) {
        storage_engagement_t e = spread_click(i, 0);
        assert_int_equal(total_clicks(f->s, e.code), 2);
    }
    fixture_done(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(storage_engagement_push_committed_with_link),
        cmocka_unit_test_setup_teardown(storage_engagement_push_records_link_as_served,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_engagement_push_packs_strings, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_engagement_push_long_url_as_served, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test(storage_writer_batch_only_when_nicer),
        cmocka_unit_test(storage_writer_spaces_groups),
        cmocka_unit_test_setup_teardown(storage_writer_waits_for_unpublished_slot, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_engagement_seq_continues_after_reopen,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_engagement_push_invalid, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_engagement_query_truncated, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_counter_scan_facets_skip_bots, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_counters_exact_per_value, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_counters_sealed_in_key_order, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_counters_written_before_memory_fills, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_counter_scan_minutes_and_hours, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test(storage_engagement_push_full_counts_drop),
        cmocka_unit_test_setup_teardown(storage_job_failure_discards_only_its_writes, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(storage_writer_stop_drains_queue, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test(storage_engagement_map_full_counts_loss),
        cmocka_unit_test(storage_counters_recounted_after_kill),
        cmocka_unit_test(storage_counters_exact_after_kill_mid_write),
        cmocka_unit_test(storage_counters_exact_after_kill_mid_run),
        cmocka_unit_test(storage_counters_spread_batch_written_as_run),
        cmocka_unit_test(storage_counters_minute_revisited_summed),
        cmocka_unit_test(storage_counters_runs_merged),
        cmocka_unit_test(storage_counters_runs_merged_in_one_slice),
        cmocka_unit_test(storage_writer_merges_past_runs),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
