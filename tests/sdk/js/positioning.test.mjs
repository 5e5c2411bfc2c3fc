// Positioning without recovery, the periodic position check and the cache recovery mode
// with the official centrifuge JavaScript SDK, as Centrifugo v6 serves them
// (`force_positioning`, `allow_positioning`, `client.channel_position_check_delay`,
// `force_recovery_mode: "cache"`, `auto_cache_recover`).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { startServer, token, once, collect, waitFor, now, baseConfig, freePort } from './helpers.mjs';

const history = { history_size: 100, history_ttl: '300s', allow_subscribe_for_client: true };

function positioningConfig() {
  const cfg = baseConfig();
  cfg.channel.namespaces.push(
    { name: 'pos', ...history, force_positioning: true },
    { name: 'ask', ...history, allow_positioning: true },
    { name: 'cache', ...history, force_recovery: true, force_recovery_mode: 'cache', auto_cache_recover: true },
    { name: 'manual', ...history, force_recovery: true, force_recovery_mode: 'cache' },
  );
  return cfg;
}

function clientOf(server, user, clients, opts = {}) {
  const c = new Centrifuge(server.url, {
    websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 500, token: token({ sub: user, exp: now() + 3600, ...opts.claims }),
  });
  clients.push(c);
  return c;
}

/** Subscribes `c` to `channel`: the subscribed event's context, and the publications
 * gathered from the start. */
async function subscribing(c, channel, opts = {}) {
  const s = c.newSubscription(channel, opts);
  const got = collect(s, 'publication');
  s.subscribe();
  return [await once(s, 'subscribed'), got];
}

describe('centrifuge-js: positioning and the cache recovery mode', () => {
  let server;
  const clients = [];
  const connected = async (user) => {
    const c = clientOf(server, user, clients);
    c.connect();
    await once(c, 'connected');
    return c;
  };

  before(async () => { server = await startServer(positioningConfig()); });
  after(async () => {
    for (const c of clients) c.disconnect();
    await server.stop();
  });

  it('force_positioning: positioned, not recoverable, the stream position given', async () => {
    await server.api('publish', { channel: 'pos:a', data: { n: 1 } });
    const c = await connected('p1');
    const [ctx, got] = await subscribing(c, 'pos:a');
    assert.equal(ctx.positioned, true);
    assert.equal(ctx.recoverable, false);
    assert.equal(ctx.streamPosition.offset, 1);
    assert.ok(ctx.streamPosition.epoch.length > 0);
    await server.api('publish', { channel: 'pos:a', data: { n: 2 } });
    await waitFor(() => got.length === 1, 10000, 'the live publication');
    assert.equal(got[0].offset, 2);
  });

  it('allow_positioning: positioned only when the subscription asks', async () => {
    const c = await connected('p2');
    assert.equal((await subscribing(c, 'ask:a', { positioned: true }))[0].positioned, true);
    assert.equal((await subscribing(c, 'ask:b'))[0].positioned, false);
  });

  it('auto_cache_recover: a plain subscribe gets the latest publication only', async () => {
    for (let n = 1; n <= 3; n++) await server.api('publish', { channel: 'cache:a', data: { n } });
    const c = await connected('c1');
    const [ctx, got] = await subscribing(c, 'cache:a');
    assert.equal(ctx.recoverable, true);
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
    await waitFor(() => got.length === 1, 10000, 'the cached publication');
    assert.deepEqual(got.map((p) => p.data), [{ n: 3 }]);
    // Live ones follow.
    await server.api('publish', { channel: 'cache:a', data: { n: 4 } });
    await waitFor(() => got.length === 2, 10000, 'the live publication');
    assert.deepEqual(got[1].data, { n: 4 });
  });

  it('cache mode: a subscription recovering from an old position gets the latest only', async () => {
    for (let n = 1; n <= 3; n++) await server.api('publish', { channel: 'manual:a', data: { n } });
    const c = await connected('c2');
    const [ctx, got] = await subscribing(c, 'manual:a', { since: { offset: 1, epoch: 'another' } });
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
    await waitFor(() => got.length === 1, 10000, 'the cached publication');
    assert.deepEqual(got.map((p) => p.data), [{ n: 3 }], 'not 2 and 3');
  });
});

function redisCli(port, args) {
  try {
    return execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).trim();
  } catch (e) {
    throw new Error(`redis-cli failed (apt-get install redis-tools): ${e.message}`);
  }
}

function listening(port) {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.once('connect', () => { s.end(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

// A publication lost between Redis and the node: the stream's top moves on in Redis
// (`HINCRBY` of its meta, as a publish whose PUBLISH never arrived), nothing reaches the
// subscriber. Only the periodic position check can notice.
describe('centrifuge-js: the periodic position check on the Redis engine', () => {
  let server;
  let redis;
  let redisExit;
  let rport;
  const prefix = `pos${process.pid}`;
  const clients = [];

  before(async () => {
    rport = await freePort();
    redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    redisExit = new Promise((r) => redis.once('exit', r));
    const failed = new Promise((_, reject) => redis.once('error', (e) => reject(new Error(`redis-server could not start (apt-get install redis-server): ${e.message}`))));
    await Promise.race([failed, waitFor(() => listening(rport), 10000, 'redis-server')]);
    const cfg = positioningConfig();
    cfg.engine = { type: 'redis', redis: { address: `redis://127.0.0.1:${rport}`, prefix } };
    cfg.client.presence_update_interval = '1s';
    cfg.client.channel_position_check_delay = '1s';
    server = await startServer(cfg);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    if (server) await server.stop();
    if (redis) {
      redis.kill('SIGTERM');
      await redisExit;
    }
  });

  const lose = (channel) => redisCli(rport, ['HINCRBY', `${prefix}.meta.${channel}`, 's', '1']);

  it('a client-side subscription is unsubscribed with 2500 and comes back at the new top', async () => {
    const c = clientOf(server, 'r1', clients);
    c.connect();
    await once(c, 'connected');
    const s = c.newSubscription('pos:lost');
    s.subscribe();
    await once(s, 'subscribed');
    await server.api('publish', { channel: 'pos:lost', data: { n: 1 } });
    // Its position is in step: the checks (every second) pass. Letting time pass is the
    // scenario here.
    const noisy = collect(s, 'subscribing');
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(noisy.length, 0, 'no insufficient state while in step');
    assert.equal(lose('pos:lost'), '2');
    const again = once(s, 'subscribed', 15000);
    await waitFor(() => noisy.length > 0, 15000, 'the subscription to lose its state');
    assert.equal(noisy[0].code, 2500);
    const ctx = await again;
    assert.equal(ctx.streamPosition.offset, 2, 'resubscribed at the new top');
    assert.equal(c.state, 'connected', 'the connection stays');
  });

  it('a server-side subscription closes the connection with 3010', async () => {
    const c = clientOf(server, 'r2', clients, { claims: { channels: ['pos:server'] } });
    const subscribedAt = once(c, 'subscribed');
    c.connect();
    await once(c, 'connected');
    assert.equal((await subscribedAt).positioned, true);
    await server.api('publish', { channel: 'pos:server', data: { n: 1 } });
    const connecting = once(c, 'connecting', 15000);
    lose('pos:server');
    assert.equal((await connecting).code, 3010);
    await once(c, 'connected');
  });
});
