// @ts-check
/**
 * A Kysely dialect for SQL Server behind an edgetds tunnel, for Workers and anything with `fetch`.
 *
 *   import { Kysely } from "kysely";
 *   import { EdgetdsDialect } from "edgetds-relay/kysely";       // relay/worker/src/kysely.js
 *   const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel: "demo", fetcher: env.RELAY, token }) });
 *   const rows = await db.selectFrom("orders").selectAll().where("owner", "=", owner).execute();
 *   await db.transaction().execute(async (trx) => { ... });    // one edgetds session (SPEC.md 7.4)
 *
 * Kysely's own SQL Server pieces do the SQL (MssqlAdapter, MssqlQueryCompiler, MssqlIntrospector);
 * this module brings the Driver: every query is a `/query` request with the end user's token,
 * `stream()` reads the NDJSON answer as it arrives, and a transaction is an edgetds session
 * (begin, its queries, savepoints, then commit or rollback). Create one Kysely per request (it is
 * cheap: there is no connection pool here) with that request's token, or pass `token` as a function.
 *
 * Values: JS values become typed parameters (SPEC.md 12.2) so they arrive exactly: an integer as
 * `int` (or `bigint` past 32 bits), a bigint as `bigint`, a Date as `datetime2(3)` (its UTC time), a Uint8Array as `varbinary(max)`, a
 * non-integer number as `float`, `{type, value}` as written. Results keep the edgetds encoding
 * (bigint and decimal columns are exact strings, time is a string) except binary columns
 * (Uint8Array) and date/time-of-day-with-date columns (Date, in UTC, millisecond precision; pass
 * `dates: "string"` to keep every digit of datetime2(7) as text).
 */

import { AbortedTransactionError, MssqlAdapter, MssqlIntrospector, MssqlQueryCompiler } from "kysely";

import { TunnelClient, TunnelError } from "./client.js";

/**
 * @typedef {import("kysely").Dialect} Dialect
 * @typedef {import("kysely").Driver} Driver
 * @typedef {import("kysely").DatabaseConnection} DatabaseConnection
 * @typedef {import("kysely").CompiledQuery} CompiledQuery
 * @typedef {import("kysely").QueryResult<any>} QueryResult
 * @typedef {import("kysely").TransactionSettings} TransactionSettings
 * @typedef {import("./client.js").Session} Session
 * @typedef {import("./client.js").Column} Column
 * @typedef {import("./client.js").Isolation} Isolation
 *
 * @typedef {object} EdgetdsDialectConfig
 * @property {TunnelClient | string} tunnel a TunnelClient, or the tunnel's name (then `fetcher` or `url`)
 * @property {{fetch: (request: Request) => Promise<Response>}} [fetcher] a service binding to the relay Worker
 * @property {string} [url] the relay's base URL (outside Cloudflare)
 * @property {string | (() => string | Promise<string>)} [token] the END USER's IdP token (or a
 *   function returning it); the connector verifies it and picks the SQL role
 * @property {number} [maxRows] `max_rows` of every query
 * @property {number} [timeoutMs] `timeout_ms` of every query
 * @property {Isolation} [isolation] the isolation of transactions that set none (the connector's default otherwise)
 * @property {number} [sessionTimeoutMs] the idle timeout of a transaction's session
 * @property {string} [role] the policy role transactions open their session with
 * @property {"Date" | "string"} [dates] date and datetime columns as Date (default) or as text
 */

/**
 * Kysely's SQL Server compiler with parameters named `@p1, @p2, ...`: the connector binds
 * parameters by name and a name starts with a letter or `_` (Kysely's own compiler says `@1`).
 */
export class EdgetdsQueryCompiler extends MssqlQueryCompiler {
  getCurrentParameterPlaceholder() {
    return `@p${this.numParameters}`;
  }
}

/** @implements {Dialect} */
export class EdgetdsDialect {
  /** @param {EdgetdsDialectConfig} config */
  constructor(config) {
    if (!config?.tunnel) throw new TypeError("EdgetdsDialect: `tunnel` (a TunnelClient or the tunnel's name) is required");
    this.config = config;
  }

  createDriver() {
    return new EdgetdsDriver(this.config);
  }

  createQueryCompiler() {
    return new EdgetdsQueryCompiler();
  }

  createAdapter() {
    return new MssqlAdapter();
  }

  /** @param {import("kysely").Kysely<any>} db */
  createIntrospector(db) {
    return new MssqlIntrospector(db);
  }
}

/** @implements {Driver} */
export class EdgetdsDriver {
  /** @param {EdgetdsDialectConfig} config */
  constructor(config) {
    const { tunnel, fetcher, url } = config;
    this.config = config;
    /** @type {TunnelClient} */
    this.tunnel = typeof tunnel === "string" ? new TunnelClient({ tunnel, fetcher, url }) : tunnel;
  }

