// Bitly v4 links (issue 3): create with title, tags and keyword, read, PATCH,
// expand, custom back-halves, a group's links with filters and pagination, its
// tags, and 20 parallel creates of one back-half. Runs the real binary on
// loopback.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request, startServer } from '../lib/harness.mjs';

const BITLINK_FIELDS = ['archived', 'created_at', 'created_by', 'custom_bitlinks', 'deeplinks',
  'id', 'is_deleted', 'launchpad_ids', 'link', 'long_url', 'qr_code_ids', 'references', 'tags',
  'title'];
let server;
let group;

function assertError(res, status, message, field, errorCode) {
  assert.equal(res.status, status, res.body);
  const e = res.json();
  assert.deepEqual(Object.keys(e).sort(), ['description', 'errors', 'message', 'resource']);
  assert.equal(e.message, message);
  assert.equal(typeof e.description, 'string');
  assert.ok(e.description.length > 0);
  if (field) assert.deepEqual(e.errors, [{ field, error_code: errorCode }]);
  return e;
}

before(async () => {
  server = await startServer();
  group = (await server.api('GET', '/v4/user')).json().default_group_guid;
});
after(async () => { await server?.stop(); });

test('api_bitlinks_create_with_title_tags_keyword', async () => {
  const res = await server.api('POST', '/v4/bitlinks', {
    long_url: 'https://example.com/spring?x=1', title: 'Spring sale', tags: ['sale', 'spring'],
    keyword: 'spring-sale', domain: 'bit.ly', group_guid: group,
  });
  assert.equal(res.status, 201, res.body);
  const b = res.json();
  assert.deepEqual(Object.keys(b).sort(), BITLINK_FIELDS);
  assert.equal(b.id, `127.0.0.1:${server.port}/spring-sale`);
  assert.equal(b.link, `${server.base}/spring-sale`);
  assert.equal(b.title, 'Spring sale');
  assert.deepEqual(b.tags, ['sale', 'spring']);
  assert.equal(b.archived, false);
  assert.match(b.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$/);
  assert.equal(b.references.group, `${server.base}/v4/groups/${group}`);

  // The back-half redirects at once.
  const hit = await request(`${server.base}/spring-sale`);
  assert.equal(hit.status, 302);
  assert.equal(hit.headers.location, 'https://example.com/spring?x=1');

  // Read it back under our domain, as one %2F segment, and as bit.ly (the npm
  // client rewrites every id to bit.ly/{hash}).
  for (const id of [b.id, encodeURIComponent(b.id), 'bit.ly/spring-sale']) {
    const got = await server.api('GET', `/v4/bitlinks/${id}`);
    assert.equal(got.status, 200, got.body);
    assert.deepEqual(got.json(), b);
  }
});

test('api_bitlinks_create_rejects_bad_input_and_keeps_nothing', async () => {
  assertError(await server.api('POST', '/v4/bitlinks', { title: 'x' }), 400,
    'INVALID_ARG_LONG_URL', 'long_url', 'missing');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: 'ftp://example.com/' }), 400,
    'INVALID_ARG_LONG_URL', 'long_url', 'invalid');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/', keyword: 'a b' }),
    400, 'INVALID_ARG_KEYWORD', 'keyword', 'invalid');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/', keyword: 'v4' }),
    400, 'INVALID_ARG_KEYWORD', 'keyword', 'invalid');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/', tags: 'x' }),
    400, 'INVALID_ARG_TAGS', 'tags', 'invalid');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/', title: 7 }),
    400, 'INVALID_ARG_TITLE', 'title', 'invalid');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/', domain: 'j.mp' }),
    400, 'INVALID_ARG_DOMAIN', 'domain', 'invalid');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/', group_guid: 'Bzzzzzzzzzz' }),
    404, 'NOT_FOUND', 'group_guid', 'not_found');
  assertError(await server.api('POST', '/v4/bitlinks', { long_url: `${server.base}/abc` }), 400,
    'ALREADY_A_BITLY_LINK', 'long_url', 'already_a_bitly_link');
  const list = (await server.api('GET', `/v4/groups/${group}/bitlinks?archived=both`)).json();
  assert.ok(list.links.every((l) => l.long_url !== 'https://example.com/'), 'nothing was stored');
});

