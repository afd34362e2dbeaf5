/*
 * Unit tests for webhooks/record.c: the stored JSON form of a webhook and
 * which groups it subscribes to.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "webhooks.h"

static void fill(webhook_t *w)
{
    static char *groups[] = {"Bg1aaaaaaaa", "Bg2bbbbbbbb"};

    memset(w, 0, sizeof *w);
    snprintf(w->guid, sizeof w->guid, "%s", "Wh1abcdefgh");
    snprintf(w->organization_guid, sizeof w->organization_guid, "%s", "Oo1abcdefgh");
    w->name = "CRM \xc3\xa9t\xc3\xa9";
    w->url = "https://crm.example/hook?x=1&y=</";
    w->event = "engagement";
    w->group_guids = groups;
    w->n_groups = 2;
    w->is_active = true;
    w->fetch_tags = true;
    w->include_bots = false;
    w->oauth_url = "https://auth.example/token";
    w->client_id = "cid";
    w->client_secret = "csecret";
    w->signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    w->previous_secret = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    w->previous_expires_us = 1700000000000000;
    w->created_us = 1600000000000001;
    w->modified_us = 1600000000000002;
    w->last_success_us = 1600000000000003;
    w->failing_since_us = 0;
    w->deactivated_reason = NULL;
}

static void webhook_encode_decode_roundtrip_keeps_every_field(void **state)
{
    webhook_t in, out;
    char err[128];

    fill(&in);
    char *json = webhook_encode(&in);
    assert_non_null(json);
    assert_int_equal(webhook_decode(&out, json, strlen(json), err, sizeof err), 0);

    assert_string_equal(out.guid, in.guid);
    assert_string_equal(out.organization_guid, in.organization_guid);
    assert_string_equal(out.name, in.name);
    assert_string_equal(out.url, in.url);
    assert_string_equal(out.event, "engagement");
    assert_int_equal(out.n_groups, 2);
    assert_string_equal(out.group_guids[0], "Bg1aaaaaaaa");
    assert_string_equal(out.group_guids[1], "Bg2bbbbbbbb");
    assert_true(out.is_active);
    assert_true(out.fetch_tags);
    assert_false(out.include_bots);
    assert_string_equal(out.oauth_url, in.oauth_url);
    assert_string_equal(out.client_id, in.client_id);
    assert_string_equal(out.client_secret, in.client_secret);
    assert_string_equal(out.signing_secret, in.signing_secret);
    assert_string_equal(out.previous_secret, in.previous_secret);
    assert_int_equal(out.previous_expires_us, in.previous_expires_us);
    assert_int_equal(out.created_us, in.created_us);
    assert_int_equal(out.modified_us, in.modified_us);
    assert_int_equal(out.last_success_us, in.last_success_us);
    assert_int_equal(out.failing_since_us, 0);
    assert_null(out.deactivated_reason);

    /* Encoding the decoded record gives the same text. */
    char *again = webhook_encode(&out);
    assert_string_equal(again, json);
    free(again);
    free(json);
    webhook_clear(&out);
    assert_null(out.url);
    assert_int_equal(out.n_groups, 0);
}

static void webhook_decode_reads_bitly_group_guid(void **state)
{
    webhook_t w;
    const char *one = "{\"guid\":\"Wh1\",\"url\":\"https://a.example/\",\"group_guid\":\"Bg1\","
                      "\"is_active\":true}";
    const char *none = "{\"guid\":\"Wh1\",\"url\":\"https://a.example/\",\"oauth_url\":\"\"}";

    assert_int_equal(webhook_decode(&w, one, strlen(one), NULL, 0), 0);
    assert_int_equal(w.n_groups, 1);
    assert_string_equal(w.group_guids[0], "Bg1");
    assert_true(w.is_active);
    assert_false(w.fetch_tags);
    webhook_clear(&w);

    assert_int_equal(webhook_decode(&w, none, strlen(none), NULL, 0), 0);
    assert_int_equal(w.n_groups, 0);
    assert_false(w.is_active);
    assert_null(w.oauth_url); /* "" means none */
    webhook_clear(&w);
}

static void webhook_decode_malformed_fails_with_message(void **state)
{
    webhook_t w;
    char err[128];
    const char *bad[] = {
        "",
        "[]",
        "{\"guid\":12}",
        "{\"is_active\":\"yes\"}",
        "{\"group_guids\":[1]}",
        "{\"guid\":\"Wh1\",\"guid\":\"Wh2\"}",
        "{\"guid\":\"far-too-long-for-a-guid\"}",
        "{\"created_us\":1.5}",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(webhook_decode(&w, bad[i], strlen(bad[i]), err, sizeof err), -1);
        assert_true(strlen(err) > 0);
        assert_null(w.url);
    }
}

static void webhook_subscribes_no_groups_means_all(void **state)
{
    webhook_t w;

    memset(&w, 0, sizeof w);
    assert_true(webhook_subscribes(&w, "Bg1aaaaaaaa"));
    assert_true(webhook_subscribes(&w, ""));
}

static void webhook_subscribes_only_its_groups(void **state)
{
    webhook_t w;

    fill(&w);
    assert_true(webhook_subscribes(&w, "Bg1aaaaaaaa"));
    assert_true(webhook_subscribes(&w, "Bg2bbbbbbbb"));
    assert_false(webhook_subscribes(&w, "Bg3cccccccc"));
    assert_false(webhook_subscribes(&w, ""));
    assert_false(webhook_subscribes(&w, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webhook_encode_decode_roundtrip_keeps_every_field),
        cmocka_unit_test(webhook_decode_reads_bitly_group_guid),
        cmocka_unit_test(webhook_decode_malformed_fails_with_message),
        cmocka_unit_test(webhook_subscribes_no_groups_means_all),
        cmocka_unit_test(webhook_subscribes_only_its_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
