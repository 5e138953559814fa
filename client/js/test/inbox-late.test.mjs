// A live stored direct frame that reaches the JS client after its
// freshness window (queued behind a long inbox recovery, for example) is
// taken when it carries the inbox's next offset, as a channel's deliver
// is (spec.md §20.4, §20.11), against a real `sigil serve --demo`.
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


test('a stale direct frame at the inbox next offset is delivered; a stale copy of one already received is not', { timeout: 60_000 }, async (t) => {
  const alice = new Client({ url: srv.url, WebSocket });
  const frames = []; // the server frames bob's socket receives, byte for byte
  const RealWS = WebSocket;
  const bob = new Client({
    url: srv.url,
    WebSocket: class extends RealWS {
      constructor(...a) {
        super(...a);
        this.on('message', (d) => frames.push(d.toString('utf8')));
      }
    },
  });
  t.after(() => {
    for (const c of [alice, bob]) c.close(); // also when an assertion failed
  });
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
  await alice.dm('bob', { n: 0 });
  await eventually('the fresh dm', () => got.length === 1);
  const first = frames.find((f) => f.split('.').length === 3 && JSON.parse(Buffer.from(f.split('.')[1], 'base64url')).act === 'direct');
  assert.ok(first, 'the direct frame of the first dm');

  // Bob's clock runs ahead by more than the freshness window: every frame
  // the server signs from now on is stale when he receives it, as a live
  // frame held behind a long recovery is.
  bob.offset += bob.skewMs + 15_000;
  await alice.dm('bob', { n: 1 });
  await eventually('the stale dm to be taken or refused', () => got.length === 2 || invalid.length > 0);
  assert.deepEqual(invalid, []);
  assert.equal(got[1].verified, true);
  assert.equal(got[1].from, 'alice');
  assert.equal(got[1].body.n, 1);
  assert.deepEqual(got[1].position, { epoch: wb.inbox.epoch, offset: got[0].position.offset + 1 });

  // The first dm's frame again, stale now and at an offset bob already
  // has: refused, not delivered twice.
  bob.ws.emit('message', Buffer.from(first), false);
  await eventually('the stale copy to be refused', () => invalid.length > 0);
  assert.equal(invalid[0].code, 'stale');
  assert.equal(got.length, 2);
  assert.deepEqual(gaps, []);
});
