// @ts-check
/**
 * The sans-I/O edgetds/1 connection, relay side: bytes in, events out (protocol/_connection.py,
 * `Connection(Role.RELAY)`, the same rules and the same names in camelCase).
 *
 * Bring your own I/O (session.js does, as relay/session.py does with the Python one):
 *
 * 1. `new Connection()` per connector WebSocket, or `Connection.restore(snapshot)` to rebuild it
 *    from `snapshot()` (a Durable Object keeps the snapshot in the socket's attachment, so the
 *    connection survives hibernation).
 * 2. Feed every received binary message to `receiveData`, the end of the transport to
 *    `receiveEof`; then handle `events()`.
 * 3. `send(frame)` for frames this side sends, `consumed(streamId, n)` for COLUMNS/ROWS payload
 *    bytes delivered to (or discarded for) the HTTP client; after EVERY call (receiving can queue
 *    PONG, CREDIT or GOAWAY) send `dataToSend()` as one WebSocket message when it is not empty.
 *
 * Rule 1: a frame type has one sender role and one stream scope (frames.js FRAME_RULES).
 * Rule 2: HELLO (relay) then READY (connector) open the connection; before that only GOAWAY.
 * Rule 3: only the relay opens streams (QUERY, ids strictly increasing); a stream then follows
 *         STREAM_TRANSITIONS and ends with the connector's DONE or ERROR.
 * Rule 4: nothing may follow a received GOAWAY.
 * Rule 5: a frame of an optional feature (frames.js FRAME_CAPS) crosses only when HELLO and READY
 *         both announced its capability.
 *
 * The credit policy: stream and connection credit is re-granted once half a window was consumed
 * (about two CREDIT frames per window). The draining policy: no QUERY after a DRAIN either way; an
 * ERROR `connector.draining` on a stream that has no result yet is the connector refusing the
 * query unexecuted (SPEC 6.4), so it counts as the connector's DRAIN too (the relay may place the
 * query on another connection). Both are checked by the shared vectors (protocol/vectors/).
 */

import { canonicalJson } from "./auth.js";
import {
  checkFrameRule,
  concatBytes,
  creditPayload,
  decodePayload,
  DEFAULT_LIMITS,
  DEFAULT_STATEMENT_BYTES,
  encodeFrame,
  ErrorCode,
  FRAME_CAPS,
  FRAME_NAMES,
  FrameReader,
  FrameType,
  LocalProtocolError,
  MAX_WINDOW,
  MIN_FRAME,
  ProtocolError,
  SESSION_CAP,
} from "./frames.js";

/**
 * @typedef {import("./frames.js").Frame} Frame
 * @typedef {import("./frames.js").Limits} Limits
 * @typedef {"await_hello" | "await_ready" | "open" | "closed" | "error"} ConnectionState
 * @typedef {"open" | "result" | "closed"} StreamState
 * @typedef {{type: number, name: string, streamId: number, [field: string]: any}} FrameEvent
 * @typedef {{type: "lost", clean: boolean}} ConnectionLost
 * @typedef {FrameEvent | ConnectionLost} Event
 */

/** (stream state, frame type) -> next stream state (Rule 3); a missing pair is a protocol error. */
export const STREAM_TRANSITIONS = Object.freeze({
  open: {
    [FrameType.COLUMNS]: "result",
    [FrameType.DONE]: "closed",
    [FrameType.ERROR]: "closed",
    [FrameType.CANCEL]: "open",
    [FrameType.CREDIT]: "open",
  },
  result: {
    [FrameType.COLUMNS]: "result",
    [FrameType.ROWS]: "result",
    [FrameType.DONE]: "closed",
    [FrameType.ERROR]: "closed",
    [FrameType.CANCEL]: "result",
    [FrameType.CREDIT]: "result",
  },
});

/** The message of the synthesized transport.lost record (SPEC 7.3). */
export const LOST_MESSAGE = "the connection between relay and connector was lost before the query finished";

const encoder = new TextEncoder();

/**
 * The terminal record of a stream whose connection was lost.
 * @param {string} queryId
 * @returns {string}
 */
export function lostRecordText(queryId) {
  return `${JSON.stringify({ error: { code: ErrorCode.TRANSPORT_LOST, message: LOST_MESSAGE, query_id: queryId } })}\n`;
}

/** One credit window (protocol/_flow.py Window). */
export class Window {
  /** @param {number} initial @param {number} [size] @param {number} [pending] */
  constructor(initial, size = initial, pending = 0) {
    this.initial = initial;
    this.size = size;
    /** Bytes delivered but not yet re-granted as CREDIT. */
    this.pending = pending;
  }

