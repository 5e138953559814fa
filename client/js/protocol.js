// protocol.js: Sigil v1 verification (spec.md §4, §6–§10), transport-free.
//
//   decodeEnvelope          strict claims of §6 for client or server frames
//   TokenVerifier           session tokens, §4.2
//   Verifier                the server pipeline: verifyHello (§8.2), verify (§7)
//   FrameVerifier           the client's check of every server frame (§10.2)
//   openDelivery            the end-to-end check of a deliver/direct (§10.3)
//   Policy, ReplayStore, Revocations
//   grantsAllow             what a welcome's grants allow (§8.3)

import { members, StrictJSONError } from './strictjson.js';
import {
  SigilError, fail, b64uDecode, checkForm, verifySignature, importPublicJWK, rawString, rawUint,
  isCanonicalUUID, openBody, enc as utf8enc, validChannel, checkJWKMembers,
} from './jose.js';

export const SUBPROTOCOL = 'sigil.v1';
export const TYP_CLIENT = 'sigil-client+jws';
export const TYP_SERVER = 'sigil-server+jws';
export const TYP_SESSION = 'sigil-session+jwt';
export const DEFAULT_SKEW_MS = 30_000;
export const DEFAULT_MAX_FRAME = 65_536;
export const MAX_SERVER_FRAME = 1 << 20;
export const MAX_TOKEN = 4096;
const MAX_ENC = 1 << 20;

const bytelen = (s) => utf8enc.encode(s).length;

// ---- names (§6.5) --------------------------------------------------------------

export function validAction(a) {
  return typeof a === 'string' && /^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$/.test(a);
}

export function isAppAction(a) {
  return validAction(a) && a.includes('.');
}

export { validChannel };

export const channelScope = (ch) => `ch:${ch}`;

// ---- envelope (§6.1) -------------------------------------------------------------

const CLAIM_LIMITS = { id: 36, sid: 36, sub: 256, act: 64, ch: 128, to: 256, cid: 64, enc: MAX_ENC };

/**
 * decodeEnvelope checks a payload (bytes) under §6 for a client frame
 * (client = true) or a server frame, and returns the envelope: an object
 * with the claims, plus `bodyText` (the raw body JSON, if any). Throws
 * Error with a reason; the caller maps it to bad_claims.
 */
export function decodeEnvelope(payload, client) {
  let m;
  try {
    m = members(payload);
  } catch (e) {
    throw new Error(e instanceof StrictJSONError ? e.message : String(e));
  }
  const env = {};
  for (const [name, raw] of m) {
    switch (name) {
      case 'ts':
        env.ts = rawUint(raw, 'ts', 0);
        break;
      case 'seq':
        env.seq = rawUint(raw, 'seq', 1);
        break;
      case 'body':
        env.body = JSON.parse(raw);
        env.bodyText = raw;
        break;
      case 'id': case 'sid': case 'sub': case 'act': case 'ch': case 'to': case 'cid': case 'enc':
        env[name] = rawString(raw, name, CLAIM_LIMITS[name]);
        break;
      default:
        throw new Error(`unknown claim ${JSON.stringify(name)}`);
    }
  }
  for (const r of client ? ['id', 'ts', 'seq', 'sid', 'sub', 'act'] : ['id', 'ts', 'act']) {
    if (!m.has(r)) throw new Error(`missing claim ${r}`);
  }
  if (!isCanonicalUUID(env.id)) throw new Error('id must be a canonical lowercase UUID');
  if (!client && m.has('seq')) throw new Error('server frames carry no seq');
  if (!client && m.has('sub')) throw new Error('server frames carry no sub');
  if (!client && m.has('enc')) throw new Error('server frames carry no enc');
  if (m.has('sid') && !isCanonicalUUID(env.sid)) throw new Error('sid must be a canonical lowercase UUID');
  if (m.has('sub') && env.sub === '') throw new Error('sub must not be empty');
  if (!validAction(env.act)) throw new Error('act is not a valid action name');
  if (m.has('ch') && !validChannel(env.ch)) throw new Error('ch is not a valid channel name');
  for (const n of ['to', 'cid', 'enc']) if (m.has(n) && env[n] === '') throw new Error(`${n} must not be empty`);
  if (m.has('enc') && m.has('body')) throw new Error('body and enc are mutually exclusive');
  return env;
}

