/*
 * Unit tests for webhooks/dispatcher.c against a real storage in a temporary
 * directory and a small HTTP receiver this test runs on 127.0.0.1 (cases
 * C15-C18). The receiver answers from a script of statuses and records what
 * it was sent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/rand.h>

#include "webhooks.h"

#define SECRET     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define HOOK_GUID  "Wh1abcdefgh"
#define GROUP_GUID "Bg1aaaaaaaa"
#define OTHER_GUID "Bg2bbbbbbbb"
#define MAX_REQS   32

/* ---- the receiver ---- */

typedef struct request {
    char path[256];
    char id[128];
    char timestamp[32];
    char signature[256];
    char authorization[512];
    char *body;
    size_t body_len;
    time_t received;
} request_t;

typedef struct receiver {
    int fd;
    uint16_t port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock;
    request_t reqs[MAX_REQS];
    size_t n_reqs;
    const int *script; /* status per request; the last repeats */
    size_t n_script;
    char location[256]; /* sent with 3xx answers */
    /* POSTs to /token are OAuth token requests, answered apart. */
    int token_status; /* 0: 200 */
    size_t n_token_reqs;
    char token_auth[512];
    char token_body[256];
} receiver_t;

static void header_value(const char *head, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = head;

    out[0] = '\0';
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t len = end ? (size_t)(end - v) : strlen(v);
            if (len >= outlen)
                len = outlen - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return;
        }
    }
}

static void serve_one(receiver_t *rv, int c)
{
    char buf[65536];
    size_t len = 0;
    char *end = NULL;

    while (len < sizeof buf - 1) {
        ssize_t n = recv(c, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            return;
        len += (size_t)n;
        buf[len] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) != NULL)
            break;
    }
    if (end == NULL)
        return;
    char cl[32];
    header_value(buf, "content-length", cl, sizeof cl);
    size_t body_len = (size_t)strtoul(cl, NULL, 10);
    size_t head_len = (size_t)(end - buf) + 4;
    while (len < head_len + body_len && len < sizeof buf - 1) {
        ssize_t n = recv(c, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            return;
        len += (size_t)n;
    }
    buf[len] = '\0';

    char path[256] = "";
    sscanf(buf, "%*s %255s", path);
    if (strcmp(path, "/token") == 0) {
        static const char token_json[] =
            "{\"access_token\":\"tok-123\",\"token_type\":\"Bearer\",\"expires_in\":3600}";
        char resp[512];
        pthread_mutex_lock(&rv->lock);
        int st = rv->token_status ? rv->token_status : 200;
        rv->n_token_reqs++;
        header_value(buf, "authorization", rv->token_auth, sizeof rv->token_auth);
        snprintf(rv->token_body, sizeof rv->token_body, "%.*s", (int)body_len, buf + head_len);
        pthread_mutex_unlock(&rv->lock);
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d T\r\nContent-Type: application/json\r\nContent-Length: "
                         "%zu\r\nConnection: close\r\n\r\n%s",
                         st, strlen(token_json), token_json);
        send(c, resp, (size_t)n, MSG_NOSIGNAL);
        return;
    }

    pthread_mutex_lock(&rv->lock);
    size_t idx = rv->n_reqs;
    int status = rv->script[idx < rv->n_script ? idx : rv->n_script - 1];
    if (idx < MAX_REQS) {
        request_t *r = &rv->reqs[idx];
        sscanf(buf, "%*s %255s", r->path);
        header_value(buf, "webhook-id", r->id, sizeof r->id);
        header_value(buf, "webhook-timestamp", r->timestamp, sizeof r->timestamp);
        header_value(buf, "webhook-signature", r->signature, sizeof r->signature);
        header_value(buf, "authorization", r->authorization, sizeof r->authorization);
        r->body = malloc(body_len + 1);
        memcpy(r->body, buf + head_len, body_len);
        r->body[body_len] = '\0';
        r->body_len = body_len;
        r->received = time(NULL);
        rv->n_reqs++;
    }
    pthread_mutex_unlock(&rv->lock);

    char resp[512];
    int n =
        snprintf(resp, sizeof resp,
                 "HTTP/1.1 %d Scripted\r\nContent-Length: 2\r\nConnection: close\r\n%s%s%s\r\nok",
                 status, status / 100 == 3 ? "Location: " : "",
                 status / 100 == 3 ? rv->location : "", status / 100 == 3 ? "\r\n" : "");
    send(c, resp, (size_t)n, MSG_NOSIGNAL);
}

