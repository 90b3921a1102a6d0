// Kysely through the tunnel, one-shot queries: relay -> real connector -> tdslite (the tables of
// tests/kysely/test_kysely.py). Run by that test against each relay, never alone.
import assert from "node:assert/strict";
import { test } from "node:test";

import { sql } from "kysely";

import { TunnelError } from "../../relay/worker/src/client.js";
import { database } from "./stack.mjs";

const db = database();

// Kysely's SQL that tdslite (the SQL Server stand-in of the tests) does not run yet; each of
// these tests runs as soon as tdslite does (real SQL Server runs all of them).
const TDSLITE_OUTPUT_DELETED = "tdslite refuses OUTPUT deleted.* (40517) in UPDATE and OUTPUT in DELETE (102)";
const TDSLITE_EXTENDED_PROPERTIES = "tdslite has no sys.extended_properties (208), which Kysely's MssqlIntrospector joins";

test("a select with joins, a where on a parameter and an order", async () => {
  const rows = await db
    .selectFrom("books as b")
    .innerJoin("authors as a", "a.id", "b.author_id")
    .select(["a.name as author", "b.title", "b.price"])
    .where("b.price", ">", "20")
    .orderBy("b.price", "desc")
    .execute();
  assert.deepEqual(rows, [
    { author: "Brian", title: "C", price: "45.25" },
    { author: "Ada", title: "Engines", price: "30.00" },
  ]);
});

test("a left join, an aggregate, group by and having", async () => {
  const rows = await db
    .selectFrom("authors as a")
    .leftJoin("books as b", "b.author_id", "a.id")
    .select((eb) => ["a.name", eb.fn.count("b.id").as("books"), eb.fn.sum("b.price").as("total")])
    .groupBy("a.name")
    .having((eb) => eb.fn.count("b.id"), ">", 0)
    .orderBy("a.name")
    .execute();
  assert.deepEqual(rows, [
    { name: "Ada", books: 2, total: "42.50" },
    { name: "Brian", books: 1, total: "45.25" },
  ]);
});

test("top, offset/fetch and a subquery in where", async () => {
  const top = await db.selectFrom("books").select("title").top(1).orderBy("id").execute();
  assert.deepEqual(top, [{ title: "Notes" }]);
  const page = await db.selectFrom("books").select("title").orderBy("id").offset(1).fetch(1).execute();
  assert.deepEqual(page, [{ title: "Engines" }]);
  const byAda = await db
    .selectFrom("books")
    .select("title")
    .where("author_id", "in", db.selectFrom("authors").select("id").where("name", "=", "Ada"))
    .orderBy("title")
    .execute();
  assert.deepEqual(byAda.map((r) => r.title), ["Engines", "Notes"]);
});

test("insert with output inserted.* returns the new row, identity included", async () => {
  const row = await db.insertInto("authors").values({ name: "Grace" }).output("inserted.id").output("inserted.name").executeTakeFirstOrThrow();
  assert.equal(row.name, "Grace");
  assert.ok(Number.isInteger(row.id) && row.id > 2, JSON.stringify(row));
  const all = await db.insertInto("authors").values([{ name: "Edsger" }, { name: "Barbara" }]).outputAll("inserted").execute();
  assert.deepEqual(all.map((r) => r.name).sort(), ["Barbara", "Edsger"]);
  assert.ok(all.every((r) => Number.isInteger(r.id)));
});

test("insert without output reports the inserted row count", async () => {
  const result = await db.insertInto("stock").values([{ id: 100, item: "bolt", qty: 5 }, { id: 101, item: "nut", qty: 6 }]).executeTakeFirstOrThrow();
  assert.equal(result.numInsertedOrUpdatedRows, 2n);
});

test("update: the row count, and output inserted.* with the new values", async () => {
  const result = await db.updateTable("stock").set({ qty: 7 }).where("id", "in", [100, 101]).executeTakeFirstOrThrow();
  assert.equal(result.numUpdatedRows, 2n);
  const changed = await db
    .updateTable("stock")
    .set((eb) => ({ qty: eb("qty", "+", 1) }))
    .where("id", "=", 100)
    .output(["inserted.id", "inserted.qty"])
    .executeTakeFirstOrThrow();
  assert.deepEqual(changed, { id: 100, qty: 8 });
});

test("update with output deleted.* (the old values)", { skip: TDSLITE_OUTPUT_DELETED }, async () => {
  const changed = await db
    .updateTable("stock")
    .set({ qty: 9 })
    .where("id", "=", 100)
    .output(["inserted.qty as now", "deleted.qty as before"])
    .executeTakeFirstOrThrow();
  assert.deepEqual(changed, { now: 9, before: 8 });
});

test("delete: the row count", async () => {
  const result = await db.deleteFrom("stock").where("id", "=", 100).executeTakeFirstOrThrow();
  assert.equal(result.numDeletedRows, 1n);
  const none = await db.deleteFrom("stock").where("id", "=", 100).executeTakeFirstOrThrow();
  assert.equal(none.numDeletedRows, 0n);
});

test("delete with output deleted.*", { skip: TDSLITE_OUTPUT_DELETED }, async () => {
  const gone = await db.deleteFrom("stock").where("id", "=", 101).output("deleted.item").execute();
  assert.deepEqual(gone, [{ item: "nut" }]);
});

