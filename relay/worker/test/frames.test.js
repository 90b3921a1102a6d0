// The frame codec: header rules, whole-message splitting, incremental reading, payload checks.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CloseCode,
  checkFrameRule,
  decodePayload,
  encodeFrame,
  FrameReader,
  FrameType,
  httpStatus,
  parseFrame,
  ProtocolError,
  splitMessage,
} from "../src/frames.js";

const MAX = 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();

test("encodeFrame writes the 12-byte big-endian header", () => {
  const frame = encodeFrame(FrameType.ROWS, 0x01020304, enc.encode("[1]\n"));
  assert.deepEqual([...frame.subarray(0, 12)], [1, 0x21, 0, 0, 1, 2, 3, 4, 0, 0, 0, 4]);
  assert.equal(new TextDecoder().decode(frame.subarray(12)), "[1]\n");
});

test("parseFrame round-trips and refuses bad headers", () => {
  const frame = encodeFrame(FrameType.CREDIT, 7, new Uint8Array([0, 0, 1, 0]));
  const parsed = parseFrame(frame, { maxPayload: MAX });
  assert.equal(parsed.type, FrameType.CREDIT);
  assert.equal(parsed.streamId, 7);
  assert.equal(decodePayload(parsed).increment, 256);
  const cases = [
    [(f) => (f[0] = 2), /version/],
    [(f) => (f[1] = 0x7f), /unknown frame type/],
    [(f) => (f[2] = 1), /flags/],
    [(f) => (f[3] = 1), /reserved/],
  ];
  for (const [mutate, message] of cases) {
    const bad = frame.slice();
    mutate(bad);
    assert.throws(() => parseFrame(bad, { maxPayload: MAX }), message);
  }
  assert.throws(() => parseFrame(frame.subarray(0, 13), { maxPayload: MAX }), /truncated/);
  assert.throws(() => parseFrame(new Uint8Array([...frame, 0]), { maxPayload: MAX }), /after the end/);
});

test("an oversized declared length is refused from the header alone", () => {
  const header = encodeFrame(FrameType.ROWS, 1, new Uint8Array(0));
  new DataView(header.buffer).setUint32(8, MAX + 1);
  const reader = new FrameReader({ maxPayload: MAX });
  reader.feed(header);
  assert.throws(
    () => reader.nextFrame(),
    (err) => err instanceof ProtocolError && err.closeCode === CloseCode.MESSAGE_TOO_BIG,
  );
});

test("FrameReader accepts input byte by byte", () => {
  const data = new Uint8Array([
    ...encodeFrame(FrameType.PING, 0, new Uint8Array(8).fill(7)),
    ...encodeFrame(FrameType.ROWS, 3, enc.encode("[1]\n[2]\n")),
  ]);
  const reader = new FrameReader({ maxPayload: MAX });
  const frames = [];
  for (const byte of data) {
    reader.feed(new Uint8Array([byte]));
    for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) frames.push(f);
  }
  assert.deepEqual(frames.map((f) => [f.type, f.streamId, f.payload.length]), [
    [FrameType.PING, 0, 8],
    [FrameType.ROWS, 3, 8],
  ]);
  assert.equal(reader.buffered, 0);
});

test("splitMessage returns every whole frame and refuses a partial one", () => {
  const a = encodeFrame(FrameType.COLUMNS, 1, enc.encode('{"columns":[]}\n'));
  const b = encodeFrame(FrameType.DONE, 1, enc.encode('{"done":{}}\n'));
  const both = new Uint8Array([...a, ...b]);
  assert.equal(splitMessage(both, { maxPayload: MAX }).length, 2);
  assert.throws(() => splitMessage(both.subarray(0, both.length - 1), { maxPayload: MAX }), /whole frames/);
});

test("result payload checks: one-line records, ROWS lines, ERROR code", () => {
  const frame = (type, text) => ({ type, streamId: 1, payload: enc.encode(text) });
  assert.equal(decodePayload(frame(FrameType.ERROR, '{"error":{"code":"sql.error","message":"x"}}\n')).code, "sql.error");
  assert.throws(() => decodePayload(frame(FrameType.DONE, '{"done":{}}\n{"done":{}}\n')), /exactly one line/);
  assert.throws(() => decodePayload(frame(FrameType.DONE, '{"done":{}}')), /exactly one line/);
  assert.throws(() => decodePayload(frame(FrameType.DONE, '{"done":\n{}}')), /exactly one line/);
  assert.throws(() => decodePayload(frame(FrameType.DONE, "")), /exactly one line/);
  assert.throws(() => decodePayload(frame(FrameType.COLUMNS, '{"columns":{}}\n')), /"columns" member/);
  assert.throws(() => decodePayload(frame(FrameType.ROWS, "[1]\n\n[2]\n")), /non-empty lines/);
  assert.throws(() => decodePayload(frame(FrameType.ROWS, "[1]")), /non-empty lines/);
  assert.throws(() => decodePayload(frame(FrameType.ERROR, '{"error":{"message":"x"}}\n')), /string "code"/);
  assert.throws(() => decodePayload({ type: FrameType.READY, streamId: 0, payload: enc.encode('{"connector_id":"a","max_streams":1,"caps":[],"max_streams":2}') }), /duplicate/);
  assert.throws(() => decodePayload({ type: FrameType.READY, streamId: 0, payload: new Uint8Array([0xff]) }), /UTF-8/);
  // a duplicate member name is refused whatever the spelling: compact, spaced, escaped, nested
  for (const text of ['{"done":{"a":1,"a":1}}\n', '{"done": {"a": 1, "a": 1}}\n', '{"done":{},"d\\u006fne":{}}\n', '{"done":{"x":[{"b":1,"b":2}]}}\n']) {
    assert.throws(() => decodePayload(frame(FrameType.DONE, text)), /duplicate/, text);
  }
  // without one, compact or not, the record is accepted as it came
  for (const text of ['{"done":{"rows":1}}\n', '{"done": {"rows": 1.0}}\n', '{"columns":[{"name":"n\\u00e9"}]}\n']) {
    const type = text.startsWith('{"columns"') ? FrameType.COLUMNS : FrameType.DONE;
    assert.equal(dec.decode(decodePayload(frame(type, text)).data), text);
  }
  // a READY without max_statement_bytes (a connector that predates it) means the 256 KiB default
  const old = decodePayload({ type: FrameType.READY, streamId: 0, payload: enc.encode('{"connector_id":"a","max_streams":1,"caps":[]}') });
  assert.equal(old.maxStatementBytes, 256 * 1024);
});

test("frame rules: sender role and stream scope", () => {
  assert.throws(() => checkFrameRule({ type: FrameType.QUERY, streamId: 1 }, "connector"), /may not be sent by the connector/);
  assert.throws(() => checkFrameRule({ type: FrameType.ROWS, streamId: 0 }, "connector"), /on a stream/);
  assert.throws(() => checkFrameRule({ type: FrameType.PING, streamId: 2 }, "connector"), /stream 0/);
  checkFrameRule({ type: FrameType.CREDIT, streamId: 0 }, "relay");
});

test("HTTP status mapping mirrors the registry", () => {
  assert.equal(httpStatus("auth.expired"), 401);
  assert.equal(httpStatus("policy.not_read_only"), 403);
  assert.equal(httpStatus("policy.check_timeout"), 413);
  assert.equal(httpStatus("limits.rate_limited"), 429);
  assert.equal(httpStatus("transport.lost"), 502);
  assert.equal(httpStatus("sql.error"), 422);
  assert.equal(httpStatus("something.else"), 500);
});
