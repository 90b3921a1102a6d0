// @ts-check
/**
 * Browsers: CORS on a tunnel's client endpoints (SPEC.md 11.7); the twin of relay/cors.py.
 *
 * A tunnel lists the web origins that may call it from a browser (TUNNELS `cors_origins`). Every
 * path under /v1/tunnels/{tunnel}/ except `connect`, `enroll` and `audit/checkpoint` is a client endpoint
 * (query, status, sessions..., transaction and whatever comes next), so a new endpoint gets CORS
 * without more work. For a listed Origin every answer carries Access-Control-Allow-Origin: <origin>,
 * Vary: Origin and the exposed headers; a preflight (OPTIONS with Access-Control-Request-Method) is
 * answered 204 at the edge (index.js), before any Durable Object, with no token. An origin that is
 * not listed gets no Access-Control-* header and its preflight is refused 403. Never `*`, never an
 * unlisted origin echoed, never Allow-Credentials (the token travels in Authorization, not cookies).
 */

import { ErrorCode } from "./frames.js";
import { errorResponse, HttpError } from "./http.js";

/** Paths under /v1/tunnels/{tunnel}/ that are not a browser's business. */
const NOT_CLIENT_ENDPOINTS = new Set(["connect", "enroll", "audit/checkpoint"]);
const CLIENT_PATH = /^\/v1\/tunnels\/([^/]+)\/(.+)$/;
const EXPOSE_HEADERS = "x-edgetds-query-id, retry-after";
const ALLOW_METHODS = "GET, POST, DELETE";
const ALLOW_HEADERS = "authorization, content-type, x-edgetds-query-id";
const MAX_AGE = "600";
const EXAMPLE = '(e.g. "https://app.example.com" or "http://localhost:3000")';

/** host[:port]: a DNS name (letters, digits, "_", "-", dot-separated labels) or a bracketed IPv6 address, then an optional port. */
const HOST_PORT = /^(?<host>[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(?::(?<port>[0-9]*))?$/;
/** A last label that makes the browser read the host as an IPv4 address. */
const NUMERIC_LABEL = /^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$/;
const IPV4 = /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$/;
const DEFAULT_PORTS = { http: 80, https: 443 };

/**
 * Why `entry` is not an origin as browsers send it (scheme://host[:port]), or null. Browsers
 * compare origins as exact strings, so only the form a browser sends is accepted: http or https,
 * lower-case host, no default port, no path (not even "/"), no wildcard. The host is a DNS name, a
 * dotted-decimal IPv4 address or a bracketed IPv6 address (compressed), the hosts whose
 * serialization the browser leaves as written; relay/cors.py makes the same checks in the same
 * order, with the same messages.
 * @param {unknown} entry @returns {string | null}
 */
export function originProblem(entry) {
  if (typeof entry !== "string") return `must be a string: an origin ${EXAMPLE}`;
  if (entry.includes("*")) return `is a wildcard; list every origin exactly as scheme://host[:port] ${EXAMPLE}`;
  const at = entry.indexOf("://");
  const scheme = at < 0 ? "" : entry.slice(0, at).toLowerCase();
  const rest = at < 0 ? "" : entry.slice(at + 3);
  if ((scheme !== "http" && scheme !== "https") || !rest) return `is not an origin: write scheme://host[:port] with scheme http or https ${EXAMPLE}`;
  if (/[/?#@]/.test(rest)) return `has a path (a trailing / too), query or user part; an origin is only scheme://host[:port] ${EXAMPLE}`;
  // eslint-disable-next-line no-control-regex
  if (!/^[\x00-\x7f]*$/.test(rest)) return "has a host that is not ASCII; write the host in its ASCII (punycode) form";
  const match = HOST_PORT.exec(rest);
  if (match === null) return `is not an origin: write scheme://host[:port] ${EXAMPLE}`;
  let host = /** @type {string} */ (match.groups?.host);
  const port = match.groups?.port ?? "";
  if (host.startsWith("[")) {
    try {
      host = new URL(`http://${host}`).hostname; // the WHATWG (RFC 5952) compressed form
    } catch {
      return `is not an origin: ${host} is not an IPv6 address`;
    }
  } else if (NUMERIC_LABEL.test(host.split(".").at(-1) ?? "") && !IPV4.test(host)) {
    return "is not an origin: write an IPv4 address as four decimal numbers (a.b.c.d)";
  }
  if (port && Number(port) > 65535) return `is not an origin: port ${port} is above 65535`;
  let canonical = `${scheme}://${host.toLowerCase()}`;
  if (port && Number(port) !== DEFAULT_PORTS[scheme]) canonical += `:${Number(port)}`;
  if (canonical !== entry) return `is not written as browsers send it; write "${canonical}"`;
  return null;
}

/** The tunnel name if `pathname` is one of its client endpoints (CORS applies), else null. @param {string} pathname */
export function clientEndpoint(pathname) {
  const match = CLIENT_PATH.exec(pathname);
  return match === null || NOT_CLIENT_ENDPOINTS.has(match[2]) ? null : match[1];
}

/** An OPTIONS request with Origin and Access-Control-Request-Method: a browser asking first. @param {Request} request */
export function isPreflight(request) {
  return request.method === "OPTIONS" && request.headers.has("origin") && request.headers.has("access-control-request-method");
}

/** The 204 answer to a preflight from a listed `origin`. @param {string} origin */
export function preflightResponse(origin) {
  return new Response(null, {
    status: 204,
    headers: {
      "access-control-allow-origin": origin,
      vary: "Origin",
      "access-control-allow-methods": ALLOW_METHODS,
      "access-control-allow-headers": ALLOW_HEADERS,
      "access-control-max-age": MAX_AGE,
      "cache-control": "no-store",
    },
  });
}

/** The 403 answer to a preflight from an origin the tunnel does not list (no Access-Control-*). */
export function refusedPreflight() {
  const message = "this origin may not call the tunnel from a browser: it is not in the tunnel's cors_origins (add it there, exactly as scheme://host[:port], to allow it)";
  return errorResponse(new HttpError(ErrorCode.REQUEST_INVALID, message, { status: 403 }));
}

/**
 * `response` with the CORS headers of a listed `origin` (a copy: the original's headers may be
 * immutable; the body, streamed or not, is passed through).
 * @param {Response} response @param {string} origin
 */
export function withCors(response, origin) {
  const copy = new Response(response.body, response);
  copy.headers.set("access-control-allow-origin", origin);
  copy.headers.append("vary", "Origin");
  copy.headers.set("access-control-expose-headers", EXPOSE_HEADERS);
  return copy;
}
