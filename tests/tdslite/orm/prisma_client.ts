// A generated Prisma Client over Prisma's own @prisma/adapter-mssql against tdslite, run by
// test_orm_clients.py from a temporary directory holding ./generated (the client `prisma
// generate` wrote there) and a link to the repository's node_modules.
// How to poke it: node prisma_client.ts '{"host", "port", "user", "password"}' (a tdslite with an
// empty database; Node >= 23.6 runs TypeScript by stripping the types).
// Prints one JSON object {step: result}; a step that threw gives {"error", "code"?}. Values come
// back JSON-friendly: bigint -> string, Decimal -> string, Date -> ISO string, bytes -> {"hex"}.
import { PrismaMssql } from "@prisma/adapter-mssql";
import { Prisma, PrismaClient } from "./generated/client.ts";

const plan = JSON.parse(process.argv[2]);
const adapter = new PrismaMssql({
  server: plan.host,
  port: plan.port,
  user: plan.user,
  password: plan.password,
  options: { encrypt: false, trustServerCertificate: true },
});
const prisma = new PrismaClient({ adapter, log: [{ emit: "event", level: "query" }] });
const queries: string[] = [];
prisma.$on("query", (event) => queries.push(event.query));

function toJson(value: unknown): unknown {
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return { hex: Buffer.from(value).toString("hex") };
  if (typeof value === "bigint") return value.toString();
  if (Prisma.Decimal.isDecimal(value)) return value.toString();
  if (Array.isArray(value)) return value.map(toJson);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  return value;
}

const out: Record<string, unknown> = {};
async function step(name: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    out[name] = toJson(await fn());
  } catch (error) {
    const e = error as { message: string; code?: string };
    out[name] = { error: e.message.trim().split("\n").at(-1), code: e.code };
  }
}

// The tables as `prisma migrate` writes them for this schema (named and CLUSTERED constraints).
await step("schema", async () => {
  await prisma.$executeRawUnsafe(`CREATE TABLE [dbo].[Author] (
    [id] INT NOT NULL IDENTITY(1,1), [email] NVARCHAR(200) NOT NULL,
    [name] NVARCHAR(100) NOT NULL, [big] BIGINT NOT NULL, [balance] DECIMAL(18,4) NOT NULL,
    [joined] DATETIME2 NOT NULL, [token] UNIQUEIDENTIFIER NOT NULL, [active] BIT NOT NULL,
    [avatar] VARBINARY(100),
    CONSTRAINT [Author_pkey] PRIMARY KEY CLUSTERED ([id]),
    CONSTRAINT [Author_email_key] UNIQUE NONCLUSTERED ([email]))`);
  await prisma.$executeRawUnsafe(`CREATE TABLE [dbo].[Post] (
    [id] INT NOT NULL IDENTITY(1,1), [title] NVARCHAR(200) NOT NULL,
    [views] INT NOT NULL CONSTRAINT [Post_views_df] DEFAULT 0, [authorId] INT NOT NULL,
    CONSTRAINT [Post_pkey] PRIMARY KEY CLUSTERED ([id]),
    CONSTRAINT [Post_authorId_fkey] FOREIGN KEY ([authorId]) REFERENCES [dbo].[Author]([id])
      ON DELETE NO ACTION ON UPDATE CASCADE)`);
  return "ok";
});

const zoe = {
  email: "zoe@example.com",
  name: "Zoë 😀 Ünïcödé",
  big: 9007199254740993n,
  balance: new Prisma.Decimal("1234.5678"),
  joined: new Date("2024-05-06T07:08:09.123Z"),
  token: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
  active: true,
  avatar: new Uint8Array([0, 255, 16]),
};

