// Token buckets and refusal counters (the same behaviour as relay/limits.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { RateLimiter, RefusalCounters, retryAfterHeader } from "../src/limits.js";

test("a bucket allows its burst, then refills at its rate", () => {
  const limiter = new RateLimiter({ rate: 2, burst: 3, maxKeys: 10 });
  assert.deepEqual([0, 0, 0].map(() => limiter.spend("ip", 100)), [0, 0, 0]);
  assert.equal(limiter.spend("ip", 100), 0.5);
  assert.equal(limiter.retryAfter("ip", 100.25), 0.25);
  assert.equal(limiter.spend("ip", 100.5), 0);
  assert.equal(limiter.spend("other", 100.5), 0);
});

test("the key map is bounded (oldest forgotten first) and rate 0 disables", () => {
  const limiter = new RateLimiter({ rate: 1, burst: 1, maxKeys: 2 });
  limiter.spend("a", 0);
  limiter.spend("b", 0);
  limiter.spend("c", 0);
  assert.deepEqual([...limiter.buckets.keys()], ["b", "c"]);
  const off = new RateLimiter({ rate: 0, burst: 1, maxKeys: 1 });
  for (let i = 0; i < 5; i++) assert.equal(off.spend("x", 0), 0);
  assert.equal(retryAfterHeader(0.2), "1");
  assert.equal(retryAfterHeader(2.1), "3");
});

test("refusals are counted by code, sorted", () => {
  const counters = new RefusalCounters();
  counters.refuse("auth.expired");
  counters.refuse("auth.expired");
  counters.refuse("auth.invalid_token");
  counters.count("queries", 3);
  assert.deepEqual(counters.snapshot(), { refused: { "auth.expired": 2, "auth.invalid_token": 1 }, totals: { queries: 3 } });
});
