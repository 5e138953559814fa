// Real-browser tests of the chat's session lifetime, of how it shows a
// message that fails verification, and of its mobile layout: Debian
// chromium driven by playwright-core against real `sigil serve --demo`
// servers on random ports (no mocks: the server's own flags make tokens
// short-lived, and the real WebSocket is intercepted in the browser).
//
//   1. A 20 s token: the server's `expiring` (10 s before exp: 60 s, capped
//      at half the token lifetime, spec §12.1) shows the
//      expiry banner, the active tab refreshes in-band at once (same sid,
//      same socket, new jti and exp), the banner goes, and a message sent
//      after it reaches the other side verified.
//   2. A refresh family of 1 s (--refresh-ttl) with a 16 s token: the refresh
//      at the warning is refused, and the page logs out cleanly, with a
//      message, long before the token expires; its socket is gone.
//   3. page.routeWebSocket sits on the page's real socket and flips a
//      character in the signature of one delivered server frame, and in the
//      embedded sender JWS of another: each is shown as a message that
//      failed verification (never its text), with an error toast, and the
//      session goes on.
//   4. 390×844 touch screen: the login form and the chat view have no
//      horizontal overflow, the send button is on screen, the room menu opens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startDemo, artifacts, launchChromium } from './server.mjs';
import { Client } from '../sigil.js';

const WARNING_MS = 10_000; // the Go server's expiry warning for a 20 s token: min(60 s, 20 s / 2) (spec §12.1, §12.4)
let browser;
let srvRefresh; // 20 s tokens: the warning comes 10 s after login, and a refresh leaves 10 s without banner
let srvNoRefresh; // 16 s tokens, 1 s refresh family: the refresh at the warning (8 s after login) is refused
let srv; // defaults

before(async () => {
  [srvRefresh, srvNoRefresh, srv] = await Promise.all([
    startDemo(['--token-ttl', '20s']),
    startDemo(['--token-ttl', '16s', '--refresh-ttl', '1s']),
    startDemo(),
  ]);
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  await Promise.all([srvRefresh, srvNoRefresh, srv].filter(Boolean).map((s) => s.stop()));
});

// recordBanner runs in the page before app.js: it logs every state of the
// banner (visible or not, its text, when), since in an active tab the banner
// may be up for only as long as the refresh takes.
function recordBanner() {
  window.bannerLog = [];
  document.addEventListener('DOMContentLoaded', () => {
    const b = document.getElementById('banner');
    const rec = () => window.bannerLog.push({ t: Date.now(), hidden: b.hidden, text: document.getElementById('banner-text').textContent });
    new MutationObserver(rec).observe(b, { attributes: true, childList: true, subtree: true, characterData: true });
  });
}

function watchProblems(page) {
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(m.text());
  });
  return page;
}

function noProblems(...pages) {
  for (const p of pages) assert.deepEqual(p.problems.filter((x) => !/WebSocket|Failed to load resource/.test(x)), []);
}

async function logIn(page, server, user, { tap = false } = {}) {
  watchProblems(page);
  await page.goto(server.url + '/');
  await page.fill('#username', user);
  await page.fill('#password', server.users[user]);
  if (tap) await page.tap('#login-button');
  else await page.click('#login-button');
  await page.waitForSelector('#chat-view:not([hidden])', { timeout: 15_000 });
  await page.waitForSelector('#rooms li.joined[data-ch="rooms.lobby"]', { state: 'attached' });
  return page;
}

// sessionState reads the page's Sigil client (window.sigilChat.client) and
// starts recording its events.
function sessionState(page) {
  return page.evaluate(() => {
    const c = window.sigilChat.client;
    if (!window.events) {
      window.events = [];
      window.ws0 = c.ws;
      for (const type of ['refreshed', 'reconnecting', 'loggedout', 'closed']) {
        c.on(type, (e) => window.events.push({ type, t: Date.now(), ...e }));
      }
    }
    return { sid: c.sid, jti: c.claims.jti, iat: c.claims.iat * 1000, exp: c.expiresAt, state: c.state, sameSocket: c.ws === window.ws0 };
  });
}

