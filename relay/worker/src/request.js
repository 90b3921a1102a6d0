// @ts-check
/**
 * The client's query request: the JSON body of `POST /v1/tunnels/{tunnel}/query`, checked
 * (mirrors relay/request.py). Every refusal is HttpError("request.invalid") naming the member that
 * is wrong, never echoing SQL text or a parameter value. Parameters are capped here, before
 * anything is signed or sent: at most MAX_PARAMS, at most maxParamBytes of canonical JSON.
 */

import { canonicalJsonText, PyFloat } from "./auth.js";
import { concatBytes, ErrorCode, ISOLATION_LEVELS } from "./frames.js";
import { HttpError } from "./http.js";
import { scanJson } from "./strictjson.js";

const ALLOWED = new Set(["sql", "query", "params", "max_rows", "timeout_ms", "query_id"]);
const QUERY_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$/;
/** SQL Server accepts at most 2,100 parameters in one request. */
export const MAX_PARAMS = 2100;
/** The SQL Server types a typed parameter may name (protocol/vectors/registry.json "sql_types"). */
export const SQL_TYPES = new Set([
  "bit", "tinyint", "smallint", "int", "bigint", "decimal", "numeric", "money", "smallmoney",
  "real", "float", "char", "varchar", "nchar", "nvarchar", "text", "ntext", "xml", "binary",
  "varbinary", "image", "date", "time", "datetime", "smalldatetime", "datetime2", "datetimeoffset",
  "uniqueidentifier",
]);
/** A typed parameter's type, spaces removed and lower-cased: a name, then (n), (max) or (p,s). */
const SQL_TYPE = /^([a-z0-9]+)(?:\((max|[0-9]{1,4})(?:,([0-9]{1,2}))?\))?$/;

/**
 * Why `value` is no parameter value, or null (SPEC 12.2; protocol.param_type checks the same): a
 * JSON scalar, or `{"type", "value"}` naming a known SQL Server type, with a scalar value.
 * @param {unknown} value @returns {string | null}
 */
export function paramProblem(value) {
  if (value === null || typeof value !== "object" || value instanceof PyFloat) return null;
  // ("value" may be left out: a typed NULL, as the connector reads it)
  if (Array.isArray(value) || !Object.hasOwn(value, "type") || Object.keys(value).some((k) => k !== "type" && k !== "value")) {
    return 'a parameter is a JSON scalar or {"type": ..., "value": ...}';
  }
  const { type: kind, value: inner = null } = /** @type {{type: unknown, value?: unknown}} */ (value);
  const match = typeof kind === "string" ? SQL_TYPE.exec(kind.replaceAll(" ", "").toLowerCase()) : null;
  if (match === null || !SQL_TYPES.has(match[1])) return `unknown SQL Server parameter type ${JSON.stringify(kind)}`;
  if (inner !== null && typeof inner === "object" && !(inner instanceof PyFloat)) return "a typed parameter's value is a string, number, boolean or null";
  return null;
}

function invalid(message) {
  return new HttpError(ErrorCode.REQUEST_INVALID, message);
}

/**
 * Read the whole body, refusing more than `limit` bytes as soon as it is known.
 * @param {Request} request @param {number} limit @returns {Promise<Uint8Array>}
 */
export async function readBody(request, limit) {
  const declared = request.headers.get("content-length");
  const length = declared !== null && /^\d+$/.test(declared) ? Number(declared) : null;
  if (length !== null && length > limit) {
    throw new HttpError(ErrorCode.REQUEST_TOO_LARGE, `request body is ${declared} bytes; this relay accepts at most ${limit}`);
  }
  if (request.body === null) return new Uint8Array(0);
  if (length !== null) {
    // A declared length within the limit: read in one go (and held to the limit all the same).
    const body = new Uint8Array(await request.arrayBuffer());
    if (body.byteLength > limit) throw new HttpError(ErrorCode.REQUEST_TOO_LARGE, `request body is over this relay's limit of ${limit} bytes`);
    return body;
  }
  const reader = request.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new HttpError(ErrorCode.REQUEST_TOO_LARGE, `request body is over this relay's limit of ${limit} bytes`);
    }
    chunks.push(value);
  }
  return concatBytes(chunks);
}

