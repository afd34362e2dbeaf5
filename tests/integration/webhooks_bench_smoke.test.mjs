// Smoke run of the webhook benchmark (tests/bench/webhooks.mjs --smoke): a
// few seconds with small numbers. It asserts only that the run completes
// and prints its figures; the figures themselves are for the README, not
// for a pass or a fail.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

test('the webhook benchmark runs to completion (smoke)', () => {
  const r = spawnSync(process.execPath, [path.join(here, '..', 'bench', 'webhooks.mjs'), '--smoke'], {
    env: process.env, encoding: 'utf8', timeout: 240000,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  const result = JSON.parse(r.stdout);
  assert.equal(result.pending, 1000, 'every smoke delivery was left pending');
});
