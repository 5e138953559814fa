// sigil.js: the Sigil v1 client for browsers (and Node 20), implemented from
// spec.md. A plain ES module: no build step, no runtime dependencies,
// WebCrypto only.
//
//   import { Client } from '/js/sigil.js';
//   const c = new Client({ url: location.origin });
//   await c.login('alice', 'password');      // POST /v1/token with a fresh non-extractable session key
//   await c.connect();                       // WebSocket sigil.v1, hello → welcome
//   c.on('message', (m) => ...);             // every delivery, verified end to end (m.verified)
//   await c.subscribe('rooms.lobby');
//   await c.publish('rooms.lobby', { text: 'hi' });
//   c.can('pub', 'announce.news');           // false: the welcome's grants (§8.3) say the server would refuse it
//
// Every frame sent is signed by the session key (id = crypto.randomUUID(),
// ts corrected by the welcome clock offset, strictly increasing seq). Every
// frame received is verified against the server's JWKS (§10.2) before the
// client acts on it; deliveries are also checked end to end (§10.3). A
// frame that fails is reported through the 'invalid' event, never dropped
// silently and never acted on.
//
// Direct messages: on a server that keeps them (an inbox with history,
// §20.11), each 'direct' event carries its position (m.position); the client
// resumes its inbox after the last one on every reconnect (hello
// inbox_since), and opts.inboxSince resumes a position saved across page
// loads. A gap is a 'gap' event with inbox: true; inboxHistory() pages it.
// A live direct frame that arrives stale (queued behind a long recovery) is
// taken if it carries the inbox's next offset, as a channel's deliver is.
//
// Concurrency: one Client per session. Sends are serialized internally, so
// seq order equals wire order.

import {
  SigilError, KeySet, KeyRing, generateSessionKey, supportsEd25519, signCompact, checkForm, verifySignature,
  b64uDecode, generateAgreementKey, unwrapContentKey, sealBody, ALGS,
} from './jose.js';
import {
  FrameVerifier, openDelivery, decodeTokenClaims, SUBPROTOCOL, TYP_CLIENT, TYP_SESSION, DEFAULT_SKEW_MS,
  DEFAULT_MAX_FRAME, MAX_TOKEN, channelScope, grantsAllow, deliveryPosition, validPosition,
} from './protocol.js';
import { proveInLog } from './audit.js';

export * from './jose.js';
export * from './protocol.js';
export { parseVKey, openCheckpoint, checkProof, proveInLog } from './audit.js';
export { parse as strictParse, validate as strictValidate, isStrict } from './strictjson.js';

/** INBOX is the key of the user's inbox in Client.streams, and Client.history's name for it (§20.11). */
export const INBOX = '@';

/** Close codes of spec §12.3 and what a client does with each. */
export const CLOSE = Object.freeze({
  1000: { meaning: 'normal closure', reconnect: 'no' },
  1001: { meaning: 'server going away', reconnect: 'backoff' },
  1003: { meaning: 'a binary message was sent', reconnect: 'no' },
  1006: { meaning: 'connection lost', reconnect: 'backoff' },
  1007: { meaning: 'a text frame that is not UTF-8 was sent', reconnect: 'no' },
  1008: { meaning: 'too many rejected frames', reconnect: 'no' },
  1009: { meaning: 'frame too large', reconnect: 'no' },
  4000: { meaning: 'no hello within the deadline', reconnect: 'backoff' },
  4001: { meaning: 'hello rejected', reconnect: 'new-token' },
  4002: { meaning: 'token expired', reconnect: 'refresh' },
  4003: { meaning: 'session revoked', reconnect: 'never' },
  4004: { meaning: 'kicked by an administrator', reconnect: 'no' },
  4005: { meaning: 'slow consumer', reconnect: 'backoff' },
  4006: { meaning: 'server error (or a store it needs is unavailable)', reconnect: 'backoff' },
});

/**
 * closeInfo returns what a client does after close code (spec §12.3): its
 * row of CLOSE, or, for a code outside the table, 'no' for a 4xxx code (it
 * may mean something this client does not know) and 'backoff' for any
 * other (1006 and other 1xxx codes).
 */
export function closeInfo(code) {
  return CLOSE[code] || { meaning: 'unknown code', reconnect: code >= 4000 && code <= 4999 ? 'no' : 'backoff' };
}

/** backoffDelay: exponential from 0.5 s up to 30 s, with full jitter (§12.3). */
export function backoffDelay(attempt, rand = Math.random) {
  return Math.floor(rand() * Math.min(30_000, 500 * 2 ** attempt));
}

// MAX_RESIGN bounds how many times one publish or dm sends its message
// again after the server certainly did not accept it (§20.10).
const MAX_RESIGN = 3;

const isLoopback = (host) => host === 'localhost' || host === '[::1]' || host === '::1' || /^127\./.test(host);

