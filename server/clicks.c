/*
 * server/clicks: /v4/bitlinks/{id}/clicks, /clicks/summary, /countries and
 * /referrers, read from the hourly counters the writer keeps with each
 * engagement (bots are never counted there).
 *
 * Buckets: unit is minute, hour, day, week or month; units is how many (-1 for
 * all time); unit_reference (RFC 3339, any offset) is the end of the window, and
 * its offset decides where days begin. Counters are hourly, so minute buckets
 * and offsets that are not whole hours are approximated by the hour they fall in.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"

typedef enum unit { UNIT_MINUTE, UNIT_HOUR, UNIT_DAY, UNIT_WEEK, UNIT_MONTH } unit_t;

typedef struct window {
    unit_t unit;
    long units;    /* -1: all */
    int64_t end_s; /* exclusive end, Unix seconds */
    int offset_s;  /* offset of unit_reference from UTC */
    long size;     /* facet rows, for countries and referrers */
} window_t;

/* Query parameter lookup without allocating: value of name in the query. */
static bool query_param(h2o_req_t *req, const char *name, char *out, size_t outlen)
{
    if (req->query_at == SIZE_MAX)
        return false;
    const char *q = req->path.base + req->query_at + 1;
    const char *end = req->path.base + req->path.len;
    size_t nlen = strlen(name);

    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp != NULL ? amp : end;
        if ((size_t)(stop - q) > nlen && memcmp(q, name, nlen) == 0 && q[nlen] == '=') {
            size_t n = 0;
            for (const char *p = q + nlen + 1; p < stop && n + 1 < outlen; p++) {
                if (*p == '%' && p + 2 < stop) {
                    char hex[3] = {p[1], p[2], 0};
                    out[n++] = (char)strtol(hex, NULL, 16);
                    p += 2;
                } else {
                    out[n++] = *p == '+' ? ' ' : *p;
                }
            }
            out[n] = '\0';
            return true;
        }
        q = stop + 1;
    }
    return false;
}

/* Parses RFC 3339 ("2026-01-02T03:04:05Z", "...+05:30", fractions allowed). */
static bool parse_rfc3339(const char *s, int64_t *out_s, int *offset_s)
{
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);

    if (p == NULL)
        return false;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) == 2 && strlen(p) == 6)
            p += 6;
        else if (sscanf(p + 1, "%2d%2d", &hh, &mm) == 2 && strlen(p) == 5)
            p += 5;
        else
            return false;
        if (hh > 23 || mm > 59)
            return false;
        off = sign * (hh * 3600 + mm * 60);
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    *out_s = (int64_t)timegm(&tm) - off;
    *offset_s = off;
    return true;
}

static int bad(h2o_req_t *req, int status, const char *message, const char *description,
               const char *resource, const char *field, const char *error_code)
{
    api_error(req, status, message, description, resource, field, error_code);
    return -1;
}

/* Reads unit, units, unit_reference and size; replies and returns -1 on bad
 * input. */
static int read_window(api_request_t *r, window_t *w)
{
    static const char *const names[] = {"minute", "hour", "day", "week", "month"};
    char v[64];

    *w = (window_t){.unit = UNIT_DAY, .units = -1, .end_s = util_now_us() / 1000000, .size = 50};
    if (query_param(r->req, "unit", v, sizeof(v))) {
        int found = -1;
        for (int i = 0; i < 5; i++)
            if (strcmp(v, names[i]) == 0)
                found = i;
        if (found < 0)
            return bad(r->req, 400, "INVALID_ARG_UNIT",
                       "unit must be minute, hour, day, week or month.", "bitlinks", "unit",
                       "invalid");
        w->unit = (unit_t)found;
    }
    if (query_param(r->req, "units", v, sizeof(v))) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*end != '\0' || end == v || n == 0 || n < -1 || n > 10000)
            return bad(r->req, 400, "INVALID_ARG_UNITS", "units must be -1 or 1 to 10000.",
                       "bitlinks", "units", "invalid");
        w->units = n;
    }
    if (query_param(r->req, "unit_reference", v, sizeof(v))) {
        if (!parse_rfc3339(v, &w->end_s, &w->offset_s))
            return bad(r->req, 400, "INVALID_ARG_UNIT_REFERENCE",
                       "unit_reference must be an RFC 3339 time.", "bitlinks", "unit_reference",
                       "invalid");
    }
    if (query_param(r->req, "size", v, sizeof(v))) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*end != '\0' || end == v || n < 1 || n > 1000)
            return bad(r->req, 400, "INVALID_ARG_SIZE", "size must be 1 to 1000.", "bitlinks",
                       "size", "invalid");
        w->size = n;
    }
    return 0;
}