test('session lifetime: the expiry banner, then an automatic in-band refresh while the tab is active', { timeout: 60_000 }, async () => {
  const aliceCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  await aliceCtx.addInitScript(recordBanner);
  const bobCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const alice = await logIn(await aliceCtx.newPage(), srvRefresh, 'alice');
  const bob = await logIn(await bobCtx.newPage(), srvRefresh, 'bob');
  const s0 = await sessionState(alice);
  assert.equal(s0.exp - s0.iat, 20_000, 'the server issued a 20 s token');
  assert.equal(await alice.evaluate(() => document.visibilityState), 'visible');
  assert.ok(await alice.isHidden('#banner'), 'no banner right after login');

  // The token is renewed before it expires, without any user action.
  await alice.waitForFunction((exp) => window.sigilChat.client && window.sigilChat.client.expiresAt > exp, s0.exp, { timeout: 20_000, polling: 100 });
  const s1 = await sessionState(alice);
  const events = await alice.evaluate(() => window.events);
  const refreshed = events.find((e) => e.type === 'refreshed');
  assert.ok(refreshed, `a refreshed event: ${JSON.stringify(events)}`);
  assert.ok(refreshed.t < s0.exp, 'refreshed before the old token expired');
  assert.ok(s0.exp - refreshed.t <= WARNING_MS + 2000, `refreshed at the server's warning, ${s0.exp - refreshed.t} ms before expiry`);
  assert.equal(s1.sid, s0.sid, 'same session id');
  assert.notEqual(s1.jti, s0.jti, 'a new token id');
  assert.ok(s1.exp - s1.iat === 20_000 && s1.exp > s0.exp, `new expiry ${s1.exp} > ${s0.exp}`);
  assert.equal(s1.state, 'open');
  assert.ok(s1.sameSocket, 'refreshed in-band, on the same WebSocket');
  assert.deepEqual(events.filter((e) => e.type !== 'refreshed').map((e) => e.type), [], 'no reconnect, no logout');

  // Before the refresh, the banner said the session was expiring; now it is gone.
  await alice.waitForSelector('#banner', { state: 'hidden', timeout: 2000 });
  const log = await alice.evaluate(() => window.bannerLog);
  const warned = log.find((b) => !b.hidden && /Your session expires in (\d+ min )?\d+ s/.test(b.text));
  assert.ok(warned, `an expiry banner was shown: ${JSON.stringify(log)}`);
  assert.ok(warned.t < s0.exp && warned.t <= refreshed.t, 'the banner came before expiry and before the refresh');
  assert.match(warned.text, /renewing it automatically/);
  assert.ok(log.some((b) => b.hidden && b.t >= refreshed.t), 'the banner was cleared by the refresh');
  assert.match(await alice.textContent('#expiry-info'), /^in (1\d|20) s$/);

  // Sending still works under the new token, and bob sees it verified.
  await alice.fill('#message-input', 'Sent after an automatic refresh.');
  await alice.press('#message-input', 'Enter');
  await bob.waitForSelector('.msg[data-from="alice"][data-verified="true"] >> text=Sent after an automatic refresh.', { timeout: 5000 });
  assert.equal((await sessionState(alice)).sid, s0.sid);
  assert.ok(await alice.isHidden('#banner'), 'still no banner');
  await alice.screenshot({ path: join(artifacts, 'lifetime-1-refreshed.png') });
  noProblems(alice, bob);
  await aliceCtx.close();
  await bobCtx.close();
});

