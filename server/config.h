/*
 * server/config: command-line flags and their SHORTLINKD_* environment twins,
 * parsed and validated once before anything is served. The result is read-only
 * afterwards; request code never re-checks it.
 */
#ifndef SHORTLINKD_CONFIG_H
#define SHORTLINKD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "geoip.h"
#include "log.h"

#define CONFIG_MAX_CIDRS   64
#define CONFIG_MAX_RETRIES 16

typedef enum config_command {
    CONFIG_CMD_SERVE = 0,
    CONFIG_CMD_TOKEN_CREATE,
    CONFIG_CMD_TOKEN_LIST,
    CONFIG_CMD_TOKEN_REVOKE,
    CONFIG_CMD_BACKUP,
    CONFIG_CMD_HELP,
} config_command_t;

typedef struct config {
    config_command_t command;
    char listen_host[256];
    uint16_t listen_port;
    char tls_host[256]; /* "" when there is no TLS listener */
    uint16_t tls_port;
    char tls_cert[1024];
    char tls_key[1024];
    char data_dir[1024];
    char geoip_db[1024];  /* "" when none */
    bool geoip_optional;  /* run without countries when the database fails */
    char public_url[512]; /* without trailing slash */
    char domain[300];     /* host[:port] of public_url: the short domain */
    geoip_cidr_t trusted[CONFIG_MAX_CIDRS];
    size_t n_trusted;
    geoip_cidr_t webhook_allow[CONFIG_MAX_CIDRS];
    size_t n_webhook_allow;
    bool webhook_allow_unsafe; /* lets 0.0.0.0/0 and ::/0 through */
    uint16_t redirect_status;
    unsigned workers;
    unsigned flush_interval_ms;
    unsigned group_spacing_ms;
    unsigned queue_capacity; /* click ring slots */
    bool warm;               /* map the store into memory in the background at start */
    int writer_nice;         /* the storage writer thread's nice value */
    size_t map_size;
    uint32_t retry_delays_s[CONFIG_MAX_RETRIES];
    size_t n_retry_delays; /* 0: the dispatcher's default schedule */
    long webhook_connect_timeout_ms;
    long webhook_timeout_ms;
    unsigned webhook_max_in_flight;          /* 0: the dispatcher's default */
    unsigned webhook_max_per_endpoint;       /* 0: the dispatcher's default */
    unsigned webhook_deactivate_after_hours; /* 0: the dispatcher's default */

    size_t max_body; /* request body limit in bytes */
    log_level_t log_level;
    char admin_token_file[1100];
    /* token and backup subcommands */
    char token_name[128];
    char token_id[128];
    char backup_dir[1024];
} config_t;

/* Parses argv and the environment into cfg. On error writes a sentence into err
 * and returns -1. */
int config_parse(config_t *cfg, int argc, char **argv, char *err, size_t errlen);
/* Prints the flags and their environment twins. */
void config_usage(FILE *out);

#endif
