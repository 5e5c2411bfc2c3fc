// Fossil delta compression and publication tags filters with the official centrifuge
// JavaScript SDK, JSON and Protobuf: the SDK decodes the deltas (its own fossil decoder)
// and its delta statistics show what travelled.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import * as json from 'centrifuge';
import * as proto from 'centrifuge/build/protobuf';
import { startServer, token, once, collect, waitFor, now, baseConfig, subscribed } from './helpers.mjs';

export function deltaFilterConfig() {
  const cfg = baseConfig();
  cfg.channel.namespaces.push(
    {
      name: 'delta', history_size: 100, history_ttl: '300s', force_recovery: true, allow_subscribe_for_client: true,
      allowed_delta_types: ['fossil'], delta_publish: true,
    },
    {
      name: 'tags', history_size: 100, history_ttl: '300s', force_recovery: true, allow_subscribe_for_client: true,
      allow_history_for_subscriber: true, allow_tags_filter: true,
    },
  );
  return cfg;
}

/** A 10 KB JSON document; `version` changes about 1 % of it. */
export function document(version) {
  const rows = [];
  for (let i = 0; i < 100; i++) rows.push({ id: i, name: `row-${i}`, value: i % 10 === version % 10 ? version : i * 7, note: 'lorem ipsum dolor sit amet consectetur' });
  return { version, rows };
}

const leaf = (key, cmp, val) => (Array.isArray(val) ? { key, cmp, vals: val } : val === undefined ? { key, cmp } : { key, cmp, val });

// Publications (data {i}) and which of them each filter lets through.
const PUBS = [
  { ticker: 'AAPL', price: '101.5', src: 'NASDAQ' },
  { ticker: 'MSFT', price: '99', src: 'NYSE' },
  { ticker: 'GOOG', src: 'LSE' },
  {},
];
const CASES = [
  ['eq', leaf('ticker', 'eq', 'AAPL'), [0]],
  ['neq', leaf('ticker', 'neq', 'AAPL'), [1, 2, 3]],
  ['in', leaf('src', 'in', ['NYSE', 'LSE']), [1, 2]],
  ['nin', leaf('src', 'nin', ['NYSE']), [0, 2, 3]],
  ['ex', leaf('price', 'ex'), [0, 1]],
  ['nex', leaf('price', 'nex'), [2, 3]],
  ['sw', leaf('ticker', 'sw', 'GO'), [2]],
  ['ew', leaf('ticker', 'ew', 'FT'), [1]],
  ['ct', leaf('ticker', 'ct', 'AP'), [0]],
  ['gt', leaf('price', 'gt', '100'), [0]],
  ['gte', leaf('price', 'gte', '99'), [0, 1]],
  ['lt', leaf('price', 'lt', '100'), [1]],
  ['lte', leaf('price', 'lte', '101.5'), [0, 1]],
  ['and', { op: 'and', nodes: [leaf('price', 'ex'), leaf('ticker', 'neq', 'MSFT')] }, [0]],
  ['or', { op: 'or', nodes: [leaf('ticker', 'eq', 'GOOG'), leaf('price', 'lt', '100')] }, [1, 2]],
  ['not', { op: 'not', nodes: [leaf('ticker', 'ex')] }, [3]],
];

