"""connector/ops.py over real HTTP: /metrics names, /healthz, and /ready against a real tdslite.

/ready must be 200 only with a registered relay connection AND a database that answers, and 503 as
soon as draining starts. The database here is a real tdslite on a real port that we stop and start.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
import trio

import tdslite
from connector.config import load_config
from connector.ops import Ops, database_probe
from connector.pool import Pools, PoolStats
from connector.service import AuditEvent
from connector.tunnel import LinkStats
from protocol import ErrorCode
from tests.support.connector_stack import TDSLITE_USERS, write_connector_config
from tests.support.ports import reserved_port


def _config(tmp_path: Path, port: int, database: str) -> Path:
    return write_connector_config(
        tmp_path / "conn",
        relay_urls=["ws://127.0.0.1:9"],
        relay_public_keys=["ed25519:" + "A" * 43],
        private_key_file=_key(tmp_path),
        issuer="http://127.0.0.1:9",
        db_host="127.0.0.1",
        db_port=port,
        database=database,
    )


def _key(tmp_path: Path) -> Path:
    from identity.keys import generate_key_files

    return generate_key_files(tmp_path / "keys", "conn-1", overwrite=True).private_path


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


async def test_metrics_expose_every_family(tmp_path: Path) -> None:
    ops = Ops(connector_id="conn-1", tunnel="demo")
    pool = PoolStats(login="reader", idle=1, in_use=2, size=8, opened=3, discarded=0)
    link = LinkStats(
        url="ws://r",
        session_id="s1",
        open_streams=1,
        served=0,
        rtt_ms=4.0,
        ready=True,
        draining=False,
    )
    ops.observe_pools(lambda: [pool])
    ops.observe_links(lambda: [link])
    ops.connection_up("ws://r")
    ops.reconnect("lost")
    ops.backoff_scheduled(1.5)
    ops.query_started()
    ops.query_finished(role="analyst", outcome="ok", duration_s=0.02, rows=3, nbytes=120)
    ops.query_started()
    ops.query_finished(role=None, outcome="policy.denied", duration_s=0.001, rows=0, nbytes=0)
    ops.frame_sent(100, 2)
    ops.frame_received(50)
    ops.backpressure_stall()
    with trio.fail_after(10):
        async with ops.serve("127.0.0.1", 0) as server:
            response = await _get(server.url + "/metrics")
            healthz = await _get(server.url + "/healthz")
            missing = await _get(server.url + "/nope")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'edgetds_connector_info{connector_id="conn-1",tunnel="demo",version="0.1.0"} 1.0',
        'edgetds_connector_relay_connections{relay="ws://r"} 1.0',
        'edgetds_connector_reconnects_total{reason="lost"} 1.0',
        'edgetds_connector_reconnect_backoff_seconds_bucket{le="1.0"} 0.0',
        'edgetds_connector_reconnect_backoff_seconds_bucket{le="2.0"} 1.0',
        'edgetds_connector_queries_total{outcome="ok",role="analyst"} 1.0',
        'edgetds_connector_queries_total{outcome="policy.denied",role="none"} 1.0',
        "edgetds_connector_queries_in_flight 0.0",
        'edgetds_connector_query_duration_seconds_bucket{le="0.025",role="analyst"} 1.0',
        'edgetds_connector_result_rows_total{role="analyst"} 3.0',
        'edgetds_connector_result_bytes_total{role="analyst"} 120.0',
        'edgetds_connector_frames_total{direction="out"} 2.0',
        'edgetds_connector_frames_total{direction="in"} 1.0',
        'edgetds_connector_frame_bytes_total{direction="out"} 100.0',
        'edgetds_connector_relay_rtt_seconds{relay="ws://r",session="s1"} 0.004',
        'edgetds_connector_relay_open_streams{relay="ws://r",session="s1"} 1.0',
        'edgetds_connector_pool_connections{login="reader",state="in_use"} 2.0',
        'edgetds_connector_pool_size{login="reader"} 8.0',
        "edgetds_connector_backpressure_stalls_total 1.0",
        'edgetds_connector_refusals_total{reason="policy.denied"} 1.0',
        "edgetds_connector_draining 0.0",
    ):
        assert line in text.splitlines(), line
    # a dedicated registry: nothing from the process-wide default one (python_gc_*, process_*)
    assert "python_gc_objects_collected_total" not in text
    assert healthz.status_code == 200
    assert missing.status_code == 404


async def test_ready_needs_a_relay_connection_and_flips_to_503_on_drain(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    with trio.fail_after(20):
        async with tdslite.open_server(users=users) as tds:
            config = load_config(_config(tmp_path, tds.port, tds.engine.database))
            pools = Pools(config.database)
            ops = Ops(connector_id="conn-1", tunnel="demo", ready_cache_s=0)
            async with ops.serve("127.0.0.1", 0, ready_check=database_probe(pools)) as server:
                none = await _get(server.url + "/ready")
                ops.connection_up("ws://relay-a")
                up = await _get(server.url + "/ready")
                ops.set_draining()
                draining = await _get(server.url + "/ready")
                alive = await _get(server.url + "/healthz")
            await pools.aclose()
    assert none.status_code == 503
    assert none.json()["reason"] == "no relay connection is registered"
    assert none.json()["connections"] == 0
    assert up.status_code == 200, up.text
    assert up.json() == {
        "connections": 1,
        "database": "ok",
        "draining": False,
        "in_flight": 0,
        "ready": True,
        "reason": "ok",
        "relays": {"ws://relay-a": 1},
    }
    assert draining.status_code == 503
    assert draining.json()["reason"] == "draining"
    assert alive.status_code == 200  # alive while draining: only readiness changes


async def test_ready_is_503_while_the_database_is_down(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    port = reserved_port()
    db = tmp_path / "tdslite.db"
    config = load_config(_config(tmp_path, port, "tdslite"))
    pools = Pools(config.database)
    ops = Ops(connector_id="conn-1", tunnel="demo", ready_cache_s=0)
    ops.connection_up("ws://relay-a")
    with trio.fail_after(30):
        async with ops.serve("127.0.0.1", 0, ready_check=database_probe(pools)) as server:
            async with tdslite.open_server(db=db, users=users, port=port):
                first = await _get(server.url + "/ready")
            down = await _get(server.url + "/ready")  # the pooled connection is dead now
            down_again = await _get(server.url + "/ready")  # and a new login is refused
            async with tdslite.open_server(db=db, users=users, port=port):
                back = await _get(server.url + "/ready")
        await pools.aclose()
    assert first.status_code == 200, first.text
    for response in (down, down_again):
        assert response.status_code == 503
        body = json.loads(response.text)
        assert body["reason"] == "database does not answer"
        assert body["connections"] == 1
    assert f"127.0.0.1:{port}" in down_again.json()["database"]
    assert back.status_code == 200, back.text


@pytest.mark.parametrize("abstract", [False, True])
async def test_sd_notify_ready_after_the_first_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool
) -> None:
    name = f"edgetds-test-{id(tmp_path)}"
    address = "\0" + name if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name if abstract else address)
        ops = Ops(connector_id="conn-1", tunnel="demo")
        ops.connection_up("ws://relay-a")
        ops.connection_up("ws://relay-b")  # READY=1 only once
        ops.set_draining()
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                break
    assert messages == ["READY=1\nSTATUS=connected to ws://relay-a", "STOPPING=1\nSTATUS=draining"]


def test_metrics_and_audit_agree_on_refusals() -> None:
    # one predicate: a code the audit log records as "refused" is a refusal in the metrics too
    ops = Ops(connector_id="conn-1", tunnel="demo")
    for code in ErrorCode:
        ops.query_started()
        ops.query_finished(role=None, outcome=code, duration_s=0.0, rows=0, nbytes=0)
    counted = {
        sample.labels["reason"]
        for metric in ops.registry.collect()
        if metric.name == "edgetds_connector_refusals"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value == 1
    }
    audited = {
        code
        for code in ErrorCode
        if AuditEvent("q", 1, None, outcome=code).record()["outcome"]["status"] == "refused"
    }
    assert counted == audited
    assert {"request.invalid", "query.duplicate", "policy.denied"} <= counted
    assert not counted & {"sql.error", "query.timeout", "internal", "transport.lost"}


async def test_queries_in_flight_is_read_at_scrape_time() -> None:
    ops = Ops(connector_id="conn-1", tunnel="demo")

    def in_flight() -> float | None:
        return ops.registry.get_sample_value("edgetds_connector_queries_in_flight")

    assert in_flight() == 0.0
    ops.query_started()
    ops.query_started()
    assert in_flight() == 2.0
    ops.query_finished(role="analyst", outcome="ok", duration_s=0.01, rows=1, nbytes=10)
    assert in_flight() == 1.0
    ops.query_finished(role="analyst", outcome="ok", duration_s=0.01, rows=1, nbytes=10)
    ops.query_finished(role="analyst", outcome="ok", duration_s=0.01, rows=1, nbytes=10)
    assert in_flight() == 0.0  # never below zero