/* The start (Unix seconds) of the bucket holding t, in the window's offset. */
static int64_t bucket_start(const window_t *w, int64_t t)
{
    int64_t local = t + w->offset_s;
    int64_t start;

    switch (w->unit) {
    case UNIT_MINUTE:
        start = local - (local % 60 + 60) % 60;
        break;
    case UNIT_HOUR:
        start = local - (local % 3600 + 3600) % 3600;
        break;
    case UNIT_DAY:
        start = local - (local % 86400 + 86400) % 86400;
        break;
    case UNIT_WEEK: {
        /* Weeks start on Monday; 1970-01-01 was a Thursday. */
        int64_t day = local / 86400 - (local % 86400 < 0);
        int64_t monday = day - ((day + 3) % 7 + 7) % 7;
        start = monday * 86400;
        break;
    }
    default: {
        time_t tt = (time_t)local;
        struct tm tm;
        gmtime_r(&tt, &tm);
        tm.tm_mday = 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        start = (int64_t)timegm(&tm);
        break;
    }
    }
    return start - w->offset_s;
}

/* The start of the bucket before the one starting at start. */
static int64_t bucket_prev(const window_t *w, int64_t start)
{
    static const int64_t len[] = {60, 3600, 86400, 7 * 86400};

    if (w->unit != UNIT_MONTH)
        return start - len[w->unit];
    return bucket_start(w, start - 1);
}

/* The window's first second: units buckets back from the end's bucket. */
static int64_t window_start(const window_t *w)
{
    if (w->units < 0)
        return 0;
    int64_t start = bucket_start(w, w->end_s);
    for (long i = 1; i < w->units; i++)
        start = bucket_prev(w, start);
    return start;
}

static bool read_code(api_request_t *r, const char **code, size_t *len, h2o_iovec_t *metric)
{
    /* /bitlinks/{domain}/{hash}/{metric}[/summary] or with the id as one
     * segment holding %2F. */
    size_t last = r->n_seg - 1;
    bool summary = api_seg_is(r, last, "summary");
    size_t metric_at = summary ? last - 1 : last;

    *metric = r->seg[metric_at];
    if (metric_at == 3) {
        *code = r->seg[2].base;
        *len = r->seg[2].len;
        return true;
    }
    if (metric_at == 2) {
        h2o_iovec_t s = r->seg[1];
        for (size_t i = 0; i + 3 <= s.len; i++) {
            if (s.base[i] == '%' && s.base[i + 1] == '2' && (s.base[i + 2] | 0x20) == 'f') {
                *code = s.base + i + 3;
                *len = s.len - i - 3;
                return true;
            }
        }
    }
    return false;
}

typedef struct facet_row {
    char value[STORAGE_REFERRER_MAX + 1];
    uint64_t clicks;
} facet_row_t;

typedef struct tally {
    int64_t from_s, to_s;
    uint64_t total;
    facet_row_t *rows;
    size_t n, cap;
} tally_t;

static int on_total(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count)
{
    tally_t *t = ctx;

    (void)value;
    (void)hour;
    t->total += count;
    return 0;
}

static int on_facet(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count)
{
    tally_t *t = ctx;

    (void)hour;
    t->total += count;
    for (size_t i = 0; i < t->n; i++) {
        if (strlen(t->rows[i].value) == value.len &&
            memcmp(t->rows[i].value, value.ptr, value.len) == 0) {
            t->rows[i].clicks += count;
            return 0;
        }
    }
    if (t->n == t->cap) {
        t->cap = t->cap == 0 ? 16 : t->cap * 2;
        facet_row_t *rows = xmalloc(t->cap * sizeof(*rows));
        if (t->n > 0)
            memcpy(rows, t->rows, t->n * sizeof(*rows));
        free(t->rows);
        t->rows = rows;
    }
    size_t n = value.len < STORAGE_REFERRER_MAX ? value.len : STORAGE_REFERRER_MAX;
    memcpy(t->rows[t->n].value, value.ptr, n);
    t->rows[t->n].value[n] = '\0';
    t->rows[t->n].clicks = count;
    t->n++;
    return 0;
}

