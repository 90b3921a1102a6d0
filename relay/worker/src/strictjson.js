// @ts-check
/**
 * Strict JSON objects, as Python's json.loads with an object_pairs_hook that refuses duplicates sees
 * them (protocol/_json.py loads_object, edgetds/_idtoken.py): JSON.parse keeps the LAST of two
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
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1));
        const names = /** @type {Set<string>} */ (stack[stack.length - 1]); // a key: inside an object
        if (names.has(key)) return `has a duplicate member name ${JSON.stringify(key.slice(0, 40))}`;
        names.add(key);
        expectKey = false;
      }
      i = j + 1;
    } else if (c === "{" || c === "[") {
      stack.push(c === "{" ? new Set() : null);
      if (stack.length > maxNesting) return `is nested deeper than ${maxNesting} levels`;
      expectKey = c === "{";
      i += 1;
    } else if (c === "}" || c === "]") {
      stack.pop();
      expectKey = false;
      i += 1;
    } else if (c === ",") {
      expectKey = stack[stack.length - 1] !== null;
      i += 1;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      let j = i;
      while (j < text.length && "0123456789+-.eE".includes(text[j])) j += 1;
      if (j - i > maxNumberChars) return `has a number literal over ${maxNumberChars} characters`;
      i = j;
    } else {
      i += 1; // whitespace, ':' and the letters of true/false/null
    }
  }
  return null;
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
