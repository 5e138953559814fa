// jose.js: the JOSE subset Sigil uses (spec.md §3, §5, §11), on WebCrypto only.
//
//   - base64url without padding, strict (no '=', no white space, no
//     non-zero trailing bits);
//   - JWS compact with EdDSA (Ed25519) and ES256 (P-256, raw R||S), the
//     algorithm always taken from the key, never from the header;
//   - RFC 7638 thumbprints;
//   - JWE compact dir/A256GCM (content keys) and ECDH-ES+A256KW/A256GCM
//     (key agreement, Concat KDF of RFC 7518 §4.6 with SHA-256).

import { members, parse as strictParse, validate as strictValidateText, StrictJSONError } from './strictjson.js';

const subtle = () => {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new Error('sigil: WebCrypto (crypto.subtle) is not available; use https or localhost');
  return s;
};

export const enc = new TextEncoder();

// ---- errors ---------------------------------------------------------------

/** SigilError carries a stable code of spec.md §15. Programs branch on code. */
export class SigilError extends Error {
  constructor(code, message, ref) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'SigilError';
    this.code = code;
    this.detail = message || '';
    if (ref) this.ref = ref;
  }
}

export const fail = (code, message, ref) => {
  throw new SigilError(code, message, ref);
};

// ---- base64url ------------------------------------------------------------

const ALPHA = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const REV = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) REV[ALPHA.charCodeAt(i)] = i;

/** isB64url reports whether s uses only the base64url alphabet (no '='). */
export function isB64url(s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || REV[c] < 0) return false;
  }
  return true;
}

/**
 * isCanonicalB64url reports whether s is the canonical unpadded base64url
 * encoding of some bytes (spec §5.1): only the alphabet, a length that is
 * not 1 modulo 4, and zero spare bits in the last character. It decodes
 * nothing.
 */
export function isCanonicalB64url(s) {
  if (typeof s !== 'string' || !isB64url(s)) return false;
  const n = s.length;
  const last = n > 0 ? REV[s.charCodeAt(n - 1)] : 0;
  switch (n % 4) {
    case 1:
      return false;
    case 2:
      return (last & 0x0f) === 0;
    case 3:
      return (last & 0x03) === 0;
    default:
      return true;
  }
}

/** b64uDecode decodes strict unpadded base64url, or throws. */
export function b64uDecode(s) {
  if (typeof s !== 'string' || s.length % 4 === 1 || !isB64url(s)) throw new Error('not base64url');
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < s.length; i++) {
    acc = (acc << 6) | REV[s.charCodeAt(i)];
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
    acc &= 0xff; // keep only pending bits (at most 6 + 8)
  }
  if (bits > 0 && (acc & ((1 << bits) - 1)) !== 0) throw new Error('non-zero trailing bits');
  return out;
}

/** b64uEncode encodes bytes (or a string as UTF-8) as unpadded base64url. */
export function b64uEncode(data) {
  const b = typeof data === 'string' ? enc.encode(data) : data instanceof ArrayBuffer ? new Uint8Array(data) : data;
  let out = '';
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    out += ALPHA[n >> 18] + ALPHA[(n >> 12) & 63] + ALPHA[(n >> 6) & 63] + ALPHA[n & 63];
  }
  if (i + 1 === b.length) {
    const n = b[i] << 16;
    out += ALPHA[n >> 18] + ALPHA[(n >> 12) & 63];
  } else if (i + 2 === b.length) {
    const n = (b[i] << 16) | (b[i + 1] << 8);
    out += ALPHA[n >> 18] + ALPHA[(n >> 12) & 63] + ALPHA[(n >> 6) & 63];
  }
  return out;
}

// ---- strict JSON helpers ----------------------------------------------------

/** strString returns the string value of a raw member, or throws. */
export function rawString(raw, what, max) {
  if (raw === undefined || raw[0] !== '"') throw new Error(`${what} must be a string`);
  const v = JSON.parse(raw);
  if (max !== undefined && enc.encode(v).length > max) throw new Error(`${what} is too long`);
  return v;
}

