// The admin web page in a real browser: Debian's Chromium, headless, driven by
// playwright-core (no browser download: it drives the installed binary). Logs in, sees the
// node, publishes into a channel that a connected centrifuge-js client receives, finds the
// channel with its presence and history, disconnects the user and watches the client's
// connection close, checks a phone-sized screen, logs out. A screenshot of each step goes to
// target/admin-screenshots/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { chromium } from 'playwright-core';
import { SECRET, baseConfig, startServer, token, once, waitFor } from './helpers.mjs';

const SHOTS = new URL('../../../target/admin-screenshots/', import.meta.url).pathname;
const PASSWORD = 'admin-test-password';

function chromiumPath() {
  const candidates = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error('Chromium not found: install Debian\'s chromium (apt-get install -y chromium) or set CHROMIUM=/path/to/chromium');
  }
  return found;
}

/** Debian's Chromium, headless. */
function launchChromium() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--no-first-run'],
  });
}

/** Connects `client` and subscribes it to `channel`; the subscription and the client id. */
async function connectAndSubscribe(client, channel) {
  const connected = once(client, 'connected');
  const sub = client.newSubscription(channel);
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  client.connect();
  const { client: clientId } = await connected;
  await subscribed;
  return { sub, clientId };
}

/** Runs `body({ server, client, page })` against a server with the admin settings `admin`:
 * a headless page 1280 px wide and a centrifuge-js client of alice (not connected yet); then
 * checks that the page had no script error, and stops everything. */
async function onAdminPage(admin, body) {
  mkdirSync(SHOTS, { recursive: true });
  const config = baseConfig();
  config.admin = admin;
  config.channel.namespaces.push({ name: 'board', subscription_type: 'map', allow_subscribe_for_client: true, map: { mode: 'persistent' } });
  const server = await startServer(config);
  const browser = await launchChromium();
  const client = new Centrifuge(server.url, { websocket: WebSocket, token: token({ sub: 'alice' }) });
  try {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e));
    await body({ server, client, page });
    assert.deepEqual(pageErrors, [], 'no script error on the page');
  } finally {
    client.disconnect();
    await browser.close();
    await server.stop();
  }
}

