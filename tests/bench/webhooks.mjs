// Webhook benchmark (issue 5; not a timed test). Runs the real binary on
// 127.0.0.1 against loopback receivers started here and prints:
//   1. engagements per second fanned out to one keep-alive receiver, against
//      the redirect rate of the same clicks with no webhook (the baseline);
//   2. click-to-delivery p50 and p99 at a paced rate the dispatcher keeps up
//      with (--rate clicks/s), against the redirect round trip at that rate;
//      and under the saturating burst of 1, where it measures the queue;
//   3. LMDB bytes and RSS per pending delivery with --pending deliveries
//      waiting on an endpoint that never answers, against the same clicks
//      with no webhook.
// Usage (from tests/): SHORTLINKD_BIN=../build/bench/shortlinkd node bench/webhooks.mjs
//   [--clicks 20000] [--pending 1000000] [--concurrency 64] [--rate 500] [--smoke]
// --smoke runs a few seconds with small numbers and checks only that it ends.
import fs from 'node:fs';
import http from 'node:http';
import { startServer, tempDir } from '../lib/harness.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const SMOKE = argv.includes('--smoke');
const CLICKS = opt('clicks', SMOKE ? 300 : 20000);
const PENDING = opt('pending', SMOKE ? 1000 : 1000000);
const CONCURRENCY = opt('concurrency', 64);
const RATE = opt('rate', SMOKE ? 200 : 500);
const PACED = SMOKE ? 200 : 5000;
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function get(url) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent, headers: { 'user-agent': BROWSER } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

// Fires n clicks on code, CONCURRENCY at a time; returns the send time of
// each (by index, carried in the query) and the elapsed milliseconds.
async function burst(s, code, n) {
  const sentAt = new Float64Array(n);
  const rtt = [];
  let next = 0;
  const t0 = performance.now();
  const lane = async () => {
    while (next < n) {
      const i = next++;
      const start = performance.now();
      sentAt[i] = Date.now();
      const status = await get(`${s.base}/${code}?i=${i}`);
      if (status !== 302) throw new Error(`click ${i}: ${status}`);
      rtt.push(performance.now() - start);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, lane));
  return { sentAt, rtt, ms: performance.now() - t0 };
}

// n clicks at a steady rate (one every 1000/rate ms); returns send times and
// redirect round trips.
async function paced(s, code, n, rate, offset) {
  const sentAt = new Float64Array(n);
  const rtt = [];
  const t0 = performance.now();
  const pending = [];
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const start = performance.now();
    sentAt[i] = Date.now();
    pending.push(get(`${s.base}/${code}?i=${offset + i}`).then(() => rtt.push(performance.now() - start)));
  }
  await Promise.all(pending);
  return { sentAt, rtt };
}

async function receiver(answer) {
  const arrivals = [];
  const server = http.createServer({ keepAlive: true }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      arrivals.push({ at: Date.now(), raw: Buffer.concat(chunks) });
      answer(res);
    });
  });
  server.keepAliveTimeout = 60000;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    arrivals,
    url: `http://127.0.0.1:${server.address().port}/hook`,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

