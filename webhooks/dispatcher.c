/*
 * webhooks/dispatcher.c: the dispatcher thread (DESIGN.md §2, §6). It turns
 * committed engagements into deliveries (fan-out), sends the due ones with a
 * libcurl multi handle, and hands every outcome back to the storage writer.
 *
 * At least once: a delivery is written to LMDB, together with the fan-out
 * cursor, before it is ever attempted, and an attempt's outcome replaces it in
 * one job. A crash anywhere leaves either the old delivery (sent again) or the
 * new one, never neither.
 *
 * Threads: everything here runs on the dispatcher thread except
 * webhook_dispatcher_wake (any thread) and on_job_done (the writer thread);
 * those two only touch atomics, the finished list under its mutex, and
 * curl_multi_wakeup.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "webhooks_internal.h"

#define CURSOR_KEY        "dispatch_cursor"
#define FANOUT_BATCH      1000
#define RESPONSE_KEEP     512
#define ERROR_KEEP        255
#define HOST_MAX          256
#define POLL_MAX_MS       1000
#define RETRY_AFTER_MAX_S 3600
/* A webhook failing this long without one success is deactivated (§6),
 * unless the operator chose another limit. */
#define FAILING_LIMIT_HOURS 120
/* A send pass that took longer than this delays the next pass a completion
 * asks for, so a huge backlog held back by full endpoints costs a bounded
 * share of the thread rather than one full walk per finished request. */
#define PASS_SLOW_US       5000
#define PASS_GAP_MAX_US    250000
#define COUNT_EVERY_US     1000000
#define TOKEN_RESPONSE_MAX 16384
#define TOKEN_MAX          8192
/* A cached token is dropped this long before it expires, so it does not run
 * out between the check and the receiver reading it. */
#define TOKEN_EARLY_S 30

/* With no webhook stored, commits do not wake the thread: the engagements
 * they add are fanned out (the cursor moved past them) at most this often. */
#define HOOKLESS_FANOUT_US 250000

static const uint32_t default_delays[] = {5, 300, 1800, 7200, 18000, 36000, 36000};

const uint32_t webhook_latency_bounds_ms[WEBHOOK_LATENCY_BUCKETS - 1] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

typedef struct transfer transfer_t;
typedef struct job job_t;

typedef struct busy_slot {
    uint64_t id; /* 0: empty (delivery ids start at 1) */
    uint32_t count;
} busy_slot_t;

/* An OAuth access token cached per webhook. Fetched once at a time; while a
 * fetch runs, that webhook's deliveries wait. */
typedef struct token {
    char guid[STORAGE_GUID_LEN + 1];
    char *source;       /* oauth_url and client_id: when they change, so must the token */
    char *access_token; /* NULL: none cached */
    int64_t expires_us;
    bool fetching;
    char error[ERROR_KEEP + 1]; /* the last fetch failed: reported once to each due delivery */
} token_t;

typedef struct endpoint {
    char host[HOST_MAX];
    unsigned in_flight;
} endpoint_t;

/* One webhook as a send pass sees it. A record that does not decode is kept
 * as "broken": its deliveries wait rather than being dropped. */
typedef struct hook {
    webhook_t w;
    bool broken;
    char host[HOST_MAX];
} hook_t;

struct webhook_dispatcher {
    webhook_dispatcher_options_t opts;
    uint32_t *delays;
    size_t n_delays;
    geoip_cidr_t *allow;
    char *public_url;
    char *domain;

    storage_reader_t *reader;
    CURLM *multi;
    pthread_t thread;
    atomic_bool stopping;
    atomic_bool fanout_wanted;
    atomic_bool poke_wanted;
    atomic_bool hookless;     /* the last fan-out found no webhook stored */
    atomic_bool fanout_later; /* commits came while hookless */
    int64_t next_fanout_us;   /* dispatcher thread: the next deferred fan-out */
    int64_t failing_limit_us;

    /* Counters for webhook_dispatcher_stats, written here, read anywhere. */
    atomic_ulong st_delivered, st_retried, st_failed;
    atomic_ulong st_latency[WEBHOOK_LATENCY_BUCKETS];
    atomic_ulong st_latency_sum_ms;
    atomic_ulong st_pending, st_given_up;
    atomic_ulong st_in_flight;
    atomic_ulong st_token_fetches;

    /* Start-up handshake: the reader is opened on the dispatcher thread, as
     * LMDB read transactions belong to the thread that made them. */
    pthread_mutex_t lock;
    pthread_cond_t started_cond;
    int started; /* 0 waiting, 1 running, -1 failed */
    char start_error[256];
    job_t *finished; /* under lock: jobs the writer has made durable */

    /* Dispatcher thread only from here on. */
    transfer_t *transfers;
    unsigned n_transfers;
    unsigned jobs_pending;
    /* Delivery ids with a transfer or a job under way: an open-addressing
     * table, as every row of a send pass asks it. */
    busy_slot_t *busy;
    size_t n_busy, cap_busy; /* cap_busy: 0 or a power of two */
    endpoint_t *endpoints;
    size_t n_endpoints, cap_endpoints;
    hook_t *hooks;
    size_t n_hooks, cap_hooks;
    token_t **tokens;
    size_t n_tokens, cap_tokens;
    uint64_t rng;
    bool rescan;
    int64_t next_pass_us;
    int64_t pass_not_before_us; /* a rescan waits for this (slow passes) */
    int64_t last_count_us;
    int64_t stop_deadline_us;
};

struct transfer {
    webhook_dispatcher_t *d;
    transfer_t *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    storage_delivery_t delivery;
    char host[HOST_MAX];
    int64_t start_us;
    char response[RESPONSE_KEEP];
    size_t response_len;
    char curl_error[CURL_ERROR_SIZE];
    char blocked[ERROR_KEEP + 1];
    token_t *token;   /* set on a token fetch, which is not a delivery */
    char *token_body; /* a token fetch's response, up to TOKEN_RESPONSE_MAX */
    size_t token_body_len;
    bool with_token; /* a delivery sent with a Bearer token */
};

typedef enum hook_update {
    HOOK_KEEP = 0,
    HOOK_SUCCESS,    /* last_success_us = now, failing_since_us = 0 */
    HOOK_FAILURE,    /* failing_since_us = now unless already set */
    HOOK_DEACTIVATE, /* is_active = false, with reason */
} hook_update_t;

/* One write for the storage writer: replace (or delete) a delivery, log the
 * attempt, and update the webhook's record. */
struct job {
    webhook_dispatcher_t *d;
    job_t *next;
    storage_delivery_t old;
    bool keep; /* put next_delivery after deleting old */
    storage_delivery_t next_delivery;
    bool log_attempt;
    storage_attempt_t attempt;
    char error[ERROR_KEEP + 1];
    char response[RESPONSE_KEEP];
    hook_update_t update;
    char reason[ERROR_KEEP + 1];
    int64_t now_us;
    int rc;
};

#define LOG(d, level, ...)                                                                         \
    do {                                                                                           \
        if ((d)->opts.log != NULL)                                                                 \
            (d)->opts.log((level), __VA_ARGS__);                                                   \
    } while (0)

/* ---- small sets kept by the dispatcher thread ---- */

static size_t busy_hash(uint64_t id, size_t mask)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ULL) >> 17) & mask;
}

/* The slot holding id, or the empty slot where it would go. */
static busy_slot_t *busy_find(const webhook_dispatcher_t *d, uint64_t id)
{
    size_t mask = d->cap_busy - 1;

    for (size_t i = busy_hash(id, mask);; i = (i + 1) & mask) {
        if (d->busy[i].id == id || d->busy[i].id == 0)
            return &d->busy[i];
    }
}

static bool busy_has(const webhook_dispatcher_t *d, uint64_t id)
{
    return id != 0 && d->cap_busy > 0 && busy_find(d, id)->id == id;
}

static void busy_grow(webhook_dispatcher_t *d)
{
    busy_slot_t *old = d->busy;
    size_t old_cap = d->cap_busy;

    d->cap_busy = old_cap ? old_cap * 2 : 256;
    d->busy = webhook__calloc(d->cap_busy, sizeof *d->busy);
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].id != 0)
            *busy_find(d, old[i].id) = old[i];
    }
    free(old);
}

