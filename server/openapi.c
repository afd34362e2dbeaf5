/*
 * server/openapi: GET /v4/openapi.json, the OpenAPI 3 document of the /v4 routes
 * we serve. The document is web/assets/openapi.json, embedded at build time and
 * kept true by tests/integration/api_openapi.test.mjs; only its server URL is
 * filled in here, since that depends on --public-url.
 */
#include "api.h"
#include "web.h"

int api_openapi(worker_t *w, h2o_req_t *req)
{
    const web_asset_t *asset = web_asset_find("openapi.json", 12);
    json_t *doc =
        asset != NULL ? json_loadb((const char *)asset->data, asset->size, 0, NULL) : NULL;

    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        json_decref(doc);
        return api_error(req, 405, "METHOD_NOT_ALLOWED", "This route does not take that method.",
                         "", NULL, NULL);
    }
    /* The build embeds the file and a test parses it, so this is our mistake,
     * not the client's. */
    if (doc == NULL)
        return api_error(req, 500, "INTERNAL_ERROR", "The OpenAPI document is missing or broken.",
                         "", NULL, NULL);
    json_object_set_new(doc, "servers", json_pack("[{s:s}]", "url", w->app->cfg->public_url));
    return api_reply(req, 200, doc);
}
