// One-token enrolment (SPEC.md 8.7): the shared vectors protocol/vectors/enroll.json (also run by
// tests/protocol/test_vectors.py) through the Worker's enroll.js, with the same outcomes; the
// jti replay check as the Durable Object keeps it (tunnel.js enroll()).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { AuthError, b64url, canonicalJson, keyId, loadRelayKey, parsePublicKey, verifySigned } from "../src/auth.js";
import { checkEnrollRequest, checkEnrollTime, ENROLL_CONTEXT, ENROLLED_CONTEXT, parseEnrollToken, signEnrolled } from "../src/enroll.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../../protocol/vectors/enroll.json", import.meta.url), "utf8"));
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const unhex = (text) => new Uint8Array(Buffer.from(text, "hex"));
const utf8 = (text) => new TextEncoder().encode(text);

/** The vector's verdict of `check`: {valid: true} or {valid: false, error}. */
async function outcome(check) {
  try {
    await check();
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    return { valid: false, error: err.code };
  }
  return { valid: true };
}

const expected = (v) => (v.valid ? { valid: true } : { valid: false, error: v.error });

async function relayKeyFromSeed(entry) {
  const raw = parsePublicKey(entry.public_key);
  const jwk = { kty: "OKP", crv: "Ed25519", d: b64url(unhex(entry.seed_hex)), x: b64url(raw) };
  return loadRelayKey(JSON.stringify(jwk));
}

test("enroll.json: the keys are their seeds' and their key ids", async () => {
  for (const [name, entry] of Object.entries(VECTORS.keys)) {
    const key = await relayKeyFromSeed(entry);
    assert.equal(key.publicKey, entry.public_key, name);
    assert.equal(key.keyId, entry.key_id, name);
    assert.equal(await keyId(parsePublicKey(entry.public_key)), entry.key_id, name);
  }
});

test(`enroll.json: ${VECTORS.tokens.length} tokens, parsed and timed as the connector does`, async () => {
  for (const v of VECTORS.tokens) {
    assert.deepEqual(await outcome(async () => checkEnrollTime(await parseEnrollToken(v.token), v.now)), expected(v), v.name);
    if (!v.valid) continue;
    assert.deepEqual({ v: 1, ...(await parseEnrollToken(v.token)) }, v.claims, v.name);
    assert.equal(hex(utf8(ENROLL_CONTEXT)) + hex(canonicalJson(v.claims)), v.signing_input_hex, v.name);
  }
});

test(`enroll.json: ${VECTORS.requests.length} requests, checked in SPEC order (jti as the Durable Object keeps it), answers byte for byte`, async () => {
  const relayKey = await relayKeyFromSeed(VECTORS.keys.relay);
  for (const v of VECTORS.requests) {
    const { tunnel, tunnels, relay_keys: relayKeys, now, consumed } = v.verify;
    const options = { tunnel, tunnels, relayKeys: relayKeys.map((name) => VECTORS.keys[name].public_key), now };
    let checked;
    const verdict = await outcome(async () => {
      checked = await checkEnrollRequest(utf8(v.body_text), options);
      // tunnel.js enroll(): a jti already in the tunnel's storage is a replay
      if (consumed.includes(checked.claims.jti)) throw new AuthError("enroll.used", "replay");
    });
    assert.deepEqual(verdict, expected(v), v.name);
    if (v.valid) assert.deepEqual(await signEnrolled(relayKey, checked), v.answer, v.name);
  }
});

/** The connector's check of the relay's answer (protocol verify_enrolled), for the answer vectors. */
async function answerOk(answer, { token, public_key: publicKey }) {
  const claims = await parseEnrollToken(token);
  if (answer === null || typeof answer !== "object" || Array.isArray(answer)) return false;
  const { enrolled } = answer;
  if (enrolled === null || typeof enrolled !== "object" || Array.isArray(enrolled)) return false;
  if (answer.relay_key_id !== claims.relay_key_id) return false;
  if (typeof answer.sig !== "string" || !(await verifySigned(parsePublicKey(claims.relay_key), ENROLLED_CONTEXT, { ...enrolled, sig: answer.sig }))) return false;
  const want = { tunnel: claims.tunnel, connector_id: claims.connector_id, public_key: publicKey, key_id: await keyId(parsePublicKey(publicKey)), jti: claims.jti };
  try {
    assert.deepEqual(enrolled, want);
    return true;
  } catch {
    return false;
  }
}

test(`enroll.json: ${VECTORS.answers.length} answers, as the connector checks them, and what the Worker signs`, async () => {
  for (const v of VECTORS.answers) {
    const ok = await answerOk(v.answer, v.verify);
    assert.deepEqual(ok ? { valid: true } : { valid: false, error: "auth.relay_rejected" }, expected(v), v.name);
    if (v.valid) assert.equal(hex(utf8(ENROLLED_CONTEXT)) + hex(canonicalJson(v.answer.enrolled)), v.signing_input_hex, v.name);
  }
});

test("a token whose base64url has other trailing bits decodes to the same claims and still verifies (as in Python)", async () => {
  const good = VECTORS.tokens.find((v) => v.name === "enroll-token-good");
  const [prefix, body, sig] = good.token.split(".");
  // the last character of an unpadded part carries 2 or 4 unused bits: flip one of them
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const last = alphabet.indexOf(sig.at(-1));
  const other = `${prefix}.${body}.${sig.slice(0, -1)}${alphabet[last ^ 1]}`;
  assert.notEqual(other, good.token);
  assert.deepEqual({ v: 1, ...(await parseEnrollToken(other)) }, good.claims);
});
