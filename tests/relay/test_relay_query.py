"""The client HTTP API of the Python relay: POST /query and GET /status, success and refusals.

Real sockets on 127.0.0.1: the relay in-process (asgiapp.server), a protocol peer as the connector
(protocol/ over websockets.trio, checking the relay's HELLO and attestations), httpx as the client,
tokens from the dev IdP.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP
from logsetup import JsonFormatter
from protocol import events
from relay.server import RunningRelay
from tests.relay._relay_helpers import bearer, ndjson, peer, query_url
from tests.support.protocol_peer import Peer, line
from tests.support.relays import RelayHandle


async def test_query_streams_payload_bytes_unchanged(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    # Payloads the relay must forward byte for byte (odd spacing, unicode, a bigint string).
    columns = b'{"columns": [{"name":"n","type":"bigint"}]}\n'
    rows = [b'["9007199254740993"]\n', '["h\u00e9llo \u2603", 1.50]\n'.encode(), b"[null]\n"]
    done = b'{"done":{"rows":3,"result_sets":1,"elapsed_ms":7,"query_id":"Q"}}\n'

    async def exact(p: Peer, q: events.Query) -> None:
        await p.send(events.Columns(q.stream_id, columns))
        for chunk in rows:
            await p.send(events.Rows(q.stream_id, chunk))
        await p.send(events.Done(q.stream_id, done))

    with trio.fail_after(10):
        async with peer(relay, handler=exact) as p:
            token = idp.mint(sub="alice", groups=["analysts"])
            response = await client.post(
                query_url(relay),
                json={"sql": "select n from t where k = @k", "params": {"k": 3, "f": 0.5}},
                headers=bearer(token),
            )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.content == columns + b"".join(rows) + done
    assert p.attestation_errors == []
    (q,) = p.queries
    assert q.token == token
    assert q.sql == "select n from t where k = @k"
    assert dict(q.params) == {"k": 3, "f": 0.5}
    assert response.headers["x-edgetds-query-id"] == q.query_id
    generated = uuid.UUID(q.query_id)  # the relay generated one: a random (version 4) UUID
    assert (str(generated), generated.version, generated.variant) == (
        q.query_id,
        4,
        uuid.RFC_4122,
    )


async def test_client_query_id_and_options_reach_the_connector(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    query_id = str(uuid.uuid4())
    body = {"query": "top_customers", "params": {}, "max_rows": 10, "timeout_ms": 1500}
    with trio.fail_after(10):
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay),
                json={**body, "query_id": query_id},
                headers=bearer(idp.mint(sub="a")),
            )
            assert response.status_code == 200
            again = await client.post(
                query_url(relay),
                json={**body, "query_id": query_id},
                headers=bearer(idp.mint(sub="a")),
            )
    (q,) = p.queries  # the duplicate never reached the connector
    assert (q.query_id, q.query, q.sql) == (query_id, "top_customers", None)
    assert dict(q.options) == {"max_rows": 10, "timeout_ms": 1500}
    assert p.attestation_errors == []
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "query.duplicate"


async def test_done_first_is_200_with_the_done_record(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def empty(p: Peer, q: events.Query) -> None:
        await p.done(q.stream_id, rows=0, query_id=q.query_id)

    with trio.fail_after(10):
        async with peer(relay, handler=empty):
            response = await client.post(
                query_url(relay), json={"sql": "exec noop"}, headers=bearer(idp.mint(sub="a"))
            )
    assert response.status_code == 200
    assert ndjson(response.text)[0]["done"]["rows"] == 0


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("policy.denied", 403),
        ("policy.not_read_only", 403),
        ("policy.unknown_query", 404),
        ("sql.error", 422),
        ("query.timeout", 504),
        ("auth.invalid_token", 401),
        ("limits.too_many_queries", 429),
        ("connector.database_unavailable", 503),
        ("internal", 500),
    ],
)
async def test_error_first_sets_the_http_status(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient, code: str, status: int
) -> None:
    async def refuse(p: Peer, q: events.Query) -> None:
        await p.error(q.stream_id, code, "refused by the connector", q.query_id)

    with trio.fail_after(10):
        async with peer(relay, handler=refuse):
            response = await client.post(
                query_url(relay), json={"sql": "delete from t"}, headers=bearer(idp.mint(sub="b"))
            )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] == "refused by the connector"


async def test_error_after_rows_ends_the_200_body(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def fail_late(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await p.rows(q.stream_id, [[1]])
        await p.error(q.stream_id, "sql.error", "divide by zero", q.query_id)

    with trio.fail_after(10):
        async with peer(relay, handler=fail_late):
            response = await client.post(
                query_url(relay), json={"sql": "select 1/0"}, headers=bearer(idp.mint(sub="b"))
            )
    assert response.status_code == 200
    records = ndjson(response.text)
    assert records[1] == [1]
    assert records[-1]["error"]["code"] == "sql.error"


async def test_no_connector_is_503_with_a_hint(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="a"))
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "tunnel.no_connector"
    assert "edgetds connector run" in error["hint"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not a JSON object"),
        (b"[1, 2]", "got list"),
        (b'{"params": {}}', "exactly one of 'sql'"),
        (b'{"sql": "select 1", "query": "q"}', "exactly one of 'sql'"),
        (b'{"sql": ""}', "non-empty"),
        (b'{"sql": "select 1", "params": [1]}', "'params'"),
        (b'{"sql": "select 1", "max_rows": -1}', "'max_rows'"),
        (b'{"sql": "select 1", "timeout_ms": "soon"}', "'timeout_ms'"),
        (b'{"sql": "select 1", "query_id": "has spaces"}', "'query_id'"),
        (b'{"sql": "select 1", "extra": 1}', "unknown member"),
        (b'{"sql": "select 1", "params": {"x": NaN}}', "NaN is not allowed"),
        (b'{"sql": "select 1", "sql": "select 2"}', "duplicate JSON key"),
        (b'{"sql": "select \\ud800"}', "Unicode"),
    ],
)
async def test_bad_request_bodies_are_400(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient, body: bytes, needle: str
) -> None:
    with trio.fail_after(10):
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay), content=body, headers=bearer(idp.mint(sub="a"))
            )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "request.invalid"
    assert needle in error["message"]
    assert p.queries == []


async def test_oversized_body_is_413(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    body = json.dumps({"sql": "select @x", "params": {"x": "y" * 1_100_000}})
    response = await client.post(query_url(relay), content=body, headers=bearer(idp.mint(sub="a")))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request.too_large"


@pytest.mark.parametrize("query_id", [None, "big-1"])
async def test_body_that_does_not_fit_a_frame_is_413(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient, query_id: str | None
) -> None:
    # Under max_body_bytes (1 MiB), but with token and attestation over the 1 MiB frame limit.
    ids = {"query_id": query_id} if query_id else {}
    body = json.dumps({"sql": "select '" + "y" * (1024 * 1024 - 200) + "'", **ids})
    with trio.fail_after(10):
        async with peer(relay, max_statement_bytes=16 * 1024 * 1024) as p:
            response = await client.post(
                query_url(relay), content=body, headers=bearer(idp.mint(sub="a"))
            )
            assert response.status_code == 413
            # ... and the connection still serves the next query (a query_id refused with 413
            # was not used up).
            ok = await client.post(
                query_url(relay),
                json={"sql": "select 1", **ids},
                headers=bearer(idp.mint(sub="a")),
            )
    assert ok.status_code == 200
    assert len(p.queries) == 1
    error = response.json()["error"]
    size = int(error["message"].split(" bytes;")[0].rsplit(" ", 1)[1])
    assert (error["code"], error["message"]) == (
        "request.too_large",
        f"the query frame would be {size} bytes; the connector accepts at most {1024 * 1024}",
    )
    assert size > 1024 * 1024


@pytest.mark.parametrize(
    ("mint", "code"),
    [
        (None, "auth.missing_token"),
        ({"expires_in": -120}, "auth.expired"),
        ({"aud": "someone-else"}, "auth.wrong_audience"),
        ({"extra_claims": {"iss": "https://evil.example"}}, "auth.unknown_issuer"),
    ],
)
async def test_client_token_refused_before_any_connector_sees_it(
    relay: RelayHandle,
    idp: DevIdP,
    client: httpx.AsyncClient,
    mint: dict[str, object] | None,
    code: str,
) -> None:
    headers = {} if mint is None else bearer(idp.mint(sub="mallory", **mint))  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=headers
            )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert p.queries == []


async def test_tampered_client_token_is_401(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    header, payload, sig = idp.mint(sub="alice").split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{sig}"
    response = await client.post(
        query_url(relay), json={"sql": "select 1"}, headers=bearer(tampered)
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.invalid_token"


async def test_unknown_tunnel_is_404(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        query_url(relay, "z\u00fcrich"), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="a"))
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "tunnel.unknown"
    # protocol.error_record builds every error body: UTF-8 JSON with non-ASCII kept as is (what
    # the Worker's JSON.stringify writes), not \u escapes
    message = "no tunnel named 'z\u00fcrich' on this relay"
    expected = '{"error":{"code":"tunnel.unknown","message":"' + message + '"}}\n'
    assert response.content == expected.encode("utf-8")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/wp-login.php", 404),
        ("POST", "/v1/tunnels/demo/query/extra", 404),
        ("GET", "/v1/tunnels/demo/query", 405),
        ("POST", "/v1/tunnels/demo/status", 405),
        ("GET", "/v1/tunnels/demo/connect", 426),
    ],
)
async def test_unknown_paths_and_methods_do_no_work(
    relay: RelayHandle,
    running: RunningRelay,
    idp: DevIdP,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    status: int,
) -> None:
    fetches = dict(idp.requests)
    response = await client.request(method, relay.http_url + path, headers=bearer("x.y.z"))
    assert response.status_code == status
    assert "error" in response.json()
    if status == 405:
        assert response.headers["allow"] in ("GET", "POST")
    assert dict(idp.requests) == fetches  # no key fetch, no token work
    assert running.app.auth_failures.retry_after("127.0.0.1", trio.current_time()) == 0


async def test_status_counts_connectors_and_connections(
    relay: RelayHandle, running: RunningRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    url = f"{relay.http_url}/v1/tunnels/demo/status"
    headers = bearer(idp.mint(sub="ops"))
    with trio.fail_after(10):
        assert (await client.get(url, headers=headers)).json() == {
            "tunnel": "demo",
            "connectors": 0,
            "connections": 0,
            "connector_ids": [],
            "draining": 0,
            "streams": 0,
        }
        async with peer(relay, "conn-1") as a, peer(relay, "conn-1"), peer(relay, "conn-2"):
            status = (await client.get(url, headers=headers)).json()
            assert status["connectors"] == 2
            assert status["connections"] == 3
            assert status["connector_ids"] == ["conn-1", "conn-2"]
            await a.send(events.Drain("restarting"))
            sessions = running.app.registry.tunnels["demo"].sessions
            (drained,) = [s for s in sessions if s.session_id == a.session_id]
            await drained.wait_draining()
            assert (await client.get(url, headers=headers)).json()["draining"] == 1
    unauthenticated = await client.get(url)
    assert unauthenticated.status_code == 401


async def test_healthz(relay: RelayHandle, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{relay.http_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_line_helper_matches_the_ndjson_shape() -> None:
    assert line({"a": 1}) == b'{"a":1}\n'


async def test_logs_carry_no_token_sql_or_parameter_value(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    secret_sql = "select * from payroll where ssn = @ssn -- s3cr3t-sql"
    secret_value = "078-05-1120-s3cr3t-param"
    token = idp.mint(sub="alice")
    bad_token = idp.mint(sub="alice", aud="elsewhere")

    async def fail(p: Peer, q: events.Query) -> None:
        await p.error(q.stream_id, "sql.error", "no such table", q.query_id)

    with trio.fail_after(10):
        async with peer(relay) as p:
            ok = await client.post(
                query_url(relay),
                json={"sql": secret_sql, "params": {"ssn": secret_value}},
                headers=bearer(token),
            )
            p.handler = fail
            await client.post(
                query_url(relay),
                json={"sql": secret_sql, "params": {"ssn": secret_value}},
                headers=bearer(token),
            )
            await client.post(query_url(relay), json={"sql": secret_sql}, headers=bearer(bad_token))
            await client.post(query_url(relay), content=b'{"sql": "x", "bad": 1}')
    assert ok.status_code == 200
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)  # the lines written
    queries = [json.loads(line) for line in text.splitlines() if '"event": "query"' in line]
    assert [q["tunnel"] for q in queries] == ["demo", "demo"]  # the relay did log the queries ...
    assert "auth.refused" in text
    for secret in (token, bad_token, token.split(".")[2], "s3cr3t-sql", "s3cr3t-param", "payroll"):
        assert secret not in text  # ... but nothing secret