/**
 * checkAction checks that an accepted client frame of a built-in action
 * carries exactly the fields of its row of §9.1 (besides the claims every
 * client frame has and cid); throws bad_request otherwise (§9.5).
 * Application actions and unknown names are not checked here.
 */
export function checkAction(env) {
  const ch = 'ch' in env;
  const to = 'to' in env;
  const payload = 'body' in env || 'enc' in env;
  let msg = '';
  switch (env.act) {
    case 'hello':
      msg = 'hello is only allowed as the first frame';
      break;
    case 'ping':
      if (ch || to || payload) msg = 'ping carries no ch, to, body or enc';
      break;
    case 'sub': case 'history': {
      const inbox = env.act === 'history' && to && !ch; // the inbox's history (§20.11)
      if (!ch && !inbox) msg = `${env.act} needs ch`;
      else if ((to && !inbox) || 'enc' in env) msg = `${env.act} carries no to or enc`;
      else if ('body' in env) msg = env.act === 'sub' ? subBodyMisfit(env.body) : historyBodyMisfit(env.body);
      break;
    }
    case 'unsub': case 'presence':
      if (!ch) msg = `${env.act} needs ch`;
      else if (to || payload) msg = `${env.act} carries no to, body or enc`;
      break;
    case 'pub':
      if (!ch || !payload) msg = 'pub needs ch and body or enc';
      else if (to) msg = 'pub carries no to';
      break;
    case 'dm':
      if (!to || !payload) msg = 'dm needs to and body or enc';
      else if (ch) msg = 'dm carries no ch';
      break;
    case 'refresh':
      if (ch || to) msg = 'refresh carries no ch or to';
      break;
  }
  if (msg) fail('bad_request', msg, env.id);
}

// ---- stream positions (§20) -------------------------------------------------------

const EPOCH_RE = /^[A-Za-z0-9_-]{1,64}$/;

function validOffset(n, min) {
  return Number.isSafeInteger(n) && n >= min;
}

/** validPosition reports whether p is {epoch, offset} (offset ≥ min), with no other member. */
export function validPosition(p, min = 0) {
  return checkBody(p, ['epoch', 'offset']) && typeof p.epoch === 'string' && EPOCH_RE.test(p.epoch) && validOffset(p.offset, min);
}

function subBodyMisfit(b) {
  return checkBody(b, ['since']) && validPosition(b.since, 0) ? '' : 'a sub body is exactly {since: {epoch, offset}}';
}

function historyBodyMisfit(b) {
  if (!checkBody(b, [], ['limit', 'before', 'after'])) return 'a history body is {limit?, before? | after?}';
  if ('before' in b && 'after' in b) return 'history takes before or after, not both';
  if ('limit' in b && !(Number.isSafeInteger(b.limit) && b.limit >= 0 && b.limit <= 1000)) return 'history limit must be 0-1000';
  for (const k of ['before', 'after']) if (k in b && !validOffset(b[k], 0)) return 'history offset out of range';
  return '';
}

/**
 * deliveryPosition returns the {epoch, offset} a verified deliver frame's
 * body carries, or null; only one of them, an invalid one, or one on a
 * direct frame is bad_claims (§20.4).
 */
export function deliveryPosition(d) {
  const db = d.body;
  if (db === null || typeof db !== 'object') return null;
  const has = 'epoch' in db || 'offset' in db;
  if (!has) return null;
  if ((d.act !== 'deliver' && d.act !== 'direct') || !('epoch' in db && 'offset' in db) || typeof db.epoch !== 'string'
    || !EPOCH_RE.test(db.epoch) || !validOffset(db.offset, 1)) {
    fail('bad_claims', 'delivery position must be {epoch, offset ≥ 1} on a deliver or direct frame', d.id);
  }
  return { epoch: db.epoch, offset: db.offset };
}

/** claimsOf returns the envelope's claims as a plain object (as on the wire). */
export function claimsOf(env) {
  const out = {};
  for (const k of ['id', 'ts', 'seq', 'sid', 'sub', 'act', 'ch', 'to', 'cid', 'body', 'enc']) if (k in env) out[k] = env[k];
  return out;
}

