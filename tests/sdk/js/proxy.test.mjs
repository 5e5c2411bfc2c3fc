// The backend proxies (connect, refresh, subscribe, publish, RPC) against a real backend
// HTTP server started here, with the official centrifuge-js SDK; the personal channel.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { startServer, freePort, once, waitFor, now, baseConfig, token } from './helpers.mjs';

/** The application backend: answers Centrifugo's proxy requests, records them. */
async function startBackend() {
  const calls = [];
  const state = { refreshes: {} };
  const routes = {
    '/connect': (req, headers) => {
      const emulated = /^Bearer emu-([a-z]+)$/.exec(headers.authorization || '')?.[1];
      if (emulated) return { result: { user: emulated } };
      const cookie = headers.cookie || '';
      const user = /session=([a-z]+)/.exec(cookie)?.[1];
      if (user === 'banned') return { disconnect: { code: 4501, reason: 'banned' } };
      if (!user) return { error: { code: 1401, message: 'no session' } };
      const result = { user, data: { hello: user }, meta: { plan: 'gold' } };
      if (user === 'short') result.expire_at = now() + 1;
      return { result };
    },
    '/refresh': (req) => {
      const n = (state.refreshes[req.user] || 0) + 1;
      state.refreshes[req.user] = n;
      return n === 1 ? { result: { expire_at: now() + 1 } } : { result: { expired: true } };
    },
    '/subscribe': (req) => {
      if (req.channel === 'sp:denied') return { error: { code: 1403, message: 'not for you' } };
      return { result: { info: { role: 'reader' }, data: { welcome: req.channel } } };
    },
    '/publish': (req) => ({ result: { data: { ...req.data, censored: true, by: req.user } } }),
    '/rpc': (req) => ({ result: { data: { method: req.method, echo: req.data, user: req.user } } }),
    '/garbage': () => 'this is not JSON',
    '/status': () => 500,
    '/slow': () => new Promise((r) => setTimeout(() => r({ result: {} }), 3000)),
  };
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', async () => {
      let parsed = {};
      try { parsed = JSON.parse(body); } catch { /* recorded as is */ }
      calls.push({ path: req.url, body: parsed, headers: req.headers });
      const route = routes[req.url];
      const out = route ? await route(parsed, req.headers) : 404;
      if (typeof out === 'number') { res.writeHead(out); res.end(); return; }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(typeof out === 'string' ? out : JSON.stringify(out));
    });
  });
  const port = await freePort();
  await new Promise((r) => srv.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(r); }),
  };
}

/** A WebSocket that sends a Cookie header with the upgrade request, as a browser would. */
const withCookie = (cookie) => class extends WebSocket {
  constructor(url, protocols) { super(url, protocols, { headers: { Cookie: cookie } }); }
};

