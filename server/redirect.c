/*
 * server/redirect: GET|HEAD /{code}. The hot path: look the code up in the
 * worker's read transaction, build the Location, find the visitor's country,
 * hand the engagement to the writer's queue, answer. Nothing here waits on disk
 * or takes a lock shared with other workers; the only allocations come from
 * h2o's request pool, but for a long URL that does not fit beside its query
 * in the click queue (over 4 KB together), which the queue copies to the heap.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "parse.h"

static const char not_found_page[] =
    "<!doctype html><html lang=en><meta charset=utf-8>"
    "<meta name=viewport content=\"width=device-width\"><title>Link not found</title>"
    "<h1>Link not found</h1><p>This short link does not exist or was removed.</p></html>\n";

static int send_not_found(worker_t *w, h2o_req_t *req)
{
    worker_count(&w->metrics.not_found);
    req->res.status = 404;
    req->res.reason = "Not Found";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/html; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    req->res.content_length = sizeof(not_found_page) - 1;
    h2o_send_inline(req, not_found_page, sizeof(not_found_page) - 1);
    return 0;
}

static const char *reason_of(int status)
{
    switch (status) {
    case 301:
        return "Moved Permanently";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    default:
        return "Found";
    }
}

static int status_slot(int status)
{
    return status == 301 ? 0 : status == 307 ? 2 : status == 308 ? 3 : 1;
}

static h2o_iovec_t header_value(h2o_req_t *req, const h2o_token_t *token)
{
    ssize_t i = h2o_find_header(&req->headers, token, -1);

    return i == -1 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

/* X-Forwarded-For as one list. A proxy may add its own line rather than
 * extend the client's, and the lines in order are one comma-separated list
 * (RFC 9110, 5.3): reading only the first would take the client's word. */
static h2o_iovec_t forwarded_for(h2o_req_t *req)
{
    static const char name[] = "x-forwarded-for";
    size_t total = 0, lines = 0;
    ssize_t i = -1;

    while ((i = h2o_find_header_by_str(&req->headers, name, sizeof(name) - 1, i)) != -1) {
        total += req->headers.entries[i].value.len + 2;
        lines++;
    }
    if (lines == 0)
        return h2o_iovec_init(NULL, 0);
    i = h2o_find_header_by_str(&req->headers, name, sizeof(name) - 1, -1);
    if (lines == 1)
        return req->headers.entries[i].value;

    char *buf = h2o_mem_alloc_pool(&req->pool, total);
    size_t n = 0;
    for (; i != -1; i = h2o_find_header_by_str(&req->headers, name, sizeof(name) - 1, i)) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (n > 0) {
            memcpy(buf + n, ", ", 2);
            n += 2;
        }
        memcpy(buf + n, v.base, v.len);
        n += v.len;
    }
    return h2o_iovec_init(buf, n);
}

/* Visitors send a few hundred distinct User-Agent strings between them, and
 * classifying one scans it for dozens of tokens, so each worker thread keeps
 * its recent answers, by exact string, in a small 4-way set-associative cache.
 * A direct-mapped one let two of four common browsers share a slot and evict
 * each other on every request. The tags of a set share one cache line. */
#define UA_CACHE_SETS 32
#define UA_CACHE_WAYS 4
#define UA_CACHE_MAX  320

typedef struct ua_cached {
    uint16_t len; /* 0: empty */
    uint8_t device;
    char text[UA_CACHE_MAX];
} ua_cached_t;

typedef struct ua_set {
    uint64_t tag[UA_CACHE_WAYS];
    uint8_t next; /* the way to replace next (round robin) */
} ua_set_t;

static _Thread_local ua_set_t ua_sets[UA_CACHE_SETS];
static _Thread_local ua_cached_t ua_cache[UA_CACHE_SETS][UA_CACHE_WAYS];

static uint64_t ua_hash(const char *p, size_t n)
{
    uint64_t h = n * UINT64_C(0x9E3779B97F4A7C15), word;

    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&word, p, 8);
        h = (h ^ word) * UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 32;
    }
    word = 0;
    memcpy(&word, p, n);
    h = (h ^ word) * UINT64_C(0xc4ceb9fe1a85ec53);
    return h ^ (h >> 29);
}

static uint8_t classify_user_agent(h2o_iovec_t ua)
{
    if (ua.len == 0 || ua.len > UA_CACHE_MAX)
        return (uint8_t)parse_user_agent(ua.base, ua.len);
    uint64_t h = ua_hash(ua.base, ua.len);
    ua_set_t *set = &ua_sets[h % UA_CACHE_SETS];
    ua_cached_t *ways = ua_cache[h % UA_CACHE_SETS];
    for (unsigned i = 0; i < UA_CACHE_WAYS; i++) {
        ua_cached_t *c = &ways[i];
        if (set->tag[i] == h && c->len == ua.len && memcmp(c->text, ua.base, ua.len) == 0)
            return c->device;
    }
    ua_cached_t *c = &ways[set->next];
    set->tag[set->next] = h;
    set->next = (uint8_t)((set->next + 1) % UA_CACHE_WAYS);
    c->device = (uint8_t)parse_user_agent(ua.base, ua.len);
    c->len = (uint16_t)ua.len;
    memcpy(c->text, ua.base, ua.len);
    return c->device;
}

