// Sigil chat: the demo application served by `sigil serve --demo`.
// All protocol work (signing, verification, refresh, reconnect) is done by
// the browser client at /js/sigil.js; this file is only the UI.
//
// Conversations are rooms (channels) and direct messages (one per peer).
// What the session may do comes from the welcome's grants (spec §8.3):
// a room the policy does not let it post in has its composer disabled,
// with the reason. Messages typed while the connection is away wait in an
// outbox and are sent when it is back, or are marked "not sent". Joining a
// room shows its recent history (spec §20); its position is kept in
// sessionStorage so that a reload resumes with since, and a gap that could
// not be recovered is marked. Direct messages received are kept by the
// server in the user's inbox (spec §20.11): after a reload they are read
// back (inboxHistory) into their conversations.

import { Client, b64uDecode, INBOX } from '/js/sigil.js';

const ROOMS = [
  { ch: 'rooms.lobby', name: 'lobby' },
  { ch: 'rooms.random', name: 'random' },
  { ch: 'announce.news', name: 'news' },
];
const EXPIRY_WARN_MS = 60_000;
export const MAX_LENGTH = 2000; // characters in one message
const COUNTER_FROM = 1800; // the length counter shows from here
const GROUP_MS = 5 * 60_000; // consecutive messages of one sender within this are grouped

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

let client = null;
// A conversation is a room or a direct-message thread. Its key is the
// channel for a room, and '@' + the peer's name for direct messages
// (a channel never starts with '@').
let active = ROOMS[0].ch;
const joined = new Set();
const convs = new Map(); // key → {key, kind: 'room'|'dm', name, ch?, peer?, messages: [], unread, seen: Set(id)}
const outbox = []; // messages typed while disconnected: {conv, text, row}
const awaitingIndex = new Map(); // conversation key → [{text, index}] (noteLogIndex)
let expiryTimer = null;
let retryTimer = null;
let retryAt = 0;

const dmKey = (peer) => `@${peer}`;

function conv(key) {
  let c = convs.get(key);
  if (!c) {
    const room = ROOMS.find((r) => r.ch === key);
    c = key.startsWith('@')
      ? { key, kind: 'dm', name: key.slice(1), peer: key.slice(1), messages: [], unread: 0, seen: new Set() }
      : { key, kind: 'room', name: room ? room.name : key, ch: key, messages: [], unread: 0, seen: new Set() };
    convs.set(key, c);
  }
  return c;
}

function resetConversations() {
  convs.clear();
  outbox.length = 0;
  awaitingIndex.clear();
  for (const r of ROOMS) conv(r.ch);
}
resetConversations();

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

function banner(text, { error = false, action = false, kind = '' } = {}) {
  $('banner').hidden = !text;
  $('banner').classList.toggle('error', error);
  $('banner').dataset.kind = text ? kind : '';
  $('banner-text').textContent = text || '';
  $('banner-action').hidden = !action;
}

// humanError says what went wrong in words, never as a bare protocol code.
function humanError(e, c) {
  const where = c ? (c.kind === 'dm' ? c.peer : `#${c.name}`) : 'there';
  switch (e && e.code) {
    case 'forbidden': return c && c.kind === 'dm' ? 'You may not send direct messages.' : `You may not post in ${where}.`;
    case 'not_found': return c && c.kind === 'dm' ? `${c.peer} is not online and has never signed in here, so it was not delivered.` : 'Not found.';
    case 'not_connected':
    case 'closed': return 'The connection dropped before the server confirmed it.';
    case 'timeout': return 'The server did not answer in time.';
    case 'too_large': return 'The message is too large for the server.';
    case 'session_ended': return 'Your session has ended; log in again.';
    case 'unavailable': return 'The server is having trouble right now; try again in a moment.';
    case 'rate_limited': return 'Too many messages at once; wait a moment.';
    case 'bad_request': return 'The server could not read that message.';
    default: return 'Something went wrong.';
  }
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
  resetConversations();
  active = ROOMS[0].ch;
  setupUI();
  show('chat-view');
  await join(ROOMS[0].ch);
  await loadInbox();
  $('message-input').focus();
}

const INBOX_LIMIT = 100; // direct messages read back after a (re)load

