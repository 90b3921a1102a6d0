/**
 * The relay's side of one edgetds/1 connection as tables (mirrors protocol/_state.py).
 *
 * Rule 1: a frame type has one sender role and one stream scope (frames.js FRAME_RULES).
 * Rule 2: HELLO (relay) then READY (connector) open the connection; before that only GOAWAY.
 * Rule 3: only the relay opens streams (QUERY, ids strictly increasing); a stream then follows
 *         STREAM_TRANSITIONS and ends with the connector's DONE or ERROR.
 * Rule 4: nothing may follow a received GOAWAY.
 * Rule 5: a frame of an optional feature (frames.js FRAME_CAPS) crosses only when HELLO and READY
 *         both announced its capability.
 *
 * The Durable Object applies `nextStreamState` to every result frame (its streams and windows live
 * in attachments and memory, see tunnel.js). `RelayConnection` is the same rules as a pure object
 * (bytes in, events out, no I/O): the shared vectors in protocol/vectors/sequences.json run
 * against it, so the table the DO uses is checked against the Python implementation's.
 */

import {
  checkFrameRule,
  decodePayload,
  ErrorCode,
  FRAME_CAPS,
  FRAME_NAMES,
  FrameReader,
  FrameType,
  ProtocolError,
} from "./frames.js";

/** (stream state, frame type) -> next stream state; a missing pair is a protocol error. */
export const STREAM_TRANSITIONS = Object.freeze({
  open: { [FrameType.COLUMNS]: "result", [FrameType.DONE]: "closed", [FrameType.ERROR]: "closed" },
  result: {
    [FrameType.COLUMNS]: "result",
    [FrameType.ROWS]: "result",
    [FrameType.DONE]: "closed",
    [FrameType.ERROR]: "closed",
  },
});

/** The message of the synthesized transport.lost record (SPEC 7.3). */
export const LOST_MESSAGE = "the connection between relay and connector was lost before the query finished";

/** The terminal record of a stream whose connection was lost. @returns {string} */
export function lostRecordText(queryId) {
  return `${JSON.stringify({ error: { code: ErrorCode.TRANSPORT_LOST, message: LOST_MESSAGE, query_id: queryId } })}\n`;
}

/**
 * Rule 3 for one received result frame.
 * @param {"open" | "result"} state @param {number} type @param {number} streamId
 * @returns {"result" | "closed"}
 */
export function nextStreamState(state, type, streamId) {
  const next = STREAM_TRANSITIONS[state]?.[type];
  if (next === undefined) throw new ProtocolError(`${FRAME_NAMES[type]} is not allowed on stream ${streamId} in state ${state}`);
  return next;
}

/** The capabilities both HELLO and READY announced (a feature is used only when both did). */
export function negotiatedCaps(helloCaps, readyCaps) {
  return new Set(readyCaps.filter((c) => helloCaps.includes(c)));
}

/** Rule 5: a frame of an optional feature needs its negotiated capability. */
export function checkFrameCap(type, caps) {
  const cap = FRAME_CAPS[type];
  if (cap !== undefined && !caps.has(cap)) throw new ProtocolError(`${FRAME_NAMES[type]} needs the "${cap}" capability, which was not negotiated`);
}

/** One connection seen from the relay, as a pure state machine (tests, vectors). */
export class RelayConnection {
  /** @param {{limits: {max_frame: number, stream_window: number, connection_window: number, max_streams: number}}} options */
  constructor({ limits }) {
    this.limits = limits;
    this.state = "await_hello";
    this.streams = new Map(); // id -> {state, window, queryId}
    this.lastStream = 0;
    this.maxStreams = limits.max_streams;
    this.window = limits.connection_window;
    this.goawaySent = false;
    this.goawayReceived = false;
    this.helloCaps = [];
    /** Capabilities both sides announced (set when READY arrives). */
    this.caps = new Set();
    this.reader = new FrameReader({ maxPayload: limits.max_frame });
  }

  fail(err) {
    this.state = "error";
    throw err;
  }

