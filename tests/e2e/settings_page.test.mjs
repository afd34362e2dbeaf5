// The settings page at /app (issue 7) in a real browser: playwright-core
// driving Debian's chromium, headless, against shortlinkd on loopback. Sign-in,
// the webhook lifecycle with every field and the delivery log, links with the
// clicks chart and countries, the server's errors at their fields, keyboard
// use, labels, phone and desktop widths. Screenshots go to
// $BUILD_DIR/screenshots/. The browser may reach nothing but the servers
// started here: every other request is aborted and counted as a failure.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { GEOIP_TEST_DB, request, sleep, startReceiver, startServer, tempDir } from '../lib/harness.mjs';

const CHROMIUM = '/usr/bin/chromium';
const BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';
const SHOTS = path.join(process.env.BUILD_DIR || tempDir('shortlinkd-shots-'), 'screenshots');
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
  + "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

let server; // allows loopback webhooks
let strict; // the default SSRF policy: no private or loopback endpoints
let receiver;
let context;
let group; // the default group {guid, name}
const outside = []; // requests the browser tried to make to anything else
const pageProblems = []; // CSP violations and uncaught errors, by page

// The receiver answers the OAuth token endpoint with a token, and every
// delivery with 200.
function respond(entry) {
  if (entry.url.startsWith('/token')) {
    return {
      status: 200, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ access_token: 'at-123', token_type: 'Bearer', expires_in: 3600 }),
    };
  }
  return 200;
}
const hookRequests = () => receiver.received.filter((r) => r.url.startsWith('/hook'));

async function waitUntil(fn, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  receiver = await startReceiver(respond);
  server = await startServer({
    args: ['--webhook-allow-cidr', '127.0.0.0/8', '--geoip-db', GEOIP_TEST_DB, '--trusted-proxy', '127.0.0.1/32'],
  });
  strict = await startServer();
  const groups = (await server.api('GET', '/v4/groups')).json().groups;
  const user = (await server.api('GET', '/v4/user')).json();
  group = groups.find((g) => g.guid === user.default_group_guid);

  const allowed = new Set([server.base, strict.base].map((b) => new URL(b).host));
  context = await chromium.launchPersistentContext(tempDir('shortlinkd-chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
    permissions: ['clipboard-read', 'clipboard-write'],
    acceptDownloads: true,
  });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if ((url.protocol === 'http:' && allowed.has(url.host)) || url.protocol === 'data:') return route.continue();
    outside.push(url.href);
    return route.abort();
  });
});

after(async () => {
  await context?.close();
  await receiver?.close();
  for (const s of [server, strict]) {
    const exit = await s?.stop();
    if (exit && exit.code !== 0 && exit.signal !== 'SIGTERM') console.log(s.log);
  }
});

async function newPage(width = 1280, height = 900) {
  const page = await context.newPage();
  await page.setViewportSize({ width, height });
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) pageProblems.push(m.text());
  });
  page.on('pageerror', (e) => pageProblems.push(String(e)));
  return page;
}

async function signIn(page, s = server) {
  await page.goto(`${s.base}/app`);
  await page.getByLabel('API token').fill(s.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: /Webhooks/ }).waitFor();
}

// The text of the error line a control names in aria-describedby, or null
// when it shows none: "at the field" made precise.
function fieldError(locator) {
  return locator.evaluate((c) => {
    const ids = (c.getAttribute('aria-describedby') || '').split(' ');
    const line = ids.map((id) => document.getElementById(id)).find((e) => e && e.classList.contains('field-error'));
    if (!line || line.hidden) return null;
    return { text: line.textContent, invalid: c.getAttribute('aria-invalid') === 'true', sameField: c.closest('.field') === line.closest('.field') };
  });
}

async function assertFieldShows(locator, description, what) {
  const e = await waitUntil(() => fieldError(locator), `the error at ${what}`, 5000);
  assert.ok(e.text.includes(description), `${what}: "${e.text}" should hold the server's "${description}"`);
  assert.ok(e.invalid, `${what} should be marked aria-invalid`);
  assert.ok(e.sameField, `${what}: the error should sit in the control's own field`);
}

const rowOf = (page, name) => page.locator('#webhook-rows tr', { has: page.locator('th', { hasText: new RegExp(`^${name.replace(/[()]/g, '\\$&')}$`) }) });

