// client.js sessions, callback transactions and batches (SPEC.md 11.5, 11.6): the requests the
// client makes and how it reads the relay's answers. The relays themselves are tested end to end
// (tests/worker, tests/relay, tests/e2e); this is the client's parsing and error mapping.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Session, TunnelClient, TunnelError } from "../src/client.js";
import { ndjson, relayAnswering as standIn } from "./relay-standin.js";

const ID = "AAAAAAAAAAAAAAAAAAAAAA";

/** The client on a relay stand-in answering from `routes`. */
function relayAnswering(routes) {
  const { fetcher, requests } = standIn(routes);
  return { tunnel: new TunnelClient({ tunnel: "demo", fetcher }), requests };
}

const BEGIN = () => [201, { session: ID, expires_at: "2026-12-06T07:00:00.000Z", idle_timeout_ms: 30000 }];
const OPEN = { id: ID, state: "open" };

test("session() posts the options, returns an open Session with its id and lifetime", async () => {
  const { tunnel, requests } = relayAnswering({ sessions: BEGIN });
  const s = await tunnel.session({ token: "T", isolation: "serializable", timeoutMs: 5000, role: "writer" });
  assert.ok(s instanceof Session);
  assert.equal(s.id, ID);
  assert.equal(s.state, "open");
  assert.equal(s.endReason, null);
  assert.equal(s.idleTimeoutMs, 30000);
  assert.equal(s.expiresAt.toISOString(), "2026-12-06T07:00:00.000Z");
  assert.deepEqual(requests, [{ path: "sessions", body: { isolation: "serializable", timeout_ms: 5000, role: "writer" }, token: "Bearer T", accept: "application/json" }]);
});

test("a session query goes to the session's path with the session's token and reads the state", async () => {
  const { tunnel, requests } = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/query`]: () => [200, ndjson([{ columns: [{ name: "n" }] }, [1], [2], { done: { rows: 2, result_sets: 1, query_id: "q", session: OPEN } }])],
  });
  const s = await tunnel.session({ token: "T" });
  const rows = await s.query("select n from t where k = @k", { k: 1 }, { maxRows: 10, queryId: "q" });
  assert.deepEqual([...rows], [{ n: 1 }, { n: 2 }]);
  assert.deepEqual(rows.done.session, OPEN);
  assert.equal(s.state, "open");
  assert.deepEqual(requests[1], { path: `sessions/${ID}/query`, body: { sql: "select n from t where k = @k", params: { k: 1 }, max_rows: 10, query_id: "q" }, token: "Bearer T", accept: "application/x-ndjson" });
  await s.query("select 1", {}, { token: "U" }); // a per-call token overrides the session's
  assert.equal(requests[2].token, "Bearer U");
});

test("an error record that ended the session ends it; later operations fail fast with session.ended", async () => {
  const ended = { id: ID, state: "ended", reason: "rolled_back_by_server" };
  const { tunnel, requests } = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/query`]: () => [200, ndjson([{ error: { code: "sql.error", message: "deadlock", query_id: "q", sql: { number: 1205, state: 1, class: 13 }, session: ended } }])],
  });
  const s = await tunnel.session({ token: "T" });
  const err = await s.query("update t set x = 1").catch((e) => e);
  assert.ok(err instanceof TunnelError);
  assert.equal(err.code, "sql.error");
  assert.deepEqual(err.session, ended);
  assert.equal(err.sql.number, 1205);
  assert.equal(s.state, "ended");
  assert.equal(s.endReason, "rolled_back_by_server");
  await assert.rejects(s.query("select 1"), { code: "session.ended", status: 410 });
  await assert.rejects(s.commit(), (e) => e.code === "session.ended" && e.session.reason === "rolled_back_by_server");
  await s.rollback(); // nothing left to roll back: resolves
  assert.equal(requests.length, 2); // none of the three reached the relay
});

test("a statement error that leaves the transaction open keeps the session open", async () => {
  const { tunnel } = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/query`]: () => [422, { error: { code: "sql.error", message: "duplicate key", sql: { number: 2627, state: 1, class: 14 }, session: OPEN } }],
  });
  const s = await tunnel.session({ token: "T" });
  await assert.rejects(s.query("insert ..."), (e) => e.code === "sql.error" && e.status === 422 && e.session.state === "open");
  assert.equal(s.state, "open");
});

test("savepoint, rollbackTo, commit: their paths and bodies; commit ends the session", async () => {
  const { tunnel, requests } = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/savepoint`]: () => [200, { session: ID, state: "open" }],
    [`sessions/${ID}/rollback_to`]: () => [200, { session: ID, state: "open" }],
    [`sessions/${ID}/commit`]: () => [200, { session: ID, state: "ended", reason: "committed" }],
  });
  const s = await tunnel.session({ token: "T" });
  await s.savepoint("sp1");
  await s.rollbackTo("sp1");
  assert.equal(s.state, "open");
  await s.commit();
  assert.equal(s.state, "ended");
  assert.equal(s.endReason, "committed");
  assert.deepEqual(
    requests.slice(1).map((r) => [r.path, r.body, r.token]),
    [
      [`sessions/${ID}/savepoint`, { name: "sp1" }, "Bearer T"],
      [`sessions/${ID}/rollback_to`, { name: "sp1" }, "Bearer T"],
      [`sessions/${ID}/commit`, {}, "Bearer T"],
    ],
  );
  await s.rollback(); // after commit: resolves without a request
  assert.equal(requests.length, 4);
});