describe('backend proxies with centrifuge-js', () => {
  let backend;
  let server;
  const clients = [];
  const client = (opts = {}) => {
    const c = new Centrifuge(server.url, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 500, ...opts });
    clients.push(c);
    return c;
  };
  const cookieClient = async (user) => {
    const c = client({ websocket: withCookie(`session=${user}; other=1`) });
    c.connect();
    return c;
  };

  before(async () => {
    backend = await startBackend();
    const down = await freePort();
    const cfg = baseConfig();
    cfg.client.proxy = {
      connect: {
        enabled: true, endpoint: `${backend.url}/connect`, timeout: '1s', http_headers: ['Cookie'], emulated_headers: ['Authorization'],
      },
      refresh: { enabled: true, endpoint: `${backend.url}/refresh`, timeout: '1s', include_connection_meta: true },
    };
    cfg.client.subscribe_to_user_personal_channel = { enabled: true };
    cfg.http_stream = { enabled: true };
    cfg.channel.proxy = {
      subscribe: { endpoint: `${backend.url}/subscribe`, http_headers: ['Cookie'], http: { static_headers: { 'X-Static': 'yes' } } },
      publish: { endpoint: `${backend.url}/publish`, include_connection_meta: true },
    };
    cfg.channel.namespaces.push({ name: 'sp', subscribe_proxy_enabled: true, publish_proxy_enabled: true });
    cfg.rpc = {
      proxy: { endpoint: `${backend.url}/rpc` },
      without_namespace: { proxy_enabled: true },
      namespaces: ['down', 'slow', 'garbage', 'status'].map((n) => ({ name: n, proxy_enabled: true, proxy_name: n }))
        .concat([{ name: 'off' }]),
    };
    cfg.proxies = [
      { name: 'down', endpoint: `http://127.0.0.1:${down}/rpc`, timeout: '500ms' },
      { name: 'slow', endpoint: `${backend.url}/slow`, timeout: '300ms' },
      { name: 'garbage', endpoint: `${backend.url}/garbage` },
      { name: 'status', endpoint: `${backend.url}/status` },
    ];
    server = await startServer(cfg);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await server.stop();
    await backend.close();
  });

  it('connects without a token through the connect proxy, authenticated by the forwarded Cookie', async () => {
    const c = await cookieClient('alice');
    const ctx = await once(c, 'connected');
    assert.deepEqual(ctx.data, { hello: 'alice' });
    const call = backend.calls.find((x) => x.path === '/connect' && x.body.client === ctx.client);
    assert.ok(call, 'the backend saw the connect');
    assert.equal(call.headers.cookie, 'session=alice; other=1');
    assert.equal(call.body.transport, 'websocket');
    assert.equal(call.body.protocol, 'json');
    assert.equal(call.body.encoding, 'json');
    c.disconnect();
  });

  it('headers emulation: the SDK\'s headers reach the connect proxy when emulated_headers lists them', async () => {
    const c = client({ headers: { Authorization: 'Bearer emu-bob', Cookie: 'session=mallory' } });
    c.connect();
    const ctx = await once(c, 'connected');
    const call = backend.calls.find((x) => x.path === '/connect' && x.body.client === ctx.client);
    assert.ok(call, 'the backend saw the connect');
    assert.equal(call.headers.authorization, 'Bearer emu-bob');
    assert.equal(call.headers.cookie, undefined, 'Cookie is listed in http_headers only: not taken from the client\'s word');
    c.disconnect();
  });

  it('over HTTP-streaming too: the Cookie of the stream request reaches the connect proxy', async () => {
    const cookieFetch = (url, opts) => fetch(url, { ...opts, headers: { ...opts.headers, Cookie: 'session=bob' } });
    const c = new Centrifuge([{ transport: 'http_stream', endpoint: `http://127.0.0.1:${server.port}/connection/http_stream` }], {
      fetch: cookieFetch, readableStream: ReadableStream, emulationEndpoint: `http://127.0.0.1:${server.port}/emulation`,
    });
    clients.push(c);
    c.connect();
    const ctx = await once(c, 'connected');
    assert.equal(ctx.transport, 'http_stream');
    assert.deepEqual(ctx.data, { hello: 'bob' });
    const call = backend.calls.find((x) => x.path === '/connect' && x.body.client === ctx.client);
    assert.equal(call.headers.cookie, 'session=bob');
    assert.equal(call.body.transport, 'http_stream');
    c.disconnect();
  });

  it('a backend disconnect (4501) is terminal for the SDK', async () => {
    const c = await cookieClient('banned');
    const ctx = await once(c, 'disconnected');
    assert.equal(ctx.code, 4501);
    assert.equal(ctx.reason, 'banned');
    assert.equal(c.state, 'disconnected');
  });

  it('refreshes through the refresh proxy at expire_at, then closes when the backend says expired', async () => {
    const c = await cookieClient('short');
    await once(c, 'connected');
    const ctx = await once(c, 'connecting', 10000);
    assert.equal(ctx.code, 3005, 'expired');
    const refreshes = backend.calls.filter((x) => x.path === '/refresh' && x.body.user === 'short');
    assert.equal(refreshes.length, 2, 'once prolonged, then expired');
    assert.deepEqual(refreshes[0].body.meta, { plan: 'gold' }, 'connection meta included');
    c.disconnect();
  });

  it('subscribes through the subscribe proxy: allowed with data, denied with the backend code', async () => {
    const c = await cookieClient('alice');
    await once(c, 'connected');
    const ok = c.newSubscription('sp:allowed');
    ok.subscribe();
    const sctx = await once(ok, 'subscribed');
    assert.deepEqual(sctx.data, { welcome: 'sp:allowed' });
    const call = backend.calls.find((x) => x.path === '/subscribe' && x.body.channel === 'sp:allowed');
    assert.equal(call.body.user, 'alice');
    assert.equal(call.headers.cookie, 'session=alice; other=1');
    assert.equal(call.headers['x-static'], 'yes');
    const no = c.newSubscription('sp:denied');
    no.subscribe();
    const uctx = await once(no, 'unsubscribed');
    assert.equal(uctx.code, 1403);
    c.disconnect();
  });

  it('publishes through the publish proxy; another subscriber receives the replaced data', async () => {
    const a = await cookieClient('alice');
    const b = await cookieClient('bob');
    await Promise.all([once(a, 'connected'), once(b, 'connected')]);
    const sub = b.newSubscription('sp:room');
    sub.subscribe();
    await once(sub, 'subscribed');
    const got = once(sub, 'publication');
    await a.publish('sp:room', { text: 'hi' });
    const p = await got;
    assert.deepEqual(p.data, { text: 'hi', censored: true, by: 'alice' });
    assert.equal(p.info.user, 'alice');
    const call = backend.calls.find((x) => x.path === '/publish');
    assert.deepEqual(call.body.meta, { plan: 'gold' });
    a.disconnect();
    b.disconnect();
  });

  it('a connection token\'s meta claim reaches proxies that include connection meta', async () => {
    const c = client({ token: token({ sub: 'tokenuser', exp: now() + 60, meta: { plan: 'from-token' } }) });
    c.connect();
    await once(c, 'connected');
    await c.publish('sp:meta', { text: 'hi' });
    const call = backend.calls.find((x) => x.path === '/publish' && x.body.channel === 'sp:meta');
    assert.equal(call.body.user, 'tokenuser');
    assert.deepEqual(call.body.meta, { plan: 'from-token' }, 'the token meta, never sent to the client');
    c.disconnect();
  });

  it('RPC round trip through the RPC proxy, routed by namespace', async () => {
    const c = await cookieClient('alice');
    await once(c, 'connected');
    const r = await c.rpc('getUser', { id: 7 });
    assert.deepEqual(r.data, { method: 'getUser', echo: { id: 7 }, user: 'alice' });
    await assert.rejects(c.rpc('off:x', {}), (e) => e.code === 108);
    await assert.rejects(c.rpc('nope:x', {}), (e) => e.code === 104);
    c.disconnect();
  });

  it('backend down, slow or answering garbage: error 100 to that call, others keep being served', async () => {
    const c = await cookieClient('alice');
    const other = await cookieClient('bob');
    await Promise.all([once(c, 'connected'), once(other, 'connected')]);
    for (const ns of ['down', 'garbage', 'status']) {
      await assert.rejects(c.rpc(`${ns}:x`, {}), (e) => e.code === 100 && e.temporary === true, ns);
    }
    const started = Date.now();
    const slow = c.rpc('slow:x', {});
    // While the slow call waits, another client's call is answered at once.
    const r = await other.rpc('getUser', { id: 1 });
    assert.equal(r.data.user, 'bob');
    assert.ok(Date.now() - started < 300, 'not held up by the slow backend');
    await assert.rejects(slow, (e) => e.code === 100);
    const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    for (const outcome of ['unreachable', 'timeout', 'garbage', 'status', 'ok']) {
      assert.match(metrics, new RegExp(`wshub_proxy_calls_total\\{kind="rpc",outcome="${outcome}"\\} \\d+`), outcome);
    }
    assert.match(metrics, /wshub_proxy_duration_seconds_bucket\{kind="rpc"/);
    c.disconnect();
    other.disconnect();
  });

  it('subscribes every user connection to its personal channel; an API publish to #alice arrives', async () => {
    const c = await cookieClient('alice');
    const subscribed = once(c, 'subscribed');
    await once(c, 'connected');
    assert.equal((await subscribed).channel, '#alice');
    const got = once(c, 'publication');
    await server.api('publish', { channel: '#alice', data: { note: 'for alice' } });
    const p = await got;
    assert.equal(p.channel, '#alice');
    assert.deepEqual(p.data, { note: 'for alice' });
    c.disconnect();
  });

  it('the server API rpc method calls the RPC proxy', async () => {
    const r = await server.api('rpc', { method: 'getStats', params: { day: 1 } });
    assert.deepEqual(r.result.data, { method: 'getStats', echo: { day: 1 }, user: '' });
  });
});
