// Centrifugo's security keys through centrifuge-js (issue 24): private channels, subscription
// tokens with keys of their own and bound to a client, audience/issuer regexes, non-ASCII
// channel names, anonymous connection tokens, and the refused-token log line.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { startServer, token, now, baseConfig, SECRET, waitFor, connectOutcome } from './helpers.mjs';

const SUB_SECRET = 'sdk-subscription-secret';

describe('security keys with centrifuge-js', () => {
  let server;
  const clients = [];

  before(async () => {
    const cfg = baseConfig();
    cfg.client.token.audience_regex = '^app-(prod|stage)$';
    cfg.client.disallow_anonymous_connection_tokens = true;
    cfg.client.subscription_token = { enabled: true, hmac_secret_key: SUB_SECRET };
    server = await startServer(cfg);
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await server.stop();
  });

  function client(claims) {
    const c = new Centrifuge(server.url, { websocket: WebSocket, token: token(claims) });
    clients.push(c);
    return c;
  }

  const attempt = (claims) => connectOutcome(server.url, token(claims));

  /** Subscribes; resolves 'subscribed' or the code of the refusal (centrifuge-js
   * unsubscribes with the error's code when it is not temporary). */
  function subscribeResult(sub) {
    return new Promise((resolve) => {
      sub.once('subscribed', () => resolve('subscribed'));
      sub.once('unsubscribed', (ctx) => resolve(ctx.code));
      sub.subscribe();
    });
  }

  it('checks the audience against audience_regex and refuses anonymous tokens', async () => {
    assert.equal(await attempt({ sub: 'alice', aud: 'app-prod', exp: now() + 60 }), 'connected');
    assert.equal(await attempt({ sub: 'alice', aud: ['x', 'app-stage'], exp: now() + 60 }), 'connected');
    assert.equal(await attempt({ sub: 'alice', aud: 'app-test', exp: now() + 60 }), 3500, 'foreign audience');
    assert.equal(await attempt({ sub: '', aud: 'app-prod', exp: now() + 60 }), 3507, 'anonymous token');
    assert.equal(await attempt({ sub: 'alice', aud: 'app-prod', channel: 'news' }), 3500, 'a subscription token as connection token');
    // The refusal is logged at info with its reason and the client's address, never the token.
    await waitFor(() => /connection token refused/.test(server.output()), 5000, 'the refusal log line');
    const line = server.output().split('\n').find((l) => l.includes('connection token refused'));
    assert.match(line, /wrong audience|channel claim/);
    assert.match(line, /127\.0\.0\.1/);
    assert.ok(!line.includes(SECRET) && !line.includes('eyJ'), line);
  });

  it('private channels need a subscription token signed with the subscription key, for this client', async () => {
    const c = client({ sub: 'bob', aud: 'app-prod', exp: now() + 60 });
    c.connect();
    const { client: clientId } = await new Promise((r) => c.once('connected', r));
    // allow_subscribe_for_client is on, yet `$secret` needs a token.
    const bare = c.newSubscription('$secret');
    assert.equal(await subscribeResult(bare), 103);
    c.removeSubscription(bare);
    // Signed with the connection key: refused (subscription_token has keys of its own).
    const wrongKey = c.newSubscription('$secret', { token: token({ sub: 'bob', channel: '$secret' }, SECRET) });
    assert.equal(await subscribeResult(wrongKey), 103);
    c.removeSubscription(wrongKey);
    const good = c.newSubscription('$secret', {
      getToken: async (ctx) => token({ sub: 'bob', channel: ctx.channel, client: clientId, data: { welcome: true } }, SUB_SECRET),
    });
    const subscribed = new Promise((r) => good.once('subscribed', r));
    good.subscribe();
    const ctx = await subscribed;
    assert.deepEqual(ctx.data, { welcome: true }, 'the token data reaches the subscriber');
    // A publication reaches it.
    const got = new Promise((r) => good.once('publication', r));
    await server.api('publish', { channel: '$secret', data: { n: 1 } });
    assert.deepEqual((await got).data, { n: 1 });
  });

  it('refuses non-ASCII channel names with 107', async () => {
    const c = client({ sub: 'carol', aud: 'app-prod', exp: now() + 60 });
    c.connect();
    await new Promise((r) => c.once('connected', r));
    assert.equal(await subscribeResult(c.newSubscription('n\u0435ws')), 107, 'Cyrillic e');
    assert.equal(await subscribeResult(c.newSubscription('news')), 'subscribed');
  });
});

/** A WebSocket whose upgrade request carries `headers` (as a gateway in front would add). */
const withHeaders = (headers) => class extends WebSocket {
  constructor(url, protocols) { super(url, protocols, { headers }); }
};

describe('client.user_id_http_header with centrifuge-js', () => {
  let server;
  before(async () => {
    const cfg = baseConfig();
    cfg.client.user_id_http_header = 'X-User-Id';
    server = await startServer(cfg);
  });
  after(async () => server.stop());

  it('a connection without a token is the user the header names; without it, refused', async () => {
    const c = new Centrifuge(server.url, { websocket: withHeaders({ 'X-User-Id': 'gateway-alice' }) });
    c.connect();
    await new Promise((r) => c.once('connected', r));
    const sub = c.newSubscription('chat:gw');
    sub.subscribe();
    await new Promise((r) => sub.once('subscribed', r));
    const p = await sub.presence();
    assert.deepEqual(Object.values(p.clients).map((x) => x.user), ['gateway-alice']);
    c.disconnect();
    const anon = new Centrifuge(server.url, { websocket: WebSocket });
    const code = await new Promise((resolve) => {
      anon.once('disconnected', (ctx) => resolve(ctx.code));
      anon.connect();
    });
    assert.equal(code, 3500);
    anon.disconnect();
  });
});