/* Counted, so that an id added twice stays busy until removed twice. */
static void busy_add(webhook_dispatcher_t *d, uint64_t id)
{
    if (id == 0)
        return;
    /* At most half full keeps probes short. */
    if ((d->n_busy + 1) * 2 > d->cap_busy)
        busy_grow(d);
    busy_slot_t *slot = busy_find(d, id);
    if (slot->id == 0) {
        slot->id = id;
        slot->count = 0;
        d->n_busy++;
    }
    slot->count++;
}

static void busy_remove(webhook_dispatcher_t *d, uint64_t id)
{
    if (!busy_has(d, id))
        return;
    busy_slot_t *slot = busy_find(d, id);
    if (--slot->count > 0)
        return;
    d->n_busy--;
    /* Backward-shift deletion: later entries of the same probe run move up,
     * so a lookup never stops early at the hole. */
    size_t mask = d->cap_busy - 1;
    size_t hole = (size_t)(slot - d->busy);
    for (size_t i = (hole + 1) & mask; d->busy[i].id != 0; i = (i + 1) & mask) {
        size_t home = busy_hash(d->busy[i].id, mask);
        /* Stays when its home lies cyclically in (hole, i]. */
        if ((i > hole && home > hole && home <= i) || (i < hole && (home > hole || home <= i)))
            continue;
        d->busy[hole] = d->busy[i];
        hole = i;
    }
    d->busy[hole].id = 0;
    d->busy[hole].count = 0;
}

static unsigned endpoint_in_flight(const webhook_dispatcher_t *d, const char *host)
{
    for (size_t i = 0; i < d->n_endpoints; i++) {
        if (strcmp(d->endpoints[i].host, host) == 0)
            return d->endpoints[i].in_flight;
    }
    return 0;
}

static endpoint_t *endpoint_get(webhook_dispatcher_t *d, const char *host)
{
    for (size_t i = 0; i < d->n_endpoints; i++) {
        if (strcmp(d->endpoints[i].host, host) == 0)
            return &d->endpoints[i];
    }
    if (d->n_endpoints == d->cap_endpoints) {
        d->cap_endpoints = d->cap_endpoints ? d->cap_endpoints * 2 : 16;
        d->endpoints = webhook__realloc(d->endpoints, d->cap_endpoints * sizeof *d->endpoints);
    }
    endpoint_t *ep = &d->endpoints[d->n_endpoints++];
    snprintf(ep->host, sizeof ep->host, "%s", host);
    ep->in_flight = 0;
    return ep;
}

/* Endpoints with nothing in flight are forgotten, so the table stays as
 * small as the set of hosts currently being talked to. */
static void endpoint_release(webhook_dispatcher_t *d, const char *host)
{
    for (size_t i = 0; i < d->n_endpoints; i++) {
        endpoint_t *ep = &d->endpoints[i];
        if (strcmp(ep->host, host) != 0)
            continue;
        if (ep->in_flight > 0)
            ep->in_flight--;
        if (ep->in_flight == 0)
            *ep = d->endpoints[--d->n_endpoints];
        return;
    }
}

/* xorshift64*: jitter needs spread, not secrecy. */
static uint64_t next_random(webhook_dispatcher_t *d)
{
    uint64_t x = d->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    d->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- webhooks as stored ---- */

static void hooks_clear(webhook_dispatcher_t *d)
{
    for (size_t i = 0; i < d->n_hooks; i++)
        webhook_clear(&d->hooks[i].w);
    d->n_hooks = 0;
}

static int on_hook_record(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    webhook_dispatcher_t *d = ctx;
    hook_t *h;

    if (d->n_hooks == d->cap_hooks) {
        d->cap_hooks = d->cap_hooks ? d->cap_hooks * 2 : 16;
        d->hooks = webhook__realloc(d->hooks, d->cap_hooks * sizeof *d->hooks);
    }
    h = &d->hooks[d->n_hooks++];
    memset(h, 0, sizeof *h);
    if (webhook_decode(&h->w, val.ptr, val.len, NULL, 0) != 0) {
        /* Keep its key so its deliveries are recognised and left waiting. */
        h->broken = true;
        size_t n = key.len < STORAGE_GUID_LEN ? key.len : STORAGE_GUID_LEN;
        memcpy(h->w.guid, key.ptr, n);
        h->w.guid[n] = '\0';
        return 0;
    }
    if (h->w.url == NULL || !webhook__url_host(h->w.url, h->host, sizeof h->host))
        h->host[0] = '\0';
    return 0;
}

static int hooks_load(webhook_dispatcher_t *d, storage_txn_t *txn)
{
    hooks_clear(d);
    return storage_record_scan(txn, STORAGE_DB_WEBHOOKS, on_hook_record, d);
}

static hook_t *hooks_find(webhook_dispatcher_t *d, const char *guid)
{
    for (size_t i = 0; i < d->n_hooks; i++) {
        if (strcmp(d->hooks[i].w.guid, guid) == 0)
            return &d->hooks[i];
    }
    return NULL;
}

/* ---- jobs: outcomes written by the storage writer ---- */

static void set_int(json_t *obj, const char *name, int64_t v)
{
    json_object_set_new(obj, name, json_integer((json_int_t)v));
}

/* Changes only the fields the dispatcher owns, on the stored JSON itself, so
 * fields this layer does not know about survive. */
static int update_hook(storage_txn_t *txn, const job_t *j)
{
    const char *guid = j->old.webhook_guid;
    storage_bytes_t val;
    json_t *root = NULL;
    char *text = NULL;
    int rc;

    rc = storage_record_get(txn, STORAGE_DB_WEBHOOKS, guid, strlen(guid), &val);
    if (rc == STORAGE_NOTFOUND) {
        rc = STORAGE_OK; /* deleted meanwhile: nothing to update */
        goto out;
    }
    if (rc != STORAGE_OK)
        goto out;
    root = json_loadb(val.ptr, val.len, 0, NULL);
    if (!json_is_object(root)) {
        rc = STORAGE_OK; /* not ours to repair; the attempt is still logged */
        goto out;
    }

    json_t *since = json_object_get(root, "failing_since_us");
    int64_t failing_since = json_is_integer(since) ? (int64_t)json_integer_value(since) : 0;
    switch (j->update) {
    case HOOK_SUCCESS:
        set_int(root, "last_success_us", j->now_us);
        set_int(root, "failing_since_us", 0);
        break;
    case HOOK_FAILURE:
        if (failing_since == 0) {
            set_int(root, "failing_since_us", j->now_us);
            break;
        }
        if (j->now_us - failing_since < j->d->failing_limit_us)
            goto out;
        char reason[128];
        snprintf(reason, sizeof reason,
                 "deliveries failed for %" PRId64 " hours without one success",
                 j->d->failing_limit_us / 3600000000);
        json_object_set_new(root, "is_active", json_false());
        json_object_set_new(root, "deactivated_reason", json_string(reason));
        break;
    case HOOK_DEACTIVATE:
        json_object_set_new(root, "is_active", json_false());
        json_object_set_new(root, "deactivated_reason", json_string(j->reason));
        break;
    default:
        goto out;
    }

    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL)
        abort();
    rc = storage_record_put(txn, STORAGE_DB_WEBHOOKS, guid, strlen(guid), text, strlen(text), 0);

out:
    free(text);
    json_decref(root);
    return rc;
}

static int run_outcome(storage_txn_t *txn, void *arg)
{
    job_t *j = arg;
    int rc;

    rc = storage_delivery_del(txn, j->old.due_us, j->old.id);
    if (rc != STORAGE_OK && rc != STORAGE_NOTFOUND)
        return rc;
    /* When the delivery is gone (deleted by hand or with its webhook while
     * the attempt ran), it is not brought back; the attempt is still logged. */
    if (j->keep && rc == STORAGE_OK) {
        rc = storage_delivery_put(txn, &j->next_delivery);
        if (rc != STORAGE_OK)
            return rc;
    }
    if (j->log_attempt) {
        rc = storage_attempt_append(txn, &j->attempt);
        if (rc != STORAGE_OK)
            return rc;
    }
    if (j->update != HOOK_KEEP)
        return update_hook(txn, j);
    return STORAGE_OK;
}

/* Writer thread: hand the job back and wake the dispatcher. */
static void on_job_done(void *arg, int rc)
{
    job_t *j = arg;
    webhook_dispatcher_t *d = j->d;

    j->rc = rc;
    pthread_mutex_lock(&d->lock);
    j->next = d->finished;
    d->finished = j;
    pthread_mutex_unlock(&d->lock);
    curl_multi_wakeup(d->multi);
}

