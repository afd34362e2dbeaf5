// The redirect path under load, against the real binary on loopback: the
// store warm-up at start, and backpressure that slows clicks down rather
// than dropping them when the writer falls behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';
import { freePort, request, sleep, startServer, tempDir } from '../lib/harness.mjs';

async function metrics(server) {
  const r = await request(`${server.base}/metrics`);
  const m = {};
  for (const line of r.body.split('\n')) {
    const mm = /^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$/.exec(line);
    if (mm) m[mm[1]] = Number(mm[2]);
  }
  return m;
}

// The metrics once name reads value, or when timeoutMs have passed.
async function metricsOnce(server, name, value, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let m = await metrics(server);
  while (m[name] !== value && Date.now() < deadline) {
    await sleep(20);
    m = await metrics(server);
  }
  return m;
}

test('the store is mapped into memory at start, and not with --no-warm', async () => {
  const s = await startServer();
  try {
    const m = await metricsOnce(s, 'shortlinkd_store_warm_done', 1, 10000);
    assert.equal(m.shortlinkd_store_warm_done, 1);
    assert.ok(m.shortlinkd_store_warm_bytes > 0, `${m.shortlinkd_store_warm_bytes} bytes warmed`);
    assert.ok(m.shortlinkd_store_warm_bytes <= m.shortlinkd_lmdb_map_used_bytes + 4096);
  } finally { await s.stop(); }

  const cold = await startServer({ args: ['--no-warm'] });
  try {
    await sleep(200);
    const m = await metrics(cold);
    assert.equal(m.shortlinkd_store_warm_done, 0);
    assert.equal(m.shortlinkd_store_warm_bytes, 0);
  } finally { await cold.stop(); }
});

test('a queue too small for a burst slows the clicks down and drops none', async () => {
  // 1024 slots, and a writer that would otherwise wait 1 s to gather a
  // group: a burst of 6000 clicks on 48 connections, spread over more workers
  // than cores, outruns it at once.
  const s = await startServer({
    args: ['--queue-capacity', '1024', '--flush-interval-ms', '1000', '--workers', '8'],
  });
  try {
    const link = (await s.api('POST', '/v4/shorten', { long_url: 'https://example.com/burst' })).json();
    const path = `/${link.id.split('/')[1]}`;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 48 });
    const TOTAL = 6000;
    let statuses = new Map();
    await Promise.all(Array.from({ length: TOTAL }, () => new Promise((resolve, reject) => {
      http.get(`${s.base}${path}`, { agent, headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64)' } },
        (res) => {
          statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
          res.resume();
          res.on('end', resolve);
        }).on('error', reject);
    })));
    agent.destroy();
    assert.deepEqual([...statuses], [[302, TOTAL]]);
    const deadline = Date.now() + 10000;
    let m = await metrics(s);
    while (m.shortlinkd_engagements_recorded_total < TOTAL && Date.now() < deadline) {
      await sleep(50);
      m = await metrics(s);
    }
    assert.equal(m.shortlinkd_engagements_dropped_total, 0);
    assert.equal(m.shortlinkd_engagements_recorded_total, TOTAL);
    assert.ok(m.shortlinkd_backlog_pauses_total > 0, 'the workers paused for the writer');
  } finally { await s.stop(); }
});

// The nice value of each of the server's threads, from /proc.
function threadNices(pid) {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

test('the writer thread runs at a lower priority than the workers, as --writer-nice says', async () => {
  const s = await startServer();
  try {
    const nices = threadNices(s.child.pid);
    assert.equal(nices.filter((n) => n === 5).length, 1, `nice values ${nices}`);
    assert.ok(nices.filter((n) => n === 0).length >= 2, `nice values ${nices}`);
  } finally { await s.stop(); }
  const flat = await startServer({ args: ['--writer-nice', '0'] });
  try {
    assert.deepEqual(threadNices(flat.child.pid).filter((n) => n !== 0), []);
  } finally { await flat.stop(); }
  await assert.rejects(startServer({ args: ['--writer-nice', '20'] }), /writer-nice/);
});

// Sends n clicks over `sockets` keep-alive connections; resolves to how many
// were answered with a 302 (some may fail when the server stops midway).
function clicks(base, path, n, agent) {
  let answered = 0;
  return Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    http.get(`${base}${path}`, { agent, headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64)' } },
      (res) => {
        if (res.statusCode === 302) answered++;
        res.resume();
        res.on('end', resolve);
        res.on('error', resolve);
      }).on('error', resolve);
  }))).then(() => answered);
}

