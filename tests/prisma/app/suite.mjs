// Prisma Client (generated from schema.prisma, no Rust query engine) through an edgetds tunnel:
// PrismaEdgeTds -> TunnelClient -> relay -> connector -> tdslite. Run by tests/prisma/ (pytest),
// which starts the stack, creates schema.sql, generates the client and sets:
//   PRISMA_CLIENT   path of the generated client.ts
//   EDGETDS_URL, EDGETDS_TUNNEL   the relay and tunnel
//   EDGETDS_TOKEN   a dev-IdP token of a user whose role writes (policy role "admin")
//   EDGETDS_READER_TOKEN   a token of a user whose role is read-only (policy role "analyst")
// The tests run in order and build on each other's rows.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import { TunnelClient } from "../../../relay/worker/src/client.js";
import { PrismaEdgeTds } from "../../../relay/worker/src/prisma.js";

const { PrismaClient, Prisma } = await import(pathToFileURL(process.env.PRISMA_CLIENT).href);
const tunnel = new TunnelClient({ tunnel: process.env.EDGETDS_TUNNEL, url: process.env.EDGETDS_URL });
const token = process.env.EDGETDS_TOKEN;
const prisma = new PrismaClient({ adapter: new PrismaEdgeTds({ tunnel, token }) });


const AVATAR = new Uint8Array([0, 1, 2, 254, 255]);

test("rows inserted with $executeRaw and typed parameters", async () => {
  const ada = await prisma.$executeRaw`INSERT INTO [dbo].[User] ([email], [name], [balance], [visits], [score], [birthday], [createdAt], [avatar])
    VALUES (${"ada@example.com"}, ${"Ada"}, ${new Prisma.Decimal("1234.5678")}, ${9007199254740993n}, ${0.25},
            ${new Date("1815-12-10T00:00:00Z")}, ${new Date("2026-01-02T03:04:05.678Z")}, ${AVATAR})`;
  assert.equal(ada, 1);
  for (const [i, name] of ["Grace", "Edsger", "Barbara", "Donald", "Frances"].entries()) {
    await prisma.$executeRaw`INSERT INTO [dbo].[User] ([email], [name], [score]) VALUES (${`${name.toLowerCase()}@example.com`}, ${name}, ${i})`;
  }
  const posts = await prisma.$executeRaw`INSERT INTO [dbo].[Post] ([title], [published], [authorId])
    SELECT [name] + N' ' + [n], CASE WHEN [n] = N'1' THEN 1 ELSE 0 END, [id] FROM [dbo].[User] CROSS JOIN (SELECT N'1' AS [n] UNION ALL SELECT N'2') AS [x]`;
  assert.equal(posts, 12);
  assert.equal(await prisma.$executeRaw`INSERT INTO [dbo].[Profile] ([bio], [userId]) SELECT N'first programmer', [id] FROM [dbo].[User] WHERE [name] = N'Ada'`, 1);
});

test("findUnique and findMany read every type back as Prisma's", async () => {
  const ada = await prisma.user.findUnique({ where: { email: "ada@example.com" }, include: { profile: true, posts: { orderBy: { id: "asc" } } } });
  assert.equal(typeof ada.id, "number");
  assert.equal(ada.name, "Ada");
  assert.ok(Prisma.Decimal.isDecimal(ada.balance));
  assert.equal(ada.balance.toFixed(4), "1234.5678");
  assert.equal(ada.visits, 9007199254740993n); // past 2^53: exact (bigint arrives as a string)
  assert.equal(ada.active, true); // the column's default
  assert.equal(ada.score, 0.25);
  assert.equal(ada.birthday.toISOString(), "1815-12-10T00:00:00.000Z");
  assert.equal(ada.createdAt.toISOString(), "2026-01-02T03:04:05.678Z");
  assert.deepEqual([...ada.avatar], [...AVATAR]);
  assert.equal(ada.profile.bio, "first programmer");
  assert.deepEqual(ada.posts.map((p) => [p.title, p.published, p.authorId]), [
    ["Ada 1", true, ada.id],
    ["Ada 2", false, ada.id],
  ]);
  const grace = await prisma.user.findFirst({ where: { name: "Grace" } });
  assert.equal(grace.birthday, null);
  assert.equal(grace.avatar, null);
  assert.equal(grace.balance.toString(), "0");
});

