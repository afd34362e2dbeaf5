/*
 * server/openapi: the OpenAPI document of the /v4 routes we serve.
 */
#include "api.h"

int api_openapi(worker_t *w, h2o_req_t *req)
{
    (void)w;
    /* TODO: the OpenAPI document is not written yet. */
    return api_error(req, 404, "NOT_FOUND", "No OpenAPI document yet.", "", NULL, NULL);
}
