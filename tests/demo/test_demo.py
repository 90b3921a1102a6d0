"""`edgetds demo` as a newcomer runs it: the real command in a subprocess, real child processes.

Each test gets its own state directory under tmp_path and checks, besides the output, the files
the parts wrote (tdslite's statement log, the connector's audit chain) and that every process the
demo started is gone afterwards (by the PIDs in STATE/pids and by scanning /proc).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from connector.audit import verify_files
from tests.support.waiting import eventually_blocking

EDGETDS = [sys.executable, "-m", "edgetds"]
DEMO = [*EDGETDS, "demo"]
LOADTEST_QUERIES = 30  # per load-test example run against `demo --serve`
#: starting four Python processes and telling the story takes ~15 s here; generous for slow CI
RUN_TIMEOUT_S = 180


def _pids(state: Path) -> dict[str, int]:
    lines = (state / "pids").read_text().split()
    return {name: int(pid) for name, pid in zip(lines[::2], lines[1::2], strict=True)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (our children name the state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and _alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


def _assert_no_children(state: Path) -> None:
    pids = _pids(state)
    assert set(pids) == {"tdslite", "idp", "relay", "connector"}
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert _processes_mentioning(str(state)) == []


def _section(output: str, start: str) -> str:
    """The output from the heading that starts with ``--- start`` to the next heading."""
    match = re.search(rf"^--- {re.escape(start)}.*?(?=^--- |\Z)", output, re.M | re.S)
    assert match, f"no section {start!r} in the output"
    return match.group(0)


def test_demo_tells_the_story_and_leaves_nothing_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = subprocess.run(
        [*DEMO, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for part in ("tdslite", "the dev IdP", "the relay", "the connector conn-1"):
        assert re.search(rf"starting {re.escape(part)} .*\.\.\. ok \(", out), part

    read = _section(out, "1. alice")
    assert "<- 200 OK: 3 row(s)" in read
    table = read.split("<- 200 OK", 1)[1].splitlines()[1:]
    assert table[0].split() == ["name", "orders", "total"]
    assert len([line for line in table[2:] if re.match(r"^\s+\S.*\d+\.\d\d$", line)]) == 3

    who = _section(out, "1b. alice")
    assert re.search(r"^\s+reader\s+alice$", who, re.M)

    delete = _section(out, "2. alice")
    assert "<- 403 policy.not_read_only:" in delete
    statements = [
        json.loads(line) for line in (state / "statements.jsonl").read_text().splitlines()
    ]
    texts = [str(s["statement"]).upper() for s in statements]
    assert any("TOP 3" in t for t in texts)  # step 1's SELECT did reach tdslite ...
    assert not any("DELETE" in t for t in texts)  # ... the refused DELETE never did
    assert any(t.startswith("UPDATE PRODUCTS") for t in texts)

    assert "<- 200 OK: 1 row(s) affected" in _section(out, "3. bob")
    assert re.search(r"^\s+Widget\s+widgets\s+5\.49$", _section(out, "3b. bob"), re.M)
    moved = _section(out, "3c. bob")
    assert "<- 200 sql.error: SQL Server error 547" in moved
    assert "the transaction was rolled back" in moved
    assert "nothing of the failed transaction stayed" in _section(out, "3d. bob")
    assert "<- 401 auth.expired:" in _section(out, "4. mallory")
    assert "<- 403 policy.denied:" in _section(out, "5. carol")

    audit = _section(out, "6. the connector's audit log")
    assert "ok: 13 records, chain intact" in audit
    result = verify_files([state / "audit.jsonl"])
    assert result.ok
    assert result.records == 13
    records = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    seen = [(r["subject"], r["outcome"]["status"], r.get("session", {}).get("op")) for r in records]
    # The failed UPDATE's record is written once its answer went out, the session's end record by
    # the session's own task once the client's rollback ended it: the two can land in either
    # order (each is chained where it was written).
    seen[8:10] = sorted(seen[8:10], key=lambda r: r[2] or "")
    assert seen == [
        ("alice", "ok", None),
        ("alice", "ok", None),
        ("alice", "refused", None),
        ("bob", "ok", None),
        ("bob", "ok", None),
        # the transaction of step 3c between two SELECTs: begin, the UPDATE that worked, the
        # one that failed and the session's end (rolled back), the rollback op that ended it
        ("bob", "ok", None),
        ("bob", "ok", "begin"),
        ("bob", "ok", "run"),
        ("bob", "ok", "end"),
        ("bob", "error", "run"),
        ("bob", "ok", "rollback"),
        ("bob", "ok", None),
        ("carol", "refused", None),
    ]
    assert "UNEXPECTED" not in out
    assert "every step went as the script says." in out
    assert "stopping 4 processes ... done" in out
    _assert_no_children(state)
    # the dev IdP's keys survive for `edgetds dev-idp token`; the rest is recreated next run
    assert (state / "idp" / "keys.json").exists()
    # each part's log: JSON lines, `stopped` (the demo's SIGTERM) last
    for name in ("tdslite", "idp", "relay", "connector"):
        lines = [
            json.loads(line) for line in (state / "logs" / f"{name}.log").read_text().splitlines()
        ]
        assert lines[-1]["event"] == "stopped", (name, lines[-3:])
        assert lines[-1]["reason"].startswith("SIGTERM"), (name, lines[-1])


class ServingDemo:
    """`edgetds demo --serve` in a subprocess; its output lines are read by a thread."""

    def __init__(self, tmp_path: Path, state: Path) -> None:
        # A process started with SIGINT ignored (a shell's `cmd &`, `nohup`) passes that on to
        # its children, and Python keeps an ignored SIGINT ignored: the demo would never see the
        # Ctrl-C these tests send. A handled SIGINT is reset to the default by exec: handle it
        # here while the demo starts.
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.process = subprocess.Popen(
                [*DEMO, "--serve", "--state-dir", str(state)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=tmp_path,
            )
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self, until: str = "press Ctrl-C") -> list[str]:
        """Lines up to and including the first that contains ``until``."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not self.seen or until not in self.seen[-1]:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "demo --serve exited early:\n" + "".join(self.seen)
            self.seen.append(line.rstrip("\n"))
        return self.seen

    def stop(self, signum: int = signal.SIGINT) -> str:
        """Send ``signum``, wait for the exit (kill after 60 s); all output, for assertions."""
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            while (line := self.lines.get(timeout=10)) is not None:
                self.seen.append(line.rstrip("\n"))
            assert self.process.stdout is not None
            self.process.stdout.close()
        return "\n".join(self.seen)


