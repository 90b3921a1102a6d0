// kysely.js: how Kysely's queries become edgetds requests (parameter names and values, the
// session of a transaction) and how answers become Kysely results. The dialect runs end to end
// against both relays, a real connector and tdslite in tests/kysely/.
import assert from "node:assert/strict";
import { test } from "node:test";

import { AbortedTransactionError, Kysely, sql } from "kysely";

import { TunnelClient, TunnelError } from "../src/client.js";
import { EdgetdsDialect, queryParams, rowReader, toParam } from "../src/kysely.js";
import { ndjson, relayAnswering } from "./relay-standin.js";

const ID = "AAAAAAAAAAAAAAAAAAAAAA";

const ROWS = () => [200, ndjson([{ columns: [{ name: "id", type: "int" }] }, [1], { done: { rows: 1, result_sets: 1, query_id: "q" } }])];

test("compiled SQL names parameters @p1.. and the request carries them, typed", async () => {
  const { fetcher, requests } = relayAnswering({ query: ROWS });
  const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel: "demo", fetcher, token: "T", timeoutMs: 5000, maxRows: 10 }) });
  const rows = await db.selectFrom("t").select("id").where("a", "=", 7).where("b", "=", "x").execute();
  assert.deepEqual(rows, [{ id: 1 }]);
  assert.deepEqual(requests, [
    {
      path: "query",
      body: { sql: 'select "id" from "t" where "a" = @p1 and "b" = @p2', params: { p1: { type: "int", value: 7 }, p2: "x" }, max_rows: 10, timeout_ms: 5000 },
      token: "Bearer T",
      accept: "application/x-ndjson",
    },
  ]);
});

test("JS values map to SPEC 12.2 parameters that keep them exactly", () => {
  const bytes = new Uint8Array([0, 255, 16]);
  assert.deepEqual(queryParams([null, undefined, "s", true, 1, -2147483648, 2147483648, 2 ** 60, 0.5, 12345678901234567890n, new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)), bytes, bytes.buffer, { type: "decimal(18,4)", value: "1.5" }]), {
    p1: null,
    p2: null,
    p3: "s",
    p4: true,
    p5: { type: "int", value: 1 },
    p6: { type: "int", value: -2147483648 },
    p7: 2147483648, // a bare JSON integer: bigint
    p8: { type: "float", value: 2 ** 60 }, // past 2^53 a number is no exact integer
    p9: 0.5,
    p10: { type: "bigint", value: "12345678901234567890" },
    p11: { type: "datetime2(3)", value: "2026-01-02T03:04:05.006" },
    p12: { type: "varbinary(max)", value: "AP8Q" },
    p13: { type: "varbinary(max)", value: "AP8Q" },
    p14: { type: "decimal(18,4)", value: "1.5" },
  });
  assert.throws(() => toParam(Number.NaN, 1), /@p1: SQL Server has no NaN/);
  assert.throws(() => toParam(new Date("nope"), 2), /@p2: an invalid Date/);
  assert.throws(() => toParam([1, 2], 3), /@p3: a array is not a SQL Server value/);
  assert.throws(() => toParam({ a: 1 }, 4), /@p4: a object is not a SQL Server value/);
});

test("result rows: binary as Uint8Array, dates as Date (or text), the rest as the relay sends it", () => {
  const columns = [
    { name: "b", type: "varbinary" },
    { name: "d", type: "date" },
    { name: "t", type: "datetime2" },
    { name: "o", type: "datetimeoffset" },
    { name: "s", type: "smalldatetime" },
    { name: "x", type: "time" },
    { name: "n", type: "bigint" },
    { name: "", type: "int" },
  ];
  const values = ["AP8Q", "2024-02-29", "2024-02-29T13:14:15.1234567", "2024-02-29T13:14:15.5+02:00", "2024-02-29T13:14:00", "13:14:15.1234567", "9007199254740993", 5];
  const row = rowReader(columns, "Date")(values);
  assert.deepEqual(row, {
    b: new Uint8Array([0, 255, 16]),
    d: new Date("2024-02-29T00:00:00Z"),
    t: new Date("2024-02-29T13:14:15.123Z"),
    o: new Date("2024-02-29T11:14:15.500Z"),
    s: new Date("2024-02-29T13:14:00Z"),
    x: "13:14:15.1234567",
    n: "9007199254740993",
    column7: 5,
  });
  assert.deepEqual(rowReader(columns, "string")(values).t, "2024-02-29T13:14:15.1234567");
  assert.deepEqual(rowReader(columns, "Date")(values.map(() => null)).b, null);
});

