// What a webhook says was passed on to the target: exactly the parameters the
// Location carried after the long URL, whatever their length, with the QR
// marker gone; and a bio tap stays a bio tap even when it carries the marker.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request, sleep, startReceiver, startServer } from '../lib/harness.mjs';

const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
let server;
let receiver;

before(async () => {
  receiver = await startReceiver();
  server = await startServer({ args: ['--webhook-allow-cidr', '127.0.0.0/8'] });
  const hook = await server.api('POST', '/v4/webhooks', { name: 'p', url: receiver.url });
  assert.equal(hook.status, 201, hook.body);
});
after(async () => {
  await server?.stop();
  await receiver?.close();
});

async function clickAndReceive(url) {
  const before = receiver.received.length;
  const res = await request(url, { headers: { 'user-agent': BROWSER } });
  assert.equal(res.status, 302, res.body);
  const [got] = (await receiver.waitFor(before + 1)).slice(before);
  return { location: res.headers.location, body: JSON.parse(got.raw.toString('utf8')) };
}

test('passed_params_match_the_location_for_short_and_long_queries', async () => {
  const link = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/p?own=1#frag' })).json();
  const code = link.id.split('/')[1];

  const short = await clickAndReceive(`${server.base}/${code}?utm_source=x&sl_qr=1&b=%C3%A9`);
  assert.equal(short.location, 'https://example.com/p?own=1&utm_source=x&b=%C3%A9#frag');
  assert.equal(short.body.passed_params, 'utm_source=x&b=%C3%A9');
  assert.equal(short.body.engagement_type, 'qr_scan');

  // 700 parameters of 15 bytes: past the 4 KiB kept per engagement, inside
  // the 16 KiB of headers the test client reads.
  const params = Array.from({ length: 700 }, (_, i) => `k${String(i).padStart(4, '0')}=é`);
  const long = await clickAndReceive(`${server.base}/${code}?sl_qr&${params.join('&')}`);
  const forwarded = long.location.slice('https://example.com/p?own=1&'.length, -'#frag'.length);
  assert.ok(!forwarded.includes('sl_qr'), 'the marker never reaches the target');
  const passed = long.body.passed_params;
  assert.ok(passed.length > 0 && passed.length <= 4096, `${passed.length} bytes`);
  assert.ok(forwarded.startsWith(passed), 'passed_params is a prefix of what was forwarded');
  assert.ok(!passed.includes('sl_qr'));
  assert.match(passed, /(^|&)k\d{4}=%C3%A9$/, 'cut at a parameter boundary, never inside an escape');
});

test('a_bio_tap_carrying_the_qr_marker_is_still_a_bio_click', async () => {
  const link = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/bio-target' })).json();
  const page = await server.api('POST', '/v4/bio_pages', {
    handle: 'marker-page', title: 'Page', buttons: [{ label: 'Go', bitlink_id: link.id }],
  });
  assert.equal(page.status, 201, page.body);
  const code = link.id.split('/')[1];
  const tap = await clickAndReceive(`${server.base}/m/marker-page/${code}?sl_qr=1`);
  assert.equal(tap.location, 'https://example.com/bio-target');
  assert.equal(tap.body.engagement_type, 'bio_click');
  await sleep(200);
});
