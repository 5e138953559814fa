// Real-browser test of the chat's direct-message history (issue 12, spec.md
// §20.11): Debian chromium driven by playwright-core against a real `sigil
// serve --demo` (its default policy keeps each user's inbox). Nothing is
// mocked.
//
//   bob signs in once, then his tab goes away; alice writes him two direct
//   messages; bob comes back and finds them in the conversation with alice,
//   each verified in his browser, and again after a reload of the page.
//
// The screenshot after the reload goes to artifacts/chat-dm-history.png;
// with UPDATE_SCREENSHOTS=1 it is also copied to docs/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { copyFileSync } from 'node:fs';
import { startDemo, artifacts, launchChromium, repo } from './server.mjs';
import { watchPage as watch, signIn, sendText as send } from './chatpage.mjs';

let browser;
let srv;

before(async () => {
  browser = await launchChromium();
  srv = await startDemo();
});

after(async () => {
  if (browser) await browser.close();
  if (srv) await srv.stop();
});

const logIn = (page, user) => signIn(page, srv, user);


const texts = (page) => page.$$eval('#messages .msg', (els) => els.map((e) => `${e.dataset.verified === 'true' ? '' : '!'}${e.querySelector('.text').textContent}`));

test('direct messages sent while the recipient was away are shown when it comes back, and after a reload', { timeout: 90_000 }, async () => {
  const aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const bobCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  try {
    const bob = watch(await bobCtx.newPage());
    await bob.goto(srv.url + '/');
    await logIn(bob, 'bob'); // his inbox exists from now on
    await bob.goto('about:blank'); // and he goes away

    const alice = watch(await aliceCtx.newPage());
    await alice.goto(srv.url + '/');
    await logIn(alice, 'alice');
    await alice.click('#new-dm');
    await alice.fill('#dm-to', 'bob');
    await alice.press('#dm-to', 'Enter');
    const sent = ['Are you there?', 'Read this when you are back.'];
    for (const t of sent) {
      await send(alice, t);
      await alice.waitForSelector(`.msg.local[data-state="sent"] >> text=${t}`);
    }

    // bob comes back: the conversation with alice has both, verified.
    await bob.goto(srv.url + '/');
    await logIn(bob, 'bob');
    await bob.waitForSelector('#dms li[data-peer="alice"]');
    await bob.click('#dms li[data-peer="alice"] .room-name');
    await bob.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 2);
    assert.deepEqual(await texts(bob), sent);

    // A reload: still there.
    await bob.reload();
    await logIn(bob, 'bob');
    await bob.waitForSelector('#dms li[data-peer="alice"]');
    await bob.click('#dms li[data-peer="alice"] .room-name');
    await bob.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 2);
    assert.deepEqual(await texts(bob), sent);
    const shot = join(artifacts, 'chat-dm-history.png');
    await bob.screenshot({ path: shot });
    if (process.env.UPDATE_SCREENSHOTS) copyFileSync(shot, join(repo, 'docs', 'screenshots', 'chat-dm-history.png'));
    assert.deepEqual([...alice.problems, ...bob.problems], []);
  } finally {
    await aliceCtx.close();
    await bobCtx.close();
  }
});
