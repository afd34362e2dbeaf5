/*
 * server/hooks: /v4/webhooks and /v4/organizations/{guid}/webhooks. Records
 * are webhooks/'s JSON form; replies never carry a secret except the signing
 * secret in the answer to a create.
 */
#include <string.h>

#include "api.h"
#include "log.h"

#define MAX_NAME         256
#define MAX_CLIENT_FIELD 512

json_t *api_webhook_json(const app_t *app, const webhook_t *w)
{
    char created[32], modified[32];
    json_t *groups = json_array();

    util_format_bitly_time(w->created_us, created);
    util_format_bitly_time(w->modified_us, modified);
    for (size_t i = 0; i < w->n_groups; i++)
        json_array_append_new(groups, json_string(w->group_guids[i]));
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:s, s:s, s:o, s:s?, s:s?, s:s?}",
                  "guid", w->guid, "organization_guid", w->organization_guid, "name", w->name,
                  "url", w->url, "event", w->event != NULL ? w->event : "engagement", "status",
                  w->is_active ? "active" : "deactivated", "is_active", w->is_active, "fetch_tags",
                  w->fetch_tags, "include_bots", w->include_bots, "created", created, "modified",
                  modified, "group_guids", groups, "oauth_url", w->oauth_url, "client_id",
                  w->client_id, "deactivated_reason", w->deactivated_reason);
    /* Bitly names one group; ours may name several, or none for all. */
    json_object_set_new(o, "group_guid",
                        w->n_groups > 0 ? json_string(w->group_guids[0]) : json_string(""));
    if (w->client_secret != NULL)
        json_object_set_new(o, "client_secret", json_string("********"));
    return o;
}

static int bad(h2o_req_t *req, const char *message, const char *description, const char *field)
{
    api_error(req, 400, message, description, "webhooks", field, "invalid");
    return -1;
}

static char *dup_str(const char *s)
{
    return s != NULL ? xstrndup(s, strlen(s)) : NULL;
}

static int check_url(api_request_t *r, const char *url, const char *field, const char *message)
{
    webhook_net_policy_t policy = {.allow = r->app->cfg->webhook_allow,
                                   .n_allow = r->app->cfg->n_webhook_allow};
    char err[300];

    if (webhook_url_check(url, &policy, err, sizeof(err)) != 0)
        return bad(r->req, message, err, field);
    return 0;
}

/* Applies the body's fields to w, checking each; replies and returns -1 on bad
 * input. A create needs name and url; a patch takes any subset. */
static int apply_fields(api_request_t *r, webhook_t *w, bool create)
{
    json_t *b = r->body;
    const char *s;
    json_t *v;

    if (b == NULL)
        return bad(r->req, "INVALID_BODY", "A JSON object is required.", "body");
    if ((s = api_str(b, "name")) != NULL || create) {
        if (s == NULL || s[0] == '\0' || strlen(s) > MAX_NAME)
            return bad(r->req, "INVALID_ARG_NAME", "name must be 1 to 256 bytes.", "name");
        free(w->name);
        w->name = dup_str(s);
    }
    if ((s = api_str(b, "url")) != NULL || create) {
        if (s == NULL)
            return bad(r->req, "INVALID_ARG_URL", "url is required.", "url");
        if (check_url(r, s, "url", "INVALID_ARG_URL") != 0)
            return -1;
        free(w->url);
        w->url = dup_str(s);
    }
    if ((v = json_object_get(b, "event")) != NULL) {
        if (!json_is_string(v) || strcmp(json_string_value(v), "engagement") != 0)
            return bad(r->req, "INVALID_ARG_EVENT", "event must be \"engagement\".", "event");
    }
    if (w->event == NULL)
        w->event = dup_str("engagement");

    json_t *groups = json_object_get(b, "group_guids");
    json_t *group = json_object_get(b, "group_guid");
    if (groups != NULL || (group != NULL && !json_is_null(group))) {
        json_t *list = groups != NULL ? json_incref(groups) : json_pack("[O]", group);
        size_t i;
        json_t *g;
        if (!json_is_array(list) || json_array_size(list) > WEBHOOK_MAX_GROUPS) {
            json_decref(list);
            return bad(r->req, "INVALID_ARG_GROUP_GUID", "group_guid must name a group.",
                       "group_guid");
        }
        json_array_foreach(list, i, g)
        {
            if (!json_is_string(g) || json_string_length(g) != UTIL_GUID_LEN) {
                json_decref(list);
                return bad(r->req, "INVALID_ARG_GROUP_GUID", "group_guid must name a group.",
                           "group_guid");
            }
        }
        for (size_t k = 0; k < w->n_groups; k++)
            free(w->group_guids[k]);
        free(w->group_guids);
        w->n_groups = json_array_size(list);
        w->group_guids = xcalloc(w->n_groups, sizeof(char *));
        json_array_foreach(list, i, g) w->group_guids[i] = dup_str(json_string_value(g));
        json_decref(list);
    }

    static const char *const bools[] = {"is_active", "fetch_tags", "include_bots"};
    bool *targets[] = {&w->is_active, &w->fetch_tags, &w->include_bots};
    for (size_t i = 0; i < 3; i++) {
        v = json_object_get(b, bools[i]);
        if (v == NULL)
            continue;
        if (!json_is_boolean(v))
            return bad(r->req, "INVALID_ARG", "must be true or false.", bools[i]);
        *targets[i] = json_is_true(v);
    }

    v = json_object_get(b, "oauth_url");
    if (v != NULL) {
        const char *u = json_is_string(v) ? json_string_value(v) : NULL;
        if (u != NULL && u[0] != '\0' && check_url(r, u, "oauth_url", "INVALID_ARG_OAUTH_URL") != 0)
            return -1;
        free(w->oauth_url);
        w->oauth_url = u != NULL && u[0] != '\0' ? dup_str(u) : NULL;
    }
    static const char *const strs[] = {"client_id", "client_secret"};
    char **stargets[] = {&w->client_id, &w->client_secret};
    for (size_t i = 0; i < 2; i++) {
        v = json_object_get(b, strs[i]);
        if (v == NULL)
            continue;
        if (!json_is_null(v) && (!json_is_string(v) || json_string_length(v) > MAX_CLIENT_FIELD))
            return bad(r->req, "INVALID_ARG", "must be a string of at most 512 bytes.", strs[i]);
        free(*stargets[i]);
        *stargets[i] =
            json_is_string(v) && json_string_length(v) > 0 ? dup_str(json_string_value(v)) : NULL;
    }
    if (w->oauth_url != NULL && (w->client_id == NULL || w->client_secret == NULL))
        return bad(r->req, "INVALID_ARG_CLIENT_ID", "oauth_url needs client_id and client_secret.",
                   "client_id");
    return 0;
}

