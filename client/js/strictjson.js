// strictjson.js: strict JSON validation as in spec.md §6.3.
//
// JSON.parse accepts duplicate member names (the last one wins) and lone
// surrogate escapes, so it cannot be used alone on signed data: two parsers
// could read the same bytes differently. This scanner checks a text first:
//
//   - the grammar of RFC 8259, with nothing but white space around the value;
//   - valid UTF-8 (when given bytes) and no unpaired surrogate escapes;
//   - no duplicate member names at any depth, compared after unescaping
//     ("act" and "\u0061ct" are the same), case-sensitively;
//   - every number representable as a finite IEEE 754 double;
//   - nesting no deeper than maxDepth (32 in Sigil), counting the outer value.
//
// Only after the scan does the text go to JSON.parse, which is then safe.

export const MAX_DEPTH = 32;

/** StrictJSONError describes why a text is not strict JSON. */
export class StrictJSONError extends Error {
  constructor(msg, offset) {
    super(`json: ${msg} at offset ${offset}`);
    this.name = 'StrictJSONError';
    this.offset = offset;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * toText converts bytes (Uint8Array/ArrayBuffer) to a string, rejecting
 * invalid UTF-8; a string is checked for unpaired surrogates (it could not
 * have come from valid UTF-8).
 */
export function toText(input) {
  if (typeof input === 'string') {
    if (!input.isWellFormed ? hasLoneSurrogate(input) : !input.isWellFormed()) {
      throw new StrictJSONError('invalid UTF-16 (unpaired surrogate)', 0);
    }
    return input;
  }
  const bytes = input instanceof ArrayBuffer ? new Uint8Array(input) : input;
  try {
    return utf8.decode(bytes);
  } catch {
    throw new StrictJSONError('invalid UTF-8', 0);
  }
}

function hasLoneSurrogate(s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) return true;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return true;
    }
  }
  return false;
}

class Scanner {
  constructor(text, maxDepth) {
    this.s = text;
    this.pos = 0;
    this.maxDepth = maxDepth;
  }

  fail(msg) {
    throw new StrictJSONError(msg, this.pos);
  }

