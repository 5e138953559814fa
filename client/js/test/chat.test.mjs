// Real-browser tests of the chat as a daily tool (issue 15): Debian chromium
// driven by playwright-core against real `sigil serve --demo` processes on
// random ports. Nothing is mocked: the server is restarted for real.
//
//   1. Direct messages: a conversation beside the rooms, unread counts, never
//      inside a room; a DM to someone offline is marked not delivered.
//   2. Rights: the welcome's grants disable the composer of the read-only
//      room, with the reason; an announcer gets it enabled.
//   3. Reading: grouping, safe links (no HTML injection), the length
//      counter, no mid-word breaks, the quiet verified mark and its details
//      panel, history pre-fill with a gap marker.
//   4. Dark mode (prefers-color-scheme) and mobile (switch label, drawer
//      backdrop).
//   5. Connection state: the server restarts; the banner says
//      "reconnecting…" with the retry time, presence dots go grey, a message
//      typed meanwhile is sent on reconnect, and no toast shows a raw code.
//
// Screenshots go to artifacts/; with UPDATE_SCREENSHOTS=1 they are also
// copied to docs/screenshots/ (kept in the repository).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDemo, artifacts, launchChromium, buildSigil, repo } from './server.mjs';
import { watchPage as watch, signIn, sendText as send } from './chatpage.mjs';

let browser;
let srv;

before(async () => {
  srv = await startDemo();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (srv) await srv.stop();
});

async function shot(page, name) {
  const path = join(artifacts, `chat-${name}.png`);
  await page.screenshot({ path });
  if (process.env.UPDATE_SCREENSHOTS) copyFileSync(path, join(repo, 'docs', 'screenshots', `chat-${name}.png`));
}

function noProblems(...pages) {
  for (const p of pages) assert.deepEqual(p.problems.filter((x) => !/WebSocket|Failed to load resource/.test(x)), []);
}

async function logIn(ctx, server, user) {
  const page = watch(await ctx.newPage());
  await page.goto(server.url + '/');
  await signIn(page, server, user);
  return page;
}


const texts = (page, sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent));

test('direct messages: a conversation beside the rooms, with unread counts, never inside a room', { timeout: 90_000 }, async () => {
  const aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const bobCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const alice = await logIn(aliceCtx, srv, 'alice');
  const bob = await logIn(bobCtx, srv, 'bob');
  await alice.waitForSelector('#presence li[data-sub="bob"]');
  await bob.waitForSelector('#presence li[data-sub="alice"]');

  // bob opens a conversation with alice from the presence list and writes.
  await bob.click('#presence li[data-sub="alice"] .dm-button');
  assert.equal(await bob.textContent('#room-title'), '@alice');
  await send(bob, 'Psst, a direct one.');
  await bob.waitForSelector('.msg.local[data-state="sent"] >> text=Psst, a direct one.');
  assert.match(await bob.textContent('.msg.local .status'), /Delivered to alice/);
  assert.equal(await bob.$eval('.msg.local', (e) => e.dataset.verified), 'false', 'our own copy claims no verification');

  // alice, in the lobby, gets an unread count on the conversation; the
  // message is not in the lobby.
  await alice.waitForSelector('#dms li[data-peer="bob"] .unread');
  assert.equal(await alice.textContent('#dms li[data-peer="bob"] .unread'), '1');
  assert.equal(await alice.textContent('#room-title'), '#lobby');
  assert.ok(!(await alice.textContent('#messages')).includes('Psst'), 'the direct message is not shown in the room');
  await shot(alice, 'dm-unread');

  // A second one while she is elsewhere: the count grows; opening clears it.
  await send(bob, 'And a second.');
  await alice.waitForFunction(() => document.querySelector('#dms li[data-peer="bob"] .unread')?.textContent === '2');
  await alice.click('#dms li[data-peer="bob"] .room-name');
  assert.equal(await alice.textContent('#room-title'), '@bob');
  await alice.waitForSelector('.msg[data-from="bob"][data-verified="true"] >> text=Psst, a direct one.');
  assert.equal(await alice.$('#dms li[data-peer="bob"] .unread'), null);
  // Consecutive messages of one sender are grouped.
  const rows = await alice.$$eval('#messages .msg', (els) => els.map((e) => ({ from: e.dataset.from, grouped: e.classList.contains('grouped') })));
  assert.deepEqual(rows, [{ from: 'bob', grouped: false }, { from: 'bob', grouped: true }]);
  assert.match(await alice.getAttribute('#message-input', 'placeholder'), /Message @bob/);

  assert.deepEqual(await bob.$$eval('#messages .msg', (els) => els.map((e) => e.classList.contains('grouped'))), [false, true]);
  // alice answers; bob (still in the conversation) sees it verified, and his
  // room list got no unread count from it.
  await send(alice, 'Got it, thanks.');
  await bob.waitForSelector('.msg[data-from="alice"][data-verified="true"] >> text=Got it, thanks.');
  assert.equal(await bob.$('#rooms .unread'), null);
  await shot(bob, 'dm-conversation');

  // To someone who is not online: marked not delivered, in words.
  await alice.click('#new-dm');
  await alice.fill('#dm-to', 'carol');
  await alice.press('#dm-to', 'Enter');
  assert.equal(await alice.textContent('#room-title'), '@carol');
  await send(alice, 'Are you there?');
  await alice.waitForSelector('.msg.local[data-state="failed"]');
  const status = await alice.textContent('.msg.local[data-state="failed"] .status');
  assert.match(status, /carol is not online/);
  assert.doesNotMatch(status, /not_found/);
  assert.ok(await alice.isVisible('.msg.local[data-state="failed"] .retry'));
  noProblems(alice, bob);
  await aliceCtx.close();
  await bobCtx.close();
});

