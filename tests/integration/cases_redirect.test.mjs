// Handed cases C01-C14 (../shared/cases/README.md) end to end, and the rules
// of issue 4 around them: the real binary on loopback, links made through the
// API, redirects read as raw bytes where a header could be forged, countries
// read back through a loopback webhook receiver and the countries route.
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN, GEOIP_TEST_DB, SHARED, freePort, request, sleep, startReceiver, startServer, tempDir }
  from '../lib/harness.mjs';

const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
const FAST = ['--flush-interval-ms', '20'];
const TRUSTING = ['--geoip-db', GEOIP_TEST_DB, '--trusted-proxy', '127.0.0.1/32',
  '--trusted-proxy', '10.0.0.0/8', '--trusted-proxy', '2001:db8:ffff::/48',
  '--webhook-allow-cidr', '127.0.0.0/8', ...FAST];

// ---- helpers -------------------------------------------------------------

// Sends bytes on a fresh loopback connection and returns every byte the
// server wrote until it closed: the response as it is on the wire, before
// any HTTP client has parsed (or repaired) it.
export function rawExchange(port, bytes, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const sock = net.connect({ host, port }, () => sock.write(bytes));
    sock.on('data', (c) => chunks.push(c));
    sock.on('end', () => resolve(Buffer.concat(chunks)));
    sock.on('error', reject);
    sock.setTimeout(10000, () => { sock.destroy(); reject(new Error('raw exchange timed out')); });
  });
}

// Splits a raw HTTP/1.1 response: status, header lines exactly as sent, body.
function splitRaw(buf) {
  const end = buf.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no end of headers in ${JSON.stringify(buf.toString('latin1'))}`);
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(lines[0].split(' ')[1]);
  return { status, statusLine: lines[0], lines: lines.slice(1), head: buf.subarray(0, end + 4),
    body: buf.subarray(end + 4) };
}

function headerLines(raw, name) {
  const prefix = `${name.toLowerCase()}:`;
  return raw.lines.filter((l) => l.toLowerCase().startsWith(prefix))
    .map((l) => l.slice(prefix.length).replace(/^[ \t]+/, ''));
}

async function rawGet(server, target, { method = 'GET', headers = {}, host = '127.0.0.1' } = {}) {
  const head = [`${method} ${target} HTTP/1.1`, `Host: ${host === '::1' ? `[::1]:${server.port}` : `127.0.0.1:${server.port}`}`,
    'Connection: close', ...Object.entries(headers).flatMap(([k, v]) =>
      (Array.isArray(v) ? v : [v]).map((x) => `${k}: ${x}`))];
  const bytes = Buffer.concat([Buffer.from(head.join('\r\n'), 'latin1'), Buffer.from('\r\n\r\n')]);
  return splitRaw(await rawExchange(server.port, bytes, host));
}

async function shorten(server, longUrl) {
  const r = await server.api('POST', '/v4/shorten', { long_url: longUrl });
  assert.ok(r.status === 200 || r.status === 201, `shorten ${longUrl}: ${r.status} ${r.body}`);
  return r.json();
}

const codeOf = (link) => link.id.slice(link.id.indexOf('/') + 1);

async function locationOf(server, longUrl, visit = '') {
  const link = await shorten(server, longUrl);
  const r = await request(`${server.base}/${codeOf(link)}${visit}`, { headers: { 'user-agent': BROWSER } });
  assert.equal(r.status, 302, r.body);
  return { link, location: r.headers.location };
}

function assertBitlyError(r, field) {
  assert.equal(r.status, 400, `expected 400, got ${r.status}: ${r.body}`);
  const e = r.json();
  for (const k of ['message', 'description', 'resource', 'errors']) assert.ok(k in e, `${k} in ${r.body}`);
  if (field) assert.ok(e.errors.some((x) => x.field === field), `errors name ${field}: ${r.body}`);
  return e;
}

async function metric(server, name) {
  const r = await request(`${server.base}/metrics`);
  const line = r.body.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

async function totalClicks(server, link) {
  const r = await server.api('GET', `/v4/bitlinks/${link.id}/clicks/summary?unit=day&units=-1`);
  assert.equal(r.status, 200, r.body);
  return r.json().total_clicks;
}

// Waits until the writer has committed at least `n` engagements in all.
async function waitRecorded(server, n, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await metric(server, 'shortlinkd_engagements_recorded_total');
    if (got >= n) return got;
    if (Date.now() > deadline) throw new Error(`only ${got} of ${n} engagements recorded`);
    await sleep(25);
  }
}

async function subscribe(server, receiver, extra = {}) {
  const user = (await server.api('GET', '/v4/user')).json();
  const r = await server.api('POST', '/v4/webhooks', {
    name: 'cases', url: receiver.url, group_guid: user.default_group_guid, is_active: true, ...extra,
  });
  assert.equal(r.status, 201, r.body);
  return r.json();
}

// The payloads a receiver got for one bitlink (optionally one webhook).
function payloadsFor(receiver, bitlink, guid) {
  return receiver.received.map((d) => JSON.parse(d.raw.toString('utf8')))
    .filter((p) => p.bitlink === bitlink && (guid === undefined || p.webhook_guid === guid));
}

async function waitPayload(receiver, bitlink, guid, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = payloadsFor(receiver, bitlink, guid);
    if (got.length > 0) return got[0];
    if (Date.now() > deadline) throw new Error(`no webhook for ${bitlink}`);
    await sleep(25);
  }
}

// Makes a fresh link, visits it once with the given headers, and returns the
// country the engagement was recorded with ('' for none), read from the
// webhook payload.
async function countryOf(server, receiver, headers, { host } = {}) {
  const link = await shorten(server, `https://example.com/country/${Math.random().toString(36).slice(2)}`);
  const r = await rawGet(server, `/${codeOf(link)}`, { headers: { 'User-Agent': BROWSER, ...headers }, host });
  assert.equal(r.status, 302, r.statusLine);
  const p = await waitPayload(receiver, link.id);
  assert.equal(p.is_bot, false);
  return { country: p.country ?? '', link };
}