  /** The increment to send now: 0 until half the window was consumed. @returns {number} */
  takeGrant() {
    if (this.pending * 2 < this.initial) return 0;
    const grant = this.pending;
    this.pending = 0;
    this.size += grant;
    return grant;
  }
}

class Stream {
  /** @param {string} queryId @param {Window} window @param {StreamState} [state] @param {number} [unconsumed] */
  constructor(queryId, window, state = "open", unconsumed = 0) {
    this.queryId = queryId;
    /** @type {StreamState} */
    this.state = state;
    /** The receive window. */
    this.window = window;
    /** Bytes received on this stream that the application has not reported consumed. */
    this.unconsumed = unconsumed;
  }
}

/**
 * A snapshot of a connection: plain data for `serializeAttachment` (survives hibernation). Query
 * ids are left out (a client may choose 128 characters each, and 128 streams of them would not fit
 * the 16 KiB attachment): a connection restored from a snapshot names `""` in the transport.lost
 * record of a stream it knew before. Only a Durable Object rebuilt after hibernation restores one,
 * and then no HTTP request is waiting for any of its streams.
 * @typedef {{
 *   limits: Limits, state: ConnectionState, sessionId: string | null, caps: string[],
 *   helloCaps: string[], maxStatementBytes: number, lastStreamId: number, maxStreams: number,
 *   sendMaxFrame: number, streamWindow: number, window: number[], unconsumed: number,
 *   flags: number, streams: Array<[number, StreamState, number, number, number]>
 * }} Snapshot
 */

/** @type {Array<keyof Limits>} */
const LIMIT_KEYS = ["max_frame", "stream_window", "connection_window", "max_streams"];
const GOAWAY_SENT = 1;
const GOAWAY_RECEIVED = 2;
const DRAIN_SENT = 4;
const DRAIN_RECEIVED = 8;

/** The relay's end of one edgetds/1 connection (see the module comment). */
export class Connection {
  /** @param {{limits?: Limits}} [options] this side's limits, announced in HELLO */
  constructor({ limits = DEFAULT_LIMITS } = {}) {
    this.limits = limits;
    /** @type {ConnectionState} */
    this.state = "await_hello";
    /** @type {string | null} The HELLO's session id, once HELLO crossed. */
    this.sessionId = null;
    /** @type {Set<string>} Capabilities both sides announced (set when READY crossed). */
    this.caps = new Set();
    /** The largest ad-hoc statement (UTF-8 bytes) the connector accepts (its READY's). */
    this.maxStatementBytes = DEFAULT_STATEMENT_BYTES;
    this.reader = new FrameReader({ maxPayload: limits.max_frame });
    /** @type {Event[]} */
    this.received = [];
    /** @type {Uint8Array[]} */
    this.outbox = [];
    /** @type {Map<number, Stream>} */
    this.streams = new Map();
    this.lastStreamId = 0;
    this.maxStreamsAllowed = limits.max_streams;
    this.sendMaxFrame = MIN_FRAME;
    this.streamWindow = limits.stream_window;
    this.window = new Window(limits.connection_window);
    this.unconsumed = 0;
    /** @type {string[]} */
    this.helloCaps = [];
    this.goawaySent = false;
    this.goawayReceived = false;
    this.drainSent = false;
    this.drainReceived = false;
    this.eof = false;
    /** @type {ProtocolError | null} */
    this.error = null;
  }

  /** @returns {Snapshot} */
  snapshot() {
    const flags = (this.goawaySent ? GOAWAY_SENT : 0) | (this.goawayReceived ? GOAWAY_RECEIVED : 0) | (this.drainSent ? DRAIN_SENT : 0) | (this.drainReceived ? DRAIN_RECEIVED : 0);
    return {
      limits: this.limits,
      state: this.state,
      sessionId: this.sessionId,
      caps: [...this.caps],
      helloCaps: this.helloCaps,
      maxStatementBytes: this.maxStatementBytes,
      lastStreamId: this.lastStreamId,
      maxStreams: this.maxStreamsAllowed,
      sendMaxFrame: this.sendMaxFrame,
      streamWindow: this.streamWindow,
      window: [this.window.size, this.window.pending],
      unconsumed: this.unconsumed,
      flags,
      streams: [...this.streams].map(([id, s]) => [id, s.state, s.window.size, s.window.pending, s.unconsumed]),
    };
  }

