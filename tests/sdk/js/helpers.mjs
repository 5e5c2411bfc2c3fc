// Helpers for the SDK tests: a real wshub process per suite, tokens, the HTTP API.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SECRET = 'sdk-test-secret';
export const API_KEY = 'sdk-test-api-key';
const BIN = process.env.TEST_WSHUB_BIN || new URL('../../../target/release/wshub', import.meta.url).pathname;

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value, failing after `ms`. */
export async function waitFor(fn, ms = 10000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const baseConfig = () => ({
  http_api: { key: API_KEY },
  client: { token: { hmac_secret_key: SECRET }, allowed_origins: ['*'] },
  channel: {
    without_namespace: { allow_subscribe_for_client: true },
    namespaces: [
      {
        name: 'chat', presence: true, join_leave: true, force_push_join_leave: true, history_size: 100, history_ttl: '300s',
        force_recovery: true, allow_subscribe_for_client: true, allow_publish_for_subscriber: true,
        allow_presence_for_subscriber: true, allow_history_for_subscriber: true,
      },
      { name: 'private', allow_user_limited_channels: true },
    ],
  },
});

/** Starts wshub with `config`; resolves when /health answers. */
export async function startServer(config = baseConfig()) {
  const dir = mkdtempSync(join(tmpdir(), 'wshub-sdk-'));
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(config));
  const port = await freePort();
  const proc = spawn(BIN, ['serve', '-c', file, '--port', String(port), '--address', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`wshub exited: ${output}`);
    try { return (await fetch(`http://127.0.0.1:${port}/health`)).ok; } catch { return false; }
  }, 15000, 'wshub to listen');
  return {
    port,
    url: `ws://127.0.0.1:${port}/connection/websocket`,
    output: () => output,
    async api(method, params) {
      const r = await fetch(`http://127.0.0.1:${port}/api/${method}`, {
        method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' }, body: JSON.stringify(params),
      });
      if (r.status !== 200) throw new Error(`API ${method}: HTTP ${r.status}`);
      return r.json();
    },
    /**
     * Resolves once the node has handed every publication it accepted to its subscribers'
     * connections (`wshub_delivery_queue_jobs` at 0): the API answers a publish before
     * delivery, so a reply to a command sent after this arrives after those pushes.
     */
    async delivered() {
      await waitFor(async () => {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const m = text.match(/^wshub_delivery_queue_jobs (\S+)$/m);
        return !m || Number(m[1]) === 0;
      }, 10000, 'every accepted publication delivered');
    },
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      const deadline = setTimeout(() => proc.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(deadline);
    },
    kill(signal) { proc.kill(signal); return exited; },
  };
}

const b64url = (b) => Buffer.from(b).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');

/** An HS256 JWT. */
export function token(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = b64url(createHmac('sha256', secret).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

export const now = () => Math.floor(Date.now() / 1000);

/** Connects a centrifuge-js client with `token`; resolves 'connected' or the disconnect
 * code, and disconnects it. */
export async function connectOutcome(url, token) {
  const { Centrifuge } = await import('centrifuge');
  const { default: WebSocket } = await import('ws');
  const c = new Centrifuge(url, { websocket: WebSocket, token });
  const r = await new Promise((resolve) => {
    c.once('connected', () => resolve('connected'));
    c.once('disconnected', (ctx) => resolve(ctx.code));
    c.connect();
  });
  c.disconnect();
  return r;
}

/** Resolves with the first event `name` of `emitter` (rejects after `ms`). */
export function once(emitter, name, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${name} event in ${ms} ms`)), ms);
    emitter.once(name, (ctx) => { clearTimeout(t); resolve(ctx); });
  });
}

/** A new subscription of client `c` to `channel`, resolved once subscribed. */
export async function subscribed(c, channel, opts = {}) {
  const s = c.newSubscription(channel, opts);
  s.subscribe();
  await once(s, 'subscribed');
  return s;
}

/** `[subscription, publications]`: a new subscription of client `c` to `channel`, resolved once
 * subscribed, its publications gathered from the start. */
export async function subscribedCollecting(c, channel, opts = {}) {
  const s = c.newSubscription(channel, opts);
  const pubs = collect(s, 'publication');
  s.subscribe();
  await once(s, 'subscribed');
  return [s, pubs];
}

/** The code with which `channel` is refused to client `c` (the SDK turns a non-temporary
 * subscribe error into 'unsubscribed' with its code). */
export async function refusal(c, channel) {
  const s = c.newSubscription(channel);
  const unsubscribed = once(s, 'unsubscribed');
  s.subscribe();
  return (await unsubscribed).code;
}

/** Collects events `name` of `emitter` into an array. */
export function collect(emitter, name) {
  const out = [];
  emitter.on(name, (ctx) => out.push(ctx));
  return out;
}
