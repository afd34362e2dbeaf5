/*
 * server/api: /v4 routing, bearer tokens, JSON bodies, Bitly's error body, and
 * jobs: a mutation runs on the storage writer and its reply is sent from the
 * worker's own loop once the write is durable.
 */
#include <string.h>

#include "api.h"
#include "log.h"

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return status < 300 ? "OK" : status < 500 ? "Client Error" : "Internal Server Error";
    }
}

int api_reply(h2o_req_t *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    size_t len = text != NULL ? strlen(text) : 0;

    req->res.status = status;
    req->res.reason = reason_of(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    /* h2o_send_inline copies the body into the request's pool. */
    req->res.content_length = text != NULL ? len : 2;
    h2o_send_inline(req, text != NULL ? text : "{}", text != NULL ? len : 2);
    free(text);
    json_decref(body);
    return 0;
}

json_t *api_error_body(const char *message, const char *description, const char *resource,
                       const char *field, const char *error_code)
{
    json_t *errors = json_array();

    if (field != NULL) {
        json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "error_code",
                                                error_code != NULL ? error_code : "invalid"));
    }
    return json_pack("{s:s, s:s, s:s, s:o}", "message", message, "description", description,
                     "resource", resource != NULL ? resource : "", "errors", errors);
}

int api_error(h2o_req_t *req, int status, const char *message, const char *description,
              const char *resource, const char *field, const char *error_code)
{
    return api_reply(req, status,
                     api_error_body(message, description, resource, field, error_code));
}

int api_job_error(api_job_t *job, int status, const char *message, const char *description,
                  const char *resource, const char *field, const char *error_code)
{
    json_decref(job->response);
    job->status = status;
    job->response = api_error_body(message, description, resource, field, error_code);
    return STORAGE_INVALID;
}

