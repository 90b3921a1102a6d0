// TUNNELS shapes (one key per connector id, or a list of keys while that key rotates) and LIMITS.
import assert from "node:assert/strict";
import { test } from "node:test";

import { b64url } from "../src/auth.js";
import { ConfigError, loadConfig } from "../src/config.js";

const relay = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
const RELAY_PRIVATE_KEY = JSON.stringify(await crypto.subtle.exportKey("jwk", relay.privateKey));
const ISSUERS = JSON.stringify([{ issuer: "https://idp.example.com", audience: "edgetds" }]);

async function publicKeyText() {
  const { publicKey } = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  return `ed25519:${b64url(new Uint8Array(await crypto.subtle.exportKey("raw", publicKey)))}`;
}

const NEW = await publicKeyText();
const OLD = await publicKeyText();
const load = (tunnels) => loadConfig({ RELAY_PRIVATE_KEY, ISSUERS, TUNNELS: JSON.stringify(tunnels) });

async function refused(tunnels, pattern) {
  await assert.rejects(load(tunnels), (err) => err instanceof ConfigError && pattern.test(err.message), JSON.stringify(tunnels));
}

test("TUNNELS: one key or a rotation's list of keys per connector id", async () => {
  const config = await load({ demo: { "conn-1": [NEW, OLD], "conn-2": OLD } });
  assert.deepEqual(config.tunnels.demo["conn-1"], [NEW, OLD]);
  assert.equal(config.tunnels.demo["conn-2"], OLD);
  assert.ok(Object.isFrozen(config.tunnels.demo["conn-1"]));
});

test("TUNNELS: a tunnel may register no static connector (its connectors are enrolled, SPEC 8.7)", async () => {
  assert.deepEqual((await load({ demo: {} })).tunnels.demo, {});
  assert.deepEqual((await load({ demo: { connectors: {}, max_queries_per_identity: 4 } })).tunnels.demo, {});
});

test("TUNNELS: an empty list, a bad entry or a duplicate names where it is", async () => {
  await refused({ demo: { "conn-1": [] } }, /^TUNNELS\.demo\.conn-1: the list of keys is empty/);
  await refused({ demo: { "conn-1": [NEW, "ed25519:AAAA"] } }, /^TUNNELS\.demo\.conn-1\[1\]: an Ed25519 public key is 32 bytes/);
  await refused({ demo: { "conn-1": [NEW, 7] } }, /^TUNNELS\.demo\.conn-1\[1\]: a public key must look like "ed25519:/);
  await refused({ demo: { "conn-1": [NEW, OLD, NEW] } }, /^TUNNELS\.demo\.conn-1\[2\]: this key is listed twice/);
  await refused({ demo: { "conn-1": "rsa:abc" } }, /^TUNNELS\.demo\.conn-1: a public key must look like/);
  await refused({ demo: ["conn-1", NEW] }, /^TUNNELS\.demo must map connector ids .*\["ed25519:NEW", "ed25519:OLD"\]/);
  await refused([], /^TUNNELS must be a JSON object like .*\["ed25519:NEW", "ed25519:OLD"\]/);
});

test("LIMITS: max_param_bytes defaults to 262144, may be set, and is at least 1024", async () => {
  const tunnels = JSON.stringify({ demo: { "conn-1": NEW } });
  const withLimits = (limits) => loadConfig({ RELAY_PRIVATE_KEY, ISSUERS, TUNNELS: tunnels, LIMITS: JSON.stringify(limits) });
  assert.equal((await withLimits({})).limits.max_param_bytes, 262144);
  assert.equal((await withLimits({ max_param_bytes: 4096 })).limits.max_param_bytes, 4096);
  await assert.rejects(withLimits({ max_param_bytes: 10 }), (err) => err instanceof ConfigError && /max_param_bytes must be at least 1024/.test(err.message));
});

test("TUNNELS: per-tunnel settings beside the connectors (the Python relay's [tunnels.NAME])", async () => {
  const config = await load({ demo: { connectors: { "conn-1": NEW }, max_queries_per_identity: 4 }, other: { "conn-2": OLD } });
  assert.equal(config.tunnels.demo["conn-1"], NEW);
  assert.equal(config.tunnelSettings.demo.max_queries_per_identity, 4);
  assert.equal(config.tunnelSettings.other.max_queries_per_identity, 32);
  assert.equal(config.limits.admission_wait_ms, 5000);
  await refused({ demo: { connectors: { "conn-1": NEW }, max_queries_per_identity: 0 } }, /^TUNNELS\.demo\.max_queries_per_identity must be a whole number >= 1/);
  await refused({ demo: { connectors: { "conn-1": NEW }, max_queries: 3 } }, /^TUNNELS\.demo: unknown key "max_queries"/);
});

test("TUNNELS: cors_origins lists exact origins; every bad entry is named with its tunnel", async () => {
  const origins = ["https://app.example.com", "http://localhost:5173"];
  const config = await load({ demo: { connectors: { "conn-1": NEW }, cors_origins: origins }, other: { "conn-2": OLD } });
  assert.deepEqual(config.tunnelSettings.demo.cors_origins, origins);
  assert.deepEqual(config.tunnelSettings.other.cors_origins, []);
  const bad = { demo: { connectors: { "conn-1": NEW }, cors_origins: ["https://ok.example", "*", "https://a.example/"] } };
  await refused(bad, /^TUNNELS\.demo: cors_origins\[1\] = "\*" is a wildcard.*\nTUNNELS\.demo: cors_origins\[2\] = "https:\/\/a\.example\/" has a path/s);
  await refused({ demo: { connectors: { "conn-1": NEW }, cors_origins: "https://app.example.com" } }, /^TUNNELS\.demo: cors_origins must be a list/);
});

test("the configuration is parsed once per set of bindings, again when one of them changes", async () => {
  const tunnels = JSON.stringify({ demo: {} });
  const env = { RELAY_PRIVATE_KEY, ISSUERS, TUNNELS: tunnels, LIMITS: JSON.stringify({ query_burst: 7 }) };
  const first = await loadConfig(env);
  assert.equal(await loadConfig({ ...env }), first, "the same bindings: the same parsed configuration");
  for (const [name, value] of Object.entries({ LIMITS: JSON.stringify({ query_burst: 8 }), TUNNELS: JSON.stringify({ other: {} }), TUNNEL_SHARDS: "2", AUDIT_TOKEN_SHA256: "a".repeat(64) })) {
    const changed = await loadConfig({ ...env, [name]: value });
    assert.notEqual(changed, first, `${name} changed: parsed again`);
  }
  assert.equal((await loadConfig({ ...env, LIMITS: JSON.stringify({ query_burst: 8 }) })).limits.query_burst, 8);
});