function envOrBadClaims(payload, client) {
  try {
    return decodeEnvelope(payload, client);
  } catch (e) {
    fail('bad_claims', e.message);
  }
}

/** decodeBody checks a body value is an object with only the named members (required ones present). */
function checkBody(body, required, optional = []) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return false;
  for (const k of Object.keys(body)) if (!required.includes(k) && !optional.includes(k)) return false;
  for (const k of required) if (!(k in body)) return false;
  return true;
}

// ---- policy (§9.3) ---------------------------------------------------------------

function matchPattern(pattern, ch) {
  const p = pattern.split('.');
  const c = ch.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>' && i === p.length - 1) return c.length > i;
    if (i >= c.length) return false;
    if (p[i] !== '*' && p[i] !== c[i]) return false;
  }
  return p.length === c.length;
}

export class Policy {
  constructor(rules) {
    this.rules = rules;
  }
  static parse(doc) {
    const d = typeof doc === 'string' ? JSON.parse(doc) : doc;
    return new Policy(d.rules);
  }
  /** allows reports whether act on ch is allowed for roles. */
  allows(act, ch, roles) {
    for (const r of this.rules) {
      if (r.action !== '*' && r.action !== act) continue;
      if (r.channel !== undefined && (ch === undefined || !matchPattern(r.channel, ch))) continue;
      if (!r.roles || r.roles.length === 0 || r.roles.some((x) => roles.includes(x))) return true;
    }
    return false;
  }
}

// validPattern reports whether p is a channel pattern of §9.3: dot-separated
// segments that are channel names, "*", or ">" as the last one.
function validPattern(p) {
  const segs = p.split('.');
  return segs.every((s, i) => s !== '' && (s === '*' || (s === '>' ? i === segs.length - 1 : validChannel(s))));
}

/**
 * grantsAllow reports whether the grants a welcome announced (§8.3) allow
 * act on ch (ch undefined or '' for none), as the policy that made them
 * would. A grant with an invalid action or pattern matches nothing.
 */
export function grantsAllow(grants, act, ch) {
  if (!Array.isArray(grants)) return false;
  return grants.some((g) => {
    if (!g || typeof g !== 'object' || (g.action !== '*' && !validAction(g.action))) return false;
    if (g.action !== '*' && g.action !== act) return false;
    if (g.channel === undefined || g.channel === '') return true;
    return typeof g.channel === 'string' && validPattern(g.channel) && !!ch && matchPattern(g.channel, ch);
  });
}

// ---- replay (§7 step 8) and revocation (§4.4) ------------------------------------

export class ReplayStore {
  constructor() {
    this.sessions = new Map(); // sid -> {ids: Map(id -> until ms), seq}
  }
  /** check runs §7 step 8 and records id and seq if they pass. */
  check(sid, id, seq, idUntil, now) {
    let s = this.sessions.get(sid);
    if (!s) this.sessions.set(sid, (s = { ids: new Map(), seq: 0 }));
    const until = s.ids.get(id);
    if (until !== undefined && now <= until) fail('replay_id', 'id already accepted in this session');
    if (seq <= s.seq) fail('replay_seq', `seq ${seq} is not greater than ${s.seq}`);
    s.ids.set(id, idUntil);
    s.seq = seq;
  }
}

export class Revocations {
  constructor() {
    this.jtis = new Set();
    this.subjects = new Map(); // sub -> seconds
  }
  revokeToken(jti) {
    this.jtis.add(jti);
  }
  revokeSubject(sub, atSeconds) {
    this.subjects.set(sub, atSeconds);
  }
  isRevoked(jti, sub, iat) {
    if (this.jtis.has(jti)) return true;
    const at = this.subjects.get(sub);
    return at !== undefined && iat <= at;
  }
}

// ---- session tokens (§4) -----------------------------------------------------------

const TOKEN_CLAIMS = ['iss', 'aud', 'sub', 'iat', 'exp', 'jti', 'sid', 'roles', 'cnf'];