static void *receiver_run(void *arg)
{
    receiver_t *rv = arg;

    while (!atomic_load(&rv->stop)) {
        struct pollfd pfd = {.fd = rv->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int c = accept(rv->fd, NULL, NULL);
        if (c < 0)
            continue;
        serve_one(rv, c);
        close(c);
    }
    return NULL;
}

static void receiver_start(receiver_t *rv, const int *script, size_t n_script)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t slen = sizeof sin;

    memset(rv, 0, sizeof *rv);
    rv->script = script;
    rv->n_script = n_script;
    pthread_mutex_init(&rv->lock, NULL);
    rv->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(rv->fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    assert_int_equal(bind(rv->fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(rv->fd, 16), 0);
    assert_int_equal(getsockname(rv->fd, (struct sockaddr *)&sin, &slen), 0);
    rv->port = ntohs(sin.sin_port);
    assert_int_equal(pthread_create(&rv->thread, NULL, receiver_run, rv), 0);
}

static size_t receiver_count(receiver_t *rv)
{
    pthread_mutex_lock(&rv->lock);
    size_t n = rv->n_reqs;
    pthread_mutex_unlock(&rv->lock);
    return n;
}

static void receiver_stop(receiver_t *rv)
{
    atomic_store(&rv->stop, true);
    pthread_join(rv->thread, NULL);
    close(rv->fd);
    for (size_t i = 0; i < rv->n_reqs && i < MAX_REQS; i++)
        free(rv->reqs[i].body);
    pthread_mutex_destroy(&rv->lock);
}

static bool wait_for_requests(receiver_t *rv, size_t n, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (receiver_count(rv) >= n)
            return true;
        usleep(20000);
    }
    return receiver_count(rv) >= n;
}

/* ---- storage fixture ---- */

typedef struct fixture {
    char dir[64];
    storage_t *storage;
    webhook_dispatcher_t *dispatcher;
    receiver_t rv;
    geoip_cidr_t allow[2];
    size_t n_allow;
    const uint32_t *delays;
    size_t n_delays;
} fixture_t;

static _Atomic(webhook_dispatcher_t *) current;

static void on_commit(void *ctx, uint64_t last_seq)
{
    webhook_dispatcher_wake(atomic_load(&current), last_seq);
}

__attribute__((format(printf, 2, 3))) static void test_log(int level, const char *fmt, ...)
{
    va_list ap;

    if (getenv("WEBHOOKS_TEST_LOG") == NULL)
        return;
    va_start(ap, fmt);
    fprintf(stderr, "[dispatcher %d] ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void storage_up(fixture_t *f)
{
    storage_options_t o = {.dir = f->dir, .map_size = 64u << 20, .on_commit = on_commit};
    char err[256];

    if (storage_open(&f->storage, &o, err, sizeof err) != STORAGE_OK)
        fail_msg("storage_open: %s", err);
    assert_int_equal(storage_writer_start(f->storage), STORAGE_OK);
}

static void dispatcher_up(fixture_t *f)
{
    webhook_dispatcher_options_t o = {
        .storage = f->storage,
        .payload = {.public_url = "http://127.0.0.1:8080", .domain = "127.0.0.1:8080"},
        .policy = {.allow = f->allow, .n_allow = f->n_allow},
        .retry_delays_s = f->delays,
        .n_retry_delays = f->n_delays,
        .connect_timeout_ms = 2000,
        .total_timeout_ms = 5000,
        .log = test_log,
    };
    char err[256];

    /* A non-NULL schedule with no entries means "no retries". */
    static const uint32_t none[1] = {0};
    if (o.retry_delays_s == NULL)
        o.retry_delays_s = none;
    f->dispatcher = webhook_dispatcher_start(&o, err, sizeof err);
    if (f->dispatcher == NULL)
        fail_msg("webhook_dispatcher_start: %s", err);
    atomic_store(&current, f->dispatcher);
}

static void dispatcher_down(fixture_t *f)
{
    atomic_store(&current, NULL);
    webhook_dispatcher_stop(f->dispatcher);
    f->dispatcher = NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void fixture_init(fixture_t *f, const int *script, size_t n_script, const uint32_t *delays,
                         size_t n_delays, bool allow_loopback)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s", "/tmp/sl-webhooks-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    if (allow_loopback) {
        assert_true(geoip_cidr_parse(&f->allow[0], "127.0.0.0/8"));
        f->n_allow = 1;
    } else {
        /* Only ::1: "localhost" passes the URL check, and the connect-time
         * check must then refuse 127.0.0.1. */
        assert_true(geoip_cidr_parse(&f->allow[0], "::1/128"));
        f->n_allow = 1;
    }
    f->delays = delays;
    f->n_delays = n_delays;
    receiver_start(&f->rv, script, n_script);
    storage_up(f);
}

static void fixture_done(fixture_t *f)
{
    if (f->dispatcher != NULL)
        dispatcher_down(f);
    storage_close(f->storage);
    receiver_stop(&f->rv);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- records through jobs ---- */

typedef struct put_arg {
    const char *key;
    const char *val;
    storage_db_t db;
    const storage_link_t *link;
} put_arg_t;

static int put_job(storage_txn_t *txn, void *arg)
{
    put_arg_t *p = arg;

    if (p->link != NULL)
        return storage_link_insert(txn, p->link, false);
    return storage_record_put(txn, p->db, p->key, strlen(p->key), p->val, strlen(p->val), 0);
}

static void put_webhook_oauth(fixture_t *f, const char *url, bool include_bots,
                              const char *oauth_url)
{
    webhook_t w;
    char *groups[] = {GROUP_GUID};

    memset(&w, 0, sizeof w);
    snprintf(w.guid, sizeof w.guid, "%s", HOOK_GUID);
    snprintf(w.organization_guid, sizeof w.organization_guid, "%s", "Oo1abcdefgh");
    w.name = "test";
    w.url = (char *)url;
    w.event = "engagement";
    w.group_guids = groups;
    w.n_groups = 1;
    w.is_active = true;
    w.include_bots = include_bots;
    w.signing_secret = SECRET;
    w.created_us = 1;
    w.oauth_url = (char *)oauth_url;
    w.client_id = "cid";
    w.client_secret = "c:secret";

    char *json = webhook_encode(&w);
    put_arg_t p = {.key = HOOK_GUID, .val = json, .db = STORAGE_DB_WEBHOOKS};
    assert_int_equal(storage_run(f->storage, put_job, &p), STORAGE_OK);
    free(json);
}

static void put_webhook(fixture_t *f, const char *url, bool include_bots)
{
    put_webhook_oauth(f, url, include_bots, NULL);
}

static void put_link(fixture_t *f, const char *code, const char *group, const char *long_url)
{
    storage_link_t l;

    memset(&l, 0, sizeof l);
    l.code.ptr = code;
    l.code.len = strlen(code);
    snprintf(l.group_guid, sizeof l.group_guid, "%s", group);
    l.created_us = 1;
    l.modified_us = 1;
    l.long_url.ptr = long_url;
    l.long_url.len = strlen(long_url);
    put_arg_t p = {.link = &l};
    assert_int_equal(storage_run(f->storage, put_job, &p), STORAGE_OK);
}

static void push_click(fixture_t *f, const char *code, bool bot, const char *query)
{
    storage_engagement_t e;
    struct timespec ts;

    memset(&e, 0, sizeof e);
    RAND_bytes(e.event_id, sizeof e.event_id);
    clock_gettime(CLOCK_REALTIME, &ts);
    e.time_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    e.kind = STORAGE_KIND_CLICK;
    e.device = bot ? STORAGE_DEVICE_BOT : STORAGE_DEVICE_DESKTOP;
    e.bot = bot;
    snprintf(e.country, sizeof e.country, "%s", "GB");
    snprintf(e.code, sizeof e.code, "%s", code);
    snprintf(e.referrer, sizeof e.referrer, "%s", "direct");
    e.query.ptr = query;
    e.query.len = query ? strlen(query) : 0;
    assert_int_equal(storage_engagement_push(f->storage, &e), STORAGE_OK);
}

static void hook_url(fixture_t *f, char *out, size_t outlen, const char *host)
{
    snprintf(out, outlen, "http://%s:%u/hook", host, (unsigned)f->rv.port);
}

/* The usual start: one webhook on host, one link "abc" in its group, the
 * dispatcher running, and one click on the link. */
static void one_hook_one_click(fixture_t *f, char *url, size_t len, const char *host)
{
    hook_url(f, url, len, host);
    put_webhook(f, url, false);
    put_link(f, "abc", GROUP_GUID, "https://example.com/");
    dispatcher_up(f);
    push_click(f, "abc", false, NULL);
}

/* ---- reading results back ---- */

typedef struct seen {
    storage_delivery_t deliveries[16];
    size_t n_deliveries;
    storage_attempt_t attempts[16];
    char errors[16][256];
    size_t n_attempts;
} seen_t;

static int on_delivery(void *ctx, const storage_delivery_t *d)
{
    seen_t *s = ctx;

    if (s->n_deliveries < 16)
        s->deliveries[s->n_deliveries++] = *d;
    return 0;
}

static int on_attempt(void *ctx, const storage_attempt_t *a)
{
    seen_t *s = ctx;

    if (s->n_attempts < 16) {
        s->attempts[s->n_attempts] = *a;
        size_t n = a->error.len < 255 ? a->error.len : 255;
        memcpy(s->errors[s->n_attempts], a->error.ptr, n);
        s->errors[s->n_attempts][n] = '\0';
        s->attempts[s->n_attempts].error.ptr = NULL;
        s->attempts[s->n_attempts].response.ptr = NULL;
        s->n_attempts++;
    }
    return 0;
}

static void read_back(fixture_t *f, seen_t *s)
{
    storage_reader_t *r;

    memset(s, 0, sizeof *s);
    assert_int_equal(storage_reader_open(f->storage, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_non_null(txn);
    storage_delivery_scan_all(txn, on_delivery, s);
    storage_attempt_scan(txn, HOOK_GUID, on_attempt, s);
    storage_reader_end(r);
    storage_reader_close(r);
}

/* Waits until the attempt log holds n attempts (outcomes land in storage a
 * moment after the receiver sees the request). */
static void wait_for_attempts(fixture_t *f, size_t n, seen_t *s)
{
    for (int i = 0; i < 250; i++) {
        read_back(f, s);
        if (s->n_attempts >= n)
            return;
        usleep(20000);
    }
    fail_msg("expected %zu attempts, storage has %zu", n, s->n_attempts);
}

static void assert_signed(const request_t *r)
{
    char sig[WEBHOOK_SIGNATURE_MAX];
    int64_t ts = strtoll(r->timestamp, NULL, 10);

    assert_int_equal(webhook_sign(SECRET, r->id, ts, r->body, r->body_len, sig, sizeof sig), 0);
    assert_string_equal(r->signature, sig);
    /* Standard Webhooks receivers refuse timestamps more than 300 s off. */
    assert_true(llabs((long long)(r->received - ts)) <= 300);
}

/* ---- tests ---- */

static void webhook_dispatcher_delivers_one_signed_post(void **state)
{
    static const int script[] = {200};
    fixture_t f;
    char url[128];
    seen_t s;

    fixture_init(&f, script, 1, (const uint32_t[]){1}, 1, true);
    hook_url(&f, url, sizeof url, "127.0.0.1");
    put_webhook(&f, url, false);
    /* C15: the long URL holds é, & and </. */
    put_link(&f, "abc", GROUP_GUID, "https://example.com/caf\xc3\xa9?a=1&b=</x>");
    put_link(&f, "other", OTHER_GUID, "https://example.com/other");
    dispatcher_up(&f);

    push_click(&f, "abc", false, "utm_source=y");
    push_click(&f, "other", false, NULL); /* not a subscribed group */
    push_click(&f, "abc", true, NULL);    /* a bot: left out by default */
    assert_true(wait_for_requests(&f.rv, 1, 10000));
    wait_for_attempts(&f, 1, &s);
    usleep(500000);
    assert_int_equal(receiver_count(&f.rv), 1);

    request_t *r = &f.rv.reqs[0];
    assert_string_equal(r->path, "/hook");
    assert_signed(r);
    json_t *body = json_loadb(r->body, r->body_len, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "event_id")), r->id);
    assert_string_equal(json_string_value(json_object_get(body, "url")),
                        "https://example.com/caf\xc3\xa9?a=1&b=</x>");
    assert_string_equal(json_string_value(json_object_get(body, "bitlink")), "127.0.0.1:8080/abc");
    assert_string_equal(json_string_value(json_object_get(body, "passed_params")), "utm_source=y");
    assert_string_equal(json_string_value(json_object_get(body, "group_guid")), GROUP_GUID);
    assert_string_equal(json_string_value(json_object_get(body, "webhook_guid")), HOOK_GUID);
    json_decref(body);

    /* Delivered: the delivery is gone and the attempt logged as such. */
    assert_int_equal(s.n_deliveries, 0);
    assert_int_equal(s.n_attempts, 1);
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_DELIVERED);
    assert_int_equal(s.attempts[0].http_status, 200);
    assert_int_equal(s.attempts[0].attempt, 1);
    fixture_done(&f);
}

/* The dispatch cursor as stored, 0 when none is. */
static uint64_t stored_cursor(fixture_t *f)
{
    storage_reader_t *r;
    storage_bytes_t v;
    uint64_t cursor = 0;

    assert_int_equal(storage_reader_open(f->storage, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    if (storage_record_get(txn, STORAGE_DB_META, "dispatch_cursor", 15, &v) == STORAGE_OK &&
        v.len == 8) {
        for (size_t i = 0; i < 8; i++)
            cursor = cursor << 8 | (uint8_t)v.ptr[i];
    }
    storage_reader_end(r);
    storage_reader_close(r);
    return cursor;
}

/* With no webhook stored, fan-out moves the cursor past every engagement
 * without reading them; a webhook made later gets the clicks from then on,
 * and none of those it skipped. More clicks than one fan-out batch reads. */
static void webhook_dispatcher_hookless_fanout_skips_to_the_end(void **state)
{
    static const int script[] = {200};
    fixture_t f;
    storage_stats_t st;
    char url[128];

    (void)state;
    fixture_init(&f, script, 1, (const uint32_t[]){1}, 1, true);
    put_link(&f, "abc", GROUP_GUID, "https://example.com/");
    dispatcher_up(&f);
    for (int i = 0; i < 2500; i++)
        push_click(&f, "abc", false, NULL);
    for (int i = 0; i < 500 && stored_cursor(&f) < 2500; i++)
        usleep(20000);
    storage_get_stats(f.storage, &st);
    assert_int_equal(st.engagements_recorded, 2500);
    assert_int_equal(stored_cursor(&f), 2500);

    hook_url(&f, url, sizeof url, "127.0.0.1");
    put_webhook(&f, url, false);
    push_click(&f, "abc", false, "after=1");
    assert_true(wait_for_requests(&f.rv, 1, 10000));
    usleep(500000);
    assert_int_equal(receiver_count(&f.rv), 1);
    json_t *body = json_loadb(f.rv.reqs[0].body, f.rv.reqs[0].body_len, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "passed_params")), "after=1");
    json_decref(body);
    assert_int_equal(stored_cursor(&f), 2501);
    fixture_done(&f);
}

/* While no webhook is stored, a commit only marks a deferred fan-out. The
 * first mark wakes the dispatcher, whose poll was timed with nothing to fan
 * out (up to a second): a webhook made meanwhile gets its first click at
 * once, not at the end of that poll, 800 ms later here. */
static void webhook_dispatcher_hookless_mark_wakes_the_poll(void **state)
{
    static const int script[] = {200};
    fixture_t f;
    struct timespec t0, t1;
    char url[128];

    (void)state;
    fixture_init(&f, script, 1, (const uint32_t[]){1}, 1, true);
    put_link(&f, "abc", GROUP_GUID, "https://example.com/");
    dispatcher_up(&f);
    push_click(&f, "abc", false, NULL);
    for (int i = 0; i < 250 && stored_cursor(&f) < 1; i++)
        usleep(20000);
    assert_int_equal(stored_cursor(&f), 1); /* fanned out to nobody: hookless */
    usleep(1200000);
    hook_url(&f, url, sizeof url, "127.0.0.1");
    put_webhook(&f, url, false);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    push_click(&f, "abc", false, NULL);
    assert_true(wait_for_requests(&f.rv, 1, 5000));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms < 400);
    fixture_done(&f);
}

static void webhook_dispatcher_retry_keeps_id_with_fresh_timestamp(void **state)
{
    static const int script[] = {500, 200};
    fixture_t f;
    char url[128];
    seen_t s;

    /* A 2 s delay makes the retry's timestamp differ from the first one. */
    fixture_init(&f, script, 2, (const uint32_t[]){2, 2}, 2, true);
    one_hook_one_click(&f, url, sizeof url, "127.0.0.1");

    assert_true(wait_for_requests(&f.rv, 2, 15000));
    wait_for_attempts(&f, 2, &s);
    request_t *a = &f.rv.reqs[0], *b = &f.rv.reqs[1];
    assert_string_equal(a->id, b->id);
    assert_true(strtoll(b->timestamp, NULL, 10) > strtoll(a->timestamp, NULL, 10));
    assert_int_equal(a->body_len, b->body_len);
    assert_memory_equal(a->body, b->body, a->body_len);
    assert_signed(a);
    assert_signed(b);

    assert_int_equal(s.n_deliveries, 0);
    assert_int_equal(s.n_attempts, 2);
    /* Newest first. */
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_DELIVERED);
    assert_int_equal(s.attempts[1].outcome, STORAGE_OUTCOME_RETRY);
    assert_int_equal(s.attempts[1].http_status, 500);
    fixture_done(&f);
}

static void webhook_dispatcher_gives_up_after_schedule(void **state)
{
    static const int script[] = {403};
    fixture_t f;
    char url[128];
    seen_t s;

    fixture_init(&f, script, 1, (const uint32_t[]){1, 1, 1}, 3, true);
    one_hook_one_click(&f, url, sizeof url, "127.0.0.1");

    assert_true(wait_for_requests(&f.rv, 4, 20000));
    wait_for_attempts(&f, 4, &s);
    sleep(2);
    assert_int_equal(receiver_count(&f.rv), 4);
    read_back(&f, &s);
    assert_int_equal(s.n_attempts, 4);
    assert_int_equal(s.n_deliveries, 1);
    assert_true(s.deliveries[0].due_us == STORAGE_DUE_FAILED);
    assert_int_equal(s.deliveries[0].attempts, 4);
    assert_int_equal(s.deliveries[0].last_status, 403);
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_FAILED);
    assert_int_equal(s.attempts[0].attempt, 4);
    for (size_t i = 1; i < 4; i++)
        assert_int_equal(s.attempts[i].outcome, STORAGE_OUTCOME_RETRY);
    fixture_done(&f);
}

