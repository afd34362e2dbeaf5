/*
 * tests/bench/bench_writer: the storage writer alone. Producer threads push
 * engagements as fast as the queue takes them; the writer commits them in
 * fsync'd groups. Reports engagements committed per second.
 *
 *   bench_writer DATA_DIR [SECONDS [PRODUCERS [LINKS]]]
 *
 * DATA_DIR must not exist or be empty. The queue capacity (16384) and flush
 * interval (the default) are the server's.
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "storage.h"

static const char group[] = "Bbenchgroup";
static atomic_bool running = true;
static atomic_ulong pushed, full;
static uint64_t n_links = 1000;

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int insert_links(storage_txn_t *txn, void *arg)
{
    char code[BENCH_CODE_LEN + 1], url[128];

    for (uint64_t i = 0; i < n_links; i++) {
        bench_code(code, i);
        int n = snprintf(url, sizeof(url), "https://www.example.com/landing/%" PRIu64, i);
        storage_link_t l = {.code = {code, BENCH_CODE_LEN}, .long_url = {url, (size_t)n}};
        memcpy(l.group_guid, group, sizeof(group));
        int rc = storage_link_insert(txn, &l, true);
        if (rc != STORAGE_OK)
            return rc;
    }
    return STORAGE_OK;
}

static uint64_t next_random(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *producer(void *arg)
{
    storage_t *s = arg;
    static const char *const countries[] = {"US", "DE", "FR", "GB", "JP", "BR", "IN", ""};
    static const char *const referrers[] = {"direct", "direct", "t.co", "www.google.com"};
    uint64_t x = (uint64_t)(uintptr_t)&x | 1;
    unsigned long mine = 0, blocked = 0;

    while (atomic_load_explicit(&running, memory_order_relaxed)) {
        uint64_t r = next_random(&x);
        storage_engagement_t e = {.time_us = now_us(), .kind = STORAGE_KIND_CLICK};

        memcpy(e.event_id, &r, 8);
        memcpy(e.event_id + 8, &x, 8);
        e.device = (uint8_t)(r % 2 ? STORAGE_DEVICE_DESKTOP : STORAGE_DEVICE_MOBILE);
        strcpy(e.country, countries[(r >> 8) % 8]);
        strcpy(e.referrer, referrers[(r >> 16) % 4]);
        bench_code(e.code, (r >> 24) % n_links);
        while (storage_engagement_push(s, &e) == STORAGE_FULL) {
            /* The drop counter is storage's; this bench wants every push in,
             * so it waits for room and counts how often it had to. */
            blocked++;
            sched_yield();
            if (!atomic_load_explicit(&running, memory_order_relaxed))
                goto out;
        }
        mine++;
    }
out:
    atomic_fetch_add(&pushed, mine);
    atomic_fetch_add(&full, blocked);
    return NULL;
}

int main(int argc, char **argv)
{
    storage_t *s;
    storage_stats_t a, b;
    char err[512];

    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA_DIR [SECONDS [PRODUCERS [LINKS]]]\n", argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? strtod(argv[2], NULL) : 5;
    int nprod = argc > 3 ? atoi(argv[3]) : 1;
    if (argc > 4)
        n_links = strtoull(argv[4], NULL, 10);
    if (nprod < 1 || nprod > 64 || n_links == 0) {
        fprintf(stderr, "bench_writer: bad arguments\n");
        return 2;
    }

    storage_options_t o = {.dir = argv[1], .queue_capacity = 16384};
    if (storage_open(&s, &o, err, sizeof(err)) != STORAGE_OK) {
        fprintf(stderr, "bench_writer: %s\n", err);
        return 1;
    }
    if (storage_run(s, insert_links, NULL) != STORAGE_OK || storage_writer_start(s) != STORAGE_OK) {
        fprintf(stderr, "bench_writer: %s\n", storage_strerror());
        return 1;
    }

    pthread_t th[64];
    for (int i = 0; i < nprod; i++)
        pthread_create(&th[i], NULL, producer, s);
    /* One second of warm-up, then the measured window. */
    struct timespec warm = {1, 0};
    nanosleep(&warm, NULL);
    storage_get_stats(s, &a);
    int64_t t0 = now_us();
    struct timespec win = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&win, NULL);
    storage_get_stats(s, &b);
    int64_t t1 = now_us();
    atomic_store(&running, false);
    for (int i = 0; i < nprod; i++)
        pthread_join(th[i], NULL);
    storage_writer_stop(s);

    storage_stats_t c;
    storage_get_stats(s, &c);
    double secs = (double)(t1 - t0) / 1e6;
    uint64_t rec = b.engagements_recorded - a.engagements_recorded;
    uint64_t commits = b.commits - a.commits;
    printf("{\"seconds\":%.3f,\"producers\":%d,\"links\":%" PRIu64 ",\"committed\":%" PRIu64
           ",\"committed_per_s\":%.0f,\"commits_per_s\":%.1f,\"mean_batch\":%.1f,"
           "\"commit_ms_mean\":%.3f,\"pushed\":%lu,\"recorded\":%" PRIu64 ",\"dropped\":%" PRIu64
           ",\"waits_for_room\":%lu}\n",
           secs, nprod, n_links, rec, (double)rec / secs, (double)commits / secs,
           commits ? (double)rec / (double)commits : 0.0,
           commits ? (double)(b.commit_us_total - a.commit_us_total) / 1e3 / (double)commits : 0.0,
           atomic_load(&pushed), c.engagements_recorded, c.engagements_dropped, atomic_load(&full));
    storage_close(s);
    return c.engagements_recorded == atomic_load(&pushed) ? 0 : 1;
}