async function metric(s, name) {
  const r = await fetch(`${s.base}/metrics`);
  const m = (await r.text()).match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

function rssBytes(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Number(m[1]) * 1024 : NaN;
}

async function waitUntil(fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function setup(args, hookUrl) {
  const s = await startServer({ dataDir: tempDir('shortlinkd-bench-'), args: ['--webhook-allow-cidr', '127.0.0.0/8', '--log-level', 'error', ...args] });
  const user = await (await fetch(`${s.base}/v4/user`, { headers: { authorization: `Bearer ${s.token}` } })).json();
  if (hookUrl) {
    const r = await s.api('POST', '/v4/webhooks', { name: 'bench', url: hookUrl, group_guid: user.default_group_guid });
    if (r.status !== 201) throw new Error(r.body);
  }
  const link = (await s.api('POST', '/v4/shorten', { long_url: 'https://example.com/bench' })).json();
  return { s, code: link.id.split('/')[1] };
}

async function throughput() {
  // Baseline: the same clicks, no webhook.
  const base = await setup([]);
  const b = await burst(base.s, base.code, CLICKS);
  const bp = await paced(base.s, base.code, PACED, RATE, CLICKS);
  await base.s.stop();

  const rx = await receiver((res) => { res.writeHead(200); res.end(); });
  const run = await setup(['--webhook-max-per-endpoint', '32'], rx.url);
  const t0 = Date.now();
  const r = await burst(run.s, run.code, CLICKS);
  await waitUntil(() => rx.arrivals.length >= CLICKS, 600000);
  const elapsed = (Math.max(...rx.arrivals.map((a) => a.at)) - t0) / 1000;
  const index = (a) => Number(/"passed_params":"i=(\d+)"/.exec(a.raw.toString())[1]);
  const burstLat = rx.arrivals.map((a) => a.at - r.sentAt[index(a)]);
  const p = await paced(run.s, run.code, PACED, RATE, CLICKS);
  await waitUntil(() => rx.arrivals.length >= CLICKS + PACED, 600000);
  const lat = rx.arrivals.slice(CLICKS).map((a) => a.at - p.sentAt[index(a) - CLICKS]);
  await run.s.stop();
  await rx.close();
  const clicksPerS = CLICKS / (b.ms / 1000);
  const deliveredPerS = CLICKS / elapsed;
  return {
    clicks: CLICKS,
    baseline_redirects_per_s: Math.round(clicksPerS),
    delivered_per_s: Math.round(deliveredPerS),
    delivered_vs_redirects: +(deliveredPerS / clicksPerS).toFixed(3),
    paced_rate_per_s: RATE,
    click_to_delivery_ms: { p50: pct(lat, 50), p99: pct(lat, 99) },
    baseline_redirect_rtt_ms: { p50: +pct(bp.rtt, 50).toFixed(2), p99: +pct(bp.rtt, 99).toFixed(2) },
    click_to_delivery_vs_redirect_p50: +(pct(lat, 50) / pct(bp.rtt, 50)).toFixed(1),
    burst_click_to_delivery_ms: { p50: pct(burstLat, 50), p99: pct(burstLat, 99) },
  };
}

// LMDB bytes and RSS after `clicks` engagements, with or without a webhook
// whose endpoint never answers (so every delivery stays pending).
async function footprint(withHook) {
  const rx = withHook ? await receiver(() => { /* never answers */ }) : null;
  const run = await setup(['--webhook-max-per-endpoint', '1', '--webhook-timeout-ms', '600000'], rx?.url);
  const used0 = await metric(run.s, 'shortlinkd_lmdb_map_used_bytes');
  const rss0 = rssBytes(run.s.child.pid);
  await burst(run.s, run.code, PENDING);
  await waitUntil(async () => (await metric(run.s, 'shortlinkd_engagements_recorded_total')) >= PENDING, 600000);
  if (withHook)
    await waitUntil(async () => (await metric(run.s, 'shortlinkd_webhook_deliveries_pending')) >= PENDING, 600000);
  const out = {
    lmdb_bytes: (await metric(run.s, 'shortlinkd_lmdb_map_used_bytes')) - used0,
    rss_bytes: rssBytes(run.s.child.pid) - rss0,
    pending: withHook ? await metric(run.s, 'shortlinkd_webhook_deliveries_pending') : 0,
  };
  await run.s.stop('SIGKILL');
  await rx?.close();
  return out;
}

const t = await throughput();
const without = await footprint(false);
const withHook = await footprint(true);
const result = {
  ...t,
  pending: withHook.pending,
  lmdb_bytes_per_engagement_baseline: Math.round(without.lmdb_bytes / PENDING),
  lmdb_bytes_per_pending_delivery: Math.round((withHook.lmdb_bytes - without.lmdb_bytes) / PENDING),
  rss_bytes_per_pending_delivery: Math.round((withHook.rss_bytes - without.rss_bytes) / PENDING),
  lmdb_with_vs_without: +(withHook.lmdb_bytes / without.lmdb_bytes).toFixed(3),
};
agent.destroy();
console.log(JSON.stringify(result, null, 2));
