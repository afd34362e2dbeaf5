// Webhook delivery as a CRM sees it (issue 5, cases C15-C19): signatures over
// the exact bytes received, verified by the standardwebhooks and svix
// packages; retries with fresh timestamps and one webhook-id; a schedule that
// ends in failed, across a kill -9; SSRF refusals; the secret's format; and
// the routes under /v4/webhooks/{guid}: deliveries, resend, recover, verify,
// secret, secret/rotate; 410 deactivation; /metrics. Every server is started
// here on 127.0.0.1.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, test } from 'node:test';
import { Webhook as StandardWebhook } from 'standardwebhooks';
import { Webhook as SvixWebhook } from 'svix';
import { request, sleep, startReceiver, startTracked, tempDir } from '../lib/harness.mjs';

const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
const LOOPBACK = ['--webhook-allow-cidr', '127.0.0.0/8'];

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

// A loopback receiver (the harness's) whose answer can change during a test,
// closed after the file's tests.
async function receiver(answer = () => 200) {
  const rx = await startReceiver(answer);
  cleanup.push(rx.close);
  return rx;
}

const server = (args, dataDir, port) => startTracked(cleanup, args, dataDir, port);

async function setup(s, rxUrl, extra = {}) {
  const user = (await s.api('GET', '/v4/user')).json();
  const hook = await s.api('POST', '/v4/webhooks', {
    name: 'crm', url: rxUrl, group_guid: user.default_group_guid, is_active: true, ...extra,
  });
  assert.equal(hook.status, 201, hook.body);
  return { user, hook: hook.json() };
}

async function shorten(s, longUrl) {
  const r = await s.api('POST', '/v4/shorten', { long_url: longUrl });
  assert.ok(r.status === 200 || r.status === 201, r.body);
  return r.json().id.split('/')[1];
}

async function click(s, code, query = '') {
  const r = await request(`${s.base}/${code}${query}`, { headers: { 'user-agent': BROWSER } });
  assert.equal(r.status, 302);
}

async function deliveries(s, guid, query = '') {
  const r = await s.api('GET', `/v4/webhooks/${guid}/deliveries${query}`);
  assert.equal(r.status, 200, r.body);
  return r.json().deliveries;
}

