/*
 * server/config: flags, environment twins, validation. Each flag --name has the
 * twin SHORTLINKD_NAME (dashes become underscores); a flag given on the command
 * line wins over its twin. Repeatable flags take a comma-separated twin.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

enum {
    OPT_LISTEN = 256,
    OPT_TLS_LISTEN,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_DATA_DIR,
    OPT_GEOIP_DB,
    OPT_GEOIP_OPTIONAL,
    OPT_PUBLIC_URL,
    OPT_TRUSTED_PROXY,
    OPT_WEBHOOK_ALLOW_CIDR,
    OPT_WEBHOOK_ALLOW_UNSAFE,
    OPT_REDIRECT_STATUS,
    OPT_WORKERS,
    OPT_FLUSH_INTERVAL_MS,
    OPT_GROUP_SPACING_MS,
    OPT_MAP_SIZE_MB,
    OPT_QUEUE_CAPACITY,
    OPT_NO_WARM,
    OPT_WRITER_NICE,
    OPT_RETRY_DELAYS,
    OPT_CONNECT_TIMEOUT,
    OPT_TIMEOUT,
    OPT_MAX_IN_FLIGHT,
    OPT_MAX_PER_ENDPOINT,
    OPT_DEACTIVATE_AFTER,
    OPT_MAX_BODY,
    OPT_LOG_LEVEL,
    OPT_ADMIN_TOKEN_FILE,
    OPT_NAME,
    OPT_ID,
    OPT_TO,
    OPT_HELP,
};

typedef struct flag {
    const char *name;
    int id;
    bool has_arg;
    const char *help;
} flag_t;

static const flag_t flags[] = {
    {"listen", OPT_LISTEN, true, "HOST:PORT to serve HTTP on (127.0.0.1:8080)"},
    {"tls-listen", OPT_TLS_LISTEN, true, "HOST:PORT to serve HTTPS (HTTP/1.1 and HTTP/2) on"},
    {"tls-cert", OPT_TLS_CERT, true, "PEM certificate chain for --tls-listen"},
    {"tls-key", OPT_TLS_KEY, true, "PEM private key for --tls-listen"},
    {"data-dir", OPT_DATA_DIR, true, "directory of the LMDB store (./var/data)"},
    {"geoip-db", OPT_GEOIP_DB, true, "MaxMind-format country database (none: no countries)"},
    {"geoip-optional", OPT_GEOIP_OPTIONAL, false,
     "start without countries when the database is missing or broken"},
    {"public-url", OPT_PUBLIC_URL, true,
     "base URL of short links; its host is the short domain (http://LISTEN)"},
    {"trusted-proxy", OPT_TRUSTED_PROXY, true,
     "CIDR whose X-Forwarded-For is believed (repeatable)"},
    {"webhook-allow-cidr", OPT_WEBHOOK_ALLOW_CIDR, true,
     "private range webhooks may reach (repeatable)"},
    {"webhook-allow-unsafe", OPT_WEBHOOK_ALLOW_UNSAFE, false,
     "accept 0.0.0.0/0 or ::/0 in --webhook-allow-cidr"},
    {"redirect-status", OPT_REDIRECT_STATUS, true, "301, 302, 307 or 308 (302)"},
    {"workers", OPT_WORKERS, true, "HTTP worker threads (one per core)"},
    {"flush-interval-ms", OPT_FLUSH_INTERVAL_MS, true,
     "longest wait before a group of clicks is committed (2)"},
    {"group-spacing-ms", OPT_GROUP_SPACING_MS, true,
     "least time between two group commits while clicks keep coming (10; 0 for none)"},
    {"map-size-mb", OPT_MAP_SIZE_MB, true, "LMDB map size in MiB (65536, sparse)"},
    {"queue-capacity", OPT_QUEUE_CAPACITY, true,
     "clicks waiting for the writer: past half, redirects wait for it; past all, new clicks "
     "are dropped and counted (65536)"},
    {"writer-nice", OPT_WRITER_NICE, true,
     "how much nicer than the workers the storage writer thread runs, 0 to 19, so that it "
     "leaves a shared core to redirects (5)"},
    {"no-warm", OPT_NO_WARM, false,
     "do not map the whole store into memory in the background at start"},
    {"webhook-retry-delays", OPT_RETRY_DELAYS, true,
     "seconds before each retry, comma-separated (5,300,1800,7200,18000,36000,36000)"},
    {"webhook-connect-timeout-ms", OPT_CONNECT_TIMEOUT, true, "webhook connect timeout (5000)"},
    {"webhook-timeout-ms", OPT_TIMEOUT, true, "webhook attempt timeout in all (15000)"},
    {"webhook-max-in-flight", OPT_MAX_IN_FLIGHT, true, "webhook requests under way at once (256)"},
    {"webhook-max-per-endpoint", OPT_MAX_PER_ENDPOINT, true,
     "webhook requests under way at once to one origin (8)"},
    {"webhook-deactivate-after-hours", OPT_DEACTIVATE_AFTER, true,
     "deactivate a webhook failing this long without one success (120)"},
    {"max-body", OPT_MAX_BODY, true, "largest API request body in bytes (262144)"},
    {"log-level", OPT_LOG_LEVEL, true, "error, warn, info or debug (info)"},
    {"admin-token-file", OPT_ADMIN_TOKEN_FILE, true,
     "where the first start writes the admin token (DATA_DIR/admin-token)"},
    {"name", OPT_NAME, true, "token create: a name for the token"},
    {"id", OPT_ID, true, "token revoke: the token's id from token list"},
    {"to", OPT_TO, true, "backup: an empty directory for the copy"},
    {"help", OPT_HELP, false, "this text"},
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

void config_usage(FILE *out)
{
    fprintf(out, "usage: shortlinkd [serve] [flags]\n"
                 "       shortlinkd token create --data-dir DIR --name NAME\n"
                 "       shortlinkd token list --data-dir DIR\n"
                 "       shortlinkd token revoke --data-dir DIR --id ID\n"
                 "       shortlinkd backup --data-dir DIR --to EMPTY_DIR\n\nflags:\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        char env[64] = "SHORTLINKD_";
        size_t n = strlen(env);

        for (const char *p = flags[i].name; *p != '\0' && n + 1 < sizeof(env); p++)
            env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[n] = '\0';
        bool no_twin = flags[i].id == OPT_HELP || flags[i].id == OPT_NAME ||
                       flags[i].id == OPT_ID || flags[i].id == OPT_TO;
        fprintf(out, "  --%s%s\n      %s%s%s%s\n", flags[i].name, flags[i].has_arg ? " VALUE" : "",
                flags[i].help, no_twin ? "" : " [", no_twin ? "" : env, no_twin ? "" : "]");
    }
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static bool copy_str(char *dst, size_t dstlen, const char *src)
{
    size_t n = strlen(src);

    if (n >= dstlen)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

static bool parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    /* strtoul would take leading spaces and a sign: a number is digits. */
    if (!isdigit((unsigned char)s[0]) || errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int parse_host_port(char *host_out, size_t host_len, uint16_t *port_out, const char *flag,
                           const char *v, char *err, size_t errlen)
{
    const char *colon = strrchr(v, ':');
    unsigned long port;

    if (colon == NULL || colon == v || !parse_ulong(colon + 1, 1, 65535, &port))
        return fail(err, errlen, "%s %s: expected HOST:PORT", flag, v);
    const char *host = v;
    size_t hlen = (size_t)(colon - v);
    if (host[0] == '[' && hlen >= 2 && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    if (hlen >= host_len)
        return fail(err, errlen, "%s %s: host too long", flag, v);
    memcpy(host_out, host, hlen);
    host_out[hlen] = '\0';
    *port_out = (uint16_t)port;
    return 0;
}

static int add_cidrs(geoip_cidr_t *list, size_t *n, const char *v, const char *flag, char *err,
                     size_t errlen)
{
    char buf[1024];

    if (!copy_str(buf, sizeof(buf), v))
        return fail(err, errlen, "%s: value too long", flag);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", ", &save); tok != NULL; tok = strtok_r(NULL, ", ", &save)) {
        if (*n == CONFIG_MAX_CIDRS)
            return fail(err, errlen, "%s: too many ranges", flag);
        if (!geoip_cidr_parse(&list[*n], tok)) {
            snprintf(err, errlen, "%s %s: not an address or CIDR range", flag, tok);
            return -1;
        }
        (*n)++;
    }
    return 0;
}

