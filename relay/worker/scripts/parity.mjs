#!/usr/bin/env node
/**
 * Cross-language check helper (used by tests/worker/test_js_parity.py): reads a JSON job on stdin,
 * computes the Worker's canonical JSON, HELLO and attestation for it, prints JSON on stdout.
 *
 *   {"values": [...], "pem": "...", "hello": {...}, "attestation": {...}, "origins": [...]}
 *     -> {"canonical": ["<text>", ...], "key_id": "...", "hello": {...}, "attestation": {...},
 *         "origin_problems": [<why a cors_origins entry is refused, or null>, ...]}
 */
import { canonicalJsonText, loadRelayKey, makeAttestation, signHello } from "../src/auth.js";
import { originProblem } from "../src/cors.js";

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
process.stdout.write(JSON.stringify(out));
