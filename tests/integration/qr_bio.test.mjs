// QR codes and link-in-bio pages (issue 6): generated images decoded by zbarimg
// back to the marked short URL, bio pages escaped and managed through /v4, and
// a scan, a tap and a click seen as three kinds of engagement in metrics and at
// a webhook receiver. Runs the real binary on loopback.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { request, sleep, startReceiver, startServer, tempDir } from '../lib/harness.mjs';

const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
const PHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 '
  + '(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1';

function have(tool) {
  try {
    execFileSync(tool, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
// zbar-tools is in deploy/setup; librsvg2-bin (rsvg-convert) rasterises SVGs.
const HAVE_RSVG = have('rsvg-convert');
const work = tempDir('shortlinkd-qr-');

let server;
let receiver;

before(async () => {
  receiver = await startReceiver();
  server = await startServer({ args: ['--webhook-allow-cidr', '127.0.0.0/8'] });
});
after(async () => {
  const exit = await server?.stop();
  await receiver?.close();
  fs.rmSync(work, { recursive: true, force: true });
  // The sanitizer build reports to stderr and goes on: a report is a failure.
  assert.doesNotMatch(server?.log ?? '', /AddressSanitizer|LeakSanitizer|runtime error:/);
  assert.equal(exit?.code, 0, server?.log);
});

async function shorten(longUrl, keyword) {
  const r = await server.api('POST', '/v4/bitlinks', { long_url: longUrl, ...(keyword ? { keyword } : {}) });
  assert.equal(r.status, 201, r.body);
  const link = r.json();
  return { ...link, code: link.id.split('/')[1] };
}

let fileNo = 0;
// Decodes the QR code in an image with zbarimg; SVGs are rasterised first.
function decode(bytes, ext) {
  let file = path.join(work, `qr-${++fileNo}.${ext}`);
  fs.writeFileSync(file, bytes);
  if (ext === 'svg') {
    const png = `${file}.png`;
    execFileSync('rsvg-convert', ['-o', png, file]);
    file = png;
  }
  return execFileSync('zbarimg', ['-q', '--raw', file], { stdio: ['ignore', 'pipe', 'ignore'] })
    .toString('utf8').replace(/\n$/, '');
}

function pngSize(bytes) {
  assert.equal(bytes.subarray(1, 4).toString('latin1'), 'PNG');
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
}

function dataUri(uri) {
  const m = /^data:(image\/png|image\/svg\+xml);base64,([A-Za-z0-9+/]+={0,2})$/.exec(uri);
  assert.ok(m, `not a base64 data URI: ${uri.slice(0, 60)}`);
  return { type: m[1], bytes: Buffer.from(m[2], 'base64') };
}

function assertBitlyError(r, status, field) {
  assert.equal(r.status, status, r.body);
  const e = r.json();
  for (const k of ['message', 'description', 'resource', 'errors']) assert.ok(k in e, `${k} in ${r.body}`);
  if (field) assert.deepEqual(e.errors.map((x) => x.field), [field], r.body);
}

test('qr_png_images_decode_to_the_marked_short_url', async () => {
  const link = await shorten('https://example.com/poster?campaign=spring');
  const marked = `${server.base}/${link.code}?sl_qr=1`;
  for (const [size, level] of [[120, 'L'], [300, 'M'], [480, 'Q'], [1000, 'H']]) {
    const r = await request(`${server.base}/qr/${link.code}.png?size=${size}&error_correction=${level}`);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['content-type'], 'image/png');
    assert.deepEqual(pngSize(r.raw), [size, size], `${size} ${level}`);
    assert.equal(decode(r.raw, 'png'), marked, `${size} ${level}`);
  }
  // Colours and a narrow quiet zone still scan; lower case levels are fine.
  const coloured = await request(`${server.base}/qr/${link.code}.png?size=256&margin=2`
    + '&error_correction=q&color=%231a237e&background_color=fff8e1');
  assert.equal(coloured.status, 200, coloured.body);
  assert.equal(decode(coloured.raw, 'png'), marked);

  // A long custom back-half at level H needs a larger version; still exact.
  const long = await shorten('https://example.com/long', `Case-Sensitive_${'x'.repeat(40)}`);
  const r = await request(`${server.base}/qr/${long.code}.png?size=600&error_correction=H`);
  assert.equal(decode(r.raw, 'png'), `${server.base}/${long.code}?sl_qr=1`);
});

test('qr_svg_images_decode_to_the_marked_short_url', { skip: !HAVE_RSVG && 'rsvg-convert (librsvg2-bin) is not installed' }, async () => {
  const link = await shorten('https://example.com/svg');
  const marked = `${server.base}/${link.code}?sl_qr=1`;
  for (const [size, level, extra] of [[200, 'L', ''], [400, 'H', ''], [300, 'M', '&color=0d47a1&margin=1']]) {
    const r = await request(`${server.base}/qr/${link.code}.svg?size=${size}&error_correction=${level}${extra}`);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['content-type'], 'image/svg+xml');
    assert.match(r.body, new RegExp(`^<svg [^>]*width="${size}" height="${size}"`));
    assert.equal((r.body.match(/<path /g) ?? []).length, 1, 'one path of runs');
    assert.equal(decode(r.raw, 'svg'), marked, `${size} ${level}`);
  }
});

test('qr_api_answers_bitly_json_with_a_data_uri', async () => {
  const link = await shorten('https://example.com/api-qr');
  const marked = `${server.base}/${link.code}?sl_qr=1`;

  const png = await server.api('GET', `/v4/bitlinks/${link.id}/qr`);
  assert.equal(png.status, 200, png.body);
  const body = png.json();
  assert.equal(body.link, link.link);
  assert.equal(body.id, link.id);
  assert.equal(body.image_format, 'png');
  assert.equal(body.scan_url, marked);
  const img = dataUri(body.qr_code);
  assert.equal(img.type, 'image/png');
  assert.deepEqual(pngSize(img.bytes), [300, 300], 'size defaults to 300');
  assert.equal(decode(img.bytes, 'png'), marked);
  // The public image with the same parameters is the same bytes.
  const same = await request(body.image_url);
  assert.equal(same.status, 200);
  assert.ok(same.raw.equals(img.bytes), 'image_url serves the same image');

  // The id as one %2F-encoded segment, and SVG.
  const svg = await server.api('GET', `/v4/bitlinks/${encodeURIComponent(link.id)}/qr?image_format=svg&size=250`);
  assert.equal(svg.status, 200, svg.body);
  const s = dataUri(svg.json().qr_code);
  assert.equal(s.type, 'image/svg+xml');
  assert.match(s.bytes.toString('utf8'), /^<svg /);
  if (HAVE_RSVG) assert.equal(decode(s.bytes, 'svg'), marked);

  const noToken = await server.api('GET', `/v4/bitlinks/${link.id}/qr`, undefined, null);
  assert.equal(noToken.status, 403);
});

test('qr_public_image_has_etag_cache_control_and_304', async () => {
  const link = await shorten('https://example.com/etag');
  const url = `${server.base}/qr/${link.code}.png?size=200`;
  const first = await request(url);
  assert.equal(first.status, 200);
  const etag = first.headers.etag;
  assert.match(etag, /^"[0-9a-f]{32}"$/);
  assert.match(first.headers['cache-control'], /public, max-age=\d+/);

  const again = await request(url);
  assert.equal(again.headers.etag, etag, 'same image, same ETag');
  for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, '*']) {
    const r = await request(url, { headers: { 'if-none-match': inm } });
    assert.equal(r.status, 304, inm);
    assert.equal(r.raw.length, 0);
    assert.equal(r.headers.etag, etag);
  }
  const stale = await request(url, { headers: { 'if-none-match': '"0123"' } });
  assert.equal(stale.status, 200);

  const etags = new Set([etag]);
  for (const q of ['?size=201', '?size=200&margin=3', '?size=200&error_correction=H',
    '?size=200&color=333333']) {
    etags.add((await request(`${server.base}/qr/${link.code}.png${q}`)).headers.etag);
  }
  etags.add((await request(`${server.base}/qr/${link.code}.svg?size=200`)).headers.etag);
  assert.equal(etags.size, 6, 'every parameter and the format change the ETag');

  const head = await request(url, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.etag, etag);
  assert.equal(head.raw.length, 0);
});

