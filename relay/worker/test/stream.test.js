// guardStream: the object's NDJSON body is forwarded line by line, and a break ends it with a
// transport.lost record on a line of its own (never glued to a cut row line).
import assert from "node:assert/strict";
import { test } from "node:test";

import { guardStream } from "../src/stream.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A 200 response whose body yields `parts`, then ends or (with `fail`) breaks. */
function objectAnswer(parts, { fail = false } = {}) {
  const body = new ReadableStream({
    pull(controller) {
      if (parts.length > 0) controller.enqueue(encoder.encode(parts.shift()));
      else if (fail) controller.error(new Error("Durable Object reset"));
      else controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { "content-type": "application/x-ndjson" } });
}

/** Every chunk the client reads, as text. */
async function chunks(response) {
  const out = [];
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out.push(decoder.decode(value));
  }
}

test("a break drops the cut line and the terminal record is a line of its own", async () => {
  const parts = ['{"columns":[]}\n[1,"a"]\n[2,', '"b"]\n[3,"c', "cc"];
  const text = (await chunks(guardStream(objectAnswer(parts, { fail: true }), "q-1"))).join("");
  const lines = text.split("\n");
  assert.equal(lines.pop(), "");
  assert.deepEqual(lines.slice(0, 3), ['{"columns":[]}', '[1,"a"]', '[2,"b"]']);
  assert.equal(lines.length, 4);
  const { error } = JSON.parse(lines[3]);
  assert.equal(error.code, "transport.lost");
  assert.equal(error.query_id, "q-1");
});

test("whole lines go out as soon as they are complete; the end passes through intact", async () => {
  const done = '{"done":{"rows":2}}\n';
  const parts = ['[1,"a"]\n[2,', '"b"]\n', done.slice(0, 5), done.slice(5)];
  const got = await chunks(guardStream(objectAnswer(parts), "q-2"));
  assert.deepEqual(got, ['[1,"a"]\n', '[2,"b"]\n', done]);
});

test("a body ending without a newline is forwarded as it is", async () => {
  const got = await chunks(guardStream(objectAnswer(['[1]\n{"done"', ":{}}"]), "q-3"));
  assert.equal(got.join(""), '[1]\n{"done":{}}');
});

test("a refusal is not touched", async () => {
  const refusal = new Response('{"error":{"code":"limits.rate_limited"}}\n', { status: 429 });
  assert.equal(guardStream(refusal, "q-4"), refusal);
});