// ---- C01-C09: what is stored and where the visitor lands -----------------

describe('redirect targets', () => {
  let server;
  before(async () => { server = await startServer({ args: FAST }); });
  after(async () => { await server?.stop(); });

  test('C01 international hosts redirect to their ASCII form, and the A-label gives the same', async () => {
    const cases = [
      ['http://tübingen.de/', 'http://xn--tbingen-n2a.de/'],
      ['https://bücher.example/straße', 'https://xn--bcher-kva.example/stra%C3%9Fe'],
      ['http://xn--tbingen-n2a.de/', 'http://xn--tbingen-n2a.de/'],
      ['https://xn--bcher-kva.example/stra%C3%9Fe', 'https://xn--bcher-kva.example/stra%C3%9Fe'],
      // Upper case and a Unicode dot spell the same host.
      ['https://BÜCHER.example/straße', 'https://xn--bcher-kva.example/stra%C3%9Fe'],
    ];
    for (const [input, expected] of cases) {
      const { link, location } = await locationOf(server, input);
      assert.equal(location, expected, input);
      assert.equal(link.long_url, expected, input);
      assert.ok(/^[\x21-\x7e]+$/.test(location), `Location is ASCII: ${location}`);
    }
    const a = await shorten(server, 'http://tübingen.de/');
    const b = await shorten(server, 'http://xn--tbingen-n2a.de/');
    assert.equal(a.id, b.id, 'the U-label and the A-label are one link');
  });

  test('C02 existing escapes kept byte for byte, a raw space escaped, never %2520', async () => {
    let { location } = await locationOf(server, 'http://example.com/bad%20space/');
    assert.equal(location, 'http://example.com/bad%20space/');
    ({ location } = await locationOf(server, 'https://www.example.com/some path'));
    assert.equal(location, 'https://www.example.com/some%20path');
    // Lower-case escapes and escapes of reserved bytes are not re-encoded or decoded.
    ({ location } = await locationOf(server, 'https://example.com/a%2fb%3F?q=%26x'));
    assert.equal(location, 'https://example.com/a%2fb%3F?q=%26x');
  });

  test('C03 the query and fragment are exactly what was stored', async () => {
    for (const u of ['https://example.com/?abc#123', 'https://example.com/?123=foo',
      'https://example.com/p?a=1&a=2&b=&=c#frag?x', 'https://example.com/?q=a+b%2Bc']) {
      const { link, location } = await locationOf(server, u);
      assert.equal(link.long_url, u);
      assert.equal(location, u);
    }
  });

  test('C04 a 3,000-character URL is stored whole; 70,000 is a clean 400 naming the limit', async () => {
    const base = 'https://example.com/long?x=';
    const u3000 = base + 'a'.repeat(3000 - base.length);
    assert.equal(u3000.length, 3000);
    const { link, location } = await locationOf(server, u3000);
    assert.equal(link.long_url, u3000);
    assert.equal(location, u3000);
    const expanded = await server.api('POST', '/v4/expand', { bitlink_id: link.id });
    assert.equal(expanded.json().long_url, u3000);

    // The documented maximum is stored whole too, one byte more is refused.
    const max = 16384;
    const atMax = base + 'b'.repeat(max - base.length);
    const big = await shorten(server, atMax);
    assert.equal(big.long_url, atMax);
    // Read raw: node's HTTP client stops at 16 KiB of headers.
    const rawBig = await rawGet(server, `/${codeOf(big)}`);
    assert.equal(rawBig.status, 302);
    assert.deepEqual(headerLines(rawBig, 'location'), [atMax]);
    const over = await server.api('POST', '/v4/shorten', { long_url: atMax + 'b' });
    assertBitlyError(over, 'long_url');

    const u70000 = base + 'c'.repeat(70000 - base.length);
    const r = await server.api('POST', '/v4/shorten', { long_url: u70000 });
    const e = assertBitlyError(r, 'long_url');
    assert.match(e.description, /16384/, 'the message names the limit');
    const r2 = await server.api('POST', '/v4/bitlinks', { long_url: u70000 });
    assertBitlyError(r2, 'long_url');
  });

  test('C04 a body past --max-body is a clean 413 with Bitly\'s body, never a 500', async () => {
    const s = await startServer({ args: [...FAST, '--max-body', '4096'] });
    try {
      const r = await s.api('POST', '/v4/shorten', { long_url: `https://example.com/${'d'.repeat(5000)}` });
      assert.equal(r.status, 413, r.body);
      assert.equal(r.json().message, 'REQUEST_ENTITY_TOO_LARGE');
      assert.match(r.json().description, /4096/);
    } finally { await s.stop(); }
  });

  test('C05 dangerous, relative and own-domain targets get 400 with Bitly\'s body', async () => {
    const own = server.base; // http://127.0.0.1:PORT, the server's --public-url
    const host = new URL(own).host;
    for (const bad of ['javascript:alert(1)', ' JavaScript:alert(1)', 'data:text/html,x',
      'example.com', 'vbscript:x', 'file:///etc/passwd', 'ftp://example.com/', '//example.com/x',
      '/relative', 'http://', 'https:///path', `${own}/abc`, `${own.toUpperCase().replace('HTTP', 'http')}/abc`,
      `https://${host}/abc`, `http://${host.replace(':', '.:')}/abc`, `http://user@${host}/abc`,
      `http://[::ffff:${host.replace(':', ']:')}/abc`, `http://2130706433:${server.port}/abc`]) {
      for (const route of ['/v4/shorten', '/v4/bitlinks']) {
        const r = await server.api('POST', route, { long_url: bad });
        assertBitlyError(r, 'long_url');
        // Bitly answers its own links with ALREADY_A_BITLY_LINK.
        assert.ok(['INVALID_ARG_LONG_URL', 'ALREADY_A_BITLY_LINK'].includes(r.json().message),
          `${route} ${bad}: ${r.body}`);
      }
    }
    // Only absolute http(s) outside our domain: a neighbour on another port is not us.
    await locationOf(server, 'https://example.com/');
  });

  test('C05 a server whose public URL is https://s.example refuses links to itself', async () => {
    const s = await startServer({ args: [...FAST, '--public-url', 'https://s.example'] });
    try {
      for (const bad of ['https://s.example/abc', 'http://s.example/abc', 'https://S.EXAMPLE./abc',
        'https://s.example:443/abc']) {
        assertBitlyError(await s.api('POST', '/v4/shorten', { long_url: bad }), 'long_url');
      }
      const ok = await s.api('POST', '/v4/shorten', { long_url: 'https://sub.s.example/abc' });
      assert.ok(ok.status === 200 || ok.status === 201, ok.body);
    } finally { await s.stop(); }
  });

  test('C05 an own domain configured in Unicode is refused in every spelling', async () => {
    const s = await startServer({ args: [...FAST, '--public-url', 'https://bücher.example'] });
    try {
      for (const bad of ['https://bücher.example/abc', 'https://xn--bcher-kva.example/abc',
        'https://BÜCHER.example./abc']) {
        assertBitlyError(await s.api('POST', '/v4/shorten', { long_url: bad }), 'long_url');
      }
    } finally { await s.stop(); }
  });

  test('C06 encoded CR/LF stays encoded in Location; no header is injected (raw bytes)', async () => {
    const u = 'https://example.com/%0D%0ASet-Cookie:x=1';
    const link = await shorten(server, u);
    assert.equal(link.long_url, u);
    const raw = await rawGet(server, `/${codeOf(link)}`, { headers: { 'User-Agent': BROWSER } });
    assert.equal(raw.status, 302);
    assert.deepEqual(headerLines(raw, 'location'), [u]);
    assert.deepEqual(headerLines(raw, 'set-cookie'), []);
    for (const l of raw.lines) assert.ok(/^[A-Za-z0-9-]+: [\x20-\x7e]*$/.test(l), `clean header line ${JSON.stringify(l)}`);

    // The visitor's query can hold encoded CR/LF and raw non-ASCII: encoded
    // stays encoded, raw bytes are escaped, and still no new header line.
    const visit = await rawExchange(server.port, Buffer.concat([
      Buffer.from(`GET /${codeOf(link)}?a=%0D%0ASet-Cookie:y=2&b=`, 'latin1'), Buffer.from('é"<>', 'utf8'),
      Buffer.from(` HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`, 'latin1')]));
    const v = splitRaw(visit);
    assert.equal(v.status, 302);
    assert.deepEqual(headerLines(v, 'location'),
      [`${u}?a=%0D%0ASet-Cookie:y=2&b=%C3%A9%22%3C%3E`]);
    assert.deepEqual(headerLines(v, 'set-cookie'), []);
  });

  test('C06 raw CR/LF and other control bytes in the JSON string are refused with 400', async () => {
    const bodies = [
      '{"long_url":"https://example.com/\\r\\nSet-Cookie: x=1"}',
      '{"long_url":"https://example.com/a\\nb"}',
      '{"long_url":"https://example.com/a\\rb"}',
      '{"long_url":"https://example.com/a\\u0000b"}',
      '{"long_url":"https://example.com/a\\tb"}',
      '{"long_url":"https://example.com/a\\u007fb"}',
      '{"long_url":"https://exa\\r\\nmple.com/"}',
      '{"long_url":"https://example.com/?q=\\r\\n"}',
      '{"long_url":"https://example.com/#\\n"}',
      // Raw bytes inside a JSON string are not JSON at all.
      '{"long_url":"https://example.com/\r\nSet-Cookie: x=1"}',
    ];
    for (const b of bodies) {
      for (const route of ['/v4/shorten', '/v4/bitlinks']) {
        const r = await server.api('POST', route, b);
        assert.equal(r.status, 400, `${route} ${JSON.stringify(b)}: ${r.status} ${r.body}`);
        assertBitlyError(r);
      }
    }
  });

  test('C07 custom back-halves are case-sensitive: /MySlug redirects, /myslug is 404', async () => {
    const r = await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/slug', keyword: 'MySlug' });
    assert.ok(r.status === 200 || r.status === 201, r.body);
    assert.ok(r.json().id.endsWith('/MySlug'), r.body);
    assert.ok(r.json().link.endsWith('/MySlug'), r.body);
    const info = await server.api('GET', `/v4/bitlinks/${r.json().id}`);
    assert.equal(info.status, 200, info.body);
    const yes = await request(`${server.base}/MySlug`);
    assert.equal(yes.status, 302);
    assert.equal(yes.headers.location, 'https://example.com/slug');
    for (const other of ['myslug', 'MYSLUG', 'mySlug', 'MySlu', 'MySlugg']) {
      const no = await request(`${server.base}/${other}`);
      assert.equal(no.status, 404, other);
      assert.equal(no.headers.location, undefined);
    }
  });

  test('C08 a non-ASCII code is a 404 page, never a redirect or a 500', async () => {
    for (const target of ['/%F0%9F%8D%9E', '/%F0%9F%8D%9E/', '/%F0%9F', '/%2e%2e', '/abc%2F',
      '/%00', '/..', '/./abc', '/a'.repeat(40), `/${'x'.repeat(65)}`, '/%', '/%zz', '/abc/def',
      '/MySlug%00', '/MySlug//']) {
      // Raw: node's client would resolve dot segments before sending.
      const r = await rawGet(server, target);
      assert.ok(r.status === 404 || r.status === 400, `${target}: ${r.statusLine}`);
      assert.deepEqual(headerLines(r, 'location'), [], target);
      if (r.status === 404) assert.match(headerLines(r, 'content-type')[0], /text\/html/, target);
    }
    const r = await request(`${server.base}/%F0%9F%8D%9E`);
    assert.equal(r.status, 404);
    assert.match(r.headers['content-type'], /^text\/html/);
    assert.match(r.body, /not found/i);
    // The raw UTF-8 bytes on the wire, as some clients send them.
    const raw = await rawExchange(server.port, Buffer.concat([Buffer.from('GET /', 'latin1'),
      Buffer.from('🍞', 'utf8'), Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'latin1')]));
    const v = splitRaw(raw);
    assert.ok(v.status === 404 || v.status === 400, v.statusLine);
    assert.deepEqual(headerLines(v, 'location'), []);
  });

  test('C09 the visitor query is appended after the target\'s own, before its fragment', async () => {
    const cases = [
      ['https://example.com/p?ref=x#top', '?utm_source=y', 'https://example.com/p?ref=x&utm_source=y#top'],
      ['https://example.com/p#top', '?utm_source=y', 'https://example.com/p?utm_source=y#top'],
      ['https://example.com/p', '?utm_source=y', 'https://example.com/p?utm_source=y'],
      ['https://example.com/p?', '?utm_source=y', 'https://example.com/p?utm_source=y'],
      ['https://example.com/p?a=1&', '?utm_source=y', 'https://example.com/p?a=1&utm_source=y'],
      // Never replacing the target's own parameter of the same name.
      ['https://example.com/p?ref=x', '?ref=y', 'https://example.com/p?ref=x&ref=y'],
      ['https://example.com/p?ref=x#top', '?a=1&b=2', 'https://example.com/p?ref=x&a=1&b=2#top'],
      ['https://example.com/p?ref=x#top', '?', 'https://example.com/p?ref=x#top'],
      ['https://example.com/p?ref=x#top', '', 'https://example.com/p?ref=x#top'],
      // The QR marker is stripped, wherever it stands.
      ['https://example.com/p?ref=x#top', '?sl_qr=1&utm_source=y', 'https://example.com/p?ref=x&utm_source=y#top'],
      ['https://example.com/p#top', '?sl_qr', 'https://example.com/p#top'],
    ];
    for (const [target, visit, expected] of cases) {
      const { location } = await locationOf(server, target, visit);
      assert.equal(location, expected, `${target} + ${visit}`);
    }
  });

  test('a trailing slash redirects like the code itself, query included', async () => {
    const link = await shorten(server, 'https://example.com/slash?ref=x#top');
    const code = codeOf(link);
    const plain = await request(`${server.base}/${code}`);
    const slash = await request(`${server.base}/${code}/`);
    assert.equal(slash.status, 302);
    assert.equal(slash.headers.location, plain.headers.location);
    const q = await request(`${server.base}/${code}/?utm_source=y`);
    assert.equal(q.headers.location, 'https://example.com/slash?ref=x&utm_source=y#top');
    const twice = await request(`${server.base}/${code}//`);
    assert.equal(twice.status, 404);
  });

  test('HEAD answers the same headers as GET with no body and records nothing', async () => {
    const link = await shorten(server, 'https://example.com/head?x=1#f');
    const code = codeOf(link);
    const before = await metric(server, 'shortlinkd_engagements_recorded_total');
    const heads = await metric(server, 'shortlinkd_head_requests_total');
    const head = await rawGet(server, `/${code}?utm_source=y`, { method: 'HEAD', headers: { 'User-Agent': BROWSER } });
    assert.equal(head.status, 302);
    assert.equal(head.body.length, 0, 'no body after a HEAD');
    const get = await rawGet(server, `/${code}?utm_source=y`, { headers: { 'User-Agent': BROWSER } });
    const pick = (r) => Object.fromEntries(['location', 'cache-control', 'content-type']
      .map((h) => [h, headerLines(r, h)]));
    assert.deepEqual(pick(head), pick(get));
    assert.deepEqual(headerLines(head, 'location'), ['https://example.com/head?x=1&utm_source=y#f']);
    assert.equal(await metric(server, 'shortlinkd_head_requests_total'), heads + 1);
    await waitRecorded(server, before + 1);
    await sleep(200);
    assert.equal(await metric(server, 'shortlinkd_engagements_recorded_total'), before + 1, 'only the GET');
    assert.equal(await totalClicks(server, link), 1);
    const missing = await rawGet(server, '/nosuchcodehere', { method: 'HEAD' });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.length, 0);
  });
});