/** Client is one Sigil session. */
export class Client {
  /**
   * @param {object} [opts]
   * @param {string} [opts.url] base URL of the server (default: location.origin)
   * @param {'ES256'|'EdDSA'|'auto'} [opts.alg] session key algorithm: ES256 by default; 'auto' picks Ed25519 where supported
   * @param {boolean} [opts.encryption] negotiate body encryption (ekey in hello); default false
   * @param {boolean} [opts.seal] seal outgoing bodies once keys are negotiated; default: the value of encryption
   * @param {function} [opts.WebSocket] WebSocket constructor (default: globalThis.WebSocket)
   * @param {function} [opts.fetch] fetch (default: globalThis.fetch)
   * @param {boolean} [opts.reconnect] reconnect per the close-code table; default true
   * @param {number} [opts.refreshBeforeMs] refresh this long before expiry; default 60 s
   * @param {function} [opts.shouldRefresh] called before an automatic refresh; return false to let the session lapse
   * @param {number} [opts.callTimeoutMs] how long to wait for an answer; default 10 s
   * @param {{epoch: string, offset: number}} [opts.inboxSince] the last inbox position received (e.g. by an earlier page): the first hello resumes after it (§20.11)
   */
  constructor(opts = {}) {
    this.opts = {
      url: globalThis.location ? globalThis.location.origin : undefined,
      alg: ALGS.ES256, encryption: false, reconnect: true, refreshBeforeMs: 60_000, callTimeoutMs: 10_000,
      shouldRefresh: () => true, ...opts,
    };
    this.base = String(this.opts.url || '').replace(/\/+$/, '');
    const u = new URL(this.base);
    if (u.protocol !== 'https:' && !isLoopback(u.hostname)) throw new Error('sigil: https is required except on loopback (spec §2.3)');
    this.WS = this.opts.WebSocket || globalThis.WebSocket;
    this.fetch = this.opts.fetch || globalThis.fetch.bind(globalThis);
    this.listeners = new Map();
    this.state = 'idle'; // idle → connecting → open → closed
    this.seq = 0;
    this.offset = 0; // server clock − local clock, ms (§8.3)
    this.skewMs = DEFAULT_SKEW_MS;
    this.maxFrame = DEFAULT_MAX_FRAME;
    this.pending = new Map(); // cid → {resolve, reject, timer}
    this.channels = new Map(); // ch → Set(members)
    this.streams = new Map(); // ch → {epoch, offset, recoverTo, cid}: positions in channels with history (§20); INBOX: the user's inbox (§20.11)
    if (this.opts.inboxSince) this.streams.set(INBOX, { epoch: this.opts.inboxSince.epoch, offset: this.opts.inboxSince.offset, recoverTo: 0 });
    this.subCids = new Map(); // cid of a sub in flight → ch
    this.unacked = new Map(); // cid → {frame, seq, ts, resent}: pub and dm frames sent and not answered (§20.10)
    this.ring = null; // content keys (KeyRing) when encryption is on
    this.encryptOutgoing = false;
    if (this.opts.seal !== undefined) this.encWanted = !!this.opts.seal;
    this.queue = Promise.resolve();
    this.attempt = 0;
    this.ended = false;
  }

  // ---- events ----------------------------------------------------------------

  /**
   * on subscribes to an event: message, direct, join, leave, presence, error, invalid, expiring, refreshed,
   * state (idle, connecting, open, reconnecting, closed), reconnecting ({inMs, attempt}: the next try),
   * restored (reconnected and subscribed again), welcome, closed, loggedout.
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, ev) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(ev);
      } catch (e) {
        console.error('sigil: listener failed', e);
      }
    }
  }

  /** now is the corrected clock: local time + the welcome offset. */
  now() {
    return Date.now() + this.offset;
  }

  // ---- HTTP --------------------------------------------------------------------

  async httpJSON(path, body, headers = {}) {
    const res = await this.fetch(this.base + path, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const code = (data && data.error) || `http_${res.status}`;
      const e = new SigilError(code, (data && data.message) || res.statusText);
      e.status = res.status;
      e.retryAfter = res.headers.get('Retry-After');
      throw e;
    }
    return data;
  }

  /**
   * loadJWKS fetches and caches the server's JWKS (§13.3). Keys never come
   * from a frame. force fetches again, at most once a minute, or at once
   * with anyAge: before welcome, a connection attempt may fetch once
   * (attempts are spaced by the reconnect backoff).
   */
  async loadJWKS(force = false, anyAge = false) {
    if (this.jwks && !force) return this.jwks;
    if (force && !anyAge && this.jwksAt && Date.now() - this.jwksAt < 60_000) return this.jwks;
    this.jwks = await KeySet.fromJWKS(await this.httpJSON('/.well-known/jwks.json'));
    this.jwksAt = Date.now();
    return this.jwks;
  }

  /**
   * login gets a session token with a username and password (§13.1). Wrong
   * credentials reject with code invalid_grant; too many with rate_limited.
   */
  async login(username, password) {
    return this.#tokenRequest({ grant_type: 'password', username, password });
  }

  /** loginExternal exchanges an identity provider's JWT (§13.1). */
  async loginExternal(assertion) {
    return this.#tokenRequest({ grant_type: 'external', assertion });
  }

