/*
 * server/account: the organization, its groups and the API tokens: first-start
 * bootstrap, the token subcommands, and /v4/user, /v4/organizations,
 * /v4/groups. Groups and the organization are stored as JSON records.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "links.h"
#include "log.h"

/* ---- records ---- */

static json_t *new_group(const char *guid, const char *org_guid, const char *name, int64_t now)
{
    char created[32];

    util_format_bitly_time(now, created);
    return json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:s, s:[]}", "guid", guid, "organization_guid",
                     org_guid, "name", name, "is_active", 1, "role", "org-admin", "created",
                     created, "modified", created, "bsds");
}

json_t *api_group_json(const app_t *app, storage_bytes_t stored)
{
    json_t *g = json_loadb(stored.ptr, stored.len, 0, NULL);
    char ref[700];

    if (g == NULL)
        return json_object();
    snprintf(ref, sizeof(ref), "%s/v4/organizations/%s", app->cfg->public_url,
             api_str(g, "organization_guid") != NULL ? api_str(g, "organization_guid") : "");
    json_object_set_new(g, "references", json_pack("{s:s}", "organization", ref));
    return g;
}

static int put_json(storage_txn_t *txn, storage_db_t db, const char *key, json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT);
    int rc = storage_record_put(txn, db, key, strlen(key), text, strlen(text), STORAGE_NOOVERWRITE);

    free(text);
    json_decref(value);
    return rc;
}

static int get_meta(storage_txn_t *txn, const char *name, char *out, size_t outlen)
{
    storage_bytes_t v;
    int rc = storage_record_get(txn, STORAGE_DB_META, name, strlen(name), &v);

    if (rc != STORAGE_OK)
        return rc;
    if (v.len >= outlen)
        return STORAGE_ERROR;
    memcpy(out, v.ptr, v.len);
    out[v.len] = '\0';
    return STORAGE_OK;
}

static int store_token(storage_txn_t *txn, const char *token, const char *name)
{
    uint8_t digest[32];
    char id[17];

    util_sha256(token, strlen(token), digest);
    /* The id shown by `token list` is a prefix of the digest: enough to name
     * the token, useless for using it. */
    util_hex(digest, 8, id);
    json_t *rec = json_pack("{s:s, s:s, s:I}", "id", id, "name", name, "created_us",
                            (json_int_t)util_now_us());
    char *text = json_dumps(rec, JSON_COMPACT);
    int rc = storage_record_put(txn, STORAGE_DB_TOKENS, digest, sizeof(digest), text, strlen(text),
                                STORAGE_NOOVERWRITE);
    free(text);
    json_decref(rec);
    return rc;
}

/* ---- bootstrap ---- */

typedef struct bootstrap_job {
    app_t *app;
    bool created;
    char token[UTIL_TOKEN_LEN + 1];
} bootstrap_job_t;

static int bootstrap_run(storage_txn_t *txn, void *arg)
{
    bootstrap_job_t *b = arg;
    app_t *app = b->app;
    int64_t now = util_now_us();

    if (get_meta(txn, "organization_guid", app->organization_guid,
                 sizeof(app->organization_guid)) == STORAGE_OK)
        return get_meta(txn, "default_group_guid", app->default_group_guid,
                        sizeof(app->default_group_guid));

    util_guid(app->organization_guid);
    util_guid(app->default_group_guid);
    char created[32];
    util_format_bitly_time(now, created);
    json_t *org = json_pack("{s:s, s:s, s:b, s:s, s:s, s:s, s:[]}", "guid", app->organization_guid,
                            "name", "shortlinkd", "is_active", 1, "tier", "free", "created",
                            created, "modified", created, "bsds");
    int rc = put_json(txn, STORAGE_DB_ORGANIZATIONS, app->organization_guid, org);
    if (rc == STORAGE_OK)
        rc = put_json(txn, STORAGE_DB_GROUPS, app->default_group_guid,
                      new_group(app->default_group_guid, app->organization_guid, "Default", now));
    if (rc == STORAGE_OK)
        rc = storage_record_put(txn, STORAGE_DB_META, "organization_guid", 17,
                                app->organization_guid, UTIL_GUID_LEN, 0);
    if (rc == STORAGE_OK)
        rc = storage_record_put(txn, STORAGE_DB_META, "default_group_guid", 18,
                                app->default_group_guid, UTIL_GUID_LEN, 0);
    util_token(b->token);
    if (rc == STORAGE_OK)
        rc = store_token(txn, b->token, "admin");
    b->created = rc == STORAGE_OK;
    return rc;
}

