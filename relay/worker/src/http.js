// @ts-check
/**
 * HTTP helpers shared by the Worker and the Durable Object (mirrors relay/http.py): the
 * `{"error": {...}}` record, JSON responses and the HttpError thrown by request handlers.
 */

import { httpStatus } from "./frames.js";

const encoder = new TextEncoder();

/** A refusal answered with `{"error": {...}}` and the status of its code. */
export class HttpError extends Error {
  /**
   * @param {string} code a registry error code
   * @param {string} message what failed and how to fix it (never tokens, SQL or values)
   * @param {{status?: number, hint?: string, retryAfter?: string, queryId?: string, limit?: string,
   *   session?: Record<string, string>, statement?: number | null}} [options]
   *   `limit`: which limit a limits.too_many_* refusal hit ("identity", "tunnel", "connector");
   *   `session`: the session the refusal is about (`{"id", "state"?, "reason"?}`, SPEC 11.5);
   *   `statement`: the failing statement of a transaction (SPEC 11.6)
   */
  constructor(code, message, { status, hint, retryAfter, queryId, limit, session, statement } = {}) {
    super(`${code}: ${message}`);
    this.name = "HttpError";
    this.code = code;
    this.detail = message;
    this.status = status ?? httpStatus(code);
    this.hint = hint;
    this.retryAfter = retryAfter;
    this.queryId = queryId;
    this.limit = limit;
    this.session = session;
    this.statement = statement;
  }
}

/**
 * One NDJSON `{"error": {...}}` line with its newline (the HTTP API's terminal record shape).
 * @param {string} code @param {string} message
 * @param {{queryId?: string, hint?: string, limit?: string, session?: Record<string, string>, statement?: number | null}} [options]
 * @returns {Uint8Array}
 */
export function errorRecord(code, message, { queryId, hint, limit, session, statement } = {}) {
  /** @type {Record<string, any>} */
  const record = { code, message };
  if (queryId !== undefined && queryId !== null) record.query_id = queryId;
  if (hint) record.hint = hint;
  if (limit) record.limit = limit;
  if (session) record.session = session;
  if (statement !== undefined) record.statement = statement;
  return encoder.encode(`${JSON.stringify({ error: record })}\n`);
}

/** A complete JSON response (one body write). */
export function jsonResponse(status, body, headers = {}) {
  const data = typeof body === "string" || body instanceof Uint8Array ? body : `${JSON.stringify(body)}\n`;
  return new Response(data, {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store", ...headers },
  });
}

/** The response for an HttpError. @param {HttpError} error */
export function errorResponse(error) {
  const headers = {};
  if (error.retryAfter !== undefined) headers["retry-after"] = error.retryAfter;
  if (error.status === 401) headers["www-authenticate"] = 'Bearer realm="edgetds"';
  return jsonResponse(error.status, errorRecord(error.code, error.detail, { queryId: error.queryId, hint: error.hint, limit: error.limit, session: error.session, statement: error.statement }), headers);
}

/**
 * A plain request URL: "http(s)://", an authority without / ? # \ or whitespace, a path of
 * letters, digits and / _ . ~ - (nothing a URL parser rewrites: no escapes, backslashes, tabs or
 * non-ASCII), then the end, "?" or "#".
 */
const PLAIN_URL = /^https?:\/\/[^/?#\\\s]+(\/[A-Za-z0-9_.~/-]*)(?:[?#]|$)/;
/** A "." or ".." path segment (a URL parser removes them). */
const DOT_SEGMENT = /\/\.\.?(?:\/|$)/;

/**
 * `new URL(url).pathname` without building a URL object when the URL is plain (every route of
 * the Worker is): its path is the text after the authority up to "?" or "#". Any other URL
 * (dot segments, escapes, backslashes...) is parsed.
 * @param {string} url an absolute URL (a request's)
 * @returns {string}
 */
export function urlPath(url) {
  const plain = PLAIN_URL.exec(url);
  if (plain !== null && !DOT_SEGMENT.test(plain[1])) return plain[1];
  return new URL(url).pathname;
}
