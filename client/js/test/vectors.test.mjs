// Runs every shared vector of testdata/vectors (spec.md §16) through the JS
// implementation. 100% must pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  KeySet, KeyRing, importContentKey, SigilError, importAgreementPrivate, unwrapContentKey, sealBody, openBody,
} from '../jose.js';
import {
  TokenVerifier, Verifier, FrameVerifier, ReplayStore, Revocations, Policy, openDelivery, claimsOf, checkAction, grantsAllow,
} from '../protocol.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'testdata', 'vectors');
const keysDoc = JSON.parse(readFileSync(join(dir, 'keys.json'), 'utf8'));
const policy = Policy.parse(readFileSync(join(dir, 'policy.json'), 'utf8'));
const names = readdirSync(join(dir, 'cases')).filter((n) => n.endsWith('.json')).sort();
const jwks = await KeySet.fromJWKS(keysDoc.server_jwks);

async function ring(keys) {
  if (!keys || keys.length === 0) return null;
  const r = new KeyRing();
  for (const k of keys) r.add(await importContentKey(k.kid, k.k, k.scope));
  return r;
}

async function ring1(k) {
  const r = new KeyRing();
  r.add(await importContentKey(k.kid, k.k, k.scope));
  return r;
}

// Runs one vector; returns {code} on rejection or {ok: details} on acceptance.
async function run(v) {
  const now = () => v.now;
  const skewMs = v.config.skew_ms;
  const revocations = new Revocations();
  for (const j of v.revoked?.jti ?? []) revocations.revokeToken(j);
  for (const s of v.revoked?.sub ?? []) revocations.revokeSubject(s.sub, s.at);
  const tokens = new TokenVerifier({ keys: jwks, iss: v.config.iss, aud: v.config.aud, skewMs, now, revocations });
  const replay = new ReplayStore();
  for (const a of v.accepted ?? []) replay.check(a.sid, a.id, a.seq, a.ts + skewMs, v.now);
  const verifier = new Verifier({ tokens, maxFrame: v.config.max_frame, skewMs, now, replay, revocations, policy });
  switch (v.kind) {
    case 'wrapped_key': {
      const agreement = await importAgreementPrivate(keysDoc.agreement_keys[v.wrap.agreement_key]);
      const key = await unwrapContentKey(v.frame, agreement.privateKey);
      if (key.scope !== v.wrap.scope) throw new SigilError('bad_enc', `scope ${key.scope} where ${v.wrap.scope} is expected`);
      return { key };
    }
    case 'grants': {
      // The announced grants (expect.grants, as welcome carries them) must
      // allow what the policy allows for the roles (§8.3).
      const got = v.grants.checks.map((k) => ({ ...k, allowed: grantsAllow(v.expect.grants, k.act, k.ch) }));
      return { checks: got, byPolicy: v.grants.checks.map((k) => ({ ...k, allowed: policy.allows(k.act, k.ch, v.grants.roles) })) };
    }
    case 'token':
      return { claims: await tokens.verify(v.frame) };
    case 'hello': {
      const { session } = await verifier.verifyHello(v.frame);
      return { session: { sid: session.sid, sub: session.sub, roles: session.roles } };
    }
    case 'client': {
      const s = v.session;
      const { importPublicJWK } = await import('../jose.js');
      const key = await importPublicJWK(s.jwk);
      const session = { sid: s.sid, sub: s.sub, roles: s.roles, key: { ...key, kid: key.jkt }, jti: s.jti, iat: s.iat, exp: s.exp, keys: await ring(s.content_keys) };
      const env = await verifier.verify(v.frame, session);
      checkAction(env); // §9.1: after acceptance
      return { claims: claimsOf(env), body: 'plain' in env ? env.plain : env.body };
    }
    case 'server':
    case 'delivery': {
      const fv = new FrameVerifier({ keys: jwks, sid: v.client.sid, sub: v.client.sub, skewMs, now });
      for (const id of v.client.seen ?? []) fv.remember(id, v.now);
      const env = await fv.verify(v.frame, { preWelcome: !v.client.welcomed });
      if (v.kind === 'server') return { claims: claimsOf(env), body: env.body };
      const d = await openDelivery(env, await ring(v.client.content_keys), { keys: jwks });
      return {
        claims: claimsOf(env),
        sender: { sub: d.sender.sub, claims: claimsOf(d.env), body: 'plain' in d.env ? d.env.plain : d.env.body },
      };
    }
  }
  throw new Error(`unknown kind ${v.kind}`);
}

let passed = 0;
for (const name of names) {
  const v = JSON.parse(readFileSync(join(dir, 'cases', name), 'utf8'));
  test(`vector ${v.kind}/${v.name}`, async () => {
    let got;
    try {
      got = await run(v);
    } catch (e) {
      if (!(e instanceof SigilError)) throw e;
      assert.equal(v.expect.result, 'error', `rejected with ${e.code} (${e.message}); want ok`);
      assert.equal(e.code, v.expect.code, `rejected with ${e.code} (${e.message}); want ${v.expect.code}`);
      passed++;
      return;
    }
    assert.equal(v.expect.result, 'ok', `accepted; want ${v.expect.code}`);
    if (v.kind === 'wrapped_key') {
      // The unwrapped key is not extractable: compare it by sealing with it
      // and opening with the expected key material.
      const want = v.expect.claims;
      assert.equal(got.key.kid, want.kid);
      assert.equal(got.key.scope, want.scope);
      const ring = await ring1(want);
      const sealed = await sealBody(got.key, { probe: v.name });
      assert.equal(await openBody(sealed, ring, want.scope), JSON.stringify({ probe: v.name }));
      passed++;
      return;
    }
    if (v.kind === 'grants') {
      assert.deepEqual(got.checks, v.grants.checks);
      assert.deepEqual(got.byPolicy, v.grants.checks);
    }
    if (v.expect.claims) assert.deepEqual(got.claims, v.expect.claims);
    if (v.expect.body !== undefined && v.kind !== 'delivery') assert.deepEqual(got.body, v.expect.body);
    if (v.expect.session) assert.deepEqual(got.session, v.expect.session);
    if (v.kind === 'delivery') {
      assert.ok(v.expect.sender, 'delivery vectors expect a sender');
      assert.equal(got.sender.sub, v.expect.sender.sub);
      assert.deepEqual(got.sender.claims, v.expect.sender.claims);
      if (v.expect.sender.body !== undefined) assert.deepEqual(got.sender.body, v.expect.sender.body);
    }
    passed++;
  });
}

test('every vector ran and passed', () => {
  assert.ok(names.length >= 137, `found ${names.length} vectors`);
  assert.equal(passed, names.length, `${passed} of ${names.length} vectors passed`);
  console.log(`# sigil vectors: ${passed}/${names.length} passed`);
});
