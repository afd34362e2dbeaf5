/*
 * server/http: process lifecycle and the HTTP workers. One h2o event loop per
 * worker thread, each on its own SO_REUSEPORT listening socket, all sharing one
 * immutable h2o configuration. Routing happens in one handler at "/".
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "log.h"

typedef struct root_handler {
    h2o_handler_t super;
    app_t *app;
} root_handler_t;

static app_t *the_app; /* for the signal handler only */

worker_t *app_worker(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(worker_t, ctx, req->conn->ctx);
}

void app_send_empty(h2o_req_t *req)
{
    static h2o_generator_t generator = {NULL, NULL};

    req->res.content_length = 0;
    h2o_start_response(req, &generator);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

static int send_text(h2o_req_t *req, int status, const char *reason, const char *type,
                     const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    worker_t *w = app_worker(req);
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *path = req->path.base;

    if (path_len == 0 || path[0] != '/')
        return -1;
    if (h2o_memis(path, path_len, H2O_STRLIT("/healthz")))
        return send_text(req, 200, "OK", "text/plain; charset=utf-8", H2O_STRLIT("ok\n"));
    if (h2o_memis(path, path_len, H2O_STRLIT("/metrics")))
        return metrics_handle(w, req);
    if (path_len >= 3 && memcmp(path, "/v4", 3) == 0 && (path_len == 3 || path[3] == '/'))
        return api_handle(w, req, path + 3, path_len - 3);
    if (path_len >= 4 && memcmp(path, "/app", 4) == 0 && (path_len == 4 || path[4] == '/'))
        return app_page_handle(w, req, path + 4, path_len - 4);
    if (path_len > 4 && memcmp(path, "/qr/", 4) == 0)
        return qr_image_handle(w, req, path + 4, path_len - 4);
    if (path_len > 3 && memcmp(path, "/m/", 3) == 0)
        return bio_page_handle(w, req, path + 3, path_len - 3);
    if (path_len == 1) {
        static const char home[] =
            "<!doctype html><html lang=en><meta charset=utf-8><title>shortlinkd</title>"
            "<p>This is a shortlinkd server. Admins: <a href=\"/app\">settings</a>.</p></html>\n";
        return send_text(req, 200, "OK", "text/html; charset=utf-8", home, sizeof(home) - 1);
    }
    return redirect_handle(w, req, path + 1, path_len - 1);
}

/* listener->data is the accept context: plain or TLS. The worker accepts by
 * itself rather than through h2o_evloop_socket_accept, which asks for no peer
 * address (so finding the visitor's country cost a getpeername per
 * connection) and sets TCP_NODELAY again on a socket that already has it from
 * the listener. */
static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_accept_ctx_t *ctx = listener->data;
    int listen_fd = h2o_socket_get_fd(listener);

    if (err != NULL)
        return;
    /* Accept everything pending: one wake-up may stand for many connections. */
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(listen_fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        h2o_socket_t *sock =
            h2o_evloop_socket_create(ctx->ctx->loop, fd, H2O_SOCKET_FLAG_IS_ACCEPTED_CONNECTION);
        if (len > 0 && len <= sizeof(peer))
            h2o_socket_setpeername(sock, (struct sockaddr *)&peer, len);
        h2o_accept(ctx, sock);
    }
}

/* Every worker's socket shares the port through SO_REUSEPORT, which would let a
 * second shortlinkd of the same user share it too and take half the traffic.
 * A bind without the option first tells whether anyone holds the port. */
static int port_free(const struct addrinfo *ai, char *err, size_t errlen, const char *host,
                     uint16_t port)
{
    int one = 1, fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = 0;

    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        snprintf(err, errlen, "listen on %s:%u: %s%s", host, port, strerror(errno),
                 errno == EADDRINUSE ? " (is another shortlinkd running?)" : "");
        rc = -1;
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

static int open_listener(const char *host, uint16_t listen_port, bool first, char *err,
                         size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char port[8];
    int fd = -1, one = 1;

    snprintf(port, sizeof(port), "%u", listen_port);
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen address %s: %s", host, gai_strerror(rc));
        return -1;
    }
    if (first && port_free(res, err, errlen, host, listen_port) != 0) {
        freeaddrinfo(res);
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "listen on %s:%u: %s", host, listen_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static h2o_socket_t *start_listener(h2o_accept_ctx_t *ctx, h2o_evloop_t *loop, int fd)
{
    h2o_socket_t *listener = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);

    listener->data = ctx;
    h2o_socket_read_start(listener, on_accept);
    return listener;
}

static void stop_listener(h2o_socket_t *listener)
{
    if (listener != NULL) {
        h2o_socket_read_stop(listener);
        h2o_socket_close(listener);
    }
}

static bool warm_keep_going(void *ctx)
{
    return !((app_t *)ctx)->stopping;
}

/* Maps the store in while the workers already serve: a lookup that comes
 * first faults its own pages in, as it would without this thread. */
static void *warm_main(void *arg)
{
    app_t *app = arg;
    uint64_t bytes = storage_warm(app->storage, warm_keep_going, app);

    log_msg(LOG_INFO, "storage", "%s %llu MiB of the store mapped into memory",
            app->stopping ? "stopped after" : "warm:", (unsigned long long)(bytes >> 20));
    return NULL;
}

/* Turns of 10 ms a stopping worker gives requests in flight (API jobs
 * waiting on the writer, say), and then its connections, to finish. */
#define SHUTDOWN_GRACE_TURNS 20
#define SHUTDOWN_TURNS       300

static int shut_down_socket(h2o_req_t *req, void *unused)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);

    (void)unused;
    if (sock != NULL)
        shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
    return 0;
}