test('qr_unknown_codes_404_and_bad_parameters_400_with_bitly_errors', async () => {
  const link = await shorten('https://example.com/bad-params');
  for (const p of ['/qr/nosuchcode.png', '/qr/nosuchcode.svg', `/qr/${link.code}.gif`,
    `/qr/${link.code}`, '/qr/bad%20code.png']) {
    const r = await request(server.base + p);
    assert.equal(r.status, 404, p);
  }
  const missing = await server.api('GET', `/v4/bitlinks/${server.base.slice(7)}/nosuchcode/qr`);
  assertBitlyError(missing, 404);
  const otherDomain = await server.api('GET', `/v4/bitlinks/other.example/${link.code}/qr`);
  assertBitlyError(otherDomain, 404);
  const post = await server.api('POST', `/v4/bitlinks/${link.id}/qr`, {});
  assertBitlyError(post, 405);

  const bad = {
    size: ['10', '31', '2049', '99999999999', 'abc', '300px', '-5', '', '3e2'],
    margin: ['17', '-1', 'x'],
    error_correction: ['X', 'LL', '', 'low'],
    color: ['zzz', '12345', '#12345g', 'ffffff', '%23ffff00'],
    background_color: ['red', '12'],
    image_format: ['gif', 'PNG', ''],
  };
  for (const [field, values] of Object.entries(bad)) {
    for (const v of values) {
      const q = `${field}=${v}`;
      const api = await server.api('GET', `/v4/bitlinks/${link.id}/qr?${q}`);
      assertBitlyError(api, 400, field);
      assert.equal(api.json().resource, 'qr');
      if (field === 'image_format') continue; // on /qr/ the extension decides
      const pub = await request(`${server.base}/qr/${link.code}.png?${q}`);
      assertBitlyError(pub, 400, field);
    }
  }
  // Colours too alike to scan are refused, whichever of the two is at fault.
  for (const q of ['background_color=000000', 'color=ffeb3b', 'color=777777&background_color=888888']) {
    assertBitlyError(await server.api('GET', `/v4/bitlinks/${link.id}/qr?${q}`), 400, 'color');
    assertBitlyError(await request(`${server.base}/qr/${link.code}.svg?${q}`), 400, 'color');
  }
});