const char *api_str(json_t *body, const char *key)
{
    json_t *v = json_object_get(body, key);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

bool api_seg_is(const api_request_t *r, size_t i, const char *s)
{
    return i < r->n_seg && h2o_memis(r->seg[i].base, r->seg[i].len, s, strlen(s));
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Compares s, percent-decoding it, with name, ignoring case. */
static bool decoded_equals(const char *s, size_t len, const char *name)
{
    size_t k = 0, nlen = strlen(name);

    for (size_t i = 0; i < len; i++, k++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < len ? hex_digit(s[i + 1]) : -1;
            int lo = i + 2 < len ? hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (k == nlen || (c | 0x20) != (name[k] | 0x20))
            return false;
    }
    return k == nlen;
}

bool api_domain_ours(const app_t *app, const char *s, size_t len)
{
    return decoded_equals(s, len, app->cfg->domain) || decoded_equals(s, len, "bit.ly");
}

bool api_bitlink_id(const api_request_t *r, h2o_iovec_t *domain, h2o_iovec_t *code, size_t *next)
{
    if (r->n_seg < 2)
        return false;
    h2o_iovec_t s = r->seg[1];
    for (size_t i = 0; i + 3 <= s.len; i++) {
        if (s.base[i] == '%' && s.base[i + 1] == '2' && (s.base[i + 2] | 0x20) == 'f') {
            *domain = h2o_iovec_init(s.base, i);
            *code = h2o_iovec_init(s.base + i + 3, s.len - i - 3);
            *next = 2;
            return code->len > 0;
        }
    }
    if (r->n_seg < 3)
        return false;
    *domain = s;
    *code = r->seg[2];
    *next = 3;
    return true;
}

bool api_method_is(const api_request_t *r, const char *m)
{
    return h2o_memis(r->req->method.base, r->req->method.len, m, strlen(m));
}

int api_method_not_allowed(api_request_t *r)
{
    return api_error(r->req, 405, "METHOD_NOT_ALLOWED", "This route does not take that method.", "",
                     NULL, NULL);
}

int api_not_found(api_request_t *r, const char *resource)
{
    return api_error(r->req, 404, "NOT_FOUND", "Nothing is there.", resource, NULL, NULL);
}

/* ---- jobs ---- */

static void job_free(api_job_t *job)
{
    if (job->req_slot != NULL)
        *job->req_slot = NULL;
    json_decref(job->input);
    json_decref(job->response);
    if (job->free_data != NULL)
        job->free_data(job->data);
    free(job);
}

static void on_request_gone(void *slot)
{
    api_job_t *job = *(api_job_t **)slot;

    /* The client went away before the writer answered: the job still finishes,
     * but its reply has nowhere to go. */
    if (job != NULL) {
        job->req = NULL;
        job->req_slot = NULL;
    }
}

static int job_run(storage_txn_t *txn, void *arg)
{
    api_job_t *job = arg;

    job->fn_rc = job->fn(txn, job);
    return job->fn_rc;
}

static void job_done(void *arg, int rc)
{
    api_job_t *job = arg;

    /* The job asked to keep its writes but the group commit failed. */
    if (rc != job->fn_rc) {
        api_job_error(job, 500, "INTERNAL_ERROR", "The change could not be stored.", "", NULL,
                      NULL);
    }
    h2o_multithread_send_message(&job->worker->results, &job->super);
}

void api_on_results(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        api_job_t *job = H2O_STRUCT_FROM_MEMBER(api_job_t, super.link, messages->next);
        h2o_linklist_unlink(&job->super.link);
        if (job->req != NULL) {
            api_reply(job->req, job->status, job->response);
            job->response = NULL;
        }
        job_free(job);
    }
}

int api_submit(api_request_t *r, api_job_fn fn, json_t *input, const char *arg, void *data,
               void (*free_data)(void *))
{
    api_job_t *job = xcalloc(1, sizeof(*job));

    job->worker = r->w;
    job->req = r->req;
    job->app = r->app;
    job->fn = fn;
    job->input = input;
    job->data = data;
    job->free_data = free_data;
    job->status = 500;
    if (arg != NULL)
        snprintf(job->arg, sizeof(job->arg), "%s", arg);
    job->req_slot = h2o_mem_alloc_shared(&r->req->pool, sizeof(api_job_t *), on_request_gone);
    *job->req_slot = job;

    if (storage_submit(r->app->storage, job_run, job_done, job) != STORAGE_OK) {
        job_free(job);
        return api_error(r->req, 503, "TEMPORARILY_UNAVAILABLE",
                         "The server is shutting down or its store is busy.", "", NULL, NULL);
    }
    return 0;
}

typedef struct delete_target {
    storage_db_t db;
    const char *resource; /* static */
} delete_target_t;

static int delete_run(storage_txn_t *txn, api_job_t *job)
{
    const delete_target_t *t = job->data;
    int rc = storage_record_del(txn, t->db, job->arg, strlen(job->arg));

    if (rc == STORAGE_NOTFOUND)
        return api_job_error(job, 404, "NOT_FOUND", "Nothing is there.", t->resource, NULL, NULL);
    if (rc != STORAGE_OK)
        return api_job_error(job, 500, "INTERNAL_ERROR", "The record could not be deleted.",
                             t->resource, NULL, NULL);
    job->status = 200;
    job->response = json_object();
    return STORAGE_OK;
}

int api_submit_delete(api_request_t *r, storage_db_t db, const char *resource, const char *key)
{
    delete_target_t *t = xmalloc(sizeof(*t));

    *t = (delete_target_t){.db = db, .resource = resource};
    return api_submit(r, delete_run, NULL, key, t, free);
}

/* ---- tokens ---- */

static bool authorized(api_request_t *r)
{
    ssize_t i = h2o_find_header(&r->req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    uint8_t digest[32];
    storage_bytes_t rec;

    if (i == -1)
        return false;
    h2o_iovec_t v = r->req->headers.entries[i].value;
    /* Bitly's Node client sends the bare token as the whole header. */
    if (v.len > 7 && h2o_lcstris(v.base, 7, H2O_STRLIT("bearer ")))
        v = h2o_iovec_init(v.base + 7, v.len - 7);
    if (v.len == 0)
        return false;
    /* Tokens are stored as SHA-256 digests: the lookup compares digests, so
     * its timing says nothing about the token itself. */
    util_sha256(v.base, v.len, digest);
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    if (txn == NULL)
        return false;
    int rc = storage_record_get(txn, STORAGE_DB_TOKENS, digest, sizeof(digest), &rec);
    storage_reader_end(r->w->reader);
    return rc == STORAGE_OK;
}

/* ---- routing ---- */

static size_t split_path(api_request_t *r, const char *path, size_t len)
{
    size_t n = 0, i = 0;

    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        if (i > start) {
            if (n == API_MAX_SEGMENTS)
                return SIZE_MAX;
            r->seg[n++] = h2o_iovec_init(path + start, i - start);
        }
    }
    return n;
}

static int parse_body(api_request_t *r)
{
    json_error_t jerr;
    h2o_req_t *req = r->req;

    if (req->entity.base == NULL || req->entity.len == 0)
        return 0;
    if (req->entity.len > r->app->cfg->max_body) {
        char msg[128];
        snprintf(msg, sizeof(msg), "The request body is larger than %zu bytes.",
                 r->app->cfg->max_body);
        api_error(req, 413, "REQUEST_ENTITY_TOO_LARGE", msg, "", NULL, NULL);
        return -1;
    }
    /* jansson stops at a NUL byte and would take what precedes it for the
     * whole body; a body with one is not JSON. */
    if (memchr(req->entity.base, '\0', req->entity.len) != NULL) {
        api_error(req, 400, "INVALID_BODY", "The body is not a JSON object: it holds a NUL byte.",
                  "", "body", "invalid");
        return -1;
    }
    r->body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (r->body == NULL || !json_is_object(r->body)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "The body is not a JSON object: %s",
                 r->body == NULL ? jerr.text : "expected an object");
        json_decref(r->body);
        r->body = NULL;
        api_error(req, 400, "INVALID_BODY", msg, "", "body", "invalid");
        return -1;
    }
    return 0;
}