test('session lifetime: when the refresh is refused, the user is logged out cleanly before expiry', { timeout: 30_000 }, async () => {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  await ctx.addInitScript(recordBanner);
  const page = await logIn(await ctx.newPage(), srvNoRefresh, 'alice');
  const s0 = await sessionState(page);
  assert.equal(s0.exp - s0.iat, 16_000, 'the server issued a 16 s token');

  // The refresh family ended 1 s after login (--refresh-ttl 1s): the refresh
  // at the server's warning is refused (bad_token), and the client fails closed.
  await page.waitForSelector('#loggedout-view:not([hidden])', { timeout: 15_000 });
  const events = await page.evaluate(() => window.events);
  const out = events.find((e) => e.type === 'loggedout');
  assert.ok(out, `a loggedout event: ${JSON.stringify(events)}`);
  assert.equal(out.reason, 'refresh_failed');
  assert.ok(out.t < s0.exp, `logged out ${s0.exp - out.t} ms before expiry, not at it`);
  assert.ok(!events.some((e) => e.type === 'refreshed' || e.type === 'reconnecting'), 'no refresh, no reconnect');
  const message = await page.textContent('#loggedout-message');
  assert.match(message, /could not be renewed/);
  assert.match(message, /log in again/);
  assert.equal(await page.getAttribute('#logged-out', 'data-reason'), 'refresh_failed');
  assert.ok(await page.isHidden('#chat-view'));
  assert.equal(await page.evaluate(() => window.sigilChat.client), null, 'the page dropped the session');
  const log = await page.evaluate(() => window.bannerLog);
  assert.ok(log.some((b) => !b.hidden && /expires in/.test(b.text) && b.t <= out.t), `the expiry banner came first: ${JSON.stringify(log)}`);
  await page.screenshot({ path: join(artifacts, 'lifetime-2-refresh-refused.png') });

  // Fail closed: the server has no live connection of that session left.
  const admin = new Client({ url: srvNoRefresh.url, WebSocket });
  await admin.login('admin', srvNoRefresh.users.admin);
  let sessions;
  for (let i = 0; i < 50; i++) {
    sessions = (await admin.admin('sessions')).sessions;
    if (!sessions.some((x) => x.sid === s0.sid)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(sessions.filter((x) => x.sid === s0.sid), [], 'the session has no live connection');
  admin.close();

  // "Log in again" leads back to the login form.
  await page.click('#relogin-button');
  await page.waitForSelector('#login-view:not([hidden])');
  noProblems(page);
  await ctx.close();
});

// flip changes one base64url character in the middle of a JWS signature (a
// middle one: the last may only carry padding bits).
function flip(sig) {
  const i = sig.length >> 1;
  return sig.slice(0, i) + (sig[i] === 'A' ? 'B' : 'A') + sig.slice(i + 1);
}

const textOfSender = (inner) => {
  try {
    const env = JSON.parse(Buffer.from(inner.split('.')[1], 'base64url').toString('utf8'));
    return env.body && env.body.text;
  } catch {
    return undefined;
  }
};

test('a delivered message that fails verification is shown as such, never its text', { timeout: 30_000 }, async () => {
  const OUTER = 'tampered: server signature flipped';
  const INNER = 'tampered: sender signature flipped';
  const aliceCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const bobCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const bobPage = await bobCtx.newPage();
  // Between bob's page and the server, on the page's own socket.
  const tampered = [];
  await bobPage.routeWebSocket(/\/v1\/ws$/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((frame) => {
      if (typeof frame !== 'string') return ws.send(frame);
      const [h, p, s] = frame.split('.');
      const json = Buffer.from(p, 'base64url').toString('utf8');
      const env = JSON.parse(json);
      const inner = env.act === 'deliver' && env.body && env.body.frame;
      const text = inner && textOfSender(inner);
      if (text === OUTER) {
        tampered.push('server frame signature');
        return ws.send(`${h}.${p}.${flip(s)}`);
      }
      if (text === INNER) {
        const [ih, ip, is] = inner.split('.');
        const json2 = json.replace(inner, `${ih}.${ip}.${flip(is)}`);
        assert.notEqual(json2, json);
        tampered.push('sender frame signature');
        return ws.send(`${h}.${Buffer.from(json2, 'utf8').toString('base64url')}.${s}`);
      }
      return ws.send(frame);
    });
  });
  const alice = await logIn(await aliceCtx.newPage(), srv, 'alice');
  const bob = await logIn(bobPage, srv, 'bob');
  await alice.waitForSelector('#presence li[data-sub="bob"]');

  for (const text of [OUTER, INNER, 'An honest message after the tampered ones.']) {
    await alice.fill('#message-input', text);
    await alice.press('#message-input', 'Enter');
    await alice.waitForSelector(`.msg[data-from="alice"][data-verified="true"] >> text=${text}`);
  }
  await bob.waitForSelector('.msg[data-from="alice"][data-verified="true"] >> text=An honest message after the tampered ones.');
  assert.deepEqual(tampered, ['server frame signature', 'sender frame signature']);

  // Each tampered delivery left a visible failed-verification row, in order,
  // and an error toast naming the code.
  const rows = await bob.$$eval('#messages .msg', (els) => els.map((e) => ({
    verified: e.dataset.verified, failed: e.classList.contains('failed'),
    badge: (e.querySelector('.badge') || {}).textContent, text: e.querySelector('.text').textContent,
  })));
  assert.equal(rows.length, 3, JSON.stringify(rows));
  for (const r of rows.slice(0, 2)) {
    assert.equal(r.verified, 'false');
    assert.ok(r.failed);
    assert.match(r.badge, /verification failed: bad_signature/);
    assert.match(r.text, /failed signature verification/);
  }
  assert.equal(rows[2].verified, 'true');
  assert.ok(await bob.isVisible('.msg[data-verified="false"] .badge.failed'));
  const toasts = await bob.$$eval('.toast.error', (els) => els.map((e) => e.textContent));
  assert.equal(toasts.filter((t) => /failed verification \(bad_signature\)/.test(t)).length, 2, JSON.stringify(toasts));
  // Their text is never shown to bob (alice, untouched, sees it verified).
  const shown = await bob.evaluate(() => document.body.innerText);
  assert.ok(!shown.includes(OUTER) && !shown.includes(INNER), 'tampered text is not shown');
  assert.equal(await bob.evaluate(() => window.sigilChat.client.state), 'open', 'the session goes on');
  await bob.screenshot({ path: join(artifacts, 'lifetime-3-failed-verification.png') });
  noProblems(alice, bob);
  await aliceCtx.close();
  await bobCtx.close();
});

async function noHorizontalOverflow(page, what) {
  const w = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  assert.ok(w.scroll <= 390, `${what}: document is ${w.scroll} px wide at a 390 px viewport`);
}

async function onScreen(page, sel) {
  assert.ok(await page.isVisible(sel), `${sel} is visible`);
  const b = await page.locator(sel).boundingBox();
  assert.ok(b && b.x >= 0 && b.y >= 0 && b.x + b.width <= 390 && b.y + b.height <= 844, `${sel} is on screen: ${JSON.stringify(b)}`);
}

test('mobile 390×844: login form and chat are usable without horizontal overflow', { timeout: 30_000 }, async () => {
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const page = watchProblems(await ctx.newPage());
  await page.goto(srv.url + '/');
  await noHorizontalOverflow(page, 'login');
  for (const sel of ['#username', '#password', '#login-button']) await onScreen(page, sel);
  await page.tap('#login-button'); // empty form: a message, not a crash
  await page.waitForSelector('#login-error:not([hidden])');
  await noHorizontalOverflow(page, 'login error');
  await page.screenshot({ path: join(artifacts, 'lifetime-4-mobile-login.png') });
  await logIn(page, srv, 'carol', { tap: true });

  await noHorizontalOverflow(page, 'chat');
  for (const sel of ['#message-input', '#send-button', '#menu-button', '#logout-button']) await onScreen(page, sel);
  // A long unbroken message wraps instead of widening the page.
  const long = 'x'.repeat(300);
  await page.fill('#message-input', long);
  await page.tap('#send-button');
  await page.waitForSelector('.msg[data-from="carol"][data-verified="true"]');
  await noHorizontalOverflow(page, 'chat with a long message');
  const list = await page.$eval('#messages', (e) => ({ scroll: e.scrollWidth, client: e.clientWidth }));
  assert.ok(list.scroll <= list.client, `the message list does not scroll sideways: ${JSON.stringify(list)}`);
  await page.screenshot({ path: join(artifacts, 'lifetime-5-mobile-chat.png') });

  // The room menu is off screen, opens on tap, and a room can be chosen from it.
  const closed = await page.locator('#sidebar').boundingBox();
  assert.ok(closed.x + closed.width <= 0, `sidebar starts off screen: ${JSON.stringify(closed)}`);
  await page.tap('#menu-button');
  await page.waitForFunction(() => {
    const r = document.getElementById('sidebar').getBoundingClientRect();
    return document.getElementById('sidebar').classList.contains('open') && r.left >= 0;
  }, null, { timeout: 3000 });
  await onScreen(page, '#rooms li[data-ch="rooms.random"] .room-name');
  await noHorizontalOverflow(page, 'menu open');
  await page.screenshot({ path: join(artifacts, 'lifetime-6-mobile-menu.png') });
  await page.tap('#rooms li[data-ch="rooms.random"] .room-name');
  await page.waitForFunction(() => !document.getElementById('sidebar').classList.contains('open'));
  assert.equal(await page.textContent('#room-title'), '#random');
  await onScreen(page, '#join-current');
  noProblems(page);
  await ctx.close();
});
