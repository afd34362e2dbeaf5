/*
 * server/links: /v4/shorten, /v4/bitlinks, /v4/custom_bitlinks, /v4/expand.
 * Input is checked on the worker; the write (and the idempotency lookup that
 * must see the latest state) runs as a job on the storage writer.
 */
#include <string.h>

#include "api.h"
#include "log.h"
#include "parse.h"

#define MAX_TITLE   512
#define MAX_TAGS    32
#define MAX_TAG_LEN 64

typedef struct link_input {
    char long_url[PARSE_URL_MAX + 1];
    char group_guid[UTIL_GUID_LEN + 1];
    char keyword[PARSE_BACKHALF_MAX + 1]; /* "" for a generated code */
    char *title;                          /* NULL: none */
    char *tags;                           /* JSON array text, NULL: none */
    bool shorten;                         /* /v4/shorten: 200 for an existing link */
} link_input_t;

static void link_input_free(void *p)
{
    link_input_t *in = p;

    if (in == NULL)
        return;
    free(in->title);
    free(in->tags);
    free(in);
}

json_t *api_bitlink_json(const app_t *app, const storage_link_t *l)
{
    char created[32], id[400], link[700], group_ref[700];
    json_t *tags = NULL;

    util_format_bitly_time(l->created_us, created);
    snprintf(id, sizeof(id), "%s/%.*s", app->cfg->domain, (int)l->code.len, l->code.ptr);
    snprintf(link, sizeof(link), "%s/%.*s", app->cfg->public_url, (int)l->code.len, l->code.ptr);
    snprintf(group_ref, sizeof(group_ref), "%s/v4/groups/%s", app->cfg->public_url, l->group_guid);
    if (l->tags.len > 0)
        tags = json_loadb(l->tags.ptr, l->tags.len, 0, NULL);
    if (!json_is_array(tags)) {
        json_decref(tags);
        tags = json_array();
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s%, s:b, s:o, s:[], s:[], s:{s:s}}", "created_at",
                          created, "id", id, "link", link, "long_url", l->long_url.ptr,
                          l->long_url.len, "archived", l->archived, "tags", tags, "custom_bitlinks",
                          "deeplinks", "references", "group", group_ref);
    if (l->title.len > 0)
        json_object_set_new(o, "title", json_stringn(l->title.ptr, l->title.len));
    else
        json_object_set_new(o, "title", json_null());
    return o;
}

/* ---- input ---- */

static int bad(h2o_req_t *req, int status, const char *message, const char *description,
               const char *resource, const char *field, const char *error_code)
{
    api_error(req, status, message, description, resource, field, error_code);
    return -1;
}

static int reject_url(api_request_t *r, parse_url_error_t e)
{
    const char *code = e == PARSE_URL_OWN_DOMAIN ? "ALREADY_A_BITLY_LINK" : "INVALID_ARG_LONG_URL";

    return bad(r->req, 400, code, parse_url_strerror(e), "bitlinks", "long_url",
               e == PARSE_URL_OWN_DOMAIN ? "already_a_bitly_link" : "invalid");
}

/* Checks the tags member: an array of up to MAX_TAGS non-empty strings. */
static bool tags_valid(json_t *tags)
{
    size_t i;
    json_t *t;

    if (!json_is_array(tags) || json_array_size(tags) > MAX_TAGS)
        return false;
    json_array_foreach(tags, i, t)
    {
        if (!json_is_string(t) || json_string_length(t) == 0 || json_string_length(t) > MAX_TAG_LEN)
            return false;
    }
    return true;
}

