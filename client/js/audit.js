// Audit log proofs (spec.md §21.4): check an inclusion proof of a log
// entry against a signed checkpoint, with nothing but the checkpoint key,
// on WebCrypto (Ed25519 and SHA-256). The Merkle path check is RFC 9162
// §2.1.3.2; the checkpoint is a C2SP signed note (tlog-checkpoint).
import { parse as strictParse } from './strictjson.js';

const te = new TextEncoder();
const td = new TextDecoder('utf-8', { fatal: true });

function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new Error('sigil: WebCrypto (crypto.subtle) is not available');
  return s;
}

function b64Decode(s) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new Error('audit: not base64');
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};

const sha256 = async (data) => new Uint8Array(await subtle().digest('SHA-256', data));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * parseVKey reads a note verifier key, "name+hash+base64(0x01 || Ed25519 key)"
 * (the log's log.vkey), checking its hash.
 */
export async function parseVKey(vkey) {
  const text = String(vkey).trim();
  // The name has no '+'; the key's base64 may.
  const i = text.indexOf('+');
  const j = i + 9;
  if (i <= 0 || text[j] !== '+') throw new Error('audit: malformed verifier key');
  const name = text.slice(0, i);
  const hash = text.slice(i + 1, j);
  const key = b64Decode(text.slice(j + 1));
  if (!/^[0-9a-f]{8}$/.test(hash) || key.length !== 33 || key[0] !== 1) throw new Error('audit: not an Ed25519 verifier key');
  const h = await sha256(concat(te.encode(name + '\n'), key));
  if (!equal(h.slice(0, 4), Uint8Array.from(hash.match(/../g), (x) => parseInt(x, 16)))) throw new Error('audit: verifier key hash mismatch');
  const pub = await subtle().importKey('raw', key.slice(1), { name: 'Ed25519' }, false, ['verify']);
  return { name, keyHash: h.slice(0, 4), pub };
}

/**
 * openCheckpoint verifies a signed checkpoint under vk (from parseVKey)
 * and returns {origin, size (BigInt), root (Uint8Array)}.
 */
export async function openCheckpoint(note, vk) {
  const k = note.lastIndexOf('\n\n');
  if (k < 0) throw new Error('audit_checkpoint: not a signed note');
  const text = note.slice(0, k + 1);
  let ok = false;
  for (const line of note.slice(k + 2).split('\n')) {
    if (line === '') continue;
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new Error('audit_checkpoint: malformed signature line');
    if (m[1] !== vk.name) continue;
    const sig = b64Decode(m[2]);
    if (sig.length !== 68 || !equal(sig.slice(0, 4), vk.keyHash)) continue;
    ok = await subtle().verify({ name: 'Ed25519' }, vk.pub, sig.slice(4), te.encode(text));
    if (ok) break;
  }
  if (!ok) throw new Error('audit_checkpoint: no valid signature by ' + vk.name);
  const lines = text.split('\n');
  if (lines.length < 4 || lines[0] !== vk.name || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error('audit_checkpoint: malformed checkpoint');
  const root = b64Decode(lines[2]);
  if (root.length !== 32) throw new Error('audit_checkpoint: malformed root hash');
  return { origin: lines[0], size: BigInt(lines[1]), root };
}

/** verifyInclusion: RFC 9162 §2.1.3.2, leaf hash at index of a tree of size with root. */
export async function verifyInclusion(index, size, leaf, path, root) {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(concat(Uint8Array.of(1), p, r));
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await sha256(concat(Uint8Array.of(1), r, p));
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(r, root);
}

/**
 * checkProof checks a proof object (spec.md §21.4: {index, entry,
 * checkpoint, hashes}) against the checkpoint key vkey, pinned by the
 * caller. It returns {index, size, origin, entry}, the entry parsed
 * strictly, or throws an error whose message starts with its §15 code.
 */
export async function checkProof(proof, vkey) {
  const vk = typeof vkey === 'string' ? await parseVKey(vkey) : vkey;
  const cp = await openCheckpoint(proof.checkpoint, vk);
  if (!Number.isSafeInteger(proof.index) || proof.index < 0 || !Array.isArray(proof.hashes)) throw new Error('audit_tree: malformed proof');
  const entry = b64Decode(proof.entry);
  const leaf = await sha256(concat(Uint8Array.of(0), entry));
  const ok = await verifyInclusion(BigInt(proof.index), cp.size, leaf, proof.hashes.map(b64Decode), cp.root);
  if (!ok) throw new Error('audit_tree: the entry is not at index ' + proof.index + ' of the checkpoint');
  let parsed;
  try {
    parsed = strictParse(td.decode(entry));
  } catch (e) {
    throw new Error('audit_entry: ' + e.message);
  }
  if (parsed === null || typeof parsed !== 'object' || parsed.v !== 1) throw new Error('audit_entry: not a version 1 entry');
  return { index: proof.index, size: cp.size, origin: cp.origin, entry: parsed };
}

/**
 * proveInLog fetches the proof of entry index from a Sigil server
 * (GET base/v1/audit/proof?index=N) and checks it (checkProof). A 404
 * means no published checkpoint covers the entry yet: retry later; 401 that
 * the server serves proofs to admins only (sigil serve --audit-public opens them).
 */
export async function proveInLog(base, index, vkey, fetchFn = globalThis.fetch) {
  const res = await fetchFn(String(base).replace(/\/+$/, '') + '/v1/audit/proof?index=' + Number(index), { headers: { Accept: 'application/json' } });
  if (res.status === 404) throw new Error('not_found: entry ' + index + ' is not in a published checkpoint yet');
  if (res.status !== 200) throw new Error('audit proof: HTTP ' + res.status);
  return checkProof(strictParse(await res.text()), vkey);
}
