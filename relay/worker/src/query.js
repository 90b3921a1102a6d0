// @ts-check
/**
 * Query handling inside the Durable Object (relay/query.py): admit, place on a connection, relay
 * the answer as NDJSON, cancel, time out.
 *
 * 1. `handle()` admits the query (registry.js; 503 / 429 before anything is sent) and places it:
 *    pick a connection, attest, then `ConnectorSession.openStream()` with no await in between.
 * 2. The connection's events for the stream arrive in `deliver()`. Until the first byte is
 *    streamed the HTTP status can still say what happened (an ERROR becomes its typed status); a
 *    connector that refused the query unexecuted (ERROR connector.draining: the connection now
 *    counts as draining, connection.js) has it placed again on another connection.
 * 3. COLUMNS/ROWS bytes are credited back (`consumed`) once the client's body took them, or were
 *    dropped (client gone, stream cancelled): the connection's credit policy does the rest.
 *    A stream's first bytes are held until the end of the connector message that brought them
 *    (`releaseHeld()`): a result that ends in that same message (the common small one: the
 *    connector sends COLUMNS + ROWS + DONE as one message) is answered as one complete body,
 *    credited at once, with no body stream (relay/query.py does the same).
 * 4. A client that goes away, or a deadline, CANCELs the stream; its later frames are discarded
 *    and credited. A lost connection ends every stream with the typed transport.lost record.
 *
 * An open stream is an HTTP request in flight, and the runtime never hibernates an object with a
 * request in flight, so these maps live in memory; an eviction (deploy, ctx.abort()) kills both
 * the sockets and the requests, and every client sees a typed error or a missing terminal record.
 */

import { makeAttestation, queryPayload } from "./auth.js";
import { loadConfig } from "./config.js";
import { concatBytes, ErrorCode, FrameType, httpStatus, LocalProtocolError } from "./frames.js";
import { errorRecord, errorResponse, HttpError } from "./http.js";

const NDJSON_HEADERS = { "content-type": "application/x-ndjson", "cache-control": "no-store" };

/** The 200 response of a complete answer. @param {Uint8Array} body @param {string} queryId */
export function wholeResponse(body, queryId) {
  return new Response(body, { status: 200, headers: { ...NDJSON_HEADERS, "x-edgetds-query-id": queryId } });
}

/**
 * What the Worker sends for one query (verified facts only).
 * @typedef {{token: string, tokenSha256?: string, request: Record<string, any>, deadlineMs: number,
 *   identity: {issuer: string, subject: string}, maxQueriesPerIdentity: number}} QueryCall
 * @typedef {import("./session.js").ConnectorSession} ConnectorSession
 * @typedef {import("./registry.js").AdmissionSlot} AdmissionSlot
 * A session operation (sessionops.js) adds: the QUERY member `session`; `pinned`, the connection
 * the session lives on (never another one; no admission, no re-dispatch); `accept`, which
 * connections a begin may go to; `onSent`, told the connection and stream the QUERY went out on.
 * @typedef {{session?: Record<string, any>, pinned?: ConnectorSession,
 *   accept?: (session: ConnectorSession) => boolean,
 *   onSent?: (session: ConnectorSession, streamId: number) => void}} SessionParts
 * @typedef {QueryCall & SessionParts} Call
 * @typedef {{status: 200, queryId: string, body: Uint8Array}} WholeAnswer a complete 200 answer as plain
 *   data: what the Tunnel's query() method returns for a result that ended in the connector message
 *   that started it (the Worker makes the Response: no body stream crosses the RPC boundary)
 * @typedef {{token: string, tokenSha256?: string, req: Record<string, any>, options: Record<string, any>, deadlineMs: number,
 *   respond: (response: Response | WholeAnswer) => void, slot: AdmissionSlot, whole?: boolean} & SessionParts} Job
 *   `whole`: answer a complete result as a WholeAnswer instead of a Response
 * @typedef {{key: string, session: ConnectorSession, streamId: number, queryId: string, started: boolean,
 *   finished: boolean, cancelled: boolean, redispatching: boolean,
 *   writer: WritableStreamDefaultWriter<Uint8Array> | null, job: Job,
 *   deadlineAt: number, sentAt: number,
 *   held?: {data: Uint8Array, flowed: number}[]}} HttpStream
 */