test('SIGTERM with keep-alive connections open stops cleanly and keeps every answered click', async () => {
  const dataDir = tempDir();
  let s = await startServer({ dataDir });
  const link = (await s.api('POST', '/v4/shorten', { long_url: 'https://example.com/stop' })).json();
  const path = `/${link.id.split('/')[1]}`;

  // Idle keep-alive connections: the clients keep them open after 300 clicks.
  const idle = new http.Agent({ keepAlive: true, maxSockets: 16 });
  assert.equal(await clicks(s.base, path, 300, idle), 300);
  // And a burst still under way when the signal comes.
  const busy = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const burst = clicks(s.base, path, 3000, busy);
  await sleep(30);
  const { code, signal } = await s.stop('SIGTERM');
  const answered = await burst;
  idle.destroy();
  busy.destroy();
  assert.equal(signal, null, s.log);
  assert.equal(code, 0, s.log);
  assert.match(s.log, /stopped cleanly/);

  s = await startServer({ dataDir });
  try {
    const r = await s.api('GET', `/v4/bitlinks/${link.id}/clicks/summary?unit=day&units=-1`);
    const total = r.json().total_clicks;
    assert.ok(total >= 300 + answered && total <= 3300, `${total} counted, ${300 + answered} answered`);
  } finally { await s.stop(); }
});

test('SIGTERM with a TLS handshake never finished still stops cleanly', async () => {
  const dir = tempDir();
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
  const tlsPort = await freePort();
  const s = await startServer({
    args: ['--tls-listen', `127.0.0.1:${tlsPort}`, '--tls-cert', cert, '--tls-key', key],
  });
  // A client that starts its hello on the TLS port and never finishes it (the
  // listener accepts a connection only once it has data), and an idle plain
  // keep-alive connection.
  const silent = net.connect(tlsPort, '127.0.0.1');
  silent.on('error', () => {});
  await new Promise((resolve) => silent.once('connect', resolve));
  silent.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  const agent = new http.Agent({ keepAlive: true });
  await new Promise((resolve) => http.get(`${s.base}/healthz`, { agent }, (res) => {
    res.resume();
    res.on('end', resolve);
  }));
  await sleep(100);
  const { code, signal } = await s.stop('SIGTERM');
  silent.destroy();
  agent.destroy();
  assert.equal(signal, null, s.log);
  assert.equal(code, 0, s.log);
  assert.match(s.log, /stopped cleanly/);
});

test('a client that connects and waits before its request is still answered', async () => {
  // The listeners accept a connection once its first bytes arrive
  // (TCP_DEFER_ACCEPT), which spares a wakeup per new connection; one that
  // takes its time must still get its redirect, and its click must count.
  const s = await startServer();
  try {
    const link = (await s.api('POST', '/v4/shorten', { long_url: 'https://example.com/slow' })).json();
    const code = link.id.split('/')[1];
    const sock = net.connect(s.port, '127.0.0.1');
    await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    await sleep(2500);
    let answer = '';
    sock.on('data', (d) => { answer += d; });
    const closed = new Promise((resolve) => sock.once('close', resolve));
    sock.write(`GET /${code} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n` +
      'Connection: close\r\n\r\n');
    await closed;
    assert.match(answer, /^HTTP\/1\.1 302 /);
    assert.match(answer, /\r\nlocation: https:\/\/example\.com\/slow\r\n/i);
    const m = await metricsOnce(s, 'shortlinkd_engagements_recorded_total', 1, 5000);
    assert.equal(m.shortlinkd_engagements_recorded_total, 1);
  } finally { await s.stop(); }
});

// Two clicks 300 ms apart (past the counters' own group, which takes waiting
// clicks along) on a server with --group-spacing-ms spacing: how many were
// recorded 300 ms after the second, and how many within 5 s.
async function secondClickRecorded(spacing) {
  const REC = 'shortlinkd_engagements_recorded_total';
  const s = await startServer({ args: ['--group-spacing-ms', String(spacing)] });
  try {
    const link = (await s.api('POST', '/v4/shorten', { long_url: `https://example.com/s${spacing}` })).json();
    const click = async () => {
      const r = await request(`${s.base}/${link.id.split('/')[1]}`,
        { headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64)' } });
      assert.equal(r.status, 302);
    };
    await click();
    assert.equal((await metricsOnce(s, REC, 1, 2000))[REC], 1); // the first goes at once
    await sleep(300);
    await click();
    await sleep(300);
    const soon = (await metrics(s))[REC];
    return { soon, later: (await metricsOnce(s, REC, 2, 5000))[REC] };
  } finally { await s.stop(); }
}

test('--group-spacing-ms holds a click back after a group, and 0 does not', async () => {
  assert.deepEqual(await secondClickRecorded(3000), { soon: 1, later: 2 });
  assert.deepEqual(await secondClickRecorded(0), { soon: 2, later: 2 });
  await assert.rejects(startServer({ args: ['--group-spacing-ms', '10001'] }), /group-spacing-ms/);
});
