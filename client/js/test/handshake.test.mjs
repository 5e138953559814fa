// Handshake and close-code rules of the JS client against a scripted
// server: a small Node server (HTTP token endpoint, JWKS and WebSocket)
// that signs real frames with its own key and answers hello as each test
// tells it, so that it can break the rules a real server keeps.
//
//   - welcome is the first server frame of a session (spec §8.3): any other
//     first frame is a protocol violation; the client acts on nothing,
//     closes, and connect() rejects with protocol_violation.
//   - close codes (spec §12.3): 1007 (a text frame that is not UTF-8) means
//     a client bug: do not reconnect.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { readFileSync } from 'node:fs';
import { Client, generateSessionKey, signCompact, TYP_SERVER, TYP_SESSION, SUBPROTOCOL, CLOSE, closeInfo } from '../sigil.js';

let srv;

/** startScripted starts the scripted server; srv.onHello(env, send, ws) decides what answers a hello. */
async function startScripted() {
  let key = await generateSessionKey('ES256');
  const jwks = { keys: [{ ...key.jwk, kid: key.kid, alg: 'ES256', use: 'sig' }] };
  const sid = globalThis.crypto.randomUUID();
  const s = { sid, onHello: null };
  // rotate makes a new signing key and adds it to the JWKS.
  s.rotate = async () => {
    key = await generateSessionKey('ES256');
    jwks.keys.push({ ...key.jwk, kid: key.kid, alg: 'ES256', use: 'sig' });
  };
  const frame = (env) => signCompact(key, TYP_SERVER, JSON.stringify({ id: globalThis.crypto.randomUUID(), ts: Date.now(), ...env }));
  s.welcome = (hello) =>
    frame({
      act: 'welcome', sid, ...(hello.cid ? { cid: hello.cid } : {}),
      body: { sid, sub: 'alice', roles: ['user'], exp: Date.now() + 3_600_000, time: Date.now(), skew: 30000, window: 30000, seq: hello.seq, max_frame: 65536 },
    });
  s.frame = frame;
  const http = createServer(async (req, res) => {
    const json = (status, v) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(v));
    };
    if (req.url === '/.well-known/jwks.json') return json(200, jwks);
    if (req.url === '/v1/token' && req.method === 'POST') {
      let body = '';
      for await (const chunk of req) body += chunk;
      const { jwk } = JSON.parse(body);
      const { thumbprint } = await import('../jose.js');
      const now = Math.floor(Date.now() / 1000);
      const claims = { iss: 'sigil', aud: 'sigil.v1', sub: 'alice', iat: now, exp: now + 3600, jti: globalThis.crypto.randomUUID(), sid, roles: ['user'], cnf: { jkt: await thumbprint(jwk) } };
      return json(200, { token: await signCompact(key, TYP_SESSION, JSON.stringify(claims)), token_type: 'Bearer', expires_in: 3600 });
    }
    json(404, { error: 'not_found', message: req.url });
  });
  const wss = new WebSocketServer({ server: http, handleProtocols: (ps) => (ps.has(SUBPROTOCOL) ? SUBPROTOCOL : false) });
  wss.on('connection', (ws) => {
    // closed resolves with the close code the client sent on the newest connection.
    s.closed = new Promise((r) => ws.on('close', (code) => r(code)));
    ws.on('message', async (data) => {
      const env = JSON.parse(Buffer.from(data.toString().split('.')[1], 'base64url').toString());
      if (env.act === 'hello') await s.onHello(env, (f) => ws.send(f), ws);
    });
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  s.url = `http://127.0.0.1:${http.address().port}`;
  s.stop = () => new Promise((r) => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    http.close(() => r());
  });
  return s;
}

before(async () => {
  srv = await startScripted();
});
after(async () => {
  if (srv) await srv.stop();
});

async function loggedIn() {
  const c = new Client({ url: srv.url, WebSocket, reconnect: false });
  await c.login('alice', 'pw');
  return c;
}

test('a well-behaved welcome opens the session', async () => {
  srv.onHello = async (hello, send) => send(await srv.welcome(hello));
  const c = await loggedIn();
  const w = await c.connect();
  assert.equal(w.sid, srv.sid);
  assert.equal(c.state, 'open');
  // A welcome without grants (a server before §8.3's member): the rights
  // are unknown, and can() leaves the decision to the server.
  assert.equal(c.grants, null);
  assert.equal(c.can('pub', 'announce.news'), true);
  c.close();
});

test('welcome grants: can() follows them; a malformed grant matches nothing', async () => {
  srv.onHello = async (hello, send) => {
    const f = await srv.frame({
      act: 'welcome', sid: srv.sid, cid: hello.cid,
      body: {
        sid: srv.sid, sub: 'alice', roles: ['user'], exp: Date.now() + 3_600_000, time: Date.now(), skew: 30000, window: 30000, seq: hello.seq, max_frame: 65536,
        grants: [{ action: 'pub', channel: 'rooms.>' }, { action: 'dm' }, { action: 'sub', channel: 'a.>.b' }, { action: 'Bad Name' }],
      },
    });
    send(f);
  };
  const c = await loggedIn();
  await c.connect();
  assert.equal(c.can('pub', 'rooms.lobby'), true);
  assert.equal(c.can('pub', 'rooms'), false);
  assert.equal(c.can('pub', 'announce.news'), false);
  assert.equal(c.can('pub'), false);
  assert.equal(c.can('dm'), true);
  assert.equal(c.can('sub', 'a.x.b'), false, 'an invalid pattern matches nothing');
  assert.equal(c.can('Bad Name'), false);
  c.close();
});

