// @ts-check
/**
 * The `Tunnel` Durable Object: one per tunnel (or per shard `tunnel#k`). It terminates the
 * connectors' WebSockets with the Hibernation API and turns HTTP queries into edgetds/1 streams.
 * The parts, as in the Python relay: session.js (one connector WebSocket, driving the sans-I/O
 * connection.js as relay/session.py drives protocol.Connection), registry.js (the sessions, fair
 * admission, picking a connection), query.js (one HTTP query as a stream). This file wires them to
 * the runtime: the WebSocket upgrade (fetch), the RPC methods the Worker calls, the socket events,
 * the alarm, keepalive probes and audit checkpoints.
 *
 * What lives where (the object can be evicted whenever no event is running, and rebuilt):
 * - Per connector socket, in its attachment (survives hibernation): the session's identity and
 *   handshake state, and the connection's snapshot (stream states, credit windows, DRAIN/GOAWAY).
 * - A connection under probe (see probe(): keepalive, dispatch, probeSiblings): `probeAt` in its
 *   attachment, so the alarm that closes it if it stays silent survives hibernation.
 * - Each connector's latest signed audit checkpoint per audit file (SPEC 5.2; replicas of one
 *   connector write one file each): `ckptf:["<connector>","<file>"]` in DO storage,
 *   `{checkpoint, received_at, conflict}`, the highest seq this shard received (the Worker asks
 *   every shard). `ckpt:<connector>`, one per connector, is what a deployment from before kept:
 *   still read (legacyCheckpoints), never written.
 * - Replayed connector tokens: `jti:<connector>:<jti>` keys in DO storage until exp + leeway
 *   (expired ones are dropped on the next connect). The one alarm closes connectors that never
 *   answered HELLO and probed ones that stayed silent; it is deleted once none is left, so that
 *   an idle object can hibernate.
 * - In memory only: when each connection last sent a frame (unknown after hibernation, which
 *   counts as long silent), and the one timer (keepalive and the streams' deadlines), which
 *   exists only while queries are in flight (the object is awake for them anyway).
 * - In memory only: each connection's PING budget (the Python relay's: burst 20, 5/s; beyond it
 *   GOAWAY protocol.error + 1002). It restarts full when the object wakes from hibernation, which
 *   gives nothing away: the object hibernates only after seconds of silence, and a budget refills
 *   whole in 4 s.
 * - In memory only: the HTTP queries in flight (query.js says why nothing is lost there).
 * - Sessions (transactions across requests, sessions.js): the open ones in the attachment of the
 *   connector socket they are pinned to, ended ones as tombstones in DO storage (`send:<id>`,
 *   `sexp:<at>:<id>`) for 10 minutes; the operation in flight per session in memory.
 * - Enrolled connector keys (SPEC 8.7), only in the tunnel's enrolment object: the object named
 *   `<tunnel>` (enrolmentObject(); with TUNNEL_SHARDS = 1 that is the tunnel's one object, so its
 *   connect-path lookups are local storage reads). `enr:<connector id>` holds the connector id's
 *   enrolled key `{public_key, key_id, jti, enrolled_at}` (one per id: a new enrolment replaces
 *   it), `ejti:<jti>` each consumed enrolment token until its exp + leeway (ms); both written in
 *   one storage transaction (enroll()). A connector id's registered keys are TUNNELS' keys for it
 *   plus its enrolled key (registeredKeys()); a key that stops being registered drains the
 *   connections it opened (rekey()), which the alarm closes at `closeAt` if they stay.
 *
 * Frames are routed by header: COLUMNS/ROWS/DONE/ERROR payload bytes go to the HTTP body as they
 * are (the one-line records are checked, ROWS bytes are not parsed).
 */

import { DurableObject } from "cloudflare:workers";

import { CHECKPOINT_CONTEXT, hex, parsePublicKey, signHello, TOKEN_LEEWAY, verifySigned } from "./auth.js";
import { loadConfig } from "./config.js";
import { ENROLL_LEEWAY } from "./enroll.js";
import { CloseCode, ErrorCode, FrameType, ProtocolError } from "./frames.js";
import { errorResponse, HttpError } from "./http.js";
import { RateLimiter } from "./limits.js";
import { keepaliveDue, PROBE_TIMEOUT_MS, silentSinceQuery } from "./liveness.js";
import { Queries } from "./query.js";
import { Tunnel as Routes } from "./registry.js";
import { SessionOps } from "./sessionops.js";
import { SessionTable } from "./sessions.js";
import { CONNECTOR_TAG, ConnectorSession, PING_BURST, PING_RATE, RELAY_CAPS, RELAY_LIMITS } from "./session.js";

