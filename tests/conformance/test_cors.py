"""Conformance: browsers and CORS (SPEC.md 11.7) on both relays (Python, and the Worker under
workerd). The tunnel lists one origin in ``cors_origins``: that origin's answers carry the CORS
headers (errors included) on every client endpoint, its preflights are answered by the relay
alone; any other origin gets no ``Access-Control-*`` header and a 403 preflight.
tests/conformance/test_cors_browser.py drives a real Chromium against the same setup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.conformance import RELAYS, Conformance, open_conformance

ALLOWED = "https://app.example.test"
OTHER = "https://other.example.test"
#: the headers a listed origin's answers carry (SPEC.md 11.7)
EXPOSED = "x-edgetds-query-id, retry-after"
#: one query per 100 s after a burst of 2, for identity "limited" (others use their own buckets)
LIMITS = {"auth_failure_burst": 10_000, "query_burst": 2, "queries_per_second": 0.01}


@pytest.fixture(params=sorted(RELAYS))
async def cors_conf(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Conformance]:
    with trio.CancelScope(deadline=trio.current_time() + 60) as scope:  # setup deadline
        async with open_conformance(
            request.param, tmp_path, cors_origins=[ALLOWED], limits=LIMITS
        ) as conformance:
            scope.deadline = trio.current_time() + 300  # tests set their own; bounds teardown
            yield conformance
    if scope.cancelled_caught:
        raise trio.TooSlowError(f"the {request.param} CORS stack did not start or stop")


def access_control(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def assert_cors(response: httpx.Response, origin: str = ALLOWED) -> None:
    assert access_control(response) == {
        "access-control-allow-origin": origin,
        "access-control-expose-headers": EXPOSED,
    }, (response.status_code, response.headers)
    assert "Origin" in [v.strip() for v in response.headers.get("vary", "").split(",")]


def url(conf: Conformance, path: str, tunnel: str = "demo") -> str:
    return f"{conf.relay.http_url}/v1/tunnels/{tunnel}/{path}"


def bearer(conf: Conformance, origin: str, sub: str = "alice") -> dict[str, str]:
    """A client token of ``sub`` sent by a page of ``origin``."""
    return {"Authorization": f"Bearer {conf.token(sub)}", "Origin": origin}


def preflight(method: str = "POST", origin: str = ALLOWED) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_listed_origin_gets_cors_headers_on_answers_and_errors(
    cors_conf: Conformance,
) -> None:
    conf, http, token = cors_conf, cors_conf.http, bearer(cors_conf, ALLOWED)
    with trio.fail_after(60):
        ok = await http.post(
            url(conf, "query"), json={"sql": "SELECT id FROM notes"}, headers=token
        )
        assert ok.status_code == 200
        assert_cors(ok)
        assert ok.headers["x-edgetds-query-id"]
        assert [line for line in ok.text.splitlines() if line.startswith("[")] == ["[1]", "[2]"]
        status = await http.get(url(conf, "status"), headers=token)
        assert status.status_code == 200
        assert_cors(status)
        # Errors from a listed origin carry them too, so the page can read what failed.
        refusals = {
            "no token": await http.post(
                url(conf, "query"), json={"sql": "SELECT 1"}, headers={"Origin": ALLOWED}
            ),
            "bad token": await http.get(
                url(conf, "status"), headers={"Origin": ALLOWED, "Authorization": "Bearer x.y.z"}
            ),
            "wrong method": await http.get(url(conf, "query"), headers=token),
            "bad body": await http.post(url(conf, "query"), content=b"{", headers=token),
            "policy": await http.post(
                url(conf, "query"),
                json={"sql": "DELETE FROM notes"},
                headers=bearer(conf, ALLOWED, sub="bob"),  # a query bucket of its own
            ),
        }
        limited = bearer(conf, ALLOWED, sub="limited")
        for _ in range(3):
            last = await http.post(url(conf, "query"), json={"sql": "SELECT 1"}, headers=limited)
        refusals["rate limited"] = last
        # Every path under the tunnel but connect and audit/checkpoint is a client endpoint:
        # endpoints added later (sessions, transaction) get CORS without more work.
        refusals["other endpoint"] = await http.post(url(conf, "sessions"), headers=token)
    codes = {name: r.status_code for name, r in refusals.items()}
    assert codes["no token"] == codes["bad token"] == 401
    assert codes["wrong method"] == 405
    assert codes["bad body"] == 400
    assert codes["policy"] == 403  # the connector's refusal, relayed
    assert refusals["policy"].json()["error"]["code"].startswith("policy.")
    assert codes["rate limited"] == 429
    assert refusals["rate limited"].headers["retry-after"]
    assert codes["other endpoint"] >= 400
    for name, response in refusals.items():
        assert response.headers["content-type"] == "application/json", name
        assert response.json()["error"]["code"], name
        assert_cors(response)


async def test_preflight_is_answered_by_the_relay_alone(cors_conf: Conformance) -> None:
    conf, http = cors_conf, cors_conf.http
    before = conf.connector.statistics()
    statements = len(conf.db.statement_log.entries)
    with trio.fail_after(60):
        answers = [
            await http.options(url(conf, "query"), headers=preflight("POST")),
            await http.options(url(conf, "status"), headers=preflight("GET")),
            await http.options(url(conf, "sessions/abc"), headers=preflight("DELETE")),
        ]
    for answer in answers:
        assert answer.status_code == 204, answer.text
        assert answer.content == b""
        assert access_control(answer) == {
            "access-control-allow-origin": ALLOWED,
            "access-control-allow-methods": "GET, POST, DELETE",
            "access-control-allow-headers": "authorization, content-type, x-edgetds-query-id",
            "access-control-max-age": "600",
        }
        assert "Origin" in answer.headers["vary"]
    # No token was needed and the connector saw nothing: no stream, no statement.
    after = conf.connector.statistics()
    assert after.outcomes == before.outcomes
    assert [link.served for link in after.links] == [link.served for link in before.links]
    assert len(conf.db.statement_log.entries) == statements
    # (the statement log does see a real query, which runs before its rows are answered)
    with trio.fail_after(30):
        assert (await conf.query("SELECT 1 AS one")).rows == [[1]]
    assert len(conf.db.statement_log.entries) > statements


async def test_unlisted_origin_gets_no_cors_headers_and_a_403_preflight(
    cors_conf: Conformance,
) -> None:
    conf, http, token = cors_conf, cors_conf.http, bearer(cors_conf, OTHER)
    with trio.fail_after(60):
        refused = await http.options(url(conf, "query"), headers=preflight("POST", OTHER))
        unknown_tunnel = await http.options(
            url(conf, "query", tunnel="nowhere"), headers=preflight("POST")
        )
        answers = {
            "query": await http.post(url(conf, "query"), json={"sql": "SELECT 1"}, headers=token),
            "error": await http.get(url(conf, "status"), headers={"Origin": OTHER}),
            # connect and audit/checkpoint are not client endpoints: no CORS, even for ALLOWED
            "connect preflight": await http.options(url(conf, "connect"), headers=preflight("GET")),
            "checkpoint": await http.get(
                url(conf, "audit/checkpoint?connector=conn-1"), headers={"Origin": ALLOWED}
            ),
            "checkpoint preflight": await http.options(
                url(conf, "audit/checkpoint"), headers=preflight("GET")
            ),
        }
    for response in (refused, unknown_tunnel):
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "request.invalid"
        assert "cors_origins" in error["message"]
        assert OTHER not in response.text
        assert access_control(response) == {}
    assert answers["query"].status_code == 200  # the relay answers; the browser hides it
    assert answers["error"].status_code == 401
    for name, response in answers.items():
        assert access_control(response) == {}, (name, response.headers)
        assert OTHER not in str(response.headers), name


async def test_tunnel_without_cors_origins_refuses_every_preflight(conf: Conformance) -> None:
    with trio.fail_after(30):
        refused = await conf.http.options(url(conf, "query"), headers=preflight("POST"))
        answer = await conf.http.get(url(conf, "status"), headers={"Origin": ALLOWED})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "request.invalid"
    assert access_control(refused) == {}
    assert answer.status_code == 401
    assert access_control(answer) == {}
