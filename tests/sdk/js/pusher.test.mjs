// The Pusher dialect (issue #33) with real clients only: pusher-js under Node, laravel-echo,
// the `pusher` server SDK (signed API calls, auth signatures, webhook verification), and
// centrifuge-js on the same channels.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

import { startServer, baseConfig, freePort, waitFor, token, now, subscribed, once } from './helpers.mjs';

const require = createRequire(import.meta.url);
const PusherClient = require('pusher-js');
const PusherServer = require('pusher');
const { default: Echo } = await import('laravel-echo');

const APP = { id: 'app-1', key: 'app-key', secret: 'app-secret' };
const QUIET = { id: 'app-2', key: 'quiet-key', secret: 'quiet-secret', channel_prefix: 'quiet:' };

let hooks; // the webhook receiver
let server;

const events = []; // webhook events received with a valid signature
let badSignatures = 0;

function pusherConfig(webhookUrl) {
  return {
    apps: [
      { ...APP, enable_client_messages: true, webhooks: webhookUrl ? [webhookUrl] : [] },
      { ...QUIET },
    ],
  };
}

function serverSdk(port, app = APP) {
  return new PusherServer({
    appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(port), useTLS: false,
    // Only for private-encrypted- channels' shared secrets (end to end: the server never sees it).
    encryptionMasterKeyBase64: Buffer.alloc(32, 7).toString('base64'),
  });
}

/** A pusher-js client whose private/presence auth and signin are signed by the server SDK. */
function client(port, { app = APP, user = null, sdk = serverSdk(port, app) } = {}) {
  return new PusherClient(app.key, {
    wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'], disableStats: true, cluster: 'mt1',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        const presence = user && channelName.startsWith('presence-') ? { user_id: user.id, user_info: user.info } : undefined;
        cb(null, sdk.authorizeChannel(socketId, channelName, presence));
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => cb(null, sdk.authenticateUser(socketId, { id: user?.id ?? 'nobody' })),
    },
  });
}

function connected(p) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('pusher-js did not connect')), 10000);
    p.connection.bind('connected', () => { clearTimeout(t); resolve(p.connection.socket_id); });
  });
}

function subscribe(p, name) {
  const ch = p.subscribe(name);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no subscription to ${name}`)), 10000);
    ch.bind('pusher:subscription_succeeded', (d) => { clearTimeout(t); resolve([ch, d]); });
    ch.bind('pusher:subscription_error', (e) => { clearTimeout(t); reject(Object.assign(new Error('subscription_error'), { status: e.status, e })); });
  });
}

/** Connects `a` and `b` and subscribes both to `channel`: their channel objects. */
async function bothOn(a, b, channel) {
  await Promise.all([connected(a), connected(b)]);
  const [cha] = await subscribe(a, channel);
  const [chb] = await subscribe(b, channel);
  return [cha, chb];
}

/** `{ seen }`, true once `event` reached `ch` (for events that must not arrive). */
function watch(ch, event) {
  const w = { seen: false };
  ch.bind(event, () => { w.seen = true; });
  return w;
}

function next(ch, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} on ${ch.name}`)), ms);
    const f = (d, meta) => { clearTimeout(t); ch.unbind(event, f); resolve([d, meta]); };
    ch.bind(event, f);
  });
}

before(async () => {
  hooks = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const wh = serverSdk(server.port).webhook({ headers: req.headers, rawBody: body });
      if (wh.isValid()) events.push(...wh.getEvents()); else badSignatures++;
      res.end('ok');
    });
  });
  await new Promise((r) => hooks.listen(0, '127.0.0.1', r));
  const cfg = baseConfig();
  cfg.pusher = pusherConfig(`http://127.0.0.1:${hooks.address().port}/hooks`);
  server = await startServer(cfg);
});

after(async () => {
  await server?.stop();
  hooks?.closeAllConnections();
  hooks?.close();
});