// loadInbox shows the direct messages the server keeps for this user
// (spec §20.11), for example after a page reload: each verified by the
// client as a live one, in the conversation with its sender, before what
// arrived live meanwhile, once each.
async function loadInbox() {
  if (!client.streams.has(INBOX)) return; // the server keeps no inbox
  let page;
  try {
    page = await client.inboxHistory({ limit: INBOX_LIMIT });
  } catch (e) {
    toast(`Your direct messages could not be read: ${humanError(e)}`, 'error');
    return;
  }
  const byPeer = new Map();
  for (const m of page.messages) {
    if (!byPeer.has(m.from)) byPeer.set(m.from, []);
    byPeer.get(m.from).push({ ...m, direct: true });
  }
  for (const [peer, msgs] of byPeer) showHistory(dmKey(peer), msgs);
  if (byPeer.size) renderDMs();
}

// ---- client events -------------------------------------------------------------

function wire(c) {
  c.on('message', (m) => {
    if (m.position && m.verified && convs.has(m.ch)) savePosition(m.ch, m.position);
    addMessage(m.ch, m);
  });
  // A gap the client could not recover (spec §20.3, §20.4): marked where it
  // is, never skipped silently. During a join it is placed among the
  // history the join reads (joinGaps).
  c.on('gap', ({ ch, from, to, inbox }) => {
    if (inbox) {
      toast('Some direct messages sent to you while you were away could not be recovered.', 'error');
      return;
    }
    if (to && convs.has(ch)) savePosition(ch, to);
    if (joinGaps.has(ch)) joinGaps.set(ch, { from });
    else if (convs.has(ch)) push(conv(ch), gapMarker(), { count: false });
  });
  // A direct message goes to the conversation with its sender, never into
  // a room.
  c.on('direct', (m) => addMessage(dmKey(m.mine || m.from === c.sub ? m.to || m.from : m.from), { ...m, direct: true }));
  c.on('presence', ({ ch }) => {
    if (ch === active) renderPresence();
  });
  c.on('join', ({ ch, sub }) => {
    if (sub !== c.sub) system(ch, `${sub} joined`);
  });
  c.on('leave', ({ ch, sub }) => system(ch, `${sub} left`));
  c.on('error', (e) => toast(`The server reported a problem: ${humanError(e)}`, 'error'));
  c.on('invalid', (e) => {
    // A server frame that failed verification: never acted on, always shown.
    toast(`A frame from the server failed verification (${e.code}) and was ignored.`, 'error');
    // If it claims to carry a message, also leave a lasting mark where the
    // message would have been. Nothing in it is trusted: not its sender,
    // not its text. A claimed room message is marked in that room if we
    // are in it (else in the open room, never in a direct conversation); a
    // claimed direct message only in the open direct conversation, never
    // in a room.
    const claimed = e.env || unverifiedEnvelope(e.frame);
    if (!claimed || (claimed.act !== 'deliver' && claimed.act !== 'direct')) return;
    const failed = { verified: false, code: e.code, error: e.message, from: 'unknown sender', receivedAt: Date.now(), direct: claimed.act === 'direct' };
    const here = conv(active).kind;
    if (claimed.act === 'deliver' && (joined.has(claimed.ch) || here === 'room')) addMessage(joined.has(claimed.ch) ? claimed.ch : active, failed);
    else if (claimed.act === 'direct' && here === 'dm') addMessage(active, failed);
  });
  c.on('expiring', () => updateExpiry(true));
  c.on('refreshed', () => {
    banner('');
    updateExpiry();
  });
  c.on('reconnecting', ({ inMs }) => {
    retryAt = Date.now() + inMs;
    showReconnecting();
  });
  c.on('state', (s) => {
    $('conn-info').textContent = { open: 'connected', connecting: 'connecting…', reconnecting: 'reconnecting…', closed: 'disconnected' }[s] || s;
    $('chat-view').classList.toggle('offline', s !== 'open');
    if (s === 'open') {
      clearInterval(retryTimer);
      retryTimer = null;
      if ($('banner').dataset.kind === 'reconnecting') banner('');
    }
    renderComposer();
  });
  // After a reconnect the client has subscribed again: the outbox goes out.
  c.on('restored', () => flushOutbox());
  c.on('loggedout', ({ message, reason }) => {
    clearInterval(expiryTimer);
    clearInterval(retryTimer);
    for (const o of outbox.splice(0)) markNotSent(o, 'Not sent: you were logged out.');
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

function showReconnecting() {
  const tick = () => {
    const left = Math.ceil((retryAt - Date.now()) / 1000);
    const pending = outbox.length ? ` ${outbox.length} message${outbox.length > 1 ? 's' : ''} will be sent when it is back.` : '';
    banner(left > 0 ? `Connection lost — reconnecting… next try in ${left} s.${pending}` : `Connection lost — reconnecting…${pending}`, { kind: 'reconnecting' });
  };
  tick();
  clearInterval(retryTimer);
  retryTimer = setInterval(tick, 500);
}

// ---- conversations -------------------------------------------------------------

function setupUI() {
  $('me-name').textContent = client.sub;
  $('me-avatar').replaceWith(Object.assign(avatar(client.sub), { id: 'me-avatar' }));
  $('me').title = `${client.sub} (${client.roles.join(', ')})`;
  // A non-breaking hyphen (U+2011): "non-extractable" never splits.
  $('key-info').textContent = `${client.key.alg === 'EdDSA' ? 'Ed25519' : 'P-256'} · non\u2011extractable · ${client.key.jkt.slice(0, 10)}…`;
  const enc = $('encrypt-toggle');
  enc.disabled = !client.encryptionAvailable;
  enc.checked = client.encryptOutgoing;
  enc.parentElement.title = client.encryptionAvailable ? 'Seal message bodies with the negotiated content keys' : 'Encryption is not available on this server';
  $('new-dm').hidden = !client.can('dm');
  clearInterval(expiryTimer);
  expiryTimer = setInterval(updateExpiry, 1000);
  updateExpiry();
  banner('');
  $('chat-view').classList.remove('offline');
  renderSidebar();
  renderMessages();
}

$('encrypt-toggle').addEventListener('change', (ev) => {
  if (!client) return;
  const on = client.setEncryption(ev.target.checked);
  ev.target.checked = on;
  toast(on ? 'New messages are encrypted with the room key.' : 'Encryption off: messages are signed, not sealed.');
});

// canPost reports whether the session may post in a conversation, by the
// welcome's grants (spec §8.3); the server still decides.
function canPost(c) {
  if (!client) return false;
  return c.kind === 'dm' ? client.can('dm') : client.can('pub', c.ch);
}

function renderSidebar() {
  renderRooms();
  renderDMs();
  renderHeader();
}

function renderRooms() {
  const ul = $('rooms');
  ul.textContent = '';
  for (const r of ROOMS) {
    const c = conv(r.ch);
    const li = el('li');
    li.dataset.ch = r.ch;
    li.classList.toggle('active', r.ch === active);
    li.classList.toggle('joined', joined.has(r.ch));
    const name = el('button', 'room-name', `# ${r.name}`);
    name.type = 'button';
    if (client && !client.can('pub', r.ch)) name.append(el('span', 'ro', 'read-only'));
    name.addEventListener('click', () => select(r.ch));
    li.append(name);
    if (c.unread) li.append(unreadBadge(c.unread));
    const t = el('button', 'join-toggle', joined.has(r.ch) ? 'Leave' : 'Join');
    t.type = 'button';
    t.dataset.action = joined.has(r.ch) ? 'leave' : 'join';
    if (!joined.has(r.ch) && client && !client.can('sub', r.ch)) {
      t.disabled = true;
      t.title = 'You may not join this room';
    }
    t.addEventListener('click', () => (joined.has(r.ch) ? leave(r.ch) : join(r.ch)));
    li.append(t);
    ul.append(li);
  }
}

function unreadBadge(n) {
  const b = el('span', 'unread', String(n));
  b.setAttribute('aria-label', `${n} unread`);
  return b;
}

function renderDMs() {
  const ul = $('dms');
  ul.textContent = '';
  for (const c of [...convs.values()].filter((x) => x.kind === 'dm').sort((a, b) => a.peer.localeCompare(b.peer))) {
    const li = el('li');
    li.dataset.peer = c.peer;
    li.classList.toggle('active', c.key === active);
    const name = el('button', 'room-name');
    name.type = 'button';
    name.append(avatar(c.peer), el('span', '', c.peer));
    name.addEventListener('click', () => select(c.key));
    li.append(name);
    if (c.unread) li.append(unreadBadge(c.unread));
    ul.append(li);
  }
}

function renderHeader() {
  const c = conv(active);
  $('room-title').textContent = c.kind === 'dm' ? `@${c.peer}` : `#${c.name}`;
  $('presence-section').hidden = c.kind === 'dm';
  $('room-closed').hidden = c.kind === 'dm' || joined.has(active);
  renderComposer();
  renderPresence();
}

// renderComposer shows the composer of the open conversation: disabled,
// with the reason, where the grants do not allow posting.
function renderComposer() {
  const c = conv(active);
  const open = c.kind === 'dm' || joined.has(active);
  $('composer').hidden = !open;
  const input = $('message-input');
  const allowed = canPost(c);
  input.disabled = !allowed;
  $('composer').classList.toggle('disabled', !allowed);
  const reason = $('composer-reason');
  reason.hidden = !open || allowed;
  if (!allowed) {
    reason.textContent = c.kind === 'dm'
      ? 'Your account may not send direct messages.'
      : `#${c.name} is read-only for you: the server's policy lets your roles (${client ? client.roles.join(', ') : '—'}) read it, not post in it.`;
    input.placeholder = c.kind === 'dm' ? 'Direct messages are not allowed' : `#${c.name} is read-only`;
  } else {
    input.placeholder = c.kind === 'dm' ? `Message @${c.peer}` : `Message #${c.name}`;
  }
  updateCounter();
}

function select(key) {
  active = key;
  conv(key).unread = 0;
  closeDrawer();
  closeDetails();
  renderSidebar();
  renderMessages();
}

/** openDM opens (or creates) the conversation with peer. */
function openDM(peer) {
  peer = String(peer || '').trim();
  if (!peer || !client) return;
  if (peer === client.sub) {
    toast('That is you.', 'info');
    return;
  }
  conv(dmKey(peer));
  select(dmKey(peer));
  $('message-input').focus();
}

$('new-dm').addEventListener('click', () => {
  $('dm-form').hidden = !$('dm-form').hidden;
  if (!$('dm-form').hidden) $('dm-to').focus();
});
$('dm-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const to = $('dm-to').value;
  $('dm-to').value = '';
  $('dm-form').hidden = true;
  openDM(to);
});

// A room's position (spec §20.1: the epoch and offset of the last message
// shown) is kept in sessionStorage per user and room, so that after a page
// reload the chat subscribes with since and is told what it missed, or
// that something could not be recovered.
const positionKey = (ch) => `sigil.position.${client.sub}.${ch}`;
function savedPosition(ch) {
  try {
    const p = JSON.parse(sessionStorage.getItem(positionKey(ch)));
    return p && typeof p.epoch === 'string' && Number.isSafeInteger(p.offset) && p.offset >= 0 ? { epoch: p.epoch, offset: p.offset } : null;
  } catch {
    return null;
  }
}
function savePosition(ch, p) {
  const old = savedPosition(ch);
  if (old && old.epoch === p.epoch && old.offset >= p.offset) return;
  try {
    sessionStorage.setItem(positionKey(ch), JSON.stringify({ epoch: p.epoch, offset: p.offset }));
  } catch {
    // Storage full or disabled: the room still works, without resuming.
  }
}

const HISTORY_LIMIT = 50; // messages read when joining a room
const joinGaps = new Map(); // ch → null, or {from} once a gap was reported while joining

async function join(ch) {
  if (!client) return;
  joinGaps.set(ch, null);
  try {
    await client.subscribe(ch, { since: savedPosition(ch) || undefined });
    joined.add(ch);
    system(ch, `You joined #${conv(ch).name}`);
    select(ch);
    const st = client.streams.get(ch);
    if (st && st.epoch) savePosition(ch, st);
    await loadHistory(ch, joinGaps.get(ch));
  } catch (e) {
    toast(`Could not join #${conv(ch).name}: ${humanError(e, conv(ch))}`, 'error');
  } finally {
    joinGaps.delete(ch);
  }
}

// loadHistory reads the room's recent messages (the history action: every
// frame verified by the client as a live one) and shows them before what
// arrived live meanwhile, once each. A gap reported while joining is marked
// before the first message that follows the position it starts from.
async function loadHistory(ch, gap) {
  let page = { messages: [] };
  if (client.streams.has(ch) && client.can('history', ch)) {
    try {
      page = await client.history(ch, { limit: HISTORY_LIMIT });
    } catch (e) {
      toast(`The recent messages of #${conv(ch).name} could not be read: ${humanError(e, conv(ch))}`, 'error');
    }
  }
  let at = false;
  if (gap) {
    const f = gap.from;
    const i = page.messages.findIndex((m) => !f || !m.position || m.position.epoch !== f.epoch || m.position.offset > f.offset);
    at = i < 0 ? true : i;
  }
  showHistory(ch, page.messages, { gap: at });
}

async function leave(ch) {
  if (!client) return;
  try {
    await client.unsubscribe(ch);
  } catch (e) {
    toast(`Could not leave #${conv(ch).name}: ${humanError(e, conv(ch))}`, 'error');
  }
  joined.delete(ch);
  renderSidebar();
}

$('join-current').addEventListener('click', () => join(active));

// The drawer (mobile): the sidebar slides in over a backdrop that closes it.
function openDrawer() {
  $('sidebar').classList.add('open');
  $('backdrop').hidden = false;
}
function closeDrawer() {
  $('sidebar').classList.remove('open');
  $('backdrop').hidden = true;
}
$('menu-button').addEventListener('click', () => ($('sidebar').classList.contains('open') ? closeDrawer() : openDrawer()));
$('backdrop').addEventListener('click', closeDrawer);

function renderPresence() {
  const ul = $('presence');
  ul.textContent = '';
  const set = client && client.channels.get(active);
  const members = set ? [...set].sort() : [];
  $('presence-count').textContent = String(members.length);
  for (const m of members) {
    const li = el('li');
    li.dataset.sub = m;
    li.append(avatar(m), el('span', 'who', m + (client && m === client.sub ? ' (you)' : '')));
    if (client && m !== client.sub && client.can('dm')) {
      const b = el('button', 'dm-button', 'Message');
      b.type = 'button';
      b.title = `Send ${m} a direct message`;
      b.addEventListener('click', () => openDM(m));
      li.append(b);
    }
    const dot = el('span', 'dot');
    dot.title = 'online';
    li.append(dot);
    ul.append(li);
  }
}

// ---- messages ------------------------------------------------------------------

function system(key, text) {
  if (!convs.has(key)) return;
  push(conv(key), { system: true, text, receivedAt: Date.now() });
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

// push appends m to conversation c (once per message id) and shows it if
// c is open, or counts it unread.
function push(c, m, { count = true } = {}) {
  if (m.id) {
    if (c.seen.has(m.id)) return false;
    c.seen.add(m.id);
  }
  claimLogIndex(c, m);
  c.messages.push(m);
  if (c.key === active) appendMessage(m, true);
  else if (count && !m.system && !m.local) {
    c.unread++;
    renderSidebar();
  }
  return true;
}

function addMessage(key, m) {
  const c = conv(key);
  const isNew = c.kind === 'dm' && !$('dms').querySelector(`li[data-peer="${CSS.escape(c.peer)}"]`);
  push(c, m);
  if (isNew) renderDMs();
}

/**
 * showHistory pre-fills a conversation with past messages, oldest first,
 * before whatever arrived live: each is a verified message as the client's
 * 'message' event gives it (the history API verifies the recovered deliver
 * frames as it does live ones). Messages already shown (same id) are
 * skipped. With gap, a marker says that some messages could not be
 * recovered: gap 'before' puts it above the history (older messages are
 * lost), a number i before messages[i], anything else true between the
 * history and the live messages.
 */
export function showHistory(key, messages, { gap = false } = {}) {
  const c = conv(key);
  const past = [];
  let markAt = gap === 'before' ? 0 : -1;
  (messages || []).forEach((m, i) => {
    if (i === gap) markAt = past.length;
    if (!m || (m.id && c.seen.has(m.id))) return;
    if (m.id) c.seen.add(m.id);
    past.push({ ...m, history: true });
  });
  const shown = past.length;
  if ((gap || gap === 0) && markAt < 0) markAt = past.length;
  if (markAt >= 0) past.splice(markAt, 0, gapMarker());
  c.messages.unshift(...past);
  if (c.key === active) renderMessages();
  return shown;
}

function gapMarker() {
  return { system: true, gap: true, text: 'Gap: some messages could not be recovered.', receivedAt: Date.now() };
}

function renderMessages() {
  const ol = $('messages');
  ol.textContent = '';
  const c = conv(active);
  const list = c.messages;
  if (list.length === 0) {
    const hint = c.kind === 'dm' ? `This is the start of your conversation with ${c.peer}. ${c.peer} receives your direct messages now, or when back online (the server keeps the last 100 for a week).` : joined.has(active) ? 'No messages yet. Say hello!' : '';
    ol.append(el('li', 'empty', hint));
  }
  for (const m of list) appendMessage(m, false);
  ol.scrollTop = ol.scrollHeight;
}

function lockBadge() {
  const b = el('span', 'badge sealed');
  b.innerHTML = '<svg width="10" height="11" viewBox="0 0 10 11" aria-hidden="true"><rect x="1" y="5" width="8" height="6" rx="1.2" fill="currentColor"/><path d="M3 5V3.5a2 2 0 0 1 4 0V5" stroke="currentColor" stroke-width="1.4" fill="none"/></svg>';
  b.title = 'Encrypted: the body was sealed with the room key (spec §11) and opened in this browser';
  b.setAttribute('aria-label', 'encrypted');
  return b;
}

function textOf(body) {
  if (body && typeof body === 'object' && typeof body.text === 'string') return body.text;
  return JSON.stringify(body);
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

/**
 * linkify appends text to parent as text nodes, with each http(s) URL as
 * a link. Nothing is parsed as HTML: text goes in as text nodes, a URL
 * only as an href that the URL parser accepts with an http(s) scheme.
 */
export function linkify(parent, text) {
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0];
    // Trailing punctuation belongs to the sentence, not to the URL.
    const trail = url.match(/[.,;:!?)\]}]+$/);
    if (trail) url = url.slice(0, -trail[0].length);
    let href = null;
    try {
      const u = new URL(url);
      if (u.protocol === 'http:' || u.protocol === 'https:') href = u.href;
    } catch {
      href = null;
    }
    if (!href) continue;
    if (match.index > last) parent.append(document.createTextNode(text.slice(last, match.index)));
    const a = el('a', 'link', url);
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    parent.append(a);
    last = match.index + url.length;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}