test("findMany with where, orderBy, take, skip and include", async () => {
  const page = await prisma.user.findMany({
    where: { email: { endsWith: "@example.com" }, score: { gte: 1 }, NOT: { name: "Donald" } },
    orderBy: [{ name: "asc" }],
    skip: 1,
    take: 2,
    include: { posts: { where: { title: { contains: "2" } }, select: { title: true } } },
  });
  assert.deepEqual(
    page.map((u) => [u.name, u.posts.map((p) => p.title)]),
    [
      ["Edsger", ["Edsger 2"]],
      ["Frances", ["Frances 2"]],
    ],
  );
  const byAuthor = await prisma.post.findMany({ where: { author: { name: { in: ["Grace", "Barbara"] } }, published: true }, orderBy: { title: "desc" }, include: { author: { select: { email: true } } } });
  assert.deepEqual(byAuthor.map((p) => [p.title, p.author.email]), [
    ["Grace 1", "grace@example.com"],
    ["Barbara 1", "barbara@example.com"],
  ]);
});

test("count, aggregate and groupBy", async () => {
  assert.equal(await prisma.post.count({ where: { author: { name: { in: ["Grace", "Barbara"] } } } }), 4);
  const agg = await prisma.user.aggregate({ _sum: { balance: true }, _max: { visits: true }, _avg: { score: true }, _count: true });
  assert.equal(agg._count, 6);
  assert.equal(agg._sum.balance.toString(), "1234.5678");
  assert.equal(agg._max.visits, 9007199254740993n);
  const groups = await prisma.post.groupBy({ by: ["published"], _count: { _all: true }, orderBy: { published: "asc" } });
  assert.deepEqual(groups.map((g) => [g.published, g._count._all]), [
    [false, 6],
    [true, 6],
  ]);
});

test("updateMany and deleteMany report their counts", async () => {
  const many = await prisma.post.updateMany({ where: { title: { startsWith: "Donald" } }, data: { published: true } });
  assert.equal(many.count, 2);
  const visits = await prisma.user.updateMany({ where: { name: { in: ["Grace", "Edsger"] } }, data: { visits: { increment: 5 }, balance: "10.5" } });
  assert.equal(visits.count, 2);
  const grace = await prisma.user.findUnique({ where: { email: "grace@example.com" } });
  assert.equal(grace.visits, 5n);
  assert.equal(grace.balance.toString(), "10.5");
  const removed = await prisma.post.deleteMany({ where: { title: { startsWith: "Donald" } } });
  assert.equal(removed.count, 2);
});

test("$queryRaw returns typed values", async () => {
  const rows = await prisma.$queryRaw`SELECT [name], [visits], [balance], [avatar], [birthday], [createdAt], [active] FROM [dbo].[User] WHERE [email] = ${"ada@example.com"}`;
  assert.equal(rows.length, 1);
  assert.equal(rows[0].name, "Ada");
  assert.equal(rows[0].visits, 9007199254740993n);
  assert.equal(rows[0].balance.toString(), "1234.5678");
  assert.deepEqual([...rows[0].avatar], [...AVATAR]);
  assert.equal(rows[0].birthday.toISOString(), "1815-12-10T00:00:00.000Z");
  assert.equal(rows[0].createdAt.toISOString(), "2026-01-02T03:04:05.678Z");
  assert.equal(rows[0].active, true);
  const values = await prisma.$queryRaw`SELECT ${12345678901234567n} AS n, ${1.5} AS f, ${true} AS b, ${null} AS z,
    CAST(12.5 AS money) AS m, CAST(0.1 AS real) AS r, CAST('12:34:56.789' AS time(3)) AS t,
    CAST('2024-01-02T03:04:05.123+02:00' AS datetimeoffset(3)) AS o`;
  assert.deepEqual(values, [
    { n: 12345678901234567n, f: 1.5, b: true, z: null, m: 12.5, r: 0.1, t: new Date("1970-01-01T12:34:56.789Z"), o: new Date("2024-01-02T01:04:05.123Z") },
  ]);
});