test('bio_pages_are_managed_through_v4', async () => {
  const a = await shorten('https://example.com/a');
  const b = await shorten('https://example.com/b');
  const created = await server.api('POST', '/v4/bio_pages', {
    handle: 'Jo_Doe-1', title: 'Jo Doe', description: 'Maker of things.',
    buttons: [{ label: 'Shop', bitlink_id: a.id }, { label: 'Blog', code: b.code }],
  });
  assert.equal(created.status, 201, created.body);
  const page = created.json();
  assert.equal(page.handle, 'jo_doe-1', 'handles are kept lower case');
  assert.equal(page.url, `${server.base}/m/jo_doe-1`);
  assert.deepEqual(page.buttons.map((x) => [x.label, x.bitlink_id, x.link, x.tap_url]), [
    ['Shop', a.id, a.link, `${server.base}/m/jo_doe-1/${a.code}`],
    ['Blog', b.id, b.link, `${server.base}/m/jo_doe-1/${b.code}`],
  ]);
  assert.ok(page.created_at.endsWith('+0000'));

  const dup = await server.api('POST', '/v4/bio_pages', { handle: 'JO_DOE-1', title: 'Other' });
  assertBitlyError(dup, 409, 'handle');

  const got = await server.api('GET', '/v4/bio_pages/JO_doe-1');
  assert.equal(got.status, 200);
  assert.deepEqual(got.json(), page);
  const listed = await server.api('GET', '/v4/bio_pages');
  assert.deepEqual(listed.json().bio_pages.map((x) => x.handle), ['jo_doe-1']);

  // A patch replaces the fields it names and keeps the others.
  const patched = await server.api('PATCH', '/v4/bio_pages/jo_doe-1', {
    buttons: [{ label: 'Blog first', code: b.code }, { label: 'Shop', code: a.code }],
  });
  assert.equal(patched.status, 200, patched.body);
  assert.equal(patched.json().title, 'Jo Doe');
  assert.equal(patched.json().description, 'Maker of things.');
  assert.deepEqual(patched.json().buttons.map((x) => x.label), ['Blog first', 'Shop']);
  const html = (await request(`${server.base}/m/jo_doe-1`)).body;
  assert.ok(html.indexOf('Blog first') < html.indexOf('Shop'), 'buttons keep their order');
  const rename = await server.api('PATCH', '/v4/bio_pages/jo_doe-1', { handle: 'someone' });
  assertBitlyError(rename, 400, 'handle');
  const patchMissing = await server.api('PATCH', '/v4/bio_pages/nobody', { title: 'x' });
  assertBitlyError(patchMissing, 404);

  const del = await server.api('DELETE', '/v4/bio_pages/jo_doe-1');
  assert.equal(del.status, 200, del.body);
  assert.equal((await server.api('GET', '/v4/bio_pages/jo_doe-1')).status, 404);
  assert.equal((await request(`${server.base}/m/jo_doe-1`)).status, 404);
  assertBitlyError(await server.api('DELETE', '/v4/bio_pages/jo_doe-1'), 404);
  assert.equal((await server.api('GET', '/v4/bio_pages', undefined, null)).status, 403);
});

