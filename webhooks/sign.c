/*
 * webhooks/sign.c: Standard Webhooks v1 secrets and signatures. A secret is
 * "whsec_" followed by padded standard base64 of the key bytes; a signature is
 * "v1," followed by padded base64 of HMAC-SHA256 over "id.timestamp.body".
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "webhooks_internal.h"

#define SECRET_PREFIX   "whsec_"
#define SECRET_KEY_LEN  32
#define KEY_MAX         (WEBHOOK_SECRET_MAX / 4 * 3)
#define HMAC_SHA256_LEN 32

static EVP_MAC *hmac_impl;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

/* Fetching an algorithm walks OpenSSL's provider tables, so it is done once
 * and the handle shared; EVP_MAC objects are safe to use from many threads. */
static void fetch_hmac(void)
{
    hmac_impl = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static bool is_base64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Decodes standard base64, padded or not, into key. EVP_DecodeBlock counts
 * the padding as zero bytes, so they are taken off again here. Returns the
 * decoded length or -1. */
static int decode_key(const char *b64, unsigned char *key, size_t keylen)
{
    char padded[WEBHOOK_SECRET_MAX + 4];
    size_t len = strlen(b64);
    size_t n_pad = 0;

    while (len > 0 && b64[len - 1] == '=') {
        len--;
        n_pad++;
    }
    if (len == 0 || len > WEBHOOK_SECRET_MAX || n_pad > 2 || len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!is_base64_char((unsigned char)b64[i]))
            return -1;
    }

    /* Re-pad so that both padded and unpadded secrets are accepted. */
    memcpy(padded, b64, len);
    size_t full = (len + 3) / 4 * 4;
    memset(padded + len, '=', full - len);
    if ((len + n_pad) % 4 != 0 && n_pad != 0)
        return -1;

    size_t decoded_len = full / 4 * 3;
    if (decoded_len > keylen)
        return -1;
    int n = EVP_DecodeBlock(key, (const unsigned char *)padded, (int)full);
    if (n < 0)
        return -1;
    return n - (int)(full - len);
}

int webhook_secret_generate(char *out, size_t outlen)
{
    unsigned char key[SECRET_KEY_LEN];
    size_t prefix_len = strlen(SECRET_PREFIX);
    int rc = -1;

    /* 32 bytes encode to 44 base64 characters, plus the prefix and the NUL. */
    if (outlen < prefix_len + 44 + 1)
        goto out;
    if (RAND_bytes(key, sizeof key) != 1)
        goto out;
    memcpy(out, SECRET_PREFIX, prefix_len);
    EVP_EncodeBlock((unsigned char *)out + prefix_len, key, sizeof key);
    rc = 0;

out:
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

static int mac_update(EVP_MAC_CTX *ctx, const void *p, size_t n)
{
    return EVP_MAC_update(ctx, p, n) == 1 ? 0 : -1;
}

int webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                 size_t body_len, char *out, size_t outlen)
{
    unsigned char key[KEY_MAX + 3];
    unsigned char mac[HMAC_SHA256_LEN];
    size_t mac_len = 0;
    char ts[24];
    EVP_MAC_CTX *ctx = NULL;
    int key_len = -1;
    int rc = -1;

    if (secret == NULL || msg_id == NULL || (body == NULL && body_len > 0))
        goto out;
    /* "v1," + 44 characters of base64 + NUL */
    if (outlen < 3 + 44 + 1)
        goto out;
    if (strncmp(secret, SECRET_PREFIX, strlen(SECRET_PREFIX)) == 0)
        secret += strlen(SECRET_PREFIX);
    key_len = decode_key(secret, key, sizeof key);
    if (key_len <= 0)
        goto out;

    pthread_once(&hmac_once, fetch_hmac);
    if (hmac_impl == NULL)
        goto out;
    ctx = EVP_MAC_CTX_new(hmac_impl);
    if (ctx == NULL)
        goto out;

    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(ctx, key, (size_t)key_len, params) != 1)
        goto out;

    /* The signed content is id "." timestamp "." body, fed in pieces so the
     * body is never copied. */
    int ts_len = snprintf(ts, sizeof ts, "%" PRId64, timestamp);
    if (mac_update(ctx, msg_id, strlen(msg_id)) < 0 || mac_update(ctx, ".", 1) < 0 ||
        mac_update(ctx, ts, (size_t)ts_len) < 0 || mac_update(ctx, ".", 1) < 0 ||
        mac_update(ctx, body, body_len) < 0)
        goto out;
    if (EVP_MAC_final(ctx, mac, &mac_len, sizeof mac) != 1 || mac_len != sizeof mac)
        goto out;

    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)mac_len);
    rc = 0;

out:
    EVP_MAC_CTX_free(ctx);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}