test("SQL Server's constraint errors are Prisma's known errors", async () => {
  await assert.rejects(prisma.user.updateMany({ where: { email: "grace@example.com" }, data: { email: "ada@example.com" } }), (error) => {
    assert.ok(error instanceof Prisma.PrismaClientKnownRequestError, String(error));
    assert.equal(error.code, "P2002"); // unique: SQL Server 2627
    return true;
  });
  await assert.rejects(prisma.post.updateMany({ where: { title: "Grace 1" }, data: { authorId: 999999 } }), (error) => {
    assert.equal(error.code, "P2003"); // foreign key: SQL Server 547
    return true;
  });
  await assert.rejects(prisma.$executeRaw`INSERT INTO [dbo].[Post] ([title], [authorId]) VALUES (NULL, 1)`, (error) => {
    assert.equal(error.code, "P2010"); // a raw query's error; its cause is the mapped null violation (515)
    assert.equal(error.meta.driverAdapterError.cause.kind, "NullConstraintViolation");
    assert.deepEqual(error.meta.driverAdapterError.cause.constraint, { fields: ["title"] });
    return true;
  });
});

test("every request carries the end user's token: a read-only user's write is refused", async () => {
  let asked = 0;
  const reader = new PrismaClient({
    adapter: new PrismaEdgeTds({
      tunnel,
      token: async () => {
        asked += 1;
        return process.env.EDGETDS_READER_TOKEN;
      },
    }),
  });
  assert.equal((await reader.user.findUnique({ where: { email: "ada@example.com" } })).name, "Ada");
  await assert.rejects(reader.user.updateMany({ where: { email: "ada@example.com" }, data: { name: "x" } }), (error) => {
    // the edgetds code (SPEC.md 10) is the Prisma error's code; the message says what to fix
    assert.ok(error instanceof Prisma.PrismaClientKnownRequestError, String(error));
    assert.equal(error.code, "policy.not_read_only");
    assert.match(error.message, /read-only role/);
    return true;
  });
  assert.ok(asked >= 2, `the token callback was asked ${asked} times`);
});

test("update and delete", async () => {
  const grace = await prisma.user.update({ where: { email: "grace@example.com" }, data: { name: "Grace Hopper", visits: { increment: 1 }, active: false } });
  assert.equal(grace.name, "Grace Hopper");
  assert.equal(grace.visits, 6n);
  assert.equal(grace.active, false);
  const post = await prisma.post.findFirst({ where: { title: "Grace 2" } });
  const gone = await prisma.post.delete({ where: { id: post.id } });
  assert.equal(gone.title, "Grace 2");
  assert.equal(await prisma.post.findUnique({ where: { id: post.id } }), null);
});

test("$transaction([...]) commits every statement", async () => {
  const [user, posts] = await prisma.$transaction([
    prisma.user.update({ where: { email: "edsger@example.com" }, data: { name: "Edsger W. Dijkstra" } }),
    prisma.post.updateMany({ where: { title: { startsWith: "Edsger" } }, data: { published: true } }),
  ]);
  assert.equal(user.name, "Edsger W. Dijkstra");
  assert.equal(posts.count, 2);
  assert.equal(await prisma.post.count({ where: { title: { startsWith: "Edsger" }, published: true } }), 2);
});

test("$transaction([...]) rolls every statement back when one fails", async () => {
  await assert.rejects(
    prisma.$transaction([
      prisma.user.update({ where: { email: "barbara@example.com" }, data: { name: "lost" } }),
      prisma.user.update({ where: { email: "frances@example.com" }, data: { email: "ada@example.com" } }), // unique violation
    ]),
    (error) => error.code === "P2002",
  );
  assert.equal((await prisma.user.findUnique({ where: { email: "barbara@example.com" } })).name, "Barbara");
});

test("interactive $transaction with an isolation level commits", async () => {
  const total = await prisma.$transaction(
    async (tx) => {
      const from = await tx.user.update({ where: { email: "edsger@example.com" }, data: { balance: { decrement: 3 } } });
      await tx.user.update({ where: { email: "barbara@example.com" }, data: { balance: { increment: 3 } } });
      const both = await tx.user.findMany({ where: { email: { in: ["edsger@example.com", "barbara@example.com"] } } });
      return { from, sum: both.reduce((acc, u) => acc.add(u.balance), new Prisma.Decimal(0)) };
    },
    { isolationLevel: Prisma.TransactionIsolationLevel.Serializable },
  );
  assert.equal(total.from.balance.toString(), "7.5"); // 10.5 (updateMany above) - 3
  assert.equal(total.sum.toString(), "10.5");
  assert.equal((await prisma.user.findUnique({ where: { email: "barbara@example.com" } })).balance.toString(), "3");
});