  ws() {
    const s = this.s;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.pos++;
      else return;
    }
  }

  value(depth) {
    const s = this.s;
    if (this.pos >= s.length) this.fail('unexpected end');
    const c = s[this.pos];
    if (c === '{') return this.object(depth + 1, null);
    if (c === '[') return this.array(depth + 1);
    if (c === '"') return this.str(false);
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    if (c === 't') return this.lit('true');
    if (c === 'f') return this.lit('false');
    if (c === 'n') return this.lit('null');
    this.fail('unexpected character');
  }

  lit(w) {
    if (!this.s.startsWith(w, this.pos)) this.fail('invalid literal');
    this.pos += w.length;
  }

  number() {
    const s = this.s;
    const start = this.pos;
    const digit = () => this.pos < s.length && s.charCodeAt(this.pos) >= 0x30 && s.charCodeAt(this.pos) <= 0x39;
    if (s[this.pos] === '-') this.pos++;
    if (this.pos >= s.length) this.fail('invalid number');
    if (s[this.pos] === '0') {
      this.pos++;
    } else if (digit()) {
      while (digit()) this.pos++;
    } else {
      this.fail('invalid number');
    }
    if (s[this.pos] === '.') {
      this.pos++;
      const f = this.pos;
      while (digit()) this.pos++;
      if (this.pos === f) this.fail('invalid number');
    }
    if (s[this.pos] === 'e' || s[this.pos] === 'E') {
      this.pos++;
      if (s[this.pos] === '+' || s[this.pos] === '-') this.pos++;
      const f = this.pos;
      while (digit()) this.pos++;
      if (this.pos === f) this.fail('invalid number');
    }
    // A number no double can hold is rejected: implementations would
    // disagree on its value. Underflow to zero is allowed (as in Go).
    if (!Number.isFinite(Number(s.slice(start, this.pos)))) this.fail('number out of range');
  }

  // str scans a string at its opening quote; with want, it returns the
  // unescaped contents.
  str(want) {
    const s = this.s;
    this.pos++;
    const start = this.pos;
    let escaped = false;
    for (;;) {
      if (this.pos >= s.length) this.fail('unterminated string');
      const c = s.charCodeAt(this.pos);
      if (c === 0x22) {
        const raw = s.slice(start, this.pos);
        this.pos++;
        if (!want) return undefined;
        return escaped ? JSON.parse('"' + raw + '"') : raw;
      }
      if (c === 0x5c) {
        escaped = true;
        this.escape();
      } else if (c < 0x20) {
        this.fail('control character in string');
      } else {
        this.pos++;
      }
    }
  }

  escape() {
    const s = this.s;
    if (this.pos + 1 >= s.length) this.fail('unterminated escape');
    const e = s[this.pos + 1];
    if ('"\\/bfnrt'.includes(e)) {
      this.pos += 2;
      return;
    }
    if (e !== 'u') this.fail('invalid escape');
    const r = hex4(s, this.pos + 2);
    if (r < 0) this.fail('invalid \\u escape');
    this.pos += 6;
    if (r >= 0xd800 && r <= 0xdfff) {
      if (r >= 0xdc00 || s[this.pos] !== '\\' || s[this.pos + 1] !== 'u') this.fail('unpaired surrogate');
      const r2 = hex4(s, this.pos + 2);
      if (r2 < 0xdc00 || r2 > 0xdfff) this.fail('unpaired surrogate');
      this.pos += 6;
    }
  }

  array(depth) {
    if (depth > this.maxDepth) this.fail('nested too deeply');
    const s = this.s;
    this.pos++;
    this.ws();
    if (s[this.pos] === ']') {
      this.pos++;
      return;
    }
    for (;;) {
      this.ws();
      this.value(depth);
      this.ws();
      if (this.pos >= s.length) this.fail('unterminated array');
      const c = s[this.pos];
      if (c === ',') this.pos++;
      else if (c === ']') {
        this.pos++;
        return;
      } else this.fail('expected , or ]');
    }
  }

  // object scans an object; fn, if given, is called with each member's
  // name and raw value text.
  object(depth, fn) {
    if (depth > this.maxDepth) this.fail('nested too deeply');
    const s = this.s;
    this.pos++;
    const seen = new Set();
    this.ws();
    if (s[this.pos] === '}') {
      this.pos++;
      return;
    }
    for (;;) {
      this.ws();
      if (s[this.pos] !== '"') this.fail('expected member name');
      const name = this.str(true);
      if (seen.has(name)) this.fail('duplicate member name ' + JSON.stringify(name));
      seen.add(name);
      this.ws();
      if (s[this.pos] !== ':') this.fail('expected :');
      this.pos++;
      this.ws();
      const start = this.pos;
      this.value(depth);
      if (fn) fn(name, s.slice(start, this.pos));
      this.ws();
      if (this.pos >= s.length) this.fail('unterminated object');
      const c = s[this.pos];
      if (c === ',') this.pos++;
      else if (c === '}') {
        this.pos++;
        return;
      } else this.fail('expected , or }');
    }
  }
}

function hex4(s, at) {
  if (at + 4 > s.length) return -1;
  const h = s.slice(at, at + 4);
  if (!/^[0-9a-fA-F]{4}$/.test(h)) return -1;
  return parseInt(h, 16);
}

/** validate throws StrictJSONError unless input is exactly one strict JSON value. Returns the text. */
export function validate(input, maxDepth = MAX_DEPTH) {
  const text = toText(input);
  const sc = new Scanner(text, maxDepth);
  sc.ws();
  sc.value(0);
  sc.ws();
  if (sc.pos !== text.length) sc.fail('trailing data');
  return text;
}

/** isStrict reports whether input is strict JSON. */
export function isStrict(input, maxDepth = MAX_DEPTH) {
  try {
    validate(input, maxDepth);
    return true;
  } catch (e) {
    if (e instanceof StrictJSONError) return false;
    throw e;
  }
}

/** parse validates input strictly, then returns JSON.parse of it. */
export function parse(input, maxDepth = MAX_DEPTH) {
  return JSON.parse(validate(input, maxDepth));
}

/**
 * members validates that input is exactly one strict JSON object and
 * returns a Map from each member name (unescaped) to its raw value text,
 * in order. Throws StrictJSONError (with notObject set) otherwise.
 */
export function members(input, maxDepth = MAX_DEPTH) {
  const text = toText(input);
  const sc = new Scanner(text, maxDepth);
  sc.ws();
  if (text[sc.pos] !== '{') {
    const e = new StrictJSONError('not an object', sc.pos);
    e.notObject = true;
    throw e;
  }
  const out = new Map();
  sc.object(1, (name, raw) => out.set(name, raw));
  sc.ws();
  if (sc.pos !== text.length) sc.fail('trailing data');
  return out;
}