int api_handle(worker_t *w, h2o_req_t *req, const char *path, size_t path_len)
{
    api_request_t r = {.w = w, .req = req, .app = w->app};
    int rc;

    atomic_fetch_add_explicit(&w->app->metrics.api_requests, 1, memory_order_relaxed);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                   H2O_STRLIT("*"));
    r.n_seg = split_path(&r, path, path_len);
    if (r.n_seg == SIZE_MAX || r.n_seg == 0)
        return api_not_found(&r, "");
    if (r.n_seg == 1 && api_seg_is(&r, 0, "openapi.json"))
        return api_openapi(w, req);
    if (!authorized(&r)) {
        return api_error(req, 403, "FORBIDDEN", "A valid API token is required.", "", NULL, NULL);
    }
    if (parse_body(&r) != 0)
        return 0;

    if (api_seg_is(&r, 0, "bitlinks") && r.n_seg >= 3 && api_seg_is(&r, r.n_seg - 1, "qr"))
        rc = api_qr(&r);
    else if (api_seg_is(&r, 0, "bio_pages"))
        rc = api_bio(&r);
    else if (api_seg_is(&r, 0, "shorten") || api_seg_is(&r, 0, "bitlinks") ||
             api_seg_is(&r, 0, "expand") || api_seg_is(&r, 0, "custom_bitlinks"))
        rc = api_links(&r);
    else if (api_seg_is(&r, 0, "webhooks") ||
             (api_seg_is(&r, 0, "organizations") && api_seg_is(&r, 2, "webhooks")))
        rc = api_webhooks(&r);
    else
        rc = api_account(&r);
    json_decref(r.body);
    return rc;
}
