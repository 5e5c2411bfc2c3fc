// The README's quick start, step by step: genconfig, serve, gentoken, a centrifuge-js
// client, and a publication made with curl.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { freePort, waitFor, once } from './helpers.mjs';

const BIN = process.env.TEST_WSHUB_BIN || new URL('../../../target/release/wshub', import.meta.url).pathname;

test('README quick start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'wshub-quickstart-'));
  const cfgPath = join(dir, 'config.json');
  execFileSync(BIN, ['genconfig', '-o', cfgPath]);
  assert.throws(() => execFileSync(BIN, ['genconfig', '-o', cfgPath], { stdio: 'pipe' }), 'does not overwrite');
  execFileSync(BIN, ['checkconfig', '-c', cfgPath]);
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
  const port = await freePort();
  // The README binds every address; here only loopback, so that the test shares no port.
  const server = spawn(BIN, ['serve', '-c', cfgPath, '--port', String(port), '--address', '127.0.0.1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  server.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((r) => server.once('exit', r));
  try {
    await waitFor(async () => {
      if (server.exitCode !== null) throw new Error(`wshub serve exited: ${stderr}`);
      try { return (await fetch(`http://127.0.0.1:${port}/health`)).ok; } catch { return false; }
    }, 15000, 'serve');
    // Centrifugo's output: a line saying what it is, then the token.
    const token = execFileSync(BIN, ['gentoken', '-c', cfgPath, '-u', 'alice']).toString().trim().split('\n').pop();
    const client = new Centrifuge(`ws://127.0.0.1:${port}/connection/websocket`, { websocket: WebSocket, token });
    const sub = client.newSubscription('news');
    const received = once(sub, 'publication');
    sub.subscribe();
    client.connect();
    await once(sub, 'subscribed');
    const out = execFileSync('curl', ['-s', '-X', 'POST', `http://127.0.0.1:${port}/api/publish`, '-H', `X-API-Key: ${cfg.http_api.key}`, '-d', '{"channel": "news", "data": {"text": "hello"}}']).toString();
    assert.equal(JSON.parse(out).result.offset, 1);
    assert.deepEqual((await received).data, { text: 'hello' });
    client.disconnect();
  } finally {
    server.kill('SIGTERM');
    await exited;
  }
});
