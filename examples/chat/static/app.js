// Sigil chat: the demo application served by `sigil serve --demo`.
// All protocol work (signing, verification, refresh, reconnect) is done by
// the browser client at /js/sigil.js; this file is only the UI.

import { Client, b64uDecode } from '/js/sigil.js';

const ROOMS = [
  { ch: 'rooms.lobby', name: 'lobby' },
  { ch: 'rooms.random', name: 'random' },
  { ch: 'announce.news', name: 'news', readOnly: true },
];
const EXPIRY_WARN_MS = 60_000;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

let client = null;
let active = ROOMS[0].ch;
const joined = new Set();
const history = new Map(ROOMS.map((r) => [r.ch, []])); // ch → [message]
const unread = new Map();
let expiryTimer = null;

// ---- views ---------------------------------------------------------------------

function show(view) {
  for (const v of ['login-view', 'chat-view', 'loggedout-view']) $(v).hidden = v !== view;
}

function colorFor(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) % 360;
  return `hsl(${h} 55% 48%)`;
}

function avatar(name) {
  const a = el('span', 'avatar', (name[0] || '?').toUpperCase());
  a.style.background = colorFor(name);
  a.setAttribute('aria-hidden', 'true');
  return a;
}

function toast(text, kind = 'info', ms = 6000) {
  const t = el('div', `toast ${kind}`);
  t.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  t.textContent = text;
  $('toasts').append(t);
  setTimeout(() => t.remove(), ms);
}

function banner(text, { error = false, action = false } = {}) {
  $('banner').hidden = !text;
  $('banner').classList.toggle('error', error);
  $('banner-text').textContent = text || '';
  $('banner-action').hidden = !action;
}

// ---- login ---------------------------------------------------------------------

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  const err = $('login-error');
  err.hidden = true;
  if (!username || !password) {
    err.textContent = 'Enter a username and a password.';
    err.hidden = false;
    return;
  }
  $('login-button').disabled = true;
  $('login-button').textContent = 'Logging in…';
  try {
    await start(username, password);
    $('password').value = '';
  } catch (e) {
    err.textContent = loginMessage(e);
    err.hidden = false;
    client = null;
  } finally {
    $('login-button').disabled = false;
    $('login-button').textContent = 'Log in';
  }
});

function loginMessage(e) {
  switch (e.code) {
    case 'invalid_grant': return 'Wrong username or password.';
    case 'rate_limited': return `Too many attempts. Try again${e.retryAfter ? ` in ${e.retryAfter} s` : ' later'}.`;
    default: return `Could not log in: ${e.message || e}`;
  }
}

$('relogin-button').addEventListener('click', () => {
  show('login-view');
  $('password').focus();
});

$('logout-button').addEventListener('click', () => {
  if (client) client.close();
});

async function start(username, password) {
  const c = new Client({
    url: location.origin,
    alg: 'auto', // Ed25519 where this browser's WebCrypto has it, else ES256
    encryption: true, // negotiate keys; the switch decides whether we seal
    seal: false,
    shouldRefresh: () => document.visibilityState === 'visible',
  });
  await c.login(username, password);
  client = c;
  wire(c);
  await c.connect();
  joined.clear();
  for (const r of ROOMS) history.set(r.ch, []);
  setupUI();
  show('chat-view');
  await join(ROOMS[0].ch);
  $('message-input').focus();
}

// ---- client events -------------------------------------------------------------

function wire(c) {
  c.on('message', (m) => addMessage(m.ch, m));
  c.on('direct', (m) => {
    addMessage(active, { ...m, direct: true });
  });
  c.on('presence', ({ ch }) => {
    if (ch === active) renderPresence();
  });
  c.on('join', ({ ch, sub }) => {
    if (sub !== c.sub) system(ch, `${sub} joined`);
  });
  c.on('leave', ({ ch, sub }) => system(ch, `${sub} left`));
  c.on('error', (e) => toast(`Server error: ${e.code}${e.message ? ` — ${e.message}` : ''}`, 'error'));
  c.on('invalid', (e) => {
    // A server frame that failed verification: never acted on, always shown.
    toast(`A frame from the server failed verification (${e.code}) and was ignored.`, 'error');
    // If it claims to carry a message, also leave a lasting mark where the
    // message would have been. Nothing in it is trusted: not its sender,
    // not its text; its claimed room only places the mark.
    const claimed = e.env || unverifiedEnvelope(e.frame);
    if (claimed && (claimed.act === 'deliver' || claimed.act === 'direct')) {
      const ch = claimed.act === 'deliver' && joined.has(claimed.ch) ? claimed.ch : active;
      addMessage(ch, {
        verified: false, code: e.code, error: e.message, from: 'unknown sender', receivedAt: Date.now(), direct: claimed.act === 'direct',
      });
    }
  });
  c.on('expiring', () => updateExpiry(true));
  c.on('refreshed', () => {
    banner('');
    updateExpiry();
  });
  c.on('state', (s) => {
    $('conn-info').textContent = { open: 'connected', connecting: 'connecting…', reconnecting: 'reconnecting…', closed: 'disconnected' }[s] || s;
    if (s === 'reconnecting') banner('Connection lost — reconnecting…');
    if (s === 'open' && $('banner-text').textContent.startsWith('Connection lost')) banner('');
  });
  c.on('loggedout', ({ message, reason }) => {
    clearInterval(expiryTimer);
    $('loggedout-message').textContent = message;
    $('logged-out').dataset.reason = reason;
    if (reason === 'logout') {
      show('login-view');
    } else {
      show('loggedout-view');
    }
    client = null;
  });
}

