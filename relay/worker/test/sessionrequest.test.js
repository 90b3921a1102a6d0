// The bodies of the session endpoints (request.js, as relay/sessions.py reads them): refusals
// name the member, never echo values.
import assert from "node:assert/strict";
import test from "node:test";

import { HttpError } from "../src/http.js";
import { MAX_STATEMENTS, parseBeginRequest, parseEmptyRequest, parseSavepointRequest, parseTransactionRequest } from "../src/request.js";

const body = (value) => new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value));
const OPTIONS = { maxTimeoutMs: 30_000 };

function refused(fn, pattern) {
  assert.throws(fn, (err) => err instanceof HttpError && err.code === "request.invalid" && pattern.test(err.detail));
}

test("begin: empty, {} or isolation / timeout_ms (the idle timeout) / role", () => {
  assert.deepEqual(parseBeginRequest(new Uint8Array(0)), {});
  assert.deepEqual(parseBeginRequest(body({})), {});
  assert.deepEqual(parseBeginRequest(body({ isolation: "snapshot", timeout_ms: 5000, role: "admin" })), { isolation: "snapshot", idle_timeout_ms: 5000, role: "admin" });
  refused(() => parseBeginRequest(body({ isolation: "chaos" })), /'isolation'/);
  refused(() => parseBeginRequest(body({ timeout_ms: 0 })), /'timeout_ms'/);
  refused(() => parseBeginRequest(body({ timeout_ms: 2 ** 31 })), /'timeout_ms'/);
  refused(() => parseBeginRequest(body({ role: "" })), /'role'/);
  refused(() => parseBeginRequest(body({ sql: "SELECT 1" })), /unknown member/);
  refused(() => parseBeginRequest(body('{"role": "a", "role": "b"}')), /once/);
});

test("savepoint and rollback_to: a name of [A-Za-z_][A-Za-z0-9_]{0,31}", () => {
  assert.equal(parseSavepointRequest(body({ name: "before_all" })), "before_all");
  assert.equal(parseSavepointRequest(body({ name: `_${"a".repeat(31)}` })), `_${"a".repeat(31)}`);
  for (const name of ["1; DROP TABLE stock", "", "a".repeat(33), "a-b", 7]) {
    assert.throws(() => parseSavepointRequest(body({ name })), (err) => err instanceof HttpError && !err.detail.includes("DROP"));
  }
  refused(() => parseSavepointRequest(new Uint8Array(0)), /not JSON/);
});

test("commit and rollback: empty or {}", () => {
  parseEmptyRequest(new Uint8Array(0));
  parseEmptyRequest(body({}));
  refused(() => parseEmptyRequest(body({ force: true })), /unknown member/);
});

test("transaction: 1..100 statements checked as /query; timeout_ms per statement", () => {
  const parsed = parseTransactionRequest(body({ statements: [{ sql: "UPDATE t SET a = @a", params: { a: 1 } }, { query: "named" }], isolation: "serializable", timeout_ms: 1234, role: "admin" }), OPTIONS);
  assert.deepEqual(parsed.begin, { isolation: "serializable", role: "admin" });
  assert.equal(parsed.statements.length, 2);
  assert.equal(parsed.statements[0].params_json, '{"a":1}');
  assert.equal(parsed.statements[1].query, "named");
  assert.deepEqual(parsed.statements.map((s) => s.timeout_ms), [1234, 1234]);
  assert.notEqual(parsed.statements[0].query_id, parsed.statements[1].query_id);
  assert.equal(parseTransactionRequest(body({ statements: [{ sql: "x" }] }), OPTIONS).statements[0].timeout_ms, 30_000);
  refused(() => parseTransactionRequest(body({ statements: [] }), OPTIONS), /'statements'/);
  refused(() => parseTransactionRequest(body({ statements: Array(MAX_STATEMENTS + 1).fill({ sql: "x" }) }), OPTIONS), /'statements'/);
  refused(() => parseTransactionRequest(body({ statements: [{ sql: "x" }, { sql: "y", max_rows: 1 }] }), OPTIONS), /statements\[1\]/);
  refused(() => parseTransactionRequest(body({ statements: [{ sql: "x", query: "y" }] }), OPTIONS), /statements\[0\]: send exactly one/);
  refused(() => parseTransactionRequest(body({ statements: [7] }), OPTIONS), /statements\[0\] must be an object/);
});