  async #tokenRequest(grant) {
    let alg = this.opts.alg;
    if (alg === 'auto') alg = (await supportsEd25519()) ? ALGS.EdDSA : ALGS.ES256;
    this.key = await generateSessionKey(alg);
    await this.loadJWKS();
    const sent = Date.now();
    const res = await this.httpJSON('/v1/token', { ...grant, jwk: this.key.jwk });
    await this.#acceptToken(res, sent);
    this.ended = false;
    this.seq = 0;
    return { sub: this.sub, roles: this.roles, sid: this.sid, expiresAt: this.expiresAt };
  }

  // acceptToken checks a token the server returned: signed by the JWKS with
  // the session typ, strict claims, bound to our key, for the expected
  // session. It also gives a first clock offset from iat.
  async #acceptToken(res, sentAt) {
    if (!res || typeof res.token !== 'string') throw new SigilError('bad_token', 'no token in the response');
    const claims = await this.#checkToken(res.token);
    if (claims.cnf.jkt !== this.key.jkt) throw new SigilError('key_mismatch', 'the token is not bound to our session key');
    if (this.sid && claims.sid !== this.sid) throw new SigilError('bad_token', 'the refreshed token is for another session');
    if (!this.sid) {
      // First estimate of the server clock (±1 s): iat is the server's time
      // of issue. welcome refines it (§8.3).
      this.offset = claims.iat * 1000 - sentAt;
      if (Math.abs(this.offset) < 2000) this.offset = 0;
    }
    this.token = res.token;
    this.claims = claims;
    this.sid = claims.sid;
    this.sub = claims.sub;
    this.roles = claims.roles;
    this.expiresAt = claims.exp * 1000;
    if (res.refresh_token) this.refreshToken = res.refresh_token;
    this.wsURL = res.ws_url || this.wsURL || this.base.replace(/^http/, 'ws') + '/v1/ws';
    this.#scheduleRefresh();
  }

  async #checkToken(token) {
    const form = checkForm(token, MAX_TOKEN, TYP_SESSION);
    let key = this.jwks.get(form.hdr.kid);
    if (!key) key = (await this.loadJWKS(true)).get(form.hdr.kid);
    if (!key) throw new SigilError('bad_token', 'token signed by a key not in the JWKS');
    const payload = await verifySignature(form, key);
    try {
      return decodeTokenClaims(payload);
    } catch (e) {
      throw new SigilError('bad_token', e.message);
    }
  }

  // ---- signing -------------------------------------------------------------------

  /** sign makes a client frame for this session with the next seq. */
  async sign(fields) {
    const env = { id: globalThis.crypto.randomUUID(), ts: Math.round(this.now()), seq: ++this.seq, sid: this.sid, sub: this.sub };
    for (const k of ['act', 'ch', 'to', 'cid', 'body', 'enc']) if (fields[k] !== undefined) env[k] = fields[k];
    return { frame: await signCompact(this.key, TYP_CLIENT, JSON.stringify(env)), env };
  }

  // send signs and writes a frame; sends are serialized so that seq order
  // is wire order.
  #send(fields) {
    const p = this.queue.then(async () => {
      if (this.ended) throw new SigilError('session_ended', 'the session has ended; log in again');
      if (!this.ws || this.ws.readyState !== 1) throw new SigilError('not_connected', 'not connected');
      const { frame, env } = await this.sign(fields);
      if (frame.length > this.maxFrame) throw new SigilError('too_large', `frame is over ${this.maxFrame} bytes`);
      this.ws.send(frame);
      if ((env.act === 'pub' || env.act === 'dm') && env.cid) this.unacked.set(env.cid, { frame, seq: env.seq, ts: env.ts, resent: false });
      return env;
    });
    this.queue = p.catch(() => {});
    return p;
  }

  /** call sends a frame with a cid and resolves with the answer's body (rejects with the error frame's code). */
  call(act, fields = {}) {
    const cid = globalThis.crypto.randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(cid);
        reject(new SigilError('timeout', `no answer to ${act}`));
      }, this.opts.callTimeoutMs);
      this.pending.set(cid, { resolve, reject, timer, act });
      if (act === 'sub') this.subCids.set(cid, fields.ch);
      this.#send({ ...fields, act, cid }).catch((e) => {
        clearTimeout(timer);
        this.pending.delete(cid);
        reject(e);
      });
    });
  }

  async #sealFor(act, ch, body) {
    if (!this.encryptOutgoing || !this.ring || body === undefined) return { body };
    const k = this.ring.newest(act === 'pub' ? channelScope(ch) : 'session', this.now());
    if (!k) return { body };
    return { enc: await sealBody(k, body) };
  }

  /**
   * subscribe joins a channel; resolves with its members. On a channel
   * with history (§20) the client keeps its position and, when it
   * subscribes again (after a reconnect), first receives what it missed;
   * since ({epoch, offset}, e.g. saved from a message's position) resumes
   * after a position. What cannot be recovered is reported by a 'gap'
   * event {ch, from, to} before the messages that follow it.
   */
  async subscribe(ch, { since } = {}) {
    if (since && !this.streams.has(ch)) this.streams.set(ch, { epoch: since.epoch, offset: since.offset, recoverTo: 0 });
    const st = this.streams.get(ch);
    const fields = { ch };
    if (st && st.epoch) fields.body = { since: { epoch: st.epoch, offset: st.offset } };
    const r = await this.call('sub', fields);
    if (r && typeof r.key === 'string' && this.agreement) await this.#addWrappedKey(r.key, channelScope(ch));
    this.channels.set(ch, new Set((r && r.members) || []));
    this.emit('presence', { ch, members: [...this.channels.get(ch)] });
    return [...this.channels.get(ch)];
  }

  /**
   * history reads a page of a channel's history (§20.5): {limit, before}
   * or {limit, after} or {limit}. Resolves with {epoch, top, more,
   * messages}, each message verified end to end like a live one, with
   * its position.
   */
  async history(ch, { limit, before, after } = {}) {
    const body = {};
    if (limit !== undefined) body.limit = limit;
    if (before !== undefined) body.before = before;
    if (after !== undefined) body.after = after;
    const r = await this.call('history', ch === INBOX ? { to: this.sub, body } : { ch, body });
    const out = { epoch: r.epoch, top: r.top, more: r.more, messages: [] };
    let prev = 0;
    for (const f of r.frames) {
      const { env, position } = await this.verifier.verifyStored(f, ch, ch === INBOX ? { to: this.sub } : {});
      if (position.epoch !== r.epoch || position.offset <= prev || position.offset > r.top) {
        throw new SigilError('wrong_session', 'stored frame out of place');
      }
      prev = position.offset;
      out.messages.push(await this.#message(env, position));
    }
    return out;
  }

  /**
   * inboxHistory reads a page of the user's own inbox (§20.11): its stored
   * direct messages, each verified like a live one, with its position.
   */
  async inboxHistory(q = {}) {
    return this.history(INBOX, q);
  }

  /** unsubscribe leaves a channel. */
  async unsubscribe(ch) {
    this.channels.delete(ch);
    this.streams.delete(ch);
    return this.call('unsub', { ch });
  }

  /** publish sends body to every subscriber of ch (sealed with the channel key when encryption is on). */
  async publish(ch, body) {
    return this.#resendable(async () => this.call('pub', { ch, ...(await this.#sealFor('pub', ch, body)) }));
  }

  /** dm sends body to every session of user `to`. */
  async dm(to, body) {
    return this.#resendable(async () => this.call('dm', { to, ...(await this.#sealFor('dm', undefined, body)) }));
  }

  // #resendable makes a pub or dm call, and makes it again, as a new frame,
  // when its frame was lost with a connection and certainly never accepted
  // (not_accepted, §20.10): at most MAX_RESIGN times, then not_accepted.
  async #resendable(call) {
    for (let i = 0; ; i++) {
      try {
        return await call();
      } catch (e) {
        if (!(e instanceof SigilError) || e.code !== 'not_accepted' || i >= MAX_RESIGN || this.ended) throw e;
      }
    }
  }

  /** presence asks who is in ch. */
  async presence(ch) {
    const r = await this.call('presence', { ch });
    return (r && r.members) || [];
  }

  /** ping measures liveness. */
  ping() {
    return this.call('ping');
  }

  /**
   * prove checks that audit log entry index (a pub or dm reply's log_index,
   * spec.md §21.4) is in the server's log, against the checkpoint key vkey
   * (the log's log.vkey, pinned by the caller). It resolves to
   * {index, size, origin, entry}; entry.frame is the message's frame.
   */
  prove(index, vkey) {
    return proveInLog(this.base, index, vkey, (u, o) => this.fetch(u, o));
  }

  /** request calls an application action (a name with a dot, §9.4). */
  async request(act, body, ch) {
    return this.call(act, { ch, ...(await this.#sealFor(act, ch, body)) });
  }

  /** setEncryption turns sealing of outgoing bodies on or off (keys must have been negotiated). */
  setEncryption(on) {
    this.encWanted = !!on;
    this.encryptOutgoing = !!on && !!this.ring;
    return this.encryptOutgoing;
  }

  /**
   * can reports whether the grants of the last welcome (§8.3) allow act on
   * ch (ch omitted for dm, ping…). Advisory: the server still decides. If
   * the server announced no grants, the rights are unknown and can is true.
   */
  can(act, ch) {
    return !Array.isArray(this.grants) || grantsAllow(this.grants, act, ch);
  }

  get encryptionAvailable() {
    return !!this.ring;
  }

  // ---- connection ------------------------------------------------------------------

  /** connect opens the WebSocket, sends hello and resolves with the welcome body. */
  async connect() {
    if (!this.token) throw new SigilError('not_logged_in', 'login first');
    await this.loadJWKS();
    this.#setState('connecting');
    if (!this.verifier) {
      this.verifier = new FrameVerifier({ keys: this.jwks, sid: this.sid, sub: this.sub, skewMs: this.skewMs, now: () => this.now() });
    }
    if (this.opts.encryption && globalThis.crypto.subtle) {
      try {
        this.agreement = await generateAgreementKey(); // fresh per hello (§11.3)
      } catch {
        this.agreement = null;
      }
    }
    const ws = new this.WS(this.wsURL, SUBPROTOCOL);
    this.ws = ws;
    this.welcomed = false;
    return new Promise((resolve, reject) => {
      this.welcomeWaiter = { resolve, reject };
      ws.onopen = () => {
        if (ws.protocol && ws.protocol !== SUBPROTOCOL) {
          ws.close(1002, 'wrong subprotocol');
          return;
        }
        const body = { token: this.token, jwk: this.key.jwk };
        if (this.agreement) body.ekey = this.agreement.jwk;
        const ib = this.streams.get(INBOX);
        if (ib && ib.epoch) body.inbox_since = { epoch: ib.epoch, offset: ib.offset }; // §20.11
        this.helloCid = globalThis.crypto.randomUUID(); // the welcome must echo it (§8.3)
        this.sign({ act: 'hello', cid: this.helloCid, body }).then((f) => ws.send(f.frame)).catch((e) => reject(e));
      };
      ws.onmessage = (ev) => {
        this.inbox = (this.inbox || Promise.resolve()).then(() => this.#onFrame(ev.data, ws)).catch((e) => console.error('sigil:', e));
      };
      // The close is handled after the frames that arrived before it.
      ws.onclose = (ev) => {
        this.inbox = (this.inbox || Promise.resolve()).then(() => this.#onClose(ws, ev.code, ev.reason)).catch((e) => console.error('sigil:', e));
      };
      ws.onerror = () => {};
    });
  }

  #setState(s) {
    this.state = s;
    this.emit('state', s);
  }

  // #violation ends a connection whose first server frame is not the
  // welcome answering the hello, nor the error rejecting it (§8.3): nothing
  // acts on the frame, the socket is closed (1002 where the WebSocket API
  // allows it; browsers allow only 1000) and connect() rejects with
  // protocol_violation. A reconnect attempt then retries with backoff.
  #violation(ws, message) {
    if (ws !== this.ws) return;
    this.ws = null;
    try {
      ws.close(1002, 'protocol violation');
    } catch {
      ws.close(1000, 'protocol violation');
    }
    const w = this.welcomeWaiter;
    this.welcomeWaiter = null;
    this.#setState('closed');
    this.emit('invalid', { code: 'protocol_violation', message });
    if (w) w.reject(new SigilError('protocol_violation', message));
  }

  async #onFrame(data, ws) {
    const first = !this.welcomed && ws === this.ws; // the connection's first frame
    if (typeof data !== 'string') {
      if (data && typeof data.toString === 'function' && globalThis.Buffer && globalThis.Buffer.isBuffer(data)) data = data.toString('utf8');
      else if (first) return this.#violation(ws, 'a binary message before welcome');
      else {
        this.emit('invalid', { code: 'malformed', message: 'binary server frame' });
        return;
      }
    }
    let env;
    try {
      env = await this.verifier.verify(data);
    } catch (e) {
      if (e.code === 'stale' && this.welcomed && (await this.#late(data))) return;
      if (e.code === 'unknown_key' && e.kid) {
        // Refetch the JWKS in case the server rotated its key (§13.3): at
        // most once a minute, or once for this connection attempt before
        // welcome (the first frame decides the attempt).
        try {
          this.verifier.keys = await this.loadJWKS(true, !this.welcomed);
          env = await this.verifier.verify(data);
        } catch (e2) {
          e = e2;
        }
      }
      if (!env) {
        // Before welcome, a rejected hello is answered by an error frame without sid (§8.2).
        if (!this.welcomed && e.code === 'wrong_session') {
          env = await this.verifier.verify(data, { preWelcome: true }).catch(() => null);
        }
        if (!env && first) return this.#violation(ws, `the first frame does not verify (${e.code || e.message})`);
        if (!env) {
          this.emit('invalid', { code: e.code || 'internal', message: e.message, frame: data });
          return;
        }
      }
    }
    if (first && !(env.act === 'welcome' && env.cid === this.helloCid) && !(env.act === 'error' && !env.sid)) {
      return this.#violation(ws, `the first frame is ${env.act}, not the welcome answering the hello`);
    }
    try {
      await this.#dispatch(env);
    } catch (e) {
      this.emit('invalid', { code: e.code || 'internal', message: e.message, frame: data, env });
    }
  }

  async #dispatch(env) {
    const b = env.body;
    switch (env.act) {
      case 'welcome': {
        if (!b || b.sid !== this.sid || b.sub !== this.sub) throw new SigilError('wrong_session', 'welcome for another session');
        this.offset = b.time - Date.now();
        if (b.skew) this.skewMs = this.verifier.skewMs = b.skew;
        if (b.max_frame) this.maxFrame = b.max_frame;
        if (typeof b.seq === 'number' && b.seq > this.seq) this.seq = b.seq;
        if (typeof b.exp === 'number') this.expiresAt = b.exp;
        if (b.roles) this.roles = b.roles;
        this.grants = Array.isArray(b.grants) ? b.grants : null; // §8.3; null: not announced
        this.ring = null;
        if (typeof b.key === 'string' && this.agreement) {
          this.ring = new KeyRing();
          await this.#addWrappedKey(b.key, 'session');
        }
        if (!this.ring) this.encryptOutgoing = false;
        else if (this.encWanted !== undefined) this.encryptOutgoing = this.encWanted;
        else this.encryptOutgoing = !!this.opts.encryption;
        this.#onInbox(env);
        this.welcomed = true;
        this.attempt = 0;
        this.#setState('open');
        this.#scheduleRefresh();
        const w = this.welcomeWaiter;
        this.welcomeWaiter = null;
        if (w) w.resolve(b);
        this.emit('welcome', b);
        return;
      }
      case 'reply':
      case 'pong':
      case 'refreshed':
      case 'error': {
        if (env.cid && this.subCids.has(env.cid)) {
          this.subCids.delete(env.cid);
          if (env.act === 'reply') this.#onSubReply(env);
        }
        const p = env.cid && this.pending.get(env.cid);
        const u = env.cid && this.unacked.get(env.cid);
        if (u) this.unacked.delete(env.cid);
        if (p) {
          this.pending.delete(env.cid);
          clearTimeout(p.timer);
          if (env.act === 'error') {
            let e = new SigilError(b && b.code ? b.code : 'internal', b && b.message);
            // The answer to a copy sent again after a lost connection (§20.10):
            // replay_seq means certainly not accepted; replay_id or stale, unknown.
            if (u && b && b.code === 'replay_seq') e = new SigilError('not_accepted', 'the server did not accept the message; sending it again is safe');
            else if (u && u.resent && b && (b.code === 'replay_id' || b.code === 'stale')) e = new SigilError('connection_lost', 'the connection was lost before the answer; the outcome is unknown');
            if (b && b.ref) e.ref = b.ref;
            p.reject(e);
          } else {
            p.resolve(b);
          }
        } else if (env.act === 'error') {
          if (!this.welcomed && this.welcomeWaiter) {
            this.helloError = b;
          }
          this.emit('error', { code: b && b.code, message: b && b.message, ref: b && b.ref });
        }
        return;
      }
      case 'deliver':
      case 'direct':
        return this.#onDelivery(env);
      case 'history':
        return this.#onHistory(env);
      case 'join':
      case 'leave': {
        const who = b && b.sub;
        const set = this.channels.get(env.ch);
        if (set && typeof who === 'string') {
          if (env.act === 'join') set.add(who);
          else set.delete(who);
          this.emit('presence', { ch: env.ch, members: [...set] });
        }
        this.emit(env.act, { ch: env.ch, sub: who });
        return;
      }
      case 'expiring':
        // A warning about a token this client has already replaced (it
        // crossed our refresh) is stale: ignore it (§12.1).
        if (!b || typeof b.exp !== 'number' || b.exp < this.expiresAt) return;
        this.emit('expiring', { exp: b.exp, inMs: b.exp - this.now() });
        this.expiresAt = b.exp;
        this.#scheduleRefresh(true);
        return;
      case 'key':
        if (b && typeof b.key === 'string' && this.agreement) {
          const rec = await this.#addWrappedKey(b.key, env.ch ? channelScope(env.ch) : undefined);
          // The previous key stays valid for 60 s (§11.5).
          if (rec) this.ring.retire(rec.scope, rec.kid, this.now() + 60_000);
        }
        return;
      default:
        this.emit('frame', env);
    }
  }

  async #addWrappedKey(jwe, expectScope) {
    const rec = await unwrapContentKey(jwe, this.agreement.privateKey);
    if (expectScope && rec.scope !== expectScope) throw new SigilError('bad_enc', `wrapped key scope ${rec.scope}; expected ${expectScope}`);
    if (!this.ring) this.ring = new KeyRing();
    this.ring.add(rec);
    return rec;
  }

  // ---- history and recovery (§20) ---------------------------------------------------

  #onSubReply(env) {
    const b = env.body || {};
    const st = this.streams.get(env.ch);
    if (!b.stream || !validPosition(b.stream)) {
      this.streams.delete(env.ch);
      if (b.recovered === false) this.emit('gap', { ch: env.ch, from: st ? { epoch: st.epoch, offset: st.offset } : null, to: null });
      return;
    }
    if (b.recovered === true && st) {
      st.recoverTo = b.stream.offset;
      st.cid = env.cid;
      return;
    }
    if (b.recovered === false) this.emit('gap', { ch: env.ch, from: st ? { epoch: st.epoch, offset: st.offset } : null, to: { ...b.stream } });
    this.streams.set(env.ch, { epoch: b.stream.epoch, offset: b.stream.offset, recoverTo: 0 });
  }

  /** onInbox takes the inbox position from a welcome, as #onSubReply does a channel's (§20.11). */
  #onInbox(env) {
    const b = env.body || {};
    const st = this.streams.get(INBOX);
    const from = st && st.epoch ? { epoch: st.epoch, offset: st.offset } : null;
    if (!b.inbox || !validPosition(b.inbox)) {
      this.streams.delete(INBOX);
      if (b.inbox_recovered === false) this.emit('gap', { ch: null, inbox: true, from, to: null });
      return;
    }
    if (b.inbox_recovered === true && st) {
      st.recoverTo = b.inbox.offset;
      st.cid = env.cid;
      return;
    }
    if (b.inbox_recovered === false) this.emit('gap', { ch: null, inbox: true, from, to: { ...b.inbox } });
    this.streams.set(INBOX, { epoch: b.inbox.epoch, offset: b.inbox.offset, recoverTo: 0 });
  }

  async #onHistory(env) {
    const key = env.ch || INBOX;
    const st = this.streams.get(key);
    const frames = env.body && env.body.frames;
    if (!st || st.cid !== env.cid || !(st.recoverTo > st.offset) || !Array.isArray(frames)) {
      this.emit('invalid', { code: 'wrong_session', message: 'a history frame no sub asked for', env });
      return;
    }
    for (const f of frames) {
      try {
        const { env: d, position } = await this.verifier.verifyStored(f, env.ch, env.ch ? {} : { to: this.sub });
        await this.#positioned(d, position, true);
      } catch (e) {
        this.emit('invalid', { code: e.code || 'internal', message: e.message, frame: f });
      }
    }
  }

  /**
   * late takes a deliver frame, or a direct frame to this user, that failed
   * only for being stale if it carries the next position of its channel's
   * stream or of the inbox (§20.4, §20.11).
   */
  async #late(data) {
    let r;
    try {
      r = await this.verifier.verifyLate(data);
    } catch {
      return false;
    }
    const st = this.streams.get(r.env.act === 'direct' ? INBOX : r.env.ch);
    if (!st || st.recoverTo > st.offset || r.position.epoch !== st.epoch || r.position.offset !== st.offset + 1) return false;
    await this.#positioned(r.env, r.position, false);
    return true;
  }

  /** positioned delivers a deliver frame with a position once, in offset order, reporting gaps first. */
  async #positioned(env, position, stored) {
    const inbox = env.act === 'direct';
    const key = inbox ? INBOX : env.ch;
    if (!inbox && !this.channels.has(env.ch)) return;
    const st = this.streams.get(key) || { epoch: '', offset: 0, recoverTo: 0 };
    if (stored && (position.epoch !== st.epoch || position.offset !== st.offset + 1 || position.offset > st.recoverTo)) {
      throw new SigilError('wrong_session', `stored frame at ${position.epoch}:${position.offset} does not follow ${st.epoch}:${st.offset}`);
    }
    if (position.epoch === st.epoch && position.offset <= st.offset) return; // a duplicate
    if (position.epoch !== st.epoch || position.offset !== st.offset + 1) {
      const g = { ch: inbox ? null : env.ch, from: st.epoch ? { epoch: st.epoch, offset: st.offset } : null, to: { epoch: position.epoch, offset: position.offset - 1 } };
      this.emit('gap', inbox ? { ...g, inbox: true } : g);
    }
    this.streams.set(key, { ...st, epoch: position.epoch, offset: position.offset });
    const m = await this.#message(env, position);
    this.emit(inbox ? 'direct' : 'message', m);
  }

  /** message opens a delivery into the object 'message' events carry (verified false on failure). */
  async #message(env, position) {
    const db = env.body || {};
    const base = {
      kind: env.act, ch: env.ch, to: env.to, from: typeof db.sub === 'string' ? db.sub : '(unknown)',
      deliveryId: env.id, receivedAt: this.now(), position,
    };
    let d;
    try {
      d = await openDelivery(env, this.ring, { keys: this.jwks });
    } catch (e) {
      return { ...base, verified: false, code: e.code || 'internal', error: e.message, body: undefined };
    }
    return {
      ...base, verified: true, from: d.sender.sub, server: !!d.sender.server, id: d.env.id, ts: d.env.ts,
      encrypted: d.encrypted, readable: d.readable, logIndex: d.logIndex,
      body: d.encrypted ? d.env.plain : d.env.body, frame: db.frame, senderKey: d.sender.key.jkt,
      mine: d.sender.sub === this.sub && d.env.sid === this.sid,
    };
  }

  async #onDelivery(env) {
    let position = null;
    try {
      position = deliveryPosition(env);
    } catch (e) {
      this.emit('message', { kind: env.act, ch: env.ch, verified: false, code: e.code || 'internal', error: e.message, body: undefined });
      return;
    }
    if (position) return this.#positioned(env, position, false);
    const db = env.body || {};
    const base = {
      kind: env.act, ch: env.ch, to: env.to, from: typeof db.sub === 'string' ? db.sub : '(unknown)',
      deliveryId: env.id, receivedAt: this.now(),
    };
    let d;
    try {
      d = await openDelivery(env, this.ring, { keys: this.jwks });
    } catch (e) {
      this.emit(env.act === 'deliver' ? 'message' : 'direct', {
        ...base, verified: false, code: e.code || 'internal', error: e.message, body: undefined,
      });
      return;
    }
    const m = {
      ...base, verified: true, from: d.sender.sub, server: !!d.sender.server, id: d.env.id, ts: d.env.ts,
      encrypted: d.encrypted, readable: d.readable, logIndex: d.logIndex,
      body: d.encrypted ? d.env.plain : d.env.body, frame: db.frame, senderKey: d.sender.key.jkt,
      mine: d.sender.sub === this.sub && d.env.sid === this.sid,
    };
    this.emit(env.act === 'deliver' ? 'message' : 'direct', m);
  }

  // ---- refresh (§12.2) -----------------------------------------------------------------

  #scheduleRefresh(soon = false) {
    clearTimeout(this.refreshTimer);
    if (!this.expiresAt || this.ended) return;
    const lead = Math.min(this.opts.refreshBeforeMs, Math.max(1000, (this.expiresAt - this.claims.iat * 1000) / 4));
    let wait = this.expiresAt - lead - this.now();
    if (soon) wait = Math.min(wait, 0);
    this.refreshTimer = setTimeout(() => this.#autoRefresh(), Math.max(0, wait));
    if (this.refreshTimer.unref) this.refreshTimer.unref();
  }

  async #autoRefresh() {
    if (this.ended || this.refreshing) return;
    if (!this.opts.shouldRefresh()) {
      // Inactive: let it lapse, but look again shortly in case the user comes back.
      this.emit('expiring', { exp: this.expiresAt, inMs: this.expiresAt - this.now(), paused: true });
      if (this.expiresAt - this.now() > 1000) {
        this.refreshTimer = setTimeout(() => this.#autoRefresh(), Math.min(5000, this.expiresAt - this.now() - 500));
      }
      return;
    }
    await this.refresh().catch(() => {}); // a failure has already ended the session
  }

  /**
   * refresh renews the session token: in-band when connected (§12.2),
   * else over HTTP with a proof (§13.2). A failed refresh ends the session
   * (fail closed).
   */
  async refresh() {
    if (!this.refreshToken) throw new SigilError('no_refresh_token', 'no refresh token');
    this.refreshing = true;
    try {
      const rt = this.refreshToken;
      this.refreshToken = null; // single use (§4.3)
      let res;
      if (this.ws && this.ws.readyState === 1 && this.welcomed) {
        const b = await this.call('refresh', { body: { refresh_token: rt } });
        res = { token: b.token, refresh_token: b.refresh_token };
      } else {
        let proof;
        await (this.queue = this.queue.then(async () => {
          proof = (await this.sign({ act: 'refresh', body: { refresh_token: rt } })).frame;
        }));
        res = await this.httpJSON('/v1/refresh', { refresh_token: rt, proof });
      }
      await this.#acceptToken(res, Date.now());
      this.emit('refreshed', { exp: this.expiresAt });
      return this.expiresAt;
    } catch (e) {
      // Fail closed (§12.2): a session whose refresh failed stops sending.
      this.#logout(`your session could not be renewed (${e.code || e.message}); please log in again`, 'refresh_failed');
      throw e;
    } finally {
      this.refreshing = false;
    }
  }

  // ---- admin (Go server; not part of the protocol) --------------------------------------

  /** admin calls the Go server's admin API (role admin): op 'sessions' | 'revoke' | 'kick'. */
  async admin(op, req) {
    const body = req === undefined ? {} : req;
    let proof;
    await (this.queue = this.queue.then(async () => {
      proof = (await this.sign({ act: `admin.${op}`, body: { jwk: this.key.jwk, req: body } })).frame;
    }));
    return this.httpJSON(`/v1/admin/${op}`, req === undefined ? undefined : body, {
      Authorization: `Bearer ${this.token}`, 'Sigil-Proof': proof,
    });
  }

  // ---- closing and reconnecting (§12.3) --------------------------------------------------------

  #onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    const wasWelcomed = this.welcomed;
    this.welcomed = false;
    const info = closeInfo(code);
    for (const [cid, p] of this.pending) {
      // A pub or dm whose answer is lost waits for the reconnection, which
      // sends it again (§20.10).
      if (this.unacked.has(cid) && info.reconnect === 'backoff' && !this.ended) continue;
      this.unacked.delete(cid);
      clearTimeout(p.timer);
      p.reject(new SigilError('closed', `connection closed (${code})`));
      this.pending.delete(cid);
    }
    const ev = { code, reason: reason || info.meaning, meaning: info.meaning, helloError: this.helloError };
    this.helloError = null;
    if (this.welcomeWaiter) {
      const w = this.welcomeWaiter;
      this.welcomeWaiter = null;
      const e = new SigilError((ev.helloError && ev.helloError.code) || `close_${code}`, (ev.helloError && ev.helloError.message) || info.meaning);
      e.closeCode = code;
      if (!wasWelcomed && (info.reconnect !== 'backoff' || this.attempt === 0)) w.reject(e);
    }
    this.#setState('closed');
    this.emit('closed', ev);
    if (this.ended) return;
    if (code === 4003) return this.#logout('your session was revoked; please log in again', 'revoked');
    if (code === 4004) return this.#logout('you were disconnected by an administrator', 'kicked');
    if (code === 4001) return this.#logout('the server refused this session; please log in again', 'hello_rejected');
    if (code === 1000 || !this.opts.reconnect) return;
    if (info.reconnect === 'no') return this.#logout(`disconnected: ${info.meaning} (${code})`, 'closed');
    if (info.reconnect === 'refresh') {
      if (!this.refreshToken) return this.#logout('your session expired; please log in again', 'expired');
      return this.refresh().then(() => this.#reconnect(), () => {});
    }
    this.#reconnect();
  }

  #reconnect() {
    if (this.ended) return;
    const delay = backoffDelay(this.attempt++);
    this.#setState('reconnecting');
    this.emit('reconnecting', { inMs: delay, attempt: this.attempt });
    this.reconnectTimer = setTimeout(async () => {
      if (this.ended) return;
      try {
        if (this.expiresAt - this.now() < 5000) await this.refresh();
        await this.connect();
        for (const ch of [...this.channels.keys()]) await this.subscribe(ch).catch(() => {});
        this.#resend();
        // Connected again and subscribed again: what waited for the
        // connection can go out now.
        this.emit('restored', { channels: [...this.channels.keys()] });
      } catch (e) {
        if (!this.ws && !this.ended && (!e.closeCode || closeInfo(e.closeCode).reconnect === 'backoff')) this.#reconnect();
      }
    }, delay);
  }

  // resend sends the unanswered pub and dm frames again, byte for byte, in
  // seq order, while they are fresh (§20.10); the others are given up.
  #resend() {
    const list = [...this.unacked.entries()].sort((a, b) => a[1].seq - b[1].seq);
    for (const [cid, u] of list) {
      const p = this.pending.get(cid);
      if (!p) {
        this.unacked.delete(cid);
        continue;
      }
      if (this.now() > u.ts + this.skewMs - 1000) {
        this.unacked.delete(cid);
        this.pending.delete(cid);
        clearTimeout(p.timer);
        p.reject(new SigilError('connection_lost', 'the connection was lost before the answer; the outcome is unknown'));
        continue;
      }
      u.resent = true;
      this.queue = this.queue.then(() => {
        if (this.ws && this.ws.readyState === 1) this.ws.send(u.frame);
      }).catch(() => {});
    }
  }

  #logout(message, reason) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.reconnectTimer);
    if (this.ws) {
      try {
        this.ws.close(1000, 'logout');
      } catch {
        /* already closed */
      }
    }
    this.emit('loggedout', { reason, message });
  }

  /** close ends the session on this side: closes the socket (1000) and stops refreshing. */
  close() {
    this.#logout('logged out', 'logout');
  }
}
