"""Conformance: two connectors on one tunnel, and a connector cut off mid-stream, on both relays."""

from __future__ import annotations

import json

import trio

from tests.support.conformance import Conformance
from tests.support.waiting import eventually

WIDE = (
    "SELECT a.n * 10000 + b.n * 1000 + c.n * 100 + e.n * 10 + f.n AS v, "
    "N'padding-padding-padding-padding-padding-padding' AS pad "
    "FROM d a, d b, d c, d e, d f ORDER BY v"
)


def served(connector: object) -> int:
    return sum(connector.service.counts.values())  # type: ignore[attr-defined]


async def test_two_connectors_share_the_tunnel_and_one_can_leave(conf: Conformance) -> None:
    with trio.fail_after(60):
        async with conf.open_connector("conn-2") as second:
            await share_then_leave(conf, second)


async def share_then_leave(conf: Conformance, second: object) -> None:
    status = await conf.http.get(
        f"{conf.relay.http_url}/v1/tunnels/demo/status",
        headers={"Authorization": f"Bearer {conf.token()}"},
    )
    assert status.status_code == 200
    assert (status.json()["connectors"], status.json()["connections"]) == (2, 4)

    async def one() -> None:
        resp = await conf.query("SELECT COUNT(*) AS c FROM d a, d b, d c")
        assert resp.rows == [[1000]], resp.raw

    async with trio.open_nursery() as nursery:
        for _ in range(24):
            nursery.start_soon(one)
    assert served(conf.connector) > 0
    assert served(second) > 0
    # conn-1 leaves (drains and closes): the tunnel keeps answering through conn-2.
    await conf.connector.shutdown()
    for _ in range(5):
        resp = await conf.query("SELECT COUNT(*) AS c FROM notes")
        assert resp.status == 200, resp.raw
        assert resp.rows == [[2]]


async def test_connector_cut_mid_stream_ends_with_transport_lost_then_recovers(
    conf: Conformance,
) -> None:
    url = f"{conf.relay.http_url}/v1/tunnels/demo/query"
    headers = {"Authorization": f"Bearer {conf.token()}"}
    body = b""
    with trio.fail_after(60):
        async with conf.http.stream("POST", url, json={"sql": WIDE}, headers=headers) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            body += await chunks.__anext__()
            # The result (6 MB) is far over the credit window: the connector is mid-stream.
            assert await conf.proxy.cut() > 0
            async for chunk in chunks:
                body += chunk
        lines = [json.loads(x) for x in body.decode().splitlines()]
        assert "columns" in lines[0]
        assert len(lines) - 2 < 100_000  # not all rows: the stream was cut
        assert lines[-1]["error"]["code"] == "transport.lost"
        assert all("done" not in line for line in lines if isinstance(line, dict))
        # The connector reconnects by itself; the tunnel answers again.
        answers = []

        async def answered() -> bool:
            answers.append(resp := await conf.query("SELECT COUNT(*) AS c FROM notes"))
            if resp.status != 200:
                assert resp.terminal["error"]["code"] in {"tunnel.no_connector", "transport.lost"}
            return resp.status == 200

        await eventually(answered, interval=0.1)
        assert answers[-1].rows == [[2]]