export function decodeTokenClaims(payload) {
  const m = members(payload);
  for (const k of m.keys()) if (!TOKEN_CLAIMS.includes(k)) throw new Error(`unknown claim ${JSON.stringify(k)}`);
  for (const k of TOKEN_CLAIMS) if (!m.has(k)) throw new Error(`missing claim ${k}`);
  const c = {};
  for (const [k, max] of [['iss', 256], ['aud', 256], ['sub', 256], ['jti', 36], ['sid', 36]]) {
    c[k] = rawString(m.get(k), k, max);
    if (c[k] === '') throw new Error(`${k} must not be empty`);
  }
  if (!isCanonicalUUID(c.jti) || !isCanonicalUUID(c.sid)) throw new Error('jti and sid must be canonical UUIDs');
  c.iat = rawUint(m.get('iat'), 'iat');
  c.exp = rawUint(m.get('exp'), 'exp');
  const roles = JSON.parse(m.get('roles'));
  if (!Array.isArray(roles) || roles.length > 32 || !roles.every((r) => typeof r === 'string')) throw new Error('roles must be an array of at most 32 strings');
  c.roles = roles;
  const cnf = members(m.get('cnf'));
  if (cnf.size !== 1 || !cnf.has('jkt')) throw new Error('cnf must be exactly {jkt}');
  c.cnf = { jkt: rawString(cnf.get('jkt'), 'jkt', 64) };
  return c;
}

export class TokenVerifier {
  /** @param {{keys: KeySet, iss: string, aud: string, skewMs?: number, now?: () => number, revocations?: Revocations}} cfg */
  constructor(cfg) {
    this.cfg = { skewMs: DEFAULT_SKEW_MS, now: Date.now, ...cfg };
  }
  /** verify checks a session token (§4.2) and returns its claims. */
  async verify(token) {
    const { keys, iss, aud, skewMs, now, revocations } = this.cfg;
    let form;
    try {
      form = checkForm(token, MAX_TOKEN, TYP_SESSION);
    } catch (e) {
      if (e instanceof SigilError) fail('bad_token', `session token: ${e.message}`);
      throw e;
    }
    const key = keys.get(form.hdr.kid);
    if (!key) fail('bad_token', 'session token: signed by an unknown key');
    let payload;
    try {
      payload = await verifySignature(form, key);
    } catch (e) {
      if (e instanceof SigilError) fail('bad_token', `session token: ${e.message}`);
      throw e;
    }
    let c;
    try {
      c = decodeTokenClaims(payload);
    } catch (e) {
      fail('bad_token', `session token: ${e.message}`);
    }
    if (c.iss !== iss || c.aud !== aud) fail('bad_token', 'session token: wrong iss or aud');
    const t = now();
    if (c.iat * 1000 > t + skewMs) fail('bad_token', 'session token: issued in the future');
    if (t >= c.exp * 1000) fail('token_expired', 'session token has expired');
    if (revocations && revocations.isRevoked(c.jti, c.sub, c.iat)) fail('token_revoked', 'session token has been revoked');
    return c;
  }
}

// ---- the server pipeline (§7, §8.2) -------------------------------------------------

export class Verifier {
  /**
   * @param {{tokens: TokenVerifier, maxFrame?: number, skewMs?: number, now?: () => number,
   *          replay?: ReplayStore, revocations?: Revocations, policy: Policy}} cfg
   */
  constructor(cfg) {
    this.cfg = { maxFrame: DEFAULT_MAX_FRAME, skewMs: DEFAULT_SKEW_MS, now: Date.now, replay: new ReplayStore(), ...cfg };
  }

