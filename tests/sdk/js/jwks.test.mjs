// Connection tokens verified with keys from a JWKS endpoint served here: RS256 and EdDSA
// (Ed25519) and ES512 (P-521), a key rotation in the middle of the test, and the endpoint going down.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { generateKeyPairSync, sign } from 'node:crypto';
import { startServer, freePort, once, waitFor, now, baseConfig, connectOutcome } from './helpers.mjs';

const b64url = (b) => Buffer.from(b).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');

function jwt(alg, kid, privateKey, claims) {
  const head = b64url(JSON.stringify({ alg, typ: 'JWT', kid }));
  const body = b64url(JSON.stringify(claims));
  const input = Buffer.from(`${head}.${body}`);
  const sig = alg === 'EdDSA' ? sign(null, input, privateKey)
    : alg === 'ES512' ? sign('sha512', input, { key: privateKey, dsaEncoding: 'ieee-p1363' })
      : sign('sha256', input, privateKey);
  return `${head}.${body}.${b64url(sig)}`;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ed = generateKeyPairSync('ed25519');
const p521 = generateKeyPairSync('ec', { namedCurve: 'P-521' });
const jwk = (pair, kid) => ({ ...pair.publicKey.export({ format: 'jwk' }), kid, use: 'sig' });

describe('JWKS with centrifuge-js', () => {
  let server;
  let jwks;
  const state = { keys: [jwk(rsa, 'rsa-1')], down: false, fetches: 0 };

  const attempt = (token) => connectOutcome(server.url, token);

  before(async () => {
    const port = await freePort();
    jwks = createServer((req, res) => {
      state.fetches += 1;
      if (state.down) { res.writeHead(503); res.end(); return; }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ keys: state.keys }));
    });
    await new Promise((r) => jwks.listen(port, '127.0.0.1', r));
    const cfg = baseConfig();
    cfg.client.token.jwks_public_endpoint = `http://127.0.0.1:${port}/.well-known/jwks.json`;
    server = await startServer(cfg);
  });
  after(async () => {
    await server.stop();
    jwks.closeAllConnections();
    await new Promise((r) => jwks.close(r));
  });

  it('verifies with the endpoint keys, follows a rotation, keeps working from the cache when it is down', async () => {
    const rsaToken = () => jwt('RS256', 'rsa-1', rsa.privateKey, { sub: 'alice', exp: now() + 60 });
    const edToken = () => jwt('EdDSA', 'ed-2', ed.privateKey, { sub: 'bob', exp: now() + 60 });
    assert.equal(await attempt(rsaToken()), 'connected');
    assert.equal(state.fetches, 1);
    assert.equal(await attempt(rsaToken()), 'connected', 'from the cache');
    assert.equal(state.fetches, 1, 'no fetch for a known kid');

    // Rotation: the endpoint now serves only the Ed25519 key. A token naming the new kid
    // makes the node fetch again (at most once a second).
    state.keys = [jwk(ed, 'ed-2'), jwk(p521, 'p521-3')];
    await waitFor(async () => (await attempt(edToken())) === 'connected', 5000, 'the rotated key');
    assert.equal(await attempt(jwt('ES512', 'p521-3', p521.privateKey, { sub: 'carol', exp: now() + 60 })), 'connected', 'ES512');
    assert.equal(await attempt(rsaToken()), 3500, 'the retired key no longer verifies');

    // The endpoint goes down: the cached key goes on verifying.
    state.down = true;
    const before = state.fetches;
    await waitFor(async () => {
      // An unknown kid makes the node try the endpoint (and fail).
      await attempt(jwt('EdDSA', 'ed-unknown', ed.privateKey, { sub: 'x', exp: now() + 60 }));
      return state.fetches > before;
    }, 5000, 'a fetch while down');
    assert.equal(await attempt(edToken()), 'connected', 'cached key while the endpoint is down');
    // A forged signature under a known kid is refused.
    const forged = jwt('EdDSA', 'ed-2', generateKeyPairSync('ed25519').privateKey, { sub: 'bob' });
    assert.equal(await attempt(forged), 3500);
  });
});

describe('JWKS endpoint templated from the issuer', () => {
  let server;
  let jwks;
  const acme = generateKeyPairSync('ed25519');
  const globex = generateKeyPairSync('ed25519');
  const fetched = [];

  before(async () => {
    const port = await freePort();
    jwks = createServer((req, res) => {
      fetched.push(req.url);
      const keys = { '/acme/jwks': [jwk(acme, 'k1')], '/globex/jwks': [jwk(globex, 'k1')] }[req.url];
      if (!keys) { res.writeHead(404); res.end(); return; }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ keys }));
    });
    await new Promise((r) => jwks.listen(port, '127.0.0.1', r));
    const cfg = baseConfig();
    cfg.client.token = {
      jwks_public_endpoint: `http://127.0.0.1:${port}/{{tenant}}/jwks`,
      issuer_regex: '^https://(?P<tenant>acme|globex)\\.auth\\.example$',
    };
    server = await startServer(cfg);
  });
  after(async () => {
    await server.stop();
    jwks.closeAllConnections();
    await new Promise((r) => jwks.close(r));
  });

  const attempt = (tok) => connectOutcome(server.url, tok);

  it('fetches each tenant\'s keys from its own URL; a key of one tenant does not pass for another', async () => {
    const claims = (t) => ({ sub: 'u', iss: `https://${t}.auth.example`, exp: now() + 60 });
    assert.equal(await attempt(jwt('EdDSA', 'k1', acme.privateKey, claims('acme'))), 'connected');
    assert.equal(await attempt(jwt('EdDSA', 'k1', globex.privateKey, claims('globex'))), 'connected');
    assert.deepEqual([...new Set(fetched)].sort(), ['/acme/jwks', '/globex/jwks']);
    assert.equal(await attempt(jwt('EdDSA', 'k1', acme.privateKey, claims('globex'))), 3500, 'acme key, globex issuer');
    assert.equal(await attempt(jwt('EdDSA', 'k1', acme.privateKey, claims('evil'))), 3500, 'an issuer outside the list');
    assert.ok(!fetched.some((u) => u.includes('evil')), 'no fetch for an unlisted tenant');
  });
});