// ---- rooms ---------------------------------------------------------------------

function setupUI() {
  $('me-name').textContent = client.sub;
  $('me-avatar').replaceWith(Object.assign(avatar(client.sub), { id: 'me-avatar' }));
  $('me').title = `${client.sub} (${client.roles.join(', ')})`;
  $('key-info').textContent = `${client.key.alg === 'EdDSA' ? 'Ed25519' : 'P-256'} · non-extractable · ${client.key.jkt.slice(0, 10)}…`;
  const enc = $('encrypt-toggle');
  enc.disabled = !client.encryptionAvailable;
  enc.checked = client.encryptOutgoing;
  enc.parentElement.title = client.encryptionAvailable ? 'Seal message bodies with the negotiated content keys' : 'Encryption is not available on this server';
  clearInterval(expiryTimer);
  expiryTimer = setInterval(updateExpiry, 1000);
  updateExpiry();
  banner('');
  renderRooms();
  renderMessages();
}

$('encrypt-toggle').addEventListener('change', (ev) => {
  if (!client) return;
  const on = client.setEncryption(ev.target.checked);
  ev.target.checked = on;
  toast(on ? 'New messages are encrypted with the room key.' : 'Encryption off: messages are signed, not sealed.');
});

function renderRooms() {
  const ul = $('rooms');
  ul.textContent = '';
  for (const r of ROOMS) {
    const li = el('li');
    li.dataset.ch = r.ch;
    li.classList.toggle('active', r.ch === active);
    li.classList.toggle('joined', joined.has(r.ch));
    const name = el('button', 'room-name', `# ${r.name}`);
    name.type = 'button';
    if (r.readOnly) name.append(el('span', 'ro', 'read-only'));
    name.addEventListener('click', () => select(r.ch));
    li.append(name);
    if (unread.get(r.ch)) li.append(el('span', 'unread', String(unread.get(r.ch))));
    const t = el('button', 'join-toggle', joined.has(r.ch) ? 'Leave' : 'Join');
    t.type = 'button';
    t.dataset.action = joined.has(r.ch) ? 'leave' : 'join';
    t.addEventListener('click', () => (joined.has(r.ch) ? leave(r.ch) : join(r.ch)));
    li.append(t);
    ul.append(li);
  }
  const room = ROOMS.find((r) => r.ch === active);
  $('room-title').textContent = `#${room.name}`;
  $('room-closed').hidden = joined.has(active);
  $('composer').hidden = !joined.has(active);
  $('message-input').placeholder = room.readOnly ? 'Announcements (only announcers may post)…' : `Message #${room.name}`;
  renderPresence();
}

function select(ch) {
  active = ch;
  unread.set(ch, 0);
  $('sidebar').classList.remove('open');
  renderRooms();
  renderMessages();
}

async function join(ch) {
  if (!client) return;
  try {
    await client.subscribe(ch);
    joined.add(ch);
    system(ch, `You joined #${ROOMS.find((r) => r.ch === ch).name}`);
    select(ch);
  } catch (e) {
    toast(`Could not join: ${e.code}${e.detail ? ` — ${e.detail}` : ''}`, 'error');
  }
}

async function leave(ch) {
  if (!client) return;
  try {
    await client.unsubscribe(ch);
  } catch (e) {
    toast(`Could not leave: ${e.code}`, 'error');
  }
  joined.delete(ch);
  renderRooms();
}

$('join-current').addEventListener('click', () => join(active));
$('menu-button').addEventListener('click', () => $('sidebar').classList.toggle('open'));

function renderPresence() {
  const ul = $('presence');
  ul.textContent = '';
  const set = client && client.channels.get(active);
  const members = set ? [...set].sort() : [];
  $('presence-count').textContent = String(members.length);
  for (const m of members) {
    const li = el('li');
    li.dataset.sub = m;
    li.append(avatar(m), el('span', '', m + (client && m === client.sub ? ' (you)' : '')), el('span', 'dot'));
    ul.append(li);
  }
}

// ---- messages ------------------------------------------------------------------

function system(ch, text) {
  if (!history.has(ch)) return;
  history.get(ch).push({ system: true, text, receivedAt: Date.now() });
  if (ch === active) renderMessages();
}

// unverifiedEnvelope reads the claims of a frame that failed verification,
// only to tell what it claimed to be; null if it cannot be read.
function unverifiedEnvelope(frame) {
  try {
    const env = JSON.parse(new TextDecoder().decode(b64uDecode(String(frame).split('.')[1])));
    return env && typeof env === 'object' ? env : null;
  } catch {
    return null;
  }
}

