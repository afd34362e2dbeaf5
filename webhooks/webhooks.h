/*
 * webhooks/: webhook records, Standard Webhooks signatures, the click payload,
 * the SSRF rules, and the dispatcher thread that delivers engagements over
 * libcurl.
 *
 * Return codes: 0 on success, -1 on failure with a sentence in the caller's
 * err buffer where there is one. Nothing here prints: the dispatcher reports
 * through the log callback it is given.
 */
#ifndef SHORTLINKD_WEBHOOKS_H
#define SHORTLINKD_WEBHOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "geoip.h"
#include "storage.h"

/* ---- signatures (Standard Webhooks v1) ---- */

#define WEBHOOK_SECRET_MAX    128
#define WEBHOOK_SIGNATURE_MAX 64 /* "v1," + 44 base64 chars + NUL, rounded up */

/* Writes "whsec_" + padded standard base64 of 32 random bytes. */
int webhook_secret_generate(char *out, size_t outlen);
/* Writes "v1,<base64 HMAC-SHA256 of id.timestamp.body>" keyed with the decoded
 * part of a whsec_ secret (a secret without the prefix is decoded as is).
 * Returns -1 when the secret is not valid base64. */
int webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                 size_t body_len, char *out, size_t outlen);

/* ---- webhook records (stored as JSON in STORAGE_DB_WEBHOOKS) ---- */

#define WEBHOOK_MAX_GROUPS 64

typedef struct webhook {
    char guid[STORAGE_GUID_LEN + 1];
    char organization_guid[STORAGE_GUID_LEN + 1];
    char *name;
    char *url;
    char *event;        /* "engagement" */
    char **group_guids; /* none: every group */
    size_t n_groups;
    bool is_active;
    bool fetch_tags;
    bool include_bots;
    char *oauth_url; /* NULL when not used */
    char *client_id;
    char *client_secret;
    char *signing_secret;
    char *previous_secret; /* still signed with until previous_expires_us */
    int64_t previous_expires_us;
    int64_t created_us;
    int64_t modified_us;
    int64_t last_success_us;  /* 0: never */
    int64_t failing_since_us; /* 0: not failing */
    char *deactivated_reason; /* NULL unless deactivated by the dispatcher */
} webhook_t;

/* Parses a stored record. Returns -1 on a malformed one. */
int webhook_decode(webhook_t *w, const char *json, size_t len, char *err, size_t errlen);
/* The stored form, malloc'd and NUL-terminated, with every secret. */
char *webhook_encode(const webhook_t *w);
void webhook_clear(webhook_t *w);
/* Whether the webhook wants engagements on links of this group. */
bool webhook_subscribes(const webhook_t *w, const char *group_guid);

/* ---- SSRF rules ---- */

typedef struct webhook_net_policy {
    const geoip_cidr_t *allow; /* special ranges opened by the operator */
    size_t n_allow;
} webhook_net_policy_t;

/* Checks a webhook or token URL: absolute http(s), a host, and, when the host is
 * a literal address (in any form curl accepts, such as 2130706433), that it is
 * allowed. Names are checked again on the address actually connected to. */
int webhook_url_check(const char *url, const webhook_net_policy_t *policy, char *err,
                      size_t errlen);

/* ---- payload ---- */

typedef struct webhook_payload_ctx {
    const char *public_url; /* e.g. "http://127.0.0.1:8080" */
    const char *domain;     /* the short domain, e.g. "127.0.0.1:8080" */
} webhook_payload_ctx_t;

/* Builds the engagement body (DESIGN.md §6), malloc'd, NUL-terminated; tags is a
 * JSON array text or NULL. */
char *webhook_payload(const webhook_payload_ctx_t *ctx, const webhook_t *w,
                      const storage_engagement_t *e, const char *tags, size_t tags_len);
