// @ts-check
/**
 * edgetds/1 frames: the constants of SPEC.md and the frame codec, in ONE module.
 *
 * Mirrors protocol/_frames.py (header codec, incremental reader), protocol/_codec.py (payload
 * validators), protocol/_flow.py (limits) and protocol/_errors.py (error codes, close codes, HTTP
 * statuses). Keep the two in step: the shared vectors in protocol/vectors/ are run against both.
 *
 * Frame header (12 bytes, big-endian): version u8 = 1 | type u8 | flags u8 = 0 | reserved u8 = 0 |
 * stream id u32 (0 = the connection) | payload length u32 (<= the receiver's max frame payload).
 *
 * Validation failures are thrown as ProtocolError with the error code and close code to report.
 */

import { scanJson } from "./strictjson.js";

export const VERSION = 1;
export const HEADER_SIZE = 12;
export const MAX_STREAM_ID = 0xffffffff;

/** Frame type codes (the header's second byte). */
export const FrameType = Object.freeze({
  HELLO: 0x01, // R->C, stream 0: the relay's signed hello
  READY: 0x02, // C->R, stream 0: the connector verified HELLO
  QUERY: 0x10, // R->C: opens stream n
  CANCEL: 0x11, // R->C: stop stream n
  COLUMNS: 0x20, // C->R: one {"columns": [...]} line, starts a result set
  ROWS: 0x21, // C->R: NDJSON row lines
  DONE: 0x22, // C->R: the terminal {"done": ...} line
  ERROR: 0x23, // C->R: the terminal {"error": ...} line
  CREDIT: 0x30, // R->C: u32 window increment (stream 0 = the connection)
  PING: 0x31, // both, stream 0: 8 opaque bytes
  PONG: 0x32, // both, stream 0: the PING's 8 bytes
  DRAIN: 0x33, // both, stream 0: {"reason"}: no new streams
  GOAWAY: 0x34, // both, stream 0: {"code", "message", "last_stream"}; then close
  CHECKPOINT: 0x35, // C->R, stream 0: the connector's signed audit head (cap "audit.checkpoint")
});

/** Frame types of optional features -> the capability both sides must announce (protocol FRAME_CAPS). */
export const FRAME_CAPS = Object.freeze({ [FrameType.CHECKPOINT]: "audit.checkpoint" });
/** The capability that allows CHECKPOINT. */
export const CHECKPOINT_CAP = FRAME_CAPS[FrameType.CHECKPOINT];

/** The capability that allows the QUERY member `session` (SPEC.md 7.4; protocol/_sessions.py). */
export const SESSION_CAP = "session";
/** Session ops, isolation levels and end reasons (protocol SessionOp, ISOLATION_LEVELS, SessionEnd). */
export const SESSION_OPS = Object.freeze(["begin", "run", "commit", "rollback", "savepoint", "rollback_to"]);
export const ISOLATION_LEVELS = Object.freeze(["read uncommitted", "read committed", "repeatable read", "snapshot", "serializable"]);
export const SESSION_END_REASONS = Object.freeze([
  "committed", "rolled_back", "commit_failed", "rolled_back_by_server", "idle_timeout", "lifetime",
  "transport.lost", "connector.draining", "connector.database_unavailable",
]);
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;
const SAVEPOINT_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/;
/** @type {Record<string, string[]>} */
const SESSION_MEMBERS = { begin: ["isolation", "role", "idle_timeout_ms"], savepoint: ["name"], rollback_to: ["name"] };

/**
 * Check a QUERY's `session` member as protocol/_sessions.py check_session does.
 * @param {any} session @param {boolean} hasStatement @returns {string} the op
 */
