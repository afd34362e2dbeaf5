/*
 * server/clicks: /v4/bitlinks/{id}/clicks, /clicks/summary, /countries,
 * /referrers and our /engagement_types, read from the hourly counters the writer keeps with each
 * engagement (bots are never counted there).
 *
 * Buckets: unit is minute, hour, day, week (from Monday) or month; units is how
 * many (-1: all since the link was made); unit_reference (RFC 3339, any offset,
 * default now) falls in the newest bucket, and its offset decides where buckets
 * begin and how their dates are written. Buckets are whole: the newest one runs
 * to its natural end, not to unit_reference, so a series and its summary agree.
 *
 * Click totals (the series and the summary) are exact: whole UTC hours come
 * from the hourly counters, and an hour cut by a bucket edge (minute buckets,
 * offsets such as +05:30) from the per-minute counters. The facets have hourly
 * counters only, so a facet window whose edges are not whole hours counts an
 * hour's clicks in the bucket holding the hour's first second.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "query.h"

/* The most buckets one series answers with. A larger units is refused for
 * the series (it would list MAX_SERIES buckets and echo the units asked for);
 * units=-1 on a link older than MAX_SERIES buckets lists the newest
 * MAX_SERIES. The summary and the facets build no series and take up to
 * MAX_UNITS. */
#define MAX_SERIES 1000
#define MAX_UNITS  100000

typedef enum unit { UNIT_MINUTE, UNIT_HOUR, UNIT_DAY, UNIT_WEEK, UNIT_MONTH } unit_t;

static const char *const unit_names[] = {"minute", "hour", "day", "week", "month"};

typedef struct window {
    unit_t unit;
    long units;    /* -1: all */
    int64_t ref_s; /* unit_reference, Unix seconds */
    int offset_s;  /* offset of unit_reference from UTC */
    long size;     /* facet rows, for countries and referrers */
} window_t;

/* Bitly's date format, written in the given offset ("...T00:00:00+0530"). */
static void format_local(int64_t t, int offset_s, char out[32])
{
    time_t local = (time_t)(t + offset_s);
    struct tm tm;
    int off = offset_s < 0 ? -offset_s : offset_s;

    gmtime_r(&local, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, "%c%02d%02d", offset_s < 0 ? '-' : '+', off / 3600, off % 3600 / 60);
}

static int bad(h2o_req_t *req, int status, const char *message, const char *description,
               const char *resource, const char *field, const char *error_code)
{
    api_error(req, status, message, description, resource, field, error_code);
    return -1;
}

/* Reads unit, units, unit_reference and size; replies and returns -1 on bad
 * input. An empty value counts as absent: Bitly's Node client sends unset
 * options as "unit_reference=". */