/* Visitors come back, and one address looks up the same country until the
 * database is replaced, so each worker keeps recent answers by exact address
 * in a 4-way set-associative cache (the tree walk in libmaxminddb was the
 * worker's largest user-space cost after the socket calls). The cache belongs
 * to one database: it is emptied when the database pointer or the app epoch
 * (bumped when a reload retires the old one) changes, so an address freed and
 * reused for a new database cannot answer from the old one. */
#define GEO_CACHE_SETS 2048
#define GEO_CACHE_WAYS 4

typedef struct geo_cached {
    geoip_addr_t addr;
    bool used;
    bool found;
    char country[3];
} geo_cached_t;

typedef struct geo_cache {
    const geoip_db_t *db;
    unsigned long epoch;
    uint8_t next[GEO_CACHE_SETS]; /* the way to replace next, per set */
    geo_cached_t slot[GEO_CACHE_SETS][GEO_CACHE_WAYS];
} geo_cache_t;

static _Thread_local geo_cache_t geo_cache;

static bool addr_equal(const geoip_addr_t *a, const geoip_addr_t *b)
{
    size_t n = a->family == AF_INET ? 4 : 16;
    return a->family == b->family && memcmp(a->bytes, b->bytes, n) == 0;
}

static bool cached_country(const geoip_db_t *db, unsigned long epoch, const geoip_addr_t *a,
                           char country[3])
{
    geo_cache_t *c = &geo_cache;
    size_t n = a->family == AF_INET ? 4 : 16;

    if (c->db != db || c->epoch != epoch) {
        memset(c, 0, sizeof(*c));
        c->db = db;
        c->epoch = epoch;
    }
    uint64_t h = ua_hash((const char *)a->bytes, n) ^ a->family;
    size_t set = h % GEO_CACHE_SETS;
    geo_cached_t *ways = c->slot[set];
    for (unsigned i = 0; i < GEO_CACHE_WAYS; i++) {
        if (ways[i].used && addr_equal(&ways[i].addr, a)) {
            memcpy(country, ways[i].country, 3);
            return ways[i].found;
        }
    }
    geo_cached_t *e = &ways[c->next[set]];
    c->next[set] = (uint8_t)((c->next[set] + 1) % GEO_CACHE_WAYS);
    e->found = geoip_country(db, a, country);
    e->addr = *a;
    e->used = true;
    memcpy(e->country, country, 3);
    return e->found;
}

static void find_country(worker_t *w, h2o_req_t *req, char country[3])
{
    const app_t *app = w->app;
    struct sockaddr_storage ss;
    geoip_addr_t peer;

    country[0] = '\0';
    geoip_db_t *db = atomic_load_explicit(&((app_t *)app)->geoip, memory_order_acquire);
    if (db == NULL)
        return;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl == 0 || !geoip_addr_from_sockaddr(&peer, (struct sockaddr *)&ss))
        return;
    geoip_addr_t visitor = peer;
    if (app->cfg->n_trusted > 0) {
        h2o_iovec_t xff = forwarded_for(req);
        visitor = geoip_visitor(&peer, xff.base, xff.len, app->cfg->trusted, app->cfg->n_trusted);
    }
    unsigned long epoch = atomic_load_explicit(&w->app->epoch, memory_order_relaxed);
    if (!cached_country(db, epoch, &visitor, country))
        worker_count(&w->metrics.no_country);
}

/* The parameters passed on, as the target got them: the part of the Location
 * that parse_redirect_target added to the long URL (encoded, the QR marker
 * gone). Past STORAGE_QUERY_MAX they are cut at a parameter boundary, never
 * inside a percent-escape. */
static h2o_iovec_t passed_params(const storage_link_t *link, const char *location, size_t len)
{
    const char *url = link->long_url.ptr;
    const char *hash = memchr(url, '#', link->long_url.len);
    size_t base = hash != NULL ? (size_t)(hash - url) : link->long_url.len;
    size_t fragment = link->long_url.len - base;

    if (len <= link->long_url.len)
        return h2o_iovec_init(NULL, 0);
    /* A separator was added unless the long URL already ended in one. */
    bool separator = !(base > 0 && (url[base - 1] == '?' || url[base - 1] == '&'));
    const char *p = location + base + separator;
    size_t n = len - fragment - base - separator;
    if (n > STORAGE_QUERY_MAX) {
        n = STORAGE_QUERY_MAX;
        while (n > 0 && p[n] != '&')
            n--;
    }
    return h2o_iovec_init(p, n);
}

/* Queues the engagement with its link as served (read in the worker's open
 * transaction, so the writer need not look it up again). A full queue is
 * counted in the storage statistics and logged once a second by the server,
 * not once per click. */
#define BACKLOG_PAUSE_NS   50000L
#define BACKLOG_PAUSES_MAX 100 /* 5 ms at most per click */