static void webhook_dispatcher_does_not_follow_redirects(void **state)
{
    static const int script[] = {302};
    fixture_t f;
    char url[128];
    seen_t s;

    fixture_init(&f, script, 1, NULL, 0, true);
    snprintf(f.rv.location, sizeof f.rv.location, "http://127.0.0.1:%u/followed",
             (unsigned)f.rv.port);
    one_hook_one_click(&f, url, sizeof url, "127.0.0.1");

    assert_true(wait_for_requests(&f.rv, 1, 10000));
    wait_for_attempts(&f, 1, &s);
    usleep(500000);
    assert_int_equal(receiver_count(&f.rv), 1);
    assert_string_equal(f.rv.reqs[0].path, "/hook");
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_FAILED);
    assert_int_equal(s.attempts[0].http_status, 302);
    assert_non_null(strstr(s.errors[0], "redirect"));
    fixture_done(&f);
}

static void webhook_dispatcher_resumes_after_restart(void **state)
{
    static const int script[] = {403};
    fixture_t f;
    char url[128];
    seen_t s;

    fixture_init(&f, script, 1, (const uint32_t[]){1, 1, 1}, 3, true);
    one_hook_one_click(&f, url, sizeof url, "127.0.0.1");

    assert_true(wait_for_requests(&f.rv, 2, 15000));
    /* Stop everything mid-schedule, as a restart does. */
    dispatcher_down(&f);
    storage_close(f.storage);
    size_t before = receiver_count(&f.rv);
    assert_true(before >= 2 && before < 4);
    sleep(2);
    assert_int_equal(receiver_count(&f.rv), before);

    storage_up(&f);
    dispatcher_up(&f);
    assert_true(wait_for_requests(&f.rv, 4, 20000));
    wait_for_attempts(&f, 4, &s);
    sleep(2);
    assert_int_equal(receiver_count(&f.rv), 4);
    read_back(&f, &s);
    assert_int_equal(s.n_deliveries, 1);
    assert_true(s.deliveries[0].due_us == STORAGE_DUE_FAILED);
    for (size_t i = 1; i < 4; i++)
        assert_string_equal(f.rv.reqs[i].id, f.rv.reqs[0].id);
    fixture_done(&f);
}

