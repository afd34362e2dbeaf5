// Smoke run of tests/bench/redirect (issue 8): a few seconds against the
// binary under test, asserting only that the benchmark completes and that the
// engagements recorded equal the redirects served (none dropped). The figures
// themselves come from a release build: tests/bench/README.md.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SCRIPT = path.join(HERE, '..', 'bench', 'redirect');
const BIN = process.env.SHORTLINKD_BIN;
const GEOIP = path.join(process.env.SHARED_DIR ?? '', 'geoip-test-data', 'GeoIP2-Country-Test.mmdb');
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

test('bench_redirect_smoke_records_every_redirect', { skip: !have('wrk') && 'wrk is not installed' }, () => {
  const json = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bench-smoke-')), 'out.json');
  const args = [SCRIPT, '--smoke', '--bin', BIN, '--geoip', GEOIP, '--json', json];
  if (!have('h2o')) args.push('--no-h2o');
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 120000 });
  assert.equal(r.status, 0, `benchmark failed:\n${r.stdout}\n${r.stderr}`);
  const out = JSON.parse(fs.readFileSync(json, 'utf8'));
  for (const s of out.results) {
    assert.ok(s.served > 0, 'some redirects were served');
    assert.equal(s.recorded, s.served, 'every redirect served was recorded');
    assert.equal(s.dropped, 0);
  }
  fs.rmSync(path.dirname(json), { recursive: true, force: true });
});
