/*
 * server/bio: link-in-bio pages: a page per handle with a title, a short
 * description and ordered buttons, each one of our links.
 *
 * /v4/bio_pages[/{handle}] manages them (create, list, read, patch, delete);
 * writes run as jobs on the storage writer, which also checks that every
 * button's link exists, so a page never names a link the store does not have.
 * Records are JSON in STORAGE_DB_BIO_PAGES, keyed by the lower-cased handle:
 * handles are unique without regard to case.
 *
 * /m/{handle} serves the page as small HTML that needs no JavaScript, with
 * every piece of user text escaped; /m/{handle}/{code} is a tap on one of its
 * buttons: the link's redirect, recorded as a bio_click whose referrer is the
 * page. A code that is not on the page gets the 404 page, so a page cannot be
 * used to count taps on links it does not show.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "log.h"
#include "parse.h"

#define BIO_HANDLE_MIN      3
#define BIO_HANDLE_MAX      32
#define BIO_TITLE_MAX       100 /* characters (code points), not bytes */
#define BIO_DESCRIPTION_MAX 300
#define BIO_LABEL_MAX       80
#define BIO_BUTTONS_MAX     32
#define BIO_CHAR_BYTES      4 /* the most bytes a UTF-8 character takes */

/* ---- input ---- */

/* Lower-cases a handle into out (BIO_HANDLE_MAX + 1 bytes) when it is 3 to 32
 * of [A-Za-z0-9_-]. */
static bool handle_normalise(const char *s, size_t len, char *out)
{
    if (len < BIO_HANDLE_MIN || len > BIO_HANDLE_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
        out[i] = c;
    }
    out[len] = '\0';
    return true;
}

/* Whether v is a string of at most max characters with no control
 * characters (line breaks and tabs allowed where multiline). jansson has
 * already refused invalid UTF-8. */
static bool text_valid(json_t *v, size_t max, bool multiline)
{
    if (!json_is_string(v))
        return false;
    const unsigned char *s = (const unsigned char *)json_string_value(v);
    size_t len = json_string_length(v), chars = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        bool space = c == '\n' || c == '\r' || c == '\t';
        if ((c < 0x20 && !(multiline && space)) || c == 0x7f)
            return false;
        /* Continuation bytes (10xxxxxx) do not start a character. */
        if ((c & 0xc0) != 0x80)
            chars++;
    }
    return chars <= max;
}

static int bad(h2o_req_t *req, const char *message, const char *description, const char *field)
{
    api_error(req, 400, message, description, "bio_pages", field, "invalid");
    return -1;
}

/* The code a button names: "code", or "bitlink_id" as domain/code with our
 * domain. NULL when neither is usable. */
static const char *button_code(const app_t *app, json_t *button)
{
    const char *code = api_str(button, "code");
    const char *id = api_str(button, "bitlink_id");

    if (code == NULL && id != NULL) {
        const char *slash = strrchr(id, '/');
        if (slash == NULL || !api_domain_ours(app, id, (size_t)(slash - id)))
            return NULL;
        code = slash + 1;
    }
    if (code == NULL || !parse_code_plausible(code, strlen(code)))
        return NULL;
    return code;
}

/* Reads the buttons member into a new array of {label, code}; replies and
 * returns NULL on bad input. Whether the links exist is the writer's check. */
static json_t *read_buttons(api_request_t *r, json_t *in)
{
    json_t *out, *b;
    size_t i;

    if (!json_is_array(in) || json_array_size(in) > BIO_BUTTONS_MAX) {
        bad(r->req, "INVALID_ARG_BUTTONS", "buttons must be an array of at most 32 buttons.",
            "buttons");
        return NULL;
    }
    out = json_array();
    json_array_foreach(in, i, b)
    {
        json_t *label = json_object_get(b, "label");
        const char *code = json_is_object(b) ? button_code(r->app, b) : NULL;
        if (label == NULL || !text_valid(label, BIO_LABEL_MAX, false) ||
            json_string_length(label) == 0) {
            bad(r->req, "INVALID_ARG_LABEL",
                "Each button needs a label of 1 to 80 characters without control characters.",
                "label");
            json_decref(out);
            return NULL;
        }
        if (code == NULL) {
            bad(r->req, "INVALID_ARG_BITLINK_ID",
                "Each button needs a bitlink_id (this server's domain/hash) or a code.",
                "bitlink_id");
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, json_pack("{s:O, s:s}", "label", label, "code", code));
    }
    return out;
}

