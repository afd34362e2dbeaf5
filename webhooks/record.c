/*
 * webhooks/record.c: a webhook's stored form, a JSON object in
 * STORAGE_DB_WEBHOOKS keyed by its guid. Field names follow Bitly's webhook
 * object where it has one; the groups are kept as an array "group_guids" (a
 * single string "group_guid" is read too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "webhooks_internal.h"

static void set_err(char *err, size_t errlen, const char *msg, const char *field)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "webhook record: %s%s%s", field ? field : "", field ? " " : "", msg);
}

/* Copies an optional string field; absent and null both give NULL. */
static int get_string(json_t *obj, const char *name, char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        set_err(err, errlen, "is not a string", name);
        return -1;
    }
    *out = webhook__strndup(json_string_value(v), json_string_length(v));
    return 0;
}

static int get_guid(json_t *obj, const char *name, char out[STORAGE_GUID_LEN + 1], char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(obj, name);

    out[0] = '\0';
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) > STORAGE_GUID_LEN) {
        set_err(err, errlen, "is not a guid", name);
        return -1;
    }
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int get_bool(json_t *obj, const char *name, bool *out, bool dflt, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);

    *out = dflt;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        set_err(err, errlen, "is not a boolean", name);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_int(json_t *obj, const char *name, int64_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);

    *out = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v)) {
        set_err(err, errlen, "is not an integer", name);
        return -1;
    }
    *out = (int64_t)json_integer_value(v);
    return 0;
}

static int add_group(webhook_t *w, json_t *v, char *err, size_t errlen)
{
    if (!json_is_string(v) || json_string_length(v) > STORAGE_GUID_LEN) {
        set_err(err, errlen, "holds something that is not a guid", "group_guids");
        return -1;
    }
    if (w->n_groups >= WEBHOOK_MAX_GROUPS) {
        set_err(err, errlen, "has more groups than WEBHOOK_MAX_GROUPS", "group_guids");
        return -1;
    }
    w->group_guids[w->n_groups++] = webhook__strdup(json_string_value(v));
    return 0;
}

