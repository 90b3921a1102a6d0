// @ts-check
/**
 * A Prisma ORM driver adapter (Prisma 7, `provider = "sqlserver"`) that runs Prisma Client's SQL
 * through an edgetds tunnel: no database driver, no TCP socket, no credential in the Worker.
 *
 *   import { PrismaClient } from "./generated/prisma/client";      // generator "prisma-client"
 *   import { PrismaEdgeTds } from "edgetds-relay/prisma";           // relay/worker/src/prisma.js
 *   const adapter = new PrismaEdgeTds({ tunnel: new TunnelClient({ tunnel: "demo", fetcher: env.RELAY }),
 *                                       token });                  // the signed-in user's IdP token
 *   const prisma = new PrismaClient({ adapter });
 *
 * Every statement is one `/query` request carrying the end user's token (or `token()`'s answer,
 * asked for each request), so the connector applies that user's policy role to each statement.
 * `$transaction` opens an edgetds session (SPEC.md 7.4): its statements run on one pinned
 * database connection; commit/rollback/savepoints are session operations.
 *
 * Values: SPEC.md 12.1's JSON becomes what Prisma's sqlserver adapter hands the query engine
 * (bigint and decimal as strings, binary as bytes, datetimes as UTC ISO text); Prisma's
 * arguments become SPEC.md 12.2 typed parameters `@P1..@Pn`. SQL Server errors become Prisma's
 * mapped errors (P2002 unique, P2003 foreign key, P2011 null...); edgetds refusals (policy,
 * auth, limits) are thrown as the `TunnelError` itself, whose `code` says what to fix.
 */

import { ColumnTypeEnum, DriverAdapterError } from "@prisma/driver-adapter-utils";
import { TunnelClient, TunnelError } from "./client.js";

const ADAPTER_NAME = "edgetds";

/**
 * @typedef {import("@prisma/driver-adapter-utils").SqlQuery} SqlQuery
 * @typedef {import("@prisma/driver-adapter-utils").SqlResultSet} SqlResultSet
 * @typedef {import("@prisma/driver-adapter-utils").ArgType} ArgType
 * @typedef {import("@prisma/driver-adapter-utils").ColumnType} ColumnType
 * @typedef {import("@prisma/driver-adapter-utils").IsolationLevel} IsolationLevel
 * @typedef {import("@prisma/driver-adapter-utils").MappedError} MappedError
 * @typedef {import("@prisma/driver-adapter-utils").SqlDriverAdapter} SqlDriverAdapter
 * @typedef {import("@prisma/driver-adapter-utils").SqlDriverAdapterFactory} SqlDriverAdapterFactory
 * @typedef {import("@prisma/driver-adapter-utils").Transaction} Transaction
 * @typedef {import("./client.js").Session} Session
 * @typedef {import("./client.js").Isolation} Isolation
 * @typedef {string | (() => string | Promise<string>)} TokenSource
 * @typedef {{tunnel: TunnelClient | string, url?: string, fetcher?: {fetch: (r: Request) => Promise<Response>},
 *            token?: TokenSource, role?: string, timeoutMs?: number, sessionTimeoutMs?: number,
 *            maxRows?: number, schema?: string}} PrismaEdgeTdsOptions
 */

/** Prisma's isolation levels -> the session's `isolation` (SPEC.md 7.4). @type {Record<string, Isolation>} */
const ISOLATION = {
  "READ UNCOMMITTED": "read uncommitted",
  "READ COMMITTED": "read committed",
  "REPEATABLE READ": "repeatable read",
  SNAPSHOT: "snapshot",
  SERIALIZABLE: "serializable",
};