/* The body of a test event (POST /v4/webhooks/{guid}/verify), malloc'd:
 * {"event_type": "test", "event_id": msg_id, "timestamp", "webhook_guid",
 * "organization_guid"}, keys in a fixed order. */
char *webhook_test_payload(const webhook_t *w, const char *msg_id, int64_t time_us);
/* Formats a 16-byte UUID as 36 chars + NUL. */
void webhook_uuid_format(const uint8_t id[16], char out[37]);

/* ---- dispatcher ---- */

typedef struct webhook_dispatcher webhook_dispatcher_t;

enum { WEBHOOK_LOG_ERROR = 0, WEBHOOK_LOG_WARN = 1, WEBHOOK_LOG_INFO = 2, WEBHOOK_LOG_DEBUG = 3 };

typedef struct webhook_dispatcher_options {
    storage_t *storage;
    webhook_payload_ctx_t payload;
    webhook_net_policy_t policy;
    const uint32_t *retry_delays_s; /* delay before retry 1, 2, ...; NULL: DESIGN.md's */
    size_t n_retry_delays;
    long connect_timeout_ms;         /* 0: 5000 */
    long total_timeout_ms;           /* 0: 15000 */
    unsigned max_in_flight;          /* 0: 256 */
    unsigned max_per_endpoint;       /* 0: 8, per origin (scheme, host, port) */
    unsigned deactivate_after_hours; /* failing this long without a success; 0: 120 */
    void (*log)(int level, const char *fmt, ...);
} webhook_dispatcher_options_t;

/* A delivery with this engagement sequence is a test event, not an
 * engagement: one attempt, then delivered or failed, whatever the webhook's
 * state, and it never changes the webhook's failure streak. */
#define WEBHOOK_TEST_SEQ 0
/* The webhook-id of a test delivery: "test_" + the delivery id in decimal. */
void webhook_test_msg_id(uint64_t delivery_id, char out[32]);

/* Attempt round trips are counted in these buckets (upper bounds in ms); the
 * last bucket is everything slower. */
#define WEBHOOK_LATENCY_BUCKETS 12
extern const uint32_t webhook_latency_bounds_ms[WEBHOOK_LATENCY_BUCKETS - 1];

typedef struct webhook_stats {
    uint64_t delivered;                        /* attempts that ended in a 2xx, since start */
    uint64_t retried;                          /* failed attempts with another one scheduled */
    uint64_t failed;                           /* failed attempts that gave their delivery up */
    uint64_t latency[WEBHOOK_LATENCY_BUCKETS]; /* attempts per bucket, not cumulative */
    uint64_t latency_sum_ms;
    uint64_t pending;   /* deliveries waiting (due or scheduled), at the last count */
    uint64_t given_up;  /* deliveries marked failed and kept for a resend, likewise */
    uint64_t in_flight; /* requests under way, token requests included */
    uint64_t token_fetches;
} webhook_stats_t;

/* Starts the dispatcher thread. It resumes every due delivery found in storage.
 * Needs the storage writer running. */
webhook_dispatcher_t *webhook_dispatcher_start(const webhook_dispatcher_options_t *opts, char *err,
                                               size_t errlen);
/* Tells the dispatcher new engagements are committed. Thread-safe, never
 * blocks; fits storage_options_t.on_commit. */
void webhook_dispatcher_wake(void *dispatcher, uint64_t last_seq);
/* Tells the dispatcher deliveries were written outside fan-out (a resend, a
 * recovery, a test event) and are due. Thread-safe, never blocks; NULL is
 * ignored. */
void webhook_dispatcher_poke(webhook_dispatcher_t *d);
/* A snapshot of the counters; any thread. The queue depth is counted by the
 * dispatcher at most once a second. */
void webhook_dispatcher_stats(webhook_dispatcher_t *d, webhook_stats_t *out);
/* Lets in-flight attempts finish (up to the total timeout) and joins. */
void webhook_dispatcher_stop(webhook_dispatcher_t *d);

#endif