/** rawUint parses a canonical unsigned integer (plain digits, no leading zero, ≤ 2^53−1). */
export function rawUint(raw, what, min = 0) {
  if (raw === undefined || !/^(0|[1-9][0-9]{0,15})$/.test(raw)) throw new Error(`${what} must be an integer in range`);
  const n = Number(raw);
  if (n > Number.MAX_SAFE_INTEGER || n < min) throw new Error(`${what} must be an integer in range`);
  return n;
}

export function isCanonicalUUID(s) {
  return typeof s === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(s);
}

// ---- keys -----------------------------------------------------------------

export const ALGS = Object.freeze({ EdDSA: 'EdDSA', ES256: 'ES256' });

const importParams = {
  EdDSA: { name: 'Ed25519' },
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
};
const signParams = {
  EdDSA: { name: 'Ed25519' },
  ES256: { name: 'ECDSA', hash: 'SHA-256' },
};

/** thumbprint computes the RFC 7638 SHA-256 thumbprint of a public JWK (spec §3.4). */
export async function thumbprint(jwk) {
  let canon;
  if (jwk.kty === 'OKP') canon = `{"crv":${JSON.stringify(jwk.crv)},"kty":"OKP","x":${JSON.stringify(jwk.x)}}`;
  else if (jwk.kty === 'EC') canon = `{"crv":${JSON.stringify(jwk.crv)},"kty":"EC","x":${JSON.stringify(jwk.x)},"y":${JSON.stringify(jwk.y)}}`;
  else throw new Error('unsupported kty');
  return b64uEncode(new Uint8Array(await subtle().digest('SHA-256', enc.encode(canon))));
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const JWK_MEMBERS = new Set(['kty', 'crv', 'x', 'y', 'kid', 'alg', 'use', 'key_ops', 'ext']);

/**
 * checkJWKMembers applies the member rules of spec §3.3 to a parsed public
 * JWK, for use 'sig' (session and JWKS keys) or 'enc' (the ekey of hello):
 * only kty, crv, x, y (EC), kid, alg, use, key_ops and ext, each of its
 * JSON type; x and y canonical base64url of 32 bytes; use, if present, the
 * given one; key_ops, if present, exactly ["verify"] ('sig') or [] ('enc').
 * Throws Error.
 */
export function checkJWKMembers(jwk, use) {
  if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) throw new Error('jwk: not an object');
  for (const [m, v] of Object.entries(jwk)) {
    if (PRIVATE_MEMBERS.includes(m)) throw new Error('jwk: must be a public key');
    if (!JWK_MEMBERS.has(m)) throw new Error(`jwk: member ${JSON.stringify(m)} is not allowed`);
    if (m === 'ext') {
      if (typeof v !== 'boolean') throw new Error('jwk: ext must be a boolean');
    } else if (m === 'key_ops') {
      if (!Array.isArray(v) || !v.every((o) => typeof o === 'string')) throw new Error('jwk: key_ops must be an array of strings');
      if (use === 'sig' ? v.length !== 1 || v[0] !== 'verify' : v.length !== 0) {
        throw new Error(`jwk: key_ops must be ${use === 'sig' ? '["verify"]' : '[]'}`);
      }
    } else if (typeof v !== 'string') {
      throw new Error(`jwk: ${m} must be a string`);
    } else if (enc.encode(v).length > 256) {
      throw new Error(`jwk: ${m} is too long`);
    }
  }
  let coords;
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519' && use === 'sig') {
    if ('y' in jwk) throw new Error('jwk: an Ed25519 key has no y');
    coords = ['x'];
  } else if (jwk.kty === 'EC' && jwk.crv === 'P-256') {
    coords = ['x', 'y'];
  } else {
    throw new Error(use === 'enc' ? 'jwk: must be a public P-256 key' : 'jwk: only Ed25519 (OKP) and P-256 (EC) keys are allowed');
  }
  for (const c of coords) {
    if (!isCanonicalB64url(jwk[c]) || b64uDecode(jwk[c]).length !== 32) throw new Error(`jwk: ${c} must be 32 bytes in canonical unpadded base64url`);
  }
  if (jwk.use !== undefined && jwk.use !== use) throw new Error(`jwk: use must be ${use}`);
}

