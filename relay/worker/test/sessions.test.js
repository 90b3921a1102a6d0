// The relay's session routing table (sessions.js) and the checks before an operation is sent
// (sessionops.js check), in SPEC 7.4 order. The connections are plain objects with the parts of
// a ConnectorSession the table uses; the storage is an in-memory map with the DO storage calls.
import assert from "node:assert/strict";
import test from "node:test";

import { Connection } from "../src/connection.js";
import { DEFAULT_LIMITS } from "../src/frames.js";
import { HttpError } from "../src/http.js";
import { SessionOps } from "../src/sessionops.js";
import {
  END_GRACE_MS,
  expired,
  FORGET_ENDED_MS,
  MAX_SESSIONS_PER_CONNECTION,
  newSessionId,
  ownerOf,
  SessionTable,
  shardOf,
} from "../src/sessions.js";

const encoder = new TextEncoder();
const T0 = 1_800_000_000_000;

function memoryStorage() {
  const map = new Map();
  return {
    map,
    async get(key) {
      return map.get(key);
    },
    async put(entries) {
      for (const [k, v] of Object.entries(entries)) map.set(k, v);
    },
    async list({ prefix, end, limit }) {
      const keys = [...map.keys()].filter((k) => k.startsWith(prefix) && k < end).sort().slice(0, limit);
      return new Map(keys.map((k) => [k, map.get(k)]));
    },
    async delete(keys) {
      let n = 0;
      for (const k of keys) n += Number(map.delete(k));
      return n;
    },
  };
}

function connection(sessionId, { caps = ["session"], open = true } = {}) {
  return { att: { sessionId }, conn: { caps: new Set(caps) }, open, draining: false, saves: 0, save() { this.saves += 1; } };
}

function done(session) {
  return encoder.encode(`${JSON.stringify({ done: { rows: 0, session } })}\n`);
}

test("session ids: 22 base64url characters, 128 random bits, mapped to the shard that made them", () => {
  const ids = new Set();
  for (let i = 0; i < 200; i++) {
    const id = newSessionId(3, 8);
    assert.match(id, /^[A-Za-z0-9_-]{22}$/);
    assert.equal(shardOf(id, 8), 3);
    ids.add(id);
  }
  assert.equal(ids.size, 200);
  assert.match(newSessionId(), /^[A-Za-z0-9_-]{22}$/);
});

test("owners: one digest per issuer + subject, never the subject itself", async () => {
  const a = await ownerOf({ issuer: "https://idp", subject: "alice" });
  assert.equal(a, await ownerOf({ issuer: "https://idp", subject: "alice" }));
  assert.notEqual(a, await ownerOf({ issuer: "https://idp", subject: "bob" }));
  assert.notEqual(a, await ownerOf({ issuer: "https://other", subject: "alice" }));
  assert.match(a, /^[A-Za-z0-9_-]{22}$/);
  assert.ok(!a.includes("alice"));
});

test("pin, find, and the end a DONE record reports", async () => {
  const table = new SessionTable(memoryStorage());
  const c1 = connection("c1");
  const c2 = connection("c2");
  table.pin(c1, "S".repeat(22), "owner", { expires_at: T0 + 300_000, idle_timeout_ms: 30_000 }, T0);
  assert.equal(c1.saves, 1); // into the attachment
  const found = await table.find([c2, c1], "S".repeat(22), T0 + 1);
  assert.equal(found.kind, "open");
  assert.equal(found.connection, c1);
  assert.equal((await table.find([c1, c2], "T".repeat(22), T0)).kind, "unknown");
  // an operation goes out on stream 7 of c1, and its DONE says the session ended
  assert.ok(table.claim("S".repeat(22)));
  assert.ok(!table.claim("S".repeat(22))); // busy
  table.sent("S".repeat(22), "c1:7");
  table.terminal(c1, 7, done({ id: "S".repeat(22), state: "ended", reason: "committed" }), T0 + 2);
  assert.ok(table.claim("S".repeat(22))); // the operation ended: not busy any more
  table.release("S".repeat(22));
  assert.deepEqual(c1.att.sessions, {});
  const ended = await table.find([c1], "S".repeat(22), T0 + 3);
  assert.deepEqual(ended, { kind: "ended", id: "S".repeat(22), owner: "owner", reason: "committed" });
  await table.writes;
  // a rebuilt object (hibernation) reads the tombstone from storage
  const rebuilt = new SessionTable(table.storage);
  assert.equal((await rebuilt.find([c1], "S".repeat(22), T0 + 4)).kind, "ended");
  // forgotten 10 minutes after the end
  assert.equal((await rebuilt.find([c1], "S".repeat(22), T0 + 2 + FORGET_ENDED_MS)).kind, "unknown");
});