// groupsWith reports whether m continues the previous message's group: the
// same sender (verified, or ourselves), within GROUP_MS.
function groupsWith(prev, m) {
  const shown = (x) => x && !x.system && (x.verified || x.local); // a failed message stands alone
  if (!shown(prev) || !shown(m)) return false;
  if (prev.from !== m.from || !!prev.history !== !!m.history) return false;
  const t = (x) => (x.verified ? x.ts : x.receivedAt);
  return Math.abs(t(m) - t(prev)) <= GROUP_MS;
}

function timeEl(ms) {
  const when = new Date(ms);
  const time = el('time', '', when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  time.dateTime = when.toISOString();
  time.title = when.toLocaleString();
  return time;
}

function appendMessage(m, scroll) {
  const ol = $('messages');
  const empty = ol.querySelector('.empty');
  if (empty) empty.remove();
  if (m.system) {
    const li = el('li', m.gap ? 'system gap' : 'system', m.text);
    if (m.gap) li.setAttribute('role', 'separator');
    ol.append(li);
    if (scroll) ol.scrollTop = ol.scrollHeight;
    return li;
  }
  const c = conv(active);
  const list = c.messages;
  const prev = list[list.indexOf(m) - 1];
  const li = el('li', 'msg');
  li.dataset.from = m.from;
  li.dataset.verified = String(!!m.verified);
  if (m.id) li.dataset.id = m.id;
  if (m.history) li.classList.add('history');
  if (client && m.from === client.sub) li.classList.add('mine');
  const grouped = groupsWith(prev, m);
  li.classList.toggle('grouped', grouped);
  const content = el('div', 'content');
  const when = m.verified ? m.ts : m.receivedAt;
  if (!grouped) {
    const meta = el('div', 'meta');
    meta.append(el('span', 'sender', m.from + (m.direct && !m.local ? ' → you' : '')), timeEl(when));
    if (!m.verified && !m.local) {
      li.classList.add('failed');
      const b = el('span', 'badge failed', `✗ verification failed: ${m.code}`);
      b.title = m.error || '';
      meta.append(b);
    }
    content.append(meta);
  }
  const line = el('div', 'line');
  const text = el('div', 'text');
  if (m.local) {
    linkify(text, m.text);
  } else if (m.verified) {
    if (m.readable) linkify(text, textOf(m.body));
    else text.textContent = 'Encrypted with a key this session does not have.';
  } else {
    text.textContent = 'This message failed signature verification and is not shown.';
  }
  line.append(text);
  if (m.verified) {
    // A quiet mark: the signature was checked in this browser. A click
    // opens the details (the proof).
    const mark = el('button', 'badge verified mark', '✓');
    mark.type = 'button';
    mark.title = `Signed by ${m.from}; verified in this browser. Click for details.`;
    mark.setAttribute('aria-label', `Verified: signed by ${m.from}. Show details`);
    mark.addEventListener('click', () => openDetails(m));
    line.append(mark);
    if (m.encrypted) line.append(lockBadge());
  }
  if (m.local) {
    const st = el('span', 'status');
    st.dataset.state = m.state;
    st.textContent = statusText(m);
    line.append(st);
    li.classList.add('local');
    li.dataset.state = m.state;
    if (m.state === 'failed') {
      const retry = el('button', 'link retry', 'Retry');
      retry.type = 'button';
      retry.addEventListener('click', () => resend(m));
      line.append(retry);
    }
  }
  if (grouped) line.prepend(Object.assign(timeEl(when), { className: 'hover-time' }));
  content.append(line);
  const av = avatar(m.from);
  if (grouped) av.classList.add('spacer-avatar');
  li.append(av, content);
  m.row = li;
  ol.append(li);
  if (scroll) ol.scrollTop = ol.scrollHeight;
  return li;
}

function statusText(m) {
  switch (m.state) {
    case 'queued': return 'Waiting for the connection — it will be sent when it is back';
    case 'sending': return 'Sending…';
    case 'sent': return m.directSent ? `Delivered to ${m.to}, or kept until ${m.to} is back` : 'Sent';
    case 'failed': return m.reason || 'Not sent';
    default: return '';
  }
}

// ---- the details panel ---------------------------------------------------------

// positionOf and logIndexOf read the optional stream position (history:
// the deliver frame's epoch and offset) and audit-log index (the log_index
// its delivery carries, or our own message's reply's, noteLogIndex) of a
// message, in the shapes
// the client may give them; both are absent on servers without those
// features.
function positionOf(m) {
  const p = m.position || m.stream || null;
  if (p && (p.offset !== undefined || p.epoch !== undefined)) return p;
  if (m.offset !== undefined) return { offset: m.offset, epoch: m.epoch };
  return null;
}
function logIndexOf(m) {
  for (const v of [m.logIndex, m.log_index, m.audit && m.audit.index]) if (Number.isInteger(v)) return v;
  return null;
}

function openDetails(m) {
  const list = $('details-list');
  list.textContent = '';
  const row = (k, v, cls) => {
    const dt = el('dt', '', k);
    const dd = el('dd', cls || '', v);
    list.append(dt, dd);
    return dd;
  };
  const c = conv(active);
  $('details-summary').textContent = m.server
    ? 'Sent by the server itself: its signature was checked in this browser against the server keys.'
    : `${m.from} signed this message with a session key that only their browser holds. This browser checked that signature, and the server's, before showing it.`;
  row('Signer', m.server ? 'the server' : m.from, 'signer');
  if (m.senderKey) row('Key thumbprint', m.senderKey, 'thumbprint mono');
  row('Signed at', new Date(m.ts).toLocaleString(), 'signed-at');
  row('Where', m.direct ? `direct message to ${c.kind === 'dm' && m.mine ? c.peer : 'you'}` : `#${c.name}`);
  row('Encryption', m.encrypted ? 'sealed with the room key, opened here' : 'signed, not encrypted');
  const pos = positionOf(m);
  if (pos) row('Stream position', `${pos.offset}${pos.epoch ? ` (epoch ${pos.epoch})` : ''}`, 'position mono');
  const idx = logIndexOf(m);
  if (idx !== null) row('Audit log', `in the log at index ${idx}`, 'log-index');
  if (m.id) row('Message id', m.id, 'mono');
  $('details').hidden = false;
  $('details').dataset.id = m.id || '';
  $('details-close').focus();
}

function closeDetails() {
  $('details').hidden = true;
}
$('details-close').addEventListener('click', closeDetails);
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape') {
    closeDetails();
    closeDrawer();
  }
});

