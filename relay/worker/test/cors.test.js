// CORS helpers (src/cors.js): which paths are client endpoints, what a preflight is, and the
// headers added to an answer without touching its status or (streamed) body.
import assert from "node:assert/strict";
import { test } from "node:test";

import { clientEndpoint, isPreflight, preflightResponse, refusedPreflight, withCors } from "../src/cors.js";

test("every path under a tunnel but connect, enroll and audit/checkpoint is a client endpoint", () => {
  assert.equal(clientEndpoint("/v1/tunnels/demo/query"), "demo");
  assert.equal(clientEndpoint("/v1/tunnels/demo/status"), "demo");
  assert.equal(clientEndpoint("/v1/tunnels/demo/sessions/abc/commit"), "demo");
  assert.equal(clientEndpoint("/v1/tunnels/demo/transaction"), "demo");
  for (const path of ["/v1/tunnels/demo/connect", "/v1/tunnels/demo/enroll", "/v1/tunnels/demo/audit/checkpoint", "/v1/tunnels/demo/", "/v1/tunnels//query", "/healthz", "/v1/relay/stats"]) {
    assert.equal(clientEndpoint(path), null, path);
  }
});

test("a preflight is OPTIONS with Origin and Access-Control-Request-Method", () => {
  const request = (method, headers) => new Request("https://relay.example/v1/tunnels/demo/query", { method, headers });
  assert.ok(isPreflight(request("OPTIONS", { origin: "https://a.example", "access-control-request-method": "POST" })));
  assert.ok(!isPreflight(request("OPTIONS", { origin: "https://a.example" })));
  assert.ok(!isPreflight(request("OPTIONS", { "access-control-request-method": "POST" })));
  assert.ok(!isPreflight(request("GET", { origin: "https://a.example", "access-control-request-method": "POST" })));
});

test("preflight answers: 204 with the fixed lists for a listed origin, 403 without any CORS header", async () => {
  const ok = preflightResponse("https://a.example");
  assert.equal(ok.status, 204);
  assert.equal(ok.headers.get("access-control-allow-origin"), "https://a.example");
  assert.equal(ok.headers.get("access-control-allow-methods"), "GET, POST, DELETE");
  assert.equal(ok.headers.get("access-control-allow-headers"), "authorization, content-type, x-edgetds-query-id");
  assert.equal(ok.headers.get("access-control-max-age"), "600");
  assert.equal(ok.headers.get("access-control-allow-credentials"), null);
  const refused = refusedPreflight();
  assert.equal(refused.status, 403);
  assert.deepEqual([...refused.headers.keys()].filter((k) => k.startsWith("access-control-")), []);
  assert.equal((await refused.json()).error.code, "request.invalid");
});

test("withCors keeps the status, the other headers and a streamed body", async () => {
  const body = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("[1]\n"));
      controller.enqueue(new TextEncoder().encode('{"done":{}}\n'));
      controller.close();
    },
  });
  const original = new Response(body, { status: 429, headers: { "retry-after": "3", vary: "Accept-Encoding" } });
  const answer = withCors(original, "https://a.example");
  assert.equal(answer.status, 429);
  assert.equal(answer.headers.get("retry-after"), "3");
  assert.equal(answer.headers.get("vary"), "Accept-Encoding, Origin");
  assert.equal(answer.headers.get("access-control-allow-origin"), "https://a.example");
  assert.equal(answer.headers.get("access-control-expose-headers"), "x-edgetds-query-id, retry-after");
  assert.equal(await answer.text(), '[1]\n{"done":{}}\n');
});
