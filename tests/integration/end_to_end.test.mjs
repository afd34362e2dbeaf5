// The whole path (issue: end to end): shorten, redirect, record with GeoIP,
// deliver one signed webhook, survive a restart. Runs the real binary on
// loopback with MaxMind's test database and a loopback receiver.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { GEOIP_TEST_DB, request, sleep, startReceiver, startServer, tempDir } from '../lib/harness.mjs';

const dataDir = tempDir();
const flags = ['--geoip-db', GEOIP_TEST_DB, '--trusted-proxy', '127.0.0.1/32',
  '--webhook-allow-cidr', '127.0.0.0/8'];
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
let server;
let receiver;

before(async () => {
  receiver = await startReceiver();
  server = await startServer({ dataDir, args: flags });
});
after(async () => {
  await server?.stop();
  await receiver?.close();
});

test('shorten, click, one signed webhook, and a restart keeps it all', async () => {
  const longUrl = 'https://example.com/landing?ref=x#top';
  const created = await server.api('POST', '/v4/shorten', { long_url: longUrl });
  assert.equal(created.status, 201, created.body);
  const link = created.json();
  assert.equal(link.long_url, longUrl);
  assert.match(link.id, /^127\.0\.0\.1:\d+\/[A-Za-z0-9]{7}$/);
  assert.equal(link.link, `${server.base}/${link.id.split('/')[1]}`);
  assert.ok(link.created_at.endsWith('+0000'));
  assert.ok(link.references.group.includes('/v4/groups/'));

  const again = await server.api('POST', '/v4/shorten', { long_url: longUrl });
  assert.equal(again.status, 200);
  assert.equal(again.json().id, link.id);

  const user = (await server.api('GET', '/v4/user')).json();
  const groups = (await server.api('GET', '/v4/groups')).json().groups;
  assert.deepEqual(groups.map((g) => g.guid), [user.default_group_guid]);

  const hook = await server.api('POST', '/v4/webhooks', {
    name: 'crm', url: receiver.url, group_guid: user.default_group_guid, is_active: true,
  });
  assert.equal(hook.status, 201, hook.body);
  const { guid, signing_secret: secret } = hook.json();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/);
  const org = groups[0].organization_guid;
  const listed = (await server.api('GET', `/v4/organizations/${org}/webhooks`)).json().webhooks;
  assert.deepEqual(listed.map((w) => w.guid), [guid]);
  assert.ok(!JSON.stringify(listed).includes(secret), 'the secret never appears in lists');

  const code = link.id.split('/')[1];
  const click = await request(`${server.base}/${code}?utm_source=y`, {
    headers: { 'x-forwarded-for': '81.2.69.160', 'user-agent': BROWSER },
  });
  assert.equal(click.status, 302);
  assert.equal(click.headers.location, 'https://example.com/landing?ref=x&utm_source=y#top');

  const [delivery] = await receiver.waitFor(1);
  await sleep(1500);
  assert.equal(receiver.received.length, 1, 'exactly one POST per engagement');
  assert.equal(delivery.method, 'POST');
  const body = JSON.parse(delivery.raw.toString('utf8'));
  assert.equal(body.bitlink, link.id);
  assert.equal(body.url, longUrl);
  assert.equal(body.country, 'GB');
  assert.equal(body.engagement_type, 'click');
  assert.equal(body.event_type, 'engagement');
  assert.equal(body.webhook_guid, guid);
  assert.equal(body.passed_params, 'utm_source=y');
  // Throws unless the signature is right over the exact bytes received.
  const verified = new Webhook(secret).verify(delivery.raw.toString('utf8'), delivery.headers);
  assert.equal(verified.event_id, body.event_id);
  assert.equal(delivery.headers['webhook-id'], body.event_id);

  // HEAD answers the same redirect and records nothing.
  const head = await request(`${server.base}/${code}`, { method: 'HEAD' });
  assert.equal(head.status, 302);
  assert.equal(head.headers.location, longUrl);

  const missing = await request(`${server.base}/nosuchcode`);
  assert.equal(missing.status, 404);
  assert.match(missing.headers['content-type'], /text\/html/);

  await server.stop();
  server = await startServer({ dataDir, args: flags });
  const after1 = await request(`${server.base}/${code}`, { headers: { 'user-agent': BROWSER } });
  assert.equal(after1.status, 302);
  assert.equal(after1.headers.location, longUrl);
  const summary = await server.api('GET', `/v4/bitlinks/${link.id}/clicks/summary?unit=day&units=-1`);
  assert.equal(summary.status, 200, summary.body);
  // The click before the restart is still stored; the one just made may or
  // may not be committed yet, and the HEAD never counts.
  assert.ok(summary.json().total_clicks >= 1, summary.body);
  await receiver.waitFor(2);
  await sleep(1500);
  assert.equal(receiver.received.length, 2, 'the restart re-sent nothing already delivered');
});

test('the API refuses missing tokens and bad input with Bitly error bodies', async () => {
  const noToken = await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/' }, null);
  assert.equal(noToken.status, 403);
  assert.equal(noToken.json().message, 'FORBIDDEN');
  const wrong = await server.api('GET', '/v4/user', undefined, 'f'.repeat(40));
  assert.equal(wrong.status, 403);

  const badJson = await server.api('POST', '/v4/shorten', '{"long_url": ');
  assert.equal(badJson.status, 400);
  const e = badJson.json();
  for (const k of ['message', 'description', 'resource', 'errors']) assert.ok(k in e, k);

  const badUrl = await server.api('POST', '/v4/shorten', { long_url: 'javascript:alert(1)' });
  assert.equal(badUrl.status, 400);
  assert.equal(badUrl.json().message, 'INVALID_ARG_LONG_URL');
  assert.deepEqual(badUrl.json().errors, [{ field: 'long_url', error_code: 'invalid' }]);
});