/**
 * importPublicJWK parses a public Ed25519 or P-256 JWK (a JSON text or an
 * object) under spec §3.3 (checkJWKMembers) and returns a key record
 * {alg, kid, jkt, jwk, key}: alg is bound by the key type, kid is the JWK's
 * kid or, without one, its thumbprint. Throws on anything else.
 */
export async function importPublicJWK(input) {
  let jwk = input;
  if (typeof input === 'string' || input instanceof Uint8Array) jwk = strictParse(input);
  checkJWKMembers(jwk, 'sig');
  const alg = jwk.kty === 'OKP' ? ALGS.EdDSA : ALGS.ES256;
  if (jwk.alg !== undefined && jwk.alg !== alg) throw new Error(`jwk: alg ${jwk.alg} does not fit the key type`);
  const pub = jwk.kty === 'OKP' ? { kty: 'OKP', crv: 'Ed25519', x: jwk.x } : { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y };
  let key;
  try {
    key = await subtle().importKey('jwk', pub, importParams[alg], true, ['verify']);
  } catch (e) {
    throw new Error('jwk: key does not import (' + e.message + ')');
  }
  const jkt = await thumbprint(pub);
  return { alg, kid: jwk.kid || jkt, jkt, jwk: pub, key };
}

/** KeySet is a JWKS: kid → key record (spec §3.2). */
export class KeySet {
  constructor(records) {
    this.keys = new Map(records.map((r) => [r.kid, r]));
  }
  get(kid) {
    return this.keys.get(kid);
  }
  static async fromJWKS(jwks) {
    const doc = typeof jwks === 'string' || jwks instanceof Uint8Array ? strictParse(jwks) : jwks;
    if (!doc || !Array.isArray(doc.keys)) throw new Error('jwks: no keys');
    const recs = [];
    for (const k of doc.keys) {
      if (typeof k.kid !== 'string' || !k.kid) throw new Error('jwks: every key needs a kid');
      recs.push(await importPublicJWK(k));
    }
    return new KeySet(recs);
  }
}

/**
 * generateSessionKey makes a fresh session key pair (spec §3.3): ES256 by
 * default; EdDSA on request. The private key is non-extractable.
 * Returns {alg, kid, jkt, jwk, key: publicCryptoKey, privateKey}.
 */
export async function generateSessionKey(alg = ALGS.ES256) {
  const pair = await subtle().generateKey(importParams[alg], false, ['sign', 'verify']);
  const full = await subtle().exportKey('jwk', pair.publicKey);
  const jwk = alg === ALGS.EdDSA ? { kty: 'OKP', crv: 'Ed25519', x: full.x } : { kty: 'EC', crv: 'P-256', x: full.x, y: full.y };
  const jkt = await thumbprint(jwk);
  return { alg, kid: jkt, jkt, jwk, key: pair.publicKey, privateKey: pair.privateKey };
}

/** supportsEd25519 reports whether this WebCrypto can generate Ed25519 keys. */
export async function supportsEd25519() {
  try {
    await subtle().generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    return true;
  } catch {
    return false;
  }
}

/** importPrivateJWK imports a private JWK (test fixtures) as a signing key record. */
export async function importPrivateJWK(jwk, extractable = false) {
  const alg = jwk.kty === 'OKP' ? ALGS.EdDSA : ALGS.ES256;
  const privateKey = await subtle().importKey('jwk', { ...jwk, alg: undefined, use: undefined, kid: undefined, key_ops: undefined }, importParams[alg], extractable, ['sign']);
  const pub = await importPublicJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, ...(jwk.y ? { y: jwk.y } : {}) });
  return { ...pub, kid: jwk.kid || pub.jkt, privateKey };
}

// ---- JWS compact ------------------------------------------------------------

/**
 * splitCompact splits a compact JWS into three canonical base64url segments
 * (§7 step 2: header and payload non-empty, no padding, no spare bits), or
 * returns null. Every segment is checked here, before the header is read,
 * so a non-canonical payload or signature is malformed whatever the header.
 */
export function splitCompact(frame) {
  if (typeof frame !== 'string') return null;
  const parts = frame.split('.');
  if (parts.length !== 3 || parts[0] === '' || parts[1] === '') return null;
  for (const p of parts) if (!isCanonicalB64url(p)) return null;
  return parts;
}

