// @ts-check
/**
 * One-token enrolment on the Worker side (SPEC.md 8.7; mirrors protocol/_enroll.py check for check).
 *
 * - parseEnrollToken(): `edgetds-enroll-1.` + base64url(canonical claims) + `.` + base64url(sig),
 *   the signature made by the relay key the claims carry (proves the token is whole, not that this
 *   relay made it).
 * - checkEnrollRequest(): the body of `POST /v1/tunnels/{tunnel}/enroll`, checked in SPEC.md's
 *   order up to the proof; the `jti` replay check (enroll.used) is the Durable Object's, atomic
 *   with recording the key (tunnel.js enroll()).
 * - signEnrolled(): the relay's signed 200 answer.
 *
 * Every refusal is an AuthError with a FIXED error code (request.invalid, enroll.invalid_token,
 * tunnel.unknown, enroll.expired, enroll.invalid_proof); messages never contain the token, the
 * proof or a key.
 */

import { AuthError, b64url, canonicalJson, canonicalJsonText, keyId, parsePublicKey, unb64url } from "./auth.js";
import { ErrorCode } from "./frames.js";
import { parseStrictObject } from "./strictjson.js";

export const ENROLL_TOKEN_PREFIX = "edgetds-enroll-1.";
export const ENROLL_CONTEXT = "edgetds/1 enroll\n";
export const ENROLL_PROOF_CONTEXT = "edgetds/1 enroll-proof\n";
export const ENROLLED_CONTEXT = "edgetds/1 enrolled\n";
/** Longest token lifetime (exp - iat), seconds: 7 days. */
export const ENROLL_MAX_LIFETIME = 7 * 24 * 3600;
/** Clock leeway on iat and exp, seconds; a consumed jti is remembered until exp + this. */
export const ENROLL_LEEWAY = 5;
/** Longest token text a relay reads (a real one is about 600 characters). */
export const MAX_TOKEN_CHARS = 4096;

const CLAIMS = ["v", "relay_url", "tunnel", "connector_id", "relay_key", "relay_key_id", "iat", "exp", "jti"];
const BODY = ["token", "public_key", "proof"];
// http(s) base of a relay: scheme, host (name, IPv4 or [IPv6]), optional port; no path, no user.
const RELAY_URL = /^https?:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
// What Python's str.strip() removes (str.isspace), which JavaScript's trim() does not quite match.
const PY_SPACE = "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const PY_STRIP = new RegExp(`^${PY_SPACE}+|${PY_SPACE}+$`, "g");
const encoder = new TextEncoder();

/**
 * @typedef {{relay_url: string, tunnel: string, connector_id: string, relay_key: string,
 *   relay_key_id: string, iat: number, exp: number, jti: string}} EnrollClaims
 * @typedef {{claims: EnrollClaims, publicKey: string, keyId: string}} EnrollRequest
 */

function invalid(message) {
  return new AuthError(ErrorCode.ENROLL_INVALID_TOKEN, message);
}

