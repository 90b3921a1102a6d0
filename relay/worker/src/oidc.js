// @ts-check
/**
 * Verify end users' bearer tokens at the edge with jose (mirrors identity/oidc.py's rules).
 *
 * 1. Missing token -> auth.missing_token; over max_token_bytes -> auth.invalid_token, before parsing.
 * 2. The unverified "iss" only picks the issuer; an unconfigured issuer is refused
 *    (auth.unknown_issuer) before any key is looked up or fetched.
 *    Header and payload are parsed strictly first (idtoken.js: no duplicate member names, bounded
 *    nesting and numbers), so what is checked is what the signature covers.
 * 3. The header alg must be in that issuer's allowlist (default RS256, ES256, EdDSA; never none/HS*).
 *    jose takes keys only from the issuer's JWKS: jku, x5u, jwk and x5c headers are ignored;
 *    crit, cty and b64 are refused, and typ must be JWT or at+jwt.
 * 4. One createRemoteJWKSet per issuer, kept at module scope so its cache lives as long as the
 *    isolate (an unknown kid refetches at most once per 30 s cooldown); discovery documents too.
 *    An issuer configured with a static "jwks" uses those keys (jose's local key set) instead.
 * 5. compactVerify checks the signature with the one alg; idtoken.js then checks the claims:
 *    exp/iss/aud/sub required with their JSON types, nbf/iat with leeway, and a lifetime of at most
 *    the issuer's max_token_lifetime_s (default 24 h).
 * 6. A token that passed all of the above is remembered by its sha256 (at most
 *    VERIFIED_CACHE_SIZE, module scope), as identity/oidc.py does: the same token again skips the
 *    parse and the signature check while the issuer's configuration is the same, its key set
 *    still gives the very key that verified it for the token's header (a JWKS refetched after its
 *    cache age or an unknown kid gives new keys: verified from scratch), and it has not expired
 *    (exp is checked at every use, with the leeway).
 *
 * Failures throw AuthError(code, message); the message never contains the token.
 */

import { compactVerify, createLocalJWKSet, createRemoteJWKSet } from "jose";

import { AuthError, DigestMemo } from "./auth.js";
import { ErrorCode } from "./frames.js";
import { checkClaims, checkHeader, parseToken } from "./idtoken.js";

const encoder = new TextEncoder();

// Module scope on purpose: these survive across requests for the isolate's lifetime.
const keySets = new Map(); // jwks_uri -> jose remote key set
const discovered = new Map(); // issuer -> Promise<jwks_uri>

/** Most verified tokens remembered (identity/oidc.py's verified_cache_size default). */
export const VERIFIED_CACHE_SIZE = 4096;
/** @type {Map<string, {cfg: any, header: Record<string, any>, key: any, exp: number, identity: {issuer: string, subject: string, claims: Record<string, any>, tokenSha256: string}}>} */
const verified = new Map(); // token sha256 (hex) -> what its verification established
/** The sha256 of recent tokens, by the exact token text (a client sends its token many times). */
export const TOKEN_DIGESTS = new DigestMemo({ maxEntries: 512, maxChars: 4096 });

/**
 * The bearer token of an Authorization header, or null.
 * @param {string | null} header
 */
export function bearerToken(header) {
  // As identity.oidc.bearer_token: "Bearer" and a space, then everything else, trimmed; a value
  // with spaces inside is passed on (and refused as a malformed token, auth.invalid_token).
  const match = /^Bearer (.*\S)/i.exec((header ?? "").trim());
  return match ? match[1].trim() : null;
}

async function discoverJwksUri(issuer) {
  const url = `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
  const response = await fetch(url, { headers: { accept: "application/json" }, redirect: "manual" });
  if (response.status !== 200) throw new Error(`GET ${url} answered HTTP ${response.status}`);
  const doc = await response.json();
  if (doc?.issuer !== issuer) throw new Error(`discovery document at ${url} names another issuer`);
  if (typeof doc.jwks_uri !== "string") throw new Error(`discovery document at ${url} has no jwks_uri`);
  return doc.jwks_uri;
}

const localKeySets = new WeakMap(); // issuer config -> jose local key set (static "jwks")

async function keySetFor(cfg) {
  if (cfg.jwks !== null) {
    let local = localKeySets.get(cfg);
    if (local === undefined) {
      local = createLocalJWKSet(cfg.jwks);
      localKeySets.set(cfg, local);
    }
    return local;
  }
  let jwksUri = cfg.jwksUri;
  if (jwksUri === null) {
    let pending = discovered.get(cfg.issuer);
    if (pending === undefined) {
      pending = discoverJwksUri(cfg.issuer);
      discovered.set(cfg.issuer, pending);
      pending.catch(() => discovered.delete(cfg.issuer)); // retry on the next request
    }
    jwksUri = await pending;
  }
  let keySet = keySets.get(jwksUri);
  if (keySet === undefined) {
    keySet = createRemoteJWKSet(new URL(jwksUri), { cooldownDuration: 30_000, cacheMaxAge: 3_600_000, timeoutDuration: 5_000 });
    keySets.set(jwksUri, keySet);
  }
  return keySet;
}

const INVALID = new Set([
  "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
  "ERR_JWKS_NO_MATCHING_KEY",
  "ERR_JWKS_MULTIPLE_MATCHING_KEYS",
  "ERR_JOSE_ALG_NOT_ALLOWED",
  "ERR_JWS_INVALID",
  "ERR_JWT_INVALID",
  "ERR_JOSE_NOT_SUPPORTED",
  "ERR_JWK_INVALID",
]);

function mapJoseError(err, cfg) {
  if (INVALID.has(err?.code)) {
    if (err.code === "ERR_JWKS_NO_MATCHING_KEY") return new AuthError(ErrorCode.AUTH_INVALID_TOKEN, `no key of issuer ${JSON.stringify(cfg.issuer)} matches the token's kid/alg`);
    return new AuthError(ErrorCode.AUTH_INVALID_TOKEN, "token signature does not verify or the token is malformed");
  }
  return keysUnavailable(cfg, err);
}

