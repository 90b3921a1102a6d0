// @ts-check
/**
 * The edgetds relay Worker: the HTTP API and the connector upgrade at the edge (SPEC.md).
 *
 * Routes (anything else is answered 404 from a constant, before any parsing or lookup):
 *   GET  /healthz                       liveness: 200 {"status":"ok"} (no config, no DO; as relay/app.py)
 *   GET  /v1/tunnels/{tunnel}/connect   connector WebSocket (token checked BEFORE the upgrade)
 *   POST /v1/tunnels/{tunnel}/enroll    one-token enrolment of a connector key (SPEC.md 8.7)
 *   POST /v1/tunnels/{tunnel}/query     client query, NDJSON response streamed from the DO
 *   POST /v1/tunnels/{tunnel}/sessions  begin a session (a transaction across requests)
 *   POST /v1/tunnels/{tunnel}/sessions/{id}/query|commit|rollback|savepoint|rollback_to
 *   DELETE /v1/tunnels/{tunnel}/sessions/{id}
 *                                       the session's operations, on the object that began it
 *   POST /v1/tunnels/{tunnel}/transaction
 *                                       statements in one transaction, one round trip
 *   GET  /v1/tunnels/{tunnel}/status    connectors/connections of the tunnel (client token)
 *   GET  /v1/tunnels/{tunnel}/audit/checkpoint?connector=ID[&file=NAME]
 *                                       a connector's latest signed audit checkpoint of an audit
 *                                       file (audit token)
 *
 * Browsers: every path under a tunnel except connect, enroll and audit/checkpoint answers CORS for the
 * tunnel's cors_origins, and its preflights are answered here before any Durable Object (cors.js,
 * SPEC.md 11.7).
 *
 * The Worker verifies every credential itself, then calls the Durable Object with only verified
 * facts (connector claims, or the client token plus its verified identity): the connector upgrade
 * as a NEW request to its fetch(), everything else as RPC methods (tunnel.js); no client header is
 * forwarded. Failed authentications are rate limited per client address and
 * queries per identity (typed 429), and refusals are counted by reason (`/status` shows them).
 */

import { AuthError, sha256Hex, verifyConnectorToken } from "./auth.js";
import { ConfigError, loadConfig } from "./config.js";
import { checkEnrollRequest, signEnrolled } from "./enroll.js";
import { clientEndpoint, isPreflight, preflightResponse, refusedPreflight, withCors } from "./cors.js";
import { ErrorCode } from "./frames.js";
import { errorRecord, errorResponse, HttpError, jsonResponse, urlPath } from "./http.js";
import { RateLimiter, RefusalCounters, retryAfterHeader } from "./limits.js";
import { bearerToken, verifyClientToken } from "./oidc.js";
import { parseBeginRequest, parseEmptyRequest, parseQueryRequest, parseSavepointRequest, parseTransactionRequest, readBody } from "./request.js";
import { shardOf } from "./sessions.js";
import { wholeResponse } from "./query.js";
import { guardStream } from "./stream.js";
import { enrolmentObject } from "./tunnel.js";

export { Tunnel } from "./tunnel.js";

const ROUTE = /^\/v1\/tunnels\/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\/(connect|enroll|query|status|audit\/checkpoint|transaction|sessions(?:\/([^/]{1,64})(?:\/(query|commit|rollback|savepoint|rollback_to))?)?)$/;
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;
const NOT_FOUND = `{"error":{"code":"request.invalid","message":"unknown path; the API is under /v1/tunnels/{tunnel}/"}}\n`;
const SUBPROTOCOL = "edgetds.v1";
const HEALTHY = `{"status":"ok"}\n`;

// Module scope: one set per isolate (see limits.js for what that means on Cloudflare).
const counters = new RefusalCounters();
let authFailures = null;
let queryRate = null;

function limiters(limits) {
  if (authFailures === null) {
    authFailures = new RateLimiter({ rate: limits.auth_failures_per_second, burst: limits.auth_failure_burst, maxKeys: limits.max_tracked_keys });
    queryRate = new RateLimiter({ rate: limits.queries_per_second, burst: limits.query_burst, maxKeys: limits.max_tracked_keys });
  }
  return { authFailures, queryRate };
}

function clientAddress(request) {
  // Set by Cloudflare's edge (clients cannot override it there); absent under local workerd.
  return request.headers.get("cf-connecting-ip") ?? "local";
}

function now() {
  return Date.now() / 1000;
}

