// @ts-check
/**
 * Mutual authentication and identity tagging on the Worker side (mirrors protocol/_auth.py).
 *
 * - canonicalJson(): byte-identical to Python's
 *   `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` encoded UTF-8,
 *   including Python's float repr and code-point key order, so signatures and hashes agree.
 * - verifyConnectorToken(): the connector's EdDSA JWT, checked before the WebSocket upgrade
 *   (jose checks the signature against each registered key of its connector id: several during a
 *   key rotation; the claim rules are protocol/_auth.py's, step by step).
 * - signHello(), makeAttestation(): WebCrypto Ed25519 signatures with the relay key.
 * - Keys: public keys are "ed25519:" + base64url(raw 32 bytes); the relay private key is a PKCS#8
 *   PEM or an OKP JWK; a key id is the first 16 chars of base64url(sha256(raw public key)).
 *
 * Failures throw AuthError carrying a FIXED error code; messages never contain tokens or keys.
 */

import { compactVerify, importJWK } from "jose";

import { ErrorCode } from "./frames.js";
import { parseStrictObject } from "./strictjson.js";

export const HELLO_CONTEXT = "edgetds/1 hello\n";
export const QUERY_CONTEXT = "edgetds/1 query\n";
export const CHECKPOINT_CONTEXT = "edgetds/1 checkpoint\n";
export const TOKEN_MAX_LIFETIME = 60;
export const TOKEN_LEEWAY = 5;
export const KEY_PREFIX = "ed25519:";

const encoder = new TextEncoder();

/** A token, hello or attestation failed verification. */
export class AuthError extends Error {
  /** @param {string} code an auth.* error code @param {string} message safe to show */
  constructor(code, message) {
    super(message);
    this.name = "AuthError";
    this.code = code;
    /** @type {string | undefined} the cause, for the relay's log only (never sent to a client) */
    this.detail = undefined;
  }
}

// ------------------------------------------------------------------------------------ base64url

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** Unpadded base64url of bytes. @param {Uint8Array} bytes @returns {string} */
export function b64url(bytes) {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63] + B64URL[n & 63];
  }
  if (i + 1 === bytes.length) {
    out += B64URL[bytes[i] >> 2] + B64URL[(bytes[i] & 3) << 4];
  } else if (i + 2 === bytes.length) {
    const n = (bytes[i] << 8) | bytes[i + 1];
    out += B64URL[n >> 10] + B64URL[(n >> 4) & 63] + B64URL[(n & 15) << 2];
  }
  return out;
}

/** Strict unpadded base64url decode. @param {string} text @returns {Uint8Array} */
export function unb64url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new TypeError("not unpadded base64url");
  }
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** 128 random bits, base64url. */
export function randomB64url() {
  return b64url(crypto.getRandomValues(new Uint8Array(16)));
}

/** The two lowercase hex digits of each byte value. */
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/** Lowercase hex of bytes. @param {Uint8Array} bytes @returns {string} */
export function hex(bytes) {
  let out = "";
  for (const b of bytes) out += HEX[b];
  return out;
}

/** Lowercase hex SHA-256. @param {Uint8Array | string} data @returns {Promise<string>} */
export async function sha256Hex(data) {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}

// ------------------------------------------------------------------------------- canonical JSON

/**
 * Python's repr() of a float, from the shortest round-trip digits JavaScript also computes.
 * Python switches to exponent form when the decimal exponent is < -4 or >= 16; JavaScript at
 * < -6 or >= 21; and Python always shows a fraction (".0") in fixed form.
 * @param {number} x a finite number with a fractional part, or a huge integral value
 */
export function pythonFloatRepr(x) {
  if (!Number.isFinite(x)) throw new TypeError("NaN and Infinity are not JSON");
  if (Object.is(x, -0)) return "-0.0";
  if (x === 0) return "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa, expText] = Math.abs(x).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const exp = Number(expText); // value = d.ddd * 10^exp
  const decpt = exp + 1; // value = 0.ddd * 10^decpt
  if (decpt <= -4 || decpt > 16) {
    const frac = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, "0");
    return `${sign}${frac}e${exp < 0 ? "-" : "+"}${e}`;
  }
  if (decpt <= 0) return `${sign}0.${"0".repeat(-decpt)}${digits}`;
  if (decpt >= digits.length) return `${sign}${digits}${"0".repeat(decpt - digits.length)}.0`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}

