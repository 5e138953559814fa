// Cross-check of this JOSE code against an independent implementation
// (panva/jose): frames we sign verify there and vice versa; JWEs we seal
// open there and vice versa; thumbprints agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as jose from 'jose';
import {
  generateSessionKey, signCompact, checkForm, verifySignature, importPublicJWK, thumbprint, importContentKey, sealBody, openBody,
  KeyRing, generateAgreementKey, unwrapContentKey, wrapContentKey, importAgreementPrivate, b64uEncode, b64uDecode,
} from '../jose.js';

for (const alg of ['ES256', 'EdDSA']) {
  test(`${alg}: our signature verifies with panva/jose`, async () => {
    const k = await generateSessionKey(alg);
    const frame = await signCompact(k, 'sigil-client+jws', JSON.stringify({ hello: 'wörld' }));
    const pub = await jose.importJWK({ ...k.jwk, alg }, alg);
    const { payload, protectedHeader } = await jose.compactVerify(frame, pub, { algorithms: [alg] });
    assert.deepEqual(protectedHeader, { alg, kid: k.jkt, typ: 'sigil-client+jws' });
    assert.equal(new TextDecoder().decode(payload), '{"hello":"wörld"}');
    assert.equal(await jose.calculateJwkThumbprint(k.jwk, 'sha256'), k.jkt);
  });

  test(`${alg}: panva/jose signature verifies here; tampering is caught`, async () => {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
    const jwk = await jose.exportJWK(publicKey);
    const rec = await importPublicJWK(jwk);
    assert.equal(rec.jkt, await jose.calculateJwkThumbprint(jwk));
    const frame = await new jose.CompactSign(new TextEncoder().encode('{"a":1}'))
      .setProtectedHeader({ alg, kid: rec.jkt, typ: 'sigil-server+jws' }).sign(privateKey);
    const form = checkForm(frame, 1 << 20, 'sigil-server+jws');
    assert.equal(new TextDecoder().decode(await verifySignature(form, rec)), '{"a":1}');
    const parts = frame.split('.');
    const sig = b64uDecode(parts[2]);
    sig[3] ^= 1;
    const bad = checkForm(`${parts[0]}.${parts[1]}.${b64uEncode(sig)}`, 1 << 20, 'sigil-server+jws');
    await assert.rejects(verifySignature(bad, rec), { code: 'bad_signature' });
  });
}

test('thumbprint matches RFC 7638 §3.1 example shape (EC) via panva', async () => {
  const { publicKey } = await jose.generateKeyPair('ES256', { extractable: true });
  const jwk = await jose.exportJWK(publicKey);
  assert.equal(await thumbprint(jwk), await jose.calculateJwkThumbprint(jwk));
});

test('dir/A256GCM: we seal, panva opens; panva seals, we open', async () => {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const rec = await importContentKey('k1', raw, 'session');
  const ring = new KeyRing();
  ring.add(rec);
  const jwe = await sealBody(rec, { text: 'sealed ✓' });
  const { plaintext, protectedHeader } = await jose.compactDecrypt(jwe, raw, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] });
  assert.deepEqual(protectedHeader, { alg: 'dir', enc: 'A256GCM', kid: 'k1' });
  assert.equal(new TextDecoder().decode(plaintext), '{"text":"sealed ✓"}');
  const theirs = await new jose.CompactEncrypt(new TextEncoder().encode('{"n":2}'))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: 'k1' }).encrypt(raw);
  assert.equal(await openBody(theirs, ring, 'session'), '{"n":2}');
  await assert.rejects(openBody(theirs, ring, 'ch:rooms.lobby'), { code: 'bad_enc' });
  const zipped = await new jose.CompactEncrypt(new TextEncoder().encode('{"n":2}'))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: 'k1', cty: 'x' }).encrypt(raw);
  await assert.rejects(openBody(zipped, ring, 'session'), { code: 'bad_enc' });
});

test('ECDH-ES+A256KW: panva wraps, we unwrap; we wrap, panva unwraps', async () => {
  const ag = await generateAgreementKey();
  const raw = b64uEncode(crypto.getRandomValues(new Uint8Array(32)));
  const plain = JSON.stringify({ kty: 'oct', kid: 'c1', k: raw, alg: 'A256GCM', scope: 'ch:rooms.lobby' });
  const pub = await jose.importJWK({ kty: 'EC', crv: 'P-256', x: ag.jwk.x, y: ag.jwk.y }, 'ECDH-ES+A256KW');
  const jwe = await new jose.CompactEncrypt(new TextEncoder().encode(plain)).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' }).encrypt(pub);
  const rec = await unwrapContentKey(jwe, ag.privateKey);
  assert.equal(rec.kid, 'c1');
  assert.equal(rec.scope, 'ch:rooms.lobby');

  const { publicKey, privateKey } = await jose.generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256', extractable: true });
  const rjwk = await jose.exportJWK(publicKey);
  const ours = await wrapContentKey({ kid: 'c2', k: raw, scope: 'session' }, rjwk);
  const { plaintext } = await jose.compactDecrypt(ours, privateKey);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(plaintext)), { kty: 'oct', kid: 'c2', k: raw, alg: 'A256GCM', scope: 'session' });
  // and our own unwrap of our own wrap, with an imported private key
  const pj = await jose.exportJWK(privateKey);
  const mine = await importAgreementPrivate(pj);
  assert.equal((await unwrapContentKey(ours, mine.privateKey)).kid, 'c2');
  const parts = ours.split('.');
  parts[3] = parts[3].slice(0, -2) + (parts[3].endsWith('AA') ? 'BA' : 'AA');
  await assert.rejects(unwrapContentKey(parts.join('.'), mine.privateKey), { code: 'bad_enc' });
});
