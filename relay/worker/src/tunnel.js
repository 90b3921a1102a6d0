/**
 * The `Tunnel` Durable Object: one per tunnel (or per shard `tunnel#k`). It terminates the
 * connectors' WebSockets with the Hibernation API and turns HTTP queries into edgetds/1 streams.
 *
 * What lives where (the object can be evicted whenever no event is running, and rebuilt):
 * - Per connector socket, in its attachment (survives hibernation): connector id, session id,
 *   handshake state, next stream id, negotiated max streams / max frame, draining flag, and the
 *   streams it CANCELled whose DONE/ERROR has not arrived yet.
 * - A connection under probe (see probe(): keepalive, dispatch, probeSiblings): `probeAt` in its
 *   attachment, so the alarm that closes it if it stays silent survives hibernation.
 * - Each connector's latest signed audit checkpoint (SPEC 5.2): `ckpt:<connector>` in DO storage,
 *   `{checkpoint, received_at}`, the highest seq this shard received (the Worker asks every shard).
 * - Replayed connector tokens: `jti:<connector>:<jti>` keys in DO storage until exp + leeway
 *   (expired ones are dropped on the next connect). The one alarm closes connectors that never
 *   answered HELLO and probed ones that stayed silent; it is deleted once none is left, so that
 *   an idle object can hibernate.
 * - In memory only: when each connection last sent a frame (unknown after hibernation, which
 *   counts as long silent), and the keepalive timer, which exists only while queries are in
 *   flight (the object is awake for them anyway).
 * - In memory only: each connection's PING budget (the Python relay's: burst 20, 5/s; beyond it
 *   GOAWAY protocol.error + 1002). It restarts full when the object wakes from hibernation, which
 *   gives nothing away: the object hibernates only after seconds of silence, and a budget refills
 *   whole in 4 s.
 * - In memory only: the open HTTP streams and their credit windows. An open stream is an HTTP
 *   request in flight, and the runtime never hibernates an object with a request in flight, so
 *   nothing here is lost to hibernation; an eviction (deploy, ctx.abort()) kills both the sockets
 *   and the requests, and every client sees a typed error or a missing terminal record.
 *
 * Frames are routed by header only: COLUMNS/ROWS/DONE/ERROR payload bytes go to the HTTP body as
 * they are (the one-line records are checked, ROWS bytes are not parsed). CREDIT is re-granted as
 * the client reads (write promise resolves), once half a window is consumed, and flushed when a
 * stream ends so the connection window is whole again when the object goes idle.
 */

import { DurableObject } from "cloudflare:workers";

import { canonicalJson, CHECKPOINT_CONTEXT, hex, makeAttestation, parsePublicKey, queryPayload, signHello, TOKEN_LEEWAY, verifySigned } from "./auth.js";
import { loadConfig } from "./config.js";
import {
  CHECKPOINT_CAP,
  checkFrameRule,
  CloseCode,
  concatBytes,
  creditPayload,
  decodePayload,
  DEFAULT_LIMITS,
  encodeFrame,
  ErrorCode,
  FrameType,
  httpStatus,
  ProtocolError,
  splitMessage,
} from "./frames.js";
import { errorRecord, errorResponse, HttpError, jsonResponse } from "./http.js";
import { FairAdmission, RateLimiter } from "./limits.js";
import { keepaliveDue, preferAnswering, PROBE_TIMEOUT_MS, silentSinceQuery } from "./liveness.js";
import { checkFrameCap, LOST_MESSAGE, lostRecordText, negotiatedCaps, nextStreamState } from "./session.js";

const CONNECTOR_TAG = "conn";
/** Each PING costs a PONG: a connector that floods them is cut off (relay/session.py, same numbers). */
const PING_BURST = 20;
const PING_RATE = 5;
const NDJSON_HEADERS = { "content-type": "application/x-ndjson", "cache-control": "no-store" };
/** Most queries waiting for a slot of one object; beyond it a full tunnel refuses at once. */
const MAX_WAITING = 10_000;

/** Relay-side limits announced in HELLO (SPEC defaults). */
export const RELAY_LIMITS = DEFAULT_LIMITS;
/** Capabilities announced in HELLO (SPEC 6.2). */
export const RELAY_CAPS = Object.freeze([CHECKPOINT_CAP]);

const encoder = new TextEncoder();

function lostRecord(queryId) {
  return encoder.encode(lostRecordText(queryId));
}

/** 413 request.too_large when the statement is longer than the connector accepts. */
function checkSize(req, limit) {
  if (req.sql_bytes > limit) {
    throw new HttpError(ErrorCode.REQUEST_TOO_LARGE, `'sql' is ${req.sql_bytes} bytes (UTF-8); the connector accepts statements up to ${limit}: send a shorter statement, pass values as parameters, or use a named query`);
  }
}