static int parse_delays(config_t *cfg, const char *v, char *err, size_t errlen)
{
    char buf[512];
    unsigned long d;

    if (!copy_str(buf, sizeof(buf), v))
        return fail(err, errlen, "--webhook-retry-delays: %s", "value too long");
    cfg->n_retry_delays = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", ", &save); tok != NULL; tok = strtok_r(NULL, ", ", &save)) {
        if (cfg->n_retry_delays == CONFIG_MAX_RETRIES || !parse_ulong(tok, 0, 86400 * 7, &d))
            return fail(err, errlen, "--webhook-retry-delays %s: expected up to 16 seconds values",
                        v);
        cfg->retry_delays_s[cfg->n_retry_delays++] = (uint32_t)d;
    }
    return 0;
}

static int apply(config_t *cfg, int id, const char *v, char *err, size_t errlen)
{
    unsigned long n;

    switch (id) {
    case OPT_LISTEN:
        return parse_host_port(cfg->listen_host, sizeof(cfg->listen_host), &cfg->listen_port,
                               "--listen", v, err, errlen);
    case OPT_TLS_LISTEN:
        return parse_host_port(cfg->tls_host, sizeof(cfg->tls_host), &cfg->tls_port, "--tls-listen",
                               v, err, errlen);
    case OPT_TLS_CERT:
        if (!copy_str(cfg->tls_cert, sizeof(cfg->tls_cert), v))
            return fail(err, errlen, "--tls-cert %s: too long", v);
        return 0;
    case OPT_TLS_KEY:
        if (!copy_str(cfg->tls_key, sizeof(cfg->tls_key), v))
            return fail(err, errlen, "--tls-key %s: too long", v);
        return 0;
    case OPT_DATA_DIR:
        if (!copy_str(cfg->data_dir, sizeof(cfg->data_dir), v) || v[0] == '\0')
            return fail(err, errlen, "--data-dir %s: empty or too long", v);
        return 0;
    case OPT_GEOIP_DB:
        if (!copy_str(cfg->geoip_db, sizeof(cfg->geoip_db), v))
            return fail(err, errlen, "--geoip-db %s: too long", v);
        return 0;
    case OPT_GEOIP_OPTIONAL:
        cfg->geoip_optional = true;
        return 0;
    case OPT_WRITER_NICE:
        if (!parse_ulong(v, 0, 19, &n))
            return fail(err, errlen, "--writer-nice %s: expected 0 to 19", v);
        cfg->writer_nice = (int)n;
        return 0;
    case OPT_NO_WARM:
        cfg->warm = false;
        return 0;
    case OPT_PUBLIC_URL:
        if (!copy_str(cfg->public_url, sizeof(cfg->public_url), v))
            return fail(err, errlen, "--public-url %s: too long", v);
        return 0;
    case OPT_TRUSTED_PROXY:
        return add_cidrs(cfg->trusted, &cfg->n_trusted, v, "--trusted-proxy", err, errlen);
    case OPT_WEBHOOK_ALLOW_CIDR:
        return add_cidrs(cfg->webhook_allow, &cfg->n_webhook_allow, v, "--webhook-allow-cidr", err,
                         errlen);
    case OPT_WEBHOOK_ALLOW_UNSAFE:
        cfg->webhook_allow_unsafe = true;
        return 0;
    case OPT_REDIRECT_STATUS:
        if (!parse_ulong(v, 301, 308, &n) || !(n == 301 || n == 302 || n == 307 || n == 308))
            return fail(err, errlen, "--redirect-status %s: expected 301, 302, 307 or 308", v);
        cfg->redirect_status = (uint16_t)n;
        return 0;
    case OPT_WORKERS:
        if (!parse_ulong(v, 1, 256, &n))
            return fail(err, errlen, "--workers %s: expected 1 to 256", v);
        cfg->workers = (unsigned)n;
        return 0;
    case OPT_FLUSH_INTERVAL_MS:
        if (!parse_ulong(v, 1, 10000, &n))
            return fail(err, errlen, "--flush-interval-ms %s: expected 1 to 10000", v);
        cfg->flush_interval_ms = (unsigned)n;
        return 0;
    case OPT_GROUP_SPACING_MS:
        if (!parse_ulong(v, 0, 10000, &n))
            return fail(err, errlen, "--group-spacing-ms %s: expected 0 to 10000", v);
        cfg->group_spacing_ms = (unsigned)n;
        return 0;
    case OPT_MAP_SIZE_MB:
        if (!parse_ulong(v, 1, 1ul << 24, &n))
            return fail(err, errlen, "--map-size-mb %s: expected 1 to 16777216", v);
        cfg->map_size = (size_t)n << 20;
        return 0;
    case OPT_QUEUE_CAPACITY:
        if (!parse_ulong(v, 1024, 1ul << 22, &n))
            return fail(err, errlen, "--queue-capacity %s: expected 1024 to 4194304", v);
        cfg->queue_capacity = (unsigned)n;
        return 0;
    case OPT_RETRY_DELAYS:
        return parse_delays(cfg, v, err, errlen);
    case OPT_CONNECT_TIMEOUT:
        if (!parse_ulong(v, 1, 600000, &n))
            return fail(err, errlen, "--webhook-connect-timeout-ms %s: expected 1 to 600000", v);
        cfg->webhook_connect_timeout_ms = (long)n;
        return 0;
    case OPT_TIMEOUT:
        if (!parse_ulong(v, 1, 600000, &n))
            return fail(err, errlen, "--webhook-timeout-ms %s: expected 1 to 600000", v);
        cfg->webhook_timeout_ms = (long)n;
        return 0;
    case OPT_MAX_IN_FLIGHT:
        if (!parse_ulong(v, 1, 65536, &n))
            return fail(err, errlen, "--webhook-max-in-flight %s: expected 1 to 65536", v);
        cfg->webhook_max_in_flight = (unsigned)n;
        return 0;
    case OPT_MAX_PER_ENDPOINT:
        if (!parse_ulong(v, 1, 65536, &n))
            return fail(err, errlen, "--webhook-max-per-endpoint %s: expected 1 to 65536", v);
        cfg->webhook_max_per_endpoint = (unsigned)n;
        return 0;
    case OPT_DEACTIVATE_AFTER:
        if (!parse_ulong(v, 1, 24 * 365, &n))
            return fail(err, errlen, "--webhook-deactivate-after-hours %s: expected 1 to 8760", v);
        cfg->webhook_deactivate_after_hours = (unsigned)n;
        return 0;
    case OPT_MAX_BODY:
        if (!parse_ulong(v, 1024, 64ul << 20, &n))
            return fail(err, errlen, "--max-body %s: expected 1024 to 67108864", v);
        cfg->max_body = (size_t)n;
        return 0;
    case OPT_LOG_LEVEL:
        if (!log_parse_level(v, &cfg->log_level))
            return fail(err, errlen, "--log-level %s: expected error, warn, info or debug", v);
        return 0;
    case OPT_ADMIN_TOKEN_FILE:
        if (!copy_str(cfg->admin_token_file, sizeof(cfg->admin_token_file), v))
            return fail(err, errlen, "--admin-token-file %s: too long", v);
        return 0;
    case OPT_NAME:
        if (!copy_str(cfg->token_name, sizeof(cfg->token_name), v) || v[0] == '\0')
            return fail(err, errlen, "--name %s: empty or longer than 127 bytes", v);
        /* `token list` prints one token per line, tab-separated. */
        for (const char *p = v; *p != '\0'; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return fail(err, errlen, "--name: %s", "control characters are not allowed");
        }
        return 0;
    case OPT_ID:
        if (!copy_str(cfg->token_id, sizeof(cfg->token_id), v))
            return fail(err, errlen, "--id %s: too long", v);
        return 0;
    case OPT_TO:
        if (!copy_str(cfg->backup_dir, sizeof(cfg->backup_dir), v))
            return fail(err, errlen, "--to %s: too long", v);
        return 0;
    case OPT_HELP:
        cfg->command = CONFIG_CMD_HELP;
        return 0;
    }
    return fail(err, errlen, "unknown option %s", v);
}

