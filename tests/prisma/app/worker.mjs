// A Cloudflare Worker that uses Prisma Client (generated with runtime = "workerd") through
// PrismaEdgeTds, run by tests/prisma/test_prisma_client.py under the real workerd runtime.
// The signed-in user's IdP token comes from the request's Authorization header and is the
// token every query carries; `GET /report` answers what the Prisma calls returned, as JSON.
// "prisma-generated-client" is an alias build-worker.mjs gives the generated client.ts.
import { PrismaClient, Prisma } from "prisma-generated-client";

import { TunnelClient } from "../../../relay/worker/src/client.js";
import { PrismaEdgeTds } from "../../../relay/worker/src/prisma.js";

export default {
  /** @param {Request} request @param {{RELAY: Fetcher, TUNNEL_NAME: string, SESSIONS: string}} env */
  async fetch(request, env) {
    const token = (request.headers.get("authorization") ?? "").replace(/^Bearer /, "");
    const tunnel = new TunnelClient({ tunnel: env.TUNNEL_NAME, fetcher: env.RELAY }); // the service binding
    const prisma = new PrismaClient({ adapter: new PrismaEdgeTds({ tunnel, token }) });
    const report = {};
    report.inserted = await prisma.$executeRaw`INSERT INTO [dbo].[User] ([email], [name], [balance], [visits], [birthday])
      VALUES (${"ada@example.com"}, ${"Ada"}, ${new Prisma.Decimal("12.5")}, ${9007199254740993n}, ${new Date("1815-12-10T00:00:00Z")}),
             (${"grace@example.com"}, ${"Grace"}, ${new Prisma.Decimal("1")}, ${1n}, ${null})`;
    await prisma.$executeRaw`INSERT INTO [dbo].[Post] ([title], [authorId]) SELECT [name] + N' post', [id] FROM [dbo].[User]`;
    const users = await prisma.user.findMany({
      where: { email: { endsWith: "@example.com" } },
      orderBy: { name: "desc" },
      take: 5,
      skip: 0,
      include: { posts: { select: { title: true } } },
    });
    report.users = users.map((u) => ({
      name: u.name,
      balance: u.balance.toFixed(2),
      visits: u.visits.toString(),
      birthday: u.birthday?.toISOString() ?? null,
      posts: u.posts.map((p) => p.title),
    }));
    report.updated = (await prisma.user.updateMany({ where: { name: "Grace" }, data: { active: false } })).count;
    report.raw = (await prisma.$queryRaw`SELECT COUNT(*) AS n FROM [dbo].[User] WHERE [active] = ${false}`)[0].n.toString();
    try {
      await prisma.user.updateMany({ where: { name: "Grace" }, data: { email: "ada@example.com" } });
      report.duplicate = "no error";
    } catch (error) {
      report.duplicate = error.code;
    }
    if (env.SESSIONS === "1") {
      try {
        report.transaction = await prisma.$transaction(
          async (tx) => {
            await tx.user.updateMany({ where: { name: "Ada" }, data: { visits: { increment: 1 } } });
            return (await tx.user.findFirst({ where: { name: "Ada" } })).visits.toString();
          },
          { isolationLevel: Prisma.TransactionIsolationLevel.Serializable },
        );
        const alan = await prisma.user.create({
          data: { email: "alan@example.com", name: "Alan", posts: { create: [{ title: "On Computable Numbers" }] } },
          include: { posts: true },
        });
        report.created = [alan.name, ...alan.posts.map((p) => p.title)];
      } catch (error) {
        report.transaction = `${error.code ?? error.name}: ${error.message}`;
      }
    }
    return Response.json(report);
  },
};