static int get_groups(webhook_t *w, json_t *obj, char *err, size_t errlen)
{
    json_t *arr = json_object_get(obj, "group_guids");
    json_t *one = json_object_get(obj, "group_guid");
    json_t *v;
    size_t i;

    w->group_guids = webhook__calloc(WEBHOOK_MAX_GROUPS, sizeof *w->group_guids);
    if (arr != NULL && !json_is_null(arr)) {
        if (!json_is_array(arr)) {
            set_err(err, errlen, "is not an array", "group_guids");
            return -1;
        }
        json_array_foreach(arr, i, v)
        {
            if (add_group(w, v, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    /* Bitly's own field, one group or an array of them. */
    if (one == NULL || json_is_null(one))
        return 0;
    if (json_is_array(one)) {
        json_array_foreach(one, i, v)
        {
            if (add_group(w, v, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    if (json_is_string(one) && json_string_length(one) == 0)
        return 0;
    return add_group(w, one, err, errlen);
}

int webhook_decode(webhook_t *w, const char *json, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = NULL;
    int rc = -1;

    memset(w, 0, sizeof *w);
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        set_err(err, errlen, jerr.text, NULL);
        goto out;
    }
    if (!json_is_object(root)) {
        set_err(err, errlen, "is not a JSON object", NULL);
        goto out;
    }

    if (get_guid(root, "guid", w->guid, err, errlen) < 0 ||
        get_guid(root, "organization_guid", w->organization_guid, err, errlen) < 0 ||
        get_string(root, "name", &w->name, err, errlen) < 0 ||
        get_string(root, "url", &w->url, err, errlen) < 0 ||
        get_string(root, "event", &w->event, err, errlen) < 0 ||
        get_groups(w, root, err, errlen) < 0 ||
        get_bool(root, "is_active", &w->is_active, false, err, errlen) < 0 ||
        get_bool(root, "fetch_tags", &w->fetch_tags, false, err, errlen) < 0 ||
        get_bool(root, "include_bots", &w->include_bots, false, err, errlen) < 0 ||
        get_string(root, "oauth_url", &w->oauth_url, err, errlen) < 0 ||
        get_string(root, "client_id", &w->client_id, err, errlen) < 0 ||
        get_string(root, "client_secret", &w->client_secret, err, errlen) < 0 ||
        get_string(root, "signing_secret", &w->signing_secret, err, errlen) < 0 ||
        get_string(root, "previous_secret", &w->previous_secret, err, errlen) < 0 ||
        get_int(root, "previous_expires_us", &w->previous_expires_us, err, errlen) < 0 ||
        get_int(root, "created_us", &w->created_us, err, errlen) < 0 ||
        get_int(root, "modified_us", &w->modified_us, err, errlen) < 0 ||
        get_int(root, "last_success_us", &w->last_success_us, err, errlen) < 0 ||
        get_int(root, "failing_since_us", &w->failing_since_us, err, errlen) < 0 ||
        get_string(root, "deactivated_reason", &w->deactivated_reason, err, errlen) < 0)
        goto out;

    /* An empty oauth_url means none, as the settings form sends it. */
    if (w->oauth_url != NULL && w->oauth_url[0] == '\0') {
        free(w->oauth_url);
        w->oauth_url = NULL;
    }
    rc = 0;

out:
    if (rc != 0)
        webhook_clear(w);
    json_decref(root);
    return rc;
}

static void put_string(json_t *obj, const char *name, const char *s)
{
    json_t *v = s ? json_string(s) : json_null();

    /* Every string here came in through a JSON body, so it is UTF-8; were it
     * not, json_string() gives NULL and the field is stored as null rather
     * than as invalid JSON. */
    json_object_set_new(obj, name, v ? v : json_null());
}

char *webhook_encode(const webhook_t *w)
{
    json_t *root = json_object();
    json_t *groups = json_array();
    char *out;

    put_string(root, "guid", w->guid);
    put_string(root, "organization_guid", w->organization_guid);
    put_string(root, "name", w->name);
    put_string(root, "url", w->url);
    put_string(root, "event", w->event ? w->event : "engagement");
    for (size_t i = 0; i < w->n_groups; i++)
        json_array_append_new(groups, json_string(w->group_guids[i]));
    json_object_set_new(root, "group_guids", groups);
    json_object_set_new(root, "is_active", json_boolean(w->is_active));
    json_object_set_new(root, "fetch_tags", json_boolean(w->fetch_tags));
    json_object_set_new(root, "include_bots", json_boolean(w->include_bots));
    put_string(root, "oauth_url", w->oauth_url);
    put_string(root, "client_id", w->client_id);
    put_string(root, "client_secret", w->client_secret);
    put_string(root, "signing_secret", w->signing_secret);
    put_string(root, "previous_secret", w->previous_secret);
    json_object_set_new(root, "previous_expires_us", json_integer(w->previous_expires_us));
    json_object_set_new(root, "created_us", json_integer(w->created_us));
    json_object_set_new(root, "modified_us", json_integer(w->modified_us));
    json_object_set_new(root, "last_success_us", json_integer(w->last_success_us));
    json_object_set_new(root, "failing_since_us", json_integer(w->failing_since_us));
    put_string(root, "deactivated_reason", w->deactivated_reason);

    out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (out == NULL) {
        /* With every value built above, json_dumps can only fail to allocate. */
        abort();
    }
    /* json_dumps allocates with malloc (no custom allocator is installed),
     * so the caller frees it with free(). */
    return out;
}

void webhook_clear(webhook_t *w)
{
    if (w == NULL)
        return;
    free(w->name);
    free(w->url);
    free(w->event);
    for (size_t i = 0; i < w->n_groups; i++)
        free(w->group_guids[i]);
    free(w->group_guids);
    free(w->oauth_url);
    free(w->client_id);
    /* Secrets are wiped so a later heap dump or reuse does not reveal them. */
    if (w->signing_secret != NULL)
        OPENSSL_cleanse(w->signing_secret, strlen(w->signing_secret));
    free(w->signing_secret);
    if (w->previous_secret != NULL)
        OPENSSL_cleanse(w->previous_secret, strlen(w->previous_secret));
    free(w->previous_secret);
    if (w->client_secret != NULL)
        OPENSSL_cleanse(w->client_secret, strlen(w->client_secret));
    free(w->client_secret);
    free(w->deactivated_reason);
    memset(w, 0, sizeof *w);
}

bool webhook_subscribes(const webhook_t *w, const char *group_guid)
{
    if (w->n_groups == 0)
        return true;
    if (group_guid == NULL)
        return false;
    for (size_t i = 0; i < w->n_groups; i++) {
        if (strcmp(w->group_guids[i], group_guid) == 0)
            return true;
    }
    return false;
}
