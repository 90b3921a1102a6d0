"""A short load test against the real demo stack: tdslite + dev IdP + Python relay + connector.

Checks that results.json and report.html are written and hold sane numbers; the figures
themselves are not asserted (performance belongs in bench/, never in timed tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from bench.stack import open_demo_stack
from edgetds.loadtest import Plan, TokenSource, load_scenario, run_loadtest, write_report

SCENARIO = """
name = "stack smoke"
seed = 3

[load]
concurrency = 4
count = 40

[identity]
sub = "lt-{vu}"
groups = ["analysts"]

[[queries]]
name = "digit"
weight = 3
sql = "SELECT d, N'label' AS label FROM digits WHERE d = @d"
params = { d = { int = [0, 9] } }

[[queries]]
name = "echo"
weight = 1
query = "echo_int"
direct_sql = "SELECT @n AS n"
params = { n = { int = [1, 100] } }
"""


def check_run(run: dict[str, Any], *, planned: int) -> None:
    assert run["count"] == planned
    assert run["count"] == run["ok"] + run["errors"]
    assert run["errors"] == sum(run["errors_by_code"].values())
    assert run["ok"] == planned, run["errors_by_code"]
    lat = run["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert run["rows"] >= planned  # every query returns one row
    assert run["throughput_qps"] > 0
    assert set(run["by_query"]) == {"digit", "echo"}
    assert sum(q["count"] for q in run["by_query"].values()) == planned
    assert len(run["timeline"]) == planned


def loadtest_command(scenario_file: Path, stack: Any, *options: str) -> list[str]:
    """`edgetds loadtest` as a user types it, against ``stack``'s relay."""
    return [
        sys.executable, "-m", "edgetds", "loadtest", "--scenario", str(scenario_file),
        "--target", stack.relay.http_url, "--tunnel", stack.relay.tunnel, *options,
    ]  # fmt: skip


def check_report(out: Path, runs: tuple[str, ...], planned: int) -> dict[str, Any]:
    doc = json.loads((out / "results.json").read_text())
    assert tuple(doc["runs"]) == runs
    for name in runs:
        check_run(doc["runs"][name], planned=planned)
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 2
    assert "<script" not in page
    assert 'href="http' not in page
    assert "src=" not in page
    return doc


async def test_loadtest_against_the_stack_and_direct(tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.toml"
    scenario_file.write_text(SCENARIO)
    with trio.fail_after(90):
        async with open_demo_stack(tmp_path / "stack") as stack:
            scenario = load_scenario(scenario_file)
            tokens = TokenSource.from_dev_idp(
                stack.idp_key_dir, scenario.identity, users=4, expires_in=300
            )
            plan = Plan(
                scenario=scenario,
                target_url=stack.relay.http_url,
                tunnel=stack.relay.tunnel,
                tokens=tokens,
                direct=stack.direct,
                live=False,
            )
            runs = await run_loadtest(plan)
            write_report(tmp_path / "out", scenario.name, runs)
            doc = check_report(tmp_path / "out", ("tunnel", "direct"), planned=40)
            assert doc["runs"]["tunnel"]["bytes"] > 0
            ratios = doc["comparison"]["tunnel_over_direct"]
            assert ratios["p50"] > 0
            assert ratios["throughput"] > 0
            assert "Tunnel over direct" in (tmp_path / "out" / "report.html").read_text()

            # the real command line, as a user runs it, against the same running stack
            cmd = loadtest_command(
                scenario_file, stack, "--dev-idp-key-dir", str(stack.idp_key_dir),
                "--count", "20", "--concurrency", "2", "--out", str(tmp_path / "cli-out"),
            )  # fmt: skip
            done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True)
            assert done.returncode == 0, done.stderr.decode()
            assert b"tunnel: 20 queries (20 ok, 0 errors)" in done.stdout
            check_report(tmp_path / "cli-out", ("tunnel",), planned=20)


async def test_bad_tokens_are_counted_by_code(tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.toml"
    scenario_file.write_text(SCENARIO)
    with trio.fail_after(60):
        async with open_demo_stack(tmp_path / "stack") as stack:
            scenario = load_scenario(scenario_file).with_load(count=6, concurrency=2)
            expired = stack.idp.mint(sub="late", groups=["analysts"], expires_in=-600)
            plan = Plan(
                scenario=scenario,
                target_url=stack.relay.http_url,
                tunnel=stack.relay.tunnel,
                tokens=TokenSource([expired]),
                live=False,
            )
            run = (await run_loadtest(plan))["tunnel"]
            assert run.count == 6
            assert run.ok == 0
            assert run.errors_by_code == {"auth.expired": 6}
            assert "expired" in run.error_samples["auth.expired"]

            # the command line fails the run beyond --max-error-rate (default 1%), and says why
            token_file = tmp_path / "tokens.txt"
            token_file.write_text(expired + "\n")
            token_file.chmod(0o600)
            cmd = loadtest_command(
                scenario_file, stack, "--token-file", str(token_file),
                "--count", "6", "--concurrency", "2", "--no-progress",
            )  # fmt: skip
            failed = await trio.run_process(
                [*cmd, "--out", str(tmp_path / "failed")], capture_stdout=True, capture_stderr=True,
                check=False,
            )  # fmt: skip
            stderr = failed.stderr.decode()
            assert failed.returncode == 1, stderr
            assert "tunnel: 6 of 6 queries failed (100.0%), above --max-error-rate 1.0%" in stderr
            assert "auth.expired x6" in stderr
            assert "auth.expired: " in failed.stdout.decode()  # the sample message
            assert expired not in failed.stdout.decode() + stderr  # never the token
            accepted = await trio.run_process(
                [*cmd, "--out", str(tmp_path / "accepted"), "--max-error-rate", "100%"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert accepted.returncode == 0, accepted.stderr.decode()


def test_max_error_rate_must_be_a_fraction_or_a_percentage(tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.toml"
    scenario_file.write_text(SCENARIO)
    for bad in ("2", "-0.1", "lots", "150%"):
        done = subprocess.run(
            [sys.executable, "-m", "edgetds", "loadtest", "--scenario", str(scenario_file),
             "--max-error-rate", bad],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 2
        assert "is not a fraction between 0 and 1" in done.stderr