static job_t *job_new(webhook_dispatcher_t *d, const storage_delivery_t *old, int64_t now_us)
{
    job_t *j = webhook__calloc(1, sizeof *j);

    j->d = d;
    j->old = *old;
    j->now_us = now_us;
    return j;
}

/* Queues the job; the delivery stays busy until the job is durable, so a send
 * pass never reads the old row while its replacement is on the way. */
static void job_submit(webhook_dispatcher_t *d, job_t *j)
{
    busy_add(d, j->old.id);
    if (storage_submit(d->opts.storage, run_outcome, on_job_done, j) != STORAGE_OK) {
        /* The delivery keeps its old row and is attempted again later, which
         * is what at-least-once asks for. */
        LOG(d, WEBHOOK_LOG_WARN,
            "webhook %s delivery %" PRIu64 ": could not queue its outcome for storage: %s",
            j->old.webhook_guid, j->old.id, storage_strerror());
        busy_remove(d, j->old.id);
        free(j);
        return;
    }
    d->jobs_pending++;
}

static void collect_finished(webhook_dispatcher_t *d)
{
    job_t *list;

    pthread_mutex_lock(&d->lock);
    list = d->finished;
    d->finished = NULL;
    pthread_mutex_unlock(&d->lock);

    while (list != NULL) {
        job_t *j = list;
        list = j->next;
        if (j->rc != STORAGE_OK)
            LOG(d, WEBHOOK_LOG_WARN,
                "webhook %s delivery %" PRIu64
                ": its outcome was not stored (code %d); it will be attempted again",
                j->old.webhook_guid, j->old.id, j->rc);
        busy_remove(d, j->old.id);
        d->jobs_pending--;
        d->rescan = true;
        free(j);
    }
}

/* ---- outcomes ---- */

/* The delay before retry n (1-based), with ±10% jitter so that deliveries
 * failing together do not all come back in the same instant. A Retry-After
 * on 429 and 503 is honoured between the scheduled delay and an hour. */
static int64_t retry_delay_us(webhook_dispatcher_t *d, uint32_t n, long status,
                              int64_t retry_after_s)
{
    int64_t base = (int64_t)d->delays[n - 1] * 1000000;

    if ((status == 429 || status == 503) && retry_after_s > 0) {
        int64_t ra = retry_after_s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : retry_after_s;
        if (ra * 1000000 > base)
            return ra * 1000000;
        return base;
    }
    int64_t spread = base / 10;
    if (spread <= 0)
        return base;
    int64_t offset = (int64_t)(next_random(d) % (uint64_t)(2 * spread + 1)) - spread;
    return base + offset;
}

typedef struct attempt_result {
    long status;          /* HTTP status, 0 for none */
    const char *error;    /* NULL on a 2xx */
    const char *response; /* first bytes of the body */
    size_t response_len;
    int64_t retry_after_s; /* 0 when absent */
    int64_t start_us;
} attempt_result_t;

/* Counts an attempt by outcome and, when it got an answer, its round trip
 * (duration_ms UINT32_MAX: no answer, so no latency to count). */
static void count_attempt(webhook_dispatcher_t *d, uint8_t outcome, uint32_t duration_ms)
{
    if (outcome == STORAGE_OUTCOME_DELIVERED)
        atomic_fetch_add(&d->st_delivered, 1);
    else if (outcome == STORAGE_OUTCOME_RETRY)
        atomic_fetch_add(&d->st_retried, 1);
    else
        atomic_fetch_add(&d->st_failed, 1);
    if (duration_ms == UINT32_MAX)
        return;
    size_t b = 0;
    while (b < WEBHOOK_LATENCY_BUCKETS - 1 && duration_ms > webhook_latency_bounds_ms[b])
        b++;
    atomic_fetch_add(&d->st_latency[b], 1);
    atomic_fetch_add(&d->st_latency_sum_ms, duration_ms);
}

/* Decides what an attempt means for its delivery and queues the write. */
static void finish_attempt(webhook_dispatcher_t *d, const storage_delivery_t *dl,
                           const attempt_result_t *r)
{
    int64_t now = webhook__now_us();
    job_t *j = job_new(d, dl, now);
    uint32_t n = dl->attempts + 1;
    uint32_t duration_ms = (uint32_t)((now - r->start_us) / 1000);
    bool ok = r->error == NULL && r->status >= 200 && r->status < 300;
    bool test = dl->engagement_seq == WEBHOOK_TEST_SEQ;
    int64_t delay_us = 0;

    j->log_attempt = true;
    snprintf(j->attempt.webhook_guid, sizeof j->attempt.webhook_guid, "%s", dl->webhook_guid);
    j->attempt.time_us = r->start_us;
    j->attempt.delivery_id = dl->id;
    j->attempt.engagement_seq = dl->engagement_seq;
    j->attempt.attempt = n;
    j->attempt.http_status = (int32_t)r->status;
    j->attempt.duration_ms = duration_ms;
    if (r->error != NULL)
        snprintf(j->error, sizeof j->error, "%s", r->error);
    j->attempt.error.ptr = j->error;
    j->attempt.error.len = strlen(j->error);
    size_t rlen = r->response_len < sizeof j->response ? r->response_len : sizeof j->response;
    if (rlen > 0)
        memcpy(j->response, r->response, rlen);
    j->attempt.response.ptr = j->response;
    j->attempt.response.len = rlen;

    j->next_delivery = *dl;
    j->next_delivery.attempts = n;
    j->next_delivery.last_status = (int32_t)r->status;
    if (test) {
        /* A test event is one attempt whose outcome is read from the log;
         * it says nothing about how the webhook's real deliveries fare. */
        j->attempt.outcome = ok ? STORAGE_OUTCOME_DELIVERED : STORAGE_OUTCOME_FAILED;
    } else if (ok) {
        j->attempt.outcome = STORAGE_OUTCOME_DELIVERED;
        j->update = HOOK_SUCCESS;
    } else if (r->status == 410) {
        /* Gone: the receiver asks us to stop, so the webhook is switched off
         * and this delivery kept as failed, to be resent by hand. */
        j->attempt.outcome = STORAGE_OUTCOME_FAILED;
        j->keep = true;
        j->next_delivery.due_us = STORAGE_DUE_FAILED;
        j->update = HOOK_DEACTIVATE;
        snprintf(j->reason, sizeof j->reason, "the endpoint answered 410 Gone");
    } else if (n <= d->n_delays) {
        delay_us = retry_delay_us(d, n, r->status, r->retry_after_s);
        j->attempt.outcome = STORAGE_OUTCOME_RETRY;
        j->keep = true;
        j->next_delivery.due_us = (uint64_t)(now + delay_us);
        j->update = HOOK_FAILURE;
    } else {
        j->attempt.outcome = STORAGE_OUTCOME_FAILED;
        j->keep = true;
        j->next_delivery.due_us = STORAGE_DUE_FAILED;
        j->update = HOOK_FAILURE;
    }

    count_attempt(d, j->attempt.outcome, r->status > 0 || ok ? duration_ms : UINT32_MAX);

    char got[32];
    if (r->status > 0)
        snprintf(got, sizeof got, "HTTP %ld", r->status);
    else
        snprintf(got, sizeof got, "no response");
    if (ok)
        LOG(d, WEBHOOK_LOG_INFO,
            "webhook %s delivery %" PRIu64 " attempt %" PRIu32 ": %s in %" PRIu32 " ms, delivered",
            dl->webhook_guid, dl->id, n, got, duration_ms);
    else if (j->attempt.outcome == STORAGE_OUTCOME_RETRY)
        LOG(d, WEBHOOK_LOG_WARN,
            "webhook %s delivery %" PRIu64 " attempt %" PRIu32 ": %s in %" PRIu32
            " ms, %s; next attempt in %" PRId64 " s",
            dl->webhook_guid, dl->id, n, got, duration_ms, j->error, (delay_us + 500000) / 1000000);
    else
        LOG(d, WEBHOOK_LOG_WARN,
            "webhook %s delivery %" PRIu64 " attempt %" PRIu32 ": %s in %" PRIu32
            " ms, %s; delivery marked failed%s",
            dl->webhook_guid, dl->id, n, got, duration_ms, j->error,
            j->update == HOOK_DEACTIVATE ? " and the webhook deactivated" : ", no attempt left");
    job_submit(d, j);
}

