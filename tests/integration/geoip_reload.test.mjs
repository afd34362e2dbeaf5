// GeoIP database reload without a restart (issue 4): on SIGHUP and when the
// file changes, the new file is swapped in; a broken new file leaves the one in
// use. Runs the real binary on loopback; the database path is a temporary copy
// that the test replaces the way operators and updaters do, with a rename.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { SHARED, request, sleep, startReceiver, startServer, tempDir } from '../lib/harness.mjs';

const GEO_DIR = path.join(SHARED, 'geoip-test-data');
const GEOIP2 = path.join(GEO_DIR, 'GeoIP2-Country-Test.mmdb');
const GEOLITE2 = path.join(GEO_DIR, 'GeoLite2-Country-Test.mmdb');
const BROKEN = path.join(GEO_DIR, 'MaxMind-DB-test-broken-pointers-24.mmdb');
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0';
// GeoIP2-Country-Test knows 175.16.199.1 (CN); GeoLite2-Country-Test does not.
const PROBE = '175.16.199.1';
const SANITIZER = /AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:/;

const dir = tempDir('shortlinkd-geoip-reload-');
const dbPath = path.join(dir, 'country.mmdb');
let server;
let receiver;

// Puts `source` at the database path in one rename, as `mv` does, optionally
// with a given modification time (as `cp -p`, rsync or an unpacked archive
// leave it).
function replaceDb(source, mtime) {
  const staged = path.join(dir, `staged-${Date.now()}-${Math.random()}.mmdb`);
  fs.copyFileSync(source, staged);
  fs.chmodSync(staged, 0o644);
  if (mtime !== undefined) fs.utimesSync(staged, mtime, mtime);
  fs.renameSync(staged, dbPath);
}

const count = (re) => (server.log.match(re) ?? []).length;

async function waitLog(re, n, timeoutMs = 8000) {
  const deadline = Date.now() + timeoutMs;
  while (count(re) < n) {
    if (Date.now() > deadline) throw new Error(`log has ${count(re)} of ${n} lines matching ${re}:\n${server.log}`);
    await sleep(50);
  }
}

async function countryOf(xff) {
  const link = (await server.api('POST', '/v4/shorten', {
    long_url: `https://example.com/reload/${Math.random().toString(36).slice(2)}`,
  })).json();
  const r = await request(`${server.base}/${link.id.split('/')[1]}`,
    { headers: { 'x-forwarded-for': xff, 'user-agent': BROWSER } });
  assert.equal(r.status, 302);
  const deadline = Date.now() + 15000;
  for (;;) {
    const p = receiver.received.map((d) => JSON.parse(d.raw.toString('utf8'))).find((x) => x.bitlink === link.id);
    if (p) return p.country ?? '';
    if (Date.now() > deadline) throw new Error(`no webhook for ${link.id}`);
    await sleep(25);
  }
}

const RELOADED = /reloaded /g;
const REFUSED = /reload refused, keeping the database in use/g;

before(async () => {
  // Every file in this test carries the same modification time, so a change
  // can only be seen by the file being another one.
  const t = new Date(Math.floor(Date.now() / 1000) * 1000 - 60000);
  replaceDb(GEOLITE2, t);
  receiver = await startReceiver();
  server = await startServer({ args: ['--geoip-db', dbPath, '--trusted-proxy', '127.0.0.1/32',
    '--webhook-allow-cidr', '127.0.0.0/8', '--flush-interval-ms', '20'] });
  const user = (await server.api('GET', '/v4/user')).json();
  const hook = await server.api('POST', '/v4/webhooks', {
    name: 'reload', url: receiver.url, group_guid: user.default_group_guid, is_active: true,
  });
  assert.equal(hook.status, 201, hook.body);
  server.mtime = t;
});
after(async () => {
  await server?.stop();
  await receiver?.close();
});

test('geoip_reload_on_file_change_swaps_the_database', async () => {
  assert.equal(await countryOf(PROBE), '');
  assert.equal(await countryOf('81.2.69.160'), 'GB');
  replaceDb(GEOIP2);
  await waitLog(RELOADED, 1);
  assert.equal(await countryOf(PROBE), 'CN');
  assert.equal(await countryOf('81.2.69.160'), 'GB');
});