/** The ColumnType of each SQL Server type a COLUMNS record names (as @prisma/adapter-mssql). */
const COLUMN_TYPES = {
  bit: ColumnTypeEnum.Boolean,
  tinyint: ColumnTypeEnum.Int32,
  smallint: ColumnTypeEnum.Int32,
  int: ColumnTypeEnum.Int32,
  bigint: ColumnTypeEnum.Int64,
  decimal: ColumnTypeEnum.Numeric,
  numeric: ColumnTypeEnum.Numeric,
  money: ColumnTypeEnum.Double,
  smallmoney: ColumnTypeEnum.Double,
  real: ColumnTypeEnum.Float,
  float: ColumnTypeEnum.Double,
  char: ColumnTypeEnum.Text,
  varchar: ColumnTypeEnum.Text,
  nchar: ColumnTypeEnum.Text,
  nvarchar: ColumnTypeEnum.Text,
  text: ColumnTypeEnum.Text,
  ntext: ColumnTypeEnum.Text,
  xml: ColumnTypeEnum.Text,
  binary: ColumnTypeEnum.Bytes,
  varbinary: ColumnTypeEnum.Bytes,
  image: ColumnTypeEnum.Bytes,
  date: ColumnTypeEnum.Date,
  time: ColumnTypeEnum.Time,
  datetime: ColumnTypeEnum.DateTime,
  smalldatetime: ColumnTypeEnum.DateTime,
  datetime2: ColumnTypeEnum.DateTime,
  datetimeoffset: ColumnTypeEnum.DateTime,
  uniqueidentifier: ColumnTypeEnum.Uuid,
};

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * The factory Prisma Client takes as `adapter`.
 * @implements {SqlDriverAdapterFactory}
 */
export class PrismaEdgeTds {
  /** @type {"sqlserver"} */
  provider = "sqlserver";
  adapterName = ADAPTER_NAME;

  /**
   * @param {PrismaEdgeTdsOptions} options
   *   `tunnel`: a TunnelClient, or the tunnel's name with `fetcher` (a service binding to the
   *   relay Worker) or `url`; `token`: the end user's IdP token, or a function returning it (asked
   *   once per request, so one client can serve requests of different users); `role`: the policy
   *   role sessions open with; `timeoutMs` / `maxRows`: per-statement options (SPEC.md 11.1);
   *   `sessionTimeoutMs`: a transaction's idle timeout (SPEC.md 11.5); `schema`: the default schema
   *   Prisma qualifies tables with.
   */
  constructor(options) {
    if (!options || !options.tunnel) throw new TypeError("PrismaEdgeTds: pass { tunnel, token }");
    const { tunnel, url, fetcher } = options;
    this.tunnel = typeof tunnel === "string" ? new TunnelClient({ tunnel, url, fetcher }) : tunnel;
    this.options = options;
  }

  /** @returns {Promise<SqlDriverAdapter>} */
  async connect() {
    return new EdgeTdsAdapter(this.tunnel, this.options);
  }
}

/** Statements over one-shot `/query` requests. */
class EdgeTdsQueryable {
  /** @type {"sqlserver"} */
  provider = "sqlserver";
  adapterName = ADAPTER_NAME;

  /** @param {PrismaEdgeTdsOptions} settings */
  constructor(settings) {
    this.settings = settings;
  }

  /** @param {SqlQuery} query @returns {Promise<SqlResultSet>} */
  async queryRaw(query) {
    return resultSet(await this.run(query));
  }

  /** @param {SqlQuery} query @returns {Promise<number>} */
  async executeRaw(query) {
    const rows = await this.run(query);
    return rows.done?.rows_affected ?? 0;
  }

  /**
   * Run one statement; TunnelErrors become Prisma's mapped errors.
   * @param {SqlQuery} query @returns {Promise<any>} rows (value arrays) with `.columns`, `.done`
   */
  async run(query) {
    const params = toParams(query);
    try {
      return await this.send(query.sql, params);
    } catch (error) {
      throw mapError(error);
    }
  }

  /**
   * Send one statement (the adapter: a one-shot /query; a transaction: its session's query).
   * @abstract @param {string} sql @param {Record<string, any>} params @returns {Promise<any>}
   */
  async send(sql, params) {
    throw new Error("EdgeTdsQueryable.send: implemented by EdgeTdsAdapter and EdgeTdsTransaction");
  }

  /** @returns {{maxRows?: number, timeoutMs?: number, arrays: true}} */
  queryOptions() {
    const { maxRows, timeoutMs } = this.settings;
    return { maxRows, timeoutMs, arrays: true };
  }
}

/** @implements {SqlDriverAdapter} */
class EdgeTdsAdapter extends EdgeTdsQueryable {
  /** @param {TunnelClient} tunnel @param {PrismaEdgeTdsOptions} options */
  constructor(tunnel, options) {
    super(options);
    this.tunnel = tunnel;
  }

