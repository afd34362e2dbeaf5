/* server/query: query string parameters, decoded into the caller's buffer. */
#include <string.h>

#include "query.h"

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

h2o_iovec_t query_raw(const h2o_req_t *req)
{
    if (req->query_at == SIZE_MAX)
        return h2o_iovec_init("", 0);
    return h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
}

/* Decodes [p, stop) into out; false when it does not fit or is malformed. */
static bool decode(const char *p, const char *stop, char *out, size_t outlen)
{
    size_t n = 0;

    for (; p < stop; p++) {
        char c = *p;
        if (c == '%') {
            if (stop - p < 3 || hex_value(p[1]) < 0 || hex_value(p[2]) < 0)
                return false;
            c = (char)(hex_value(p[1]) * 16 + hex_value(p[2]));
            p += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == '\0' || n + 1 >= outlen)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    return true;
}

int query_get(const h2o_req_t *req, const char *name, size_t nth, char *out, size_t outlen)
{
    h2o_iovec_t q = query_raw(req);
    const char *p = q.base, *end = q.base + q.len;
    size_t nlen = strlen(name);

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;
        if ((size_t)(stop - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            if (nth == 0)
                return decode(p + nlen + 1, stop, out, outlen) ? QUERY_FOUND : QUERY_BAD;
            nth--;
        }
        p = stop + 1;
    }
    return QUERY_ABSENT;
}

int query_get_set(const h2o_req_t *req, const char *name, char *out, size_t outlen)
{
    int rc = query_get(req, name, 0, out, outlen);

    return rc == QUERY_FOUND && out[0] == '\0' ? QUERY_ABSENT : rc;
}