/**
 * A number the client wrote with a fraction or exponent ("2.0", "1e300"): Python parses it as a
 * float, so its canonical form is Python's float repr even when the value is integral.
 * (Created by request.js where the runtime offers JSON.parse source text, as workerd does.)
 */
export class PyFloat {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }

  toJSON() {
    return this.value;
  }
}

function compareCodePoints(a, b) {
  // Python sorts str keys by code point; JavaScript's default sort uses UTF-16 units, which
  // disagree for characters above U+FFFF against U+E000..U+FFFF.
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done === y.done ? 0 : x.done ? -1 : 1;
    const d = x.value.codePointAt(0) - y.value.codePointAt(0);
    if (d !== 0) return d;
  }
}

const SURROGATE = /[\uD800-\uDFFF]/;

/** An object's keys in code-point order: UTF-16 order, which is the same without surrogates. @param {Record<string, any>} value */
function sortedKeys(value) {
  const keys = Object.keys(value).sort();
  return keys.some((k) => SURROGATE.test(k)) ? keys.sort(compareCodePoints) : keys;
}

function quote(s) {
  if (!s.isWellFormed()) throw new TypeError("string contains a lone surrogate (not encodable as UTF-8)");
  // For a well-formed string JSON.stringify escapes exactly what Python's json.dumps(ensure_ascii=
  // False) does: " and \ and the control characters below U+0020 (\b \f \n \r \t, the others
  // as \u00xx in lowercase hex); nothing else (not U+007F, U+2028 or U+2029).
  return JSON.stringify(s);
}

function canonicalText(value) {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return quote(value);
    case "number":
      if (Number.isInteger(value) && !Object.is(value, -0)) {
        if (!Number.isSafeInteger(value)) {
          throw new RangeError("integer beyond 2^53 cannot be represented exactly; send it as a string");
        }
        return String(value);
      }
      return pythonFloatRepr(value);
    case "object":
      if (value instanceof PyFloat) return pythonFloatRepr(value.value);
      if (Array.isArray(value)) return `[${value.map(canonicalText).join(",")}]`;
      return `{${sortedKeys(value)
        .map((k) => `${quote(k)}:${canonicalText(value[k])}`)
        .join(",")}}`;
    default:
      throw new TypeError(`${typeof value} is not JSON-serializable`);
  }
}

/**
 * The canonical JSON that edgetds/1 signatures and hashes cover, as UTF-8 bytes.
 * @param {any} value JSON data (integers must be safe integers)
 * @returns {Uint8Array}
 */
export function canonicalJson(value) {
  return encoder.encode(canonicalText(value));
}

/** canonicalJson as a string. */
export function canonicalJsonText(value) {
  return canonicalText(value);
}

/**
 * The QUERY payload in canonical JSON, with `params` spliced in as canonical text (so float
 * literals keep Python's form). Keys in code-point order. `session`: the QUERY member of a session
 * operation (SPEC 7.4), absent for a one-shot query.
 * @param {{queryId: string, token: string, sql: string|null, query: string|null, paramsJson: string,
 *   options: Record<string, any>, attestation: Record<string, any>, session?: Record<string, any>|null}} q
 */
export function queryPayload({ queryId, token, sql, query, paramsJson, options, attestation, session = null }) {
  const text =
    `{"attestation":${canonicalText(attestation)},"options":${canonicalText(options)},` +
    `"params":${paramsJson},"query":${canonicalText(query)},"query_id":${canonicalText(queryId)},` +
    (session === null ? "" : `"session":${canonicalText(session)},`) +
    `"sql":${canonicalText(sql)},"token":${canonicalText(token)}}`;
  return encoder.encode(text);
}

// ----------------------------------------------------------------------------------------- keys

