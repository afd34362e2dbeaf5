/*
 * server/links: /v4/shorten, /v4/bitlinks (create, read, update), the listings of
 * a group's links and tags, /v4/custom_bitlinks and /v4/expand. Input is checked
 * on the worker; every write (and every lookup a write depends on) runs as a job
 * on the storage writer, which is the only thread that writes, so a check and
 * the write it guards are never separated by another writer.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "links.h"
#include "log.h"
#include "parse.h"
#include "query.h"

#define MAX_TITLE   512
#define MAX_TAGS    32
#define MAX_TAG_LEN 64

/* Listing a group: Bitly's default page size, and our largest. */
#define PAGE_SIZE_DEFAULT 50
#define PAGE_SIZE_MAX     1000

/* The custom back-halves made for a link (POST /v4/custom_bitlinks) are kept in
 * a meta record under this prefix and the link's code, as a JSON array of codes:
 * the link record has no field for them. */
#define ALIAS_PREFIX "custom_bitlinks/"
#define MAX_ALIASES  64

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
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s%, s:b, s:o, s:[], s:[], s:[], s:[], s:b, "
                          "s:{s:s}}",
                          "created_at", created, "created_by", "admin", "id", id, "link", link,
                          "long_url", l->long_url.ptr, l->long_url.len, "archived", l->archived,
                          "tags", tags, "custom_bitlinks", "deeplinks", "launchpad_ids",
                          "qr_code_ids", "is_deleted", 0, "references", "group", group_ref);
    if (l->title.len > 0)
        json_object_set_new(o, "title", json_stringn(l->title.ptr, l->title.len));
    else
        json_object_set_new(o, "title", json_null());
    return o;
}