/** The slot of a session operation after begin: it never waits in the admission queue. */
function unqueuedSlot() {
  return { key: "", granted: true, reserved: false, released: true, gone: false, waitedMs: 0, resolve: () => {}, timer: null };
}

/** 413 request.too_large when the statement is longer than the connector accepts. @param {Record<string, any>} req @param {number} limit */
function checkSize(req, limit) {
  if (req.sql_bytes > limit) {
    throw new HttpError(ErrorCode.REQUEST_TOO_LARGE, `'sql' is ${req.sql_bytes} bytes (UTF-8); the connector accepts statements up to ${limit}: send a shorter statement, pass values as parameters, or use a named query`);
  }
}

/**
 * Why an operation cannot go to its session's connection now (nothing was sent).
 * @param {ConnectorSession} session @param {string} queryId
 */
function pinnedRefusal(session, queryId) {
  if (!session.open) return new HttpError(ErrorCode.TRANSPORT_LOST, "the connection between relay and connector that holds this session was lost; the session was rolled back: begin a new one", { queryId });
  if (session.draining) return new HttpError(ErrorCode.SESSION_ENDED, "the session has ended (connector.draining): its connector is shutting down and rolls it back; begin a new one", { queryId });
  return new HttpError(ErrorCode.LIMITS_TOO_MANY_QUERIES, "the connection that holds this session is at its max streams; retry after the Retry-After delay", { queryId, retryAfter: "1", limit: "connector" });
}

/** The queries of one Durable Object (see the module comment). */
export class Queries {
  /**
   * @param {import("./registry.js").Tunnel} tunnel
   * @param {Record<string, any>} env
   * @param {{sent: (session: ConnectorSession, sentAt: number, intervalMs: number, deadlineAt: number) => void, idle: () => void,
   *   deadline: (stream: HttpStream) => void}} hooks keepalive, probes and the one timer (tunnel.js): it
   *   calls expire() at nextDeadline() at the latest while a stream is open
   */
  constructor(tunnel, env, hooks) {
    this.tunnel = tunnel;
    this.env = env;
    this.hooks = hooks;
    /** @type {Map<string, HttpStream>} `${sessionId}:${streamId}` -> the HTTP request in flight */
    this.streams = new Map();
    /** @type {Set<HttpStream>} streams whose first bytes wait for the end of the current message */
    this.holding = new Set();
  }

  /** The sessions that carry a stream now. */
  busy() {
    return new Set([...this.streams.values()].map((s) => s.session.sessionId));
  }

  /**
   * Run one query; resolves to its response (200 with a streamed body, or a typed error).
   * @param {Call} call @returns {Promise<Response>}
   */
  async handle(call) {
    return /** @type {Response} */ (await this.run(call, false));
  }

  /**
   * handle(), except that a result that ended in the message that started it resolves to a
   * WholeAnswer (the Tunnel's query() method: the Worker makes its Response).
   * @param {Call} call @returns {Promise<Response | WholeAnswer>}
   */
  async handleWhole(call) {
    return this.run(call, true);
  }