test("rollback resolves when the relay says the session already ended, and throws other refusals", async () => {
  const gone = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/rollback`]: () => [410, { error: { code: "session.ended", message: "ended", session: { id: ID, state: "ended", reason: "idle_timeout" } } }],
  });
  const s = await gone.tunnel.session({ token: "T" });
  await s.rollback();
  assert.equal(s.state, "ended");
  assert.equal(s.endReason, "idle_timeout");

  const other = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/rollback`]: () => [403, { error: { code: "session.wrong_identity", message: "not yours", session: { id: ID, state: "open" } } }],
  });
  const t = await other.tunnel.session({ token: "T" });
  await assert.rejects(t.rollback({ token: "MALLORY" }), (e) => e.code === "session.wrong_identity" && e.status === 403 && e.session.id === ID);
  assert.equal(other.requests[1].token, "Bearer MALLORY");
  assert.equal(t.state, "open");
});

test("a refused begin throws with the relay's code, status and limit", async () => {
  const { tunnel } = relayAnswering({
    sessions: () => [429, { error: { code: "limits.too_many_sessions", message: "too many", limit: "identity" } }],
  });
  await assert.rejects(tunnel.session({ token: "T" }), (e) => e instanceof TunnelError && e.code === "limits.too_many_sessions" && e.status === 429 && e.limit === "identity");
  const broken = relayAnswering({ sessions: () => [502, "<html>bad gateway</html>"] });
  await assert.rejects(broken.tunnel.session({ token: "T" }), { code: "internal", status: 502 });
});

test("transaction() commits when the callback returns and returns its value", async () => {
  const { tunnel, requests } = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/query`]: () => [200, ndjson([{ done: { rows: 1, result_sets: 0, session: OPEN } }])],
    [`sessions/${ID}/commit`]: () => [200, { session: ID, state: "ended", reason: "committed" }],
  });
  const result = await tunnel.transaction(async (tx) => {
    await tx.query("update t set x = 1");
    return 42;
  }, { token: "T", isolation: "snapshot" });
  assert.equal(result, 42);
  assert.deepEqual(requests.map((r) => r.path), ["sessions", `sessions/${ID}/query`, `sessions/${ID}/commit`]);
  assert.deepEqual(requests[0].body, { isolation: "snapshot" });
});

test("transaction() rolls back and rethrows when the callback throws", async () => {
  const { tunnel, requests } = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/rollback`]: () => [200, { session: ID, state: "ended", reason: "rolled_back" }],
  });
  const boom = new Error("boom");
  await assert.rejects(tunnel.transaction(async () => { throw boom; }, { token: "T" }), (e) => e === boom);
  assert.deepEqual(requests.map((r) => r.path), ["sessions", `sessions/${ID}/rollback`]);
});

test("transaction() refuses to report success for a session the server ended", async () => {
  const ended = { id: ID, state: "ended", reason: "idle_timeout" };
  const { tunnel } = relayAnswering({
    sessions: BEGIN,
    [`sessions/${ID}/query`]: () => [410, { error: { code: "session.ended", message: "ended", session: ended } }],
  });
  // The callback swallows the error: the transaction still must not look committed.
  await assert.rejects(
    tunnel.transaction(async (tx) => { await tx.query("select 1").catch(() => {}); return "ok"; }, { token: "T" }),
    (e) => e.code === "session.ended" && e.session.reason === "idle_timeout",
  );
});

test("batch() sends the statements and returns each statement's rows", async () => {
  const { tunnel, requests } = relayAnswering({
    transaction: () => [200, ndjson([
      { columns: [{ name: "a" }] }, [1], [2],
      { statement: { index: 0, rows: 2, result_sets: 1, elapsed_ms: 1 } },
      { statement: { index: 1, rows: 1, result_sets: 0, elapsed_ms: 1 } },
      { columns: [{ name: "b" }] }, ["x"], { columns: [{ name: "c" }] }, [true],
      { statement: { index: 2, rows: 2, result_sets: 2, elapsed_ms: 1 } },
      { done: { statements: 3, rows: 5, elapsed_ms: 3, query_id: "q", session: { id: ID, state: "ended", reason: "committed" } } },
    ])],
  });
  const results = await tunnel.batch([{ sql: "select a from t" }, { sql: "update t set a = @a", params: { a: 3 } }, { query: "named", params: { k: 1 } }], { token: "T", isolation: "serializable", timeoutMs: 1000 });
  assert.equal(results.length, 3);
  assert.deepEqual([...results[0]], [{ a: 1 }, { a: 2 }]);
  assert.equal(results[0].done.rows, 2);
  assert.deepEqual([...results[1]], []);
  assert.deepEqual([...results[2]], [{ b: "x" }]);
  assert.deepEqual(results[2].resultSets[1].rows, [{ c: true }]);
  assert.equal(results.done.session.reason, "committed");
  assert.deepEqual(requests[0], {
    path: "transaction",
    body: { statements: [{ sql: "select a from t", params: {} }, { sql: "update t set a = @a", params: { a: 3 } }, { query: "named", params: { k: 1 } }], isolation: "serializable", timeout_ms: 1000 },
    token: "Bearer T",
    accept: "application/x-ndjson",
  });
});