test("a DONE that keeps the session open pushes its idle deadline", async () => {
  const table = new SessionTable(memoryStorage());
  const c1 = connection("c1");
  const id = "I".repeat(22);
  table.pin(c1, id, "o", { expires_at: T0 + 300_000, idle_timeout_ms: 1_000 }, T0);
  table.claim(id);
  table.sent(id, "c1:3");
  table.terminal(c1, 3, done({ id, state: "open" }), T0 + 900);
  assert.equal((await table.find([c1], id, T0 + 900 + 1_000 + END_GRACE_MS - 1)).kind, "open");
  const later = await table.find([c1], id, T0 + 900 + 1_000 + END_GRACE_MS);
  assert.deepEqual(later, { kind: "ended", id, owner: "o", reason: "idle_timeout" });
});

test("the relay's own clock: idle and lifetime ends, each after the grace, never while busy", () => {
  const entry = /** @type {[string, number, number, number]} */ (["o", T0 + 10_000, 2_000, T0]);
  assert.equal(expired(entry, T0 + 2_000 + END_GRACE_MS - 1), null);
  assert.equal(expired(entry, T0 + 2_000 + END_GRACE_MS), "idle_timeout");
  assert.equal(expired(["o", T0 + 10_000, 60_000, T0], T0 + 10_000 + END_GRACE_MS), "lifetime");
  const table = new SessionTable(memoryStorage());
  const c1 = connection("c1");
  c1.att.sessions = { B: entry };
  table.claim("B");
  assert.ok(table.open([c1], T0 + 60_000).has("B")); // an operation runs: the connector decides
});

test("caps: per identity, then per tunnel, begins in flight included", () => {
  const table = new SessionTable(memoryStorage());
  const c1 = connection("c1");
  const caps = { perIdentity: 2, perTunnel: 3 };
  table.pin(c1, "a1", "alice", { expires_at: T0 + 300_000, idle_timeout_ms: 30_000 }, T0);
  assert.equal(table.capped([c1], "alice", caps, T0), null);
  table.pending.set("a2", "alice");
  assert.equal(table.capped([c1], "alice", caps, T0), "identity");
  assert.equal(table.capped([c1], "bob", caps, T0), null);
  table.pin(c1, "b1", "bob", { expires_at: T0 + 300_000, idle_timeout_ms: 30_000 }, T0);
  assert.equal(table.capped([c1], "bob", caps, T0), "tunnel");
  // an expired session stops counting (and is ended)
  assert.equal(table.capped([c1], "bob", caps, T0 + 30_000 + END_GRACE_MS), null);
  assert.equal(table.tombstones.get("a1")?.reason, "idle_timeout");
});

test("a connection takes sessions only with the capability and below its cap", () => {
  assert.ok(SessionTable.takesSessions(connection("c")));
  assert.ok(!SessionTable.takesSessions(connection("c", { caps: [] })));
  const full = connection("c");
  full.att.sessions = Object.fromEntries(Array.from({ length: MAX_SESSIONS_PER_CONNECTION }, (_, i) => [`s${i}`, ["o", 0, 0, 0]]));
  assert.ok(!SessionTable.takesSessions(full));
});

test("a full connection's sessions fit the 16 KiB attachment next to the largest snapshot", () => {
  const att = { connectorId: "c".repeat(64), tunnel: "t".repeat(64), connectorKeyHex: "0".repeat(64), sessionId: crypto.randomUUID(), state: "open", connectedAt: T0, probeAt: T0, sessions: {} };
  for (let i = 0; i < MAX_SESSIONS_PER_CONNECTION; i++) att.sessions[newSessionId()] = ["o".repeat(22), T0 + 300_000, 2 ** 31 - 1, T0];
  const conn = new Connection({ limits: DEFAULT_LIMITS }).snapshot();
  // the most a snapshot holds: max_streams (128) streams, every number at its widest
  conn.streams = Array.from({ length: DEFAULT_LIMITS.max_streams }, () => [2 ** 32 - 1, "result", 2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1]);
  conn.caps = ["audit.checkpoint", "session"];
  conn.helloCaps = conn.caps;
  const size = encoder.encode(JSON.stringify({ ...att, conn })).byteLength;
  assert.ok(size <= 16 * 1024 - 1024, `${size} bytes`); // with a margin for the structured-clone encoding
});