  /** @param {Call} call @param {boolean} whole @returns {Promise<Response | WholeAnswer>} */
  async run({ token, tokenSha256, request: req, deadlineMs, identity, maxQueriesPerIdentity, session, pinned, accept, onSent }, whole) {
    const config = await loadConfig(this.env);
    /** @type {PromiseWithResolvers<Response | WholeAnswer>} */
    const { promise, resolve } = Promise.withResolvers();
    // before admission: a statement no connection accepts neither waits for nor takes a slot
    const largest = this.tunnel.maxStatementBytes();
    if (largest !== undefined) checkSize(req, largest);
    const key = `${identity.issuer}\u0000${identity.subject}`;
    const slot = pinned !== undefined ? unqueuedSlot() : await this.tunnel.admit(key, maxQueriesPerIdentity, Math.min(config.limits.admission_wait_ms, req.timeout_ms), req.query_id);
    // The admission wait counts against the query's deadline.
    const timeoutMs = Math.max(1, req.timeout_ms - slot.waitedMs);
    const options = { max_rows: req.max_rows ?? null, timeout_ms: timeoutMs };
    try {
      await this.dispatch({ token, tokenSha256, req, options, deadlineMs: deadlineMs - (req.timeout_ms - timeoutMs), respond: resolve, slot, whole, session, pinned, accept, onSent });
    } catch (err) {
      this.tunnel.giveBack(slot);
      throw err;
    }
    return promise;
  }

  /**
   * Send a query to a connector: pick, attest, open the stream. Throws HttpError when no
   * connector can take it (nothing was sent).
   * @param {Job} job
   */
  async dispatch(job) {
    const { token, tokenSha256, req, options, pinned } = job;
    const member = job.session ?? null;
    const config = await loadConfig(this.env);
    /** @type {ConnectorSession} */
    let session;
    /** @type {Record<string, any>} */
    let attestation;
    // Stream ids must increase in the order QUERY frames are sent: the attestation is awaited
    // first, then the session is checked again and the stream opened with no await between.
    for (let attempt = 0; ; attempt++) {
      session = pinned ?? this.tunnel.pick(job.accept);
      if (pinned !== undefined && !pinned.accepting) throw pinnedRefusal(pinned, req.query_id);
      checkSize(req, session.conn.maxStatementBytes); // before any signing or encoding
      attestation = await makeAttestation(config.relayKey, {
        sessionId: session.sessionId,
        queryId: req.query_id,
        token,
        sql: req.sql,
        query: req.query,
        paramsJson: req.params_json,
        options,
        now: Date.now() / 1000,
        session: member,
        tokenSha256,
      });
      if (session.accepting) break;
      if (attempt === 2) throw new HttpError(ErrorCode.RELAY_OVERLOADED, "connectors kept changing while placing the query; retry");
    }
    const payload = queryPayload({ queryId: req.query_id, token, sql: req.sql, query: req.query, paramsJson: req.params_json, options, attestation, session: member });
    if (payload.byteLength > session.conn.maxFrame) {
      throw new HttpError(ErrorCode.REQUEST_TOO_LARGE, `the query is ${payload.byteLength} bytes framed; the connector accepts at most ${session.conn.maxFrame}`);
    }
    let streamId;
    try {
      streamId = session.openStream(() => payload);
    } catch (err) {
      if (!(err instanceof LocalProtocolError)) throw err;
      console.error(`query.not_sent query_id=${req.query_id} why=${err.message}`);
      throw new HttpError(ErrorCode.INTERNAL, `the relay could not send the query to the connector; retry it (the cause is in the relay's log under query_id ${req.query_id})`, { queryId: req.query_id });
    }
    const sentAt = Date.now();
    /** @type {HttpStream} */
    const stream = {
      key: `${session.sessionId}:${streamId}`,
      session,
      streamId,
      queryId: req.query_id,
      started: false,
      finished: false,
      cancelled: false,
      redispatching: false,
      writer: null,
      job,
      // A backstop deadline while a request is in flight, on the object's one timer (tunnel.js
      // keepalive; never while idle: it would keep the object awake; alarms are used for
      // everything that outlives a request).
      deadlineAt: sentAt + job.deadlineMs,
      sentAt,
    };
    this.streams.set(stream.key, stream);
    job.onSent?.(session, streamId);
    this.tunnel.placed(job.slot);
    this.hooks.sent(session, sentAt, config.limits.ping_interval_s * 1000, stream.deadlineAt);
  }