export function checkSession(session, hasStatement) {
  if (session === null || typeof session !== "object" || Array.isArray(session)) throw new ProtocolError('"session" must be an object');
  if (typeof session.id !== "string" || !SESSION_ID.test(session.id)) throw new ProtocolError('"session.id" must be 22 base64url characters');
  const op = session.op;
  if (typeof op !== "string" || !SESSION_OPS.includes(op)) throw new ProtocolError(`"session.op" must be one of ${SESSION_OPS.join(", ")}`);
  const allowed = new Set(["id", "op", ...(SESSION_MEMBERS[op] ?? [])]);
  for (const key of Object.keys(session)) {
    if (!allowed.has(key)) throw new ProtocolError(`"session" member '${key}' is not allowed with op '${op}'`);
  }
  if ((op === "savepoint" || op === "rollback_to") && !Object.hasOwn(session, "name")) throw new ProtocolError(`"session" op '${op}' needs the member 'name'`);
  if (Object.hasOwn(session, "name") && !(typeof session.name === "string" && SAVEPOINT_NAME.test(session.name))) {
    throw new ProtocolError('"session.name" must be 1..32 characters of [A-Za-z_][A-Za-z0-9_]*');
  }
  if (Object.hasOwn(session, "isolation") && !ISOLATION_LEVELS.includes(session.isolation)) throw new ProtocolError('"session.isolation" is not an isolation level');
  if (Object.hasOwn(session, "role") && !(typeof session.role === "string" && session.role)) throw new ProtocolError('"session.role" must be a non-empty string');
  if (Object.hasOwn(session, "idle_timeout_ms")) int(session.idle_timeout_ms, "session.idle_timeout_ms", 1, 2 ** 31 - 1);
  if (hasStatement !== (op === "run")) throw new ProtocolError('a session "run" needs exactly one of "sql" and "query"; other ops have neither');
  return op;
}
/** The largest CHECKPOINT payload (protocol MAX_CHECKPOINT). */
export const MAX_CHECKPOINT = 4096;
/** The head of an empty audit chain. */
export const GENESIS = "0".repeat(64);

/** Frame type code -> name. */
export const FRAME_NAMES = Object.freeze(
  Object.fromEntries(Object.entries(FrameType).map(([name, code]) => [code, name])),
);

/** The error-code registry (protocol/_errors.py ErrorCode). */
export const ErrorCode = Object.freeze({
  REQUEST_INVALID: "request.invalid",
  REQUEST_TOO_LARGE: "request.too_large",
  AUTH_MISSING_TOKEN: "auth.missing_token",
  AUTH_INVALID_TOKEN: "auth.invalid_token",
  AUTH_EXPIRED: "auth.expired",
  AUTH_UNKNOWN_ISSUER: "auth.unknown_issuer",
  AUTH_WRONG_AUDIENCE: "auth.wrong_audience",
  AUTH_ATTESTATION_INVALID: "auth.attestation_invalid",
  AUTH_REPLAY: "auth.replay",
  AUTH_CONNECTOR_REJECTED: "auth.connector_rejected",
  AUTH_RELAY_REJECTED: "auth.relay_rejected",
  ENROLL_INVALID_TOKEN: "enroll.invalid_token",
  ENROLL_EXPIRED: "enroll.expired",
  ENROLL_INVALID_PROOF: "enroll.invalid_proof",
  ENROLL_USED: "enroll.used",
  ENROLL_DISABLED: "enroll.disabled",
  POLICY_DENIED: "policy.denied",
  POLICY_NOT_READ_ONLY: "policy.not_read_only",
  POLICY_UNKNOWN_QUERY: "policy.unknown_query",
  POLICY_CHECK_TIMEOUT: "policy.check_timeout",
  TUNNEL_UNKNOWN: "tunnel.unknown",
  TUNNEL_NO_CONNECTOR: "tunnel.no_connector",
  SQL_ERROR: "sql.error",
  QUERY_TIMEOUT: "query.timeout",
  QUERY_CANCELLED: "query.cancelled",
  QUERY_DUPLICATE: "query.duplicate",
  LIMITS_TOO_MANY_QUERIES: "limits.too_many_queries",
  LIMITS_RATE_LIMITED: "limits.rate_limited",
  LIMITS_RESULT_TOO_LARGE: "limits.result_too_large",
  LIMITS_TOO_MANY_SESSIONS: "limits.too_many_sessions",
  SESSION_NOT_FOUND: "session.not_found",
  SESSION_WRONG_IDENTITY: "session.wrong_identity",
  SESSION_ENDED: "session.ended",
  SESSION_BUSY: "session.busy",
  RELAY_OVERLOADED: "relay.overloaded",
  CONNECTOR_DRAINING: "connector.draining",
  CONNECTOR_DATABASE_UNAVAILABLE: "connector.database_unavailable",
  TRANSPORT_LOST: "transport.lost",
  PROTOCOL_ERROR: "protocol.error",
  INTERNAL: "internal",
});

