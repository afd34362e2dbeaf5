/*
 * shortlinkd: a link shortener with click webhooks, in one binary.
 * main parses the command line and hands over to the subcommand.
 */
#include <stdio.h>

#include "app.h"
#include "config.h"
#include "log.h"

int main(int argc, char **argv)
{
    static config_t cfg;
    char err[512];

    if (config_parse(&cfg, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "shortlinkd: %s\n", err);
        return 2;
    }
    log_set_level(cfg.log_level);
    switch (cfg.command) {
    case CONFIG_CMD_HELP:
        config_usage(stdout);
        return 0;
    case CONFIG_CMD_TOKEN_CREATE:
    case CONFIG_CMD_TOKEN_LIST:
    case CONFIG_CMD_TOKEN_REVOKE:
        return token_command(&cfg);
    case CONFIG_CMD_BACKUP:
        return backup_command(&cfg);
    case CONFIG_CMD_SERVE:
        break;
    }
    return server_run(&cfg);
}
