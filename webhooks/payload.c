/*
 * webhooks/payload.c: the body of an engagement webhook (DESIGN.md §6). It is
 * built only from the stored engagement, the webhook record and the server's
 * public URL, with keys in a fixed order, so rebuilding it for a retry gives
 * the same bytes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "webhooks_internal.h"

void webhook_uuid_format(const uint8_t id[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 0xf];
    }
    out[o] = '\0';
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 when it is not one. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xe0 && s[0] <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f))
            return 0;
        return 3;
    }
    if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

/* A JSON string from bytes that may not be UTF-8 (a visitor's query string
 * can hold anything). Bytes that are not part of a valid sequence are
 * percent-encoded, which keeps a query string meaningful and the JSON valid. */
static json_t *text(const char *p, size_t n)
{
    json_t *v;
    char *copy;
    size_t o = 0;

    if (p == NULL)
        return json_string("");
    v = json_stringn(p, n);
    if (v != NULL)
        return v;

    copy = webhook__malloc(n * 3 + 1);
    for (size_t i = 0; i < n;) {
        const unsigned char *s = (const unsigned char *)p + i;
        size_t len = utf8_seq_len(s, n - i);
        if (len > 0 && !(len == 1 && s[0] == 0)) {
            memcpy(copy + o, s, len);
            o += len;
            i += len;
            continue;
        }
        o += (size_t)snprintf(copy + o, 4, "%%%02X", s[0]);
        i++;
    }
    v = json_stringn(copy, o);
    free(copy);
    return v ? v : json_string("");
}

/* The two time formats of the body: RFC 3339 with milliseconds, and Bitly's
 * "2026-12-04T15:49:14+0000". Times before the epoch are floored, not
 * truncated, so the seconds and milliseconds stay consistent. */
static void format_times(int64_t time_us, char *rfc3339, size_t rlen, char *bitly, size_t blen)
{
    int64_t secs = time_us / 1000000;
    int64_t rem = time_us % 1000000;
    struct tm tm;

    if (rem < 0) {
        rem += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    memset(&tm, 0, sizeof tm);
    gmtime_r(&t, &tm);
    /* strftime bounds every field, so no width can overflow the buffers. */
    char base[24] = "";
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(rfc3339, rlen, "%s.%03dZ", base, (int)(rem / 1000));
    snprintf(bitly, blen, "%s+0000", base);
}

/* Joins a, b and c into a fresh JSON string. */
static json_t *join3(const char *a, const char *b, const char *c, size_t clen)
{
    size_t alen = strlen(a), blen = strlen(b);
    char *buf = webhook__malloc(alen + blen + clen + 1);
    json_t *v;

    memcpy(buf, a, alen);
    memcpy(buf + alen, b, blen);
    memcpy(buf + alen + blen, c, clen);
    v = text(buf, alen + blen + clen);
    free(buf);
    return v;
}

char *webhook_payload(const webhook_payload_ctx_t *ctx, const webhook_t *w,
                      const storage_engagement_t *e, const char *tags, size_t tags_len)
{
    const char *public_url = ctx && ctx->public_url ? ctx->public_url : "";
    const char *domain = ctx && ctx->domain ? ctx->domain : "";
    size_t code_len = strnlen(e->code, sizeof e->code);
    char event_id[37];
    char ts[40], datetime[40];
    json_t *root = json_object();
    json_t *refs = json_object();
    char *bitlink;
    char *out;

    webhook_uuid_format(e->event_id, event_id);
    format_times(e->time_us, ts, sizeof ts, datetime, sizeof datetime);

    size_t dlen = strlen(domain);
    bitlink = webhook__malloc(dlen + 1 + code_len + 1);
    memcpy(bitlink, domain, dlen);
    bitlink[dlen] = '/';
    memcpy(bitlink + dlen + 1, e->code, code_len);
    bitlink[dlen + 1 + code_len] = '\0';

    json_object_set_new(root, "event_type", json_string("engagement"));
    json_object_set_new(root, "engagement_type", json_string(storage_kind_name(e->kind)));
    json_object_set_new(root, "event_id", json_string(event_id));
    json_object_set_new(root, "timestamp", json_string(ts));
    json_object_set_new(root, "datetime", json_string(datetime));
    json_object_set_new(root, "url", text(e->long_url.ptr, e->long_url.len));
    json_object_set_new(root, "bitlink", text(bitlink, dlen + 1 + code_len));
    json_object_set_new(root, "link", join3(public_url, "/", e->code, code_len));
    json_object_set_new(root, "passed_params", text(e->query.ptr, e->query.len));
    json_object_set_new(root, "country", text(e->country, strnlen(e->country, 3)));
    json_object_set_new(root, "referrer",
                        text(e->referrer, strnlen(e->referrer, sizeof e->referrer)));
    json_object_set_new(root, "device_type", json_string(storage_device_name(e->device)));
    json_object_set_new(root, "is_bot", json_boolean(e->bot));
    json_object_set_new(root, "webhook_guid", text(w->guid, strlen(w->guid)));
    json_object_set_new(root, "organization_guid",
                        text(w->organization_guid, strlen(w->organization_guid)));
    json_object_set_new(root, "group_guid",
                        text(e->group_guid, strnlen(e->group_guid, sizeof e->group_guid)));
    json_object_set_new(refs, "bitlink",
                        join3(public_url, "/v4/bitlinks/", bitlink, strlen(bitlink)));
    json_object_set_new(root, "references", refs);

    /* Tags that do not parse as an array are left out rather than sent as
     * something the receiver cannot read. */
    if (w->fetch_tags && tags != NULL && tags_len > 0) {
        json_t *arr = json_loadb(tags, tags_len, 0, NULL);
        if (json_is_array(arr))
            json_object_set_new(root, "tags", arr);
        else
            json_decref(arr);
    }

    /* Insertion order, not the hash order: jansson seeds its hash per
     * process, and a retry after a restart must produce the same bytes. */
    out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    free(bitlink);
    if (out == NULL)
        abort();
    return out;
}

void webhook_test_msg_id(uint64_t delivery_id, char out[32])
{
    snprintf(out, 32, "test_%" PRIu64, delivery_id);
}

char *webhook_test_payload(const webhook_t *w, const char *msg_id, int64_t time_us)
{
    char ts[40], datetime[40];
    json_t *root = json_object();
    char *out;

    format_times(time_us, ts, sizeof ts, datetime, sizeof datetime);
    json_object_set_new(root, "event_type", json_string("test"));
    json_object_set_new(root, "event_id", text(msg_id, strlen(msg_id)));
    json_object_set_new(root, "timestamp", json_string(ts));
    json_object_set_new(root, "datetime", json_string(datetime));
    json_object_set_new(root, "webhook_guid", text(w->guid, strlen(w->guid)));
    json_object_set_new(root, "organization_guid",
                        text(w->organization_guid, strlen(w->organization_guid)));
    out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (out == NULL)
        abort();
    return out;
}