test("batch() throws the failing statement's error with its index; a truncated answer fails", async () => {
  const failed = relayAnswering({
    transaction: () => [200, ndjson([
      { statement: { index: 0, rows: 1, result_sets: 0, elapsed_ms: 1 } },
      { error: { code: "sql.error", message: "conversion failed", statement: 1, sql: { number: 245, state: 1, class: 16 }, session: { id: ID, state: "ended", reason: "rolled_back" } } },
    ])],
  });
  await assert.rejects(failed.tunnel.batch([{ sql: "a" }, { sql: "b" }], { token: "T" }), (e) => e.code === "sql.error" && e.statement === 1 && e.session.reason === "rolled_back");
  const truncated = relayAnswering({ transaction: () => [200, ndjson([{ statement: { index: 0, rows: 0, result_sets: 0, elapsed_ms: 1 } }])] });
  await assert.rejects(truncated.tunnel.batch([{ sql: "a" }], { token: "T" }), { code: "transport.lost" });
  const refused = relayAnswering({ transaction: () => [400, { error: { code: "request.invalid", message: "101 statements" } }] });
  await assert.rejects(refused.tunnel.batch([{ sql: "a" }], { token: "T" }), { code: "request.invalid", status: 400 });
});

test("the client's default token (a function) serves sessions too", async () => {
  const requests = [];
  const fetcher = {
    async fetch(request) {
      requests.push(request.headers.get("authorization"));
      return new Response(JSON.stringify(BEGIN()[1]), { status: 201 });
    },
  };
  let n = 0;
  const tunnel = new TunnelClient({ tunnel: "demo", fetcher, token: async () => `fresh-${++n}` });
  await tunnel.session();
  await tunnel.session();
  assert.deepEqual(requests, ["Bearer fresh-1", "Bearer fresh-2"]);
});

test("a session stream left early is read to its end, not cancelled; its terminal record still counts", async () => {
  const ended = { id: ID, state: "ended", reason: "rolled_back_by_server" };
  let cancelled = false;
  const enc = new TextEncoder();
  const { fetcher, requests } = standIn({ sessions: BEGIN });
  const tunnel = new TunnelClient({
    tunnel: "demo",
    fetcher: {
      async fetch(request) {
        if (!request.url.endsWith("/query")) return fetcher.fetch(request);
        requests.push({ path: "query" });
        const lines = [{ columns: [{ name: "n" }] }, [1], [2], [3], { error: { code: "sql.error", message: "x", session: ended } }];
        return new Response(
          new ReadableStream({
            pull(controller) {
              const line = lines.shift();
              if (line) controller.enqueue(enc.encode(JSON.stringify(line) + "\n"));
              else controller.close();
            },
            cancel() {
              cancelled = true;
            },
          }),
          { status: 200 },
        );
      },
    },
  });
  const s = await tunnel.session({ token: "T" });
  for await (const event of s.stream("select n from big")) {
    if (event.type === "row") break; // leave at the first row
  }
  await assert.rejects(s.query("select 1"), { code: "session.ended" }); // learnt from the drained answer
  assert.equal(cancelled, false);
  assert.equal(s.endReason, "rolled_back_by_server");
  assert.deepEqual(requests.map((r) => r.path), ["sessions", "query"]);
});

test("session.busy and other 409s reach the caller as they are (an op is never resent)", async () => {
  const BUSY = [409, { error: { code: "session.busy", message: "busy", session: { id: ID, state: "open" } } }];
  const busy = relayAnswering({ sessions: BEGIN, [`sessions/${ID}/query`]: () => BUSY });
  const t = await busy.tunnel.session({ token: "T" });
  await assert.rejects(t.query("select 1"), { code: "session.busy", status: 409 });
  assert.equal(busy.requests.length, 2);

  const duplicate = relayAnswering({ sessions: BEGIN, [`sessions/${ID}/query`]: () => [409, { error: { code: "query.duplicate", message: "seen" } }] });
  const v = await duplicate.tunnel.session({ token: "T" });
  await assert.rejects(v.query("select 1", {}, { queryId: "q1" }), { code: "query.duplicate" });
  assert.equal(duplicate.requests.length, 2);
});