static void webhook_free_data(void *p)
{
    if (p != NULL) {
        webhook_clear(p);
        free(p);
    }
}

static int groups_exist(storage_txn_t *txn, api_job_t *job, const webhook_t *w)
{
    storage_bytes_t v;

    for (size_t i = 0; i < w->n_groups; i++) {
        if (storage_record_get(txn, STORAGE_DB_GROUPS, w->group_guids[i], UTIL_GUID_LEN, &v) !=
            STORAGE_OK)
            return api_job_error(job, 404, "NOT_FOUND", "group_guid names no group.", "groups",
                                 "group_guid", "not_found");
    }
    return STORAGE_OK;
}

static int put_webhook(storage_txn_t *txn, const webhook_t *w, unsigned flags)
{
    char *text = webhook_encode(w);
    int rc = storage_record_put(txn, STORAGE_DB_WEBHOOKS, w->guid, UTIL_GUID_LEN, text,
                                strlen(text), flags);

    free(text);
    return rc;
}

static int create_run(storage_txn_t *txn, api_job_t *job)
{
    webhook_t *w = job->data;

    if (groups_exist(txn, job, w) != STORAGE_OK)
        return STORAGE_INVALID;
    if (put_webhook(txn, w, STORAGE_NOOVERWRITE) != STORAGE_OK)
        return api_job_error(job, 500, "INTERNAL_ERROR", "The webhook could not be stored.",
                             "webhooks", NULL, NULL);
    job->status = 201;
    job->response = api_webhook_json(job->app, w);
    /* The only time the secret is shown, apart from its own route. */
    json_object_set_new(job->response, "signing_secret", json_string(w->signing_secret));
    return STORAGE_OK;
}

static int create(api_request_t *r)
{
    webhook_t *w = xcalloc(1, sizeof(*w));

    w->is_active = true;
    if (apply_fields(r, w, true) != 0) {
        webhook_free_data(w);
        return 0;
    }
    util_guid(w->guid);
    memcpy(w->organization_guid, r->app->organization_guid, sizeof(w->organization_guid));
    w->created_us = w->modified_us = util_now_us();
    w->signing_secret = xmalloc(WEBHOOK_SECRET_MAX);
    webhook_secret_generate(w->signing_secret, WEBHOOK_SECRET_MAX);
    return api_submit(r, create_run, NULL, NULL, w, webhook_free_data);
}

/* Reads a webhook record by guid into w; false when absent or unreadable. */
static bool load(storage_txn_t *txn, const char *guid, size_t len, webhook_t *w)
{
    storage_bytes_t v;

    if (len != UTIL_GUID_LEN ||
        storage_record_get(txn, STORAGE_DB_WEBHOOKS, guid, len, &v) != STORAGE_OK)
        return false;
    return webhook_decode(w, v.ptr, v.len, NULL, 0) == 0;
}