static int write_token_file(const char *path, const char *token)
{
    /* O_EXCL: an existing file is never overwritten or followed as a link. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0)
        return -1;
    size_t len = strlen(token);
    bool ok = write(fd, token, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
    ok = close(fd) == 0 && ok;
    return ok ? 0 : -1;
}

int bootstrap(app_t *app)
{
    bootstrap_job_t b = {.app = app};

    if (storage_run(app->storage, bootstrap_run, &b) != STORAGE_OK) {
        log_msg(LOG_ERROR, "server", "could not set up the organization in %s: %s",
                app->cfg->data_dir, storage_strerror());
        return -1;
    }
    if (!b.created) {
        log_msg(LOG_INFO, "server", "organization %s, default group %s", app->organization_guid,
                app->default_group_guid);
        return 0;
    }
    if (write_token_file(app->cfg->admin_token_file, b.token) != 0) {
        log_msg(LOG_ERROR, "server", "could not write the admin token to %s: %s",
                app->cfg->admin_token_file, strerror(errno));
        return -1;
    }
    log_msg(LOG_INFO, "server",
            "first start: created organization %s and default group %s; the admin API token "
            "is in %s (readable by this user only)",
            app->organization_guid, app->default_group_guid, app->cfg->admin_token_file);
    return 0;
}

/* ---- token subcommands ---- */

typedef struct token_job {
    const config_t *cfg;
    char token[UTIL_TOKEN_LEN + 1];
    bool found;
} token_job_t;

static int token_create_run(storage_txn_t *txn, void *arg)
{
    token_job_t *t = arg;

    util_token(t->token);
    return store_token(txn, t->token, t->cfg->token_name);
}

static int token_list_cb(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    json_t *rec = json_loadb(val.ptr, val.len, 0, NULL);
    char created[32];

    (void)ctx;
    (void)key;
    if (rec == NULL)
        return 0;
    json_t *c = json_object_get(rec, "created_us");
    util_format_bitly_time(json_is_integer(c) ? json_integer_value(c) : 0, created);
    printf("%s\t%s\t%s\n", api_str(rec, "id") ? api_str(rec, "id") : "?", created,
           api_str(rec, "name") ? api_str(rec, "name") : "");
    json_decref(rec);
    return 0;
}

static int token_list_run(storage_txn_t *txn, void *arg)
{
    return storage_record_scan(txn, STORAGE_DB_TOKENS, token_list_cb, arg);
}

typedef struct revoke_scan {
    const char *id;
    uint8_t digest[32];
    bool found;
} revoke_scan_t;

static int token_find_cb(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    revoke_scan_t *s = ctx;
    json_t *rec = json_loadb(val.ptr, val.len, 0, NULL);
    const char *id = api_str(rec, "id");

    if (id != NULL && strcmp(id, s->id) == 0 && key.len == sizeof(s->digest)) {
        memcpy(s->digest, key.ptr, key.len);
        s->found = true;
    }
    json_decref(rec);
    return s->found ? 1 : 0;
}

static int token_revoke_run(storage_txn_t *txn, void *arg)
{
    token_job_t *t = arg;
    revoke_scan_t s = {.id = t->cfg->token_id};

    storage_record_scan(txn, STORAGE_DB_TOKENS, token_find_cb, &s);
    if (!s.found)
        return STORAGE_NOTFOUND;
    t->found = true;
    return storage_record_del(txn, STORAGE_DB_TOKENS, s.digest, sizeof(s.digest));
}

int token_command(const config_t *cfg)
{
    storage_options_t so = {.dir = cfg->data_dir, .map_size = cfg->map_size};
    storage_t *s = NULL;
    token_job_t t = {.cfg = cfg};
    char err[512];
    int rc;

    if (storage_open(&s, &so, err, sizeof(err)) != STORAGE_OK) {
        fprintf(stderr, "shortlinkd: %s\n", err);
        return 1;
    }
    switch (cfg->command) {
    case CONFIG_CMD_TOKEN_CREATE:
        rc = storage_run(s, token_create_run, &t);
        if (rc == STORAGE_OK)
            printf("%s\n", t.token);
        break;
    case CONFIG_CMD_TOKEN_LIST:
        rc = storage_run(s, token_list_run, &t);
        break;
    default:
        rc = storage_run(s, token_revoke_run, &t);
        if (rc == STORAGE_NOTFOUND)
            fprintf(stderr, "shortlinkd: no token with id %s\n", cfg->token_id);
        break;
    }
    if (rc == STORAGE_ERROR)
        fprintf(stderr, "shortlinkd: %s\n", storage_strerror());
    storage_close(s);
    return rc == STORAGE_OK ? 0 : 1;
}

/* ---- /v4/user, /v4/organizations, /v4/groups ---- */

typedef struct collect {
    const app_t *app;
    json_t *list;
} collect_t;

static int collect_group(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    collect_t *c = ctx;

    (void)key;
    json_array_append_new(c->list, api_group_json(c->app, val));
    return 0;
}

static int collect_org(void *ctx, storage_bytes_t key, storage_bytes_t val)
{
    collect_t *c = ctx;
    json_t *o = json_loadb(val.ptr, val.len, 0, NULL);

    (void)key;
    if (o != NULL)
        json_array_append_new(c->list, o);
    return 0;
}

static int get_user(api_request_t *r)
{
    return api_reply(r->req, 200,
                     json_pack("{s:s, s:s, s:b, s:b, s:b, s:[], s:s}", "login", "admin", "name",
                               "Admin", "is_active", 1, "is_2fa_enabled", 0, "is_sso_user", 0,
                               "emails", "default_group_guid", r->app->default_group_guid));
}

static int list_records(api_request_t *r, storage_db_t db, const char *key,
                        int (*cb)(void *, storage_bytes_t, storage_bytes_t))
{
    collect_t c = {.app = r->app, .list = json_array()};
    storage_txn_t *txn = storage_reader_begin(r->w->reader);

    if (txn != NULL) {
        storage_record_scan(txn, db, cb, &c);
        storage_reader_end(r->w->reader);
    }
    return api_reply(r->req, 200, json_pack("{s:o}", key, c.list));
}

static int get_one(api_request_t *r, storage_db_t db, const char *resource)
{
    storage_bytes_t v;
    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    json_t *body = NULL;

    if (txn == NULL)
        return api_not_found(r, resource);
    if (storage_record_get(txn, db, r->seg[1].base, r->seg[1].len, &v) == STORAGE_OK) {
        body =
            db == STORAGE_DB_GROUPS ? api_group_json(r->app, v) : json_loadb(v.ptr, v.len, 0, NULL);
    }
    storage_reader_end(r->w->reader);
    if (body == NULL)
        return api_not_found(r, resource);
    return api_reply(r->req, 200, body);
}

static int create_group_run(storage_txn_t *txn, api_job_t *job)
{
    char guid[UTIL_GUID_LEN + 1];
    const char *name = api_str(job->input, "name");
    int64_t now = util_now_us();

    util_guid(guid);
    json_t *g = new_group(guid, job->app->organization_guid, name, now);
    char *text = json_dumps(g, JSON_COMPACT);
    int rc = storage_record_put(txn, STORAGE_DB_GROUPS, guid, UTIL_GUID_LEN, text, strlen(text),
                                STORAGE_NOOVERWRITE);
    if (rc == STORAGE_OK) {
        job->status = 201;
        job->response = api_group_json(job->app, (storage_bytes_t){text, strlen(text)});
    }
    free(text);
    json_decref(g);
    return rc;
}

int api_account(api_request_t *r)
{
    bool get = api_method_is(r, "GET");

    if (api_seg_is(r, 0, "user") && r->n_seg == 1)
        return get ? get_user(r) : api_method_not_allowed(r);
    if (api_seg_is(r, 0, "organizations")) {
        if (r->n_seg == 1)
            return get ? list_records(r, STORAGE_DB_ORGANIZATIONS, "organizations", collect_org)
                       : api_method_not_allowed(r);
        if (r->n_seg == 2)
            return get ? get_one(r, STORAGE_DB_ORGANIZATIONS, "organizations")
                       : api_method_not_allowed(r);
    }
    if (api_seg_is(r, 0, "groups")) {
        if (r->n_seg == 1 && get)
            return list_records(r, STORAGE_DB_GROUPS, "groups", collect_group);
        if (r->n_seg == 1 && api_method_is(r, "POST")) {
            const char *name = api_str(r->body, "name");
            if (name == NULL || name[0] == '\0' || strlen(name) > 200)
                return api_error(r->req, 400, "INVALID_ARG_NAME",
                                 "A group needs a name of 1 to 200 bytes.", "groups", "name",
                                 "invalid");
            return api_submit(r, create_group_run, json_incref(r->body), NULL, NULL, NULL);
        }
        if (r->n_seg == 1)
            return api_method_not_allowed(r);
        if (r->n_seg == 2)
            return get ? get_one(r, STORAGE_DB_GROUPS, "groups") : api_method_not_allowed(r);
        if (r->n_seg == 3 && api_seg_is(r, 2, "bitlinks"))
            return links_group_bitlinks(r);
        if (r->n_seg == 3 && api_seg_is(r, 2, "tags"))
            return links_group_tags(r);
    }
    return api_not_found(r, "");
}

int backup_command(const config_t *cfg)
{
    storage_options_t so = {.dir = cfg->data_dir, .map_size = cfg->map_size};
    storage_t *s = NULL;
    char err[512];

    if (storage_open(&s, &so, err, sizeof(err)) != STORAGE_OK) {
        fprintf(stderr, "shortlinkd: %s\n", err);
        return 1;
    }
    int rc = storage_backup(s, cfg->backup_dir, err, sizeof(err));
    if (rc != STORAGE_OK)
        fprintf(stderr, "shortlinkd: %s\n", err);
    storage_close(s);
    return rc == STORAGE_OK ? 0 : 1;
}