/** @returns {DurableObjectStub<import("./tunnel.js").Tunnel>} */
export function stub(env, config, tunnel, shard) {
  const name = config.shards === 1 ? tunnel : `${tunnel}#${shard}`;
  if (idsOf !== env.TUNNEL) {
    idsOf = env.TUNNEL;
    objectIds.clear();
  }
  let id = objectIds.get(name);
  if (id === undefined) {
    id = env.TUNNEL.idFromName(name);
    objectIds.set(name, id);
  }
  return env.TUNNEL.get(id);
}

/** Durable Object ids by name (idFromName hashes the name; an id is a value, valid for every
 * request), for the namespace binding `idsOf`. */
const objectIds = new Map();
/** @type {any} */
let idsOf = null;

/** The routes (module header); anything else is 404. */
const routes = {
  /** @param {Request} request @param {any} env @param {any} ctx @param {string} path the request URL's path (urlPath), found once */
  async fetch(request, env, ctx, path) {
    if (path === "/healthz") return healthz(request);
    const match = ROUTE.exec(path);
    if (match === null) {
      counters.refuse("http.not_found");
      return new Response(NOT_FOUND, { status: 404, headers: { "content-type": "application/json" } });
    }
    const [, tunnel, route, sessionId, sessionOp] = match;
    const action = route.startsWith("sessions") ? "sessions" : route;
    let config;
    try {
      config = await loadConfig(env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      console.error(`edgetds relay misconfigured: ${err.message}`);
      return errorResponse(new HttpError(ErrorCode.INTERNAL, "the relay is misconfigured (see the Worker logs)"));
    }
    const address = clientAddress(request);
    const { authFailures: failures } = limiters(config.limits);
    try {
      const wait = failures.retryAfter(address, now());
      if (wait > 0) {
        throw new HttpError(ErrorCode.LIMITS_RATE_LIMITED, "too many failed authentications from this address; slow down", { retryAfter: retryAfterHeader(wait) });
      }
      if (action === "connect") return await connect(request, env, config, tunnel, address);
      if (action === "enroll") return await enroll(request, env, config, tunnel, address);
      if (action === "query") return await query(request, env, ctx, config, tunnel, address);
      if (action === "sessions") return await sessions(request, env, ctx, config, tunnel, address, sessionId, sessionOp);
      if (action === "transaction") return await transaction(request, env, ctx, config, tunnel, address);
      if (action === "audit/checkpoint") return await checkpoint(request, env, config, tunnel, address);
      return await status(request, env, config, tunnel, address);
    } catch (err) {
      if (err instanceof HttpError) {
        counters.refuse(err.code);
        return errorResponse(err);
      }
      console.error(`edgetds relay ${action} failed: ${err?.stack ?? err}`);
      counters.refuse(ErrorCode.INTERNAL);
      return errorResponse(new HttpError(ErrorCode.INTERNAL, "internal relay error (see the Worker logs)"));
    }
  },
};

export default {
  /** CORS (cors.js) around the routes: preflights answered here, listed origins' headers added. */
  async fetch(request, env, ctx) {
    const path = urlPath(request.url);
    const tunnel = clientEndpoint(path);
    if (tunnel === null || !request.headers.has("origin")) return routes.fetch(request, env, ctx, path);
    const origin = await listedOrigin(request, env, tunnel);
    if (isPreflight(request)) {
      if (origin !== null) return preflightResponse(origin);
      counters.refuse("cors.refused");
      return refusedPreflight();
    }
    const response = await routes.fetch(request, env, ctx, path);
    return origin === null ? response : withCors(response, origin);
  },
};

/**
 * The request's Origin if the tunnel lists it in cors_origins, else null (also when the
 * configuration does not load: the route then says so).
 */
async function listedOrigin(request, env, tunnel) {
  let config;
  try {
    config = await loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return null;
  }
  const origin = request.headers.get("origin");
  const settings = Object.hasOwn(config.tunnelSettings, tunnel) ? config.tunnelSettings[tunnel] : null;
  return settings !== null && settings.cors_origins.includes(origin) ? origin : null;
}

/** Liveness, answered by the Worker alone: the isolate runs and serves requests. */
function healthz(request) {
  if (request.method === "GET" || request.method === "HEAD") return jsonResponse(200, HEALTHY);
  const message = `use GET for this path, not ${request.method}`;
  return jsonResponse(405, errorRecord(ErrorCode.REQUEST_INVALID, message), { allow: "GET" });
}

function method(request, expected) {
  if (request.method !== expected) {
    throw new HttpError(ErrorCode.REQUEST_INVALID, `use ${expected} for this path`, { status: 405 });
  }
}

function knownTunnel(config, tunnel) {
  if (!Object.hasOwn(config.tunnels, tunnel)) throw new HttpError(ErrorCode.TUNNEL_UNKNOWN, `tunnel ${JSON.stringify(tunnel)} is not configured here`);
  return config.tunnels[tunnel];
}

/**
 * Turn an AuthError into a 401 and spend a failed-authentication token for the address. When the
 * issuer's keys cannot be loaded (internal) the client is told only that; the cause (JWKS URL, the
 * fetch's answer) goes to the Worker log under a fresh query id that the answer names.
 */
function authFailed(err, address) {
  if (!(err instanceof AuthError)) throw err;
  authFailures.spend(address, now());
  if (err.code === ErrorCode.INTERNAL) {
    const queryId = crypto.randomUUID();
    console.error(`auth.keys_unavailable query_id=${queryId} why=${JSON.stringify(err.detail ?? err.message)}`);
    const message = `the relay could not verify the token: the identity provider's keys are unavailable; retry later (the cause is in the relay's log under query_id ${queryId})`;
    return new HttpError(ErrorCode.INTERNAL, message, { status: 503, queryId });
  }
  return new HttpError(err.code, err.message);
}

async function connect(request, env, config, tunnel, address) {
  method(request, "GET");
  const connectors = knownTunnel(config, tunnel);
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    throw new HttpError(ErrorCode.REQUEST_INVALID, "this path only accepts a WebSocket upgrade", { status: 426 });
  }
  const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
  if (!offered.includes(SUBPROTOCOL)) {
    throw new HttpError(ErrorCode.REQUEST_INVALID, `offer the WebSocket subprotocol ${SUBPROTOCOL}`, { status: 426 });
  }
  const token = bearerToken(request.headers.get("authorization"));
  if (token === null) throw authFailed(new AuthError(ErrorCode.AUTH_MISSING_TOKEN, "no connector token was sent (Authorization: Bearer)"), address);
  let claims;
  try {
    // TUNNELS' keys first; a connector id's enrolled key is looked up only when none of them
    // verifies the token (an enrolled connector costs one call to the enrolment object).
    const enrolled = async (/** @type {string} */ connectorId) => [await enrolmentObject(env, tunnel).enrolledKey(connectorId)].filter((k) => k !== null);
    claims = await verifyConnectorToken(token, connectors, { tunnel, now: now(), enrolled });
  } catch (err) {
    throw authFailed(err, address);
  }
  // The jti decides the shard, so a replayed token always reaches the object that saw it.
  const shard = shardOf(claims.jti, config.shards);
  const forwarded = new Request("https://tunnel.internal/connect", {
    headers: { upgrade: "websocket", "x-edgetds-connector": JSON.stringify({ ...claims, shard }) },
  });
  const response = await stub(env, config, tunnel, shard).fetch(forwarded);
  if (response.status === 401) authFailures.spend(address, now());
  return response;
}