// ---- sending and the outbox ----------------------------------------------------

function updateCounter() {
  const n = [...$('message-input').value].length;
  const counter = $('length-counter');
  counter.hidden = n < COUNTER_FROM;
  counter.textContent = n > MAX_LENGTH ? `${n - MAX_LENGTH} too many (max ${MAX_LENGTH})` : `${MAX_LENGTH - n} left`;
  counter.classList.toggle('over', n > MAX_LENGTH);
  $('send-button').disabled = $('message-input').disabled || n > MAX_LENGTH;
}
$('message-input').addEventListener('input', updateCounter);

// refresh a local row in place.
function redraw(m) {
  if (m.row && m.row.isConnected) {
    const old = m.row;
    const li = appendMessage(m, false);
    old.replaceWith(li);
  }
}

async function deliver(m) {
  const c = convs.get(m.conv);
  m.state = 'sending';
  redraw(m);
  try {
    const r = c.kind === 'dm' ? await client.dm(c.peer, { text: m.text }) : await client.publish(c.ch, { text: m.text });
    m.state = 'sent';
    m.directSent = c.kind === 'dm';
    if (r && Number.isInteger(r.log_index)) noteLogIndex(c, m, r.log_index);
    if (c.kind === 'room') {
      // The room echoes our own message back, verified: that copy replaces this one.
      c.messages.splice(c.messages.indexOf(m), 1);
      if (c.key === active) renderMessages(); // the groups around it change
      return;
    }
    redraw(m);
  } catch (e) {
    if ((e.code === 'not_connected' || e.code === 'closed') && client && !client.ended) {
      // The connection went away first: it waits for the next one.
      m.state = 'queued';
      if (!outbox.includes(m)) outbox.push(m);
      redraw(m);
      return;
    }
    markNotSent(m, `Not sent: ${humanError(e, c)}`);
  }
}

