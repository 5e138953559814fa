// History and recovery in the browser client (spec.md §20), against a real
// `sigil serve --demo` (rooms.> keeps 100 messages).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startDemo, eventually } from './server.mjs';
import { Client } from '../sigil.js';

let srv;
before(async () => {
  srv = await startDemo();
});
after(async () => {
  await srv.stop();
});


test('a JS client that drops recovers what it missed, in order, once, verified', { timeout: 90_000 }, async () => {
  const alice = new Client({ url: srv.url, WebSocket });
  const bob = new Client({ url: srv.url, WebSocket });
  const got = [];
  const gaps = [];
  const invalid = [];
  alice.on('message', (m) => got.push(m));
  alice.on('gap', (g) => gaps.push(g));
  alice.on('invalid', (e) => invalid.push(e));
  await alice.login('alice', srv.users.alice);
  await alice.connect();
  await bob.login('bob', srv.users.bob);
  await bob.connect();
  await alice.subscribe('rooms.jshist');
  for (let i = 0; i < 3; i++) await bob.publish('rooms.jshist', { n: i });
  await eventually('3 live messages', () => got.length === 3);

  const states = [];
  alice.on('state', (s) => states.push(s));
  alice.ws.terminate(); // a dropped connection (1006): the client reconnects
  await eventually('alice to notice', () => states.includes('reconnecting'));
  for (let i = 3; i < 8; i++) await bob.publish('rooms.jshist', { n: i });
  await eventually('the missed messages', () => got.length === 8);
  await bob.publish('rooms.jshist', { n: 8 });
  await eventually('the live one after', () => got.length === 9);

  assert.deepEqual(got.map((m) => m.body.n), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  const epoch = got[0].position.epoch;
  got.forEach((m, i) => {
    assert.equal(m.verified, true);
    assert.equal(m.from, 'bob');
    assert.deepEqual(m.position, { epoch, offset: i + 1 });
  });
  assert.deepEqual(gaps, []);
  assert.deepEqual(invalid, []);

  // The history action: the last 4, then the 2 before them.
  const last = await alice.history('rooms.jshist', { limit: 4 });
  assert.equal(last.top, 9);
  assert.equal(last.more, true);
  assert.deepEqual(last.messages.map((m) => m.body.n), [5, 6, 7, 8]);
  const older = await alice.history('rooms.jshist', { limit: 2, before: last.messages[0].position.offset });
  assert.deepEqual(older.messages.map((m) => [m.body.n, m.verified]), [[3, true], [4, true]]);

  // A position from another epoch cannot be recovered: a gap, reported.
  const carol = new Client({ url: srv.url, WebSocket });
  const carolGaps = [];
  carol.on('gap', (g) => carolGaps.push(g));
  await carol.login('carol', srv.users.carol);
  await carol.connect();
  await carol.subscribe('rooms.jshist', { since: { epoch: 'gone', offset: 2 } });
  assert.deepEqual(carolGaps, [{ ch: 'rooms.jshist', from: { epoch: 'gone', offset: 2 }, to: { epoch, offset: 9 } }]);
  for (const c of [alice, bob, carol]) c.close();
});

test('a tampered stored frame is rejected', { timeout: 60_000 }, async () => {
  const alice = new Client({ url: srv.url, WebSocket });
  await alice.login('alice', srv.users.alice);
  await alice.connect();
  await alice.publish('rooms.tamper', { n: 1 });
  const page = await alice.history('rooms.tamper', { limit: 1 });
  assert.equal(page.messages.length, 1);
  // Re-read the raw frame and edit one character of its payload.
  const r = await alice.call('history', { ch: 'rooms.tamper', body: { limit: 1 } });
  const [h, p, s] = r.frames[0].split('.');
  const edited = `${h}.${p.slice(0, 20)}${p[20] === 'A' ? 'B' : 'A'}${p.slice(21)}.${s}`;
  await assert.rejects(alice.verifier.verifyStored(edited, 'rooms.tamper'), (e) => ['bad_signature', 'malformed', 'bad_claims'].includes(e.code));
  await assert.rejects(alice.verifier.verifyStored(r.frames[0], 'rooms.other'), (e) => e.code === 'wrong_session');
  alice.close();
});

test('a publish whose connection drops resolves exactly when it was delivered once', { timeout: 90_000 }, async () => {
  const alice = new Client({ url: srv.url, WebSocket });
  const bob = new Client({ url: srv.url, WebSocket });
  const got = [];
  alice.on('message', (m) => got.push(m.body.n));
  await alice.login('alice', srv.users.alice);
  await alice.connect();
  await alice.subscribe('rooms.once');
  await bob.login('bob', srv.users.bob);
  await bob.connect();
  const cut = async (i, prepare, before) => {
    const states = [];
    const off = bob.on('state', (s) => states.push(s));
    prepare(bob.ws);
    const p = bob.publish('rooms.once', { n: i }).then(() => 'accepted', (e) => e.code);
    await before();
    bob.ws.terminate();
    const o = await p;
    await eventually('bob to be back', () => states.includes('open'));
    off();
    return o;
  };
  // 1. The frame never reaches the server: the copy sent after the
  //    reconnection is answered replay_seq, certainly not accepted, and
  //    the message is sent again as a new frame, delivered once.
  const lost = await cut(1, (ws) => { ws.send = () => {}; }, () => eventually('the frame to be pending', () => bob.unacked.size === 1));
  assert.equal(lost, 'accepted');
  // 2. Accepted and delivered, the reply lost: the copy is answered
  //    {duplicate: true}, and not delivered again.
  const replyLost = await cut(2, (ws) => { ws.onmessage = () => {}; }, () => eventually('alice to get it', () => got.includes(2)));
  assert.equal(replyLost, 'accepted');
  await bob.publish('rooms.once', { n: 99 });
  await eventually('the marker', () => got.includes(99));
  assert.deepEqual(got, [1, 2, 99]);
  for (const c of [alice, bob]) c.close();
});
