/**
 * A tiny Worker that answers with SQL Server rows for the signed-in user, through the edgetds
 * relay (service binding RELAY) and the on-prem connector; twice: with the plain client
 * (relay/worker/src/client.js) and with Kysely (relay/worker/src/kysely.js), plus a transaction.
 *
 *   GET  /api/orders           the user's orders (TunnelClient.query)
 *   GET  /api/kysely/orders    the same with Kysely
 *   POST /api/transfer         {"from": id, "to": id, "qty": n}: move stock between two rows in
 *                              one Kysely transaction (an edgetds session): both or neither
 *
 * Try it locally (see README.md): run the relay + example under workerd, then
 *   curl -H "Authorization: Bearer $(edgetds dev-idp token --sub alice --groups analysts)" \
 *        http://127.0.0.1:8788/api/kysely/orders
 *   curl -X POST -d '{"from": 1, "to": 2, "qty": 3}' \
 *        -H "Authorization: Bearer $(edgetds dev-idp token --sub kim --groups admins)" \
 *        http://127.0.0.1:8788/api/transfer
 *
 * The user's own IdP token is passed along: the connector verifies it and picks the SQL role, so
 * this app holds no database credential. `@owner` is a filter for the user's rows; what the user
 * may read or write at all is enforced on-prem (the connector's policy and the SQL login's grants).
 */

import { AbortedTransactionError, Kysely } from "kysely";

import { TunnelClient, TunnelError } from "../../../relay/worker/src/client.js";
import { EdgetdsDialect } from "../../../relay/worker/src/kysely.js";

const ORDERS_SQL = "SELECT id, item, total FROM orders WHERE owner = @owner ORDER BY id";

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/** The unverified `sub` claim, used only as a query filter (the connector verifies the token). */
function subjectOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub ?? null;
  } catch {
    return null;
  }
}

/** A refusal of the app itself (bad input, not enough stock): its status and error name. */
class AppError extends Error {
  constructor(status, error, message) {
    super(message);
    this.status = status;
    this.error = error;
  }
}

async function orders(tunnel, owner, token) {
  const rows = await tunnel.query(ORDERS_SQL, { owner }, { token, timeoutMs: 10_000 });
  return json(200, { owner, orders: rows, query_id: rows.done.query_id });
}

async function kyselyOrders(db, owner) {
  const rows = await db.selectFrom("orders").select(["id", "item", "total"]).where("owner", "=", owner).orderBy("id").execute();
  return json(200, { owner, orders: rows });
}

/** Move `qty` units from stock row `from` to row `to`: one transaction, both updates or neither. */
async function transfer(db, request) {
  const body = await request.json().catch(() => null);
  const { from, to, qty } = body ?? {};
  if (![from, to, qty].every(Number.isInteger) || qty <= 0 || from === to) {
    throw new AppError(400, "bad_request", 'send {"from": id, "to": id, "qty": n} (integers, qty > 0, two rows)');
  }
  const moved = await db.transaction().setIsolationLevel("serializable").execute(async (trx) => {
    const source = await trx
      .updateTable("stock")
      .set((eb) => ({ qty: eb("qty", "-", qty) }))
      .where("id", "=", from)
      .where("qty", ">=", qty)
      .output(["inserted.id", "inserted.item", "inserted.qty"])
      .executeTakeFirst();
    if (!source) throw new AppError(409, "insufficient_stock", `row ${from} does not exist or holds fewer than ${qty}`);
    const target = await trx
      .updateTable("stock")
      .set((eb) => ({ qty: eb("qty", "+", qty) }))
      .where("id", "=", to)
      .output(["inserted.id", "inserted.item", "inserted.qty"])
      .executeTakeFirst();
    if (!target) throw new AppError(404, "unknown_row", `row ${to} does not exist`); // rolls back the first update
    return { from: source, to: target };
  });
  return json(200, { moved: qty, ...moved });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const route = `${request.method} ${url.pathname}`;
    if (!["GET /api/orders", "GET /api/kysely/orders", "POST /api/transfer"].includes(route)) {
      return json(404, { error: "try GET /api/orders, GET /api/kysely/orders or POST /api/transfer" });
    }
    const token = /^Bearer (\S+)$/.exec(request.headers.get("authorization") ?? "")?.[1];
    const owner = token ? subjectOf(token) : null;
    if (!owner) return json(401, { error: "sign in: send Authorization: Bearer <your IdP token>" });
    const tunnel = new TunnelClient({ tunnel: env.TUNNEL_NAME ?? "demo", fetcher: env.RELAY });
    // One Kysely per request, with this user's token (it holds no connection: creating it is cheap).
    const db = new Kysely({ dialect: new EdgetdsDialect({ tunnel, token, timeoutMs: 10_000 }) });
    try {
      if (route === "GET /api/orders") return await orders(tunnel, owner, token);
      if (route === "GET /api/kysely/orders") return await kyselyOrders(db, owner);
      return await transfer(db, request);
    } catch (err) {
      if (err instanceof AppError) return json(err.status, { error: err.error, message: err.message });
      if (err instanceof AbortedTransactionError) {
        return json(409, { error: "rolled_back", message: "the database ended the transaction; nothing was changed: retry" });
      }
      if (err instanceof TunnelError) {
        return json(err.status === 200 ? 502 : err.status, { error: err.code, message: err.message });
      }
      throw err;
    }
  },
};
