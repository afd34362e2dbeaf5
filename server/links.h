/*
 * server/links: the link routes that hang off a group, called from the group
 * routing in account.c. Internal to server/.
 */
#ifndef SHORTLINKD_LINKS_H
#define SHORTLINKD_LINKS_H

#include "api.h"

/* GET /v4/groups/{guid}/bitlinks: size, page, keyword, query, archived, tags
 * filters, newest first, with Bitly's pagination object. */
int links_group_bitlinks(api_request_t *r);
/* GET /v4/groups/{guid}/tags: every tag used in the group, sorted. */
int links_group_tags(api_request_t *r);

#endif