static void set_defaults(config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    copy_str(cfg->listen_host, sizeof(cfg->listen_host), "127.0.0.1");
    cfg->listen_port = 8080;
    copy_str(cfg->data_dir, sizeof(cfg->data_dir), "./var/data");
    cfg->redirect_status = 302;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cores > 0 && cores < 256 ? (unsigned)cores : 1;
    cfg->flush_interval_ms = 2;
    cfg->group_spacing_ms = 10;
    cfg->queue_capacity = 65536;
    cfg->warm = true;
    cfg->writer_nice = 5;
    cfg->map_size = (size_t)64 << 30;
    /* Well above the longest long_url (PARSE_URL_MAX, 96 KiB when written
     * all in \u escapes), so that a URL past its limit is told so by a 400
     * naming long_url rather than a 413 about the body. */
    cfg->max_body = 256 * 1024;
    cfg->log_level = LOG_INFO;
}

/* Applies the environment twins of the flags the command line does not give
 * (given[i] for flags[i]); a bad value is reported under the variable's name. */
static int apply_environment(config_t *cfg, const bool *given, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_FLAGS; i++) {
        char env[64] = "SHORTLINKD_", why[384];
        size_t n = strlen(env);

        if (given[i] || flags[i].id == OPT_HELP || flags[i].id == OPT_NAME ||
            flags[i].id == OPT_ID || flags[i].id == OPT_TO)
            continue;
        for (const char *p = flags[i].name; *p != '\0' && n + 1 < sizeof(env); p++)
            env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[n] = '\0';
        const char *v = getenv(env);
        if (v == NULL || v[0] == '\0')
            continue;
        if (!flags[i].has_arg && (strcmp(v, "0") == 0 || strcmp(v, "false") == 0))
            continue;
        if (apply(cfg, flags[i].id, v, why, sizeof(why)) != 0)
            return fail(err, errlen, "%s (from %s)", why, env);
    }
    return 0;
}