test('api_shorten_201_then_200_and_ignores_title', async () => {
  const a = await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/shorten', title: 'ignored' });
  assert.equal(a.status, 201, a.body);
  assert.equal(a.json().title, null);
  assert.match(a.json().id, /\/[A-Za-z0-9]{7}$/);
  const b = await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/shorten' });
  assert.equal(b.status, 200);
  assert.equal(b.json().id, a.json().id);
});

test('api_bitlinks_patch_title_tags_archived_long_url', async () => {
  const made = (await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/p1', title: 'one', tags: ['a'] })).json();
  const p = await server.api('PATCH', `/v4/bitlinks/${made.id}`, { title: 'two', tags: ['b', 'c'], archived: true });
  assert.equal(p.status, 200, p.body);
  assert.equal(p.json().title, 'two');
  assert.deepEqual(p.json().tags, ['b', 'c']);
  assert.equal(p.json().archived, true);
  assert.equal(p.json().long_url, 'https://example.com/p1');
  assert.equal(p.json().created_at, made.created_at);

  const moved = await server.api('PATCH', `/v4/bitlinks/${made.id}`, { long_url: 'https://example.org/new', title: null });
  assert.equal(moved.status, 200, moved.body);
  assert.equal(moved.json().title, null);
  assert.deepEqual(moved.json().tags, ['b', 'c'], 'fields not sent are kept');
  const code = made.id.split('/')[1];
  const hit = await request(`${server.base}/${code}`);
  assert.equal(hit.headers.location, 'https://example.org/new');
  assert.deepEqual((await server.api('GET', `/v4/bitlinks/${made.id}`)).json(), moved.json());

  // Shortening the new URL finds the moved link; the old URL is free again.
  const again = await server.api('POST', '/v4/shorten', { long_url: 'https://example.org/new' });
  assert.equal(again.status, 200);
  assert.equal(again.json().id, made.id);

  assertError(await server.api('PATCH', `/v4/bitlinks/${made.id}`, { archived: 'yes' }), 400,
    'INVALID_ARG_ARCHIVED', 'archived', 'invalid');
  assertError(await server.api('PATCH', `/v4/bitlinks/${made.id}`, { long_url: 'javascript:x' }), 400,
    'INVALID_ARG_LONG_URL', 'long_url', 'invalid');
  assertError(await server.api('PATCH', `/v4/bitlinks/${made.id}`, { tags: [1] }), 400,
    'INVALID_ARG_TAGS', 'tags', 'invalid');
  assert.deepEqual((await server.api('GET', `/v4/bitlinks/${made.id}`)).json(), moved.json(),
    'a refused PATCH changes nothing');
  assertError(await server.api('PATCH', '/v4/bitlinks/bit.ly/nosuchlink', { title: 'x' }), 404, 'NOT_FOUND');
  assertError(await server.api('GET', '/v4/bitlinks/bit.ly/nosuchlink'), 404, 'NOT_FOUND');
  assertError(await server.api('DELETE', `/v4/bitlinks/${made.id}`), 405, 'METHOD_NOT_ALLOWED');
});

test('api_expand_returns_bitly_fields', async () => {
  const made = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/expand' })).json();
  const res = await server.api('POST', '/v4/expand', { bitlink_id: made.id });
  assert.equal(res.status, 200, res.body);
  assert.deepEqual(res.json(), { created_at: made.created_at, link: made.link, id: made.id, long_url: made.long_url });
  const viaBitly = await server.api('POST', '/v4/expand', { bitlink_id: `bit.ly/${made.id.split('/')[1]}` });
  assert.deepEqual(viaBitly.json(), res.json());
  assertError(await server.api('POST', '/v4/expand', {}), 400, 'INVALID_ARG_BITLINK_ID', 'bitlink_id', 'invalid');
  assertError(await server.api('POST', '/v4/expand', { bitlink_id: 'bit.ly/zzzzzzzz' }), 404, 'NOT_FOUND');
  assertError(await server.api('GET', '/v4/expand'), 405, 'METHOD_NOT_ALLOWED');
});

test('api_custom_bitlinks_adds_a_back_half', async () => {
  const made = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/custom' })).json();
  const res = await server.api('POST', '/v4/custom_bitlinks', { custom_bitlink: `127.0.0.1:${server.port}/my-custom`, bitlink_id: made.id });
  assert.equal(res.status, 201, res.body);
  const c = res.json();
  assert.equal(c.custom_bitlink, `127.0.0.1:${server.port}/my-custom`);
  assert.equal(c.bitlink.id, made.id);
  assert.deepEqual(c.bitlink.custom_bitlinks, [`${server.base}/my-custom`]);
  const hit = await request(`${server.base}/my-custom`);
  assert.equal(hit.status, 302);
  assert.equal(hit.headers.location, 'https://example.com/custom');

  // The custom back-half follows its link to a new long URL.
  await server.api('PATCH', `/v4/bitlinks/${made.id}`, { long_url: 'https://example.com/custom2' });
  assert.equal((await request(`${server.base}/my-custom`)).headers.location, 'https://example.com/custom2');

  assertError(await server.api('POST', '/v4/custom_bitlinks', { custom_bitlink: 'bit.ly/my-custom', bitlink_id: made.id }),
    409, 'ALREADY_A_BITLY_LINK', 'custom_bitlink', 'already_exists');
  assertError(await server.api('POST', '/v4/custom_bitlinks', { custom_bitlink: 'bit.ly/other1', bitlink_id: 'bit.ly/nothere' }),
    404, 'NOT_FOUND', 'bitlink_id', 'not_found');
  assertError(await server.api('POST', '/v4/custom_bitlinks', { custom_bitlink: 'evil.example/abc', bitlink_id: made.id }),
    400, 'INVALID_ARG_CUSTOM_BITLINK', 'custom_bitlink', 'invalid');
  assertError(await server.api('POST', '/v4/custom_bitlinks', { custom_bitlink: 'bit.ly/no', bitlink_id: made.id }),
    400, 'INVALID_ARG_KEYWORD', 'custom_bitlink', 'invalid');
  assertError(await server.api('POST', '/v4/custom_bitlinks', { custom_bitlink: 'bit.ly/fine-one' }),
    400, 'INVALID_ARG_BITLINK_ID', 'bitlink_id', 'invalid');
});

test('api_bitlinks_20_parallel_creates_of_one_back_half_give_one_owner', async () => {
  const attempts = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    server.api('POST', '/v4/bitlinks', { long_url: `https://example.com/race/${i}`, keyword: 'race-half' })));
  const won = attempts.filter((r) => r.status === 201 || r.status === 200);
  const lost = attempts.filter((r) => r.status === 409);
  assert.equal(won.length, 1, attempts.map((r) => r.status).join(','));
  assert.equal(lost.length, 19);
  for (const r of lost) assertError(r, 409, 'ALREADY_A_BITLY_LINK', 'keyword', 'already_exists');
  const owner = won[0].json().long_url;
  assert.equal((await request(`${server.base}/race-half`)).headers.location, owner);
  assert.equal((await server.api('GET', '/v4/bitlinks/bit.ly/race-half')).json().long_url, owner);
});