/** WebSocket close codes (protocol/_errors.py CloseCode). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  AUTH_FAILED: 4001,
  REPLACED: 4002,
});

const HTTP_STATUS_BY_CODE = {
  "request.invalid": 400,
  "request.too_large": 413,
  "enroll.invalid_token": 401,
  "enroll.expired": 401,
  "enroll.invalid_proof": 400,
  "enroll.used": 409,
  "enroll.disabled": 404,
  "policy.unknown_query": 404,
  "policy.check_timeout": 413,
  "tunnel.unknown": 404,
  "tunnel.no_connector": 503,
  "sql.error": 422,
  "query.timeout": 504,
  "query.cancelled": 409,
  "query.duplicate": 409,
  "session.not_found": 404,
  "session.wrong_identity": 403,
  "session.ended": 410,
  "session.busy": 409,
  "relay.overloaded": 503,
  "connector.draining": 503,
  "connector.database_unavailable": 503,
  "transport.lost": 502,
  "protocol.error": 502,
  internal: 500,
};
/** @type {Array<[string, number]>} */
const HTTP_STATUS_BY_PREFIX = [
  ["auth.", 401],
  ["policy.", 403],
  ["limits.", 429],
];

/**
 * The HTTP status of an error reported before any response byte was streamed.
 * @param {string} code an error code
 * @returns {number}
 */
export function httpStatus(code) {
  if (Object.hasOwn(HTTP_STATUS_BY_CODE, code)) return HTTP_STATUS_BY_CODE[code];
  for (const [prefix, status] of HTTP_STATUS_BY_PREFIX) if (code.startsWith(prefix)) return status;
  return 500;
}

// Limits (protocol/_flow.py).
export const DEFAULT_FRAME = 1024 * 1024;
export const MAX_FRAME_HARD = 16 * 1024 * 1024;
export const MIN_FRAME = 16 * 1024;
export const MAX_WINDOW = 2 ** 31 - 1;
export const MAX_STREAMS_HARD = 65535;
export const DEFAULT_STATEMENT_BYTES = 256 * 1024;
export const DEFAULT_LIMITS = Object.freeze({
  max_frame: DEFAULT_FRAME,
  stream_window: 1024 * 1024,
  connection_window: 8 * 1024 * 1024,
  max_streams: 128,
});

/** A frame sequence or payload that edgetds/1 forbids. */
export class ProtocolError extends Error {
  /**
   * @param {string} message safe to show to the peer (never SQL, tokens or values)
   * @param {{errorCode?: string, closeCode?: number}} [options]
   */
  constructor(message, { errorCode = ErrorCode.PROTOCOL_ERROR, closeCode = CloseCode.PROTOCOL_ERROR } = {}) {
    super(message);
    this.name = "ProtocolError";
    this.errorCode = errorCode;
    this.closeCode = closeCode;
  }
}

/**
 * This side misused the connection (connection.js): nothing is sent to the peer for it. The
 * error code is a hint for the caller (e.g. request.too_large for a QUERY over the peer's max).
 */
export class LocalProtocolError extends ProtocolError {
  /** @param {string} message @param {{errorCode?: string, closeCode?: number}} [options] */
  constructor(message, options) {
    super(message, options);
    this.name = "LocalProtocolError";
  }
}

/** @type {Set<number>} */
const TYPES = new Set(Object.values(FrameType));
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/**
 * @typedef {{type: number, streamId: number, payload: Uint8Array}} Frame
 * @typedef {{max_frame: number, stream_window: number, connection_window: number, max_streams: number}} Limits
 */

/**
 * Serialize one frame (header + payload).
 * @param {number} type a FrameType code
 * @param {number} streamId u32
 * @param {Uint8Array | string} [payload] bytes, or a string encoded as UTF-8
 * @returns {Uint8Array}
 */
export function encodeFrame(type, streamId, payload = new Uint8Array(0)) {
  const body = typeof payload === "string" ? encoder.encode(payload) : payload;
  if (!Number.isInteger(streamId) || streamId < 0 || streamId > MAX_STREAM_ID) {
    throw new RangeError(`stream id ${streamId} does not fit in a u32`);
  }
  if (!TYPES.has(type)) throw new RangeError(`unknown frame type ${type}`);
  const out = new Uint8Array(HEADER_SIZE + body.byteLength);
  const view = new DataView(out.buffer);
  out[0] = VERSION;
  out[1] = type;
  view.setUint32(4, streamId);
  view.setUint32(8, body.byteLength);
  out.set(body, HEADER_SIZE);
  return out;
}

