"""`edgetds loadtest`: run a scenario against a relay (and/or straight against SQL Server)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  # 10 s, 8 virtual users, tokens minted by the dev IdP of `edgetds demo --serve`
  edgetds loadtest --scenario examples/loadtest/point-reads.toml \\
      --target http://127.0.0.1:8443 --tunnel demo --dev-idp-key-dir .demo/idp \\
      --duration 10 --concurrency 8

  # open loop at 200 queries/s, tokens of a real IdP (one JWT per line)
  edgetds loadtest --scenario s.toml --target http://127.0.0.1:8443 --tunnel demo \\
      --token-file tokens.txt --rate 200 --count 5000

  # the same scenario straight against SQL Server with python-tds: the baseline
  edgetds loadtest --scenario s.toml --count 2000 \\
      --direct "host=127.0.0.1;port=1433;user=reader;password=@reader.pw;database=sample"

  # both in one run: the report shows the tunnel's cost as ratios over direct
  edgetds loadtest --scenario s.toml --target http://127.0.0.1:8443 --tunnel demo \\
      --dev-idp-key-dir .demo/idp --direct "host=...;..." --compare --duration 20

Results go to --out (default loadtest-results/<time>): results.json, report.html (inline SVG, no
external files) and, with matplotlib installed (pip install 'edgetds[charts]'), timeline.png and
distribution.png. Errors are counted by code, with the first message of each as a sample.
Targets must be loopback addresses unless --allow-remote is given. Scenario
format: examples/loadtest/*.toml and the module docstring of edgetds/loadtest/scenario.py.
Exit status: 0 when every run finished with an error rate at or below --max-error-rate
(default 0.01, i.e. 1% of queries); 1 when a run failed more often than that (the summary says
which run, how many and the most frequent codes); 2 when the command line or scenario is wrong.
A load test meant to push past the breaking point takes --max-error-rate 1.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "loadtest",
        help="drive a relay's HTTP API (or SQL Server directly) with a scenario; write a report",
        description=(
            "Run N virtual users with real tokens against the relay's HTTP API, by a TOML "
            "scenario, and write latency percentiles (HDR histogram), throughput and errors by "
            "code to results.json and report.html."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", required=True, metavar="FILE", help="scenario TOML file")
    parser.add_argument("--target", metavar="URL", help="relay HTTP base URL (http://127.0.0.1:P)")
    parser.add_argument("--tunnel", default="demo", help="tunnel name (default: demo)")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--token-file", metavar="F", help="IdP tokens, one per line (round robin)")
    tokens.add_argument(
        "--dev-idp-key-dir", metavar="DIR", help="mint one token per virtual user with these keys"
    )
    parser.add_argument(
        "--issuer", metavar="URL", help="issuer for minted tokens (default: DIR/issuer)"
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, metavar="S", help="run for S seconds")
    stop.add_argument("--count", type=int, metavar="N", help="run N queries in total")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--concurrency", type=int, metavar="N", help="closed loop: N virtual users")
    shape.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="open loop: start R queries/s (scenario concurrency caps in-flight)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output directory (default loadtest-results/<time>)"
    )
    parser.add_argument(
        "--direct",
        metavar="CONN",
        help='SQL Server straight: "host=..;port=..;user=..;password=..|@FILE;database=.."',
    )
    parser.add_argument(
        "--compare", action="store_true", help="run --target AND --direct; report the ratios"
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow non-loopback targets (you own them)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no live display or progress lines"
    )
    parser.add_argument(
        "--max-error-rate",
        type=_error_rate,
        default=0.01,
        metavar="R",
        help="exit 1 when more than this fraction of a run's queries fail (default 0.01 = 1%%)",
    )
    parser.set_defaults(func=run)


def _error_rate(text: str) -> float:
    try:
        rate = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fraction between 0 and 1 (e.g. 0.01) or a percentage (e.g. 1%)"
        )
    return rate


def _plan(args: argparse.Namespace) -> Any:
    from edgetds.loadtest.runner import Plan
    from edgetds.loadtest.scenario import load_scenario
    from edgetds.loadtest.targets import TargetError, TokenSource, parse_direct

    scenario = load_scenario(args.scenario).with_load(
        concurrency=args.concurrency, rate=args.rate, duration_s=args.duration, count=args.count
    )
    direct = parse_direct(args.direct) if args.direct else None
    if args.compare and (direct is None or not args.target):
        raise TargetError("--compare needs both --target URL and --direct CONN")
    run_tunnel = bool(args.target) and (direct is None or args.compare)
    tokens = None
    if run_tunnel:
        if args.token_file:
            tokens = TokenSource.from_file(args.token_file)
        elif args.dev_idp_key_dir:
            load = scenario.load
            lifetime = int((load.duration_s or 3600) + load.timeout_s + 300)
            tokens = TokenSource.from_dev_idp(
                args.dev_idp_key_dir,
                scenario.identity,
                users=load.concurrency,
                expires_in=lifetime,
                issuer=args.issuer,
            )
    return Plan(
        scenario=scenario,
        target_url=args.target if run_tunnel else None,
        tunnel=args.tunnel,
        tokens=tokens,
        direct=direct,
        live=False if args.no_progress else None,
        allow_remote=args.allow_remote,
    )


def _print_summary(runs: dict[str, Any], doc: dict[str, Any], written: list[Path]) -> None:
    for name, run in runs.items():
        lat = run.latency_ms
        print(
            f"{name}: {run.count} queries ({run.ok} ok, {run.errors} errors) "
            f"in {run.duration_s:.1f}s "
            f"= {run.throughput_qps:.1f} q/s; latency ms p50 {lat['p50']} p90 {lat['p90']} "
            f"p99 {lat['p99']} p99.9 {lat['p99_9']} max {lat['max']}; rows {run.rows}"
        )
        if run.errors_by_code:
            print(f"  errors by code: {run.errors_by_code}")
            for code, message in run.error_samples.items():
                print(f"  {code}: {message}")
    if doc.get("comparison"):
        ratios = doc["comparison"]["tunnel_over_direct"]
        print("tunnel over direct: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    print("wrote " + ", ".join(str(path) for path in written))


def run(args: argparse.Namespace) -> int:
    import trio

    from edgetds.loadtest.report import results_document, write_report
    from edgetds.loadtest.runner import run_loadtest
    from edgetds.loadtest.scenario import ScenarioError
    from edgetds.loadtest.targets import TargetError

    try:
        plan = _plan(args)
        plan.check()
    except (ScenarioError, TargetError) as exc:
        print(f"edgetds loadtest: {exc}", file=sys.stderr)
        return 2
    runs = trio.run(run_loadtest, plan)
    out = Path(args.out or Path("loadtest-results") / time.strftime("%Y%m%d-%H%M%S"))
    written = write_report(out, plan.scenario.name, runs)
    _print_summary(runs, results_document(plan.scenario.name, runs), written)
    failing = {
        name: run
        for name, run in runs.items()
        if run.count == 0 or run.error_rate > args.max_error_rate
    }
    for name, run in failing.items():
        if run.count == 0:
            print(f"edgetds loadtest: {name}: no query finished", file=sys.stderr)
            continue
        codes = sorted(run.errors_by_code.items(), key=lambda item: -item[1])[:3]
        print(
            f"edgetds loadtest: {name}: {run.errors} of {run.count} queries failed "
            f"({run.error_rate:.1%}), above --max-error-rate {args.max_error_rate:.1%}; "
            "most frequent: " + ", ".join(f"{code} x{n}" for code, n in codes),
            file=sys.stderr,
        )
    return 1 if failing else 0
