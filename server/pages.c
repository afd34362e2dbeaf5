/*
 * server/pages: /app (the settings page, from web/'s embedded assets) and
 * /metrics (Prometheus text format, read from atomics: scraping costs the
 * redirect path nothing but the counters it already bumps).
 */
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "web.h"

static void security_headers(h2o_req_t *req)
{
    static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                              "img-src 'self' data:; connect-src 'self'; form-action 'none'; "
                              "frame-ancestors 'none'; base-uri 'none'";

    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0,
                          NULL, csp, sizeof(csp) - 1);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0,
                          NULL, H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-frame-options"), 0, NULL,
                          H2O_STRLIT("DENY"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
}

int app_page_handle(worker_t *w, h2o_req_t *req, const char *path, size_t path_len)
{
    const web_asset_t *asset;

    (void)w;
    if (path_len <= 1)
        asset = web_asset_find("index.html", 10);
    else
        asset = web_asset_find(path + 1, path_len - 1);
    security_headers(req);
    if (asset == NULL) {
        req->res.status = 404;
        req->res.reason = "Not Found";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/plain; charset=utf-8"));
        req->res.content_length = sizeof("not found\n") - 1;
        h2o_send_inline(req, H2O_STRLIT("not found\n"));
        return 0;
    }
    const char *type = web_content_type(asset->name);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    req->res.content_length = asset->size;
    h2o_send_inline(req, (const char *)asset->data, asset->size);
    return 0;
}

static size_t put(char *buf, size_t cap, size_t n, const char *name, const char *labels,
                  unsigned long long v)
{
    if (n >= cap)
        return n;
    int k = snprintf(buf + n, cap - n, "%s%s %llu\n", name, labels, v);
    return k > 0 ? n + (size_t)k : n;
}