/**
 * `POST .../enroll` (SPEC 8.7): the checks in order (enroll.js) up to the proof, then the
 * enrolment object consumes the jti and records the key in one storage transaction, then every
 * shard drains the connections of a key this enrolment replaced. Every refusal of SPEC 8.7's
 * checks (the body, the token, the proof, a replay) spends a failed-authentication token for the
 * address, as a bad connector token does (the method and the body size do not, as in the Python
 * relay).
 */
async function enroll(request, env, config, tunnel, address) {
  method(request, "POST");
  const body = await readBody(request, config.limits.max_body_bytes);
  /** A refusal of the token, the proof or a replay: it spends a failed-authentication token. */
  const refused = (/** @type {string} */ code, /** @type {string} */ message) => {
    authFailures.spend(address, now());
    return new HttpError(code, message);
  };
  let checked;
  try {
    checked = await checkEnrollRequest(body, { tunnel, relayKeys: [config.relayKey.publicKey], tunnels: Object.keys(config.tunnels), now: now() });
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    throw refused(err.code, err.message);
  }
  const { claims, publicKey, keyId } = checked;
  const enrolment = { connectorId: claims.connector_id, publicKey, keyId, jti: claims.jti, exp: claims.exp };
  let outcome;
  let replaced;
  try {
    ({ outcome, replaced } = await enrolmentObject(env, tunnel).enroll(enrolment));
  } catch (err) {
    console.error(`tunnel DO failed before answering: ${err?.message ?? err}`);
    throw new HttpError(ErrorCode.TRANSPORT_LOST, "the relay lost the tunnel's enrolment object before it answered; retry with the same token (if the enrolment was recorded, the retry answers enroll.used: then ask for a new token)");
  }
  if (outcome === "used") throw refused(ErrorCode.ENROLL_USED, "enrolment token was already used; ask the relay operator for a new one");
  if (outcome === "expired") throw refused(ErrorCode.ENROLL_EXPIRED, `enrolment token expired at ${claims.exp} (unix time); ask the relay operator for a new one: edgetds relay enroll --tunnel ${claims.tunnel} --connector ${claims.connector_id}`);
  counters.count("enrollments");
  let drained = 0;
  if (replaced !== null && replaced !== publicKey) {
    // The replaced key's connections drain (a shard that cannot be reached is logged: its
    // connections on the old key are refused at their next connect all the same).
    const drains = await Promise.allSettled(Array.from({ length: config.shards }, (_, k) => stub(env, config, tunnel, k).rekey(tunnel, claims.connector_id)));
    for (const d of drains) {
      if (d.status === "fulfilled") drained += d.value;
      else console.error(`enroll: draining the replaced key's connections failed: ${d.reason?.message ?? d.reason}`);
    }
  }
  // The Python relay's log event (never the token).
  console.log(`connector.enrolled tunnel=${tunnel} connector=${claims.connector_id} key_id=${keyId} replaced=${replaced !== null} drained=${drained} peer=${address}`);
  return jsonResponse(200, await signEnrolled(config.relayKey, checked));
}

