// Kysely transactions through the tunnel: each db.transaction() is one edgetds session
// (SPEC.md 7.4). Run by tests/kysely/test_kysely.py against each relay, never alone.
import assert from "node:assert/strict";
import { test } from "node:test";

import { sql } from "kysely";

import { TunnelError } from "../../relay/worker/src/client.js";
import { database } from "./stack.mjs";

const db = database();

async function qty(id) {
  const row = await db.selectFrom("stock").select("qty").where("id", "=", id).executeTakeFirst();
  return row?.qty ?? null;
}

test("a transaction commits every statement when the callback returns", async () => {
  const moved = await db.transaction().execute(async (trx) => {
    await trx.updateTable("stock").set((eb) => ({ qty: eb("qty", "-", 3) })).where("id", "=", 1).execute();
    const row = await trx.updateTable("stock").set((eb) => ({ qty: eb("qty", "+", 3) })).where("id", "=", 2).output("inserted.qty").executeTakeFirstOrThrow();
    // The transaction sees its own writes.
    assert.equal((await trx.selectFrom("stock").select("qty").where("id", "=", 1).executeTakeFirstOrThrow()).qty, 7);
    return row.qty;
  });
  assert.equal(moved, 3);
  assert.equal(await qty(1), 7);
  assert.equal(await qty(2), 3);
});

test("a transaction rolls back everything when the callback throws, and rethrows", async () => {
  const boom = new Error("changed my mind");
  await assert.rejects(
    db.transaction().execute(async (trx) => {
      await trx.insertInto("stock").values({ id: 50, item: "ghost", qty: 1 }).execute();
      await trx.updateTable("stock").set({ qty: 0 }).where("id", "=", 1).execute();
      throw boom;
    }),
    (err) => err === boom,
  );
  assert.equal(await qty(50), null);
  assert.equal(await qty(1), 7);
});

test("a failing statement rolls the transaction back with SQL Server's error", async () => {
  await assert.rejects(
    db.transaction().execute(async (trx) => {
      await trx.updateTable("stock").set({ qty: 100 }).where("id", "=", 2).execute();
      await trx.insertInto("stock").values({ id: 1, item: "again", qty: 1 }).execute(); // id 1 exists
    }),
    (err) => err instanceof TunnelError && err.code === "sql.error" && err.sql.number === 2627,
  );
  assert.equal(await qty(2), 3);
});

test("an isolation level applies to the session", async () => {
  const level = await db
    .transaction()
    .setIsolationLevel("serializable")
    .execute(async (trx) => {
      // transaction_isolation_level 4 = SERIALIZABLE
      const { rows } = await sql`select transaction_isolation_level as level from sys.dm_exec_sessions where session_id = @@SPID`.execute(trx);
      return rows[0].level;
    });
  assert.equal(level, 4);
});

test("savepoints: rollbackToSavepoint undoes only what followed the savepoint", async () => {
  const trx = await db.startTransaction().execute();
  await trx.insertInto("stock").values({ id: 60, item: "kept", qty: 1 }).execute();
  const afterFirst = await trx.savepoint("after_first").execute();
  await afterFirst.insertInto("stock").values({ id: 61, item: "undone", qty: 1 }).execute();
  const back = await afterFirst.rollbackToSavepoint("after_first").execute();
  await back.commit().execute();
  assert.equal(await qty(60), 1);
  assert.equal(await qty(61), null);
});

test("a controlled transaction rolled back leaves nothing", async () => {
  const trx = await db.startTransaction().execute();
  await trx.insertInto("stock").values({ id: 70, item: "never", qty: 1 }).execute();
  await trx.rollback().execute();
  assert.equal(trx.isRolledBack, true);
  assert.equal(await qty(70), null);
});

test("stream() inside a transaction reads the transaction's own writes", async () => {
  const count = await db.transaction().execute(async (trx) => {
    await trx.insertInto("stock").values([{ id: 80, item: "a", qty: 1 }, { id: 81, item: "b", qty: 1 }]).execute();
    let n = 0;
    for await (const _row of trx.selectFrom("stock").select("id").where("id", ">=", 80).stream(1)) n += 1;
    return n;
  });
  assert.equal(count, 2);
});

test("a transaction of a read-only role is refused at its first write and rolled back", async () => {
  const reader = database({ reader: true });
  await assert.rejects(
    reader.transaction().execute(async (trx) => {
      await trx.insertInto("stock").values({ id: 90, item: "x", qty: 1 }).execute();
    }),
    (err) => err instanceof TunnelError && (err.code === "policy.not_read_only" || err.code === "policy.denied"),
  );
  assert.equal(await qty(90), null);
});