/* The link's JSON with its custom back-halves, which live in their own record. */
static json_t *bitlink_json(storage_txn_t *txn, const app_t *app, const storage_link_t *l)
{
    json_t *o = api_bitlink_json(app, l);
    char key[sizeof(ALIAS_PREFIX) + STORAGE_CODE_MAX];
    storage_bytes_t v;

    snprintf(key, sizeof(key), ALIAS_PREFIX "%.*s", (int)l->code.len, l->code.ptr);
    if (storage_record_get(txn, STORAGE_DB_META, key, strlen(key), &v) != STORAGE_OK)
        return o;
    json_t *codes = json_loadb(v.ptr, v.len, 0, NULL);
    json_t *links = json_object_get(o, "custom_bitlinks");
    size_t i;
    json_t *c;
    json_array_foreach(codes, i, c)
    {
        char link[700];
        if (!json_is_string(c))
            continue;
        snprintf(link, sizeof(link), "%s/%s", app->cfg->public_url, json_string_value(c));
        json_array_append_new(links, json_string(link));
    }
    json_decref(codes);
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

/* Reads and normalises long_url into out; on bad input replies and returns -1. */
static int read_long_url(api_request_t *r, const char *url, char out[PARSE_URL_MAX + 1])
{
    parse_url_error_t e =
        parse_long_url(url, strlen(url), r->app->cfg->domain, out, PARSE_URL_MAX + 1);

    return e == PARSE_URL_OK ? 0 : reject_url(r, e);
}

/* title: a string, or null to clear it. Sets *out to an owned copy or NULL. */
static int read_title(api_request_t *r, json_t *title, char **out)
{
    *out = NULL;
    if (json_is_null(title))
        return 0;
    if (!json_is_string(title) || json_string_length(title) > MAX_TITLE)
        return bad(r->req, 400, "INVALID_ARG_TITLE", "title must be a string of at most 512 bytes.",
                   "bitlinks", "title", "invalid");
    if (json_string_length(title) > 0)
        *out = xstrndup(json_string_value(title), json_string_length(title));
    return 0;
}

/* tags: an array of strings, or null for none. Sets *out to owned JSON text or
 * NULL. */
static int read_tags(api_request_t *r, json_t *tags, char **out)
{
    *out = NULL;
    if (json_is_null(tags))
        return 0;
    if (!tags_valid(tags))
        return bad(r->req, 400, "INVALID_ARG_TAGS",
                   "tags must be an array of up to 32 strings of 1 to 64 bytes.", "bitlinks",
                   "tags", "invalid");
    if (json_array_size(tags) > 0)
        *out = json_dumps(tags, JSON_COMPACT);
    return 0;
}

static int reject_keyword(api_request_t *r, const char *field)
{
    return bad(r->req, 400, "INVALID_ARG_KEYWORD",
               "A back-half is 3 to 64 letters, digits, '-' or '_', and not a reserved word.",
               "bitlinks", field, "invalid");
}

/* Fills in from the body; on bad input replies and returns -1. */
static int read_link_input(api_request_t *r, link_input_t *in)
{
    const char *url = api_str(r->body, "long_url");

    if (url == NULL)
        return bad(r->req, 400, "INVALID_ARG_LONG_URL", "long_url is required.", "bitlinks",
                   "long_url", "missing");
    if (read_long_url(r, url, in->long_url) != 0)
        return -1;

    const char *domain = api_str(r->body, "domain");
    if (domain != NULL && !api_domain_ours(r->app, domain, strlen(domain)))
        return bad(r->req, 400, "INVALID_ARG_DOMAIN",
                   "domain must be this server's short domain (or bit.ly) or left out.", "bitlinks",
                   "domain", "invalid");

    const char *group = api_str(r->body, "group_guid");
    if (group == NULL)
        group = r->app->default_group_guid;
    if (strlen(group) != UTIL_GUID_LEN)
        return bad(r->req, 400, "INVALID_ARG_GROUP_GUID", "group_guid is not a group.", "bitlinks",
                   "group_guid", "invalid");
    memcpy(in->group_guid, group, UTIL_GUID_LEN + 1);

    const char *field = "keyword";
    const char *kw = api_str(r->body, "keyword");
    if (kw == NULL && (kw = api_str(r->body, "custom_back_half")) != NULL)
        field = "custom_back_half";
    if (kw != NULL) {
        if (!parse_backhalf_valid(kw, strlen(kw)))
            return reject_keyword(r, field);
        snprintf(in->keyword, sizeof(in->keyword), "%s", kw);
    }

    json_t *title = json_object_get(r->body, "title");
    if (title != NULL && read_title(r, title, &in->title) != 0)
        return -1;
    json_t *tags = json_object_get(r->body, "tags");
    if (tags != NULL && read_tags(r, tags, &in->tags) != 0)
        return -1;
    return 0;
}

/* ---- creating ---- */

static bool group_exists(storage_txn_t *txn, const char *guid, size_t len)
{
    storage_bytes_t v;

    return len == UTIL_GUID_LEN &&
           storage_record_get(txn, STORAGE_DB_GROUPS, guid, len, &v) == STORAGE_OK;
}

static int taken(api_job_t *job, const char *field)
{
    return api_job_error(job, 409, "ALREADY_A_BITLY_LINK", "That back-half is taken.", "bitlinks",
                         field, "already_exists");
}

static int create_link_run(storage_txn_t *txn, api_job_t *job)
{
    link_input_t *in = job->data;
    storage_link_t l = {0};
    char code[PARSE_BACKHALF_MAX + 1];
    int rc;

    if (!group_exists(txn, in->group_guid, strlen(in->group_guid)))
        return api_job_error(job, 404, "NOT_FOUND", "group_guid names no group.", "groups",
                             "group_guid", "not_found");
    /* Shortening the same long URL again in a group gives the same link. */
    if (in->keyword[0] == '\0' &&
        storage_link_find_by_url(txn, in->group_guid, in->long_url, strlen(in->long_url), &l) ==
            STORAGE_OK) {
        job->status = 200;
        job->response = bitlink_json(txn, job->app, &l);
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
        /* MDB_NOOVERWRITE on the writer: of any number of concurrent creates of
         * one back-half, exactly one finds it free. */
        l.code = (storage_bytes_t){in->keyword, strlen(in->keyword)};
        rc = storage_link_insert(txn, &l, false);
        if (rc == STORAGE_EXISTS)
            return taken(job, "keyword");
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

/* ---- custom back-halves ---- */

typedef struct alias_input {
    char code[STORAGE_CODE_MAX + 1];    /* the existing link */
    char keyword[STORAGE_CODE_MAX + 1]; /* the new back-half */
} alias_input_t;

/* Splits "domain/rest" and checks the domain is ours; rest is borrowed. */
static bool split_id(const app_t *app, const char *id, const char **rest)
{
    const char *slash = id != NULL ? strchr(id, '/') : NULL;

    /* A full link ("https://host/code") is accepted too, as Bitly does. */
    if (slash != NULL && slash > id && slash[-1] == ':' && slash[1] == '/') {
        id = slash + 2;
        slash = strchr(id, '/');
    }
    if (slash == NULL || !api_domain_ours(app, id, (size_t)(slash - id)) || slash[1] == '\0' ||
        strchr(slash + 1, '/') != NULL || strlen(slash + 1) > STORAGE_CODE_MAX)
        return false;
    *rest = slash + 1;
    return true;
}

/* Adds keyword to the list of custom back-halves of code. */
static int remember_alias(storage_txn_t *txn, const char *code, const char *keyword)
{
    char key[sizeof(ALIAS_PREFIX) + STORAGE_CODE_MAX];
    storage_bytes_t v;
    json_t *list = NULL;

    snprintf(key, sizeof(key), ALIAS_PREFIX "%s", code);
    if (storage_record_get(txn, STORAGE_DB_META, key, strlen(key), &v) == STORAGE_OK)
        list = json_loadb(v.ptr, v.len, 0, NULL);
    if (!json_is_array(list)) {
        json_decref(list);
        list = json_array();
    }
    if (json_array_size(list) >= MAX_ALIASES) {
        json_decref(list);
        return STORAGE_INVALID;
    }
    json_array_append_new(list, json_string(keyword));
    char *text = json_dumps(list, JSON_COMPACT);
    int rc = storage_record_put(txn, STORAGE_DB_META, key, strlen(key), text, strlen(text), 0);
    free(text);
    json_decref(list);
    return rc;
}

static int create_alias_run(storage_txn_t *txn, api_job_t *job)
{
    alias_input_t *in = job->data;
    storage_link_t target, alias;
    int rc;

    if (storage_link_get(txn, in->code, strlen(in->code), &target) != STORAGE_OK)
        return api_job_error(job, 404, "NOT_FOUND", "bitlink_id names no link.", "bitlinks",
                             "bitlink_id", "not_found");
    /* The new back-half is a link of its own to the same place; the target's
     * fields are copied because its pointers go stale at the first write. */
    alias = target;
    alias.code = (storage_bytes_t){in->keyword, strlen(in->keyword)};
    alias.created_us = alias.modified_us = util_now_us();
    alias.long_url.ptr = xstrndup(target.long_url.ptr, target.long_url.len);
    alias.title.ptr = target.title.len > 0 ? xstrndup(target.title.ptr, target.title.len) : NULL;
    alias.tags.ptr = target.tags.len > 0 ? xstrndup(target.tags.ptr, target.tags.len) : NULL;
    rc = storage_link_insert(txn, &alias, false);
    if (rc == STORAGE_EXISTS)
        rc = taken(job, "custom_bitlink");
    else if (rc == STORAGE_OK && (rc = remember_alias(txn, in->code, in->keyword)) == STORAGE_OK) {
        char custom[400];
        snprintf(custom, sizeof(custom), "%s/%s", job->app->cfg->domain, in->keyword);
        storage_link_get(txn, in->code, strlen(in->code), &target);
        job->status = 201;
        job->response = json_pack("{s:s, s:o}", "custom_bitlink", custom, "bitlink",
                                  bitlink_json(txn, job->app, &target));
    } else if (rc == STORAGE_INVALID) {
        api_job_error(job, 400, "INVALID_ARG_CUSTOM_BITLINK",
                      "A link has at most 64 custom back-halves.", "custom_bitlinks",
                      "custom_bitlink", "invalid");
    } else {
        api_job_error(job, 500, "INTERNAL_ERROR", "The custom back-half could not be stored.",
                      "custom_bitlinks", NULL, NULL);
    }
    free((char *)alias.long_url.ptr);
    free((char *)alias.title.ptr);
    free((char *)alias.tags.ptr);
    return rc;
}

static int create_alias(api_request_t *r)
{
    const char *custom = api_str(r->body, "custom_bitlink");
    const char *target = api_str(r->body, "bitlink_id");
    const char *keyword, *code;

    if (custom == NULL || !split_id(r->app, custom, &keyword))
        return api_error(r->req, 400, "INVALID_ARG_CUSTOM_BITLINK",
                         "custom_bitlink (domain/back-half, on this server's domain) is required.",
                         "custom_bitlinks", "custom_bitlink", "invalid");
    if (!parse_backhalf_valid(keyword, strlen(keyword))) {
        reject_keyword(r, "custom_bitlink");
        return 0;
    }
    if (target == NULL || !split_id(r->app, target, &code))
        return api_error(r->req, 400, "INVALID_ARG_BITLINK_ID",
                         "bitlink_id (domain/hash) is required.", "custom_bitlinks", "bitlink_id",
                         "invalid");
    alias_input_t *in = xcalloc(1, sizeof(*in));
    snprintf(in->keyword, sizeof(in->keyword), "%s", keyword);
    snprintf(in->code, sizeof(in->code), "%s", code);
    return api_submit(r, create_alias_run, NULL, NULL, in, free);
}

/* ---- updating ---- */

typedef struct patch_input {
    char code[STORAGE_CODE_MAX + 1];
    bool has_title, has_tags, has_archived, has_url;
    bool archived;
    char *title; /* with has_title: the new title, NULL to clear */
    char *tags;  /* with has_tags: JSON text, NULL for none */
    char long_url[PARSE_URL_MAX + 1];
} patch_input_t;

static void patch_input_free(void *p)
{
    patch_input_t *in = p;

    free(in->title);
    free(in->tags);
    free(in);
}

static char *copy_bytes(storage_bytes_t b)
{
    return b.len > 0 ? xstrndup(b.ptr, b.len) : NULL;
}

static storage_bytes_t as_bytes(const char *s)
{
    return (storage_bytes_t){s, s != NULL ? strlen(s) : 0};
}

/* The custom back-halves follow their link to a new long URL. */
static int move_aliases(storage_txn_t *txn, const char *code, const char *long_url)
{
    char key[sizeof(ALIAS_PREFIX) + STORAGE_CODE_MAX];
    storage_bytes_t v;
    int rc = STORAGE_OK;

    snprintf(key, sizeof(key), ALIAS_PREFIX "%s", code);
    if (storage_record_get(txn, STORAGE_DB_META, key, strlen(key), &v) != STORAGE_OK)
        return STORAGE_OK;
    json_t *codes = json_loadb(v.ptr, v.len, 0, NULL);
    size_t i;
    json_t *c;
    json_array_foreach(codes, i, c)
    {
        storage_link_t a;
        const char *ac = json_string_value(c);
        if (ac == NULL || storage_link_get(txn, ac, strlen(ac), &a) != STORAGE_OK)
            continue;
        char *title = copy_bytes(a.title), *tags = copy_bytes(a.tags);
        a.code = as_bytes(ac);
        a.title = as_bytes(title);
        a.tags = as_bytes(tags);
        a.long_url = as_bytes(long_url);
        a.modified_us = util_now_us();
        rc = storage_link_update(txn, &a);
        free(title);
        free(tags);
        if (rc != STORAGE_OK)
            break;
    }
    json_decref(codes);
    return rc;
}

static int patch_link_run(storage_txn_t *txn, api_job_t *job)
{
    patch_input_t *in = job->data;
    storage_link_t l;

    if (storage_link_get(txn, in->code, strlen(in->code), &l) != STORAGE_OK)
        return api_job_error(job, 404, "NOT_FOUND", "No such bitlink.", "bitlinks", NULL, NULL);

    /* What is kept is copied out first: the record's pointers go stale at the
     * first write in this transaction. */
    char *title = in->has_title ? NULL : copy_bytes(l.title);
    char *tags = in->has_tags ? NULL : copy_bytes(l.tags);
    char *url = in->has_url ? NULL : copy_bytes(l.long_url);
    bool url_changed = in->has_url && (l.long_url.len != strlen(in->long_url) ||
                                       memcmp(l.long_url.ptr, in->long_url, l.long_url.len) != 0);

    l.code = as_bytes(in->code);
    l.title = as_bytes(in->has_title ? in->title : title);
    l.tags = as_bytes(in->has_tags ? in->tags : tags);
    l.long_url = as_bytes(in->has_url ? in->long_url : url);
    if (in->has_archived)
        l.archived = in->archived;
    l.modified_us = util_now_us();

    int rc = storage_link_update(txn, &l);
    if (rc == STORAGE_OK && url_changed)
        rc = move_aliases(txn, in->code, in->long_url);
    if (rc == STORAGE_OK) {
        job->status = 200;
        job->response = bitlink_json(txn, job->app, &l);
    } else {
        api_job_error(job, 500, "INTERNAL_ERROR", "The link could not be updated.", "bitlinks",
                      NULL, NULL);
    }
    free(title);
    free(tags);
    free(url);
    return rc;
}

/* Reads the fields a PATCH may change; others (Bitly has many) are ignored. */
static int read_patch(api_request_t *r, patch_input_t *in)
{
    json_t *v;

    if (r->body == NULL)
        return bad(r->req, 400, "INVALID_BODY",
                   "A JSON object with the fields to change is required.", "bitlinks", "body",
                   "missing");
    if ((v = json_object_get(r->body, "title")) != NULL) {
        in->has_title = true;
        if (read_title(r, v, &in->title) != 0)
            return -1;
    }
    if ((v = json_object_get(r->body, "tags")) != NULL) {
        in->has_tags = true;
        if (read_tags(r, v, &in->tags) != 0)
            return -1;
    }
    if ((v = json_object_get(r->body, "archived")) != NULL) {
        if (!json_is_boolean(v))
            return bad(r->req, 400, "INVALID_ARG_ARCHIVED", "archived must be true or false.",
                       "bitlinks", "archived", "invalid");
        in->has_archived = true;
        in->archived = json_is_true(v);
    }
    if ((v = json_object_get(r->body, "long_url")) != NULL) {
        if (!json_is_string(v))
            return bad(r->req, 400, "INVALID_ARG_LONG_URL", "long_url must be a string.",
                       "bitlinks", "long_url", "invalid");
        in->has_url = true;
        if (read_long_url(r, json_string_value(v), in->long_url) != 0)
            return -1;
    }
    return 0;
}

static int patch_link(api_request_t *r, const char *code, size_t len)
{
    patch_input_t *in = xcalloc(1, sizeof(*in));

    if (len > STORAGE_CODE_MAX) {
        free(in);
        return api_not_found(r, "bitlinks");
    }
    memcpy(in->code, code, len);
    if (read_patch(r, in) != 0) {
        patch_input_free(in);
        return 0;
    }
    return api_submit(r, patch_link_run, NULL, NULL, in, patch_input_free);
}

/* ---- reading ---- */

static int get_bitlink(api_request_t *r, const char *code, size_t len)
{
    storage_link_t l;
    json_t *body = NULL;
    storage_txn_t *txn = storage_reader_begin(r->w->reader);

    if (txn == NULL)
        return api_not_found(r, "bitlinks");
    if (storage_link_get(txn, code, len, &l) == STORAGE_OK)
        body = bitlink_json(txn, r->app, &l);
    storage_reader_end(r->w->reader);
    if (body == NULL)
        return api_not_found(r, "bitlinks");
    return api_reply(r->req, 200, body);
}

static int expand(api_request_t *r)
{
    const char *id = api_str(r->body, "bitlink_id");
    const char *code;

    if (id == NULL || !split_id(r->app, id, &code))
        return api_error(r->req, 400, "INVALID_ARG_BITLINK_ID",
                         "bitlink_id (domain/hash) is required.", "bitlinks", "bitlink_id",
                         "invalid");
    storage_link_t l;
    json_t *body = NULL;
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    if (txn != NULL && storage_link_get(txn, code, strlen(code), &l) == STORAGE_OK) {
        char created[32], link[700], own_id[400];
        util_format_bitly_time(l.created_us, created);
        snprintf(link, sizeof(link), "%s/%.*s", r->app->cfg->public_url, (int)l.code.len,
                 l.code.ptr);
        snprintf(own_id, sizeof(own_id), "%s/%.*s", r->app->cfg->domain, (int)l.code.len,
                 l.code.ptr);
        body = json_pack("{s:s, s:s, s:s, s:s%}", "created_at", created, "link", link, "id", own_id,
                         "long_url", l.long_url.ptr, l.long_url.len);
    }
    if (txn != NULL)
        storage_reader_end(r->w->reader);
    if (body == NULL)
        return api_not_found(r, "bitlinks");
    return api_reply(r->req, 200, body);
}

/* ---- a group's links and tags ---- */

#define MAX_FILTER_TAGS 16

typedef enum archived_filter { ARCHIVED_OFF, ARCHIVED_ON, ARCHIVED_BOTH } archived_filter_t;

typedef struct match {
    int64_t created_us;
    char code[STORAGE_CODE_MAX + 1];
} match_t;

typedef struct list_filter {
    archived_filter_t archived;
    char keyword[STORAGE_CODE_MAX + 1]; /* "" for any */
    char query[256];                    /* "" for any */
    char tags[MAX_FILTER_TAGS][MAX_TAG_LEN + 1];
    size_t n_tags;
    match_t *m;
    size_t n, cap;
} list_filter_t;

/* Whether needle occurs in hay, ignoring ASCII case. */
static bool contains_ci(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);

    for (size_t i = 0; n <= len && i <= len - n; i++) {
        if (strncasecmp(hay + i, needle, n) == 0)
            return true;
    }
    return false;
}

/* Whether the link's stored tags (a JSON array) hold any of the filter's. */
static bool has_any_tag(const list_filter_t *f, storage_bytes_t stored)
{
    json_t *tags = stored.len > 0 ? json_loadb(stored.ptr, stored.len, 0, NULL) : NULL;
    bool found = false;
    size_t i;
    json_t *t;

    json_array_foreach(tags, i, t)
    {
        for (size_t k = 0; k < f->n_tags && !found; k++)
            found = json_is_string(t) && strcmp(json_string_value(t), f->tags[k]) == 0;
    }
    json_decref(tags);
    return found;
}

static bool link_matches(const list_filter_t *f, const storage_link_t *l)
{
    if ((f->archived == ARCHIVED_OFF && l->archived) ||
        (f->archived == ARCHIVED_ON && !l->archived))
        return false;
    if (f->keyword[0] != '\0' && !contains_ci(l->code.ptr, l->code.len, f->keyword))
        return false;
    if (f->query[0] != '\0' && !contains_ci(l->code.ptr, l->code.len, f->query) &&
        !contains_ci(l->title.ptr, l->title.len, f->query) &&
        !contains_ci(l->long_url.ptr, l->long_url.len, f->query) &&
        !contains_ci(l->tags.ptr, l->tags.len, f->query))
        return false;
    return f->n_tags == 0 || has_any_tag(f, l->tags);
}

static int on_group_link(void *ctx, const storage_link_t *l)
{
    list_filter_t *f = ctx;

    if (!link_matches(f, l))
        return 0;
    if (f->n == f->cap) {
        f->cap = f->cap == 0 ? 64 : f->cap * 2;
        match_t *m = xmalloc(f->cap * sizeof(*m));
        if (f->n > 0)
            memcpy(m, f->m, f->n * sizeof(*m));
        free(f->m);
        f->m = m;
    }
    f->m[f->n].created_us = l->created_us;
    memcpy(f->m[f->n].code, l->code.ptr, l->code.len);
    f->m[f->n].code[l->code.len] = '\0';
    f->n++;
    return 0;
}

/* Newest first, as Bitly lists them; the code breaks ties so pages are stable. */
static int newest_first(const void *a, const void *b)
{
    const match_t *x = a, *y = b;

    if (x->created_us != y->created_us)
        return x->created_us < y->created_us ? 1 : -1;
    return strcmp(x->code, y->code);
}

static int reject_param(api_request_t *r, const char *name, const char *description)
{
    char message[64];

    snprintf(message, sizeof(message), "INVALID_ARG_%s", name);
    for (char *p = message; *p != '\0'; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    return bad(r->req, 400, message, description, "bitlinks", name, "invalid");
}

/* A whole number in [min, max] from the query, or def when absent. */
static int read_number(api_request_t *r, const char *name, long min, long max, long def, long *out)
{
    char v[32], *end;
    int rc = query_get_set(r->req, name, v, sizeof(v));

    *out = def;
    if (rc == QUERY_ABSENT)
        return 0;
    long n = rc == QUERY_FOUND ? strtol(v, &end, 10) : 0;
    if (rc != QUERY_FOUND || end == v || *end != '\0' || n < min || n > max) {
        char description[128];
        snprintf(description, sizeof(description), "%s must be a whole number from %ld to %ld.",
                 name, min, max);
        return reject_param(r, name, description);
    }
    *out = n;
    return 0;
}

static int read_filter(api_request_t *r, list_filter_t *f)
{
    char v[MAX_TAG_LEN + 1];
    int rc;

    rc = query_get_set(r->req, "archived", v, sizeof(v));
    if (rc == QUERY_FOUND && strcmp(v, "on") == 0)
        f->archived = ARCHIVED_ON;
    else if (rc == QUERY_FOUND && strcmp(v, "both") == 0)
        f->archived = ARCHIVED_BOTH;
    else if (rc != QUERY_ABSENT && !(rc == QUERY_FOUND && strcmp(v, "off") == 0))
        return reject_param(r, "archived", "archived must be on, off or both.");
    if (query_get(r->req, "keyword", 0, f->keyword, sizeof(f->keyword)) == QUERY_BAD)
        return reject_param(r, "keyword", "keyword is at most 64 bytes.");
    if (query_get(r->req, "query", 0, f->query, sizeof(f->query)) == QUERY_BAD)
        return reject_param(r, "query", "query is at most 255 bytes.");
    /* tags=a&tags=b: links carrying any of them. */
    for (size_t i = 0;; i++) {
        rc = query_get(r->req, "tags", i, v, sizeof(v));
        if (rc == QUERY_ABSENT)
            break;
        if (rc == QUERY_BAD || f->n_tags == MAX_FILTER_TAGS)
            return reject_param(r, "tags", "Up to 16 tags of at most 64 bytes each.");
        if (v[0] != '\0')
            memcpy(f->tags[f->n_tags++], v, sizeof(v));
    }
    return 0;
}

/* The same listing at another page: the request's own query with page
 * replaced, as a full URL (Bitly's pagination.next and .prev). */
static json_t *page_url(api_request_t *r, long page)
{
    h2o_iovec_t q = query_raw(r->req);
    const char *p = q.base, *end = q.base + q.len;
    size_t cap = strlen(r->app->cfg->public_url) + q.len + 64 + r->seg[1].len;
    char *url = xmalloc(cap);
    int n = snprintf(url, cap, "%s/v4/groups/%.*s/bitlinks?", r->app->cfg->public_url,
                     (int)r->seg[1].len, r->seg[1].base);
    size_t len = (size_t)n;

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;
        bool is_page =
            (size_t)(stop - p) >= 4 && memcmp(p, "page", 4) == 0 && (stop - p == 4 || p[4] == '=');
        if (!is_page && stop > p) {
            memcpy(url + len, p, (size_t)(stop - p));
            len += (size_t)(stop - p);
            url[len++] = '&';
        }
        p = stop + 1;
    }
    snprintf(url + len, cap - len, "page=%ld", page);
    json_t *s = json_string(url);
    free(url);
    return s;
}

int links_group_bitlinks(api_request_t *r)
{
    list_filter_t f = {0};
    long size, page;
    json_t *links = json_array();

    if (!api_method_is(r, "GET"))
        return api_method_not_allowed(r);
    if (read_number(r, "size", 1, PAGE_SIZE_MAX, PAGE_SIZE_DEFAULT, &size) != 0 ||
        read_number(r, "page", 1, 1000000, 1, &page) != 0 || read_filter(r, &f) != 0) {
        json_decref(links);
        return 0;
    }
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    if (txn == NULL || !group_exists(txn, r->seg[1].base, r->seg[1].len)) {
        if (txn != NULL)
            storage_reader_end(r->w->reader);
        json_decref(links);
        return api_not_found(r, "groups");
    }
    char guid[UTIL_GUID_LEN + 1];
    memcpy(guid, r->seg[1].base, UTIL_GUID_LEN);
    guid[UTIL_GUID_LEN] = '\0';
    storage_link_scan(txn, guid, NULL, 0, on_group_link, &f);
    if (f.n > 0) /* m is NULL then, which qsort may not be given */
        qsort(f.m, f.n, sizeof(*f.m), newest_first);

    size_t first = (size_t)(page - 1) * (size_t)size;
    for (size_t i = first; i < f.n && i < first + (size_t)size; i++) {
        storage_link_t l;
        if (storage_link_get(txn, f.m[i].code, strlen(f.m[i].code), &l) == STORAGE_OK)
            json_array_append_new(links, bitlink_json(txn, r->app, &l));
    }
    storage_reader_end(r->w->reader);

    json_t *prev = page > 1 ? page_url(r, page - 1) : json_string("");
    json_t *next = first + (size_t)size < f.n ? page_url(r, page + 1) : json_string("");
    json_t *body = json_pack("{s:o, s:{s:o, s:o, s:I, s:I, s:I}}", "links", links, "pagination",
                             "prev", prev, "next", next, "size", (json_int_t)size, "page",
                             (json_int_t)page, "total", (json_int_t)f.n);
    free(f.m);
    return api_reply(r->req, 200, body);
}

static int on_group_tags(void *ctx, const storage_link_t *l)
{
    json_t *set = ctx;
    json_t *tags = l->tags.len > 0 ? json_loadb(l->tags.ptr, l->tags.len, 0, NULL) : NULL;
    size_t i;
    json_t *t;

    json_array_foreach(tags, i, t)
    {
        if (json_is_string(t))
            json_object_set_new(set, json_string_value(t), json_true());
    }
    json_decref(tags);
    return 0;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int links_group_tags(api_request_t *r)
{
    json_t *set = json_object();

    if (!api_method_is(r, "GET")) {
        json_decref(set);
        return api_method_not_allowed(r);
    }
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    if (txn == NULL || !group_exists(txn, r->seg[1].base, r->seg[1].len)) {
        if (txn != NULL)
            storage_reader_end(r->w->reader);
        json_decref(set);
        return api_not_found(r, "groups");
    }
    char guid[UTIL_GUID_LEN + 1];
    memcpy(guid, r->seg[1].base, UTIL_GUID_LEN);
    guid[UTIL_GUID_LEN] = '\0';
    storage_link_scan(txn, guid, NULL, 0, on_group_tags, set);
    storage_reader_end(r->w->reader);

    size_t n = json_object_size(set), i = 0;
    const char **names = xcalloc(n, sizeof(*names));
    const char *key;
    json_t *v;
    json_object_foreach(set, key, v)
    {
        names[i++] = key;
    }
    qsort(names, n, sizeof(*names), by_string);
    json_t *tags = json_array();
    for (i = 0; i < n; i++)
        json_array_append_new(tags, json_string(names[i]));
    free(names);
    json_decref(set);
    return api_reply(r->req, 200, json_pack("{s:o}", "tags", tags));
}

/* ---- routing ---- */

static bool is_metric(api_request_t *r, size_t at)
{
    if (at == r->n_seg - 1)
        return api_seg_is(r, at, "clicks") || api_seg_is(r, at, "countries") ||
               api_seg_is(r, at, "referrers") || api_seg_is(r, at, "engagement_types");
    return at == r->n_seg - 2 && api_seg_is(r, at, "clicks") && api_seg_is(r, at + 1, "summary");
}

int api_links(api_request_t *r)
{
    h2o_iovec_t domain, id;
    size_t next;

    if (api_seg_is(r, 0, "shorten") && r->n_seg == 1)
        return api_method_is(r, "POST") ? create_link(r, true) : api_method_not_allowed(r);
    if (api_seg_is(r, 0, "expand") && r->n_seg == 1)
        return api_method_is(r, "POST") ? expand(r) : api_method_not_allowed(r);
    if (api_seg_is(r, 0, "custom_bitlinks") && r->n_seg == 1)
        return api_method_is(r, "POST") ? create_alias(r) : api_method_not_allowed(r);
    if (api_seg_is(r, 0, "bitlinks") && r->n_seg == 1)
        return api_method_is(r, "POST") ? create_link(r, false) : api_method_not_allowed(r);
    if (!api_seg_is(r, 0, "bitlinks") || !api_bitlink_id(r, &domain, &id, &next))
        return api_not_found(r, "bitlinks");
    if (next < r->n_seg)
        return is_metric(r, next) ? api_clicks(r) : api_not_found(r, "bitlinks");
    if (api_method_is(r, "GET"))
        return get_bitlink(r, id.base, id.len);
    if (api_method_is(r, "PATCH"))
        return patch_link(r, id.base, id.len);
    return api_method_not_allowed(r);
}
