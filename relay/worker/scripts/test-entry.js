// @ts-check
/**
 * The entry module of the TEST build of the relay Worker (workerd.mjs build --test-hooks); never
 * deployed: wrangler.toml's main is src/index.js, which has no hooks. It serves the production
 * Worker plus two routes the tests use to look inside a Durable Object:
 *
 *   GET|POST /v1/tunnels/{tunnel}/_test/state?shard=k   the object's status, admission statistics,
 *                                                       and its instance id (new after a rebuild)
 *   GET|POST /v1/tunnels/{tunnel}/_test/abort?shard=k   ctx.abort(): a reset as a deploy does it
 *   POST /v1/tunnels/{tunnel}/_test/legacy_checkpoint?shard=k&connector=ID
 *                                                       store the JSON body under ckpt:<ID>, as a
 *                                                       Worker that kept one checkpoint per
 *                                                       connector did (read since as per file)
 *
 * The Durable Object class is the production one with three RPC methods added.
 */

import worker, { stub } from "../src/index.js";
import { loadConfig } from "../src/config.js";
import { Tunnel as ProductionTunnel } from "../src/tunnel.js";

const HOOK = /^\/v1\/tunnels\/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\/_test\/(state|abort|legacy_checkpoint)$/;

export class Tunnel extends ProductionTunnel {
  /** @param {DurableObjectState} ctx @param {Record<string, any>} env */
  constructor(ctx, env) {
    super(ctx, env);
    /** Identifies this in-memory instance (a new one after hibernation or a reset). */
    this.instance = crypto.randomUUID();
    this.constructedAt = Date.now();
  }

  testState() {
    return { ...this.status(), admission: this.routes.admission.statistics(), instance: this.instance, constructed_at: this.constructedAt };
  }

  testAbort() {
    this.ctx.abort("edgetds test hook: reset");
  }

  /** @param {string} connectorId @param {Record<string, any>} entry */
  async testLegacyCheckpoint(connectorId, entry) {
    await this.ctx.storage.put(`ckpt:${connectorId}`, entry);
  }
}

export default {
  /** @param {Request} request @param {Record<string, any>} env @param {ExecutionContext} ctx */
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const match = HOOK.exec(url.pathname);
    if (match === null) return worker.fetch(request, env, ctx);
    const [, tunnel, action] = match;
    const config = await loadConfig(env);
    if (!Object.hasOwn(config.tunnels, tunnel)) return Response.json({ error: { code: "tunnel.unknown", message: "unknown tunnel" } }, { status: 404 });
    const object = /** @type {DurableObjectStub<Tunnel>} */ (/** @type {unknown} */ (stub(env, config, tunnel, Number(url.searchParams.get("shard") ?? "0"))));
    if (action === "state") return Response.json(await object.testState());
    if (action === "legacy_checkpoint") {
      await object.testLegacyCheckpoint(url.searchParams.get("connector") ?? "", await request.json());
      return Response.json({});
    }
    try {
      await object.testAbort();
    } catch {
      // the reset ends the call itself
    }
    return Response.json({});
  },
};
