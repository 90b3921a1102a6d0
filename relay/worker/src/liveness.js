// @ts-check
/**
 * Dead connector links, as pure decisions for the Durable Object (no I/O, no clock: `now` is
 * passed in). A black-holed link is not reported by the runtime, and the connector's
 * WebSocket-level pings never reach the object, so it PINGs (a probe) and closes a connection that
 * sends no frame within PROBE_TIMEOUT_MS. tunnel.js sends the PINGs, times them with the alarm and
 * runs the keepalive timer only while queries are in flight (README: dead connector links).
 */

/** A probed connection must send some frame (its PONG, or any other) within this. */
export const PROBE_TIMEOUT_MS = 3_000;

/**
 * Keepalive while queries are in flight: of the open, unprobed connections carrying a stream,
 * those silent for `intervalMs` (to PING now), and when to look again.
 * @template {{att: {state: string, sessionId: string, probeAt?: number}}} C
 * @param {{connections: C[], busy: Set<string>, lastReceived: Map<string, number>, now: number, intervalMs: number}} state
 *   `lastReceived`: sessionId -> time of its last frame (missing = unknown = long silent)
 * @returns {{probe: C[], next: number}}
 */
export function keepaliveDue({ connections, busy, lastReceived, now, intervalMs }) {
  const probe = [];
  let next = now + intervalMs;
  for (const c of connections) {
    const { att } = c;
    if (att.state !== "open" || att.probeAt !== undefined || !busy.has(att.sessionId)) continue;
    const due = (lastReceived.get(att.sessionId) ?? 0) + intervalMs;
    if (due > now) next = Math.min(next, due);
    else probe.push(c);
  }
  return { probe, next };
}

/**
 * Where a new query may go: connections under probe may be dead, so they take one only when no
 * other connection can (a lone connection with a slow query is probed, yet alive).
 * @template {{att: {probeAt?: number}}} C @param {C[]} free @returns {C[]}
 */
export function preferAnswering(free) {
  const answering = free.filter(({ att }) => att.probeAt === undefined);
  return answering.length ? answering : free;
}

/**
 * A stream's deadline fired: probe its connection if nothing at all came back on it since the
 * QUERY was sent (a live connector would at least have ended the query with query.timeout).
 * @param {{state: string, probeAt?: number}} att @param {number | undefined} lastReceived
 * @param {number} sentAt @returns {boolean}
 */
export function silentSinceQuery(att, lastReceived, sentAt) {
  return att.state === "open" && att.probeAt === undefined && (lastReceived ?? 0) < sentAt;
}
