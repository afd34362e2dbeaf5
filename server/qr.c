/*
 * server/qr: QR codes of links (libqrencode, libpng), as Bitly's JSON with a
 * data URI (GET /v4/bitlinks/{id}/qr) and as a public image for <img> tags
 * (/qr/{code}.png, /qr/{code}.svg).
 *
 * The URL inside a code is the short link plus the QR marker, so a visit made
 * by scanning counts as a qr_scan (server/redirect.c strips the marker before
 * the query is forwarded). An image depends only on that URL and the rendering
 * parameters, so its ETag is a digest of exactly those.
 *
 * Parameters, the same on both routes:
 *   image_format      png (default) or svg; on /qr/ the extension decides
 *   size              edge of the image in pixels, 32..2048 (default 300). PNG
 *                     modules are whole pixels: the module scale is the largest
 *                     that fits and the leftover pixels widen the quiet zone, so
 *                     the image is exactly size wide unless the code needs more
 *                     (then one pixel per module). SVG scales exactly.
 *   margin            quiet zone in modules, 0..16 (default 4, as ISO 18004 asks)
 *   error_correction  L, M (default), Q or H
 *   color             dark modules, hex rgb or rrggbb, '#' optional (000000)
 *   background_color  light modules and quiet zone (ffffff); the dark colour
 *                     must be darker than the light one by a quarter of the
 *                     luma range, or scanners (zbar among them) miss the code.
 */
#include <png.h>
#include <qrencode.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "parse.h"

#define QR_SIZE_MIN        32
#define QR_SIZE_MAX        2048
#define QR_SIZE_DEFAULT    300
#define QR_MARGIN_MAX      16
#define QR_MARGIN_DEFAULT  4
#define QR_LUMA_GAP_MIN    64 /* of 255: a quarter of the range */
#define QR_PARAM_MAX       64 /* bytes of a decoded parameter value */
#define QR_CONTENT_MAX     (sizeof(((config_t *)0)->public_url) + STORAGE_CODE_MAX + 16)
#define QR_RENDER_REVISION "1" /* bump when the drawing changes, to change ETags */

typedef struct qr_params {
    bool svg;
    unsigned size;
    unsigned margin;
    QRecLevel level;
    uint8_t fg[3];
    uint8_t bg[3];
} qr_params_t;

/* Why a parameter was refused: the field and a sentence for Bitly's error body. */
typedef struct qr_bad {
    const char *field;
    const char *description;
} qr_bad_t;

/* A rendered image; body lives in the request's pool. */
typedef struct qr_image {
    const char *type;
    unsigned char *body;
    size_t len;
    unsigned edge; /* pixels */
} qr_image_t;

static const char level_names[] = "LMQH";

/* ---- parameters ---- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Finds name in the request's query and percent-decodes its value into out.
 * Returns 1 when found, 0 when absent, -1 when the value is too long or
 * badly escaped. The first occurrence wins. */
static int query_get(h2o_req_t *req, const char *name, char *out, size_t outlen)
{
    if (req->query_at == SIZE_MAX)
        return 0;
    const char *q = req->path.base + req->query_at + 1;
    const char *end = req->path.base + req->path.len;
    size_t nlen = strlen(name);

    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp != NULL ? amp : end;
        if ((size_t)(stop - q) >= nlen && memcmp(q, name, nlen) == 0 &&
            (q + nlen == stop || q[nlen] == '=')) {
            size_t n = 0;
            for (const char *p = q + nlen + (q + nlen < stop); p < stop; p++) {
                char c = *p;
                if (c == '%') {
                    int hi = p + 2 < stop ? hex_value(p[1]) : -1;
                    int lo = p + 2 < stop ? hex_value(p[2]) : -1;
                    if (hi < 0 || lo < 0)
                        return -1;
                    c = (char)(hi * 16 + lo);
                    p += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                if (n + 1 >= outlen)
                    return -1;
                out[n++] = c;
            }
            out[n] = '\0';
            return 1;
        }
        q = stop + 1;
    }
    return 0;
}

