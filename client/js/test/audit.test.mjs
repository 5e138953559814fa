// The JS audit proof check against the Go-generated audit vectors
// (testdata/vectors/audit, spec.md §21.9): every proof of the tiny log
// checks under its key; a moved, edited or foreign proof does not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkProof, parseVKey } from '../audit.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'testdata', 'vectors', 'audit');
const vkey = readFileSync(join(dir, 'log', 'log.vkey'), 'utf8');
const proofs = JSON.parse(readFileSync(join(dir, 'proofs.json'), 'utf8'));

test('every proof of the vector log checks', async () => {
  const vk = await parseVKey(vkey);
  for (const p of proofs) {
    const r = await checkProof(p, vk);
    assert.equal(r.index, p.index);
    assert.equal(r.size, BigInt(proofs.length));
    assert.equal(r.origin, 'sigil.test/audit');
  }
  const kinds = await Promise.all(proofs.map(async (p) => (await checkProof(p, vk)).entry.kind));
  assert.deepEqual(kinds, ['keys', 'token', 'token', 'frame', 'frame', 'server', 'frame']);
});

test('a proof at another index, with another entry, or under another key fails', async () => {
  const p = proofs[3];
  await assert.rejects(checkProof({ ...p, index: 4 }, vkey), /^Error: audit_tree/);
  await assert.rejects(checkProof({ ...p, entry: proofs[4].entry }, vkey), /^Error: audit_tree/);
  await assert.rejects(checkProof({ ...p, hashes: p.hashes.slice(1) }, vkey), /^Error: audit_tree/);
  const other = vkey.replace(/\+[0-9a-f]{8}\+/, '+00000000+');
  await assert.rejects(checkProof(p, other), /hash mismatch/);
  const edited = p.checkpoint.replace(/\n7\n/, '\n6\n');
  await assert.rejects(checkProof({ ...p, checkpoint: edited }, vkey), /^Error: audit_checkpoint/);
});

// A delivery from a server with a synchronous audit log carries the
// message's log index in its signed body (§10.3, §21.3): openDelivery
// accepts it and returns it as logIndex, for client.prove.
test('a delivery carries its log index', async () => {
  const { openDelivery } = await import('../protocol.js');
  const { b64uDecode } = await import('../jose.js');
  const cases = join(dir, '..', 'cases');
  const envOf = (name) => {
    const v = JSON.parse(readFileSync(join(cases, name + '.json'), 'utf8'));
    // The delivery's own signature is the vectors' concern (vectors.test.mjs):
    // here only its body is read.
    return JSON.parse(new TextDecoder().decode(b64uDecode(v.frame.split('.')[1])));
  };
  assert.equal((await openDelivery(envOf('delivery-log-index-ok'), null)).logIndex, 7);
  assert.equal((await openDelivery(envOf('delivery-direct-log-index-ok'), null)).logIndex, 8);
  assert.equal((await openDelivery(envOf('delivery-ok-eddsa'), null)).logIndex, undefined);
  await assert.rejects(openDelivery(envOf('delivery-log-index-negative'), null), /log_index/);
});
