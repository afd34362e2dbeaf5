// Test harness: starts the real shortlinkd binary on loopback with a fresh data
// directory, a webhook receiver on loopback, and small HTTP helpers. Every
// server a test talks to is one it started here.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const BIN = process.env.SHORTLINKD_BIN;
export const SHARED = process.env.SHARED_DIR;
export const GEOIP_TEST_DB = SHARED && path.join(SHARED, 'geoip-test-data', 'GeoIP2-Country-Test.mmdb');

if (!BIN) throw new Error('SHORTLINKD_BIN is not set (run through ctest)');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix = 'shortlinkd-test-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// Starts shortlinkd; resolves once /healthz answers. `args` are extra flags.
export async function startServer({ dataDir = tempDir(), port, args = [], env = {} } = {}) {
  port = port ?? (await freePort());
  const base = `http://127.0.0.1:${port}`;
  const argv = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
    '--public-url', base, ...args];
  const child = spawn(BIN, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Leak checks belong to the unit tests; a server stopped by a signal in
    // the middle of work is not a leak.
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0', ...env },
  });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  // A server that dies on its own (not stopped by the test) is a failure worth
  // its log, whatever the test then reports.
  let stopping = false;
  exited.then(({ code, signal }) => {
    if (!stopping && code !== 0) console.error(`shortlinkd exited (${code ?? signal}):\n${log}`);
  });
  const server = { child, port, base, dataDir, argv, exited, get log() { return log; } };
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`shortlinkd exited (${child.exitCode}):\n${log}`);
    try {
      const r = await request(base + '/healthz');
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`shortlinkd did not start:\n${log}`); }
    await sleep(50);
  }
  server.token = fs.readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim();
  server.api = (method, route, body, token = server.token) =>
    request(base + route, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
    });
  server.stop = async (signal = 'SIGTERM') => {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  return server;
}

// startServer for a test file that stops what it started from one cleanup
// list (killed, as a crash would). A restart passes the old port: the public
// URL, and so every body built from it, stays the same.
export async function startTracked(cleanup, args, dataDir = tempDir(), port = undefined) {
  const s = await startServer({ dataDir, args, port });
  cleanup.push(() => s.stop('SIGKILL'));
  return s;
}

// One HTTP request without following redirects. Resolves to
// {status, headers, body (string), raw (Buffer), json()}.
export function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const text = raw.toString('utf8');
        resolve({ status: res.statusCode, headers: res.headers, raw, body: text,
          json: () => JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.setTimeout(15000, () => req.destroy(new Error(`timeout: ${method} ${url}`)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// A webhook receiver on loopback. `respond(entry, n, res)` picks each answer: a
// status number or {status, headers, body}; or it answers through `res` itself
// (or never, to hang) and returns nothing. The default is 200. `respond` may be
// replaced while a test runs (rx.respond = ...).
export async function startReceiver(respond = () => 200) {
  const received = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const entry = { method: req.method, url: req.url, headers: req.headers, raw: Buffer.concat(chunks), at: Date.now() };
      received.push(entry);
      let answer = rx.respond(entry, received.length, res);
      if (typeof answer === 'number') answer = { status: answer };
      if (answer) {
        res.writeHead(answer.status, answer.headers ?? { 'content-type': 'text/plain' });
        res.end(answer.body ?? 'ok');
      }
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  const rx = {
    respond,
    received,
    port,
    base: `http://127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}/hook`,
    // Waits until at least n requests arrived (or throws after timeoutMs).
    async waitFor(n, timeoutMs = 20000) {
      const deadline = Date.now() + timeoutMs;
      while (received.length < n) {
        if (Date.now() > deadline) throw new Error(`receiver got ${received.length} of ${n} requests`);
        await Promise.race([new Promise((r) => waiters.push(r)), sleep(100)]);
      }
      return received;
    },
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
  return rx;
}