/* Whole decimal numbers only: "300", not "300px", "+300" or "3e2". */
static bool parse_uint(const char *s, unsigned max, unsigned *out)
{
    unsigned long v = 0;

    if (s[0] == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > max)
            return false;
    }
    *out = (unsigned)v;
    return true;
}

/* "#1a2b3c", "1a2b3c", "#abc" or "abc". */
static bool parse_colour(const char *s, uint8_t rgb[3])
{
    if (s[0] == '#')
        s++;
    size_t n = strlen(s);
    if (n != 3 && n != 6)
        return false;
    for (size_t i = 0; i < n; i++)
        if (hex_value(s[i]) < 0)
            return false;
    for (int i = 0; i < 3; i++) {
        if (n == 3)
            rgb[i] = (uint8_t)(hex_value(s[i]) * 17);
        else
            rgb[i] = (uint8_t)(hex_value(s[2 * i]) * 16 + hex_value(s[2 * i + 1]));
    }
    return true;
}

/* Rec. 709 luma of gamma-encoded sRGB, 0..255: close enough to what a camera
 * sees to tell a scannable pair of colours from a faint one. */
static unsigned luma(const uint8_t rgb[3])
{
    return (2126u * rgb[0] + 7152u * rgb[1] + 722u * rgb[2]) / 10000u;
}

/* Reads the parameters; on bad input fills *bad and returns -1. On /qr/ the
 * format comes from the path, so image_format is not read. */
static int read_params(h2o_req_t *req, bool read_format, qr_params_t *p, qr_bad_t *bad)
{
    char v[QR_PARAM_MAX + 1];
    int found;

    *p = (qr_params_t){.size = QR_SIZE_DEFAULT,
                       .margin = QR_MARGIN_DEFAULT,
                       .level = QR_ECLEVEL_M,
                       .fg = {0, 0, 0},
                       .bg = {255, 255, 255}};

    if (read_format && (found = query_get(req, "image_format", v, sizeof(v))) != 0) {
        if (found < 0 || (strcmp(v, "png") != 0 && strcmp(v, "svg") != 0)) {
            *bad = (qr_bad_t){"image_format", "image_format must be png or svg."};
            return -1;
        }
        p->svg = strcmp(v, "svg") == 0;
    }
    if ((found = query_get(req, "size", v, sizeof(v))) != 0) {
        if (found < 0 || !parse_uint(v, QR_SIZE_MAX, &p->size) || p->size < QR_SIZE_MIN) {
            *bad = (qr_bad_t){"size", "size must be a whole number of pixels from 32 to 2048."};
            return -1;
        }
    }
    if ((found = query_get(req, "margin", v, sizeof(v))) != 0) {
        if (found < 0 || !parse_uint(v, QR_MARGIN_MAX, &p->margin)) {
            *bad = (qr_bad_t){"margin", "margin must be a whole number of modules from 0 to 16."};
            return -1;
        }
    }
    if ((found = query_get(req, "error_correction", v, sizeof(v))) != 0) {
        const char *at = found > 0 && strlen(v) == 1 ? strchr(level_names, v[0] & ~0x20) : NULL;
        if (at == NULL || v[0] == '\0') {
            *bad = (qr_bad_t){"error_correction", "error_correction must be L, M, Q or H."};
            return -1;
        }
        p->level = (QRecLevel)(at - level_names);
    }
    static const char *const colour_names[] = {"color", "background_color"};
    uint8_t *colours[] = {p->fg, p->bg};
    for (int i = 0; i < 2; i++) {
        if ((found = query_get(req, colour_names[i], v, sizeof(v))) == 0)
            continue;
        if (found < 0 || !parse_colour(v, colours[i])) {
            *bad = (qr_bad_t){colour_names[i],
                              "Colours are hex: rgb or rrggbb, with or without a leading '#'."};
            return -1;
        }
    }
    if (luma(p->fg) + QR_LUMA_GAP_MIN > luma(p->bg)) {
        *bad = (qr_bad_t){"color", "color must be darker than background_color by at least a "
                                   "quarter of the brightness range, or the code will not scan."};
        return -1;
    }
    return 0;
}