/* A pending delivery whose webhook is gone or switched off is removed
 * without an attempt. */
static void drop_delivery(webhook_dispatcher_t *d, const storage_delivery_t *dl, const char *why)
{
    job_t *j = job_new(d, dl, webhook__now_us());

    LOG(d, WEBHOOK_LOG_INFO, "webhook %s delivery %" PRIu64 ": dropped, %s", dl->webhook_guid,
        dl->id, why);
    job_submit(d, j);
}

/* A pending delivery of a webhook that was switched off is not attempted but
 * kept as failed, with a line in its log, so that a recovery after the
 * webhook is switched on again can send it. */
static void park_delivery(webhook_dispatcher_t *d, const storage_delivery_t *dl)
{
    job_t *j = job_new(d, dl, webhook__now_us());

    j->keep = true;
    j->next_delivery = *dl;
    j->next_delivery.due_us = STORAGE_DUE_FAILED;
    j->log_attempt = true;
    snprintf(j->attempt.webhook_guid, sizeof j->attempt.webhook_guid, "%s", dl->webhook_guid);
    j->attempt.time_us = j->now_us;
    j->attempt.delivery_id = dl->id;
    j->attempt.engagement_seq = dl->engagement_seq;
    j->attempt.attempt = dl->attempts;
    j->attempt.outcome = STORAGE_OUTCOME_FAILED;
    snprintf(j->error, sizeof j->error, "not sent: the webhook is not active");
    j->attempt.error.ptr = j->error;
    j->attempt.error.len = strlen(j->error);
    j->attempt.response.ptr = j->response;
    atomic_fetch_add(&d->st_failed, 1);
    LOG(d, WEBHOOK_LOG_INFO, "webhook %s delivery %" PRIu64 ": marked failed unsent, %s",
        dl->webhook_guid, dl->id, "its webhook is not active");
    job_submit(d, j);
}

/* ---- transfers ---- */

static size_t on_response_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    transfer_t *t = userdata;
    size_t n = size * nmemb;

    if (t->token != NULL) {
        size_t room = TOKEN_RESPONSE_MAX - t->token_body_len;
        size_t take = n < room ? n : room;
        memcpy(t->token_body + t->token_body_len, ptr, take);
        t->token_body_len += take;
        return n;
    }
    size_t room = sizeof t->response - t->response_len;
    size_t take = n < room ? n : room;

    memcpy(t->response + t->response_len, ptr, take);
    t->response_len += take;
    /* The rest is read and discarded: stopping early would turn a 2xx with a
     * long body into a transfer error. */
    return n;
}

/* Every address curl is about to connect to passes through here, after DNS,
 * so a name that resolves (or re-resolves) to a private range is refused. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *address)
{
    transfer_t *t = clientp;
    webhook_net_policy_t policy = t->d->opts.policy;

    if (!webhook__addr_allowed(&address->addr, &policy, t->blocked, sizeof t->blocked))
        return CURL_SOCKET_BAD;
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static void transfer_free(transfer_t *t)
{
    if (t == NULL)
        return;
    if (t->easy != NULL)
        curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    free(t->body);
    if (t->token_body != NULL)
        OPENSSL_cleanse(t->token_body, TOKEN_RESPONSE_MAX + 1);
    free(t->token_body);
    free(t);
}

static void transfer_unlink(webhook_dispatcher_t *d, transfer_t *t)
{
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        d->transfers = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    curl_multi_remove_handle(d->multi, t->easy);
    endpoint_release(d, t->host);
    d->n_transfers--;
    atomic_store(&d->st_in_flight, d->n_transfers);
}

static struct curl_slist *add_header(struct curl_slist *list, const char *name, const char *value)
{
    char line[512];
    struct curl_slist *next;

    snprintf(line, sizeof line, "%s: %s", name, value);
    next = curl_slist_append(list, line);
    if (next == NULL)
        abort(); /* curl_slist_append fails only on allocation */
    return next;
}

/* A header holding a credential: any length, and wiped once curl has its
 * own copy. */
static struct curl_slist *add_secret_header(struct curl_slist *list, const char *prefix,
                                            const char *value)
{
    size_t plen = strlen(prefix), vlen = strlen(value);
    char *line = webhook__malloc(plen + vlen + 1);
    struct curl_slist *next;

    memcpy(line, prefix, plen);
    memcpy(line + plen, value, vlen + 1);
    next = curl_slist_append(list, line);
    OPENSSL_cleanse(line, plen + vlen);
    free(line);
    if (next == NULL)
        abort();
    return next;
}

/* The signature header: one token per secret in use, the previous one only
 * until its rotation grace period ends. */
static int sign_all(const webhook_t *w, const char *msg_id, int64_t ts, const char *body,
                    size_t body_len, int64_t now_us, char *out, size_t outlen)
{
    char sig[WEBHOOK_SIGNATURE_MAX];

    if (w->signing_secret == NULL ||
        webhook_sign(w->signing_secret, msg_id, ts, body, body_len, sig, sizeof sig) != 0)
        return -1;
    snprintf(out, outlen, "%s", sig);
    if (w->previous_secret != NULL && w->previous_expires_us > now_us &&
        webhook_sign(w->previous_secret, msg_id, ts, body, body_len, sig, sizeof sig) == 0) {
        size_t used = strlen(out);
        snprintf(out + used, outlen - used, " %s", sig);
    }
    return 0;
}

static void set_easy_options(webhook_dispatcher_t *d, transfer_t *t, const char *url)
{
    CURL *e = t->easy;

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    /* A redirect is an answer, not an instruction: following it would let a
     * receiver point us at an address the checks never saw. */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* No proxy from the environment: the socket check must see the real
     * destination, not a proxy that would connect anywhere for us. */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, d->opts.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, d->opts.total_timeout_ms);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_response_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->curl_error);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(t->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
}

/* Builds and starts one attempt. Problems found before sending (no secret, a
 * URL the rules refuse) count as failed attempts, retried like any other. */
