/*
 * server/hooks: /v4/webhooks and /v4/organizations/{guid}/webhooks, and our
 * additions under /v4/webhooks/{guid}: deliveries (the attempt log), resend,
 * recover, verify, secret and secret/rotate. Records are webhooks/'s JSON
 * form; replies never carry a secret except the signing secret in the answer
 * to a create and from the secret routes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "log.h"
#include "query.h"

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

/* ---- deliveries, resend, recover, verify, secret ---- */

#define DELIVERIES_DEFAULT 50
#define DELIVERIES_MAX     1000
#define GRACE_DEFAULT_S    (24 * 3600)
#define GRACE_MAX_S        (7 * 24 * 3600)

/* A 400 from a route handler, which has answered once it returns 0. */
static int refuse(h2o_req_t *req, const char *message, const char *description, const char *field)
{
    bad(req, message, description, field);
    return 0;
}

/* A `since` time: RFC 3339, as util_parse_rfc3339 reads it. */
static bool parse_time_us(const char *s, int64_t *out)
{
    int offset;

    return util_parse_rfc3339(s, out, &offset) == NULL;
}

/* "2026-01-02T03:04:05.678Z" into out[32]. */
static void format_time_ms(int64_t time_us, char out[32])
{
    int64_t secs = time_us / 1000000, rem = time_us % 1000000;
    struct tm tm = {0};
    char base[24] = "";

    if (rem < 0) {
        rem += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    gmtime_r(&t, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", base, (int)(rem / 1000));
}

/* A JSON string of bytes a receiver sent, which need not be UTF-8: kept as is
 * when it is, else with every byte past ASCII shown as '?'. */
static json_t *response_text(storage_bytes_t b)
{
    json_t *v = json_stringn(b.ptr != NULL ? b.ptr : "", b.ptr != NULL ? b.len : 0);
    if (v != NULL)
        return v;
    char *copy = xmalloc(b.len + 1);
    for (size_t i = 0; i < b.len; i++) {
        unsigned char c = (unsigned char)b.ptr[i];
        copy[i] = c >= 0x80 || c == 0 ? '?' : (char)c;
    }
    v = json_stringn(copy, b.len);
    free(copy);
    return v != NULL ? v : json_string("");
}

static const char *const outcome_names[] = {"delivered", "retry", "failed"};

typedef struct log_ctx {
    storage_txn_t *txn;
    json_t *list;
    int outcome; /* -1: any */
    int64_t since_us;
    size_t size;
} log_ctx_t;

static int on_attempt(void *ctx, const storage_attempt_t *a)
{
    log_ctx_t *c = ctx;
    storage_engagement_t e;
    char event_id[37], when[32];

    if (a->time_us < c->since_us)
        return 1; /* newest first: everything after this is older */
    if (c->outcome >= 0 && a->outcome != c->outcome)
        return 0;
    if (a->engagement_seq == WEBHOOK_TEST_SEQ) {
        char test_id[32];
        webhook_test_msg_id(a->delivery_id, test_id);
        snprintf(event_id, sizeof(event_id), "%s", test_id);
    } else if (storage_engagement_get(c->txn, a->engagement_seq, &e) == STORAGE_OK) {
        webhook_uuid_format(e.event_id, event_id);
    } else {
        event_id[0] = '\0'; /* past retention */
    }
    format_time_ms(a->time_us, when);
    json_t *item = json_pack(
        "{s:I, s:s, s:I, s:s, s:s, s:i, s:I, s:o, s:o}", "delivery_id", (json_int_t)a->delivery_id,
        "event_id", event_id, "attempt", (json_int_t)a->attempt, "time", when, "outcome",
        a->outcome < 3 ? outcome_names[a->outcome] : "failed", "http_status", (int)a->http_status,
        "duration_ms", (json_int_t)a->duration_ms, "error", response_text(a->error), "response",
        response_text(a->response));
    if (item != NULL)
        json_array_append_new(c->list, item);
    return json_array_size(c->list) >= c->size ? 1 : 0;
}

static int deliveries_list(api_request_t *r)
{
    log_ctx_t c = {.outcome = -1, .since_us = INT64_MIN, .size = DELIVERIES_DEFAULT};
    char v[64];
    webhook_t w = {0};
    int rc;

    rc = query_get_set(r->req, "outcome", v, sizeof(v));
    if (rc == QUERY_FOUND) {
        for (int i = 0; i < 3; i++)
            if (strcmp(v, outcome_names[i]) == 0)
                c.outcome = i;
    }
    if (rc == QUERY_BAD || (rc == QUERY_FOUND && c.outcome < 0))
        return refuse(r->req, "INVALID_ARG_OUTCOME", "outcome must be delivered, retry or failed.",
                      "outcome");
    rc = query_get_set(r->req, "since", v, sizeof(v));
    if (rc == QUERY_BAD || (rc == QUERY_FOUND && !parse_time_us(v, &c.since_us)))
        return refuse(r->req, "INVALID_ARG_SINCE", "since must be an RFC 3339 time.", "since");
    rc = query_get_set(r->req, "size", v, sizeof(v));
    if (rc == QUERY_FOUND) {
        char *end = NULL;
        unsigned long n = strtoul(v, &end, 10);
        if (end == v || *end != '\0' || n < 1 || n > DELIVERIES_MAX)
            rc = QUERY_BAD;
        c.size = (size_t)n;
    }
    if (rc == QUERY_BAD)
        return refuse(r->req, "INVALID_ARG_SIZE", "size must be 1 to 1000.", "size");

    c.txn = storage_reader_begin(r->w->reader);
    if (c.txn == NULL)
        return api_error(r->req, 503, "TEMPORARILY_UNAVAILABLE", "The store cannot be read.",
                         "webhooks", NULL, NULL);
    if (!load(c.txn, r->seg[1].base, r->seg[1].len, &w)) {
        storage_reader_end(r->w->reader);
        return api_not_found(r, "webhooks");
    }
    c.list = json_array();
    rc = storage_attempt_scan(c.txn, w.guid, on_attempt, &c);
    storage_reader_end(r->w->reader);
    webhook_clear(&w);
    if (rc != STORAGE_OK && rc != 1) {
        json_decref(c.list);
        return api_error(r->req, 500, "INTERNAL_ERROR", "The delivery log cannot be read.",
                         "webhooks", NULL, NULL);
    }
    return api_reply(r->req, 200, json_pack("{s:o}", "deliveries", c.list));
}

/* What a delivery job carries; freed on the worker once the job is durable,
 * which is when the dispatcher is told to look. */
typedef struct delivery_op {
    const app_t *app;
    uint64_t id;
    int64_t since_us;
    int64_t now_us;
    int64_t grace_s;
    char secret[WEBHOOK_SECRET_MAX];
} delivery_op_t;

static void delivery_op_end(void *p)
{
    delivery_op_t *op = p;

    if (op == NULL)
        return;
    /* Only now is the write visible to the dispatcher's reader. */
    webhook_dispatcher_poke(atomic_load(&op->app->dispatcher));
    explicit_bzero(op->secret, sizeof(op->secret));
    free(op);
}

static delivery_op_t *delivery_op_new(api_request_t *r)
{
    delivery_op_t *op = xcalloc(1, sizeof(*op));

    op->app = r->app;
    op->now_us = util_now_us();
    return op;
}

/* Loads the job's webhook (its guid is job->arg) inside the job's own
 * transaction; answers 404 when it is gone. */
static int job_load(storage_txn_t *txn, api_job_t *job, webhook_t *w)
{
    if (!load(txn, job->arg, strlen(job->arg), w))
        return api_job_error(job, 404, "NOT_FOUND", "Nothing is there.", "webhooks", NULL, NULL);
    return STORAGE_OK;
}

static int inactive(api_job_t *job)
{
    return api_job_error(job, 409, "WEBHOOK_INACTIVE",
                         "The webhook is not active; activate it first (PATCH is_active).",
                         "webhooks", "is_active", "inactive");
}

typedef struct find_ctx {
    uint64_t id;
    bool found;
    storage_attempt_t last; /* the delivery's newest attempt, pointers cleared */
} find_ctx_t;

static int on_find_attempt(void *ctx, const storage_attempt_t *a)
{
    find_ctx_t *f = ctx;

    if (a->delivery_id != f->id)
        return 0;
    f->found = true;
    f->last = *a;
    f->last.error = (storage_bytes_t){0};
    f->last.response = (storage_bytes_t){0};
    return 1;
}

static int on_due_row(void *ctx, const storage_delivery_t *d)
{
    return d->id == *(const uint64_t *)ctx ? 1 : 0;
}

static int resend_run(storage_txn_t *txn, api_job_t *job)
{
    delivery_op_t *op = job->data;
    webhook_t w = {0};
    find_ctx_t f = {.id = op->id};
    storage_delivery_t row;
    int rc;

    if ((rc = job_load(txn, job, &w)) != STORAGE_OK)
        goto out;
    rc = storage_attempt_scan(txn, w.guid, on_find_attempt, &f);
    if (rc != STORAGE_OK && rc != 1)
        goto fail;
    if (!f.found) {
        rc = api_job_error(job, 404, "NOT_FOUND", "The webhook has no such delivery.", "deliveries",
                           NULL, NULL);
        goto out;
    }
    if (!w.is_active && f.last.engagement_seq != WEBHOOK_TEST_SEQ) {
        rc = inactive(job);
        goto out;
    }
    /* A delivery still on its schedule, or already resent and not yet
     * attempted, has a row that is not a failed one. */
    rc = storage_delivery_get_failed(txn, op->id, &row);
    if (rc == STORAGE_OK) {
        rc = storage_delivery_del(txn, row.due_us, row.id);
    } else if (rc == STORAGE_NOTFOUND) {
        bool pending = f.last.outcome == STORAGE_OUTCOME_RETRY;
        if (!pending) {
            rc = storage_delivery_scan_due(txn, (uint64_t)op->now_us, on_due_row, &op->id);
            pending = rc == 1;
        }
        if (pending) {
            rc = api_job_error(job, 409, "DELIVERY_PENDING",
                               "The delivery is still pending; it is attempted on its schedule.",
                               "deliveries", NULL, NULL);
            goto out;
        }
        rc = STORAGE_OK;
    }
    if (rc != STORAGE_OK)
        goto fail;

    /* Same id, attempts from zero: the log shows the new attempts as 1, 2, ...
     * after the old ones, and the receiver sees the same webhook-id. */
    row = (storage_delivery_t){
        .due_us = (uint64_t)op->now_us, .id = op->id, .engagement_seq = f.last.engagement_seq};
    snprintf(row.webhook_guid, sizeof(row.webhook_guid), "%s", w.guid);
    if ((rc = storage_delivery_put(txn, &row)) != STORAGE_OK)
        goto fail;
    job->status = 202;
    job->response = json_pack("{s:I}", "delivery_id", (json_int_t)op->id);
    rc = STORAGE_OK;
    goto out;

fail:
    rc = api_job_error(job, 500, "INTERNAL_ERROR", "The delivery could not be resent.",
                       "deliveries", NULL, NULL);
out:
    webhook_clear(&w);
    return rc;
}

static int resend(api_request_t *r)
{
    char idbuf[24], *end = NULL;
    char guid[UTIL_GUID_LEN + 1];

    if (r->seg[1].len != UTIL_GUID_LEN || r->seg[3].len == 0 || r->seg[3].len >= sizeof(idbuf))
        return api_not_found(r, "deliveries");
    memcpy(idbuf, r->seg[3].base, r->seg[3].len);
    idbuf[r->seg[3].len] = '\0';
    unsigned long long id = strtoull(idbuf, &end, 10);
    if (idbuf[0] < '1' || idbuf[0] > '9' || *end != '\0')
        return api_not_found(r, "deliveries");
    memcpy(guid, r->seg[1].base, UTIL_GUID_LEN);
    guid[UTIL_GUID_LEN] = '\0';
    delivery_op_t *op = delivery_op_new(r);
    op->id = (uint64_t)id;
    return api_submit(r, resend_run, NULL, guid, op, delivery_op_end);
}

typedef struct recover_ctx {
    storage_txn_t *txn;
    const char *guid;
    int64_t since_us;
    storage_delivery_t *rows;
    size_t n, cap;
} recover_ctx_t;

static int on_failed_row(void *ctx, const storage_delivery_t *d)
{
    recover_ctx_t *c = ctx;
    storage_engagement_t e;

    if (strcmp(d->webhook_guid, c->guid) != 0 || d->engagement_seq == WEBHOOK_TEST_SEQ)
        return 0;
    /* Engagements past retention have nothing left to send. */
    if (storage_engagement_get(c->txn, d->engagement_seq, &e) != STORAGE_OK ||
        e.time_us < c->since_us)
        return 0;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        storage_delivery_t *grown = xcalloc(c->cap, sizeof(*grown));
        if (c->n > 0)
            memcpy(grown, c->rows, c->n * sizeof(*grown));
        free(c->rows);
        c->rows = grown;
    }
    c->rows[c->n++] = *d;
    return 0;
}

static int recover_run(storage_txn_t *txn, api_job_t *job)
{
    delivery_op_t *op = job->data;
    webhook_t w = {0};
    recover_ctx_t c = {.txn = txn, .since_us = op->since_us};
    int rc;

    if ((rc = job_load(txn, job, &w)) != STORAGE_OK)
        goto out;
    if (!w.is_active) {
        rc = inactive(job);
        goto out;
    }
    c.guid = w.guid;
    /* Collected first, then moved: the walk's cursor must not see its own
     * writes. */
    rc = storage_delivery_scan_failed(txn, on_failed_row, &c);
    for (size_t i = 0; rc == STORAGE_OK && i < c.n; i++) {
        storage_delivery_t row = c.rows[i];
        rc = storage_delivery_del(txn, row.due_us, row.id);
        row.due_us = (uint64_t)op->now_us;
        row.attempts = 0;
        row.last_status = 0;
        if (rc == STORAGE_OK)
            rc = storage_delivery_put(txn, &row);
    }
    if (rc != STORAGE_OK) {
        rc = api_job_error(job, 500, "INTERNAL_ERROR", "The deliveries could not be resent.",
                           "deliveries", NULL, NULL);
        goto out;
    }
    job->status = 202;
    job->response = json_pack("{s:I}", "count", (json_int_t)c.n);

out:
    free(c.rows);
    webhook_clear(&w);
    return rc;
}

static int recover(api_request_t *r)
{
    const char *since = r->body != NULL ? api_str(r->body, "since") : NULL;
    int64_t since_us;
    char guid[UTIL_GUID_LEN + 1];

    if (r->seg[1].len != UTIL_GUID_LEN)
        return api_not_found(r, "webhooks");
    if (since == NULL || !parse_time_us(since, &since_us))
        return refuse(r->req, "INVALID_ARG_SINCE", "since must be an RFC 3339 time.", "since");
    memcpy(guid, r->seg[1].base, UTIL_GUID_LEN);
    guid[UTIL_GUID_LEN] = '\0';
    delivery_op_t *op = delivery_op_new(r);
    op->since_us = since_us;
    return api_submit(r, recover_run, NULL, guid, op, delivery_op_end);
}

static int verify_run(storage_txn_t *txn, api_job_t *job)
{
    delivery_op_t *op = job->data;
    webhook_t w = {0};
    storage_delivery_t row = {.due_us = (uint64_t)op->now_us, .engagement_seq = WEBHOOK_TEST_SEQ};
    char msg_id[32];
    int rc;

    if ((rc = job_load(txn, job, &w)) != STORAGE_OK)
        goto out;
    row.id = storage_next_id(txn, "delivery");
    snprintf(row.webhook_guid, sizeof(row.webhook_guid), "%s", w.guid);
    if (row.id == 0 || storage_delivery_put(txn, &row) != STORAGE_OK) {
        rc = api_job_error(job, 500, "INTERNAL_ERROR", "The test event could not be queued.",
                           "webhooks", NULL, NULL);
        goto out;
    }
    /* Sent by the dispatcher under the same rules as any delivery (address
     * checks, signature, OAuth); its outcome is in the delivery log. */
    webhook_test_msg_id(row.id, msg_id);
    job->status = 202;
    job->response = json_pack("{s:I, s:s}", "delivery_id", (json_int_t)row.id, "event_id", msg_id);
    rc = STORAGE_OK;
out:
    webhook_clear(&w);
    return rc;
}

static int secret_get(api_request_t *r)
{
    webhook_t w = {0};
    json_t *body = NULL;
    char expires[32];
    storage_txn_t *txn = storage_reader_begin(r->w->reader);

    if (txn != NULL && load(txn, r->seg[1].base, r->seg[1].len, &w) && w.signing_secret != NULL) {
        body = json_pack("{s:s}", "signing_secret", w.signing_secret);
        if (w.previous_secret != NULL && w.previous_expires_us > util_now_us()) {
            format_time_ms(w.previous_expires_us, expires);
            json_object_set_new(body, "previous_secret_expires", json_string(expires));
        }
    }
    if (txn != NULL)
        storage_reader_end(r->w->reader);
    webhook_clear(&w);
    if (body == NULL)
        return api_not_found(r, "webhooks");
    return api_reply(r->req, 200, body); /* api_reply sends no-store */
}

static int rotate_run(storage_txn_t *txn, api_job_t *job)
{
    delivery_op_t *op = job->data;
    webhook_t w = {0};
    char expires[32];
    int rc;

    if ((rc = job_load(txn, job, &w)) != STORAGE_OK)
        goto out;
    /* The old secret keeps signing beside the new one for the grace period,
     * so receivers can switch without dropping a delivery. */
    free(w.previous_secret);
    w.previous_secret = w.signing_secret;
    w.previous_expires_us = op->now_us + op->grace_s * 1000000;
    w.signing_secret = xstrndup(op->secret, strlen(op->secret));
    w.modified_us = op->now_us;
    if (put_webhook(txn, &w, 0) != STORAGE_OK) {
        rc = api_job_error(job, 500, "INTERNAL_ERROR", "The webhook could not be stored.",
                           "webhooks", NULL, NULL);
        goto out;
    }
    format_time_ms(w.previous_expires_us, expires);
    job->status = 200;
    job->response = json_pack("{s:s, s:s}", "signing_secret", w.signing_secret,
                              "previous_secret_expires", expires);
    rc = STORAGE_OK;
out:
    webhook_clear(&w);
    return rc;
}

static int rotate(api_request_t *r)
{
    json_t *g = r->body != NULL ? json_object_get(r->body, "grace_seconds") : NULL;
    char guid[UTIL_GUID_LEN + 1];
    int64_t grace = GRACE_DEFAULT_S;

    if (r->seg[1].len != UTIL_GUID_LEN)
        return api_not_found(r, "webhooks");
    if (g != NULL) {
        if (!json_is_integer(g) || json_integer_value(g) < 0 || json_integer_value(g) > GRACE_MAX_S)
            return refuse(r->req, "INVALID_ARG_GRACE", "grace_seconds must be 0 to 604800.",
                          "grace_seconds");
        grace = (int64_t)json_integer_value(g);
    }
    memcpy(guid, r->seg[1].base, UTIL_GUID_LEN);
    guid[UTIL_GUID_LEN] = '\0';
    delivery_op_t *op = delivery_op_new(r);
    op->grace_s = grace;
    webhook_secret_generate(op->secret, sizeof(op->secret));
    return api_submit(r, rotate_run, NULL, guid, op, delivery_op_end);
}

/* /v4/webhooks/{guid}/... */
static int sub_route(api_request_t *r)
{
    char guid[UTIL_GUID_LEN + 1];

    if (r->seg[1].len != UTIL_GUID_LEN)
        return api_not_found(r, "webhooks");
    memcpy(guid, r->seg[1].base, UTIL_GUID_LEN);
    guid[UTIL_GUID_LEN] = '\0';
    if (r->n_seg == 3 && api_seg_is(r, 2, "deliveries"))
        return api_method_is(r, "GET") ? deliveries_list(r) : api_method_not_allowed(r);
    if (r->n_seg == 5 && api_seg_is(r, 2, "deliveries") && api_seg_is(r, 4, "resend"))
        return api_method_is(r, "POST") ? resend(r) : api_method_not_allowed(r);
    if (r->n_seg == 3 && api_seg_is(r, 2, "recover"))
        return api_method_is(r, "POST") ? recover(r) : api_method_not_allowed(r);
    if (r->n_seg == 3 && api_seg_is(r, 2, "verify")) {
        if (!api_method_is(r, "POST"))
            return api_method_not_allowed(r);
        return api_submit(r, verify_run, NULL, guid, delivery_op_new(r), delivery_op_end);
    }
    if (r->n_seg == 3 && api_seg_is(r, 2, "secret"))
        return api_method_is(r, "GET") ? secret_get(r) : api_method_not_allowed(r);
    if (r->n_seg == 4 && api_seg_is(r, 2, "secret") && api_seg_is(r, 3, "rotate"))
        return api_method_is(r, "POST") ? rotate(r) : api_method_not_allowed(r);
    return api_not_found(r, "webhooks");
}

int api_webhooks(api_request_t *r)
{
    if (api_seg_is(r, 0, "organizations"))
        return r->n_seg == 3 ? (api_method_is(r, "GET") ? list(r) : api_method_not_allowed(r))
                             : api_not_found(r, "webhooks");
    if (r->n_seg == 1)
        return api_method_is(r, "POST") ? create(r) : api_method_not_allowed(r);
    if (r->n_seg > 2)
        return sub_route(r);
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
        return api_submit_delete(r, STORAGE_DB_WEBHOOKS, "webhooks", guid);
    }
    return api_method_not_allowed(r);
}
