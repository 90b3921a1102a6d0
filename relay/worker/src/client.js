// @ts-check
/**
 * The app developer's client for an edgetds tunnel, for Workers (service binding) and anything
 * with `fetch` (HTTPS).
 *
 *   import { TunnelClient } from "edgetds-relay/client";         // relay/worker/src/client.js
 *   const tunnel = new TunnelClient({ tunnel: "demo", fetcher: env.RELAY });    // service binding
 *   const tunnel = new TunnelClient({ tunnel: "demo", url: "https://relay.example.com" }); // HTTPS
 *
 *   const rows = await tunnel.query("SELECT id, total FROM orders WHERE owner = @me", { me: 42 },
 *                                   { token });                 // the signed-in user's IdP token
 *   rows[0].total; rows.columns; rows.done.rows;
 *
 *   for await (const event of tunnel.stream(sql, params, { token })) {
 *     if (event.type === "row") handle(event.values);         // also "columns" and "done"
 *   }
 *
 * Transactions (SPEC.md 7.4, 11.5, 11.6):
 *
 *   const s = await tunnel.session({ token, isolation: "serializable", timeoutMs: 30_000 });
 *   await s.query("UPDATE stock SET qty = qty - 1 WHERE id = @id", { id: 1 });
 *   await s.savepoint("sp1"); await s.rollbackTo("sp1");
 *   await s.commit();                                          // or s.rollback()
 *   const total = await tunnel.transaction(async (tx) => { ... }, { token }); // commits, or rolls back on throw
 *   const [a, b] = await tunnel.batch([{ sql, params }, { query: "name", params }], { token }); // one round trip
 *
 * The user's token travels to the on-prem connector, which verifies it itself and picks the SQL
 * role: pass the end user's token, never a shared service credential. A response that ends
 * without its terminal record is a failure (TunnelError "transport.lost"), never a short result.
 */

const TERMINAL_MISSING = "the response ended without a terminal record (truncated); the result is incomplete";

/**
 * @typedef {{name: string, type: string, nullable: boolean, precision: number|null,
 *            scale: number|null, length: number|null}} Column
 * @typedef {{rows: number, result_sets: number, elapsed_ms: number, query_id: string|null,
 *            session?: SessionInfo}} Done   `session`: in a session, its state after the query
 * @typedef {{code: string, message: string, query_id?: string|null,
 *            sql?: {number: number, state: number, class: number}}} ErrorBody
 * @typedef {{type: "columns", columns: Column[], resultSet: number}
 *         | {type: "row", values: any[], resultSet: number}
 *         | {type: "done", done: Done}} StreamEvent
 * @typedef {{token?: string, maxRows?: number, timeoutMs?: number, queryId?: string,
 *            signal?: AbortSignal, arrays?: boolean}} QueryOptions
 * @typedef {{fetch: (request: Request) => Promise<Response>}} Fetcher
 * @typedef {{id: string, state: "open" | "ended", reason?: string}} SessionInfo
 * @typedef {"read uncommitted" | "read committed" | "repeatable read" | "snapshot" | "serializable"} Isolation
 * @typedef {{token?: string, isolation?: Isolation, timeoutMs?: number, role?: string,
 *            signal?: AbortSignal}} SessionOptions
 *   `timeoutMs`: the session's idle timeout (the connector uses the smaller of it and its own)
 * @typedef {{sql: string, params?: Record<string, any>} | {query: string, params?: Record<string, any>}} Statement
 * @typedef {any[] & {columns: Column[], done: Done, resultSets: {columns: Column[], rows: any[]}[]}} Rows
 */

/**
 * A failed query: `code` is an edgetds error code (SPEC.md), `status` the HTTP status or 200;
 * `session` is the session's state when the relay said it (`{id, state, reason}`), `statement`
 * the index of the failing statement of a `batch()`, `limit` whose limit a 429 hit.
 */
export class TunnelError extends Error {
  /** @param {ErrorBody & {session?: SessionInfo, statement?: number|null, limit?: string}} body @param {number} status */
  constructor(body, status) {
    super(`${body.code}: ${body.message}`);
    this.name = "TunnelError";
    /** @type {string} */
    this.code = body.code;
    /** @type {number} */
    this.status = status;
    /** @type {string|null} */
    this.queryId = body.query_id ?? null;
    /** SQL Server's error number/state/class for code "sql.error". */
    this.sql = body.sql ?? null;
    /** @type {SessionInfo|null} */
    this.session = body.session ?? null;
    /** @type {number|null} */
    this.statement = body.statement ?? null;
    /** @type {string|null} */
    this.limit = body.limit ?? null;
  }
}