static void start_attempt(webhook_dispatcher_t *d, storage_txn_t *txn, const storage_delivery_t *dl,
                          const hook_t *h, const char *bearer)
{
    const webhook_t *w = &h->w;
    storage_engagement_t e;
    storage_link_t link;
    attempt_result_t fail = {.start_us = webhook__now_us()};
    char err[ERROR_KEEP + 1];
    char msg_id[37];
    char test_id[32];
    char ts[24];
    char sig[2 * WEBHOOK_SIGNATURE_MAX + 2];
    const char *tags = NULL;
    size_t tags_len = 0;
    transfer_t *t = NULL;
    int rc;

    if (dl->engagement_seq == WEBHOOK_TEST_SEQ) {
        memset(&e, 0, sizeof e);
        rc = STORAGE_OK;
    } else {
        rc = storage_engagement_get(txn, dl->engagement_seq, &e);
    }
    if (rc == STORAGE_NOTFOUND) {
        /* Past retention: there is nothing left to send, ever. */
        job_t *j = job_new(d, dl, fail.start_us);
        LOG(d, WEBHOOK_LOG_WARN,
            "webhook %s delivery %" PRIu64 ": engagement %" PRIu64
            " is no longer stored; delivery dropped",
            dl->webhook_guid, dl->id, dl->engagement_seq);
        job_submit(d, j);
        goto out;
    }
    if (rc != STORAGE_OK) {
        LOG(d, WEBHOOK_LOG_WARN, "webhook %s delivery %" PRIu64 ": reading engagement: %s",
            dl->webhook_guid, dl->id, storage_strerror());
        goto out;
    }
    if (webhook_url_check(w->url, &d->opts.policy, err, sizeof err) != 0) {
        fail.error = err;
        finish_attempt(d, dl, &fail);
        goto out;
    }
    /* TODO: tags are read from the link at each attempt, so editing a link's
     * tags (or the webhook's fetch_tags, or the public URL) between attempts
     * changes the body of a retry; storing the body at fan-out would not. */
    if (dl->engagement_seq != WEBHOOK_TEST_SEQ && w->fetch_tags &&
        storage_link_get(txn, e.code, strlen(e.code), &link) == STORAGE_OK) {
        tags = link.tags.ptr;
        tags_len = link.tags.len;
    }

    t = webhook__calloc(1, sizeof *t);
    t->d = d;
    t->delivery = *dl;
    snprintf(t->host, sizeof t->host, "%s", h->host);
    /* The id is the event's, so a receiver deduplicates across attempts; the
     * timestamp is this attempt's, so a late retry still passes a receiver's
     * freshness window. */
    if (dl->engagement_seq == WEBHOOK_TEST_SEQ) {
        webhook_test_msg_id(dl->id, test_id);
        snprintf(msg_id, sizeof msg_id, "%s", test_id);
        t->body = webhook_test_payload(w, msg_id, fail.start_us);
    } else {
        webhook_uuid_format(e.event_id, msg_id);
        t->body = webhook_payload(&(webhook_payload_ctx_t){d->public_url, d->domain}, w, &e, tags,
                                  tags_len);
    }
    int64_t now_s = fail.start_us / 1000000;
    snprintf(ts, sizeof ts, "%" PRId64, now_s);
    if (sign_all(w, msg_id, now_s, t->body, strlen(t->body), fail.start_us, sig, sizeof sig) != 0) {
        fail.error = "the webhook has no valid signing secret";
        finish_attempt(d, dl, &fail);
        goto out;
    }

    t->headers = add_header(t->headers, "content-type", "application/json");
    t->headers = add_header(t->headers, "user-agent", "shortlinkd/0.1");
    t->headers = add_header(t->headers, "webhook-id", msg_id);
    t->headers = add_header(t->headers, "webhook-timestamp", ts);
    t->headers = add_header(t->headers, "webhook-signature", sig);
    if (bearer != NULL) {
        t->headers = add_secret_header(t->headers, "authorization: Bearer ", bearer);
        t->with_token = true;
    }
    /* No 100-continue round trip for bodies over 1 KiB. */
    t->headers = curl_slist_append(t->headers, "Expect:");
    if (t->headers == NULL)
        abort();

    t->easy = curl_easy_init();
    if (t->easy == NULL)
        abort();
    set_easy_options(d, t, w->url);
    t->start_us = fail.start_us;
    if (curl_multi_add_handle(d->multi, t->easy) != CURLM_OK) {
        fail.error = "could not start the transfer";
        finish_attempt(d, dl, &fail);
        goto out;
    }

    t->next = d->transfers;
    if (d->transfers != NULL)
        d->transfers->prev = t;
    d->transfers = t;
    d->n_transfers++;
    atomic_store(&d->st_in_flight, d->n_transfers);
    endpoint_get(d, t->host)->in_flight++;
    busy_add(d, dl->id);
    LOG(d, WEBHOOK_LOG_DEBUG, "webhook %s delivery %" PRIu64 " attempt %" PRIu32 ": sending",
        dl->webhook_guid, dl->id, dl->attempts + 1);
    t = NULL; /* owned by the transfer list now */

out:
    transfer_free(t);
}

/* Sorts out a finished transfer: frees it and queues its outcome. */
static void complete_token_fetch(webhook_dispatcher_t *d, transfer_t *t, CURLcode result);
static void token_forget(webhook_dispatcher_t *d, const char *guid);

static void complete_transfer(webhook_dispatcher_t *d, transfer_t *t, CURLcode result)
{
    attempt_result_t r = {.start_us = t->start_us};
    char error[ERROR_KEEP + 1];
    long status = 0;
    curl_off_t retry_after = 0;

    if (t->token != NULL) {
        complete_token_fetch(d, t, result);
        transfer_unlink(d, t);
        transfer_free(t);
        d->rescan = true;
        return;
    }
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after);
    /* The receiver refused our token: the next attempt fetches a new one. */
    if (status == 401 && t->with_token)
        token_forget(d, t->delivery.webhook_guid);
    r.status = status;
    r.retry_after_s = (int64_t)retry_after;
    r.response = t->response;
    r.response_len = t->response_len;

    if (t->blocked[0] != '\0')
        snprintf(error, sizeof error, "%s", t->blocked);
    else if (result != CURLE_OK)
        snprintf(error, sizeof error, "%s",
                 t->curl_error[0] ? t->curl_error : curl_easy_strerror(result));
    else if (status >= 300 && status < 400)
        snprintf(error, sizeof error,
                 "the endpoint answered a redirect (%ld), which is not followed", status);
    else if (status < 200 || status >= 300)
        snprintf(error, sizeof error, "the endpoint answered HTTP %ld", status);
    r.error = (result == CURLE_OK && t->blocked[0] == '\0' && status >= 200 && status < 300)
                  ? NULL
                  : error;

    transfer_unlink(d, t);
    busy_remove(d, t->delivery.id); /* finish_attempt marks it again for its job */
    finish_attempt(d, &t->delivery, &r);
    transfer_free(t);
    d->rescan = true;
}

static void read_multi_messages(webhook_dispatcher_t *d)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(d->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        complete_transfer(d, (transfer_t *)priv, msg->data.result);
    }
}

/* ---- OAuth 2.0 client credentials ---- */

static void token_drop_cached(token_t *tk)
{
    if (tk->access_token != NULL) {
        OPENSSL_cleanse(tk->access_token, strlen(tk->access_token));
        free(tk->access_token);
        tk->access_token = NULL;
    }
    tk->expires_us = 0;
}

static void token_free(token_t *tk)
{
    if (tk == NULL)
        return;
    token_drop_cached(tk);
    free(tk->source);
    free(tk);
}

static void token_forget(webhook_dispatcher_t *d, const char *guid)
{
    for (size_t i = 0; i < d->n_tokens; i++) {
        if (strcmp(d->tokens[i]->guid, guid) == 0)
            token_drop_cached(d->tokens[i]);
    }
}

/* The webhook's cache entry. A token is tied to the URL and client id it was
 * fetched with; after an edit of either, it is not used again. */
static token_t *token_for(webhook_dispatcher_t *d, const webhook_t *w)
{
    const char *id = w->client_id ? w->client_id : "";
    size_t len = strlen(w->oauth_url) + 1 + strlen(id) + 1;
    char *source = webhook__malloc(len);
    token_t *tk = NULL;

    snprintf(source, len, "%s\n%s", w->oauth_url, id);
    for (size_t i = 0; i < d->n_tokens; i++) {
        if (strcmp(d->tokens[i]->guid, w->guid) == 0)
            tk = d->tokens[i];
    }
    if (tk == NULL) {
        if (d->n_tokens == d->cap_tokens) {
            d->cap_tokens = d->cap_tokens ? d->cap_tokens * 2 : 8;
            d->tokens = webhook__realloc(d->tokens, d->cap_tokens * sizeof *d->tokens);
        }
        tk = webhook__calloc(1, sizeof *tk);
        snprintf(tk->guid, sizeof tk->guid, "%s", w->guid);
        d->tokens[d->n_tokens++] = tk;
    }
    if (tk->source == NULL || strcmp(tk->source, source) != 0) {
        token_drop_cached(tk);
        free(tk->source);
        tk->source = source;
        source = NULL;
    }
    free(source);
    return tk;
}

