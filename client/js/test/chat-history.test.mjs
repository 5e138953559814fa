// Real-browser test of the chat's history (issues 12 and 15): Debian
// chromium driven by playwright-core against a real `sigil serve --demo`
// (in-memory history engine). Nothing is mocked.
//
//   alice posts in the lobby; bob logs in and sees those messages (read with
//   the history action, each verified in his browser), then a live one, once
//   each; he reloads the page and sees them again, the client resuming with
//   `since` from the position kept in sessionStorage; a message posted while
//   his tab was away is recovered; the server restarts (an in-memory stream
//   gets a new epoch), and the room marks the gap that could not be
//   recovered.
//
// The screenshot after the reload goes to artifacts/chat-history.png; with
// UPDATE_SCREENSHOTS=1 it is also copied to docs/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDemo, artifacts, launchChromium, buildSigil, repo } from './server.mjs';
import { watchPage, signIn as logIn, sendText as send } from './chatpage.mjs';

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
});

function watch(page) {
  watchPage(page);
  // Every sub frame the page sends, decoded (its JWS payload), to see
  // whether it resumed with since.
  page.subs = [];
  page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => {
    try {
      const env = JSON.parse(Buffer.from(String(payload).split('.')[1], 'base64url').toString());
      if (env.act === 'sub') page.subs.push(env);
    } catch {
      // not a frame of ours
    }
  }));
  return page;
}


const rows = (page) => page.$$eval('#messages > li', (els) => els.map((e) => (e.classList.contains('gap') ? 'GAP' : e.classList.contains('msg') ? `${e.dataset.verified === 'true' ? '' : '!'}${e.querySelector('.text').textContent}` : null)).filter(Boolean));
const saved = (page) => page.evaluate(() => {
  const k = Object.keys(sessionStorage).find((x) => x.endsWith('.rooms.lobby'));
  return k ? JSON.parse(sessionStorage.getItem(k)) : null;
});

test('history: the room shows its recent messages on join and after a reload; a restart\'s gap is marked', { timeout: 90_000 }, async () => {
  // A fixed signing key, so that sessions outlive the restart.
  const dir = mkdtempSync(join(tmpdir(), 'sigil-chathist-'));
  const keyFile = join(dir, 'server.jwk');
  execFileSync(buildSigil(), ['keygen', '--out', keyFile]);
  let s1 = await startDemo(['--key-files', keyFile]);
  let s2;
  const aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const bobCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  try {
    const alice = watch(await aliceCtx.newPage());
    await alice.goto(s1.url + '/');
    await logIn(alice, s1, 'alice');
    const posted = ['First, before bob came.', 'Second, before bob came.', 'Third, before bob came.'];
    for (const t of posted) {
      await send(alice, t);
      await alice.waitForSelector(`.msg[data-from="alice"][data-verified="true"] >> text=${t}`);
    }

    // bob joins: the three, read from the history, verified, in order.
    const bob = watch(await bobCtx.newPage());
    await bob.goto(s1.url + '/');
    await logIn(bob, s1, 'bob');
    await bob.waitForFunction(() => document.querySelectorAll('#messages .msg.history').length === 3);
    assert.deepEqual(await rows(bob), posted);
    assert.equal(await bob.$$eval('#messages .msg.history[data-verified="true"] .mark', (x) => x.length), 3);
    // Its position is in the details panel.
    await bob.click('#messages .msg >> nth=0 >> .mark');
    const epoch = (await bob.textContent('#details .position')).match(/^1 \(epoch ([A-Za-z0-9_-]+)\)$/)?.[1];
    assert.ok(epoch, 'the first message is at offset 1 of the stream');
    await bob.click('#details-close');
    // A live one follows, once.
    await alice.waitForSelector('#presence li[data-sub="bob"]');
    await send(alice, 'Fourth, live.');
    await bob.waitForSelector('.msg[data-verified="true"] >> text=Fourth, live.');
    assert.deepEqual(await rows(bob), [...posted, 'Fourth, live.']);
    assert.deepEqual(await saved(bob), { epoch, offset: 4 });

    // A reload: the messages are back, and the client resumed with since.
    bob.subs.length = 0;
    await bob.reload();
    await logIn(bob, s1, 'bob');
    await bob.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 4);
    assert.deepEqual(await rows(bob), [...posted, 'Fourth, live.']);
    assert.deepEqual(bob.subs.find((e) => e.ch === 'rooms.lobby')?.body, { since: { epoch, offset: 4 } });
    await bob.waitForSelector('#presence li[data-sub="alice"]');
    const shot = join(artifacts, 'chat-history.png');
    await bob.screenshot({ path: shot });
    if (process.env.UPDATE_SCREENSHOTS) copyFileSync(shot, join(repo, 'docs', 'screenshots', 'chat-history.png'));

    // The tab goes elsewhere; alice posts; back, the missed one is recovered
    // with since (a history frame on the sub), after the others.
    await bob.goto('about:blank');
    await send(alice, 'Fifth, while bob was away.');
    await alice.waitForSelector('.msg[data-verified="true"] >> text=Fifth, while bob was away.');
    await bob.goto(s1.url + '/');
    await logIn(bob, s1, 'bob');
    await bob.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 5);
    assert.deepEqual(await rows(bob), [...posted, 'Fourth, live.', 'Fifth, while bob was away.']);
    assert.deepEqual(await saved(bob), { epoch, offset: 5 });
    assert.equal(await bob.$('#messages .gap'), null, 'nothing was lost');

    // The server restarts: its in-memory history is gone and its stream has
    // a new epoch. On reconnect the client resubscribes with since, is told
    // recovered: false, and the room says so.
    const addr = new URL(s1.url).host;
    await s1.stop();
    s1 = null;
    s2 = await startDemo(['--key-files', keyFile, '--addr', addr]);
    await bob.waitForSelector('#messages .gap', { timeout: 30_000 });
    assert.match(await bob.textContent('#messages .gap'), /some messages could not be recovered/);
    assert.deepEqual(await rows(bob), [...posted, 'Fourth, live.', 'Fifth, while bob was away.', 'GAP']);
    await bob.waitForFunction((e) => {
      const k = Object.keys(sessionStorage).find((x) => x.endsWith('.rooms.lobby'));
      return k && JSON.parse(sessionStorage.getItem(k)).epoch !== e;
    }, epoch);
    for (const p of [alice, bob]) assert.deepEqual(p.problems.filter((x) => !/WebSocket|Failed to load resource/.test(x)), []);
  } finally {
    await aliceCtx.close();
    await bobCtx.close();
    if (s1) await s1.stop();
    if (s2) await s2.stop();
  }
});
