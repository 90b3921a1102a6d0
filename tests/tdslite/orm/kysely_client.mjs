// Kysely (its own MssqlDialect over tedious + tarn) against tdslite, run by test_orm_clients.py.
// How to poke it: node tests/tdslite/orm/kysely_client.mjs '{"host", "port", "user", "password"}'
// (a tdslite with an empty database). Runs one scenario and prints what Kysely returned as one
// JSON object {step: result}; a step that threw gives {"error": message, "number"?}.
// Values come back JSON-friendly: Date -> ISO string, Buffer -> {"hex"}, bigint -> string.
import { Kysely, MssqlDialect, sql } from "kysely";
import * as tarn from "tarn";
import * as tedious from "tedious";

const plan = JSON.parse(process.argv[2]);
const statements = [];

const db = new Kysely({
  dialect: new MssqlDialect({
    tarn: { ...tarn, options: { min: 0, max: 2 } },
    tedious: {
      ...tedious,
      connectionFactory: () =>
        new tedious.Connection({
          server: plan.host,
          authentication: {
            type: "default",
            options: { userName: plan.user, password: plan.password },
          },
          options: {
            port: plan.port,
            encrypt: false,
            trustServerCertificate: true,
            connectTimeout: 20000,
            requestTimeout: 20000,
          },
        }),
    },
  }),
  log: (event) => statements.push(event.query.sql),
});

function toJson(value) {
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return { hex: value.toString("hex") };
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(toJson);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  return value;
}

const out = {};
async function step(name, fn) {
  try {
    out[name] = toJson(await fn());
  } catch (error) {
    out[name] = { error: error.message, number: error.number };
  }
}

const person = {
  first_name: "Zoë 😀 Ünïcödé",
  big: 9007199254740993n,
  amount: 1234.5678,
  born: new Date("2024-05-06T07:08:09.123Z"),
  tag: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
  ok: true,
  data: Buffer.from("00ff10", "hex"),
};

