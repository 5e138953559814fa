// Cross-implementation test across a cluster: a real browser (Chromium,
// the browser client from /js/sigil.js) on node A and a Go client
// (test/goside) on node B, two `sigil serve` processes that share one Redis
// (spec §19). Each verifies the other's messages end to end (§10.3): the
// deliver frame was signed by the node the recipient is on, the inner frame
// by the sender's session key, whatever node it was sent to.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { buildSigil, repo, launchChromium } from './server.mjs';

const GO = process.env.GO || '/usr/local/go/bin/go';
const procs = [];
let dir;
let redisPort;
const pw = { alice: randomBytes(12).toString('base64url'), bob: randomBytes(12).toString('base64url') };

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// lines runs a process and lets the test wait for a line of its stdout.
function lines(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  procs.push(child);
  const got = [];
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    got.push(l);
    for (const w of [...waiters]) if (w.re.test(l)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(l);
    }
  });
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  return {
    child,
    got,
    exited,
    waitFor(re, ms = 60_000) {
      const hit = got.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = { re, resolve };
        waiters.push(w);
        exited.then((code) => reject(new Error(`${cmd} exited ${code} before ${re}:\n${got.join('\n')}\n${err}`)));
        setTimeout(() => reject(new Error(`${cmd}: no line matching ${re}:\n${got.join('\n')}\n${err}`)), ms);
      });
    },
  };
}

async function startNode(name) {
  const n = lines(buildSigil(), ['serve', '--addr', '127.0.0.1:0', '--data-dir', join(dir, 'data'),
    '--redis', `redis://127.0.0.1:${redisPort}`, '--node', name]);
  const ready = await n.waitFor(/SIGIL_READY url=/);
  return { ...n, url: ready.match(/url=(\S+)/)[1] };
}

let nodeA;
let nodeB;
before(async () => {
  for (const tool of ['redis-server']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`]);
    } catch {
      assert.fail(`${tool} is missing: apt-get install -y redis-server`);
    }
  }
  dir = mkdtempSync(join(tmpdir(), 'sigil-cluster-js-'));
  redisPort = await freePort();
  const redis = lines('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await redis.waitFor(/Ready to accept connections/);
  const sigil = buildSigil();
  execFileSync(sigil, ['keygen', '--data-dir', join(dir, 'data')], { stdio: 'ignore' });
  for (const [name, roles] of [['alice', 'user'], ['bob', 'user']]) {
    execFileSync(sigil, ['user', 'add', '--users', join(dir, 'data', 'users.json'), '--roles', roles, name], { input: `${pw[name]}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
  }
  // One after the other: the first creates the cluster secret.
  nodeA = await startNode('nodeA');
  nodeB = await startNode('nodeB');
});

after(async () => {
  for (const p of procs.reverse()) {
    if (p.exitCode === null) {
      p.kill('SIGTERM');
      await new Promise((r) => p.on('exit', r));
    }
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a browser on node A and a Go client on node B, verified end to end both ways', { timeout: 180_000 }, async () => {
  assert.notEqual(nodeA.url, nodeB.url);
  const bin = join(buildSigil(), '..', 'goside');
  execFileSync(GO, ['build', '-o', bin, './client/js/test/goside'], { cwd: repo, stdio: 'inherit' });
  const go = lines(bin, ['-url', nodeB.url, '-user', 'bob', '-password', pw.bob, '-peer', 'alice', '-want', '2']);
  await go.waitFor(/^GO READY/);

  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.goto(nodeA.url + '/healthz');
    const members = await page.evaluate(async ({ password }) => {
      const { Client } = await import('/js/sigil.js');
      const c = new Client({ url: location.origin });
      window.got = [];
      window.invalid = [];
      c.on('message', (m) => window.got.push({ from: m.from, verified: m.verified, text: m.body && m.body.text }));
      c.on('invalid', (e) => window.invalid.push(String(e && (e.code || e.message || e))));
      await c.login('alice', password);
      await c.connect();
      const ms = await c.subscribe('rooms.lobby');
      await c.publish('rooms.lobby', { text: 'hello from the browser on node A' });
      await c.publish('rooms.lobby', { text: 'second, ünïcødé ✓' });
      window.sigilClient = c;
      return ms;
    }, { password: pw.alice });
    assert.ok(members.includes('bob'), `presence across nodes: members ${members}`);

    // Go on node B verified the browser's frames…
    const g1 = await go.waitFor(/^GO GOT .*text=hello from the browser on node A/);
    assert.match(g1, /from=alice verified=true alg=ES256/);
    await go.waitFor(/^GO GOT .*second, ünïcødé ✓/);
    assert.equal(await go.exited, 0, go.got.join('\n'));
    // …and the browser on node A verified Go's.
    await page.waitForFunction(() => window.got.filter((m) => m.from === 'bob').length >= 2, null, { timeout: 60_000 });
    const fromGo = await page.evaluate(() => window.got.filter((m) => m.from === 'bob'));
    for (const m of fromGo) {
      assert.equal(m.verified, true);
      assert.match(m.text, /^go heard: /);
    }
    assert.equal(fromGo[0].text, 'go heard: hello from the browser on node A');
    assert.deepEqual(await page.evaluate(() => window.invalid), []);
    await page.evaluate(() => window.sigilClient.close());
  } finally {
    await browser.close();
  }
});
