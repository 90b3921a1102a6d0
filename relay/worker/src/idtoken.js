// @ts-check
/**
 * The shape rules of an end user's token (mirrors edgetds/_idtoken.py step for step; both run
 * protocol/vectors/id_tokens.json). Every rule refuses with auth.invalid_token unless it says otherwise:
 *
 * 1. Segments: exactly three non-empty unpadded base64url segments.
 * 2. JSON of header and payload: strict UTF-8 (a BOM is refused), one JSON object, no duplicate
 *    member names at any depth (JSON.parse keeps the last one silently: a second "sub" or "groups"
 *    would win), no NaN/Infinity, no number literal over MAX_NUMBER_CHARS characters, nested at
 *    most MAX_NESTING levels.
 * 3. Header (after the issuer is known): "crit", "cty" and "b64" are refused whatever their value;
 *    "typ", when present, is JWT or at+jwt (case-insensitive, "application/" prefix optional);
 *    "kid", when present, is a string. jku, x5u, jwk, x5c, x5t are ignored (keys come only from
 *    configuration).
 * 4. Claims (after the signature verified), in this order: "exp" present; exp/nbf/iat JSON numbers
 *    in [0, 2^53-1]; "sub" a non-empty string; "iss" the issuer; "jti" a string when present;
 *    "aud" present (auth.wrong_audience if not), a non-empty string or list of non-empty strings,
 *    one of them accepted (auth.wrong_audience); exp > now - leeway (auth.expired); nbf < exp and
 *    iat < exp; lifetime exp - iat (exp - now without iat, plus leeway) at most the issuer's
 *    max_token_lifetime_s; nbf and iat at most now + leeway (not valid yet).
 */

import { AuthError, unb64url } from "./auth.js";
import { ErrorCode } from "./frames.js";
import { parseStrictObject } from "./strictjson.js";

/** Default per-issuer max_token_lifetime_s (24 h). */
export const DEFAULT_MAX_TOKEN_LIFETIME_S = 86_400;
export const MAX_NESTING = 16;
export const MAX_NUMBER_CHARS = 64;
const MAX_NUMERIC_DATE = Number.MAX_SAFE_INTEGER; // 2^53 - 1

const SEGMENT = /^[A-Za-z0-9_-]+$/;
const TYPES = new Set(["jwt", "at+jwt", "application/jwt", "application/at+jwt"]);
const REFUSED_HEADERS = {
  crit: "critical JWS extensions ('crit') are not implemented",
  cty: "nested or typed-content tokens ('cty') are not accepted",
  b64: "unencoded payloads ('b64') are not accepted",
};
const invalid = (message) => new AuthError(ErrorCode.AUTH_INVALID_TOKEN, message);

function segmentJson(segment, what) {
  let bytes;
  try {
    bytes = unb64url(segment);
  } catch {
    throw invalid(`token ${what} is not base64url`);
  }
  try {
    return parseStrictObject(bytes, { maxNesting: MAX_NESTING, maxNumberChars: MAX_NUMBER_CHARS });
  } catch (err) {
    throw invalid(`token ${what} ${err.message}`);
  }
}

/**
 * The strictly parsed (still unverified) header and payload of a compact JWS.
 * @param {string} token @returns {{header: Record<string, any>, payload: Record<string, any>}}
 */
export function parseToken(token) {
  const parts = token.split(".");
  if (parts.length !== 3 || !parts.every((part) => SEGMENT.test(part))) {
    throw invalid("token is not a signed JWT (three base64url segments: header.payload.sig)");
  }
  return { header: segmentJson(parts[0], "header"), payload: segmentJson(parts[1], "payload") };
}

/** Refuse header members this verifier does not implement, and a foreign "typ". */
export function checkHeader(header) {
  for (const [name, why] of Object.entries(REFUSED_HEADERS)) {
    if (Object.hasOwn(header, name)) throw invalid(`token header: ${why}`);
  }
  if (Object.hasOwn(header, "typ") && (typeof header.typ !== "string" || !TYPES.has(header.typ.toLowerCase()))) {
    const shown = typeof header.typ === "string" ? header.typ.slice(0, 40) : typeof header.typ;
    throw invalid(`token type (typ) ${JSON.stringify(shown)} is not an access or ID token (expected JWT or at+jwt)`);
  }
  if (Object.hasOwn(header, "kid") && typeof header.kid !== "string") {
    throw invalid("token header 'kid' is not a string");
  }
}

/** @param {Record<string, any>} claims @param {string} name @returns {number | undefined} */
function numericDate(claims, name) {
  if (!Object.hasOwn(claims, name)) return undefined;
  const value = claims[name];
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > MAX_NUMERIC_DATE) {
    throw invalid(`token claim '${name}' must be a number of seconds since 1970 (a JSON number in [0, 2^53-1], not ${value === null ? "null" : typeof value})`);
  }
  return value;
}

function audiences(claims) {
  if (!Object.hasOwn(claims, "aud")) throw new AuthError(ErrorCode.AUTH_WRONG_AUDIENCE, "token has no 'aud' claim");
  const aud = claims.aud;
  if (typeof aud === "string" && aud) return [aud];
  if (Array.isArray(aud) && aud.length && aud.every((a) => typeof a === "string" && a)) return aud;
  throw invalid("token claim 'aud' must be a non-empty string or list of non-empty strings");
}

/**
 * Check the verified payload of a token (module comment, rule 4).
 * @param {Record<string, any>} claims
 * @param {{issuer: string, audiences: string[], maxLifetimeS: number, leewayS: number, now: number}} options
 * @returns {{sub: string, aud: string[], exp: number}}
 */
export function checkClaims(claims, { issuer, audiences: accepted, maxLifetimeS, leewayS, now }) {
  if (!Object.hasOwn(claims, "exp")) throw invalid("token has no 'exp' claim");
  const exp = /** @type {number} */ (numericDate(claims, "exp")); // present: checked above
  const nbf = numericDate(claims, "nbf");
  const iat = numericDate(claims, "iat");
  const sub = claims.sub;
  if (typeof sub !== "string" || !sub) throw invalid("token has no 'sub' claim (a non-empty string)");
  if (claims.iss !== issuer) throw invalid("token 'iss' claim does not name its issuer");
  if (Object.hasOwn(claims, "jti") && typeof claims.jti !== "string") throw invalid("token claim 'jti' must be a string");
  const aud = audiences(claims);
  if (!aud.some((a) => accepted.includes(a))) {
    throw new AuthError(ErrorCode.AUTH_WRONG_AUDIENCE, `token audience is not one of ${JSON.stringify(accepted)}; request a token for it`);
  }
  if (exp <= now - leewayS) throw new AuthError(ErrorCode.AUTH_EXPIRED, "token has expired; get a fresh one");
  for (const [name, start] of /** @type {Array<[string, number | undefined]>} */ ([["nbf", nbf], ["iat", iat]])) {
    if (start !== undefined && start >= exp) throw invalid(`token '${name}' is not before its 'exp': it is never valid`);
  }
  const lifetime = exp - (iat !== undefined ? iat : now);
  if (lifetime > maxLifetimeS + (iat !== undefined ? 0 : leewayS)) {
    throw invalid(`token lifetime ${Math.trunc(lifetime)} s is over the issuer's max_token_lifetime_s (${Math.trunc(maxLifetimeS)} s); ask the IdP for shorter-lived tokens`);
  }
  if ((nbf !== undefined && nbf > now + leewayS) || (iat !== undefined && iat > now + leewayS)) {
    throw invalid("token is not valid yet (nbf/iat in the future; check the clocks)");
  }
  return { sub, aud, exp };
}
