// Fair admission (FairAdmission, the twin of protocol/_admission.py): the shared scenarios in
// protocol/vectors/admission.json, which tests/protocol/test_admission.py runs too.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { FairAdmission } from "../src/limits.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../../protocol/vectors/admission.json", import.meta.url), "utf8")).vectors;

function runScenario(vector) {
  const admission = new FairAdmission({ maxWaiting: vector.max_waiting });
  const numbers = new Map();
  const tickets = new Map();
  for (const step of vector.steps) {
    if ("offer" in step) {
      const key = step.offer;
      for (let i = 0; i < (step.count ?? 1); i++) {
        numbers.set(key, (numbers.get(key) ?? 0) + 1);
        const name = `${key}${numbers.get(key)}`;
        if (!tickets.has(name)) tickets.set(name, { name });
        assert.equal(admission.offer(key, tickets.get(name), step.limit), step.result, JSON.stringify(step));
      }
    } else if ("grant" in step) {
      const granted = admission.grant(step.grant);
      assert.deepEqual(granted.map(([, t]) => t.name), step.result, JSON.stringify(step));
      for (const [key, t] of granted) assert.ok(t.name.startsWith(key));
    } else if ("withdraw" in step) {
      const name = step.withdraw;
      const ticket = tickets.get(name) ?? { name };
      assert.equal(admission.withdraw(name.replace(/[0-9]+$/, ""), ticket), step.result, JSON.stringify(step));
    } else if ("release" in step) {
      admission.release(step.release);
    } else {
      assert.deepEqual(admission.statistics(), step.statistics, JSON.stringify(step));
    }
  }
}

for (const vector of VECTORS) {
  test(`shared admission scenario: ${vector.name}`, () => runScenario(vector));
}

test("a flood never delays a newcomer past the next free slot", () => {
  const admission = new FairAdmission({ maxWaiting: 10_000 });
  for (let i = 0; i < 300; i++) assert.equal(admission.offer("flooder", { i }, 300), null);
  assert.equal(admission.grant(4).length, 4);
  for (let v = 0; v < 3; v++) assert.equal(admission.offer(`victim${v}`, { v }, 300), null);
  for (let v = 0; v < 3; v++) {
    admission.release("flooder");
    const [[key]] = admission.grant(1);
    assert.equal(key, `victim${v}`);
  }
  assert.equal(admission.admitted("flooder"), 1);
  assert.equal(admission.waiting("flooder"), 296);
  assert.equal(admission.waiting(), 296);
});

test("misuse is refused", () => {
  assert.throws(() => new FairAdmission({ maxWaiting: -1 }), /maxWaiting/);
  const admission = new FairAdmission({ maxWaiting: 1 });
  assert.throws(() => admission.release("nobody"), /release/);
  assert.deepEqual(admission.grant(3), []);
  assert.equal(admission.offer("a", {}, 0), "identity");
});
