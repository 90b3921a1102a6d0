// @ts-check
/**
 * One connector WebSocket, from the relay's side (relay/session.py's ConnectorSession, on the
 * Hibernation API instead of trio tasks).
 *
 * Strategy:
 *
 * 1. The Worker checked the connector token before the upgrade; the Durable Object accepts the
 *    socket (`ConnectorSession.accept`), and `hello()` sends the signed HELLO. The one alarm closes
 *    a connection whose READY does not come within the handshake timeout (tunnel.js).
 * 2. Every message goes through `receive()` into the sans-I/O `Connection` (connection.js), which
 *    checks every frame, keeps the windows and queues PONG, CREDIT and GOAWAY; the caller routes the
 *    events it returns. Every call that changes the connection ends with `flush()`: the queued
 *    bytes go out as one message and the connection's snapshot is stored in the socket's
 *    attachment, so that it survives hibernation.
 * 3. Query handling opens streams with `openStream()` (synchronous: the capacity check and the QUERY
 *    happen with no await in between), reports delivered bytes with `consumed()` (credit flows
 *    again) and cancels with `cancel()`.
 * 4. When the socket ends, `end()` runs `Connection.receiveEof()`: a transport.lost ERROR for every
 *    stream still open.
 *
 * What the attachment holds (16 KiB at most): connector id, tunnel, connector key, session id,
 * handshake state ("hello" until READY, "open", "closed" once this side closed it), when it
 * connected, `probeAt` while a PING probe is unanswered (tunnel.js), `closeAt` once the relay
 * drained it (tunnel.js rekey(): its key is no longer registered), the connection snapshot, and
 * `sessions`: the transactions across requests pinned to this connection (sessions.js).
 */

import { canonicalJson } from "./auth.js";
import { Connection } from "./connection.js";
import { CHECKPOINT_CAP, DEFAULT_LIMITS, FrameType, LocalProtocolError, ProtocolError, SESSION_CAP } from "./frames.js";

/** The tag of every connector socket (and `conn:<connector id>`). */
export const CONNECTOR_TAG = "conn";
/** Relay-side limits announced in HELLO (SPEC defaults). */
export const RELAY_LIMITS = DEFAULT_LIMITS;
/** Capabilities announced in HELLO (SPEC 6.2). */
export const RELAY_CAPS = Object.freeze([CHECKPOINT_CAP, SESSION_CAP]);
/** Each PING costs a PONG: a connector that floods them is cut off (relay/session.py, same numbers). */
export const PING_BURST = 20;
export const PING_RATE = 5;

/**
 * @typedef {{
 *   connectorId: string, tunnel: string, connectorKeyHex: string, sessionId: string,
 *   state: "hello" | "open" | "closed", connectedAt: number, probeAt?: number, closeAt?: number,
 *   conn?: import("./connection.js").Snapshot, sessions?: Record<string, import("./sessions.js").Entry>
 * }} Attachment
 * @typedef {{connectorId: string, tunnel: string, publicKeyHex: string}} ConnectorClaims
 */

/** The relay's end of one connector connection (see the module comment). */
export class ConnectorSession {
  /** @param {WebSocket} ws @param {Attachment} att @param {Connection} conn */
  constructor(ws, att, conn) {
    this.ws = ws;
    this.att = att;
    this.conn = conn;
    /** While the Durable Object handles one of this socket's messages: flush() waits for its end (tunnel.js receive). */
    this.deferFlush = false;
  }

  /**
   * A new connection on an accepted socket.
   * @param {WebSocket} ws @param {ConnectorClaims} claims @param {string} sessionId @param {number} now
   */
  static accept(ws, claims, sessionId, now) {
    /** @type {Attachment} */
    const att = { connectorId: claims.connectorId, tunnel: claims.tunnel, connectorKeyHex: claims.publicKeyHex, sessionId, state: "hello", connectedAt: now };
    const session = new ConnectorSession(ws, att, new Connection({ limits: RELAY_LIMITS }));
    session.save();
    return session;
  }

  /** The session of a socket, rebuilt from its attachment (after hibernation). @param {WebSocket} ws */
  static restore(ws) {
    const att = /** @type {Attachment} */ (ws.deserializeAttachment());
    const conn = att.conn === undefined ? new Connection({ limits: RELAY_LIMITS }) : Connection.restore(att.conn);
    return new ConnectorSession(ws, att, conn);
  }

  get sessionId() {
    return this.att.sessionId;
  }

  get connectorId() {
    return this.att.connectorId;
  }

  /** Past READY, not closed by this side, and the socket is open. */
  get open() {
    return this.att.state === "open" && this.ws.readyState === WebSocket.OPEN;
  }

  /** Whether the connector takes no new queries (DRAIN, a draining refusal, GOAWAY). */
  get draining() {
    const { conn } = this;
    return conn.peerDraining || conn.drainSent || conn.goawaySent || conn.goawayReceived;
  }

  /** Whether a new QUERY may go to this connection now. */
  get accepting() {
    return this.open && this.conn.canOpenStream();
  }

  /** How many more QUERYs this connection takes now (0 when closed, draining or full). */
  get freeStreams() {
    return this.accepting ? this.conn.maxStreams - this.conn.openStreams().length : 0;
  }