for (const [name, lib] of [['json', json], ['protobuf', proto]]) {
  describe(`centrifuge-js ${name}: delta and tags filters`, () => {
    const dec = (d) => (name === 'protobuf' ? JSON.parse(new TextDecoder().decode(d)) : d);
    let server;
    const clients = [];
    const connected = async (user) => {
      const c = new lib.Centrifuge(server.url, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 500, token: token({ sub: user, exp: now() + 3600 }) });
      clients.push(c);
      c.connect();
      await once(c, 'connected');
      return c;
    };
    // Once the node has delivered every accepted publication (their pushes are queued to
    // the connection), a reply to a later command arrives after them: a barrier without
    // sleeping.
    const barrier = async (s) => {
      await server.delivered();
      await s.history({ limit: 0 });
    };

    before(async () => { server = await startServer(deltaFilterConfig()); });
    after(async () => {
      for (const c of clients) c.disconnect();
      await server.stop();
    });

    it('delta: the first publication whole, then deltas, decoded right', async () => {
      const c = await connected('d1');
      const s = await subscribed(c, `delta:succ-${name}`, { delta: 'fossil' });
      const got = collect(s, 'publication');
      for (let v = 1; v <= 5; v++) await server.api('publish', { channel: `delta:succ-${name}`, data: document(v) });
      await waitFor(() => got.length === 5, 10000, 'five publications');
      assert.deepEqual(got.map((p) => dec(p.data)), [1, 2, 3, 4, 5].map(document));
      const st = s.deltaStats();
      assert.equal(st.numPublications, 5);
      assert.equal(st.numFullPayloads, 1);
      assert.equal(st.numDeltaPayloads, 4);
      assert.ok(st.bytesReceived * 3 < st.bytesDecoded, JSON.stringify(st));
    });

    it('delta: a subscriber without delta still gets whole data on the same channel', async () => {
      const a = await connected('d2');
      const b = await connected('d3');
      const ch = `delta:mixed-${name}`;
      const sd = await subscribed(a, ch, { delta: 'fossil' });
      const sp = await subscribed(b, ch);
      const gd = collect(sd, 'publication');
      const gp = collect(sp, 'publication');
      for (let v = 1; v <= 3; v++) await server.api('publish', { channel: ch, data: document(v) });
      await waitFor(() => gd.length === 3 && gp.length === 3, 10000, 'three publications each');
      assert.deepEqual(gd.map((p) => dec(p.data)), gp.map((p) => dec(p.data)));
      assert.equal(sd.deltaStats().numDeltaPayloads, 2);
    });

    it('delta: across a recovery, then live deltas again', async () => {
      const c = await connected('d4');
      const ch = `delta:recover-${name}`;
      const s = await subscribed(c, ch, { delta: 'fossil' });
      const got = collect(s, 'publication');
      await server.api('publish', { channel: ch, data: document(1) });
      await waitFor(() => got.length === 1, 10000, 'first publication');
      c.disconnect();
      for (let v = 2; v <= 4; v++) await server.api('publish', { channel: ch, data: document(v) });
      c.connect();
      const ctx = await once(s, 'subscribed');
      assert.equal(ctx.recovered, true);
      await waitFor(() => got.length === 4, 10000, 'recovered publications');
      await server.api('publish', { channel: ch, data: document(5) });
      await waitFor(() => got.length === 5, 10000, 'live after recovery');
      assert.deepEqual(got.map((p) => dec(p.data)), [1, 2, 3, 4, 5].map(document));
      const st = s.deltaStats();
      // Whole: the first live one and the first recovered one; the rest are deltas.
      assert.equal(st.numFullPayloads, 2, JSON.stringify(st));
      assert.equal(st.numDeltaPayloads, 3, JSON.stringify(st));
    });

    for (const [op, filter, expected] of CASES) {
      it(`tags filter ${op}`, async () => {
        const c = await connected(`f-${op}`);
        const ch = `tags:${op}-${name}`;
        const s = await subscribed(c, ch, { tagsFilter: filter });
        const got = collect(s, 'publication');
        for (let i = 0; i < PUBS.length; i++) await server.api('publish', { channel: ch, data: { i }, tags: PUBS[i] });
        await barrier(s);
        assert.deepEqual(got.map((p) => dec(p.data).i), expected);
        c.disconnect();
      });
    }

    it('tags filter: a filter change applies at the next subscribe', async () => {
      const c = await connected('f-change');
      const ch = `tags:change-${name}`;
      const s = await subscribed(c, ch, { tagsFilter: leaf('ticker', 'eq', 'AAPL') });
      const got = collect(s, 'publication');
      await server.api('publish', { channel: ch, data: { i: 0 }, tags: PUBS[0] });
      await server.api('publish', { channel: ch, data: { i: 1 }, tags: PUBS[1] });
      await barrier(s);
      s.unsubscribe();
      s.setTagsFilter(leaf('ticker', 'eq', 'MSFT'));
      s.subscribe();
      await once(s, 'subscribed');
      await server.api('publish', { channel: ch, data: { i: 2 }, tags: PUBS[0] });
      await server.api('publish', { channel: ch, data: { i: 3 }, tags: PUBS[1] });
      await barrier(s);
      // The resubscribe recovers from the last offset the SDK saw (1): publication 1, which
      // the old filter dropped, passes the new one and comes back in recovery.
      assert.deepEqual(got.map((p) => dec(p.data).i), [0, 1, 3]);
    });

    it('tags filter: a filter rejecting everything delivers nothing, live or recovered', async () => {
      const c = await connected('f-none');
      const ch = `tags:none-${name}`;
      const s = await subscribed(c, ch, { tagsFilter: leaf('ticker', 'eq', 'NONE') });
      const got = collect(s, 'publication');
      for (let i = 0; i < PUBS.length; i++) await server.api('publish', { channel: ch, data: { i }, tags: PUBS[i] });
      await barrier(s);
      c.disconnect();
      for (let i = 0; i < PUBS.length; i++) await server.api('publish', { channel: ch, data: { i }, tags: PUBS[i] });
      c.connect();
      const ctx = await once(s, 'subscribed');
      assert.equal(ctx.recovered, true);
      await barrier(s);
      assert.deepEqual(got, []);
    });

    it('tags filter: refused with 107 where the namespace does not allow it', async () => {
      const c = await connected('f-refused');
      const s = c.newSubscription('chat:nofilter', { tagsFilter: leaf('ticker', 'eq', 'AAPL') });
      const errors = collect(s, 'error');
      const unsubscribed = once(s, 'unsubscribed');
      s.subscribe();
      const u = await unsubscribed;
      assert.equal(u.code, 107, JSON.stringify(u));
      assert.ok(errors.length === 0 || errors[0].error.code === 107);
    });
  });
}