export { RELAY_CAPS, RELAY_LIMITS };

/** The audit files per connector id whose checkpoints one object keeps (relay/checkpoints.py MAX_FILES). */
export const MAX_CHECKPOINT_FILES = 64;

/**
 * @typedef {import("./query.js").QueryCall} QueryCall
 * @typedef {import("./query.js").HttpStream} HttpStream
 * @typedef {import("./connection.js").FrameEvent} FrameEvent
 * @typedef {{checkpoint: Record<string, any>, received_at: number, conflict: Record<string, any> | null}} CheckpointEntry
 *   a connector's latest checkpoint of one audit file, and the one held when it first went back
 */

/**
 * The object that keeps a tunnel's enrolled keys: the one named `<tunnel>` whatever
 * TUNNEL_SHARDS is (so changing it loses no enrolment).
 * @param {Record<string, any>} env @param {string} tunnel
 * @returns {DurableObjectStub<Tunnel>}
 */
export function enrolmentObject(env, tunnel) {
  return env.TUNNEL.get(env.TUNNEL.idFromName(tunnel));
}

/**
 * What enroll() is given: a request that passed every check but the jti's (enroll.js).
 * @typedef {{connectorId: string, publicKey: string, keyId: string, jti: string, exp: number}} Enrolment
 */

/** @extends {DurableObject<Record<string, any>>} */
export class Tunnel extends DurableObject {
  /** @param {DurableObjectState} ctx @param {Record<string, any>} env */
  constructor(ctx, env) {
    super(ctx, env);
    this.routes = new Routes(ctx);
    this.queries = new Queries(this.routes, env, {
      sent: (session, sentAt, intervalMs, deadlineAt) => this.sent(session, sentAt, intervalMs, deadlineAt),
      idle: () => this.idle(),
      deadline: (stream) => this.probeSilent(stream),
    });
    /** Transactions across requests: the table (sessions.js) and the endpoints (sessionops.js). */
    this.sessionTable = new SessionTable(ctx.storage);
    this.sessionOps = new SessionOps(this.routes, this.queries, this.sessionTable);
    /** sessionId -> PING token bucket (see the header: restarts full after hibernation). */
    this.pings = new RateLimiter({ rate: PING_RATE, burst: PING_BURST, maxKeys: 10_000 });
    /** @type {Map<string, number>} sessionId -> Date.now() of its last message (unknown after hibernation: long silent) */
    this.lastReceived = new Map();
    /** @type {ReturnType<typeof setTimeout> | null} The keepalive check and the streams' deadlines: runs only while queries are in flight. */
    this.keepaliveTimer = null;
    /** When keepaliveTimer fires (Date.now() time). */
    this.keepaliveAt = Infinity;
    /** @type {Promise<void>} Checkpoints are verified and stored one after the other, in the order they arrived. */
    this.checkpoints = Promise.resolve();
    /** How many rekey() calls this instance took (acceptConnector re-checks a key if one came meanwhile). */
    this.rekeys = 0;
  }

  // ---------------------------------------------------------------- what the Worker calls (RPC)

  /**
   * Run one query (the Worker verified the client token and the request); resolves to the
   * response: 200 with the NDJSON body streamed, a typed error, or a complete result as plain data
   * (a WholeAnswer: the Worker makes its Response, so no body stream crosses to the Worker).
   * @param {QueryCall} call @returns {Promise<Response | import("./query.js").WholeAnswer>}
   */
  async query(call) {
    try {
      return await this.queries.handleWhole(call);
    } catch (err) {
      if (err instanceof HttpError) return errorResponse(err);
      console.error(`tunnel DO query failed: ${/** @type {Error} */ (err)?.stack ?? err}`);
      return errorResponse(new HttpError(ErrorCode.INTERNAL, "internal relay error (see the Worker logs)"));
    }
  }

  /**
   * Begin a session (`POST .../sessions`, SPEC 11.5); the Worker verified the token and the body.
   * @param {import("./sessionops.js").BeginCall} call @returns {Promise<Response>}
   */
  async sessionBegin(call) {
    return this.answer("session begin", () => this.sessionOps.begin(call));
  }