async function verifiedIdentity(request, config, address) {
  try {
    return await verifyClientToken(bearerToken(request.headers.get("authorization")), config);
  } catch (err) {
    throw authFailed(err, address);
  }
}

async function query(request, env, ctx, config, tunnel, address) {
  method(request, "POST");
  const identity = await verifiedIdentity(request, config, address);
  knownTunnel(config, tunnel);
  const wait = queryRate.spend(`${identity.issuer}\u0000${identity.subject}`, now());
  if (wait > 0) throw new HttpError(ErrorCode.LIMITS_RATE_LIMITED, "too many queries for this identity; slow down", { retryAfter: retryAfterHeader(wait) });
  const req = parseQueryRequest(await readBody(request, config.limits.max_body_bytes), { maxTimeoutMs: config.limits.query_timeout_ms, maxParamBytes: config.limits.max_param_bytes });
  counters.count("queries");
  /** @type {import("./query.js").QueryCall} */
  const call = {
    identity: { issuer: identity.issuer, subject: identity.subject },
    token: /** @type {string} */ (bearerToken(request.headers.get("authorization"))), // verified above
    tokenSha256: identity.tokenSha256,
    request: req,
    deadlineMs: req.timeout_ms + config.limits.deadline_grace_ms,
    maxQueriesPerIdentity: config.tunnelSettings[tunnel].max_queries_per_identity,
  };
  // A client-supplied query_id is remembered for 10 minutes by its home shard (SPEC 7.3).
  const home = shardOf(req.query_id, config.shards);
  if (req.client_query_id && !(await stub(env, config, tunnel, home).remember(req.query_id, config.limits.query_id_ttl_s * 1000))) {
    return errorResponse(new HttpError(ErrorCode.QUERY_DUPLICATE, "a query with this query_id was already sent; use a new query_id for a new query", { queryId: req.query_id }));
  }
  // Try a random shard first, then the others: a shard may have no connector yet.
  const first = Math.floor(Math.random() * config.shards);
  /** @type {Response | import("./query.js").WholeAnswer} */
  let response = /** @type {any} */ (undefined); // set by the loop: config.shards >= 1
  let shard = first;
  // A client that hangs up before the answer starts is invisible to the object: tell it, so it
  // CANCELs the stream (after the answer started, the cancelled body stream does that).
  // request.signal is on by default from compatibility date 2026-11-17. Cloudflare's edge aborts
  // it when the client disconnects; local workerd notices only when it writes (README).
  request.signal?.addEventListener("abort", () => {
    const cancel = stub(env, config, tunnel, shard).cancel(req.query_id);
    ctx?.waitUntil?.(cancel.catch(() => {}));
  });
  for (let i = 0; i < config.shards; i++) {
    shard = (first + i) % config.shards;
    try {
      response = await stub(env, config, tunnel, shard).query(call);
    } catch (err) {
      // The object was reset (deploy, eviction, ctx.abort()) before it answered.
      console.error(`tunnel DO failed before answering: ${err?.message ?? err}`);
      throw new HttpError(ErrorCode.TRANSPORT_LOST, "the relay lost the tunnel before the query answered; it may or may not have run; retry", { queryId: req.query_id });
    }
    if (response.status !== 503 || i === config.shards - 1) break;
    await /** @type {Response} */ (response).body?.cancel();
  }
  // A complete result: its whole body is here, nothing to guard.
  if (!(response instanceof Response)) return wholeResponse(response.body, response.queryId);
  if (req.client_query_id && (response.status === 503 || response.status === 429 || response.status === 413)) {
    // Never sent to a connector: the client may retry with the same query_id.
    await stub(env, config, tunnel, home).forget(req.query_id);
  }
  return guardStream(response, req.query_id, ctx);
}