/* Reads title, description and buttons into a new record object; with
 * create, title is required and the others default to empty. Replies and
 * returns NULL on bad input. */
static json_t *read_fields(api_request_t *r, bool create)
{
    json_t *body = r->body, *v;
    json_t *rec = json_object();

    if (body == NULL) {
        bad(r->req, "INVALID_BODY", "A JSON object is required.", "body");
        goto fail;
    }
    v = json_object_get(body, "title");
    if (v != NULL || create) {
        if (v == NULL || !text_valid(v, BIO_TITLE_MAX, false) || json_string_length(v) == 0) {
            bad(r->req, "INVALID_ARG_TITLE",
                "title must be 1 to 100 characters without control characters.", "title");
            goto fail;
        }
        json_object_set(rec, "title", v);
    }
    v = json_object_get(body, "description");
    if (v != NULL && !json_is_null(v)) {
        if (!text_valid(v, BIO_DESCRIPTION_MAX, true)) {
            bad(r->req, "INVALID_ARG_DESCRIPTION",
                "description must be at most 300 characters without control characters.",
                "description");
            goto fail;
        }
        json_object_set(rec, "description", v);
    } else if (v != NULL || create) {
        json_object_set_new(rec, "description", json_string(""));
    }
    v = json_object_get(body, "buttons");
    if (v != NULL || create) {
        json_t *buttons = v != NULL ? read_buttons(r, v) : json_array();
        if (buttons == NULL)
            goto fail;
        json_object_set_new(rec, "buttons", buttons);
    }
    return rec;
fail:
    json_decref(rec);
    return NULL;
}

/* ---- records ---- */

/* The API's form of a stored page. */
static json_t *page_json(const app_t *app, json_t *rec)
{
    const char *handle = api_str(rec, "handle");
    json_t *buttons = json_array(), *b;
    char created[32], modified[32], url[600], id[400], link[700], tap[700];
    size_t i;

    util_format_bitly_time(json_integer_value(json_object_get(rec, "created_us")), created);
    util_format_bitly_time(json_integer_value(json_object_get(rec, "modified_us")), modified);
    snprintf(url, sizeof(url), "%s/m/%s", app->cfg->public_url, handle != NULL ? handle : "");
    json_array_foreach(json_object_get(rec, "buttons"), i, b)
    {
        const char *code = api_str(b, "code");
        if (code == NULL)
            continue;
        snprintf(id, sizeof(id), "%s/%s", app->cfg->domain, code);
        snprintf(link, sizeof(link), "%s/%s", app->cfg->public_url, code);
        snprintf(tap, sizeof(tap), "%s/%s", url, code);
        json_array_append_new(buttons, json_pack("{s:O, s:s, s:s, s:s}", "label",
                                                 json_object_get(b, "label"), "bitlink_id", id,
                                                 "link", link, "tap_url", tap));
    }
    return json_pack("{s:s, s:O?, s:O?, s:s, s:o, s:s, s:s}", "handle",
                     handle != NULL ? handle : "", "title", json_object_get(rec, "title"),
                     "description", json_object_get(rec, "description"), "url", url, "buttons",
                     buttons, "created_at", created, "modified_at", modified);
}