/** Concatenate byte arrays (several frames into one WebSocket message). */
export function concatBytes(parts) {
  let size = 0;
  for (const part of parts) size += part.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

function checkHeader(bytes, offset, maxPayload) {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_SIZE);
  const [version, type, flags, reserved] = [bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]];
  const streamId = view.getUint32(4);
  const length = view.getUint32(8);
  if (version !== VERSION) throw new ProtocolError(`unsupported frame version ${version} (this side speaks 1)`);
  if (!TYPES.has(type)) throw new ProtocolError(`unknown frame type 0x${hex2(type)}`);
  if (flags !== 0) throw new ProtocolError(`frame flags must be 0 in edgetds/1, got 0x${hex2(flags)}`);
  if (reserved !== 0) throw new ProtocolError(`reserved header byte must be 0, got 0x${hex2(reserved)}`);
  if (length > maxPayload) {
    throw new ProtocolError(`frame payload of ${length} bytes exceeds the max frame payload ${maxPayload}`, {
      closeCode: CloseCode.MESSAGE_TOO_BIG,
    });
  }
  return { type, streamId, length };
}

function hex2(n) {
  return n.toString(16).padStart(2, "0");
}

/**
 * Incremental frame parser: feed bytes in any split, take whole frames out (protocol FrameReader).
 */
export class FrameReader {
  /** @param {{maxPayload: number}} options */
  constructor({ maxPayload }) {
    this.maxPayload = maxPayload;
    /** @type {Uint8Array} */
    this.buffer = new Uint8Array(0);
    /** @type {{type: number, streamId: number, length: number} | null} */
    this.pending = null;
  }

  /** @param {Uint8Array} data */
  feed(data) {
    this.buffer = this.buffer.byteLength ? concatBytes([this.buffer, data]) : data;
  }

  /** Bytes received but not yet returned as a frame (a partial frame at EOF = truncation). */
  get buffered() {
    return this.buffer.byteLength + (this.pending ? HEADER_SIZE : 0);
  }

  /** @returns {Frame | null} the next whole frame, or null when more bytes are needed */
  nextFrame() {
    if (this.pending === null) {
      if (this.buffer.byteLength < HEADER_SIZE) return null;
      this.pending = checkHeader(this.buffer, 0, this.maxPayload);
      this.buffer = this.buffer.subarray(HEADER_SIZE);
    }
    const { type, streamId, length } = this.pending;
    if (this.buffer.byteLength < length) return null;
    const payload = this.buffer.slice(0, length);
    this.buffer = this.buffer.subarray(length);
    this.pending = null;
    return { type, streamId, payload };
  }
}

/**
 * Split one WebSocket message into its frames. A message carries whole frames only (SPEC), so a
 * trailing partial frame is a protocol error. Payloads are views into `message` (no copy).
 * @param {Uint8Array} message
 * @param {{maxPayload: number}} options
 * @returns {Frame[]}
 */
export function splitMessage(message, { maxPayload }) {
  const frames = [];
  let at = 0;
  while (at < message.byteLength) {
    if (message.byteLength - at < HEADER_SIZE) {
      throw new ProtocolError(`truncated frame: ${message.byteLength - at} bytes left, a header is 12`);
    }
    const { type, streamId, length } = checkHeader(message, at, maxPayload);
    const end = at + HEADER_SIZE + length;
    if (end > message.byteLength) {
      throw new ProtocolError("truncated frame: a WebSocket message must carry whole frames");
    }
    frames.push({ type, streamId, payload: message.subarray(at + HEADER_SIZE, end) });
    at = end;
  }
  return frames;
}

/**
 * Parse exactly one whole frame (vectors, tooling).
 * @param {Uint8Array} data
 * @param {{maxPayload: number}} options
 * @returns {Frame}
 */
export function parseFrame(data, { maxPayload }) {
  const reader = new FrameReader({ maxPayload });
  reader.feed(data);
  const frame = reader.nextFrame();
  if (frame === null) throw new ProtocolError(`truncated frame: ${data.byteLength} bytes is not a whole frame`);
  if (reader.buffered) throw new ProtocolError(`${reader.buffered} bytes after the end of the frame`);
  return frame;
}

// ----------------------------------------------------------------------------- payload checks

const MAYBE_HUGE_NUMBER = /[0-9][eE]|[0-9]{309}/;