test("numAffectedRows is the connector's rows_affected, else the rows returned", async () => {
  const { fetcher } = relayAnswering({
    query: (body) => (body.sql.startsWith("update")
      ? [200, ndjson([{ done: { rows: 0, rows_affected: 3, result_sets: 0 } }])]
      : [200, ndjson([{ columns: [{ name: "id", type: "int" }] }, [4], [5], { done: { rows: 2, result_sets: 1 } }])]),
  });
  const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel: new TunnelClient({ tunnel: "demo", fetcher }), token: "T" }) });
  const updated = await db.updateTable("t").set({ a: 1 }).executeTakeFirstOrThrow();
  assert.equal(updated.numUpdatedRows, 3n);
  const inserted = await db.insertInto("t").values([{ a: 1 }, { a: 2 }]).output("inserted.id").execute();
  assert.deepEqual(inserted, [{ id: 4 }, { id: 5 }]);
});

test("a transaction is one session: begin with the isolation, the queries in it, commit", async () => {
  const { fetcher, requests } = relayAnswering({
    sessions: () => [201, { session: ID, expires_at: "2026-12-06T07:00:00.000Z", idle_timeout_ms: 30000 }],
    [`sessions/${ID}/query`]: () => [200, ndjson([{ done: { rows: 0, rows_affected: 1, result_sets: 0, session: { id: ID, state: "open" } } }])],
    [`sessions/${ID}/savepoint`]: () => [200, { session: ID, state: "open" }],
    [`sessions/${ID}/rollback_to`]: () => [200, { session: ID, state: "open" }],
    [`sessions/${ID}/commit`]: () => [200, { session: ID, state: "ended", reason: "committed" }],
  });
  let calls = 0;
  const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel: "demo", fetcher, token: () => `T${++calls}`, role: "writer", sessionTimeoutMs: 9000 }) });
  await db.transaction().setIsolationLevel("serializable").execute(async (trx) => {
    await trx.updateTable("t").set({ a: 1 }).execute();
    await sql`select 1`.execute(trx);
  });
  const trx = await db.startTransaction().execute();
  const sp = await trx.savepoint("sp1").execute();
  const back = await sp.rollbackToSavepoint("sp1").execute();
  await back.commit().execute();
  assert.deepEqual(requests.map((r) => r.path), [
    "sessions", `sessions/${ID}/query`, `sessions/${ID}/query`, `sessions/${ID}/commit`,
    "sessions", `sessions/${ID}/savepoint`, `sessions/${ID}/rollback_to`, `sessions/${ID}/commit`,
  ]);
  assert.deepEqual(requests[0].body, { isolation: "serializable", timeout_ms: 9000, role: "writer" });
  // the token is read once per session and kept for its operations
  assert.deepEqual(requests.map((r) => r.token), ["Bearer T1", "Bearer T1", "Bearer T1", "Bearer T1", "Bearer T2", "Bearer T2", "Bearer T2", "Bearer T2"]);
  assert.deepEqual(requests[5].body, { name: "sp1" });
});

test("a throwing callback rolls the session back and rethrows", async () => {
  const { fetcher, requests } = relayAnswering({
    sessions: () => [201, { session: ID, expires_at: "2026-12-06T07:00:00.000Z" }],
    [`sessions/${ID}/rollback`]: () => [200, { session: ID, state: "ended", reason: "rolled_back" }],
  });
  const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel: "demo", fetcher, token: "T" }) });
  const boom = new Error("boom");
  await assert.rejects(db.transaction().execute(async () => { throw boom; }), (e) => e === boom);
  assert.deepEqual(requests.map((r) => r.path), ["sessions", `sessions/${ID}/rollback`]);
});

test("a commit refused because the server ended the transaction is Kysely's AbortedTransactionError", async () => {
  const ended = { id: ID, state: "ended", reason: "idle_timeout" };
  const { fetcher } = relayAnswering({
    sessions: () => [201, { session: ID, expires_at: "2026-12-06T07:00:00.000Z" }],
    [`sessions/${ID}/commit`]: () => [410, { error: { code: "session.ended", message: "ended", session: ended } }],
  });
  const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel: "demo", fetcher, token: "T" }) });
  const err = await db.transaction().execute(async () => 1).catch((e) => e);
  assert.ok(err instanceof AbortedTransactionError, String(err));
  assert.ok(err.cause instanceof TunnelError && err.cause.session.reason === "idle_timeout");
});

test("a read-only transaction is refused before any request: SQL Server has none", async () => {
  const { fetcher, requests } = relayAnswering({});
  const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel: "demo", fetcher, token: "T" }) });
  await assert.rejects(db.transaction().setAccessMode("read only").execute(async () => 1), /no read-only transactions/);
  assert.equal(requests.length, 0);
});