/**
 * The verified caller of a session request: identity, token, and the per-identity query rate
 * (every session operation is a query to the connector).
 */
async function sessionCaller(request, config, tunnel, address) {
  const identity = await verifiedIdentity(request, config, address);
  knownTunnel(config, tunnel);
  const wait = queryRate.spend(`${identity.issuer}\u0000${identity.subject}`, now());
  if (wait > 0) throw new HttpError(ErrorCode.LIMITS_RATE_LIMITED, "too many queries for this identity; slow down", { retryAfter: retryAfterHeader(wait) });
  counters.count("session_ops");
  return {
    identity: { issuer: identity.issuer, subject: identity.subject },
    token: /** @type {string} */ (bearerToken(request.headers.get("authorization"))), // verified above
    deadlineMs: config.limits.query_timeout_ms + config.limits.deadline_grace_ms,
    timeoutMs: config.limits.query_timeout_ms,
    maxQueriesPerIdentity: config.tunnelSettings[tunnel].max_queries_per_identity,
    maxSessions: config.limits.max_sessions_per_tunnel,
    maxSessionsPerIdentity: config.limits.max_sessions_per_identity,
  };
}

/** Call a tunnel object; a reset before it answered is transport.lost (outcome unknown). */
async function onObject(call, what) {
  try {
    return await call();
  } catch (err) {
    console.error(`tunnel DO failed before answering: ${err?.message ?? err}`);
    throw new HttpError(ErrorCode.TRANSPORT_LOST, `the relay lost the tunnel before the ${what} answered; retry (a commit's outcome is then unknown: the connector's audit log has it)`);
  }
}

/**
 * `POST .../sessions` (begin: on the shards in turn, like /query, each making ids that map back
 * to it), and the operations of a session, on the shard its id maps to (SPEC 11.5).
 */
async function sessions(request, env, ctx, config, tunnel, address, id, op) {
  if (id === undefined) {
    method(request, "POST");
    const caller = await sessionCaller(request, config, tunnel, address);
    const begin = parseBeginRequest(await readBody(request, config.limits.max_body_bytes));
    return beginOnShards(env, config, tunnel, (shard) => (object) => object.sessionBegin({ ...caller, begin, shard, shards: config.shards }));
  }
  method(request, op === undefined ? "DELETE" : "POST");
  const caller = await sessionCaller(request, config, tunnel, address);
  const raw = await readBody(request, config.limits.max_body_bytes);
  /** @type {import("./sessionops.js").OpCall} */
  const call = { ...caller, id, op: op === undefined || op === "rollback" ? "rollback" : op === "query" ? "run" : op };
  if (op === "query") {
    call.request = parseQueryRequest(raw, { maxTimeoutMs: config.limits.query_timeout_ms, maxParamBytes: config.limits.max_param_bytes });
    call.deadlineMs = call.request.timeout_ms + config.limits.deadline_grace_ms;
  } else if (op === "savepoint" || op === "rollback_to") {
    call.name = parseSavepointRequest(raw);
  } else {
    parseEmptyRequest(raw);
  }
  if (!SESSION_ID.test(id)) {
    throw new HttpError(ErrorCode.SESSION_NOT_FOUND, "no such session on this tunnel (a session id is 22 characters of letters, digits, - and _); begin a session with POST .../sessions");
  }
  const object = stub(env, config, tunnel, shardOf(id, config.shards));
  const response = await onObject(() => object.sessionOp(call), "session operation");
  return call.request !== undefined ? guardStream(response, call.request.query_id, ctx) : response;
}