/**
 * Parse "ed25519:<base64url raw 32 bytes>".
 * @param {string} text @returns {Uint8Array}
 */
export function parsePublicKey(text) {
  if (typeof text !== "string" || !text.startsWith(KEY_PREFIX)) {
    throw new TypeError('a public key must look like "ed25519:<base64url of 32 bytes>"');
  }
  const raw = unb64url(text.slice(KEY_PREFIX.length));
  if (raw.length !== 32) throw new TypeError(`an Ed25519 public key is 32 bytes, got ${raw.length}`);
  return raw;
}

/** The key id of a raw public key: first 16 chars of base64url(sha256(raw)). */
export async function keyId(raw) {
  return b64url(new Uint8Array(await crypto.subtle.digest("SHA-256", raw))).slice(0, 16);
}

/**
 * The relay signing key from RELAY_PRIVATE_KEY: a PKCS#8 PEM or an OKP/Ed25519 JWK (JSON).
 * @param {string} text
 * @returns {Promise<{privateKey: CryptoKey, publicRaw: Uint8Array, publicKey: string, keyId: string}>}
 */
export async function loadRelayKey(text) {
  if (typeof text !== "string" || !text.trim()) {
    throw new TypeError("RELAY_PRIVATE_KEY is not set: `wrangler secret put RELAY_PRIVATE_KEY < relay.key`");
  }
  let jwk;
  if (text.trim().startsWith("{")) {
    jwk = JSON.parse(text);
  } else {
    const body = text.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, "").replace(/\s+/g, "");
    const der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
    jwk = await crypto.subtle.exportKey("jwk", key);
  }
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string") {
    throw new TypeError("RELAY_PRIVATE_KEY must be an Ed25519 private key (PKCS#8 PEM or OKP JWK)");
  }
  const privateKey = await crypto.subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", d: jwk.d, x: jwk.x }, { name: "Ed25519" }, false, ["sign"]);
  const publicRaw = unb64url(jwk.x);
  return { privateKey, publicRaw, publicKey: KEY_PREFIX + jwk.x, keyId: await keyId(publicRaw) };
}

// ------------------------------------------------------------------------------------- signing

async function sign(privateKey, context, obj) {
  const unsigned = Object.hasOwn(obj, "sig") ? Object.fromEntries(Object.entries(obj).filter(([k]) => k !== "sig")) : obj;
  const message = encoder.encode(context + canonicalText(unsigned));
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, message));
  return { ...unsigned, sig: b64url(sig) };
}

/**
 * Verify an object signed by `sign` (tests and tooling; the connector does this in Python).
 * @param {Uint8Array} publicRaw @param {string} context @param {Record<string, any>} obj
 */
export async function verifySigned(publicRaw, context, obj) {
  try {
    const key = await crypto.subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
    const unsigned = Object.fromEntries(Object.entries(obj).filter(([k]) => k !== "sig"));
    const message = encoder.encode(context + canonicalText(unsigned));
    return await crypto.subtle.verify({ name: "Ed25519" }, key, unb64url(obj.sig), message);
  } catch {
    return false;
  }
}

/**
 * The relay's signed HELLO fields (protocol sign_hello).
 * @param {{privateKey: CryptoKey, keyId: string}} relayKey
 * @param {{sessionId: string, tunnel: string, connectorId: string, nonce: string,
 *          limits: Record<string, number>, caps?: string[]}} fields
 */
export function signHello(relayKey, { sessionId, tunnel, connectorId, nonce, limits, caps = [] }) {
  const hello = {
    version: 1,
    session_id: sessionId,
    tunnel,
    connector_id: connectorId,
    nonce,
    relay_key_id: relayKey.keyId,
    caps: [...caps],
    limits: {
      max_frame: limits.max_frame,
      stream_window: limits.stream_window,
      connection_window: limits.connection_window,
      max_streams: limits.max_streams,
    },
  };
  return sign(relayKey.privateKey, HELLO_CONTEXT, hello);
}