static void start_token_fetch(webhook_dispatcher_t *d, token_t *tk, const webhook_t *w)
{
    transfer_t *t;
    char err[ERROR_KEEP + 1];

    /* The token URL obeys the same rules as the webhook's own. */
    if (webhook_url_check(w->oauth_url, &d->opts.policy, err, sizeof err) != 0) {
        snprintf(tk->error, sizeof tk->error, "%s", err);
        d->rescan = true;
        return;
    }

    t = webhook__calloc(1, sizeof *t);
    t->d = d;
    t->token = tk;
    t->token_body = webhook__malloc(TOKEN_RESPONSE_MAX + 1);
    snprintf(t->delivery.webhook_guid, sizeof t->delivery.webhook_guid, "%s", w->guid);
    t->body = webhook__strdup("grant_type=client_credentials");
    t->headers = add_header(t->headers, "content-type", "application/x-www-form-urlencoded");
    t->headers = add_header(t->headers, "accept", "application/json");
    t->headers = add_header(t->headers, "user-agent", "shortlinkd/0.1");
    t->easy = curl_easy_init();
    if (t->easy == NULL)
        abort();
    set_easy_options(d, t, w->oauth_url);
    /* Client id and secret as HTTP Basic, as RFC 6749 §2.3.1 asks. */
    curl_easy_setopt(t->easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(t->easy, CURLOPT_USERNAME, w->client_id ? w->client_id : "");
    curl_easy_setopt(t->easy, CURLOPT_PASSWORD, w->client_secret ? w->client_secret : "");
    t->start_us = webhook__now_us();
    if (curl_multi_add_handle(d->multi, t->easy) != CURLM_OK) {
        snprintf(tk->error, sizeof tk->error, "could not start the token request");
        transfer_free(t);
        d->rescan = true;
        return;
    }
    t->next = d->transfers;
    if (d->transfers != NULL)
        d->transfers->prev = t;
    d->transfers = t;
    d->n_transfers++;
    atomic_store(&d->st_in_flight, d->n_transfers);
    atomic_fetch_add(&d->st_token_fetches, 1);
    tk->fetching = true;
}

/* Reads {"access_token": ..., "expires_in": ...}; true when a usable token
 * came back. A token with a CR or LF would break the header it goes in. */
static bool parse_token(token_t *tk, const char *body, size_t len, int64_t now_us, char *why,
                        size_t whylen)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *tok = json_object_get(root, "access_token");
    json_t *exp = json_object_get(root, "expires_in");
    json_t *type = json_object_get(root, "token_type");
    bool ok = false;

    if (!json_is_string(tok) || json_string_length(tok) == 0 ||
        json_string_length(tok) > TOKEN_MAX || strpbrk(json_string_value(tok), "\r\n") != NULL) {
        snprintf(why, whylen, "the token response holds no usable access_token");
        goto out;
    }
    if (json_is_string(type) && strcasecmp(json_string_value(type), "bearer") != 0) {
        snprintf(why, whylen, "the token type is not Bearer");
        goto out;
    }
    /* Without expires_in the token is kept for an hour; a short-lived one is
     * kept for half its life. */
    int64_t life = json_is_integer(exp) ? (int64_t)json_integer_value(exp) : 3600;
    life = life > 2 * TOKEN_EARLY_S ? life - TOKEN_EARLY_S : life / 2;
    token_drop_cached(tk);
    tk->access_token = webhook__strdup(json_string_value(tok));
    tk->expires_us = now_us + life * 1000000;
    ok = true;

out:
    json_decref(root);
    return ok;
}

static void complete_token_fetch(webhook_dispatcher_t *d, transfer_t *t, CURLcode result)
{
    token_t *tk = t->token;
    long status = 0;
    char why[ERROR_KEEP + 1] = "";

    tk->fetching = false;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (t->blocked[0] != '\0')
        snprintf(why, sizeof why, "%s", t->blocked);
    else if (result != CURLE_OK)
        snprintf(why, sizeof why, "%s",
                 t->curl_error[0] ? t->curl_error : curl_easy_strerror(result));
    else if (status < 200 || status >= 300)
        snprintf(why, sizeof why, "the token endpoint answered HTTP %ld", status);
    else if (parse_token(tk, t->token_body, t->token_body_len, webhook__now_us(), why,
                         sizeof why)) {
        LOG(d, WEBHOOK_LOG_INFO, "webhook %s: OAuth token fetched, cached for %" PRId64 " s",
            tk->guid, (tk->expires_us - webhook__now_us()) / 1000000);
        return;
    }
    snprintf(tk->error, sizeof tk->error, "%s", why);
    LOG(d, WEBHOOK_LOG_WARN, "webhook %s: OAuth token request failed: %s", tk->guid, why);
}

/* ---- send passes ---- */

typedef struct pass {
    webhook_dispatcher_t *d;
    storage_txn_t *txn;
    int64_t now_us;
    bool retries;       /* this walk takes retries; the first takes first attempts */
    size_t retries_due; /* retries the first walk passed over */
} pass_t;

static int on_due(void *ctx, const storage_delivery_t *dl)
{
    pass_t *p = ctx;
    webhook_dispatcher_t *d = p->d;
    hook_t *h;

    /* First attempts get the free slots before retries do: a backlog of
     * retries (earlier due, so first in the walk) for endpoints that keep
     * failing must not hold back fresh engagements. */
    if ((dl->attempts > 0) != p->retries) {
        if (dl->attempts > 0)
            p->retries_due++;
        return 0;
    }
    if (busy_has(d, dl->id))
        return 0;
    h = hooks_find(d, dl->webhook_guid);
    if (h == NULL) {
        drop_delivery(d, dl, "its webhook was deleted");
        return 0;
    }
    if (h->broken)
        return 0;
    if (!h->w.is_active && dl->engagement_seq != WEBHOOK_TEST_SEQ) {
        park_delivery(d, dl);
        return 0;
    }
    /* Per-endpoint cap first, and skip rather than stop: a slow endpoint
     * must not keep the others from the slots that are still free. */
    if (endpoint_in_flight(d, h->host) >= d->opts.max_per_endpoint)
        return 0;
    if (d->n_transfers >= d->opts.max_in_flight)
        return 1;

    const char *bearer = NULL;
    if (h->w.oauth_url != NULL) {
        token_t *tk = token_for(d, &h->w);
        if (tk->error[0] != '\0') {
            char why[ERROR_KEEP + 16];
            snprintf(why, sizeof why, "OAuth token: %s", tk->error);
            attempt_result_t r = {.start_us = p->now_us, .error = why};
            finish_attempt(d, dl, &r);
            return 0;
        }
        if (tk->access_token == NULL || tk->expires_us <= p->now_us) {
            if (!tk->fetching)
                start_token_fetch(d, tk, &h->w);
            return 0; /* waits for the token; its arrival starts a new pass */
        }
        bearer = tk->access_token;
    }
    start_attempt(d, p->txn, dl, h, bearer);
    return 0;
}

/* Refreshes the queue depth for the metrics, at most once a second: it
 * walks the failed deliveries. */
static void count_queue(webhook_dispatcher_t *d, storage_txn_t *txn, int64_t now_us)
{
    uint64_t pending, failed;

    if (now_us - d->last_count_us < COUNT_EVERY_US)
        return;
    d->last_count_us = now_us;
    if (storage_delivery_count(txn, &pending, &failed) != STORAGE_OK)
        return;
    atomic_store(&d->st_pending, pending);
    atomic_store(&d->st_given_up, failed);
}

static void send_pass(webhook_dispatcher_t *d)
{
    pass_t p = {.d = d, .now_us = webhook__now_us()};
    uint64_t next_due;
    int rc;

    d->rescan = false;
    d->next_pass_us = p.now_us + POLL_MAX_MS * 1000;
    p.txn = storage_reader_begin(d->reader);
    if (p.txn == NULL) {
        LOG(d, WEBHOOK_LOG_WARN, "dispatcher: cannot read storage: %s", storage_strerror());
        return;
    }
    rc = hooks_load(d, p.txn);
    if (rc != STORAGE_OK) {
        LOG(d, WEBHOOK_LOG_WARN, "dispatcher: reading webhooks: %s", storage_strerror());
        goto out;
    }
    /* TODO: each pass walks every due delivery, including those held back by
     * a full endpoint; per-endpoint queues would make a large backlog for
     * one dead endpoint cheap to skip. */
    rc = storage_delivery_scan_due(p.txn, (uint64_t)p.now_us, on_due, &p);
    if (rc == STORAGE_OK && p.retries_due > 0) {
        p.retries = true;
        rc = storage_delivery_scan_due(p.txn, (uint64_t)p.now_us, on_due, &p);
    }
    if (rc != STORAGE_OK && rc != 1)
        LOG(d, WEBHOOK_LOG_WARN, "dispatcher: reading due deliveries: %s", storage_strerror());

    /* The next pass comes when the next delivery falls due; those already
     * due and held back come back with the completion that frees a slot. */
    if (storage_delivery_next_due(p.txn, (uint64_t)p.now_us + 1, &next_due) == STORAGE_OK &&
        (int64_t)next_due < d->next_pass_us)
        d->next_pass_us = (int64_t)next_due;
    count_queue(d, p.txn, p.now_us);

out:
    /* A failed token fetch has now been reported to every delivery that was
     * waiting for it; the next due one tries a new fetch. */
    for (size_t i = 0; i < d->n_tokens; i++)
        d->tokens[i]->error[0] = '\0';
    hooks_clear(d);
    storage_reader_end(d->reader);

    int64_t took = webhook__now_us() - p.now_us;
    d->pass_not_before_us = 0;
    if (took > PASS_SLOW_US)
        d->pass_not_before_us =
            p.now_us + (4 * took < PASS_GAP_MAX_US ? 4 * took : PASS_GAP_MAX_US);
}

