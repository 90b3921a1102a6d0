// Connector-token checks (protocol/_auth.py's rules) and Ed25519 signing with the relay key.
import assert from "node:assert/strict";
import { test } from "node:test";

import { exportJWK, generateKeyPair, SignJWT } from "jose";

import { AuthError, b64url, HELLO_CONTEXT, loadRelayKey, signHello, unb64url, verifyConnectorToken, verifySigned } from "../src/auth.js";

const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
const registered = { "conn-1": `ed25519:${(await exportJWK(publicKey)).x}` };
const NOW = 1_800_000_000;
const random = () => b64url(crypto.getRandomValues(new Uint8Array(16)));

function token(claims = {}, { key = privateKey, header = {} } = {}) {
  const base = { iss: "conn-1", sub: "conn-1", aud: "edgetds:relay:demo", iat: NOW, exp: NOW + 60, jti: random(), nonce: random() };
  return new SignJWT({ ...base, ...claims }).setProtectedHeader({ alg: "EdDSA", typ: "JWT", kid: "conn-1", ...header }).sign(key);
}

async function refusedWith(promise, code) {
  await assert.rejects(promise, (err) => err instanceof AuthError && err.code === code);
}

test("a good token yields its claims", async () => {
  const claims = await verifyConnectorToken(await token(), registered, { tunnel: "demo", now: NOW + 1 });
  assert.equal(claims.connectorId, "conn-1");
  assert.equal(unb64url(claims.nonce).length, 16);
});

test("each broken rule has its code", async () => {
  const other = (await generateKeyPair("EdDSA", { crv: "Ed25519" })).privateKey;
  const verify = (t, now = NOW) => verifyConnectorToken(t, registered, { tunnel: "demo", now });
  await refusedWith(verify(await token({}, { key: other })), "auth.invalid_token");
  await refusedWith(verify(await token({}, { header: { kid: "conn-9" } })), "auth.unknown_issuer");
  await refusedWith(verify(await token({ aud: "edgetds:relay:other" })), "auth.wrong_audience");
  await refusedWith(verify(await token({ iss: "conn-2" })), "auth.invalid_token");
  await refusedWith(verify(await token({ exp: NOW + 61 })), "auth.invalid_token");
  await refusedWith(verify(await token(), NOW + 66), "auth.expired");
  await refusedWith(verify(await token(), NOW - 6), "auth.expired");
  await refusedWith(verify(await token({ jti: "short" })), "auth.invalid_token");
  await refusedWith(verify(await token({ nonce: 5 })), "auth.invalid_token");
  await refusedWith(verify("a.b"), "auth.invalid_token");
  const none = `${b64url(new TextEncoder().encode('{"alg":"none","kid":"conn-1"}'))}.${(await token()).split(".")[1]}.`;
  await refusedWith(verify(none), "auth.invalid_token");
});

test("HELLO is signed over the context and canonical JSON", async () => {
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", privateKey);
  const pem = `-----BEGIN PRIVATE KEY-----\n${btoa(String.fromCharCode(...new Uint8Array(pkcs8)))}\n-----END PRIVATE KEY-----\n`;
  const relayKey = await loadRelayKey(pem);
  assert.equal(relayKey.publicKey, registered["conn-1"]);
  assert.equal(relayKey.keyId.length, 16);
  const hello = await signHello(relayKey, {
    sessionId: "s", tunnel: "demo", connectorId: "conn-1", nonce: "n",
    limits: { max_frame: 1048576, stream_window: 1048576, connection_window: 8388608, max_streams: 128 },
  });
  assert.ok(await verifySigned(relayKey.publicRaw, HELLO_CONTEXT, hello));
  assert.ok(!(await verifySigned(relayKey.publicRaw, HELLO_CONTEXT, { ...hello, nonce: "m" })));
});

test("during a key rotation a token signed by any registered key verifies, and says which", async () => {
  const next = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const nextText = `ed25519:${(await exportJWK(next.publicKey)).x}`;
  const rotating = { "conn-1": [nextText, registered["conn-1"]] };
  const rawHex = (text) => Buffer.from(unb64url(text.slice("ed25519:".length))).toString("hex");
  const verify = async (key, keys = rotating) => verifyConnectorToken(await token({}, { key }), keys, { tunnel: "demo", now: NOW + 1 });
  assert.equal((await verify(privateKey)).publicKeyHex, rawHex(registered["conn-1"]));
  assert.equal((await verify(next.privateKey)).publicKeyHex, rawHex(nextText));
  assert.equal((await verify(privateKey, registered)).publicKeyHex, rawHex(registered["conn-1"]));
  const third = (await generateKeyPair("EdDSA", { crv: "Ed25519" })).privateKey;
  await assert.rejects(verify(third), (err) => err.code === "auth.invalid_token" && /any of its 2 registered keys/.test(err.message));
  await refusedWith(verify(next.privateKey, { "conn-1": [registered["conn-1"]] }), "auth.invalid_token");
});