test('pusher-js connects with a Pusher socket id and an unknown key is refused with 4001', async () => {
  const p = client(server.port);
  const id = await connected(p);
  assert.match(id, /^\d+\.\d+$/);
  // Counted in Centrifugo's per-transport series as transport "pusher".
  const series = async (name) => {
    const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{transport="pusher"`));
    return line === undefined ? undefined : Number(line.split(' ').pop());
  };
  assert.equal(await series('centrifugo_client_connections_inflight'), 1);
  assert.ok((await series('centrifugo_client_connections_accepted')) >= 1);
  await subscribe(p, 'counted');
  assert.ok((await series('centrifugo_transport_messages_sent')) >= 1, 'the subscription reply counted');
  assert.ok((await series('centrifugo_transport_messages_received')) >= 1, 'the subscribe counted');
  p.disconnect();
  await waitFor(async () => (await series('centrifugo_client_connections_inflight')) === 0, 5000, 'the pusher connection gone from inflight');

  const bad = new PusherClient('no-such-key', { wsHost: '127.0.0.1', wsPort: server.port, forceTLS: false, enabledTransports: ['ws'], cluster: 'mt1' });
  const err = await new Promise((resolve) => bad.connection.bind('error', resolve));
  assert.equal(err.data?.code ?? err.error?.data?.code, 4001);
  bad.disconnect();
});

test('an API event reaches pusher-js and centrifuge-js; a Centrifugo publish reaches pusher-js', async () => {
  const p = client(server.port);
  await connected(p);
  const [ch] = await subscribe(p, 'news');

  const { Centrifuge } = await import('centrifuge');
  const { default: WebSocket } = await import('ws');
  const c = new Centrifuge(server.url, { websocket: WebSocket, token: token({ sub: 'u1', exp: now() + 600 }) });
  c.connect();
  const sub = await subscribed(c, 'news');

  const sdk = serverSdk(server.port);
  const gotPusher = next(ch, 'order-shipped');
  const gotCentrifugo = once(sub, 'publication');
  await sdk.trigger('news', 'order-shipped', { id: 7 });
  const [data] = await gotPusher;
  assert.deepEqual(data, { id: 7 });
  const pub = await gotCentrifugo;
  assert.deepEqual(pub.data, { id: 7 });
  assert.equal(pub.tags.event, 'order-shipped', 'the Pusher event name is the publication tag "event"');

  const plain = next(ch, 'message');
  await server.api('publish', { channel: 'news', data: { text: 'hi' } });
  assert.deepEqual((await plain)[0], { text: 'hi' }, 'a publish without tags is the event "message"');
  const named = next(ch, 'Sent');
  await server.api('publish', { channel: 'news', data: { n: 1 }, tags: { event: 'Sent' } });
  assert.deepEqual((await named)[0], { n: 1 });

  // A string that is not JSON comes back as the same string.
  const str = next(ch, 'text');
  await sdk.trigger('news', 'text', 'plain words');
  assert.equal((await str)[0], 'plain words');
  c.disconnect();
  p.disconnect();
});

test('apps are isolated: the same channel name in another app is another channel', async () => {
  const a = client(server.port);
  const b = client(server.port, { app: QUIET });
  const [cha, chb] = await bothOn(a, b, 'shared');
  const leaked = watch(chb, 'e');
  const got = next(cha, 'e');
  await serverSdk(server.port).trigger('shared', 'e', { x: 1 });
  await got;
  const gotQuiet = next(chb, 'q');
  await serverSdk(server.port, QUIET).trigger('shared', 'q', { y: 2 });
  assert.deepEqual((await gotQuiet)[0], { y: 2 });
  assert.equal(leaked.seen, false);
  a.disconnect();
  b.disconnect();
});

test('private channels need a valid auth signature', async () => {
  const p = client(server.port);
  await connected(p);
  const [ch] = await subscribe(p, 'private-orders');
  const got = next(ch, 'paid');
  await serverSdk(server.port).trigger('private-orders', 'paid', { ok: true });
  assert.deepEqual((await got)[0], { ok: true });

  // Signed with another app's secret: refused.
  const forged = client(server.port, { sdk: serverSdk(server.port, { ...APP, secret: 'wrong' }) });
  await connected(forged);
  await assert.rejects(subscribe(forged, 'private-orders'), (e) => e.status === 401);
  await assert.rejects(subscribe(forged, 'private-encrypted-x'), (e) => e.status === 401);
  p.disconnect();
  forged.disconnect();
});

test('presence counts members per user, tells the others, and the API lists them', async () => {
  const ann = client(server.port, { user: { id: 'ann', info: { name: 'Ann' } } });
  const ann2 = client(server.port, { user: { id: 'ann', info: { name: 'Ann' } } });
  const bob = client(server.port, { user: { id: 'bob', info: { name: 'Bob' } } });
  await Promise.all([connected(ann), connected(ann2), connected(bob)]);
  const [annCh, members] = await subscribe(ann, 'presence-room');
  assert.equal(members.count, 1);
  assert.equal(members.me.id, 'ann');

  const bobAdded = [];
  annCh.bind('pusher:member_added', (m) => bobAdded.push(m));
  const [bobCh, bobMembers] = await subscribe(bob, 'presence-room');
  assert.equal(bobMembers.count, 2);
  assert.deepEqual(bobMembers.get('ann').info, { name: 'Ann' });
  await waitFor(() => bobAdded.length === 1, 5000, 'member_added for bob');
  assert.equal(bobAdded[0].id, 'bob');

  // Ann's second socket is not a new member.
  let extra = 0;
  bobCh.bind('pusher:member_added', () => { extra++; });
  await subscribe(ann2, 'presence-room');
  const sdk = serverSdk(server.port);
  const users = await (await sdk.get({ path: '/channels/presence-room/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['ann', 'bob']);
  const info = await (await sdk.get({ path: '/channels/presence-room', params: { info: 'user_count,subscription_count' } })).json();
  assert.deepEqual(info, { occupied: true, subscription_count: 3, user_count: 2 });
  assert.equal(extra, 0);

  // Ann leaves only when her last socket does.
  const removed = [];
  bobCh.bind('pusher:member_removed', (m) => removed.push(m.id));
  ann.disconnect();
  const list = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
  assert.ok(list.channels['presence-room']);
  ann2.disconnect();
  await waitFor(() => removed.length === 1, 5000, 'member_removed for ann');
  assert.deepEqual(removed, ['ann']);
  assert.equal(bobCh.members.count, 1);
  bob.disconnect();
});

test('client events go to the others on private channels, never back to the sender', async () => {
  const a = client(server.port, { user: { id: 'a' } });
  const b = client(server.port, { user: { id: 'b' } });
  const [cha, chb] = await bothOn(a, b, 'presence-typing');
  const echoed = watch(cha, 'client-typing');
  const got = next(chb, 'client-typing');
  assert.equal(cha.trigger('client-typing', { who: 'a' }), true);
  const [data, meta] = await got;
  assert.deepEqual(data, { who: 'a' });
  assert.equal(meta.user_id, 'a', 'presence client events carry the sender');
  // A marker after it: once b has it, a would have had its echo.
  const marker = next(cha, 'client-marker');
  chb.trigger('client-marker', {});
  await marker;
  assert.equal(echoed.seen, false);

  // Not on a public channel, nor in an app without client messages.
  const [pub] = await subscribe(a, 'public-x');
  const err = new Promise((resolve) => a.connection.bind('error', resolve));
  pub.trigger('client-x', {});
  const e = await err;
  assert.equal(e.data?.code ?? e.error?.data?.code, 4301);
  a.disconnect();
  b.disconnect();
});

test('signin: events to the user, then terminate_connections closes the user\'s sockets', async () => {
  const p = client(server.port, { user: { id: 'carol' } });
  await connected(p);
  p.signin();
  await waitFor(() => p.user.serverToUserChannel?.subscribed, 5000, 'the user channel after signin');
  const hello = new Promise((resolve) => p.user.bind('hello', resolve));
  const sdk = serverSdk(server.port);
  await sdk.sendToUser('carol', 'hello', { to: 'carol' });
  assert.deepEqual(await hello, { to: 'carol' });

  // Another socket cannot take carol's user channel (pusher-js will not even ask: a raw socket).
  const { default: WebSocket } = await import('ws');
  const raw = new WebSocket(`ws://127.0.0.1:${server.port}/app/${APP.key}?protocol=7`);
  const frames = [];
  raw.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await waitFor(() => frames.some((f) => f.event === 'pusher:connection_established'), 5000, 'raw socket connected');
  raw.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: '#server-to-user-carol', auth: '' } }));
  const refused = await waitFor(() => frames.find((f) => f.event === 'pusher:subscription_error'), 5000, 'refusal');
  assert.equal(refused.data.status, 403);
  raw.close();

  const closed = new Promise((resolve) => p.connection.bind('state_change', (s) => { if (s.current !== 'connected') resolve(s.current); }));
  await sdk.terminateUserConnections('carol');
  assert.ok(['disconnected', 'failed', 'unavailable', 'connecting'].includes(await closed));
  p.disconnect();
});