/* ---- fan-out ---- */

typedef struct fanout_item {
    uint64_t seq;
    int64_t time_us;
    bool bot;
    char group_guid[STORAGE_GUID_LEN + 1];
} fanout_item_t;

typedef struct fanout {
    webhook_dispatcher_t *d;
    int64_t now_us;
    fanout_item_t *items;
    size_t n_items;
    size_t n_deliveries;
    bool more;
} fanout_t;

static int on_fanout_engagement(void *ctx, const storage_engagement_t *e)
{
    fanout_t *f = ctx;
    fanout_item_t *it;

    if (f->n_items == FANOUT_BATCH) {
        f->more = true;
        return 1;
    }
    it = &f->items[f->n_items++];
    it->seq = e->seq;
    it->time_us = e->time_us;
    it->bot = e->bot;
    snprintf(it->group_guid, sizeof it->group_guid, "%s", e->group_guid);
    return 0;
}

static bool wants(const webhook_t *w, const fanout_item_t *it)
{
    if (!w->is_active || w->url == NULL)
        return false;
    if (it->bot && !w->include_bots)
        return false;
    /* A webhook gets the engagements from its creation on, not the history
     * recorded before it existed. */
    if (w->created_us != 0 && it->time_us < w->created_us)
        return false;
    return webhook_subscribes(w, it->group_guid);
}

static int read_cursor(storage_txn_t *txn, uint64_t *out)
{
    storage_bytes_t val;
    int rc = storage_record_get(txn, STORAGE_DB_META, CURSOR_KEY, strlen(CURSOR_KEY), &val);

    *out = 0;
    if (rc == STORAGE_NOTFOUND)
        return STORAGE_OK;
    if (rc != STORAGE_OK)
        return rc;
    if (val.len != 8)
        return STORAGE_ERROR;
    for (size_t i = 0; i < 8; i++)
        *out = *out << 8 | (uint8_t)val.ptr[i];
    return STORAGE_OK;
}

static int write_cursor(storage_txn_t *txn, uint64_t cursor)
{
    uint8_t be[8];

    for (size_t i = 0; i < 8; i++)
        be[i] = (uint8_t)(cursor >> (56 - 8 * i));
    return storage_record_put(txn, STORAGE_DB_META, CURSOR_KEY, strlen(CURSOR_KEY), be, sizeof be,
                              0);
}

/* One batch of fan-out, on the writer thread: the cursor, the engagements
 * after it and the deliveries they make are read and written in the same
 * transaction, so they cannot disagree. */
static int run_fanout(storage_txn_t *txn, void *arg)
{
    fanout_t *f = arg;
    webhook_dispatcher_t *d = f->d;
    uint64_t cursor;
    int rc;

    f->n_items = 0;
    f->n_deliveries = 0;
    f->more = false;
    rc = read_cursor(txn, &cursor);
    if (rc != STORAGE_OK)
        return rc;
    /* Nothing past the cursor: the dispatcher stays as it was (a fan-out at
     * start, with no engagement yet, must not defer a webhook made next). */
    uint64_t last = storage_engagement_last_seq(txn);
    if (last <= cursor)
        return STORAGE_OK;
    rc = hooks_load(d, txn);
    if (rc != STORAGE_OK)
        return rc;
    atomic_store(&d->hookless, d->n_hooks == 0);
    /* No webhook to fan out to: the cursor goes past every engagement at
     * once. Reading them, a thousand per transaction, had cost the writer a
     * decode per click and a commit per thousand. */
    if (d->n_hooks == 0)
        return write_cursor(txn, last);
    rc = storage_engagement_scan(txn, cursor, on_fanout_engagement, f);
    if (rc != STORAGE_OK && rc != 1)
        return rc;
    if (f->n_items == 0)
        return STORAGE_OK;
    for (size_t i = 0; i < f->n_items; i++) {
        for (size_t k = 0; k < d->n_hooks; k++) {
            const hook_t *h = &d->hooks[k];
            if (h->broken || !wants(&h->w, &f->items[i]))
                continue;
            storage_delivery_t dl = {.due_us = (uint64_t)f->now_us,
                                     .engagement_seq = f->items[i].seq};
            dl.id = storage_next_id(txn, "delivery");
            if (dl.id == 0)
                return STORAGE_ERROR;
            snprintf(dl.webhook_guid, sizeof dl.webhook_guid, "%s", h->w.guid);
            rc = storage_delivery_put(txn, &dl);
            if (rc != STORAGE_OK)
                return rc;
            f->n_deliveries++;
        }
    }
    return write_cursor(txn, f->items[f->n_items - 1].seq);
}

/* Runs fan-out batches until the cursor reaches the last engagement. The hook
 * table is shared with send passes, which never run at the same time: this
 * waits for its jobs on the dispatcher thread. */
static void fanout_all(webhook_dispatcher_t *d)
{
    fanout_t f = {.d = d};

    f.items = webhook__calloc(FANOUT_BATCH, sizeof *f.items);
    do {
        f.now_us = webhook__now_us();
        int rc = storage_run(d->opts.storage, run_fanout, &f);
        hooks_clear(d);
        if (rc != STORAGE_OK) {
            LOG(d, WEBHOOK_LOG_WARN, "dispatcher: fan-out of new engagements failed (code %d): %s",
                rc, storage_strerror());
            /* Tried again on the next wake or within a second. */
            atomic_store(&d->fanout_wanted, true);
            break;
        }
        if (f.n_deliveries > 0) {
            LOG(d, WEBHOOK_LOG_DEBUG, "dispatcher: %zu engagements gave %zu deliveries", f.n_items,
                f.n_deliveries);
            d->rescan = true;
        }
    } while (f.more);
    free(f.items);
}

/* ---- the thread ---- */

static void abort_transfers(webhook_dispatcher_t *d)
{
    while (d->transfers != NULL) {
        transfer_t *t = d->transfers;
        /* Left as they are in storage, so they are attempted after restart. */
        LOG(d, WEBHOOK_LOG_WARN,
            "webhook %s delivery %" PRIu64 ": attempt cut short by shutdown; it stays due",
            t->delivery.webhook_guid, t->delivery.id);
        if (t->token != NULL)
            t->token->fetching = false;
        transfer_unlink(d, t);
        busy_remove(d, t->delivery.id);
        transfer_free(t);
    }
}

static int poll_timeout_ms(const webhook_dispatcher_t *d)
{
    int64_t now = webhook__now_us();
    int64_t wait_us;

    /* While stopping, only transfers and job hand-backs matter, and both
     * wake the poll themselves; the deadline bounds the wait. */
    if (atomic_load(&d->stopping))
        wait_us = d->stop_deadline_us - now;
    else if (atomic_load(&d->fanout_wanted) || atomic_load(&d->poke_wanted))
        return 0;
    else if (d->rescan && d->pass_not_before_us < d->next_pass_us)
        wait_us = d->pass_not_before_us - now;
    else
        wait_us = d->next_pass_us - now;
    if (!atomic_load(&d->stopping) && atomic_load(&d->fanout_later) &&
        d->next_fanout_us - now < wait_us)
        wait_us = d->next_fanout_us - now;
    if (wait_us <= 0)
        return 0;
    /* Rounded up so the loop does not spin just before a due time. */
    int64_t ms = (wait_us + 999) / 1000;
    return ms > POLL_MAX_MS ? POLL_MAX_MS : (int)ms;
}