  /**
   * A connection from its snapshot (a whole-message reader: nothing was buffered between messages).
   * @param {Snapshot} s @returns {Connection}
   */
  static restore(s) {
    const conn = new Connection({ limits: s.limits });
    conn.state = s.state;
    conn.sessionId = s.sessionId;
    conn.caps = new Set(s.caps);
    conn.helloCaps = s.helloCaps;
    conn.maxStatementBytes = s.maxStatementBytes;
    conn.lastStreamId = s.lastStreamId;
    conn.maxStreamsAllowed = s.maxStreams;
    conn.sendMaxFrame = s.sendMaxFrame;
    conn.streamWindow = s.streamWindow;
    conn.window = new Window(s.limits.connection_window, s.window[0], s.window[1]);
    conn.unconsumed = s.unconsumed;
    conn.goawaySent = (s.flags & GOAWAY_SENT) !== 0;
    conn.goawayReceived = (s.flags & GOAWAY_RECEIVED) !== 0;
    conn.drainSent = (s.flags & DRAIN_SENT) !== 0;
    conn.drainReceived = (s.flags & DRAIN_RECEIVED) !== 0;
    for (const [id, state, size, pending, unconsumed] of s.streams) {
      conn.streams.set(id, new Stream("", new Window(s.streamWindow, size, pending), state, unconsumed));
    }
    return conn;
  }

  // -- the public face ------------------------------------------------------------------------

  /** Bytes received but not yet parsed into a frame (a partial frame). */
  get buffered() {
    return this.reader.buffered;
  }

  /** The stream id the next QUERY should use. */
  get nextStreamId() {
    return this.lastStreamId + 1;
  }

  /** The number of streams that may be open at once (the smaller of both announcements). */
  get maxStreams() {
    return this.maxStreamsAllowed;
  }

  /** The largest payload this side may send in one frame (what the connector announced). */
  get maxFrame() {
    return this.sendMaxFrame;
  }

  /** Whether the connector said it takes no new queries (DRAIN, or a draining refusal). */
  get peerDraining() {
    return this.drainReceived;
  }

  /** The ids of the open streams (QUERY crossed, DONE/ERROR not yet). @returns {number[]} */
  openStreams() {
    return [...this.streams.keys()];
  }

  /** Whether a QUERY may be sent now (handshake done, no DRAIN/GOAWAY, capacity). */
  canOpenStream() {
    return this.state === "open" && !(this.drainSent || this.drainReceived || this.goawaySent || this.goawayReceived) && this.streams.size < this.maxStreamsAllowed;
  }

  /** Return and forget the events parsed so far, oldest first. @returns {Event[]} */
  events() {
    const events = this.received;
    this.received = [];
    return events;
  }

  /** Return and forget the bytes to send, as whole frames for ONE WebSocket message. @returns {Uint8Array} */
  dataToSend() {
    const out = this.outbox.length === 1 ? this.outbox[0] : concatBytes(this.outbox);
    this.outbox = [];
    return out;
  }

  /**
   * Feed bytes received from the connector (frames may span calls).
   * @param {Uint8Array} data
   * @throws {ProtocolError} the connector broke the protocol: the connection is in "error" and a
   *   GOAWAY is queued (send it, then close with the error's closeCode)
   * @throws {LocalProtocolError} called after an error or after receiveEof()
   */
  receiveData(data) {
    this.checkUsable("receive data");
    this.reader.feed(data);
    for (;;) {
      /** @type {Frame | null} */
      let frame;
      try {
        frame = this.reader.nextFrame();
      } catch (err) {
        this.fail(/** @type {ProtocolError} */ (err));
      }
      if (frame === null) return;
      if (this.goawayReceived) this.fail(new ProtocolError(`${FRAME_NAMES[frame.type]} frame after GOAWAY`));
      const event = this.decode(frame, false);
      if (this.apply(frame, event, false)) this.received.push(event);
    }
  }

  /**
   * The transport ended: a transport.lost ERROR for every open stream (lowest id first), then
   * `{type: "lost", clean}`. Allowed in the "error" state (the clean-up path).
   */
  receiveEof() {
    if (this.eof) throw new LocalProtocolError("receiveEof() was already called");
    this.eof = true;
    for (const id of [...this.streams.keys()].sort((a, b) => a - b)) {
      const data = encoder.encode(lostRecordText(/** @type {Stream} */ (this.streams.get(id)).queryId));
      this.received.push({ type: FrameType.ERROR, name: "ERROR", streamId: id, data, code: ErrorCode.TRANSPORT_LOST });
    }
    this.streams.clear();
    const clean = this.state !== "error" && (this.goawaySent || this.goawayReceived) && this.reader.buffered === 0;
    this.received.push({ type: "lost", clean });
    if (this.state !== "error") this.state = "closed";
  }

