/*
 * webhooks/ internals shared between its files: allocation wrappers, the
 * connect-time address rule, and time helpers. Nothing here is public.
 */
#ifndef SHORTLINKD_WEBHOOKS_INTERNAL_H
#define SHORTLINKD_WEBHOOKS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "webhooks.h"

/* Out of memory is not recoverable here: these abort naming the call site. */
#define webhook__malloc(n)     webhook__xmalloc((n), __FILE__, __LINE__)
#define webhook__calloc(n, sz) webhook__xcalloc((n), (sz), __FILE__, __LINE__)
#define webhook__strdup(s)     webhook__xstrndup((s), SIZE_MAX, __FILE__, __LINE__)
#define webhook__strndup(s, n) webhook__xstrndup((s), (n), __FILE__, __LINE__)
#define webhook__realloc(p, n) webhook__xrealloc((p), (n), __FILE__, __LINE__)

void *webhook__xmalloc(size_t n, const char *file, int line);
void *webhook__xcalloc(size_t n, size_t size, const char *file, int line);
void *webhook__xrealloc(void *p, size_t n, const char *file, int line);
/* Copies at most n bytes of s and terminates the copy; NULL gives NULL. */
char *webhook__xstrndup(const char *s, size_t n, const char *file, int line);

/* Whether the dispatcher may connect to this address under the policy. When it
 * may not, why receives a sentence naming the address and its range. */
bool webhook__addr_allowed(const struct sockaddr *sa, const webhook_net_policy_t *policy, char *why,
                           size_t whylen);

/* Wall-clock time in microseconds since the Unix epoch. */
int64_t webhook__now_us(void);

/* The origin of an http(s) URL, "scheme://host:port" lowercased with the
 * default port filled in, into out; false when the URL does not parse. Used
 * to group deliveries per endpoint. */
bool webhook__url_host(const char *url, char *out, size_t outlen);

#endif