/* ---- the code ---- */

/* The URL a scan opens: the short link with the QR marker. */
static void scan_url(const app_t *app, const char *code, size_t len, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%.*s?%s=1", app->cfg->public_url, (int)len, code, PARSE_QR_MARKER);
}

/* A quoted strong ETag: a digest of the URL inside and every parameter that
 * changes a pixel. */
static void make_etag(const char *content, const qr_params_t *p, char out[36])
{
    char text[QR_CONTENT_MAX + 96];
    uint8_t digest[32];
    char hex[33];

    int n = snprintf(text, sizeof(text),
                     "qr" QR_RENDER_REVISION "\n%s\n%s %u %u %c %02x%02x%02x %02x%02x%02x", content,
                     p->svg ? "svg" : "png", p->size, p->margin, level_names[p->level], p->fg[0],
                     p->fg[1], p->fg[2], p->bg[0], p->bg[1], p->bg[2]);
    util_sha256(text, n > 0 ? (size_t)n : 0, digest);
    util_hex(digest, 16, hex);
    snprintf(out, 36, "\"%s\"", hex);
}

/* Where the modules go: `scale` pixels each, starting `offset` pixels in. */
typedef struct geometry {
    unsigned edge;   /* pixels (PNG) */
    unsigned scale;  /* pixels per module (PNG) */
    unsigned offset; /* pixels before the first module (PNG) */
    unsigned total;  /* modules across, quiet zone included */
} geometry_t;

static geometry_t layout(const QRcode *qr, const qr_params_t *p)
{
    geometry_t g;

    g.total = (unsigned)qr->width + 2 * p->margin;
    g.scale = p->size / g.total;
    if (g.scale == 0)
        g.scale = 1;
    g.edge = g.total * g.scale > p->size ? g.total * g.scale : p->size;
    g.offset = (g.edge - (unsigned)qr->width * g.scale) / 2;
    return g;
}

static bool dark(const QRcode *qr, unsigned x, unsigned y)
{
    return (qr->data[(size_t)y * (size_t)qr->width + x] & 1) != 0;
}

/* ---- SVG: one background rect and one path of horizontal runs ---- */

static size_t render_svg(h2o_mem_pool_t *pool, const QRcode *qr, const qr_params_t *p,
                         qr_image_t *img)
{
    unsigned w = (unsigned)qr->width, m = p->margin;
    geometry_t g = layout(qr, p);
    /* A run costs at most "M999 999h999v1h-999z" (21 bytes), and a row has at
     * most (w + 1) / 2 runs. */
    size_t cap = 512 + (size_t)w * ((w + 1) / 2) * 24;
    char *out = h2o_mem_alloc_pool(pool, cap);
    size_t n = 0;
    /* SVG's width is the requested size: vectors need no whole-pixel modules. */
    unsigned edge = p->size > g.total ? p->size : g.total;

    n += (size_t)snprintf(out + n, cap - n,
                          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" height=\"%u\" "
                          "viewBox=\"0 0 %u %u\" shape-rendering=\"crispEdges\">"
                          "<rect width=\"%u\" height=\"%u\" fill=\"#%02x%02x%02x\"/>"
                          "<path fill=\"#%02x%02x%02x\" d=\"",
                          edge, edge, g.total, g.total, g.total, g.total, p->bg[0], p->bg[1],
                          p->bg[2], p->fg[0], p->fg[1], p->fg[2]);
    for (unsigned y = 0; y < w; y++) {
        for (unsigned x = 0; x < w;) {
            if (!dark(qr, x, y)) {
                x++;
                continue;
            }
            if (cap - n < 32)
                return 0; /* the bound above is wrong: our mistake, refused rather than cut */
            unsigned run = 1;
            while (x + run < w && dark(qr, x + run, y))
                run++;
            n += (size_t)snprintf(out + n, cap - n, "M%u %uh%uv1h-%uz", x + m, y + m, run, run);
            x += run;
        }
    }
    n += (size_t)snprintf(out + n, cap - n, "\"/></svg>\n");
    if (n >= cap)
        return 0; /* the bound above is wrong: our mistake, refused rather than cut */
    img->type = "image/svg+xml";
    img->body = (unsigned char *)out;
    img->len = n;
    img->edge = edge;
    return n;
}