test('api_groups_bitlinks_filters_and_pagination', async () => {
  const g = await server.api('POST', '/v4/groups', { name: 'paging' });
  assert.equal(g.status, 201, g.body);
  const guid = g.json().guid;
  const made = [];
  for (let i = 0; i < 5; i++) {
    const res = await server.api('POST', '/v4/bitlinks', {
      long_url: `https://example.com/page/${i}`, group_guid: guid, title: `Item ${i}`,
      tags: i % 2 === 0 ? ['even'] : ['odd'], ...(i === 4 ? { keyword: 'page-four' } : {}),
    });
    assert.equal(res.status, 201, res.body);
    made.push(res.json());
  }
  await server.api('PATCH', `/v4/bitlinks/${made[0].id}`, { archived: true });

  const route = `/v4/groups/${guid}/bitlinks`;
  const p1 = await server.api('GET', `${route}?size=2&tags=even&tags=odd`);
  assert.equal(p1.status, 200, p1.body);
  const b1 = p1.json();
  assert.deepEqual(Object.keys(b1).sort(), ['links', 'pagination']);
  assert.deepEqual(b1.pagination, { prev: '', next: `${server.base}${route}?size=2&tags=even&tags=odd&page=2`, size: 2, page: 1, total: 4 });
  // Newest first; the archived one is left out by default.
  assert.deepEqual(b1.links.map((l) => l.id), [made[4].id, made[3].id]);
  const b2 = (await request(b1.pagination.next, { headers: { authorization: `Bearer ${server.token}` } })).json();
  assert.deepEqual(b2.links.map((l) => l.id), [made[2].id, made[1].id]);
  assert.equal(b2.pagination.prev, `${server.base}${route}?size=2&tags=even&tags=odd&page=1`);
  assert.equal(b2.pagination.next, '');
  const beyond = (await server.api('GET', `${route}?size=2&page=9`)).json();
  assert.deepEqual(beyond.links, []);
  assert.equal(beyond.pagination.total, 4);

  const ids = async (q) => (await server.api('GET', `${route}?${q}`)).json().links.map((l) => l.id);
  assert.deepEqual(await ids('archived=on'), [made[0].id]);
  assert.deepEqual(await ids('archived=both'), made.map((l) => l.id).reverse());
  assert.deepEqual(await ids('tags=even'), [made[4].id, made[2].id]);
  assert.deepEqual(await ids('keyword=PAGE-F'), [made[4].id]);
  assert.deepEqual(await ids('query=item%203'), [made[3].id]);
  assert.deepEqual(await ids('unit_reference=&size='), made.slice(1).map((l) => l.id).reverse(), 'empty values are unset');

  assertError(await server.api('GET', `${route}?size=0`), 400, 'INVALID_ARG_SIZE', 'size', 'invalid');
  assertError(await server.api('GET', `${route}?size=1001`), 400, 'INVALID_ARG_SIZE', 'size', 'invalid');
  assertError(await server.api('GET', `${route}?page=x`), 400, 'INVALID_ARG_PAGE', 'page', 'invalid');
  assertError(await server.api('GET', `${route}?archived=maybe`), 400, 'INVALID_ARG_ARCHIVED', 'archived', 'invalid');
  assertError(await server.api('GET', `${route}?keyword=%zz`), 400, 'INVALID_ARG_KEYWORD', 'keyword', 'invalid');
  assertError(await server.api('GET', '/v4/groups/Bzzzzzzzzzz/bitlinks'), 404, 'NOT_FOUND');
  assertError(await server.api('POST', route, {}), 405, 'METHOD_NOT_ALLOWED');

  const tags = await server.api('GET', `/v4/groups/${guid}/tags`);
  assert.equal(tags.status, 200, tags.body);
  assert.deepEqual(tags.json(), { tags: ['even', 'odd'] });
  assertError(await server.api('GET', '/v4/groups/Bzzzzzzzzzz/tags'), 404, 'NOT_FOUND');
  // The default group's links are not in this one.
  assert.ok(!(await ids('archived=both')).some((id) => id.endsWith('/spring-sale')));
});