  async init() {}

  async acquireConnection() {
    return new EdgetdsConnection(this);
  }

  /** @param {DatabaseConnection} connection @param {TransactionSettings} settings */
  async beginTransaction(connection, settings) {
    await edgetds(connection).begin(settings);
  }

  /** @param {DatabaseConnection} connection */
  async commitTransaction(connection) {
    await edgetds(connection).commit();
  }

  /** @param {DatabaseConnection} connection */
  async rollbackTransaction(connection) {
    await edgetds(connection).rollback();
  }

  /** @param {DatabaseConnection} connection @param {string} name */
  async savepoint(connection, name) {
    await edgetds(connection).inSession().savepoint(name);
  }

  /** @param {DatabaseConnection} connection @param {string} name */
  async rollbackToSavepoint(connection, name) {
    await edgetds(connection).inSession().rollbackTo(name);
  }

  /** A transaction Kysely let go of unfinished is rolled back. @param {DatabaseConnection} connection */
  async releaseConnection(connection) {
    await edgetds(connection).rollback();
  }

  async destroy() {}

  /** The end user's token for the next request (undefined: the TunnelClient's default). */
  async token() {
    const { token } = this.config;
    return typeof token === "function" ? token() : token;
  }
}

/** @param {DatabaseConnection} connection @returns {EdgetdsConnection} */
function edgetds(connection) {
  return /** @type {EdgetdsConnection} */ (connection);
}

/**
 * One Kysely connection: one-shot `/query` requests, or, between begin and commit/rollback, the
 * operations of one session.
 * @implements {DatabaseConnection}
 */
export class EdgetdsConnection {
  /** @param {EdgetdsDriver} driver */
  constructor(driver) {
    this.driver = driver;
    /** @type {Session | null} */
    this.session = null;
  }

  /** @param {TransactionSettings} settings */
  async begin({ isolationLevel, accessMode }) {
    if (this.session) throw new Error("EdgetdsDialect: a transaction is already open on this connection");
    if (accessMode === "read only") {
      throw new Error("EdgetdsDialect: SQL Server has no read-only transactions; use a read-only role (the connector's policy) instead");
    }
    const { isolation, sessionTimeoutMs, role } = this.driver.config;
    this.session = await this.driver.tunnel.session({
      token: await this.driver.token(),
      isolation: isolationLevel ?? isolation,
      timeoutMs: sessionTimeoutMs,
      role,
    });
  }

  async commit() {
    const session = this.inSession();
    this.session = null;
    try {
      await session.commit();
    } catch (err) {
      // The server ended the transaction (an error that doomed it, an idle timeout...): what
      // Kysely calls a transaction rolled back instead of committed.
      if (err instanceof TunnelError && err.code === "session.ended" && session.endReason !== "committed") {
        throw new AbortedTransactionError({ cause: err });
      }
      throw err;
    }
  }

  async rollback() {
    const session = this.session;
    this.session = null;
    await session?.rollback();
  }

  inSession() {
    if (!this.session) throw new Error("EdgetdsDialect: no transaction is open on this connection");
    return this.session;
  }

  /**
   * @param {CompiledQuery} compiledQuery
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<QueryResult>}
   */
  async executeQuery(compiledQuery, options) {
    /** @type {any[]} */
    const rows = [];
    let done = null;
    for await (const event of this.events(compiledQuery, options?.signal)) {
      if (event.type === "row") rows.push(event.row);
      else done = event.done;
    }
    const affected = done?.rows_affected ?? done?.rows;
    return { rows, numAffectedRows: affected === undefined || affected === null ? undefined : BigInt(affected) };
  }

  /**
   * Rows in chunks of `chunkSize`, read as they arrive; leaving the loop early cancels the query.
   * @param {CompiledQuery} compiledQuery @param {number} [chunkSize]
   * @param {{signal?: AbortSignal}} [options]
   * @returns {AsyncIterableIterator<QueryResult>}
   */
  async *streamQuery(compiledQuery, chunkSize = 100, options) {
    if (!Number.isInteger(chunkSize) || chunkSize <= 0) throw new TypeError("chunkSize must be a positive integer");
    /** @type {any[]} */
    let rows = [];
    for await (const event of this.events(compiledQuery, options?.signal)) {
      if (event.type !== "row") continue;
      rows.push(event.row);
      if (rows.length >= chunkSize) {
        yield { rows };
        rows = [];
      }
    }
    if (rows.length > 0) yield { rows };
  }