async function menu(page, name, item) {
  await page.getByRole('button', { name: `Actions for ${name}` }).click();
  await page.locator(`[id^="menu-"]:visible`).getByRole('button', { name: item, exact: true }).click();
}

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

test('settings_page_served_with_csp_and_security_headers', async () => {
  for (const route of ['/app', '/app/', '/app/app.js', '/app/app.css']) {
    const r = await request(server.base + route);
    assert.equal(r.status, 200, route);
    assert.equal(r.headers['content-security-policy'], CSP, route);
    assert.equal(r.headers['x-content-type-options'], 'nosniff', route);
    assert.equal(r.headers['x-frame-options'], 'DENY', route);
    assert.equal(r.headers['referrer-policy'], 'no-referrer', route);
  }
  assert.match((await request(`${server.base}/app/app.js`)).headers['content-type'], /^text\/javascript/);
  assert.match((await request(`${server.base}/app/app.css`)).headers['content-type'], /^text\/css/);
  const html = (await request(`${server.base}/app`)).body;
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'no inline script');
  assert.doesNotMatch(html, /\sstyle=|<style/i, 'no inline style');
  assert.doesNotMatch(html, /(src|href|action)=["']?(https?:)?\/\//i, 'nothing loaded from elsewhere');
  assert.equal((await request(`${server.base}/app/nope.js`)).status, 404);
});

test('settings_page_signin_wrong_token_then_right_token', async () => {
  const page = await newPage();
  await page.goto(`${server.base}/app`);
  const token = page.getByLabel('API token');
  await token.fill('not-a-real-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const err = await waitUntil(() => fieldError(token), 'the wrong-token message');
  assert.match(err.text, /not accepted/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
  assert.equal(await page.getByRole('heading', { name: /Webhooks/ }).count(), 0);

  await token.fill('');
  await page.getByRole('button', { name: 'Sign in' }).click();
  assert.match((await waitUntil(() => fieldError(token), 'the empty-token message')).text, /Paste an API token/);

  await token.fill(server.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: /Webhooks/ }).waitFor();
  const stored = await page.evaluate(() => Object.values({ ...sessionStorage }));
  assert.deepEqual(stored, [server.token], 'the token lives in session storage');
  assert.deepEqual(await context.cookies(), [], 'no cookies');

  await page.reload();
  await page.getByRole('heading', { name: /Webhooks/ }).waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API token').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.close();
});

test('settings_page_webhook_lifecycle', async (t) => {
  const page = await newPage();
  await signIn(page);
  const oauthUrl = receiver.url.replace(/\/hook$/, '/token');
  let hook;
  let secret;

  await t.test('add with every field', async () => {
    await page.getByRole('button', { name: 'Add webhook' }).click();
    await page.getByLabel('Name', { exact: true }).fill('CRM clicks');
    await page.getByLabel('Endpoint URL').fill(receiver.url);
    await page.getByRole('group', { name: 'Groups' }).getByLabel(group.name).check();
    await page.getByLabel('Event').selectOption({ label: 'Engagements' });
    await page.getByLabel('Activate immediately').check();
    await page.getByLabel('Fetch tags').check();
    await page.getByText('OAuth 2.0 client credentials').click();
    await page.getByLabel('OAuth URL').fill(oauthUrl);
    await page.getByLabel('Client ID').fill('crm-client');
    await page.getByLabel('Client secret').fill('crm-secret');
    await shot(page, 'webhook-form-1280');
    await page.getByRole('button', { name: 'Add endpoint' }).click();

    const secretBox = page.getByLabel(/^Signing secret for/);
    await secretBox.waitFor();
    secret = await secretBox.inputValue();
    assert.match(secret, /^whsec_/);
    await page.getByRole('button', { name: 'Copy', exact: true }).click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);

    const row = rowOf(page, 'CRM clicks');
    await row.waitFor();
    const text = await row.innerText();
    for (const want of [receiver.url, group.name, 'Active']) assert.ok(text.includes(want), `row shows ${want}: ${text}`);

    const list = (await server.api('GET', `/v4/organizations/${group.organization_guid}/webhooks`)).json().webhooks;
    assert.equal(list.length, 1);
    hook = list[0];
    assert.equal(hook.name, 'CRM clicks');
    assert.equal(hook.url, receiver.url);
    assert.deepEqual(hook.group_guids, [group.guid]);
    assert.equal(hook.event, 'engagement');
    assert.equal(hook.is_active, true);
    assert.equal(hook.fetch_tags, true);
    assert.equal(hook.oauth_url, oauthUrl);
    assert.equal(hook.client_id, 'crm-client');
    assert.equal(hook.client_secret, '********');
    await page.getByRole('button', { name: 'Done' }).click();
    assert.equal(await page.getByLabel(/^Signing secret for/).isVisible(), false, 'the secret is gone once dismissed');
    assert.equal(await page.getByLabel(/^Signing secret for/).inputValue(), '', 'and not kept in the page');
  });

  await t.test('edit', async () => {
    await menu(page, 'CRM clicks', 'Edit');
    const name = page.getByLabel('Name', { exact: true });
    assert.equal(await name.inputValue(), 'CRM clicks');
    assert.equal(await page.getByLabel('Endpoint URL').inputValue(), receiver.url);
    assert.equal(await page.getByLabel('Client ID').inputValue(), 'crm-client');
    await name.fill('CRM clicks (EU)');
    await page.getByLabel('Fetch tags').uncheck();
    await page.getByRole('button', { name: 'Save changes' }).click();
    await rowOf(page, 'CRM clicks (EU)').waitFor();
    const h = (await server.api('GET', `/v4/webhooks/${hook.guid}`)).json();
    assert.equal(h.name, 'CRM clicks (EU)');
    assert.equal(h.fetch_tags, false);
    assert.equal(h.oauth_url, oauthUrl);
    assert.equal(h.client_secret, '********', 'an empty Client secret keeps the stored one');
    assert.deepEqual(h.group_guids, [group.guid]);
  });

  await t.test('deactivate and activate', async () => {
    await menu(page, 'CRM clicks (EU)', 'Deactivate');
    await rowOf(page, 'CRM clicks (EU)').getByText('Inactive', { exact: true }).waitFor();
    assert.equal((await server.api('GET', `/v4/webhooks/${hook.guid}`)).json().is_active, false);
    await menu(page, 'CRM clicks (EU)', 'Activate');
    await rowOf(page, 'CRM clicks (EU)').getByText('Active', { exact: true }).waitFor();
    assert.equal((await server.api('GET', `/v4/webhooks/${hook.guid}`)).json().is_active, true);
  });

  await t.test('send a test event and see it in the delivery log, then resend', async () => {
    const before = hookRequests().length;
    await menu(page, 'CRM clicks (EU)', 'Send test event');
    await waitUntil(() => hookRequests().length > before, 'the test event at the receiver');
    const sent = hookRequests().at(-1);
    assert.equal(sent.headers.authorization, 'Bearer at-123', 'the OAuth token is used');
    assert.ok(sent.headers['webhook-signature']?.startsWith('v1,'));

    const log = page.getByRole('region', { name: /Delivery log/ });
    const delivered = log.locator('tbody tr', { hasText: 'Delivered' }).first();
    await delivered.waitFor({ timeout: 15000 });
    const cells = await delivered.locator('td').allInnerTexts();
    assert.ok(cells.includes('200'), `HTTP code in ${cells}`);
    assert.ok(cells.some((c) => /^\d+ ms$/.test(c)), `duration in ${cells}`);
    await shot(page, 'webhook-log-1280');

    const n = await log.locator('tbody tr').count();
    const count = hookRequests().length;
    await delivered.getByRole('button', { name: /Resend/ }).click();
    await waitUntil(() => hookRequests().length > count, 'the resent delivery');
    assert.equal(hookRequests().at(-1).headers['webhook-id'], sent.headers['webhook-id'], 'a resend is the same event');
    await page.getByRole('button', { name: 'Refresh' }).click();
    await waitUntil(async () => {
      await page.getByRole('button', { name: 'Refresh' }).click();
      return (await log.locator('tbody tr').count()) > n;
    }, 'the resend in the log');
    await waitUntil(async () => /Delivered/.test(await rowOf(page, 'CRM clicks (EU)').innerText()), 'the last delivery in the table');
  });

  await t.test('rotate the signing secret', async () => {
    await menu(page, 'CRM clicks (EU)', 'Rotate signing secret');
    await page.getByRole('dialog').getByRole('button', { name: 'Rotate secret' }).click();
    const box = page.getByLabel(/^Signing secret for/);
    await box.waitFor();
    const fresh = await box.inputValue();
    assert.match(fresh, /^whsec_/);
    assert.notEqual(fresh, secret);
    await page.getByRole('button', { name: 'Done' }).click();
  });

  await t.test('delete with confirmation', async () => {
    await menu(page, 'CRM clicks (EU)', 'Delete');
    const dialog = page.getByRole('dialog');
    assert.match(await dialog.innerText(), /CRM clicks \(EU\)/);
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    assert.equal((await server.api('GET', `/v4/webhooks/${hook.guid}`)).status, 200, 'cancel keeps it');
    await menu(page, 'CRM clicks (EU)', 'Delete');
    await page.getByRole('dialog').getByRole('button', { name: 'Delete webhook' }).click();
    await rowOf(page, 'CRM clicks (EU)').waitFor({ state: 'detached' });
    assert.equal((await server.api('GET', `/v4/webhooks/${hook.guid}`)).status, 404);
    await page.getByText('No webhooks yet').waitFor();
  });
  await page.close();
});

test('settings_page_server_errors_at_their_fields', async (t) => {
  // What the server says for a body, asked directly: the page must show it.
  const said = async (s, route, body) => {
    const r = await s.api('POST', route, body);
    assert.ok(r.status >= 400, `${route} ${JSON.stringify(body)} should be refused`);
    const j = r.json();
    assert.ok(j.errors.length > 0);
    return { description: j.description, field: j.errors[0].field };
  };

  await t.test('webhook form: empty name, invalid URL, private address', async () => {
    const page = await newPage();
    await signIn(page, strict);
    await page.getByRole('button', { name: 'Add webhook' }).click();
    const name = page.getByLabel('Name', { exact: true });
    const url = page.getByLabel('Endpoint URL');
    const add = page.getByRole('button', { name: 'Add endpoint' });

    await url.fill('https://crm.example.com/hook');
    await add.click();
    let s = await said(strict, '/v4/webhooks', { name: '', url: 'https://crm.example.com/hook' });
    assert.equal(s.field, 'name');
    await assertFieldShows(name, s.description, 'Name');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'wh-name', 'focus goes to the field in error');

    await name.fill('CRM');
    await url.fill('not a url');
    await add.click();
    s = await said(strict, '/v4/webhooks', { name: 'CRM', url: 'not a url' });
    await assertFieldShows(url, s.description, 'Endpoint URL');
    assert.equal(await fieldError(name), null, 'the fixed field no longer shows an error');

    await url.fill('http://10.0.0.1/hook');
    await add.click();
    s = await said(strict, '/v4/webhooks', { name: 'CRM', url: 'http://10.0.0.1/hook' });
    assert.equal(s.field, 'url');
    await assertFieldShows(url, s.description, 'Endpoint URL');
    await shot(page, 'webhook-errors-1280');

    await url.fill('http://127.0.0.1:9/hook');
    await add.click();
    s = await said(strict, '/v4/webhooks', { name: 'CRM', url: 'http://127.0.0.1:9/hook' });
    await assertFieldShows(url, s.description, 'Endpoint URL');

    await url.fill('https://93.184.215.14/hook');
    await page.getByText('OAuth 2.0 client credentials').click();
    await page.getByLabel('OAuth URL').fill('http://169.254.169.254/token');
    await page.getByLabel('Client ID').fill('id');
    await page.getByLabel('Client secret').fill('secret');
    await add.click();
    s = await said(strict, '/v4/webhooks', {
      name: 'CRM', url: 'https://93.184.215.14/hook', oauth_url: 'http://169.254.169.254/token', client_id: 'id', client_secret: 'secret',
    });
    assert.equal(s.field, 'oauth_url');
    await assertFieldShows(page.getByLabel('OAuth URL'), s.description, 'OAuth URL');

    await page.getByLabel('OAuth URL').fill('https://93.184.215.14/token');
    await page.getByLabel('Client ID').fill('');
    await add.click();
    s = await said(strict, '/v4/webhooks', { name: 'CRM', url: 'https://93.184.215.14/hook', oauth_url: 'https://93.184.215.14/token', client_secret: 'secret' });
    assert.equal(s.field, 'client_id');
    await assertFieldShows(page.getByLabel('Client ID'), s.description, 'Client ID');
    assert.equal((await strict.api('GET', `/v4/organizations/${group.organization_guid}/webhooks`)).status, 404, 'another organization');
    await page.close();
  });

  await t.test('webhook edit form: empty name and private address', async () => {
    const created = (await strict.api('POST', '/v4/webhooks', { name: 'Edit me', url: 'https://93.184.215.14/hook' }));
    assert.equal(created.status, 201, created.body);
    const page = await newPage();
    await signIn(page, strict);
    await menu(page, 'Edit me', 'Edit');
    await page.getByLabel('Name', { exact: true }).fill('');
    await page.getByRole('button', { name: 'Save changes' }).click();
    let s = await said(strict, '/v4/webhooks', { name: '', url: 'https://93.184.215.14/hook' });
    await assertFieldShows(page.getByLabel('Name', { exact: true }), s.description, 'Name (edit)');
    await page.getByLabel('Name', { exact: true }).fill('Edit me');
    await page.getByLabel('Endpoint URL').fill('http://192.168.1.10/hook');
    await page.getByRole('button', { name: 'Save changes' }).click();
    s = await said(strict, '/v4/webhooks', { name: 'x', url: 'http://192.168.1.10/hook' });
    await assertFieldShows(page.getByLabel('Endpoint URL'), s.description, 'Endpoint URL (edit)');
    assert.equal((await strict.api('GET', `/v4/webhooks/${created.json().guid}`)).json().url, 'https://93.184.215.14/hook');
    await page.close();
  });

  await t.test('link form: invalid long URL, bad and taken back-half, bad tags', async () => {
    const page = await newPage();
    await signIn(page);
    await page.getByRole('link', { name: 'Links' }).click();
    const longUrl = page.getByLabel('Long URL');
    const keyword = page.getByLabel('Back-half (optional)');
    const create = page.getByRole('button', { name: 'Create link' });

    await create.click();
    let s = await said(server, '/v4/bitlinks', { long_url: '', group_guid: group.guid });
    await assertFieldShows(longUrl, s.description, 'Long URL (empty)');

    await longUrl.fill('not a url');
    await create.click();
    s = await said(server, '/v4/bitlinks', { long_url: 'not a url' });
    assert.equal(s.field, 'long_url');
    await assertFieldShows(longUrl, s.description, 'Long URL');

    await longUrl.fill('https://example.com/ok');
    await keyword.fill('a!');
    await create.click();
    s = await said(server, '/v4/bitlinks', { long_url: 'https://example.com/ok', keyword: 'a!' });
    await assertFieldShows(keyword, s.description, 'Back-half');
    assert.equal(await fieldError(longUrl), null);

    assert.ok([200, 201].includes((await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/first', keyword: 'taken-one' })).status));
    await keyword.fill('taken-one');
    await create.click();
    s = await said(server, '/v4/bitlinks', { long_url: 'https://example.com/ok', keyword: 'taken-one' });
    await assertFieldShows(keyword, s.description, 'Back-half (taken)');

    await keyword.fill('');
    await page.getByLabel(/^Tags/).fill('x'.repeat(80));
    await create.click();
    s = await said(server, '/v4/bitlinks', { long_url: 'https://example.com/ok', tags: ['x'.repeat(80)] });
    await assertFieldShows(page.getByLabel(/^Tags/), s.description, 'Tags');
    await shot(page, 'link-errors-1280');
    await page.close();
  });
});

// Clicks as a browser would make them, from addresses in the GeoIP test
// database (GB, GB, SE), and one crawler that is not counted.
async function click(code, ip, ua = BROWSER_UA) {
  const r = await request(`${server.base}/${code}`, { headers: { 'user-agent': ua, 'x-forwarded-for': ip } });
  assert.equal(r.status, 302);
}

async function clicksCommitted(id, n) {
  await waitUntil(async () => {
    const s = (await server.api('GET', `/v4/bitlinks/${id}/clicks/summary?units=-1`)).json();
    return s.total_clicks >= n;
  }, `${n} clicks committed`);
}

test('settings_page_links_create_search_copy_qr_chart', async () => {
  const page = await newPage();
  await signIn(page);
  await page.getByRole('link', { name: 'Links' }).click();
  await page.getByRole('heading', { name: /Links/ }).waitFor();

  await page.getByLabel('Long URL').fill('https://shop.example.com/spring?utm_source=app');
  await page.getByLabel('Back-half (optional)').fill('spring-sale');
  await page.getByLabel('Title (optional)').fill('Spring sale');
  await page.getByLabel(/^Tags/).fill('promo, spring');
  await page.getByRole('button', { name: 'Create link' }).click();
  const short = `${server.base}/spring-sale`;
  await page.getByRole('link', { name: short }).first().waitFor();
  assert.equal(await page.getByLabel('Long URL').inputValue(), '', 'the form is cleared after a create');

  const link = (await server.api('GET', `/v4/bitlinks/${new URL(server.base).host}/spring-sale`)).json();
  assert.equal(link.long_url, 'https://shop.example.com/spring?utm_source=app');
  assert.equal(link.title, 'Spring sale');
  assert.deepEqual(link.tags, ['promo', 'spring']);
  assert.ok([200, 201].includes((await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.org/autumn', title: 'Autumn' })).status));

  // Search narrows the list; an empty search shows everything again.
  await page.getByLabel('Search links').fill('autumn');
  await waitUntil(async () => (await page.locator('#link-rows tr').count()) === 1
    && /Autumn/.test(await page.locator('#link-rows').innerText()), 'the search result');
  await page.getByLabel('Search links').fill('spring');
  await waitUntil(async () => (await page.locator('#link-rows tr').count()) === 1
    && /Spring sale/.test(await page.locator('#link-rows').innerText()), 'the other search result');
  await page.getByLabel('Search links').fill('no-such-thing');
  await page.getByText(/No links match/).waitFor();
  await page.getByLabel('Search links').fill('');
  await waitUntil(async () => (await page.locator('#link-rows tr').count()) >= 3, 'every link again');

  const row = page.locator('#link-rows tr', { hasText: 'Spring sale' });
  await row.getByRole('button', { name: `Copy ${short}` }).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), short);

  const qr = row.getByRole('link', { name: `Download QR code for ${short}` });
  const href = await qr.getAttribute('href');
  assert.equal(await qr.getAttribute('download'), 'spring-sale-qr.png');
  const png = await page.request.get(new URL(href, server.base).href);
  assert.equal(png.status(), 200);
  assert.equal(png.headers()['content-type'], 'image/png');
  assert.deepEqual([...(await png.body()).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  const [download] = await Promise.all([page.waitForEvent('download'), qr.click()]);
  assert.equal(download.suggestedFilename(), 'spring-sale-qr.png');

  await click('spring-sale', '81.2.69.160');
  await click('spring-sale', '81.2.69.161');
  await click('spring-sale', '89.160.20.112');
  await click('spring-sale', '81.2.69.160', 'Twitterbot/1.0');
  await clicksCommitted(link.id, 3);

  await row.getByRole('button', { name: `Clicks for ${short}` }).click();
  const stats = page.getByRole('region', { name: /Clicks/ });
  await stats.getByText('3 clicks in the last 30 days').waitFor();
  const chart = stats.getByRole('img', { name: /Clicks per day/ });
  assert.match(await chart.getAttribute('aria-label'), /30 days, 3 in all/);
  const bars = await chart.locator('rect.bar').evaluateAll((rs) => rs.map((r) => ({
    clicks: Number(r.getAttribute('data-clicks')), height: Number(r.getAttribute('height')),
  })));
  assert.equal(bars.length, 30);
  assert.equal(bars.reduce((s, b) => s + b.clicks, 0), 3);
  assert.equal(bars.filter((b) => b.height > 0).length, 1, 'one day has the clicks');
  assert.ok(bars.at(-1).clicks === 3 || bars.at(-2).clicks === 3, 'the clicks are on the newest day');

  const countries = await stats.getByRole('table', { name: /Countries/ }).locator('tbody tr').evaluateAll(
    (rs) => rs.map((r) => [...r.cells].map((c) => c.textContent)));
  assert.deepEqual(countries, [['United Kingdom (GB)', '2'], ['Sweden (SE)', '1']]);
  await shot(page, 'links-stats-1280');
  await page.close();
});

test('settings_page_keyboard_and_labels', async () => {
  const page = await newPage();
  await page.goto(`${server.base}/app`);
  // Sign in with the keyboard alone.
  await waitUntil(async () => {
    await page.keyboard.press('Tab');
    return (await page.evaluate(() => document.activeElement.id)) === 'signin-token';
  }, 'focus on the token field');
  await page.keyboard.type(server.token);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: /Webhooks/ }).waitFor();

  // Every control on the page, shown or not, has a label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((c) => !(c.labels?.length || c.getAttribute('aria-label') || c.getAttribute('aria-labelledby') || c.textContent.trim()))
    .map((c) => c.id || c.outerHTML));
  assert.deepEqual(unlabelled, []);

  // Tab reaches every control of the webhook form, in order.
  await page.getByRole('button', { name: 'Add webhook' }).focus();
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'wh-name');
  const seen = [];
  for (let i = 0; i < 20 && seen.at(-1) !== 'webhook-submit'; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => document.activeElement.id || document.activeElement.tagName));
  }
  for (const id of ['wh-url', `wh-group-${group.guid}`, 'wh-event', 'wh-active', 'wh-tags', 'SUMMARY', 'webhook-submit'])
    assert.ok(seen.includes(id), `Tab reaches ${id}: ${seen}`);
  await page.keyboard.press('Escape');
  assert.equal(await page.getByRole('button', { name: 'Add endpoint' }).isVisible(), false, 'Escape closes the form');

  // The row menu by keyboard: Enter opens it on its first item, arrows move,
  // Escape closes it and gives focus back.
  const created = await server.api('POST', '/v4/webhooks', { name: 'Keyboard hook', url: receiver.url, is_active: false });
  assert.equal(created.status, 201);
  await page.reload();
  const toggle = page.getByRole('button', { name: 'Actions for Keyboard hook' });
  await toggle.focus();
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Edit');
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Activate');
  await page.keyboard.press('Escape');
  assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Actions for Keyboard hook');
  await server.api('DELETE', `/v4/webhooks/${created.json().guid}`);
  await page.close();
});