test('the HTTP API refuses a wrong signature and a stale timestamp with 401', async () => {
  const wrong = serverSdk(server.port, { ...APP, secret: 'not-the-secret' });
  await assert.rejects(wrong.trigger('news', 'e', {}), (e) => e.status === 401);
  const { createHash, createHmac } = await import('node:crypto');
  const body = JSON.stringify({ name: 'e', channel: 'news', data: '{}' });
  const md5 = createHash('md5').update(body).digest('hex');
  const sign = (ts) => {
    const q = `auth_key=${APP.key}&auth_timestamp=${ts}&auth_version=1.0&body_md5=${md5}`;
    const sig = createHmac('sha256', APP.secret).update(`POST\n/apps/${APP.id}/events\n${q}`).digest('hex');
    return `http://127.0.0.1:${server.port}/apps/${APP.id}/events?${q}&auth_signature=${sig}`;
  };
  const post = (url) => fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'application/json' } });
  assert.equal((await post(sign(now()))).status, 200);
  assert.equal((await post(sign(now() - 3600))).status, 401);
  const batch = await serverSdk(server.port).triggerBatch([{ channel: 'news', name: 'a', data: {} }, { channel: 'news', name: 'b', data: {} }]);
  assert.equal(batch.status, 200);
});

test('Laravel Echo on wshub: listen to a public event and whisper on a private channel', async () => {
  const opts = (user) => ({
    broadcaster: 'pusher', key: APP.key, wsHost: '127.0.0.1', wsPort: server.port, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true, cluster: 'mt1', Pusher: PusherClient,
    authorizer: (channel) => ({
      authorize: (socketId, cb) => cb(null, serverSdk(server.port).authorizeChannel(socketId, channel.name, channel.name.startsWith('presence-') ? { user_id: user } : undefined)),
    }),
  });
  const e1 = new Echo(opts('u1'));
  const e2 = new Echo(opts('u2'));
  await Promise.all([connected(e1.connector.pusher), connected(e2.connector.pusher)]);
  const shipped = new Promise((resolve) => e1.channel('orders').listen('.OrderShipped', resolve));
  await waitFor(() => e1.connector.pusher.channel('orders')?.subscribed, 5000, 'echo subscribed');
  await serverSdk(server.port).trigger('orders', 'OrderShipped', { order: { id: 1 } });
  assert.deepEqual(await shipped, { order: { id: 1 } });

  const whispered = new Promise((resolve) => e2.private('chat').listenForWhisper('typing', resolve));
  e1.private('chat');
  await waitFor(() => e1.connector.pusher.channel('private-chat')?.subscribed && e2.connector.pusher.channel('private-chat')?.subscribed, 5000, 'private subscriptions');
  e1.private('chat').whisper('typing', { name: 'u1' });
  assert.deepEqual(await whispered, { name: 'u1' });
  e1.disconnect();
  e2.disconnect();
});

