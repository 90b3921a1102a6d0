// Prisma Client (generated from schema.prisma, no Rust query engine) through an edgetds tunnel:
// PrismaEdgeTds -> TunnelClient -> relay -> connector -> tdslite. Run by tests/prisma/ (pytest),
// which starts the stack, creates schema.sql, generates the client and sets:
//   PRISMA_CLIENT   path of the generated client.ts
//   EDGETDS_URL, EDGETDS_TUNNEL   the relay and tunnel
//   EDGETDS_TOKEN   a dev-IdP token of a user whose role writes (policy role "admin")
//   EDGETDS_READER_TOKEN   a token of a user whose role is read-only (policy role "analyst")
import assert from "node:assert/strict";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import { TunnelClient, TunnelError } from "../../../relay/worker/src/client.js";
import { PrismaEdgeTds } from "../../../relay/worker/src/prisma.js";

const { PrismaClient, Prisma } = await import(pathToFileURL(process.env.PRISMA_CLIENT).href);
const tunnel = new TunnelClient({ tunnel: process.env.EDGETDS_TUNNEL, url: process.env.EDGETDS_URL });
const token = process.env.EDGETDS_TOKEN;
const prisma = new PrismaClient({ adapter: new PrismaEdgeTds({ tunnel, token }) });

/** Transactions need edgetds sessions (SPEC.md 7.4, 11.5) in the client and on the relays. */
const SESSIONS = typeof TunnelClient.prototype.session === "function";
const NO_SESSIONS = !SESSIONS && "TunnelClient has no session API yet: the relays do not serve /sessions";

test("create with a nested create, then read it back with include", async () => {
  const user = await prisma.user.create({
    data: {
      email: "ada@example.com",
      name: "Ada",
      balance: new Prisma.Decimal("1234.5678"),
      visits: 9007199254740993n,
      score: 0.25,
      birthday: new Date("1815-12-10T00:00:00Z"),
      avatar: new Uint8Array([0, 1, 2, 254, 255]),
      posts: { create: [{ title: "Notes on the Analytical Engine", published: true }, { title: "Draft" }] },
      profile: { create: { bio: "first programmer" } },
    },
    include: { posts: { orderBy: { id: "asc" } }, profile: true },
  });
  assert.equal(typeof user.id, "number");
  assert.equal(user.name, "Ada");
  assert.ok(Prisma.Decimal.isDecimal(user.balance));
  assert.equal(user.balance.toFixed(4), "1234.5678");
  assert.equal(user.visits, 9007199254740993n); // past 2^53: exact (bigint arrives as a string)
  assert.equal(user.active, true);
  assert.equal(user.score, 0.25);
  assert.equal(user.birthday.toISOString(), "1815-12-10T00:00:00.000Z");
  assert.ok(user.createdAt instanceof Date && Math.abs(Date.now() - user.createdAt.getTime()) < 600_000);
  assert.deepEqual([...user.avatar], [0, 1, 2, 254, 255]);
  assert.deepEqual(
    user.posts.map((p) => [p.title, p.published, p.authorId]),
    [
      ["Notes on the Analytical Engine", true, user.id],
      ["Draft", false, user.id],
    ],
  );
  assert.equal(user.profile.bio, "first programmer");

  const again = await prisma.user.findUnique({ where: { email: "ada@example.com" }, include: { profile: true } });
  assert.equal(again.id, user.id);
  assert.equal(again.profile.userId, user.id);
});

test("findMany with where, orderBy, take, skip and include", async () => {
  for (const [i, name] of ["Grace", "Edsger", "Barbara", "Donald", "Frances"].entries()) {
    await prisma.user.create({
      data: { email: `${name.toLowerCase()}@example.com`, name, score: i, posts: { create: [{ title: `${name} 1` }, { title: `${name} 2` }] } },
    });
  }
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
  const count = await prisma.post.count({ where: { author: { name: { in: ["Grace", "Barbara"] } } } });
  assert.equal(count, 4);
});

test("update, upsert (both ways), updateMany and delete", async () => {
  const grace = await prisma.user.update({
    where: { email: "grace@example.com" },
    data: { name: "Grace Hopper", visits: { increment: 5 }, balance: "10.5", active: false },
  });
  assert.equal(grace.name, "Grace Hopper");
  assert.equal(grace.visits, 5n);
  assert.equal(grace.balance.toString(), "10.5");
  assert.equal(grace.active, false);

  const created = await prisma.user.upsert({
    where: { email: "alan@example.com" },
    create: { email: "alan@example.com", name: "Alan" },
    update: { name: "not used" },
  });
  assert.equal(created.name, "Alan");
  const updated = await prisma.user.upsert({
    where: { email: "alan@example.com" },
    create: { email: "alan@example.com", name: "not used" },
    update: { name: "Alan Turing" },
  });
  assert.equal(updated.id, created.id);
  assert.equal(updated.name, "Alan Turing");

  const many = await prisma.post.updateMany({ where: { title: { startsWith: "Donald" } }, data: { published: true } });
  assert.equal(many.count, 2);

  const gone = await prisma.user.delete({ where: { email: "alan@example.com" } });
  assert.equal(gone.id, created.id);
  assert.equal(await prisma.user.findUnique({ where: { email: "alan@example.com" } }), null);
  const removed = await prisma.post.deleteMany({ where: { title: { startsWith: "Donald" } } });
  assert.equal(removed.count, 2);
});