static void webhook_dispatcher_refuses_blocked_address_at_connect(void **state)
{
    static const int script[] = {200};
    fixture_t f;
    char url[128];
    seen_t s;

    /* Only ::1 is allowed: "localhost" passes the URL check, curl tries
     * 127.0.0.1 and ::1, and the socket check must refuse 127.0.0.1, where
     * the receiver listens. */
    fixture_init(&f, script, 1, NULL, 0, false);
    one_hook_one_click(&f, url, sizeof url, "localhost");

    wait_for_attempts(&f, 1, &s);
    assert_int_equal(receiver_count(&f.rv), 0);
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_FAILED);
    assert_int_equal(s.attempts[0].http_status, 0);
    if (strstr(s.errors[0], "blocked address 127.0.0.1") == NULL)
        fail_msg("attempt error \"%s\" does not name the blocked address", s.errors[0]);
    fixture_done(&f);
}

static void webhook_dispatcher_410_deactivates(void **state)
{
    static const int script[] = {410};
    fixture_t f;
    char url[128];
    seen_t s;

    fixture_init(&f, script, 1, (const uint32_t[]){1, 1}, 2, true);
    one_hook_one_click(&f, url, sizeof url, "127.0.0.1");

    wait_for_attempts(&f, 1, &s);
    /* Later clicks make no delivery for an inactive webhook. */
    push_click(&f, "abc", false, NULL);
    sleep(2);
    assert_int_equal(receiver_count(&f.rv), 1);
    read_back(&f, &s);
    assert_int_equal(s.n_attempts, 1);
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_FAILED);

    storage_reader_t *r;
    storage_bytes_t v;
    webhook_t w;
    assert_int_equal(storage_reader_open(f.storage, &r), STORAGE_OK);
    storage_txn_t *txn = storage_reader_begin(r);
    assert_int_equal(storage_record_get(txn, STORAGE_DB_WEBHOOKS, HOOK_GUID, strlen(HOOK_GUID), &v),
                     STORAGE_OK);
    assert_int_equal(webhook_decode(&w, v.ptr, v.len, NULL, 0), 0);
    storage_reader_end(r);
    storage_reader_close(r);
    assert_false(w.is_active);
    assert_non_null(w.deactivated_reason);
    assert_non_null(strstr(w.deactivated_reason, "410"));
    webhook_clear(&w);
    fixture_done(&f);
}

