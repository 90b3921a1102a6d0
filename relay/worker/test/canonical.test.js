// canonicalJson must equal Python's json.dumps(sort_keys=True, separators=(",", ":"),
// ensure_ascii=False); these expectations were produced by CPython 3.11.
import assert from "node:assert/strict";
import { test } from "node:test";

import { canonicalJsonText, pythonFloatRepr } from "../src/auth.js";

test("floats print like Python's repr", () => {
  const cases = {
    0.1: "0.1", 1.5: "1.5", 1e16: "1e+16", 1e15: "1000000000000000.0", 0.00001: "1e-05",
    0.0001: "0.0001", 1.5e-7: "1.5e-07", 123456.789: "123456.789", 1e22: "1e+22", "-2.5": "-2.5",
    5e-324: "5e-324", 1.7976931348623157e308: "1.7976931348623157e+308", 2.5e-5: "2.5e-05",
  };
  for (const [input, expected] of Object.entries(cases)) assert.equal(pythonFloatRepr(Number(input)), expected, input);
  assert.equal(pythonFloatRepr(-0), "-0.0");
});

test("objects sort by code point, strings escape like Python", () => {
  const value = { b: 1, a: [true, null, 'x"\n\u0001é😀\u2028'], "\uffff": 1, "😀": 2, "": 0.5 };
  assert.equal(canonicalJsonText(value), '{"":0.5,"a":[true,null,"x\\"\\n\\u0001é😀\u2028"],"b":1,"\uffff":1,"😀":2}');
});

test("every ASCII character and U+007F..U+00A0, U+2028, U+2029, U+FFFF escape as Python's json.dumps does", () => {
  // json.dumps(ensure_ascii=False): \" \\ \b \t \n \f \r, other characters below U+0020 as
  // \u00xx in lowercase hex, everything else as it is
  const named = { 0x08: "\\b", 0x09: "\\t", 0x0a: "\\n", 0x0c: "\\f", 0x0d: "\\r", 0x22: '\\"', 0x5c: "\\\\" };
  const codes = [...Array.from({ length: 0xa1 }, (_, c) => c), 0x2028, 0x2029, 0xfeff, 0xffff];
  const python = (/** @type {number} */ c) => named[c] ?? (c < 0x20 ? `\\u${c.toString(16).padStart(4, "0")}` : String.fromCharCode(c));
  const text = String.fromCharCode(...codes);
  assert.equal(canonicalJsonText(text), `"${codes.map(python).join("")}"`);
  assert.equal(canonicalJsonText({ [text]: text }), `{"${codes.map(python).join("")}":"${codes.map(python).join("")}"}`);
});

test("values Python cannot agree on are refused", () => {
  assert.throws(() => canonicalJsonText({ n: 2 ** 53 + 2 }), /2\^53/);
  assert.throws(() => canonicalJsonText({ s: "\ud800" }), /lone surrogate/);
  assert.throws(() => canonicalJsonText({ f: () => 1 }), /not JSON-serializable/);
});