/** Whether parsed JSON holds an infinite number, at any depth. @param {unknown} value */
function hasInfinity(value) {
  const pending = [value];
  while (pending.length) {
    const item = pending.pop();
    if (typeof item === "number") {
      if (!Number.isFinite(item)) return true;
    } else if (item !== null && typeof item === "object") {
      for (const member of Object.values(item)) pending.push(member);
    }
  }
  return false;
}

/**
 * Parse a payload as one UTF-8 JSON object, strictly (protocol/_json.py loads_object): invalid
 * UTF-8, duplicate keys, numbers beyond a double's range and non-objects are refused.
 * @param {Uint8Array} data
 * @returns {Record<string, any>}
 */
export function loadsObject(data) {
  let text;
  try {
    text = strictDecoder.decode(data);
  } catch {
    throw new ProtocolError("payload is not valid UTF-8");
  }
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError("payload is not JSON");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ProtocolError("expected a JSON object");
  }
  // JSON.parse reads a number beyond a double's range as Infinity (Python reads 1e400 as inf and
  // such an integer exactly): refused, as NaN is. Only a number with an exponent or of 309 digits
  // and more can be one, so other payloads are not walked.
  if (MAYBE_HUGE_NUMBER.test(text) && hasInfinity(value)) {
    throw new ProtocolError("a JSON number beyond the range of a double");
  }
  // JSON.parse keeps the last duplicate silently; a signed object must mean one thing everywhere.
  // Text that JSON.stringify gives back unchanged (but for a record's final newline) has none: a
  // duplicate would be missing from it. Compact JSON from the other side, the common case, is
  // not scanned.
  const same = JSON.stringify(value);
  if (text !== same && text !== `${same}\n` && scanJson(text) !== null) throw new ProtocolError("duplicate JSON key");
  return value;
}

function str(obj, key, { optional = false } = {}) {
  const value = Object.hasOwn(obj, key) ? obj[key] : optional ? "" : undefined;
  if (typeof value !== "string") throw new ProtocolError(`"${key}" must be a string`);
  return value;
}

function int(value, name, low, high) {
  if (!Number.isInteger(value) || value < low || value > high) {
    throw new ProtocolError(`"${name}" must be an integer in [${low}, ${high}]`);
  }
  return value;
}

function caps(obj) {
  const value = obj.caps;
  if (!Array.isArray(value) || !value.every((c) => typeof c === "string")) {
    throw new ProtocolError('"caps" must be a list of strings');
  }
  return value;
}

/**
 * Check a HELLO/limits object (protocol Limits.from_json).
 * @param {Record<string, any>} limits
 */
export function checkLimits(limits) {
  for (const name of ["max_frame", "stream_window", "connection_window", "max_streams"]) {
    if (!Number.isInteger(limits?.[name])) throw new ProtocolError(`limits.${name} must be an integer`);
  }
  const { max_frame, stream_window, connection_window, max_streams } = limits;
  if (max_frame < MIN_FRAME || max_frame > MAX_FRAME_HARD) {
    throw new ProtocolError(`limits.max_frame must be in [${MIN_FRAME}, ${MAX_FRAME_HARD}], got ${max_frame}`);
  }
  if (!(max_frame <= stream_window && stream_window <= connection_window && connection_window <= MAX_WINDOW)) {
    throw new ProtocolError("limits must satisfy max_frame <= stream_window <= connection_window <= 2^31-1");
  }
  if (max_streams < 1 || max_streams > MAX_STREAMS_HARD) {
    throw new ProtocolError(`limits.max_streams must be in [1, ${MAX_STREAMS_HARD}], got ${max_streams}`);
  }
  return limits;
}

function oneLine(data, key) {
  // exactly one newline, the last byte: the first newline is the last byte
  if (data.byteLength === 0 || data.indexOf(0x0a) !== data.byteLength - 1) {
    throw new ProtocolError(`a "${key}" record must be exactly one line ending in "\\n"`);
  }
  const obj = loadsObject(data);
  const member = obj[key];
  const ok = key === "columns" ? Array.isArray(member) : member !== null && typeof member === "object" && !Array.isArray(member);
  if (!ok) throw new ProtocolError(`the record must be an object with a "${key}" member`);
  return obj;
}

function checkRows(data) {
  const n = data.byteLength;
  if (n === 0 || data[n - 1] !== 0x0a || data[0] === 0x0a) {
    throw new ProtocolError('ROWS must be one or more non-empty lines, each ending in "\\n"');
  }
  for (let i = 1; i < n; i++) {
    if (data[i] === 0x0a && data[i - 1] === 0x0a) {
      throw new ProtocolError('ROWS must be one or more non-empty lines, each ending in "\\n"');
    }
  }
}