// ---- redirect status -------------------------------------------------------

describe('configurable redirect status', () => {
  for (const [status, cache] of [[301, /max-age=\d+/], [302, /no-store/], [307, /no-store/], [308, /max-age=\d+/]]) {
    test(`--redirect-status ${status} answers ${status} with Cache-Control ${cache}`, async () => {
      const args = status === 302 ? FAST : [...FAST, '--redirect-status', String(status)];
      const s = await startServer({ args });
      try {
        const link = await shorten(s, 'https://example.com/status');
        for (const method of ['GET', 'HEAD']) {
          const r = await rawGet(s, `/${codeOf(link)}`, { method });
          assert.equal(r.status, status, r.statusLine);
          assert.deepEqual(headerLines(r, 'location'), ['https://example.com/status']);
          const cc = headerLines(r, 'cache-control');
          assert.equal(cc.length, 1);
          assert.match(cc[0], cache);
          if (status === 301 || status === 308) assert.doesNotMatch(cc[0], /no-store/);
        }
        const m = await request(`${s.base}/metrics`);
        assert.match(m.body, new RegExp(`shortlinkd_redirects_total\\{status="${status}"\\} 2`));
      } finally { await s.stop(); }
    });
  }
  test('--redirect-status refuses anything but 301, 302, 307, 308', async () => {
    for (const bad of ['300', '303', '200', '3O1', '']) {
      await assert.rejects(startServer({ args: ['--redirect-status', bad] }), /redirect-status/);
    }
  });
});

