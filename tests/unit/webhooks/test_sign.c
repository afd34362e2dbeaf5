/*
 * Unit tests for webhooks/sign.c: the Standard Webhooks test vector of
 * DESIGN.md §6 and the secret format of case C19.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "webhooks.h"

#define VECTOR_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VECTOR_ID     "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VECTOR_TS     1614265330
#define VECTOR_BODY   "{\"test\": 2432232314}"
#define VECTOR_SIG    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static void webhook_sign_design_vector_matches(void **state)
{
    char sig[WEBHOOK_SIGNATURE_MAX];

    assert_int_equal(webhook_sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY,
                                  strlen(VECTOR_BODY), sig, sizeof sig),
                     0);
    assert_string_equal(sig, VECTOR_SIG);
}

static void webhook_sign_without_prefix_decodes_as_is(void **state)
{
    char sig[WEBHOOK_SIGNATURE_MAX];
    const char *bare = &VECTOR_SECRET[strlen("whsec_")];

    assert_int_equal(
        webhook_sign(bare, VECTOR_ID, VECTOR_TS, VECTOR_BODY, strlen(VECTOR_BODY), sig, sizeof sig),
        0);
    assert_string_equal(sig, VECTOR_SIG);
}

static void webhook_sign_other_body_differs(void **state)
{
    char sig[WEBHOOK_SIGNATURE_MAX];
    const char *body = "{\"test\": 2432232315}";

    assert_int_equal(
        webhook_sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, body, strlen(body), sig, sizeof sig), 0);
    assert_string_not_equal(sig, VECTOR_SIG);
}

static void webhook_sign_invalid_secret_fails(void **state)
{
    char sig[WEBHOOK_SIGNATURE_MAX];
    const char *bad[] = {"whsec_",  "whsec_!!!!",    "whsec_abc=d",
                         "whsec_a", "whsec_abcd===", "whsec_ab cd"};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(webhook_sign(bad[i], VECTOR_ID, VECTOR_TS, "{}", 2, sig, sizeof sig), -1);
}

static void webhook_sign_small_buffer_fails(void **state)
{
    char sig[20];

    assert_int_equal(webhook_sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY,
                                  strlen(VECTOR_BODY), sig, sizeof sig),
                     -1);
}

static void webhook_secret_generate_is_padded_base64_of_32_bytes(void **state)
{
    char secret[WEBHOOK_SECRET_MAX];
    char other[WEBHOOK_SECRET_MAX];
    unsigned char raw[64];

    assert_int_equal(webhook_secret_generate(secret, sizeof secret), 0);
    assert_int_equal(webhook_secret_generate(other, sizeof other), 0);
    assert_string_not_equal(secret, other);

    assert_memory_equal(secret, "whsec_", 6);
    const char *b64 = secret + 6;
    size_t len = strlen(b64);
    /* 32 bytes: 44 characters with one '=' of padding (C19: padded standard
     * base64 of at least 24 bytes). */
    assert_int_equal(len, 44);
    assert_int_equal(b64[43], '=');
    for (size_t i = 0; i < 43; i++)
        assert_true(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                           b64[i]) != NULL);
    int n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)len);
    assert_int_equal(n - 1, 32);
    assert_true(n - 1 >= 24);

    /* The generated secret signs, and a receiver holding it verifies. */
    char sig1[WEBHOOK_SIGNATURE_MAX], sig2[WEBHOOK_SIGNATURE_MAX];
    assert_int_equal(webhook_sign(secret, "id", 1, "x", 1, sig1, sizeof sig1), 0);
    assert_int_equal(webhook_sign(secret, "id", 1, "x", 1, sig2, sizeof sig2), 0);
    assert_string_equal(sig1, sig2);
    assert_int_equal(strlen(sig1), 47);
}

static void webhook_secret_generate_small_buffer_fails(void **state)
{
    char secret[40];

    assert_int_equal(webhook_secret_generate(secret, sizeof secret), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webhook_sign_design_vector_matches),
        cmocka_unit_test(webhook_sign_without_prefix_decodes_as_is),
        cmocka_unit_test(webhook_sign_other_body_differs),
        cmocka_unit_test(webhook_sign_invalid_secret_fails),
        cmocka_unit_test(webhook_sign_small_buffer_fails),
        cmocka_unit_test(webhook_secret_generate_is_padded_base64_of_32_bytes),
        cmocka_unit_test(webhook_secret_generate_small_buffer_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