function optionalInt(body, key, minimum) {
  const value = body[key];
  if (value === undefined || value === null) return null;
  if (!Number.isSafeInteger(value) || value < minimum) throw invalid(`'${key}' must be an integer >= ${minimum} (or null)`);
  return value;
}

// ignoreBOM keeps a byte order mark in the text, where JSON.parse refuses it (as the Python relay does)
const bodyDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const bodyEncoder = new TextEncoder();
const FRACTION_OR_EXPONENT = /[0-9][.eE]|-0/;

/**
 * JSON.parse's reviver that keeps a float literal a PyFloat, and reads the literal -0 as the
 * integer 0 (as Python does; -0.0 stays a float).
 * @param {string} key @param {any} value @param {{source?: string}} [context]
 */
function floatReviver(key, value, context) {
  if (typeof value !== "number") return value;
  if (/[.eE]/.test(context?.source ?? "")) return new PyFloat(value);
  return Object.is(value, -0) ? 0 : value;
}

/**
 * A request body as JSON, read as strictly as a frame payload (SPEC 11.1): strict UTF-8, no
 * duplicate member names, an object; float literals kept as PyFloat.
 * @param {Uint8Array} raw @param {string} shape the body's shape, named in refusals
 * @returns {Record<string, any>}
 */
export function parseJsonObject(raw, shape) {
  let body;
  let text;
  try {
    text = bodyDecoder.decode(raw);
    // Where the runtime gives the literal's source (workerd does), keep float literals as floats:
    // Python reads "2.0" as a float and hashes it as 2.0, JavaScript would make it 2. A number
    // literal with a fraction or an exponent has a digit before its "." or "e": text without
    // one has no such literal, and is parsed without the (slower) reviver.
    body = FRACTION_OR_EXPONENT.test(text) ? JSON.parse(text, floatReviver) : JSON.parse(text);
  } catch {
    throw invalid(`body is not JSON; send ${shape} with Content-Type: application/json`);
  }
  // JSON.parse keeps the last of two members with the same name; the Python relay refuses them,
  // and so does this one: a body means one thing to both.
  const problem = scanJson(text);
  if (problem !== null) {
    throw invalid(`body ${problem}; send ${shape} with each member once`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body) || body instanceof PyFloat) {
    throw invalid(`body must be a JSON object like ${shape}`);
  }
  return body;
}

/** Refuse members outside `allowed`. @param {Record<string, any>} body @param {Set<string>} allowed @param {string} [where] */
function onlyMembers(body, allowed, where = "") {
  const unknown = Object.keys(body).filter((k) => !allowed.has(k)).sort();
  if (unknown.length) {
    const shown = unknown.slice(0, 5).map((k) => `'${k.slice(0, 40)}'`).join(", ");
    throw invalid(`unknown member(s) ${shown}${where}; allowed: ${[...allowed].sort().join(", ")}`);
  }
}

/**
 * Parse and check a query request body.
 * @param {Uint8Array} raw
 * @param {{maxTimeoutMs: number, maxParamBytes?: number}} options the relay's ceiling (and
 *   default) for timeout_ms; the most bytes the canonical JSON of `params` may take
 * @returns {QueryRequest}
 */
export function parseQueryRequest(raw, options) {
  const body = parseJsonObject(raw, '{"sql": "...", "params": {...}}');
  onlyMembers(body, ALLOWED);
  return checkQuery(body, options);
}

/**
 * @typedef {{sql: string|null, query: string|null, params_json: string, max_rows: number|null,
 *            timeout_ms: number, query_id: string, client_query_id: boolean, sql_bytes: number}} QueryRequest
 */

/**
 * Check one query object (a /query body, or a statement of /transaction).
 * @param {Record<string, any>} body
 * @param {{maxTimeoutMs: number, maxParamBytes?: number}} options
 * @returns {QueryRequest}
 */