test('geoip_reload_on_file_change_keeps_the_old_database_when_the_new_is_broken', async () => {
  const refused = count(REFUSED);
  const reloaded = count(RELOADED);
  replaceDb(BROKEN);
  await waitLog(REFUSED, refused + 1);
  const line = server.log.split('\n').filter((l) => l.includes('reload refused')).pop();
  assert.ok(line.includes(dbPath), `the refusal names the file: ${line}`);
  assert.equal(count(RELOADED), reloaded);
  assert.equal(await countryOf(PROBE), 'CN', 'the database in use is kept');
  assert.equal(await countryOf('2001:218::1'), 'JP');
  // SIGHUP while the file is still broken: refused again, still kept.
  server.child.kill('SIGHUP');
  await waitLog(REFUSED, refused + 2);
  assert.equal(await countryOf(PROBE), 'CN');
});

test('geoip_reload_sees_a_replacement_with_the_same_modification_time', async () => {
  const reloaded = count(RELOADED);
  // GeoLite2 again, with the very mtime the file had at start-up.
  replaceDb(GEOLITE2, server.mtime);
  await waitLog(RELOADED, reloaded + 1);
  assert.equal(await countryOf(PROBE), '');
});

test('geoip_reload_on_sighup_reopens_the_file', async () => {
  const reloaded = count(RELOADED);
  // The file is unchanged, so only the signal can cause this reload.
  server.child.kill('SIGHUP');
  await waitLog(RELOADED, reloaded + 1);
  await sleep(600);
  assert.equal(count(RELOADED), reloaded + 1, 'one reload per signal');
  assert.equal(await countryOf(PROBE), '');
  assert.equal(await countryOf('89.160.20.112'), 'SE');
  assert.equal(server.child.exitCode, null, 'SIGHUP does not stop the server');
});

test('geoip_reload_while_serving_loses_no_request', async () => {
  const link = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/busy' })).json();
  const url = `${server.base}/${link.id.split('/')[1]}`;
  const reloaded = count(RELOADED);
  let stop = false;
  const statuses = [];
  const load = (async () => {
    while (!stop) {
      const batch = await Promise.all(Array.from({ length: 8 }, () =>
        request(url, { headers: { 'x-forwarded-for': '81.2.69.160', 'user-agent': BROWSER } })));
      statuses.push(...batch.map((r) => r.status));
    }
  })();
  for (let i = 0; i < 6; i++) {
    replaceDb(i % 2 === 0 ? GEOLITE2 : GEOIP2);
    await waitLog(RELOADED, reloaded + i + 1);
  }
  for (let i = 0; i < 4; i++) {
    server.child.kill('SIGHUP');
    await waitLog(RELOADED, reloaded + 7 + i);
  }
  stop = true;
  await load;
  assert.ok(statuses.length > 0);
  assert.ok(statuses.every((s) => s === 302), `every visit redirected: ${[...new Set(statuses)]}`);
  assert.doesNotMatch(server.log, SANITIZER);
  assert.equal(server.child.exitCode, null);
});

// Truncating the live file in place (": > file", an updater writing over it)
// used to take the mapped pages away, and the next lookup died of SIGBUS. The
// database in use is a private copy now: the server keeps answering, and the
// reload the change triggers refuses the empty file and keeps the copy.
test('geoip_reload_file_truncated_in_place_keeps_the_database_in_use', async () => {
  const reloaded = count(RELOADED);
  replaceDb(GEOIP2);
  await waitLog(RELOADED, reloaded + 1);
  const refused = count(REFUSED);
  fs.truncateSync(dbPath, 0);
  assert.equal(fs.statSync(dbPath).size, 0);
  assert.equal(await countryOf('81.2.69.142'), 'GB');
  await waitLog(REFUSED, refused + 1);
  const line = server.log.split('\n').filter((l) => l.includes('reload refused')).pop();
  assert.ok(line.includes(dbPath) && !line.includes('/proc/'), `the refusal names the file: ${line}`);
  assert.equal(count(RELOADED), reloaded + 1);
  assert.equal(await countryOf('81.2.69.142'), 'GB');
  assert.equal(await countryOf(PROBE), 'CN', 'the database in use is kept');
  assert.equal(server.child.exitCode, null);
  assert.equal(server.child.signalCode, null);
  assert.doesNotMatch(server.log, SANITIZER);
});