function pingData(frame) {
  if (frame.payload.byteLength !== 8) {
    throw new ProtocolError(`${FRAME_NAMES[frame.type]} payload must be 8 bytes, got ${frame.payload.byteLength}`);
  }
  return frame.payload;
}

const CHECKPOINT_STRINGS = { connector_id: [1, 128], tunnel: [1, 128], file: [0, 255], sig: [1, 128] };

/**
 * Check the members of a checkpoint object, not its signature (protocol check_checkpoint).
 * @param {Record<string, any>} obj
 */
export function checkCheckpoint(obj) {
  for (const [name, [low, high]] of Object.entries(CHECKPOINT_STRINGS)) {
    const value = obj[name];
    if (typeof value !== "string" || value.length < low || value.length > high) {
      throw new ProtocolError(`checkpoint "${name}" must be a string of ${low}..${high} characters`);
    }
  }
  for (const name of ["seq", "time"]) int(obj[name], `checkpoint ${name}`, 0, Number.MAX_SAFE_INTEGER);
  if (typeof obj.head !== "string" || !/^[0-9a-f]{64}$/.test(obj.head)) throw new ProtocolError('checkpoint "head" must be 64 lowercase hex digits');
  if (obj.seq === 0 && obj.head !== GENESIS) throw new ProtocolError('checkpoint with "seq" 0 (an empty chain) must have the genesis "head"');
  return obj;
}

/**
 * Validate a frame's payload for its type and return its decoded event (protocol _codec.decode).
 * Result frames (COLUMNS, ROWS, DONE, ERROR) keep `data` as the exact payload bytes; only the
 * one-line COLUMNS/DONE/ERROR records are parsed (to check them); ROWS bytes never are.
 * @param {Frame} frame
 * @returns {Record<string, any>} an event `{type, streamId, ...}`
 */