/** Length in code points (as Python counts a str). @param {string} text */
function codePoints(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

// a tunnel or connector id: what connector.toml accepts for them, and safe in a URL path
const NAME = /^[A-Za-z0-9._-]{1,128}$/;

function nameOk(value) {
  return typeof value === "string" && NAME.test(value);
}

/** @param {Record<string, any>} claims */
function checkClaims(claims) {
  const names = Object.keys(claims).sort();
  if (names.join("\u0000") !== [...CLAIMS].sort().join("\u0000") || claims.v !== 1) {
    throw invalid(`enrolment token claims must be exactly ${CLAIMS.join(", ")} with v = 1`);
  }
  if (typeof claims.relay_url !== "string" || !RELAY_URL.test(claims.relay_url)) {
    throw invalid('enrolment token "relay_url" must be http(s)://host[:port] with no path');
  }
  for (const name of ["tunnel", "connector_id"]) {
    if (!nameOk(claims[name])) throw invalid(`enrolment token "${name}" must be 1..128 of the characters A-Z a-z 0-9 . _ -`);
  }
  const { iat, exp } = claims;
  if (!Number.isSafeInteger(iat) || !Number.isSafeInteger(exp) || !(iat >= 0 && iat < exp)) {
    throw invalid('enrolment token needs integer "iat" < "exp" (unix seconds)');
  }
  if (exp - iat > ENROLL_MAX_LIFETIME) throw invalid("enrolment token lifetime (exp - iat) is over 7 days");
  let jtiOk = false;
  try {
    const raw = typeof claims.jti === "string" ? unb64url(claims.jti) : new Uint8Array(0);
    jtiOk = raw.length >= 16 && raw.length <= 64;
  } catch {
    jtiOk = false;
  }
  if (!jtiOk) throw invalid('enrolment token "jti" must be 16..64 random bytes, base64url');
}

/** @param {Uint8Array} raw @returns {Promise<CryptoKey>} */
function importVerifyKey(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
}

/** Ed25519 verify that answers false for any malformed input. @param {Uint8Array} raw @param {Uint8Array} sig @param {Uint8Array} message */
async function signatureOk(raw, sig, message) {
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, await importVerifyKey(raw), sig, message);
  } catch {
    return false;
  }
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** @param {string} context @param {Uint8Array} body */
function withContext(context, body) {
  const head = encoder.encode(context);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/**
 * Parse an enrolment token and verify its signature with the relay key it carries.
 * @param {string} token @returns {Promise<EnrollClaims>}
 * @throws {AuthError} enroll.invalid_token, saying what is wrong
 */
export async function parseEnrollToken(token) {
  const text = token.replace(PY_STRIP, "");
  if (!text.startsWith(ENROLL_TOKEN_PREFIX)) {
    throw invalid(`not an enrolment token (it starts with '${ENROLL_TOKEN_PREFIX}'); copy the whole line \`edgetds relay enroll\` printed`);
  }
  const parts = text.slice(ENROLL_TOKEN_PREFIX.length).split(".");
  let body;
  let sig;
  let claims;
  try {
    if (parts.length !== 2) throw new TypeError("two parts");
    body = unb64url(parts[0]);
    sig = unb64url(parts[1]);
    claims = parseStrictObject(body);
  } catch {
    throw invalid("enrolment token is damaged (not two base64url JSON parts); was it cut short when copied?");
  }
  checkClaims(claims);
  let canonical;
  try {
    canonical = canonicalJsonText(claims);
  } catch {
    canonical = null; // not representable (a lone surrogate): not what a relay signs
  }
  if (canonical === null || !sameBytes(encoder.encode(canonical), body)) throw invalid("enrolment token claims are not in canonical JSON");
  let relayRaw;
  try {
    relayRaw = parsePublicKey(claims.relay_key);
  } catch (err) {
    throw invalid(`enrolment token "relay_key": ${err.message}`);
  }
  if (claims.relay_key_id !== (await keyId(relayRaw))) throw invalid('enrolment token "relay_key_id" is not the key id of its "relay_key"');
  if (!(await signatureOk(relayRaw, sig, withContext(ENROLL_CONTEXT, body)))) {
    throw invalid("enrolment token signature does not verify: it was altered or damaged; ask the relay operator for a new one");
  }
  const { v: _v, ...rest } = claims;
  return /** @type {EnrollClaims} */ (rest);
}

/**
 * `iat - leeway <= now <= exp + leeway`.
 * @param {EnrollClaims} claims @param {number} now unix seconds
 * @throws {AuthError} enroll.expired
 */
export function checkEnrollTime(claims, now, leeway = ENROLL_LEEWAY) {
  if (now > claims.exp + leeway) {
    throw new AuthError(ErrorCode.ENROLL_EXPIRED, `enrolment token expired at ${claims.exp} (unix time); ask the relay operator for a new one: edgetds relay enroll --tunnel ${claims.tunnel} --connector ${claims.connector_id}`);
  }
  if (now < claims.iat - leeway) {
    throw new AuthError(ErrorCode.ENROLL_EXPIRED, `enrolment token is not valid before ${claims.iat} (unix time): check the clocks`);
  }
}

/** What the connector's proof signs. @param {EnrollClaims} claims @param {string} publicKey */
export function proofInput(claims, publicKey) {
  return withContext(ENROLL_PROOF_CONTEXT, canonicalJson({ jti: claims.jti, tunnel: claims.tunnel, connector_id: claims.connector_id, public_key: publicKey }));
}

function bodyInvalid(message) {
  return new AuthError(ErrorCode.REQUEST_INVALID, message);
}

/**
 * The relay's checks of `POST /v1/tunnels/{tunnel}/enroll`, in SPEC.md 8.7's order, all but the
 * last (the jti replay check, which the Durable Object makes atomically with recording the key).
 * @param {Uint8Array} body the request body
 * @param {{tunnel: string, relayKeys: string[], tunnels: Iterable<string>, now: number}} options
 *   `tunnel`: the URL's; `relayKeys`: this relay's CURRENT signing keys ("ed25519:..."); `tunnels`:
 *   the tunnels this relay serves; `now`: unix seconds
 * @returns {Promise<EnrollRequest>}
 * @throws {AuthError} request.invalid, enroll.invalid_token, tunnel.unknown, enroll.expired,
 *   enroll.invalid_proof
 */
export async function checkEnrollRequest(body, { tunnel, relayKeys, tunnels, now }) {
  let doc;
  try {
    doc = parseStrictObject(body);
  } catch {
    doc = {};
  }
  const names = Object.keys(doc).sort();
  if (names.join("\u0000") !== [...BODY].sort().join("\u0000") || !BODY.every((k) => typeof doc[k] === "string")) {
    throw bodyInvalid('enrolment body must be a JSON object {"token", "public_key", "proof"} of strings');
  }
  const { token, public_key: publicKey, proof } = doc;
  let newRaw;
  let proofSig;
  try {
    newRaw = parsePublicKey(publicKey);
    proofSig = unb64url(proof);
  } catch (err) {
    throw bodyInvalid(`enrolment body "public_key" or "proof" is malformed: ${err.message}`);
  }
  if (token.length > MAX_TOKEN_CHARS && codePoints(token) > MAX_TOKEN_CHARS) {
    throw invalid(`enrolment token is longer than ${MAX_TOKEN_CHARS} characters`);
  }
  const claims = await parseEnrollToken(token);
  if (!relayKeys.includes(claims.relay_key)) {
    throw invalid("enrolment token was signed by a key that is not this relay's signing key (made for another relay, or before the relay's key changed); ask for a new one");
  }
  if (claims.tunnel !== tunnel) throw invalid(`enrolment token is for another tunnel than '${tunnel}'; post it to its own tunnel's URL`);
  if (![...tunnels].includes(tunnel)) throw new AuthError(ErrorCode.TUNNEL_UNKNOWN, `tunnel '${tunnel}' is not served here`);
  checkEnrollTime(claims, now);
  if (!(await signatureOk(newRaw, proofSig, proofInput(claims, publicKey)))) {
    throw new AuthError(ErrorCode.ENROLL_INVALID_PROOF, '"proof" does not verify with "public_key": the connector must sign the proof with the key it enrols');
  }
  return { claims, publicKey, keyId: await keyId(newRaw) };
}

/**
 * The `"enrolled"` object of the relay's answer.
 * @param {EnrollRequest} request
 */
export function enrolledObject({ claims, publicKey, keyId: id }) {
  return { tunnel: claims.tunnel, connector_id: claims.connector_id, public_key: publicKey, key_id: id, jti: claims.jti };
}

/**
 * The relay's 200 answer: `{"enrolled": {...}, "relay_key_id", "sig"}`.
 * @param {{privateKey: CryptoKey, keyId: string}} relayKey the key the token named
 * @param {EnrollRequest} request
 */
export async function signEnrolled(relayKey, request) {
  const enrolled = enrolledObject(request);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, relayKey.privateKey, withContext(ENROLLED_CONTEXT, canonicalJson(enrolled))));
  return { enrolled, relay_key_id: relayKey.keyId, sig: b64url(sig) };
}
