// Webhook delivery under faults (issue 5): a hanging endpoint beside a
// healthy one, kill -9 of the server in the middle of a burst, a receiver
// failing a share of attempts, and an OAuth token endpoint with a short
// expires_in under a burst. Every server is started here on 127.0.0.1.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { request, sleep, startReceiver, startTracked, tempDir } from '../lib/harness.mjs';

const BROWSER = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Safari/605.1.15';
const LOOPBACK = ['--webhook-allow-cidr', '127.0.0.0/8'];

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

// A loopback receiver (the harness's); handle(res, entry, n) answers, or
// leaves the request hanging by not answering.
async function receiver(handle = (res) => { res.writeHead(200); res.end('ok'); }) {
  const rx = await startReceiver((entry, n, res) => { handle(res, entry, n); });
  cleanup.push(rx.close);
  return rx;
}

const server = (args, dataDir, port) => startTracked(cleanup, args, dataDir, port);

async function hook(s, url, extra = {}) {
  const user = (await s.api('GET', '/v4/user')).json();
  const r = await s.api('POST', '/v4/webhooks', {
    name: 'crm', url, group_guid: user.default_group_guid, is_active: true, ...extra,
  });
  assert.equal(r.status, 201, r.body);
  return r.json();
}

async function shorten(s, longUrl) {
  const r = await s.api('POST', '/v4/shorten', { long_url: longUrl });
  assert.ok(r.status === 200 || r.status === 201, r.body);
  return r.json();
}

const click = (s, code) => request(`${s.base}/${code}`, { headers: { 'user-agent': BROWSER } });

async function deliveries(s, guid, query = '') {
  const r = await s.api('GET', `/v4/webhooks/${guid}/deliveries${query}`);
  assert.equal(r.status, 200, r.body);
  return r.json().deliveries;
}

