/*
 * web/: the settings page assets, compiled into the binary from web/assets/.
 * Nothing here allocates; every pointer handed out is static and lives for the
 * whole process.
 */
#ifndef SHORTLINKD_WEB_H
#define SHORTLINKD_WEB_H

#include <stddef.h>

typedef struct web_asset {
    const char *name; /* file name under web/assets, e.g. "index.html" */
    const unsigned char *data;
    size_t size;
} web_asset_t;

/* The generated table, terminated by an entry whose name is NULL. */
extern const web_asset_t web_assets[];

/* Finds an asset by file name; NULL when there is none. */
const web_asset_t *web_asset_find(const char *name, size_t len);

/* The Content-Type for an asset name, from its extension. */
const char *web_content_type(const char *name);

#endif