/* Fills in from the body; on bad input replies and returns -1. */
static int read_link_input(api_request_t *r, link_input_t *in)
{
    const char *url = api_str(r->body, "long_url");

    if (url == NULL)
        return bad(r->req, 400, "INVALID_ARG_LONG_URL", "long_url is required.", "bitlinks",
                   "long_url", "missing");
    const char *own = r->app->cfg->domain;
    parse_url_error_t e = parse_long_url(url, strlen(url), own, in->long_url, sizeof(in->long_url));
    if (e != PARSE_URL_OK)
        return reject_url(r, e);

    const char *domain = api_str(r->body, "domain");
    if (domain != NULL && strcasecmp(domain, r->app->cfg->domain) != 0)
        return bad(r->req, 400, "INVALID_ARG_DOMAIN",
                   "domain must be this server's short domain or left out.", "bitlinks", "domain",
                   "invalid");

    const char *group = api_str(r->body, "group_guid");
    if (group == NULL)
        group = r->app->default_group_guid;
    if (strlen(group) != UTIL_GUID_LEN)
        return bad(r->req, 400, "INVALID_ARG_GROUP_GUID", "group_guid is not a group.", "bitlinks",
                   "group_guid", "invalid");
    memcpy(in->group_guid, group, UTIL_GUID_LEN + 1);

    const char *kw = api_str(r->body, "keyword");
    if (kw == NULL)
        kw = api_str(r->body, "custom_back_half");
    if (kw != NULL) {
        if (!parse_backhalf_valid(kw, strlen(kw)))
            return bad(r->req, 400, "INVALID_ARG_KEYWORD",
                       "A back-half is 3 to 64 letters, digits, '-' or '_', and not a "
                       "reserved word.",
                       "bitlinks", "keyword", "invalid");
        snprintf(in->keyword, sizeof(in->keyword), "%s", kw);
    }

    json_t *title = json_object_get(r->body, "title");
    if (title != NULL && !json_is_null(title)) {
        if (!json_is_string(title) || json_string_length(title) > MAX_TITLE)
            return bad(r->req, 400, "INVALID_ARG_TITLE",
                       "title must be a string of at most 512 bytes.", "bitlinks", "title",
                       "invalid");
        in->title = xstrndup(json_string_value(title), json_string_length(title));
    }
    json_t *tags = json_object_get(r->body, "tags");
    if (tags != NULL && !json_is_null(tags)) {
        if (!tags_valid(tags))
            return bad(r->req, 400, "INVALID_ARG_TAGS",
                       "tags must be an array of up to 32 strings of 1 to 64 bytes.", "bitlinks",
                       "tags", "invalid");
        in->tags = json_dumps(tags, JSON_COMPACT);
    }
    return 0;
}

/* ---- jobs ---- */

static bool group_exists(storage_txn_t *txn, const char *guid)
{
    storage_bytes_t v;

    return storage_record_get(txn, STORAGE_DB_GROUPS, guid, UTIL_GUID_LEN, &v) == STORAGE_OK;
}

static int create_link_run(storage_txn_t *txn, api_job_t *job)
{
    link_input_t *in = job->data;
    storage_link_t l = {0};
    char code[PARSE_BACKHALF_MAX + 1];
    int rc;

    if (!group_exists(txn, in->group_guid))
        return api_job_error(job, 404, "NOT_FOUND", "group_guid names no group.", "groups",
                             "group_guid", "not_found");
    /* Shortening the same long URL again in a group gives the same link. */
    if (in->keyword[0] == '\0' &&
        storage_link_find_by_url(txn, in->group_guid, in->long_url, strlen(in->long_url), &l) ==
            STORAGE_OK) {
        job->status = 200;
        job->response = api_bitlink_json(job->app, &l);
        return STORAGE_OK;
    }

    l.created_us = l.modified_us = util_now_us();
    memcpy(l.group_guid, in->group_guid, sizeof(l.group_guid));
    l.long_url = (storage_bytes_t){in->long_url, strlen(in->long_url)};
    if (in->title != NULL)
        l.title = (storage_bytes_t){in->title, strlen(in->title)};
    if (in->tags != NULL)
        l.tags = (storage_bytes_t){in->tags, strlen(in->tags)};

    if (in->keyword[0] != '\0') {
        l.code = (storage_bytes_t){in->keyword, strlen(in->keyword)};
        rc = storage_link_insert(txn, &l, false);
        if (rc == STORAGE_EXISTS)
            return api_job_error(job, 409, "ALREADY_A_BITLY_LINK", "That back-half is taken.",
                                 "bitlinks", "keyword", "already_exists");
    } else {
        /* A 7-character code from a 49-letter alphabet: a collision is rare,
         * and a few tries make one practically impossible. */
        rc = STORAGE_EXISTS;
        for (int i = 0; i < 8 && rc == STORAGE_EXISTS; i++) {
            util_code(code, PARSE_CODE_LEN);
            l.code = (storage_bytes_t){code, PARSE_CODE_LEN};
            rc = storage_link_insert(txn, &l, true);
        }
    }
    if (rc != STORAGE_OK)
        return api_job_error(job, 500, "INTERNAL_ERROR", "The link could not be stored.",
                             "bitlinks", NULL, NULL);
    job->status = 201;
    job->response = api_bitlink_json(job->app, &l);
    return STORAGE_OK;
}