  /**
   * Queue one frame this side sends (collect it with dataToSend()).
   * @param {Frame} frame
   * @throws {LocalProtocolError} not allowed now (the connection is then in "error"); one
   *   exception: a payload larger than maxFrame is refused with errorCode request.too_large and
   *   the connection stays usable (nothing was queued)
   */
  send(frame) {
    this.checkUsable("send");
    if (this.goawaySent) this.fail(new LocalProtocolError("nothing may be sent after GOAWAY"));
    const event = this.decode(frame, true);
    if (frame.payload.byteLength > this.sendMaxFrame) {
      throw new LocalProtocolError(`${FRAME_NAMES[frame.type]} payload of ${frame.payload.byteLength} bytes exceeds the peer's max frame payload ${this.sendMaxFrame}`, {
        errorCode: ErrorCode.REQUEST_TOO_LARGE,
      });
    }
    this.apply(frame, event, true);
    this.outbox.push(encodeFrame(frame.type, frame.streamId, frame.payload));
  }

  /**
   * `nbytes` of COLUMNS/ROWS payload received on `streamId` were delivered (or discarded); they
   * are re-granted as CREDIT once half a window has accumulated. Call it for every flow-controlled
   * byte, also after the stream ended or was cancelled, or the connection window runs dry.
   * @param {number} streamId @param {number} nbytes
   * @throws {LocalProtocolError} a stream never opened, or more bytes than were received
   */
  consumed(streamId, nbytes) {
    this.checkUsable("report consumed bytes");
    if (!(streamId >= 1 && streamId <= this.lastStreamId)) this.fail(new LocalProtocolError(`stream ${streamId} was never opened`));
    const stream = this.streams.get(streamId);
    const unconsumed = stream === undefined ? this.unconsumed : stream.unconsumed;
    if (!(nbytes >= 0 && nbytes <= unconsumed)) this.fail(new LocalProtocolError(`consumed ${nbytes} bytes but only ${unconsumed} are unconsumed`));
    this.unconsumed -= nbytes;
    this.window.pending += nbytes;
    if (stream !== undefined) {
      stream.unconsumed -= nbytes;
      stream.window.pending += nbytes;
      this.grant(streamId, stream.window.takeGrant());
    }
    this.grant(0, this.window.takeGrant());
  }

  // -- internals ------------------------------------------------------------------------------

  /** @param {string} action */
  checkUsable(action) {
    if (this.state === "error") throw new LocalProtocolError(`cannot ${action}: the connection failed earlier (${this.error?.message})`);
    if (this.eof) throw new LocalProtocolError(`cannot ${action}: the transport already ended`);
  }

  /** @param {ProtocolError} err @returns {never} */
  fail(err) {
    this.state = "error";
    this.error = err;
    if (!(err instanceof LocalProtocolError) && !this.goawaySent) {
      const goaway = canonicalJson({ code: err.errorCode, message: err.message, last_stream: this.lastStreamId });
      this.outbox.push(encodeFrame(FrameType.GOAWAY, 0, goaway));
      this.goawaySent = true;
    }
    throw err;
  }

  /**
   * A specific code is a hint for our caller; a peer that broke a rule is protocol.error.
   * @param {boolean} local @param {string} message @param {string} [errorCode]
   */
  errorFor(local, message, errorCode = ErrorCode.PROTOCOL_ERROR) {
    return local ? new LocalProtocolError(message, { errorCode }) : new ProtocolError(message);
  }

  /** Rule 1 and the payload checks. @param {Frame} frame @param {boolean} local @returns {FrameEvent} */
  decode(frame, local) {
    try {
      checkFrameRule(frame, local ? "relay" : "connector");
      return /** @type {FrameEvent} */ (decodePayload(frame));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.fail(local ? new LocalProtocolError(err.message) : err);
    }
  }

  /** @param {number} streamId @param {number} increment */
  grant(streamId, increment) {
    if (increment && !this.goawaySent) this.outbox.push(encodeFrame(FrameType.CREDIT, streamId, creditPayload(increment)));
  }