static void record(worker_t *w, h2o_req_t *req, const storage_link_t *link, storage_kind_t kind,
                   const char *referrer, h2o_iovec_t passed)
{
    storage_engagement_t e = {0};

    e.time_us = util_now_us();
    util_uuid7(e.event_id, e.time_us);
    e.kind = (uint8_t)kind;
    memcpy(e.code, link->code.ptr, link->code.len);
    e.code[link->code.len] = '\0';
    memcpy(e.group_guid, link->group_guid, sizeof(e.group_guid));
    e.long_url = link->long_url;

    h2o_iovec_t ua = header_value(req, H2O_TOKEN_USER_AGENT);
    e.device = classify_user_agent(ua);
    e.bot = e.device == STORAGE_DEVICE_BOT;
    if (referrer != NULL) {
        snprintf(e.referrer, sizeof(e.referrer), "%s", referrer);
    } else {
        h2o_iovec_t ref = header_value(req, H2O_TOKEN_REFERER);
        parse_referrer_host(ref.base, ref.len, e.referrer, sizeof(e.referrer));
    }
    find_country(w, req, e.country);
    e.query = (storage_bytes_t){passed.base, passed.len};

    if (e.bot)
        worker_count(&w->metrics.bots);
    (void)storage_engagement_push(w->app->storage, &e);
    /* Backpressure: with the writer behind (a burst, or counters spread over
     * millions of links), this worker pauses after queuing its click, which
     * slows the clicks down and leaves the core to the writer, instead of
     * letting the queue fill and drop them. Past half full, one short pause
     * per click; past seven eighths, it waits until the writer has brought the
     * queue back under that (5 ms at most per click), since many workers can
     * outrun a writer even pausing. Waiting from half full already held every
     * request behind the writer's longest groups. */
    unsigned backlog = storage_engagement_backlog(w->app->storage);
    if (backlog >= 4) {
        struct timespec pause = {0, BACKLOG_PAUSE_NS};
        worker_count(&w->metrics.backlog_pauses);
        nanosleep(&pause, NULL);
        for (int i = 1; i < BACKLOG_PAUSES_MAX && backlog >= 7; i++) {
            nanosleep(&pause, NULL);
            backlog = storage_engagement_backlog(w->app->storage);
        }
    }
}

int redirect_handle(worker_t *w, h2o_req_t *req, const char *code, size_t code_len)
{
    return redirect_serve(w, req, code, code_len, STORAGE_KIND_CLICK, NULL);
}

int redirect_serve(worker_t *w, h2o_req_t *req, const char *code, size_t code_len,
                   storage_kind_t kind, const char *referrer)
{
    bool head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    storage_link_t link;

    if (!head && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
        return send_not_found(w, req);
    /* "/abc/" is what people type after copying "/abc" from some apps. */
    if (code_len > 1 && code[code_len - 1] == '/')
        code_len--;
    if (!parse_code_plausible(code, code_len))
        return send_not_found(w, req);

    storage_txn_t *txn = storage_reader_begin(w->reader);
    if (txn == NULL || storage_link_get(txn, code, code_len, &link) != STORAGE_OK) {
        if (txn != NULL)
            storage_reader_end(w->reader);
        return send_not_found(w, req);
    }

    const char *query = NULL;
    size_t query_len = 0;
    if (req->query_at != SIZE_MAX) {
        query = req->path.base + req->query_at + 1;
        query_len = req->path.len - req->query_at - 1;
    }
    /* Worst case every visitor byte is percent-encoded, plus a separator. */
    size_t cap = link.long_url.len + query_len * 3 + 2;
    char *location = h2o_mem_alloc_pool(&req->pool, cap);
    bool is_qr = false;
    size_t location_len = parse_redirect_target(link.long_url.ptr, link.long_url.len, query,
                                                query_len, location, cap, &is_qr);
    int status = link.redirect_status != 0 ? link.redirect_status : w->app->cfg->redirect_status;
    if (location_len == 0) {
        storage_reader_end(w->reader);
        return send_not_found(w, req);
    }

    /* The QR marker makes a plain click a scan; a bio tap stays a bio tap. */
    if (is_qr && kind == STORAGE_KIND_CLICK)
        kind = STORAGE_KIND_QR_SCAN;
    if (head)
        worker_count(&w->metrics.head_requests);
    else
        record(w, req, &link, kind, referrer, passed_params(&link, location, location_len));
    storage_reader_end(w->reader);
    worker_count(&w->metrics.redirects[status_slot(status)]);

    req->res.status = status;
    req->res.reason = reason_of(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, location, location_len);
    /* Temporary redirects must reach us every time or clicks go uncounted;
     * permanent ones may be cached briefly, as the operator chose them. */
    if (status == 301 || status == 308)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                       H2O_STRLIT("private, max-age=300"));
    else
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                       H2O_STRLIT("private, no-store"));
    /* With the length said (h2o_send_inline leaves it unknown, which ends an
     * HTTP/1 connection) and no body buffer, keep-alive holds and the answer
     * leaves in one writev. */
    app_send_empty(req);
    return 0;
}
