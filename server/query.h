/*
 * server/query: reading a request's query string without allocating. Internal
 * to server/ (shared by the /v4 handlers in links.c and clicks.c).
 */
#ifndef SHORTLINKD_QUERY_H
#define SHORTLINKD_QUERY_H

#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>

enum {
    QUERY_BAD = -1,   /* too long for the buffer, a broken %-escape, or a NUL */
    QUERY_ABSENT = 0, /* no such occurrence */
    QUERY_FOUND = 1,
};

/* Finds the nth (0 for the first) occurrence of name in the query and writes its
 * value, percent-decoded ('+' is a space), into out. A value that does not fit
 * is QUERY_BAD rather than truncated, so no caller acts on part of a value. */
int query_get(const h2o_req_t *req, const char *name, size_t nth, char *out, size_t outlen);

/* The first occurrence, with "name=" and no value read as absent: clients such
 * as Bitly's Node package send unset options that way. */
int query_get_set(const h2o_req_t *req, const char *name, char *out, size_t outlen);

/* The raw query string without its '?' ("" when none), borrowed from req. */
h2o_iovec_t query_raw(const h2o_req_t *req);

#endif