async function until(what, fn, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const verifyBoth = (secret, entry) => {
  const text = entry.raw.toString('utf8');
  new StandardWebhook(secret).verify(text, entry.headers);
  new SvixWebhook(secret).verify(text, entry.headers);
};

test('C15: the signature verifies with standardwebhooks and svix over the exact bytes', async () => {
  const rx = await receiver();
  const s = await server(LOOPBACK);
  const { hook } = await setup(s, rx.url);
  const longUrl = 'https://example.com/café?a=1&b=2&c=</script>&d=<!--';
  const code = await shorten(s, longUrl);
  await click(s, code, '?q=%C3%A9t%C3%A9&x=%3C%2F&y=1');
  const [got] = await rx.waitFor(1);
  verifyBoth(hook.signing_secret, got);
  const body = JSON.parse(got.raw.toString('utf8'));
  assert.equal(got.headers['webhook-id'], body.event_id);
  assert.ok(/caf(é|%C3%A9)/.test(body.url), body.url);
  assert.ok(body.url.includes('&b=2') && body.url.includes('</script>'), body.url);
  assert.equal(body.passed_params, 'q=%C3%A9t%C3%A9&x=%3C%2F&y=1');
  // One changed byte and both libraries refuse it.
  const tampered = { ...got, raw: Buffer.from(got.raw.toString('utf8').replace('café', 'cafe')) };
  if (!tampered.raw.equals(got.raw)) assert.throws(() => verifyBoth(hook.signing_secret, tampered));
});

test('C16: a late retry has a fresh timestamp, the same webhook-id, and verifies', async () => {
  const rx = await receiver((e, n) => (n <= 2 ? 500 : 200));
  const s = await server([...LOOPBACK, '--webhook-retry-delays', '2,2,2']);
  const { hook } = await setup(s, rx.url);
  await click(s, await shorten(s, 'https://example.com/c16'));
  const got = await rx.waitFor(3);
  await sleep(500);
  assert.equal(got.length, 3, 'no attempt after the one that succeeded');
  const ids = new Set(got.map((g) => g.headers['webhook-id']));
  assert.equal(ids.size, 1);
  const ts = got.map((g) => Number(g.headers['webhook-timestamp']));
  assert.ok(ts[1] > ts[0] && ts[2] > ts[1], `timestamps ${ts}`);
  assert.deepEqual(got[2].raw, got[0].raw, 'the same bytes on every attempt');
  for (const g of got) verifyBoth(hook.signing_secret, g);
  const log = await deliveries(s, hook.guid);
  assert.deepEqual(log.map((a) => [a.attempt, a.outcome, a.http_status]),
    [[3, 'delivered', 200], [2, 'retry', 500], [1, 'retry', 500]]);
});

test('C17: an endpoint that always answers 403 gets exactly 4 attempts, across a kill -9', async () => {
  const rx = await receiver(() => ({ status: 403, body: 'forbidden here' }));
  const dataDir = tempDir();
  const args = [...LOOPBACK, '--webhook-retry-delays', '2,2,2'];
  let s = await server(args, dataDir);
  const { hook } = await setup(s, rx.url);
  await click(s, await shorten(s, 'https://example.com/c17'));
  // Killed once the second attempt's outcome is stored, before the third.
  await until('two logged attempts', async () => (await deliveries(s, hook.guid)).length >= 2);
  await s.stop('SIGKILL');
  assert.equal(rx.received.length, 2);
  s = await server(args, dataDir, s.port);
  await rx.waitFor(4);
  const log = await until('the delivery marked failed', async () => {
    const l = await deliveries(s, hook.guid);
    return l.length >= 4 && l[0].outcome === 'failed' ? l : null;
  });
  await sleep(5000); // longer than any delay left in the schedule
  assert.equal(rx.received.length, 4, 'exactly 4 attempts');
  assert.deepEqual(log.map((a) => [a.attempt, a.outcome, a.http_status]),
    [[4, 'failed', 403], [3, 'retry', 403], [2, 'retry', 403], [1, 'retry', 403]]);
  assert.equal(new Set(log.map((a) => a.delivery_id)).size, 1);
  assert.equal(log[0].response, 'forbidden here');
  assert.match(log[0].error, /403/);
  assert.match(log[0].time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(Number.isInteger(log[0].duration_ms));
  assert.equal(new Set(rx.received.map((g) => g.headers['webhook-id'])).size, 1);
  assert.deepEqual((await deliveries(s, hook.guid, '?outcome=failed')).length, 1);
});

test('C18: special addresses refused at subscribe time, redirects never followed', async () => {
  const s = await server([]);
  const user = (await s.api('GET', '/v4/user')).json();
  const cases = [
    ['http://169.254.169.254/latest/meta-data/', /link-local|metadata/],
    ['http://127.0.0.1:6379/', /loopback/],
    ['http://[::ffff:127.0.0.1]/', /loopback/],
    ['http://2130706433/', /loopback/],
  ];
  for (const [url, range] of cases) {
    const r = await s.api('POST', '/v4/webhooks', { name: 'x', url, group_guid: user.default_group_guid });
    assert.equal(r.status, 400, `${url}: ${r.body}`);
    const e = r.json();
    assert.equal(e.errors[0].field, 'url');
    assert.match(e.description, range, url);
  }
  const listed = await s.api('GET', `/v4/organizations/${user.default_group_guid}/webhooks`);
  assert.ok(listed.status === 404 || listed.json().webhooks.length === 0);

  // With loopback open: a 302 to another loopback receiver is a failed attempt.
  const target = await receiver();
  const rx = await receiver(() => ({ status: 302, headers: { location: `http://127.0.0.1:${target.port}/` } }));
  const s2 = await server([...LOOPBACK, '--webhook-retry-delays', '600']);
  const { hook } = await setup(s2, rx.url);
  await click(s2, await shorten(s2, 'https://example.com/c18'));
  await rx.waitFor(1);
  const log = await until('the attempt logged', async () => {
    const l = await deliveries(s2, hook.guid);
    return l.length ? l : null;
  });
  await sleep(1500);
  assert.equal(rx.received.length, 1);
  assert.equal(target.received.length, 0, 'the redirect was never followed');
  assert.equal(log.length, 1);
  assert.equal(log[0].http_status, 302);
  assert.equal(log[0].outcome, 'retry');
  assert.match(log[0].error, /redirect/);
});

test('C19: whsec_ + padded base64 of at least 24 bytes, the decoded bytes are the key', async () => {
  // DESIGN.md's test vector, through the library the receivers use.
  const vector = new StandardWebhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')
    .sign('msg_p5jXN8AQM9LWM0D4loKWxJek', new Date(1614265330 * 1000), '{"test": 2432232314}');
  assert.equal(vector, 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');

  const rx = await receiver();
  const s = await server(LOOPBACK);
  const { hook } = await setup(s, rx.url);
  const secret = hook.signing_secret;
  assert.match(secret, /^whsec_[A-Za-z0-9+/]+={0,2}$/);
  const b64 = secret.slice(6);
  assert.equal(b64.length % 4, 0, 'padded');
  const key = Buffer.from(b64, 'base64');
  assert.ok(key.length >= 24, `${key.length} bytes`);
  assert.equal(key.toString('base64'), b64, 'standard base64, canonical');

  const read = await s.api('GET', `/v4/webhooks/${hook.guid}/secret`);
  assert.equal(read.status, 200);
  assert.equal(read.json().signing_secret, secret);
  assert.equal(read.headers['cache-control'], 'no-store');
  const shown = await s.api('GET', `/v4/webhooks/${hook.guid}`);
  assert.ok(!shown.body.includes(b64), 'GET of the webhook never shows the secret');

  await click(s, await shorten(s, 'https://example.com/c19'));
  const [got] = await rx.waitFor(1);
  const signed = `${got.headers['webhook-id']}.${got.headers['webhook-timestamp']}.${got.raw.toString('utf8')}`;
  const mac = crypto.createHmac('sha256', key).update(signed).digest('base64');
  assert.equal(got.headers['webhook-signature'], `v1,${mac}`);
});

test('routes: deliveries filters, resend, recover, verify', async () => {
  let failing = true;
  const rx = await receiver(() => (failing ? 503 : 200));
  const s = await server([...LOOPBACK, '--webhook-retry-delays', '1']);
  const { hook } = await setup(s, rx.url);
  const before = new Date(Date.now() - 1000).toISOString();
  const code = await shorten(s, 'https://example.com/routes');
  await click(s, code, '?n=1');
  await click(s, code, '?n=2');
  await until('both deliveries failed', async () =>
    (await deliveries(s, hook.guid, '?outcome=failed')).length === 2);
  assert.equal(rx.received.length, 4, 'two attempts each');

  const all = await deliveries(s, hook.guid);
  assert.equal(all.length, 4);
  const times = all.map((a) => Date.parse(a.time));
  assert.deepEqual([...times].sort((a, b) => b - a), times, 'newest first');
  assert.equal((await deliveries(s, hook.guid, '?size=1')).length, 1);
  assert.equal((await deliveries(s, hook.guid, '?outcome=retry')).length, 2);
  assert.equal((await deliveries(s, hook.guid, '?outcome=delivered')).length, 0);
  const future = new Date(Date.now() + 3600e3).toISOString();
  assert.equal((await deliveries(s, hook.guid, `?since=${future}`)).length, 0);
  for (const q of ['?outcome=nope', '?size=0', '?size=1001', '?since=yesterday']) {
    const r = await s.api('GET', `/v4/webhooks/${hook.guid}/deliveries${q}`);
    assert.equal(r.status, 400, q);
    assert.ok('errors' in r.json());
  }
  assert.equal((await s.api('GET', '/v4/webhooks/Wnosuchhook/deliveries')).status, 404);

  // Resend one failed delivery: due now, attempts from 1 again, same webhook-id.
  failing = false;
  const [one, other] = [...new Set(all.map((a) => a.delivery_id))];
  const firstId = rx.received[0].headers['webhook-id'];
  const re = await s.api('POST', `/v4/webhooks/${hook.guid}/deliveries/${one}/resend`);
  assert.equal(re.status, 202, re.body);
  assert.equal(re.json().delivery_id, one);
  await rx.waitFor(5);
  const resent = rx.received[4];
  assert.ok(rx.received.slice(0, 4).some((g) => g.headers['webhook-id'] === resent.headers['webhook-id']));
  verifyBoth(hook.signing_secret, resent);
  const after1 = await until('the resend logged', async () => {
    const l = await deliveries(s, hook.guid, '?outcome=delivered');
    return l.length === 1 ? l : null;
  });
  assert.equal(after1[0].delivery_id, one);
  assert.equal(after1[0].attempt, 1);
  // A delivered one can be resent too; an unknown one is a 404.
  assert.equal((await s.api('POST', `/v4/webhooks/${hook.guid}/deliveries/${one}/resend`)).status, 202);
  await rx.waitFor(6);
  assert.equal((await s.api('POST', `/v4/webhooks/${hook.guid}/deliveries/999999/resend`)).status, 404);
  assert.equal((await s.api('POST', `/v4/webhooks/${hook.guid}/deliveries/abc/resend`)).status, 404);

  // Recover: every failed delivery since the time, here the other one.
  const bad = await s.api('POST', `/v4/webhooks/${hook.guid}/recover`, { since: 'soon' });
  assert.equal(bad.status, 400);
  const none = await s.api('POST', `/v4/webhooks/${hook.guid}/recover`, { since: future });
  assert.equal(none.status, 202);
  assert.equal(none.json().count, 0);
  const rec = await s.api('POST', `/v4/webhooks/${hook.guid}/recover`, { since: before });
  assert.equal(rec.status, 202, rec.body);
  assert.equal(rec.json().count, 1);
  await rx.waitFor(7);
  await until('the recovered delivery delivered', async () =>
    (await deliveries(s, hook.guid, '?outcome=delivered')).some((a) => a.delivery_id === other));
  const again = await s.api('POST', `/v4/webhooks/${hook.guid}/recover`, { since: before });
  assert.equal(again.json().count, 0, 'nothing failed is left');
  assert.equal(firstId, rx.received[0].headers['webhook-id']);

  // Verify: a signed test event now; its outcome is in the log.
  const v = await s.api('POST', `/v4/webhooks/${hook.guid}/verify`);
  assert.equal(v.status, 202, v.body);
  const { delivery_id: testId, event_id: testEvent } = v.json();
  assert.equal(testEvent, `test_${testId}`);
  const [test1] = (await rx.waitFor(8)).slice(7);
  verifyBoth(hook.signing_secret, test1);
  assert.equal(test1.headers['webhook-id'], testEvent);
  const tbody = JSON.parse(test1.raw.toString('utf8'));
  assert.equal(tbody.event_type, 'test');
  assert.equal(tbody.webhook_guid, hook.guid);
  const tlog = await until('the test logged', async () =>
    (await deliveries(s, hook.guid)).find((a) => a.delivery_id === testId));
  assert.equal(tlog.outcome, 'delivered');
  assert.equal(tlog.event_id, testEvent);

  // A failing test send is one attempt, failed, never retried.
  failing = true;
  const v2 = (await s.api('POST', `/v4/webhooks/${hook.guid}/verify`)).json();
  await rx.waitFor(9);
  const t2 = await until('the failed test logged', async () =>
    (await deliveries(s, hook.guid)).find((a) => a.delivery_id === v2.delivery_id));
  assert.equal(t2.outcome, 'failed');
  await sleep(2000);
  assert.equal(rx.received.length, 9);
  assert.equal((await s.api('POST', '/v4/webhooks/Wnosuchhook/verify')).status, 404);
  assert.equal((await s.api('GET', `/v4/webhooks/${hook.guid}/verify`)).status, 405);

  // Metrics count the attempts by outcome and their latency.
  const m = (await request(`${s.base}/metrics`)).body;
  const metric = (name) => Number((m.match(new RegExp(`^${name.replace(/[{}"+]/g, '\\$&')} (\\S+)$`, 'm')) ?? [])[1]);
  assert.ok(metric('shortlinkd_webhook_attempts_total{outcome="delivered"}') >= 4, m);
  assert.ok(metric('shortlinkd_webhook_attempts_total{outcome="retry"}') >= 2, m);
  assert.ok(metric('shortlinkd_webhook_attempts_total{outcome="failed"}') >= 3, m);
  assert.equal(metric('shortlinkd_webhook_attempt_seconds_bucket{le="+Inf"}'),
    metric('shortlinkd_webhook_attempt_seconds_count'));
  assert.ok(metric('shortlinkd_webhook_attempt_seconds_count') >= 9);
  for (const n of ['shortlinkd_webhook_deliveries_pending', 'shortlinkd_webhook_deliveries_failed',
    'shortlinkd_webhook_requests_in_flight']) assert.ok(Number.isFinite(metric(n)), n);
});

test('routes: secret rotation signs with both secrets during the grace period', async () => {
  const rx = await receiver();
  const s = await server(LOOPBACK);
  const { hook } = await setup(s, rx.url);
  const old = hook.signing_secret;
  const code = await shorten(s, 'https://example.com/rotate');

  const rot = await s.api('POST', `/v4/webhooks/${hook.guid}/secret/rotate`);
  assert.equal(rot.status, 200, rot.body);
  const { signing_secret: fresh, previous_secret_expires: expires } = rot.json();
  assert.notEqual(fresh, old);
  assert.match(fresh, /^whsec_[A-Za-z0-9+/]+={0,2}$/);
  const grace = Date.parse(expires) - Date.now();
  assert.ok(grace > 23 * 3600e3 && grace <= 24 * 3600e3, expires);
  assert.equal((await s.api('GET', `/v4/webhooks/${hook.guid}/secret`)).json().signing_secret, fresh);

  await click(s, code);
  const [a] = await rx.waitFor(1);
  assert.equal(a.headers['webhook-signature'].split(' ').length, 2);
  verifyBoth(fresh, a);
  verifyBoth(old, a);

  // No grace: the previous secret stops signing at once.
  const rot2 = await s.api('POST', `/v4/webhooks/${hook.guid}/secret/rotate`, { grace_seconds: 0 });
  assert.equal(rot2.status, 200, rot2.body);
  const newest = rot2.json().signing_secret;
  await click(s, code);
  const b = (await rx.waitFor(2))[1];
  verifyBoth(newest, b);
  assert.throws(() => verifyBoth(fresh, b));
  assert.equal((await s.api('POST', `/v4/webhooks/${hook.guid}/secret/rotate`, { grace_seconds: -1 })).status, 400);
  assert.equal((await s.api('POST', '/v4/webhooks/Wnosuchhook/secret/rotate')).status, 404);

  // Secrets never in lists, GETs or the log.
  const user = (await s.api('GET', '/v4/user')).json();
  const groups = (await s.api('GET', '/v4/groups')).json().groups;
  const list = await s.api('GET', `/v4/organizations/${groups[0].organization_guid}/webhooks`);
  const get = await s.api('GET', `/v4/webhooks/${hook.guid}`);
  for (const sec of [old, fresh, newest]) {
    const b64 = sec.slice(6);
    assert.ok(!list.body.includes(b64));
    assert.ok(!get.body.includes(b64));
    assert.ok(!s.log.includes(b64), 'never logged');
  }
  assert.ok(user.default_group_guid);
});

test('410 deactivates the webhook, shown with its reason; reactivation clears it', async () => {
  const rx = await receiver(() => 410);
  const s = await server([...LOOPBACK, '--webhook-retry-delays', '1,1']);
  const { hook } = await setup(s, rx.url);
  const code = await shorten(s, 'https://example.com/gone');
  await click(s, code);
  await rx.waitFor(1);
  const shown = await until('the webhook deactivated', async () => {
    const w = (await s.api('GET', `/v4/webhooks/${hook.guid}`)).json();
    return w.is_active === false ? w : null;
  });
  assert.match(shown.deactivated_reason, /410/);
  assert.equal(shown.status, 'deactivated');
  const log = await deliveries(s, hook.guid);
  assert.equal(log[0].outcome, 'failed');
  assert.equal(log[0].http_status, 410);

  // Nothing is sent while it is off; recover asks for it on first.
  await click(s, code);
  await sleep(1500);
  assert.equal(rx.received.length, 1);
  const rec = await s.api('POST', `/v4/webhooks/${hook.guid}/recover`, { since: new Date(0).toISOString() });
  assert.equal(rec.status, 409);

  rx.respond = () => 200;
  const on = await s.api('PATCH', `/v4/webhooks/${hook.guid}`, { is_active: true });
  assert.equal(on.status, 200, on.body);
  assert.equal(on.json().deactivated_reason ?? null, null);
  const rec2 = await s.api('POST', `/v4/webhooks/${hook.guid}/recover`, { since: new Date(0).toISOString() });
  assert.equal(rec2.status, 202);
  assert.equal(rec2.json().count, 1, 'the delivery the 410 failed');
  await rx.waitFor(2);
});