/**
 * parseHeader decodes and checks a protected header (spec §5.2):
 * malformed if not base64url / strict JSON object; bad_header unless it is
 * exactly {alg, kid, typ} of strings with alg in the allow-list.
 */
export function parseHeader(seg) {
  let m;
  try {
    m = members(b64uDecode(seg));
  } catch (e) {
    fail('malformed', 'protected header is not a strict JSON object');
  }
  for (const name of m.keys()) {
    if (name !== 'alg' && name !== 'kid' && name !== 'typ') fail('bad_header', `header member ${JSON.stringify(name)} is not allowed`);
  }
  const h = {};
  for (const [name, max] of [['alg', 16], ['kid', 128], ['typ', 64]]) {
    const raw = m.get(name);
    if (raw === undefined) fail('bad_header', `header member ${name} is required`);
    try {
      h[name] = rawString(raw, name, max);
    } catch (e) {
      fail('bad_header', e.message);
    }
    if (h[name] === '') fail('bad_header', `header member ${name} must not be empty`);
  }
  if (h.alg !== ALGS.EdDSA && h.alg !== ALGS.ES256) fail('bad_header', `alg ${JSON.stringify(h.alg)} is not allowed`);
  return h;
}

/**
 * checkForm runs §7 steps 1–3: size, compact form, header, typ.
 * Returns {h, p, s, hdr}.
 */
export function checkForm(frame, maxSize, typ) {
  if (typeof frame !== 'string') fail('malformed', 'frame is not text');
  if (enc.encode(frame).length > maxSize) fail('too_large', `frame is over ${maxSize} bytes`);
  const parts = splitCompact(frame);
  if (!parts) fail('malformed', 'not a JWS in compact serialization');
  const hdr = parseHeader(parts[0]);
  if (hdr.typ !== typ) fail('bad_typ', `typ is ${JSON.stringify(hdr.typ)}; expected ${typ}`);
  return { h: parts[0], p: parts[1], s: parts[2], hdr };
}

/**
 * verifySignature checks the signature of a form-checked frame under a key
 * record, with the key's algorithm only (§7 step 4): bad_header if the
 * header alg differs, bad_signature if it does not verify. Returns the
 * payload bytes.
 */
export async function verifySignature(form, keyRec) {
  if (form.hdr.alg !== keyRec.alg) fail('bad_header', `alg ${form.hdr.alg} does not match the key's algorithm ${keyRec.alg}`);
  let payload;
  let sig;
  try {
    payload = b64uDecode(form.p);
    sig = b64uDecode(form.s);
  } catch {
    fail('malformed', 'segment is not base64url');
  }
  if (sig.length !== 64) fail('bad_signature', 'signature must be 64 bytes');
  const ok = await subtle().verify(signParams[keyRec.alg], keyRec.key, sig, enc.encode(form.h + '.' + form.p));
  if (!ok) fail('bad_signature', 'signature does not verify');
  return payload;
}

/**
 * signCompact signs payload (a string or bytes) as a compact JWS with
 * header {"alg","kid","typ"} under a key record with privateKey.
 */
export async function signCompact(keyRec, typ, payload) {
  const h = b64uEncode(JSON.stringify({ alg: keyRec.alg, kid: keyRec.kid, typ }));
  const p = b64uEncode(payload);
  const sig = await subtle().sign(signParams[keyRec.alg], keyRec.privateKey, enc.encode(h + '.' + p));
  return `${h}.${p}.${b64uEncode(new Uint8Array(sig))}`;
}

/** unsafePayload decodes a compact JWS payload WITHOUT verifying anything. */
export function unsafePayload(frame) {
  const parts = splitCompact(frame);
  if (!parts) fail('malformed', 'not a JWS in compact serialization');
  try {
    return b64uDecode(parts[1]);
  } catch {
    fail('malformed', 'payload is not base64url');
  }
}

// ---- JWE: content keys (dir / A256GCM) ------------------------------------

/** importContentKey makes a content key record {kid, scope, key: CryptoKey} from raw bytes or base64url. */
export async function importContentKey(kid, k, scope) {
  const raw = typeof k === 'string' ? b64uDecode(k) : k;
  if (raw.length !== 32) throw new Error('content key must be 32 bytes');
  const key = await subtle().importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
  return { kid, scope, key };
}

