// The digest memos (auth.js DigestMemo): the attestation's statement/options digests and the
// client token's digest are remembered by their exact text, within bounds.
import assert from "node:assert/strict";
import { test } from "node:test";

import { DigestMemo, sha256Hex, TEXT_DIGESTS } from "../src/auth.js";
import { TOKEN_DIGESTS } from "../src/oidc.js";

test("a remembered digest is the digest of exactly that text", async () => {
  const memo = new DigestMemo({ maxEntries: 8, maxChars: 100 });
  const texts = ["sql:SELECT 1", "sql:SELECT 2", "sql:SELECT 1 ", "SQL:SELECT 1", ""];
  for (let round = 0; round < 3; round++) {
    for (const text of texts) assert.equal(await memo.sha256Hex(text), await sha256Hex(text), JSON.stringify(text));
  }
  assert.equal(memo.size, texts.length);
});

test("the memo keeps at most maxEntries texts of at most maxChars characters", async () => {
  const memo = new DigestMemo({ maxEntries: 4, maxChars: 10 });
  for (let i = 0; i < 10; i++) {
    assert.equal(await memo.sha256Hex(`text ${i}`), await sha256Hex(`text ${i}`));
    assert.ok(memo.size <= 4, `size ${memo.size} after ${i + 1} texts`);
  }
  const long = "x".repeat(11);
  const before = memo.size;
  assert.equal(await memo.sha256Hex(long), await sha256Hex(long));
  assert.equal(memo.size, before, "a text over maxChars is hashed, not kept");
});

test("the module memos are bounded", () => {
  assert.deepEqual([TEXT_DIGESTS.maxEntries, TEXT_DIGESTS.maxChars], [1024, 4096]);
  assert.deepEqual([TOKEN_DIGESTS.maxEntries, TOKEN_DIGESTS.maxChars], [512, 4096]);
});
