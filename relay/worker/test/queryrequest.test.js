// The /query body's parameters (request.js, as relay/request.py reads them with protocol.param_type):
// a JSON scalar, or {"type", "value"} naming a known type with a scalar value; anything else is
// refused before a QUERY is made (a QUERY nested deeper than the connector reads would end its
// connection).
import assert from "node:assert/strict";
import test from "node:test";

import { HttpError } from "../src/http.js";
import { paramProblem, parseQueryRequest } from "../src/request.js";

const OPTIONS = { maxTimeoutMs: 30_000 };
const withParam = (text) => new TextEncoder().encode(`{"sql": "select @x", "params": {"x": ${text}}}`);

test("scalars and typed values are parameter values", () => {
  for (const text of ["1", "1.5", "2.0", "-0", '"s"', "true", "null", '{"type": "int", "value": 1}',
    '{"type": "Decimal (18, 4)", "value": "1.5"}', '{"type": "nvarchar(max)", "value": null}',
    '{"type": "float", "value": 2.5e300}', '{"type": "int"}']) {
    const request = parseQueryRequest(withParam(text), OPTIONS);
    assert.ok(request.params_json.startsWith('{"x":'), text);
  }
});

test("anything else is refused, naming the parameter", () => {
  for (const text of ["[1]", "{}", '{"value": 1}', '{"type": "int", "value": 1, "x": 2}',
    '{"type": "no_such_type", "value": 1}', '{"type": "decimal(\u0661\u0668)", "value": "1"}',
    '{"type": 1, "value": 1}', '{"type": "int", "value": [1]}', '{"type": "int", "value": {"a": 1}}',
    "[".repeat(5000) + "]".repeat(5000), '{"b":'.repeat(5000) + "1" + "}".repeat(5000)]) {
    assert.throws(() => parseQueryRequest(withParam(text), OPTIONS),
      (err) => err instanceof HttpError && err.code === "request.invalid" && /parameter 'x'/.test(err.detail), text.slice(0, 40));
  }
});

test("paramProblem says why", () => {
  assert.equal(paramProblem("s"), null);
  assert.match(paramProblem([1]) ?? "", /JSON scalar/);
  assert.match(paramProblem({ type: "nope", value: 1 }) ?? "", /unknown SQL Server parameter type "nope"/);
  assert.match(paramProblem({ type: "int", value: [] }) ?? "", /string, number, boolean or null/);
});