static void webhook_dispatcher_oauth_token_cached_and_sent(void **state)
{
    static const int script[] = {200};
    fixture_t f;
    char url[128], token_url[128];
    seen_t s;

    fixture_init(&f, script, 1, (const uint32_t[]){1}, 1, true);
    hook_url(&f, url, sizeof url, "127.0.0.1");
    snprintf(token_url, sizeof token_url, "http://127.0.0.1:%u/token", (unsigned)f.rv.port);
    put_webhook_oauth(&f, url, false, token_url);
    put_link(&f, "abc", GROUP_GUID, "https://example.com/");
    dispatcher_up(&f);
    push_click(&f, "abc", false, NULL);
    push_click(&f, "abc", false, NULL);

    assert_true(wait_for_requests(&f.rv, 2, 10000));
    wait_for_attempts(&f, 2, &s);
    /* One token for both deliveries, fetched with HTTP Basic: base64 of
     * "cid:c:secret". */
    assert_int_equal(f.rv.n_token_reqs, 1);
    assert_string_equal(f.rv.token_auth, "Basic Y2lkOmM6c2VjcmV0");
    assert_string_equal(f.rv.token_body, "grant_type=client_credentials");
    assert_string_equal(f.rv.reqs[0].authorization, "Bearer tok-123");
    assert_string_equal(f.rv.reqs[1].authorization, "Bearer tok-123");
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_DELIVERED);
    assert_int_equal(s.attempts[1].outcome, STORAGE_OUTCOME_DELIVERED);
    fixture_done(&f);
}

