// @ts-check
/**
 * The app developer's client for an edgetds tunnel, for Workers (service binding) and anything
 * with `fetch` (HTTPS).
 *
 *   import { Tunnel } from "edgetds-relay/client";               // relay/worker/src/client.js
 *   const tunnel = new Tunnel({ tunnel: "demo", fetcher: env.RELAY });          // service binding
 *   const tunnel = new Tunnel({ tunnel: "demo", url: "https://relay.example.com" });   // HTTPS
 *
 *   const rows = await tunnel.query("SELECT id, total FROM orders WHERE owner = @me", { me: 42 },
 *                                   { token });                 // the signed-in user's IdP token
 *   rows[0].total; rows.columns; rows.done.rows;
 *
 *   for await (const event of tunnel.stream(sql, params, { token })) {
 *     if (event.type === "row") handle(event.values);         // also "columns" and "done"
 *   }
 *
 * The user's token travels to the on-prem connector, which verifies it itself and picks the SQL
 * role: pass the end user's token, never a shared service credential. A response that ends
 * without its terminal record is a failure (TunnelError "transport.lost"), never a short result.
 */

const TERMINAL_MISSING = "the response ended without a terminal record (truncated); the result is incomplete";

/**
 * @typedef {{name: string, type: string, nullable: boolean, precision: number|null,
 *            scale: number|null, length: number|null}} Column
 * @typedef {{rows: number, result_sets: number, elapsed_ms: number, query_id: string|null}} Done
 * @typedef {{code: string, message: string, query_id?: string|null,
 *            sql?: {number: number, state: number, class: number}}} ErrorBody
 * @typedef {{type: "columns", columns: Column[], resultSet: number}
 *         | {type: "row", values: any[], resultSet: number}
 *         | {type: "done", done: Done}} StreamEvent
 * @typedef {{token?: string, maxRows?: number, timeoutMs?: number, queryId?: string,
 *            signal?: AbortSignal, arrays?: boolean}} QueryOptions
 * @typedef {{fetch: (request: Request) => Promise<Response>}} Fetcher
 */

/** A failed query: `code` is an edgetds error code (SPEC.md), `status` the HTTP status or 200. */
export class TunnelError extends Error {
  /** @param {ErrorBody} body @param {number} status */
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
  }
}

export class Tunnel {
  /**
   * @param {{tunnel: string, url?: string, fetcher?: Fetcher,
   *          token?: string | (() => string | Promise<string>)}} [options]
   *   `fetcher`: a service binding to the relay Worker (preferred inside Cloudflare);
   *   `url`: the relay's base URL otherwise; `token`: a default token (or a function returning one).
   */
  constructor({ tunnel, url, fetcher, token } = /** @type {any} */ ({})) {
    if (!tunnel) throw new TypeError("Tunnel: `tunnel` (the tunnel name) is required");
    if (!fetcher && !url) throw new TypeError("Tunnel: pass `fetcher` (a service binding) or `url`");
    this.tunnel = tunnel;
    this.base = (url ?? "https://relay.internal").replace(/\/+$/, "");
    this.fetcher = fetcher ?? { fetch: (request) => fetch(request) };
    this.defaultToken = token;
  }

  /**
   * Run `sql` and collect every row.
   * @param {string} sql T-SQL with @name parameters
   * @param {Record<string, any>} [params] bare JSON values or {type, value} objects (SPEC.md)
   * @param {QueryOptions} [options] `arrays: true` returns value arrays instead of objects
   * @returns {Promise<any[] & {columns: Column[], done: Done, resultSets: {columns: Column[], rows: any[]}[]}>}
   *   the rows of the first result set (objects keyed by column name), plus every result set
   * @throws {TunnelError}
   */
  async query(sql, params = {}, options = {}) {
    return collect(this.stream(sql, params, options), options.arrays === true);
  }

  /**
   * Run a named query (defined in the connector's policy) and collect every row.
   * @param {string} name @param {Record<string, any>} [params] @param {QueryOptions} [options]
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
   * The raw HTTP response of a query (NDJSON body; read SPEC.md's rules before using it).
   * @param {Record<string, any>} body {sql | query, params, ...}
   * @param {QueryOptions} [options]
   * @returns {Promise<Response>}
   */
  async raw(body, { token, maxRows, timeoutMs, queryId, signal } = {}) {
    const bearer = token ?? (typeof this.defaultToken === "function" ? await this.defaultToken() : this.defaultToken);
    if (!bearer) throw new TypeError("Tunnel: pass { token } (the end user's IdP token)");
    const payload = { ...body };
    if (maxRows !== undefined) payload.max_rows = maxRows;
    if (timeoutMs !== undefined) payload.timeout_ms = timeoutMs;
    if (queryId !== undefined) payload.query_id = queryId;
    const request = new Request(`${this.base}/v1/tunnels/${encodeURIComponent(this.tunnel)}/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json", accept: "application/x-ndjson" },
      body: JSON.stringify(payload),
      signal,
    });
    return this.fetcher.fetch(request);
  }

  /** @returns {AsyncGenerator<StreamEvent>} */
  async *events(body, options) {
    const response = await this.raw(body, options);
    if (response.status !== 200) {
      let error;
      try {
        error = (await response.json()).error;
      } catch {
        error = null;
      }
      throw new TunnelError(error?.code ? error : { code: "internal", message: `relay answered HTTP ${response.status}` }, response.status);
    }
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
  const first = resultSets[0] ?? { columns: [], rows: [] };
  const rows = first.rows;
  Object.defineProperties(rows, {
    columns: { value: first.columns },
    done: { value: done },
    resultSets: { value: resultSets },
  });
  return rows;
}

function toObject(columns, values) {
  const row = {};
  columns.forEach((column, i) => {
    row[column.name || `column${i}`] = values[i];
  });
  return row;
}