static int by_clicks(const void *a, const void *b)
{
    const facet_row_t *x = a, *y = b;

    return x->clicks < y->clicks ? 1 : x->clicks > y->clicks ? -1 : strcmp(x->value, y->value);
}

static uint32_t hour_of(int64_t s)
{
    return s <= 0 ? 0 : (uint32_t)(s / 3600);
}

static json_t *clicks_series(storage_txn_t *txn, const char *code, size_t len, const window_t *w)
{
    json_t *list = json_array();
    int64_t end_bucket = bucket_start(w, w->end_s);
    long n = w->units < 0 ? 30 : w->units; /* "all" as a series: the last 30 buckets */

    /* Walk back from the newest bucket, newest first as Bitly lists them. */
    int64_t b_start = end_bucket;
    int64_t b_end = w->end_s + 1;
    for (long i = 0; i < n; i++) {
        tally_t t = {0};
        storage_counter_scan(txn, code, len, STORAGE_FACET_TOTAL, hour_of(b_start),
                             hour_of(b_end - 1) + 1, on_total, &t);
        char date[32];
        util_format_bitly_time(b_start * 1000000, date);
        json_array_append_new(list,
                              json_pack("{s:s, s:I}", "date", date, "clicks", (json_int_t)t.total));
        b_end = b_start;
        b_start = bucket_prev(w, b_start);
    }
    return list;
}

int api_clicks(api_request_t *r)
{
    const char *code;
    size_t len;
    h2o_iovec_t metric;
    window_t w;

    if (!api_method_is(r, "GET"))
        return api_method_not_allowed(r);
    if (!read_code(r, &code, &len, &metric))
        return api_not_found(r, "bitlinks");
    if (read_window(r, &w) != 0)
        return 0;

    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    storage_link_t l;
    if (txn == NULL || storage_link_get(txn, code, len, &l) != STORAGE_OK) {
        if (txn != NULL)
            storage_reader_end(r->w->reader);
        return api_not_found(r, "bitlinks");
    }
    static const char *const unit_names[] = {"minute", "hour", "day", "week", "month"};
    char ref[32];
    util_format_bitly_time(w.end_s * 1000000, ref);
    int64_t from = window_start(&w);
    json_t *body = NULL;
    bool summary = api_seg_is(r, r->n_seg - 1, "summary");

    if (h2o_memis(metric.base, metric.len, H2O_STRLIT("clicks")) && summary) {
        tally_t t = {0};
        storage_counter_scan(txn, code, len, STORAGE_FACET_TOTAL, hour_of(from),
                             hour_of(w.end_s) + 1, on_total, &t);
        body = json_pack("{s:I, s:s, s:I, s:s}", "total_clicks", (json_int_t)t.total, "unit",
                         unit_names[w.unit], "units", (json_int_t)w.units, "unit_reference", ref);
    } else if (h2o_memis(metric.base, metric.len, H2O_STRLIT("clicks"))) {
        body = json_pack("{s:o, s:s, s:I, s:s}", "link_clicks", clicks_series(txn, code, len, &w),
                         "unit", unit_names[w.unit], "units", (json_int_t)w.units, "unit_reference",
                         ref);
    } else if (h2o_memis(metric.base, metric.len, H2O_STRLIT("countries")) ||
               h2o_memis(metric.base, metric.len, H2O_STRLIT("referrers"))) {
        bool countries = metric.base[0] == 'c';
        tally_t t = {0};
        storage_counter_scan(txn, code, len,
                             countries ? STORAGE_FACET_COUNTRY : STORAGE_FACET_REFERRER,
                             hour_of(from), hour_of(w.end_s) + 1, on_facet, &t);
        qsort(t.rows, t.n, sizeof(*t.rows), by_clicks);
        json_t *metrics = json_array();
        for (size_t i = 0; i < t.n && (long)i < w.size; i++)
            json_array_append_new(metrics, json_pack("{s:s, s:I}", "value", t.rows[i].value,
                                                     "clicks", (json_int_t)t.rows[i].clicks));
        free(t.rows);
        body = json_pack("{s:s, s:o, s:s, s:I, s:s}", "facet",
                         countries ? "countries" : "referrers", "metrics", metrics, "unit",
                         unit_names[w.unit], "units", (json_int_t)w.units, "unit_reference", ref);
    }
    storage_reader_end(r->w->reader);
    if (body == NULL)
        return api_not_found(r, "bitlinks");
    return api_reply(r->req, 200, body);
}