static bool connections_closed(h2o_context_t *ctx)
{
    return h2o_linklist_is_empty(&ctx->http1._conns) && h2o_linklist_is_empty(&ctx->http2._conns);
}

/* Whether h2o_context_dispose may run: it asserts that no timer is linked in
 * any of the context's timeouts, which a connection, a socket still in its
 * TLS handshake, or HTTP/2's GOAWAY follow-up would each leave. */
static bool context_idle(h2o_context_t *ctx)
{
    h2o_timeout_t *timeouts[] = {&ctx->zero_timeout,
                                 &ctx->one_sec_timeout,
                                 &ctx->hundred_ms_timeout,
                                 &ctx->handshake_timeout,
                                 &ctx->http1.req_timeout,
                                 &ctx->http2.idle_timeout,
                                 &ctx->http2.graceful_shutdown_timeout,
                                 &ctx->proxy.io_timeout};

    if (!connections_closed(ctx))
        return false;
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        if (!h2o_linklist_is_empty(&timeouts[i]->_entries))
            return false;
    }
    return true;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    h2o_evloop_t *loop = h2o_evloop_create();
    h2o_socket_t *tls = NULL;

    h2o_context_init(&w->ctx, loop, &w->app->h2o);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = w->app->h2o.hosts;
    w->tls_accept_ctx = w->accept_ctx;
    w->tls_accept_ctx.ssl_ctx = w->app->tls;
    h2o_multithread_register_receiver(w->ctx.queue, &w->results, api_on_results);

    h2o_socket_t *plain = start_listener(&w->accept_ctx, loop, w->listen_fd);
    if (w->tls_fd >= 0)
        tls = start_listener(&w->tls_accept_ctx, loop, w->tls_fd);

    /* Between two turns of the loop no request holds a pointer to a shared
     * object: passing the current epoch tells a reload it may free the old. */
    while (!w->app->stopping) {
        h2o_evloop_run(loop, 100);
        atomic_store(&w->seen_epoch, atomic_load(&w->app->epoch));
    }

    /* Stop accepting, and ask every connection to close: idle keep-alive ones
     * at once, busy ones once their response (an API job waiting on the
     * writer, say) is out, HTTP/2 ones with GOAWAY. Disposing the context
     * with a connection still open fails an assertion inside h2o. */
    stop_listener(plain);
    stop_listener(tls);
    /* HTTP/1: each answer from now on closes its connection. HTTP/2: GOAWAY,
     * whose follow-up timer (one second) must fire before the context goes. */
    w->ctx.shutdown_requested = 1;
    if (!h2o_linklist_is_empty(&w->ctx.http2._conns))
        h2o_context_request_shutdown(&w->ctx);
    for (int i = 0; i < SHUTDOWN_GRACE_TURNS && !connections_closed(&w->ctx); i++)
        h2o_evloop_run(loop, 10);
    /* Idle keep-alive connections wait for a request that will not come:
     * their sockets are shut down, and h2o closes them on reading the end. */
    H2O_HTTP1_CALLBACKS.foreach_request(&w->ctx, shut_down_socket, NULL);
    for (int i = 0; i < SHUTDOWN_TURNS && !context_idle(&w->ctx); i++)
        h2o_evloop_run(loop, 10);
    /* A few more turns for what closing them scheduled (sockets are freed,
     * and their timers unlinked, on a later turn). */
    for (int i = 0; i < 5; i++)
        h2o_evloop_run(loop, 10);
    h2o_multithread_unregister_receiver(w->ctx.queue, &w->results);
    if (!context_idle(&w->ctx)) {
        /* A client that keeps its request half sent, or a TLS handshake that
         * never finishes: the process is about to exit, which closes them;
         * the context is left as it is. */
        log_msg(LOG_WARN, "http", "worker %u: connections still open after %d ms; not waiting",
                w->index, SHUTDOWN_TURNS * 10);
        return NULL;
    }
    /* TODO: h2o 2.2's context keeps its multithread queue (176 bytes per
     * worker) past h2o_context_dispose, and destroying it here crashes. */
    h2o_context_dispose(&w->ctx);
    h2o_evloop_destroy(loop);
    return NULL;
}