static int get(api_request_t *r)
{
    webhook_t w = {0};
    json_t *body = NULL;
    storage_txn_t *txn = storage_reader_begin(r->w->reader);

    if (txn != NULL && load(txn, r->seg[1].base, r->seg[1].len, &w))
        body = api_webhook_json(r->app, &w);
    if (txn != NULL)
        storage_reader_end(r->w->reader);
    webhook_clear(&w);
    return body != NULL ? api_reply(r->req, 200, body) : api_not_found(r, "webhooks");
}

static int patch_run(storage_txn_t *txn, api_job_t *job)
{
    webhook_t *w = job->data;

    if (groups_exist(txn, job, w) != STORAGE_OK)
        return STORAGE_INVALID;
    if (put_webhook(txn, w, 0) != STORAGE_OK)
        return api_job_error(job, 500, "INTERNAL_ERROR", "The webhook could not be stored.",
                             "webhooks", NULL, NULL);
    job->status = 200;
    job->response = api_webhook_json(job->app, w);
    return STORAGE_OK;
}

static int patch(api_request_t *r)
{
    webhook_t *w = xcalloc(1, sizeof(*w));
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    bool found = txn != NULL && load(txn, r->seg[1].base, r->seg[1].len, w);

    if (txn != NULL)
        storage_reader_end(r->w->reader);
    if (!found) {
        webhook_free_data(w);
        return api_not_found(r, "webhooks");
    }
    bool was_active = w->is_active;
    if (apply_fields(r, w, false) != 0) {
        webhook_free_data(w);
        return 0;
    }
    /* Reactivation starts clean: the failure streak and its reason go. */
    if (w->is_active && !was_active) {
        w->failing_since_us = 0;
        free(w->deactivated_reason);
        w->deactivated_reason = NULL;
    }
    w->modified_us = util_now_us();
    /* TODO: a patch racing another patch of the same webhook keeps the last
     * one whole; field-level merging on the writer would keep both. */
    return api_submit(r, patch_run, NULL, NULL, w, webhook_free_data);
}

static int delete_run(storage_txn_t *txn, api_job_t *job)
{
    int rc = storage_record_del(txn, STORAGE_DB_WEBHOOKS, job->arg, strlen(job->arg));

    if (rc == STORAGE_NOTFOUND)
        return api_job_error(job, 404, "NOT_FOUND", "Nothing is there.", "webhooks", NULL, NULL);
    if (rc != STORAGE_OK)
        return api_job_error(job, 500, "INTERNAL_ERROR", "The webhook could not be deleted.",
                             "webhooks", NULL, NULL);
    job->status = 200;
    job->response = json_object();
    return STORAGE_OK;
}

typedef struct list_ctx {
    const app_t *app;
    json_t *list;
} list_ctx_t;

static int collect(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    list_ctx_t *c = ctx;
    webhook_t w = {0};

    (void)key;
    if (webhook_decode(&w, val.ptr, val.len, NULL, 0) == 0)
        json_array_append_new(c->list, api_webhook_json(c->app, &w));
    webhook_clear(&w);
    return 0;
}

static int list(api_request_t *r)
{
    if (!h2o_memis(r->seg[1].base, r->seg[1].len, r->app->organization_guid, UTIL_GUID_LEN))
        return api_not_found(r, "organizations");
    list_ctx_t c = {.app = r->app, .list = json_array()};
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    if (txn != NULL) {
        storage_record_scan(txn, STORAGE_DB_WEBHOOKS, collect, &c);
        storage_reader_end(r->w->reader);
    }
    return api_reply(r->req, 200, json_pack("{s:o}", "webhooks", c.list));
}

int api_webhooks(api_request_t *r)
{
    if (api_seg_is(r, 0, "organizations"))
        return r->n_seg == 3 ? (api_method_is(r, "GET") ? list(r) : api_method_not_allowed(r))
                             : api_not_found(r, "webhooks");
    if (r->n_seg == 1)
        return api_method_is(r, "POST") ? create(r) : api_method_not_allowed(r);
    if (r->n_seg != 2)
        return api_not_found(r, "webhooks");
    if (api_method_is(r, "GET"))
        return get(r);
    if (api_method_is(r, "PATCH"))
        return patch(r);
    if (api_method_is(r, "DELETE")) {
        char guid[UTIL_GUID_LEN + 1];
        if (r->seg[1].len != UTIL_GUID_LEN)
            return api_not_found(r, "webhooks");
        memcpy(guid, r->seg[1].base, UTIL_GUID_LEN);
        guid[UTIL_GUID_LEN] = '\0';
        return api_submit(r, delete_run, NULL, guid, NULL, NULL);
    }
    return api_method_not_allowed(r);
}
