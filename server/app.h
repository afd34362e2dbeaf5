/*
 * server/app: the state the HTTP workers share, and the entry points of the
 * handlers. Internal to server/.
 *
 * Everything in app_t is set up before the first worker starts and read-only
 * afterwards, except the atomics (counters, the GeoIP database pointer, the
 * dispatcher pointer) and `stopping`.
 */
#ifndef SHORTLINKD_APP_H
#define SHORTLINKD_APP_H

#include <h2o.h>
#include <h2o/http1.h>
#include <h2o/multithread.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdatomic.h>

#include "config.h"
#include "geoip.h"
#include "storage.h"
#include "util.h"
#include "webhooks.h"

/* Counters bumped outside the redirect path (the API, for one), shared. */
typedef struct app_metrics {
    atomic_ulong redirects[4]; /* by status: 301, 302, 307, 308 */
    atomic_ulong not_found;
    atomic_ulong head_requests;
    atomic_ulong bots;
    atomic_ulong no_country;
    atomic_ulong api_requests;
} app_metrics_t;

/* The redirect path's counters, one set per worker: only the worker's own
 * thread writes them (a relaxed load and store, no locked instruction and no
 * cache line shared with another worker); /metrics sums them. */
typedef struct worker_metrics {
    atomic_ulong redirects[4]; /* by status: 301, 302, 307, 308 */
    atomic_ulong not_found;
    atomic_ulong head_requests;
    atomic_ulong bots;
    atomic_ulong no_country;
    atomic_ulong backlog_pauses; /* redirects that paused for the writer */
} worker_metrics_t;

/* Adds one to a counter of the calling worker's own worker_metrics_t. */
static inline void worker_count(atomic_ulong *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

struct worker;

typedef struct app {
    const config_t *cfg;
    storage_t *storage;
    _Atomic(geoip_db_t *) geoip; /* NULL: run without countries */
    _Atomic(webhook_dispatcher_t *) dispatcher;
    char organization_guid[UTIL_GUID_LEN + 1];
    char default_group_guid[UTIL_GUID_LEN + 1];
    h2o_globalconf_t h2o;
    app_metrics_t metrics;
    struct worker *workers; /* set before the workers start, for /metrics */
    unsigned n_workers;
    SSL_CTX *tls;       /* NULL without --tls-listen */
    atomic_ulong epoch; /* bumped when a shared object is retired */
    volatile sig_atomic_t stopping;
    volatile sig_atomic_t reload;
} app_t;

/* One HTTP worker: its own event loop, h2o context, read transaction and
 * receiver for results coming back from the storage writer. */
typedef struct worker {
    app_t *app;
    unsigned index;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_accept_ctx_t tls_accept_ctx;
    atomic_ulong seen_epoch; /* the app epoch this worker last passed through */
    worker_metrics_t metrics;
    storage_reader_t *reader;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t results;
    pthread_t thread;
    int listen_fd;
    int tls_fd; /* -1 without TLS */
} worker_t;

/* The worker running the current thread's event loop. */
/* Ends req with its status and headers and no body. h2o_send_inline(req, "", 0)
 * hands HTTP/1 a trailing empty buffer, which its writer counts as unsent:
 * every such answer waited a turn of the event loop for EPOLLOUT and made a
 * second writev and two epoll_ctl calls. Sending no buffer at all avoids it. */
void app_send_empty(h2o_req_t *req);
worker_t *app_worker(h2o_req_t *req);

/* Handlers: each answers the request (returning 0) or returns -1 to decline. */
int redirect_handle(worker_t *w, h2o_req_t *req, const char *code, size_t code_len);
/* The redirect of one code with a given kind of engagement; referrer, when not
 * NULL, replaces the Referer header's host (a bio page names itself). */
int redirect_serve(worker_t *w, h2o_req_t *req, const char *code, size_t code_len,
                   storage_kind_t kind, const char *referrer);
/* /qr/{code}.png|svg: the public QR image of a link (server/qr.c). */
int qr_image_handle(worker_t *w, h2o_req_t *req, const char *rest, size_t len);
/* /m/{handle} and /m/{handle}/{code}: link-in-bio pages and their buttons
 * (server/bio.c). */
int bio_page_handle(worker_t *w, h2o_req_t *req, const char *rest, size_t len);
int api_handle(worker_t *w, h2o_req_t *req, const char *path, size_t path_len);
int app_page_handle(worker_t *w, h2o_req_t *req, const char *path, size_t path_len);
int metrics_handle(worker_t *w, h2o_req_t *req);
void api_on_results(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* Creates the organization, default group and admin token on first start, and
 * loads their guids. Runs before the writer starts. */
int bootstrap(app_t *app);
/* The token subcommands. */
int token_command(const config_t *cfg);
/* The backup subcommand: a compacting hot copy into an empty directory. */
int backup_command(const config_t *cfg);

/* Runs the server until SIGTERM or SIGINT; returns the exit status. */
int server_run(const config_t *cfg);

#endif