function addMessage(ch, m) {
  if (!history.has(ch)) history.set(ch, []);
  history.get(ch).push(m);
  if (ch === active) appendMessage(m, true);
  else {
    unread.set(ch, (unread.get(ch) || 0) + 1);
    renderRooms();
  }
}

function renderMessages() {
  const ol = $('messages');
  ol.textContent = '';
  const list = history.get(active) || [];
  if (list.length === 0) ol.append(el('li', 'empty', joined.has(active) ? 'No messages yet. Say hello!' : ''));
  for (const m of list) appendMessage(m, false);
  ol.scrollTop = ol.scrollHeight;
}

function lockBadge() {
  const b = el('span', 'badge sealed');
  b.innerHTML = '<svg width="10" height="11" viewBox="0 0 10 11" aria-hidden="true"><rect x="1" y="5" width="8" height="6" rx="1.2" fill="currentColor"/><path d="M3 5V3.5a2 2 0 0 1 4 0V5" stroke="currentColor" stroke-width="1.4" fill="none"/></svg>';
  b.append(' encrypted');
  b.title = 'The body was sealed with the room key (spec §11) and opened in this browser';
  return b;
}

function textOf(body) {
  if (body && typeof body === 'object' && typeof body.text === 'string') return body.text;
  return JSON.stringify(body);
}

function appendMessage(m, scroll) {
  const ol = $('messages');
  const empty = ol.querySelector('.empty');
  if (empty) empty.remove();
  if (m.system) {
    ol.append(el('li', 'system', m.text));
  } else {
    const li = el('li', 'msg');
    li.dataset.from = m.from;
    li.dataset.verified = String(!!m.verified);
    if (client && m.from === client.sub) li.classList.add('mine');
    const content = el('div', 'content');
    const meta = el('div', 'meta');
    meta.append(el('span', 'sender', m.from + (m.direct ? ' → you' : '')));
    const when = new Date(m.verified ? m.ts : m.receivedAt);
    const time = el('time', '', when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    meta.append(time);
    let text;
    if (m.verified) {
      const b = el('span', 'badge verified', '✓ signature verified in this browser');
      b.title = `Signed by ${m.from}'s session key ${m.senderKey ? m.senderKey.slice(0, 12) + '…' : ''}, vouched for by the server`;
      meta.append(b);
      if (m.encrypted) meta.append(lockBadge());
      text = m.readable ? textOf(m.body) : 'Encrypted with a key this session does not have.';
    } else {
      li.classList.add('failed');
      const b = el('span', 'badge failed', `✗ verification failed: ${m.code}`);
      b.title = m.error || '';
      meta.append(b);
      text = 'This message failed signature verification and is not shown.';
    }
    content.append(meta, el('div', 'text', text));
    li.append(avatar(m.from), content);
    ol.append(li);
  }
  if (scroll) ol.scrollTop = ol.scrollHeight;
}

$('composer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('message-input');
  const text = input.value.trim();
  if (!text || !client) return;
  input.value = '';
  try {
    await client.publish(active, { text });
  } catch (e) {
    input.value = text;
    toast(`Not sent — the server said ${e.code}${e.detail ? `: ${e.detail}` : ''}`, 'error');
  }
});

// ---- session lifetime ---------------------------------------------------------------

function fmt(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s >= 60 ? `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s` : `${s} s`;
}

// warnMs is how long before expiry the banner shows: EXPIRY_WARN_MS, but
// at most half the token's lifetime, as the server's warning (spec §12.1).
function warnMs() {
  if (!client || !client.claims || !client.expiresAt) return EXPIRY_WARN_MS;
  const life = client.expiresAt - client.claims.iat * 1000;
  return Math.min(EXPIRY_WARN_MS, life / 2);
}

// updateExpiry shows the time left, and the banner from warnMs() before
// expiry or as soon as the server says the token is expiring (warned).
function updateExpiry(warned = false) {
  if (!client) return;
  const left = client.expiresAt - client.now();
  $('expiry-info').textContent = `in ${fmt(left)}`;
  if (warned || left <= warnMs()) {
    const visible = document.visibilityState === 'visible';
    banner(visible ? `Your session expires in ${fmt(left)} — renewing it automatically…` : `Your session expires in ${fmt(left)}.`, { action: true });
  }
}

$('banner-action').addEventListener('click', async () => {
  if (!client) return;
  try {
    await client.refresh();
  } catch (e) {
    toast(`Refresh failed: ${e.code}`, 'error');
  }
});

document.addEventListener('visibilitychange', () => {
  // Coming back to the tab close to expiry: refresh at once.
  if (client && document.visibilityState === 'visible' && client.expiresAt - client.now() <= warnMs() && !client.refreshing) {
    client.refresh().catch(() => {});
  }
});

// Expose for tests and curious users.
window.sigilChat = { get client() { return client; } };
