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
