/**
 * JSON read and written the way the Rust host's serde_json does, so that the replay hands the
 * policy byte for byte the text `citus-ha replay` hands it: numbers keep whether they were
 * integers (`30` stays `30`, `30.0` stays `30.0`, `1e3` becomes `1000.0`), object keys come
 * out sorted by code point, strings are escaped as serde_json escapes them.
 * `JSON.parse` cannot do this (it forgets how a number was written), hence this small parser.
 * @module
 */

/** A JSON number as serde_json holds it: its value and how serde_json prints it. */
export class JsonNumber {
  /** @param {number} value @param {string} text @param {boolean} integer */
  constructor(value, text, integer) {
    this.value = value;
    this.text = text;
    /** True when it is a 64-bit integer for serde_json (no fraction or exponent, in range). */
    this.integer = integer;
  }
}

/** A parsed JSON value (arrays and objects hold more of them). @typedef {null | boolean | string | JsonNumber | any[] | { [key: string]: any }} JsonValue */

const U64_MAX = 18446744073709551615n;
const I64_MIN = -9223372036854775808n;

/**
 * A finite double as serde_json (ryu) prints it: shortest round-trip digits, `.0` on whole
 * numbers, an exponent outside 1e-5 ..< 1e16.
 * @param {number} x
 */
export function formatFloat(x) {
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mant, exp] = Math.abs(x).toExponential().split('e');
  const digits = mant.replace('.', '');
  const n = digits.length;
  const kk = Number(exp) + 1; // where the decimal point goes, counted from the first digit
  let body;
  if (kk >= n && kk <= 16) body = digits + '0'.repeat(kk - n) + '.0';
  else if (kk > 0 && kk <= 16) body = `${digits.slice(0, kk)}.${digits.slice(kk)}`;
  else if (kk > -5 && kk <= 0) body = `0.${'0'.repeat(-kk)}${digits}`;
  else body = (n === 1 ? digits : `${digits[0]}.${digits.slice(1)}`) + `e${kk - 1}`;
  return sign + body;
}

/** @param {string} lexeme */
function number(lexeme) {
  if (/^-?\d+$/.test(lexeme)) {
    const big = BigInt(lexeme);
    // serde_json reads `-0` as the double -0.0, and only 64-bit values as integers.
    if (lexeme[0] === '-' ? big >= I64_MIN && big !== 0n : big <= U64_MAX) {
      return new JsonNumber(Number(big), big.toString(), true);
    }
  }
  const value = Number(lexeme);
  if (!Number.isFinite(value)) throw new SyntaxError('number out of range');
  return new JsonNumber(value, formatFloat(value), false);
}

/**
 * Parses JSON text, numbers as `JsonNumber`s. Throws `SyntaxError` naming the column.
 * @param {string} text
 * @returns {JsonValue}
 */
export function parse(text) {
  let i = 0;
  const fail = (/** @type {string} */ what) => {
    throw new SyntaxError(`${what} at column ${i + 1}`);
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  /** @returns {JsonValue} */
  const value = (depth = 0) => {
    if (depth > 128) fail('recursion limit exceeded');
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      /** @type {{ [key: string]: JsonValue }} */
      const o = Object.create(null);
      ws();
      if (text[i] === '}') { i++; return o; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('key must be a string');
        const k = string();
        ws();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        o[k] = value(depth + 1);
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return o; }
        fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      i++;
      /** @type {JsonValue[]} */
      const a = [];
      ws();
      if (text[i] === ']') { i++; return a; }
      for (;;) {
        a.push(value(depth + 1));
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return a; }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of /** @type {const} */ ([['true', true], ['false', false], ['null', null]])) {
      if (text.startsWith(word, i)) { i += word.length; return v; }
    }
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) fail(i >= text.length ? 'EOF while parsing a value' : 'expected value');
    i += /** @type {RegExpExecArray} */ (m)[0].length;
    return number(/** @type {RegExpExecArray} */ (m)[0]);
  };
  const string = () => {
    i++; // the opening quote
    let out = '';
    let start = i;
    for (;;) {
      if (i >= text.length) fail('EOF while parsing a string');
      const ch = text.charCodeAt(i);
      if (ch === 0x22) { out += text.slice(start, i); i++; return out; }
      if (ch < 0x20) fail('control character in a string');
      if (ch === 0x5c) {
        out += text.slice(start, i);
        const e = text[i + 1];
        i += 2;
        const simple = /** @type {Record<string, string>} */ ({ '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' });
        if (e in simple) out += simple[e];
        else if (e === 'u') {
          const hex = () => {
            const h = text.slice(i, i + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(h)) fail('invalid escape');
            i += 4;
            return parseInt(h, 16);
          };
          const u = hex();
          if (u >= 0xd800 && u < 0xdc00) {
            if (text[i] !== '\\' || text[i + 1] !== 'u') fail('lone leading surrogate in hex escape');
            i += 2;
            const low = hex();
            if (low < 0xdc00 || low >= 0xe000) fail('invalid unicode code point');
            out += String.fromCharCode(u, low);
          } else if (u >= 0xdc00 && u < 0xe000) fail('lone trailing surrogate in hex escape');
          else out += String.fromCharCode(u);
        } else fail('invalid escape');
        start = i;
        continue;
      }
      i++;
    }
  };
  const v = value();
  ws();
  if (i < text.length) fail('trailing characters');
  return v;
}

/** @param {string} a @param {string} b */
function byCodePoint(a, b) {
  // serde_json's map is a BTreeMap<String, _>: byte order of UTF-8, which is code point order.
  const x = [...a], y = [...b];
  for (let k = 0; k < Math.min(x.length, y.length); k++) {
    const d = /** @type {number} */ (x[k].codePointAt(0)) - /** @type {number} */ (y[k].codePointAt(0));
    if (d) return d;
  }
  return x.length - y.length;
}

/**
 * Compact JSON as serde_json writes a `Value` (keys sorted).
 * @param {JsonValue} v
 * @returns {string}
 */
export function stringify(v) {
  if (v instanceof JsonNumber) return v.text;
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(stringify).join(',')}]`;
  const keys = Object.keys(v).sort(byCodePoint);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stringify(v[k])}`).join(',')}}`;
}

/**
 * Plain JavaScript values (numbers as numbers) for the parts of a scenario that are handed on
 * as objects.
 * @param {JsonValue} v
 * @returns {any}
 */
export function plain(v) {
  if (v instanceof JsonNumber) return v.value;
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(plain);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
}