  /** verifyHello verifies a first frame (§8.2) and returns {session, env}. */
  async verifyHello(frame) {
    const { maxFrame, tokens } = this.cfg;
    const form = checkForm(frame, maxFrame, TYP_CLIENT);
    let raw;
    try {
      raw = b64uDecode(form.p);
    } catch {
      fail('malformed', 'payload is not base64url');
    }
    const env = envOrBadClaims(raw, true);
    if (env.act !== 'hello') fail('hello_required', 'the first frame must be hello', env.id);
    const ref = env.id;
    try {
      const b = env.body;
      if ('enc' in env || !checkBody(b, ['token', 'jwk'], ['ekey']) || typeof b.token !== 'string' || !b.token || b.jwk === null || typeof b.jwk !== 'object') {
        fail('bad_claims', 'hello body must be {token, jwk[, ekey]}');
      }
      const claims = await tokens.verify(b.token);
      let key;
      try {
        key = await importPublicJWK(b.jwk);
      } catch (e) {
        fail('bad_claims', e.message);
      }
      if (key.jkt !== claims.cnf.jkt) fail('key_mismatch', 'the hello key is not the key the token is bound to');
      if (form.hdr.kid !== key.jkt) fail('unknown_key', 'kid must be the session key thumbprint');
      const bound = { ...key, kid: key.jkt };
      await verifySignature(form, bound);
      if ('ekey' in b) {
        try {
          await checkAgreementJWK(b.ekey);
        } catch (e) {
          fail('bad_claims', `ekey: ${e.message}`);
        }
      }
      const session = {
        sid: claims.sid, sub: claims.sub, roles: claims.roles, key: bound, jti: claims.jti,
        iat: claims.iat, exp: claims.exp, keys: null, ekey: b.ekey,
      };
      await this.#afterClaims(env, session);
      return { session, env };
    } catch (e) {
      if (e instanceof SigilError && !e.ref) e.ref = ref;
      throw e;
    }
  }

  /** verify runs §7 on a frame of an established session and returns the envelope (a sealed body decrypted into env.plain). */
  async verify(frame, session) {
    const form = checkForm(frame, this.cfg.maxFrame, TYP_CLIENT);
    if (form.hdr.kid !== session.key.kid) fail('unknown_key', "kid does not name this session's key");
    const payload = await verifySignature(form, session.key);
    const env = envOrBadClaims(payload, true);
    if (env.act === 'hello') fail('bad_request', 'hello is only allowed as the first frame', env.id);
    try {
      await this.#afterClaims(env, session);
    } catch (e) {
      if (e instanceof SigilError && !e.ref) e.ref = env.id;
      throw e;
    }
    return env;
  }

  async #afterClaims(env, s) {
    const { skewMs, now, replay, revocations, policy } = this.cfg;
    if (env.sid !== s.sid || env.sub !== s.sub) fail('wrong_session', 'sid or sub does not match this session');
    const t = now();
    if (env.ts < t - skewMs) fail('stale', 'ts is too old');
    if (env.ts > t + skewMs) fail('future', 'ts is in the future');
    replay.check(s.sid, env.id, env.seq, env.ts + skewMs, t);
    if (t >= s.exp * 1000) fail('token_expired', 'session token has expired');
    if (revocations && revocations.isRevoked(s.jti, s.sub, s.iat)) fail('token_revoked', 'session has been revoked');
    if (env.act === 'hello') return;
    if (env.act === 'history' && !env.ch && env.to) {
      // An inbox's history: its own subject's only (§20.11).
      if (env.to !== s.sub) fail('forbidden', 'a session reads only its own user\'s inbox');
    } else if (!policy.allows(env.act, env.ch, s.roles)) fail('forbidden', `${env.act} on ${env.ch || '(no channel)'} is not allowed`);
    if ('enc' in env) {
      const scope = env.act === 'pub' ? channelScope(env.ch) : 'session';
      const text = await openBody(env.enc, s.keys, scope);
      env.plainText = text;
      env.plain = JSON.parse(text);
      env.encrypted = true;
    }
  }
}