/**
 * sha256Hex by exact text, remembered for texts of at most `maxChars` characters and at most
 * `maxEntries` of them (when full it starts over), so that a text which repeats (a statement, an
 * options object, a client's token) is hashed once. A digest never goes stale: it is a function of
 * the text alone.
 */
export class DigestMemo {
  /** @param {{maxEntries: number, maxChars: number}} bounds */
  constructor({ maxEntries, maxChars }) {
    this.maxEntries = maxEntries;
    this.maxChars = maxChars;
    /** @type {Map<string, string>} */
    this.kept = new Map();
  }

  /** How many digests are kept. */
  get size() {
    return this.kept.size;
  }

  /** @param {string} text @returns {Promise<string>} */
  async sha256Hex(text) {
    if (text.length > this.maxChars) return sha256Hex(text);
    let digest = this.kept.get(text);
    if (digest === undefined) {
      digest = await sha256Hex(text);
      if (this.kept.size >= this.maxEntries) this.kept.clear();
      this.kept.set(text, digest);
    }
    return digest;
  }
}

/** Digests of recent statements and options texts (statements repeat; options take few values). */
export const TEXT_DIGESTS = new DigestMemo({ maxEntries: 1024, maxChars: 4096 });

/**
 * The relay's attestation for a QUERY (protocol make_attestation).
 * @param {{privateKey: CryptoKey, keyId: string}} relayKey
 * @param {{sessionId: string, queryId: string, token: string, sql: string|null, query: string|null,
 *          params?: Record<string, any>, paramsJson?: string, options: Record<string, any>,
 *          now: number, nonce?: string, session?: Record<string, any>|null, tokenSha256?: string}} q
 *        `now` in unix seconds (ts = round(now * 1000)); `paramsJson`: the params already in
 *        canonical JSON (used as is when given); `session`: the QUERY's session member (attested as
 *        session_sha256); `tokenSha256`: sha256Hex(token) when the caller has it already
 */
export async function makeAttestation(relayKey, { sessionId, queryId, token, sql, query, params, paramsJson, options, now, nonce, session = null, tokenSha256 }) {
  // A session op other than `run` has neither: the empty statement (SPEC 8.4).
  const statement = sql !== null && sql !== undefined ? `sql:${sql}` : query !== null && query !== undefined ? `query:${query}` : "";
  const [statementSha256, paramsSha256, tokenDigest, optionsSha256] = await Promise.all([
    TEXT_DIGESTS.sha256Hex(statement),
    sha256Hex(paramsJson ?? canonicalJson(params)),
    tokenSha256 ?? sha256Hex(token),
    TEXT_DIGESTS.sha256Hex(canonicalJsonText(options)),
  ]);
  const attestation = {
    relay_key_id: relayKey.keyId,
    session_id: sessionId,
    ts: Math.round(now * 1000),
    nonce: nonce ?? randomB64url(),
    statement_sha256: statementSha256,
    params_sha256: paramsSha256,
    token_sha256: tokenDigest,
    options_sha256: optionsSha256,
    query_id: queryId,
  };
  if (session !== null) attestation.session_sha256 = await sha256Hex(canonicalJson(session));
  return sign(relayKey.privateKey, QUERY_CONTEXT, attestation);
}

// ----------------------------------------------------------------------------- connector token

function tokenPart(part, what) {
  try {
    // Duplicate member names and a BOM are refused, as protocol/_json.py loads_object does.
    return parseStrictObject(unb64url(part));
  } catch {
    throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, `connector token ${what} is not base64url JSON`);
  }
}

function randomId(claims, name) {
  let ok = false;
  try {
    ok = typeof claims[name] === "string" && unb64url(claims[name]).length >= 16;
  } catch {
    ok = false;
  }
  if (!ok) throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, `connector token "${name}" must be >= 128 random bits, base64url`);
  return claims[name];
}

const importedConnectorKeys = new Map(); // "ed25519:..." -> CryptoKey (module scope: reused)

async function connectorKey(publicKey) {
  let key = importedConnectorKeys.get(publicKey);
  if (key === undefined) {
    const x = publicKey.slice(KEY_PREFIX.length);
    parsePublicKey(publicKey);
    key = await importJWK({ kty: "OKP", crv: "Ed25519", x }, "EdDSA");
    importedConnectorKeys.set(publicKey, key);
  }
  return key;
}

