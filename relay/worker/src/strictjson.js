// @ts-check
/**
 * Strict JSON objects, as Python's json.loads with an object_pairs_hook that refuses duplicates sees
 * them (protocol/_json.py loads_object, identity/_idtoken.py): JSON.parse keeps the LAST of two
 * members with the same name, so a second "aud" or "sub" would silently win. Text is decoded as
 * strict UTF-8 with a BOM kept (and so refused by JSON.parse, as Python refuses it).
 */

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Walk JSON text that JSON.parse already accepted: refuse duplicate member names (compared after
 * unescaping, like Python's object_pairs_hook sees them), deep nesting and long number literals.
 * @param {string} text @param {{maxNesting?: number, maxNumberChars?: number}} [limits]
 * @returns {string | null} what is wrong, or null
 */
export function scanJson(text, { maxNesting = Infinity, maxNumberChars = Infinity } = {}) {
  /** @type {Array<Set<string> | null>} */
  const stack = []; // per open container: a Set of member names (object) or null (array)
  let expectKey = false;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const j = closingQuote(text, i + 1);
      if (expectKey) {
        const raw = text.slice(i + 1, j);
        const key = raw.includes("\\") ? JSON.parse(text.slice(i, j + 1)) : raw;
        const names = /** @type {Set<string>} */ (stack[stack.length - 1]); // a key: inside an object
        if (names.has(key)) return `has a duplicate member name ${JSON.stringify(key.slice(0, 40))}`;
        names.add(key);
        expectKey = false;
      }
      i = j + 1;
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      stack.push(c === OPEN_OBJECT ? new Set() : null);
      if (stack.length > maxNesting) return `is nested deeper than ${maxNesting} levels`;
      expectKey = c === OPEN_OBJECT;
      i += 1;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      stack.pop();
      expectKey = false;
      i += 1;
    } else if (c === COMMA) {
      expectKey = stack[stack.length - 1] !== null;
      i += 1;
    } else if (c === MINUS || (c >= DIGIT_0 && c <= DIGIT_9)) {
      let j = i;
      while (j < n && isNumberChar(text.charCodeAt(j))) j += 1;
      if (j - i > maxNumberChars) return `has a number literal over ${maxNumberChars} characters`;
      i = j;
    } else {
      i += 1; // whitespace, ':' and the letters of true/false/null
    }
  }
  return null;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/** A character of a number literal: digits and + - . e E. @param {number} c */
function isNumberChar(c) {
  return (c >= DIGIT_0 && c <= DIGIT_9) || c === 0x2b || c === MINUS || c === 0x2e || c === 0x65 || c === 0x45;
}

/**
 * The index of the quote that ends the string whose text starts at `from` (JSON.parse accepted
 * it): the first quote after an even run of backslashes (an odd run escapes it).
 * @param {string} text @param {number} from
 */
function closingQuote(text, from) {
  for (let q = text.indexOf('"', from); ; q = text.indexOf('"', q + 1)) {
    let k = q - 1;
    while (k >= from && text.charCodeAt(k) === BACKSLASH) k -= 1;
    if ((q - 1 - k) % 2 === 0) return q;
  }
}

/**
 * Parse UTF-8 bytes as one JSON object with unique member names (and the given limits).
 * @param {Uint8Array} bytes @param {{maxNesting?: number, maxNumberChars?: number}} [limits]
 * @returns {Record<string, any>} @throws {TypeError} saying what is wrong
 */
export function parseStrictObject(bytes, limits) {
  let text;
  let value;
  try {
    text = strictUtf8.decode(bytes);
    value = JSON.parse(text);
  } catch {
    throw new TypeError("is not JSON (strict UTF-8)");
  }
  const problem = scanJson(text, limits);
  if (problem !== null) throw new TypeError(problem);
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new TypeError("is not a JSON object");
  return value;
}