/**
 * The issuer's keys could not be loaded: an AuthError `internal` whose `detail` (the JWKS URL and
 * the fetch's answer) is for the relay's log only; index.js tells the client just the class.
 */
function keysUnavailable(cfg, err) {
  const error = new AuthError(ErrorCode.INTERNAL, `keys of issuer ${JSON.stringify(cfg.issuer)} are unavailable`);
  const where = cfg.jwksUri ? ` from ${cfg.jwksUri}` : " (OIDC discovery)";
  error.detail = `keys of issuer ${JSON.stringify(cfg.issuer)}${where} are unavailable: ${err?.code ?? err?.name ?? "error"}: ${err?.message ?? err}`;
  return error;
}

/**
 * Verify a client's bearer token.
 * @param {string | null} token
 * @param {{issuers: Map<string, any>, limits: {max_token_bytes: number, leeway_s: number}}} config
 * @param {number} [now] unix seconds (the clock exp/nbf/iat are compared with)
 * @returns {Promise<{issuer: string, subject: string, claims: Record<string, any>, tokenSha256: string}>}
 *   (`tokenSha256`: the token's hex sha256, the attestation's token_sha256)
 */
export async function verifyClientToken(token, config, now = Date.now() / 1000) {
  if (!token || !token.trim()) throw new AuthError(ErrorCode.AUTH_MISSING_TOKEN, "no bearer token was sent");
  const size = encoder.encode(token).byteLength;
  if (size > config.limits.max_token_bytes) {
    throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, `token is ${size} bytes, over the ${config.limits.max_token_bytes}-byte limit`);
  }
  const digest = await TOKEN_DIGESTS.sha256Hex(token);
  const hit = verified.get(digest);
  if (hit !== undefined) {
    const identity = await remembered(digest, hit, config, now);
    if (identity !== null) return identity;
  }
  const { header, payload } = parseToken(token);
  const iss = payload.iss;
  if (typeof iss !== "string" || !iss) throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, "token has no 'iss' claim");
  const cfg = config.issuers.get(iss);
  if (cfg === undefined) {
    // No key lookup, no fetch: an unknown issuer costs nothing.
    throw new AuthError(ErrorCode.AUTH_UNKNOWN_ISSUER, `issuer ${JSON.stringify(iss.slice(0, 200))} is not trusted here`);
  }
  const alg = header.alg;
  if (typeof alg !== "string" || !cfg.algorithms.includes(alg)) {
    throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, `algorithm ${JSON.stringify(String(alg).slice(0, 20))} is not allowed for issuer ${JSON.stringify(iss)} (allowed: ${cfg.algorithms.join(", ")})`);
  }
  checkHeader(header);
  let keySet;
  try {
    keySet = await keySetFor(cfg);
  } catch (err) {
    throw keysUnavailable(cfg, err);
  }
  let key;
  try {
    await compactVerify(token, async (protectedHeader) => (key = await keySet(protectedHeader)), { algorithms: [alg] });
  } catch (err) {
    throw mapJoseError(err, cfg);
  }
  // The payload parsed above is exactly the bytes the signature covers: now it is verified.
  const { sub } = checkClaims(payload, {
    issuer: cfg.issuer,
    audiences: cfg.audience,
    maxLifetimeS: cfg.maxTokenLifetimeS,
    leewayS: config.limits.leeway_s,
    now,
  });
  const identity = Object.freeze({ issuer: iss, subject: sub, claims: payload, tokenSha256: digest });
  remember(digest, { cfg, header, key, exp: payload.exp, identity });
  return identity;
}

/**
 * The identity of an already verified token if that verification still holds now (step 6), else
 * null (verify from scratch); an expired one is refused (auth.expired).
 */
async function remembered(digest, hit, config, now) {
  let current = null;
  if (config.issuers.get(hit.identity.issuer) === hit.cfg) {
    try {
      current = await (await keySetFor(hit.cfg))(hit.header);
    } catch {
      current = null; // keys unavailable now: the full path says so
    }
  }
  if (current === null || current !== hit.key) {
    verified.delete(digest);
    return null;
  }
  if (hit.exp <= now - config.limits.leeway_s) {
    verified.delete(digest);
    throw new AuthError(ErrorCode.AUTH_EXPIRED, "token has expired; get a fresh one");
  }
  return hit.identity;
}

function remember(digest, entry) {
  if (verified.size >= VERIFIED_CACHE_SIZE) {
    for (const [known, { exp }] of verified) {
      if (exp <= Date.now() / 1000) verified.delete(known);
    }
    for (const known of verified.keys()) {
      if (verified.size < VERIFIED_CACHE_SIZE) break;
      verified.delete(known); // the oldest first
    }
  }
  verified.set(digest, entry);
}