// noteLogIndex records where the server's audit log put a message we sent
// (the reply's log_index, when the server keeps an audit log): on our own
// copy in a direct conversation, else on the room's echo of it, the
// oldest of ours with that text that has no index yet, now or when it
// arrives (answers and echoes come in the order we sent).
function noteLogIndex(c, m, index) {
  if (c.kind === 'dm') {
    m.logIndex = index;
    return;
  }
  if (c.messages.some((x) => x.mine && x.logIndex === index)) return; // the echo's delivery carried it (§21.3)
  const echo = c.messages.find((x) => x.verified && x.mine && x.logIndex === undefined && x.readable && textOf(x.body) === m.text);
  if (echo) echo.logIndex = index;
  else awaitingIndex.set(c.key, [...(awaitingIndex.get(c.key) || []), { text: m.text, index }]);
}
function claimLogIndex(c, m) {
  const list = awaitingIndex.get(c.key);
  if (!list || !m.verified || !m.mine || !m.readable) return;
  // An echo whose delivery carries its index only settles the reply's.
  const i = m.logIndex !== undefined ? list.findIndex((x) => x.index === m.logIndex) : list.findIndex((x) => x.text === textOf(m.body));
  if (i < 0) return;
  const { index } = list.splice(i, 1)[0];
  if (m.logIndex === undefined) m.logIndex = index;
}