test("JS values round-trip exactly: bigint, Date, Uint8Array, decimal text, bit, float, strings", async () => {
  const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
  const at = new Date(Date.UTC(2026, 1, 28, 23, 59, 58, 987));
  const big = 9007199254740993n; // past 2^53: a JS number cannot hold it
  const note = "é 🙂 " + "x".repeat(5000);
  await db
    .insertInto("vals")
    .values({ id: 1, big, at, bytes, amount: "12345678901234567890.0123456789", flag: true, ratio: 0.1, note, day: "2024-02-29", uid: "6f9619ff-8b86-d011-b42d-00c04fc964ff" })
    .execute();
  const row = await db.selectFrom("vals").selectAll().where("id", "=", 1).executeTakeFirstOrThrow();
  assert.equal(BigInt(row.big), big);
  assert.equal(row.big, "9007199254740993");
  assert.deepEqual(row.at, at);
  assert.deepEqual(row.bytes, bytes);
  assert.equal(row.amount, "12345678901234567890.0123456789");
  assert.equal(row.flag, true);
  assert.equal(row.ratio, 0.1);
  assert.equal(row.note, note);
  assert.deepEqual(row.day, new Date("2024-02-29T00:00:00Z"));
  assert.equal(row.uid, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
  // The same values find the row again as parameters of a where (exact comparisons).
  const found = await db.selectFrom("vals").select("id").where("big", "=", big).where("at", "=", at).where("bytes", "=", bytes).execute();
  assert.deepEqual(found, [{ id: 1 }]);
});

test("typed parameters pass through; dates: 'string' keeps all seven digits of datetime2(7)", async () => {
  await db.insertInto("vals").values({ id: 2, at7: { type: "datetime2(7)", value: "2024-02-29T13:14:15.1234567" }, amount: { type: "decimal(38,10)", value: "-0.0000000001" } }).execute();
  const asText = database({ dates: "string" });
  const row = await asText.selectFrom("vals").select(["at7", "amount"]).where("id", "=", 2).executeTakeFirstOrThrow();
  assert.deepEqual(row, { at7: "2024-02-29T13:14:15.1234567", amount: "-0.0000000001" });
  const asDate = await db.selectFrom("vals").select("at7").where("id", "=", 2).executeTakeFirstOrThrow();
  assert.deepEqual(asDate.at7, new Date("2024-02-29T13:14:15.123Z")); // a Date holds milliseconds
});

test("raw sql templates bind their values as parameters", async () => {
  const name = "Robert'); DROP TABLE authors;--";
  const { rows } = await sql`select ${name} as v, ${42} as n, ${null} as z`.execute(db);
  assert.deepEqual(rows, [{ v: name, n: 42, z: null }]);
});

test("stream() reads a large result in chunks as it arrives", async () => {
  const query = db
    .selectFrom("d as a")
    .crossJoin("d as b")
    .crossJoin("d as c")
    .crossJoin("d as e")
    .select(sql`a.n * 1000 + b.n * 100 + c.n * 10 + e.n`.as("k"));
  let count = 0;
  let sum = 0;
  for await (const row of query.stream(1000)) {
    count += 1;
    sum += row.k;
  }
  assert.equal(count, 10_000);
  assert.equal(sum, (9999 * 10_000) / 2);
  // Leaving early cancels the rest; the next query runs normally.
  let seen = 0;
  for await (const _row of query.stream(10)) {
    if (++seen === 25) break;
  }
  assert.equal(seen, 25);
  const after = await db.selectFrom("two").select("n").orderBy("n").execute();
  assert.deepEqual(after, [{ n: 0 }, { n: 1 }]);
});

test("introspection lists the tables and their columns", { skip: TDSLITE_EXTENDED_PROPERTIES }, async () => {
  const tables = await db.introspection.getTables();
  const books = tables.find((t) => t.name === "books");
  assert.ok(books, `books missing: ${tables.map((t) => t.name)}`);
  assert.equal(books.schema, "dbo");
  assert.equal(books.isView, false);
  const columns = Object.fromEntries(books.columns.map((c) => [c.name, c]));
  assert.deepEqual(Object.keys(columns).sort(), ["author_id", "id", "price", "title"]);
  assert.equal(columns.id.isAutoIncrementing, true);
  assert.equal(columns.id.hasDefaultValue, true);
  assert.equal(columns.price.isNullable, true);
  assert.equal(columns.title.isNullable, false);
  assert.equal(columns.title.dataType, "nvarchar");
  const schemas = await db.introspection.getSchemas();
  assert.ok(schemas.some((s) => s.name === "dbo"));
});

test("errors keep their edgetds code: a read-only role cannot write, SQL errors carry SQL Server's number", async () => {
  const reader = database({ reader: true });
  await assert.rejects(reader.insertInto("stock").values({ id: 1, item: "x", qty: 1 }).execute(), (err) => err instanceof TunnelError && err.code === "policy.not_read_only" && err.status === 403);
  // stock 1 exists: a primary key violation
  await assert.rejects(db.insertInto("stock").values({ id: 1, item: "x", qty: 1 }).execute(), (err) => err instanceof TunnelError && err.code === "sql.error" && err.status === 422 && err.sql.number === 2627);
  await assert.rejects(db.selectFrom("no_such_table").selectAll().execute(), (err) => err instanceof TunnelError && err.sql?.number === 208);
});
