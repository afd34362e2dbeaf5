// The command line: flags refused before anything is served, the token and
// backup subcommands, and the log lines an operator must see.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BIN, request, startServer, tempDir } from '../lib/harness.mjs';

const run = (args, env = {}) => spawnSync(BIN, args, {
  encoding: 'utf8', timeout: 20000, env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0', ...env },
});

test('cli_help_lists_flags_with_their_environment_twins', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0);
  for (const f of ['--listen', '--data-dir', '--geoip-db', '--public-url', '--trusted-proxy', '--webhook-allow-cidr']) {
    assert.ok(r.stdout.includes(f), f);
  }
  assert.match(r.stdout, /SHORTLINKD_WEBHOOK_ALLOW_CIDR/);
  assert.doesNotMatch(r.stdout, /SHORTLINKD_HELP/);
});

test('cli_refuses_bad_flags_before_serving', () => {
  const dir = tempDir();
  const cases = [
    [['serve', '--data-dir', dir, '--webhook-allow-cidr', '0.0.0.0/1'], /--webhook-allow-unsafe/],
    [['serve', '--data-dir', dir, '--webhook-allow-cidr', '::/0'], /--webhook-allow-unsafe/],
    [['serve', '--data-dir', dir, '--trusted-proxy', 'not-a-cidr'], /not an address or CIDR/],
    [['serve', '--data-dir', dir, '--redirect-status', '303'], /301, 302, 307 or 308/],
    [['serve', '--data-dir', dir, '--listen', 'nope'], /HOST:PORT/],
    [['serve', '--data-dir', dir, '--tls-listen', '127.0.0.1:1'], /--tls-cert/],
    [['serve', '--no-such-flag'], /unknown flag/],
    [['token', 'create', '--data-dir', dir, '--name', 'a\tb'], /control characters/],
    [['token', 'create', '--data-dir', dir], /--name NAME is required/],
  ];
  for (const [args, message] of cases) {
    const r = run(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
  }
  // The environment twin is checked the same way.
  const r = run(['serve', '--data-dir', dir], { SHORTLINKD_WEBHOOK_ALLOW_CIDR: '10.0.0.0/8,0.0.0.0/0' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--webhook-allow-unsafe/);
});

test('cli_token_create_prints_the_token_only_and_it_works', async () => {
  const server = await startServer();
  try {
    const r = run(['token', 'create', '--data-dir', server.dataDir, '--name', 'ci']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^[0-9a-f]{40}\n$/);
    const token = r.stdout.trim();
    assert.equal((await server.api('GET', '/v4/user', undefined, token)).status, 200);
    const list = run(['token', 'list', '--data-dir', server.dataDir]);
    assert.ok(!list.stdout.includes(token), 'token list never prints a token');
    assert.match(list.stdout, /\tci\n/);
    assert.ok(!server.log.includes(token) && !server.log.includes(server.token), 'no token in the log');
    // The admin token file is readable by its owner only.
    assert.equal(fs.statSync(path.join(server.dataDir, 'admin-token')).mode & 0o077, 0);
  } finally {
    await server.stop();
  }
});

test('cli_backup_is_private_and_opens', async () => {
  const server = await startServer();
  const link = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/backed-up' })).json();
  await server.stop();
  const to = path.join(tempDir(), 'copy');
  const r = run(['backup', '--data-dir', server.dataDir, '--to', to], {});
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.statSync(path.join(to, 'data.mdb')).mode & 0o077, 0);
  fs.copyFileSync(path.join(server.dataDir, 'admin-token'), path.join(to, 'admin-token'));
  const restored = await startServer({ dataDir: to });
  try {
    const code = link.id.split('/')[1];
    const res = await request(`${restored.base}/${code}`);
    assert.equal(res.status, 302);
    assert.equal(res.headers.location, 'https://example.com/backed-up');
  } finally {
    await restored.stop();
  }
});

test('cli_wide_trusted_proxy_is_warned_about', async () => {
  const server = await startServer({ args: ['--trusted-proxy', '0.0.0.0/0'] });
  await server.stop();
  assert.match(server.log, /warn .*--trusted-proxy range 1 is \/0 wide/);
});

test('cli_one_server_per_data_dir_and_per_port', async () => {
  const server = await startServer();
  try {
    const sameDir = run(['serve', '--listen', '127.0.0.1:1', '--data-dir', server.dataDir]);
    assert.notEqual(sameDir.status, 0);
    assert.match(sameDir.stderr, /is in use by another shortlinkd/);
    const samePort = run(['serve', '--listen', `127.0.0.1:${server.port}`, '--data-dir', tempDir()]);
    assert.notEqual(samePort.status, 0);
    assert.match(samePort.stderr, /Address already in use \(is another shortlinkd running\?\)/);
    // The first server still answers every request, none went elsewhere.
    for (let i = 0; i < 20; i++) assert.equal((await request(`${server.base}/healthz`)).status, 200);
  } finally {
    await server.stop();
  }
});

test('cli_bitly_style_ids_name_our_links_everywhere', async () => {
  const server = await startServer();
  try {
    const link = (await server.api('POST', '/v4/shorten', { long_url: 'https://example.com/ids' })).json();
    const hash = link.id.split('/')[1];
    for (const id of [`bit.ly/${hash}`, `bit.ly%2F${hash}`, link.id.replace(':', '%3A')]) {
      assert.equal((await server.api('GET', `/v4/bitlinks/${id}/qr`)).status, 200, id);
    }
    assert.equal((await server.api('GET', `/v4/bitlinks/other.example/${hash}/qr`)).status, 404);
    const page = await server.api('POST', '/v4/bio_pages', {
      handle: 'ids-page', title: 'Ids', buttons: [{ label: 'Go', bitlink_id: `bit.ly/${hash}` }],
    });
    assert.equal(page.status, 201, page.body);
    const foreign = await server.api('POST', '/v4/bio_pages', {
      handle: 'ids-page-2', title: 'Ids', buttons: [{ label: 'Go', bitlink_id: `other.example/${hash}` }],
    });
    assert.equal(foreign.status, 400, foreign.body);
  } finally {
    await server.stop();
  }
});

test('cli_environment_twins_yield_to_flags_and_are_named_when_bad', async () => {
  const dir = tempDir();
  // A bad twin is reported under its own name...
  let r = run(['serve', '--data-dir', dir], { SHORTLINKD_WRITER_NICE: '20' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /expected 0 to 19 \(from SHORTLINKD_WRITER_NICE\)/);
  // ...does not stop --help...
  r = run(['--help'], { SHORTLINKD_WRITER_NICE: '20' });
  assert.equal(r.status, 0);
  // ...and is not even read when the flag is given.
  const s = await startServer({ dataDir: dir, args: ['--writer-nice', '3'], env: { SHORTLINKD_WRITER_NICE: '20' } });
  await s.stop();
  // Numbers are digits: no sign, no leading space.
  for (const v of [' 5', '+5', '-1']) {
    r = run(['serve', '--data-dir', dir, '--writer-nice', v]);
    assert.equal(r.status, 2, v);
    assert.match(r.stderr, /--writer-nice .*expected 0 to 19/, v);
  }
});