export function decodePayload(frame) {
  const { type, streamId, payload } = frame;
  const base = { type, name: FRAME_NAMES[type], streamId };
  switch (type) {
    case FrameType.HELLO: {
      const obj = loadsObject(payload);
      if (obj.version !== 1) throw new ProtocolError('HELLO "version" must be 1');
      for (const key of ["session_id", "tunnel", "connector_id", "nonce", "relay_key_id", "sig"]) str(obj, key);
      caps(obj);
      if (obj.limits === null || typeof obj.limits !== "object" || Array.isArray(obj.limits)) {
        throw new ProtocolError('HELLO "limits" must be an object');
      }
      checkLimits(obj.limits);
      return { ...base, fields: obj };
    }
    case FrameType.READY: {
      const obj = loadsObject(payload);
      const maxStreams = int(obj.max_streams, "max_streams", 1, MAX_STREAMS_HARD);
      const maxFrame = int(Object.hasOwn(obj, "max_frame") ? obj.max_frame : DEFAULT_FRAME, "max_frame", MIN_FRAME, MAX_FRAME_HARD);
      const statement = Object.hasOwn(obj, "max_statement_bytes") ? obj.max_statement_bytes : DEFAULT_STATEMENT_BYTES;
      const maxStatementBytes = int(statement, "max_statement_bytes", 1, MAX_FRAME_HARD);
      return { ...base, connectorId: str(obj, "connector_id"), maxStreams, caps: caps(obj), maxFrame, maxStatementBytes };
    }
    case FrameType.QUERY: {
      const obj = loadsObject(payload);
      const queryId = str(obj, "query_id");
      if (!queryId) throw new ProtocolError('"query_id" must not be empty');
      const sql = obj.sql ?? null;
      const name = obj.query ?? null;
      const session = obj.session ?? null;
      if (session !== null) {
        if (!(sql === null || typeof sql === "string") || !(name === null || typeof name === "string")) {
          throw new ProtocolError('"sql" and "query" must be strings or null');
        }
        checkSession(session, sql !== null || name !== null);
      }
      if (!((typeof sql === "string" && name === null) || (typeof name === "string" && sql === null) || (session !== null && sql === null && name === null))) {
        throw new ProtocolError('exactly one of "sql" and "query" must be a string, the other null');
      }
      for (const key of ["params", "options", "attestation"]) {
        const v = obj[key];
        if (v === null || typeof v !== "object" || Array.isArray(v)) throw new ProtocolError(`"${key}" must be an object`);
      }
      if (session !== null && sql === null && name === null && Object.keys(obj.params).length) {
        throw new ProtocolError('"params" must be {} for a session op other than "run"');
      }
      for (const key of ["max_rows", "timeout_ms"]) {
        if (obj.options[key] !== undefined && obj.options[key] !== null) int(obj.options[key], key, 0, 2 ** 53 - 1);
      }
      return { ...base, queryId, token: str(obj, "token"), sql, query: name, params: obj.params, options: obj.options, attestation: obj.attestation, session };
    }
    case FrameType.CANCEL:
      return { ...base, reason: payload.byteLength ? str(loadsObject(payload), "reason", { optional: true }) : "" };
    case FrameType.COLUMNS:
      oneLine(payload, "columns");
      return { ...base, data: payload };
    case FrameType.ROWS:
      checkRows(payload);
      return { ...base, data: payload };
    case FrameType.DONE:
      oneLine(payload, "done");
      return { ...base, data: payload };
    case FrameType.ERROR: {
      const obj = oneLine(payload, "error");
      if (typeof obj.error.code !== "string") throw new ProtocolError('an "error" record must have a string "code"');
      return { ...base, data: payload, code: obj.error.code };
    }
    case FrameType.CREDIT: {
      if (payload.byteLength !== 4) throw new ProtocolError(`CREDIT payload must be 4 bytes, got ${payload.byteLength}`);
      const increment = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
      if (increment === 0) throw new ProtocolError("CREDIT increment must be at least 1");
      return { ...base, increment };
    }
    case FrameType.PING:
    case FrameType.PONG:
      return { ...base, data: pingData(frame) };
    case FrameType.DRAIN:
      return { ...base, reason: str(loadsObject(payload), "reason", { optional: true }) };
    case FrameType.CHECKPOINT: {
      if (payload.byteLength > MAX_CHECKPOINT) throw new ProtocolError(`CHECKPOINT payload must be at most ${MAX_CHECKPOINT} bytes`);
      const obj = checkCheckpoint(loadsObject(payload));
      return { ...base, fields: obj };
    }
    case FrameType.GOAWAY: {
      const obj = loadsObject(payload);
      const lastStream = int(obj.last_stream, "last_stream", 0, MAX_STREAM_ID);
      return { ...base, code: str(obj, "code"), message: str(obj, "message", { optional: true }), lastStream };
    }
    default:
      throw new ProtocolError(`unknown frame type 0x${hex2(type)}`);
  }
}

/** A CREDIT payload: u32 big-endian increment. */
export function creditPayload(increment) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, increment);
  return out;
}

// Frame rules (protocol/_state.py FRAME_RULES): which role sends a type, on which stream scope.
const R = "relay";
const C = "connector";
export const FRAME_RULES = Object.freeze({
  [FrameType.HELLO]: [[R], "connection"],
  [FrameType.READY]: [[C], "connection"],
  [FrameType.QUERY]: [[R], "stream"],
  [FrameType.CANCEL]: [[R], "stream"],
  [FrameType.COLUMNS]: [[C], "stream"],
  [FrameType.ROWS]: [[C], "stream"],
  [FrameType.DONE]: [[C], "stream"],
  [FrameType.ERROR]: [[C], "stream"],
  [FrameType.CREDIT]: [[R], "either"],
  [FrameType.PING]: [[R, C], "connection"],
  [FrameType.PONG]: [[R, C], "connection"],
  [FrameType.DRAIN]: [[R, C], "connection"],
  [FrameType.GOAWAY]: [[R, C], "connection"],
  [FrameType.CHECKPOINT]: [[C], "connection"],
});

/**
 * Check Rule 1 for a frame received from `sender` (role and stream scope).
 * @param {Frame} frame
 * @param {"relay" | "connector"} sender
 */
export function checkFrameRule(frame, sender) {
  const [roles, scope] = FRAME_RULES[frame.type];
  const name = FRAME_NAMES[frame.type];
  if (!roles.includes(sender)) throw new ProtocolError(`${name} may not be sent by the ${sender}`);
  if (scope === "connection" && frame.streamId !== 0) throw new ProtocolError(`${name} must be on stream 0`);
  if (scope === "stream" && frame.streamId === 0) throw new ProtocolError(`${name} must be on a stream (id >= 1)`);
}