  /** Store the attachment (with the connection's snapshot): it survives hibernation. */
  save() {
    this.att.conn = this.conn.snapshot();
    try {
      this.ws.serializeAttachment(this.att);
    } catch {
      // the socket is gone: webSocketClose ends the session
    }
  }

  /**
   * Send what the connection queued as one message, then store the attachment. While a message of
   * this socket is handled (`deferFlush`) it does nothing: the handler flushes once at the end
   * (the object cannot hibernate in between), so credit for a whole small result is one
   * attachment save and at most one message.
   */
  flush() {
    if (this.deferFlush) return;
    const data = this.conn.dataToSend();
    if (data.byteLength) {
      try {
        this.ws.send(data);
      } catch {
        // the socket is gone: webSocketClose ends the session
      }
    }
    this.save();
  }

  /** @param {number} type @param {number} streamId @param {Uint8Array} payload */
  send(type, streamId, payload) {
    this.conn.send({ type, streamId, payload });
    this.flush();
  }

  /** Send the signed HELLO. @param {Record<string, any>} fields */
  hello(fields) {
    this.send(FrameType.HELLO, 0, canonicalJson(fields));
  }

  /**
   * Feed one WebSocket message; SPEC 3.2: a message that ends inside a frame is refused (a
   * truncated frame from a live peer would sit in the buffer indefinitely).
   * @param {Uint8Array} message
   * @returns {import("./connection.js").Event[]} the events, including those parsed before an error
   * @throws {ProtocolError} the connector broke the protocol (a GOAWAY is queued: fail() it)
   */
  receive(message) {
    this.conn.receiveData(message);
    if (this.conn.buffered) {
      throw new ProtocolError(`a WebSocket message ended inside a frame (${this.conn.buffered} bytes left over); send whole frames per message`);
    }
    return this.conn.events();
  }

  /** Queue a GOAWAY unless one was sent (or the connection cannot send any more). @param {string} code @param {string} message */
  goaway(code, message) {
    try {
      this.conn.send({ type: FrameType.GOAWAY, streamId: 0, payload: canonicalJson({ code, message: message.slice(0, 200), last_stream: this.conn.lastStreamId }) });
    } catch (err) {
      if (!(err instanceof LocalProtocolError)) throw err;
    }
  }

  /**
   * Send a QUERY with the next stream id; synchronous on purpose (see the module comment).
   * @param {(streamId: number) => Uint8Array} makePayload
   * @returns {number} the stream id
   * @throws {LocalProtocolError} the QUERY could not be sent (request.too_large: nothing was sent)
   */
  openStream(makePayload) {
    const streamId = this.conn.nextStreamId;
    this.send(FrameType.QUERY, streamId, makePayload(streamId));
    return streamId;
  }

  /** `nbytes` of COLUMNS/ROWS payload reached the HTTP client or were discarded: credit flows again. @param {number} streamId @param {number} nbytes */
  consumed(streamId, nbytes) {
    if (!nbytes || this.att.state === "closed") return;
    try {
      this.conn.consumed(streamId, nbytes);
    } catch (err) {
      if (!(err instanceof LocalProtocolError)) throw err;
      return;
    }
    this.flush();
  }

  /** CANCEL a stream that is still open (its later frames are discarded and credited). @param {number} streamId @param {string} reason */
  cancel(streamId, reason) {
    if (this.att.state === "closed" || !this.conn.streams.has(streamId) || this.conn.goawaySent) return;
    try {
      this.send(FrameType.CANCEL, streamId, canonicalJson({ reason }));
    } catch (err) {
      if (!(err instanceof LocalProtocolError)) throw err;
    }
  }

  /**
   * DRAIN from the relay's side (SPEC 6.4, 8.2): no new QUERY goes here, open streams finish, and
   * the connector reconnects; the alarm closes the connection at `closeAt` if it is still open.
   * @param {string} reason @param {number} closeAt Date.now() time
   */
  drain(reason, closeAt) {
    if (this.att.state === "closed") return;
    this.att.closeAt = Math.min(closeAt, this.att.closeAt ?? Infinity);
    if (!(this.conn.drainSent || this.conn.goawaySent)) {
      try {
        this.conn.send({ type: FrameType.DRAIN, streamId: 0, payload: canonicalJson({ reason }) });
      } catch (err) {
        if (!(err instanceof LocalProtocolError)) throw err;
      }
    }
    this.flush();
  }

  /** Send an edgetds PING (a probe); false if the connection cannot send any more. */
  ping() {
    try {
      this.send(FrameType.PING, 0, crypto.getRandomValues(new Uint8Array(8)));
      return true;
    } catch (err) {
      if (!(err instanceof LocalProtocolError)) throw err;
      return false;
    }
  }

  /**
   * The transport ended (or this side closes it): transport.lost for every open stream.
   * @returns {import("./connection.js").Event[]}
   */
  end() {
    try {
      this.conn.receiveEof();
    } catch (err) {
      if (!(err instanceof LocalProtocolError)) throw err;
    }
    return this.conn.events();
  }

  /** Close the socket; the attachment says it no longer counts or serves. @param {number} code @param {string} reason */
  close(code, reason) {
    // A socket whose peer is gone stays listed (CLOSING) until the runtime gives up on it.
    this.att.state = "closed";
    delete this.att.probeAt;
    delete this.att.closeAt;
    this.save();
    try {
      this.ws.close(code, reason);
    } catch {
      // already closed
    }
  }
}