/* Derives what the flags imply, and checks combinations. */
static int finish(config_t *cfg, char *err, size_t errlen)
{
    if (cfg->public_url[0] == '\0') {
        bool v6 = strchr(cfg->listen_host, ':') != NULL;
        snprintf(cfg->public_url, sizeof(cfg->public_url), "http://%s%s%s:%u", v6 ? "[" : "",
                 cfg->listen_host, v6 ? "]" : "", cfg->listen_port);
    }
    size_t n = strlen(cfg->public_url);
    while (n > 0 && cfg->public_url[n - 1] == '/')
        cfg->public_url[--n] = '\0';
    const char *host = NULL;
    if (strncmp(cfg->public_url, "http://", 7) == 0)
        host = cfg->public_url + 7;
    else if (strncmp(cfg->public_url, "https://", 8) == 0)
        host = cfg->public_url + 8;
    if (host == NULL || *host == '\0' || strchr(host, '/') != NULL || strchr(host, '?') != NULL)
        return fail(err, errlen, "--public-url %s: expected http(s)://HOST[:PORT] with no path",
                    cfg->public_url);
    copy_str(cfg->domain, sizeof(cfg->domain), host);
    for (char *p = cfg->domain; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);

    for (size_t i = 0; i < cfg->n_webhook_allow; i++) {
        const geoip_cidr_t *c = &cfg->webhook_allow[i];
        /* Every special range is a /8 (IPv4) or a /7 (IPv6) or narrower: a
         * wider allowance opens much more than private networks. */
        unsigned widest = c->addr.family == AF_INET ? 8 : 7;
        if (c->prefix < widest && !cfg->webhook_allow_unsafe)
            return fail(err, errlen, "--webhook-allow-cidr: %s",
                        "a range wider than /8 (IPv4) or /7 (IPv6), such as 0.0.0.0/0, "
                        "opens every private range at once; add --webhook-allow-unsafe to "
                        "mean it");
    }
    if (cfg->tls_host[0] != '\0' && (cfg->tls_cert[0] == '\0' || cfg->tls_key[0] == '\0'))
        return fail(err, errlen, "--tls-listen: %s", "needs --tls-cert and --tls-key");
    if (cfg->admin_token_file[0] == '\0')
        snprintf(cfg->admin_token_file, sizeof(cfg->admin_token_file), "%s/admin-token",
                 cfg->data_dir);
    return 0;
}