/**
 * The query methods of `TunnelClient` and `Session` (in a session they run in its transaction, and
 * a statement error leaves the session open unless SQL Server ended the transaction:
 * `session.state` says which). Each subclass sends the request and reads its answer in `events`.
 */
class Queries {
  /**
   * Run `sql` and collect every row.
   * @param {string} sql T-SQL with @name parameters
   * @param {Record<string, any>} [params] bare JSON values or {type, value} objects (SPEC.md)
   * @param {QueryOptions} [options] `arrays: true` returns value arrays instead of objects
   * @returns {Promise<Rows>} the rows of the first result set (objects keyed by column name), plus every result set
   * @throws {TunnelError}
   */
  async query(sql, params = {}, options = {}) {
    return collect(this.stream(sql, params, options), options.arrays === true);
  }

  /**
   * Run a named query (defined in the connector's policy) and collect every row.
   * @param {string} name @param {Record<string, any>} [params] @param {QueryOptions} [options]
   * @returns {Promise<Rows>}
   */
  async named(name, params = {}, options = {}) {
    return collect(this.events({ query: name, params }, options), options.arrays === true);
  }

  /**
   * Run `sql` and yield its records as they arrive (constant memory for any result size).
   * @param {string} sql @param {Record<string, any>} [params] @param {QueryOptions} [options]
   * @returns {AsyncGenerator<StreamEvent>}
   * @throws {TunnelError} a refusal, an error record, or a truncated response
   */
  stream(sql, params = {}, options = {}) {
    return this.events({ sql, params }, options);
  }

  /**
   * The records of one query request, as they arrive.
   * @param {Record<string, any>} body {sql | query, params} @param {QueryOptions} [options]
   * @returns {AsyncGenerator<StreamEvent>}
   */
  async *events(body, options) {
    throw new TypeError("Queries.events: a subclass reads the answer");
  }
}

export class TunnelClient extends Queries {
  /**
   * @param {{tunnel: string, url?: string, fetcher?: Fetcher,
   *          token?: string | (() => string | Promise<string>)}} [options]
   *   `fetcher`: a service binding to the relay Worker (preferred inside Cloudflare);
   *   `url`: the relay's base URL otherwise; `token`: a default token (or a function returning one).
   */
  constructor({ tunnel, url, fetcher, token } = /** @type {any} */ ({})) {
    super();
    if (!tunnel) throw new TypeError("TunnelClient: `tunnel` (the tunnel name) is required");
    if (!fetcher && !url) throw new TypeError("TunnelClient: pass `fetcher` (a service binding) or `url`");
    this.tunnel = tunnel;
    this.base = (url ?? "https://relay.internal").replace(/\/+$/, "");
    this.fetcher = fetcher ?? { fetch: (request) => fetch(request) };
    this.defaultToken = token;
  }

  /**
   * The raw HTTP response of a query (NDJSON body; read SPEC.md's rules before using it).
   * @param {Record<string, any>} body {sql | query, params, ...}
   * @param {QueryOptions} [options]
   * @returns {Promise<Response>}
   */
  async raw(body, options = {}) {
    return this.post("query", queryBody(body, options), options, "application/x-ndjson");
  }