  /**
   * A connector refused the query unexecuted (connector.draining; its connection now counts as
   * draining): place it on another connection.
   * @param {HttpStream} stream @param {Uint8Array} errorBody
   */
  redispatch(stream, errorBody) {
    this.dispatch(stream.job).catch((err) => {
      this.tunnel.giveBack(stream.job.slot);
      const fallback = new Response(errorBody, { status: httpStatus(ErrorCode.CONNECTOR_DRAINING), headers: { "content-type": "application/json", "cache-control": "no-store" } });
      stream.job.respond(err instanceof HttpError && err.code !== ErrorCode.CONNECTOR_DRAINING ? errorResponse(err) : fallback);
    });
  }

  /**
   * A result event (COLUMNS, ROWS, DONE, ERROR; also a synthesized transport.lost) of a session's
   * stream: to its HTTP response, or discarded and credited when nobody listens any more.
   * @param {ConnectorSession} session @param {import("./connection.js").FrameEvent} event
   */
  deliver(session, event) {
    const stream = this.streams.get(`${session.sessionId}:${event.streamId}`);
    const flowed = event.type === FrameType.COLUMNS || event.type === FrameType.ROWS ? event.data.byteLength : 0;
    const terminal = event.type === FrameType.DONE || event.type === FrameType.ERROR;
    if (stream === undefined) {
      session.consumed(event.streamId, flowed); // cancelled or ended here: discard
      return;
    }
    if (terminal) stream.finished = true;
    if (!stream.started) {
      if (event.type === FrameType.ERROR && stream.held === undefined) {
        // Nothing was streamed yet: the status can still say what happened.
        // (a session operation after begin stays on its connection: never placed elsewhere)
        stream.redispatching = event.code === ErrorCode.CONNECTOR_DRAINING && stream.job.pinned === undefined; // keeps its slot
        this.settle(stream);
        if (stream.redispatching) {
          this.redispatch(stream, event.data);
          return;
        }
        const status = httpStatus(event.code);
        // A connector's limit (429): the client should come back later.
        /** @type {Record<string, string>} */
        const headers = { "content-type": "application/json", "cache-control": "no-store" };
        if (status === 429) headers["retry-after"] = "1";
        stream.job.respond(new Response(event.data, { status, headers }));
        return;
      }
      if (stream.held === undefined) {
        stream.held = [];
        this.holding.add(stream);
      }
      stream.held.push({ data: event.data, flowed });
      if (terminal) this.answerWhole(stream);
      return;
    }
    this.write(stream, event.data, flowed, terminal);
  }

  /**
   * The result ended in the message that started it: one complete 200 body, its bytes credited
   * at once. @param {HttpStream} stream
   */
  answerWhole(stream) {
    const held = /** @type {{data: Uint8Array, flowed: number}[]} */ (stream.held);
    this.holding.delete(stream);
    stream.held = undefined;
    stream.started = true;
    this.settle(stream);
    const body = held.length === 1 ? held[0].data : concatBytes(held.map((h) => h.data));
    stream.job.respond(stream.job.whole ? { status: 200, queryId: stream.queryId, body } : wholeResponse(body, stream.queryId));
    for (const { flowed } of held) stream.session.consumed(stream.streamId, flowed);
  }

  /** The end of a connector message: streams whose result goes on start their body stream. */
  releaseHeld() {
    if (!this.holding.size) return;
    const holding = [...this.holding];
    this.holding.clear();
    for (const stream of holding) {
      const held = /** @type {{data: Uint8Array, flowed: number}[]} */ (stream.held);
      stream.held = undefined;
      this.start(stream);
      for (const { data, flowed } of held) this.write(stream, data, flowed, false);
    }
  }

  /**
   * Write bytes to a started stream's body; a terminal record ends it.
   * @param {HttpStream} stream @param {Uint8Array} data @param {number} flowed @param {boolean} terminal
   */
  write(stream, data, flowed, terminal) {
    const { session } = stream;
    const writer = /** @type {WritableStreamDefaultWriter<Uint8Array>} */ (stream.writer);
    // Credit flows again once the client's body took the bytes (or they were dropped with it).
    const credit = () => session.consumed(stream.streamId, flowed);
    writer.write(data).then(credit, () => {
      credit();
      this.clientGone(stream);
    });
    if (terminal) {
      this.settle(stream);
      writer.close().catch(() => {});
    }
  }