static int create_link(api_request_t *r, bool shorten)
{
    link_input_t *in = xcalloc(1, sizeof(*in));

    in->shorten = shorten;
    if (read_link_input(r, in) != 0) {
        link_input_free(in);
        return 0;
    }
    if (shorten && (in->title != NULL || in->tags != NULL || in->keyword[0] != '\0')) {
        /* /v4/shorten takes only long_url, domain and group_guid, as on Bitly;
         * the rest is ignored there rather than refused. */
        free(in->title);
        free(in->tags);
        in->title = in->tags = NULL;
        in->keyword[0] = '\0';
    }
    return api_submit(r, create_link_run, NULL, NULL, in, link_input_free);
}

/* ---- reading ---- */

/* The bitlink id is domain/hash, as two segments or one with %2F. */
static bool bitlink_code(api_request_t *r, size_t first, const char **code, size_t *len)
{
    if (r->n_seg == first + 2) {
        *code = r->seg[first + 1].base;
        *len = r->seg[first + 1].len;
        return true;
    }
    if (r->n_seg == first + 1) {
        h2o_iovec_t s = r->seg[first];
        for (size_t i = 0; i + 3 <= s.len; i++) {
            if (s.base[i] == '%' && s.base[i + 1] == '2' && (s.base[i + 2] | 0x20) == 'f') {
                *code = s.base + i + 3;
                *len = s.len - i - 3;
                return true;
            }
        }
    }
    return false;
}

static int get_bitlink(api_request_t *r, const char *code, size_t len)
{
    storage_link_t l;
    json_t *body = NULL;
    storage_txn_t *txn = storage_reader_begin(r->w->reader);

    if (txn == NULL)
        return api_not_found(r, "bitlinks");
    if (storage_link_get(txn, code, len, &l) == STORAGE_OK)
        body = api_bitlink_json(r->app, &l);
    storage_reader_end(r->w->reader);
    if (body == NULL)
        return api_not_found(r, "bitlinks");
    return api_reply(r->req, 200, body);
}

static int expand(api_request_t *r)
{
    const char *id = api_str(r->body, "bitlink_id");
    const char *slash = id != NULL ? strrchr(id, '/') : NULL;

    if (slash == NULL)
        return api_error(r->req, 400, "INVALID_ARG_BITLINK_ID",
                         "bitlink_id (domain/hash) is required.", "bitlinks", "bitlink_id",
                         "invalid");
    storage_link_t l;
    json_t *body = NULL;
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    if (txn != NULL && storage_link_get(txn, slash + 1, strlen(slash + 1), &l) == STORAGE_OK) {
        char created[32], link[700];
        util_format_bitly_time(l.created_us, created);
        snprintf(link, sizeof(link), "%s/%.*s", r->app->cfg->public_url, (int)l.code.len,
                 l.code.ptr);
        body = json_pack("{s:s, s:s, s:s, s:s%}", "created_at", created, "link", link, "id", id,
                         "long_url", l.long_url.ptr, l.long_url.len);
    }
    if (txn != NULL)
        storage_reader_end(r->w->reader);
    if (body == NULL)
        return api_not_found(r, "bitlinks");
    return api_reply(r->req, 200, body);
}

int api_links(api_request_t *r)
{
    const char *code;
    size_t len;

    if (api_seg_is(r, 0, "shorten") && r->n_seg == 1)
        return api_method_is(r, "POST") ? create_link(r, true) : api_method_not_allowed(r);
    if (api_seg_is(r, 0, "expand") && r->n_seg == 1)
        return api_method_is(r, "POST") ? expand(r) : api_method_not_allowed(r);
    if (api_seg_is(r, 0, "bitlinks") && r->n_seg == 1)
        return api_method_is(r, "POST") ? create_link(r, false) : api_method_not_allowed(r);
    if (api_seg_is(r, 0, "bitlinks") && r->n_seg >= 3 &&
        (api_seg_is(r, r->n_seg - 1, "summary") || api_seg_is(r, r->n_seg - 1, "clicks") ||
         api_seg_is(r, r->n_seg - 1, "countries") || api_seg_is(r, r->n_seg - 1, "referrers")))
        return api_clicks(r);
    if (api_seg_is(r, 0, "bitlinks") && bitlink_code(r, 1, &code, &len)) {
        if (api_method_is(r, "GET"))
            return get_bitlink(r, code, len);
        return api_method_not_allowed(r);
    }
    return api_not_found(r, "bitlinks");
}
