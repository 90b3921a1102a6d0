// @ts-check
/**
 * Routing inside one Durable Object (relay/registry.py's Tunnel): the object's connector sessions,
 * fair admission of queries, and picking a connection.
 *
 * A query goes to an *accepting* connection (past READY, not draining, below its max streams) with
 * the fewest open streams (ties: round robin); connections under probe (tunnel.js) take one only
 * when no other can. Admission: per-identity caps, and on a full tunnel the waiters are served
 * fewest-in-flight identity first (limits.js FairAdmission). Everything here is in memory: every
 * admitted or waiting query is an HTTP request in flight, so the object is awake for all of them;
 * the sessions are rebuilt from their sockets' attachments after hibernation.
 */

import { ErrorCode } from "./frames.js";
import { HttpError } from "./http.js";
import { FairAdmission } from "./limits.js";
import { preferAnswering } from "./liveness.js";
import { CONNECTOR_TAG, ConnectorSession } from "./session.js";

/** Most queries waiting for a slot of one object; beyond it a full tunnel refuses at once. */
export const MAX_WAITING = 10_000;

/**
 * A query's place in admission.
 * @typedef {{key: string, granted: boolean, reserved: boolean, released: boolean, gone: boolean,
 *   waitedMs: number, resolve: (value?: unknown) => void, timer: ReturnType<typeof setTimeout> | null}} AdmissionSlot
 */