static void webhook_dispatcher_oauth_failure_is_a_failed_attempt(void **state)
{
    static const int script[] = {200};
    fixture_t f;
    char url[128], token_url[128];
    seen_t s;

    fixture_init(&f, script, 1, NULL, 0, true);
    f.rv.token_status = 500;
    hook_url(&f, url, sizeof url, "127.0.0.1");
    snprintf(token_url, sizeof token_url, "http://127.0.0.1:%u/token", (unsigned)f.rv.port);
    put_webhook_oauth(&f, url, false, token_url);
    put_link(&f, "abc", GROUP_GUID, "https://example.com/");
    dispatcher_up(&f);
    push_click(&f, "abc", false, NULL);

    wait_for_attempts(&f, 1, &s);
    assert_int_equal(receiver_count(&f.rv), 0);
    assert_int_equal(s.attempts[0].outcome, STORAGE_OUTCOME_FAILED);
    assert_non_null(strstr(s.errors[0], "OAuth token"));
    assert_non_null(strstr(s.errors[0], "500"));
    fixture_done(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webhook_dispatcher_delivers_one_signed_post),
        cmocka_unit_test(webhook_dispatcher_hookless_fanout_skips_to_the_end),
        cmocka_unit_test(webhook_dispatcher_hookless_mark_wakes_the_poll),
        cmocka_unit_test(webhook_dispatcher_retry_keeps_id_with_fresh_timestamp),
        cmocka_unit_test(webhook_dispatcher_gives_up_after_schedule),
        cmocka_unit_test(webhook_dispatcher_does_not_follow_redirects),
        cmocka_unit_test(webhook_dispatcher_resumes_after_restart),
        cmocka_unit_test(webhook_dispatcher_refuses_blocked_address_at_connect),
        cmocka_unit_test(webhook_dispatcher_410_deactivates),
        cmocka_unit_test(webhook_dispatcher_oauth_token_cached_and_sent),
        cmocka_unit_test(webhook_dispatcher_oauth_failure_is_a_failed_attempt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