for (const [name, first] of [
  ['a direct before welcome', async (hello) => [await srv.frame({ act: 'direct', to: 'alice', body: { frame: 'x.y.z', jwk: {}, sub: 'bob' } }), await srv.welcome(hello)]],
  ['an expiring before welcome', async (hello) => [await srv.frame({ act: 'expiring', sid: srv.sid, body: { exp: Date.now() + 60_000 } }), await srv.welcome(hello)]],
  ['a welcome that answers another hello', async (hello) => [await srv.welcome({ ...hello, cid: globalThis.crypto.randomUUID() })]],
  ['an unsigned first frame', async (hello) => ['a.b.c', await srv.welcome(hello)]],
]) {
  test(`${name} is a protocol violation (§8.3)`, async () => {
    srv.onHello = async (hello, send) => {
      for (const f of await first(hello)) send(f);
    };
    const c = await loggedIn();
    const seen = [];
    c.on('direct', (m) => seen.push(m));
    c.on('expiring', (m) => seen.push(m));
    const invalid = [];
    c.on('invalid', (e) => invalid.push(e.code));
    await assert.rejects(c.connect(), (e) => e.code === 'protocol_violation');
    assert.notEqual(c.state, 'open');
    assert.equal(await srv.closed, 1002, 'the client closes with 1002');
    assert.deepEqual(seen, [], 'nothing acted on');
    assert.deepEqual(invalid, ['protocol_violation']);
    c.close();
  });
}

test('an error frame rejecting the hello is not a violation', async () => {
  srv.onHello = async (hello, send, ws) => {
    send(await srv.frame({ act: 'error', body: { code: 'bad_token', message: 'no' } }));
    ws.close(4001, 'bad_token');
  };
  const c = await loggedIn();
  await assert.rejects(c.connect(), (e) => e.code === 'bad_token' && e.closeCode === 4001);
});

test('close 1007 (a text frame that is not UTF-8) does not reconnect (§12.3)', async () => {
  assert.equal(CLOSE[1007].reconnect, 'no');
  srv.onHello = async (hello, send, ws) => {
    send(await srv.welcome(hello));
    setTimeout(() => ws.close(1007, 'invalid UTF-8'), 20);
  };
  const c = new Client({ url: srv.url, WebSocket });
  await c.login('alice', 'pw');
  const out = new Promise((r) => c.on('loggedout', r));
  await c.connect();
  const ev = await out;
  assert.equal(ev.reason, 'closed');
  assert.match(ev.message, /1007/);
});

// The close table is the one of spec §12.3, row for row, like
// TestCloseCodesMatchSpec checks for Go's protocol.CloseCode.
test('CLOSE matches the table of spec §12.3', () => {
  const spec = readFileSync(new URL('../../../spec.md', import.meta.url), 'utf8');
  const start = spec.indexOf('12.3. **Close codes**');
  assert.ok(start >= 0, 'spec.md has no §12.3 close-code table');
  const table = spec.slice(start, spec.indexOf('\n\n', spec.indexOf('|------', start)));
  const rules = {
    no: 'no',
    'no (client bug)': 'no',
    'yes, with backoff': 'backoff',
    'only with a new token': 'new-token',
    'only after refreshing or obtaining a new token': 'refresh',
    'never (re-authenticate as a person)': 'never',
  };
  const rows = [...table.matchAll(/^\| (\d{4}) \| ([^|]+) \| ([^|]+) \|$/gm)];
  assert.ok(rows.length >= 13, `found only ${rows.length} rows in §12.3`);
  const inSpec = new Set();
  for (const [, code, , rule] of rows) {
    inSpec.add(Number(code));
    assert.ok(rule.trim() in rules, `§12.3 ${code}: unknown reconnect column ${rule}`);
    assert.ok(CLOSE[code], `§12.3 lists ${code}; CLOSE does not`);
    assert.equal(CLOSE[code].reconnect, rules[rule.trim()], `${code}: CLOSE says ${CLOSE[code].reconnect}, the spec ${rule.trim()}`);
  }
  // 1006 is the one row of CLOSE that is not in the table: a closure
  // without a close frame, which §12.3 names in its text.
  for (const code of Object.keys(CLOSE).map(Number)) {
    if (code !== 1006) assert.ok(inSpec.has(code), `CLOSE has ${code}; §12.3 does not`);
  }
  // Codes outside the table: any 4xxx means do not reconnect; 1006 and any
  // other 1xxx code, reconnect with backoff.
  assert.equal(closeInfo(1006).reconnect, 'backoff');
  assert.equal(closeInfo(1011).reconnect, 'backoff');
  assert.equal(closeInfo(4100).reconnect, 'no');
  assert.equal(closeInfo(4999).reconnect, 'no');
});

test('a welcome signed by a key rotated since login: the JWKS is fetched again, once (§13.3)', async () => {
  srv.onHello = async (hello, send) => send(await srv.welcome(hello));
  const c = await loggedIn(); // fetched the JWKS just now
  await srv.rotate();
  const w = await c.connect();
  assert.equal(w.sid, srv.sid);
  assert.equal(c.state, 'open');
  c.close();
});
