// The Worker's tables equal protocol/vectors/registry.json, which protocol/ generates: error codes,
// their HTTP statuses, close codes and frame types cannot drift from the Python relay.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { CloseCode, ErrorCode, FrameType, httpStatus, ISOLATION_LEVELS, SESSION_CAP, SESSION_END_REASONS, SESSION_OPS } from "../src/frames.js";
import { SQL_TYPES } from "../src/request.js";

const REGISTRY = JSON.parse(readFileSync(new URL("../../../protocol/vectors/registry.json", import.meta.url), "utf8"));

test("ErrorCode is the registry's error codes, name for name", () => {
  assert.deepEqual(ErrorCode, Object.fromEntries(REGISTRY.error_codes.map(({ name, code }) => [name, code])));
});

test("httpStatus answers the registry's status for every code and prefix", () => {
  for (const { code, http_status: status } of REGISTRY.error_codes) assert.equal(httpStatus(code), status, code);
  for (const [prefix, status] of Object.entries(REGISTRY.http_status_by_prefix)) {
    assert.equal(httpStatus(`${prefix}not_registered`), status, prefix);
  }
  assert.equal(httpStatus("not.registered"), 500);
});

test("CloseCode and FrameType are the registry's", () => {
  assert.deepEqual({ ...CloseCode }, REGISTRY.close_codes);
  assert.deepEqual({ ...FrameType }, REGISTRY.frame_types);
});

test("the session vocabulary is the registry's", () => {
  assert.equal(SESSION_CAP, REGISTRY.session.capability);
  assert.deepEqual([...SESSION_OPS], REGISTRY.session.ops);
  assert.deepEqual([...ISOLATION_LEVELS], REGISTRY.session.isolation_levels);
  assert.deepEqual([...SESSION_END_REASONS], REGISTRY.session.end_reasons);
});

test("SQL_TYPES, the types a typed parameter may name, are the registry's", () => {
  assert.deepEqual([...SQL_TYPES].sort(), REGISTRY.sql_types.map(({ name }) => name).sort());
});