def _curl_request(seen: list[str]) -> tuple[str, dict[str, str], dict[str, object]]:
    """(url, headers, body) of the printed `TOKEN=...` and `curl ...` lines."""
    token = next(line.split("=", 1)[1] for line in seen if line.strip().startswith("TOKEN=ey"))
    curl = next(line.strip() for line in seen if line.strip().startswith("curl "))
    argv = shlex.split(curl.replace("$TOKEN", token))
    headers = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
    assert headers["Authorization"] == f"Bearer {token}"
    return argv[-1], headers, json.loads(argv[argv.index("-d") + 1])


def test_demo_serve_answers_the_printed_curl_command_until_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    demo = ServingDemo(tmp_path, state)
    try:
        seen = demo.wait_ready()
        url, headers, body = _curl_request(seen)
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/v1/tunnels/demo/query")
        response = httpx.post(url, headers=headers, json=body, timeout=30)
        assert response.status_code == 200, response.text
        records = [json.loads(line) for line in response.text.splitlines()]
        assert [c["name"] for c in records[0]["columns"]] == ["name", "region"]
        rows = records[1:-1]
        assert rows
        assert all(region == "west" for _, region in rows)
        assert records[-1]["done"]["rows"] == len(rows)

        # the printed mint command works as printed (minus the optional [...] parts)
        mint = next(line for line in seen if "dev-idp token" in line)
        command = mint.split("$(", 1)[1].split(" [", 1)[0]
        assert "--key-dir state/idp --sub bob --groups admins" in command
        bob = subprocess.run(
            shlex.split(command), capture_output=True, text=True, cwd=tmp_path, timeout=60
        )
        assert bob.returncode == 0, bob.stderr
        headers["Authorization"] = f"Bearer {bob.stdout.strip()}"
        sql = {"sql": "UPDATE customers SET region = @r WHERE id = 1", "params": {"r": "east"}}
        response = httpx.post(url, headers=headers, json=sql, timeout=30)
        assert response.status_code == 200, response.text
        assert json.loads(response.text.splitlines()[-1])["done"]["rows_affected"] == 1

        # the load-test examples run as shipped against the demo, without errors
        base = url.removesuffix("/v1/tunnels/demo/query")
        for example in ("point-reads.toml", "open-loop.toml"):
            scenario = Path(__file__).parents[2] / "examples" / "loadtest" / example
            loadtest = subprocess.run(
                [*EDGETDS, "loadtest", "--scenario", str(scenario), "--target", base,
                 "--tunnel", "demo", "--dev-idp-key-dir", "state/idp", "--count",
                 str(LOADTEST_QUERIES), "--no-progress", "--out", f"lt-{example}"],
                capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
            )  # fmt: skip
            assert loadtest.returncode == 0, loadtest.stdout + loadtest.stderr
            assert f"({LOADTEST_QUERIES} ok, 0 errors)" in loadtest.stdout

        # a second demo must not wipe the state of the running one
        second = subprocess.run(
            [*DEMO, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert second.returncode == 1
        assert "another `edgetds demo` is using" in second.stdout
        assert (state / "audit.jsonl").exists()

        # paths are shown relative to the current directory (tmp_path here)
        assert any("audit log:       state/audit.jsonl" in line for line in seen)
        assert any("statement log:   state/statements.jsonl" in line for line in seen)
        pids = _pids(state)
        assert all(_alive(pid) for pid in pids.values())  # still serving
    finally:
        output = demo.stop(signal.SIGINT)
    assert demo.process.returncode == 0, output
    assert "stopping 4 processes ... done" in output
    _assert_no_children(state)
    # our two queries are in the audit chain after the story's 13, and the chain verifies
    result = verify_files([state / "audit.jsonl"])
    assert result.ok
    assert result.records == 15 + 2 * LOADTEST_QUERIES


def test_children_die_with_a_killed_demo(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the children's PR_SET_PDEATHSIG must still stop them."""
    state = tmp_path / "state"
    demo = ServingDemo(tmp_path, state)
    try:
        demo.wait_ready(until="starting the relay")  # three children run, a fourth may start
        # the line comes before the relay's process: wait for the pids file to name it
        eventually_blocking(
            lambda: {"tdslite", "idp", "relay"} <= set(_pids(state)), timeout_s=RUN_TIMEOUT_S
        )
        pids = _pids(state)
        assert {"tdslite", "idp", "relay"} <= set(pids)
        assert all(_alive(pid) for pid in pids.values())
    finally:
        demo.stop(signal.SIGKILL)
    pids = _pids(state)  # the connector too, if the demo got to record it
    # PR_SET_PDEATHSIG sends SIGTERM: each part stops in its own time, a part forked just before
    # the SIGKILL (not yet in STATE/pids) too
    eventually_blocking(
        lambda: (
            not any(_alive(pid) for pid in pids.values()) and not _processes_mentioning(str(state))
        ),
        timeout_s=30,
    )
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert _processes_mentioning(str(state)) == []


@pytest.mark.parametrize(
    "until",
    ["starting tdslite", "starting the dev IdP", "starting the relay", "starting the connector"],
)
def test_ctrl_c_while_starting_stops_what_was_started(tmp_path: Path, until: str) -> None:
    # right after these lines the demo forks the next part: a Ctrl-C landing in the fork was lost
    # (the demo then ran its whole story and kept serving) until PartGroup.start blocked it there
    state = tmp_path / "state"
    demo = ServingDemo(tmp_path, state)
    try:
        demo.wait_ready(until=until)
    finally:
        output = demo.stop(signal.SIGINT)
    assert demo.process.returncode == 130, output
    assert "edgetds demo: stopping (Ctrl-C)" in output
    assert re.search(r"stopping [234] processes \.\.\. done", output)
    assert "every step went as the script says" not in output
    assert [name for name, pid in _pids(state).items() if _alive(pid)] == []
    assert _processes_mentioning(str(state)) == []


def test_demo_refuses_to_wipe_a_directory_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    done = subprocess.run(
        [*DEMO, "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "was not made by `edgetds demo`" in done.stdout
    assert precious.read_text() == "keep me\n"


def test_demo_names_the_part_that_did_not_start_and_stops_the_others(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = subprocess.run(
        [*DEMO, "--state-dir", str(state), "--start-timeout", "0.01"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "starting tdslite" in done.stdout
    assert "FAILED" in done.stdout
    assert re.search(
        r"tdslite did not print its address within 0 s; its log: .*tdslite\.log", done.stdout
    )
    assert "stopping 2 processes ... done" in done.stdout
    pids = _pids(state)
    assert set(pids) == {"tdslite", "idp"}
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert _processes_mentioning(str(state)) == []


def test_demo_help_explains_the_story_and_the_files() -> None:
    done = subprocess.run([*DEMO, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for needle in ("policy.not_read_only", "auth.expired", "audit.jsonl", "statements.jsonl"):
        assert needle in done.stdout