static void on_signal(int sig)
{
    if (the_app == NULL)
        return;
    if (sig == SIGHUP)
        the_app->reload = 1;
    else
        the_app->stopping = 1;
}

static void on_commit(void *ctx, uint64_t last_seq)
{
    app_t *app = ctx;
    webhook_dispatcher_t *d = atomic_load(&app->dispatcher);

    if (d != NULL)
        webhook_dispatcher_wake(d, last_seq);
}

static int open_geoip(app_t *app)
{
    const config_t *cfg = app->cfg;
    char err[512];

    if (cfg->geoip_db[0] == '\0') {
        log_msg(LOG_WARN, "geoip", "no --geoip-db given: engagements will have no country");
        return 0;
    }
    geoip_db_t *db = geoip_open(cfg->geoip_db, err, sizeof(err));
    if (db == NULL) {
        if (!cfg->geoip_optional) {
            log_msg(LOG_ERROR, "geoip", "%s", err);
            return -1;
        }
        log_msg(LOG_WARN, "geoip", "%s; running without countries (--geoip-optional)", err);
        return 0;
    }
    log_msg(LOG_INFO, "geoip", "opened %s (%s)", cfg->geoip_db, geoip_describe(db));
    atomic_store(&app->geoip, db);
    return 0;
}

/* Waits until every worker has passed a turn of its loop after the epoch
 * moved, so nothing still reads what was retired before it. */
static void wait_quiescent(app_t *app, worker_t *workers, unsigned n)
{
    unsigned long target = atomic_fetch_add(&app->epoch, 1) + 1;

    for (unsigned i = 0; i < n; i++) {
        while (atomic_load(&workers[i].seen_epoch) < target && !app->stopping)
            usleep(5000);
    }
}

/* What the watcher compares. Updaters replace the file with a rename, which
 * puts another inode at the path; a modification time in whole seconds misses
 * a replacement within the same second, or one that keeps its old time (cp -p,
 * rsync, unpacked archives). The change time moves on every rename, write and
 * utime, so a file rewritten in place is seen too. */
typedef struct file_id {
    bool exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} file_id_t;

static file_id_t file_id(const char *path)
{
    struct stat st;
    file_id_t id = {0};

    if (stat(path, &st) != 0)
        return id;
    id.exists = true;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
    id.size = st.st_size;
    id.mtime = st.st_mtim;
    id.ctime = st.st_ctim;
    return id;
}

static bool same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

static bool same_file(const file_id_t *a, const file_id_t *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           same_time(a->mtime, b->mtime) && same_time(a->ctime, b->ctime);
}

/* Opens the GeoIP file again and swaps it in; a broken new file leaves the
 * old database in place. */
static void reload_geoip(app_t *app, worker_t *workers, unsigned n)
{
    char err[512];
    geoip_db_t *db = geoip_open(app->cfg->geoip_db, err, sizeof(err));

    if (db == NULL) {
        log_msg(LOG_ERROR, "geoip", "reload refused, keeping the database in use: %s", err);
        return;
    }
    geoip_db_t *old = atomic_exchange(&app->geoip, db);
    if (old != NULL) {
        wait_quiescent(app, workers, n);
        geoip_close(old);
    }
    log_msg(LOG_INFO, "geoip", "reloaded %s (%s)", app->cfg->geoip_db, geoip_describe(db));
}

/* The main thread's watch while the workers serve: signals and the GeoIP
 * file's modification time. */
/* Losses the writer could not report to anyone (a failed group commit, a full
 * click queue) are logged here, once per change, with the writer's reason. */
static void report_losses(app_t *app, storage_stats_t *last)
{
    storage_stats_t now;
    char reason[512];

    storage_get_stats(app->storage, &now);
    if (now.commit_failures > last->commit_failures) {
        storage_writer_last_error(app->storage, reason, sizeof(reason));
        log_msg(LOG_ERROR, "storage",
                "%llu group commits failed (%llu engagements lost so far): %s",
                (unsigned long long)(now.commit_failures - last->commit_failures),
                (unsigned long long)now.engagements_dropped, reason);
    } else if (now.engagements_dropped > last->engagements_dropped) {
        log_msg(LOG_WARN, "storage", "%llu engagements dropped: the click queue was full",
                (unsigned long long)(now.engagements_dropped - last->engagements_dropped));
    }
    *last = now;
}

