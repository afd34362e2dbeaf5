/*
 * webhooks/util.c: the allocation wrappers and clock shared by the webhooks
 * layer. Running out of memory is treated as fatal, so callers never carry an
 * allocation-failure path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "webhooks_internal.h"

static void die_oom(size_t n, const char *file, int line)
{
    /* The one place webhooks/ writes to stderr: the process is about to abort
     * and no logger can be trusted to allocate. */
    fprintf(stderr, "shortlinkd: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *webhook__xmalloc(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        die_oom(n, file, line);
    return p;
}

void *webhook__xcalloc(size_t n, size_t size, const char *file, int line)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        die_oom(n * size, file, line);
    return p;
}

void *webhook__xrealloc(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        die_oom(n, file, line);
    return q;
}

char *webhook__xstrndup(const char *s, size_t n, const char *file, int line)
{
    if (s == NULL)
        return NULL;

    size_t len = strnlen(s, n);
    char *copy = webhook__xmalloc(len + 1, file, line);

    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

int64_t webhook__now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