  /** @param {string} sql @param {Record<string, any>} params */
  async send(sql, params) {
    const token = await resolveToken(this.settings.token);
    return this.tunnel.query(sql, params, { ...this.queryOptions(), token });
  }

  /**
   * Run a T-SQL script as one batch (SQL Server takes several statements in one batch; `GO`
   * separators are a client-tool convention and are not understood).
   * @param {string} script
   */
  async executeScript(script) {
    await this.run({ sql: script, args: [], argTypes: [] });
  }

  /**
   * Open an edgetds session: BEGIN TRANSACTION at the isolation level on one pinned connection.
   * @param {IsolationLevel} [isolationLevel] @returns {Promise<Transaction>}
   */
  async startTransaction(isolationLevel) {
    const isolation = isolationLevel === undefined ? undefined : ISOLATION[isolationLevel];
    if (isolationLevel !== undefined && isolation === undefined) {
      throw new DriverAdapterError({ kind: "InvalidIsolationLevel", level: String(isolationLevel) });
    }
    const token = await resolveToken(this.settings.token);
    const { role, sessionTimeoutMs } = this.settings;
    try {
      const session = await this.tunnel.session({ token, isolation, timeoutMs: sessionTimeoutMs, role });
      return new EdgeTdsTransaction(session, this.settings);
    } catch (error) {
      throw mapError(error);
    }
  }

  getConnectionInfo() {
    // SQL Server takes 2,100 parameters per request; Prisma's own sqlserver adapter keeps 2 spare.
    // Relations are loaded with one query per level and joined in memory (no lateral joins).
    return { schemaName: this.settings.schema, maxBindValues: 2098, supportsRelationJoins: false };
  }

  async dispose() {}
}

/**
 * One Prisma transaction = one edgetds session. Operations are serialised: a session runs one
 * operation at a time (a second concurrent one would be refused as session.busy).
 * @implements {Transaction}
 */
class EdgeTdsTransaction extends EdgeTdsQueryable {
  /** Prisma sends no BEGIN/COMMIT SQL: commit() and rollback() are session operations. */
  options = { usePhantomQuery: true };

  /** @param {Session} session @param {PrismaEdgeTdsOptions} settings */
  constructor(session, settings) {
    super(settings);
    this.session = session;
    /** @type {Promise<unknown>} */
    this.queue = Promise.resolve();
  }

  /**
   * @template T
   * @param {() => Promise<T>} operation @returns {Promise<T>}
   */
  serialised(operation) {
    const next = this.queue.then(operation, operation);
    this.queue = next.catch(() => {});
    return next;
  }

  /** @param {string} sql @param {Record<string, any>} params */
  async send(sql, params) {
    return this.serialised(async () => {
      const token = await resolveToken(this.settings.token);
      return this.session.query(sql, params, { ...this.queryOptions(), token });
    });
  }

  async commit() {
    await this.operation(() => this.session.commit());
  }

  async rollback() {
    // after the session ended (idle timeout, a doomed transaction) rollback resolves
    await this.operation(() => this.session.rollback());
  }

  /** @param {string} name */
  async createSavepoint(name) {
    await this.operation(() => this.session.savepoint(name));
  }

  /** @param {string} name */
  async rollbackToSavepoint(name) {
    await this.operation(() => this.session.rollbackTo(name));
  }

  /** A session operation, in turn; its TunnelError as Prisma's error. @param {() => Promise<unknown>} operation */
  async operation(operation) {
    try {
      await this.serialised(operation);
    } catch (error) {
      throw mapError(error);
    }
  }
}

/** @param {TokenSource | undefined} source @returns {Promise<string | undefined>} */
async function resolveToken(source) {
  return typeof source === "function" ? await source() : source;
}

// ---- results --------------------------------------------------------------------------------

/**
 * SPEC.md 12.1 rows -> Prisma's result set (first result set; its columns' Prisma types).
 * @param {any} rows value arrays with `.columns` @returns {SqlResultSet}
 */
export function resultSet(rows) {
  /** @type {Array<{name: string, type: string}>} */
  const columns = rows.columns ?? [];
  const types = columns.map(columnType);
  const convert = columns.map((column) => converter(column.type));
  return {
    columnNames: columns.map((column) => column.name),
    columnTypes: types,
    rows: rows.map((/** @type {any[]} */ values) => values.map((value, i) => (value === null ? null : convert[i](value)))),
  };
}