static void *run(void *arg)
{
    webhook_dispatcher_t *d = arg;
    int started = 1;
    int running;

    if (storage_reader_open(d->opts.storage, &d->reader) != STORAGE_OK) {
        /* storage_strerror is per thread, so the reason is carried over. */
        snprintf(d->start_error, sizeof d->start_error, "%s", storage_strerror());
        started = -1;
    }
    pthread_mutex_lock(&d->lock);
    d->started = started;
    pthread_cond_signal(&d->started_cond);
    pthread_mutex_unlock(&d->lock);
    if (started < 0)
        return NULL;

    /* Resume: first whatever was committed but not yet fanned out, then
     * every due delivery, including those a crash left behind. */
    fanout_all(d);
    d->rescan = true;

    for (;;) {
        collect_finished(d);
        bool stopping = atomic_load(&d->stopping);
        int64_t now = webhook__now_us();
        if (stopping) {
            if (d->stop_deadline_us == 0)
                d->stop_deadline_us = now + d->opts.total_timeout_ms * 1000;
            if (d->n_transfers > 0 && now >= d->stop_deadline_us)
                abort_transfers(d);
            if (d->n_transfers == 0 && d->jobs_pending == 0)
                break;
        } else {
            if (atomic_exchange(&d->fanout_wanted, false) ||
                (now >= d->next_fanout_us && atomic_exchange(&d->fanout_later, false))) {
                fanout_all(d);
                d->next_fanout_us = now + HOOKLESS_FANOUT_US;
            }
            /* A poke is a user waiting (a test send, a resend): no delay. */
            if (atomic_exchange(&d->poke_wanted, false)) {
                d->rescan = true;
                d->pass_not_before_us = 0;
            }
            if ((d->rescan && now >= d->pass_not_before_us) || now >= d->next_pass_us)
                send_pass(d);
        }
        curl_multi_perform(d->multi, &running);
        read_multi_messages(d);
        if (stopping && d->n_transfers == 0 && d->jobs_pending == 0)
            continue; /* straight to the exit check */
        curl_multi_poll(d->multi, NULL, 0, poll_timeout_ms(d), NULL);
    }

    storage_reader_close(d->reader);
    d->reader = NULL;
    return NULL;
}

/* ---- public ---- */

static void dispatcher_free(webhook_dispatcher_t *d)
{
    if (d == NULL)
        return;
    if (d->multi != NULL)
        curl_multi_cleanup(d->multi);
    hooks_clear(d);
    free(d->hooks);
    for (size_t i = 0; i < d->n_tokens; i++)
        token_free(d->tokens[i]);
    free(d->tokens);
    free(d->busy);
    free(d->endpoints);
    free(d->delays);
    free(d->allow);
    free(d->public_url);
    free(d->domain);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->started_cond);
    free(d);
}

/* Copies what the options point to, so the caller's arrays and strings may
 * go away once start returns. */
static void copy_options(webhook_dispatcher_t *d, const webhook_dispatcher_options_t *opts)
{
    d->opts = *opts;
    if (d->opts.retry_delays_s == NULL) {
        d->opts.retry_delays_s = default_delays;
        d->opts.n_retry_delays = sizeof default_delays / sizeof default_delays[0];
    }
    d->n_delays = d->opts.n_retry_delays;
    d->delays = webhook__calloc(d->n_delays ? d->n_delays : 1, sizeof *d->delays);
    memcpy(d->delays, d->opts.retry_delays_s, d->n_delays * sizeof *d->delays);
    d->opts.retry_delays_s = d->delays;

    d->allow = webhook__calloc(opts->policy.n_allow ? opts->policy.n_allow : 1, sizeof *d->allow);
    if (opts->policy.n_allow > 0)
        memcpy(d->allow, opts->policy.allow, opts->policy.n_allow * sizeof *d->allow);
    d->opts.policy.allow = d->allow;

    d->public_url = webhook__strdup(opts->payload.public_url ? opts->payload.public_url : "");
    d->domain = webhook__strdup(opts->payload.domain ? opts->payload.domain : "");
    d->opts.payload.public_url = d->public_url;
    d->opts.payload.domain = d->domain;

    if (d->opts.connect_timeout_ms <= 0)
        d->opts.connect_timeout_ms = 5000;
    if (d->opts.total_timeout_ms <= 0)
        d->opts.total_timeout_ms = 15000;
    if (d->opts.max_in_flight == 0)
        d->opts.max_in_flight = 256;
    if (d->opts.max_per_endpoint == 0)
        d->opts.max_per_endpoint = 8;
    if (d->opts.deactivate_after_hours == 0)
        d->opts.deactivate_after_hours = FAILING_LIMIT_HOURS;
    d->failing_limit_us = (int64_t)d->opts.deactivate_after_hours * 3600 * 1000000;
}

webhook_dispatcher_t *webhook_dispatcher_start(const webhook_dispatcher_options_t *opts, char *err,
                                               size_t errlen)
{
    webhook_dispatcher_t *d = NULL;
    webhook_dispatcher_t *result = NULL;
    bool global = false;

    if (opts == NULL || opts->storage == NULL) {
        snprintf(err, errlen, "webhooks: the dispatcher needs a storage handle");
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "webhooks: libcurl failed to initialise");
        goto out;
    }
    global = true;

    d = webhook__calloc(1, sizeof *d);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->started_cond, NULL);
    copy_options(d, opts);
    atomic_init(&d->stopping, false);
    atomic_init(&d->fanout_wanted, false);
    atomic_init(&d->poke_wanted, false);
    atomic_init(&d->hookless, false);
    atomic_init(&d->fanout_later, false);
    if (RAND_bytes((unsigned char *)&d->rng, sizeof d->rng) != 1 || d->rng == 0)
        d->rng = (uint64_t)webhook__now_us() | 1;

    d->multi = curl_multi_init();
    if (d->multi == NULL) {
        snprintf(err, errlen, "webhooks: libcurl could not create a multi handle");
        goto out;
    }
    if (pthread_create(&d->thread, NULL, run, d) != 0) {
        snprintf(err, errlen, "webhooks: could not start the dispatcher thread");
        goto out;
    }

    pthread_mutex_lock(&d->lock);
    while (d->started == 0)
        pthread_cond_wait(&d->started_cond, &d->lock);
    pthread_mutex_unlock(&d->lock);
    if (d->started < 0) {
        pthread_join(d->thread, NULL);
        snprintf(err, errlen, "webhooks: the dispatcher cannot open a storage reader: %s",
                 d->start_error);
        goto out;
    }
    result = d;
    d = NULL;

out:
    dispatcher_free(d);
    if (result == NULL && global)
        curl_global_cleanup();
    return result;
}

void webhook_dispatcher_wake(void *dispatcher, uint64_t last_seq)
{
    webhook_dispatcher_t *d = dispatcher;

    /* storage may commit before the server has a dispatcher to wake. */
    if (d == NULL)
        return;
    /* Waking the thread for every group commit, only for it to find no
     * webhook, cost the redirect path a context switch per commit and the
     * writer a job per commit (the cursor write). While none is stored, the
     * commits are fanned out together, and a new webhook is seen on the next
     * of those fan-outs. */
    if (atomic_load_explicit(&d->hookless, memory_order_relaxed)) {
        /* The first mark since the last fan-out wakes the thread once, so
         * that its poll, timed before there was anything to fan out, ends
         * at the deferred fan-out and not up to a second later. */
        if (!atomic_load_explicit(&d->fanout_later, memory_order_relaxed) &&
            !atomic_exchange(&d->fanout_later, true))
            curl_multi_wakeup(d->multi);
        return;
    }
    atomic_store(&d->fanout_wanted, true);
    curl_multi_wakeup(d->multi);
}

void webhook_dispatcher_poke(webhook_dispatcher_t *d)
{
    if (d == NULL)
        return;
    atomic_store(&d->poke_wanted, true);
    curl_multi_wakeup(d->multi);
}

void webhook_dispatcher_stats(webhook_dispatcher_t *d, webhook_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (d == NULL)
        return;
    out->delivered = atomic_load(&d->st_delivered);
    out->retried = atomic_load(&d->st_retried);
    out->failed = atomic_load(&d->st_failed);
    for (size_t i = 0; i < WEBHOOK_LATENCY_BUCKETS; i++)
        out->latency[i] = atomic_load(&d->st_latency[i]);
    out->latency_sum_ms = atomic_load(&d->st_latency_sum_ms);
    out->pending = atomic_load(&d->st_pending);
    out->given_up = atomic_load(&d->st_given_up);
    out->in_flight = atomic_load(&d->st_in_flight);
    out->token_fetches = atomic_load(&d->st_token_fetches);
}

void webhook_dispatcher_stop(webhook_dispatcher_t *d)
{
    if (d == NULL)
        return;
    atomic_store(&d->stopping, true);
    curl_multi_wakeup(d->multi);
    pthread_join(d->thread, NULL);
    dispatcher_free(d);
    curl_global_cleanup();
}