function markNotSent(m, reason) {
  m.state = 'failed';
  m.reason = reason;
  redraw(m);
}

function resend(m) {
  if (!client) return;
  if (client.state !== 'open') {
    m.state = 'queued';
    outbox.push(m);
    redraw(m);
    return;
  }
  deliver(m);
}

async function flushOutbox() {
  while (outbox.length && client && client.state === 'open') {
    await deliver(outbox.shift());
  }
}

$('composer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('message-input');
  const text = input.value.trim();
  const c = conv(active);
  if (!text || !client || !canPost(c)) return;
  if ([...text].length > MAX_LENGTH) {
    toast(`That message is ${[...text].length - MAX_LENGTH} characters over the limit of ${MAX_LENGTH}.`, 'error');
    return;
  }
  input.value = '';
  updateCounter();
  // Our own message, shown at once: a room replaces it by the verified
  // echo; a direct message (no echo) keeps it, marked sent.
  const m = {
    local: true, conv: c.key, text, from: client.sub, to: c.peer, direct: c.kind === 'dm', mine: true,
    receivedAt: Date.now(), state: client.state === 'open' ? 'sending' : 'queued',
  };
  push(c, m, { count: false });
  if (m.state === 'queued') {
    outbox.push(m);
    if ($('banner').dataset.kind === 'reconnecting') showReconnecting();
    return;
  }
  await deliver(m);
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
  if ((warned || left <= warnMs()) && $('banner').dataset.kind !== 'reconnecting') {
    const visible = document.visibilityState === 'visible';
    banner(visible ? `Your session expires in ${fmt(left)} — renewing it automatically…` : `Your session expires in ${fmt(left)}.`, { action: true, kind: 'expiry' });
  }
}

$('banner-action').addEventListener('click', async () => {
  if (!client) return;
  try {
    await client.refresh();
  } catch (e) {
    toast(`The session could not be renewed: ${humanError(e)}`, 'error');
  }
});

document.addEventListener('visibilitychange', () => {
  // Coming back to the tab close to expiry: refresh at once.
  if (client && document.visibilityState === 'visible' && client.expiresAt - client.now() <= warnMs() && !client.refreshing) {
    client.refresh().catch(() => {});
  }
});

// Expose for tests and curious users; showHistory is the hook join uses
// to pre-fill a room with its recent messages.
window.sigilChat = {
  get client() { return client; },
  showHistory,
  openDM,
  get outbox() { return outbox.length; },
};
