// shortlinkd settings page: webhooks and links over the /v4 REST API.
// Plain DOM code, no build step and no libraries. The page's CSP allows no
// inline script or style, so everything is built here with DOM APIs, text goes
// in through textContent only, and looks come from classes in app.css.
'use strict';

(() => {
  const TOKEN_KEY = 'shortlinkd.token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  const state = {
    user: null,
    groups: [],
    orgGuid: null,
    webhooks: [],
    editing: null, // the webhook being edited, or null when adding
    secretHook: null, // the webhook whose secret the panel shows
    logHook: null, // the webhook whose delivery log is open
    linkGroup: null,
    linkPage: 1,
    linkQuery: '',
    statsLink: null,
  };

  // ---- small helpers ----

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') node.setAttribute('class', v);
      else node.setAttribute(k, String(v));
    }
    return node;
  }

  function show(node, on = true) {
    node.hidden = !on;
  }

  let toastTimer = 0;
  function toast(message) {
    const t = $('toast');
    t.textContent = message;
    t.classList.add('on');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove('on'), 4000);
  }

  function alertError(message) {
    const a = $('alert');
    a.textContent = message;
    show(a, message !== '');
  }

  function formatTime(s) {
    if (!s) return '';
    const d = new Date(typeof s === 'number' ? s * (s < 1e12 ? 1000 : 1) : s);
    if (Number.isNaN(d.getTime())) return String(s);
    return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  }

  async function copyText(text, what) {
    try {
      await navigator.clipboard.writeText(text);
      toast(`Copied ${what}.`);
    } catch {
      // Without the async clipboard (an insecure origin), select a field the
      // admin can copy from by hand.
      toast(`Select and copy the ${what} by hand: ${text}`);
    }
  }

  // ---- the API ----

  class ApiError extends Error {
    constructor(status, body) {
      const description = body && (body.description || body.message);
      super(description || `The server answered ${status}.`);
      this.status = status;
      this.body = body || {};
    }
  }

  async function api(method, path, body) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch {
      throw new ApiError(0, { description: 'The server could not be reached.' });
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { description: text.slice(0, 200) };
      }
    }
    if (!res.ok) {
      if (res.status === 403 && sessionStorage.getItem(TOKEN_KEY) && path !== '/v4/user') {
        // The token was revoked while the page was open.
        signOut('Your token is no longer accepted. Sign in again.');
      }
      throw new ApiError(res.status, data);
    }
    return data || {};
  }

  // ---- errors next to their fields ----

  function clearErrors(form) {
    for (const p of form.querySelectorAll('.field-error, .form-error')) {
      p.textContent = '';
      p.hidden = true;
    }
    for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
  }

  // Fields the API names that a control of another name stands for.
  const FIELD_ALIASES = {
    group_guids: 'group_guid',
    custom_back_half: 'keyword',
  };

  // Puts each of the API's errors[].field messages at its control; anything
  // that names no control goes in the form's own error line. Focuses the first
  // control in error.
  function showErrors(form, err) {
    const body = err.body || {};
    const text = body.description || body.message || err.message;
    const fields = Array.isArray(body.errors) ? body.errors : [];
    let first = null;
    let placed = false;
    for (const f of fields) {
      const name = FIELD_ALIASES[f.field] && !form.querySelector(`[data-field="${f.field}"]`)
        ? FIELD_ALIASES[f.field] : f.field;
      const control = form.querySelector(`[data-field="${CSS.escape(String(name))}"]`);
      if (!control) continue;
      const line = document.getElementById(control.getAttribute('aria-describedby')
        ?.split(' ').find((id) => id.endsWith('-error')) || '');
      if (!line) continue;
      const extra = f.error_code && f.error_code !== 'invalid' ? ` (${f.error_code.replace(/_/g, ' ')})` : '';
      line.textContent = text + extra;
      line.hidden = false;
      control.setAttribute('aria-invalid', 'true');
      if (control.closest('details')) control.closest('details').open = true;
      first = first || control;
      placed = true;
    }
    if (!placed) {
      const line = form.querySelector('.form-error');
      line.textContent = text;
      line.hidden = false;
    }
    const focusable = first && (first.matches('fieldset') ? first.querySelector('input') : first);
    (focusable || form.querySelector('input, select, button')).focus();
  }

  // ---- sign-in ----

  async function signIn(event) {
    event.preventDefault();
    const form = $('signin-form');
    const input = $('signin-token');
    const token = input.value.trim();
    clearErrors(form);
    const fail = (message) => {
      $('signin-token-error').textContent = message;
      show($('signin-token-error'));
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    };
    if (!token) {
      fail('Paste an API token first.');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await start();
      input.value = '';
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignIn();
      if (err.status === 403 || err.status === 401)
        fail('That API token was not accepted. Check that it was copied whole and has not been revoked.');
      else fail(`Could not sign in: ${err.message}`);
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.user = null;
    showSignIn();
    if (message) {
      $('signin-token-error').textContent = message;
      show($('signin-token-error'));
    }
  }

  function showSignIn() {
    for (const id of ['webhooks', 'links', 'nav', 'signout']) show($(id), false);
    show($('signin'));
    alertError('');
    $('signin-token').focus();
  }

  // Loads the account, then shows the view the address names.
  async function start() {
    state.user = await api('GET', '/v4/user');
    const { groups } = await api('GET', '/v4/groups');
    state.groups = groups || [];
    state.orgGuid = state.groups[0]?.organization_guid || null;
    state.linkGroup = state.user.default_group_guid || state.groups[0]?.guid || null;
    fillGroupSelect();
    show($('signin'), false);
    show($('nav'));
    show($('signout'));
    route();
  }

  function route() {
    if (!state.user) return;
    const view = location.hash === '#links' ? 'links' : 'webhooks';
    show($('webhooks'), view === 'webhooks');
    show($('links'), view === 'links');
    for (const a of $('nav').querySelectorAll('a')) {
      if (a.getAttribute('href') === `#${view}`) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    alertError('');
    if (view === 'webhooks') loadWebhooks();
    else loadLinks();
  }

  function groupName(guid) {
    const g = state.groups.find((x) => x.guid === guid);
    return g ? g.name : guid;
  }

  // ---- webhooks: the table ----

  async function loadWebhooks() {
    if (!state.orgGuid) return;
    try {
      const { webhooks } = await api('GET', `/v4/organizations/${encodeURIComponent(state.orgGuid)}/webhooks`);
      state.webhooks = (webhooks || []).sort((a, b) => String(a.created).localeCompare(String(b.created)));
      renderWebhooks();
      for (const w of state.webhooks) loadLastDelivery(w);
    } catch (err) {
      alertError(`Could not load the webhooks: ${err.message}`);
    }
  }

  function deliveryItems(body) {
    if (Array.isArray(body)) return body;
    return body.deliveries || body.items || body.attempts || [];
  }

  function outcomeText(d) {
    const outcome = d.outcome || 'unknown';
    return outcome.charAt(0).toUpperCase() + outcome.slice(1);
  }

  async function loadLastDelivery(w) {
    const cell = document.querySelector(`[data-last="${CSS.escape(w.guid)}"]`);
    if (!cell) return;
    try {
      showLastDelivery(w, deliveryItems(await api('GET', `/v4/webhooks/${w.guid}/deliveries?size=1`)));
    } catch {
      cell.textContent = 'Unavailable';
    }
  }

  // Fills the table's "Last delivery" cell from a log, newest first.
  function showLastDelivery(w, items) {
    const cell = document.querySelector(`[data-last="${CSS.escape(w.guid)}"]`);
    if (!cell) return;
    cell.replaceChildren();
    if (items.length === 0) {
      cell.textContent = 'None yet';
      return;
    }
    const d = items[0];
    cell.append(
      el('span', { class: `badge ${d.outcome || ''}`, text: outcomeText(d) }),
      ' ',
      el('span', { class: 'muted', text: [d.http_status ? `HTTP ${d.http_status}` : '', formatTime(d.time)].filter(Boolean).join(' · ') }),
    );
  }

  function renderWebhooks() {
    const rows = $('webhook-rows');
    rows.replaceChildren();
    show($('webhook-empty'), state.webhooks.length === 0);
    show($('webhook-table'), state.webhooks.length > 0);
    for (const w of state.webhooks) rows.append(webhookRow(w));
  }

  function webhookRow(w) {
    const groups = (w.group_guids || []).length === 0 ? 'All groups' : w.group_guids.map(groupName).join(', ');
    const status = el('span', { class: `badge ${w.is_active ? 'active' : 'inactive'}`, text: w.is_active ? 'Active' : 'Inactive' });
    const statusCell = el('td', { 'data-label': 'Status' }, status);
    if (!w.is_active && w.deactivated_reason)
      statusCell.append(el('span', { class: 'muted block', text: w.deactivated_reason }));
    if (w.fetch_tags) statusCell.append(el('span', { class: 'muted block', text: 'Fetches tags' }));
    if (w.oauth_url) statusCell.append(el('span', { class: 'muted block', text: 'OAuth' }));
    return el('tr', { 'data-guid': w.guid },
      el('th', { scope: 'row', 'data-label': 'Name', text: w.name }),
      el('td', { 'data-label': 'URL', class: 'url', text: w.url }),
      el('td', { 'data-label': 'Groups', text: groups }),
      statusCell,
      el('td', { 'data-label': 'Last delivery', 'data-last': w.guid, text: '…' }),
      el('td', { class: 'row-actions' }, rowMenu(w)));
  }

  // A disclosure menu: a button that shows a list of plain buttons. Escape
  // closes it and gives focus back to the button.
  function rowMenu(w) {
    const id = `menu-${w.guid}`;
    const toggle = el('button', {
      type: 'button', class: 'menu-toggle', 'aria-expanded': 'false', 'aria-controls': id,
      'aria-label': `Actions for ${w.name}`, text: 'Actions ▾',
    });
    const item = (text, fn, cls) => el('li', {}, el('button', {
      type: 'button', class: cls, text,
      onclick: () => { closeMenus(); fn(w, toggle); },
    }));
    const menu = el('ul', { id, class: 'menu', hidden: true },
      item('Edit', openEdit),
      item(w.is_active ? 'Deactivate' : 'Activate', toggleActive),
      item('Send test event', sendTest),
      item('Delivery log', openLog),
      item('Rotate signing secret', rotateSecret),
      item('Delete', deleteWebhook, 'danger-text'));
    toggle.addEventListener('click', () => {
      const open = toggle.getAttribute('aria-expanded') === 'true';
      closeMenus();
      if (!open) {
        toggle.setAttribute('aria-expanded', 'true');
        menu.hidden = false;
        menu.querySelector('button').focus();
      }
    });
    menu.addEventListener('keydown', (e) => {
      const buttons = [...menu.querySelectorAll('button')];
      const i = buttons.indexOf(document.activeElement);
      if (e.key === 'Escape') {
        closeMenus();
        toggle.focus();
      } else if (e.key === 'ArrowDown') {
        e.preventDefault();
        buttons[(i + 1) % buttons.length].focus();
      } else if (e.key === 'ArrowUp') {
        e.preventDefault();
        buttons[(i - 1 + buttons.length) % buttons.length].focus();
      }
    });
    return el('div', { class: 'menu-wrap' }, toggle, menu);
  }

  function closeMenus() {
    for (const m of document.querySelectorAll('.menu')) m.hidden = true;
    for (const t of document.querySelectorAll('.menu-toggle')) t.setAttribute('aria-expanded', 'false');
  }

  // ---- webhooks: the form ----

  function fillGroupChecks(selected) {
    const list = $('wh-groups-list');
    list.replaceChildren();
    for (const g of state.groups) {
      const id = `wh-group-${g.guid}`;
      list.append(el('label', { class: 'check', for: id },
        el('input', { type: 'checkbox', id, value: g.guid, checked: selected.includes(g.guid) }),
        el('span', { text: g.name })));
    }
  }

  function openForm(w) {
    const form = $('webhook-form');
    state.editing = w;
    clearErrors(form);
    form.reset();
    $('webhook-form-title').textContent = w ? `Edit webhook “${w.name}”` : 'Add webhook';
    $('webhook-submit').textContent = w ? 'Save changes' : 'Add endpoint';
    $('wh-active-label').textContent = w ? 'Active' : 'Activate immediately';
    $('wh-name').value = w ? w.name : '';
    $('wh-url').value = w ? w.url : '';
    $('wh-event').value = 'engagement';
    $('wh-active').checked = w ? !!w.is_active : true;
    $('wh-tags').checked = w ? !!w.fetch_tags : false;
    $('wh-oauth-url').value = w?.oauth_url || '';
    $('wh-client-id').value = w?.client_id || '';
    $('wh-client-secret').value = '';
    $('wh-client-secret').placeholder = w?.client_secret ? 'unchanged' : '';
    show($('wh-client-secret-hint'), !!w?.client_secret);
    $('wh-oauth').open = !!w?.oauth_url;
    fillGroupChecks(w ? w.group_guids || [] : []);
    show(form);
    form.scrollIntoView({ block: 'nearest' });
    $('wh-name').focus();
  }

  function closeForm() {
    show($('webhook-form'), false);
    const back = state.editing && document.querySelector(`[aria-controls="menu-${CSS.escape(state.editing.guid)}"]`);
    state.editing = null;
    (back || $('webhook-add')).focus();
  }

  function openEdit(w) {
    openForm(w);
  }

  function formBody() {
    const groups = [...$('wh-groups-list').querySelectorAll('input:checked')].map((c) => c.value);
    const body = {
      name: $('wh-name').value.trim(),
      url: $('wh-url').value.trim(),
      event: $('wh-event').value,
      group_guids: groups,
      is_active: $('wh-active').checked,
      fetch_tags: $('wh-tags').checked,
    };
    const oauth = $('wh-oauth-url').value.trim();
    const clientId = $('wh-client-id').value.trim();
    const clientSecret = $('wh-client-secret').value;
    if (state.editing) {
      // An empty OAuth URL turns OAuth off; an empty client secret keeps the
      // stored one, which the API never shows.
      body.oauth_url = oauth;
      body.client_id = clientId || null;
      if (!oauth) body.client_secret = null;
      else if (clientSecret) body.client_secret = clientSecret;
    } else {
      if (oauth) body.oauth_url = oauth;
      if (clientId) body.client_id = clientId;
      if (clientSecret) body.client_secret = clientSecret;
    }
    return body;
  }

  async function submitWebhook(event) {
    event.preventDefault();
    const form = $('webhook-form');
    const submit = $('webhook-submit');
    clearErrors(form);
    submit.disabled = true;
    try {
      if (state.editing) {
        const w = await api('PATCH', `/v4/webhooks/${state.editing.guid}`, formBody());
        toast(`Saved webhook “${w.name}”.`);
        closeForm();
      } else {
        const w = await api('POST', '/v4/webhooks', formBody());
        show(form, false);
        state.editing = null;
        toast(`Added webhook “${w.name}”.`);
        showSecret(w, w.signing_secret, 'Copy this secret now: it is shown only once. Your endpoint verifies each delivery with it.');
      }
      await loadWebhooks();
    } catch (err) {
      showErrors(form, err);
    } finally {
      submit.disabled = false;
    }
  }

  async function toggleActive(w, toggle) {
    try {
      const u = await api('PATCH', `/v4/webhooks/${w.guid}`, { is_active: !w.is_active });
      toast(`${u.name} is now ${u.is_active ? 'active' : 'inactive'}.`);
      await loadWebhooks();
      document.querySelector(`[aria-controls="menu-${CSS.escape(w.guid)}"]`)?.focus();
    } catch (err) {
      alertError(`Could not change “${w.name}”: ${err.message}`);
      toggle.focus();
    }
  }

  // Resolves true when the admin confirms in the modal dialog.
  function confirmDialog(title, text, okLabel) {
    const dialog = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    return new Promise((resolve) => {
      const done = (ok) => {
        $('confirm-ok').onclick = null;
        $('confirm-cancel').onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(ok);
      };
      $('confirm-ok').onclick = () => done(true);
      $('confirm-cancel').onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  async function deleteWebhook(w, toggle) {
    const ok = await confirmDialog('Delete webhook?',
      `“${w.name}” will stop receiving events at ${w.url}. Pending deliveries are dropped. This cannot be undone.`,
      'Delete webhook');
    if (!ok) {
      toggle.focus();
      return;
    }
    try {
      await api('DELETE', `/v4/webhooks/${w.guid}`);
      toast(`Deleted webhook “${w.name}”.`);
      if (state.logHook?.guid === w.guid) show($('log-panel'), false);
      if (state.secretHook?.guid === w.guid) show($('secret-panel'), false);
      await loadWebhooks();
      $('webhook-add').focus();
    } catch (err) {
      alertError(`Could not delete “${w.name}”: ${err.message}`);
    }
  }

  async function sendTest(w, toggle) {
    try {
      const r = await api('POST', `/v4/webhooks/${w.guid}/verify`, {});
      toast(`Test event sent to “${w.name}”${r.delivery_id ? ` (delivery ${r.delivery_id})` : ''}. Its outcome appears in the log.`);
      await openLog(w, toggle, true);
    } catch (err) {
      alertError(`Could not send a test event to “${w.name}”: ${err.message}`);
      toggle.focus();
    }
  }

  // ---- webhooks: signing secret ----

  function showSecret(w, secret, note) {
    state.secretHook = w;
    $('secret-hook').textContent = w.name;
    $('secret-value').value = secret || '';
    $('secret-note').textContent = note;
    show($('secret-panel'));
    $('secret-panel').scrollIntoView({ block: 'nearest' });
    $('secret-value').focus();
    $('secret-value').select();
  }

  async function rotateSecret(w, toggle) {
    const ok = await confirmDialog('Rotate the signing secret?',
      `A new secret is made for “${w.name}”. Deliveries are signed with both secrets for a while, so update your endpoint soon.`,
      'Rotate secret');
    if (!ok) {
      toggle?.focus();
      return;
    }
    try {
      const r = await api('POST', `/v4/webhooks/${w.guid}/secret/rotate`, {});
      const until = r.previous_secret_expires ? ` Deliveries carry both signatures until ${formatTime(r.previous_secret_expires)}.` : '';
      showSecret(w, r.signing_secret, `The new secret, shown only once. Copy it to your endpoint now.${until}`);
      toast(`Rotated the signing secret of “${w.name}”.`);
    } catch (err) {
      alertError(`Could not rotate the secret of “${w.name}”: ${err.message}`);
    }
  }

  // ---- webhooks: delivery log ----

  let logTimer = 0;
  async function openLog(w, toggle, poll = false) {
    state.logHook = w;
    $('log-title').textContent = `Delivery log: ${w.name}`;
    show($('log-panel'));
    await loadLog();
    $('log-panel').scrollIntoView({ block: 'nearest' });
    $('log-refresh').focus();
    // A test event's outcome lands within seconds: look again a few times.
    clearTimeout(logTimer);
    if (poll) {
      let n = 0;
      const again = async () => {
        if (state.logHook !== w || $('log-panel').hidden) return;
        await loadLog();
        if (++n < 10) logTimer = setTimeout(again, 1000);
      };
      logTimer = setTimeout(again, 500);
    }
  }

  async function loadLog() {
    const w = state.logHook;
    const rows = $('log-rows');
    try {
      const items = deliveryItems(await api('GET', `/v4/webhooks/${w.guid}/deliveries`));
      rows.replaceChildren();
      show($('log-empty'), items.length === 0);
      show($('log-table'), items.length > 0);
      for (const d of items) rows.append(logRow(w, d));
      showLastDelivery(w, items);
    } catch (err) {
      rows.replaceChildren();
      show($('log-table'), false);
      $('log-empty').textContent = `Could not load the delivery log: ${err.message}`;
      show($('log-empty'));
      return;
    }
    $('log-empty').textContent = 'No delivery attempts yet.';
  }

  function logRow(w, d) {
    const resend = el('button', {
      type: 'button', text: 'Resend', 'aria-label': `Resend delivery ${d.delivery_id}`,
      onclick: async () => {
        try {
          await api('POST', `/v4/webhooks/${w.guid}/deliveries/${encodeURIComponent(d.delivery_id)}/resend`, {});
          toast('Resent: the new attempt appears in the log.');
          setTimeout(loadLog, 1000);
          await loadLog();
        } catch (err) {
          alertError(`Could not resend: ${err.message}`);
        }
      },
    });
    return el('tr', { 'data-delivery': d.delivery_id, 'data-event': d.event_id },
      el('td', { 'data-label': 'Time', text: formatTime(d.time) }),
      el('td', { 'data-label': 'Status' }, el('span', { class: `badge ${d.outcome || ''}`, text: outcomeText(d) })),
      el('td', { 'data-label': 'HTTP code', class: 'num', text: d.http_status ? String(d.http_status) : '—' }),
      el('td', { 'data-label': 'Duration', class: 'num', text: d.duration_ms != null ? `${d.duration_ms} ms` : '—' }),
      el('td', { 'data-label': 'Attempt', class: 'num', text: d.attempt != null ? String(d.attempt) : '' }),
      el('td', { 'data-label': 'Error', class: d.error ? 'error-text wide-cell' : 'blank', text: d.error || '' }),
      el('td', { 'data-label': 'Response', class: d.response ? 'wide-cell' : 'blank' },
        el('span', { class: 'mono clip', title: d.response || '', text: d.response || '' })),
      el('td', { class: 'row-actions' }, resend));
  }

  // ---- links ----

  function fillGroupSelect() {
    const sel = $('group-select');
    sel.replaceChildren();
    for (const g of state.groups) sel.append(el('option', { value: g.guid, text: g.name }));
    if (state.linkGroup) sel.value = state.linkGroup;
  }

  // "host:port/code" → {domain, code}
  function splitId(id) {
    const i = id.indexOf('/');
    return { domain: id.slice(0, i), code: id.slice(i + 1) };
  }

  function linkPath(id) {
    const { domain, code } = splitId(id);
    return `/v4/bitlinks/${encodeURIComponent(domain)}/${encodeURIComponent(code)}`;
  }

  async function loadLinks() {
    if (!state.linkGroup) return;
    const q = new URLSearchParams({ size: '20', page: String(state.linkPage) });
    if (state.linkQuery) q.set('query', state.linkQuery);
    show($('link-list-error'), false);
    try {
      const body = await api('GET', `/v4/groups/${encodeURIComponent(state.linkGroup)}/bitlinks?${q}`);
      renderLinks(body.links || [], body.pagination || {});
    } catch (err) {
      $('link-list-error').textContent = `Could not load the links: ${err.message}`;
      show($('link-list-error'));
    }
  }

  function renderLinks(links, pagination) {
    const rows = $('link-rows');
    rows.replaceChildren();
    show($('link-empty'), links.length === 0);
    show($('link-table'), links.length > 0);
    $('link-empty').textContent = state.linkQuery ? `No links match “${state.linkQuery}”.` : 'No links yet. Create one above.';
    for (const l of links) rows.append(linkRow(l));
    const total = pagination.total || 0;
    const pages = Math.max(1, Math.ceil(total / (pagination.size || 20)));
    $('link-page').textContent = `Page ${state.linkPage} of ${pages} · ${total} link${total === 1 ? '' : 's'}`;
    $('link-prev').disabled = state.linkPage <= 1;
    $('link-next').disabled = !pagination.next;
  }

  function linkRow(l) {
    const { code } = splitId(l.id);
    const short = l.link;
    const qr = `/qr/${encodeURIComponent(code)}.png?size=600`;
    const info = el('td', { 'data-label': 'Title and long URL' });
    const tags = l.tags || [];
    if (l.title) info.append(el('span', { class: 'block strong', text: l.title }));
    info.append(el('span', { class: 'block url muted', text: l.long_url }));
    return el('tr', { 'data-id': l.id },
      el('th', { scope: 'row', 'data-label': 'Short link' },
        el('a', { href: short, target: '_blank', rel: 'noreferrer', class: 'mono', text: short.replace(/^https?:\/\//, '') })),
      info,
      el('td', { 'data-label': 'Tags', class: tags.length ? null : 'blank' }, ...tags.map((t) => el('span', { class: 'tag', text: t }))),
      el('td', { 'data-label': 'Created', text: formatTime(l.created_at) }),
      el('td', { class: 'row-actions' },
        el('button', { type: 'button', text: 'Copy', 'aria-label': `Copy ${short}`, onclick: () => copyText(short, 'short link') }),
        el('a', { class: 'button', href: qr, download: `${code}-qr.png`, 'aria-label': `Download QR code for ${short}`, text: 'QR code' }),
        el('button', { type: 'button', text: 'Clicks', 'aria-label': `Clicks for ${short}`, onclick: (e) => openStats(l, e.currentTarget) })));
  }

  async function submitLink(event) {
    event.preventDefault();
    const form = $('link-form');
    clearErrors(form);
    show($('link-created'), false);
    const body = { long_url: $('ln-long-url').value.trim(), group_guid: state.linkGroup };
    const keyword = $('ln-keyword').value.trim();
    const title = $('ln-title').value.trim();
    const tags = $('ln-tags').value.split(',').map((t) => t.trim()).filter(Boolean);
    if (keyword) body.keyword = keyword;
    if (title) body.title = title;
    if (tags.length) body.tags = tags;
    try {
      const l = await api('POST', '/v4/bitlinks', body);
      form.reset();
      $('link-created-url').href = l.link;
      $('link-created-url').textContent = l.link;
      $('link-created-copy').onclick = () => copyText(l.link, 'short link');
      show($('link-created'));
      toast(`Created ${l.link}.`);
      state.linkPage = 1;
      await loadLinks();
      $('link-created-copy').focus();
    } catch (err) {
      showErrors(form, err);
    }
  }

  // ---- links: clicks chart and countries ----

  async function openStats(l, opener) {
    state.statsLink = l;
    state.statsOpener = opener;
    $('stats-title').textContent = `Clicks: ${l.link.replace(/^https?:\/\//, '')}`;
    $('stats-total').textContent = 'Loading…';
    $('chart').replaceChildren();
    state.statsSeries = null;
    $('country-rows').replaceChildren();
    show($('stats-panel'));
    $('stats-panel').scrollIntoView({ block: 'nearest' });
    $('stats-close').focus();
    try {
      const [clicks, countries] = await Promise.all([
        api('GET', `${linkPath(l.id)}/clicks?unit=day&units=30`),
        api('GET', `${linkPath(l.id)}/countries?unit=day&units=30&size=50`),
      ]);
      if (state.statsLink !== l) return;
      const series = (clicks.link_clicks || []).slice().sort((a, b) => String(a.date).localeCompare(String(b.date)));
      const total = series.reduce((s, d) => s + (d.clicks || 0), 0);
      $('stats-total').textContent = `${total} click${total === 1 ? '' : 's'} in the last 30 days`;
      state.statsSeries = { series, total };
      $('chart').replaceChildren(drawChart(series, total));
      renderCountries(countries.metrics || []);
    } catch (err) {
      $('stats-total').textContent = `Could not load the clicks: ${err.message}`;
    }
  }

  const HEIGHT = 220;
  const PAD = { top: 12, right: 10, bottom: 28, left: 36 };

  // Bars of clicks per day as SVG, with presentation attributes only (the
  // CSP forbids style attributes). Each bar has a title for pointers and the
  // whole chart an accessible name with the total.
  function drawChart(series, total) {
    // Drawn at the width it is shown at, so labels keep their size on phones.
    const WIDTH = Math.max(280, Math.round($('chart').clientWidth || 640));
    const chart = svg('svg', {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, class: 'chart-svg', role: 'img',
      'aria-label': `Clicks per day for the last ${series.length} days, ${total} in all`,
      preserveAspectRatio: 'xMidYMid meet',
    });
    const max = Math.max(1, ...series.map((d) => d.clicks || 0));
    const step = niceStep(max);
    const top = Math.ceil(max / step) * step;
    const innerW = WIDTH - PAD.left - PAD.right;
    const innerH = HEIGHT - PAD.top - PAD.bottom;
    const y = (v) => PAD.top + innerH - (v / top) * innerH;

    for (let v = 0; v <= top; v += step) {
      chart.append(svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v), class: 'grid-line' }));
      const label = svg('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' });
      label.textContent = String(v);
      chart.append(label);
    }
    const slot = innerW / Math.max(1, series.length);
    const barW = Math.max(2, slot * 0.7);
    series.forEach((d, i) => {
      const x = PAD.left + i * slot + (slot - barW) / 2;
      const h = Math.max(0, y(0) - y(d.clicks || 0));
      const bar = svg('rect', {
        x: x.toFixed(1), y: (y(0) - h).toFixed(1), width: barW.toFixed(1), height: h.toFixed(1),
        rx: 2, class: 'bar', 'data-date': d.date, 'data-clicks': d.clicks || 0,
      });
      const title = svg('title');
      title.textContent = `${dayLabel(d.date, true)}: ${d.clicks || 0} click${d.clicks === 1 ? '' : 's'}`;
      bar.append(title);
      chart.append(bar);
      // A date under every few bars (as many as fit) and the last one.
      const every = WIDTH < 480 ? 10 : 5;
      if ((series.length - 1 - i) % every === 0) {
        const t = svg('text', { x: (x + barW / 2).toFixed(1), y: HEIGHT - 8, 'text-anchor': 'middle', class: 'axis' });
        t.textContent = dayLabel(d.date, false);
        chart.append(t);
      }
    });
    return chart;
  }

  function niceStep(max) {
    for (const s of [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000])
      if (max / s <= 5) return s;
    return Math.pow(10, Math.ceil(Math.log10(max / 5)));
  }

  // Bitly dates carry the reference's offset ("2026-01-02T00:00:00+0000"):
  // the calendar day is the first ten characters, whatever the viewer's zone.
  function dayLabel(date, long) {
    const day = String(date).slice(0, 10);
    const d = new Date(`${day}T12:00:00Z`);
    if (Number.isNaN(d.getTime())) return day;
    return d.toLocaleDateString(undefined, long
      ? { weekday: 'short', month: 'short', day: 'numeric', timeZone: 'UTC' }
      : { month: 'short', day: 'numeric', timeZone: 'UTC' });
  }

  let regionNames = null;
  function countryName(code) {
    try {
      regionNames = regionNames || new Intl.DisplayNames(undefined, { type: 'region' });
      return `${regionNames.of(code)} (${code})`;
    } catch {
      return code;
    }
  }

  function renderCountries(metrics) {
    const rows = $('country-rows');
    rows.replaceChildren();
    const known = metrics.filter((m) => m.clicks > 0);
    show($('country-empty'), known.length === 0);
    show($('country-table'), known.length > 0);
    for (const m of known) {
      rows.append(el('tr', {},
        el('td', { text: m.value && m.value !== 'Unknown' ? countryName(m.value) : 'Unknown' }),
        el('td', { class: 'num', text: String(m.clicks) })));
    }
  }

  // ---- wiring ----

  let searchTimer = 0;
  function wire() {
    $('signin-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', () => signOut(''));
    window.addEventListener('hashchange', route);

    $('webhook-add').addEventListener('click', () => openForm(null));
    $('webhook-form').addEventListener('submit', submitWebhook);
    $('webhook-cancel').addEventListener('click', closeForm);
    $('webhook-form').addEventListener('keydown', (e) => {
      if (e.key === 'Escape') closeForm();
    });
    $('secret-copy').addEventListener('click', () => copyText($('secret-value').value, 'signing secret'));
    $('secret-rotate').addEventListener('click', () => state.secretHook && rotateSecret(state.secretHook, $('secret-rotate')));
    $('secret-close').addEventListener('click', () => {
      $('secret-value').value = '';
      show($('secret-panel'), false);
      $('webhook-add').focus();
    });
    $('log-refresh').addEventListener('click', loadLog);
    $('log-close').addEventListener('click', () => {
      show($('log-panel'), false);
      const w = state.logHook;
      state.logHook = null;
      (w && document.querySelector(`[aria-controls="menu-${CSS.escape(w.guid)}"]`) || $('webhook-add')).focus();
    });
    document.addEventListener('click', (e) => {
      if (!e.target.closest('.menu-wrap')) closeMenus();
    });

    $('group-select').addEventListener('change', (e) => {
      state.linkGroup = e.target.value;
      state.linkPage = 1;
      loadLinks();
    });
    $('link-form').addEventListener('submit', submitLink);
    $('search-form').addEventListener('submit', (e) => {
      e.preventDefault();
      clearTimeout(searchTimer);
      state.linkQuery = $('link-search').value.trim();
      state.linkPage = 1;
      loadLinks();
    });
    $('link-search').addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        state.linkQuery = $('link-search').value.trim();
        state.linkPage = 1;
        loadLinks();
      }, 250);
    });
    $('link-prev').addEventListener('click', () => {
      state.linkPage = Math.max(1, state.linkPage - 1);
      loadLinks();
    });
    $('link-next').addEventListener('click', () => {
      state.linkPage += 1;
      loadLinks();
    });
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (!$('stats-panel').hidden && state.statsSeries)
          $('chart').replaceChildren(drawChart(state.statsSeries.series, state.statsSeries.total));
      }, 150);
    });
    $('stats-close').addEventListener('click', () => {
      show($('stats-panel'), false);
      state.statsLink = null;
      state.statsOpener?.focus();
    });
  }

  async function boot() {
    wire();
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      showSignIn();
      return;
    }
    try {
      await start();
    } catch (err) {
      signOut(err.status === 403 ? 'Your token is no longer accepted. Sign in again.' : `Could not load: ${err.message}`);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
