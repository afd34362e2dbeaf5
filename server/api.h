/*
 * server/api: the machinery the /v4 handlers share: Bitly's error body, JSON
 * replies, bearer-token checks, request bodies, and jobs that run on the storage
 * writer and answer on the worker's loop. Internal to server/.
 */
#ifndef SHORTLINKD_API_H
#define SHORTLINKD_API_H

#include "app.h"

#define API_MAX_SEGMENTS 8

typedef struct api_request {
    worker_t *w;
    h2o_req_t *req;
    const app_t *app;
    h2o_iovec_t seg[API_MAX_SEGMENTS]; /* path segments after /v4 */
    size_t n_seg;
    json_t *body; /* parsed JSON body, or NULL */
} api_request_t;

typedef struct api_job api_job_t;
/* Runs on the writer thread inside a nested transaction; sets job->status and
 * job->response. Return STORAGE_OK to keep the writes. */
typedef int (*api_job_fn)(storage_txn_t *txn, api_job_t *job);

struct api_job {
    h2o_multithread_message_t super; /* first: the receiver gets this back */
    worker_t *worker;
    h2o_req_t *req;       /* NULL once the client is gone */
    api_job_t **req_slot; /* in the request's pool; cleared when the job ends */
    const app_t *app;
    api_job_fn fn;
    int fn_rc;
    int status;
    json_t *response;
    json_t *input; /* owned */
    char arg[256]; /* a path parameter: a guid, a code */
    void *data;    /* owned by the handler; freed with free_data */
    void (*free_data)(void *data);
};

/* Replies with a JSON value (stolen) and a status. Always returns 0. */
int api_reply(h2o_req_t *req, int status, json_t *body);
/* Bitly's error body {message, description, resource, errors[{field,
 * error_code}]}; field may be NULL. Always returns 0. */
int api_error(h2o_req_t *req, int status, const char *message, const char *description,
              const char *resource, const char *field, const char *error_code);
json_t *api_error_body(const char *message, const char *description, const char *resource,
                       const char *field, const char *error_code);

/* Starts a job for the request; the reply comes when it is durable. */
int api_submit(api_request_t *r, api_job_fn fn, json_t *input, const char *arg, void *data,
               void (*free_data)(void *));

/* Deletes one record of db by key as a job: 200 {} when it was there, 404
 * when not, in Bitly's error body naming resource. */
int api_submit_delete(api_request_t *r, storage_db_t db, const char *resource, const char *key);

/* Sets job->status and job->response for an error. Returns STORAGE_INVALID so
 * the job's writes are discarded. */
int api_job_error(api_job_t *job, int status, const char *message, const char *description,
                  const char *resource, const char *field, const char *error_code);

/* Helpers for JSON bodies. */
const char *api_str(json_t *body, const char *key); /* NULL when absent or not a string */

/* JSON of stored records. */
json_t *api_bitlink_json(const app_t *app, const storage_link_t *l);
json_t *api_group_json(const app_t *app, storage_bytes_t stored);
json_t *api_webhook_json(const app_t *app, const webhook_t *w);

/* Route handlers, by resource. */
int api_links(api_request_t *r);
int api_webhooks(api_request_t *r);
int api_account(api_request_t *r);
int api_clicks(api_request_t *r);
/* GET /v4/bitlinks/{id}/qr (server/qr.c). */
int api_qr(api_request_t *r);
/* /v4/bio_pages[/{handle}] (server/bio.c). */
int api_bio(api_request_t *r);
/* GET /v4/openapi.json, public (server/openapi.c). */
int api_openapi(worker_t *w, h2o_req_t *req);

/* Whether a domain (percent-encoded or not, any case) is this server's short
 * domain. Clients written for Bitly send its default domain, bit.ly, unless
 * told otherwise (the npm package always sends one), so that name stands for
 * ours too. */
bool api_domain_ours(const app_t *app, const char *s, size_t len);

/* The bitlink id after /bitlinks/: domain/hash as two segments, or as one
 * segment with an encoded slash (%2F). Sets *next to the index of the first
 * segment after the id; false when there is no id. */
bool api_bitlink_id(const api_request_t *r, h2o_iovec_t *domain, h2o_iovec_t *code, size_t *next);
bool api_seg_is(const api_request_t *r, size_t i, const char *s);
bool api_method_is(const api_request_t *r, const char *m);
int api_method_not_allowed(api_request_t *r);
int api_not_found(api_request_t *r, const char *resource);

#endif