/* Loads the record of a normalised handle; NULL when absent or unreadable. */
static json_t *load(storage_txn_t *txn, const char *handle)
{
    storage_bytes_t v;

    if (storage_record_get(txn, STORAGE_DB_BIO_PAGES, handle, strlen(handle), &v) != STORAGE_OK)
        return NULL;
    json_t *rec = json_loadb(v.ptr, v.len, 0, NULL);
    if (!json_is_object(rec)) {
        LOG_AT(LOG_WARN, "bio", "bio page %s has an unreadable record", handle);
        json_decref(rec);
        return NULL;
    }
    return rec;
}

/* Loads through the worker's read transaction. */
static json_t *load_read(worker_t *w, const char *handle)
{
    storage_txn_t *txn = storage_reader_begin(w->reader);
    json_t *rec = NULL;

    if (txn != NULL) {
        rec = load(txn, handle);
        storage_reader_end(w->reader);
    }
    return rec;
}

static int put(storage_txn_t *txn, json_t *rec, unsigned flags)
{
    const char *handle = api_str(rec, "handle");
    char *text = json_dumps(rec, JSON_COMPACT);
    int rc = storage_record_put(txn, STORAGE_DB_BIO_PAGES, handle, strlen(handle), text,
                                strlen(text), flags);

    free(text);
    return rc;
}

/* Every button's link must exist when the page is written. */
static int check_links(storage_txn_t *txn, api_job_t *job, json_t *buttons)
{
    storage_link_t l;
    json_t *b;
    size_t i;
    char msg[160];

    json_array_foreach(buttons, i, b)
    {
        const char *code = api_str(b, "code");
        if (storage_link_get(txn, code, strlen(code), &l) != STORAGE_OK) {
            snprintf(msg, sizeof(msg), "Button %zu names a link that does not exist (%s).", i + 1,
                     code);
            return api_job_error(job, 400, "INVALID_ARG_BITLINK_ID", msg, "bio_pages", "bitlink_id",
                                 "not_found");
        }
    }
    return STORAGE_OK;
}

/* ---- jobs ---- */

static int create_run(storage_txn_t *txn, api_job_t *job)
{
    json_t *rec = job->input;
    int rc;

    if (check_links(txn, job, json_object_get(rec, "buttons")) != STORAGE_OK)
        return STORAGE_INVALID;
    json_int_t now = util_now_us();
    json_object_set_new(rec, "created_us", json_integer(now));
    json_object_set_new(rec, "modified_us", json_integer(now));
    rc = put(txn, rec, STORAGE_NOOVERWRITE);
    if (rc == STORAGE_EXISTS)
        return api_job_error(job, 409, "ALREADY_EXISTS", "That handle is taken.", "bio_pages",
                             "handle", "already_exists");
    if (rc != STORAGE_OK)
        return api_job_error(job, 500, "INTERNAL_ERROR", "The page could not be stored.",
                             "bio_pages", NULL, NULL);
    job->status = 201;
    job->response = page_json(job->app, rec);
    return STORAGE_OK;
}

/* A patch merges on the writer, so two patches of one page never undo each
 * other's fields. */
static int patch_run(storage_txn_t *txn, api_job_t *job)
{
    json_t *rec = load(txn, job->arg);
    json_t *fields = job->input;
    int rc = STORAGE_INVALID;

    if (rec == NULL)
        return api_job_error(job, 404, "NOT_FOUND", "Nothing is there.", "bio_pages", NULL, NULL);
    json_t *buttons = json_object_get(fields, "buttons");
    if (buttons != NULL && check_links(txn, job, buttons) != STORAGE_OK)
        goto out;
    json_object_update(rec, fields);
    json_object_set_new(rec, "modified_us", json_integer(util_now_us()));
    if (put(txn, rec, 0) != STORAGE_OK) {
        api_job_error(job, 500, "INTERNAL_ERROR", "The page could not be stored.", "bio_pages",
                      NULL, NULL);
        goto out;
    }
    job->status = 200;
    job->response = page_json(job->app, rec);
    rc = STORAGE_OK;
out:
    json_decref(rec);
    return rc;
}