static int parse_command(config_t *cfg, int *argc, char ***argv, char *err, size_t errlen)
{
    if (*argc < 2 || (*argv)[1][0] == '-')
        return 0;
    const char *c = (*argv)[1];
    int used = 1;
    if (strcmp(c, "serve") == 0) {
        cfg->command = CONFIG_CMD_SERVE;
    } else if (strcmp(c, "backup") == 0) {
        cfg->command = CONFIG_CMD_BACKUP;
    } else if (strcmp(c, "help") == 0) {
        cfg->command = CONFIG_CMD_HELP;
    } else if (strcmp(c, "token") == 0 && *argc >= 3) {
        const char *sub = (*argv)[2];
        used = 2;
        if (strcmp(sub, "create") == 0)
            cfg->command = CONFIG_CMD_TOKEN_CREATE;
        else if (strcmp(sub, "list") == 0)
            cfg->command = CONFIG_CMD_TOKEN_LIST;
        else if (strcmp(sub, "revoke") == 0)
            cfg->command = CONFIG_CMD_TOKEN_REVOKE;
        else
            return fail(err, errlen, "token %s: expected create, list or revoke", sub);
    } else {
        return fail(err, errlen, "%s: unknown command (serve, token, backup)", c);
    }
    /* Shift the command words off so getopt sees flags only. */
    (*argv)[used] = (*argv)[0];
    *argv += used;
    *argc -= used;
    return 0;
}