/** @param {{name: string, type: string}} column @returns {ColumnType} */
function columnType(column) {
  const type = COLUMN_TYPES[column.type];
  if (type === undefined) throw new DriverAdapterError({ kind: "UnsupportedNativeDataType", type: column.type });
  return type;
}

/** @param {any} value */
const same = (value) => value;

/**
 * How one SQL Server type's JSON value becomes the value Prisma expects for its ColumnType.
 * @param {string} type @returns {(value: any) => any}
 */
function converter(type) {
  switch (type) {
    case "money":
    case "smallmoney":
      return Number; // Prisma reads money as Float (exact text -> double, as the mssql driver does)
    case "binary":
    case "varbinary":
    case "image":
      return base64ToBytes;
    case "datetime":
    case "smalldatetime":
    case "datetime2":
      return (value) => `${value}Z`; // SQL Server datetimes are UTC to Prisma
    default:
      return same; // bigint/decimal strings, numbers, booleans, strings, ISO dates/times/offsets
  }
}

/** @param {string} text @returns {Uint8Array} */
function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** @param {Uint8Array} bytes @returns {string} */
function bytesToBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

// ---- parameters -----------------------------------------------------------------------------

/**
 * Prisma's positional args -> SPEC.md 12.2 named parameters `P1..Pn` (Prisma writes @P1...).
 * @param {SqlQuery} query @returns {Record<string, any>}
 */
export function toParams(query) {
  /** @type {Record<string, any>} */
  const params = {};
  query.args.forEach((arg, i) => {
    params[`P${i + 1}`] = toParam(arg, query.argTypes[i] ?? { scalarType: "unknown", arity: "scalar" });
  });
  return params;
}

/**
 * @param {unknown} arg @param {ArgType} argType
 * @returns {any} a bare JSON value or {type, value}
 */
export function toParam(arg, argType) {
  if (argType.arity === "list" || Array.isArray(arg)) {
    throw new DriverAdapterError({ kind: "InvalidInputValue", message: "SQL Server has no list parameters" });
  }
  const dbType = argType.dbType?.toUpperCase();
  switch (argType.scalarType) {
    case "int":
      return typed(isInt32(arg) ? "int" : "bigint", integerValue(arg));
    case "bigint":
      return typed("bigint", arg === null ? null : String(arg));
    case "float":
      return typed(dbType === "REAL" ? "real" : "float", arg === null ? null : Number(arg));
    case "decimal":
      // $queryRaw hands a JS number over as "decimal": bind it as float, as the mssql driver does
      return typeof arg === "number" ? typed("float", arg) : decimalParam(arg);
    case "boolean":
      return typed("bit", arg === null ? null : arg === true || arg === 1 || arg === "true" || arg === "1");
    case "uuid":
      return typed("uniqueidentifier", arg === null ? null : String(arg));
    case "datetime":
      return dateTimeParam(arg, dbType);
    case "bytes":
      return typed("varbinary(max)", arg === null ? null : bytesParam(arg));
    case "string":
    case "enum":
    case "json":
      return typed("nvarchar(max)", arg === null ? null : String(arg));
    default:
      return inferred(arg);
  }
}

/** @param {string} type @param {unknown} value */
function typed(type, value) {
  return { type, value };
}

/** @param {unknown} arg */
function isInt32(arg) {
  const n = typeof arg === "bigint" ? Number(arg) : arg;
  return arg === null || (typeof n === "number" && Number.isInteger(n) && n >= INT32_MIN && n <= INT32_MAX);
}

/** @param {unknown} arg @returns {number | string | null} */
function integerValue(arg) {
  if (arg === null) return null;
  if (typeof arg === "number" && Number.isSafeInteger(arg)) return arg;
  return BigInt(/** @type {any} */ (arg)).toString(); // beyond 2^53: exact decimal text
}

/** A decimal as text with the declared precision and scale its digits need. @param {unknown} arg */
function decimalParam(arg) {
  if (arg === null) return typed("decimal(38,0)", null);
  const text = plainDecimal(String(arg));
  const [whole, fraction = ""] = text.replace(/^-/, "").split(".");
  const scale = Math.min(fraction.length, 38);
  const precision = Math.min(Math.max(whole.replace(/^0+/, "").length + scale, 1), 38);
  return typed(`decimal(${precision},${Math.min(scale, precision)})`, text);
}