  /**
   * An operation of an open session (`POST .../sessions/{id}/{op}`, `DELETE .../sessions/{id}`).
   * @param {import("./sessionops.js").OpCall} call @returns {Promise<Response>}
   */
  async sessionOp(call) {
    return this.answer("session operation", () => this.sessionOps.operate(call));
  }

  /**
   * A whole transaction in one request (`POST .../transaction`, SPEC 11.6).
   * @param {import("./sessionops.js").TransactionCall} call @returns {Promise<Response>}
   */
  async transaction(call) {
    return this.answer("transaction", () => this.sessionOps.transaction(call));
  }

  /** A typed answer for a refusal, a logged 500 for anything else. @param {string} what @param {() => Promise<Response>} work */
  async answer(what, work) {
    try {
      return await work();
    } catch (err) {
      if (err instanceof HttpError) return errorResponse(err);
      console.error(`tunnel DO ${what} failed: ${/** @type {Error} */ (err)?.stack ?? err}`);
      return errorResponse(new HttpError(ErrorCode.INTERNAL, "internal relay error (see the Worker logs)"));
    }
  }

  /** What `/status` reports of this object. */
  status() {
    return this.routes.status(this.queries.streams.size);
  }

  /**
   * Remember a client-supplied query_id for `ttlMs`; false if it was seen (query.duplicate).
   * @param {string} queryId @param {number} ttlMs @returns {Promise<boolean>}
   */
  async remember(queryId, ttlMs) {
    const key = `qid:${queryId}`;
    const now = Date.now();
    const seen = await this.ctx.storage.get(key);
    if (seen !== undefined && /** @type {number} */ (seen) > now) return false;
    // Lazy purge, no alarm: each new id drops up to 256 expired ones (an index ordered by expiry).
    const expired = await this.ctx.storage.list({ prefix: "qexp:", end: `qexp:${String(now).padStart(15, "0")}`, limit: 256 });
    const stale = [...expired.keys()];
    stale.push(...[...expired.values()].map((id) => `qid:${id}`));
    for (let i = 0; i < stale.length; i += 128) await this.ctx.storage.delete(stale.slice(i, i + 128));
    const until = now + ttlMs;
    await this.ctx.storage.put({ [key]: until, [`qexp:${String(until).padStart(15, "0")}:${queryId}`]: queryId });
    return true;
  }

  /** Forget a query_id that was never sent to a connector (the client may retry with it). @param {string} queryId */
  async forget(queryId) {
    await this.ctx.storage.delete(`qid:${queryId}`);
  }

  /** The Worker saw the client hang up: CANCEL the query's stream if it is still open here. @param {string} queryId */
  cancel(queryId) {
    this.queries.cancel(queryId);
  }

  /**
   * A connector's latest checkpoint of each audit file held here (none: an empty list).
   * @param {string} connectorId
   * @returns {Promise<CheckpointEntry[]>}
   */
  async checkpoint(connectorId) {
    const prefix = `ckptf:${JSON.stringify([connectorId]).slice(0, -1)},`;
    const entries = [...(await this.ctx.storage.list({ prefix })).values()].map((e) => /** @type {CheckpointEntry} */ (e));
    const legacy = (await this.legacyCheckpoints(connectorId)).filter((l) => !entries.some((e) => e.checkpoint.file === l.checkpoint.file));
    return [...entries, ...legacy];
  }

  /**
   * What `ckpt:<connector>` (one entry per connector, from before checkpoints were kept per file)
   * holds, per file as relay/config.py read_checkpoint_file reads the same: a conflict that names
   * another file (two replicas' logs) is that file's checkpoint, not a conflict.
   * @param {string} connectorId
   * @returns {Promise<CheckpointEntry[]>}
   */
  async legacyCheckpoints(connectorId) {
    /** @type {CheckpointEntry | undefined} */
    const entry = await this.ctx.storage.get(`ckpt:${connectorId}`);
    if (entry === undefined) return [];
    const { checkpoint, conflict, received_at } = entry;
    if (!conflict || conflict.file === checkpoint.file) return [entry];
    return [{ ...entry, conflict: null }, { checkpoint: conflict, received_at, conflict: null }];
  }

  // ------------------------------------------------ enrolment (on the tunnel's enrolment object)

