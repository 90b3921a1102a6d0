"""SIGHUP refuses what start-up refuses, on the real `edgetds relay serve` and `edgetds connector
run` processes: every config that start-up refuses (unknown key, bad value, issuers the token
verifier rejects, a policy naming a login with no [logins.NAME], a missing file) is refused by a
reload too; the running config keeps serving queries, and one `relay.reload_failed` /
`connector.reload_failed` log event lists every problem.
"""

from __future__ import annotations

import json
import signal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.ops.test_rotation import PYTHON, _logged, _start_relay, _until
from tests.relay.test_relay_config_cli import STARTUP_REFUSALS, write_config
from tests.support.ops_stack import Stack, open_stack, post_query, write_stack_config


def _relay_config(stack: Stack, tmp_path: Path) -> Path:
    """The example relay.toml for this stack: its connector key, tunnel and dev IdP."""
    path = write_config(tmp_path / "relay")
    conn = (tmp_path / "relay" / "keys" / "conn-1.pub").read_text().strip()
    text = path.read_text().replace(conn, stack.key.public_key)
    text = text.replace(
        "[tunnels.sales]", "[tunnels.demo]"
    )  # the stack's tunnel (tests/support/ops_stack.py)
    path.write_text(text.replace("http://127.0.0.1:8080", stack.idp.issuer))
    return path


def _count(log: Path, event: str) -> int:
    return len(_events(log, event))


async def test_relay_sighup_refuses_every_config_start_up_refuses(
    tmp_path: Path,
) -> None:
    async with open_stack(tmp_path, relay=False) as stack:
        config = _relay_config(stack, tmp_path)
        good = config.read_text()
        token = stack.token()
        refusals = [*STARTUP_REFUSALS, (("", ""), "cannot read relay config")]
        # start-up refuses each (a file of its own each, side by side: each is a process start)
        starts = trio.CapacityLimiter(3)

        async def refused_at_start(number: int, old: str, new: str, needle: str) -> None:
            path = config.with_name(f"start-{number}.toml")  # relative paths stay the same
            if old:
                assert old in good
                path.write_text(good.replace(old, new, 1))
            async with starts:
                assert await _refused_at_start("relay", "serve", path, needle) == 2

        async with trio.open_nursery() as nursery:
            for number, ((old, new), needle) in enumerate(refusals, 1):
                nursery.start_soon(refused_at_start, number, old, new, needle)
        async with trio.open_nursery() as nursery:
            relay = await _start_relay(config, tmp_path / "relay.log", nursery)
            connector_toml = write_stack_config(
                stack,
                "connector",
                relay_urls=[relay.url.replace("http://", "ws://")],
                relay_public_keys=[(config.parent / "keys" / "relay.pub").read_text().strip()],
            )
            connector = await _run_connector(nursery, connector_toml, tmp_path / "connector.log")
            async with httpx.AsyncClient(timeout=10) as client:

                async def serves() -> bool:
                    status, last = await relay.query(client, token)
                    return status == 200 and '"done"' in last

                await _until("the relay serves queries through the connector", serves)
                for number, ((old, new), needle) in enumerate(refusals, 1):
                    if old:
                        config.write_text(good.replace(old, new, 1))
                    else:
                        config.unlink()  # a missing file
                    # a reload refuses it too: logged, the running config kept and serving
                    relay.process.send_signal(signal.SIGHUP)
                    await _until(
                        f"reload {number} is refused",
                        partial(_failed_reloads_reach, relay.log, number),
                    )
                    event = _events(relay.log, "relay.reload_failed")[-1]
                    assert needle in "\n".join(event["problems"]), event
                    assert _count(relay.log, "relay.reloaded") == 0, needle
                    assert await serves(), needle
                # several problems at once: every one is in the one event
                config.write_text(
                    good.replace("[relay]", "[relay]\nlisten_port = 1")
                    .replace("query_burst = 200", 'query_burst = "lots"')
                    .replace('audience = "edgetds"', 'audience = "edgetds"\njwks_url = "x"')
                )
                relay.process.send_signal(signal.SIGHUP)
                number = len(refusals) + 1
                await _until(
                    "the reload is refused", partial(_failed_reloads_reach, relay.log, number)
                )
                event = _events(relay.log, "relay.reload_failed")[-1]
                assert len(event["problems"]) == 3, event
                for needle in ("listen_port", "query_burst must be a number", "jwks_url"):
                    assert needle in "\n".join(event["problems"]), event
                assert await serves()
                # the good file again: applied
                config.write_text(good)
                relay.process.send_signal(signal.SIGHUP)
                await _until("the good config reloads", _logged(relay.log, "relay.reloaded"))
                assert await serves()
                assert "relay.reload_partial" not in relay.log.read_text()
            await _stop(connector)
            await _stop(relay.process)


async def _failed_reloads_reach(log: Path, number: int) -> bool:
    return _count(log, "relay.reload_failed") >= number


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    """The relay's JSON log lines of `event`."""
    text = log.read_text()
    complete = text[: text.rfind("\n") + 1].splitlines()  # not a line being written
    lines = [json.loads(line) for line in complete if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def _run_connector(nursery: trio.Nursery, config: Path, log: Path) -> trio.Process:
    with log.open("wb") as stderr:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, [*PYTHON, "connector", "run", "--config", str(config)],
                    stderr=stderr, check=False)
        )  # fmt: skip
    return process