test('webhooks arrive signed, batched, with occupied/vacated and member events', async () => {
  const p = client(server.port, { user: { id: 'hooked' } });
  await connected(p);
  await subscribe(p, 'presence-hooks');
  await waitFor(() => events.some((e) => e.name === 'member_added' && e.channel === 'presence-hooks'), 5000, 'member_added webhook');
  assert.ok(events.some((e) => e.name === 'channel_occupied' && e.channel === 'presence-hooks'));
  p.disconnect();
  await waitFor(() => events.some((e) => e.name === 'channel_vacated' && e.channel === 'presence-hooks'), 10000, 'channel_vacated webhook');
  assert.ok(events.some((e) => e.name === 'member_removed' && e.user_id === 'hooked'));
  assert.equal(badSignatures, 0);
});

test('a channel vacated and occupied again within the debounce sends neither webhook', async () => {
  const a = client(server.port);
  await connected(a);
  await subscribe(a, 'flappy');
  await waitFor(() => events.some((e) => e.name === 'channel_occupied' && e.channel === 'flappy'), 5000, 'occupied');
  a.unsubscribe('flappy');
  await subscribe(a, 'flappy');
  // A marker vacated after the flap: its (debounced) webhook comes after flappy's would.
  const b = client(server.port);
  await connected(b);
  await subscribe(b, 'marker-after-flap');
  b.unsubscribe('marker-after-flap');
  await waitFor(() => events.some((e) => e.name === 'channel_vacated' && e.channel === 'marker-after-flap'), 10000, 'marker vacated');
  assert.equal(events.filter((e) => e.channel === 'flappy' && e.name === 'channel_vacated').length, 0);
  assert.equal(events.filter((e) => e.channel === 'flappy' && e.name === 'channel_occupied').length, 1);
  a.disconnect();
  b.disconnect();
});