  /** This side sends one frame (HELLO, QUERY, CANCEL, CREDIT, PING, PONG, DRAIN, GOAWAY). */
  send(frame) {
    const event = decodePayload(frame);
    switch (frame.type) {
      case FrameType.HELLO:
        if (this.state !== "await_hello") this.fail(new ProtocolError("HELLO sent twice"));
        this.helloCaps = event.fields.caps;
        this.state = "await_ready";
        return;
      case FrameType.GOAWAY:
        this.goawaySent = true;
        return;
      case FrameType.QUERY:
        if (this.state !== "open") this.fail(new ProtocolError("QUERY before READY"));
        if (frame.streamId <= this.lastStream) this.fail(new ProtocolError("QUERY stream id not above the last one"));
        if (this.streams.size >= this.maxStreams) this.fail(new ProtocolError("too many streams", { errorCode: ErrorCode.LIMITS_TOO_MANY_QUERIES }));
        this.lastStream = frame.streamId;
        this.streams.set(frame.streamId, { state: "open", window: this.limits.stream_window, queryId: event.queryId });
        return;
      case FrameType.CREDIT:
        if (frame.streamId === 0) this.window += event.increment;
        else if (this.streams.has(frame.streamId)) this.streams.get(frame.streamId).window += event.increment;
        return;
      default:
        if (this.state !== "open") this.fail(new ProtocolError(`${FRAME_NAMES[frame.type]} before READY`));
    }
  }

  /** Feed received bytes (any split); returns the events parsed. Throws ProtocolError. */
  receive(bytes) {
    if (this.state === "error") throw new ProtocolError("the connection already failed");
    this.reader.feed(bytes);
    const events = [];
    for (;;) {
      let frame;
      try {
        frame = this.reader.nextFrame();
      } catch (err) {
        this.fail(err);
      }
      if (frame === null) return events;
      if (this.goawayReceived) this.fail(new ProtocolError(`${FRAME_NAMES[frame.type]} frame after GOAWAY`));
      try {
        checkFrameRule(frame, "connector");
        const event = decodePayload(frame);
        if (this.apply(frame, event)) events.push(event);
      } catch (err) {
        if (err instanceof ProtocolError) this.fail(err);
        throw err;
      }
    }
  }

  apply(frame, event) {
    const { type, streamId } = frame;
    if (type === FrameType.GOAWAY) {
      this.goawayReceived = true;
      return true;
    }
    if (this.state === "await_ready" && type === FrameType.READY) {
      this.maxStreams = Math.min(this.maxStreams, event.maxStreams);
      this.caps = negotiatedCaps(this.helloCaps, event.caps);
      this.state = "open";
      return true;
    }
    if (this.state !== "open" || type === FrameType.READY) throw new ProtocolError(`${FRAME_NAMES[type]} is not allowed in state ${this.state}`);
    checkFrameCap(type, this.caps);
    if (type === FrameType.CHECKPOINT) return true;
    if (type === FrameType.PING || type === FrameType.PONG || type === FrameType.DRAIN) return true;
    const stream = this.streams.get(streamId);
    if (stream === undefined) throw new ProtocolError(`${FRAME_NAMES[type]} on stream ${streamId}, which is not open`);
    const next = nextStreamState(stream.state, type, streamId);
    if (type === FrameType.COLUMNS || type === FrameType.ROWS) {
      const n = frame.payload.byteLength;
      if (n > stream.window || n > this.window) throw new ProtocolError(`${n} payload bytes exceed the send window`);
      stream.window -= n;
      this.window -= n;
    }
    stream.state = next;
    if (next === "closed") this.streams.delete(streamId);
    return true;
  }

  /** The transport ended: transport.lost for every open stream (lowest id first), then the end. */
  eof() {
    const events = [...this.streams.keys()]
      .sort((a, b) => a - b)
      .map((id) => ({ type: FrameType.ERROR, name: "ERROR", streamId: id, data: new TextEncoder().encode(lostRecordText(this.streams.get(id).queryId)) }));
    this.streams.clear();
    const clean = this.state !== "error" && (this.goawaySent || this.goawayReceived) && this.reader.buffered === 0;
    events.push({ type: "lost", clean });
    if (this.state !== "error") this.state = "closed";
    return events;
  }
}
