// Bitly v4 account routes and the API's edges (issue 3): user, organizations,
// groups, Bitly-style guids, tokens made, listed and revoked with the CLI while
// the server runs, and the error body on 403, 404, 405 and 413. Runs the real
// binary on loopback.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { BIN, request, startServer } from '../lib/harness.mjs';

const GUID = /^[A-Za-z][A-Za-z0-9]{10}$/;
let server;

const cli = (...args) => execFileSync(BIN, ['token', ...args, '--data-dir', server.dataDir],
  { env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' }, encoding: 'utf8' });

function assertError(res, status, message) {
  assert.equal(res.status, status, res.body);
  assert.match(res.headers['content-type'], /^application\/json/);
  const e = res.json();
  assert.deepEqual(Object.keys(e).sort(), ['description', 'errors', 'message', 'resource']);
  assert.equal(e.message, message);
  assert.ok(e.description.length > 0);
  assert.ok(Array.isArray(e.errors));
  return e;
}

before(async () => { server = await startServer({ args: ['--max-body', '2048'] }); });
after(async () => { await server?.stop(); });

test('api_user_organizations_groups_fields', async () => {
  const user = await server.api('GET', '/v4/user');
  assert.equal(user.status, 200);
  const u = user.json();
  for (const k of ['login', 'name', 'is_active', 'is_2fa_enabled', 'is_sso_user', 'emails', 'default_group_guid']) assert.ok(k in u, k);
  assert.match(u.default_group_guid, GUID);

  const orgs = (await server.api('GET', '/v4/organizations')).json().organizations;
  assert.equal(orgs.length, 1);
  assert.match(orgs[0].guid, GUID);
  for (const k of ['guid', 'name', 'is_active', 'tier', 'created', 'modified', 'bsds']) assert.ok(k in orgs[0], k);
  assert.match(orgs[0].created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$/);
  assert.deepEqual((await server.api('GET', `/v4/organizations/${orgs[0].guid}`)).json(), orgs[0]);

  const groups = (await server.api('GET', '/v4/groups')).json().groups;
  assert.deepEqual(groups.map((g) => g.guid), [u.default_group_guid]);
  const g = groups[0];
  for (const k of ['guid', 'organization_guid', 'name', 'is_active', 'role', 'created', 'modified', 'bsds', 'references']) assert.ok(k in g, k);
  assert.equal(g.organization_guid, orgs[0].guid);
  assert.equal(g.references.organization, `${server.base}/v4/organizations/${orgs[0].guid}`);
  assert.deepEqual((await server.api('GET', `/v4/groups/${g.guid}`)).json(), g);

  const made = await server.api('POST', '/v4/groups', { name: 'Marketing' });
  assert.equal(made.status, 201, made.body);
  assert.match(made.json().guid, GUID);
  assert.equal(made.json().name, 'Marketing');
  assert.equal(made.json().organization_guid, orgs[0].guid);
  assert.equal((await server.api('GET', '/v4/groups')).json().groups.length, 2);
  assertError(await server.api('POST', '/v4/groups', { name: '' }), 400, 'INVALID_ARG_NAME');
  assertError(await server.api('GET', '/v4/groups/Bzzzzzzzzzz'), 404, 'NOT_FOUND');
  assertError(await server.api('GET', '/v4/organizations/Bzzzzzzzzzz'), 404, 'NOT_FOUND');
  assertError(await server.api('DELETE', `/v4/groups/${g.guid}`), 405, 'METHOD_NOT_ALLOWED');
  assertError(await server.api('POST', '/v4/user', {}), 405, 'METHOD_NOT_ALLOWED');
});

test('api_tokens_created_listed_and_revoked_while_serving', async () => {
  const token = cli('create', '--name', 'ci-bot').trim();
  assert.match(token, /^[0-9a-f]{40}$/);
  assert.equal((await server.api('GET', '/v4/user', undefined, token)).status, 200);

  const rows = cli('list').trim().split('\n').map((l) => l.split('\t'));
  assert.deepEqual(rows.map((r) => r[2]).sort(), ['admin', 'ci-bot']);
  for (const [id, created] of rows) {
    assert.match(id, /^[0-9a-f]{16}$/);
    assert.match(created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$/);
  }
  assert.ok(!cli('list').includes(token), 'the list never shows a token');

  const id = rows.find((r) => r[2] === 'ci-bot')[0];
  cli('revoke', '--id', id);
  const revoked = await server.api('GET', '/v4/user', undefined, token);
  assertError(revoked, 403, 'FORBIDDEN');
  assert.equal((await server.api('GET', '/v4/user')).status, 200, 'other tokens still work');
  assert.throws(() => cli('revoke', '--id', id), /no token with id/);
});

test('api_forbidden_for_missing_unknown_or_malformed_tokens', async () => {
  const cases = [
    {},
    { authorization: 'Bearer ' },
    { authorization: `Bearer ${'0'.repeat(40)}` },
    { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` },
    { authorization: `Bearer ${server.token}x` },
  ];
  for (const headers of cases) {
    for (const route of ['/v4/user', '/v4/groups', '/v4/nonexistent']) {
      const res = await request(server.base + route, { headers });
      assertError(res, 403, 'FORBIDDEN');
    }
  }
  // The scheme is case-insensitive, as in HTTP.
  assert.equal((await request(`${server.base}/v4/user`, { headers: { authorization: `bearer ${server.token}` } })).status, 200);
});

test('api_errors_404_405_413_400_share_one_body', async () => {
  assertError(await server.api('GET', '/v4/nonexistent'), 404, 'NOT_FOUND');
  assertError(await server.api('GET', '/v4/bitlinks/bit.ly/abcdefg/unknown'), 404, 'NOT_FOUND');
  assertError(await server.api('GET', '/v4/shorten'), 405, 'METHOD_NOT_ALLOWED');
  assertError(await server.api('PUT', '/v4/bitlinks', {}), 405, 'METHOD_NOT_ALLOWED');
  const big = await server.api('POST', '/v4/shorten', { long_url: `https://example.com/${'a'.repeat(4000)}` });
  const e = assertError(big, 413, 'REQUEST_ENTITY_TOO_LARGE');
  assert.match(e.description, /2048 bytes/);
  assertError(await server.api('POST', '/v4/shorten', '[1,2]'), 400, 'INVALID_BODY');
  assertError(await server.api('POST', '/v4/shorten', '{"long_url": "https://example.com/", "long_url": "x"}'), 400, 'INVALID_BODY');
  const list = (await server.api('GET', `/v4/groups/${(await server.api('GET', '/v4/user')).json().default_group_guid}/bitlinks`)).json();
  assert.equal(list.pagination.total, 0, 'refused bodies stored nothing');
});
