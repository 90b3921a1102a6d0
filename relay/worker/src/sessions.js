// @ts-check
/**
 * Sessions at the relay: transactions across requests (SPEC.md 7.4, 11.5). The connector is
 * authoritative for every session it holds; the relay makes the id at `begin`, pins the session to
 * the connector connection that answered the begin, and checks every later operation before it
 * sends anything, in this order: the session is known on this tunnel (`session.not_found`), the
 * verified identity owns it (`session.wrong_identity`), it is open (`session.ended` with the reason
 * the relay knows), no other operation of it runs (`session.busy`).
 *
 * Where the state lives (the Durable Object may be evicted whenever no event runs):
 * - Open sessions: in the attachment of the connector WebSocket they are pinned to
 *   (`att.sessions`, id -> Entry), so the routing survives hibernation with the socket. An entry
 *   is small (the owner as a 128-bit digest, not the issuer and subject), and a connection holds at
 *   most MAX_SESSIONS_PER_CONNECTION of them, which keeps the attachment within its 16 KiB.
 * - Ended sessions: a tombstone (owner, reason) in memory and in Durable Object storage
 *   (`send:<id>`), forgotten FORGET_ENDED_MS after the end (purged lazily, by an expiry index
 *   `sexp:<at>:<id>`, when the next session is pinned or ended: no alarm keeps the object awake).
 * - Every session pinned, also in storage (`sopen:<id>`: its owner), until its tombstone replaces
 *   it or FORGET_ENDED_MS after its lifetime: the one trace left after a reset (below).
 * - In memory only: the operation in flight per session (`busy`; an operation is an HTTP request
 *   in flight, so the object cannot hibernate under it) and the begins in flight (they count
 *   against the caps until their DONE pins them).
 *
 * A session whose connection closes ends `transport.lost` (the connector rolls it back on its
 * side). A Durable Object reset closes every socket without running this object's close
 * handlers (and takes the attachments with them): the connector rolls back; the rebuilt object
 * finds the session's `sopen:` record and no socket holding it, so it ended `transport.lost` too.
 *
 * The relay also ends a session by its own clock once the connector must have ended it: idle for
 * its idle timeout, or past its lifetime, each plus END_GRACE_MS (so the relay never declares a
 * session over that the connector still serves). Such a session stops counting against the caps.
 */

import { SESSION_CAP, SESSION_END_REASONS } from "./frames.js";

/** The relay forgets an ended session this long after its end (SPEC 7.4: 10 minutes). */
export const FORGET_ENDED_MS = 600_000;
/** At most this many open sessions are pinned to one connector connection (attachment size). */
export const MAX_SESSIONS_PER_CONNECTION = 64;
/** The relay's clock runs this much behind the connector's before it ends a session itself. */
export const END_GRACE_MS = 1_000;
/** How many tombstones the object keeps in memory (storage has them all). */
const MAX_TOMBSTONES_IN_MEMORY = 10_000;

/**
 * One open session pinned to a connection: [owner digest, expires_at (unix ms), idle timeout ms,
 * when its last operation ended (unix ms)]. A tuple to keep the attachment small.
 * @typedef {[string, number, number, number]} Entry
 * @typedef {{owner: string, reason: string, forgetAt: number}} Tombstone
 * @typedef {{att: {sessionId: string, sessions?: Record<string, Entry>}, conn: {caps: Set<string>}, open: boolean,
 *   draining: boolean, save: () => void}} Pinned
 *   what this module needs of a ConnectorSession
 */

/** A shard index in [0, k) from a string (FNV-1a). @param {string} text @param {number} k */
export function shardOf(text, k) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h % k;
}

/** base64url without padding. @param {Uint8Array} bytes */
function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * A fresh session id: 128 random bits, 22 base64url characters (protocol new_session_id), drawn
 * until it maps to `shard` of `shards` (shardOf), so the Worker routes every later operation to
 * the object that made it. Drawing again costs no secrecy an attacker can use: an id is one of
 * 2^128 / shards equally likely values (at least 2^122 with the most shards, 64).
 * @param {number} shard @param {number} shards
 */
export function newSessionId(shard = 0, shards = 1) {
  for (;;) {
    const id = base64url(crypto.getRandomValues(new Uint8Array(16)));
    if (shardOf(id, shards) === shard) return id;
  }
}

/**
 * The owner of a session as stored: base64url of the first 128 bits of SHA-256(issuer NUL
 * subject). Compared, never shown.
 * @param {{issuer: string, subject: string}} identity
 */
