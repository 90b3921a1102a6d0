// @ts-check
/**
 * The session endpoints inside the Durable Object (SPEC.md 11.5, 11.6): begin, the operations of
 * an open session, and the one-round-trip transaction. Each operation is one QUERY with the
 * member `session`, sent through query.js like any query; sessions.js keeps the routing table.
 *
 * 1. `begin()` checks the caps (per identity, per tunnel object), makes the id (so that it maps
 *    to this shard), and sends the begin through admission like a query, to a connection that
 *    negotiated the capability `session`. The DONE pins the session to the connection that
 *    answered: `201 {"session", "expires_at", "idle_timeout_ms"}`.
 * 2. `operate()` checks the session (sessions.js order), marks it busy and sends the operation on
 *    the session's own connection, with no admission wait. `run` answers as /query does (the
 *    connector's terminal record carries the session state); the other ops answer one JSON object.
 * 3. `transaction()` is begin, the statements, commit; the first failure rolls back. Its NDJSON
 *    answer starts (200) with the first line a statement streams; a failure before that is
 *    answered with its status, as /query does.
 */

import { ErrorCode, httpStatus, SESSION_CAP } from "./frames.js";
import { errorRecord, errorResponse, HttpError, jsonResponse } from "./http.js";
import { newSessionId, ownerOf, SessionTable } from "./sessions.js";

const NDJSON_HEADERS = { "content-type": "application/x-ndjson", "cache-control": "no-store" };
const encoder = new TextEncoder();

/**
 * What the Worker sends for a session request (verified facts and checked bodies only).
 * @typedef {{token: string, identity: {issuer: string, subject: string}, deadlineMs: number,
 *   maxQueriesPerIdentity: number, timeoutMs: number}} Caller
 *   `timeoutMs`: the timeout of an operation that has no statement (begin, commit, ...)
 * @typedef {Caller & {begin: {isolation?: string, idle_timeout_ms?: number, role?: string},
 *   shard: number, shards: number, maxSessions: number, maxSessionsPerIdentity: number}} BeginCall
 * @typedef {Caller & {id: string, op: string, name?: string, request?: Record<string, any>}} OpCall
 * @typedef {BeginCall & {statements: Record<string, any>[]}} TransactionCall
 * @typedef {import("./session.js").ConnectorSession} ConnectorSession
 * @typedef {{ok: true, id: string, connection: ConnectorSession, entry: import("./sessions.js").Entry, queryId: string}
 *   | {ok: false, response: Response}} Begun
 */

/** A statement-less QUERY request (begin, commit, rollback, savepoint, rollback_to). @param {number} timeoutMs */
function bare(timeoutMs) {
  return { sql: null, query: null, params_json: "{}", max_rows: null, timeout_ms: timeoutMs, query_id: crypto.randomUUID(), client_query_id: false, sql_bytes: 0 };
}

/**
 * A whole JSON answer carrying a record; a 429 also says when to come back (SPEC 11.1).
 * @param {number} status @param {Record<string, any> | Uint8Array} record
 */
function recordResponse(status, record) {
  return jsonResponse(status, record, status === 429 ? { "retry-after": "1" } : {});
}

/** RFC 3339 UTC with milliseconds. @param {number} unixMs */
function rfc3339(unixMs) {
  return new Date(unixMs).toISOString();
}

/**
 * The lines of an NDJSON body as they complete (the last may lack its newline).
 * @param {ReadableStream<Uint8Array>} body @returns {AsyncGenerator<Uint8Array>}
 */
async function* lines(body) {
  const reader = body.getReader();
  let held = new Uint8Array(0);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const bytes = new Uint8Array(held.length + value.length);
    bytes.set(held);
    bytes.set(value, held.length);
    let start = 0;
    for (let i = bytes.indexOf(0x0a); i !== -1; i = bytes.indexOf(0x0a, start)) {
      yield bytes.slice(start, i + 1);
      start = i + 1;
    }
    held = bytes.slice(start);
  }
  if (held.length) yield held;
}