test("$queryRaw and $executeRaw with typed parameters", async () => {
  const rows = await prisma.$queryRaw`SELECT [name], [visits], [balance], [avatar], [birthday] FROM [dbo].[User] WHERE [email] = ${"ada@example.com"}`;
  assert.equal(rows.length, 1);
  assert.equal(rows[0].name, "Ada");
  assert.equal(rows[0].visits, 9007199254740993n);
  assert.equal(rows[0].balance.toString(), "1234.5678");
  assert.deepEqual([...rows[0].avatar], [0, 1, 2, 254, 255]);
  assert.equal(rows[0].birthday.toISOString(), "1815-12-10T00:00:00.000Z");
  const big = await prisma.$queryRaw`SELECT ${12345678901234567n} AS n, ${1.5} AS f, ${true} AS b, ${null} AS z`;
  assert.deepEqual(big, [{ n: 12345678901234567n, f: 1.5, b: true, z: null }]);
  const changed = await prisma.$executeRaw`UPDATE [dbo].[User] SET [visits] = [visits] + 1 WHERE [email] IN (${"edsger@example.com"}, ${"barbara@example.com"})`;
  assert.equal(changed, 2);
});

test("SQL Server's constraint errors are Prisma's known errors", async () => {
  await assert.rejects(prisma.user.create({ data: { email: "ada@example.com" } }), (error) => {
    assert.ok(error instanceof Prisma.PrismaClientKnownRequestError, String(error));
    assert.equal(error.code, "P2002"); // unique: SQL Server 2627
    return true;
  });
  await assert.rejects(prisma.post.create({ data: { title: "orphan", authorId: 999999 } }), (error) => {
    assert.equal(error.code, "P2003"); // foreign key: SQL Server 547
    return true;
  });
  await assert.rejects(prisma.$executeRaw`INSERT INTO [dbo].[Post] ([title], [authorId]) VALUES (NULL, 1)`, (error) => {
    assert.equal(error.code, "P2010"); // a raw query's error; the cause is the mapped null violation (515)
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
  await assert.rejects(reader.user.update({ where: { email: "ada@example.com" }, data: { name: "x" } }), (error) => {
    assert.ok(error instanceof TunnelError, String(error));
    assert.equal(error.code, "policy.not_read_only");
    return true;
  });
  assert.ok(asked >= 2, `the token callback was asked ${asked} times`);
});

test("$transaction([...]) commits every statement", { skip: NO_SESSIONS }, async () => {
  const [user, post] = await prisma.$transaction([
    prisma.user.create({ data: { email: "tx-batch@example.com", name: "Batch" } }),
    prisma.post.create({ data: { title: "in a batch", author: { connect: { email: "grace@example.com" } } } }),
  ]);
  assert.equal(user.name, "Batch");
  assert.equal((await prisma.post.findUnique({ where: { id: post.id } })).title, "in a batch");
});

test("$transaction([...]) rolls every statement back when one fails", { skip: NO_SESSIONS }, async () => {
  await assert.rejects(
    prisma.$transaction([
      prisma.user.create({ data: { email: "tx-lost@example.com" } }),
      prisma.user.create({ data: { email: "ada@example.com" } }), // unique violation
    ]),
    (error) => error.code === "P2002",
  );
  assert.equal(await prisma.user.findUnique({ where: { email: "tx-lost@example.com" } }), null);
});

test("interactive $transaction with an isolation level commits", { skip: NO_SESSIONS }, async () => {
  const total = await prisma.$transaction(
    async (tx) => {
      const from = await tx.user.update({ where: { email: "edsger@example.com" }, data: { balance: { decrement: 3 } } });
      await tx.user.update({ where: { email: "barbara@example.com" }, data: { balance: { increment: 3 } } });
      const both = await tx.user.findMany({ where: { email: { in: ["edsger@example.com", "barbara@example.com"] } } });
      return { from, sum: both.reduce((acc, u) => acc.add(u.balance), new Prisma.Decimal(0)) };
    },
    { isolationLevel: Prisma.TransactionIsolationLevel.Serializable },
  );
  assert.equal(total.from.balance.toString(), "-3");
  assert.equal(total.sum.toString(), "0");
  assert.equal((await prisma.user.findUnique({ where: { email: "barbara@example.com" } })).balance.toString(), "3");
});

test("interactive $transaction rolls back when the callback throws", { skip: NO_SESSIONS }, async () => {
  await assert.rejects(
    prisma.$transaction(async (tx) => {
      await tx.user.create({ data: { email: "tx-thrown@example.com" } });
      assert.ok(await tx.user.findUnique({ where: { email: "tx-thrown@example.com" } })); // visible inside
      throw new Error("changed my mind");
    }),
    /changed my mind/,
  );
  assert.equal(await prisma.user.findUnique({ where: { email: "tx-thrown@example.com" } }), null);
});

test("interactive $transaction: $queryRaw inside sees the transaction's writes", { skip: NO_SESSIONS }, async () => {
  const seen = await prisma.$transaction(
    async (tx) => {
      await tx.user.update({ where: { email: "frances@example.com" }, data: { name: "Frances Allen" } });
      return tx.$queryRaw`SELECT [name] FROM [dbo].[User] WHERE [email] = ${"frances@example.com"}`;
    },
    { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted },
  );
  assert.deepEqual(seen, [{ name: "Frances Allen" }]);
});