  /**
   * The enrolled key of a connector id ("ed25519:..."), or null.
   * @param {string} connectorId @returns {Promise<string | null>}
   */
  async enrolledKey(connectorId) {
    /** @type {{public_key: string} | undefined} */
    const entry = await this.ctx.storage.get(`enr:${connectorId}`);
    return entry?.public_key ?? null;
  }

  /**
   * Consume the token's jti and record the key, in one storage transaction (persisted before the
   * answer leaves the object). "used": the jti was consumed before (a replay); "expired": the
   * token ran out while on its way here (its jti may be forgotten already).
   * @param {Enrolment} e
   * @returns {Promise<{outcome: "enrolled" | "used" | "expired", replaced: string | null}>}
   *   `replaced`: the connector id's earlier enrolled key
   */
  async enroll(e) {
    const now = Date.now();
    if (now > (e.exp + ENROLL_LEEWAY) * 1000) return { outcome: "expired", replaced: null };
    const result = await this.ctx.storage.transaction(async (txn) => {
      if ((await txn.get(`ejti:${e.jti}`)) !== undefined) return { outcome: /** @type {const} */ ("used"), replaced: null };
      /** @type {{public_key: string} | undefined} */
      const earlier = await txn.get(`enr:${e.connectorId}`);
      await txn.put({
        [`ejti:${e.jti}`]: (e.exp + ENROLL_LEEWAY) * 1000,
        [`enr:${e.connectorId}`]: { public_key: e.publicKey, key_id: e.keyId, jti: e.jti, enrolled_at: Math.floor(now / 1000) },
      });
      return { outcome: /** @type {const} */ ("enrolled"), replaced: earlier?.public_key ?? null };
    });
    if (result.outcome === "enrolled") await this.forgetConsumedEnrolments(now);
    return result;
  }

  /** Drop consumed enrolment jtis past their token's exp + leeway (done on enrolment: no timer). @param {number} now */
  async forgetConsumedEnrolments(now) {
    const expired = [];
    for (const [key, forgetAt] of await this.ctx.storage.list({ prefix: "ejti:" })) if (/** @type {number} */ (forgetAt) < now) expired.push(key);
    for (let i = 0; i < expired.length; i += 128) await this.ctx.storage.delete(expired.slice(i, i + 128));
  }

  /**
   * A connector id's registered keys: TUNNELS' plus its enrolled one (SPEC 8.2, 8.7).
   * @param {Awaited<ReturnType<typeof loadConfig>>} config @param {string} tunnel @param {string} connectorId
   * @returns {Promise<string[]>}
   */
  async registeredKeys(config, tunnel, connectorId) {
    const fixed = Object.hasOwn(config.tunnels, tunnel) && Object.hasOwn(config.tunnels[tunnel], connectorId) ? [config.tunnels[tunnel][connectorId]].flat() : [];
    const home = this.env.TUNNEL.idFromName(tunnel);
    const enrolled = this.ctx.id.equals(home) ? await this.enrolledKey(connectorId) : await enrolmentObject(this.env, tunnel).enrolledKey(connectorId);
    return enrolled === null ? fixed : [...fixed, enrolled];
  }

  /**
   * A connector id's registered keys changed (a new enrolment replaced its enrolled key): its
   * connections on a key no longer registered get DRAIN and no new query, and the alarm closes
   * them once their in-flight queries had their time (SPEC 8.2, as a key rotation drains them).
   * One still in its handshake is closed at once (it carries nothing).
   * @param {string} tunnel @param {string} connectorId @returns {Promise<number>} how many were drained
   */
  async rekey(tunnel, connectorId) {
    this.rekeys += 1;
    const config = await loadConfig(this.env);
    const keys = new Set((await this.registeredKeys(config, tunnel, connectorId)).map((k) => hex(parsePublicKey(k))));
    const closeAt = Date.now() + config.limits.query_timeout_ms + config.limits.deadline_grace_ms;
    const reason = "connector key no longer registered at this relay";
    let drained = 0;
    for (const session of this.routes.sessions()) {
      const { att } = session;
      if (att.connectorId !== connectorId || att.state === "closed" || keys.has(att.connectorKeyHex)) continue;
      drained += 1;
      if (att.state === "hello") {
        this.fail(session, new ProtocolError(reason, { errorCode: ErrorCode.AUTH_CONNECTOR_REJECTED, closeCode: CloseCode.AUTH_FAILED }));
        continue;
      }
      session.drain(reason, closeAt);
      this.routes.pump(); // its free slots are gone: waiters may have to go elsewhere
    }
    if (drained) await this.scheduleAlarm(closeAt);
    return drained;
  }