test('bio_pages_refuse_bad_input', async () => {
  const a = await shorten('https://example.com/valid');
  const ok = { handle: 'valid-page', title: 'T', buttons: [{ label: 'L', code: a.code }] };
  const cases = [
    [{ ...ok, handle: 'ab' }, 'handle'],
    [{ ...ok, handle: 'x'.repeat(33) }, 'handle'],
    [{ ...ok, handle: 'has space' }, 'handle'],
    [{ ...ok, handle: 'dot.ted' }, 'handle'],
    [{ ...ok, handle: 'ünïcode' }, 'handle'],
    [{ ...ok, handle: undefined }, 'handle'],
    [{ ...ok, title: undefined }, 'title'],
    [{ ...ok, title: '' }, 'title'],
    [{ ...ok, title: 'x'.repeat(101) }, 'title'],
    [{ ...ok, title: 'line\nbreak' }, 'title'],
    [{ ...ok, title: 7 }, 'title'],
    [{ ...ok, description: 'd'.repeat(301) }, 'description'],
    [{ ...ok, description: 'bell\u0007' }, 'description'],
    [{ ...ok, buttons: [{ label: 'tab\tbed', code: a.code }] }, 'label'],
    [{ ...ok, buttons: {} }, 'buttons'],
    [{ ...ok, buttons: Array(33).fill({ label: 'L', code: a.code }) }, 'buttons'],
    [{ ...ok, buttons: [{ label: '', code: a.code }] }, 'label'],
    [{ ...ok, buttons: [{ label: 'x'.repeat(81), code: a.code }] }, 'label'],
    [{ ...ok, buttons: [{ code: a.code }] }, 'label'],
    [{ ...ok, buttons: [{ label: 'L' }] }, 'bitlink_id'],
    [{ ...ok, buttons: [{ label: 'L', code: 'bad code' }] }, 'bitlink_id'],
    [{ ...ok, buttons: [{ label: 'L', bitlink_id: `other.example/${a.code}` }] }, 'bitlink_id'],
    [{ ...ok, buttons: [{ label: 'L', code: 'nosuchcode' }] }, 'bitlink_id'],
    [{ ...ok, buttons: ['L'] }, 'label'],
  ];
  for (const [body, field] of cases) {
    const r = await server.api('POST', '/v4/bio_pages', body);
    assertBitlyError(r, 400, field);
    assert.equal(r.json().resource, 'bio_pages');
  }
  // Limits count characters, not bytes: 100 emoji are a valid title.
  const emoji = await server.api('POST', '/v4/bio_pages', { ...ok, title: '🙂'.repeat(100) });
  assert.equal(emoji.status, 201, emoji.body);
  assert.equal((await server.api('GET', '/v4/bio_pages')).json().bio_pages.length >= 1, true);
  assertBitlyError(await server.api('PATCH', '/v4/bio_pages/valid-page', { buttons: [{ label: 'L', code: 'nosuchcode' }] }), 400, 'bitlink_id');
  assert.equal((await server.api('GET', '/v4/bio_pages/valid-page')).json().buttons.length, 1,
    'a refused patch changes nothing');
});

