// @ts-check
/**
 * The Worker relay's configuration from its environment (the same facts as the Python relay's TOML).
 *
 * | binding            | kind   | shape                                                          |
 * |--------------------|--------|----------------------------------------------------------------|
 * | RELAY_PRIVATE_KEY  | secret | Ed25519 PKCS#8 PEM (`edgetds keygen` NAME.key) or an OKP JWK     |
 * | TUNNELS            | var    | JSON `{"demo": {"conn-1": "ed25519:..."}}`; a list of keys       |
 * |                    |        | `["ed25519:NEW", "ed25519:OLD"]` while a connector key rotates;  |
 * |                    |        | `{"demo": {}}`: no static connector (enrolled ones only, SPEC 8.7)|
 * |                    |        | or, with per-tunnel settings (the Python relay's [tunnels.NAME]),|
 * |                    |        | `{"demo": {"connectors": {...}, "max_queries_per_identity": 32}}`|
 * |                    |        | and `"cors_origins": ["https://app.example.com"]` (browsers that  |
 * |                    |        | may call the tunnel, SPEC.md 11.7; cors.js)                      |
 * | ISSUERS            | var    | JSON `[{"issuer", "audience", "jwks_uri"?, "algorithms"?,       |
 * |                    |        | "max_token_lifetime_s"? (default 86400), "jwks"? (static keys)}]`|
 * | TUNNEL_SHARDS      | var    | integer >= 1 (default 1): Durable Objects per tunnel             |
 * | LIMITS             | var    | optional JSON, keys of the Python relay's [limits] table         |
 * | AUDIT_TOKEN_SHA256 | var    | optional hex sha256 of the audit token (GET .../audit/checkpoint)|
 *
 * Parsed once per isolate (cached by the raw strings); every mistake is a ConfigError naming the
 * binding and how to fix it.
 */

import { hex, loadRelayKey, parsePublicKey } from "./auth.js";
import { originProblem } from "./cors.js";
import { DEFAULT_MAX_TOKEN_LIFETIME_S } from "./idtoken.js";

export const DEFAULT_ALGORITHMS = Object.freeze(["RS256", "ES256", "EdDSA"]);
const SUPPORTED_ALGORITHMS = new Set(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]);

/** Edge limits, the Python relay's relay/config.py Limits (rates per second; 0 disables). */
export const DEFAULT_LIMITS = Object.freeze({
  max_body_bytes: 1_048_576,
  /** Largest `params`, in bytes of its canonical JSON (400 request.invalid above it). */
  max_param_bytes: 262_144,
  query_timeout_ms: 30_000,
  auth_failures_per_second: 1.0,
  auth_failure_burst: 20,
  queries_per_second: 100.0,
  query_burst: 200,
  /** While a query is in flight, a connection silent this long gets a PING (README: keepalive). */
  ping_interval_s: 15,
  /** Accepted for parity with the Python relay; the Worker closes a probed connection after 3 s. */
  dead_after_s: 45,
  handshake_timeout_s: 10,
  query_id_ttl_s: 600,
  max_tracked_keys: 100_000,
  /** Worker only (the Python relay has them in [identity]): client-token size and clock leeway. */
  max_token_bytes: 16_384,
  leeway_s: 30,
  /** Worker only: how long past timeout_ms the relay waits before it cancels the stream itself. */
  deadline_grace_ms: 5_000,
  /** A full tunnel: how long a query may wait for a slot (counted against its timeout_ms). */
  admission_wait_ms: 5_000,
  /** Open sessions (SPEC 11.5) per identity and per tunnel object (429 limits.too_many_sessions). */
  max_sessions_per_identity: 8,
  max_sessions_per_tunnel: 1024,
});

/** Per-tunnel settings (relay/config.py TunnelConfig) and their defaults. */
export const DEFAULT_TUNNEL_SETTINGS = Object.freeze({ max_queries_per_identity: 32, cors_origins: /** @type {readonly string[]} */ (Object.freeze([])) });

export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "ConfigError";
  }
}

function parseJson(env, name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === null || raw === "") {
    if (fallback !== undefined) return fallback;
    throw new ConfigError(`${name} is not set; see relay/worker/README.md (wrangler.toml [vars])`);
  }
  if (typeof raw !== "string") return raw; // wrangler may pass JSON vars as objects
  try {
    return JSON.parse(raw);
  } catch {
    throw new ConfigError(`${name} is not valid JSON`);
  }
}

function isLoopback(url) {
  return ["127.0.0.1", "[::1]", "localhost"].includes(url.hostname);
}