function checkQuery(body, { maxTimeoutMs, maxParamBytes = 262_144 }) {
  const sql = body.sql ?? null;
  const query = body.query ?? null;
  if ((sql === null) === (query === null)) throw invalid("send exactly one of 'sql' (a statement) and 'query' (a named query)");
  if (sql !== null && (typeof sql !== "string" || !sql.trim())) throw invalid("'sql' must be a non-empty string");
  if (sql !== null && !sql.isWellFormed()) throw invalid("'sql' contains a lone surrogate (invalid Unicode)");
  if (query !== null && (typeof query !== "string" || !NAME.test(query))) {
    throw invalid("'query' must be a query name (letters, digits, _ . : -; at most 128)");
  }
  const params = body.params ?? {};
  if (typeof params !== "object" || Array.isArray(params) || params instanceof PyFloat) throw invalid("'params' must be a JSON object mapping parameter names to values");
  const count = Object.keys(params).length;
  if (count > MAX_PARAMS) {
    throw invalid(`${count} parameters; SQL Server accepts at most ${MAX_PARAMS} in one request: pass a list as one parameter (e.g. JSON text read with OPENJSON) or split the query`);
  }
  for (const name of Object.keys(params)) {
    if (!NAME.test(name.startsWith("@") ? name.slice(1) : name)) throw invalid(`parameter name '${name.slice(0, 40)}' is not a valid name`);
  }
  for (const [name, value] of Object.entries(params)) {
    const problem = paramProblem(value);
    if (problem !== null) throw invalid(`parameter '${name.slice(0, 40)}': ${problem}`);
  }
  let paramsJson;
  try {
    paramsJson = canonicalJsonText(params); // what the attestation hashes and QUERY carries
  } catch (err) {
    throw invalid(`'params' cannot be passed on exactly: ${err.message} (e.g. {"type": "bigint", "value": "9007199254740993"})`);
  }
  const paramsBytes = bodyEncoder.encode(paramsJson).byteLength;
  if (paramsBytes > maxParamBytes) {
    throw invalid(`'params' is ${paramsBytes} bytes as JSON; this relay accepts at most ${maxParamBytes}: send fewer or smaller values`);
  }
  const maxRows = optionalInt(body, "max_rows", 0);
  let timeoutMs = optionalInt(body, "timeout_ms", 1);
  if (timeoutMs === null || timeoutMs > maxTimeoutMs) timeoutMs = maxTimeoutMs;
  const queryId = body.query_id ?? null;
  if (queryId !== null && (typeof queryId !== "string" || !QUERY_ID.test(queryId))) {
    throw invalid("'query_id' must be a UUID (or 1-128 characters of letters, digits, . _ : -)");
  }
  return {
    sql,
    query,
    params_json: paramsJson,
    max_rows: maxRows,
    timeout_ms: timeoutMs,
    query_id: queryId ?? crypto.randomUUID(),
    client_query_id: queryId !== null,
    sql_bytes: sql === null ? 0 : bodyEncoder.encode(sql).byteLength,
  };
}

const BEGIN = new Set(["isolation", "timeout_ms", "role"]);
const STATEMENT = new Set(["sql", "query", "params"]);
const TRANSACTION = new Set(["statements", ...BEGIN]);
/** Most statements in one POST .../transaction (SPEC 11.6). */
export const MAX_STATEMENTS = 100;
const SAVEPOINT = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/;
const ROLE = /^[^\u0000-\u001f]{1,128}$/;

/**
 * The session options of a begin (`POST .../sessions`) or a transaction: `isolation`,
 * `timeout_ms` (the idle timeout) and `role`, as the QUERY member `session` names them.
 * @param {Record<string, any>} body
 * @returns {{isolation?: string, idle_timeout_ms?: number, role?: string}}
 */