// ---- C10-C12, C14: the visitor, the country, bots ------------------------

describe('visitors behind trusted proxies', () => {
  let server;
  let receiver;
  before(async () => {
    receiver = await startReceiver();
    server = await startServer({ args: TRUSTING });
    await subscribe(server, receiver);
  });
  after(async () => { await server?.stop(); await receiver?.close(); });

  test('C10 the forwarded-for chain is read from the right past trusted proxies: GB', async () => {
    const { country, link } = await countryOf(server, receiver,
      { 'X-Forwarded-For': '81.2.69.160, 10.0.0.18, 127.0.0.1' });
    assert.equal(country, 'GB');
    // The stored record says the same through the countries route.
    const deadline = Date.now() + 10000;
    let metrics;
    for (;;) {
      const r = await server.api('GET', `/v4/bitlinks/${link.id}/countries?unit=day&units=-1`);
      assert.equal(r.status, 200, r.body);
      metrics = r.json().metrics;
      if (metrics.length > 0 || Date.now() > deadline) break;
      await sleep(50);
    }
    assert.deepEqual(metrics, [{ value: 'GB', clicks: 1 }]);
  });

  test('C10 a client cannot pose as the visitor by writing more entries on the left', async () => {
    const { country } = await countryOf(server, receiver,
      { 'X-Forwarded-For': '216.160.83.56, 89.160.20.112, 10.1.2.3' });
    assert.equal(country, 'SE');
  });

  test('C12 IPv6 and mapped visitors through the header: JP, GB, none', async () => {
    assert.equal((await countryOf(server, receiver, { 'X-Forwarded-For': '2001:218::1' })).country, 'JP');
    assert.equal((await countryOf(server, receiver, { 'X-Forwarded-For': '::ffff:81.2.69.160' })).country, 'GB');
    assert.equal((await countryOf(server, receiver, { 'X-Forwarded-For': '[::ffff:81.2.69.160]:443' })).country, 'GB');
    const { country, link } = await countryOf(server, receiver, { 'X-Forwarded-For': '2001:db8::1' });
    assert.equal(country, '');
    const deadline = Date.now() + 10000;
    while (await totalClicks(server, link) < 1 && Date.now() < deadline) await sleep(50);
    assert.equal(await totalClicks(server, link), 1, 'the click without a country still counts');
  });

  test('invalid entries are skipped, ports dropped, several CIDRs of both families trusted', async () => {
    const expect = [
      ['81.2.69.160, garbage, 10.0.0.18', 'GB'],
      ['81.2.69.160,,  ,10.0.0.18', 'GB'],
      ['81.2.69.160, 999.1.1.1', 'GB'],
      ['81.2.69.160, unknown', 'GB'],
      ['81.2.69.160, 1.2.3.4/8', 'GB'],
      ['81.2.69.160:5555', 'GB'],
      ['[2001:218::1]:443', 'JP'],
      ['[2001:218::1]', 'JP'],
      ['89.160.20.112, 2001:db8:ffff::7', 'SE'],         // trusted IPv6 proxy skipped
      ['89.160.20.112, 2001:db8:1::7', ''],               // untrusted documentation address
      ['10.0.0.1, 10.0.0.2', ''],                         // all trusted: leftmost, private
      ['203.0.113.9', ''],                                // documentation range
      ['192.168.1.1', ''],
      ['81.2.69.160 10.0.0.1', ''],                       // one malformed entry, no visitor in it
      ['\t81.2.69.160\t', 'GB'],
    ];
    for (const [xff, cc] of expect) {
      assert.equal((await countryOf(server, receiver, { 'X-Forwarded-For': xff })).country, cc, xff);
    }
  });

  test('several X-Forwarded-For header lines are one list: the proxy\'s line on the right wins', async () => {
    // The client wrote the first line; our proxy added the second.
    const { country } = await countryOf(server, receiver,
      { 'X-Forwarded-For': ['216.160.83.56', '89.160.20.112, 10.0.0.5'] });
    assert.equal(country, 'SE');
  });

  test('engagement fields: referrer host or direct, device type, no bot flag for people', async () => {
    const link = await shorten(server, 'https://example.com/fields');
    const visits = [
      [{ 'User-Agent': BROWSER, Referer: 'https://News.Example:8443/a?b=c#d' }, 'news.example', 'desktop'],
      [{ 'User-Agent': 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1' }, 'direct', 'mobile'],
      [{ 'User-Agent': 'Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1', Referer: 'not a url' }, 'direct', 'tablet'],
    ];
    const before = payloadsFor(receiver, link.id).length;
    for (const [headers] of visits) {
      assert.equal((await rawGet(server, `/${codeOf(link)}`, { headers })).status, 302);
    }
    const deadline = Date.now() + 15000;
    while (payloadsFor(receiver, link.id).length < before + visits.length && Date.now() < deadline) await sleep(25);
    const got = payloadsFor(receiver, link.id).slice(before).map((p) => [p.referrer, p.device_type, p.is_bot]);
    // Deliveries may arrive in any order.
    assert.deepEqual(got.sort(), visits.map(([, ref, dev]) => [ref, dev, false]).sort());
  });

  test('C14 bots and HEAD probes are redirected alike, counted nowhere, and the bot is flagged', async () => {
    const bots = await startReceiver();
    const botHook = await subscribe(server, bots, { include_bots: true });
    try {
      const link = await shorten(server, 'https://example.com/bots?x=1#f');
      const code = codeOf(link);
      const botsBefore = await metric(server, 'shortlinkd_bot_visits_total');
      const recorded = await metric(server, 'shortlinkd_engagements_recorded_total');
      const bot = await rawGet(server, `/${code}`, { headers: { 'User-Agent': 'Twitterbot/1.0' } });
      const head = await rawGet(server, `/${code}`, { method: 'HEAD', headers: { 'User-Agent': BROWSER } });
      assert.equal(bot.status, 302);
      assert.equal(head.status, 302);
      assert.deepEqual(headerLines(bot, 'location'), ['https://example.com/bots?x=1#f']);
      assert.deepEqual(headerLines(head, 'location'), headerLines(bot, 'location'));
      assert.equal(head.body.length, 0);

      // Other preview fetchers and libraries are bots too.
      const agents = ['facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)',
        'Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)', 'WhatsApp/2.23.20.0 A',
        'Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)', 'LinkedInBot/1.0',
        'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
        'TelegramBot (like TwitterBot)', 'curl/8.5.0', 'python-requests/2.31'];
      for (const ua of agents) {
        const r = await rawGet(server, `/${code}`, { headers: { 'User-Agent': ua } });
        assert.equal(r.status, 302, ua);
      }
      assert.equal(await metric(server, 'shortlinkd_bot_visits_total'), botsBefore + 1 + agents.length);

      // Every bot visit is recorded with its flag (the include_bots webhook
      // sees each one) but no click is counted and the default webhook is quiet.
      await waitRecorded(server, recorded + 1 + agents.length);
      await bots.waitFor(1 + agents.length);
      await sleep(500);
      const flagged = payloadsFor(bots, link.id, botHook.guid);
      assert.equal(flagged.length, 1 + agents.length);
      for (const p of flagged) {
        assert.equal(p.is_bot, true);
        assert.equal(p.device_type, 'bot');
      }
      assert.equal(await totalClicks(server, link), 0);
      assert.deepEqual(payloadsFor(receiver, link.id).filter((p) => p.webhook_guid !== botHook.guid), []);
      const m = await request(`${server.base}/metrics`);
      assert.match(m.body, /shortlinkd_head_requests_total [1-9]/);
    } finally {
      await server.api('DELETE', `/v4/webhooks/${botHook.guid}`);
      await bots.close();
    }
  });
});

describe('visitors without trusted proxies', () => {
  test('C11 a forged X-Forwarded-For is ignored: the loopback peer has no country', async () => {
    const receiver = await startReceiver();
    const server = await startServer({ args: ['--geoip-db', GEOIP_TEST_DB,
      '--webhook-allow-cidr', '127.0.0.0/8', ...FAST] });
    try {
      await subscribe(server, receiver);
      for (const xff of ['81.2.69.160', '81.2.69.160, 127.0.0.1', '2001:218::1']) {
        const { country, link } = await countryOf(server, receiver, { 'X-Forwarded-For': xff });
        assert.equal(country, '', xff);
        const deadline = Date.now() + 10000;
        while (await totalClicks(server, link) < 1 && Date.now() < deadline) await sleep(50);
        assert.equal(await totalClicks(server, link), 1);
      }
    } finally { await server.stop(); await receiver.close(); }
  });
});

// ---- C12 with a real IPv6 socket peer ------------------------------------

// Like the harness's startServer, but listening on [::1] so that the socket
// peer itself is IPv6.
async function startServerV6(args) {
  const port = await freePort();
  const dataDir = tempDir();
  const base = `http://[::1]:${port}`;
  const child = spawn(BIN, ['serve', '--listen', `[::1]:${port}`, '--data-dir', dataDir,
    '--public-url', base, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' },
  });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`shortlinkd on [::1] exited (${child.exitCode}):\n${log}`);
    try {
      if ((await request(`${base}/healthz`)).status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`shortlinkd on [::1] did not start:\n${log}`); }
    await sleep(50);
  }
  const token = fs.readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim();
  const server = {
    port, base, child, get log() { return log; },
    api: (method, route, body) => request(base + route, {
      method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
    stop: async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); return exited; },
  };
  return server;
}