test('settings_page_phone_and_desktop_screenshots', async () => {
  // Something to look at: a webhook with deliveries, links with clicks.
  const hook = (await server.api('POST', '/v4/webhooks', {
    name: 'Sales CRM', url: receiver.url, group_guids: [group.guid], fetch_tags: true,
  })).json();
  const l = (await server.api('POST', '/v4/bitlinks', { long_url: 'https://example.com/launch', keyword: 'launch', title: 'Launch post', tags: ['blog'] })).json();
  const before = hookRequests().length;
  await click('launch', '2.125.160.216');
  await click('launch', '81.2.69.160');
  await clicksCommitted(l.id, 2);
  await waitUntil(() => hookRequests().length >= before + 2, 'the engagement deliveries');

  for (const [width, height] of [[390, 844], [1280, 900]]) {
    const page = await newPage(width, height);
    await page.goto(`${server.base}/app`);
    await page.getByLabel('API token').waitFor();
    await shot(page, `signin-${width}`);
    await signIn(page);
    await rowOf(page, 'Sales CRM').waitFor();
    await waitUntil(async () => /Delivered/.test(await rowOf(page, 'Sales CRM').innerText()), 'the last delivery', 5000)
      .catch(() => {}); // the delivery test above says why
    await menu(page, 'Sales CRM', 'Delivery log');
    await page.getByRole('region', { name: /Delivery log/ }).locator('tbody tr').first().waitFor({ timeout: 5000 }).catch(() => {});
    await shot(page, `webhooks-${width}`);
    await page.getByRole('button', { name: 'Actions for Sales CRM' }).click();
    await shot(page, `webhook-menu-${width}`);
    await page.keyboard.press('Escape');
    await page.getByRole('button', { name: 'Add webhook' }).click();
    await page.getByText('OAuth 2.0 client credentials').click();
    await shot(page, `webhook-form-${width}`);

    await page.getByRole('link', { name: 'Links' }).click();
    await page.locator('#link-rows tr', { hasText: 'Launch post' }).getByRole('button', { name: /^Clicks for/ }).click();
    await page.getByText('2 clicks in the last 30 days').waitFor();
    await shot(page, `links-${width}`);
    await page.emulateMedia({ colorScheme: 'dark' });
    await shot(page, `links-${width}-dark`);
    await page.emulateMedia({ colorScheme: 'light' });

    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no sideways scrolling at ${width}px (overflow ${overflow}px)`);
    await page.getByRole('link', { name: 'Webhooks' }).click();
    const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow2 <= 0, `no sideways scrolling on webhooks at ${width}px (overflow ${overflow2}px)`);
    await page.close();
  }
  await server.api('DELETE', `/v4/webhooks/${hook.guid}`);
  for (const name of ['signin-390', 'webhooks-390', 'links-390', 'signin-1280', 'webhooks-1280', 'links-1280'])
    assert.ok(fs.statSync(path.join(SHOTS, `${name}.png`)).size > 1000, name);
});

test('settings_page_delivery_log_shows_failures', async () => {
  // An endpoint that answers 503 with a body, and one that is not listening.
  const failing = await startReceiver(() => ({ status: 503, headers: { 'content-type': 'text/plain' }, body: 'down for maintenance' }));
  const closed = await startReceiver();
  const closedUrl = closed.url;
  await closed.close();
  const a = (await server.api('POST', '/v4/webhooks', { name: 'Flaky CRM', url: failing.url })).json();
  const b = (await server.api('POST', '/v4/webhooks', { name: 'Gone CRM', url: closedUrl })).json();
  const page = await newPage();
  await signIn(page);
  try {
    await menu(page, 'Flaky CRM', 'Send test event');
    await failing.waitFor(1);
    const log = page.getByRole('region', { name: /Delivery log/ });
    const row = log.locator('tbody tr').first();
    await waitUntil(async () => /Retry|Failed/.test(await row.innerText()), 'the failed attempt in the log');
    const cells = await row.locator('td').allInnerTexts();
    assert.ok(cells.includes('503'), `HTTP code in ${cells}`);
    assert.ok(cells.some((c) => c.includes('down for maintenance')), `response in ${cells}`);
    await shot(page, 'webhook-log-failure-1280');

    await menu(page, 'Gone CRM', 'Send test event');
    await page.getByRole('heading', { name: 'Delivery log: Gone CRM' }).waitFor();
    await waitUntil(async () => /Retry|Failed/.test(await log.locator('tbody tr').first().innerText()), 'the refused attempt in the log');
    const gone = await log.locator('tbody tr').first().locator('td').allInnerTexts();
    assert.ok(gone.includes('—'), `no HTTP code in ${gone}`);
    const error = await log.locator('tbody tr').first().locator('td[data-label="Error"]').innerText();
    assert.ok(error.length > 0, 'the connection error is shown');
    await waitUntil(async () => /Retry|Failed/.test(await rowOf(page, 'Gone CRM').innerText()), 'the last delivery in the table');
  } finally {
    await page.close();
    await server.api('DELETE', `/v4/webhooks/${a.guid}`);
    await server.api('DELETE', `/v4/webhooks/${b.guid}`);
    await failing.close();
  }
});

test('settings_page_reaches_nothing_else_and_breaks_no_csp', async () => {
  assert.deepEqual(outside, [], 'requests outside the servers under test');
  assert.deepEqual(pageProblems, [], 'CSP violations or script errors');
  // The watch above would see a violation: an inline style is refused and said so.
  const page = await context.newPage();
  const seen = [];
  page.on('console', (m) => seen.push(m.text()));
  await page.goto(`${server.base}/app`);
  await page.evaluate(() => document.body.setAttribute('style', 'color: red'));
  await waitUntil(() => seen.some((t) => /Content Security Policy/.test(t)), 'the CSP refusal', 5000);
  assert.equal(await page.evaluate(() => getComputedStyle(document.body).color), await page.evaluate(() => {
    document.body.removeAttribute('style');
    return getComputedStyle(document.body).color;
  }), 'the inline style had no effect');
  await page.close();
});