  /**
   * The rows of every result set (as Kysely's SQL Server driver returns them), then the done record.
   * @param {CompiledQuery} compiledQuery @param {AbortSignal} [signal]
   * @returns {AsyncGenerator<{type: "row", row: Record<string, any>} | {type: "done", done: Record<string, any>}>}
   */
  async *events(compiledQuery, signal) {
    const params = queryParams(compiledQuery.parameters);
    const { maxRows, timeoutMs, dates = "Date" } = this.driver.config;
    const options = { maxRows, timeoutMs, signal };
    const stream = this.session
      ? this.session.stream(compiledQuery.sql, params, options)
      : this.driver.tunnel.stream(compiledQuery.sql, params, { ...options, token: await this.driver.token() });
    /** @type {((values: any[]) => Record<string, any>) | null} */
    let toRow = null;
    for await (const event of stream) {
      if (event.type === "columns") toRow = rowReader(event.columns, dates);
      else if (event.type === "row") yield { type: "row", row: /** @type {(values: any[]) => Record<string, any>} */ (toRow)(event.values) };
      else yield { type: "done", done: event.done };
    }
  }
}

/**
 * Kysely's positional parameters as the named parameters of SPEC.md 12.2 (`p1`, `p2`, ...).
 * @param {readonly unknown[]} parameters
 * @returns {Record<string, any>}
 */
export function queryParams(parameters) {
  /** @type {Record<string, any>} */
  const params = {};
  parameters.forEach((value, i) => {
    params[`p${i + 1}`] = toParam(value, i + 1);
  });
  return params;
}

/**
 * One JS value as an edgetds parameter value (SPEC.md 12.2), chosen so it arrives exactly.
 * @param {unknown} value @param {number} position (for the error message)
 * @returns {any}
 */
export function toParam(value, position) {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case "string":
    case "boolean":
      return value; // nvarchar(max), bit
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`parameter @p${position}: SQL Server has no NaN or Infinity`);
      // As Kysely's SQL Server driver binds them: int when it fits, else bigint (a bare JSON
      // integer); an integer past 2^53 is no exact integer anyway: float, as is a fraction.
      if (!Number.isInteger(value)) return value;
      if (value >= -2147483648 && value <= 2147483647) return { type: "int", value };
      return Number.isSafeInteger(value) ? value : { type: "float", value };
    case "bigint":
      return { type: "bigint", value: value.toString() };
    default:
      break;
  }
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new TypeError(`parameter @p${position}: an invalid Date`);
    return { type: "datetime2(3)", value: value.toISOString().replace(/Z$/, "") };
  }
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    return { type: "varbinary(max)", value: toBase64(value instanceof ArrayBuffer ? new Uint8Array(value) : value) };
  }
  if (isTyped(value)) return value;
  throw new TypeError(
    `parameter @p${position}: a ${Array.isArray(value) ? "array" : typeof value} is not a SQL Server value; ` +
      'pass a string (e.g. JSON.stringify it) or a typed parameter {type: "nvarchar(max)", value: ...}',
  );
}

/** A typed parameter as SPEC.md 12.2 writes it: `{type: "decimal(18,4)", value: "12.3400"}`. @param {object} value */
function isTyped(value) {
  const keys = Object.keys(value);
  return Object.getPrototypeOf(value) === Object.prototype && typeof (/** @type {any} */ (value).type) === "string" && keys.every((k) => k === "type" || k === "value");
}

const DATE_TYPES = new Set(["date", "datetime", "datetime2", "smalldatetime", "datetimeoffset"]);
const BINARY_TYPES = new Set(["binary", "varbinary", "image"]);

/**
 * A function turning one row's values into an object keyed by column name, with binary columns as
 * Uint8Array and (unless `dates` is "string") date columns as Date.
 * @param {Column[]} columns @param {"Date" | "string"} dates
 */
export function rowReader(columns, dates) {
  const names = columns.map((column, i) => column.name || `column${i}`);
  const convert = columns.map((column) => {
    if (BINARY_TYPES.has(column.type)) return fromBase64;
    if (dates === "Date" && DATE_TYPES.has(column.type)) return toDate;
    return null;
  });
  /** @param {any[]} values */
  return (values) => {
    /** @type {Record<string, any>} */
    const row = {};
    for (let i = 0; i < names.length; i++) {
      const value = values[i];
      const fn = convert[i];
      row[names[i]] = fn && value !== null ? fn(value) : value;
    }
    return row;
  };
}

/**
 * An edgetds date/time value as a Date: with its offset, else read as UTC; digits past the
 * millisecond are dropped (a Date holds no more).
 * @param {string} text
 */
function toDate(text) {
  const [, date, time = "00:00:00", offset = ""] = /^(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?)\d*)?([+-]\d{2}:\d{2})?$/.exec(text) ?? [];
  if (!date) throw new TypeError("EdgetdsDialect: a date value the relay should not send");
  return new Date(`${date}T${time}${offset || "Z"}`);
}

/** @param {Uint8Array} bytes */
function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** @param {string} text */
function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
