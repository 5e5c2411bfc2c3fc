// centrifuge-js over wshub's HTTP transports (bidirectional emulation): HTTP-streaming in
// JSON and Protobuf, SSE in JSON. Connect, subscribe, publish, presence, history, recovery
// after a broken stream, token refresh, RPC through the RPC proxy. The client's later
// commands go through POST /emulation.
//
// Breaking a stream: the SDK is given a fetch (HTTP-streaming) or EventSource (SSE) of ours
// that can cut the current stream as a network would, and that holds the next connection
// until the test lets it go, so that publications made meanwhile are really missed and
// must come back by recovery (no timing involved).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import EventSource from 'eventsource';
import * as json from 'centrifuge';
import * as proto from 'centrifuge/build/protobuf';
import { startServer, token, once, waitFor, now, baseConfig, freePort, subscribedCollecting } from './helpers.mjs';

/** The application backend's RPC proxy endpoint: echoes the call, records what it got. */
async function startRpcBackend() {
  const calls = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const r = JSON.parse(body);
      calls.push(r);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ result: { data: { method: r.method, echo: r.data, user: r.user } } }));
    });
  });
  const port = await freePort();
  await new Promise((r) => srv.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}/rpc`,
    calls,
    close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(r); }),
  };
}

/** A gate that holds new streams while closed. */
function gate() {
  let open = true;
  let waiters = [];
  return {
    close() { open = false; },
    open() { open = true; waiters.forEach((w) => w()); waiters = []; },
    wait() { return open ? Promise.resolve() : new Promise((r) => waiters.push(r)); },
  };
}

/** fetch for the SDK: streams (POSTs to the stream endpoint) can be cut and held back. */
function controlledFetch(streamPath) {
  const g = gate();
  const live = new Set();
  const f = async (url, opts) => {
    if (!String(url).endsWith(streamPath)) return fetch(url, opts);
    await g.wait();
    const ac = new AbortController();
    if (opts.signal) opts.signal.addEventListener('abort', () => ac.abort());
    live.add(ac);
    return fetch(url, { ...opts, signal: ac.signal });
  };
  f.cut = () => { for (const ac of live) ac.abort(new Error('network cut by the test')); live.clear(); };
  f.gate = g;
  return f;
}

/** EventSource for the SDK with the same controls. */
function controlledEventSource() {
  const g = gate();
  const live = new Set();
  class ControlledEventSource {
    constructor(url, opts) {
      this.onopen = null; this.onmessage = null; this.onerror = null;
      g.wait().then(() => {
        if (this.closed) return;
        const es = new EventSource(url, opts);
        this.es = es;
        live.add(this);
        es.onopen = (e) => this.onopen && this.onopen(e);
        es.onmessage = (e) => this.onmessage && this.onmessage(e);
        es.onerror = (e) => this.onerror && this.onerror(e);
      });
    }
    close() { this.closed = true; live.delete(this); if (this.es) this.es.close(); }
  }
  ControlledEventSource.cut = () => {
    for (const c of [...live]) { c.es.close(); if (c.onerror) c.onerror(new Error('network cut by the test')); }
  };
  ControlledEventSource.gate = g;
  return ControlledEventSource;
}

const cases = [
  ['http_stream', 'json', json],
  ['http_stream', 'protobuf', proto],
  ['sse', 'json', json],
];

for (const [transport, format, lib] of cases) {
  describe(`centrifuge-js over ${transport} (${format})`, () => {
    const enc = (v) => (format === 'protobuf' ? new TextEncoder().encode(JSON.stringify(v)) : v);
    const dec = (d) => (format === 'protobuf' ? JSON.parse(new TextDecoder().decode(d)) : d);
    let server;
    let backend;
    const clients = [];
    before(async () => {
      backend = await startRpcBackend();
      const config = baseConfig();
      config.http_stream = { enabled: true };
      config.sse = { enabled: true };
      config.rpc = { proxy: { endpoint: backend.url }, without_namespace: { proxy_enabled: true } };
      server = await startServer(config);
    });
    after(async () => {
      clients.forEach((c) => c.disconnect());
      await server.stop();
      await backend.close();
    });
    const client = (opts = {}) => {
      const net = transport === 'sse' ? controlledEventSource() : controlledFetch('/connection/http_stream');
      const c = new lib.Centrifuge([{ transport, endpoint: `http://127.0.0.1:${server.port}/connection/${transport}` }], {
        emulationEndpoint: `http://127.0.0.1:${server.port}/emulation`,
        fetch: transport === 'sse' ? fetch : net,
        eventsource: transport === 'sse' ? net : null,
        readableStream: ReadableStream,
        minReconnectDelay: 50,
        maxReconnectDelay: 200,
        ...opts,
      });
      c.net = net;
      clients.push(c);
      return c;
    };

    it('connects, subscribes, receives, reads presence and history', { timeout: 30000 }, async () => {
      const c = client({ token: token({ sub: 'alice', exp: now() + 3600 }) });
      c.connect();
      const ctx = await once(c, 'connected');
      assert.equal(ctx.transport, transport);
      const [s, pubs] = await subscribedCollecting(c, 'chat:room');
      await server.api('publish', { channel: 'chat:room', data: { n: 1 } });
      await waitFor(() => pubs.length === 1, 10000, 'the publication');
      assert.deepEqual(dec(pubs[0].data), { n: 1 });
      // A publication from the client itself goes through /emulation.
      await s.publish(enc({ n: 2 }));
      await waitFor(() => pubs.length === 2, 10000, 'its own publication');
      const presence = await s.presence();
      assert.deepEqual(Object.values(presence.clients).map((i) => i.user), ['alice']);
      const history = await s.history({ limit: 10 });
      assert.deepEqual(history.publications.map((p) => dec(p.data)), [{ n: 1 }, { n: 2 }]);
      c.disconnect();
    });

    it('recovers what was published while the stream was broken', { timeout: 30000 }, async () => {
      const c = client({ token: token({ sub: 'bob', exp: now() + 3600 }) });
      c.connect();
      await once(c, 'connected');
      const [s, pubs] = await subscribedCollecting(c, 'chat:recover');
      await server.api('publish', { channel: 'chat:recover', data: { n: 1 } });
      await waitFor(() => pubs.length === 1, 10000, 'the first publication');
      // The network breaks, and stays broken until the test says so.
      c.net.gate.close();
      const connecting = once(c, 'connecting');
      c.net.cut();
      await connecting;
      for (const n of [2, 3, 4]) await server.api('publish', { channel: 'chat:recover', data: { n } });
      const resubscribed = once(s, 'subscribed');
      c.net.gate.open();
      const ctx = await resubscribed;
      assert.equal(ctx.recovered, true, 'recovered');
      await waitFor(() => pubs.length === 4, 10000, 'the missed publications');
      assert.deepEqual(pubs.map((p) => dec(p.data).n), [1, 2, 3, 4], 'in order, none twice');
      c.disconnect();
    });

    it('calls the RPC proxy through the emulated connection', { timeout: 30000 }, async () => {
      const c = client({ token: token({ sub: 'dave', exp: now() + 3600 }) });
      c.connect();
      const ctx = await once(c, 'connected');
      const r = await c.rpc('getUser', enc({ id: 7 }));
      assert.deepEqual(dec(r.data), { method: 'getUser', echo: { id: 7 }, user: 'dave' });
      const call = backend.calls.find((x) => x.client === ctx.client);
      assert.ok(call, 'the backend saw the call');
      assert.equal(call.transport, transport);
      assert.equal(call.protocol, format);
      c.disconnect();
    });

    it('refreshes its token through the emulated connection', { timeout: 30000 }, async () => {
      let calls = 0;
      const c = client({
        getToken: async () => { calls += 1; return token({ sub: 'carol', exp: now() + 2 }); },
      });
      c.connect();
      await once(c, 'connected');
      // The token expires in 2 s: the SDK refreshes it (a `refresh` command sent to
      // /emulation) before that and stays connected.
      await waitFor(() => calls >= 2, 15000, 'a token refresh');
      const s = c.newSubscription('news');
      s.subscribe();
      await once(s, 'subscribed');
      assert.equal(c.state, 'connected');
      c.disconnect();
    });
  });
}
