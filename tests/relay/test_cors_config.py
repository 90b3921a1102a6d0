"""A tunnel's ``cors_origins`` (SPEC.md 11.7): only exact origins as browsers send them load, on
both relays alike; every bad entry is named with its tunnel and its index."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from edgetds.devidp import open_dev_idp
from relay.config import ConfigError, load_config
from relay.cors import origin_problem
from tests.relay.test_relay_config_cli import write_config
from tests.support.relays import open_python_relay
from tests.support.worker_relay import ROOT

ACCEPTED = [
    "https://app.example.com",
    "http://localhost:3000",
    "http://127.0.0.1:8080",
    "http://[::1]:5173",
    "https://xn--bcher-kva.example",
    "http://10.0.0.7:8080",
    "http://[fe80::1]",
    "http://app_1.internal",
]
#: entry -> a piece of the problem both relays name
REFUSED: dict[Any, str] = {
    "*": "is a wildcard",
    "https://*.example.com": "is a wildcard",
    "https://app.example.com/": "has a path",
    "https://app.example.com/app": "has a path",
    "https://app.example.com?x=1": "has a path",
    "https://app.example.com#top": "has a path",
    "https://user@app.example.com": "has a path",
    "app.example.com": "is not an origin",
    "null": "is not an origin",
    "ftp://app.example.com": "is not an origin",
    "https://": "is not an origin",
    "https://app.example.com:99999": "is not an origin",
    "HTTPS://App.Example.com": 'write "https://app.example.com"',
    "https://app.example.com:443": 'write "https://app.example.com"',
    "http://app.example.com:80": 'write "http://app.example.com"',
    "https://app.example.com:": 'write "https://app.example.com"',
    "https://bücher.example": "not ASCII",
    7: "must be a string",
    "http://a b.example": "is not an origin",
    "https://app..example.com": "is not an origin",
    "https://app.example.com:8080:1": "is not an origin",
    "http://[::1": "is not an origin",
    "http://[fe80::1%25eth0]": "is not an origin",
    "http://[1::2::3]": "is not an IPv6 address",
    "http://[0:0::1]:8080": 'write "http://[::1]:8080"',
    "http://[::FFFF:1.2.3.4]": 'write "http://[::ffff:102:304]"',
    "http://0x7f.1": "four decimal numbers",
    "http://127.1": "four decimal numbers",
    "http://01.2.3.4": "four decimal numbers",
    "http://256.1.1.1": "four decimal numbers",
    "http://app.example.com:08080": 'write "http://app.example.com:8080"',
    "http://app.example.com:99999999999999999999": "above 65535",
}
PARITY = ROOT / "relay" / "worker" / "scripts" / "parity.mjs"


def test_exact_origins_are_accepted_and_others_refused_with_the_reason() -> None:
    assert [origin_problem(o) for o in ACCEPTED] == [None] * len(ACCEPTED)
    for entry, reason in REFUSED.items():
        problem = origin_problem(entry)
        assert problem is not None, entry
        assert reason in problem, (entry, problem)


def test_the_worker_checks_origins_exactly_as_the_python_relay() -> None:
    entries = [*ACCEPTED, *REFUSED]
    result = subprocess.run(
        ["node", str(PARITY)],
        input=json.dumps({"values": [], "origins": entries}, ensure_ascii=False),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout)["origin_problems"] == [origin_problem(e) for e in entries]


def test_every_bad_entry_is_named_with_its_tunnel(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text().replace(
        "# cors_origins = [", 'cors_origins = ["https://ok.example", "*", "https://a.example/", '
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        'cors_origins[1] = "*" ' + str(origin_problem("*")),
        'cors_origins[2] = "https://a.example/" ' + str(origin_problem("https://a.example/")),
    ]
    assert all("[tunnels.sales]" in p for p in info.value.problems)


def test_a_list_of_origins_loads_and_is_kept(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("# cors_origins =", "cors_origins ="))
    config = load_config(path)
    assert config.tunnels["sales"].cors_origins == (
        "https://app.example.com",
        "http://localhost:5173",
    )
    path.write_text(path.read_text().replace("cors_origins = [", 'cors_origins = "x" #['))
    with pytest.raises(ConfigError, match=r"\[tunnels.sales\]: cors_origins must be a list"):
        load_config(path)


async def test_a_reload_applies_a_changed_list_at_once() -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    async with (
        open_dev_idp() as idp,
        open_python_relay(tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer) as (
            handle,
            running,
        ),
        httpx.AsyncClient(timeout=20) as client,
    ):
        url = f"{handle.http_url}/v1/tunnels/demo/query"
        with trio.fail_after(20):
            before = await client.options(url, headers=preflight)
            app = running.app
            demo = dataclasses.replace(
                app.config.tunnels["demo"], cors_origins=("https://app.example.com",)
            )
            app.reload(dataclasses.replace(app.config, tunnels={"demo": demo}))
            after = await client.options(url, headers=preflight)
    assert before.status_code == 403
    assert after.status_code == 204
    assert after.headers["access-control-allow-origin"] == "https://app.example.com"