  /** Answer 200 and start streaming the body. @param {HttpStream} stream */
  start(stream) {
    /** @type {TransformStream<Uint8Array, Uint8Array>} */
    const { readable, writable } = new TransformStream();
    stream.writer = writable.getWriter();
    stream.started = true;
    stream.writer.closed.catch(() => this.clientGone(stream));
    stream.job.respond(new Response(readable, { status: 200, headers: { ...NDJSON_HEADERS, "x-edgetds-query-id": stream.queryId } }));
  }

  /** The HTTP client went away (or its body was cancelled): CANCEL the stream once. @param {HttpStream} stream */
  clientGone(stream) {
    if (stream.cancelled || stream.finished) return;
    stream.cancelled = true;
    this.settle(stream);
    stream.session.cancel(stream.streamId, "client went away");
  }

  /** The stream no longer needs the object: its deadline ends, its slot goes back. @param {HttpStream} stream */
  settle(stream) {
    if (!this.streams.delete(stream.key)) return;
    if (!this.streams.size) this.hooks.idle();
    if (!stream.redispatching) this.tunnel.giveBack(stream.job.slot);
  }

  /**
   * The session ended: every stream it carried ends with the typed transport.lost record.
   * @param {ConnectorSession} session @param {import("./connection.js").Event[]} lost its end() events
   */
  endSession(session, lost) {
    for (const event of lost) if (event.type !== "lost") this.deliver(session, event);
    // Streams the connection no longer knew (it failed): end them here.
    for (const stream of [...this.streams.values()]) {
      if (stream.session !== session) continue;
      const data = errorRecord(ErrorCode.TRANSPORT_LOST, "the connection between relay and connector was lost before the query finished", { queryId: stream.queryId });
      this.deliver(session, { type: FrameType.ERROR, name: "ERROR", streamId: stream.streamId, data, code: ErrorCode.TRANSPORT_LOST });
    }
  }

  /** The Worker saw the client hang up: CANCEL the query's stream if it is still open here. @param {string} queryId */
  cancel(queryId) {
    this.tunnel.withdraw(queryId);
    for (const stream of this.streams.values()) {
      if (stream.queryId === queryId) {
        this.clientGone(stream);
        stream.job.respond(errorResponse(new HttpError(ErrorCode.QUERY_CANCELLED, "the client went away", { queryId })));
      }
    }
  }

  /** When the earliest deadline of the open streams is (Infinity: none is open). */
  nextDeadline() {
    let at = Infinity;
    for (const stream of this.streams.values()) at = Math.min(at, stream.deadlineAt);
    return at;
  }

  /** Every open stream whose deadline is `now` or earlier gets it. @param {number} now */
  expire(now) {
    for (const stream of [...this.streams.values()]) if (stream.deadlineAt <= now) this.deadline(stream);
  }

  /** The backstop deadline of a stream. @param {HttpStream} stream */
  deadline(stream) {
    if (stream.finished || stream.cancelled) return;
    this.hooks.deadline(stream); // probes a connection silent since the QUERY
    this.clientGone(stream); // sends CANCEL; later frames are absorbed
    const message = "the query did not finish within its timeout; it was cancelled";
    if (!stream.started) {
      stream.job.respond(errorResponse(new HttpError(ErrorCode.QUERY_TIMEOUT, message, { queryId: stream.queryId })));
    } else {
      const writer = /** @type {WritableStreamDefaultWriter<Uint8Array>} */ (stream.writer);
      writer.write(errorRecord(ErrorCode.QUERY_TIMEOUT, message, { queryId: stream.queryId })).catch(() => {});
      writer.close().catch(() => {});
    }
  }
}