describe('a real IPv6 socket peer', () => {
  test('C12 --listen [::1]:PORT serves; the ::1 peer has no country and its forged header is ignored', async () => {
    const receiver = await startReceiver();
    const server = await startServerV6(['--geoip-db', GEOIP_TEST_DB, '--trusted-proxy', '127.0.0.1/32',
      '--webhook-allow-cidr', '127.0.0.0/8', ...FAST]);
    try {
      await subscribe(server, receiver);
      assert.match((await shorten(server, 'https://example.com/v6')).link, /^http:\/\/\[::1\]:\d+\/\w+$/);
      for (const headers of [{}, { 'X-Forwarded-For': '81.2.69.160' }]) {
        const { country, link } = await countryOf(server, receiver, headers, { host: '::1' });
        assert.equal(country, '', JSON.stringify(headers));
        const deadline = Date.now() + 10000;
        while (await totalClicks(server, link) < 1 && Date.now() < deadline) await sleep(50);
        assert.equal(await totalClicks(server, link), 1, 'the click is counted');
      }
    } finally { await server.stop(); await receiver.close(); }
  });

  test('C12 an IPv6 proxy trusted by CIDR: its X-Forwarded-For is read (JP, GB, none)', async () => {
    const receiver = await startReceiver();
    const server = await startServerV6(['--geoip-db', GEOIP_TEST_DB, '--trusted-proxy', '::1/128',
      '--trusted-proxy', '10.0.0.0/8', '--webhook-allow-cidr', '127.0.0.0/8', ...FAST]);
    try {
      await subscribe(server, receiver);
      const cases = [['2001:218::1', 'JP'], ['::ffff:81.2.69.160', 'GB'], ['2001:db8::1', ''],
        ['216.160.83.56, 10.9.9.9', 'US']];
      for (const [xff, cc] of cases) {
        const { country } = await countryOf(server, receiver, { 'X-Forwarded-For': xff }, { host: '::1' });
        assert.equal(country, cc, xff);
      }
    } finally { await server.stop(); await receiver.close(); }
  });
});

