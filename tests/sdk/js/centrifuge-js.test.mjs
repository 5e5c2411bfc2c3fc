// wshub against the official centrifuge JavaScript SDK (npm centrifuge 5.7.4), JSON and
// Protobuf, on Node 20 with the ws package as WebSocket.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import * as json from 'centrifuge';
import * as proto from 'centrifuge/build/protobuf';
import { startServer, token, once, collect, waitFor, now, baseConfig, subscribed, refusal } from './helpers.mjs';

for (const [name, lib] of [['json', json], ['protobuf', proto]]) {
  describe(`centrifuge-js ${name}`, () => {
    // Protobuf clients carry data as bytes: JSON text encoded by the application.
    const enc = (v) => (name === 'protobuf' ? new TextEncoder().encode(JSON.stringify(v)) : v);
    const dec = (d) => (name === 'protobuf' ? JSON.parse(new TextDecoder().decode(d)) : d);
    let server;
    const clients = [];
    const client = (opts = {}) => {
      const c = new lib.Centrifuge(server.url, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 500, ...opts });
      clients.push(c);
      return c;
    };
    const connected = async (user, opts = {}) => {
      const c = client({ token: token({ sub: user, exp: now() + 3600 }), ...opts });
      c.connect();
      await once(c, 'connected');
      return c;
    };

    before(async () => { server = await startServer(); });
    after(async () => {
      for (const c of clients) c.disconnect();
      await server.stop();
    });

    it('connects with a token and speaks the right format', async () => {
      const c = client({ token: token({ sub: 'alice', exp: now() + 60 }) });
      c.connect();
      const ctx = await once(c, 'connected');
      assert.match(ctx.client, /^[0-9a-f-]{36}$/);
      assert.equal(ctx.transport, 'websocket');
      c.disconnect();
    });

    it('refuses a connection without a token when anonymous is not allowed, and the SDK stops', async () => {
      const c = client();
      c.connect();
      const ctx = await once(c, 'disconnected');
      assert.equal(ctx.code, 3500);
      assert.equal(c.state, 'disconnected');
    });

    it('refuses an invalid token with 3500 and the SDK does not reconnect', async () => {
      const c = client({ token: token({ sub: 'x' }, 'wrong-secret') });
      const connecting = collect(c, 'connecting');
      c.connect();
      const ctx = await once(c, 'disconnected');
      assert.equal(ctx.code, 3500);
      assert.equal(connecting.length, 1, 'one connecting attempt only');
    });

    it('gets a new token after 109 (expired) and connects', async () => {
      let calls = 0;
      const c = client({ token: token({ sub: 'bob', exp: now() - 10 }), getToken: async () => { calls += 1; return token({ sub: 'bob', exp: now() + 60 }); } });
      c.connect();
      await once(c, 'connected');
      assert.equal(calls, 1);
      c.disconnect();
    });

    it('refreshes a token before it expires', async () => {
      let calls = 0;
      const c = client({ token: token({ sub: 'carol', exp: now() + 2 }), getToken: async () => { calls += 1; return token({ sub: 'carol', exp: now() + 3600 }); } });
      c.connect();
      await once(c, 'connected');
      await waitFor(() => calls >= 1, 10000, 'the SDK to refresh its token');
      assert.equal(c.state, 'connected');
      c.disconnect();
    });

    it('subscribes and receives publications from the API and from clients', async () => {
      const a = await connected('u1');
      const b = await connected('u2');
      const sa = await subscribed(a, 'chat:pub');
      const sb = await subscribed(b, 'chat:pub');
      const got = collect(sa, 'publication');
      const r = await server.api('publish', { channel: 'chat:pub', data: { text: 'from api' } });
      assert.ok(r.result.offset >= 1 && r.result.epoch, JSON.stringify(r));
      await sb.publish(enc({ text: 'from client' }));
      await waitFor(() => got.length === 2, 10000, 'two publications');
      assert.deepEqual(got.map((p) => dec(p.data)), [{ text: 'from api' }, { text: 'from client' }]);
      assert.equal(got[1].info.user, 'u2');
      assert.ok(Number(got[1].offset) > Number(got[0].offset));
    });

    it('answers presence and presence_stats, and pushes join and leave', async () => {
      const a = await connected('pa');
      const sa = await subscribed(a, 'chat:presence', { joinLeave: true });
      const joins = collect(sa, 'join');
      const leaves = collect(sa, 'leave');
      const b = await connected('pb');
      const sb = await subscribed(b, 'chat:presence');
      await waitFor(() => joins.some((j) => j.info.user === 'pb'), 10000, 'join');
      const p = await sa.presence();
      assert.deepEqual(Object.values(p.clients).map((i) => i.user).sort(), ['pa', 'pb']);
      const st = await sa.presenceStats();
      assert.deepEqual([st.numClients, st.numUsers], [2, 2]);
      const api = await server.api('presence_stats', { channel: 'chat:presence' });
      assert.deepEqual(api.result, { num_clients: 2, num_users: 2 });
      sb.unsubscribe();
      await waitFor(() => leaves.some((l) => l.info.user === 'pb'), 10000, 'leave');
    });

    it('reads history with limit, since and reverse, and removes it', async () => {
      const c = await connected('h1');
      const s = await subscribed(c, 'chat:history');
      for (let i = 1; i <= 5; i++) await server.api('publish', { channel: 'chat:history', data: { i } });
      const all = await s.history({ limit: -1 });
      assert.deepEqual(all.publications.map((p) => dec(p.data).i), [1, 2, 3, 4, 5]);
      const two = await s.history({ limit: 2 });
      assert.deepEqual(two.publications.map((p) => dec(p.data).i), [1, 2]);
      const rev = await s.history({ limit: 2, reverse: true });
      assert.deepEqual(rev.publications.map((p) => dec(p.data).i), [5, 4]);
      const since = await s.history({ limit: -1, since: { offset: Number(all.publications[2].offset), epoch: all.epoch } });
      assert.deepEqual(since.publications.map((p) => dec(p.data).i), [4, 5]);
      const pos = await s.history({ limit: 0 });
      assert.equal(pos.publications.length, 0);
      assert.equal(Number(pos.offset), Number(all.publications[4].offset));
      await server.api('history_remove', { channel: 'chat:history' });
      const after = await s.history({ limit: -1 });
      assert.equal(after.publications.length, 0);
      assert.equal(Number(after.offset), Number(pos.offset), 'the position survives history_remove');
    });

    it('recovers publications missed during a client disconnect, none lost or duplicated', async () => {
      const c = await connected('rec');
      const s = await subscribed(c, 'chat:recover');
      const got = collect(s, 'publication');
      await server.api('publish', { channel: 'chat:recover', data: { n: 1 } });
      await waitFor(() => got.length === 1);
      c.disconnect();
      for (let n = 2; n <= 4; n++) await server.api('publish', { channel: 'chat:recover', data: { n } });
      const resubscribed = once(s, 'subscribed');
      c.connect();
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true);
      await waitFor(() => got.length === 4, 10000, 'recovered publications');
      await server.api('publish', { channel: 'chat:recover', data: { n: 5 } });
      await waitFor(() => got.length === 5);
      assert.deepEqual(got.map((p) => dec(p.data).n), [1, 2, 3, 4, 5]);
    });

    it('recovers after a server-forced disconnect', async () => {
      const c = await connected('forced', { minReconnectDelay: 3000, maxReconnectDelay: 3000 });
      const s = await subscribed(c, 'chat:forced');
      const got = collect(s, 'publication');
      const connecting = once(c, 'connecting');
      await server.api('disconnect', { user: 'forced', disconnect: { code: 3011, reason: 'force reconnect' } });
      const ctx = await connecting;
      assert.equal(ctx.code, 3011);
      // The SDK waits at least minReconnectDelay (3 s) before reconnecting.
      for (let n = 1; n <= 3; n++) await server.api('publish', { channel: 'chat:forced', data: { n } });
      const sub = await once(s, 'subscribed', 15000);
      assert.equal(sub.recovered, true);
      await waitFor(() => got.length === 3, 10000, 'recovered publications');
      assert.deepEqual(got.map((p) => dec(p.data).n), [1, 2, 3]);
    });

    it('answers 102 for an unknown namespace and 103 without permission', async () => {
      const c = await connected('perm');
      assert.equal(await refusal(c, 'nope:x'), 102);
      assert.equal(await refusal(c, 'private:x'), 103);
    });

    it('lets a user into its user-limited channel only', async () => {
      const c = await connected('42');
      await subscribed(c, 'private:dialog#42,43');
      assert.equal(await refusal(c, 'private:dialog#43,44'), 103);
    });

    it('subscribes to a private channel with a subscription token', async () => {
      const c = await connected('tok');
      const s = await subscribed(c, 'private:secret', { getToken: async (ctx) => token({ sub: 'tok', channel: ctx.channel, exp: now() + 60 }) });
      const p = once(s, 'publication');
      await server.api('publish', { channel: 'private:secret', data: { ok: 1 } });
      assert.deepEqual(dec((await p).data), { ok: 1 });
    });

    it('delivers on server-side subscriptions from the token', async () => {
      const c = client({ token: token({ sub: 'srv', channels: ['news'] }) });
      const subs = collect(c, 'subscribed');
      const pubs = collect(c, 'publication');
      c.connect();
      await once(c, 'connected');
      await waitFor(() => subs.some((s) => s.channel === 'news'), 10000, 'server-side subscription');
      await server.api('publish', { channel: 'news', data: { hello: 'srv' } });
      await waitFor(() => pubs.length === 1);
      assert.equal(pubs[0].channel, 'news');
      assert.deepEqual(dec(pubs[0].data), { hello: 'srv' });
    });

    it('follows API unsubscribe, subscribe and disconnect of a user', async () => {
      const c = await connected('ctl');
      const s = await subscribed(c, 'chat:ctl');
      const unsub = once(s, 'unsubscribed');
      await server.api('unsubscribe', { user: 'ctl', channel: 'chat:ctl' });
      assert.equal((await unsub).code, 2000);
      const serverSub = once(c, 'subscribed');
      await server.api('subscribe', { user: 'ctl', channel: 'news' });
      assert.equal((await serverSub).channel, 'news');
      const disc = once(c, 'disconnected');
      await server.api('disconnect', { user: 'ctl', disconnect: { code: 3503, reason: 'go away' } });
      assert.equal((await disc).code, 3503);
    });

    it('answers batch, info and channels with a pattern', async () => {
      const c = await connected('meta');
      await subscribed(c, 'chat:meta-1');
      await subscribed(c, 'chat:meta-2');
      await subscribed(c, 'news-meta');
      const b = await server.api('batch', { commands: [{ publish: { channel: 'chat:meta-1', data: {} } }, { presence_stats: { channel: 'chat:meta-1' } }, { info: {} }] });
      assert.equal(b.replies.length, 3);
      assert.ok(b.replies[0].publish.offset >= 1);
      assert.equal(b.replies[1].presence_stats.num_clients, 1);
      const info = await server.api('info', {});
      assert.equal(info.result.nodes.length, 1);
      assert.ok(info.result.nodes[0].num_clients >= 1 && info.result.nodes[0].uid);
      const ch = await server.api('channels', { pattern: 'chat:meta-*' });
      assert.deepEqual(Object.keys(ch.result.channels).sort(), ['chat:meta-1', 'chat:meta-2']);
    });

    it('keeps other clients served when one misbehaves', async () => {
      const good = await connected('good');
      const s = await subscribed(good, 'chat:robust');
      const got = collect(s, 'publication');
      // A raw client that sends garbage instead of connect.
      const raw = new WebSocket(server.url);
      await once(raw, 'open');
      const closed = new Promise((r) => raw.once('close', (code) => r(code)));
      raw.send('this is not json');
      assert.equal(await closed, 3501);
      await server.api('publish', { channel: 'chat:robust', data: { still: true } });
      await waitFor(() => got.length === 1);
    });
  });
}

describe('anonymous connect when allowed', () => {
  let server;
  before(async () => {
    const cfg = baseConfig();
    cfg.client.allow_anonymous_connect_without_token = true;
    cfg.channel.without_namespace.allow_subscribe_for_anonymous = true;
    server = await startServer(cfg);
  });
  after(async () => { await server.stop(); });

  it('connects and subscribes without a token', async () => {
    const c = new json.Centrifuge(server.url, { websocket: WebSocket });
    c.connect();
    await once(c, 'connected');
    const s = c.newSubscription('lobby');
    s.subscribe();
    await once(s, 'subscribed');
    const p = once(s, 'publication');
    await server.api('publish', { channel: 'lobby', data: { hi: 'anon' } });
    assert.deepEqual((await p).data, { hi: 'anon' });
    c.disconnect();
  });
});