await step("createNested", () =>
  prisma.author.create({
    data: { ...zoe, posts: { create: [{ title: "first" }, { title: "second", views: 5 }] } },
    include: { posts: { orderBy: { id: "asc" } } },
  }),
);
await step("createSecond", () =>
  prisma.author.create({
    data: {
      email: "bo@example.com",
      name: "Bo",
      big: -1n,
      balance: 0,
      joined: new Date("2001-02-03T04:05:06.007Z"),
      token: "00000000-0000-0000-0000-000000000001",
      active: false,
      posts: { create: { title: "third", views: 9 } },
    },
    select: { id: true },
  }),
);
await step("findMany", () =>
  prisma.post.findMany({
    where: { views: { gte: 0 }, author: { active: true } },
    orderBy: [{ views: "desc" }, { id: "asc" }],
    take: 1,
    skip: 1,
    include: { author: { select: { email: true } } },
  }),
);
await step("findManyContains", () =>
  prisma.author.findMany({
    where: { name: { contains: "😀" } },
    select: { email: true, _count: { select: { posts: true } } },
  }),
);
await step("findUnique", () => prisma.author.findUnique({ where: { email: "zoe@example.com" } }));
await step("update", () =>
  prisma.author.update({
    where: { email: "bo@example.com" },
    data: { big: { increment: 2 }, name: "Bö" },
    select: { big: true, name: true },
  }),
);
await step("upsertCreate", () =>
  prisma.author.upsert({
    where: { email: "cy@example.com" },
    update: { name: "never" },
    create: { ...zoe, email: "cy@example.com", name: "Cy", avatar: null },
    select: { name: true, avatar: true },
  }),
);
await step("upsertUpdate", () =>
  prisma.author.upsert({
    where: { email: "cy@example.com" },
    update: { name: "Cy 2" },
    create: { ...zoe, email: "cy@example.com", name: "never" },
    select: { name: true },
  }),
);
await step("uniqueViolation", () => prisma.author.create({ data: { ...zoe } }));
await step("batchTransaction", () =>
  prisma.$transaction([
    prisma.post.updateMany({ where: { title: "third" }, data: { views: { increment: 1 } } }),
    prisma.post.count(),
    prisma.author.findFirst({ where: { email: "bo@example.com" }, select: { id: true } }),
  ]),
);
await step("interactiveTransaction", () =>
  prisma.$transaction(
    async (tx) => {
      const post = await tx.post.create({ data: { title: "in tx", authorId: 1 } });
      const [session] = await tx.$queryRaw<{ level: number; n: number }[]>`
        SELECT transaction_isolation_level AS level, @@TRANCOUNT AS n
        FROM sys.dm_exec_sessions WHERE session_id = @@SPID`;
      return { title: post.title, ...session };
    },
    { isolationLevel: Prisma.TransactionIsolationLevel.Serializable },
  ),
);
await step("interactiveRollback", async () => {
  let error = null;
  try {
    await prisma.$transaction(async (tx) => {
      await tx.post.create({ data: { title: "rolled back", authorId: 1 } });
      throw new Error("rolled back on purpose");
    });
  } catch (e) {
    error = (e as Error).message;
  }
  return { error, left: await prisma.post.count({ where: { title: "rolled back" } }) };
});
await step("queryRaw", () =>
  prisma.$queryRaw`SELECT [id], [name], CAST([balance] AS NVARCHAR(40)) AS [balance_text],
    [big], [token] FROM [dbo].[Author] WHERE [email] = ${"zoe@example.com"}`,
);
await step("executeRaw", () =>
  prisma.$executeRaw`UPDATE [dbo].[Post] SET [views] = [views] + ${10} WHERE [authorId] = ${1}`,
);
await step("deleteMany", () => prisma.post.deleteMany({ where: { title: { startsWith: "in" } } }));
await step("delete", async () => {
  await prisma.post.deleteMany({ where: { author: { email: "bo@example.com" } } });
  return prisma.author.delete({ where: { email: "bo@example.com" }, select: { name: true } });
});
// A $transaction inside an interactive one: Prisma makes it a savepoint (SAVE TRANSACTION
// prisma_sp_0, then ROLLBACK TRANSACTION prisma_sp_0 when it throws).
await step("nestedTransaction", () =>
  prisma.$transaction(async (tx) => {
    await tx.post.create({ data: { title: "outer", authorId: 1 } });
    let error = null;
    try {
      // nested transactions are not in the generated type of `tx`
      await (tx as unknown as PrismaClient).$transaction(async (inner) => {
        await inner.post.create({ data: { title: "inner", authorId: 1 } });
        throw new Error("inner rolled back on purpose");
      });
    } catch (e) {
      error = (e as Error).message;
    }
    return { error, trancount: (await tx.$queryRaw<{ n: number }[]>`SELECT @@TRANCOUNT AS n`)[0].n };
  }),
);
await step("final", () =>
  prisma.post.findMany({ select: { title: true, views: true }, orderBy: { id: "asc" } }),
);
await prisma.$disconnect();
out.queries = queries;
process.stdout.write(JSON.stringify(out));
