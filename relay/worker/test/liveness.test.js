// Dead connector links (src/liveness.js): who gets a keepalive PING, where queries go, and when a
// deadline marks a connection suspect. Pure functions: no runtime, times passed in.
import assert from "node:assert/strict";
import { test } from "node:test";

import { keepaliveDue, preferAnswering, PROBE_TIMEOUT_MS, silentSinceQuery } from "../src/liveness.js";

const conn = (sessionId, extra = {}) => ({ ws: sessionId, att: { sessionId, state: "open", ...extra } });

test("keepalive PINGs only busy, open, unprobed connections silent for the interval", () => {
  const connections = [
    conn("silent"),
    conn("recent"),
    conn("idle"), // silent too, but carries no query: the object does not keep itself awake for it
    conn("probed", { probeAt: 1 }),
    conn("hello", { state: "hello" }),
    conn("unknown"), // no frame seen by this instance (it hibernated since): long silent
  ];
  const lastReceived = new Map([["silent", 1_000], ["recent", 9_500], ["idle", 0], ["probed", 0], ["hello", 0]]);
  const busy = new Set(["silent", "recent", "probed", "hello", "unknown"]);
  const { probe, next } = keepaliveDue({ connections, busy, lastReceived, now: 10_000, intervalMs: 1_000 });
  assert.deepEqual(probe.map((c) => c.ws), ["silent", "unknown"]);
  assert.equal(next, 10_500); // when "recent" falls due
});

test("keepalive with nothing due looks again one interval later", () => {
  const { probe, next } = keepaliveDue({ connections: [], busy: new Set(), lastReceived: new Map(), now: 5, intervalMs: 15_000 });
  assert.deepEqual(probe, []);
  assert.equal(next, 15_005);
});

test("a connection under probe takes a query only when no other one can", () => {
  const a = conn("a", { probeAt: 1 });
  const b = conn("b");
  assert.deepEqual(preferAnswering([a, b]), [b]);
  assert.deepEqual(preferAnswering([a]), [a]); // a lone connection with a slow query is alive
  assert.deepEqual(preferAnswering([]), []);
});

test("a deadline probes the connection only if nothing came back since the QUERY", () => {
  const att = { state: "open" };
  assert.equal(silentSinceQuery(att, 100, 200), true);
  assert.equal(silentSinceQuery(att, undefined, 200), true);
  assert.equal(silentSinceQuery(att, 300, 200), false);
  assert.equal(silentSinceQuery({ state: "open", probeAt: 250 }, 100, 200), false); // already
  assert.equal(silentSinceQuery({ state: "closed" }, 100, 200), false);
  assert.ok(PROBE_TIMEOUT_MS > 0);
});
