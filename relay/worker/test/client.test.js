// client.js NDJSON handling: split by newline (chunks split lines), terminal record required.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ndjsonRecords, TunnelClient, TunnelError } from "../src/client.js";

function body(chunks) {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(enc.encode(chunk));
      controller.close();
    },
  });
}

async function all(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

test("records are split by newline, not by chunk", async () => {
  const records = await all(ndjsonRecords(body(['{"columns":[{"na', 'me":"n"}]}\n[1]\n[', "2]\n", '{"done":{"rows":2}}\n'])));
  assert.deepEqual(records, [{ columns: [{ name: "n" }] }, [1], [2], { done: { rows: 2 } }]);
});

test("a partial last line is a truncated result", async () => {
  await assert.rejects(all(ndjsonRecords(body(["[1]\n[2"]))), (err) => err instanceof TunnelError && err.code === "transport.lost");
});

// A relay stand-in: a fetcher that answers with fixed bodies (the real relay is tested under workerd).
function tunnelAnswering(status, chunks) {
  const requests = [];
  const fetcher = {
    async fetch(request) {
      requests.push(request);
      return new Response(body(chunks), { status, headers: { "content-type": "application/x-ndjson" } });
    },
  };
  return { tunnel: new TunnelClient({ tunnel: "demo", fetcher }), requests };
}

test("query collects rows as objects with columns and done", async () => {
  const { tunnel, requests } = tunnelAnswering(200, ['{"columns":[{"name":"id"},{"name":"x"}]}\n[1,"a"]\n[2,"b"]\n{"done":{"rows":2,"query_id":"q"}}\n']);
  const rows = await tunnel.query("select id, x from t where k = @k", { k: 1 }, { token: "T", maxRows: 5 });
  assert.deepEqual([...rows], [{ id: 1, x: "a" }, { id: 2, x: "b" }]);
  assert.equal(rows.done.query_id, "q");
  assert.equal(rows.columns.length, 2);
  const request = requests[0];
  assert.equal(request.headers.get("authorization"), "Bearer T");
  assert.equal(new URL(request.url).pathname, "/v1/tunnels/demo/query");
  assert.deepEqual(await request.json(), { sql: "select id, x from t where k = @k", params: { k: 1 }, max_rows: 5 });
});

test("an error record, a refusal, and a missing terminal record all throw", async () => {
  const midStream = tunnelAnswering(200, ['{"columns":[]}\n[1]\n{"error":{"code":"transport.lost","message":"gone"}}\n']);
  await assert.rejects(midStream.tunnel.query("s", {}, { token: "T" }), { code: "transport.lost", status: 200 });
  const refused = tunnelAnswering(403, ['{"error":{"code":"policy.denied","message":"no"}}\n']);
  await assert.rejects(refused.tunnel.query("s", {}, { token: "T" }), { code: "policy.denied", status: 403 });
  const truncated = tunnelAnswering(200, ['{"columns":[]}\n[1]\n']);
  await assert.rejects(truncated.tunnel.query("s", {}, { token: "T" }), { code: "transport.lost" });
});