/* ---- PNG: 1-bit palette, written into a buffer sized before it starts ---- */

typedef struct png_out {
    unsigned char *data;
    size_t len;
    size_t cap;
} png_out_t;

static void on_png_write(png_structp png, png_bytep data, size_t n)
{
    png_out_t *o = png_get_io_ptr(png);

    if (n > o->cap - o->len)
        png_error(png, "the image outgrew its buffer");
    memcpy(o->data + o->len, data, n);
    o->len += n;
}

static void on_png_flush(png_structp png)
{
    (void)png;
}

static void on_png_error(png_structp png, png_const_charp msg)
{
    LOG_AT(LOG_ERROR, "qr", "PNG encoding failed: %s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Packs one module row into a row of pixels, most significant bit first. */
static void pack_row(const QRcode *qr, const geometry_t *g, unsigned y, unsigned char *row)
{
    size_t row_bytes = (g->edge + 7) / 8;

    memset(row, 0, row_bytes);
    for (unsigned x = 0; x < (unsigned)qr->width; x++) {
        if (!dark(qr, x, y))
            continue;
        for (unsigned px = g->offset + x * g->scale, k = 0; k < g->scale; k++, px++)
            row[px / 8] |= (unsigned char)(0x80u >> (px % 8));
    }
}

static size_t render_png(h2o_mem_pool_t *pool, const QRcode *qr, const qr_params_t *p,
                         qr_image_t *img)
{
    geometry_t g = layout(qr, p);
    size_t row_bytes = (g.edge + 7) / 8;
    unsigned char *blank = h2o_mem_alloc_pool(pool, row_bytes);
    unsigned char *row = h2o_mem_alloc_pool(pool, row_bytes);
    png_out_t *out = h2o_mem_alloc_pool(pool, sizeof(png_out_t));
    size_t result = 0;

    /* Deflate never grows data by more than a few bytes per block, so the raw
     * rows (with their filter bytes) plus headroom bound the file. */
    out->cap = (row_bytes + 1) * g.edge + (row_bytes + 1) * g.edge / 64 + 4096;
    out->data = h2o_mem_alloc_pool(pool, out->cap);
    out->len = 0;
    memset(blank, 0, row_bytes);

    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_png_error, on_png_warning);
    png_infop info = png != NULL ? png_create_info_struct(png) : NULL;
    if (info == NULL)
        goto out;
    /* Nothing that the error path reads changes after this point, so no local
     * needs to be volatile. */
    if (setjmp(png_jmpbuf(png)))
        goto out;

    png_set_write_fn(png, out, on_png_write, on_png_flush);
    png_set_IHDR(png, info, g.edge, g.edge, 1, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color palette[2] = {{p->bg[0], p->bg[1], p->bg[2]}, {p->fg[0], p->fg[1], p->fg[2]}};
    png_set_PLTE(png, info, palette, 2);
    png_write_info(png, info);

    unsigned top = g.offset, bottom = g.offset + (unsigned)qr->width * g.scale;
    for (unsigned y = 0; y < g.edge; y++) {
        if (y < top || y >= bottom) {
            png_write_row(png, blank);
            continue;
        }
        /* Each module row repeats for `scale` pixel rows: pack it once. */
        if ((y - top) % g.scale == 0)
            pack_row(qr, &g, (y - top) / g.scale, row);
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    img->type = "image/png";
    img->body = out->data;
    img->len = out->len;
    img->edge = g.edge;
    result = out->len;
out:
    png_destroy_write_struct(&png, &info);
    return result;
}

/* Renders the code of content; false when libqrencode or libpng refuses. */
static bool render(h2o_mem_pool_t *pool, const char *content, const qr_params_t *p, qr_image_t *img)
{
    /* 8-bit mode, case-sensitive: short codes are case-sensitive. */
    QRcode *qr = QRcode_encodeString(content, 0, p->level, QR_MODE_8, 1);
    size_t n;

    if (qr == NULL) {
        LOG_AT(LOG_ERROR, "qr", "libqrencode could not encode a %zu-byte URL", strlen(content));
        return false;
    }
    n = p->svg ? render_svg(pool, qr, p, img) : render_png(pool, qr, p, img);
    QRcode_free(qr);
    return n > 0;
}

/* ---- shared by both routes ---- */

/* Whether the link exists; a short read of the worker's transaction. */
static bool link_exists(worker_t *w, const char *code, size_t len)
{
    storage_link_t l;
    storage_txn_t *txn;
    bool found = false;

    if (!parse_code_plausible(code, len))
        return false;
    txn = storage_reader_begin(w->reader);
    if (txn != NULL) {
        found = storage_link_get(txn, code, len, &l) == STORAGE_OK;
        storage_reader_end(w->reader);
    }
    return found;
}

static int bad_params(h2o_req_t *req, const qr_bad_t *bad)
{
    return api_error(req, 400, "INVALID_ARG_QR", bad->description, "qr", bad->field, "invalid");
}

static int render_failed(h2o_req_t *req)
{
    return api_error(req, 500, "INTERNAL_ERROR", "The QR code could not be drawn.", "qr", NULL,
                     NULL);
}

/* The image's route with its parameters, for the JSON reply. */
static void image_url(const app_t *app, const char *code, size_t len, const qr_params_t *p,
                      char *out, size_t outlen)
{
    snprintf(out, outlen,
             "%s/qr/%.*s.%s?size=%u&margin=%u&error_correction=%c&color=%02x%02x%02x"
             "&background_color=%02x%02x%02x",
             app->cfg->public_url, (int)len, code, p->svg ? "svg" : "png", p->size, p->margin,
             level_names[p->level], p->fg[0], p->fg[1], p->fg[2], p->bg[0], p->bg[1], p->bg[2]);
}

/* ---- GET /v4/bitlinks/{domain}/{hash}/qr ---- */

/* The bitlink id before "qr": two segments, or one with an encoded slash. The
 * domain must be ours. */
static bool qr_bitlink_code(api_request_t *r, const char **code, size_t *len)
{
    h2o_iovec_t domain, id;
    size_t next;

    if (!api_bitlink_id(r, &domain, &id, &next) || next != r->n_seg - 1)
        return false;
    *code = id.base;
    *len = id.len;
    return api_domain_ours(r->app, domain.base, domain.len);
}

int api_qr(api_request_t *r)
{
    const char *code;
    size_t len;
    qr_params_t p;
    qr_bad_t bad;
    qr_image_t img;
    char content[QR_CONTENT_MAX], id[400], link[700], url[900];

    if (!api_method_is(r, "GET"))
        return api_method_not_allowed(r);
    if (!qr_bitlink_code(r, &code, &len) || !link_exists(r->w, code, len))
        return api_not_found(r, "bitlinks");
    if (read_params(r->req, true, &p, &bad) != 0)
        return bad_params(r->req, &bad);
    scan_url(r->app, code, len, content, sizeof(content));
    if (!render(&r->req->pool, content, &p, &img))
        return render_failed(r->req);

    /* The data URI is built in the request's pool: jansson copies it. */
    const char *prefix = p.svg ? "data:image/svg+xml;base64," : "data:image/png;base64,";
    size_t plen = strlen(prefix);
    char *uri = h2o_mem_alloc_pool(&r->req->pool, plen + h2o_base64_encode_capacity(img.len));
    memcpy(uri, prefix, plen);
    h2o_base64_encode(uri + plen, img.body, img.len, 0);

    snprintf(id, sizeof(id), "%s/%.*s", r->app->cfg->domain, (int)len, code);
    snprintf(link, sizeof(link), "%s/%.*s", r->app->cfg->public_url, (int)len, code);
    image_url(r->app, code, len, &p, url, sizeof(url));
    char colour[8], background[8];
    snprintf(colour, sizeof(colour), "%02x%02x%02x", p.fg[0], p.fg[1], p.fg[2]);
    snprintf(background, sizeof(background), "%02x%02x%02x", p.bg[0], p.bg[1], p.bg[2]);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s%, s:s, s:s}", "link",
                             link, "id", id, "qr_code", uri, "image_format", p.svg ? "svg" : "png",
                             "image_url", url, "scan_url", content, "size", (int)img.edge, "margin",
                             (int)p.margin, "error_correction", &level_names[p.level], (size_t)1,
                             "color", colour, "background_color", background);
    return api_reply(r->req, 200, body);
}

/* ---- GET|HEAD /qr/{code}.png|svg ---- */

/* Whether an If-None-Match header names etag (or is "*"); weak validators
 * match too, as RFC 9110 asks for GET. */
static bool etag_matches(h2o_req_t *req, const char *etag)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    size_t elen = strlen(etag);

    for (; i != -1; i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, i)) {
        h2o_iovec_t v = req->headers.entries[i].value;
        size_t k = 0;
        while (k < v.len) {
            while (k < v.len && (v.base[k] == ' ' || v.base[k] == '\t' || v.base[k] == ','))
                k++;
            size_t start = k;
            while (k < v.len && v.base[k] != ',')
                k++;
            size_t end = k;
            while (end > start && (v.base[end - 1] == ' ' || v.base[end - 1] == '\t'))
                end--;
            if (end - start >= 2 && v.base[start] == 'W' && v.base[start + 1] == '/')
                start += 2;
            if ((end - start == 1 && v.base[start] == '*') ||
                h2o_memis(v.base + start, end - start, etag, elen))
                return true;
        }
    }
    return false;
}

