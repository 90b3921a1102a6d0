// protocol/vectors/id_tokens.json (also run by tests/identity/test_id_token_vectors.py): end users'
// IdP tokens through the Worker's real config parser and verifyClientToken, with static JWKS.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { AuthError } from "../src/auth.js";
import { ConfigError, loadConfig } from "../src/config.js";
import { bearerToken, verifyClientToken } from "../src/oidc.js";

const DOC = JSON.parse(readFileSync(new URL("../../../protocol/vectors/id_tokens.json", import.meta.url), "utf8"));

const relay = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
const env = {
  RELAY_PRIVATE_KEY: JSON.stringify(await crypto.subtle.exportKey("jwk", relay.privateKey)),
  TUNNELS: JSON.stringify({ demo: { "conn-1": `ed25519:${Buffer.from(await crypto.subtle.exportKey("raw", relay.publicKey)).toString("base64url")}` } }),
  ISSUERS: JSON.stringify(DOC.issuers),
  LIMITS: JSON.stringify({ leeway_s: DOC.leeway_s }),
};

test(`id_tokens.json: ${DOC.vectors.length} tokens get the expected verdict`, async () => {
  const config = await loadConfig(env);
  let refusals = 0;
  for (const v of DOC.vectors) {
    if (v.valid) {
      const identity = await verifyClientToken(v.token, config, DOC.now);
      assert.equal(identity.subject, v.subject, v.name);
      assert.deepEqual(identity.claims, v.claims, v.name);
      continue;
    }
    await assert.rejects(
      verifyClientToken(v.token, config, DOC.now),
      (err) => {
        assert.ok(err instanceof AuthError, `${v.name}: ${err}`);
        assert.equal(err.code, v.error, `${v.name}: ${err.message}`);
        return true;
      },
      v.name,
    );
    refusals += 1;
  }
  assert.ok(refusals >= 40, `${refusals} refusals`);
});

test("ISSUERS: max_token_lifetime_s and a static jwks are checked", async () => {
  const load = (issuers) => loadConfig({ ...env, ISSUERS: JSON.stringify(issuers) });
  const base = { issuer: "https://idp.example.com", audience: "edgetds" };
  assert.equal((await load([base])).issuers.get(base.issuer).maxTokenLifetimeS, 86_400);
  assert.equal((await load([{ ...base, max_token_lifetime_s: 600 }])).issuers.get(base.issuer).maxTokenLifetimeS, 600);
  for (const bad of [0, -1, "600", true, null]) {
    await assert.rejects(load([{ ...base, max_token_lifetime_s: bad }]), (err) => err instanceof ConfigError && /max_token_lifetime_s must be a positive number/.test(err.message));
  }
  await assert.rejects(load([{ ...base, jwks: [] }]), (err) => err instanceof ConfigError && /jwks must be a JWKS object/.test(err.message));
  await assert.rejects(load([{ ...base, jwks: { keys: [] }, jwks_uri: "https://idp.example.com/k" }]), /set jwks_uri or jwks, not both/);
});

test("Authorization header: the same token text as identity.oidc.bearer_token", async () => {
  assert.equal(bearerToken("Bearer abc.def.ghi"), "abc.def.ghi");
  assert.equal(bearerToken("bearer  abc "), "abc");
  for (const bad of [null, "", "Basic dXNlcg==", "Bearer ", "Bearer", "Bearer\tabc"]) assert.equal(bearerToken(bad), null, bad);
  // Two words after "Bearer": passed on, then refused as malformed (not as missing).
  const good = DOC.vectors.find((v) => v.name === "good").token;
  const twoWords = bearerToken(`Bearer ${good} ${good}`);
  assert.equal(twoWords, `${good} ${good}`);
  await assert.rejects(verifyClientToken(twoWords, await loadConfig(env), DOC.now), (err) => err.code === "auth.invalid_token");
});

// The verified-token cache (oidc.js step 6, as tests/identity/test_verified_cache.py).
const GOOD = DOC.vectors.find((v) => v.name === "good");

test("verified tokens: the same token is remembered, a new one is verified", async () => {
  const config = await loadConfig(env);
  const first = await verifyClientToken(GOOD.token, config, DOC.now);
  assert.equal(await verifyClientToken(GOOD.token, config, DOC.now), first);
  const other = DOC.vectors.find((v) => v.name === "good-aud-list");
  const second = await verifyClientToken(other.token, config, DOC.now);
  assert.notEqual(second, first);
  assert.equal(second.subject, other.subject);
});

test("verified tokens: exp is checked at every use, with the leeway", async () => {
  const config = await loadConfig(env);
  const token = DOC.vectors.find((v) => v.name === "good-no-typ");
  const first = await verifyClientToken(token.token, config, DOC.now);
  const exp = token.claims.exp;
  assert.equal(await verifyClientToken(token.token, config, exp + DOC.leeway_s - 1), first);
  await assert.rejects(verifyClientToken(token.token, config, exp + DOC.leeway_s), (err) => err.code === "auth.expired");
  // forgotten: at a time it is valid again it is verified from scratch (a new identity)
  const again = await verifyClientToken(token.token, config, DOC.now);
  assert.notEqual(again, first);
  assert.equal(again.subject, first.subject);
});

test("verified tokens: a key no longer configured is not trusted through the cache", async () => {
  const config = await loadConfig(env);
  const token = DOC.vectors.find((v) => v.name === "good-leeway");
  await verifyClientToken(token.token, config, DOC.now);
  const kid = JSON.parse(Buffer.from(token.token.split(".")[0], "base64url").toString()).kid;
  const issuers = DOC.issuers.map((i) => ({ ...i, jwks: { keys: i.jwks.keys.filter((k) => k.kid !== kid) } }));
  const rotated = await loadConfig({ ...env, ISSUERS: JSON.stringify(issuers) });
  await assert.rejects(verifyClientToken(token.token, rotated, DOC.now), (err) => err.code === "auth.invalid_token");
});

test("verified tokens: refusals are not remembered", async () => {
  const config = await loadConfig(env);
  // a bad signature, and good signatures whose claims are refused
  for (const name of ["tampered", "aud-other", "expired", "nbf-future"]) {
    const bad = DOC.vectors.find((v) => v.name === name);
    for (let i = 0; i < 2; i++) {
      await assert.rejects(verifyClientToken(bad.token, config, DOC.now), (err) => err.code === bad.error, name);
    }
  }
});
