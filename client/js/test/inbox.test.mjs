// Direct messages on the inbox stream in the JS client (spec.md §20.11),
// against a real `sigil serve --demo` (every inbox keeps 100 dms).
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


test('a JS client away gets every dm sent meanwhile, in order, once, verified', { timeout: 90_000 }, async () => {
  const alice = new Client({ url: srv.url, WebSocket });
  const bob = new Client({ url: srv.url, WebSocket });
  const got = [];
  const gaps = [];
  const invalid = [];
  bob.on('direct', (m) => got.push(m));
  bob.on('gap', (g) => gaps.push(g));
  bob.on('invalid', (e) => invalid.push(e));
  await alice.login('alice', srv.users.alice);
  await alice.connect();
  await bob.login('bob', srv.users.bob);
  const wb = await bob.connect();
  assert.deepEqual(wb.inbox, { epoch: wb.inbox.epoch, offset: 0 });
  await alice.dm('bob', { n: 0 });
  await eventually('the live dm', () => got.length === 1);

  // bob is away: his connection drops and cannot come back until alice
  // has sent (the reconnect is held by a failing WebSocket).
  const RealWS = bob.WS;
  let away = true;
  bob.WS = class extends RealWS {
    constructor(...a) {
      super(...(away ? ['ws://127.0.0.1:1/'] : a));
    }
  };
  const states = [];
  bob.on('state', (s) => states.push(s));
  bob.ws.terminate();
  await eventually('bob to notice', () => states.includes('reconnecting'));
  for (let i = 1; i <= 10; i++) await alice.dm('bob', { n: i }); // accepted: stored
  away = false;
  await eventually('the missed dms', () => got.length === 11);
  await alice.dm('bob', { n: 11 });
  await eventually('the live one after', () => got.length === 12);

  assert.deepEqual(got.map((m) => m.body.n), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  got.forEach((m, i) => {
    assert.equal(m.verified, true);
    assert.equal(m.from, 'alice');
    assert.equal(m.kind, 'direct');
    assert.deepEqual(m.position, { epoch: wb.inbox.epoch, offset: i + 1 });
  });
  assert.deepEqual(gaps, []);
  assert.deepEqual(invalid, []);

  // Paging the inbox: the newest 3, verified.
  const page = await bob.inboxHistory({ limit: 3 });
  assert.equal(page.top, 12);
  assert.equal(page.more, true);
  assert.deepEqual(page.messages.map((m) => [m.body.n, m.verified, m.position.offset]), [[9, true, 10], [10, true, 11], [11, true, 12]]);
  // Another user's inbox is not readable.
  await assert.rejects(alice.call('history', { to: 'bob' }), (e) => e.code === 'forbidden');

  // A new page load resumes a saved position with inboxSince.
  const saved = got[got.length - 1].position;
  bob.close();
  await alice.dm('bob', { n: 12 });
  const bob2 = new Client({ url: srv.url, WebSocket, inboxSince: saved });
  const got2 = [];
  bob2.on('direct', (m) => got2.push(m));
  await bob2.login('bob', srv.users.bob);
  const wb2 = await bob2.connect();
  assert.equal(wb2.inbox_recovered, true);
  await eventually('the dm sent between the two pages', () => got2.length === 1);
  assert.deepEqual([got2[0].body.n, got2[0].verified, got2[0].position.offset], [12, true, 13]);

  // A position of another epoch cannot be recovered: a gap, reported.
  const bob3 = new Client({ url: srv.url, WebSocket, inboxSince: { epoch: 'gone', offset: 2 } });
  const gaps3 = [];
  bob3.on('gap', (g) => gaps3.push(g));
  await bob3.login('bob', srv.users.bob);
  await bob3.connect();
  assert.deepEqual(gaps3, [{ ch: null, inbox: true, from: { epoch: 'gone', offset: 2 }, to: { epoch: wb.inbox.epoch, offset: 13 } }]);
  for (const c of [alice, bob2, bob3]) c.close();
});
