#!/usr/bin/env node
/**
 * Cross-language check helper (used by tests/worker/test_js_parity.py): reads a JSON job on stdin,
 * computes the Worker's canonical JSON, HELLO and attestation for it, prints JSON on stdout.
 *
 *   {"values": [...], "pem": "...", "hello": {...}, "attestation": {...}, "origins": [...]}
 *     -> {"canonical": ["<text>", ...], "key_id": "...", "hello": {...}, "attestation": {...},
 *         "origin_problems": [<why a cors_origins entry is refused, or null>, ...]}
 *
 *   {"values": [], "requests": ["<base64 /query body>", ...], "max_timeout_ms": N}
 *     -> {"requests": [{"ok": true, "sql", "query", "params", "max_rows", "timeout_ms",
 *         "query_id" (the client's, or null)} | {"ok": false, "code": "..."}, ...]}
 *
 *   {"values": [], "begins": ["<base64 POST .../sessions body>", ...]}
 *     -> {"begins": [{"ok": true, "session": {isolation?, idle_timeout_ms?, role?}} | {"ok": false, "code": "..."}, ...]}
 */
import { canonicalJsonText, loadRelayKey, makeAttestation, signHello } from "../src/auth.js";
import { originProblem } from "../src/cors.js";
import { parseBeginRequest, parseQueryRequest } from "../src/request.js";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const job = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const out = { canonical: job.values.map((v) => canonicalJsonText(v)) };
if (job.pem) {
  const key = await loadRelayKey(job.pem);
  out.key_id = key.keyId;
  out.public_key = key.publicKey;
  if (job.hello) out.hello = await signHello(key, job.hello);
  if (job.attestation) out.attestation = await makeAttestation(key, job.attestation);
}
if (job.origins) out.origin_problems = job.origins.map((o) => originProblem(o));
if (job.begins) {
  out.begins = job.begins.map((b64) => {
    try {
      return { ok: true, session: parseBeginRequest(new Uint8Array(Buffer.from(b64, "base64"))) };
    } catch (err) {
      return { ok: false, code: err.code ?? String(err) };
    }
  });
}
if (job.requests) {
  out.requests = job.requests.map((b64) => {
    try {
      const r = parseQueryRequest(new Uint8Array(Buffer.from(b64, "base64")), { maxTimeoutMs: job.max_timeout_ms });
      const queryId = r.client_query_id ? r.query_id : null;
      return { ok: true, sql: r.sql, query: r.query, params: r.params_json, max_rows: r.max_rows, timeout_ms: r.timeout_ms, query_id: queryId };
    } catch (err) {
      return { ok: false, code: err.code ?? String(err) };
    }
  });
}
process.stdout.write(JSON.stringify(out));
