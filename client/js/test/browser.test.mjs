// Real-browser end-to-end test: Debian chromium driven by playwright-core.
// Two contexts (alice, bob) log in to `sigil serve --demo`, exchange
// messages that each sees marked verified, bob is refused in the read-only
// announce.news, and alice's session is revoked through the admin API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startDemo, repo, artifacts, launchChromium } from './server.mjs';
import { Client } from '../sigil.js';

let srv;
let browser;

before(async () => {
  srv = await startDemo();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (srv) await srv.stop();
});

async function login(ctx, user, password) {
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  await page.goto(srv.url + '/');
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#login-button');
  await page.waitForSelector('#chat-view:not([hidden])', { timeout: 15_000 });
  await page.waitForSelector('#rooms li.joined[data-ch="rooms.lobby"]');
  page.problems = problems;
  return page;
}

test('chat in a real browser: login, verified messages, read-only room, revocation', { timeout: 120_000 }, async () => {
  // Wrong credentials get a clear message.
  const ctx0 = await browser.newContext();
  const p0 = await ctx0.newPage();
  await p0.goto(srv.url + '/');
  await p0.fill('#username', 'alice');
  await p0.fill('#password', 'not-the-password');
  await p0.click('#login-button');
  await p0.waitForSelector('#login-error:not([hidden])');
  assert.match(await p0.textContent('#login-error'), /Wrong username or password/);
  await p0.screenshot({ path: join(artifacts, 'browser-0-wrong-password.png') });
  await ctx0.close();

  const aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const bobCtx = await browser.newContext({ viewport: { width: 390, height: 760 }, isMobile: true, hasTouch: true });
  const alice = await login(aliceCtx, 'alice', srv.users.alice);
  const bob = await login(bobCtx, 'bob', srv.users.bob);

  // Presence: alice sees bob arrive.
  await alice.waitForSelector('#presence li[data-sub="bob"]');

  // Each sends a message; each sees the other's marked verified.
  await alice.fill('#message-input', 'Hello Bob, this is signed in my browser.');
  await alice.press('#message-input', 'Enter');
  await bob.waitForSelector('.msg[data-from="alice"][data-verified="true"] .badge.verified');
  await bob.fill('#message-input', 'Hi Alice! Verified on my side too.');
  await bob.click('#send-button');
  await alice.waitForSelector('.msg[data-from="bob"][data-verified="true"] .badge.verified');
  assert.match(await alice.textContent('.msg[data-from="bob"] .text'), /Hi Alice!/);
  assert.match(await bob.getAttribute('.msg[data-from="alice"] .badge.verified', 'aria-label'), /Verified: signed by alice/);

  // Encrypted message: alice turns the switch on; bob still reads it, verified.
  await alice.click('.switch .track');
  assert.equal(await alice.isChecked('#encrypt-toggle'), true);
  await alice.fill('#message-input', 'This one is sealed with the room key.');
  await alice.press('#message-input', 'Enter');
  await bob.waitForSelector('.msg[data-from="alice"][data-verified="true"] .badge.sealed');
  assert.match(await bob.locator('.msg[data-from="alice"] .text').last().textContent(), /sealed with the room key/);
  await alice.screenshot({ path: join(artifacts, 'browser-1-alice.png') });
  await bob.screenshot({ path: join(artifacts, 'browser-2-bob-mobile.png') });

  // In-band refresh (§12.2) from the page: new expiry, same session, still verified.
  const before = await bob.evaluate(() => window.sigilChat.client.expiresAt);
  const sid = await bob.evaluate(() => window.sigilChat.client.sid);
  await new Promise((r) => setTimeout(r, 1100));
  const afterExp = await bob.evaluate(() => window.sigilChat.client.refresh());
  assert.ok(afterExp > before, `refreshed expiry ${afterExp} > ${before}`);
  assert.equal(await bob.evaluate(() => window.sigilChat.client.sid), sid);
  await bob.fill('#message-input', 'Still here after a token refresh.');
  await bob.press('#message-input', 'Enter');
  await alice.waitForSelector('.msg[data-from="bob"][data-verified="true"] >> text=after a token refresh');

  // bob may read the announcements room, not post there: the welcome's
  // grants (spec §8.3) disable his composer, with the reason. (The server's
  // own refusal is tested in grants.test.mjs.)
  await bob.click('#menu-button');
  await bob.click('#rooms li[data-ch="announce.news"] .join-toggle');
  await bob.waitForSelector('#rooms li.joined[data-ch="announce.news"]');
  assert.equal(await bob.isDisabled('#message-input'), true);
  assert.match(await bob.textContent('#composer-reason'), /read-only for you/);
  await bob.screenshot({ path: join(artifacts, 'browser-3-bob-read-only.png') });

  // Revoke alice's sessions through the admin API; her page logs out.
  const admin = new Client({ url: srv.url, WebSocket });
  await admin.login('admin', srv.users.admin);
  const r = await admin.admin('revoke', { sub: 'alice' });
  assert.ok(r.closed >= 1, `revoke closed ${r.closed} connections`);
  await alice.waitForSelector('#loggedout-view:not([hidden])', { timeout: 15_000 });
  assert.match(await alice.textContent('#loggedout-message'), /revoked/);
  assert.equal(await alice.getAttribute('#logged-out', 'data-reason'), 'revoked');
  await alice.screenshot({ path: join(artifacts, 'browser-4-alice-revoked.png') });

  // bob sees alice leave and stays connected.
  await bob.click('#menu-button').catch(() => {});
  await bob.click('#rooms li[data-ch="rooms.lobby"] .room-name');
  await bob.waitForSelector('.system >> text=alice left');
  admin.close();

  for (const p of [alice, bob]) assert.deepEqual(p.problems.filter((x) => !/WebSocket|Failed to load resource/.test(x)), []);
  if (process.env.UPDATE_SCREENSHOTS) copyFileSync(join(artifacts, 'browser-1-alice.png'), join(repo, 'docs', 'screenshots', 'chat-two-users.png'));
  await aliceCtx.close();
  await bobCtx.close();
});
