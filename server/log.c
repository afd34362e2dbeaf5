/* server/log: one line per event, to stderr. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static volatile int threshold = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(log_level_t level)
{
    threshold = level;
}

bool log_enabled(log_level_t level)
{
    return (int)level <= threshold;
}

bool log_parse_level(const char *s, log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (log_level_t)i;
            return true;
        }
    }
    return false;
}

__attribute__((format(printf, 3, 0))) static void vlog(int level, const char *module,
                                                       const char *fmt, va_list ap)
{
    char line[1024], msg[900];
    struct timeval tv;
    struct tm tm;

    if (level > threshold)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    vsnprintf(msg, sizeof(msg), fmt, ap);

    /* One event, one line: neutralise anything that would break it. */
    for (char *p = msg; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    }
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), level_names[level], module, msg);
    if (n > (int)sizeof(line))
        n = sizeof(line);
    /* A single write keeps lines from different threads whole. */
    ssize_t rc = write(STDERR_FILENO, line, (size_t)n);
    (void)rc;
}

void log_msg(log_level_t level, const char *module, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, module, fmt, ap);
    va_end(ap);
}

void log_webhooks(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, "webhooks", fmt, ap);
    va_end(ap);
}
