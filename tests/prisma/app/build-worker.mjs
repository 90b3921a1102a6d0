#!/usr/bin/env node
// Bundle worker.mjs (Prisma Client generated with runtime = "workerd" + PrismaEdgeTds) for the
// workerd binary from npm, as wrangler would for a deploy, and write its workerd config:
//   node build-worker.mjs --client GENERATED/client.ts --out DIR --relay-url URL --tunnel NAME [--sessions]
// The Worker reaches the relay through a service binding (RELAY), here to the relay at URL.
// The generated client imports its query compiler as `./query_compiler_fast_bg.wasm?module`
// (Cloudflare's WebAssembly module import): it becomes the config's wasm module "query_compiler.wasm".
import { copyFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { build } from "esbuild";

import { COMPATIBILITY_DATE } from "../../../relay/worker/scripts/workerd.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    client: { type: "string" },
    out: { type: "string" },
    "relay-url": { type: "string" },
    tunnel: { type: "string", default: "demo" },
    sessions: { type: "boolean", default: false },
  },
});

const wasmModule = {
  name: "wasm-module",
  setup(b) {
    b.onResolve({ filter: /\.wasm\?module$/ }, () => ({ path: "query_compiler.wasm", external: true }));
  },
};

await build({
  entryPoints: [join(HERE, "worker.mjs")],
  outfile: join(values.out, "worker.js"),
  bundle: true,
  format: "esm",
  platform: "neutral",
  mainFields: ["module", "main"],
  conditions: ["workerd", "worker", "browser"],
  external: ["cloudflare:*", "node:*"],
  alias: { "prisma-generated-client": values.client },
  plugins: [wasmModule],
  target: "es2022",
  logLevel: "warning",
});
copyFileSync(join(dirname(values.client), "internal", "query_compiler_fast_bg.wasm"), join(values.out, "query_compiler.wasm"));

const text = (value) => JSON.stringify(value);
writeFileSync(
  join(values.out, "config.capnp"),
  `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "app", worker = .app),
    (name = "relay", external = (address = ${text(new URL(values["relay-url"]).host)}, http = ())),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:0", http = (), service = "app") ],
);
const app :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "query_compiler.wasm", wasm = embed "query_compiler.wasm"),
  ],
  compatibilityDate = ${text(COMPATIBILITY_DATE)},
  bindings = [
    (name = "RELAY", service = "relay"),
    (name = "TUNNEL_NAME", text = ${text(values.tunnel)}),
    (name = "SESSIONS", text = ${text(values.sessions ? "1" : "0")}),
  ],
);
`,
);