static int read_window(api_request_t *r, window_t *w)
{
    char v[64];
    int rc;

    *w = (window_t){.unit = UNIT_DAY, .units = -1, .ref_s = util_now_us() / 1000000, .size = 50};
    if ((rc = query_get_set(r->req, "unit", v, sizeof(v))) != QUERY_ABSENT) {
        int found = -1;
        for (int i = 0; i < 5 && rc == QUERY_FOUND; i++)
            if (strcmp(v, unit_names[i]) == 0)
                found = i;
        if (found < 0)
            return bad(r->req, 400, "INVALID_ARG_UNIT",
                       "unit must be minute, hour, day, week or month.", "bitlinks", "unit",
                       "invalid");
        w->unit = (unit_t)found;
    }
    if ((rc = query_get_set(r->req, "units", v, sizeof(v))) != QUERY_ABSENT) {
        char *end = v;
        long n = rc == QUERY_FOUND ? strtol(v, &end, 10) : 0;
        if (*end != '\0' || end == v || n == 0 || n < -1 || n > MAX_UNITS)
            return bad(r->req, 400, "INVALID_ARG_UNITS", "units must be -1 or 1 to 100000.",
                       "bitlinks", "units", "invalid");
        w->units = n;
    }
    if ((rc = query_get_set(r->req, "unit_reference", v, sizeof(v))) != QUERY_ABSENT) {
        int64_t ref_us = 0;
        const char *why = rc == QUERY_FOUND ? util_parse_rfc3339(v, &ref_us, &w->offset_s)
                                            : "an RFC 3339 time, such as 2026-01-02T03:04:05+05:30";
        w->ref_s = ref_us / 1000000;
        if (why != NULL) {
            char description[160];
            snprintf(description, sizeof(description), "unit_reference must be %s.", why);
            return bad(r->req, 400, "INVALID_ARG_UNIT_REFERENCE", description, "bitlinks",
                       "unit_reference", "invalid");
        }
    }
    if ((rc = query_get_set(r->req, "size", v, sizeof(v))) != QUERY_ABSENT) {
        char *end = v;
        long n = rc == QUERY_FOUND ? strtol(v, &end, 10) : 0;
        if (*end != '\0' || end == v || n < 1 || n > 1000)
            return bad(r->req, 400, "INVALID_ARG_SIZE", "size must be 1 to 1000.", "bitlinks",
                       "size", "invalid");
        w->size = n;
    }
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* The start (Unix seconds) of the bucket holding t, in the window's offset. */
static int64_t bucket_start(const window_t *w, int64_t t)
{
    static const int64_t len[] = {60, 3600, 86400};
    int64_t local = t + w->offset_s;
    int64_t start;

    switch (w->unit) {
    case UNIT_MINUTE:
    case UNIT_HOUR:
    case UNIT_DAY:
        start = floor_div(local, len[w->unit]) * len[w->unit];
        break;
    case UNIT_WEEK: {
        /* Weeks start on Monday; 1970-01-01 was a Thursday, 3 days after one. */
        int64_t day = floor_div(local, 86400);
        start = (day - (((day + 3) % 7) + 7) % 7) * 86400;
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

/* The start of the bucket after the one starting at start. */
static int64_t bucket_next(const window_t *w, int64_t start)
{
    static const int64_t len[] = {60, 3600, 86400, 7 * 86400};

    if (w->unit != UNIT_MONTH)
        return start + len[w->unit];
    /* 32 days past the first of a month is always in the next one. */
    return bucket_start(w, start + 32 * 86400);
}

/* The start of the bucket before the one starting at start. */
static int64_t bucket_prev(const window_t *w, int64_t start)
{
    return bucket_start(w, start - 1);
}

/* The first counter hour of a bucket starting at s: the hour whose first second
 * is at or after s. */
static uint32_t first_hour(int64_t s)
{
    return s <= 0 ? 0 : (uint32_t)((s + 3599) / 3600);
}

/* How many buckets the series has: units, or for -1 every bucket since the
 * link was made; at most MAX_SERIES. */
static long series_length(const window_t *w, int64_t created_s)
{
    if (w->units > 0)
        return w->units < MAX_SERIES ? w->units : MAX_SERIES;
    long n = 1;
    for (int64_t s = bucket_start(w, w->ref_s); s > created_s && n < MAX_SERIES; n++)
        s = bucket_prev(w, s);
    return n;
}

/* The window's first second: units buckets back from the newest one. */
static int64_t window_start(const window_t *w)
{
    if (w->units < 0)
        return 0;
    int64_t start = bucket_start(w, w->ref_s);
    for (long i = 1; i < w->units; i++)
        start = bucket_prev(w, start);
    return start;
}

/* /bitlinks/{id}/{metric}[/summary], the id as api_bitlink_id reads it. */
static bool read_code(api_request_t *r, const char **code, size_t *len, h2o_iovec_t *metric)
{
    size_t last = r->n_seg - 1;
    size_t metric_at = api_seg_is(r, last, "summary") ? last - 1 : last;
    h2o_iovec_t domain, id;
    size_t next;

    if (!api_bitlink_id(r, &domain, &id, &next) || next != metric_at)
        return false;
    *metric = r->seg[metric_at];
    *code = id.base;
    *len = id.len;
    return true;
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

/* Clicks in minutes [from, to) of one UTC hour. */
typedef struct minute_span {
    unsigned from, to;
    uint64_t total;
} minute_span_t;

static int on_minute(void *ctx, uint32_t hour, storage_bytes_t value, uint64_t count)
{
    minute_span_t *m = ctx;
    unsigned minute = value.len == 1 ? (uint8_t)value.ptr[0] : 60;

    (void)hour;
    if (minute >= m->from && minute < m->to)
        m->total += count;
    return 0;
}

static uint64_t minutes_total(storage_txn_t *txn, const char *code, size_t len, int64_t hour,
                              unsigned from, unsigned to)
{
    minute_span_t m = {from, to, 0};

    storage_counter_scan(txn, code, len, STORAGE_FACET_MINUTE, (uint32_t)hour, (uint32_t)hour + 1,
                         on_minute, &m);
    return m.total;
}

/* Clicks in [from_s, to_s): the whole hours inside from the hourly counters,
 * the cut hours at either edge from the minute counters. Bucket edges fall on
 * whole minutes, as offsets are whole minutes. */
static uint64_t clicks_between(storage_txn_t *txn, const char *code, size_t len, int64_t from_s,
                               int64_t to_s)
{
    tally_t t = {0};

    if (from_s < 0)
        from_s = 0;
    if (to_s <= from_s)
        return 0;
    int64_t hour = from_s / 3600, last = to_s / 3600;
    unsigned head = (unsigned)(from_s % 3600 / 60), tail = (unsigned)(to_s % 3600 / 60);

    if (hour == last)
        return minutes_total(txn, code, len, hour, head, tail);
    if (head > 0)
        t.total += minutes_total(txn, code, len, hour++, head, 60);
    storage_counter_scan(txn, code, len, STORAGE_FACET_TOTAL, (uint32_t)hour, (uint32_t)last,
                         on_total, &t);
    if (tail > 0)
        t.total += minutes_total(txn, code, len, last, 0, tail);
    return t.total;
}

static json_t *clicks_series(storage_txn_t *txn, const storage_link_t *l, const window_t *w,
                             int64_t since_s)
{
    json_t *list = json_array();
    long n = series_length(w, l->created_us / 1000000);
    int64_t start = bucket_start(w, w->ref_s);
    int64_t end = bucket_next(w, start);

    /* Newest first, as Bitly lists them. */
    for (long i = 0; i < n; i++) {
        char date[32];
        uint64_t clicks =
            clicks_between(txn, l->code.ptr, l->code.len, start > since_s ? start : since_s, end);
        format_local(start, w->offset_s, date);
        json_array_append_new(list,
                              json_pack("{s:s, s:I}", "date", date, "clicks", (json_int_t)clicks));
        end = start;
        start = bucket_prev(w, start);
    }
    return list;
}

/* The facet routes: Bitly's countries and referrers, and our engagement_types
 * (click, qr_scan, bio_click). */
static bool facet_of(h2o_iovec_t metric, storage_facet_t *facet, const char **name)
{
    static const struct {
        const char *name;
        storage_facet_t facet;
    } facets[] = {{"countries", STORAGE_FACET_COUNTRY},
                  {"referrers", STORAGE_FACET_REFERRER},
                  {"engagement_types", STORAGE_FACET_KIND}};

    for (size_t i = 0; i < sizeof(facets) / sizeof(facets[0]); i++) {
        if (h2o_memis(metric.base, metric.len, facets[i].name, strlen(facets[i].name))) {
            *facet = facets[i].facet;
            *name = facets[i].name;
            return true;
        }
    }
    return false;
}

int api_clicks(api_request_t *r)
{
    storage_facet_t facet;
    const char *facet_name;
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
    bool summary = api_seg_is(r, r->n_seg - 1, "summary");
    bool series = h2o_memis(metric.base, metric.len, H2O_STRLIT("clicks")) && !summary;
    if (series && w.units > MAX_SERIES)
        return api_error(r->req, 400, "INVALID_ARG_UNITS",
                         "units must be -1 or 1 to 1000 for a clicks series; clicks/summary, "
                         "countries, referrers and engagement_types take up to 100000.",
                         "bitlinks", "units", "invalid");

    storage_txn_t *txn = storage_reader_begin(r->w->reader);
    storage_link_t l;
    if (txn == NULL || storage_link_get(txn, code, len, &l) != STORAGE_OK) {
        if (txn != NULL)
            storage_reader_end(r->w->reader);
        return api_not_found(r, "bitlinks");
    }
    char ref[32];
    format_local(w.ref_s, w.offset_s, ref);
    /* No click predates the link's hour: a window reaching further back (units
     * -1 starts at 1970) is read from there. */
    int64_t since_s = floor_div(l.created_us / 1000000, 3600) * 3600;
    int64_t from_s = window_start(&w), to_s = bucket_next(&w, bucket_start(&w, w.ref_s));
    if (from_s < since_s)
        from_s = since_s;
    uint32_t from = first_hour(from_s), to = first_hour(to_s);
    json_t *body = NULL;

    if (h2o_memis(metric.base, metric.len, H2O_STRLIT("clicks")) && summary) {
        uint64_t total = clicks_between(txn, code, len, from_s, to_s);
        body = json_pack("{s:I, s:s, s:I, s:s}", "total_clicks", (json_int_t)total, "unit",
                         unit_names[w.unit], "units", (json_int_t)w.units, "unit_reference", ref);
    } else if (h2o_memis(metric.base, metric.len, H2O_STRLIT("clicks"))) {
        body = json_pack("{s:o, s:s, s:I, s:s}", "link_clicks", clicks_series(txn, &l, &w, since_s),
                         "unit", unit_names[w.unit], "units", (json_int_t)w.units, "unit_reference",
                         ref);
    } else if (facet_of(metric, &facet, &facet_name)) {
        tally_t t = {0};
        storage_counter_scan(txn, code, len, facet, from, to, on_facet, &t);
        if (t.n > 0) /* rows is NULL then, which qsort may not be given */
            qsort(t.rows, t.n, sizeof(*t.rows), by_clicks);
        json_t *metrics = json_array();
        for (size_t i = 0; i < t.n && (long)i < w.size; i++)
            json_array_append_new(metrics, json_pack("{s:s, s:I}", "value", t.rows[i].value,
                                                     "clicks", (json_int_t)t.rows[i].clicks));
        free(t.rows);
        body =
            json_pack("{s:s, s:o, s:s, s:I, s:s}", "facet", facet_name, "metrics", metrics, "unit",
                      unit_names[w.unit], "units", (json_int_t)w.units, "unit_reference", ref);
    }
    storage_reader_end(r->w->reader);
    if (body == NULL)
        return api_not_found(r, "bitlinks");
    return api_reply(r->req, 200, body);
}