static void watch(app_t *app, worker_t *workers, unsigned n)
{
    const char *path = app->cfg->geoip_db;
    file_id_t seen = path[0] != '\0' ? file_id(path) : (file_id_t){0};
    storage_stats_t stats;

    storage_get_stats(app->storage, &stats);
    while (!app->stopping) {
        usleep(200000);
        report_losses(app, &stats);
        bool changed = false;
        if (path[0] != '\0') {
            file_id_t now = file_id(path);
            /* A file being rewritten is picked up once it stops changing. */
            if (now.exists && !same_file(&now, &seen)) {
                usleep(200000);
                file_id_t later = file_id(path);
                changed = same_file(&later, &now);
                if (changed)
                    seen = now;
            }
        }
        if (app->reload || changed) {
            app->reload = 0;
            if (path[0] != '\0')
                reload_geoip(app, workers, n);
        }
    }
}

static SSL_CTX *open_tls(const config_t *cfg)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        log_msg(LOG_ERROR, "http", "cannot load the TLS certificate %s", cfg->tls_cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        log_msg(LOG_ERROR, "http",
                "cannot load the TLS key %s, or it does not match the "
                "certificate",
                cfg->tls_key);
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void setup_h2o(app_t *app)
{
    h2o_config_init(&app->h2o);
    app->h2o.server_name = h2o_iovec_init(H2O_STRLIT("shortlinkd"));
    /* At stop, HTTP/2 clients that ignore GOAWAY are closed a second later. */
    app->h2o.http2.graceful_shutdown_timeout = 1000;
    /* Bodies past --max-body get a JSON 413 from the API; h2o's own limit is a
     * backstop far above it. */
    app->h2o.max_request_entity_size = app->cfg->max_body * 4 + 1024 * 1024;
    h2o_hostconf_t *host =
        h2o_config_register_host(&app->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    root_handler_t *h = (root_handler_t *)h2o_create_handler(path, sizeof(*h));
    h->super.on_req = on_req;
    h->app = app;
}

static webhook_dispatcher_t *start_dispatcher(app_t *app)
{
    const config_t *cfg = app->cfg;
    webhook_dispatcher_options_t o = {
        .storage = app->storage,
        .payload = {.public_url = cfg->public_url, .domain = cfg->domain},
        .policy = {.allow = cfg->webhook_allow, .n_allow = cfg->n_webhook_allow},
        .retry_delays_s = cfg->n_retry_delays > 0 ? cfg->retry_delays_s : NULL,
        .n_retry_delays = cfg->n_retry_delays,
        .connect_timeout_ms = cfg->webhook_connect_timeout_ms,
        .total_timeout_ms = cfg->webhook_timeout_ms,
        .max_in_flight = cfg->webhook_max_in_flight,
        .max_per_endpoint = cfg->webhook_max_per_endpoint,
        .deactivate_after_hours = cfg->webhook_deactivate_after_hours,
        .log = log_webhooks,
    };
    char err[512];

    webhook_dispatcher_t *d = webhook_dispatcher_start(&o, err, sizeof(err));
    if (d == NULL)
        log_msg(LOG_ERROR, "webhooks", "dispatcher did not start: %s", err);
    return d;
}

/* One server per data directory: two would share the store's sequence numbers
 * and lose clicks to each other. The lock lives as long as the process; the
 * token and backup commands do not take it, so they work beside a server. */
static int lock_data_dir(const config_t *cfg)
{
    char path[1100];

    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        log_msg(LOG_ERROR, "storage", "cannot create %s: %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/serve.lock", cfg->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        log_msg(LOG_ERROR, "storage", "%s is in use by another shortlinkd (%s)", cfg->data_dir,
                fd < 0 ? strerror(errno) : "serve.lock is held");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0; /* fd stays open, and the lock with it, until the process ends */
}

int server_run(const config_t *cfg)
{
    static app_t app;
    worker_t *workers = NULL;
    char err[512];
    int status = 1;
    unsigned started = 0;
    pthread_t warm_thread;
    bool warming = false;

    app.cfg = cfg;
    the_app = &app;
    json_object_seed(0);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    /* The ring must hold every click that arrives while one group commits;
     * a slot is 512 bytes. */
    storage_options_t so = {.dir = cfg->data_dir,
                            .map_size = cfg->map_size,
                            .queue_capacity = cfg->queue_capacity,
                            .flush_interval_ms = cfg->flush_interval_ms,
                            .group_spacing_ms = cfg->group_spacing_ms,
                            .writer_nice = cfg->writer_nice,
                            .on_commit = on_commit,
                            .on_commit_ctx = &app};
    if (lock_data_dir(cfg) != 0)
        return 1;
    if (storage_open(&app.storage, &so, err, sizeof(err)) != STORAGE_OK) {
        log_msg(LOG_ERROR, "storage", "%s", err);
        return 1;
    }
    for (size_t i = 0; i < cfg->n_trusted; i++) {
        const geoip_cidr_t *c = &cfg->trusted[i];
        if (c->prefix < (c->addr.family == AF_INET ? 8 : 16))
            log_msg(LOG_WARN, "http",
                    "--trusted-proxy range %zu is /%u wide: any client in it can choose the "
                    "address, and so the country, its clicks are recorded with",
                    i + 1, c->prefix);
    }
    if (open_geoip(&app) != 0 || bootstrap(&app) != 0)
        goto out;
    if (storage_writer_start(app.storage) != STORAGE_OK) {
        log_msg(LOG_ERROR, "storage", "writer did not start: %s", storage_strerror());
        goto out;
    }
    webhook_dispatcher_t *d = start_dispatcher(&app);
    if (d == NULL)
        goto out;
    atomic_store(&app.dispatcher, d);
    if (cfg->warm && pthread_create(&warm_thread, NULL, warm_main, &app) == 0)
        warming = true;

    setup_h2o(&app);
    if (cfg->tls_host[0] != '\0' && (app.tls = open_tls(cfg)) == NULL)
        goto stop;
    workers = xcalloc(cfg->workers, sizeof(*workers));
    for (unsigned i = 0; i < cfg->workers; i++) {
        workers[i].app = &app;
        workers[i].index = i;
        workers[i].tls_fd = -1;
        workers[i].listen_fd =
            open_listener(cfg->listen_host, cfg->listen_port, i == 0, err, sizeof(err));
        if (workers[i].listen_fd < 0) {
            log_msg(LOG_ERROR, "http", "%s", err);
            goto stop;
        }
        if (app.tls != NULL && (workers[i].tls_fd = open_listener(cfg->tls_host, cfg->tls_port,
                                                                  i == 0, err, sizeof(err))) < 0) {
            log_msg(LOG_ERROR, "http", "%s", err);
            goto stop;
        }
        if (storage_reader_open(app.storage, &workers[i].reader) != STORAGE_OK) {
            log_msg(LOG_ERROR, "storage", "reader: %s", storage_strerror());
            goto stop;
        }
    }
    app.workers = workers;
    app.n_workers = cfg->workers;
    for (; started < cfg->workers; started++)
        pthread_create(&workers[started].thread, NULL, worker_main, &workers[started]);
    log_msg(LOG_INFO, "http", "listening on %s:%u with %u workers; short links at %s/",
            cfg->listen_host, cfg->listen_port, cfg->workers, cfg->public_url);
    if (app.tls != NULL)
        log_msg(LOG_INFO, "http", "listening for TLS (HTTP/1.1 and HTTP/2) on %s:%u", cfg->tls_host,
                cfg->tls_port);
    status = 0;
    watch(&app, workers, started);

stop:
    if (status != 0)
        app.stopping = 1;
    for (unsigned i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    if (warming)
        pthread_join(warm_thread, NULL);
    log_msg(LOG_INFO, "http", "stopping: draining the click queue and webhook deliveries");
    /* The writer outlives the dispatcher so the outcomes of its last attempts
     * are stored. */
    webhook_dispatcher_stop(atomic_exchange(&app.dispatcher, NULL));
    storage_writer_stop(app.storage);
    for (unsigned i = 0; workers != NULL && i < cfg->workers; i++) {
        if (workers[i].reader != NULL)
            storage_reader_close(workers[i].reader);
        if (started == 0 && workers[i].listen_fd > 0)
            close(workers[i].listen_fd);
        if (started == 0 && workers[i].tls_fd > 0)
            close(workers[i].tls_fd);
    }
    free(workers);
    if (app.tls != NULL)
        SSL_CTX_free(app.tls);
out:
    storage_close(app.storage);
    geoip_db_t *db = atomic_exchange(&app.geoip, NULL);
    if (db != NULL)
        geoip_close(db);
    if (status == 0)
        log_msg(LOG_INFO, "http", "stopped cleanly");
    return status;
}