int config_parse(config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    struct option longopts[N_FLAGS + 1];

    bool given[N_FLAGS] = {false};
    int c, at;

    set_defaults(cfg);
    if (parse_command(cfg, &argc, &argv, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < N_FLAGS; i++) {
        longopts[i] = (struct option){flags[i].name, flags[i].has_arg ? required_argument : 0, NULL,
                                      flags[i].id};
    }
    longopts[N_FLAGS] = (struct option){NULL, 0, NULL, 0};
    opterr = 0;
    /* First the flags given, so that the command line overrides the
     * environment: a twin of a flag given is not even read. */
    optind = 1;
    bool help = cfg->command == CONFIG_CMD_HELP;
    while ((c = getopt_long(argc, argv, "h", longopts, &at)) != -1) {
        if (c == 'h' || c == OPT_HELP)
            help = true;
        else if (c != '?' && c != ':')
            given[at] = true;
    }
    config_command_t command = cfg->command;
    if (!help && apply_environment(cfg, given, err, errlen) != 0)
        return -1;
    cfg->command = command;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'h') {
            cfg->command = CONFIG_CMD_HELP;
            continue;
        }
        if (c == '?' || c == ':') {
            const char *bad = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
            return fail(err, errlen, "%s: unknown flag or missing value (see --help)", bad);
        }
        if (apply(cfg, c, optarg, err, errlen) != 0)
            return -1;
    }
    if (optind < argc)
        return fail(err, errlen, "%s: unexpected argument (see --help)", argv[optind]);
    if (cfg->command == CONFIG_CMD_HELP)
        return 0;
    if (cfg->command == CONFIG_CMD_TOKEN_CREATE && cfg->token_name[0] == '\0')
        return fail(err, errlen, "token create: %s", "--name NAME is required");
    if (cfg->command == CONFIG_CMD_TOKEN_REVOKE && cfg->token_id[0] == '\0')
        return fail(err, errlen, "token revoke: %s", "--id ID is required");
    if (cfg->command == CONFIG_CMD_BACKUP && cfg->backup_dir[0] == '\0')
        return fail(err, errlen, "backup: %s", "--to DIR is required");
    return finish(cfg, err, errlen);
}
