"""Corporate egress: the connector reaches the relay through a real HTTP CONNECT proxy.

HTTPS_PROXY (with Basic credentials in the URL) is honoured for ws:// and wss:// relays by
websockets' client, NO_PROXY bypasses it, wrong credentials are a 407 that diag names with a hint.
The proxy is a real one on 127.0.0.1 (tests/support/connect_proxy.py) that counts its tunnels.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from connector.config import load_config
from connector.diag import run_diag
from connector.runtime import open_connector
from tests.support.connect_proxy import ConnectProxy, open_connect_proxy
from tests.support.ops_stack import Stack, open_stack, post_query

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY")


@pytest.fixture(autouse=True)
def _clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _with_credentials(proxy: ConnectProxy, user: str, password: str) -> str:
    return proxy.url.replace("http://", f"http://{user}:{password}@")


def _relay_port(stack: Stack) -> int:
    port = urlsplit(stack.relay.ws_url).port
    assert port is not None
    return port


async def _query_through_connector(stack: Stack) -> tuple[int, list[object]]:
    with trio.fail_after(20):
        async with open_connector(load_config(stack.config_path)) as connector:
            await connector.wait_ready()
            status, lines = await post_query(stack, sql="SELECT 7 AS n")
    return status, list(lines)


async def test_connector_dials_through_https_proxy_with_basic_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        open_connect_proxy(username="corp", password="s3cr:et") as proxy,
        open_stack(tmp_path) as stack,
    ):
        monkeypatch.setenv("HTTPS_PROXY", _with_credentials(proxy, "corp", "s3cr%3Aet"))
        status, lines = await _query_through_connector(stack)
    assert status == 200, lines
    assert lines[1] == [7]
    assert proxy.tunnels, "the connector did not use the proxy"
    assert set(proxy.tunnels) == {("127.0.0.1", _relay_port(stack))}
    assert proxy.refused == 0


async def test_no_proxy_bypasses_the_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_connect_proxy() as proxy, open_stack(tmp_path) as stack:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        status, _lines = await _query_through_connector(stack)
    assert status == 200
    assert proxy.tunnels == []


async def test_diag_goes_through_the_proxy_and_names_a_407(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        open_connect_proxy(username="corp", password="right") as proxy,
        open_stack(tmp_path) as stack,
    ):
        monkeypatch.setenv("HTTPS_PROXY", _with_credentials(proxy, "corp", "right"))
        with trio.fail_after(30):
            good = await run_diag(load_config(stack.config_path))
        monkeypatch.setenv("HTTPS_PROXY", _with_credentials(proxy, "corp", "wrong"))
        with trio.fail_after(30):
            bad = await run_diag(load_config(stack.config_path))
    assert good.ok, good.as_text()
    tcp = next(s for s in good.steps if s.step == "tcp")
    assert f"through {proxy.url} granted" in tcp.detail
    first = bad.first_failure
    assert first is not None, bad.as_text()
    assert first.step == "tcp"
    assert "HTTP 407" in first.detail
    assert "credentials" in first.hint
    assert "wrong" not in bad.as_text()  # the proxy password is never printed
    assert proxy.refused == 1


async def test_ipv6_relay_directly_and_through_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_stack(tmp_path, relay_listen="[::1]:0") as stack:
        assert stack.relay.ws_url.startswith("ws://[::1]:")
        direct, _ = await _query_through_connector(stack)
        with trio.fail_after(30):
            report = await run_diag(load_config(stack.config_path))
        async with open_connect_proxy() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            proxied, _ = await _query_through_connector(stack)
    assert direct == 200
    assert report.ok, report.as_text()
    assert "::1 -> ::1" in report.steps[0].detail
    assert proxied == 200
    assert set(proxy.tunnels) == {("::1", _relay_port(stack))}


async def test_diag_names_an_unusable_proxy_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_stack(tmp_path) as stack:
        monkeypatch.setenv("HTTPS_PROXY", "ftp://proxy.corp:21")
        with trio.fail_after(30):
            report = await run_diag(load_config(stack.config_path))
    first = report.first_failure
    assert first is not None, report.as_text()
    assert first.step == "dns"
    assert "unusable proxy setting" in first.detail
    assert [s.status for s in report.steps[1:6]] == ["skip"] * 5
