// Cross-implementation test: a JS client (this package, under Node with the
// `ws` WebSocket) and a Go client (test/goside, on the Go protocol package)
// talk through one `sigil serve --demo`, in both directions, and each
// verifies the other's messages end to end (spec §10.3).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startDemo, buildSigil, repo } from './server.mjs';
import { Client } from '../sigil.js';

const GO = process.env.GO || '/usr/local/go/bin/go';
let srv;

before(async () => {
  srv = await startDemo();
});
after(async () => {
  if (srv) await srv.stop();
});

function goside(args) {
  const bin = join(buildSigil(), '..', 'goside');
  execFileSync(GO, ['build', '-o', bin, './client/js/test/goside'], { cwd: repo, stdio: 'inherit' });
  const child = spawn(bin, args, { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    lines.push(l);
    for (const w of [...waiters]) if (w.re.test(l)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(l);
    }
  });
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  return {
    lines,
    exited,
    child,
    waitFor(re, ms = 20_000) {
      const hit = lines.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = { re, resolve };
        waiters.push(w);
        setTimeout(() => reject(new Error(`go side: no line matching ${re}; got:\n${lines.join('\n')}`)), ms);
      });
    },
  };
}

for (const alg of ['ES256', 'EdDSA']) {
  test(`JS (${alg}) ⇄ Go through one server, verified end to end both ways`, { timeout: 90_000 }, async () => {
    const go = goside(['-url', srv.url, '-user', 'bob', '-password', srv.users.bob, '-peer', 'alice', '-want', '2']);
    await go.waitFor(/^GO READY/);

    const js = new Client({ url: srv.url, WebSocket, alg });
    const invalid = [];
    js.on('invalid', (e) => invalid.push(e));
    const fromGo = [];
    const gotTwo = new Promise((resolve) => js.on('message', (m) => {
      if (m.from === 'bob') {
        fromGo.push(m);
        if (fromGo.length === 2) resolve();
      }
    }));
    await js.login('alice', srv.users.alice);
    await js.connect();
    const members = await js.subscribe('rooms.lobby');
    assert.ok(members.includes('bob'), `members ${members}`);
    await js.publish('rooms.lobby', { text: `hello from JS ${alg}` });
    await js.publish('rooms.lobby', { text: 'ünïcødé ✓ "quoted" \\ back' });

    // Go verified JS's frames…
    const g1 = await go.waitFor(/^GO GOT .*text=hello from JS/);
    assert.match(g1, new RegExp(`from=alice verified=true alg=${alg}`));
    await go.waitFor(/^GO GOT .*ünïcødé ✓ "quoted" \\ back/);
    assert.equal(await go.exited, 0, go.lines.join('\n'));
    // …and JS verified Go's.
    await gotTwo;
    assert.equal(fromGo.length, 2);
    for (const m of fromGo) {
      assert.equal(m.verified, true);
      assert.equal(m.from, 'bob');
      assert.match(m.body.text, /^go heard: /);
    }
    assert.equal(fromGo[0].body.text, `go heard: hello from JS ${alg}`);
    assert.deepEqual(invalid, []);
    js.close();
  });
}