test("a lost connection ends every session it held transport.lost", async () => {
  const table = new SessionTable(memoryStorage());
  const c1 = connection("c1");
  for (const id of ["x", "y"]) table.pin(c1, id, "o", { expires_at: T0 + 300_000, idle_timeout_ms: 30_000 }, T0);
  table.claim("x");
  table.sent("x", "c1:1");
  table.lost(c1, T0 + 5);
  assert.equal(c1.att.sessions, undefined);
  assert.ok(table.claim("x")); // its operation is over
  for (const id of ["x", "y"]) assert.equal(table.tombstones.get(id)?.reason, "transport.lost");
});

test("the checks before sending, in SPEC 7.4 order: not found, owner, ended, gone, draining, busy", async () => {
  const table = new SessionTable(memoryStorage());
  const c1 = connection("c1");
  const ops = new SessionOps(/** @type {any} */ ({ sessions: () => [c1] }), /** @type {any} */ ({}), table);
  const alice = { issuer: "https://idp", subject: "alice" };
  const bob = { issuer: "https://idp", subject: "bob" };
  const code = async (identity, id) => {
    try {
      await ops.check({ identity, id });
      return "ok";
    } catch (err) {
      assert.ok(err instanceof HttpError);
      return err.code;
    }
  };
  const id = "A".repeat(22);
  const now = Date.now();
  assert.equal(await code(alice, id), "session.not_found");
  table.pin(c1, id, await ownerOf(alice), { expires_at: now + 300_000, idle_timeout_ms: 30_000 }, now);
  assert.equal(await code(bob, id), "session.wrong_identity");
  assert.equal(await code(alice, id), "ok"); // and now it is busy
  assert.equal(await code(alice, id), "session.busy");
  assert.equal(await code(bob, id), "session.wrong_identity"); // owner before busy
  table.release(id);
  c1.draining = true; // the connector sent DRAIN: no QUERY may go to it (SPEC 6.4, 7.4)
  assert.equal(await code(alice, id), "session.ended");
  assert.equal(table.tombstones.get(id)?.reason, "connector.draining");
  c1.draining = false;
  table.pin(c1, id, await ownerOf(alice), { expires_at: now + 300_000, idle_timeout_ms: 30_000 }, now);
  c1.open = false; // its socket went away before the close event ran
  assert.equal(await code(alice, id), "session.ended");
  assert.equal(table.tombstones.get(id)?.reason, "transport.lost");
  assert.equal(await code(bob, id), "session.wrong_identity"); // owner before ended
});

test("after a reset (attachments gone) a pinned session is found ended transport.lost", async () => {
  const storage = memoryStorage();
  const table = new SessionTable(storage);
  const id = "R".repeat(22);
  table.pin(connection("c1"), id, "o", { expires_at: T0 + 300_000, idle_timeout_ms: 30_000 }, T0);
  await table.writes;
  const rebuilt = new SessionTable(storage); // no socket holds it any more
  assert.deepEqual(await rebuilt.find([connection("c2")], id, T0 + 5), { kind: "ended", id, owner: "o", reason: "transport.lost" });
  await rebuilt.writes;
  assert.ok(!storage.map.has(`sopen:${id}`)); // the tombstone replaced it
  assert.equal(storage.map.get(`send:${id}`).reason, "transport.lost");
  // the tombstone is purged once expired, by the next write; the index of the pin with it later
  const next = (/** @type {number} */ now) => {
    rebuilt.pin(connection("c2"), newSessionId(), "o", { expires_at: now + 300_000, idle_timeout_ms: 1 }, now);
    return rebuilt.writes;
  };
  await next(T0 + 6 + FORGET_ENDED_MS);
  assert.ok(!storage.map.has(`send:${id}`));
  assert.equal([...storage.map.keys()].filter((k) => k.includes(id)).length, 1); // the pin's index
  await next(T0 + 300_000 + END_GRACE_MS + FORGET_ENDED_MS + 1);
  assert.equal([...storage.map.keys()].filter((k) => k.includes(id)).length, 0);
});