/** The connector sessions of one Durable Object and the admission of its queries. */
export class Tunnel {
  /** @param {DurableObjectState} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    /** @type {Map<string, ConnectorSession>} sessionId -> its session (rebuilt after hibernation) */
    this.cache = new Map();
    /** @type {WeakMap<WebSocket, string>} socket -> its session id (from its attachment) */
    this.sessionIds = new WeakMap();
    this.admission = new FairAdmission({ maxWaiting: MAX_WAITING });
    /** Slots granted whose QUERY is not sent yet (so a slot is never promised twice). */
    this.reserved = 0;
    /** @type {Map<string, AdmissionSlot>} query_id -> its waiting slot (cancel() withdraws it) */
    this.waitingSlots = new Map();
    this.roundRobin = 0;
  }

  /** The session of a connector socket. @param {WebSocket} ws @returns {ConnectorSession} */
  session(ws) {
    // a socket's session id never changes: its attachment is read once per socket object
    let sessionId = this.sessionIds.get(ws);
    if (sessionId === undefined) {
      ({ sessionId } = /** @type {{sessionId: string}} */ (ws.deserializeAttachment()));
      this.sessionIds.set(ws, sessionId);
    }
    let session = this.cache.get(sessionId);
    if (session === undefined) {
      session = ConnectorSession.restore(ws);
      if (session.att.state !== "closed") this.cache.set(sessionId, session);
    }
    return session;
  }

  /** @param {ConnectorSession} session */
  add(session) {
    this.cache.set(session.sessionId, session);
  }

  /** @param {ConnectorSession} session */
  remove(session) {
    this.cache.delete(session.sessionId);
  }

  /** Every connector session of this object (closed ones too, until the runtime drops them). */
  sessions() {
    return this.ctx.getWebSockets(CONNECTOR_TAG).map((ws) => this.session(ws));
  }

  /** The open connections; throws 503 when none can take a query now (nothing to wait for). */
  connectable() {
    const all = this.sessions().filter((s) => s.open);
    if (!all.length) throw new HttpError(ErrorCode.TUNNEL_NO_CONNECTOR, "no connector is connected to this tunnel; start `edgetds connector run` on-prem", { retryAfter: "5" });
    if (all.every((s) => s.draining)) throw draining();
    return all;
  }

  /** The largest statement some open connection accepts (undefined: none is open). */
  maxStatementBytes() {
    const open = this.sessions().filter((s) => s.open);
    return open.length ? Math.max(...open.map((s) => s.conn.maxStatementBytes)) : undefined;
  }

  /** @param {string} why */
  full(why) {
    return new HttpError(ErrorCode.LIMITS_TOO_MANY_QUERIES, `this tunnel is at its concurrent query limit and ${why}; retry after the Retry-After delay`, { retryAfter: "1", limit: "tunnel" });
  }

  /** Streams the open connections take now, less the slots granted but not yet used. */
  freeSlots() {
    return this.sessions().reduce((n, s) => n + s.freeStreams, 0) - this.reserved;
  }

  /** Hand every free slot to a waiting query, fairest first. */
  pump() {
    if (!this.admission.waiting()) return; // (before freeSlots: it lists every socket)
    const free = this.freeSlots();
    if (free <= 0) return;
    for (const [, slot] of this.admission.grant(free)) {
      slot.granted = slot.reserved = true;
      this.reserved += 1;
      if (slot.timer !== null) clearTimeout(slot.timer);
      slot.resolve();
    }
  }

  /**
   * Admit one query of identity `key` (relay/registry.py Tunnel.slot): refused at once at the
   * identity's cap; on a full tunnel it waits up to `waitMs` for a slot. Resolves to the slot
   * (give it back with giveBack once the query ended).
   * @param {string} key @param {number} limit @param {number} waitMs @param {string} queryId
   * @returns {Promise<AdmissionSlot>}
   * @throws {HttpError}
   */
  async admit(key, limit, waitMs, queryId) {
    this.connectable();
    const { promise, resolve } = Promise.withResolvers();
    /** @type {AdmissionSlot} */
    const slot = { key, granted: false, reserved: false, released: false, gone: false, waitedMs: 0, resolve, timer: null };
    const refusal = this.admission.offer(key, slot, limit);
    if (refusal === "identity") {
      throw new HttpError(ErrorCode.LIMITS_TOO_MANY_QUERIES, `this identity already has ${limit} queries in flight or waiting on this tunnel (max_queries_per_identity); wait for one to finish, then retry`, { retryAfter: "1", limit: "identity" });
    }
    if (refusal === "tunnel") throw this.full(`${MAX_WAITING} queries are already waiting for a slot`);
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
      throw this.full(`no slot freed within ${waitMs} ms`);
    }
    return slot;
  }

  /** The client went away while its query waited for a slot: it leaves the queue. @param {string} queryId */
  withdraw(queryId) {
    const waiting = this.waitingSlots.get(queryId);
    if (waiting !== undefined && !waiting.granted && this.admission.withdraw(waiting.key, waiting)) {
      waiting.gone = true; // admit() answers query.cancelled; no QUERY is ever sent for it
      if (waiting.timer !== null) clearTimeout(waiting.timer);
      waiting.resolve();
    }
  }

  /** The slot's QUERY was sent (or never will be): its reservation ends. @param {AdmissionSlot} slot */
  placed(slot) {
    if (slot.reserved) {
      slot.reserved = false;
      this.reserved -= 1;
    }
  }

  /** The slot's query ended: release it once and hand the slot on. @param {AdmissionSlot} slot */
  giveBack(slot) {
    if (slot.released) return;
    slot.released = true;
    this.placed(slot);
    this.admission.release(slot.key);
    this.pump();
  }

  /**
   * Least-loaded accepting connection (ties: round robin), among those `accept` takes (a session
   * begin: the connections that negotiated sessions and have room for one).
   * @param {(session: ConnectorSession) => boolean} [accept]
   * @returns {ConnectorSession}
   * @throws {HttpError} 503 tunnel.no_connector / connector.draining, 429 when all are full
   */
  pick(accept = () => true) {
    const all = this.connectable();
    const usable = preferAnswering(all.filter((s) => s.accepting && accept(s)));
    if (!usable.length) {
      if (all.some((s) => s.draining)) throw draining();
      throw this.full("every connection is at its max streams");
    }
    const load = (/** @type {ConnectorSession} */ s) => s.conn.openStreams().length;
    const least = Math.min(...usable.map(load));
    const candidates = usable.filter((s) => load(s) === least);
    this.roundRobin = (this.roundRobin + 1) % 1_000_000;
    return candidates[this.roundRobin % candidates.length];
  }

  /** What `/status` reports of this object. @param {number} streams HTTP streams in flight */
  status(streams) {
    const open = this.sessions().filter((s) => s.att.state === "open");
    const ids = [...new Set(open.map((s) => s.connectorId))].sort();
    return { connector_ids: ids, connectors: ids.length, connections: open.length, draining: open.filter((s) => s.draining).length, streams };
  }
}

function draining() {
  return new HttpError(ErrorCode.CONNECTOR_DRAINING, "every connector of this tunnel is draining; retry shortly");
}
