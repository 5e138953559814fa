// Strict JSON (spec.md §6.3): table tests and a differential/property test
// against JSON.parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isStrict, parse, members, validate } from '../strictjson.js';

const enc = new TextEncoder();

test('accepts strict JSON', () => {
  for (const t of ['{}', '[]', ' {"a":1} ', '"x"', '0', '-0.5e+10', 'true', 'null', '{"a":{"a":1}}', '{"a":"\\u00e9\\ud83d\\ude00"}',
    '[1e-400]', '{"a\\u0062":1,"ab2":2}', '"\\/\\b\\f\\n\\r\\t"', '{"Act":1,"act":2}']) {
    assert.ok(isStrict(t), t);
  }
});

test('rejects what JSON.parse accepts but Sigil must not', () => {
  for (const t of ['{"a":1,"a":2}', '{"act":1,"\\u0061ct":2}', '{"x":{"b":1,"b":2}}', '["\\ud800"]', '"\\udc00"', '"\\ud800\\u0041"', '[1e400]', '[-1e309]']) {
    assert.doesNotThrow(() => JSON.parse(t), t);
    assert.equal(isStrict(t), false, t);
  }
});

test('rejects invalid JSON and bad UTF-8', () => {
  for (const t of ['', ' ', '{', '{"a"}', '{"a":1,}', '[1,]', '01', '1.', '.5', '+1', '"\t"', "'a'", '{} {}', 'nul', 'NaN', '[1]x', '"\\x"', '"\\u12"']) {
    assert.equal(isStrict(t), false, JSON.stringify(t));
  }
  assert.equal(isStrict(new Uint8Array([0x22, 0xff, 0x22])), false);
  assert.equal(isStrict(new Uint8Array([0x22, 0xc0, 0xaf, 0x22])), false, 'overlong');
  assert.equal(isStrict(new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22])), false, 'encoded surrogate');
  assert.equal(isStrict('"\ud800"'), false, 'lone surrogate in a JS string');
  assert.ok(isStrict(enc.encode('"é😀"')));
});

test('nesting limit counts the outer value', () => {
  assert.ok(isStrict('['.repeat(32) + ']'.repeat(32)));
  assert.equal(isStrict('['.repeat(33) + ']'.repeat(33)), false);
  assert.ok(isStrict('{"a":'.repeat(31) + '{}' + '}'.repeat(31)));
  assert.equal(isStrict('{"a":'.repeat(32) + '{}' + '}'.repeat(32)), false);
});

test('members returns raw member text in order', () => {
  const m = members('{"b":[1, 2],"a":"\\u0078","n":1.50}');
  assert.deepEqual([...m.keys()], ['b', 'a', 'n']);
  assert.equal(m.get('b'), '[1, 2]');
  assert.equal(m.get('n'), '1.50');
  assert.throws(() => members('[1]'));
});

// Deterministic PRNG (mulberry32) for the property test.
function rng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function genValue(r, depth) {
  const k = Math.floor(r() * (depth > 4 ? 5 : 7));
  switch (k) {
    case 0: return null;
    case 1: return r() < 0.5;
    case 2: return Math.floor(r() * 2 ** 40) * (r() < 0.2 ? -1 : 1) / (r() < 0.3 ? 1000 : 1);
    case 3: case 4: {
      const chars = ['a', 'b', 'é', '😀', '"', '\\', '\n', '\u0001', '/', 'ф'];
      let s = '';
      for (let i = Math.floor(r() * 6); i > 0; i--) s += chars[Math.floor(r() * chars.length)];
      return s;
    }
    case 5: return Array.from({ length: Math.floor(r() * 4) }, () => genValue(r, depth + 1));
    default: {
      const o = {};
      for (let i = Math.floor(r() * 4); i > 0; i--) o[['a', 'b', 'c', 'A', 'é'][Math.floor(r() * 5)] + i] = genValue(r, depth + 1);
      return o;
    }
  }
}

test('differential: agrees with JSON.parse on generated texts and their mutations', () => {
  const r = rng(7);
  const alphabet = ['{', '}', '[', ']', ',', ':', '"', '\\', 'u', '0', '1', 'e', '-', '.', ' ', 'a', 'd8', 'x'];
  let accepted = 0;
  let mutatedRejected = 0;
  for (let i = 0; i < 3000; i++) {
    const v = genValue(r, 0);
    const text = JSON.stringify(v);
    // Every JSON.stringify output is strict (it never writes duplicates) and parses to the same value.
    assert.ok(isStrict(text), text);
    assert.deepEqual(parse(text), JSON.parse(text));
    accepted++;
    // Mutate: strict acceptance implies JSON.parse acceptance (strict ⊂ JSON).
    let m = text;
    for (let j = 1 + Math.floor(r() * 3); j > 0; j--) {
      const at = Math.floor(r() * (m.length + 1));
      const op = r();
      if (op < 0.4) m = m.slice(0, at) + alphabet[Math.floor(r() * alphabet.length)] + m.slice(at);
      else if (op < 0.8) m = m.slice(0, at) + m.slice(at + 1);
      else m = m.slice(0, at) + m.slice(at, at + 4) + m.slice(at);
    }
    let jsonOK = true;
    try {
      JSON.parse(m);
    } catch {
      jsonOK = false;
    }
    if (isStrict(m)) {
      assert.ok(jsonOK, `strict accepted what JSON.parse rejects: ${m}`);
      // With no duplicates, re-serializing gives the same value.
      assert.deepEqual(JSON.parse(JSON.stringify(parse(m))), JSON.parse(m));
    } else if (jsonOK) {
      mutatedRejected++; // duplicates, lone surrogates, overflow: the differences strictness is for
    }
  }
  assert.equal(accepted, 3000);
  assert.ok(mutatedRejected >= 0);
});

test('validate returns the text and reports an offset', () => {
  assert.equal(validate(enc.encode('{"a":1}')), '{"a":1}');
  assert.throws(() => validate('{"a":1,"a":1}'), /duplicate member name "a" at offset/);
});
