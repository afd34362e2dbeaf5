/*
 * Unit tests for webhooks/payload.c: the engagement body's fields, its
 * determinism, and bytes that are not ASCII (C15).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "webhooks.h"

static const webhook_payload_ctx_t ctx = {
    .public_url = "http://127.0.0.1:8080",
    .domain = "127.0.0.1:8080",
};

static void make(webhook_t *w, storage_engagement_t *e, const char *long_url, const char *query)
{
    static const uint8_t id[16] = {0x01, 0x8f, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e, 0x8f,
                                   0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07};

    memset(w, 0, sizeof *w);
    snprintf(w->guid, sizeof w->guid, "%s", "Wh1abcdefgh");
    snprintf(w->organization_guid, sizeof w->organization_guid, "%s", "Oo1abcdefgh");
    w->url = "https://crm.example/hook";
    w->is_active = true;

    memset(e, 0, sizeof *e);
    e->seq = 7;
    memcpy(e->event_id, id, sizeof id);
    /* 2026-12-04T15:49:14.123456Z */
    e->time_us = 1796399354123456;
    e->kind = STORAGE_KIND_QR_SCAN;
    e->device = STORAGE_DEVICE_MOBILE;
    snprintf(e->country, sizeof e->country, "%s", "GB");
    snprintf(e->code, sizeof e->code, "%s", "abc");
    snprintf(e->referrer, sizeof e->referrer, "%s", "news.example");
    snprintf(e->group_guid, sizeof e->group_guid, "%s", "Bg1aaaaaaaa");
    e->long_url.ptr = long_url;
    e->long_url.len = strlen(long_url);
    e->query.ptr = query;
    e->query.len = query ? strlen(query) : 0;
}

static const char *str(json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);

    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void webhook_payload_has_every_field(void **state)
{
    webhook_t w;
    storage_engagement_t e;
    json_error_t jerr;

    make(&w, &e, "https://example.com/p?ref=x", "utm_source=y");
    char *body = webhook_payload(&ctx, &w, &e, NULL, 0);
    assert_non_null(body);
    json_t *root = json_loads(body, 0, &jerr);
    assert_non_null(root);

    assert_string_equal(str(root, "event_type"), "engagement");
    assert_string_equal(str(root, "engagement_type"), "qr_scan");
    assert_string_equal(str(root, "event_id"), "018f3a4b-5c6d-7e8f-90a1-b2c3d4e5f607");
    assert_string_equal(str(root, "timestamp"), "2026-12-04T15:49:14.123Z");
    assert_string_equal(str(root, "datetime"), "2026-12-04T15:49:14+0000");
    assert_string_equal(str(root, "url"), "https://example.com/p?ref=x");
    assert_string_equal(str(root, "bitlink"), "127.0.0.1:8080/abc");
    assert_string_equal(str(root, "link"), "http://127.0.0.1:8080/abc");
    assert_string_equal(str(root, "passed_params"), "utm_source=y");
    assert_string_equal(str(root, "country"), "GB");
    assert_string_equal(str(root, "referrer"), "news.example");
    assert_string_equal(str(root, "device_type"), "mobile");
    assert_true(json_is_false(json_object_get(root, "is_bot")));
    assert_string_equal(str(root, "webhook_guid"), "Wh1abcdefgh");
    assert_string_equal(str(root, "organization_guid"), "Oo1abcdefgh");
    assert_string_equal(str(root, "group_guid"), "Bg1aaaaaaaa");
    json_t *refs = json_object_get(root, "references");
    assert_true(json_is_object(refs));
    assert_string_equal(str(refs, "bitlink"),
                        "http://127.0.0.1:8080/v4/bitlinks/127.0.0.1:8080/abc");
    assert_null(json_object_get(root, "tags"));

    /* Compact and starting with the event type: key order is fixed. */
    assert_non_null(strstr(body, "{\"event_type\":\"engagement\",\"engagement_type\""));
    json_decref(root);
    free(body);
}