/**
 * Decimal text without exponent ("1e-7" -> "0.0000001"), as decimal.js may print it.
 * @param {string} text @returns {string}
 */
function plainDecimal(text) {
  const match = /^([+-]?)(\d*)(?:\.(\d*))?[eE]([+-]?\d+)$/.exec(text.trim());
  if (!match) return text.trim().replace(/^\+/, "");
  const [, sign, whole, fraction = "", exponent] = match;
  const digits = whole + fraction;
  const point = whole.length + Number(exponent);
  let out;
  if (point <= 0) out = `0.${"0".repeat(-point)}${digits}`;
  else if (point >= digits.length) out = digits + "0".repeat(point - digits.length);
  else out = `${digits.slice(0, point)}.${digits.slice(point)}`;
  return (sign === "-" ? "-" : "") + out;
}

/**
 * A DateTime argument (a Date or ISO text, UTC) as the column's type: `@db.Date`, `@db.Time`,
 * `@db.DateTimeOffset`, `@db.DateTime`, `@db.SmallDateTime`, else datetime2 (Prisma's default).
 * @param {unknown} arg @param {string | undefined} dbType
 */
function dateTimeParam(arg, dbType) {
  const date = arg === null ? null : arg instanceof Date ? arg : new Date(String(arg));
  if (date !== null && Number.isNaN(date.getTime())) {
    throw new DriverAdapterError({ kind: "InvalidInputValue", message: "a DateTime argument is not a valid date" });
  }
  const iso = date?.toISOString() ?? null; // YYYY-MM-DDTHH:MM:SS.mmmZ
  switch (dbType) {
    case "DATE":
      return typed("date", iso && iso.slice(0, 10));
    case "TIME":
      return typed("time(3)", iso && iso.slice(11, 23));
    case "DATETIMEOFFSET":
      return typed("datetimeoffset(3)", iso);
    case "DATETIME":
      return typed("datetime", iso && iso.slice(0, 23));
    case "SMALLDATETIME":
      return typed("smalldatetime", iso && iso.slice(0, 19));
    default:
      return typed("datetime2(7)", iso && iso.slice(0, 23));
  }
}

/** @param {unknown} arg @returns {string} base64 */
function bytesParam(arg) {
  if (typeof arg === "string") return arg; // Prisma hands Bytes over as base64 text
  if (arg instanceof Uint8Array) return bytesToBase64(arg);
  if (arg instanceof ArrayBuffer) return bytesToBase64(new Uint8Array(arg));
  if (ArrayBuffer.isView(arg)) return bytesToBase64(new Uint8Array(arg.buffer, arg.byteOffset, arg.byteLength));
  throw new DriverAdapterError({ kind: "InvalidInputValue", message: "a Bytes argument is not binary data" });
}

/** An argument of unknown type ($queryRaw): by its JavaScript type. @param {unknown} arg */
function inferred(arg) {
  if (arg === null || arg === undefined) return null;
  if (typeof arg === "bigint") return typed("bigint", arg.toString());
  if (typeof arg === "number") return Number.isInteger(arg) ? arg : typed("float", arg);
  if (typeof arg === "boolean" || typeof arg === "string") return arg;
  if (arg instanceof Date) return dateTimeParam(arg, undefined);
  if (arg instanceof Uint8Array || arg instanceof ArrayBuffer || ArrayBuffer.isView(arg)) {
    return typed("varbinary(max)", bytesParam(arg));
  }
  return JSON.stringify(arg);
}

// ---- errors ---------------------------------------------------------------------------------

/**
 * A TunnelError as Prisma's error: SQL Server's errors by number (`sql` member of the error
 * record), session ends as a closed transaction, a timeout as one; any other edgetds refusal
 * stays the TunnelError (its code names what failed: policy.denied, auth.expired...).
 * @param {unknown} error @returns {unknown}
 */
export function mapError(error) {
  if (!(error instanceof TunnelError)) return error;
  if (error.code === "sql.error" && error.sql) {
    return new DriverAdapterError({
      ...sqlServerError(error.sql.number, sqlMessage(error)),
      originalCode: String(error.sql.number),
      originalMessage: sqlMessage(error),
    });
  }
  if (error.code === "session.ended" || error.code === "session.not_found") {
    return new DriverAdapterError({ kind: "TransactionAlreadyClosed", cause: error.message, originalCode: error.code });
  }
  if (error.code === "query.timeout") {
    return new DriverAdapterError({ kind: "SocketTimeout", originalCode: error.code, originalMessage: error.message });
  }
  return error;
}