  /**
   * POST `body` as JSON to `/v1/tunnels/{tunnel}/{path}` with the end user's bearer token.
   * @param {string} path @param {Record<string, any>} body
   * @param {{token?: string, signal?: AbortSignal}} options @param {string} accept
   * @returns {Promise<Response>}
   */
  async post(path, body, { token, signal } = {}, accept = "application/json") {
    const bearer = token ?? (typeof this.defaultToken === "function" ? await this.defaultToken() : this.defaultToken);
    if (!bearer) throw new TypeError("TunnelClient: pass { token } (the end user's IdP token)");
    const request = new Request(`${this.base}/v1/tunnels/${encodeURIComponent(this.tunnel)}/${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json", accept },
      body: JSON.stringify(body),
      signal,
    });
    return this.fetcher.fetch(request);
  }

  /** @returns {AsyncGenerator<StreamEvent>} */
  async *events(body, options) {
    yield* queryEvents(await this.raw(body, options));
  }

  /**
   * Open an interactive session: one transaction across requests, on one database connection
   * (POST /v1/tunnels/{tunnel}/sessions). End it with `commit()` or `rollback()`; one the client
   * forgets ends (rolled back) after its idle timeout.
   * @param {SessionOptions} [options]
   * @returns {Promise<Session>}
   * @throws {TunnelError} e.g. `limits.too_many_sessions`, `policy.denied`, `tunnel.no_connector`
   */
  async session(options = {}) {
    const { token, isolation, timeoutMs, role } = options;
    const body = /** @type {Record<string, any>} */ ({});
    if (isolation !== undefined) body.isolation = isolation;
    if (timeoutMs !== undefined) body.timeout_ms = timeoutMs;
    if (role !== undefined) body.role = role;
    const answer = await jsonAnswer(await this.post("sessions", body, options), 201);
    return new Session(this, answer, token);
  }

  /**
   * Run `callback` in a session: commit when it returns, roll back when it throws (and rethrow).
   * @template T
   * @param {(tx: Session) => Promise<T>} callback
   * @param {SessionOptions} [options]
   * @returns {Promise<T>} what `callback` returned, once committed
   * @throws {TunnelError} a refused begin or a failed commit (nothing was committed, except after
   *   `transport.lost` during the commit: outcome unknown), or what `callback` threw
   */
  async transaction(callback, options = {}) {
    const session = await this.session(options);
    let result;
    try {
      result = await callback(session);
    } catch (err) {
      // The callback's error is the one that matters; a rollback that fails (the relay or the
      // connector gone) still ends in a rollback at the connector (idle timeout, lost connection).
      await session.rollback().catch(() => {});
      throw err;
    }
    if (session.state === "open") await session.commit();
    else if (session.endReason !== "committed" && session.endReason !== "rolled_back") throw session.endedError();
    return result;
  }

  /**
   * Run `statements` as one transaction in a single round trip (POST /v1/tunnels/{tunnel}/transaction):
   * all commit, or the first failure rolls every one back.
   * @param {Statement[]} statements 1..100 `{sql, params}` or `{query, params}` (a named query)
   * @param {SessionOptions & {arrays?: boolean}} [options]
   * @returns {Promise<Rows[] & {done: Record<string, any>}>} per statement what `query()` returns
   *   (`.done` is the statement's record), plus `.done`, the terminal record
   * @throws {TunnelError} with `.statement` the index of the failing statement (nothing committed)
   */
  async batch(statements, options = {}) {
    const { isolation, timeoutMs, role } = options;
    const body = /** @type {Record<string, any>} */ ({
      statements: statements.map((st) => ("query" in st ? { query: st.query, params: st.params ?? {} } : { sql: st.sql, params: st.params ?? {} })),
    });
    if (isolation !== undefined) body.isolation = isolation;
    if (timeoutMs !== undefined) body.timeout_ms = timeoutMs;
    if (role !== undefined) body.role = role;
    const response = await this.post("transaction", body, options, "application/x-ndjson");
    if (response.status !== 200) throw await refusal(response);
    const arrays = options.arrays === true;
    /** @type {any[]} */
    const results = [];
    /** @type {{columns: Column[], rows: any[]}[]} */
    let resultSets = [];
    let terminal = null;
    for await (const record of ndjsonRecords(/** @type {ReadableStream<Uint8Array>} */ (response.body))) {
      if (terminal) throw new TunnelError({ code: "protocol.error", message: "data after the terminal record" }, 200);
      if (Array.isArray(record)) {
        const current = resultSets[resultSets.length - 1];
        if (!current) throw new TunnelError({ code: "protocol.error", message: "a row before its columns record" }, 200);
        current.rows.push(arrays ? record : toObject(current.columns, record));
      } else if (record.columns) {
        resultSets.push({ columns: record.columns, rows: [] });
      } else if (record.statement) {
        results.push(rowsOf(resultSets, record.statement));
        resultSets = [];
      } else if (record.done) {
        terminal = record.done;
      } else if (record.error) {
        throw new TunnelError(record.error, 200);
      } else {
        throw new TunnelError({ code: "protocol.error", message: "unknown record in the response" }, 200);
      }
    }
    if (!terminal) throw new TunnelError({ code: "transport.lost", message: TERMINAL_MISSING }, 200);
    Object.defineProperty(results, "done", { value: terminal });
    return /** @type {any} */ (results);
  }
}

/**
 * An interactive session (one transaction), made by `TunnelClient.session()`. One operation at a
 * time: a second one while the first runs is refused (`session.busy`).
 */
export class Session extends Queries {
  /**
   * @param {TunnelClient} client
   * @param {{session: string, expires_at: string, idle_timeout_ms?: number}} answer the relay's 201 body
   * @param {string} [token] the token the session was opened with (the client's default otherwise)
   */
  constructor(client, answer, token) {
    super();
    this.client = client;
    /** @type {string} */
    this.id = answer.session;
    /** @type {Date} the end of the session's lifetime */
    this.expiresAt = new Date(answer.expires_at);
    /** @type {number|null} */
    this.idleTimeoutMs = answer.idle_timeout_ms ?? null;
    /** @type {"open" | "ended"} */
    this.state = "open";
    /** @type {string|null} why it ended: "committed", "rolled_back", "idle_timeout", ... */
    this.endReason = null;
    this.token = token;
    /** @type {Promise<void>} an abandoned operation still being read (see `events`) */
    this.pending = Promise.resolve();
  }

  /**
   * A consumer that leaves early does not cancel the statement (outside a session it would): the
   * rest of the answer is read and discarded before the session's next operation starts, since a
   * session runs one operation at a time and a relay may end a session whose client went away.
   * @returns {AsyncGenerator<StreamEvent>}
   */
  async *events(body, options = {}) {
    await this.pending;
    this.ensureOpen();
    /** @type {AsyncGenerator<StreamEvent> | null} */
    let events = null;
    let finished = false;
    try {
      const response = await this.send("query", queryBody(body, options), options, "application/x-ndjson");
      events = queryEvents(response);
      for (;;) {
        const { value, done } = await events.next();
        if (done) break;
        if (value.type === "done" && value.done.session) this.observe(value.done.session);
        yield value;
      }
      finished = true;
    } catch (err) {
      finished = true;
      if (err instanceof TunnelError && err.session) this.observe(err.session);
      throw err;
    } finally {
      if (events && !finished) this.pending = this.drain(events);
    }
  }

  /** Read an abandoned operation's answer to its end, keeping only the session state it reports. @param {AsyncGenerator<StreamEvent>} events */
  async drain(events) {
    try {
      for await (const event of events) {
        if (event.type === "done" && event.done.session) this.observe(event.done.session);
      }
    } catch (err) {
      if (err instanceof TunnelError && err.session) this.observe(err.session);
    }
  }

  /** `SAVE TRANSACTION name`. @param {string} name 1..32 of [A-Za-z_][A-Za-z0-9_]* @param {{token?: string, signal?: AbortSignal}} [options] */
  async savepoint(name, options = {}) {
    await this.operation("savepoint", { name }, options);
  }

  /** `ROLLBACK TRANSACTION name`: undo what ran since `savepoint(name)`; the session stays open. @param {string} name @param {{token?: string, signal?: AbortSignal}} [options] */
  async rollbackTo(name, options = {}) {
    await this.operation("rollback_to", { name }, options);
  }

  /**
   * Commit and end the session.
   * @param {{token?: string, signal?: AbortSignal}} [options]
   * @throws {TunnelError} `session.ended` (already ended: nothing more committed), a failed commit
   *   (rolled back), or `transport.lost` (outcome unknown: the connector's audit trail has it)
   */
  async commit(options = {}) {
    await this.operation("commit", {}, options);
  }

  /**
   * Roll back and end the session. After the session ended (for whatever reason) it resolves:
   * there is nothing left to roll back.
   * @param {{token?: string, signal?: AbortSignal}} [options]
   */
  async rollback(options = {}) {
    await this.pending;
    if (this.state === "ended") return;
    try {
      await this.operation("rollback", {}, options);
    } catch (err) {
      if (!(err instanceof TunnelError && err.code === "session.ended")) throw err;
    }
  }

  /** @param {string} op @param {Record<string, any>} body @param {{token?: string, signal?: AbortSignal}} options */
  async operation(op, body, options) {
    await this.pending;
    this.ensureOpen();
    try {
      const answer = await jsonAnswer(await this.send(op, body, options, "application/json"), 200);
      this.observe({ id: answer.session, state: answer.state, reason: answer.reason });
    } catch (err) {
      if (err instanceof TunnelError && err.session) this.observe(err.session);
      throw err;
    }
  }

  /**
   * POST one operation.
   * @param {string} op @param {Record<string, any>} body
   * @param {{token?: string, signal?: AbortSignal}} options @param {string} accept
   * @returns {Promise<Response>}
   */
  async send(op, body, options, accept) {
    return this.client.post(this.path(op), body, this.options(options), accept);
  }

  /** @param {string} op */
  path(op) {
    return `sessions/${encodeURIComponent(this.id)}/${op}`;
  }

  /** @param {{token?: string, signal?: AbortSignal}} options */
  options(options) {
    return { token: options.token ?? this.token, signal: options.signal };
  }

  /** @param {SessionInfo} info */
  observe(info) {
    if (info.state === "ended") {
      this.state = "ended";
      this.endReason = info.reason ?? this.endReason;
    }
  }

  /** An ended session fails fast, as the relay would answer (410 session.ended). */
  ensureOpen() {
    if (this.state === "ended") throw this.endedError();
  }

  endedError() {
    const reason = this.endReason ?? "ended";
    return new TunnelError(
      {
        code: "session.ended",
        message: `the session has ended (${reason}); open a new session to run more statements`,
        session: { id: this.id, state: "ended", reason },
      },
      410,
    );
  }
}

/** The JSON body of /query (and of a session's query) from `body` and the query options. */
function queryBody(body, { maxRows, timeoutMs, queryId } = /** @type {QueryOptions} */ ({})) {
  const payload = { ...body };
  if (maxRows !== undefined) payload.max_rows = maxRows;
  if (timeoutMs !== undefined) payload.timeout_ms = timeoutMs;
  if (queryId !== undefined) payload.query_id = queryId;
  return payload;
}

/** The TunnelError of a response that is not the expected success (SPEC.md 10 body). @param {Response} response */
async function refusal(response) {
  let error;
  try {
    error = (await response.json()).error;
  } catch {
    error = null;
  }
  return new TunnelError(error?.code ? error : { code: "internal", message: `relay answered HTTP ${response.status}` }, response.status);
}

/** The JSON body of a `status` answer, or its TunnelError. @param {Response} response @param {number} status */
async function jsonAnswer(response, status) {
  if (response.status !== status) throw await refusal(response);
  return response.json();
}

/**
 * The events of a /query-shaped NDJSON answer.
 * @param {Response} response
 * @returns {AsyncGenerator<StreamEvent>}
 */
async function* queryEvents(response) {
  if (response.status !== 200) throw await refusal(response);
  let resultSet = -1;
  let terminal = false;
  for await (const record of ndjsonRecords(/** @type {ReadableStream<Uint8Array>} */ (response.body))) {
    if (terminal) throw new TunnelError({ code: "protocol.error", message: "data after the terminal record" }, 200);
    if (Array.isArray(record)) {
      yield { type: "row", values: record, resultSet };
    } else if (record.columns) {
      resultSet += 1;
      yield { type: "columns", columns: record.columns, resultSet };
    } else if (record.done) {
      terminal = true;
      yield { type: "done", done: record.done };
    } else if (record.error) {
      throw new TunnelError(record.error, 200);
    } else {
      throw new TunnelError({ code: "protocol.error", message: "unknown record in the response" }, 200);
    }
  }
  if (!terminal) throw new TunnelError({ code: "transport.lost", message: TERMINAL_MISSING }, 200);
}

/**
 * Split an NDJSON body into parsed records, by newline (never by chunk: chunks split lines).
 * @param {ReadableStream<Uint8Array>} body
 * @returns {AsyncGenerator<any>}
 */
export async function* ndjsonRecords(body) {
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
  const reader = body.getReader();
  let buffered = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffered += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line) yield JSON.parse(line);
      }
      if (done) break;
    }
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => {}); // a consumer that stops early cancels the query
  }
  if (buffered) throw new TunnelError({ code: "transport.lost", message: TERMINAL_MISSING }, 200);
}

/** @param {AsyncIterable<any>} events @param {boolean} arrays @returns {Promise<any>} */
async function collect(events, arrays) {
  /** @type {Array<{columns: any[], rows: any[]}>} */
  const resultSets = [];
  let done = null;
  for await (const event of events) {
    if (event.type === "columns") {
      resultSets.push({ columns: event.columns, rows: [] });
    } else if (event.type === "row") {
      const current = resultSets[resultSets.length - 1];
      current.rows.push(arrays ? event.values : toObject(current.columns, event.values));
    } else {
      done = event.done;
    }
  }
  return rowsOf(resultSets, done);
}

/** The first result set's rows with `.columns`, `.done` and every `.resultSets`. @returns {Rows} */
function rowsOf(resultSets, done) {
  const first = resultSets[0] ?? { columns: [], rows: [] };
  const rows = first.rows;
  Object.defineProperties(rows, {
    columns: { value: first.columns },
    done: { value: done },
    resultSets: { value: resultSets },
  });
  return /** @type {Rows} */ (rows);
}

function toObject(columns, values) {
  const row = {};
  columns.forEach((column, i) => {
    row[column.name || `column${i}`] = values[i];
  });
  return row;
}