test("interactive $transaction rolls back when the callback throws", async () => {
  await assert.rejects(
    prisma.$transaction(async (tx) => {
      await tx.user.update({ where: { email: "donald@example.com" }, data: { name: "renamed" } });
      assert.equal((await tx.user.findUnique({ where: { email: "donald@example.com" } })).name, "renamed"); // visible inside
      throw new Error("changed my mind");
    }),
    /changed my mind/,
  );
  assert.equal((await prisma.user.findUnique({ where: { email: "donald@example.com" } })).name, "Donald");
});

test("interactive $transaction: $queryRaw inside sees the transaction's writes", async () => {
  const seen = await prisma.$transaction(
    async (tx) => {
      await tx.user.updateMany({ where: { email: "frances@example.com" }, data: { name: "Frances Allen" } });
      return tx.$queryRaw`SELECT [name] FROM [dbo].[User] WHERE [email] = ${"frances@example.com"}`;
    },
    { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted },
  );
  assert.deepEqual(seen, [{ name: "Frances Allen" }]);
});

test("a $transaction nested in an interactive one is a savepoint: its throw undoes only its writes", async () => {
  const inner = await prisma.$transaction(async (tx) => {
    await tx.user.update({ where: { email: "donald@example.com" }, data: { name: "Donald Knuth" } });
    let error = null;
    try {
      // a nested $transaction is not in the generated type of `tx`, but Prisma runs it (a savepoint)
      await tx.$transaction(async (nested) => {
        await nested.user.update({ where: { email: "grace@example.com" }, data: { name: "undone" } });
        throw new Error("inner undone");
      });
    } catch (e) {
      error = e.message;
    }
    await tx.$transaction(async (nested) => {
      await nested.user.update({ where: { email: "barbara@example.com" }, data: { name: "Barbara Liskov" } });
    });
    return error;
  });
  assert.equal(inner, "inner undone");
  const names = await prisma.user.findMany({ where: { email: { in: ["donald@example.com", "grace@example.com", "barbara@example.com"] } }, orderBy: { email: "asc" }, select: { name: true } });
  assert.deepEqual(names.map((u) => u.name), ["Barbara Liskov", "Donald Knuth", "Grace Hopper"]);
});

test("create with a nested create, read back with include", async () => {
  const user = await prisma.user.create({
    data: {
      email: "alan@example.com",
      name: "Alan",
      balance: new Prisma.Decimal("0.0001"),
      visits: 1n,
      birthday: new Date("1912-06-23T00:00:00Z"),
      avatar: AVATAR,
      posts: { create: [{ title: "On Computable Numbers", published: true }, { title: "Draft" }] },
      profile: { create: { bio: "codebreaker" } },
    },
    include: { posts: { orderBy: { id: "asc" } }, profile: true },
  });
  assert.equal(user.name, "Alan");
  assert.equal(user.balance.toString(), "0.0001");
  assert.equal(user.birthday.toISOString(), "1912-06-23T00:00:00.000Z");
  assert.deepEqual([...user.avatar], [...AVATAR]);
  assert.ok(Math.abs(Date.now() - user.createdAt.getTime()) < 600_000); // @default(now())
  assert.deepEqual(user.posts.map((p) => [p.title, p.published, p.authorId]), [
    ["On Computable Numbers", true, user.id],
    ["Draft", false, user.id],
  ]);
  assert.equal(user.profile.bio, "codebreaker");
});

test("upsert creates, then updates", async () => {
  const created = await prisma.user.upsert({ where: { email: "kathleen@example.com" }, create: { email: "kathleen@example.com", name: "Kathleen" }, update: { name: "not used" } });
  assert.equal(created.name, "Kathleen");
  const updated = await prisma.user.upsert({ where: { email: "kathleen@example.com" }, create: { email: "kathleen@example.com", name: "not used" }, update: { name: "Kathleen Booth" } });
  assert.equal(updated.id, created.id);
  assert.equal(updated.name, "Kathleen Booth");
});

test("createMany inserts every row in one statement", async () => {
  const made = await prisma.user.createMany({ data: [{ email: "m1@example.com", visits: 2n }, { email: "m2@example.com", birthday: new Date("2000-02-29T00:00:00Z") }] });
  assert.equal(made.count, 2);
  assert.equal((await prisma.user.findUnique({ where: { email: "m2@example.com" } })).birthday.toISOString(), "2000-02-29T00:00:00.000Z");
});
