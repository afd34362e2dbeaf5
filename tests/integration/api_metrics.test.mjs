// Bitly v4 metrics (issue 3): clicks series, summary, countries and referrers
// from the hourly and minute counters, with unit, units and unit_reference in
// offsets that are not whole hours (+05:30) and behind UTC (-08:00); bots left
// out. Click totals are exact to the minute, so the clicks are made within one
// minute and checked against the buckets holding that minute. Runs the real
// binary on loopback with MaxMind's test database.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { GEOIP_TEST_DB, request, sleep, startServer } from '../lib/harness.mjs';

const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
const CLICKS = [
  { ip: '81.2.69.160', referer: 'https://news.example.org/post' }, // GB
  { ip: '81.2.69.161', referer: 'https://news.example.org/other' }, // GB
  { ip: '2.125.160.216' }, // GB, direct
  { ip: '89.160.20.112', referer: 'https://social.example.net/' }, // SE
];
let server;
let link;
let clickedAt;

// "2026-01-02T03:04:05+05:30" for Unix seconds t in an offset of off minutes.
function rfc3339(t, off) {
  const d = new Date((t + off * 60) * 1000).toISOString().slice(0, 19);
  const a = Math.abs(off);
  return `${d}${off < 0 ? '-' : '+'}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}
// Bitly's date format for Unix seconds t in an offset of off minutes.
const bitlyDate = (t, off) => rfc3339(t, off).replace(/:(\d\d)$/, '$1');

// The local start (Unix seconds) of the bucket holding t, written here apart
// from the server's code: local wall time, floored.
function bucketStart(t, unit, off) {
  const d = new Date((t + off * 60) * 1000);
  if (unit === 'minute') d.setUTCSeconds(0);
  if (unit === 'hour') d.setUTCMinutes(0, 0);
  if (unit === 'day' || unit === 'week' || unit === 'month') d.setUTCHours(0, 0, 0);
  if (unit === 'week') d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  if (unit === 'month') d.setUTCDate(1);
  d.setUTCMilliseconds(0);
  return d.getTime() / 1000 - off * 60;
}
const prevStart = (s, unit, off) => bucketStart(s - 1, unit, off);

const metrics = (route, q) => server.api('GET', `/v4/bitlinks/${link.id}/${route}?${q}`);
const qs = (o) => new URLSearchParams(o).toString();

before(async () => {
  server = await startServer({ args: ['--geoip-db', GEOIP_TEST_DB, '--trusted-proxy', '127.0.0.1/32'] });
  link = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/metrics' })).json();
  const code = link.id.split('/')[1];
  // The clicks take milliseconds: start them clear of a minute's end.
  if (Date.now() % 60000 > 57000) await sleep(60500 - (Date.now() % 60000));
  clickedAt = Math.floor(Date.now() / 1000);
  for (const c of CLICKS) {
    const res = await request(`${server.base}/${code}`, {
      headers: { 'user-agent': BROWSER, 'x-forwarded-for': c.ip, ...(c.referer ? { referer: c.referer } : {}) },
    });
    assert.equal(res.status, 302);
  }
  // A crawler is redirected but never counted.
  await request(`${server.base}/${code}`, { headers: { 'user-agent': 'Twitterbot/1.0', 'x-forwarded-for': '81.2.69.160' } });
  const clickedEnd = Math.floor(Date.now() / 1000);
  const deadline = Date.now() + 10000;
  for (;;) {
    const s = (await metrics('clicks/summary', 'units=-1')).json();
    if (s.total_clicks >= CLICKS.length) break;
    if (Date.now() > deadline) throw new Error(`clicks not committed: ${JSON.stringify(s)}`);
    await sleep(50);
  }
  // Every click must fall in one minute for the bucket checks below.
  if (Math.floor(clickedAt / 60) !== Math.floor(clickedEnd / 60)) throw new Error('clicks straddled a minute: run again');
});
after(async () => {
  const exit = await server?.stop();
  if (exit && exit.code !== 0 && exit.signal !== 'SIGTERM') console.log(server.log);
});

// Checks a series against buckets computed here: n dates newest first, and all
// clicks in the bucket holding the minute they were made in.
function assertSeries(body, unit, units, ref, off) {
  const home = bucketStart(clickedAt, unit, off);
  let s = bucketStart(ref, unit, off);
  assert.equal(body.link_clicks.length, units);
  for (const row of body.link_clicks) {
    assert.deepEqual(Object.keys(row).sort(), ['clicks', 'date']);
    assert.equal(row.date, bitlyDate(s, off));
    assert.equal(row.clicks, s === home ? CLICKS.length : 0, `bucket ${row.date}`);
    s = prevStart(s, unit, off);
  }
  assert.equal(body.unit, unit);
  assert.equal(body.units, units);
  assert.equal(body.unit_reference, bitlyDate(ref, off));
}

test('api_clicks_summary_counts_people_not_bots', async () => {
  const res = await metrics('clicks/summary', 'unit=day&units=-1');
  assert.equal(res.status, 200, res.body);
  const b = res.json();
  assert.deepEqual(Object.keys(b).sort(), ['total_clicks', 'unit', 'unit_reference', 'units']);
  assert.equal(b.total_clicks, CLICKS.length);
  assert.equal(b.unit, 'day');
  assert.equal(b.units, -1);
  assert.match(b.unit_reference, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$/);
});

test('api_clicks_hours_in_plus_0530_start_at_half_past', async () => {
  for (const ref of [clickedAt, clickedAt + 1800, clickedAt + 3 * 3600]) {
    const res = await metrics('clicks', qs({ unit: 'hour', units: 6, unit_reference: rfc3339(ref, 330) }));
    assert.equal(res.status, 200, res.body);
    assertSeries(res.json(), 'hour', 6, ref, 330);
    // Local hours begin on the hour, which is half past in UTC.
    for (const row of res.json().link_clicks) {
      assert.match(row.date, /:00:00\+0530$/);
      assert.equal(Date.parse(row.date.replace(/(\d\d)(\d\d)$/, '$1:$2')) / 1000 % 3600, 1800, row.date);
    }
    const sum = (await metrics('clicks/summary', qs({ unit: 'hour', units: 6, unit_reference: rfc3339(ref, 330) }))).json();
    assert.equal(sum.total_clicks, CLICKS.length, 'the summary agrees with the series');
  }
});

test('api_clicks_days_in_minus_0800_and_a_reference_in_the_past', async () => {
  const res = await metrics('clicks', qs({ unit: 'day', units: 3, unit_reference: rfc3339(clickedAt, -480) }));
  assert.equal(res.status, 200, res.body);
  assertSeries(res.json(), 'day', 3, clickedAt, -480);
  assert.match(res.json().link_clicks[0].date, /T00:00:00-0800$/);

  // Bitly's own "+0000" form is accepted too.
  const past = clickedAt - 3 * 86400;
  const before = await metrics('clicks', qs({ unit: 'day', units: 2, unit_reference: bitlyDate(past, 0) }));
  assertSeries(before.json(), 'day', 2, past, 0);
  assert.equal((await metrics('clicks/summary', qs({ unit: 'day', units: 2, unit_reference: rfc3339(past, 0) }))).json().total_clicks, 0);
});

test('api_clicks_weeks_start_monday_and_months_on_the_first', async () => {
  const w = await metrics('clicks', qs({ unit: 'week', units: 3, unit_reference: rfc3339(clickedAt, 330) }));
  assertSeries(w.json(), 'week', 3, clickedAt, 330);
  for (const row of w.json().link_clicks) assert.equal(new Date(row.date.slice(0, 10)).getUTCDay(), 1, row.date);
  const m = await metrics('clicks', qs({ unit: 'month', units: 14, unit_reference: rfc3339(clickedAt, -480) }));
  assertSeries(m.json(), 'month', 14, clickedAt, -480);
  for (const row of m.json().link_clicks) assert.match(row.date, /-01T00:00:00-0800$/);
  const mins = await metrics('clicks', qs({ unit: 'minute', units: 5, unit_reference: rfc3339(clickedAt, 0) }));
  assert.equal(mins.json().link_clicks.length, 5);
  assert.equal(mins.json().link_clicks[0].date, bitlyDate(bucketStart(clickedAt, 'minute', 0), 0));
});

test('api_clicks_all_units_start_at_the_link', async () => {
  const res = await metrics('clicks', 'unit=day&units=-1&unit_reference=&size=50');
  assert.equal(res.status, 200, res.body);
  assert.equal(res.json().link_clicks.length, 1, 'a link made today has one day');
  assert.equal(res.json().link_clicks[0].clicks, CLICKS.length);
});

test('api_countries_and_referrers_facets', async () => {
  const c = await metrics('countries', 'unit=day&units=1');
  assert.equal(c.status, 200, c.body);
  assert.deepEqual(Object.keys(c.json()).sort(), ['facet', 'metrics', 'unit', 'unit_reference', 'units']);
  assert.equal(c.json().facet, 'countries');
  assert.deepEqual(c.json().metrics, [{ value: 'GB', clicks: 3 }, { value: 'SE', clicks: 1 }]);
  const top = await metrics('countries', 'size=1');
  assert.deepEqual(top.json().metrics, [{ value: 'GB', clicks: 3 }]);
  const r = await metrics('referrers', 'unit=day&units=1');
  assert.equal(r.json().facet, 'referrers');
  assert.deepEqual(r.json().metrics, [
    { value: 'news.example.org', clicks: 2 }, { value: 'direct', clicks: 1 }, { value: 'social.example.net', clicks: 1 },
  ]);
  const old = await metrics('countries', qs({ unit: 'day', units: 1, unit_reference: rfc3339(clickedAt - 86400 * 2, 0) }));
  assert.deepEqual(old.json().metrics, []);
});

test('api_metrics_reject_bad_parameters_with_bitly_errors', async () => {
  const cases = [
    ['clicks', 'unit=year', 'INVALID_ARG_UNIT', 'unit'],
    ['clicks', 'units=0', 'INVALID_ARG_UNITS', 'units'],
    ['clicks/summary', 'units=-2', 'INVALID_ARG_UNITS', 'units'],
    ['clicks', 'unit_reference=yesterday', 'INVALID_ARG_UNIT_REFERENCE', 'unit_reference'],
    ['countries', `unit_reference=${encodeURIComponent('2026-01-02T03:04:05+25:00')}`, 'INVALID_ARG_UNIT_REFERENCE', 'unit_reference'],
    ['referrers', 'size=0', 'INVALID_ARG_SIZE', 'size'],
  ];
  for (const [route, q, message, field] of cases) {
    const res = await metrics(route, q);
    assert.equal(res.status, 400, `${route}?${q}: ${res.body}`);
    assert.deepEqual(res.json(), { message, description: res.json().description, resource: 'bitlinks', errors: [{ field, error_code: 'invalid' }] });
  }
  const missing = await server.api('GET', '/v4/bitlinks/bit.ly/nosuchone/clicks');
  assert.equal(missing.status, 404);
  assert.equal(missing.json().message, 'NOT_FOUND');
  const post = await server.api('POST', `/v4/bitlinks/${link.id}/clicks`, {});
  assert.equal(post.status, 405);
  assert.equal(post.json().message, 'METHOD_NOT_ALLOWED');
});

// Checks one refusal: 400, Bitly's error body naming the field, and a
// description that contains `says`.
async function assertRefused(route, q, message, field, says) {
  const res = await metrics(route, q);
  assert.equal(res.status, 400, `${route}?${q}: ${res.body.slice(0, 300)}`);
  const b = res.json();
  assert.deepEqual(b, { message, description: b.description, resource: 'bitlinks', errors: [{ field, error_code: 'invalid' }] });
  if (says) assert.ok(b.description.includes(says), `${route}?${q}: ${b.description}`);
}

test('api_clicks_series_refuses_more_units_than_it_lists', async () => {
  // The series used to list 1000 buckets and echo "units":100000.
  await assertRefused('clicks', 'unit=minute&units=100000', 'INVALID_ARG_UNITS', 'units', '1 to 1000');
  await assertRefused('clicks', 'unit=day&units=1001', 'INVALID_ARG_UNITS', 'units', '100000');
  const full = await metrics('clicks', qs({ unit: 'minute', units: 1000, unit_reference: rfc3339(clickedAt, 0) }));
  assert.equal(full.status, 200, full.body);
  assert.equal(full.json().link_clicks.length, 1000);
  assert.equal(full.json().units, 1000);
  // What builds no series keeps the larger cap.
  const sum = await metrics('clicks/summary', 'unit=minute&units=100000');
  assert.equal(sum.status, 200, sum.body);
  assert.equal(sum.json().units, 100000);
  assert.equal(sum.json().total_clicks, CLICKS.length);
  const c = await metrics('countries', 'unit=minute&units=100000');
  assert.equal(c.status, 200, c.body);
  assert.equal(c.json().units, 100000);
  await assertRefused('clicks/summary', 'units=100001', 'INVALID_ARG_UNITS', 'units');
});

test('api_clicks_unit_reference_outside_1970_to_9999_refused', async () => {
  for (const ref of ['0001-01-01T00:00:00Z', '0083-11-01T00:00:00Z', '1969-12-31T23:59:59Z',
    '1900-01-01T00:00:00+00:00', '10000-01-01T00:00:00Z']) {
    for (const route of ['clicks', 'clicks/summary', 'countries']) {
      await assertRefused(route, qs({ unit: 'month', units: 1000, unit_reference: ref }),
        'INVALID_ARG_UNIT_REFERENCE', 'unit_reference', ref.startsWith('10000') ? undefined : '1970 to 9999');
    }
  }
  // The edges themselves are fine, and every date keeps four digits.
  for (const [ref, first] of [['1970-01-01T00:00:00Z', '1970-01-01T00:00:00+0000'],
    ['1970-01-01T00:00:00+05:30', '1970-01-01T00:00:00+0530'],
    ['9999-12-31T23:59:59-08:00', '9999-12-01T00:00:00-0800']]) {
    const res = await metrics('clicks', qs({ unit: 'month', units: 1000, unit_reference: ref }));
    assert.equal(res.status, 200, `${ref}: ${res.body}`);
    const rows = res.json().link_clicks;
    assert.equal(rows.length, 1000);
    assert.equal(rows[0].date, first);
    for (const row of rows) assert.match(row.date, /^\d{4}-\d\d-01T00:00:00[+-]\d{4}$/, `${ref}: ${row.date}`);
  }
});

test('api_clicks_impossible_dates_refused', async () => {
  for (const ref of ['2026-02-30T00:00:00Z', '2025-02-29T12:00:00Z', '2026-04-31T00:00:00+05:30',
    '2026-13-01T00:00:00Z', '2026-00-10T00:00:00Z', '2026-01-00T00:00:00Z',
    '2026-01-01T24:00:00Z', '2026-01-01T23:60:00Z', '2026-01-01T23:59:61Z']) {
    await assertRefused('clicks', qs({ unit: 'day', units: 2, unit_reference: ref }),
      'INVALID_ARG_UNIT_REFERENCE', 'unit_reference', 'real date');
  }
  for (const ref of [' 2026-01-02T03:04:05Z', '2026-1-02T03:04:05Z', '2026-01-02T03:04:05.Z',
    '2026-01-02T03:04:05+5:30', '2026-01-02T03:04:05+05:3']) {
    await assertRefused('clicks', qs({ unit: 'day', units: 2, unit_reference: ref }),
      'INVALID_ARG_UNIT_REFERENCE', 'unit_reference', 'RFC 3339');
  }
  // A leap day, a leap second and fractions are real.
  const leap = await metrics('clicks', qs({ unit: 'day', units: 2, unit_reference: '2024-02-29T12:00:00.123Z' }));
  assert.equal(leap.status, 200, leap.body);
  assert.deepEqual(leap.json().link_clicks.map((r) => r.date), ['2024-02-29T00:00:00+0000', '2024-02-28T00:00:00+0000']);
  const second = await metrics('clicks/summary', qs({ unit: 'day', units: 1, unit_reference: '2016-12-31T23:59:60Z' }));
  assert.equal(second.status, 200, second.body);
  assert.equal(second.json().unit_reference, '2016-12-31T23:59:59+0000');
});

test('api_clicks_minutes_are_exact', async () => {
  // The clicks' minute is the middle of five; its neighbours have none.
  for (const off of [0, 330, -480]) {
    const ref = clickedAt + 120;
    const res = await metrics('clicks', qs({ unit: 'minute', units: 5, unit_reference: rfc3339(ref, off) }));
    assert.equal(res.status, 200, res.body);
    assertSeries(res.json(), 'minute', 5, ref, off);
    assert.deepEqual(res.json().link_clicks.map((r) => r.clicks), [0, 0, CLICKS.length, 0, 0]);
    for (const [at, want] of [[clickedAt, CLICKS.length], [clickedAt - 60, 0], [clickedAt + 60, 0]]) {
      const sum = (await metrics('clicks/summary', qs({ unit: 'minute', units: 1, unit_reference: rfc3339(at, off) }))).json();
      assert.equal(sum.total_clicks, want, `the minute of ${rfc3339(at, off)}`);
    }
    const two = (await metrics('clicks/summary', qs({ unit: 'minute', units: 2, unit_reference: rfc3339(clickedAt + 60, off) }))).json();
    assert.equal(two.total_clicks, CLICKS.length);
  }
});

test('api_clicks_hours_and_days_cut_mid_hour_are_exact', async () => {
  // +05:30, and an offset whose local hours begin in UTC at the very minute of
  // the clicks, so that the hour they were made in is cut just before them:
  // counting whole UTC hours would put them a bucket too early.
  const minute = Math.floor(clickedAt / 60) % 60;
  const offsets = [330];
  if (minute > 0) offsets.push(5 * 60 + (60 - minute));
  for (const off of offsets) {
    for (const unit of ['hour', 'day']) {
      const step = unit === 'hour' ? 3600 : 86400;
      const ref = clickedAt + step;
      const res = await metrics('clicks', qs({ unit, units: 3, unit_reference: rfc3339(ref, off) }));
      assert.equal(res.status, 200, res.body);
      assertSeries(res.json(), unit, 3, ref, off);
      assert.deepEqual(res.json().link_clicks.map((r) => r.clicks), [0, CLICKS.length, 0], `${unit} in ${off}`);
      const sum = (await metrics('clicks/summary', qs({ unit, units: 1, unit_reference: rfc3339(clickedAt, off) }))).json();
      assert.equal(sum.total_clicks, CLICKS.length, `${unit} in ${off}`);
      const before = (await metrics('clicks/summary', qs({ unit, units: 1, unit_reference: rfc3339(clickedAt - step, off) }))).json();
      assert.equal(before.total_clicks, 0, `${unit} before, in ${off}`);
    }
  }
  // The bucket edge at the clicks' own minute: the bucket that ends there has none.
  if (minute > 0) {
    const off = 5 * 60 + (60 - minute);
    const edge = Math.floor(clickedAt / 60) * 60;
    assert.equal(bucketStart(clickedAt, 'hour', off), edge);
    const earlier = (await metrics('clicks/summary', qs({ unit: 'hour', units: 1, unit_reference: rfc3339(edge - 1, off) }))).json();
    assert.equal(earlier.total_clicks, 0);
  }
});
