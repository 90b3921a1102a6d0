"""Conformance in a real browser: Debian's Chromium (headless, driven by playwright-core) calls
both relays with ``fetch()`` from web pages (tests/support/browser.py). A page served from a
listed origin (its own 127.0.0.1 port) gets a token and reads a query's rows and errors; a page
of another origin is blocked by the browser, because the relay refuses its preflight without any
CORS header, and its query never reaches the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.browser import Visit, open_page_server, run_browser
from tests.support.conformance import RELAYS, Conformance, open_conformance


@dataclass
class BrowserStack:
    conf: Conformance
    allowed: str  # origin of the page server the tunnel lists in cors_origins
    other: str  # origin of a page server it does not list

    @property
    def api(self) -> str:
        return f"{self.conf.relay.http_url}/v1/tunnels/demo"


@pytest.fixture(params=sorted(RELAYS))
async def browser(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BrowserStack]:
    with trio.CancelScope(deadline=trio.current_time() + 60) as scope:  # setup deadline
        async with (
            open_page_server() as allowed,
            open_page_server() as other,
            open_conformance(request.param, tmp_path, cors_origins=[allowed]) as conf,
        ):
            scope.deadline = trio.current_time() + 300  # tests set their own; bounds teardown
            yield BrowserStack(conf, allowed, other)
    if scope.cancelled_caught:
        raise trio.TooSlowError(f"the {request.param} browser stack did not start or stop")


def access_control(response: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in response["headers"].items() if k.startswith("access-control-")}


async def test_a_listed_origins_page_reads_rows_and_another_origins_page_is_blocked(
    browser: BrowserStack,
) -> None:
    token = browser.conf.token()
    visits = [
        Visit(f"{browser.allowed}/", "query", [browser.api, token, "SELECT id, body FROM notes"]),
        Visit(f"{browser.allowed}/", "query", [browser.api, "not-a-token", "SELECT 1"]),
        Visit(f"{browser.other}/", "query", [browser.api, token, "SELECT 42 AS blocked"]),
    ]
    with trio.fail_after(120):
        run = await run_browser(visits)
    rows, refused, blocked = run["results"]
    # The listed origin's page reads the rows and the exposed query id ...
    assert rows["status"] == 200, rows
    assert rows["rows"] == [[1, "first"], [2, "second"]]
    assert rows["queryId"]
    assert rows["records"][-1]["done"]["rows"] == 2
    # ... and an error's body too (the relay's 401 carries the CORS headers).
    assert refused["status"] == 401, refused
    assert refused["records"][0]["error"]["code"] == "auth.invalid_token"
    # The other origin's page: the browser rejects the fetch ...
    assert blocked == {"error": "TypeError", "message": "Failed to fetch"}
    # ... because the relay answered its preflight 403 with no CORS header, so the query itself
    # was never sent: the database never saw it.
    seen = [(r["visit"], r["method"], r["status"]) for r in run["responses"] if "/v1/" in r["url"]]
    assert (2, "OPTIONS", 403) in seen, seen
    assert [s for s in seen if s[0] == 2 and s[1] != "OPTIONS"] == []
    preflight = next(r for r in run["responses"] if r["visit"] == 2 and r["method"] == "OPTIONS")
    assert access_control(preflight) == {}
    assert not any("42" in s for s in browser.conf.statements())
    # The listed origin's answers, preflight and all, carry its origin and never "*".
    for response in run["responses"]:
        if response["visit"] < 2 and "/v1/" in response["url"]:
            allowed_origin = response["headers"]["access-control-allow-origin"]
            assert allowed_origin == browser.allowed, response


async def test_a_listed_origins_page_runs_a_session(browser: BrowserStack) -> None:
    token = browser.conf.token()
    visit = Visit(
        f"{browser.allowed}/", "session", [browser.api, token, "SELECT COUNT(*) FROM notes"]
    )
    with trio.fail_after(120):
        run = await run_browser([visit])
    result = run["results"][0]
    opened = result["opened"]
    if opened["status"] == 404 and "unknown path" in opened["records"][0]["error"]["message"]:
        pytest.skip(
            f"POST /v1/tunnels/{{tunnel}}/sessions is not served by the {browser.conf.kind} "
            "relay on this branch (SPEC.md 11.5)"
        )
    assert opened["status"] == 201, result
    assert result["ran"]["status"] == 200, result
    assert result["ran"]["rows"] == [[2]]
    assert result["ended"]["status"] == 200, result
    assert result["ended"]["records"][0]["reason"] == "rolled_back"
    # DELETE was preflighted and allowed
    methods = {(r["method"], r["status"]) for r in run["responses"] if "/sessions/" in r["url"]}
    assert ("OPTIONS", 204) in methods, methods