/** KeyRing holds content keys by kid (spec §11.1), with an optional expiry per key. */
export class KeyRing {
  constructor() {
    this.keys = new Map();
  }
  add(rec, expiresAt = 0) {
    this.keys.set(rec.kid, { ...rec, expiresAt });
  }
  get(kid, now = Date.now()) {
    const k = this.keys.get(kid);
    if (!k || (k.expiresAt && now >= k.expiresAt)) return undefined;
    return k;
  }
  /** newest returns the most recently added live key of a scope. */
  newest(scope, now = Date.now()) {
    let best;
    for (const k of this.keys.values()) if (k.scope === scope && !(k.expiresAt && now >= k.expiresAt)) best = k;
    return best;
  }
  /** retire makes every other key of scope expire at `at` (rotation, §11.5). */
  retire(scope, keepKid, at) {
    for (const k of this.keys.values()) if (k.scope === scope && k.kid !== keepKid && !k.expiresAt) k.expiresAt = at;
  }
}

/**
 * openBody decrypts a sealed body (spec §11.2) with a key of scope from
 * ring; everything that is not exactly right is bad_enc. Returns the
 * strict-JSON plaintext text.
 */
export async function openBody(jwe, ring, scope) {
  const segs = typeof jwe === 'string' ? jwe.split('.') : [];
  if (segs.length !== 5 || segs[1] !== '') fail('bad_enc', 'enc must be a JWE compact with alg dir');
  let h;
  try {
    const m = members(b64uDecode(segs[0]));
    if (m.size !== 3) throw new Error('members');
    h = { alg: rawString(m.get('alg'), 'alg', 16), enc: rawString(m.get('enc'), 'enc', 16), kid: rawString(m.get('kid'), 'kid', 128) };
  } catch {
    fail('bad_enc', 'enc header must be exactly {alg: dir, enc: A256GCM, kid}');
  }
  if (h.alg !== 'dir' || h.enc !== 'A256GCM' || !h.kid) fail('bad_enc', 'enc header must be exactly {alg: dir, enc: A256GCM, kid}');
  if (!ring) fail('bad_enc', 'body encryption was not negotiated for this session');
  const k = ring.get(h.kid);
  if (!k || k.scope !== scope) fail('bad_enc', `enc kid names no current content key for scope ${scope}`);
  const plain = await gcmOpen(k.key, segs);
  try {
    return strictValidateText(plain);
  } catch {
    fail('bad_enc', 'decrypted body is not strict JSON');
  }
}

async function gcmOpen(key, segs) {
  let iv;
  let ct;
  let tag;
  try {
    iv = b64uDecode(segs[2]);
    ct = b64uDecode(segs[3]);
    tag = b64uDecode(segs[4]);
  } catch {
    fail('bad_enc', 'enc is not base64url');
  }
  if (iv.length !== 12 || tag.length !== 16) fail('bad_enc', 'enc needs a 96-bit IV and a 128-bit tag');
  const both = new Uint8Array(ct.length + 16);
  both.set(ct);
  both.set(tag, ct.length);
  try {
    return new Uint8Array(
      await subtle().decrypt({ name: 'AES-GCM', iv, additionalData: enc.encode(segs[0]), tagLength: 128 }, key, both),
    );
  } catch {
    fail('bad_enc', 'enc does not decrypt (bad tag or key)');
  }
}

async function gcmSeal(key, headerObj, plaintext) {
  const h = b64uEncode(JSON.stringify(headerObj));
  const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
  const out = new Uint8Array(
    await subtle().encrypt({ name: 'AES-GCM', iv, additionalData: enc.encode(h), tagLength: 128 }, key, plaintext),
  );
  return { h, iv, ct: out.subarray(0, out.length - 16), tag: out.subarray(out.length - 16) };
}

/** sealBody seals a JSON body (a value) with a content key record: {"alg":"dir","enc":"A256GCM","kid"}. */
export async function sealBody(rec, body) {
  const { h, iv, ct, tag } = await gcmSeal(rec.key, { alg: 'dir', enc: 'A256GCM', kid: rec.kid }, enc.encode(JSON.stringify(body)));
  return `${h}..${b64uEncode(iv)}.${b64uEncode(ct)}.${b64uEncode(tag)}`;
}