/* ---- routes ---- */

static int create(api_request_t *r)
{
    const char *handle = api_str(r->body, "handle");
    char key[BIO_HANDLE_MAX + 1];

    if (handle == NULL || !handle_normalise(handle, strlen(handle), key)) {
        bad(r->req, "INVALID_ARG_HANDLE",
            "handle must be 3 to 32 letters, digits, '-' or '_' (case does not count).", "handle");
        return 0;
    }
    json_t *rec = read_fields(r, true);
    if (rec == NULL)
        return 0;
    json_object_set_new(rec, "handle", json_string(key));
    return api_submit(r, create_run, rec, key, NULL, NULL);
}

static int patch(api_request_t *r, const char *key)
{
    const char *handle = api_str(r->body, "handle");
    char other[BIO_HANDLE_MAX + 1];

    /* A handle is the page's address: printed, linked, shared. It does not
     * change; a new handle is a new page. */
    if (handle != NULL &&
        (!handle_normalise(handle, strlen(handle), other) || strcmp(other, key) != 0)) {
        bad(r->req, "INVALID_ARG_HANDLE", "A page's handle cannot be changed.", "handle");
        return 0;
    }
    json_t *fields = read_fields(r, false);
    if (fields == NULL)
        return 0;
    return api_submit(r, patch_run, fields, key, NULL, NULL);
}

static int get(api_request_t *r, const char *key)
{
    json_t *rec = load_read(r->w, key);

    if (rec == NULL)
        return api_not_found(r, "bio_pages");
    json_t *body = page_json(r->app, rec);
    json_decref(rec);
    return api_reply(r->req, 200, body);
}

typedef struct list_ctx {
    const app_t *app;
    json_t *list;
} list_ctx_t;

static int collect(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    list_ctx_t *c = ctx;
    json_t *rec = json_loadb(val.ptr, val.len, 0, NULL);

    (void)key;
    if (json_is_object(rec))
        json_array_append_new(c->list, page_json(c->app, rec));
    json_decref(rec);
    return 0;
}

static int list(api_request_t *r)
{
    list_ctx_t c = {.app = r->app, .list = json_array()};
    storage_txn_t *txn = storage_reader_begin(r->w->reader);

    if (txn != NULL) {
        storage_record_scan(txn, STORAGE_DB_BIO_PAGES, collect, &c);
        storage_reader_end(r->w->reader);
    }
    return api_reply(r->req, 200, json_pack("{s:o}", "bio_pages", c.list));
}

int api_bio(api_request_t *r)
{
    char key[BIO_HANDLE_MAX + 1];

    if (r->n_seg == 1) {
        if (api_method_is(r, "GET"))
            return list(r);
        return api_method_is(r, "POST") ? create(r) : api_method_not_allowed(r);
    }
    if (r->n_seg != 2 || !handle_normalise(r->seg[1].base, r->seg[1].len, key))
        return api_not_found(r, "bio_pages");
    if (api_method_is(r, "GET"))
        return get(r, key);
    if (api_method_is(r, "PATCH"))
        return patch(r, key);
    if (api_method_is(r, "DELETE"))
        return api_submit_delete(r, STORAGE_DB_BIO_PAGES, "bio_pages", key);
    return api_method_not_allowed(r);
}

/* ---- the public page ---- */

static const char page_style[] =
    "body{margin:0;font:16px/1.45 system-ui,-apple-system,sans-serif;background:#f4f4f5;"
    "color:#18181b}"
    "main{max-width:32rem;margin:0 auto;padding:2.5rem 1rem}"
    "h1{font-size:1.5rem;text-align:center;margin:0 0 .5rem;overflow-wrap:anywhere}"
    "p{text-align:center;margin:0 0 1.5rem;color:#52525b;white-space:pre-line;"
    "overflow-wrap:anywhere}"
    "ul{list-style:none;margin:0;padding:0}li{margin:0 0 .75rem}"
    "a{display:block;padding:.9rem 1rem;border-radius:.75rem;background:#18181b;color:#fff;"
    "text-align:center;text-decoration:none;font-weight:600;overflow-wrap:anywhere}"
    "a:focus,a:hover{background:#3f3f46}"
    "@media (prefers-color-scheme:dark){body{background:#18181b;color:#f4f4f5}p{color:#a1a1aa}"
    "a{background:#f4f4f5;color:#18181b}a:focus,a:hover{background:#d4d4d8}}";