test('bio_page_html_escapes_hostile_titles_labels_and_descriptions', async () => {
  const a = await shorten('https://example.com/x');
  const title = `<script>alert("t")</script> & 'quotes' "double"`;
  const description = `</p><script>alert(1)</script><a href="javascript:x">&amp;`;
  const label = `"><img src=x onerror=alert(1)> & <b>'</b>`;
  const r = await server.api('POST', '/v4/bio_pages', {
    handle: 'hostile', title, description, buttons: [{ label, code: a.code }],
  });
  assert.equal(r.status, 201, r.body);
  assert.equal(r.json().title, title, 'the API returns the text as given');

  const page = await request(`${server.base}/m/hostile`, { headers: { 'user-agent': PHONE } });
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'], /^text\/html; charset=utf-8/);
  assert.equal(page.headers['x-content-type-options'], 'nosniff');
  const html = page.body;
  assert.ok(!/<script/i.test(html), 'no script element');
  assert.ok(!/<img/i.test(html), 'no img element');
  assert.ok(!/<b>/.test(html), 'no b element');
  assert.ok(!html.includes('href="javascript'), 'no javascript: link');
  const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&#39;');
  assert.ok(html.includes(`<title>${esc(title)}</title>`), 'title escaped');
  assert.ok(html.includes(`<h1>${esc(title)}</h1>`), 'heading escaped');
  assert.ok(html.includes(`<p>${esc(description)}</p>`), 'description escaped');
  assert.ok(html.includes(`>${esc(label)}</a>`), 'label escaped');
  assert.ok(html.includes(`href="${server.base}/m/hostile/${a.code}"`), 'button links to its tap route');
  assert.match(html, /<meta name=viewport content="width=device-width/);

  // The policy allows no script at all, and exactly the page's own style.
  const csp = page.headers['content-security-policy'];
  assert.match(csp, /default-src 'none'/);
  assert.ok(!/script-src/.test(csp));
  const style = /<style>([\s\S]*?)<\/style>/.exec(html)[1];
  const digest = crypto.createHash('sha256').update(style).digest('base64');
  assert.ok(csp.includes(`'sha256-${digest}'`), csp);
});

test('bio_missing_handles_and_foreign_codes_get_the_404_page', async () => {
  const a = await shorten('https://example.com/on-page');
  const other = await shorten('https://example.com/not-on-page');
  const created = await server.api('POST', '/v4/bio_pages', {
    handle: 'owner', title: 'Owner', buttons: [{ label: 'Go', code: a.code }],
  });
  assert.equal(created.status, 201, created.body);
  for (const p of ['/m/nobody', '/m/no', '/m/bad%3Chandle', `/m/nobody/${a.code}`,
    `/m/owner/${other.code}`, '/m/owner/nosuchcode', '/m/owner/a/b']) {
    const r = await request(server.base + p, { headers: { 'user-agent': BROWSER } });
    assert.equal(r.status, 404, p);
    assert.match(r.headers['content-type'], /^text\/html/, p);
    assert.match(r.body, /Page not found/, p);
  }
  // Case does not count, and a trailing slash is forgiven.
  assert.equal((await request(`${server.base}/m/OWNER/`)).status, 200);
  const tap = await request(`${server.base}/m/Owner/${a.code}/`, { method: 'HEAD' });
  assert.equal(tap.status, 302);
  assert.equal(tap.headers.location, 'https://example.com/on-page');
});

test('a_scan_a_tap_and_a_click_are_three_kinds_of_engagement', async () => {
  const user = (await server.api('GET', '/v4/user')).json();
  const hook = await server.api('POST', '/v4/webhooks', {
    name: 'kinds', url: receiver.url, group_guid: user.default_group_guid, is_active: true,
  });
  assert.equal(hook.status, 201, hook.body);
  const before = receiver.received.length;
  const link = await shorten('https://example.com/three-kinds?x=1');

  // Scan: decode the code as a phone would, then open what it says.
  const qr = (await server.api('GET', `/v4/bitlinks/${link.id}/qr`)).json();
  const scanned = decode(dataUri(qr.qr_code).bytes, 'png');
  assert.equal(scanned, `${server.base}/${link.code}?sl_qr=1`);
  // HEAD shows where a scan goes without recording one: the marker never
  // reaches the target, the visitor's other parameters do.
  const peek = await request(`${scanned}&utm_source=poster`, { method: 'HEAD', headers: { 'user-agent': PHONE } });
  assert.equal(peek.headers.location, 'https://example.com/three-kinds?x=1&utm_source=poster');
  const scan = await request(scanned, { headers: { 'user-agent': PHONE } });
  assert.equal(scan.status, 302);
  assert.equal(scan.headers.location, 'https://example.com/three-kinds?x=1');

  // Tap: follow the button's link from the rendered page.
  const created = await server.api('POST', '/v4/bio_pages', {
    handle: 'kinds-page', title: 'Kinds', buttons: [{ label: 'The link', bitlink_id: link.id }],
  });
  assert.equal(created.status, 201, created.body);
  const html = (await request(`${server.base}/m/kinds-page`)).body;
  const href = /<a href="([^"]+)"[^>]*>The link<\/a>/.exec(html)[1];
  const tap = await request(href, { headers: { 'user-agent': BROWSER } });
  assert.equal(tap.status, 302);
  assert.equal(tap.headers.location, 'https://example.com/three-kinds?x=1');

  // Click: the plain short link.
  const click = await request(link.link, { headers: { 'user-agent': BROWSER } });
  assert.equal(click.status, 302);

  // The webhook receiver gets one POST per engagement, one of each kind.
  await receiver.waitFor(before + 3);
  await sleep(500);
  const bodies = receiver.received.slice(before).map((d) => JSON.parse(d.raw.toString('utf8')));
  assert.equal(bodies.length, 3);
  const byKind = Object.fromEntries(bodies.map((b) => [b.engagement_type, b]));
  assert.deepEqual(Object.keys(byKind).sort(), ['bio_click', 'click', 'qr_scan']);
  for (const b of bodies) {
    assert.equal(b.bitlink, link.id);
    assert.equal(b.event_type, 'engagement');
    assert.equal(b.url, 'https://example.com/three-kinds?x=1');
  }
  assert.equal(byKind.qr_scan.passed_params, '', 'the marker is not a passed parameter');
  assert.equal(byKind.qr_scan.device_type, 'mobile');
  assert.equal(byKind.bio_click.referrer, `${server.base.slice(7)}/m/kinds-page`);

  // Metrics count all three; the page shows up as the tap's referrer.
  let total = 0;
  for (let i = 0; i < 50 && total < 3; i++) {
    const s = await server.api('GET', `/v4/bitlinks/${link.id}/clicks/summary?unit=day&units=-1`);
    assert.equal(s.status, 200, s.body);
    total = s.json().total_clicks;
    if (total < 3) await sleep(100);
  }
  assert.equal(total, 3);
  const refs = (await server.api('GET', `/v4/bitlinks/${link.id}/referrers?unit=day&units=-1`)).json();
  const fromPage = refs.metrics.find((m) => m.value === `${server.base.slice(7)}/m/kinds-page`);
  assert.equal(fromPage?.clicks, 1, JSON.stringify(refs));

  // The kind facet, once a route exposes it (the counters keep it already).
  const kinds = await server.api('GET', `/v4/bitlinks/${link.id}/engagement_types?unit=day&units=-1`);
  if (kinds.status === 200) {
    const counts = Object.fromEntries(kinds.json().metrics.map((m) => [m.value, m.clicks]));
    assert.deepEqual(counts, { click: 1, qr_scan: 1, bio_click: 1 });
  }
});
