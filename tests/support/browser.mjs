#!/usr/bin/env node
/**
 * Drive Debian's Chromium (/usr/bin/chromium, never a downloaded browser) with playwright-core for
 * tests/support/browser.py: read a JSON job on stdin, open each page, call a function the page
 * defines with the given arguments, print JSON on stdout.
 *
 *   {"executable": "/usr/bin/chromium", "visits": [{"url": "http://127.0.0.1:P/", "call": "query",
 *    "args": [...]}, ...]}
 *     -> {"results": [<what the page's function returned>, ...],
 *         "responses": [{"visit", "url", "method", "type", "status", "headers"}, ...]}  (every
 *         response Chromium received, preflights included, from the DevTools protocol; header
 *         names lower-case)
 *
 * Each run uses a fresh profile directory (removed at the end) and flags that keep Chromium off
 * the network: no QUIC, no background or component updates, no sync, no first-run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const job = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const profile = mkdtempSync(join(tmpdir(), "edgetds-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: job.executable,
  headless: true,
  args: FLAGS,
});
const results = [];
const responses = [];
try {
  for (const [index, visit] of job.visits.entries()) {
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    const requests = new Map();
    cdp.on("Network.requestWillBeSent", (e) => requests.set(e.requestId, e.request.method));
    cdp.on("Network.responseReceived", (e) => {
      const { url, status, headers } = e.response;
      responses.push({ visit: index, url, method: requests.get(e.requestId) ?? null, type: e.type, status, headers: lower(headers) });
    });
    await cdp.send("Network.enable");
    await page.goto(visit.url);
    results.push(await page.evaluate(({ call, args }) => globalThis[call](...args), visit));
    await page.close();
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify({ results, responses }));

function lower(headers) {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
