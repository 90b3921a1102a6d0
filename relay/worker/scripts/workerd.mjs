#!/usr/bin/env node
/**
 * Bundle the relay Worker with esbuild and run it under the workerd binary from npm (no Cloudflare
 * account, no network). Used by the pytest harness (tests/support/worker_relay.py) and by hand.
 *
 *   node relay/worker/scripts/workerd.mjs build --out DIR --env env.json [--app] [--test-hooks]
 *       writes DIR/relay.js, DIR/config.capnp (and DIR/app.js with --app: examples/worker-app);
 *       --cache DIR reuses bundles built from the same sources (tests start many relays);
 *       --test-hooks bundles scripts/test-entry.js (the Worker plus /_test/ routes) instead of
 *       src/index.js: for tests only, never deployed
 *   node relay/worker/scripts/workerd.mjs serve --env env.json [--address 127.0.0.1:8787] [--app]
 *       builds into a temporary directory, then runs `workerd serve` in the foreground
 *
 * env.json holds the Worker bindings, as wrangler would set them:
 *   {"RELAY_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----...", "TUNNELS": {"demo": {"conn-1": "ed25519:..."}},
 *    "ISSUERS": [{"issuer": "http://127.0.0.1:8080", "audience": "edgetds"}], "TUNNEL_SHARDS": 1,
 *    "LIMITS": {...}}
 * The rendered config contains the private key: DIR is created with mode 0700.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const HERE = dirname(fileURLToPath(import.meta.url));
const WORKER_DIR = resolve(HERE, "..");
const ROOT = resolve(WORKER_DIR, "../..");
/** Pinned with the workerd binary in package.json: a newer date is refused by the runtime. */
export const COMPATIBILITY_DATE = "2026-11-17";

const USAGE = `usage: workerd.mjs build --out DIR --env env.json [--app] [--cache DIR] [--test-hooks]
       workerd.mjs serve --env env.json [--address 127.0.0.1:8787] [--app [--app-address 127.0.0.1:8788]]
examples:
  node relay/worker/scripts/workerd.mjs serve --env .demo/worker-env.json
  node relay/worker/scripts/workerd.mjs build --out /tmp/relay --env env.json && \\
    node_modules/.bin/workerd serve /tmp/relay/config.capnp --socket-addr http=127.0.0.1:8787`;

function capnpString(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  // JSON string escapes are valid capnp escapes except \\uXXXX: use \\xNN for control characters.
  return JSON.stringify(text).replace(/\\u00([0-9a-f]{2})/gi, "\\x$1");
}

async function bundle(entry, outfile) {
  const { build } = await import("esbuild"); // loaded only when a bundle is not cached
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: "esm",
    platform: "neutral",
    mainFields: ["module", "main"],
    conditions: ["workerd", "worker", "browser"],
    external: ["cloudflare:*"],
    target: "es2022",
    logLevel: "warning",
  });
}

/** A digest of every input of a bundle (sources, lockfile), naming the cache entry. */
function sourceDigest() {
  const hash = createHash("sha256");
  const dirs = [join(WORKER_DIR, "src"), join(WORKER_DIR, "scripts"), join(ROOT, "examples/worker-app/src")];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir).sort()) hash.update(name).update(readFileSync(join(dir, name)));
  }
  hash.update(readFileSync(join(ROOT, "package-lock.json")));
  return hash.digest("hex").slice(0, 16);
}

/** Bundle `entry` into `outfile`, reusing `cacheDir/<digest>-<entry name>` when given. */
async function cachedBundle(entry, outfile, cacheDir) {
  if (!cacheDir) return bundle(entry, outfile);
  mkdirSync(cacheDir, { recursive: true });
  const cached = join(cacheDir, `${sourceDigest()}-${relative(ROOT, entry).replaceAll("/", "-")}`);
  if (!existsSync(cached)) {
    const partial = `${cached}.${process.pid}.tmp`;
    await bundle(entry, partial);
    renameSync(partial, cached); // atomic: parallel builds never see half a file
  }
  copyFileSync(cached, outfile);
}

/**
 * Bundle and render the config into `out`.
 * @param {{out: string, env: Record<string, any>, address?: string, app?: boolean, appTunnel?: string, testHooks?: boolean}} options
 */
export async function buildRelay({ out, env, address = "127.0.0.1:8787", app = false, appAddress = "127.0.0.1:8788", appTunnel = "demo", cacheDir = null, testHooks = false }) {
  mkdirSync(out, { recursive: true, mode: 0o700 });
  chmodSync(out, 0o700);
  const storage = join(out, "do-storage");
  mkdirSync(storage, { recursive: true });
  const entry = testHooks ? join(WORKER_DIR, "scripts/test-entry.js") : join(WORKER_DIR, "src/index.js");
  await cachedBundle(entry, join(out, "relay.js"), cacheDir);
  if (app) await cachedBundle(join(ROOT, "examples/worker-app/src/index.js"), join(out, "app.js"), cacheDir);
  else writeFileSync(join(out, "app.js"), "export default { fetch() { return new Response(null, { status: 404 }); } };\n");
  const values = {
    STORAGE_DIR: storage,
    ADDRESS: address,
    COMPATIBILITY_DATE,
    RELAY_PRIVATE_KEY: env.RELAY_PRIVATE_KEY ?? "",
    TUNNELS: env.TUNNELS ?? "{}",
    ISSUERS: env.ISSUERS ?? "[]",
    TUNNEL_SHARDS: String(env.TUNNEL_SHARDS ?? "1"),
    LIMITS: env.LIMITS ?? "{}",
    AUDIT_TOKEN_SHA256: env.AUDIT_TOKEN_SHA256 ?? "",
    APP_TUNNEL: appTunnel,
  };
  let config = readFileSync(join(WORKER_DIR, "workerd.capnp.template"), "utf8");
  for (const [name, value] of Object.entries(values)) config = config.replaceAll(`@${name}@`, capnpString(value));
  config = config
    .replace("@APP_SERVICE@", app ? '(name = "app", worker = .appWorker),' : "")
    .replace("@APP_SOCKET@", app ? `(name = "app", address = ${capnpString(appAddress)}, http = (), service = "app"),` : "");
  writeFileSync(join(out, "config.capnp"), config, { mode: 0o600 });
  return join(out, "config.capnp");
}

async function main() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      out: { type: "string" },
      env: { type: "string" },
      address: { type: "string", default: "127.0.0.1:8787" },
      app: { type: "boolean", default: false },
      "app-tunnel": { type: "string", default: "demo" },
      "app-address": { type: "string", default: "127.0.0.1:8788" },
      cache: { type: "string" },
      "test-hooks": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const command = positionals[0];
  if (values.help || !["build", "serve"].includes(command) || !values.env || (command === "build" && !values.out)) {
    console.log(USAGE);
    process.exit(values.help ? 0 : 2);
  }
  const env = JSON.parse(readFileSync(values.env, "utf8"));
  const out = values.out ?? mkdtempSync(join(tmpdir(), "edgetds-workerd-"));
  const config = await buildRelay({ out, env, address: values.address, app: values.app, appAddress: values["app-address"], appTunnel: values["app-tunnel"], cacheDir: values.cache ?? null, testHooks: values["test-hooks"] });
  if (command === "build") {
    console.log(config);
    return;
  }
  const workerd = join(ROOT, "node_modules/.bin/workerd");
  console.error(`edgetds relay Worker on http://${values.address} (workerd, compatibilityDate ${COMPATIBILITY_DATE})`);
  const child = spawn(workerd, ["serve", config], { stdio: "inherit" });
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
  child.on("exit", (code) => process.exit(code ?? 1));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}