test('rights: the read-only room has its composer disabled with the reason; an announcer may post', { timeout: 60_000 }, async () => {
  const bobCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const carolCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const bob = await logIn(bobCtx, srv, 'bob');
  const carol = await logIn(carolCtx, srv, 'carol');
  // The grants came with the welcome (spec §8.3).
  assert.equal(await bob.evaluate(() => window.sigilChat.client.can('pub', 'announce.news')), false);
  assert.equal(await carol.evaluate(() => window.sigilChat.client.can('pub', 'announce.news')), true);
  assert.match(await bob.textContent('#rooms li[data-ch="announce.news"]'), /read-only/);
  assert.doesNotMatch(await carol.textContent('#rooms li[data-ch="announce.news"]'), /read-only/);

  for (const p of [bob, carol]) {
    await p.click('#rooms li[data-ch="announce.news"] .join-toggle');
    await p.waitForSelector('#rooms li.joined[data-ch="announce.news"]');
  }
  assert.equal(await bob.isDisabled('#message-input'), true);
  assert.equal(await bob.isDisabled('#send-button'), true);
  assert.ok(await bob.isVisible('#composer-reason'));
  assert.match(await bob.textContent('#composer-reason'), /#news is read-only for you/);
  await shot(bob, 'read-only');

  assert.equal(await carol.isDisabled('#message-input'), false);
  assert.ok(await carol.isHidden('#composer-reason'));
  await send(carol, 'Announcement: the chat has direct messages.');
  await bob.waitForSelector('.msg[data-from="carol"][data-verified="true"] >> text=the chat has direct messages');
  // Back in a writable room, bob's composer is enabled again.
  await bob.click('#rooms li[data-ch="rooms.lobby"] .room-name');
  assert.equal(await bob.isDisabled('#message-input'), false);
  assert.ok(await bob.isHidden('#composer-reason'));
  noProblems(bob, carol);
  await bobCtx.close();
  await carolCtx.close();
});

test('reading: safe links, length counter, no mid-word breaks, quiet mark, details panel, history with a gap', { timeout: 90_000 }, async () => {
  const aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const bobCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const alice = await logIn(aliceCtx, srv, 'alice');
  const bob = await logIn(bobCtx, srv, 'bob');
  await alice.click('#rooms li[data-ch="rooms.random"] .join-toggle');
  await bob.click('#rooms li[data-ch="rooms.random"] .join-toggle');
  await alice.waitForSelector('#presence li[data-sub="bob"]');
  await bob.evaluate(() => {
    window.got = [];
    window.sigilChat.client.on('message', (m) => window.got.push(m));
  });

  // Safe links: an http(s) URL becomes a link; markup stays text.
  const hostile = '<img src=x onerror="window.pwned=1"> see https://example.com/a?b=1&c=<b>. and javascript:alert(1)';
  await send(alice, hostile);
  const msg = '.msg[data-from="alice"][data-verified="true"]';
  await bob.waitForSelector(`${msg} .text a.link`);
  const link = await bob.$eval(`${msg} .text a.link`, (a) => ({ href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target }));
  assert.deepEqual(link, { href: 'https://example.com/a?b=1&c=', text: 'https://example.com/a?b=1&c=', rel: 'noopener noreferrer nofollow', target: '_blank' });
  assert.equal(await bob.$$eval('#messages img, #messages b, #messages script', (x) => x.length), 0, 'no element from the message text');
  assert.equal(await bob.textContent(`${msg} .text`), hostile, 'the text is shown as written');
  assert.equal(await bob.evaluate(() => window.pwned), undefined);
  assert.equal(await bob.$$eval(`${msg} .text a`, (x) => x.length), 1, 'javascript: is not a link');

  // Grouping: two more from alice follow as one group; the quiet mark is on
  // every message, without the old sentence.
  await send(alice, 'A key that is non-extractable stays in the browser that made it, word for word.');
  await send(alice, 'Third in a row.');
  await bob.waitForSelector(`${msg} >> text=Third in a row.`);
  const group = await bob.$$eval('#messages .msg', (els) => els.map((e) => e.classList.contains('grouped')));
  assert.deepEqual(group, [false, true, true]);
  assert.equal(await bob.$$eval('#messages .msg .mark', (x) => x.length), 3);
  assert.doesNotMatch(await bob.textContent('#messages'), /signature verified in this browser/);

  // No mid-word breaks: at a wide and a narrow width, each word of a
  // wrapped message and of the key line stays on one line.
  for (const width of [1200, 400]) {
    await bob.setViewportSize({ width, height: 760 });
    const broken = await bob.evaluate(() => {
      const out = [];
      const check = (node) => {
        const text = node.textContent;
        let i = 0;
        // A line may end after a space or a hyphen ("non-" then
        // "extractable" is fine typography); never inside a part.
        for (const w of text.split(/(\s+|(?<=-))/)) {
          if (w && w.trim() && w.length < 20) {
            const r = document.createRange();
            r.setStart(node, i);
            r.setEnd(node, i + w.length);
            const lines = new Set([...r.getClientRects()].map((x) => Math.round(x.top)));
            if (lines.size > 1) out.push(w);
          }
          i += w ? w.length : 0;
        }
      };
      for (const t of document.querySelectorAll('#messages .text')) for (const n of t.childNodes) if (n.nodeType === 3) check(n);
      check(document.getElementById('key-info').firstChild);
      return out;
    });
    assert.deepEqual(broken, [], `words broken across lines at ${width} px`);
  }
  await bob.setViewportSize({ width: 1200, height: 760 });

  // The details panel: signer, full key thumbprint, time, the stream
  // position (the demo keeps a history of rooms.>); no log index from this
  // server (not announced yet).
  await bob.click(`${msg} >> nth=1 >> .mark`);
  await bob.waitForSelector('#details:not([hidden])');
  const jkt = await alice.evaluate(() => window.sigilChat.client.key.jkt);
  assert.equal(await bob.textContent('#details .signer'), 'alice');
  assert.equal(await bob.textContent('#details .thumbprint'), jkt);
  assert.ok((await bob.textContent('#details .signed-at')).length > 4);
  assert.match(await bob.textContent('#details .position'), /^\d+ \(epoch [A-Za-z0-9_-]+\)$/);
  assert.equal(await bob.$('#details .log-index'), null);
  await shot(bob, 'details');
  await bob.click('#details-close');
  assert.ok(await bob.isHidden('#details'));

  // History: a room pre-filled with past messages (as the history API
  // gives them, verified) shows them before the live ones, once each, and
  // marks the gap; a stream position and a log index, when a message has
  // them, appear in its details.
  const carolCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const carol = await logIn(carolCtx, srv, 'carol');
  const past = await bob.evaluate(() => window.got.map(({ row, ...m }) => m));
  assert.equal(past.length, 3);
  past[2] = { ...past[2], position: { epoch: 'ep-1', offset: 41 }, logIndex: 7 };
  const shown = await carol.evaluate((p) => window.sigilChat.showHistory('rooms.random', [...p, p[0]], { gap: true }), past);
  assert.equal(shown, 3, 'a repeated message is shown once');
  await carol.click('#rooms li[data-ch="rooms.random"] .join-toggle');
  await carol.waitForSelector('#rooms li.joined[data-ch="rooms.random"]');
  const order = await carol.$$eval('#messages > li', (els) => els.map((e) => (e.classList.contains('gap') ? 'gap' : e.classList.contains('msg') ? 'msg' : 'system')));
  assert.deepEqual(order, ['msg', 'msg', 'msg', 'gap', 'system']);
  assert.match(await carol.textContent('#messages .gap'), /could not be recovered/);
  await carol.click('#messages .msg >> nth=2 >> .mark');
  assert.equal(await carol.textContent('#details .position'), '41 (epoch ep-1)');
  assert.equal(await carol.textContent('#details .log-index'), 'in the log at index 7');
  await shot(carol, 'history-gap');
  // Nothing recovered and older messages lost: the marker goes on top.
  assert.equal(await carol.evaluate(() => window.sigilChat.showHistory('rooms.lobby', [], { gap: 'before' })), 0);
  await carol.click('#rooms li[data-ch="rooms.lobby"] .room-name');
  assert.equal(await carol.$eval('#messages > li', (e) => e.classList.contains('gap')), true);

  // The length counter: hidden well under the limit, then counting down,
  // then over it: the send button is disabled and nothing is cut.
  assert.ok(await alice.isHidden('#length-counter'));
  await alice.fill('#message-input', 'y'.repeat(1950));
  assert.equal(await alice.textContent('#length-counter'), '50 left');
  await alice.fill('#message-input', 'y'.repeat(2010));
  assert.equal(await alice.textContent('#length-counter'), '10 too many (max 2000)');
  assert.equal(await alice.isDisabled('#send-button'), true);
  assert.equal((await alice.inputValue('#message-input')).length, 2010, 'the text is not truncated');
  await shot(alice, 'length-counter');
  noProblems(alice, bob, carol);
  await aliceCtx.close();
  await bobCtx.close();
  await carolCtx.close();
});

test('dark mode follows the system; mobile has a labelled encryption switch and a drawer backdrop', { timeout: 60_000 }, async () => {
  const darkCtx = await browser.newContext({ viewport: { width: 1200, height: 760 }, colorScheme: 'dark' });
  const dark = await logIn(darkCtx, srv, 'alice');
  await send(dark, 'Reading at night: https://example.com/night');
  await dark.waitForSelector('.msg[data-from="alice"][data-verified="true"] a.link');
  const lum = (c) => {
    const [r, g, b] = c.match(/\d+/g).map(Number);
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
  };
  const colors = await dark.evaluate(() => {
    const cs = (sel, p) => getComputedStyle(document.querySelector(sel))[p];
    return { bg: cs('html', 'backgroundColor'), panel: cs('.sidebar', 'backgroundColor'), ink: cs('.msg .sender', 'color'), text: cs('.msg .text', 'color') };
  });
  assert.ok(lum(colors.bg) < 0.2 && lum(colors.panel) < 0.2, `dark backgrounds: ${JSON.stringify(colors)}`);
  assert.ok(lum(colors.ink) > 0.7 && lum(colors.text) > 0.7, `light text: ${JSON.stringify(colors)}`);
  await shot(dark, 'dark');
  const lightCtx = await browser.newContext({ viewport: { width: 1200, height: 760 }, colorScheme: 'light' });
  const light = await logIn(lightCtx, srv, 'bob');
  assert.ok(lum(await light.evaluate(() => getComputedStyle(document.documentElement).backgroundColor)) > 0.8);

  const mobileCtx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const mobile = await logIn(mobileCtx, srv, 'carol');
  // The switch has a visible label and an accessible name.
  assert.ok(await mobile.isVisible('.switch-label'));
  assert.ok(await mobile.getByRole('checkbox', { name: 'Encrypt' }).count() === 1);
  // The drawer opens over a backdrop; a tap on the backdrop closes it.
  assert.ok(await mobile.isHidden('#backdrop'));
  await mobile.tap('#menu-button');
  await mobile.waitForSelector('#backdrop:not([hidden])');
  await mobile.waitForFunction(() => document.getElementById('sidebar').getBoundingClientRect().left >= 0);
  await shot(mobile, 'mobile-drawer');
  await mobile.mouse.click(370, 400); // on the backdrop, right of the drawer
  await mobile.waitForSelector('#backdrop', { state: 'hidden' });
  assert.equal(await mobile.evaluate(() => document.getElementById('sidebar').classList.contains('open')), false);
  noProblems(dark, light, mobile);
  await darkCtx.close();
  await lightCtx.close();
  await mobileCtx.close();
});

test('connection state: the server restarts; banner with the retry time, grey presence, the typed message goes out', { timeout: 120_000 }, async () => {
  // A demo with a fixed signing key, so that sessions outlive a restart.
  const dir = mkdtempSync(join(tmpdir(), 'sigil-chat-'));
  const keyFile = join(dir, 'server.jwk');
  execFileSync(buildSigil(), ['keygen', '--out', keyFile]);
  let s1 = await startDemo(['--key-files', keyFile]);
  const addr = new URL(s1.url).host;
  let s2;
  const aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const bobCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  try {
    const alice = await logIn(aliceCtx, s1, 'alice');
    const bob = await logIn(bobCtx, s1, 'bob');
    await alice.waitForSelector('#presence li[data-sub="bob"]');
    const green = await alice.$eval('#presence li[data-sub="bob"] .dot', (d) => getComputedStyle(d).backgroundColor);

    await s1.stop();
    s1 = null;
    await alice.waitForSelector('#banner[data-kind="reconnecting"]:not([hidden])', { timeout: 15_000 });
    assert.match(await alice.textContent('#banner-text'), /reconnecting…/);
    await alice.waitForFunction(() => /next try in \d+ s/.test(document.getElementById('banner-text').textContent), null, { timeout: 20_000, polling: 50 });
    const grey = await alice.$eval('#presence li[data-sub="bob"] .dot', (d) => getComputedStyle(d).backgroundColor);
    assert.notEqual(grey, green, 'presence dots change colour while away');
    const [r, g, b] = grey.match(/\d+/g).map(Number);
    assert.ok(Math.max(r, g, b) - Math.min(r, g, b) < 40, `the dot is grey: ${grey}`);
    assert.ok(await alice.$('#chat-view.offline'));

    // Typed while away: it waits, marked as such.
    await send(alice, 'Typed while the server was away.');
    await alice.waitForSelector('.msg.local[data-state="queued"]');
    assert.match(await alice.textContent('.msg.local[data-state="queued"] .status'), /Waiting for the connection/);
    await alice.waitForFunction(() => /1 message will be sent/.test(document.getElementById('banner-text').textContent));
    await shot(alice, 'reconnecting');

    // The server comes back on the same address with the same key.
    s2 = await startDemo(['--key-files', keyFile, '--addr', addr]);
    await alice.waitForSelector('#banner', { state: 'hidden', timeout: 45_000 });
    // Sent once alice was subscribed again: the new server delivers it back
    // to her, verified. (bob may still be waiting for his own next try.)
    await alice.waitForSelector('.msg[data-from="alice"][data-verified="true"] >> text=Typed while the server was away.', { timeout: 15_000 });
    assert.equal(await alice.$('.msg.local'), null, 'the queued copy gave way to the delivered one');
    // Both sessions go on, on the new server.
    await bob.waitForSelector('#banner', { state: 'hidden', timeout: 45_000 });
    await bob.waitForFunction(() => window.sigilChat.client.channels.has('rooms.lobby') && window.sigilChat.client.state === 'open');
    await alice.waitForSelector('#presence li[data-sub="bob"]', { timeout: 15_000 });
    await send(alice, 'And after the restart.');
    await bob.waitForSelector('.msg[data-from="alice"][data-verified="true"] >> text=And after the restart.', { timeout: 15_000 });
    assert.equal(await alice.evaluate(() => window.sigilChat.outbox), 0);
    assert.equal(await alice.$('#chat-view.offline'), null);
    // No toast says a raw code.
    for (const p of [alice, bob]) {
      for (const t of await texts(p, '.toast')) assert.doesNotMatch(t, /not_connected|closed|[a-z]+_[a-z]+/, t);
    }
    noProblems(alice, bob);
  } finally {
    await aliceCtx.close();
    await bobCtx.close();
    if (s1) await s1.stop();
    if (s2) await s2.stop();
  }
});
