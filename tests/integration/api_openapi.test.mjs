// The OpenAPI document at /v4/openapi.json (issue 3), kept true both ways:
// every path it lists answers something other than a route 404 from the
// running server, and every /v4 route that the test suite calls is listed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { request, startReceiver, startServer } from '../lib/harness.mjs';

const TESTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Routes that tests call on purpose to see the 404 of a route we do not have.
const NOT_ROUTES = new Set(['/v4/nonexistent', '/v4/nothing', '/v4/bitlinks/bit.ly/abcdefg/unknown']);
const METHODS = ['get', 'post', 'patch', 'put', 'delete'];
let server;
let receiver;
let doc;

before(async () => {
  receiver = await startReceiver();
  server = await startServer({ args: ['--webhook-allow-cidr', '127.0.0.0/8'] });
  const res = await request(`${server.base}/v4/openapi.json`);
  assert.equal(res.status, 200, res.body);
  doc = res.json();
});
after(async () => {
  await server?.stop();
  await receiver?.close();
});

// A template path as a regex: {param} is one segment, except that a bitlink
// id (domain/hash) is written in tests as one ${...} standing for two.
const templateRegex = (p) => new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`);

test('api_openapi_document_is_public_and_well_formed', async () => {
  assert.match(doc.openapi, /^3\.0\.\d$/);
  assert.deepEqual(doc.servers, [{ url: server.base }]);
  assert.equal(doc.components.securitySchemes.bearer.scheme, 'bearer');
  const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
  for (const r of refs) {
    const target = r.slice(9, -1).split('/').slice(1).reduce((o, k) => o?.[k], doc);
    assert.ok(target, `${r} resolves`);
  }
  for (const [p, ops] of Object.entries(doc.paths)) {
    assert.ok(p.startsWith('/v4/'), p);
    for (const [m, o] of Object.entries(ops)) {
      assert.ok(METHODS.includes(m), `${m} ${p}`);
      assert.ok(o.operationId && o.summary && Object.keys(o.responses).length > 0, `${m} ${p}`);
      const declared = (o.parameters ?? []).map((x) => (x.$ref ? doc.components.parameters[x.$ref.split('/').pop()] : x))
        .filter((x) => x.in === 'path').map((x) => x.name).sort();
      assert.deepEqual(declared, [...p.matchAll(/\{([^}]+)\}/g)].map((x) => x[1]).sort(), `path parameters of ${m} ${p}`);
    }
  }
  // The error body every route shares.
  assert.deepEqual(doc.components.schemas.Error.required, ['message', 'description', 'resource', 'errors']);
});

test('api_openapi_every_documented_route_is_served', async () => {
  const user = (await server.api('GET', '/v4/user')).json();
  const org = (await server.api('GET', '/v4/organizations')).json().organizations[0].guid;
  const link = (await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/doc', tags: ['t'] })).json();
  const hook = await server.api('POST', '/v4/webhooks', { name: 'doc', url: receiver.url, group_guid: user.default_group_guid, is_active: false });
  assert.equal(hook.status, 201, hook.body);
  const bio = await server.api('POST', '/v4/bio_pages', { handle: 'doc-page', title: 'Doc' });
  assert.equal(bio.status, 201, bio.body);
  // A real delivery for the routes that name one: a test event sent now.
  const verify = await server.api('POST', `/v4/webhooks/${hook.json().guid}/verify`);
  assert.equal(verify.status, 202, verify.body);
  const values = {
    domain: link.id.split('/')[0], hash: link.id.split('/')[1], group_guid: user.default_group_guid,
    organization_guid: org, webhook_guid: hook.json().guid, handle: 'doc-page',
    delivery_id: String(verify.json().delivery_id),
  };
  // DELETEs go last so the resources exist for every other call.
  const calls = [];
  for (const [p, ops] of Object.entries(doc.paths)) {
    for (const m of Object.keys(ops)) calls.push([m.toUpperCase(), p]);
  }
  calls.sort((a, b) => (a[0] === 'DELETE') - (b[0] === 'DELETE'));
  for (const [method, p] of calls) {
    const url = p.replace(/\{([^}]+)\}/g, (_, k) => {
      assert.ok(values[k], `a value for {${k}}`);
      return values[k];
    });
    const body = ['POST', 'PATCH', 'PUT'].includes(method) ? {} : undefined;
    const res = p === '/v4/openapi.json' ? await request(server.base + url) : await server.api(method, url, body);
    assert.notEqual(res.status, 404, `${method} ${p}: ${res.body}`);
    assert.notEqual(res.status, 405, `${method} ${p}: ${res.body}`);
    assert.ok(res.status < 500, `${method} ${p}: ${res.status} ${res.body}`);
    const declared = Object.keys(doc.paths[p][method.toLowerCase()].responses);
    assert.ok(declared.includes(String(res.status)), `${method} ${p} answered ${res.status}, documented ${declared}`);
  }
});

// The /v4 paths written in the test sources, with each ${...} as "{}".
function routesInTests() {
  const files = ['integration', 'e2e'].flatMap((d) => {
    const dir = path.join(TESTS, d);
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.mjs')).map((f) => path.join(dir, f)) : [];
  });
  const found = new Map();
  for (const file of files) {
    const src = fs.readFileSync(file, 'utf8');
    for (let at = src.indexOf('/v4/'); at !== -1; at = src.indexOf('/v4/', at + 1)) {
      let out = '';
      let i = at;
      while (i < src.length && !`'"\`?),`.includes(src[i]) && !/\s/.test(src[i])) {
        if (src.startsWith('${', i)) {
          let depth = 0;
          for (; i < src.length; i++) {
            if (src[i] === '{') depth++;
            if (src[i] === '}' && --depth === 0) break;
          }
          out += '{}';
          i++;
        } else {
          out += src[i++];
        }
      }
      // `${query}` right after a path segment is a query string, not a segment.
      out = out.replace(/([^/])\{\}$/, '$1');
      if (!found.has(out)) found.set(out, path.basename(file));
    }
  }
  return found;
}

test('api_openapi_lists_every_route_the_tests_call', async () => {
  const templates = Object.keys(doc.paths);
  const routes = routesInTests();
  assert.ok(routes.size > 20, 'the scan finds the suite\'s routes');
  const missing = [];
  for (const [route, file] of routes) {
    if (NOT_ROUTES.has(route) || route.endsWith('/')) continue;
    // A "{}" may stand for one segment or for a whole domain/hash id.
    const variants = [route.replaceAll('{}', 'x'), route.replace('{}', 'x/x').replaceAll('{}', 'x')];
    if (!variants.some((v) => templates.some((t) => templateRegex(t).test(v)))) missing.push(`${route} (${file})`);
  }
  assert.deepEqual(missing, [], 'routes the tests call but the document does not list');
  assert.ok(routes.has('/v4/groups/{}/bitlinks') && routes.has('/v4/bitlinks/{}/clicks/summary'), [...routes.keys()].join(' '));
});