/** checkAgreementJWK checks an ekey (§8.2 step 6, §3.3): a public P-256 JWK, alg ECDH-ES+A256KW, use enc and key_ops [] if present. */
export async function checkAgreementJWK(jwk) {
  checkJWKMembers(jwk, 'enc');
  if (jwk.alg !== undefined && jwk.alg !== 'ECDH-ES+A256KW') throw new Error('alg must be ECDH-ES+A256KW');
  await globalThis.crypto.subtle.importKey('jwk', { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
}

// ---- the client side (§10.2, §10.3) -----------------------------------------------------

export class FrameVerifier {
  /**
   * @param {{keys: KeySet, sid?: string, sub?: string, skewMs?: number, now?: () => number, maxFrame?: number}} cfg
   * now must already be corrected by the welcome clock offset (§8.3).
   */
  constructor(cfg) {
    this.keys = cfg.keys;
    this.sid = cfg.sid;
    this.sub = cfg.sub;
    this.skewMs = cfg.skewMs || DEFAULT_SKEW_MS;
    this.now = cfg.now || Date.now;
    this.maxFrame = cfg.maxFrame || MAX_SERVER_FRAME;
    this.seen = new Map(); // id -> remember until (ms)
    this.ops = 0;
  }

  /**
   * verifyStored checks a deliver frame read from a channel's history
   * (§20.4): form, header, signature under a JWKS key, strict claims,
   * act deliver with ch (any ch when ch is null), no sid or cid, and a
   * position; with {to}, a stored direct frame to that user instead (the
   * inbox, §20.11). No freshness or id replay: the caller places it by its
   * position. Returns {env, position}.
   */
  async verifyStored(frame, ch, { to, late = false } = {}) {
    const form = checkForm(frame, this.maxFrame, TYP_SERVER);
    const key = this.keys.get(form.hdr.kid);
    if (!key) fail('unknown_key', `kid ${JSON.stringify(form.hdr.kid)} is not in the server's JWKS`);
    const env = envOrBadClaims(await verifySignature(form, key), false);
    if (late && env.act === 'direct') {
      to = this.sub; // verifyLate of a direct frame: the client's own inbox
      if (!to) fail('wrong_session', 'a direct frame for no known user', env.id);
    }
    if (to !== undefined) {
      // A stored direct frame of the user's inbox (§20.11).
      if (env.act !== 'direct' || !to || env.to !== to || 'ch' in env || 'sid' in env || 'cid' in env) {
        fail('wrong_session', 'a stored frame is not a direct frame to this user', env.id);
      }
    } else if (env.act !== 'deliver' || !env.ch || (ch !== null && env.ch !== ch) || 'sid' in env || 'cid' in env) {
      fail('wrong_session', 'a stored frame is not a deliver frame of this channel', env.id);
    }
    const position = deliveryPosition(env);
    if (!position) fail('bad_claims', 'a stored frame has no position', env.id);
    return { env, position };
  }

  /**
   * verifyLate is verifyStored for a live frame that failed verify only
   * for being stale: a deliver frame of any channel, or a direct frame to
   * this.sub. The caller takes it only if its position is the next one of
   * the channel's stream or of the inbox (§20.4, §20.11): a frame queued
   * behind a long recovery is old when it arrives, and its position, not
   * its age, shows that it is no replay.
   */
  async verifyLate(frame) {
    return this.verifyStored(frame, null, { late: true });
  }

  /** remember records a server frame id as received at ts. */
  remember(id, ts = this.now()) {
    this.seen.set(id, ts + this.skewMs);
  }

  /**
   * verify checks a server frame (§10.2) and returns its envelope. Throws
   * SigilError. With preWelcome, an error frame without sid is accepted:
   * that is how a server answers a rejected hello (§8.2).
   */
  async verify(frame, { preWelcome = false } = {}) {
    const form = checkForm(frame, this.maxFrame, TYP_SERVER);
    const key = this.keys.get(form.hdr.kid);
    if (!key) {
      const e = new SigilError('unknown_key', `kid ${JSON.stringify(form.hdr.kid)} is not in the server's JWKS`);
      e.kid = form.hdr.kid;
      throw e;
    }
    const payload = await verifySignature(form, key);
    const env = envOrBadClaims(payload, false);
    const ref = env.id;
    if ('sid' in env) {
      if (env.sid !== this.sid) fail('wrong_session', 'frame is for another session', ref);
    } else if (['deliver', 'join', 'leave', 'key'].includes(env.act)) {
      if (!('ch' in env)) fail('wrong_session', 'broadcast frame without ch', ref);
    } else if (env.act === 'direct') {
      if (env.to !== this.sub) fail('wrong_session', 'direct frame for another user', ref);
    } else if (preWelcome && env.act === 'error') {
      // answer to a rejected hello: no session yet
    } else {
      fail('wrong_session', 'frame names no session', ref);
    }
    const t = this.now();
    if (env.ts < t - this.skewMs) fail('stale', 'server frame is stale', ref);
    if (env.ts > t + this.skewMs) fail('future', 'server frame is from the future', ref);
    const until = this.seen.get(env.id);
    if (until !== undefined && t <= until) fail('replay_id', 'server frame replayed', ref);
    this.seen.set(env.id, env.ts + this.skewMs);
    if (++this.ops % 1024 === 0) for (const [id, u] of this.seen) if (t > u) this.seen.delete(id);
    return env;
  }
}

/**
 * openDelivery verifies the sender's frame inside a verified deliver or
 * direct envelope (§10.3) and opens its body with ring (a KeyRing or
 * null). Returns {sender: {sub, key}, env, encrypted, readable, logIndex}
 * (logIndex: the audit log index the delivery carries, or undefined).
 */
export async function openDelivery(d, ring, { keys } = {}) {
  if (d.act !== 'deliver' && d.act !== 'direct') fail('bad_request', 'not a delivery');
  const db = d.body;
  if (!checkBody(db, ['frame', 'jwk', 'sub'], ['enc', 'epoch', 'offset', 'log_index']) || typeof db.frame !== 'string' || !db.frame
    || typeof db.sub !== 'string' || db.jwk === null || typeof db.jwk !== 'object' || ('enc' in db && typeof db.enc !== 'string')
    || ('log_index' in db && !validOffset(db.log_index, 0))) {
    fail('bad_claims', 'delivery body must be {frame, jwk, sub[, enc][, epoch, offset][, log_index]}');
  }
  // The audit log index of a synchronous log (§21.3).
  const logIndex = db.log_index;
  deliveryPosition(d);
  // A message the server application published itself: a server frame
  // signed by a JWKS key (§10.3, last paragraph).
  let form;
  try {
    form = checkForm(db.frame, MAX_SERVER_FRAME, TYP_CLIENT);
  } catch (e) {
    if (!(e instanceof SigilError) || e.code !== 'bad_typ' || db.sub !== 'server' || !keys) throw e;
    const sform = checkForm(db.frame, MAX_SERVER_FRAME, TYP_SERVER);
    const key = keys.get(sform.hdr.kid);
    if (!key) fail('unknown_key', 'server-published frame names no JWKS key');
    let enclosed;
    try {
      enclosed = await importPublicJWK(db.jwk);
    } catch (e) {
      fail('unknown_key', 'server-published frame: jwk is not the JWKS key');
    }
    if (enclosed.jkt !== key.jkt) fail('unknown_key', 'server-published frame: jwk is not the JWKS key');
    const env = envOrBadClaims(await verifySignature(sform, key), false);
    if (d.act !== 'deliver' || env.act !== 'pub' || env.ch !== d.ch) fail('wrong_session', 'delivery does not match the server publish', env.id);
    return { sender: { sub: 'server', key, server: true }, env, encrypted: false, readable: true, logIndex };
  }
  let key;
  try {
    key = await importPublicJWK(db.jwk);
  } catch (e) {
    fail('bad_claims', e.message);
  }
  if (form.hdr.kid !== key.jkt) fail('unknown_key', "sender frame kid is not the sender key's thumbprint");
  const bound = { ...key, kid: key.jkt };
  const env = envOrBadClaims(await verifySignature(form, bound), true);
  if (env.sub !== db.sub) fail('wrong_session', 'sender sub does not match the delivery', env.id);
  if (d.act === 'deliver' && (env.act !== 'pub' || env.ch !== d.ch)) fail('wrong_session', "delivery does not match the sender's publish", env.id);
  if (d.act === 'direct' && (env.act !== 'dm' || env.to !== d.to)) fail('wrong_session', "direct does not match the sender's dm", env.id);
  let encrypted = false;
  let readable = true;
  if ('enc' in env) {
    encrypted = true;
    const sealed = d.act === 'direct' ? db.enc : env.enc;
    const scope = d.act === 'direct' ? 'session' : channelScope(env.ch);
    if (!ring || sealed === undefined) {
      readable = false;
    } else {
      try {
        const text = await openBody(sealed, ring, scope);
        env.plainText = text;
        env.plain = JSON.parse(text);
      } catch (e) {
        if (e instanceof SigilError) e.ref = env.id;
        throw e;
      }
    }
  }
  return { sender: { sub: db.sub, key: bound }, env, encrypted, readable, logIndex };
}

export { bytelen };
