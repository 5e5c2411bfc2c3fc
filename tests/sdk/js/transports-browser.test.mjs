// centrifuge-js in headless Chromium falls back from WebSocket to HTTP-streaming when
// WebSocket cannot connect (the page's WebSocket endpoint is a closed port, as behind a
// proxy that breaks WebSocket), and keeps receiving. The page is served from another
// origin, listed in client.allowed_origins: the HTTP transports answer its CORS preflight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { baseConfig, startServer, token, waitFor, freePort } from './helpers.mjs';

const SHOTS = new URL('../../../target/admin-screenshots/', import.meta.url).pathname;
const SDK = new URL('../node_modules/centrifuge/dist/centrifuge.js', import.meta.url).pathname;

function chromiumPath() {
  const found = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean).find((p) => existsSync(p));
  if (!found) throw new Error('Chromium not found: install Debian\'s chromium (apt-get install -y chromium) or set CHROMIUM=/path/to/chromium');
  return found;
}

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><script src="/centrifuge.js"></script></head>
<body><p id="state">starting</p><p id="transport"></p><ol id="pubs"></ol><script>
const q = new URLSearchParams(location.search);
const c = new Centrifuge([
  { transport: 'websocket', endpoint: q.get('ws') },
  { transport: 'http_stream', endpoint: q.get('http') + '/connection/http_stream' },
], { token: q.get('token'), emulationEndpoint: q.get('http') + '/emulation', minReconnectDelay: 100, maxReconnectDelay: 500 });
c.on('connected', (ctx) => { document.getElementById('state').textContent = 'connected'; document.getElementById('transport').textContent = ctx.transport; });
const s = c.newSubscription('news');
s.on('publication', (ctx) => { const li = document.createElement('li'); li.textContent = JSON.stringify(ctx.data); document.getElementById('pubs').appendChild(li); });
s.subscribe();
c.connect();
</script></body></html>`;

test('centrifuge-js in Chromium falls back to HTTP-streaming', { timeout: 120000 }, async () => {
  const pages = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/centrifuge.js') { res.writeHead(200, { 'Content-Type': 'text/javascript' }); res.end(readFileSync(SDK)); return; }
    if (path === '/') { res.writeHead(200, { 'Content-Type': 'text/html' }); res.end(PAGE); return; }
    res.writeHead(404); res.end();
  });
  await new Promise((r) => pages.listen(0, '127.0.0.1', r));
  const pageOrigin = `http://127.0.0.1:${pages.address().port}`;
  const config = baseConfig();
  config.client.allowed_origins = [pageOrigin];
  config.http_stream = { enabled: true };
  const server = await startServer(config);
  const closedPort = await freePort();
  const browser = await chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e));
    const q = new URLSearchParams({
      ws: `ws://127.0.0.1:${closedPort}/connection/websocket`,
      http: `http://127.0.0.1:${server.port}`,
      token: token({ sub: 'dana' }),
    });
    await page.goto(`${pageOrigin}/?${q}`);
    await waitFor(async () => (await page.textContent('#state')) === 'connected', 30000, 'the page to connect');
    assert.equal(await page.textContent('#transport'), 'http_stream', 'fell back to HTTP-streaming');
    // The subscribe went through /emulation (a cross-origin POST with a preflight); publish
    // until the page shows one, then five more in order.
    await waitFor(async () => {
      await server.api('publish', { channel: 'news', data: { n: 0 } });
      return (await page.textContent('#pubs')).includes('{"n":0}');
    }, 15000, 'a first publication on the page');
    for (let n = 1; n <= 5; n++) await server.api('publish', { channel: 'news', data: { n } });
    await waitFor(async () => (await page.textContent('#pubs')).includes('{"n":5}'), 15000, 'the last publication');
    const shown = (await page.locator('#pubs li').allTextContents()).filter((t) => t !== '{"n":0}');
    assert.deepEqual(shown, [1, 2, 3, 4, 5].map((n) => JSON.stringify({ n })), 'in order, none lost');
    await page.screenshot({ path: `${SHOTS}11-http-stream-fallback.png` });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
    pages.close();
  }
});