/** @param {Uint8Array} line @returns {Record<string, any> | null} */
function parse(line) {
  try {
    const value = JSON.parse(new TextDecoder().decode(line));
    return value !== null && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

/**
 * The terminal record of a whole answer: `{"done": {...}}` or `{"error": {...}}`, and the status
 * the answer had (a 200 whose body ended in an error counts as that error's status).
 * @param {Response} response @returns {Promise<{status: number, record: Record<string, any>}>}
 */
async function terminalOf(response) {
  /** @type {Record<string, any> | null} */
  let last = null;
  if (response.body !== null) for await (const line of lines(response.body)) last = parse(line) ?? last;
  if (last?.error) return { status: response.status === 200 ? httpStatus(last.error.code) : response.status, record: last };
  if (last?.done) return { status: response.status, record: last };
  const error = { code: ErrorCode.TRANSPORT_LOST, message: "the answer of the connector ended without a terminal record; the operation's outcome is unknown" };
  return { status: httpStatus(error.code), record: { error } };
}

/** Run the session endpoints of one Durable Object (see the module comment). */
export class SessionOps {
  /**
   * @param {import("./registry.js").Tunnel} routes @param {import("./query.js").Queries} queries
   * @param {SessionTable} table
   */
  constructor(routes, queries, table) {
    this.routes = routes;
    this.queries = queries;
    this.table = table;
  }

  /** `POST .../sessions`. @param {BeginCall} call @returns {Promise<Response>} */
  async begin(call) {
    const begun = await this.open(call);
    if (!begun.ok) return begun.response;
    // as pinned (the connector's expires_at and idle_timeout_ms, or the SPEC defaults without them)
    const [, expiresAt, idleTimeoutMs] = begun.entry;
    return jsonResponse(201, { session: begun.id, expires_at: rfc3339(expiresAt), idle_timeout_ms: idleTimeoutMs });
  }

  /**
   * Begin a session: caps, id, the begin QUERY; pinned on its DONE.
   * @param {BeginCall} call @param {string} [queryId] @returns {Promise<Begun>}
   */
  async open(call, queryId = crypto.randomUUID()) {
    const owner = await ownerOf(call.identity);
    const connections = this.routes.sessions();
    const cap = this.table.capped(connections, owner, { perIdentity: call.maxSessionsPerIdentity, perTunnel: call.maxSessions }, Date.now());
    if (cap === "identity") {
      throw new HttpError(ErrorCode.LIMITS_TOO_MANY_SESSIONS, `this identity already has ${call.maxSessionsPerIdentity} open sessions on this tunnel (LIMITS max_sessions_per_identity); commit or roll one back, then retry`, { retryAfter: "1", limit: "identity" });
    }
    if (cap === "tunnel") {
      throw new HttpError(ErrorCode.LIMITS_TOO_MANY_SESSIONS, `this tunnel has ${call.maxSessions} open sessions (LIMITS max_sessions_per_tunnel); retry after the Retry-After delay`, { retryAfter: "1", limit: "tunnel" });
    }
    const open = connections.filter((c) => c.open);
    if (open.length && !open.some((c) => c.conn.caps.has(SESSION_CAP))) {
      throw new HttpError(ErrorCode.TUNNEL_NO_CONNECTOR, `no connector of this tunnel supports sessions (the capability "${SESSION_CAP}"); upgrade the connector`, { retryAfter: "5" });
    }
    if (open.length && !open.some(SessionTable.takesSessions)) {
      throw new HttpError(ErrorCode.LIMITS_TOO_MANY_SESSIONS, "every connector connection of this tunnel holds as many sessions as it can; retry after the Retry-After delay", { retryAfter: "1", limit: "tunnel" });
    }
    const id = newSessionId(call.shard, call.shards);
    this.table.pending.set(id, owner);
    try {
      /** @type {ConnectorSession | null} */
      let sentOn = null;
      const response = await this.queries.handle({
        ...call,
        request: { ...bare(call.timeoutMs), query_id: queryId },
        session: { id, op: "begin", ...call.begin },
        accept: SessionTable.takesSessions,
        onSent: (connection) => {
          sentOn = connection;
        },
      });
      const { status, record } = await terminalOf(response);
      const state = record.done?.session;
      if (record.error) return { ok: false, response: recordResponse(status, record) };
      if (state?.state !== "open" || state.id !== id) {
        console.error(`session.begin_unanswered query_id=${queryId}: the connector's DONE carried no open session`);
        return { ok: false, response: errorResponse(new HttpError(ErrorCode.PROTOCOL_ERROR, `the connector did not open the session; retry (the cause is in the relay's log under query_id ${queryId})`, { queryId })) };
      }
      const connection = /** @type {ConnectorSession | null} */ (sentOn);
      if (connection === null || !connection.open) {
        // the begin's DONE came, then its connection went: the connector rolled it back
        return { ok: false, response: errorResponse(new HttpError(ErrorCode.TRANSPORT_LOST, "the connection between relay and connector was lost right after the session began; it was rolled back: begin again", { queryId, session: { id, state: "ended", reason: "transport.lost" } })) };
      }
      const entry = this.table.pin(connection, id, owner, state, Date.now());
      await this.table.writes; // its storage record is written before the client learns the id
      return { ok: true, id, connection, entry, queryId };
    } finally {
      this.table.pending.delete(id);
    }
  }

  /**
   * An operation of an open session; `run` streams as /query does. Refusals (SPEC 7.4 order) are
   * thrown as HttpError before anything is sent.
   * @param {OpCall} call @returns {Promise<Response>}
   */
  async operate(call) {
    const response = await this.send(call, await this.check(call));
    if (call.op === "run") return response;
    const { status, record } = await terminalOf(response);
    if (record.error) return recordResponse(status, record);
    const state = record.done.session ?? { id: call.id, state: "open" };
    return jsonResponse(200, { session: call.id, state: state.state, ...(state.reason ? { reason: state.reason } : {}) });
  }

  /**
   * The session checks in SPEC 7.4 order (a session on a draining connection has ended: SPEC 7.4);
   * marks the session busy.
   * @param {{identity: {issuer: string, subject: string}, id: string}} call @returns {Promise<ConnectorSession>}
   */
  async check({ identity, id }) {
    const owner = await ownerOf(identity);
    const found = await this.table.find(this.routes.sessions(), id, Date.now());
    if (found.kind === "unknown") {
      throw new HttpError(ErrorCode.SESSION_NOT_FOUND, "no such session on this tunnel (never opened here, or ended more than 10 minutes ago); begin a session with POST .../sessions");
    }
    const holder = found.kind === "open" ? found.entry[0] : found.owner;
    if (holder !== owner) throw new HttpError(ErrorCode.SESSION_WRONG_IDENTITY, "this session belongs to another identity; use the token of the identity that began it", { session: { id } });
    if (found.kind === "ended") {
      throw new HttpError(ErrorCode.SESSION_ENDED, `the session has ended (${found.reason}); begin a new one`, { session: { id, state: "ended", reason: found.reason } });
    }
    if (!found.connection.open) {
      this.table.end(found.connection, id, "transport.lost", Date.now());
      throw new HttpError(ErrorCode.SESSION_ENDED, "the session has ended (transport.lost): its connector connection went away; begin a new one", { session: { id, state: "ended", reason: "transport.lost" } });
    }
    if (found.connection.draining) {
      // no QUERY after the connector's DRAIN (SPEC 6.4): the connector rolls it back (SPEC 7.4)
      this.table.end(found.connection, id, "connector.draining", Date.now());
      throw new HttpError(ErrorCode.SESSION_ENDED, "the session has ended (connector.draining): its connector is shutting down and rolls it back; begin a new one", { session: { id, state: "ended", reason: "connector.draining" } });
    }
    if (!this.table.claim(id)) throw new HttpError(ErrorCode.SESSION_BUSY, "another operation of this session is still running; wait for its answer, then retry", { session: { id, state: "open" } });
    return /** @type {ConnectorSession} */ (found.connection);
  }

  /**
   * Send one operation of a checked (busy) session on its connection.
   * @param {OpCall} call @param {ConnectorSession} connection @returns {Promise<Response>}
   */
  async send(call, connection) {
    const { id, op } = call;
    const request = op === "run" ? /** @type {Record<string, any>} */ (call.request) : bare(call.timeoutMs);
    try {
      return await this.queries.handle({
        ...call,
        request,
        session: { id, op, ...(call.name !== undefined ? { name: call.name } : {}) },
        pinned: connection,
        onSent: (conn, streamId) => this.table.sent(id, `${conn.sessionId}:${streamId}`),
      });
    } catch (err) {
      if (this.table.busy.get(id) === "") this.table.release(id); // never sent
      if (err instanceof HttpError && err.code === ErrorCode.SESSION_ENDED) {
        // its connection began draining while the operation was prepared
        this.table.end(connection, id, "connector.draining", Date.now());
        err.session = { id, state: "ended", reason: "connector.draining" };
      }
      if (err instanceof HttpError) err.session ??= { id, state: "open" };
      throw err;
    }
  }

  /**
   * `POST .../transaction`: begin, the statements in order, commit; the first failure rolls back.
   * @param {TransactionCall} call @returns {Promise<Response>}
   */
  async transaction(call) {
    const started = Date.now();
    const begun = await this.open(call);
    if (!begun.ok) return begun.response;
    const { id, queryId } = begun;
    /** @type {PromiseWithResolvers<Response>} */
    const { promise, resolve } = Promise.withResolvers();
    /** @type {WritableStreamDefaultWriter<Uint8Array> | null} */
    let writer = null;
    const write = async (/** @type {Uint8Array} */ bytes) => {
      if (writer === null) {
        /** @type {TransformStream<Uint8Array, Uint8Array>} */
        const { readable, writable } = new TransformStream();
        writer = writable.getWriter();
        resolve(new Response(readable, { status: 200, headers: { ...NDJSON_HEADERS, "x-edgetds-query-id": queryId } }));
      }
      await writer.write(bytes);
    };
    const finish = async (/** @type {Uint8Array} */ line, /** @type {number} */ status) => {
      if (writer === null) {
        resolve(recordResponse(status, line));
        return;
      }
      await writer.write(line).catch(() => {});
      await writer.close().catch(() => {});
    };
    const run = async () => {
      let rows = 0;
      for (const [index, request] of call.statements.entries()) {
        // the statement's own timeout, with the relay's grace (as /query)
        const deadlineMs = request.timeout_ms + (call.deadlineMs - call.timeoutMs);
        const failed = await this.statement({ ...call, id, op: "run", request, deadlineMs }, index, write);
        if (typeof failed === "number") {
          rows += failed;
          continue;
        }
        await finish(await this.rolledBack(call, id, failed, index), httpStatus(failed.code));
        return;
      }
      const { status, record } = await this.commitOf(call, id);
      if (record.error) {
        await finish(await this.rolledBack(call, id, record.error, null), status);
        return;
      }
      const done = { statements: call.statements.length, rows, elapsed_ms: Date.now() - started, query_id: queryId, session: record.done.session ?? { id, state: "ended", reason: "committed" } };
      await finish(encoder.encode(`${JSON.stringify({ done })}\n`), 200);
    };
    run().catch(async (err) => {
      console.error(`transaction failed: ${err?.stack ?? err}`);
      const error = { code: ErrorCode.INTERNAL, message: `internal relay error; the transaction was not committed (the cause is in the relay's log under query_id ${queryId})`, query_id: queryId };
      await finish(await this.rolledBack(call, id, error, null).catch(() => errorRecord(error.code, error.message, { queryId })), 500);
    });
    return promise;
  }

  /**
   * Run statement `index` of a transaction: its columns and rows are written on, its DONE becomes
   * a statement record. Resolves to its row count, or to the error record's inner object.
   * @param {OpCall} call @param {number} index @param {(bytes: Uint8Array) => Promise<void>} write
   * @returns {Promise<number | Record<string, any>>}
   */
  async statement(call, index, write) {
    let response;
    try {
      response = await this.send(call, await this.check(call));
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      return { code: err.code, message: err.detail, ...(err.session ? { session: err.session } : {}) };
    }
    if (response.status !== 200 || response.body === null) return (await terminalOf(response)).record.error;
    /** @type {Record<string, any> | null} */
    let terminal = null;
    for await (const line of lines(response.body)) {
      const record = line[0] === 0x7b ? parse(line) : null; // "{": columns, done or error
      if (record?.done || record?.error) terminal = record;
      else await write(line);
    }
    if (terminal?.done) {
      const { rows, result_sets: resultSets, elapsed_ms: elapsedMs } = terminal.done;
      await write(encoder.encode(`${JSON.stringify({ statement: { index, rows, result_sets: resultSets, elapsed_ms: elapsedMs } })}\n`));
      return typeof rows === "number" ? rows : 0;
    }
    return terminal?.error ?? { code: ErrorCode.TRANSPORT_LOST, message: "the statement's answer ended without a terminal record; nothing was committed" };
  }

  /** Commit the transaction's session. @param {Caller} call @param {string} id */
  async commitOf(call, id) {
    try {
      return await terminalOf(await this.send({ ...call, id, op: "commit" }, await this.check({ ...call, id })));
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      return { status: err.status, record: { error: { code: err.code, message: err.detail, ...(err.session ? { session: err.session } : {}) } } };
    }
  }

  /**
   * A transaction failed: roll its session back unless it already ended, and make the terminal
   * error record (`statement`: the failing statement's index, null for the commit).
   * @param {Caller} call @param {string} id @param {Record<string, any>} error @param {number | null} index
   * @returns {Promise<Uint8Array>}
   */
  async rolledBack(call, id, error, index) {
    let session = error.session;
    if (session?.state !== "ended") {
      try {
        const { record } = await terminalOf(await this.send({ ...call, id, op: "rollback" }, await this.check({ ...call, id })));
        session = (record.done ?? record.error)?.session ?? session;
      } catch (err) {
        if (!(err instanceof HttpError)) throw err;
        session = err.session ?? session;
      }
    }
    const record = { ...error, statement: index, session: session ?? { id, state: "ended" } };
    return encoder.encode(`${JSON.stringify({ error: record })}\n`);
  }
}