// ---- JWE: key agreement (ECDH-ES+A256KW) ------------------------------------

/** generateAgreementKey makes a fresh P-256 ECDH key pair; returns {jwk (public, for hello.ekey), privateKey}. */
export async function generateAgreementKey() {
  const pair = await subtle().generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  const full = await subtle().exportKey('jwk', pair.publicKey);
  return {
    jwk: { kty: 'EC', crv: 'P-256', x: full.x, y: full.y, alg: 'ECDH-ES+A256KW', use: 'enc' },
    privateKey: pair.privateKey,
  };
}

/** importAgreementPrivate imports a private P-256 JWK for ECDH (test fixtures). */
export async function importAgreementPrivate(jwk) {
  const privateKey = await subtle().importKey('jwk', { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, d: jwk.d }, { name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  return { jwk: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, privateKey };
}

function u32be(n) {
  return new Uint8Array([(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// Concat KDF (NIST SP 800-56A, RFC 7518 §4.6.2) for one SHA-256 round,
// with the empty apu and apv of spec §11.3:
// SHA-256(counter=1 || Z || len(alg)||alg || len(apu)=0 || len(apv)=0 || keydatalen=256).
async function concatKDF(z, alg) {
  const algId = enc.encode(alg);
  const info = concat(u32be(1), z, u32be(algId.length), algId, u32be(0), u32be(0), u32be(256));
  return new Uint8Array(await subtle().digest('SHA-256', info));
}

/** validChannel reports whether c is a channel name (spec §6.5). */
export function validChannel(c) {
  return typeof c === 'string' && c.length > 0 && c.length <= 128 && /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(c);
}

/** validScope reports whether s is a content-key scope: session, or ch:<channel> (spec §11.1). */
export function validScope(s) {
  return s === 'session' || (typeof s === 'string' && s.startsWith('ch:') && validChannel(s.slice(3)));
}

// checkWrapHeader checks the protected header of a wrapped key (spec
// §11.3): exactly alg ECDH-ES+A256KW, enc A256GCM and epk {kty, crv, x, y}
// (a public P-256 key), and at most empty apu and apv. Throws Error.
function checkWrapHeader(seg) {
  const m = members(b64uDecode(seg));
  for (const [name, raw] of m) {
    if (name === 'apu' || name === 'apv') {
      if (raw !== '""') throw new Error(`${name} must be empty`);
    } else if (name !== 'alg' && name !== 'enc' && name !== 'epk') {
      throw new Error(`member ${JSON.stringify(name)} is not allowed`);
    }
  }
  if (rawString(m.get('alg'), 'alg', 32) !== 'ECDH-ES+A256KW' || rawString(m.get('enc'), 'enc', 32) !== 'A256GCM') {
    throw new Error('alg must be ECDH-ES+A256KW and enc A256GCM');
  }
  if (!m.has('epk')) throw new Error('epk is required');
  const epk = strictParse(m.get('epk'));
  if (epk === null || typeof epk !== 'object' || Array.isArray(epk) || Object.keys(epk).length !== 4) throw new Error('epk must be exactly {kty, crv, x, y}');
  checkJWKMembers(epk, 'enc');
  for (const k of ['kty', 'crv', 'x', 'y']) if (!(k in epk)) throw new Error('epk must be exactly {kty, crv, x, y}');
  return epk;
}

// decodeWrappedKey checks the plaintext of a wrapped key: exactly
// {kty: oct, kid, k (32 bytes), alg: A256GCM, scope}, strict. Throws Error.
function decodeWrappedKey(plain) {
  const m = members(plain);
  const w = {};
  for (const [name, raw] of m) {
    if (!['kty', 'kid', 'k', 'alg', 'scope'].includes(name)) throw new Error(`member ${JSON.stringify(name)} is not allowed`);
    w[name] = rawString(raw, name, 256);
    if (w[name] === '') throw new Error(`${name} must not be empty`);
  }
  if (m.size !== 5) throw new Error('must be exactly {kty, kid, k, alg, scope}');
  if (w.kty !== 'oct' || w.alg !== 'A256GCM') throw new Error('must be an A256GCM oct JWK');
  if (!validScope(w.scope)) throw new Error('scope must be session or ch:<channel>');
  if (!isCanonicalB64url(w.k) || b64uDecode(w.k).length !== 32) throw new Error('k must be 32 bytes in canonical unpadded base64url');
  return w;
}

/**
 * unwrapContentKey opens a wrapped content key (spec §11.3) with the
 * agreement private key. Returns a content key record {kid, scope, key}.
 * It refuses everything §11.3 refuses — non-canonical segments, header
 * members other than alg, enc, epk and empty apu/apv, a content-encryption
 * key that is not 32 bytes, a plaintext that is not exactly the five
 * members — with bad_enc. The caller checks the scope it expected.
 */
export async function unwrapContentKey(jwe, agreementPrivate) {
  const segs = typeof jwe === 'string' ? jwe.split('.') : [];
  if (segs.length !== 5 || !segs.every(isCanonicalB64url)) fail('bad_enc', 'wrapped key must be a JWE compact of canonical base64url segments');
  let epk;
  try {
    epk = checkWrapHeader(segs[0]);
  } catch (e) {
    fail('bad_enc', `wrapped key header: ${e.message}`);
  }
  // AES key wrap adds 8 bytes: a 32-byte content-encryption key (A256GCM)
  // is 40 bytes wrapped. WebCrypto would unwrap a 16- or 24-byte key as
  // AES-128/192-GCM.
  const wrapped = b64uDecode(segs[1]);
  if (wrapped.length !== 40) fail('bad_enc', 'the content-encryption key must be 32 bytes (A256GCM)');
  let plain;
  try {
    const epub = await subtle().importKey('jwk', { kty: 'EC', crv: 'P-256', x: epk.x, y: epk.y }, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
    const z = new Uint8Array(await subtle().deriveBits({ name: 'ECDH', public: epub }, agreementPrivate, 256));
    const kek = await subtle().importKey('raw', await concatKDF(z, 'ECDH-ES+A256KW'), { name: 'AES-KW' }, false, ['unwrapKey']);
    const cek = await subtle().unwrapKey('raw', wrapped, kek, { name: 'AES-KW' }, { name: 'AES-GCM' }, false, ['decrypt']);
    plain = await gcmOpen(cek, segs);
  } catch (e) {
    if (e instanceof SigilError) throw e;
    fail('bad_enc', 'wrapped key does not decrypt');
  }
  let w;
  try {
    w = decodeWrappedKey(plain);
  } catch (e) {
    fail('bad_enc', `wrapped key: ${e.message}`);
  }
  return importContentKey(w.kid, w.k, w.scope);
}

/**
 * wrapContentKey seals a raw content key to a P-256 agreement public JWK
 * (what the server does; used by tests and by JS servers).
 */
export async function wrapContentKey({ kid, k, scope }, recipientJwk) {
  const rpub = await subtle().importKey('jwk', { kty: 'EC', crv: 'P-256', x: recipientJwk.x, y: recipientJwk.y }, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
  const eph = await subtle().generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
  const ejwk = await subtle().exportKey('jwk', eph.publicKey);
  const z = new Uint8Array(await subtle().deriveBits({ name: 'ECDH', public: rpub }, eph.privateKey, 256));
  const kek = await subtle().importKey('raw', await concatKDF(z, 'ECDH-ES+A256KW'), { name: 'AES-KW' }, false, ['wrapKey']);
  const cekRaw = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const cek = await subtle().importKey('raw', cekRaw, { name: 'AES-GCM' }, true, ['encrypt']);
  const wrapped = new Uint8Array(await subtle().wrapKey('raw', cek, kek, { name: 'AES-KW' }));
  const header = { alg: 'ECDH-ES+A256KW', enc: 'A256GCM', epk: { kty: 'EC', crv: 'P-256', x: ejwk.x, y: ejwk.y } };
  const raw = typeof k === 'string' ? k : b64uEncode(k);
  const { h, iv, ct, tag } = await gcmSeal(cek, header, enc.encode(JSON.stringify({ kty: 'oct', kid, k: raw, alg: 'A256GCM', scope })));
  return `${h}.${b64uEncode(wrapped)}.${b64uEncode(iv)}.${b64uEncode(ct)}.${b64uEncode(tag)}`;
}

export { StrictJSONError };
