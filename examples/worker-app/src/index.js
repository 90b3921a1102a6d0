/**
 * A tiny Worker that answers `GET /api/orders` with SQL Server rows for the signed-in user, through
 * the edgetds relay (service binding RELAY) and the on-prem connector.
 *
 * Try it locally (see README.md): run the relay + example under workerd, then
 *   curl -H "Authorization: Bearer $(edgetds dev-idp token --sub alice --groups analysts)" \
 *        http://127.0.0.1:8788/api/orders
 *
 * The user's own IdP token is passed along: the connector verifies it and picks the SQL role, so
 * this app holds no database credential. `@owner` is a filter for the user's rows; what the user
 * may read at all is enforced on-prem (the connector's policy and the SQL login's grants).
 */

import { TunnelClient, TunnelError } from "../../../relay/worker/src/client.js";

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

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname !== "/api/orders" || request.method !== "GET") return json(404, { error: "try GET /api/orders" });
    const token = /^Bearer (\S+)$/.exec(request.headers.get("authorization") ?? "")?.[1];
    const owner = token ? subjectOf(token) : null;
    if (!owner) return json(401, { error: "sign in: send Authorization: Bearer <your IdP token>" });
    const tunnel = new TunnelClient({ tunnel: env.TUNNEL_NAME ?? "demo", fetcher: env.RELAY });
    try {
      const rows = await tunnel.query(ORDERS_SQL, { owner }, { token, timeoutMs: 10_000 });
      return json(200, { owner, orders: rows, query_id: rows.done.query_id });
    } catch (err) {
      if (err instanceof TunnelError) {
        return json(err.status === 200 ? 502 : err.status, { error: err.code, message: err.message });
      }
      throw err;
    }
  },
};