function beginOptions(body) {
  /** @type {{isolation?: string, idle_timeout_ms?: number, role?: string}} */
  const out = {};
  if (body.isolation !== undefined && body.isolation !== null) {
    if (!ISOLATION_LEVELS.includes(body.isolation)) throw invalid(`'isolation' must be one of: ${ISOLATION_LEVELS.join(", ")}`);
    out.isolation = body.isolation;
  }
  if (body.timeout_ms !== undefined && body.timeout_ms !== null) {
    if (!Number.isSafeInteger(body.timeout_ms) || body.timeout_ms < 1 || body.timeout_ms > 2 ** 31 - 1) {
      throw invalid("'timeout_ms' (the session's idle timeout) must be an integer in 1..2147483647");
    }
    out.idle_timeout_ms = body.timeout_ms;
  }
  if (body.role !== undefined && body.role !== null) {
    if (typeof body.role !== "string" || !ROLE.test(body.role) || !body.role.isWellFormed()) throw invalid("'role' must be a policy role name (1-128 characters, no control character)");
    out.role = body.role;
  }
  return out;
}

/**
 * The body of `POST .../sessions` (empty, `{}`, or with isolation / timeout_ms / role).
 * @param {Uint8Array} raw
 */
export function parseBeginRequest(raw) {
  if (raw.byteLength === 0) return {};
  const body = parseJsonObject(raw, '{"isolation": "read committed", "timeout_ms": 30000}');
  onlyMembers(body, BEGIN);
  return beginOptions(body);
}

/**
 * The body of `POST .../sessions/{id}/savepoint` and `.../rollback_to`: `{"name"}`.
 * @param {Uint8Array} raw @returns {string} the savepoint name
 */
export function parseSavepointRequest(raw) {
  const body = parseJsonObject(raw, '{"name": "before_update"}');
  onlyMembers(body, new Set(["name"]));
  if (typeof body.name !== "string" || !SAVEPOINT.test(body.name)) {
    throw invalid("'name' must be a savepoint name: 1-32 characters of letters, digits and _, not starting with a digit");
  }
  return body.name;
}

/**
 * The body of commit and rollback: empty or `{}`.
 * @param {Uint8Array} raw
 */
export function parseEmptyRequest(raw) {
  if (raw.byteLength === 0) return;
  onlyMembers(parseJsonObject(raw, "{}"), new Set());
}

/**
 * The body of `POST .../transaction` (SPEC 11.6): 1..MAX_STATEMENTS statements, each a query
 * object with `sql` or `query` and `params` under the size rules of /query; `isolation` and
 * `role` for the begin, and `timeout_ms` as each statement's timeout (as relay/sessions.py).
 * @param {Uint8Array} raw
 * @param {{maxTimeoutMs: number, maxParamBytes?: number}} options
 * @returns {{statements: QueryRequest[], begin: {isolation?: string, idle_timeout_ms?: number, role?: string}}}
 */
export function parseTransactionRequest(raw, options) {
  const body = parseJsonObject(raw, '{"statements": [{"sql": "...", "params": {...}}, ...]}');
  onlyMembers(body, TRANSACTION);
  const list = body.statements;
  if (!Array.isArray(list) || list.length < 1 || list.length > MAX_STATEMENTS) {
    throw invalid(`'statements' must be a list of 1..${MAX_STATEMENTS} statements like {"sql": "...", "params": {...}}`);
  }
  const statements = list.map((item, i) => {
    if (item === null || typeof item !== "object" || Array.isArray(item) || item instanceof PyFloat) {
      throw invalid(`statements[${i}] must be an object like {"sql": "...", "params": {...}}`);
    }
    onlyMembers(item, STATEMENT, ` in statements[${i}]`);
    try {
      return checkQuery({ ...item, timeout_ms: body.timeout_ms }, options);
    } catch (err) {
      if (err instanceof HttpError) throw new HttpError(err.code, `statements[${i}]: ${err.detail}`);
      throw err;
    }
  });
  const { idle_timeout_ms: _statementTimeout, ...begin } = beginOptions(body);
  return { statements, begin };
}