await step("create", async () => {
  await sql`CREATE TABLE person (id int IDENTITY(1,1) PRIMARY KEY, first_name nvarchar(100)
    NOT NULL, big bigint, amount decimal(18,4), born datetime2(7), tag uniqueidentifier, ok bit,
    data varbinary(50))`.execute(db);
  await sql`CREATE TABLE pet (id int IDENTITY(1,1) PRIMARY KEY, name nvarchar(50) NOT NULL,
    owner_id int NOT NULL REFERENCES person (id))`.execute(db);
  return "ok";
});
await step("insertOutputId", () =>
  db.insertInto("person").values(person).output("inserted.id").executeTakeFirstOrThrow(),
);
await step("roundTrip", () =>
  db.selectFrom("person").selectAll().where("id", "=", 1).executeTakeFirstOrThrow(),
);
await step("insertOutputAll", () =>
  db
    .insertInto("person")
    .values([
      { ...person, first_name: "Bea", big: -1n, ok: false, data: Buffer.alloc(0) },
      { first_name: "Cem" },
    ])
    .outputAll("inserted")
    .execute(),
);
await step("insertPets", async () => {
  const result = await db
    .insertInto("pet")
    .values([
      { name: "Rex", owner_id: 1 },
      { name: "Tom", owner_id: 2 },
      { name: "Kit", owner_id: 2 },
    ])
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows);
});
await step("selectJoin", () =>
  db
    .selectFrom("person")
    .innerJoin("pet", "pet.owner_id", "person.id")
    .select(["person.first_name", "pet.name"])
    .where("person.id", ">=", 1)
    .where("pet.name", "like", "%e%")
    .orderBy("person.id")
    .orderBy("pet.name", "desc")
    .execute(),
);
await step("leftJoinCount", () =>
  db
    .selectFrom("person")
    .leftJoin("pet", "pet.owner_id", "person.id")
    .select(["person.id", db.fn.count("pet.id").as("pets")])
    .groupBy("person.id")
    .orderBy("person.id")
    .execute(),
);
await step("offsetFetch", () =>
  db.selectFrom("pet").select("name").orderBy("id").offset(1).fetch(1).execute(),
);
await step("top", () => db.selectFrom("pet").select("name").top(2).orderBy("id").execute());
await step("offsetWithoutOrderBy", () =>
  db.selectFrom("pet").select("name").offset(1).fetch(1).execute(),
);
await step("updateOutput", () =>
  db
    .updateTable("person")
    .set({ first_name: "Cemil", big: 42n })
    .where("id", "=", 3)
    .output(["deleted.first_name as old_name", "inserted.first_name as new_name", "inserted.big"])
    .execute(),
);
await step("deleteOutput", () =>
  db.deleteFrom("pet").where("name", "=", "Kit").outputAll("deleted").execute(),
);
await step("updateDeleteTop", async () => {
  const updated = await db
    .updateTable("pet")
    .top(1)
    .set({ name: "Topped" })
    .where("owner_id", "=", 1)
    .output("inserted.name")
    .execute();
  const deleted = await db
    .deleteFrom("pet")
    .top(1)
    .where("name", "=", "Topped")
    .output("deleted.name")
    .execute();
  await db.insertInto("pet").values({ name: "Rex", owner_id: 1 }).execute();
  return { updated, deleted };
});
await step("transactionCommit", async () => {
  const inside = await db.transaction().execute(async (trx) => {
    await trx.insertInto("pet").values({ name: "Committed", owner_id: 1 }).execute();
    return (await sql`SELECT @@TRANCOUNT AS n`.execute(trx)).rows[0].n;
  });
  const rows = await db.selectFrom("pet").select("name").where("name", "=", "Committed").execute();
  return { trancount: inside, rows };
});
await step("transactionRollback", async () => {
  let error = null;
  try {
    await db.transaction().execute(async (trx) => {
      await trx.insertInto("pet").values({ name: "Gone", owner_id: 1 }).execute();
      throw new Error("rolled back on purpose");
    });
  } catch (e) {
    error = e.message;
  }
  const rows = await db.selectFrom("pet").select("name").where("name", "=", "Gone").execute();
  return { error, rows };
});
await step("isolationLevel", () =>
  db
    .transaction()
    .setIsolationLevel("serializable")
    .execute(async (trx) => {
      const r = await sql`SELECT transaction_isolation_level AS level, @@TRANCOUNT AS n
        FROM sys.dm_exec_sessions WHERE session_id = @@SPID`.execute(trx);
      return r.rows[0];
    }),
);
await step("savepoint", async () => {
  const trx = await db.startTransaction().execute();
  await trx.insertInto("pet").values({ name: "Kept", owner_id: 1 }).execute();
  const sp = await trx.savepoint("before_undone").execute();
  await sp.insertInto("pet").values({ name: "Undone", owner_id: 1 }).execute();
  const back = await sp.rollbackToSavepoint("before_undone").execute();
  await back.commit().execute();
  return db
    .selectFrom("pet")
    .select("name")
    .where("name", "in", ["Kept", "Undone"])
    .orderBy("name")
    .execute();
});
await step("stream", async () => {
  await sql`DECLARE @i int = 0; WHILE @i < 2000 BEGIN
    INSERT INTO pet (name, owner_id) VALUES (CONCAT(N'p', @i), 2); SET @i = @i + 1 END`.execute(db);
  let rows = 0;
  let last = null;
  for await (const row of db
    .selectFrom("pet")
    .select(["id", "name"])
    .where("name", "like", "p%")
    .orderBy("id")
    .stream(100)) {
    rows += 1;
    last = row.name;
  }
  return { rows, last };
});
await step("tables", async () => {
  const tables = await db.introspection.getTables();
  return tables.map((t) => ({
    schema: t.schema,
    name: t.name,
    isView: t.isView,
    columns: t.columns.map((c) => [c.name, c.dataType, c.isNullable, c.isAutoIncrementing]),
  }));
});
await step("schemas", async () => (await db.introspection.getSchemas()).map((s) => s.name));
await db.destroy();
out.statements = statements;
process.stdout.write(JSON.stringify(out));