function checkUrl(text, where) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${where}: ${JSON.stringify(text)} is not a URL`);
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopback(url))) {
    throw new ConfigError(`${where}: must be https (http only on loopback for development)`);
  }
  return text;
}

const TUNNELS_SHAPE = '{"demo": {"conn-1": "ed25519:..."}} (or, while a key rotates, {"demo": {"conn-1": ["ed25519:NEW", "ed25519:OLD"]}})';

/** A connector id's registered key(s): one "ed25519:..." string, or a rotation's list of them. */
function parseConnectorKeys(where, keys) {
  const list = Array.isArray(keys) ? keys : [keys];
  if (!list.length) {
    throw new ConfigError(`${where}: the list of keys is empty; register at least one "ed25519:..." key (or remove the connector id)`);
  }
  const seen = new Set();
  list.forEach((key, i) => {
    const at = Array.isArray(keys) ? `${where}[${i}]` : where;
    let raw;
    try {
      raw = hex(parsePublicKey(key));
    } catch (err) {
      throw new ConfigError(`${at}: ${err.message}`);
    }
    if (seen.has(raw)) throw new ConfigError(`${at}: this key is listed twice; list each key once`);
    seen.add(raw);
  });
  return Array.isArray(keys) ? Object.freeze([...keys]) : keys;
}

function parseTunnels(env) {
  const doc = parseJson(env, "TUNNELS");
  if (doc === null || typeof doc !== "object" || Array.isArray(doc) || !Object.keys(doc).length) {
    throw new ConfigError(`TUNNELS must be a JSON object like ${TUNNELS_SHAPE}`);
  }
  const tunnels = {};
  const settings = {};
  for (const [name, value] of Object.entries(doc)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) {
      throw new ConfigError(`TUNNELS: tunnel name ${JSON.stringify(name)} must be 1-64 of letters, digits, _ . -`);
    }
    const { connectors, ...tunnelSettings } = withSettings(name, value);
    settings[name] = tunnelSettings;
    if (connectors === null || typeof connectors !== "object" || Array.isArray(connectors)) {
      throw new ConfigError(`TUNNELS.${name} must map connector ids to "ed25519:..." public keys (a list of them while a key rotates), like ${TUNNELS_SHAPE}`);
    }
    const parsed = {};
    for (const [id, keys] of Object.entries(connectors)) parsed[id] = parseConnectorKeys(`TUNNELS.${name}.${id}`, keys);
    tunnels[name] = Object.freeze(parsed);
  }
  return [Object.freeze(tunnels), Object.freeze(settings)];
}

/** A tunnel's value in either shape: {connectors, settings...} or the bare connectors map. */
function withSettings(name, value) {
  const detailed = value !== null && typeof value === "object" && !Array.isArray(value) && value.connectors !== null && typeof value.connectors === "object" && !Array.isArray(value.connectors);
  if (!detailed) return { connectors: value, ...DEFAULT_TUNNEL_SETTINGS };
  const out = { ...DEFAULT_TUNNEL_SETTINGS };
  for (const [key, setting] of Object.entries(value)) {
    if (key === "connectors") continue;
    if (!Object.hasOwn(DEFAULT_TUNNEL_SETTINGS, key)) {
      throw new ConfigError(`TUNNELS.${name}: unknown key ${JSON.stringify(key)}; allowed: connectors, ${Object.keys(DEFAULT_TUNNEL_SETTINGS).join(", ")}`);
    }
    if (key === "cors_origins") {
      out[key] = parseCorsOrigins(name, setting);
      continue;
    }
    if (!Number.isSafeInteger(setting) || setting < 1) {
      throw new ConfigError(`TUNNELS.${name}.${key} must be a whole number >= 1 (queries one identity may have in flight or waiting)`);
    }
    out[key] = setting;
  }
  return { connectors: value.connectors, ...out };
}

/** A tunnel's cors_origins: a list of exact origins (relay/config.py's checks and messages). */
function parseCorsOrigins(name, value) {
  if (!Array.isArray(value)) throw new ConfigError(`TUNNELS.${name}: cors_origins must be a list of origins, like ["https://app.example.com"]`);
  const problems = value.flatMap((entry, i) => {
    const problem = originProblem(entry);
    return problem === null ? [] : [`TUNNELS.${name}: cors_origins[${i}] = ${JSON.stringify(entry)} ${problem}`];
  });
  if (problems.length) throw new ConfigError(problems.join("\n"));
  return Object.freeze([...value]);
}

function parseIssuers(env) {
  const list = parseJson(env, "ISSUERS");
  if (!Array.isArray(list) || !list.length) {
    throw new ConfigError('ISSUERS must be a JSON list like [{"issuer": "https://...", "audience": "edgetds"}]');
  }
  const issuers = new Map();
  list.forEach((item, i) => {
    const where = `ISSUERS[${i}]`;
    if (item === null || typeof item !== "object") throw new ConfigError(`${where} must be an object`);
    const unknown = Object.keys(item).filter((k) => !["issuer", "audience", "jwks_uri", "jwks", "algorithms", "max_token_lifetime_s"].includes(k));
    if (unknown.length) throw new ConfigError(`${where}: unknown key(s) ${unknown.join(", ")}`);
    if (typeof item.issuer !== "string" || !item.issuer) throw new ConfigError(`${where}.issuer must be the issuer URL (the "iss" claim)`);
    checkUrl(item.issuer, `${where}.issuer`);
    const audience = typeof item.audience === "string" ? [item.audience] : item.audience;
    if (!Array.isArray(audience) || !audience.length || !audience.every((a) => typeof a === "string")) {
      throw new ConfigError(`${where}.audience must be a string or a list of strings`);
    }
    const algorithms = item.algorithms ?? [...DEFAULT_ALGORITHMS];
    if (!Array.isArray(algorithms) || !algorithms.every((a) => SUPPORTED_ALGORITHMS.has(a))) {
      throw new ConfigError(`${where}.algorithms must be a list of ${[...SUPPORTED_ALGORITHMS].join(", ")}`);
    }
    if (item.jwks_uri !== undefined) checkUrl(item.jwks_uri, `${where}.jwks_uri`);
    const jwks = Object.hasOwn(item, "jwks") ? item.jwks : null;
    if (Object.hasOwn(item, "jwks") && (jwks === null || typeof jwks !== "object" || !Array.isArray(jwks.keys))) {
      throw new ConfigError(`${where}.jwks must be a JWKS object like {"keys": [...]} (static public keys)`);
    }
    if (jwks !== null && item.jwks_uri !== undefined) throw new ConfigError(`${where}: set jwks_uri or jwks, not both`);
    const maxTokenLifetimeS = Object.hasOwn(item, "max_token_lifetime_s") ? item.max_token_lifetime_s : DEFAULT_MAX_TOKEN_LIFETIME_S;
    if (typeof maxTokenLifetimeS !== "number" || !(maxTokenLifetimeS > 0) || !Number.isFinite(maxTokenLifetimeS)) {
      throw new ConfigError(`${where}.max_token_lifetime_s must be a positive number of seconds (default ${DEFAULT_MAX_TOKEN_LIFETIME_S})`);
    }
    issuers.set(item.issuer, Object.freeze({ issuer: item.issuer, audience, algorithms, jwksUri: item.jwks_uri ?? null, jwks, maxTokenLifetimeS }));
  });
  return issuers;
}

function parseLimits(env) {
  const doc = parseJson(env, "LIMITS", {});
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new ConfigError("LIMITS must be a JSON object");
  const limits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(doc)) {
    if (!Object.hasOwn(DEFAULT_LIMITS, key)) {
      throw new ConfigError(`LIMITS: unknown key ${JSON.stringify(key)}; known: ${Object.keys(DEFAULT_LIMITS).join(", ")}`);
    }
    if (typeof value !== "number" || !(value >= 0)) throw new ConfigError(`LIMITS.${key} must be a non-negative number`);
    limits[key] = value;
  }
  if (!(limits.ping_interval_s > 0)) throw new ConfigError("LIMITS.ping_interval_s must be above 0 (seconds)");
  if (!(limits.max_param_bytes >= 1024)) throw new ConfigError("LIMITS.max_param_bytes must be at least 1024");
  for (const key of ["max_sessions_per_identity", "max_sessions_per_tunnel"]) {
    if (!Number.isSafeInteger(limits[key]) || limits[key] < 1) throw new ConfigError(`LIMITS.${key} must be a whole number >= 1 (open sessions)`);
  }
  return Object.freeze(limits);
}

function parseShards(env) {
  const raw = env.TUNNEL_SHARDS ?? "1";
  const shards = Number(raw);
  if (!Number.isInteger(shards) || shards < 1 || shards > 64) throw new ConfigError("TUNNEL_SHARDS must be an integer in [1, 64]");
  return shards;
}

function parseAuditToken(env) {
  const value = (env.AUDIT_TOKEN_SHA256 ?? "").toLowerCase();
  if (value && !/^[0-9a-f]{64}$/.test(value)) throw new ConfigError("AUDIT_TOKEN_SHA256 must be 64 hex digits (sha256 of a secret) or empty");
  return value;
}

/** The bindings the configuration is parsed from. */
const BINDINGS = Object.freeze(["RELAY_PRIVATE_KEY", "TUNNELS", "ISSUERS", "TUNNEL_SHARDS", "LIMITS", "AUDIT_TOKEN_SHA256"]);

/** @type {{inputs: string[], value: any} | null} */
let cached = null;

/** Whether `env`'s bindings are the ones `inputs` holds (compared one by one, nothing joined). @param {Record<string, any>} env @param {string[]} inputs */
function sameBindings(env, inputs) {
  for (let i = 0; i < BINDINGS.length; i++) if (String(env[BINDINGS[i]]) !== inputs[i]) return false;
  return true;
}

/**
 * The parsed configuration (cached per isolate; re-parsed if a binding string changes).
 * @param {Record<string, any>} env
 */
export async function loadConfig(env) {
  if (cached && sameBindings(env, cached.inputs)) return cached.value;
  const inputs = BINDINGS.map((name) => String(env[name]));
  let relayKey;
  try {
    relayKey = await loadRelayKey(env.RELAY_PRIVATE_KEY);
  } catch (err) {
    throw new ConfigError(`RELAY_PRIVATE_KEY: ${err.message}`);
  }
  const [tunnels, tunnelSettings] = parseTunnels(env);
  const value = Object.freeze({
    relayKey,
    tunnels,
    tunnelSettings,
    issuers: parseIssuers(env),
    shards: parseShards(env),
    limits: parseLimits(env),
    auditTokenSha256: parseAuditToken(env),
  });
  cached = { inputs, value };
  return value;
}
