/*
 * server/qr: QR codes of links (libqrencode, libpng), as Bitly's JSON with a
 * data URI and as a public image for <img> tags.
 */
#include "api.h"

int api_qr(api_request_t *r)
{
    /* TODO: QR codes are not built yet (libqrencode, PNG and SVG). */
    return api_not_found(r, "qr");
}

int qr_image_handle(worker_t *w, h2o_req_t *req, const char *rest, size_t len)
{
    (void)w;
    (void)rest;
    (void)len;
    /* TODO: public QR images are not built yet. */
    return -1;
}