/**
 * The first of the registered keys (in order) under which the token's signature verifies, as
 * "ed25519:..." text; null when none does.
 * @param {string} token @param {string[]} keys @returns {Promise<string | null>}
 */
async function verifyingKey(token, keys) {
  for (const publicKey of keys) {
    try {
      await compactVerify(token, await connectorKey(publicKey), { algorithms: ["EdDSA"] });
      return publicKey;
    } catch {
      // not this key: a rotation registers several
    }
  }
  return null;
}

/**
 * Check a connector token before the WebSocket upgrade (protocol verify_connector_token, without
 * the replay check: the Durable Object owns the jti store).
 * @param {string} token
 * @param {Record<string, string | string[]>} connectorKeys connector id -> "ed25519:..." public
 *        key, or several while that connector's key rotates (any of them may have signed)
 * @param {{tunnel: string, now: number, leeway?: number,
 *          enrolled?: ((connectorId: string) => Promise<string[]>) | null}} options `now` in unix
 *        seconds; `enrolled`: a connector id's enrolled keys (SPEC 8.7), asked only when no key
 *        of `connectorKeys` verifies the token (so a connector of TUNNELS costs no lookup)
 * @returns {Promise<{connectorId: string, tunnel: string, jti: string, nonce: string, iat: number,
 *          exp: number, publicKeyHex: string}>} `publicKeyHex`: the raw 32-byte registered key
 *          that verified the token, lowercase hex
 */
export async function verifyConnectorToken(token, connectorKeys, { tunnel, now, leeway = TOKEN_LEEWAY, enrolled = null }) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, "connector token is not a JWT");
  const header = tokenPart(parts[0], "header");
  if (header.alg !== "EdDSA" || typeof header.kid !== "string") {
    throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, 'connector token must have alg "EdDSA" and a "kid"');
  }
  const kid = header.kid;
  const fixed = Object.hasOwn(connectorKeys, kid) ? [connectorKeys[kid]].flat() : [];
  let publicKey = await verifyingKey(token, fixed);
  if (publicKey === null) {
    const more = enrolled === null ? [] : await enrolled(kid);
    if (!fixed.length && !more.length) {
      throw new AuthError(ErrorCode.AUTH_UNKNOWN_ISSUER, `connector ${JSON.stringify(kid.slice(0, 64))} is not registered at this relay`);
    }
    publicKey = await verifyingKey(token, more);
    if (publicKey === null) {
      const count = fixed.length + more.length;
      const which = count > 1 ? ` under any of its ${count} registered keys` : "";
      throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, `connector token signature does not verify${which}`);
    }
  }
  const claims = tokenPart(parts[1], "claims");
  if (claims.iss !== kid || claims.sub !== kid) {
    throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, 'connector token "iss" and "sub" must equal its "kid"');
  }
  if (claims.aud !== `edgetds:relay:${tunnel}`) {
    throw new AuthError(ErrorCode.AUTH_WRONG_AUDIENCE, `connector token is not for tunnel ${JSON.stringify(tunnel)}`);
  }
  const { iat, exp } = claims;
  if (!Number.isInteger(iat) || !Number.isInteger(exp) || !(exp - iat > 0 && exp - iat <= TOKEN_MAX_LIFETIME)) {
    throw new AuthError(ErrorCode.AUTH_INVALID_TOKEN, `connector token needs integer "iat" < "exp" at most ${TOKEN_MAX_LIFETIME} s apart`);
  }
  if (now > exp + leeway || now < iat - leeway) {
    throw new AuthError(ErrorCode.AUTH_EXPIRED, "connector token expired or not yet valid (check the connector's clock)");
  }
  const jti = randomId(claims, "jti");
  const nonce = randomId(claims, "nonce");
  return { connectorId: kid, tunnel, jti, nonce, iat, exp, publicKeyHex: hex(parsePublicKey(publicKey)) };
}