async def _refused_at_start(command: str, action: str, config: Path, needle: str) -> int:
    """Start `edgetds COMMAND ACTION --config CONFIG`; it must exit at once naming ``needle``.

    Returns:
        its exit status.
    """
    with trio.fail_after(30):
        done = await trio.run_process(
            [*PYTHON, command, action, "--config", str(config)], capture_stderr=True, check=False
        )
    assert needle in done.stderr.decode(), done.stderr.decode()
    return done.returncode


async def _stop(process: trio.Process) -> None:
    """SIGTERM: the process drains (nothing is in flight) and exits."""
    process.send_signal(signal.SIGTERM)
    assert await process.wait() == 0


#: Edits of the stack's connector.toml (or its policy.toml) that `connector run` refuses at
#: start, each with a piece of its message.
CONNECTOR_REFUSALS: list[tuple[str, tuple[str, str], str]] = [
    ("connector.toml", ("[database]", "[database]\nhots = 1"), "[database.hots]"),
    ("connector.toml", ("pool_size = 16", "pool_size = 0"), "[logins.reader.pool_size]"),
    ("connector.toml", ("[policy]", "[polisy]\n[policy]"), "[polisy]"),
    ("connector.toml", ('"edgetds"', '"edgetds"\njwks_url = "x"'), "jwks_url"),
    ("policy.toml", ('login = "writer"', 'login = "nobody"'), "nobody"),
    ("policy.toml", ("max_rows = 1000000", "max_rows = -5"), "max_rows"),
    ("connector.toml", ('file = "audit.jsonl"', 'file = "policy.toml"'), "not an audit record"),
]  # fmt: skip


async def test_connector_sighup_refuses_every_config_start_up_refuses(
    tmp_path: Path,
) -> None:
    async with open_stack(tmp_path) as stack:
        config = stack.config_path
        policy = config.parent / "policy.toml"
        good = {config.name: config.read_text(), policy.name: policy.read_text()}
        log = tmp_path / "connector.log"
        refusals = [*CONNECTOR_REFUSALS, (config.name, ("", ""), "cannot read config")]
        # start-up refuses each (files of their own each, side by side: each is a process start)
        starts = trio.CapacityLimiter(3)
        policy_line = f'file = "{policy.name}"'

        async def refused_at_start(number: int, name: str, old: str, new: str, needle: str) -> None:
            path = config.with_name(f"start-{number}.toml")  # relative paths stay the same
            if name == policy.name:
                edited = policy.with_name(f"policy-start-{number}.toml")
                edited.write_text(good[name].replace(old, new, 1))
                assert policy_line in good[config.name]
                text = good[config.name].replace(policy_line, f'file = "{edited.name}"')
                path.write_text(text)
            elif old:
                path.write_text(good[name].replace(old, new, 1))
            assert old in good[name], (name, old)
            async with starts:
                assert await _refused_at_start("connector", "run", path, needle) == 1

        async with trio.open_nursery() as nursery:
            for number, (name, (old, new), needle) in enumerate(refusals, 1):
                nursery.start_soon(refused_at_start, number, name, old, new, needle)
        async with trio.open_nursery() as nursery:
            connector = await _run_connector(nursery, config, log)

            async def serves() -> bool:
                status, lines = await post_query(stack, sql="SELECT 1 AS n")
                return status == 200 and "done" in lines[-1]

            await _until("the connector serves", serves)
            for number, (name, (old, new), needle) in enumerate(refusals, 1):
                target = config.parent / name
                if old:
                    target.write_text(good[name].replace(old, new, 1))
                else:
                    target.unlink()
                # a reload refuses it too: logged, the running config kept and serving
                connector.send_signal(signal.SIGHUP)
                await _until(
                    f"reload {number} is refused",
                    partial(_connector_refusals_reach, log, number),
                )
                event = _connector_events(log)[-1]
                assert any(needle in problem for problem in event["problems"]), event
                assert await serves(), needle
                target.write_text(good[name])
            # several problems at once: every one is in the one event
            config.write_text(
                good[config.name]
                .replace("[database]", "[database]\nhots = 1")
                .replace("pool_size = 16", "pool_size = 0", 1)
            )
            policy.write_text(good[policy.name].replace('login = "writer"', 'login = "nobody"'))
            connector.send_signal(signal.SIGHUP)
            await _until(
                "the reload is refused",
                partial(_connector_refusals_reach, log, len(refusals) + 1),
            )
            problems = _connector_events(log)[-1]["problems"]
            assert len(problems) == 2, problems  # the file's: the policy is read after them
            assert any("[database.hots]" in p for p in problems)
            assert any("[logins.reader.pool_size]" in p for p in problems)
            config.write_text(good[config.name])
            connector.send_signal(signal.SIGHUP)
            await _until(
                "the policy problem is reported",
                partial(_connector_refusals_reach, log, len(refusals) + 2),
            )
            assert any("nobody" in p for p in _connector_events(log)[-1]["problems"])
            assert await serves()
            policy.write_text(good[policy.name])
            connector.send_signal(signal.SIGHUP)
            await _until("the good config reloads", _logged(log, "connector.reloaded"))
            assert await serves()
            await _stop(connector)


def _connector_events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "connector.reload_failed":
                events.append(record)
    return events


async def _connector_refusals_reach(log: Path, number: int) -> bool:
    return len(_connector_events(log)) >= number