static void webhook_payload_no_query_no_country_gives_empty_strings(void **state)
{
    webhook_t w;
    storage_engagement_t e;

    make(&w, &e, "https://example.com/", NULL);
    e.country[0] = '\0';
    e.kind = STORAGE_KIND_CLICK;
    e.device = STORAGE_DEVICE_BOT;
    e.bot = true;
    char *body = webhook_payload(&ctx, &w, &e, NULL, 0);
    json_t *root = json_loads(body, 0, NULL);
    assert_non_null(root);
    assert_string_equal(str(root, "passed_params"), "");
    assert_string_equal(str(root, "country"), "");
    assert_string_equal(str(root, "engagement_type"), "click");
    assert_string_equal(str(root, "device_type"), "bot");
    assert_true(json_is_true(json_object_get(root, "is_bot")));
    json_decref(root);
    free(body);
}

static void webhook_payload_tags_only_with_fetch_tags(void **state)
{
    webhook_t w;
    storage_engagement_t e;
    const char *tags = "[\"spring\",\"caf\xc3\xa9\"]";

    make(&w, &e, "https://example.com/", NULL);
    char *body = webhook_payload(&ctx, &w, &e, tags, strlen(tags));
    assert_null(strstr(body, "\"tags\""));
    free(body);

    w.fetch_tags = true;
    body = webhook_payload(&ctx, &w, &e, tags, strlen(tags));
    json_t *root = json_loads(body, 0, NULL);
    json_t *arr = json_object_get(root, "tags");
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(json_string_value(json_array_get(arr, 1)), "caf\xc3\xa9");
    json_decref(root);
    free(body);

    /* Malformed tags are left out, never sent as invalid JSON. */
    body = webhook_payload(&ctx, &w, &e, "[\"x\"", 4);
    assert_null(strstr(body, "\"tags\""));
    root = json_loads(body, 0, NULL);
    assert_non_null(root);
    json_decref(root);
    free(body);
}

static void webhook_payload_non_ascii_is_valid_utf8_and_stable(void **state)
{
    webhook_t w;
    storage_engagement_t e;

    /* C15: é, & and </ in the long URL; a query holding a byte that is not
     * UTF-8, which a visitor can send. */
    make(&w, &e, "https://example.com/caf\xc3\xa9?a=1&b=</script>", "q=\xff&r=\xc3\xa9");
    char *body = webhook_payload(&ctx, &w, &e, NULL, 0);
    char *again = webhook_payload(&ctx, &w, &e, NULL, 0);
    assert_string_equal(body, again);

    json_t *root = json_loads(body, 0, NULL);
    assert_non_null(root);
    assert_string_equal(str(root, "url"), "https://example.com/caf\xc3\xa9?a=1&b=</script>");
    assert_string_equal(str(root, "passed_params"), "q=%FF&r=\xc3\xa9");
    json_decref(root);
    free(body);
    free(again);
}

static void webhook_payload_times_before_epoch_floor(void **state)
{
    webhook_t w;
    storage_engagement_t e;

    make(&w, &e, "https://example.com/", NULL);
    e.time_us = -1500; /* 1969-12-31T23:59:59.998500Z */
    char *body = webhook_payload(&ctx, &w, &e, NULL, 0);
    json_t *root = json_loads(body, 0, NULL);
    assert_string_equal(str(root, "timestamp"), "1969-12-31T23:59:59.998Z");
    assert_string_equal(str(root, "datetime"), "1969-12-31T23:59:59+0000");
    json_decref(root);
    free(body);
}

static void webhook_uuid_format_is_lowercase_8_4_4_4_12(void **state)
{
    uint8_t id[16];
    char out[37];

    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(0xf0 + i);
    webhook_uuid_format(id, out);
    assert_string_equal(out, "f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webhook_payload_has_every_field),
        cmocka_unit_test(webhook_payload_no_query_no_country_gives_empty_strings),
        cmocka_unit_test(webhook_payload_tags_only_with_fetch_tags),
        cmocka_unit_test(webhook_payload_non_ascii_is_valid_utf8_and_stable),
        cmocka_unit_test(webhook_payload_times_before_epoch_floor),
        cmocka_unit_test(webhook_uuid_format_is_lowercase_8_4_4_4_12),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