test('cache channels: pusher:cache_miss (and its webhook), then the last event on subscribe', async () => {
  const a = client(server.port);
  await connected(a);
  const ch = a.subscribe('cache-news');
  const miss = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no pusher:cache_miss')), 10000);
    ch.bind('pusher:cache_miss', () => { clearTimeout(t); resolve(); });
  });
  await miss;
  await waitFor(() => events.some((e) => e.name === 'cache_miss' && e.channel === 'cache-news'), 5000, 'the cache_miss webhook');
  const got = next(ch, 'headline');
  await serverSdk(server.port).trigger('cache-news', 'headline', { n: 1 });
  await serverSdk(server.port).trigger('cache-news', 'headline', { n: 2 });
  await got;
  // A later subscriber gets the last event at once, and no cache miss.
  const b = client(server.port);
  await connected(b);
  const late = b.subscribe('cache-news');
  let missed = false;
  late.bind('pusher:cache_miss', () => { missed = true; });
  const cached = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no cached event')), 10000);
    late.bind('headline', (d) => { clearTimeout(t); resolve(d); });
  });
  assert.deepEqual(cached, { n: 2 });
  assert.equal(missed, false);
  a.disconnect();
  b.disconnect();
});

test('presence across two wshub nodes on Redis', async () => {
  const rport = await freePort();
  const redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const redisExit = new Promise((r) => redis.once('exit', r));
  redis.once('error', (e) => { throw new Error(`redis-server could not start (apt-get install redis-server): ${e.message}`); });
  try {
    const cfg = baseConfig();
    cfg.engine = { type: 'redis', redis: { address: `redis://127.0.0.1:${rport}` } };
    cfg.pusher = pusherConfig(null);
    await waitFor(async () => { try { return (await startProbe(rport)); } catch { return false; } }, 10000, 'redis-server');
    const n1 = await startServer(cfg);
    const n2 = await startServer(cfg);
    try {
      const ann = client(n1.port, { user: { id: 'ann' } });
      const bob = client(n2.port, { user: { id: 'bob' } });
      await Promise.all([connected(ann), connected(bob)]);
      const [annCh] = await subscribe(ann, 'presence-nodes');
      const added = next(annCh, 'pusher:member_added');
      const [, bobMembers] = await subscribe(bob, 'presence-nodes');
      assert.equal(bobMembers.count, 2, 'node 2 sees node 1\'s member');
      assert.equal((await added)[0].id, 'bob');
      // An event through node 1's API reaches node 2's subscriber.
      const [bobCh] = [bob.channel('presence-nodes')];
      const got = next(bobCh, 'cross');
      await serverSdk(n1.port).trigger('presence-nodes', 'cross', { n: 1 });
      assert.deepEqual((await got)[0], { n: 1 });
      const removed = next(annCh, 'pusher:member_removed');
      bob.disconnect();
      assert.equal((await removed)[0].id, 'bob');
      ann.disconnect();
    } finally {
      await n1.stop();
      await n2.stop();
    }
  } finally {
    redis.kill('SIGTERM');
    await redisExit;
  }
});