  /**
   * Rules 2-5: update the state from a routed frame; false = drop it silently.
   * @param {Frame} frame @param {FrameEvent} event @param {boolean} local @returns {boolean}
   */
  apply(frame, event, local) {
    const { type, streamId } = frame;
    const name = FRAME_NAMES[type];
    /** @param {string} message @returns {never} */
    const fail = (message) => this.fail(this.errorFor(local, message));
    if (type === FrameType.GOAWAY) {
      if (local) this.goawaySent = true;
      else this.goawayReceived = true;
      return true;
    }
    if (this.state === "await_hello" && type === FrameType.HELLO) {
      const { limits } = event.fields;
      for (const key of LIMIT_KEYS) if (limits[key] !== this.limits[key]) fail("HELLO limits must equal this connection's limits");
      this.sessionId = event.fields.session_id;
      this.helloCaps = event.fields.caps;
      this.state = "await_ready";
      return true;
    }
    if (this.state === "await_ready" && type === FrameType.READY) {
      this.sendMaxFrame = event.maxFrame;
      this.maxStreamsAllowed = Math.min(this.maxStreamsAllowed, event.maxStreams);
      this.maxStatementBytes = event.maxStatementBytes;
      this.caps = new Set(event.caps.filter((/** @type {string} */ c) => this.helloCaps.includes(c)));
      this.state = "open";
      return true;
    }
    if (this.state !== "open" || type === FrameType.HELLO || type === FrameType.READY) fail(`${name} is not allowed in state ${this.state}`);
    const cap = /** @type {Record<number, string | undefined>} */ (FRAME_CAPS)[type];
    if (cap !== undefined && !this.caps.has(cap)) fail(`${name} needs the "${cap}" capability, which was not negotiated`);
    switch (type) {
      case FrameType.CHECKPOINT:
      case FrameType.PONG:
        return true;
      case FrameType.PING:
        if (!local && !this.goawaySent) this.outbox.push(encodeFrame(FrameType.PONG, 0, frame.payload));
        return true;
      case FrameType.DRAIN:
        if (local) this.drainSent = true;
        else this.drainReceived = true;
        return true;
      case FrameType.CREDIT:
        if (streamId === 0) {
          this.credit(this.window, streamId, event.increment, local);
          return true;
        }
        break;
      case FrameType.QUERY:
        this.open(streamId, event.queryId, local, event.session !== null && event.session !== undefined);
        return true;
      default:
    }
    const stream = this.streams.get(streamId);
    if (stream === undefined) return fail(`${name} on stream ${streamId}, which is not open`);
    const next = /** @type {Record<number, StreamState>} */ (STREAM_TRANSITIONS[/** @type {"open" | "result"} */ (stream.state)])[type];
    if (next === undefined) fail(`${name} is not allowed on stream ${streamId} in state ${stream.state}`);
    if (type === FrameType.COLUMNS || type === FrameType.ROWS) this.flow(stream, frame.payload.byteLength, local);
    else if (type === FrameType.CREDIT) this.credit(stream.window, streamId, event.increment, local);
    else if (type === FrameType.ERROR && stream.state === "open" && event.code === ErrorCode.CONNECTOR_DRAINING) {
      // the draining policy: a query refused unexecuted means the connector drains
      this.drainReceived = true;
    }
    stream.state = next;
    if (next === "closed") this.streams.delete(streamId);
    return true;
  }

  /** @param {number} streamId @param {string} queryId @param {boolean} local @param {boolean} [session] */
  open(streamId, queryId, local, session = false) {
    if (session && !this.caps.has(SESSION_CAP)) this.fail(this.errorFor(local, `QUERY member 'session' needs the "${SESSION_CAP}" capability`));
    if (streamId <= this.lastStreamId) this.fail(this.errorFor(local, `QUERY stream id ${streamId} is not above the last one (${this.lastStreamId})`));
    if ((this.drainSent && local) || this.drainReceived) this.fail(this.errorFor(local, "QUERY after DRAIN", ErrorCode.CONNECTOR_DRAINING));
    if (this.streams.size >= this.maxStreamsAllowed) {
      this.fail(this.errorFor(local, `QUERY would exceed the ${this.maxStreamsAllowed} concurrent streams allowed`, ErrorCode.LIMITS_TOO_MANY_QUERIES));
    }
    this.lastStreamId = streamId;
    this.streams.set(streamId, new Stream(queryId, new Window(this.streamWindow)));
  }

  /** @param {Stream} stream @param {number} nbytes @param {boolean} local */
  flow(stream, nbytes, local) {
    if (nbytes > stream.window.size || nbytes > this.window.size) {
      this.fail(this.errorFor(local, `${nbytes} payload bytes exceed the send window of ${Math.min(stream.window.size, this.window.size)} bytes`));
    }
    stream.window.size -= nbytes;
    this.window.size -= nbytes;
    if (!local) {
      stream.unconsumed += nbytes;
      this.unconsumed += nbytes;
    }
  }

  /** @param {Window} window @param {number} streamId @param {number} increment @param {boolean} local */
  credit(window, streamId, increment, local) {
    if (window.size + increment > MAX_WINDOW) this.fail(this.errorFor(local, `CREDIT on stream ${streamId} overflows 2^31-1`));
    window.size += increment;
  }
}