test('admin page in headless Chromium', { timeout: 120000 }, async () => {
  await onAdminPage({ enabled: true, password: PASSWORD, secret: 'admin-test-secret' }, async ({ server, client, page }) => {
    const base = `http://127.0.0.1:${server.port}`;

    // Without a session the page shows the login form, and the API refuses the browser.
    await page.goto(`${base}/admin`);
    await page.locator('#login-form').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(async () => (await fetch('/admin/api/info', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
    })).status), 401);
    await page.screenshot({ path: `${SHOTS}01-login.png` });
    await page.fill('#password', 'wrong');
    await page.click('#login-form button[type=submit]');
    await waitFor(async () => (await page.textContent('#login-error')).includes('wrong password'), 10000, 'the wrong-password message');
    await page.screenshot({ path: `${SHOTS}02-login-refused.png` });

    // A connected SDK client, subscribed to a channel with presence and history.
    const { sub, clientId } = await connectAndSubscribe(client, 'chat:room');

    // Log in: the node appears, with the client counted.
    await page.fill('#password', PASSWORD);
    await page.click('#login-form button[type=submit]');
    await page.locator('#app-view').waitFor({ state: 'visible' });
    await waitFor(async () => {
      const rows = await page.locator('#nodes tbody tr').allTextContents();
      return rows.length === 1 && (await page.locator('#nodes tbody tr td').nth(3).textContent()) === '1';
    }, 15000, 'the node with one client');
    await page.screenshot({ path: `${SHOTS}03-nodes.png`, fullPage: true });

    // Publish from the page: the SDK client receives it.
    const received = once(sub, 'publication');
    await page.fill('#publish-channel', 'chat:room');
    await page.fill('#publish-data', '{"text": "from the admin page"}');
    await page.click('#publish-form button[type=submit]');
    assert.deepEqual((await received).data, { text: 'from the admin page' });
    await waitFor(async () => (await page.textContent('#publish-reply')).startsWith('published'), 10000, 'the publish reply');
    await page.screenshot({ path: `${SHOTS}04-published.png`, fullPage: true });

    // The channel in the list (pattern search), its presence and its last publication.
    await page.fill('#channels-pattern', 'chat:*');
    await page.click('#channels-form button[type=submit]');
    const row = page.locator('#channels tbody tr[data-channel="chat:room"]');
    await row.waitFor({ state: 'visible' });
    assert.equal(await row.locator('td').nth(1).textContent(), '1');
    await page.fill('#channels-pattern', 'nothing:*');
    await page.click('#channels-form button[type=submit]');
    await waitFor(async () => (await page.locator('#channels tbody tr').count()) === 0, 10000, 'an empty search');
    await page.fill('#channels-pattern', '');
    await page.click('#channels-form button[type=submit]');
    await row.click();
    await waitFor(async () => (await page.locator('#presence tbody').textContent()).includes('alice'), 10000, 'alice in presence');
    await waitFor(async () => (await page.textContent('#history')).includes('from the admin page'), 10000, 'the publication in history');
    assert.ok(await page.locator('#map-view').isHidden(), 'no map view for a stream channel');
    await page.screenshot({ path: `${SHOTS}05-channel.png`, fullPage: true });

    // The user's connections, and a disconnect that closes the client's connection.
    await page.fill('#connections-user', 'alice');
    await page.click('#connections-form button[type=submit]');
    const conn = page.locator(`#connections tbody tr[data-client="${clientId}"]`);
    await conn.waitFor({ state: 'visible' });
    await page.screenshot({ path: `${SHOTS}06-connections.png`, fullPage: true });
    const disconnected = once(client, 'disconnected');
    await conn.locator('button').click();
    const ctx = await disconnected;
    assert.equal(ctx.code, 3503, 'force disconnect');
    await waitFor(async () => (await page.locator('#connections tbody tr').count()) === 0, 10000, 'the connection gone from the list');
    await page.screenshot({ path: `${SHOTS}07-disconnected.png`, fullPage: true });

    // A phone-sized screen: nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.locator('#app-view').waitFor({ state: 'visible' });
    await waitFor(async () => (await page.locator('#nodes tbody tr').count()) === 1, 10000, 'the node on a phone');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone's screen`);
    await page.screenshot({ path: `${SHOTS}08-phone.png`, fullPage: true });

    // Log out: back to the login form, and the session no longer works.
    await page.click('#logout');
    await page.locator('#login-form').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(async () => (await fetch('/admin/api/info', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
    })).status), 401);
    await page.screenshot({ path: `${SHOTS}09-logged-out.png` });
  });
});

