// The wshub admin page. Every call goes to POST /admin/api/<method>: the server API, with the
// admin session cookie instead of the API key. Text from the server is only ever put in the
// page with textContent (channel names, users and data come from clients).
'use strict';

const $ = (id) => document.getElementById(id);
const NODES_REFRESH_MS = 3000;
let nodesTimer = null;
let selectedChannel = null;
let shownUser = null;
let live = null;
const LIVE_MAX = 50;

class SessionGone extends Error {}

async function call(method, params) {
  const r = await fetch(`/admin/api/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify(params || {}),
  });
  if (r.status === 401) {
    showLogin('Your session has ended: log in again.');
    throw new SessionGone();
  }
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${r.status}`);
  if (body && body.error) throw new Error(`error ${body.error.code}: ${body.error.message}`);
  return body ? body.result : null;
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

function uptime(seconds) {
  const s = Number(seconds) || 0;
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return `${m}m ${s % 60}s`;
}

function report(id, e) {
  if (e instanceof SessionGone) return;
  $(id).textContent = e ? String(e.message || e) : '';
}

// ---- views ----

function showLogin(message) {
  stopLive();
  if (nodesTimer) clearInterval(nodesTimer);
  nodesTimer = null;
  $('app-view').hidden = true;
  $('logout').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = message || '';
  $('password').focus();
}

function showApp(insecure) {
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('logout').hidden = insecure;
  refreshNodes();
  searchChannels();
  if (!nodesTimer) nodesTimer = setInterval(refreshNodes, NODES_REFRESH_MS);
}

// ---- nodes ----

async function refreshNodes() {
  try {
    const res = await call('info');
    const body = $('nodes').tBodies[0];
    clear(body);
    for (const n of res.nodes || []) {
      const tr = document.createElement('tr');
      tr.className = 'node';
      cell(tr, n.name || '-');
      cell(tr, String(n.uid || '').slice(0, 8)).title = n.uid || '';
      cell(tr, n.version || '');
      cell(tr, n.num_clients);
      cell(tr, n.num_users);
      cell(tr, n.num_subs);
      cell(tr, n.num_channels);
      cell(tr, uptime(n.uptime));
      body.appendChild(tr);
    }
    $('nodes-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    report('nodes-error', null);
  } catch (e) {
    report('nodes-error', e);
  }
}

// ---- channels ----

async function searchChannels() {
  try {
    const res = await call('channels', { pattern: $('channels-pattern').value.trim() });
    const body = $('channels').tBodies[0];
    clear(body);
    const names = Object.keys(res.channels || {}).sort();
    for (const name of names) {
      const tr = document.createElement('tr');
      tr.className = 'clickable channel';
      tr.dataset.channel = name;
      if (name === selectedChannel) tr.classList.add('selected');
      cell(tr, name);
      cell(tr, res.channels[name].num_clients);
      tr.addEventListener('click', () => openChannel(name));
      body.appendChild(tr);
    }
    report('channels-error', names.length ? null : new Error('no channel with subscribers matches'));
  } catch (e) {
    report('channels-error', e);
  }
}

// ---- live view: the page's own connection (an event stream behind the admin session) is
// subscribed to the channel on the node, and shows each publication as it is delivered ----

function stopLive(note) {
  if (live) live.close();
  live = null;
  $('live-toggle').textContent = 'Watch live';
  if (note !== undefined) $('live-note').textContent = note;
}

function startLive() {
  const name = selectedChannel;
  stopLive();
  clear($('live'));
  $('live-note').textContent = `subscribing to ${name}…`;
  $('live-toggle').textContent = 'Stop';
  const source = live = new EventSource(`/admin/live?channel=${encodeURIComponent(name)}`);
  source.addEventListener('subscribed', () => {
    if (live === source) $('live-note').textContent = `watching ${name}`;
  });
  source.onmessage = (ev) => {
    if (live !== source) return;
    let push;
    try { push = JSON.parse(ev.data); } catch (e) { return; }
    const p = push.pub || push.publication;
    if (!p) return;
    const li = document.createElement('li');
    li.className = 'live-publication';
    li.textContent = `#${p.offset || '-'} ${JSON.stringify(p.data)}`;
    const list = $('live');
    list.insertBefore(li, list.firstChild);
    while (list.children.length > LIVE_MAX) list.removeChild(list.lastChild);
  };
  source.onerror = () => {
    if (live !== source) return;
    // EventSource reconnects by itself while the server is reachable; closed means refused.
    if (source.readyState === EventSource.CLOSED) stopLive('the live view was refused (session ended?)');
    else $('live-note').textContent = `reconnecting to ${name}…`;
  };
}

async function openChannel(name) {
  if (name !== selectedChannel) {
    stopLive('Publications appear here as they are delivered, while you watch.');
    clear($('live'));
  }
  selectedChannel = name;
  for (const tr of $('channels').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.channel === name);
  $('channel-card').hidden = false;
  $('channel-name').textContent = name;
  const presenceBody = $('presence').tBodies[0];
  clear(presenceBody);
  $('presence-note').textContent = '';
  try {
    const res = await call('presence', { channel: name });
    const clients = Object.values(res.presence || {});
    for (const c of clients) {
      const tr = document.createElement('tr');
      cell(tr, c.client);
      cell(tr, c.user || '(anonymous)');
      presenceBody.appendChild(tr);
    }
    $('presence-note').textContent = clients.length ? '' : 'nobody present';
  } catch (e) {
    if (!(e instanceof SessionGone)) $('presence-note').textContent = `presence: ${e.message}`;
  }
  const list = $('history');
  clear(list);
  $('history-note').textContent = '';
  try {
    const res = await call('history', { channel: name, limit: 10, reverse: true });
    for (const p of res.publications || []) {
      const li = document.createElement('li');
      li.textContent = `#${p.offset || '-'} ${JSON.stringify(p.data)}`;
      list.appendChild(li);
    }
    $('history-note').textContent = (res.publications || []).length ? '' : 'no publication in history';
  } catch (e) {
    if (!(e instanceof SessionGone)) $('history-note').textContent = `history: ${e.message}`;
  }
  await showMapState(name);
}

/** Shown for a map channel only: its key count and its first keys. Any other channel
 * answers map_read_state with an error (107), and the view stays hidden. */
const MAP_KEYS_SHOWN = 100;
async function showMapState(name) {
  const body = $('map-state').tBodies[0];
  clear(body);
  $('map-view').hidden = true;
  let res;
  try {
    res = await call('map_read_state', { channel: name, limit: MAP_KEYS_SHOWN });
  } catch (e) {
    return;
  }
  if (name !== selectedChannel) return;
  for (const entry of res.entries || []) {
    const tr = document.createElement('tr');
    cell(tr, entry.key);
    cell(tr, JSON.stringify(entry.data));
    cell(tr, entry.offset ? String(entry.offset) : '-');
    body.appendChild(tr);
  }
  $('map-view').hidden = false;
  const shown = (res.entries || []).length;
  $('map-note').textContent = shown ? (res.cursor ? `first ${shown} keys` : '') : 'no key';
  try {
    const stats = await call('map_stats', { channel: name });
    $('map-stats').textContent = `${stats.num_keys || 0} keys${res.epoch ? `, epoch ${res.epoch}` : ''}`;
  } catch (e) {
    $('map-stats').textContent = '';
  }
}

// ---- publish ----

async function publish(ev) {
  ev.preventDefault();
  const out = $('publish-reply');
  let data;
  try {
    data = JSON.parse($('publish-data').value);
  } catch (e) {
    out.textContent = `Data is not JSON: ${e.message}`;
    return;
  }
  const channel = $('publish-channel').value.trim();
  try {
    const res = await call('publish', { channel, data });
    out.textContent = `published: ${JSON.stringify(res)}`;
    if (channel === selectedChannel) openChannel(channel);
  } catch (e) {
    if (!(e instanceof SessionGone)) out.textContent = `refused: ${e.message}`;
  }
}

// ---- server API: every method Centrifugo's admin offers ----

const API_TEMPLATES = {
  publish: { channel: 'news', data: { text: 'hello' } },
  broadcast: { channels: ['news', 'chat:room'], data: { text: 'hello' } },
  subscribe: { user: 'alice', channel: 'news' },
  unsubscribe: { user: 'alice', channel: 'news' },
  disconnect: { user: 'alice' },
  refresh: { user: 'alice', expire_at: 0 },
  history: { channel: 'news', limit: 10, reverse: true },
  history_remove: { channel: 'news' },
  presence: { channel: 'news' },
  presence_stats: { channel: 'news' },
  info: {},
  rpc: { method: 'method', params: {} },
  channels: { pattern: '' },
  connections: { user: 'alice' },
  map_publish: { channel: 'board:1', key: 'k1', data: { text: 'hello' } },
  map_remove: { channel: 'board:1', key: 'k1' },
  map_read_state: { channel: 'board:1', limit: 100 },
  map_read_stream: { channel: 'board:1', limit: 10 },
  map_stats: { channel: 'board:1' },
  map_clear: { channel: 'board:1' },
  shared_poll_publish: { channel: 'poll:1', key: 'k1', version: 1, data: { text: 'hello' } },
};

function apiTemplate() {
  const method = $('api-method').value;
  const t = { ...API_TEMPLATES[method] };
  if (method === 'refresh') t.expire_at = Math.floor(Date.now() / 1000) + 3600;
  $('api-params').value = JSON.stringify(t, null, 2);
}

async function sendApi(ev) {
  ev.preventDefault();
  const out = $('api-reply');
  const method = $('api-method').value;
  let params;
  try {
    params = JSON.parse($('api-params').value || '{}');
  } catch (e) {
    out.textContent = `Parameters are not JSON: ${e.message}`;
    return;
  }
  out.textContent = '';
  try {
    const res = await call(method, params);
    out.textContent = `${method}: ${JSON.stringify(res, null, 2)}`;
  } catch (e) {
    if (!(e instanceof SessionGone)) out.textContent = `${method} refused: ${e.message}`;
  }
}

// ---- connections ----

async function showConnections(ev) {
  if (ev) ev.preventDefault();
  const user = shownUser = $('connections-user').value.trim();
  const body = $('connections').tBodies[0];
  clear(body);
  $('disconnect-user').hidden = true;
  try {
    const res = await call('connections', { user });
    const entries = Object.entries(res.connections || {});
    for (const [client, c] of entries) {
      const tr = document.createElement('tr');
      tr.className = 'connection';
      tr.dataset.client = client;
      cell(tr, client);
      cell(tr, c.user || user);
      cell(tr, `${c.transport || ''} ${c.protocol || ''}`.trim());
      cell(tr, String(c.node || '').slice(0, 8)).title = c.node || '';
      const channels = Object.keys((c.state && c.state.channels) || {}).sort();
      cell(tr, channels.join(', ') || '-').className = 'channels';
      const td = document.createElement('td');
      const b = document.createElement('button');
      b.className = 'danger small';
      b.textContent = 'Disconnect';
      b.addEventListener('click', () => disconnect(user, client));
      td.appendChild(b);
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $('connections-note').textContent = entries.length ? '' : `no connection of ${user}`;
    $('disconnect-user').hidden = entries.length === 0;
  } catch (e) {
    if (!(e instanceof SessionGone)) $('connections-note').textContent = e.message;
  }
}

async function disconnect(user, client) {
  try {
    await call('disconnect', { user, client: client || '' });
    $('connections-note').textContent = client ? `${client} disconnected` : `every connection of ${user} disconnected`;
    // The connections close asynchronously: look again shortly.
    setTimeout(() => { if (shownUser === user) showConnections(); }, 500);
  } catch (e) {
    if (!(e instanceof SessionGone)) $('connections-note').textContent = e.message;
  }
}

// ---- login ----

async function login(ev) {
  ev.preventDefault();
  const r = await fetch('/admin/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify({ password: $('password').value }),
  });
  const body = await r.json().catch(() => null);
  if (r.ok) {
    $('password').value = '';
    showApp(false);
  } else {
    $('login-error').textContent = (body && body.error && body.error.message) || `HTTP ${r.status}`;
  }
}

async function logout() {
  await fetch('/admin/logout', { method: 'POST', credentials: 'same-origin' });
  showLogin('Logged out.');
}

document.addEventListener('DOMContentLoaded', async () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('channels-form').addEventListener('submit', (ev) => { ev.preventDefault(); searchChannels(); });
  $('publish-form').addEventListener('submit', publish);
  $('connections-form').addEventListener('submit', showConnections);
  $('api-method').addEventListener('change', apiTemplate);
  $('api-form').addEventListener('submit', sendApi);
  apiTemplate();
  $('disconnect-user').addEventListener('click', () => disconnect(shownUser, ''));
  $('live-toggle').addEventListener('click', () => (live ? stopLive(`stopped watching ${selectedChannel}`) : startLive()));
  const r = await fetch('/admin/session', { credentials: 'same-origin' });
  if (r.ok) {
    const s = await r.json();
    showApp(Boolean(s.insecure));
  } else {
    showLogin('');
  }
});