async function until(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('a hanging endpoint does not delay a healthy one', async () => {
  const TIMEOUT_MS = 4000;
  const hung = await receiver(() => { /* never answers */ });
  const healthy = await receiver();
  const s = await server([...LOOPBACK, '--webhook-timeout-ms', String(TIMEOUT_MS),
    '--webhook-max-per-endpoint', '2', '--webhook-retry-delays', '600']);
  const slow = await hook(s, hung.url);
  const fast = await hook(s, healthy.url);
  const { id } = await shorten(s, 'https://example.com/isolation');
  const code = id.split('/')[1];
  const N = 6;
  const clicked = Date.now();
  for (let i = 0; i < N; i++) assert.equal((await click(s, code)).status, 302);

  await until('the healthy deliveries', async () => healthy.received.length >= N);
  // Every healthy delivery landed while the hung endpoint's first attempts
  // were still waiting for their timeout: nothing of the hung one is logged.
  assert.equal((await deliveries(s, slow.guid)).length, 0, 'no hung attempt had timed out yet');
  assert.ok(healthy.received.every((e) => e.at - clicked < TIMEOUT_MS / 2),
    'healthy deliveries within half the configured timeout of the clicks');
  assert.ok(hung.received.length >= 1 && hung.received.length <= 2, 'the per-endpoint cap holds');
  const ok = await deliveries(s, fast.guid);
  assert.equal(ok.length, N);
  assert.ok(ok.every((a) => a.outcome === 'delivered'));

  // The hung ones end as timeouts, each a failed attempt scheduled again.
  const timedOut = await until('hung attempts timing out', async () => {
    const l = await deliveries(s, slow.guid);
    return l.length >= 2 ? l : null;
  }, TIMEOUT_MS * 4);
  for (const a of timedOut) {
    assert.equal(a.outcome, 'retry');
    assert.equal(a.http_status, 0);
    assert.match(a.error, /time/i);
    assert.ok(a.duration_ms >= TIMEOUT_MS - 100, `${a.duration_ms} ms`);
  }
});

test('kill -9 in the middle of a burst: every committed engagement is delivered at least once', async () => {
  // A receiver that fails about one attempt in five, answering in its own time.
  let n = 0;
  const rx = await receiver((res) => {
    n++;
    setTimeout(() => { res.writeHead(n % 5 === 0 ? 500 : 200); res.end(); }, n % 7);
  });
  const dataDir = tempDir();
  const args = [...LOOPBACK, '--webhook-retry-delays', '1,1,1,1,1'];
  let s = await server(args, dataDir);
  const h = await hook(s, rx.url);
  const link = await shorten(s, 'https://example.com/burst');
  const code = link.id.split('/')[1];

  const TOTAL = 200;
  let sent = 0;
  const burst = (async () => {
    for (let i = 0; i < TOTAL; i += 10) {
      const batch = [];
      for (let k = 0; k < 10; k++) batch.push(click(s, code).then(() => { sent++; }, () => {}));
      await Promise.all(batch);
    }
  })();
  await until('half the burst', async () => sent >= TOTAL / 2 || rx.received.length >= 20);
  await s.stop('SIGKILL');
  await burst;

  s = await server(args, dataDir, s.port);
  const summary = await s.api('GET', `/v4/bitlinks/${link.id}/clicks/summary?unit=day&units=-1`);
  assert.equal(summary.status, 200, summary.body);
  const committed = summary.json().total_clicks;
  assert.ok(committed > 0 && committed <= TOTAL, `${committed} committed`);
  console.log(`# kill -9 after ${sent} clicks answered: ${committed} committed`);

  const distinct = () => new Set(rx.received.map((e) => e.headers['webhook-id']));
  const delivered = async () => new Set((await deliveries(s, h.guid, '?outcome=delivered&size=1000'))
    .map((a) => a.event_id));
  await until(`${committed} engagements delivered`, async () => (await delivered()).size >= committed, 60000);
  assert.equal((await delivered()).size, committed, 'one delivered event per committed engagement');
  assert.ok(distinct().size >= committed);

  // Duplicates (attempts repeated after the kill, retries) share one id and
  // carry the same bytes.
  const byId = new Map();
  for (const e of rx.received) {
    const id = e.headers['webhook-id'];
    const body = JSON.parse(e.raw.toString('utf8'));
    assert.equal(body.event_id, id);
    new Webhook(h.signing_secret).verify(e.raw.toString('utf8'), e.headers);
    if (byId.has(id)) assert.deepEqual(e.raw, byId.get(id));
    else byId.set(id, e.raw);
  }
  // Nothing is delivered for an engagement that was never committed.
  assert.equal(distinct().size, committed);
});

test('OAuth: a token with a short expires_in is fetched a handful of times under a burst', async () => {
  const issued = new Map(); // token -> expiry (ms)
  let tokenRequests = 0;
  const CLIENT = 'shortlinkd-client';
  const SECRET = 'client-secret-value';
  const tokens = await receiver((res, entry) => {
    tokenRequests++;
    const basic = Buffer.from(`${CLIENT}:${SECRET}`).toString('base64');
    if (entry.headers.authorization !== `Basic ${basic}` ||
        entry.raw.toString() !== 'grant_type=client_credentials') {
      res.writeHead(401); res.end(); return;
    }
    const token = `tok-${tokenRequests}`;
    issued.set(token, Date.now() + 4000);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ access_token: token, token_type: 'Bearer', expires_in: 4 }));
  });
  const rx = await receiver((res, entry) => {
    const t = (entry.headers.authorization ?? '').replace(/^Bearer /, '');
    const ok = issued.has(t) && issued.get(t) > Date.now();
    res.writeHead(ok ? 200 : 401); res.end();
  });
  const s = await server([...LOOPBACK, '--webhook-retry-delays', '1,1,1']);
  const h = await hook(s, rx.url, { oauth_url: `${tokens.base}/token`, client_id: CLIENT, client_secret: SECRET });
  const { id } = await shorten(s, 'https://example.com/oauth');
  const code = id.split('/')[1];

  // 100 engagements over about 6 s: the token expires (is dropped early) a few times.
  const N = 100;
  for (let i = 0; i < N; i += 10) {
    await Promise.all(Array.from({ length: 10 }, () => click(s, code)));
    await sleep(600);
  }
  await until('all deliveries', async () =>
    (await deliveries(s, h.guid, '?outcome=delivered&size=1000')).length >= N, 30000);
  console.log(`# ${tokenRequests} token requests for ${N} events`);
  assert.ok(tokenRequests >= 1 && tokenRequests <= 10, `${tokenRequests} token requests for ${N} events`);
  assert.ok(rx.received.every((e) => /^Bearer tok-\d+$/.test(e.headers.authorization ?? '')));
  const log = s.log;
  for (const t of issued.keys()) assert.ok(!log.includes(t), 'tokens never logged');
  assert.ok(!log.includes(SECRET), 'client secret never logged');
  const shown = await s.api('GET', `/v4/webhooks/${h.guid}`);
  assert.ok(!shown.body.includes(SECRET));
});