// The admin page's "Server API" form: each method Centrifugo's admin offers, sent from the
// page, its effect checked through the HTTP API (or on the SDK client it acts on); at
// 1280 px wide nothing is cut off (the connections' user column and disconnect buttons).
test('admin page: every server API method from its form, at 1280 px', { timeout: 120000 }, async () => {
  await onAdminPage({ enabled: true, insecure: true }, async ({ server, client, page }) => {
    const { sub, clientId } = await connectAndSubscribe(client, 'chat:room');
    await page.goto(`http://127.0.0.1:${server.port}/admin`);
    await page.locator('#app-view').waitFor({ state: 'visible' });

    // Picks `method`, writes `params`, sends; resolves with the reply shown.
    const send = async (method, params) => {
      await page.selectOption('#api-method', method);
      assert.ok((await page.inputValue('#api-params')).length > 0, `a template for ${method}`);
      await page.fill('#api-params', JSON.stringify(params));
      await page.evaluate(() => { document.getElementById('api-reply').textContent = ''; });
      await page.click('#api-form button[type=submit]');
      await waitFor(async () => (await page.textContent('#api-reply')).length > 0, 10000, `the reply to ${method}`);
      const reply = await page.textContent('#api-reply');
      assert.ok(reply.startsWith(`${method}`), reply);
      return reply;
    };
    const ok = async (method, params) => {
      const reply = await send(method, params);
      assert.ok(!reply.includes('refused'), reply);
      return reply;
    };

    let received = once(sub, 'publication');
    await ok('publish', { channel: 'chat:room', data: { n: 1 } });
    assert.deepEqual((await received).data, { n: 1 });
    received = once(sub, 'publication');
    await ok('broadcast', { channels: ['chat:room', 'chat:other'], data: { n: 2 } });
    assert.deepEqual((await received).data, { n: 2 });
    assert.equal((await server.api('history', { channel: 'chat:other', limit: 10 })).result.publications.length, 1);
    assert.ok((await ok('history', { channel: 'chat:room', limit: 10 })).includes('"n": 2'));
    assert.ok((await ok('presence', { channel: 'chat:room' })).includes(clientId));
    assert.ok((await ok('presence_stats', { channel: 'chat:room' })).includes('"num_users": 1'));
    assert.ok((await ok('channels', { pattern: 'chat:*' })).includes('chat:room'));
    assert.ok((await ok('info', {})).includes('"num_clients": 1'));
    assert.ok((await ok('connections', { user: 'alice' })).includes(clientId));

    // A server-side subscription and its end, seen in the node's channels.
    const news = () => server.api('channels', { pattern: 'news' }).then((r) => r.result.channels.news);
    await ok('subscribe', { user: 'alice', channel: 'news' });
    await waitFor(async () => (await news())?.num_clients === 1, 10000, 'alice subscribed to news');
    await ok('unsubscribe', { user: 'alice', channel: 'news' });
    await waitFor(async () => !(await news()), 10000, 'alice unsubscribed from news');
    await ok('refresh', { user: 'alice', expire_at: Math.floor(Date.now() / 1000) + 3600 });
    await ok('history_remove', { channel: 'chat:other' });
    assert.equal((await server.api('history', { channel: 'chat:other', limit: 10 })).result.publications.length, 0);
    // No RPC proxy is configured: the node's answer (108) is shown, not swallowed.
    assert.ok((await send('rpc', { method: 'getUser', params: {} })).includes('108'));
    await page.screenshot({ path: `${SHOTS}11-api-form.png`, fullPage: true });

    // The connections of alice at 1280 px: user column and disconnect button inside the screen.
    await page.fill('#connections-user', 'alice');
    await page.click('#connections-form button[type=submit]');
    const conn = page.locator(`#connections tbody tr[data-client="${clientId}"]`);
    await conn.waitFor({ state: 'visible' });
    assert.equal(await conn.locator('td').nth(1).textContent(), 'alice');
    // Inside the table's scrolling box as shown, not only inside the screen.
    const cut = await conn.locator('button').evaluate((b) => {
      const box = b.closest('.scroll').getBoundingClientRect();
      const r = b.getBoundingClientRect();
      return r.right > box.right || r.right > window.innerWidth ? { button: r.right, box: box.right } : null;
    });
    assert.equal(cut, null, 'the disconnect button is cut off');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than 1280 px`);
    await page.screenshot({ path: `${SHOTS}12-connections-1280.png`, fullPage: true });

    const disconnected = once(client, 'disconnected');
    await ok('disconnect', { user: 'alice' });
    assert.equal((await disconnected).code, 3503);
  });
});

// A user's connections with the channels each is subscribed to, and the live view of a
// channel: the page's own connection is subscribed on the node (the channel counts one more
// subscriber while the page watches) and shows a publication made through the HTTP API.
test('admin page: connections with their channels, and a live view of a channel', { timeout: 120000 }, async () => {
  mkdirSync(SHOTS, { recursive: true });
  const config = baseConfig();
  config.admin = { enabled: true, password: PASSWORD, secret: 'admin-test-secret' };
  const server = await startServer(config);
  const browser = await launchChromium();
  const client = new Centrifuge(server.url, { websocket: WebSocket, token: token({ sub: 'alice' }) });
  try {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e));
    const { clientId } = await connectAndSubscribe(client, 'chat:room');
    const other = client.newSubscription('chat:other');
    const otherSubscribed = once(other, 'subscribed');
    other.subscribe();
    await otherSubscribed;
    await page.goto(`http://127.0.0.1:${server.port}/admin`);
    await page.fill('#password', PASSWORD);
    await page.click('#login-form button[type=submit]');
    await page.locator('#app-view').waitFor({ state: 'visible' });

    // Without the session the live view is refused.
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/admin/live?channel=chat:room`)).status, 401);

    await page.fill('#connections-user', 'alice');
    await page.click('#connections-form button[type=submit]');
    const conn = page.locator(`#connections tbody tr[data-client="${clientId}"]`);
    await conn.waitFor({ state: 'visible' });
    assert.equal(await conn.locator('td.channels').textContent(), 'chat:other, chat:room');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than 1280 px`);
    await page.screenshot({ path: `${SHOTS}13-connection-channels.png`, fullPage: true });

    const subscribers = () => server.api('channels', { pattern: 'chat:room' }).then((r) => r.result.channels['chat:room']?.num_clients);
    await page.click('#channels-form button[type=submit]');
    await page.locator('#channels tbody tr[data-channel="chat:room"]').click();
    await page.click('#live-toggle');
    await waitFor(async () => (await page.textContent('#live-note')) === 'watching chat:room', 10000, 'the live view subscribed');
    assert.equal(await subscribers(), 2, 'the page is a subscriber of its own');
    await server.api('publish', { channel: 'chat:room', data: { live: 1 } });
    await server.api('publish', { channel: 'chat:other', data: { elsewhere: true } });
    await server.api('publish', { channel: 'chat:room', data: { live: 2 } });
    await waitFor(async () => (await page.locator('#live li').count()) === 2, 10000, 'two live publications');
    const shown = await page.locator('#live li').allTextContents();
    assert.ok(shown[0].includes('{"live":2}') && shown[1].includes('{"live":1}'), `newest first, this channel only: ${shown}`);
    await page.screenshot({ path: `${SHOTS}14-live.png`, fullPage: true });

    await page.click('#live-toggle');
    await waitFor(async () => (await subscribers()) === 1, 10000, 'the page unsubscribed when it stopped watching');
    assert.deepEqual(pageErrors, [], 'no script error on the page');
  } finally {
    client.disconnect();
    await browser.close();
    await server.stop();
  }
});

// examples/browser: the page a newcomer copies, served from another port (so its origin
// must be listed in client.allowed_origins), with tokens minted by the example's Node and
// Python snippets. The page loads centrifuge-js from unpkg; here that request is answered
// with the same file from node_modules (no network in tests).
test('examples/browser receives publications, with tokens from token.mjs and mint_token.py', { timeout: 120000 }, async () => {
  const root = new URL('../../../', import.meta.url).pathname;
  const example = join(root, 'examples/browser');
  const sdkDir = new URL('../', import.meta.url).pathname;
  const python = process.env.TEST_PYTHON || join(root, '.venv/bin/python');
  if (!existsSync(python)) throw new Error(`no Python venv at ${python}: run ./scripts/test (it creates .venv), or set TEST_PYTHON`);
  // token.mjs imports jsonwebtoken: run a copy beside this suite's node_modules.
  const tmp = mkdtempSync(join(tmpdir(), 'wshub-example-'));
  copyFileSync(join(example, 'token.mjs'), join(tmp, 'token.mjs'));
  symlinkSync(join(sdkDir, 'node_modules'), join(tmp, 'node_modules'));
  const env = { ...process.env, SECRET };
  const nodeToken = execFileSync(process.execPath, [join(tmp, 'token.mjs'), 'alice'], { env }).toString().trim();
  const pyToken = execFileSync(python, [join(example, 'mint_token.py'), 'bob'], { env }).toString().trim();

  const pages = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path !== '/' && path !== '/index.html') { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(readFileSync(join(example, 'index.html')));
  });
  await new Promise((r) => pages.listen(0, '127.0.0.1', r));
  const pageOrigin = `http://127.0.0.1:${pages.address().port}`;
  const config = baseConfig();
  config.client.allowed_origins = [pageOrigin];
  const server = await startServer(config);
  const browser = await launchChromium();
  try {
    const context = await browser.newContext();
    await context.route('https://unpkg.com/**', (route) => route.fulfill({
      contentType: 'text/javascript', body: readFileSync(join(sdkDir, 'node_modules/centrifuge/dist/centrifuge.js')),
    }));
    for (const [user, tok] of [['alice', nodeToken], ['bob', pyToken]]) {
      const page = await context.newPage();
      const q = new URLSearchParams({ token: tok, server: server.url, channel: 'news' });
      await page.goto(`${pageOrigin}/?${q}`);
      await waitFor(async () => (await page.textContent('#state')).startsWith('connected'), 15000, `${user}'s page to connect`);
      // The subscription is made once connected; publish until the page shows one.
      await waitFor(async () => {
        await server.api('publish', { channel: 'news', data: { text: `hello ${user}` } });
        return (await page.textContent('#publications')).includes(`hello ${user}`);
      }, 15000, `${user}'s page to show a publication`);
      await page.screenshot({ path: `${SHOTS}10-example-${user}.png` });
      await page.close();
    }
    // The same page from an unlisted origin is refused (the SDK keeps retrying): 403.
    const status = await new Promise((resolve, reject) => {
      const ws = new WebSocket(server.url, { origin: 'http://127.0.0.1:1' });
      ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode); ws.terminate(); });
      ws.on('open', () => reject(new Error('an unlisted origin connected')));
      ws.on('error', () => {});
    });
    assert.equal(status, 403);
  } finally {
    await browser.close();
    await server.stop();
    pages.close();
  }
});

