// The session's rights (spec §8.3): the JS client reads welcome.grants from
// a real `sigil serve --demo` and client.can agrees with what the server
// then accepts or refuses on the same socket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startDemo } from './server.mjs';
import { Client } from '../sigil.js';

let srv;
before(async () => {
  srv = await startDemo();
});
after(async () => {
  if (srv) await srv.stop();
});

test('welcome grants: can() matches the server for a user and an announcer', { timeout: 60_000 }, async () => {
  for (const [user, canAnnounce] of [['bob', false], ['carol', true]]) {
    const c = new Client({ url: srv.url, WebSocket, reconnect: false });
    await c.login(user, srv.users[user]);
    const w = await c.connect();
    assert.ok(Array.isArray(w.grants) && w.grants.length > 0, `welcome grants ${JSON.stringify(w.grants)}`);
    assert.equal(c.can('dm'), true);
    assert.equal(c.can('sub', 'rooms.lobby'), true);
    assert.equal(c.can('sub', 'secret.x'), false);
    assert.equal(c.can('pub', 'announce.news'), canAnnounce);
    const pub = await c.publish('announce.news', { text: `from ${user}` }).then(() => 'ok', (e) => e.code);
    assert.equal(pub, canAnnounce ? 'ok' : 'forbidden');
    const sub = await c.subscribe('secret.x').then(() => 'ok', (e) => e.code);
    assert.equal(sub, 'forbidden');
    c.close();
  }
});