/* The # HELP and # TYPE lines that open a metric family. */
static size_t family(char *buf, size_t cap, size_t n, const char *name, const char *type,
                     const char *help)
{
    if (n >= cap)
        return n;
    int k = snprintf(buf + n, cap - n, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    return k > 0 ? n + (size_t)k : n;
}

/* A count of microseconds as seconds, exactly (no float rounding). */
static size_t put_seconds(char *buf, size_t cap, size_t n, const char *name, uint64_t us)
{
    if (n >= cap)
        return n;
    int k = snprintf(buf + n, cap - n, "%s %llu.%06llu\n", name, (unsigned long long)(us / 1000000),
                     (unsigned long long)(us % 1000000));
    return k > 0 ? n + (size_t)k : n;
}

/* Webhook attempts by outcome, their round trip as a Prometheus histogram
 * (cumulative buckets in seconds), the queue of deliveries and what is in
 * flight. */
static size_t webhook_metrics(app_t *app, char *buf, size_t cap, size_t n)
{
    webhook_stats_t ws;
    char labels[48];
    uint64_t cumulative = 0;

    webhook_dispatcher_stats(atomic_load(&app->dispatcher), &ws);
    n = family(buf, cap, n, "shortlinkd_webhook_attempts_total", "counter",
               "Webhook delivery attempts, by outcome.");
    n = put(buf, cap, n, "shortlinkd_webhook_attempts_total", "{outcome=\"delivered\"}",
            ws.delivered);
    n = put(buf, cap, n, "shortlinkd_webhook_attempts_total", "{outcome=\"retry\"}", ws.retried);
    n = put(buf, cap, n, "shortlinkd_webhook_attempts_total", "{outcome=\"failed\"}", ws.failed);
    n = family(buf, cap, n, "shortlinkd_webhook_attempt_seconds", "histogram",
               "Round trip of webhook delivery attempts.");
    for (size_t i = 0; i < WEBHOOK_LATENCY_BUCKETS; i++) {
        cumulative += ws.latency[i];
        if (i + 1 < WEBHOOK_LATENCY_BUCKETS)
            snprintf(labels, sizeof(labels), "{le=\"%g\"}", webhook_latency_bounds_ms[i] / 1000.0);
        else
            snprintf(labels, sizeof(labels), "{le=\"+Inf\"}");
        n = put(buf, cap, n, "shortlinkd_webhook_attempt_seconds_bucket", labels, cumulative);
    }
    if (n < cap) {
        int k = snprintf(buf + n, cap - n, "shortlinkd_webhook_attempt_seconds_sum %.3f\n",
                         ws.latency_sum_ms / 1000.0);
        n = k > 0 ? n + (size_t)k : n;
    }
    n = put(buf, cap, n, "shortlinkd_webhook_attempt_seconds_count", "", cumulative);
    n = family(buf, cap, n, "shortlinkd_webhook_deliveries_pending", "gauge",
               "Webhook deliveries waiting for an attempt.");
    n = put(buf, cap, n, "shortlinkd_webhook_deliveries_pending", "", ws.pending);
    n = family(buf, cap, n, "shortlinkd_webhook_deliveries_failed", "gauge",
               "Webhook deliveries given up after their last retry.");
    n = put(buf, cap, n, "shortlinkd_webhook_deliveries_failed", "", ws.given_up);
    n = family(buf, cap, n, "shortlinkd_webhook_requests_in_flight", "gauge",
               "Webhook requests being sent now.");
    n = put(buf, cap, n, "shortlinkd_webhook_requests_in_flight", "", ws.in_flight);
    n = family(buf, cap, n, "shortlinkd_webhook_token_requests_total", "counter",
               "OAuth token requests made for webhooks.");
    n = put(buf, cap, n, "shortlinkd_webhook_token_requests_total", "", ws.token_fetches);
    return n;
}

/* Time from click to durable commit as a Prometheus histogram (cumulative
 * buckets in seconds); storage keeps the per-bucket counts. */
static size_t click_to_commit(char *buf, size_t cap, size_t n, const storage_stats_t *st)
{
    static const char name[] = "shortlinkd_click_to_commit_seconds";
    unsigned long long cum = 0;
    char label[48];

    n = family(buf, cap, n, name, "histogram",
               "Time from a click to the group commit that made it durable.");
    for (unsigned i = 0; i < STORAGE_LATENCY_BUCKETS; i++) {
        uint64_t le = storage_latency_bucket_le(i);
        cum += st->click_to_commit[i];
        if (le == UINT64_MAX)
            snprintf(label, sizeof(label), "{le=\"+Inf\"}");
        else
            snprintf(label, sizeof(label), "{le=\"%llu.%06llu\"}",
                     (unsigned long long)(le / 1000000), (unsigned long long)(le % 1000000));
        n = put(buf, cap, n, "shortlinkd_click_to_commit_seconds_bucket", label, cum);
    }
    if (n < cap) {
        int k = snprintf(buf + n, cap - n, "%s_sum %llu.%06llu\n%s_count %llu\n", name,
                         (unsigned long long)(st->click_to_commit_us_total / 1000000),
                         (unsigned long long)(st->click_to_commit_us_total % 1000000), name, cum);
        n = k > 0 ? n + (size_t)k : n;
    }
    return n;
}

/* The redirect path's counters of every worker, added up. A worker's own
 * counter is written by that worker alone, so a scrape reads each once. */
static void sum_workers(const app_t *app, worker_metrics_t *out)
{
    unsigned long r[4] = {0}, not_found = 0, head = 0, bots = 0, no_country = 0, pauses = 0;

    for (unsigned i = 0; i < app->n_workers; i++) {
        worker_metrics_t *m = &app->workers[i].metrics;
        for (int k = 0; k < 4; k++)
            r[k] += atomic_load_explicit(&m->redirects[k], memory_order_relaxed);
        not_found += atomic_load_explicit(&m->not_found, memory_order_relaxed);
        head += atomic_load_explicit(&m->head_requests, memory_order_relaxed);
        bots += atomic_load_explicit(&m->bots, memory_order_relaxed);
        no_country += atomic_load_explicit(&m->no_country, memory_order_relaxed);
        pauses += atomic_load_explicit(&m->backlog_pauses, memory_order_relaxed);
    }
    for (int k = 0; k < 4; k++)
        atomic_init(&out->redirects[k], r[k]);
    atomic_init(&out->not_found, not_found);
    atomic_init(&out->head_requests, head);
    atomic_init(&out->bots, bots);
    atomic_init(&out->no_country, no_country);
    atomic_init(&out->backlog_pauses, pauses);
}

/* A family of one unlabelled sample. */
static size_t put_one(char *buf, size_t cap, size_t n, const char *name, const char *type,
                      const char *help, unsigned long long v)
{
    n = family(buf, cap, n, name, type, help);
    return put(buf, cap, n, name, "", v);
}

int metrics_handle(worker_t *w, h2o_req_t *req)
{
    const app_metrics_t *m = &w->app->metrics;
    static const char *const statuses[] = {"301", "302", "307", "308"};
    storage_stats_t st;
    worker_metrics_t wm;
    char labels[32];
    size_t cap = 16384, n = 0;
    char *buf = h2o_mem_alloc_pool(&req->pool, cap);

    storage_get_stats(w->app->storage, &st);
    sum_workers(w->app, &wm);
    n = family(buf, cap, n, "shortlinkd_redirects_total", "counter",
               "Short link requests answered, by status (404: no such link).");
    for (int i = 0; i < 4; i++) {
        snprintf(labels, sizeof(labels), "{status=\"%s\"}", statuses[i]);
        n = put(buf, cap, n, "shortlinkd_redirects_total", labels, atomic_load(&wm.redirects[i]));
    }
    n = put(buf, cap, n, "shortlinkd_redirects_total", "{status=\"404\"}",
            atomic_load(&wm.not_found));
    n = put_one(buf, cap, n, "shortlinkd_head_requests_total", "counter",
                "HEAD requests for short links (redirected, not recorded).",
                atomic_load(&wm.head_requests));
    n = put_one(buf, cap, n, "shortlinkd_bot_visits_total", "counter",
                "Redirects whose User-Agent is a bot.", atomic_load(&wm.bots));
    n = put_one(buf, cap, n, "shortlinkd_geoip_no_country_total", "counter",
                "Visitor addresses the GeoIP database has no country for.",
                atomic_load(&wm.no_country));
    n = put_one(buf, cap, n, "shortlinkd_backlog_pauses_total", "counter",
                "Redirects that paused because more than half the click queue waited for the "
                "writer.",
                atomic_load(&wm.backlog_pauses));
    n = put_one(buf, cap, n, "shortlinkd_api_requests_total", "counter", "API requests.",
                atomic_load(&m->api_requests));
    n = put_one(buf, cap, n, "shortlinkd_engagements_recorded_total", "counter",
                "Engagements made durable.", st.engagements_recorded);
    n = put_one(buf, cap, n, "shortlinkd_engagements_dropped_total", "counter",
                "Engagements lost: queue full or a failed commit.", st.engagements_dropped);
    n = put_one(buf, cap, n, "shortlinkd_commits_total", "counter", "Group commits.", st.commits);
    n = family(buf, cap, n, "shortlinkd_commit_seconds_total", "counter",
               "Time spent in group commits, fdatasync included.");
    n = put_seconds(buf, cap, n, "shortlinkd_commit_seconds_total", st.commit_us_total);
    n = put_one(buf, cap, n, "shortlinkd_last_commit_batch", "gauge",
                "Engagements and jobs in the last group commit.", st.last_batch);
    n = put_one(buf, cap, n, "shortlinkd_queue_depth", "gauge",
                "Engagements waiting for the writer.", st.queue_depth);
    n = put_one(buf, cap, n, "shortlinkd_lmdb_map_used_bytes", "gauge",
                "Bytes of the LMDB map in use.", st.map_used);
    n = put_one(buf, cap, n, "shortlinkd_lmdb_map_size_bytes", "gauge", "Size of the LMDB map.",
                st.map_size);
    n = put_one(buf, cap, n, "shortlinkd_store_warm_bytes", "gauge",
                "Bytes of the store mapped into memory by the start-up warm-up.", st.warm_bytes);
    n = put_one(buf, cap, n, "shortlinkd_store_warm_done", "gauge",
                "1 once the start-up warm-up has finished (0 while it runs or with --no-warm).",
                st.warm_done ? 1 : 0);
    n = click_to_commit(buf, cap, n, &st);
    n = webhook_metrics(w->app, buf, cap, n);
    if (n > cap)
        n = cap;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4"));
    req->res.content_length = n;
    h2o_send_inline(req, buf, n);
    return 0;
}