static int send_plain(h2o_req_t *req, int status, const char *reason, const char *text)
{
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    req->res.content_length = strlen(text);
    h2o_send_inline(req, text, strlen(text));
    return 0;
}

int qr_image_handle(worker_t *w, h2o_req_t *req, const char *rest, size_t len)
{
    bool head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    qr_params_t p;
    qr_bad_t bad;
    qr_image_t img;
    char content[QR_CONTENT_MAX], etag[36];

    if (!head && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                       H2O_STRLIT("GET, HEAD"));
        return send_plain(req, 405, "Method Not Allowed", "GET or HEAD only\n");
    }
    /* "{code}.png" or "{code}.svg": the extension is the format. */
    if (len < 5 || rest[len - 4] != '.')
        return send_plain(req, 404, "Not Found", "no such QR code\n");
    bool svg = h2o_memis(rest + len - 3, 3, H2O_STRLIT("svg"));
    if (!svg && !h2o_memis(rest + len - 3, 3, H2O_STRLIT("png")))
        return send_plain(req, 404, "Not Found", "no such QR code\n");
    size_t code_len = len - 4;
    if (!link_exists(w, rest, code_len))
        return send_plain(req, 404, "Not Found", "no such QR code\n");
    if (read_params(req, false, &p, &bad) != 0)
        return bad_params(req, &bad);
    p.svg = svg;

    scan_url(w->app, rest, code_len, content, sizeof(content));
    make_etag(content, &p, etag);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL,
                   h2o_strdup(&req->pool, etag, SIZE_MAX).base, strlen(etag));
    /* The image never changes for these parameters; a day of caching spares
     * us the drawing, and revalidation with the ETag costs one lookup. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("public, max-age=86400"));
    if (etag_matches(req, etag)) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        app_send_empty(req);
        return 0;
    }
    if (!render(&req->pool, content, &p, &img))
        return render_failed(req);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, img.type,
                   strlen(img.type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0,
                          NULL, H2O_STRLIT("nosniff"));
    req->res.content_length = img.len;
    h2o_send_inline(req, (const char *)img.body, img.len);
    return 0;
}
