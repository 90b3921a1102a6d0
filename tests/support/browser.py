"""A real browser against a relay: Debian's Chromium driven by playwright-core (npm, pinned).

``open_page_server()`` serves :data:`PAGE` (a small browser app that calls the relay with
``fetch()``) from 127.0.0.1 on a port of its own, so each server is its own web origin.
``run_browser(visits)`` runs tests/support/browser.mjs: Chromium opens each page and calls one of
its functions; it returns what they returned and every response Chromium received (preflights
included). The browser is /usr/bin/chromium (the Makefile's system-deps install it); nothing is
downloaded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from asgiapp import answer_lifespan
from tests.support.wrangler import NODE

__all__ = ["CHROMIUM", "PAGE", "Visit", "open_page_server", "run_browser"]

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path(__file__).with_name("browser.mjs")

#: The browser app: what a web page that calls the relay directly would do. Every function
#: resolves to JSON (a rejected fetch becomes {"error": name, "message"}).
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgetds browser app</title></head>
<body><script>
async function call(method, url, token, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    return { error: err.name, message: String(err.message) };
  }
  const text = await response.text();
  const lines = text.split("\\n").filter((line) => line).map((line) => JSON.parse(line));
  return {
    status: response.status,
    queryId: response.headers.get("x-edgetds-query-id"),
    retryAfter: response.headers.get("retry-after"),
    rows: lines.filter((line) => Array.isArray(line)),
    records: lines.filter((line) => !Array.isArray(line)),
  };
}
function query(api, token, sql) {
  return call("POST", `${api}/query`, token, { sql, params: {} });
}
async function session(api, token, sql) {
  const opened = await call("POST", `${api}/sessions`, token, {});
  if (opened.status !== 201) return { opened };
  const id = opened.records[0].session;
  const ran = await call("POST", `${api}/sessions/${id}/query`, token, { sql, params: {} });
  const ended = await call("DELETE", `${api}/sessions/${id}`, token);
  return { opened, ran, ended };
}
</script></body></html>
"""


async def _page_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": PAGE})


@asynccontextmanager
async def open_page_server() -> AsyncIterator[str]:
    """Serve :data:`PAGE` on 127.0.0.1 (a port of its own); yields its origin
    ``http://127.0.0.1:PORT`` (the page is at that origin + ``/``)."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        app: Any = _page_app  # hypercorn's Framework type is stricter than plain dicts
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield str(binds[0])
        finally:
            stop.set()


@dataclass(frozen=True)
class Visit:
    """Open the page at ``url`` and call its function ``call`` with ``args``."""

    url: str
    call: str
    args: Sequence[Any]


async def run_browser(visits: Sequence[Visit]) -> dict[str, Any]:
    """Run Chromium over ``visits``; ``{"results": [...], "responses": [...]}`` (browser.mjs)."""
    job = {
        "executable": str(CHROMIUM),
        "visits": [{"url": v.url, "call": v.call, "args": list(v.args)} for v in visits],
    }
    result = await trio.run_process(
        [str(NODE), str(DRIVER)],
        stdin=json.dumps(job).encode("utf-8"),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the browser run failed: {result.stderr.decode(errors='replace')}")
    out: dict[str, Any] = json.loads(result.stdout)
    return out