static const char missing_page[] =
    "<!doctype html><html lang=en><meta charset=utf-8>"
    "<meta name=viewport content=\"width=device-width,initial-scale=1\">"
    "<title>Page not found</title>"
    "<h1>Page not found</h1><p>There is no page here, or it was removed.</p></html>\n";

/* The page's only style is ours and fixed, so the policy allows exactly it by
 * its digest, and nothing else: no script, no other source. */
static char page_csp[256];
static pthread_once_t page_csp_once = PTHREAD_ONCE_INIT;

static void build_csp(void)
{
    uint8_t digest[32];
    char b64[48];

    util_sha256(page_style, sizeof(page_style) - 1, digest);
    h2o_base64_encode(b64, digest, sizeof(digest), 0);
    snprintf(page_csp, sizeof(page_csp),
             "default-src 'none'; style-src 'sha256-%s'; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'",
             b64);
}

/* Appends to a buffer whose size was bounded before writing began. */
typedef struct html {
    char *buf;
    size_t len;
    size_t cap;
} html_t;

static void html_raw(html_t *h, const char *s, size_t n)
{
    if (n > h->cap - h->len) {
        /* The bound in render_page is wrong: our mistake, never the client's. */
        n = h->cap - h->len;
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

static void html_str(html_t *h, const char *s)
{
    html_raw(h, s, strlen(s));
}

/* Escapes the five characters that matter in text and in quoted attributes. */
static void html_text(html_t *h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&':
            html_raw(h, H2O_STRLIT("&amp;"));
            break;
        case '<':
            html_raw(h, H2O_STRLIT("&lt;"));
            break;
        case '>':
            html_raw(h, H2O_STRLIT("&gt;"));
            break;
        case '"':
            html_raw(h, H2O_STRLIT("&quot;"));
            break;
        case '\'':
            html_raw(h, H2O_STRLIT("&#39;"));
            break;
        default:
            html_raw(h, s + i, 1);
        }
    }
}

static void html_json(html_t *h, json_t *v)
{
    if (json_is_string(v))
        html_text(h, json_string_value(v), json_string_length(v));
}

/* Bytes a string takes once escaped, at most ("&quot;" is six). */
static size_t escaped_max(json_t *v)
{
    return json_is_string(v) ? json_string_length(v) * 6 : 0;
}