  // ---------------------------------------------------------------------- the WebSocket upgrade

  /** @param {Request} request */
  async fetch(request) {
    try {
      return await this.acceptConnector(request);
    } catch (err) {
      if (err instanceof HttpError) return errorResponse(err);
      console.error(`tunnel DO connect failed: ${/** @type {Error} */ (err)?.stack ?? err}`);
      return errorResponse(new HttpError(ErrorCode.INTERNAL, "internal relay error (see the Worker logs)"));
    }
  }

  /** @param {Request} request */
  async acceptConnector(request) {
    // The Worker verified the token; this header is built by the Worker, never by a client.
    const claims = JSON.parse(request.headers.get("x-edgetds-connector") ?? "null");
    const config = await loadConfig(this.env);
    // During a gradual deploy an older Worker version (older TUNNELS) may have verified the
    // token, and an enrolment may have replaced the key since the Worker looked: accept only a
    // key this object's configuration and the enrolled keys still register (SPEC 8.2). A
    // rekey() that arrives while the enrolled key is looked up may be about this very key: then
    // look again (after the lookup, nothing but storage is awaited until the socket is listed,
    // so a later rekey() finds it).
    let registered;
    for (let seen = -1; seen !== this.rekeys; ) {
      seen = this.rekeys;
      registered = await this.registeredKeys(config, claims.tunnel, claims.connectorId);
    }
    if (!(registered ?? []).some((k) => hex(parsePublicKey(k)) === claims.publicKeyHex)) {
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
    const session = ConnectorSession.accept(server, claims, sessionId, Date.now());
    this.routes.add(session);
    const hello = await signHello(config.relayKey, {
      sessionId,
      tunnel: claims.tunnel,
      connectorId: claims.connectorId,
      nonce: claims.nonce,
      limits: RELAY_LIMITS,
      caps: [...RELAY_CAPS],
    });
    session.hello(hello);
    return new Response(null, { status: 101, webSocket: client, headers: { "sec-websocket-protocol": "edgetds.v1" } });
  }

  /** Drop replay records past their token's exp + leeway (done on connect: no timer needed). */
  async forgetExpiredTokens() {
    const now = Date.now();
    const expired = [];
    for (const [key, forgetAt] of await this.ctx.storage.list({ prefix: "jti:" })) if (/** @type {number} */ (forgetAt) <= now) expired.push(key);
    for (let i = 0; i < expired.length; i += 128) await this.ctx.storage.delete(expired.slice(i, i + 128));
  }

  // ---------------------------------------------------------------- alarm, keepalive and probes

  /** No handshake or probe left to time: delete the alarm, so that an idle object can hibernate. */
  dropIdleAlarm() {
    if (!this.routes.sessions().some((s) => s.att.state === "hello" || s.att.probeAt !== undefined || s.att.closeAt !== undefined)) this.ctx.storage.deleteAlarm();
  }

  /** Arm the one alarm for `at` unless it is due earlier already (alarm() re-arms for the rest). @param {number} at */
  async scheduleAlarm(at, stillNeeded = () => true) {
    const current = await this.ctx.storage.getAlarm();
    if ((current === null || at < current) && stillNeeded()) await this.ctx.storage.setAlarm(at);
  }

  /** Close connectors that never answered HELLO with READY, probed ones that stayed silent, and drained ones past their closeAt. */
  async alarm() {
    const config = await loadConfig(this.env);
    const now = Date.now();
    let next = Infinity;
    for (const session of this.routes.sessions()) {
      const { att } = session;
      if (att.state === "hello") {
        const deadline = att.connectedAt + config.limits.handshake_timeout_s * 1000;
        if (deadline <= now) this.fail(session, new ProtocolError(`no READY within ${config.limits.handshake_timeout_s} s of HELLO`));
        else next = Math.min(next, deadline);
        continue;
      }
      if (att.closeAt !== undefined && att.state !== "closed") {
        if (att.closeAt <= now) {
          this.closeSession(session, CloseCode.GOING_AWAY, "drained: connector key no longer registered");
          continue;
        }
        next = Math.min(next, att.closeAt);
      }
      if (att.probeAt !== undefined) {
        const deadline = att.probeAt + PROBE_TIMEOUT_MS;
        if (deadline <= now) this.closeSession(session, CloseCode.GOING_AWAY, "no answer to PING");
        else next = Math.min(next, deadline);
      }
    }
    if (next !== Infinity) await this.ctx.storage.setAlarm(next);
  }

  /**
   * A QUERY went out on `session`: keepalive while queries are in flight; a connection silent for
   * ping_interval_s already (an idle tunnel: WebSocket pings never reach the object) is probed now.
   * The timer is armed again when the new stream's deadline comes before it.
   * @param {ConnectorSession} session @param {number} sentAt @param {number} intervalMs @param {number} deadlineAt
   */
  sent(session, sentAt, intervalMs, deadlineAt) {
    if (this.keepaliveTimer === null || deadlineAt < this.keepaliveAt || (this.lastReceived.get(session.sessionId) ?? 0) + intervalMs <= sentAt) this.keepalive(intervalMs);
  }

  /** No query in flight: nothing may keep the object awake. */
  idle() {
    if (this.keepaliveTimer !== null) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    this.keepaliveAt = Infinity;
  }

  /**
   * Keepalive, only while queries are in flight: the object is awake for their requests anyway,
   * so a timer costs nothing then, and it is cleared with the last stream so that an idle object
   * can hibernate (an idle dead link is found when its connector reconnects, probeSiblings, or
   * when a query is placed on it, sent). A connection carrying a stream that has sent nothing
   * for ping_interval_s is probed; silent PROBE_TIMEOUT_MS more, the alarm closes it and its
   * streams end transport.lost, instead of waiting for their deadline on a link that died.
   * The same timer fires at the earliest stream deadline: one timer per object, not one more
   * armed and cleared per query.
   * @param {number} intervalMs
   */
  keepalive(intervalMs) {
    this.idle();
    if (!this.queries.streams.size) return;
    const now = Date.now();
    const { probe, next } = keepaliveDue({ connections: this.routes.sessions(), busy: this.queries.busy(), lastReceived: this.lastReceived, now, intervalMs });
    if (probe.map((session) => this.probe(session, now)).some(Boolean)) this.armProbeAlarm(now);
    this.keepaliveAt = Math.min(next, this.queries.nextDeadline());
    this.keepaliveTimer = setTimeout(() => {
      this.keepaliveTimer = null;
      this.queries.expire(Date.now());
      this.keepalive(intervalMs);
    }, this.keepaliveAt - now);
  }

  /**
   * Send a PING that must be answered (by any frame) within PROBE_TIMEOUT_MS; false if gone.
   * @param {ConnectorSession} session @param {number} now
   */
  probe(session, now) {
    if (session.ws.readyState !== WebSocket.OPEN || !session.ping()) return false;
    session.att.probeAt = now;
    session.save();
    return true;
  }

  /** The alarm that closes probed connections which stay silent (it survives hibernation). @param {number} now */
  armProbeAlarm(now) {
    // (a probe answered while getAlarm ran needs no alarm: the object may hibernate)
    const pending = () => this.routes.sessions().some((s) => s.att.probeAt !== undefined);
    this.scheduleAlarm(now + PROBE_TIMEOUT_MS, pending).catch((err) => console.error(`probe alarm failed: ${err?.message ?? err}`));
  }

  /**
   * A stream's deadline fired: if nothing at all came back on its connection since the QUERY,
   * probe it (closed if it stays silent), so later queries do not wait on a dead link too. The
   * query itself was sent, so it ends query.timeout and is never re-sent (at-most-once).
   * @param {HttpStream} stream
   */
  probeSilent(stream) {
    const { session } = stream;
    const now = Date.now();
    if (session.ws.readyState === WebSocket.OPEN && silentSinceQuery(session.att, this.lastReceived.get(session.sessionId), stream.sentAt) && this.probe(session, now)) {
      this.armProbeAlarm(now);
    }
  }

  /**
   * A connector that opens a connection may have lost its others without either end being told
   * (a black-holed network: the connector gave up on them, the runtime did not, and the
   * connector's WebSocket-level pings never reach this object). So its other connections get an
   * edgetds PING and no new query; one that sends no frame within PROBE_TIMEOUT_MS is closed and
   * its streams end transport.lost, instead of queries waiting on it until their deadline.
   * @param {ConnectorSession} session
   */
  probeSiblings(session) {
    const now = Date.now();
    let probed = false;
    for (const other of this.routes.sessions()) {
      const o = other.att;
      if (o.sessionId === session.sessionId || o.connectorId !== session.connectorId || o.state !== "open" || o.probeAt !== undefined) continue;
      probed = this.probe(other, now) || probed;
    }
    if (probed) this.armProbeAlarm(now);
  }

  // ------------------------------------------------------------------------- connector sockets

  /** @param {WebSocket} ws @param {ArrayBuffer | string} message */
  webSocketMessage(ws, message) {
    try {
      return this.receive(ws, message);
    } finally {
      this.queries.releaseHeld(); // results that go on past this message start their body stream
    }
  }

  /** One message of a connector (webSocketMessage). @param {WebSocket} ws @param {ArrayBuffer | string} message */
  receive(ws, message) {
    const session = this.routes.session(ws);
    if (session.att.state === "closed") return undefined; // declared dead and closed here: a late frame changes nothing
    this.lastReceived.set(session.sessionId, Date.now());
    if (session.att.probeAt !== undefined) {
      delete session.att.probeAt; // any frame answers a probe
      session.save();
      this.dropIdleAlarm();
    }
    if (typeof message === "string") {
      this.fail(session, new ProtocolError("text message received; edgetds/1 is binary-only", { closeCode: CloseCode.UNSUPPORTED_DATA }));
      return undefined;
    }
    /** @type {unknown} */
    let error = null;
    /** @type {import("./connection.js").Event[] | undefined} */
    let received;
    try {
      received = session.receive(new Uint8Array(message));
      this.checkPings(session, received);
    } catch (err) {
      error = err;
      received ??= session.conn.events(); // the events parsed before a bad frame still count
    }
    session.deferFlush = true; // one flush (send + attachment save) for the whole message, below
    try {
      for (const event of received) this.onEvent(session, /** @type {FrameEvent} */ (event));
    } catch (err) {
      error ??= err;
    } finally {
      session.deferFlush = false;
    }
    if (error === null) {
      session.flush();
      return this.checkpoints; // the runtime keeps the object alive until they are stored
    }
    if (!(error instanceof ProtocolError)) console.error(`connector frame handling failed: ${/** @type {Error} */ (error)?.stack ?? error}`);
    this.fail(session, error instanceof ProtocolError ? error : new ProtocolError("internal relay error", { errorCode: ErrorCode.INTERNAL, closeCode: CloseCode.INTERNAL_ERROR }));
    return undefined;
  }

  /** Each PING costs a PONG: a connector that floods them is cut off. @param {ConnectorSession} session @param {import("./connection.js").Event[]} received */
  checkPings(session, received) {
    for (const event of received) {
      if (event.type === FrameType.PING && this.pings.spend(session.sessionId, Date.now() / 1000) > 0) {
        throw new ProtocolError(`PING flood: more than ${PING_BURST} PINGs at once or ${PING_RATE}/s sustained`);
      }
    }
  }

  /** One event of a connector's connection (connection.js checked it). @param {ConnectorSession} session @param {FrameEvent} event */
  onEvent(session, event) {
    switch (event.type) {
      case FrameType.READY:
        if (event.connectorId !== session.connectorId) {
          throw new ProtocolError("READY names another connector id than its token", { errorCode: ErrorCode.AUTH_CONNECTOR_REJECTED, closeCode: CloseCode.AUTH_FAILED });
        }
        session.att.state = "open";
        session.save();
        this.probeSiblings(session);
        this.dropIdleAlarm();
        this.routes.pump();
        return;
      case FrameType.CHECKPOINT:
        this.checkpoints = this.checkpoints.then(() => this.storeCheckpoint(session, event.fields));
        return;
      case FrameType.COLUMNS:
      case FrameType.ROWS:
      case FrameType.DONE:
      case FrameType.ERROR:
        if (event.type === FrameType.DONE || event.type === FrameType.ERROR) this.sessionTable.terminal(session, event.streamId, event.data, Date.now());
        this.queries.deliver(session, event);
        if (event.type === FrameType.DONE || event.type === FrameType.ERROR) this.routes.pump(); // a slot freed
        return;
      case FrameType.GOAWAY:
        this.closeSession(session, CloseCode.NORMAL, session.att.state === "hello" ? "goaway" : "goaway received");
        return;
      default:
      // PING (the connection queued the PONG), PONG and DRAIN (the connection counts it)
    }
  }

  /**
   * Keep a connector's signed audit checkpoint if it verifies under one of the connector id's
   * registered keys and does not go backwards (relay/checkpoints.py, the same rules; SPEC 5.2).
   * A refused one is logged, never stored; the connection stays.
   * @param {ConnectorSession} session @param {Record<string, any>} fields
   */
  async storeCheckpoint(session, fields) {
    const { att } = session;
    try {
      const config = await loadConfig(this.env);
      const keys = await this.registeredKeys(config, att.tunnel, att.connectorId);
      let verified = fields.connector_id === att.connectorId && fields.tunnel === att.tunnel;
      if (verified) verified = (await Promise.all(keys.map((k) => verifySigned(parsePublicKey(k), CHECKPOINT_CONTEXT, fields)))).some(Boolean);
      const where = `tunnel=${att.tunnel} connector=${att.connectorId}`;
      if (!verified) {
        console.warn(`audit.checkpoint_invalid ${where}: it does not name this connection's connector and tunnel, or no registered key verifies it`);
        return;
      }
      const key = `ckptf:${JSON.stringify([att.connectorId, fields.file])}`;
      /** @type {CheckpointEntry | undefined} */
      const entry = (await this.ctx.storage.get(key)) ?? (await this.legacyCheckpoints(att.connectorId)).find((l) => l.checkpoint.file === fields.file);
      if (entry === undefined) {
        const prefix = `ckptf:${JSON.stringify([att.connectorId]).slice(0, -1)},`;
        const files = (await this.ctx.storage.list({ prefix, limit: MAX_CHECKPOINT_FILES })).size;
        if (files >= MAX_CHECKPOINT_FILES) {
          console.warn(`audit.checkpoint_too_many_files ${where} file=${JSON.stringify(fields.file)}: checkpoints of ${MAX_CHECKPOINT_FILES} other audit files of this connector are kept already, the most a relay keeps; this one is not`);
          return;
        }
      }
      const held = entry?.checkpoint;
      if (entry !== undefined && held !== undefined && (fields.seq < held.seq || (fields.seq === held.seq && fields.head !== held.head))) {
        console.warn(`audit.checkpoint_regressed ${where} file=${JSON.stringify(fields.file)}: seq ${fields.seq} after seq ${held.seq}; the connector's audit log lost its end or was replaced; the higher checkpoint is kept`);
        // the checkpoint held at the first regression stays as evidence (see relay/checkpoints.py)
        if (!entry.conflict) await this.ctx.storage.put(key, { ...entry, conflict: held });
        return;
      }
      await this.ctx.storage.put(key, { checkpoint: fields, received_at: Math.floor(Date.now() / 1000), conflict: entry?.conflict ?? null });
    } catch (err) {
      console.error(`storing an audit checkpoint failed: ${/** @type {Error} */ (err)?.stack ?? err}`);
    }
  }

  /**
   * Close a session and end every stream it carried with the typed transport.lost record.
   * @param {ConnectorSession} session @param {number} code @param {string} reason
   */
  closeSession(session, code, reason) {
    const open = session.att.state !== "closed";
    this.sessionTable.lost(session, Date.now()); // its sessions end transport.lost (none is left in its attachment)
    session.close(code, reason); // nothing is placed on it while its streams end
    this.pings.buckets.delete(session.sessionId);
    this.lastReceived.delete(session.sessionId);
    if (open || this.queries.busy().has(session.sessionId)) this.queries.endSession(session, session.end());
    this.routes.remove(session);
  }

  /**
   * A protocol violation: GOAWAY with its code (the connection queued it when it found the
   * violation), close, end its streams.
   * @param {ConnectorSession} session @param {ProtocolError} err
   */
  fail(session, err) {
    session.goaway(err.errorCode, err.message);
    session.flush();
    this.closeSession(session, err.closeCode, err.errorCode);
  }

  /** @param {WebSocket} ws */
  webSocketClose(ws) {
    this.closeSession(this.routes.session(ws), CloseCode.NORMAL, "closed");
  }

  /** @param {WebSocket} ws */
  webSocketError(ws) {
    this.closeSession(this.routes.session(ws), CloseCode.INTERNAL_ERROR, "error");
  }
}
