/*
 * server/log: the one logger. One line per event on stderr: UTC time, level,
 * module tag and a sentence. Other layers return codes and messages; server/
 * decides what to log. Never pass a secret, a token or a full client address.
 */
#ifndef SHORTLINKD_LOG_H
#define SHORTLINKD_LOG_H

#include <stdbool.h>

typedef enum log_level {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
} log_level_t;

/* Sets the threshold; messages above it cost one comparison. */
void log_set_level(log_level_t level);
/* Parses "error", "warn", "info" or "debug"; false when unknown. */
bool log_parse_level(const char *s, log_level_t *out);
bool log_enabled(log_level_t level);

/* Writes one line; a '\n' or control byte in the message is replaced so an
 * event is always one line. */
void log_msg(log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adapter for layers that take a log callback (webhooks/). */
void log_webhooks(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(level, module, ...)                                                                 \
    do {                                                                                           \
        if (log_enabled(level))                                                                    \
            log_msg(level, module, __VA_ARGS__);                                                   \
    } while (0)

#endif