export class Tunnel extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    /** Identifies this in-memory instance (tests see a new one after hibernation or reset). */
    this.instance = crypto.randomUUID();
    this.constructedAt = Date.now();
    /** `${sessionId}:${streamId}` -> stream state (HTTP request in flight). */
    this.streams = new Map();
    /** sessionId -> {size, pending}: the connection receive window. */
    this.connWindows = new Map();
    this.roundRobin = 0;
    /** sessionId -> PING token bucket (see the header: restarts full after hibernation). */
    this.pings = new RateLimiter({ rate: PING_RATE, burst: PING_BURST, maxKeys: 10_000 });
    /** sessionId -> Date.now() of its last message (unknown after hibernation: long silent). */
    this.lastReceived = new Map();
    /** The keepalive check: a timer that runs only while queries are in flight (keepalive()). */
    this.keepaliveTimer = null;
    /** Checkpoints are verified and stored one after the other, in the order they arrived. */
    this.checkpoints = Promise.resolve();
    /**
     * Fair admission (relay/registry.py's twin): per-identity caps, and a full tunnel's waiters
     * served fewest-in-flight identity first. In memory only: every admitted or waiting query is
     * an HTTP request in flight, so the object is awake for all of them.
     */
    this.admission = new FairAdmission({ maxWaiting: MAX_WAITING });
    /** Slots granted whose QUERY is not sent yet (so a slot is never promised twice). */
    this.reserved = 0;
    /** query_id -> its waiting slot (a client that hangs up leaves the queue: cancel()). */
    this.waitingSlots = new Map();
  }

  // ------------------------------------------------------------------------------ HTTP entry

  async fetch(request) {
    const url = new URL(request.url);
    try {
      switch (url.pathname) {
        case "/connect":
          return await this.connect(request);
        case "/query":
          return await this.query(request);
        case "/status":
          return jsonResponse(200, this.status());
        case "/remember":
          return await this.remember(request);
        case "/forget":
          return await this.forget(request);
        case "/cancel":
          return await this.cancel(request);
        case "/checkpoint":
          return jsonResponse(200, (await this.ctx.storage.get(`ckpt:${url.searchParams.get("connector")}`)) ?? null);
        case "/_test/state":
          return jsonResponse(200, { ...this.status(), admission: this.admission.statistics(), instance: this.instance, constructed_at: this.constructedAt });
        case "/_test/abort":
          // A reset as the platform does it (code update, eviction): every socket and request dies.
          this.ctx.abort("edgetds test hook: reset");
          return jsonResponse(200, {});
        default:
          return jsonResponse(404, errorRecord("request.invalid", "unknown Durable Object path"));
      }
    } catch (err) {
      if (err instanceof HttpError) return errorResponse(err);
      console.error(`tunnel DO ${url.pathname} failed: ${err?.stack ?? err}`);
      return errorResponse(new HttpError(ErrorCode.INTERNAL, "internal relay error (see the Worker logs)"));
    }
  }

  status() {
    const open = this.connectors().filter(({ att }) => att.state === "open");
    const ids = [...new Set(open.map(({ att }) => att.connectorId))].sort();
    return {
      connector_ids: ids,
      connectors: ids.length,
      connections: open.length,
      draining: open.filter(({ att }) => att.draining).length,
      streams: this.streams.size,
    };
  }

  /** Every connector socket with its attachment. */
  connectors() {
    return this.ctx.getWebSockets(CONNECTOR_TAG).map((ws) => ({ ws, att: ws.deserializeAttachment() }));
  }

  // --------------------------------------------------------------------------- connector side

  async connect(request) {
    // The Worker verified the token; this header is built by the Worker, never by a client.
    const claims = JSON.parse(request.headers.get("x-edgetds-connector"));
    const config = await loadConfig(this.env);
    // During a gradual deploy an older Worker version (older TUNNELS) may have verified the
    // token: accept only a key this object's own configuration still registers (SPEC 8.2).
    const registered = [config.tunnels[claims.tunnel]?.[claims.connectorId] ?? []].flat();
    if (!registered.some((k) => hex(parsePublicKey(k)) === claims.publicKeyHex)) {
      return errorResponse(new HttpError(ErrorCode.AUTH_CONNECTOR_REJECTED, "this connector key is not registered for the tunnel (any more)", { status: 401 }));
    }
    const key = `jti:${claims.connectorId}:${claims.jti}`;
    if ((await this.ctx.storage.get(key)) !== undefined) {
      return errorResponse(new HttpError(ErrorCode.AUTH_REPLAY, "connector token was already used; mint a fresh token per connection"));
    }
    await this.forgetExpiredTokens();
    await this.ctx.storage.put(key, (claims.exp + TOKEN_LEEWAY) * 1000);
    // The one alarm: handshake deadlines and probes (deleted when none is left, so an idle object
    // can hibernate).
    await this.scheduleAlarm(Date.now() + config.limits.handshake_timeout_s * 1000);

    const [client, server] = Object.values(new WebSocketPair());
    const sessionId = crypto.randomUUID();
    this.ctx.acceptWebSocket(server, [CONNECTOR_TAG, `${CONNECTOR_TAG}:${claims.connectorId}`.slice(0, 256)]);
    const att = {
      connectorId: claims.connectorId,
      tunnel: claims.tunnel,
      connectorKeyHex: claims.publicKeyHex,
      sessionId,
      state: "hello",
      nextStream: 1,
      maxStreams: 0,
      maxFrame: RELAY_LIMITS.max_frame,
      draining: false,
      connectedAt: Date.now(),
    };
    server.serializeAttachment(att);
    const hello = await signHello(config.relayKey, {
      sessionId,
      tunnel: claims.tunnel,
      connectorId: claims.connectorId,
      nonce: claims.nonce,
      limits: RELAY_LIMITS,
      caps: RELAY_CAPS,
    });
    server.send(encodeFrame(FrameType.HELLO, 0, canonicalJson(hello)));
    return new Response(null, { status: 101, webSocket: client, headers: { "sec-websocket-protocol": "edgetds.v1" } });
  }

  /** Drop replay records past their token's exp + leeway (done on connect: no timer needed). */
  async forgetExpiredTokens() {
    const now = Date.now();
    const expired = [];
    for (const [key, forgetAt] of await this.ctx.storage.list({ prefix: "jti:" })) if (forgetAt <= now) expired.push(key);
    for (let i = 0; i < expired.length; i += 128) await this.ctx.storage.delete(expired.slice(i, i + 128));
  }

  /** No handshake or probe left to time: delete the alarm, so that an idle object can hibernate. */
  dropIdleAlarm() {
    if (!this.connectors().some(({ att }) => att.state === "hello" || att.probeAt !== undefined)) this.ctx.storage.deleteAlarm();
  }

  /** Arm the one alarm for `at` unless it is due earlier already (alarm() re-arms for the rest). */
  async scheduleAlarm(at, stillNeeded = () => true) {
    const current = await this.ctx.storage.getAlarm();
    if ((current === null || at < current) && stillNeeded()) await this.ctx.storage.setAlarm(at);
  }

  /** Close connectors that never answered HELLO with READY, and probed ones that stayed silent. */
  async alarm() {
    const config = await loadConfig(this.env);
    const now = Date.now();
    let next = Infinity;
    for (const { ws, att } of this.connectors()) {
      if (att.state === "hello") {
        const deadline = att.connectedAt + config.limits.handshake_timeout_s * 1000;
        if (deadline <= now) this.fail(ws, att, new ProtocolError(`no READY within ${config.limits.handshake_timeout_s} s of HELLO`));
        else next = Math.min(next, deadline);
      } else if (att.probeAt !== undefined) {
        const deadline = att.probeAt + PROBE_TIMEOUT_MS;
        if (deadline <= now) this.closeSession(ws, att, CloseCode.GOING_AWAY, "no answer to PING");
        else next = Math.min(next, deadline);
      }
    }
    if (next !== Infinity) await this.ctx.storage.setAlarm(next);
  }

  /**
   * Keepalive, only while queries are in flight: the object is awake for their requests anyway,
   * so a timer costs nothing then, and it is cleared with the last stream so that an idle object
   * can hibernate (an idle dead link is found when its connector reconnects, probeSiblings, or
   * when a query is placed on it, dispatch). A connection carrying a stream that has sent nothing
   * for ping_interval_s is probed; silent PROBE_TIMEOUT_MS more, the alarm closes it and its
   * streams end transport.lost, instead of waiting for their deadline on a link that died.
   */
  keepalive(intervalMs) {
    clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    if (!this.streams.size) return;
    const now = Date.now();
    const busy = new Set([...this.streams.values()].map((stream) => stream.sessionId));
    const { probe, next } = keepaliveDue({ connections: this.connectors(), busy, lastReceived: this.lastReceived, now, intervalMs });
    if (probe.map(({ ws, att }) => this.probe(ws, att, now)).some(Boolean)) this.armProbeAlarm(now);
    this.keepaliveTimer = setTimeout(() => this.keepalive(intervalMs), next - now);
  }

  /** When the connection last sent a frame (0 if unknown: the object hibernated since). */
  silentSince(att) {
    return this.lastReceived.get(att.sessionId) ?? 0;
  }

  /** Send a PING that must be answered (by any frame) within PROBE_TIMEOUT_MS; false if gone. */
  probe(ws, att, now) {
    try {
      ws.send(encodeFrame(FrameType.PING, 0, crypto.getRandomValues(new Uint8Array(8))));
    } catch {
      return false; // already closed: webSocketClose ends it
    }
    att.probeAt = now;
    ws.serializeAttachment(att);
    return true;
  }

  /** The alarm that closes probed connections which stay silent (it survives hibernation). */
  armProbeAlarm(now) {
    // (a probe answered while getAlarm ran needs no alarm: the object may hibernate)
    const pending = () => this.connectors().some(({ att: a }) => a.probeAt !== undefined);
    this.scheduleAlarm(now + PROBE_TIMEOUT_MS, pending).catch((err) => console.error(`probe alarm failed: ${err?.message ?? err}`));
  }

  /**
   * A connector that opens a connection may have lost its others without either end being told
   * (a black-holed network: the connector gave up on them, the runtime did not, and the
   * connector's WebSocket-level pings never reach this object). So its other connections get an
   * edgetds PING and no new query; one that sends no frame within PROBE_TIMEOUT_MS is closed and
   * its streams end transport.lost, instead of queries waiting on it until their deadline.
   */
  probeSiblings(att) {
    const now = Date.now();
    let probed = false;
    for (const other of this.connectors()) {
      const o = other.att;
      if (o.sessionId === att.sessionId || o.connectorId !== att.connectorId || o.state !== "open" || o.probeAt !== undefined) continue;
      probed = this.probe(other.ws, o, now) || probed;
    }
    if (probed) this.armProbeAlarm(now);
  }

  webSocketMessage(ws, message) {
    const att = ws.deserializeAttachment();
    if (att.state === "closed") return; // declared dead and closed here: a late frame changes nothing
    this.lastReceived.set(att.sessionId, Date.now());
    if (att.probeAt !== undefined) {
      delete att.probeAt; // any frame answers a probe
      ws.serializeAttachment(att);
      this.dropIdleAlarm();
    }
    if (typeof message === "string") {
      this.fail(ws, att, new ProtocolError("text message received; edgetds/1 is binary-only", { closeCode: CloseCode.UNSUPPORTED_DATA }));
      return;
    }
    try {
      for (const frame of splitMessage(new Uint8Array(message), { maxPayload: RELAY_LIMITS.max_frame })) {
        checkFrameRule(frame, "connector");
        this.onFrame(ws, att, decodePayload(frame));
      }
      return this.checkpoints; // the runtime keeps the object alive until they are stored
    } catch (err) {
      if (!(err instanceof ProtocolError)) console.error(`connector frame handling failed: ${err?.stack ?? err}`);
      this.fail(ws, att, err instanceof ProtocolError ? err : new ProtocolError("internal relay error", { errorCode: ErrorCode.INTERNAL, closeCode: CloseCode.INTERNAL_ERROR }));
    }
  }

  onFrame(ws, att, event) {
    if (att.state === "hello") {
      if (event.type === FrameType.GOAWAY) return this.closeSession(ws, att, CloseCode.NORMAL, "goaway");
      if (event.type !== FrameType.READY) throw new ProtocolError(`${event.name} before READY`);
      if (event.connectorId !== att.connectorId) {
        throw new ProtocolError("READY names another connector id than its token", { errorCode: ErrorCode.AUTH_CONNECTOR_REJECTED, closeCode: CloseCode.AUTH_FAILED });
      }
      att.state = "open";
      att.maxStreams = Math.min(event.maxStreams, RELAY_LIMITS.max_streams);
      att.maxFrame = event.maxFrame;
      att.caps = [...negotiatedCaps(RELAY_CAPS, event.caps)];
      att.maxStatementBytes = event.maxStatementBytes;
      ws.serializeAttachment(att);
      this.probeSiblings(att);
      this.dropIdleAlarm();
      this.pump();
      return undefined;
    }
    checkFrameCap(event.type, new Set(att.caps ?? []));
    switch (event.type) {
      case FrameType.READY:
        throw new ProtocolError("READY sent twice");
      case FrameType.CHECKPOINT:
        this.checkpoints = this.checkpoints.then(() => this.storeCheckpoint(att, event.fields));
        return undefined;
      case FrameType.COLUMNS:
      case FrameType.ROWS:
      case FrameType.DONE:
      case FrameType.ERROR:
        return this.onResult(ws, att, event);
      case FrameType.PING:
        if (this.pings.spend(att.sessionId, Date.now() / 1000) > 0) {
          throw new ProtocolError(`PING flood: more than ${PING_BURST} PINGs at once or ${PING_RATE}/s sustained`);
        }
        ws.send(encodeFrame(FrameType.PONG, 0, event.data));
        return undefined;
      case FrameType.PONG:
        return undefined;
      case FrameType.DRAIN:
        att.draining = true;
        ws.serializeAttachment(att);
        return undefined;
      case FrameType.GOAWAY:
        return this.closeSession(ws, att, CloseCode.NORMAL, "goaway received");
      default:
        throw new ProtocolError(`unexpected ${event.name}`);
    }
  }

  /**
   * Keep a connector's signed audit checkpoint if it verifies under one of the connector id's
   * registered keys and does not go backwards (relay/checkpoints.py, the same rules; SPEC 5.2).
   * A refused one is logged, never stored; the connection stays.
   */
  async storeCheckpoint(att, fields) {
    try {
      const config = await loadConfig(this.env);
      const keys = [config.tunnels[att.tunnel]?.[att.connectorId] ?? []].flat();
      let verified = fields.connector_id === att.connectorId && fields.tunnel === att.tunnel;
      if (verified) verified = (await Promise.all(keys.map((k) => verifySigned(parsePublicKey(k), CHECKPOINT_CONTEXT, fields)))).some(Boolean);
      const where = `tunnel=${att.tunnel} connector=${att.connectorId}`;
      if (!verified) {
        console.warn(`audit.checkpoint_invalid ${where}: it does not name this connection's connector and tunnel, or no registered key verifies it`);
        return;
      }
      const key = `ckpt:${att.connectorId}`;
      const entry = await this.ctx.storage.get(key);
      const held = entry?.checkpoint;
      if (held !== undefined && (fields.seq < held.seq || (fields.seq === held.seq && fields.head !== held.head))) {
        console.warn(`audit.checkpoint_regressed ${where}: seq ${fields.seq} after seq ${held.seq}; the connector's audit log lost its end or was replaced; the higher checkpoint is kept`);
        // the checkpoint held at the first regression stays as evidence (see relay/checkpoints.py)
        if (!entry.conflict) await this.ctx.storage.put(key, { ...entry, conflict: held });
        return;
      }
      await this.ctx.storage.put(key, { checkpoint: fields, received_at: Math.floor(Date.now() / 1000), conflict: entry?.conflict ?? null });
    } catch (err) {
      console.error(`storing an audit checkpoint failed: ${err?.stack ?? err}`);
    }
  }

  /** The connection receive window of a session (rebuilt whole after hibernation: see header). */
  connWindow(sessionId) {
    let win = this.connWindows.get(sessionId);
    if (win === undefined) {
      win = { size: RELAY_LIMITS.connection_window, pending: 0 };
      this.connWindows.set(sessionId, win);
    }
    return win;
  }

  onResult(ws, att, event) {
    const stream = this.streams.get(`${att.sessionId}:${event.streamId}`);
    const flowed = event.type === FrameType.COLUMNS || event.type === FrameType.ROWS;
    const n = event.data.byteLength;
    if (flowed) {
      const win = this.connWindow(att.sessionId);
      win.size -= n;
      if (win.size < 0) throw new ProtocolError("connector overran the connection window");
    }
    if (stream === undefined) {
      // Only a stream this relay CANCELled (client gone, deadline) may still carry frames: they are
      // discarded (and credited) until its DONE/ERROR. The ids live in the socket's attachment, so
      // a late answer after hibernation is still recognised. Any other id is not open: an error.
      const cancelled = att.cancelled ?? [];
      if (!cancelled.includes(event.streamId)) throw new ProtocolError(`${event.name} on stream ${event.streamId}, which is not open`);
      if (flowed) this.grantConnection(ws, att, n, true);
      if (event.type === FrameType.DONE || event.type === FrameType.ERROR) {
        att.cancelled = cancelled.filter((id) => id !== event.streamId);
        ws.serializeAttachment(att);
      }
      return;
    }
    stream.state = nextStreamState(stream.state, event.type, event.streamId); // the table (session.js)
    if (flowed) {
      stream.window -= n;
      if (stream.window < 0) throw new ProtocolError(`connector overran the window of stream ${event.streamId}`);
    }
    if (stream.state === "closed") {
      this.streams.delete(stream.key);
      stream.finished = true;
    }
    if (!stream.started) {
      if (event.type === FrameType.ERROR) {
        // Nothing was streamed yet: the status can still say what happened.
        stream.redispatching = event.code === ErrorCode.CONNECTOR_DRAINING; // keeps its slot
        this.settle(stream);
        if (event.code === ErrorCode.CONNECTOR_DRAINING) {
          this.redispatch(ws, att, stream, event.data);
          return;
        }
        const status = httpStatus(event.code);
        // A connector's limit (429): the client should come back later.
        const retry = status === 429 ? { "retry-after": "1" } : {};
        stream.respond(new Response(event.data, { status, headers: { "content-type": "application/json", "cache-control": "no-store", ...retry } }));
        return;
      }
      this.start(stream);
    }
    this.write(stream, event.data, flowed ? n : 0);
    if (stream.finished) {
      this.settle(stream);
      stream.writer.close().catch(() => {});
    }
  }

  /** Answer 200 and start streaming the body. */
  start(stream) {
    const { readable, writable } = new TransformStream();
    stream.writer = writable.getWriter();
    stream.started = true;
    stream.writer.closed.catch(() => this.clientGone(stream));
    stream.respond(new Response(readable, { status: 200, headers: { ...NDJSON_HEADERS, "x-edgetds-query-id": stream.queryId } }));
  }

  write(stream, data, flowed) {
    stream.writer.write(data).then(
      () => {
        if (flowed) this.credit(stream, flowed);
      },
      () => this.clientGone(stream),
    );
  }

  /** Bytes reached the client: re-grant stream and connection credit (once half is consumed). */
  credit(stream, n) {
    const { ws } = stream;
    if (ws.readyState !== WebSocket.OPEN) return;
    const frames = [];
    if (!stream.finished && !stream.cancelled) {
      stream.pending += n;
      if (stream.pending * 2 >= RELAY_LIMITS.stream_window) {
        frames.push(encodeFrame(FrameType.CREDIT, stream.streamId, creditPayload(stream.pending)));
        stream.window += stream.pending;
        stream.pending = 0;
      }
    }
    const win = this.connWindow(stream.sessionId);
    win.pending += n;
    if (win.pending * 2 >= RELAY_LIMITS.connection_window || (stream.finished && this.idleSession(stream.sessionId))) {
      frames.push(encodeFrame(FrameType.CREDIT, 0, creditPayload(win.pending)));
      win.size += win.pending;
      win.pending = 0;
    }
    if (frames.length) ws.send(concatBytes(frames));
  }

  idleSession(sessionId) {
    for (const stream of this.streams.values()) if (stream.sessionId === sessionId) return false;
    return true;
  }

  /** Give back connection credit for bytes nobody will read (cancelled or unknown stream). */
  grantConnection(ws, att, n, flush) {
    const win = this.connWindow(att.sessionId);
    win.pending += n;
    if (win.pending > 0 && (flush || win.pending * 2 >= RELAY_LIMITS.connection_window)) {
      ws.send(encodeFrame(FrameType.CREDIT, 0, creditPayload(win.pending)));
      win.size += win.pending;
      win.pending = 0;
    }
  }

  /** The HTTP client went away (or its body was cancelled): CANCEL the stream once. */
  clientGone(stream) {
    if (stream.cancelled || stream.finished) return;
    stream.cancelled = true;
    this.settle(stream);
    const { ws } = stream;
    if (ws.readyState === WebSocket.OPEN) {
      const att = ws.deserializeAttachment();
      att.cancelled = [...(att.cancelled ?? []), stream.streamId].slice(-512); // bounded (16 KiB)
      ws.serializeAttachment(att);
      ws.send(encodeFrame(FrameType.CANCEL, stream.streamId, canonicalJson({ reason: "client went away" })));
    }
  }

  settle(stream) {
    clearTimeout(stream.timer);
    this.streams.delete(stream.key);
    if (!this.streams.size) {
      clearTimeout(this.keepaliveTimer); // idle: nothing may keep the object awake
      this.keepaliveTimer = null;
    }
    if (!stream.redispatching) this.giveBack(stream.job.slot);
  }

  /** End every stream of a session with the typed transport.lost record. */
  endSession(att) {
    this.pings.buckets.delete(att.sessionId);
    this.lastReceived.delete(att.sessionId);
    for (const stream of [...this.streams.values()]) {
      if (stream.sessionId !== att.sessionId) continue;
      this.settle(stream);
      stream.finished = true;
      if (stream.cancelled) continue;
      if (!stream.started) {
        stream.respond(errorResponse(new HttpError(ErrorCode.TRANSPORT_LOST, LOST_MESSAGE, { queryId: stream.queryId })));
      } else {
        stream.writer.write(lostRecord(stream.queryId)).catch(() => {});
        stream.writer.close().catch(() => {});
      }
    }
    this.connWindows.delete(att.sessionId);
  }

  closeSession(ws, att, code, reason) {
    this.endSession(att);
    try {
      // A socket whose peer is gone stays listed (CLOSING) until the runtime gives up on it: the
      // attachment says it no longer counts or serves.
      att.state = "closed";
      delete att.probeAt;
      ws.serializeAttachment(att);
      ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  /** A protocol violation: GOAWAY with the code, close, end its streams. */
  fail(ws, att, err) {
    try {
      const goaway = { code: err.errorCode, message: err.message.slice(0, 200), last_stream: att.nextStream - 1 };
      ws.send(encodeFrame(FrameType.GOAWAY, 0, canonicalJson(goaway)));
    } catch {
      // socket already gone
    }
    this.closeSession(ws, att, err.closeCode, err.errorCode);
  }

  webSocketClose(ws, code, reason) {
    this.closeSession(ws, ws.deserializeAttachment(), CloseCode.NORMAL, "closed");
  }

  webSocketError(ws, error) {
    this.closeSession(ws, ws.deserializeAttachment(), CloseCode.INTERNAL_ERROR, "error");
  }

  // ---------------------------------------------------------------------------------- queries

  /** Streams per session (the HTTP requests in flight on it). */
  load() {
    const load = new Map();
    for (const stream of this.streams.values()) load.set(stream.sessionId, (load.get(stream.sessionId) ?? 0) + 1);
    return load;
  }

  /** The open connections; throws 503 when none can take a query now (nothing to wait for). */
  connectable() {
    const all = this.connectors().filter(({ ws, att }) => att.state === "open" && ws.readyState === WebSocket.OPEN);
    if (!all.length) throw new HttpError(ErrorCode.TUNNEL_NO_CONNECTOR, "no connector is connected to this tunnel; start `edgetds connector run` on-prem", { retryAfter: "5" });
    if (all.every(({ att }) => att.draining)) throw new HttpError(ErrorCode.CONNECTOR_DRAINING, "every connector of this tunnel is draining; retry shortly");
    return all;
  }

  tunnelFull(why) {
    return new HttpError(ErrorCode.LIMITS_TOO_MANY_QUERIES, `this tunnel is at its concurrent query limit and ${why}; retry after the Retry-After delay`, { retryAfter: "1", limit: "tunnel" });
  }

  // -------------------------------------------------------------------------------- admission

  /** Streams the open connections take now, less the slots granted but not yet used. */
  freeSlots() {
    const load = this.load();
    let free = 0;
    for (const { ws, att } of this.connectors()) {
      if (att.state === "open" && ws.readyState === WebSocket.OPEN && !att.draining) free += Math.max(0, att.maxStreams - (load.get(att.sessionId) ?? 0));
    }
    return free - this.reserved;
  }

  /** Hand every free slot to a waiting query, fairest first. */
  pump() {
    const free = this.freeSlots();
    if (free <= 0 || !this.admission.waiting()) return;
    for (const [, slot] of this.admission.grant(free)) {
      slot.granted = slot.reserved = true;
      this.reserved += 1;
      clearTimeout(slot.timer);
      slot.resolve();
    }
  }

  /**
   * Admit one query of identity `key` (relay/registry.py Tunnel.slot): refused at once at the
   * identity's cap; on a full tunnel it waits up to `waitMs` for a slot. Resolves to the slot
   * (give it back with giveBack once the query ended); throws HttpError.
   */
  async admit(key, limit, waitMs, queryId) {
    this.connectable();
    const { promise, resolve } = Promise.withResolvers();
    const slot = { key, granted: false, reserved: false, released: false, gone: false, waitedMs: 0, resolve, timer: null };
    const refusal = this.admission.offer(key, slot, limit);
    if (refusal === "identity") {
      throw new HttpError(ErrorCode.LIMITS_TOO_MANY_QUERIES, `this identity already has ${limit} queries in flight or waiting on this tunnel (max_queries_per_identity); wait for one to finish, then retry`, { retryAfter: "1", limit: "identity" });
    }
    if (refusal === "tunnel") throw this.tunnelFull(`${MAX_WAITING} queries are already waiting for a slot`);
    this.pump();
    if (slot.granted) return slot;
    const started = Date.now();
    // A timer only while a request waits (the object is awake for it anyway).
    slot.timer = setTimeout(resolve, waitMs);
    this.waitingSlots.set(queryId, slot);
    await promise;
    this.waitingSlots.delete(queryId);
    slot.waitedMs = Date.now() - started;
    if (slot.gone) throw new HttpError(ErrorCode.QUERY_CANCELLED, "the client went away while the query waited", { queryId });
    if (!slot.granted) {
      this.admission.withdraw(key, slot);
      throw this.tunnelFull(`no slot freed within ${waitMs} ms`);
    }
    return slot;
  }

  /** The slot's QUERY was sent (or never will be): its reservation ends. */
  placed(slot) {
    if (slot?.reserved) {
      slot.reserved = false;
      this.reserved -= 1;
    }
  }

  /** The slot's query ended: release it once and hand the slot on. */
  giveBack(slot) {
    if (!slot || slot.released) return;
    slot.released = true;
    this.placed(slot);
    this.admission.release(slot.key);
    this.pump();
  }

  /** Least-loaded open connector (ties: round robin); throws 503/429 when there is none. */
  pickConnector() {
    const load = this.load();
    const all = this.connectable();
    const usable = preferAnswering(all.filter(({ att }) => !att.draining && (load.get(att.sessionId) ?? 0) < att.maxStreams));
    if (!usable.length) {
      if (all.some(({ att }) => att.draining)) throw new HttpError(ErrorCode.CONNECTOR_DRAINING, "every connector of this tunnel is draining; retry shortly");
      throw this.tunnelFull("every connection is at its max streams");
    }
    const least = Math.min(...usable.map(({ att }) => load.get(att.sessionId) ?? 0));
    const candidates = usable.filter(({ att }) => (load.get(att.sessionId) ?? 0) === least);
    this.roundRobin = (this.roundRobin + 1) % 1_000_000;
    return candidates[this.roundRobin % candidates.length];
  }

  async query(request) {
    const { token, request: req, deadlineMs, identity, maxQueriesPerIdentity } = await request.json();
    const config = await loadConfig(this.env);
    const { promise, resolve } = Promise.withResolvers();
    // before admission: a statement no connection accepts neither waits for nor takes a slot
    const open = this.connectors().filter(({ ws, att }) => att.state === "open" && ws.readyState === WebSocket.OPEN);
    if (open.length) checkSize(req, Math.max(...open.map(({ att }) => att.maxStatementBytes)));
    const key = `${identity.issuer}\u0000${identity.subject}`;
    const slot = await this.admit(key, maxQueriesPerIdentity, Math.min(config.limits.admission_wait_ms, req.timeout_ms), req.query_id);
    // The admission wait counts against the query's deadline.
    const timeoutMs = Math.max(1, req.timeout_ms - slot.waitedMs);
    const options = { max_rows: req.max_rows ?? null, timeout_ms: timeoutMs };
    try {
      await this.dispatch({ token, req, options, deadlineMs: deadlineMs - (req.timeout_ms - timeoutMs), respond: resolve, slot });
    } catch (err) {
      this.giveBack(slot);
      throw err;
    }
    return promise;
  }

  /**
   * Send a query to a connector: pick, attest, allocate the stream id, send. Throws HttpError when
   * no connector can take it (nothing was sent).
   */
  async dispatch(job) {
    const { token, req, options } = job;
    const config = await loadConfig(this.env);
    let picked;
    let attestation;
    let att;
    // Stream ids must increase in the order QUERY frames are sent: the attestation is awaited
    // first, then the attachment is re-read and the id allocated and sent with no await between.
    for (let attempt = 0; ; attempt++) {
      picked = this.pickConnector();
      checkSize(req, picked.att.maxStatementBytes); // before any signing or encoding
      attestation = await makeAttestation(config.relayKey, {
        sessionId: picked.att.sessionId,
        queryId: req.query_id,
        token,
        sql: req.sql,
        query: req.query,
        paramsJson: req.params_json,
        options,
        now: Date.now() / 1000,
      });
      att = picked.ws.deserializeAttachment();
      if (picked.ws.readyState === WebSocket.OPEN && att.state === "open" && !att.draining) break;
      if (attempt === 2) throw new HttpError(ErrorCode.RELAY_OVERLOADED, "connectors kept changing while placing the query; retry");
    }
    const payload = queryPayload({ queryId: req.query_id, token, sql: req.sql, query: req.query, paramsJson: req.params_json, options, attestation });
    if (payload.byteLength > att.maxFrame) {
      throw new HttpError(ErrorCode.REQUEST_TOO_LARGE, `the query is ${payload.byteLength} bytes framed; the connector accepts at most ${att.maxFrame}`);
    }
    const streamId = att.nextStream;
    att.nextStream += 1;
    picked.ws.serializeAttachment(att);
    const stream = {
      key: `${att.sessionId}:${streamId}`,
      ws: picked.ws,
      sessionId: att.sessionId,
      streamId,
      queryId: req.query_id,
      window: RELAY_LIMITS.stream_window,
      pending: 0,
      state: "open",
      started: false,
      finished: false,
      cancelled: false,
      writer: null,
      respond: job.respond,
      job,
      timer: null,
    };
    this.streams.set(stream.key, stream);
    this.placed(job.slot);
    picked.ws.send(encodeFrame(FrameType.QUERY, streamId, payload));
    stream.sentAt = Date.now();
    // Keepalive while queries are in flight; a connection silent for ping_interval_s already (an
    // idle tunnel: WebSocket pings never reach the object) is probed at once.
    const intervalMs = config.limits.ping_interval_s * 1000;
    if (this.keepaliveTimer === null || this.silentSince(att) + intervalMs <= stream.sentAt) this.keepalive(intervalMs);
    // A backstop deadline while a request is in flight (never while idle: it would keep the object
    // awake; alarms are used for everything that outlives a request).
    stream.timer = setTimeout(() => this.deadline(stream), job.deadlineMs);
  }

  /** A connector refused the query unexecuted (connector.draining): place it on another one. */
  redispatch(ws, att, stream, errorBody) {
    att.draining = true;
    ws.serializeAttachment(att);
    this.dispatch(stream.job).catch((err) => {
      this.giveBack(stream.job.slot);
      const fallback = new Response(errorBody, { status: httpStatus(ErrorCode.CONNECTOR_DRAINING), headers: { "content-type": "application/json", "cache-control": "no-store" } });
      stream.respond(err instanceof HttpError && err.code !== ErrorCode.CONNECTOR_DRAINING ? errorResponse(err) : fallback);
    });
  }

  // ------------------------------------------------------------------ client query id replay

  /** Remember a client-supplied query_id for 10 minutes; 409 query.duplicate if seen. */
  async remember(request) {
    const { queryId, ttlMs } = await request.json();
    const key = `qid:${queryId}`;
    const now = Date.now();
    const seen = await this.ctx.storage.get(key);
    if (seen !== undefined && seen > now) {
      return errorResponse(new HttpError(ErrorCode.QUERY_DUPLICATE, "a query with this query_id was already sent; use a new query_id for a new query", { queryId }));
    }
    // Lazy purge, no alarm: each new id drops up to 256 expired ones (an index ordered by expiry).
    const expired = await this.ctx.storage.list({ prefix: "qexp:", end: `qexp:${String(now).padStart(15, "0")}`, limit: 256 });
    const stale = [...expired.keys()];
    stale.push(...[...expired.values()].map((id) => `qid:${id}`));
    for (let i = 0; i < stale.length; i += 128) await this.ctx.storage.delete(stale.slice(i, i + 128));
    const until = now + ttlMs;
    await this.ctx.storage.put({ [key]: until, [`qexp:${String(until).padStart(15, "0")}:${queryId}`]: queryId });
    return jsonResponse(200, {});
  }

  /** The Worker saw the client hang up: CANCEL the query's stream if it is still open here. */
  async cancel(request) {
    const { queryId } = await request.json();
    const waiting = this.waitingSlots.get(queryId);
    if (waiting !== undefined && !waiting.granted && this.admission.withdraw(waiting.key, waiting)) {
      waiting.gone = true; // admit() answers query.cancelled; no QUERY is ever sent for it
      clearTimeout(waiting.timer);
      waiting.resolve();
    }
    for (const stream of this.streams.values()) {
      if (stream.queryId === queryId) {
        this.clientGone(stream);
        stream.respond(errorResponse(new HttpError(ErrorCode.QUERY_CANCELLED, "the client went away", { queryId })));
      }
    }
    return jsonResponse(200, {});
  }

  /** Forget a query_id that was never sent to a connector (the client may retry with it). */
  async forget(request) {
    const { queryId } = await request.json();
    await this.ctx.storage.delete(`qid:${queryId}`);
    return jsonResponse(200, {});
  }

  deadline(stream) {
    if (stream.finished || stream.cancelled) return;
    // Nothing at all came back on the connection since this QUERY: probe it (closed if it stays
    // silent), so later queries do not wait on a dead link too. This query was sent, so it ends
    // query.timeout and is never re-sent (at-most-once).
    const att = stream.ws.readyState === WebSocket.OPEN ? stream.ws.deserializeAttachment() : null;
    const now = Date.now();
    if (att !== null && silentSinceQuery(att, this.lastReceived.get(att.sessionId), stream.sentAt) && this.probe(stream.ws, att, now)) {
      this.armProbeAlarm(now);
    }
    this.clientGone(stream); // sends CANCEL; later frames are absorbed
    const message = "the query did not finish within its timeout; it was cancelled";
    if (!stream.started) {
      stream.respond(errorResponse(new HttpError(ErrorCode.QUERY_TIMEOUT, message, { queryId: stream.queryId })));
    } else {
      stream.writer.write(errorRecord(ErrorCode.QUERY_TIMEOUT, message, { queryId: stream.queryId })).catch(() => {});
      stream.writer.close().catch(() => {});
    }
  }
}