export async function ownerOf(identity) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${identity.issuer}\u0000${identity.subject}`));
  return base64url(new Uint8Array(digest).slice(0, 16));
}

/**
 * Why the relay counts an open entry as ended by now (the connector's timers ran out), or null.
 * @param {Entry} entry @param {number} now
 */
export function expired(entry, now) {
  const [, expiresAt, idleMs, lastUsed] = entry;
  if (now >= expiresAt + END_GRACE_MS) return "lifetime";
  if (now >= lastUsed + idleMs + END_GRACE_MS) return "idle_timeout";
  return null;
}

/**
 * The session part of a connector's DONE or ERROR record, or null.
 * @param {Uint8Array} line one NDJSON record
 * @returns {{id?: string, state?: string, reason?: string, expires_at?: number, idle_timeout_ms?: number} | null}
 */
export function sessionOf(line) {
  try {
    const record = JSON.parse(new TextDecoder().decode(line));
    const inner = record.done ?? record.error;
    const session = inner?.session;
    return session !== null && typeof session === "object" && !Array.isArray(session) ? session : null;
  } catch {
    return null;
  }
}

/**
 * What a lookup found.
 * @typedef {{kind: "open", id: string, connection: Pinned, entry: Entry}
 *   | {kind: "ended", id: string, owner: string, reason: string}
 *   | {kind: "unknown", id: string}} Found
 */

/** The sessions of one Durable Object (see the module comment). */
export class SessionTable {
  /**
   * @param {{get: (key: string) => Promise<any>, put: (entries: Record<string, any>) => Promise<void>,
   *   list: (options: {prefix: string, end: string, limit: number}) => Promise<Map<string, any>>,
   *   delete: (keys: string[]) => Promise<number>}} storage the object's storage (tombstones)
   */
  constructor(storage) {
    this.storage = storage;
    /** @type {Map<string, Tombstone>} id -> tombstone (a cache of storage) */
    this.tombstones = new Map();
    /** @type {Map<string, string>} id -> the owner of a begin in flight */
    this.pending = new Map();
    /** @type {Map<string, string>} id -> `${connection}:${stream}` of its operation in flight ("" before it is sent) */
    this.busy = new Map();
    /** @type {Map<string, string>} `${connection}:${stream}` -> the session id whose operation it carries */
    this.streams = new Map();
    /** @type {Promise<unknown>} tombstone writes, in order */
    this.writes = Promise.resolve();
  }

  /**
   * The open sessions pinned to each connection, ending (tombstoning) those whose time ran out.
   * @param {Pinned[]} connections @param {number} now
   * @returns {Map<string, {connection: Pinned, entry: Entry}>}
   */
  open(connections, now) {
    /** @type {Map<string, {connection: Pinned, entry: Entry}>} */
    const found = new Map();
    for (const connection of connections) {
      const pinned = connection.att.sessions;
      if (pinned === undefined) continue;
      let changed = false;
      for (const [id, entry] of Object.entries(pinned)) {
        const reason = this.busy.has(id) ? null : expired(entry, now);
        if (reason === null) {
          found.set(id, { connection, entry });
          continue;
        }
        delete pinned[id];
        this.bury(id, entry[0], reason, now);
        changed = true;
      }
      if (changed) connection.save();
    }
    return found;
  }

  /**
   * Refuse a begin past a cap: null when it may go on, else which cap ("identity" or "tunnel").
   * @param {Pinned[]} connections @param {string} owner @param {{perIdentity: number, perTunnel: number}} caps @param {number} now
   * @returns {null | "identity" | "tunnel"}
   */
  capped(connections, owner, { perIdentity, perTunnel }, now) {
    const open = this.open(connections, now);
    const owners = [...[...open.values()].map((o) => o.entry[0]), ...this.pending.values()];
    if (owners.filter((o) => o === owner).length >= perIdentity) return "identity";
    if (owners.length >= perTunnel) return "tunnel";
    return null;
  }

  /** Whether a connection may take a new session: it negotiated `session` and has room. @param {Pinned} connection */
  static takesSessions(connection) {
    return connection.conn.caps.has(SESSION_CAP) && Object.keys(connection.att.sessions ?? {}).length < MAX_SESSIONS_PER_CONNECTION;
  }

  /**
   * Find a session for an operation (SPEC 7.4 order: known here, then owner, ended, busy is
   * the caller's `claim`). Tombstones not in memory are read from storage.
   * @param {Pinned[]} connections @param {string} id @param {number} now @returns {Promise<Found>}
   */
  async find(connections, id, now) {
    const hit = this.open(connections, now).get(id);
    if (hit !== undefined) return { kind: "open", id, ...hit };
    let tomb = this.tombstones.get(id);
    if (tomb === undefined) {
      /** @type {Tombstone | undefined} */
      const stored = await this.storage.get(`send:${id}`);
      if (stored !== undefined) tomb = stored;
    }
    if (tomb !== undefined && tomb.forgetAt > now) return { kind: "ended", id, owner: tomb.owner, reason: tomb.reason };
    if (tomb === undefined) {
      // pinned once, held by no socket now, no end recorded: its connection went with a reset
      /** @type {{owner: string, forgetAt: number} | undefined} */
      const pinned = await this.storage.get(`sopen:${id}`);
      if (pinned !== undefined && pinned.forgetAt > now) {
        this.bury(id, pinned.owner, "transport.lost", now);
        return { kind: "ended", id, owner: pinned.owner, reason: "transport.lost" };
      }
    }
    return { kind: "unknown", id };
  }

  /** Mark an operation of `id` as running; false if one already runs (session.busy). @param {string} id */
  claim(id) {
    if (this.busy.has(id)) return false;
    this.busy.set(id, "");
    return true;
  }

  /** The operation of `id` went out on stream `key` (`${connection}:${stream}`). @param {string} id @param {string} key */
  sent(id, key) {
    this.busy.set(id, key);
    this.streams.set(key, id);
  }

  /** The operation of `id` ended (or was never sent). @param {string} id */
  release(id) {
    const key = this.busy.get(id);
    if (key) this.streams.delete(key);
    this.busy.delete(id);
  }

  /**
   * Pin a session the connector opened (its begin's DONE) to the connection that answered.
   * @param {Pinned} connection @param {string} id @param {string} owner
   * @param {{expires_at?: number, idle_timeout_ms?: number}} state @param {number} now
   * @returns {Entry}
   */
  pin(connection, id, owner, state, now) {
    const idle = Number.isSafeInteger(state.idle_timeout_ms) ? /** @type {number} */ (state.idle_timeout_ms) : 30_000;
    const expiresAt = Number.isSafeInteger(state.expires_at) ? /** @type {number} */ (state.expires_at) : now + 300_000;
    /** @type {Entry} */
    const entry = [owner, expiresAt, idle, now];
    connection.att.sessions ??= {};
    connection.att.sessions[id] = entry;
    connection.save();
    const forgetAt = expiresAt + END_GRACE_MS + FORGET_ENDED_MS;
    this.store({ [`sopen:${id}`]: { owner, forgetAt }, [`sexp:${String(forgetAt).padStart(15, "0")}:${id}`]: id }, [], now);
    return entry;
  }

  /**
   * A terminal record (DONE or ERROR) of a stream arrived: if it carried a session operation,
   * that operation ended; the record's session state updates the entry (its last use, or its end).
   * @param {Pinned} connection @param {number} streamId @param {Uint8Array} line @param {number} now
   */
  terminal(connection, streamId, line, now) {
    const key = `${connection.att.sessionId}:${streamId}`;
    const id = this.streams.get(key);
    if (id === undefined) return;
    this.release(id);
    const entry = connection.att.sessions?.[id];
    if (entry === undefined) return;
    const state = sessionOf(line);
    if (state?.state === "ended") {
      this.end(connection, id, typeof state.reason === "string" && SESSION_END_REASONS.includes(state.reason) ? state.reason : "rolled_back", now);
      return;
    }
    entry[3] = now;
    connection.save();
  }

  /**
   * End one pinned session: remove its entry and keep a tombstone.
   * @param {Pinned} connection @param {string} id @param {string} reason @param {number} now
   */
  end(connection, id, reason, now) {
    const entry = connection.att.sessions?.[id];
    if (entry === undefined || connection.att.sessions === undefined) return;
    delete connection.att.sessions[id];
    connection.save();
    this.bury(id, entry[0], reason, now);
  }

  /**
   * The connection closed: every session pinned to it ended transport.lost (the connector rolls
   * them back), and their operations in flight are over.
   * @param {Pinned} connection @param {number} now
   */
  lost(connection, now) {
    for (const [id, entry] of Object.entries(connection.att.sessions ?? {})) {
      this.release(id);
      this.bury(id, entry[0], "transport.lost", now);
    }
    if (connection.att.sessions === undefined) return;
    delete connection.att.sessions;
    connection.save();
  }

  /**
   * Keep a tombstone in memory and storage until FORGET_ENDED_MS after `now`; drop expired ones.
   * @param {string} id @param {string} owner @param {string} reason @param {number} now
   */
  bury(id, owner, reason, now) {
    const forgetAt = now + FORGET_ENDED_MS;
    this.tombstones.set(id, { owner, reason, forgetAt });
    for (const [old, tomb] of this.tombstones) {
      if (tomb.forgetAt > now && this.tombstones.size <= MAX_TOMBSTONES_IN_MEMORY) break; // insertion order = end order
      this.tombstones.delete(old);
    }
    const at = String(forgetAt).padStart(15, "0");
    this.store({ [`send:${id}`]: { owner, reason, forgetAt }, [`sexp:${at}:${id}`]: id }, [`sopen:${id}`], now);
  }

  /**
   * Write `entries`, delete `keys`, then purge up to 256 expired records (in order, after the
   * writes before it).
   * @param {Record<string, any>} entries @param {string[]} keys @param {number} now
   */
  store(entries, keys, now) {
    const cutoff = String(now).padStart(15, "0");
    this.writes = this.writes
      .then(async () => {
        await this.storage.put(entries);
        if (keys.length) await this.storage.delete(keys);
        const stale = await this.storage.list({ prefix: "sexp:", end: `sexp:${cutoff}`, limit: 256 });
        const purge = [...stale.keys(), ...[...stale.values()].flatMap((old) => [`send:${old}`, `sopen:${old}`])];
        for (let i = 0; i < purge.length; i += 128) await this.storage.delete(purge.slice(i, i + 128));
      })
      .catch((err) => console.error(`storing a session's state failed: ${err?.message ?? err}`));
  }
}
