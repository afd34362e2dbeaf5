/*
 * server/bio: link-in-bio pages: a page per handle with ordered buttons, each a
 * link whose taps count as bio_click engagements.
 */
#include "api.h"

int api_bio(api_request_t *r)
{
    /* TODO: link-in-bio pages are not built yet. */
    return api_not_found(r, "bio_pages");
}

int bio_page_handle(worker_t *w, h2o_req_t *req, const char *rest, size_t len)
{
    (void)w;
    (void)rest;
    (void)len;
    /* TODO: link-in-bio pages are not built yet. */
    return -1;
}