// A map channel in the channel card: its keys (map_read_state) and how many (map_stats).
test('admin page: a map channel shows its keys', { timeout: 120000 }, async () => {
  await onAdminPage({ enabled: true, insecure: true }, async ({ server, page }) => {
    for (const [key, v] of [['k1', 1], ['k2', 2]]) {
      const r = await server.api('map_publish', { channel: 'board:1', key, data: { v } });
      assert.ok(!r.error, JSON.stringify(r));
    }
    // A live map subscriber (JSON protocol, state in one page), so that the channel is listed.
    const ws = new WebSocket(server.url);
    await once(ws, 'open');
    const replies = [];
    ws.on('message', (m) => {
      for (const line of String(m).split('\n')) if (line) replies.push(JSON.parse(line));
    });
    ws.send(JSON.stringify({ id: 1, connect: { token: token({ sub: 'bob' }) } }));
    ws.send(JSON.stringify({ id: 2, subscribe: { channel: 'board:1', type: 1, phase: 2 } }));
    await waitFor(() => replies.some((r) => r.id === 2), 10000, 'the map subscribe reply');
    const reply = replies.find((r) => r.id === 2);
    assert.ok(reply.subscribe && !reply.subscribe.phase, JSON.stringify(reply));
    try {
      await page.goto(`http://127.0.0.1:${server.port}/admin`);
      await page.locator('#app-view').waitFor({ state: 'visible' });
      await page.fill('#channels-pattern', 'board:*');
      await page.click('#channels-form button[type=submit]');
      await page.locator('#channels tbody tr[data-channel="board:1"]').click();
      await waitFor(async () => (await page.locator('#map-state tbody').textContent()).includes('k2'), 10000, 'the map keys');
      const rows = await page.locator('#map-state tbody tr').allTextContents();
      assert.deepEqual(rows, ['k1{"v":1}1', 'k2{"v":2}2']);
      await waitFor(async () => (await page.textContent('#map-stats')).startsWith('2 keys'), 10000, 'the key count');
      await page.screenshot({ path: `${SHOTS}15-map.png`, fullPage: true });
    } finally {
      ws.close();
    }
  });
});
