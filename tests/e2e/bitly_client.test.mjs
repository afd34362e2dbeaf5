// Bitly's own Node.js client, the npm package `bitly` used as published, against
// shortlinkd (issue 3). The client hard-codes https and takes only a host name
// in its apiUrl option (a "host:port" is mangled by its URL building), so the
// test serves TLS on 127.0.0.1:443 with a certificate it makes with the openssl
// command, and the client runs in a child process that trusts it through
// NODE_EXTRA_CA_CERTS. The token is passed to the client as its README says:
// the bare token, which the client sends as the whole Authorization header.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GEOIP_TEST_DB, request, sleep, startServer, tempDir } from '../lib/harness.mjs';

const TESTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
const certDir = tempDir('shortlinkd-tls-');
const cert = path.join(certDir, 'cert.pem');
const key = path.join(certDir, 'key.pem');
let server;
let portProblem;

// The child: runs each [method, ...args] on a BitlyClient pointed at our host
// and prints one JSON line per call, {ok} or {error} (the client throws the
// response body on an HTTP error).
const CHILD = `
const { createRequire } = require('node:module');
const { BitlyClient } = createRequire(process.env.TESTS_PKG)('bitly');
const client = new BitlyClient(process.env.TOKEN, { apiUrl: '127.0.0.1', domain: 'bit.ly' });
(async () => {
  for (const [method, ...args] of JSON.parse(process.env.CALLS)) {
    try {
      console.log(JSON.stringify({ ok: await client[method](...args) }));
    } catch (e) {
      console.log(JSON.stringify({ error: e && e.message !== undefined && !e.description ? { thrown: String(e.message), code: e.code } : e }));
    }
  }
})();
`;

function runClient(calls, token = server.token) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', CHILD], {
      cwd: TESTS,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: cert, TESTS_PKG: path.join(TESTS, 'package.json'),
        TOKEN: token, CALLS: JSON.stringify(calls) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`client exited ${code}: ${err}`));
      resolve(out.trim().split('\n').map((l) => JSON.parse(l)));
    });
  });
}

// Port 443 is the only one the client can reach; binding it needs root or
// CAP_NET_BIND_SERVICE.
async function probe443() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', (e) => resolve(e.code));
    s.listen(443, '127.0.0.1', () => s.close(() => resolve(null)));
  });
}

before(async () => {
  portProblem = await probe443();
  if (portProblem === 'EACCES') return;
  assert.equal(portProblem, null, '127.0.0.1:443 is taken by something else');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  server = await startServer({
    args: ['--tls-listen', '127.0.0.1:443', '--tls-cert', cert, '--tls-key', key,
      '--public-url', 'https://127.0.0.1', '--geoip-db', GEOIP_TEST_DB, '--trusted-proxy', '127.0.0.1/32'],
  });
});
after(async () => {
  await server?.stop();
  fs.rmSync(certDir, { recursive: true, force: true });
});

test('bitly_client_shorten_info_expand_clicks_countries_and_errors', async (t) => {
  if (portProblem === 'EACCES') return t.skip('binding 127.0.0.1:443 needs root or CAP_NET_BIND_SERVICE');
  const longUrl = 'https://example.com/from-bitly-client?a=1';
  const [shortened, again, info] = await runClient([['shorten', longUrl], ['shorten', longUrl], ['info', 'abcdefg']]);
  assert.ok(shortened.ok, JSON.stringify(shortened));
  const link = shortened.ok;
  assert.equal(link.long_url, longUrl);
  assert.match(link.id, /^127\.0\.0\.1\/[A-Za-z0-9]{7}$/);
  assert.equal(link.link, `https://127.0.0.1/${link.id.split('/')[1]}`);
  assert.match(link.created_at, /\+0000$/);
  assert.equal(again.ok.id, link.id, 'shortening again gives the same link');
  assert.equal(info.error.message, 'NOT_FOUND', 'an unknown hash is a Bitly 404 body');

  // Three visits from two countries, through the plain listener.
  const code = link.id.split('/')[1];
  for (const ip of ['81.2.69.160', '81.2.69.161', '89.160.20.112']) {
    const r = await request(`${server.base}/${code}`, { headers: { 'user-agent': BROWSER, 'x-forwarded-for': ip } });
    assert.equal(r.status, 302);
  }
  for (let i = 0; ; i++) {
    const s = await server.api('GET', `/v4/bitlinks/${link.id}/clicks/summary`);
    if (s.json().total_clicks === 3) break;
    assert.ok(i < 100, `clicks not committed: ${s.body}`);
    await sleep(50);
  }

  // The client rewrites every id to bit.ly/{hash}; that works here.
  const [got, expanded, clicks, byDay, countries, referrers, badUrl] = await runClient([
    ['info', link.id], ['expand', link.link], ['clicks', link.id], ['clicksByDay', link.id],
    ['countries', link.id], ['referrers', link.id], ['shorten', 'not a url'],
  ]);
  assert.ok(got.ok, JSON.stringify(got));
  assert.equal(got.ok.id, link.id);
  assert.equal(got.ok.long_url, longUrl);
  assert.deepEqual(expanded.ok, { created_at: link.created_at, link: link.link, id: link.id, long_url: longUrl });
  assert.ok(clicks.ok, JSON.stringify(clicks));
  assert.equal(clicks.ok.unit, 'day');
  assert.equal(clicks.ok.units, -1);
  assert.equal(clicks.ok.link_clicks.length, 1, 'a link made today has one day');
  assert.equal(clicks.ok.link_clicks[0].clicks, 3);
  assert.deepEqual(byDay.ok.link_clicks, clicks.ok.link_clicks);
  assert.equal(countries.ok.facet, 'countries');
  assert.deepEqual(countries.ok.metrics, [{ value: 'GB', clicks: 2 }, { value: 'SE', clicks: 1 }]);
  assert.deepEqual(referrers.ok.metrics, [{ value: 'direct', clicks: 3 }]);
  assert.deepEqual(badUrl.error, {
    message: 'INVALID_ARG_LONG_URL', description: badUrl.error.description, resource: 'bitlinks',
    errors: [{ field: 'long_url', error_code: 'invalid' }],
  });

  // A wrong token is a Bitly 403 body through the client too.
  const [denied] = await runClient([['shorten', longUrl]], '0'.repeat(40));
  assert.equal(denied.error.message, 'FORBIDDEN');
});

test('tls_listener_speaks_http2', async (t) => {
  if (portProblem === 'EACCES') return t.skip('binding 127.0.0.1:443 needs root or CAP_NET_BIND_SERVICE');
  const session = http2.connect('https://127.0.0.1:443', { ca: fs.readFileSync(cert) });
  try {
    const res = await new Promise((resolve, reject) => {
      const req = session.request({ ':path': '/v4/user', authorization: `Bearer ${server.token}` });
      let body = '';
      let status;
      req.on('response', (h) => { status = h[':status']; });
      req.on('data', (d) => { body += d; });
      req.on('end', () => resolve({ status, body }));
      req.on('error', reject);
    });
    assert.equal(res.status, 200, res.body);
    assert.equal(session.alpnProtocol, 'h2');
    assert.match(JSON.parse(res.body).default_group_guid, /^[A-Za-z][A-Za-z0-9]{10}$/);
  } finally {
    session.close();
  }
});