static void security_headers(h2o_req_t *req)
{
    pthread_once(&page_csp_once, build_csp);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0,
                          NULL, page_csp, strlen(page_csp));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0,
                          NULL, H2O_STRLIT("nosniff"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/html; charset=utf-8"));
    /* Edits show at once; the page is small enough to send every time. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
}

static int send_missing(h2o_req_t *req)
{
    req->res.status = 404;
    req->res.reason = "Not Found";
    security_headers(req);
    req->res.content_length = sizeof(missing_page) - 1;
    h2o_send_inline(req, missing_page, sizeof(missing_page) - 1);
    return 0;
}

static int render_page(worker_t *w, h2o_req_t *req, json_t *rec)
{
    const char *handle = api_str(rec, "handle");
    const char *base = w->app->cfg->public_url;
    json_t *title = json_object_get(rec, "title");
    json_t *description = json_object_get(rec, "description");
    json_t *buttons = json_object_get(rec, "buttons"), *b;
    size_t i, per_button = 64 + 6 * (strlen(base) + BIO_HANDLE_MAX + STORAGE_CODE_MAX);
    size_t cap = 1024 + sizeof(page_style) + 2 * escaped_max(title) + escaped_max(description);

    json_array_foreach(buttons, i, b) cap += per_button + escaped_max(json_object_get(b, "label"));
    html_t h = {.buf = h2o_mem_alloc_pool(&req->pool, cap), .len = 0, .cap = cap};

    html_str(&h, "<!doctype html>\n<html lang=en>\n<meta charset=utf-8>\n"
                 "<meta name=viewport content=\"width=device-width,initial-scale=1\">\n<title>");
    html_json(&h, title);
    html_str(&h, "</title>\n<style>");
    html_raw(&h, page_style, sizeof(page_style) - 1);
    html_str(&h, "</style>\n<main>\n<h1>");
    html_json(&h, title);
    html_str(&h, "</h1>\n");
    if (json_string_length(description) > 0) {
        html_str(&h, "<p>");
        html_json(&h, description);
        html_str(&h, "</p>\n");
    }
    html_str(&h, "<ul>\n");
    json_array_foreach(buttons, i, b)
    {
        const char *code = api_str(b, "code");
        if (code == NULL)
            continue;
        /* Absolute, so the page works wherever the public URL puts us. */
        html_str(&h, "<li><a href=\"");
        html_text(&h, base, strlen(base));
        html_str(&h, "/m/");
        html_text(&h, handle, strlen(handle));
        html_str(&h, "/");
        html_text(&h, code, strlen(code));
        html_str(&h, "\" rel=nofollow>");
        html_json(&h, json_object_get(b, "label"));
        html_str(&h, "</a></li>\n");
    }
    html_str(&h, "</ul>\n</main>\n</html>\n");

    req->res.status = 200;
    req->res.reason = "OK";
    security_headers(req);
    req->res.content_length = h.len;
    h2o_send_inline(req, h.buf, h.len);
    return 0;
}

/* Whether code is one of the page's buttons. */
static bool page_has(json_t *rec, const char *code, size_t len)
{
    json_t *b;
    size_t i;

    json_array_foreach(json_object_get(rec, "buttons"), i, b)
    {
        json_t *c = json_object_get(b, "code");
        if (json_is_string(c) && h2o_memis(json_string_value(c), json_string_length(c), code, len))
            return true;
    }
    return false;
}

int bio_page_handle(worker_t *w, h2o_req_t *req, const char *rest, size_t len)
{
    bool head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    char key[BIO_HANDLE_MAX + 1];
    int rc;

    if (!head && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
        return send_missing(req);
    /* "{handle}", "{handle}/" or "{handle}/{code}" (a trailing slash is what
     * some apps add when a link is copied). */
    if (len > 0 && rest[len - 1] == '/')
        len--;
    const char *slash = memchr(rest, '/', len);
    size_t handle_len = slash != NULL ? (size_t)(slash - rest) : len;
    if (!handle_normalise(rest, handle_len, key))
        return send_missing(req);

    json_t *rec = load_read(w, key);
    if (rec == NULL)
        return send_missing(req);
    if (slash == NULL) {
        rc = render_page(w, req, rec);
    } else {
        const char *code = slash + 1;
        size_t code_len = len - handle_len - 1;
        if (!page_has(rec, code, code_len)) {
            rc = send_missing(req);
        } else {
            /* The referrer names the page, so metrics tell which page sent
             * the visitor; the engagement keeps at most STORAGE_REFERRER_MAX
             * bytes of it. */
            char referrer[sizeof(w->app->cfg->domain) + sizeof("/m/") + BIO_HANDLE_MAX];
            snprintf(referrer, sizeof(referrer), "%s/m/%s", w->app->cfg->domain, key);
            rc = redirect_serve(w, req, code, code_len, STORAGE_KIND_BIO_CLICK, referrer);
        }
    }
    json_decref(rec);
    return rc;
}