/** SQL Server's message, without the "sql.error: " prefix of TunnelError's message. @param {TunnelError} error */
function sqlMessage(error) {
  return error.message.replace(/^sql\.error: /, "");
}

/** @param {string} message @param {RegExp} pattern @returns {string | undefined} */
function pick(message, pattern) {
  return pattern.exec(message)?.[1];
}

/** Numbers Prisma's sqlserver adapter reports as a value out of range (conversion, overflow). */
const OUT_OF_RANGE = new Set([
  108, 168, 183, 187, 220, 232, 236, 242, 244, 248, 294, 296, 298, 304, 517, 535, 1007, 1080, 2386, 2568, 2570, 2579,
  2742, 2950, 3194, 3250, 3606, 3995, 4079, 4867, 6244, 6398, 6937, 6938, 6960, 7116, 7135, 7722, 7810, 7981, 8115,
  8165, 8351, 8411, 8727, 8729, 8968, 8991, 9109, 9204, 9526, 9527, 9746, 9813, 9835, 9838, 9839,
]);

/**
 * SQL Server error number + message -> Prisma's mapped error (the kinds and the names in them as
 * Prisma's own sqlserver adapter reports them, so P2002's `target` etc. read the same).
 * @param {number} number @param {string} message @returns {MappedError}
 */
export function sqlServerError(number, message) {
  switch (number) {
    case 2627: {
      // Violation of PRIMARY KEY constraint 'PK_x'. Cannot insert duplicate key in object 'dbo.T'. ...
      const object = pick(message, /duplicate key in object '([^']+)'/);
      return { kind: "UniqueConstraintViolation", constraint: object ? { index: object } : undefined, table: object?.split(".").pop() };
    }
    case 2601: {
      // Cannot insert duplicate key row in object 'dbo.T' with unique index 'T_email_key'. ...
      const index = pick(message, /unique index '([^']+)'/);
      return { kind: "UniqueConstraintViolation", constraint: index ? { index } : undefined, table: pick(message, /object '([^']+)'/)?.split(".").pop() };
    }
    case 1505: {
      const index = pick(message, /index name '([^']+)'/);
      return { kind: "UniqueConstraintViolation", constraint: index ? { index } : undefined, table: pick(message, /object name '([^']+)'/)?.split(".").pop() };
    }
    case 547: {
      // The INSERT statement conflicted with the FOREIGN KEY constraint "Post_authorId_fkey". ...
      const index = pick(message, /constraint "([^"]+)"/);
      return { kind: "ForeignKeyConstraintViolation", constraint: index ? { index } : undefined };
    }
    case 515: {
      // Cannot insert the value NULL into column 'name', table 'db.dbo.T'; column does not allow nulls. ...
      const field = pick(message, /into column '([^']+)'/);
      return { kind: "NullConstraintViolation", constraint: field ? { fields: [field] } : undefined };
    }
    case 2628:
    case 8152:
      return { kind: "LengthMismatch", column: pick(message, /column '([^']+)'/) };
    case 208:
      return { kind: "TableDoesNotExist", table: pick(message, /object name '([^']+)'/) };
    case 207:
      return { kind: "ColumnNotFound", column: pick(message, /column name '([^']+)'/) };
    case 1205:
      return { kind: "TransactionWriteConflict" };
    case 3902:
    case 3903:
    case 3971:
      return { kind: "TransactionAlreadyClosed", cause: message };
    case 8169:
      return { kind: "InconsistentColumnData", cause: message };
    case 4060:
      return { kind: "DatabaseDoesNotExist", db: pick(message, /database "([^"]+)"/) };
    case 1801:
      return { kind: "DatabaseAlreadyExists", db: pick(message, /Database '([^']+)'/) };
    case 5828:
      return { kind: "TooManyConnections", cause: message };
    default:
      if (OUT_OF_RANGE.has(number)) return { kind: "ValueOutOfRange", cause: message };
      return { kind: "mssql", code: number, message };
  }
}