// ---- C13: broken and missing GeoIP databases -----------------------------

const GEO_DIR = path.join(SHARED, 'geoip-test-data');
const BROKEN = [
  ...fs.readdirSync(path.join(GEO_DIR, 'bad')).filter((f) => f.endsWith('.mmdb')).map((f) => path.join(GEO_DIR, 'bad', f)),
  path.join(GEO_DIR, 'MaxMind-DB-test-broken-pointers-24.mmdb'),
  path.join(GEO_DIR, 'MaxMind-DB-test-broken-search-tree-24.mmdb'),
].sort();
const SANITIZER = /AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|runtime error:|SUMMARY: /;

// Runs `shortlinkd serve` until it exits (or kills it after timeoutMs) and
// returns its exit code, signal and stderr.
async function runUntilExit(args, timeoutMs = 20000) {
  const port = await freePort();
  const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', tempDir(), ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' } });
  let stderr = '';
  child.stdout.on('data', (d) => { stderr += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await new Promise((r) => child.on('exit', (c, s) => r([c, s])));
  clearTimeout(timer);
  return { code, signal, stderr };
}

describe('GeoIP database trouble', () => {
  test('C13 every broken database stops start-up with an error naming the file and the reason', async () => {
    assert.ok(BROKEN.length >= 20, `found ${BROKEN.length} broken files`);
    const results = await Promise.all(BROKEN.map(async (file) => [file, await runUntilExit(['--geoip-db', file])]));
    for (const [file, { code, signal, stderr }] of results) {
      const name = path.basename(file);
      assert.equal(signal, null, `${name}: killed by ${signal}\n${stderr}`);
      assert.notEqual(code, 0, `${name}: started\n${stderr}`);
      assert.doesNotMatch(stderr, SANITIZER, name);
      // "GeoIP database FILE: what is wrong[: the library's reason]"
      const line = stderr.split('\n').find((l) => l.includes(file));
      assert.ok(line, `${name}: the error names the file\n${stderr}`);
      assert.match(line, /\berror\b/i);
      assert.match(line.slice(line.indexOf(file) + file.length), /^: \S.{5,}/, `${name}: a reason: ${line}`);
    }
  });

  test('C13 a missing or unreadable path stops start-up naming the file and why', async () => {
    const dir = tempDir();
    const missing = path.join(dir, 'nope', 'GeoIP2-Country.mmdb');
    const empty = path.join(dir, 'empty.mmdb');
    fs.writeFileSync(empty, '');
    const text = path.join(dir, 'text.mmdb');
    fs.writeFileSync(text, 'this is not a database\n');
    for (const [file, why] of [[missing, /No such file or directory/], [dir, /not a regular file/],
      [empty, /\S/], [text, /\S/]]) {
      const { code, signal, stderr } = await runUntilExit(['--geoip-db', file]);
      assert.equal(signal, null, stderr);
      assert.notEqual(code, 0, stderr);
      assert.doesNotMatch(stderr, SANITIZER);
      const line = stderr.split('\n').find((l) => l.includes(file));
      assert.ok(line, stderr);
      assert.match(line, why);
    }
  });

  test('C13 with --geoip-optional a broken or missing database is a warning and no country', async () => {
    const receiver = await startReceiver();
    try {
      for (const file of [path.join(GEO_DIR, 'bad', 'cyclic-data-structure.mmdb'),
        path.join(GEO_DIR, 'MaxMind-DB-test-broken-pointers-24.mmdb'), path.join(tempDir(), 'missing.mmdb')]) {
        const server = await startServer({ args: ['--geoip-db', file, '--geoip-optional',
          '--trusted-proxy', '127.0.0.1/32', '--webhook-allow-cidr', '127.0.0.0/8', ...FAST] });
        try {
          const warn = server.log.split('\n').find((l) => l.includes(file));
          assert.ok(warn, server.log);
          assert.match(warn, /\bwarn\b/i);
          assert.match(warn, /without countries/);
          await subscribe(server, receiver);
          const { country } = await countryOf(server, receiver, { 'X-Forwarded-For': '81.2.69.160' });
          assert.equal(country, '');
          assert.doesNotMatch(server.log, SANITIZER);
        } finally { await server.stop(); }
      }
    } finally { await receiver.close(); }
  });
});