/** Try each shard in turn (a random one first) until one has a connector. */
async function beginOnShards(env, config, tunnel, callFor) {
  const first = Math.floor(Math.random() * config.shards);
  let response;
  for (let i = 0; i < config.shards; i++) {
    const shard = (first + i) % config.shards;
    const object = stub(env, config, tunnel, shard);
    response = await onObject(() => callFor(shard)(object), "session begin");
    if (response.status !== 503 || i === config.shards - 1) break;
    await response.body?.cancel();
  }
  return response;
}

/** `POST .../transaction`: begin, statements, commit on one object (SPEC 11.6). */
async function transaction(request, env, ctx, config, tunnel, address) {
  method(request, "POST");
  const caller = await sessionCaller(request, config, tunnel, address);
  const parsed = parseTransactionRequest(await readBody(request, config.limits.max_body_bytes), { maxTimeoutMs: config.limits.query_timeout_ms, maxParamBytes: config.limits.max_param_bytes });
  const response = await beginOnShards(env, config, tunnel, (shard) => (object) => object.transaction({ ...caller, begin: parsed.begin, statements: parsed.statements, shard, shards: config.shards }));
  return guardStream(response, response.headers.get("x-edgetds-query-id") ?? "", ctx);
}

async function status(request, env, config, tunnel, address) {
  method(request, "GET");
  await verifiedIdentity(request, config, address);
  knownTunnel(config, tunnel);
  const shards = await Promise.all(
    Array.from({ length: config.shards }, (_, k) => stub(env, config, tunnel, k).status()),
  );
  const ids = [...new Set(shards.flatMap((s) => s.connector_ids))].sort();
  const total = (/** @type {"connections" | "draining" | "streams"} */ name) => shards.reduce((n, s) => n + s[name], 0);
  // The Python relay's fields (relay/registry.py status), then the Worker's own.
  return jsonResponse(200, {
    tunnel,
    connectors: ids.length,
    connections: total("connections"),
    connector_ids: ids,
    draining: total("draining"),
    streams: total("streams"),
    shards: config.shards,
    edge: counters.snapshot(),
  });
}

/** Equal strings, compared in time independent of where they differ. */
function sameText(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * A connector's latest signed audit checkpoint of one audit file: the highest seq any shard holds
 * (SPEC 11.3). `&file=NAME` picks the file; without it, the one file the connector's checkpoints
 * are of, or 409 with their names when there are several (relay/checkpoints.py, the same answers).
 */
async function checkpoint(request, env, config, tunnel, address) {
  method(request, "GET");
  const [scheme, token] = (request.headers.get("authorization") ?? "").split(" ", 2);
  const digest = await sha256Hex(token ?? "");
  if (!(config.auditTokenSha256 && scheme?.toLowerCase() === "bearer" && sameText(digest, config.auditTokenSha256))) {
    throw authFailed(new AuthError(ErrorCode.AUTH_INVALID_TOKEN, "audit checkpoints are served with the relay's audit token (Authorization: Bearer <secret>, whose sha256 is AUDIT_TOKEN_SHA256)"), address);
  }
  knownTunnel(config, tunnel);
  const params = new URL(request.url).searchParams;
  const connectorId = params.get("connector") ?? "";
  if (!connectorId) throw new HttpError(ErrorCode.REQUEST_INVALID, "name the connector: ?connector=<connector id>", { status: 400 });
  /** @type {import("./tunnel.js").CheckpointEntry[][]} */
  const shards = await Promise.all(
    // the stub's RPC type of a Record<string, any> result is too deep for tsc: the method's own type
    Array.from({ length: config.shards }, (_, k) => /** @type {any} */ (stub(env, config, tunnel, k)).checkpoint(connectorId)),
  );
  const held = shards.flat();
  const files = [...new Set(held.map((h) => h.checkpoint.file))].sort();
  const file = params.get("file") ?? (files.length === 1 ? files[0] : null);
  if (file === null && files.length) {
    const message = `connector ${connectorId} has checkpoints of ${files.length} audit files (${files.join(", ")}): name the one to verify with &file=<audit file name>`;
    return jsonResponse(409, { error: { code: ErrorCode.REQUEST_INVALID, message }, files });
  }
  const entries = held.filter((h) => h.checkpoint.file === file);
  const best = entries.sort((a, b) => b.checkpoint.seq - a.checkpoint.seq)[0] ?? null;
  const conflict = entries.find((h) => h.conflict)?.conflict ?? null;
  return jsonResponse(200, { tunnel, connector_id: connectorId, checkpoint: best?.checkpoint ?? null, received_at: best?.received_at ?? null, conflict });
}
