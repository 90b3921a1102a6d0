// urlPath (http.js): the routes' path of a request URL, taken from the text when the URL is plain,
// must be exactly what a URL parser says (`new URL(url).pathname`) for every URL.
import assert from "node:assert/strict";
import { test } from "node:test";

import { urlPath } from "../src/http.js";

const URLS = [
  "http://127.0.0.1:8787/v1/tunnels/demo/query",
  "https://relay.example.com/v1/tunnels/my.tunnel_1-x/sessions/abc~DEF/commit",
  "http://h/v1/tunnels/demo/audit/checkpoint?connector=conn-1&file=a/../b",
  "http://h/v1/tunnels/demo/status#frag/../x",
  "http://h",
  "http://h?x=/y",
  "http://h#/y",
  "http://user:pw@h:80/healthz",
  "http://[::1]:8787/healthz",
  // a URL parser rewrites all of these: dot segments, escapes, backslashes, tabs, spaces, case
  "http://h/v1/tunnels/demo/query/../status",
  "http://h/v1/tunnels/demo/./query",
  "http://h/v1/tunnels/demo/..",
  "http://h/v1/tunnels/demo/.",
  "http://h/v1/tunnels/demo/%2e%2e/status",
  "http://h/v1/tunnels/demo/.%2E/status",
  "http://h/v1/tunnels/d%65mo/query",
  "http://h/v1\\tunnels\\demo\\query",
  "http://h/v1/tun\tnels/demo/query",
  "http://h/v1/tun\nnels/demo/query",
  "http://h/v1/tunnels/demo/query ",
  " http://h/v1/tunnels/demo/query",
  "http://h/v1/tunnels/démo/query",
  "http://h/v1/tunnels/de mo/query",
  "http://h/v1/tunnels/demo/query\u0000",
  "HTTP://h/v1/tunnels/demo/query",
  "http://h/v1/tunnels/demo/...",
  "http://h/v1/tunnels/demo/.hidden/..x",
  "http://h//v1//tunnels",
  "http://h:/v1/x",
];

test("urlPath is new URL(url).pathname", () => {
  for (const url of URLS) assert.equal(urlPath(url), new URL(url).pathname, JSON.stringify(url));
});