// The races of several nodes on Redis: a user's two sockets on two nodes joining and
// leaving at once give one member_added and one member_removed; the channel's last
// subscribers leaving both nodes at once give one channel_vacated; two new users on two
// nodes at once cannot both pass a presence channel's member limit.
test('two nodes on Redis: one webhook per change, and the member limit holds', async () => {
  const rport = await freePort();
  const redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const redisExit = new Promise((r) => redis.once('exit', r));
  redis.once('error', (e) => { throw new Error(`redis-server could not start (apt-get install redis-server): ${e.message}`); });
  const sockets = [];
  try {
    const cfg = baseConfig();
    cfg.engine = { type: 'redis', redis: { address: `redis://127.0.0.1:${rport}` } };
    cfg.pusher = pusherConfig(`http://127.0.0.1:${hooks.address().port}/hooks`);
    cfg.pusher.apps[0].limits = { max_presence_members: 2 };
    await waitFor(async () => { try { return (await startProbe(rport)); } catch { return false; } }, 10000, 'redis-server');
    const n1 = await startServer(cfg);
    const n2 = await startServer(cfg);
    const open = async (port, id) => {
      const p = client(port, { user: { id } });
      sockets.push(p);
      await connected(p);
      return p;
    };
    const named = (name, channel, user) => events.filter((e) => e.name === name && e.channel === channel && (!user || e.user_id === user));
    try {
      const [c1, c2] = await Promise.all([open(n1.port, 'carol'), open(n2.port, 'carol')]);
      await Promise.all([subscribe(c1, 'presence-twice'), subscribe(c2, 'presence-twice')]);
      await waitFor(() => named('member_added', 'presence-twice', 'carol').length > 0, 5000, 'member_added');
      c1.disconnect();
      c2.disconnect();
      await waitFor(() => named('channel_vacated', 'presence-twice').length > 0, 15000, 'presence-twice vacated');
      await waitFor(() => named('member_removed', 'presence-twice', 'carol').length > 0, 5000, 'member_removed');
      // A marker vacated after: its debounced webhook comes after any duplicate would (the
      // nodes' checks of one change are within the debounce of each other).
      const m = await open(n1.port, 'marker');
      await subscribe(m, 'marker-after-race');
      m.unsubscribe('marker-after-race');
      await waitFor(() => named('channel_vacated', 'marker-after-race').length > 0, 15000, 'the marker vacated');
      assert.equal(named('member_added', 'presence-twice', 'carol').length, 1, 'one member_added');
      assert.equal(named('member_removed', 'presence-twice', 'carol').length, 1, 'one member_removed');
      assert.equal(named('channel_occupied', 'presence-twice').length, 1, 'one channel_occupied');
      assert.equal(named('channel_vacated', 'presence-twice').length, 1, 'one channel_vacated');

      // One member in, room for one more: of two new users on two nodes, one gets in.
      const first = await open(n1.port, 'first');
      await subscribe(first, 'presence-limited');
      const [x, y] = await Promise.all([open(n1.port, 'xavier'), open(n2.port, 'yolanda')]);
      const results = await Promise.allSettled([subscribe(x, 'presence-limited'), subscribe(y, 'presence-limited')]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(results.map((r) => r.status)));
      const refused = results.find((r) => r.status === 'rejected');
      assert.equal(refused.reason.message, 'subscription_error');
      const members = (await serverSdk(n2.port).get({ path: '/channels/presence-limited/users' }).then((r) => r.json())).users;
      assert.equal(members.length, 2, JSON.stringify(members));
    } finally {
      for (const p of sockets) p.disconnect();
      await n1.stop();
      await n2.stop();
    }
  } finally {
    redis.kill('SIGTERM');
    await redisExit;
  }
});

function startProbe(port) {
  return new Promise((resolve) => {
    import('node:net').then(({ connect }) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.end(); resolve(true); });
      s.once('error', () => resolve(false));
    });
  });
}
