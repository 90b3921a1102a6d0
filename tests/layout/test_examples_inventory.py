"""Every example under examples/ is exercised by a test, as shipped.

:data:`EXAMPLES_RUN_BY` maps each example (a file, or a directory for all its files) to how it is
exercised and the tests that do it. A new file under examples/ without an entry fails here, and
so does an entry whose example or test is gone, or whose test never names the example (its
path, file name or directory).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
WALKTHROUGH = "tests/binary/test_walkthrough.py::test_the_production_section_runs_top_to_bottom"
CONFIG_CHECK = "tests/ops/test_examples.py::test_example_config_passes_connector_check"
_APP = "tests/worker/test_example_app_readme.py::test_the_readme_runs_the_app_"
APP_ON_WORKERD = _APP + "on_workerd_and_answers_rows"
APP_ON_WRANGLER = _APP + "under_wrangler_dev_and_answers_rows"

#: example (relative to examples/) -> (how it is exercised, the tests that do it)
EXAMPLES_RUN_BY: dict[str, tuple[str, tuple[str, ...]]] = {
    "connector.toml": (
        "installed as README 'Run it in production' says; check, diag and run by the binary",
        (
            WALKTHROUGH,
            CONFIG_CHECK,
            "tests/connector/test_cli.py::test_example_config_checks_ok",
        ),
    ),
    "policy.toml": (
        "installed beside connector.toml; decides the walkthrough query's role",
        (WALKTHROUGH, "tests/connector/test_cli.py::test_example_config_checks_ok"),
    ),
    "relay.toml": (
        "`edgetds relay serve` with it (keys and issuer filled in)",
        (
            WALKTHROUGH,
            "tests/relay/test_relay_config_cli.py::test_cli_serve_prints_the_url_first_and_drains_on_sigterm",
        ),
    ),
    "okta/connector.toml": ("`edgetds connector check`", (CONFIG_CHECK,)),
    "entra/connector.toml": ("`edgetds connector check`", (CONFIG_CHECK,)),
    "windows-auth/connector.toml": ("`edgetds connector check`", (CONFIG_CHECK,)),
    "rls/connector.toml": ("`edgetds connector check`", (CONFIG_CHECK,)),
    "rls/policy.toml": ("`edgetds connector check` of rls/connector.toml", (CONFIG_CHECK,)),
    "rls/rls.sql": (
        "SQL Server DDL (security policy): its content is checked; no SQL Server runs here",
        ("tests/ops/test_examples.py::test_the_examples_we_promise_exist",),
    ),
    "sql/create-logins.sql": (
        "SQL Server DDL (logins, grants): its presence is checked; no SQL Server runs here",
        ("tests/ops/test_examples.py::test_the_examples_we_promise_exist",),
    ),
    "sql/tdslite-users.toml": (
        "tdslite serves it to README's production walkthrough (the logins of create-logins.sql)",
        (WALKTHROUGH,),
    ),
    "systemd/edgetds-connector.service": (
        "its ExecStartPre and ExecStart run as systemd would; `systemd-analyze verify`",
        (WALKTHROUGH, "tests/ops/test_examples.py::test_systemd_unit_verifies"),
    ),
    "systemd/edgetds-connector@.service": (
        "`systemd-analyze verify` as an instance; two `connector run --replica` processes of one "
        "connector id share the queries",
        (
            "tests/ops/test_examples.py::test_systemd_unit_verifies",
            "tests/connector/test_replicas.py::test_two_replicas_of_one_connector_share_the_queries",
        ),
    ),
    "loadtest": (
        "both scenarios parsed, and run against the demo with no errors",
        (
            "tests/loadtest/test_scenario.py::test_examples_parse",
            "tests/demo/test_demo.py::test_demo_serve_answers_the_printed_curl_command_until_ctrl_c",
        ),
    ),
    "worker-app/README.md": (
        "'Run it locally' followed as written, on workerd and under wrangler dev; its curl "
        "commands answer rows",
        (APP_ON_WORKERD, APP_ON_WRANGLER),
    ),
    "worker-app/src": (
        "served with the relay Worker, a real connector and tdslite",
        (
            APP_ON_WORKERD,
            APP_ON_WRANGLER,
            "tests/worker/test_example_app_e2e.py::test_example_app_serves_the_signed_in_users_orders",
        ),
    ),
    "worker-app/wrangler.toml": (
        "`wrangler dev` from it (RELAY bound through the dev registry); `wrangler deploy "
        "--dry-run` from it, no warning",
        (
            APP_ON_WRANGLER,
            "tests/worker/test_deploy_bundle.py::test_wrangler_dry_run_bundles_without_warnings_under_the_size_limit",
        ),
    ),
}


def _example_files() -> list[str]:
    """Files under examples/ (hidden ones, e.g. wrangler's .wrangler/ state, excepted)."""
    return sorted(
        str(path.relative_to(EXAMPLES))
        for path in EXAMPLES.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.parts[len(EXAMPLES.parts) :])
    )


def _covering_entry(file: str) -> str | None:
    for entry in EXAMPLES_RUN_BY:
        if file == entry or file.startswith(entry + "/"):
            return entry
    return None


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_example_has_a_test() -> None:
    missing = [file for file in _example_files() if _covering_entry(file) is None]
    assert not missing, (
        f"examples without a test: {missing}; add a test that runs each as shipped and name it "
        "in EXAMPLES_RUN_BY"
    )


def test_every_entry_names_an_example_and_tests_that_exercise_it() -> None:
    for entry, (how, tests) in EXAMPLES_RUN_BY.items():
        assert (EXAMPLES / entry).exists(), f"examples/{entry} is gone: drop its entry"
        assert how, entry
        assert tests, entry
        for test in tests:
            file, _, name = test.partition("::")
            assert (ROOT / file).is_file(), test
            assert name in _test_functions(ROOT / file), f"{test}: no such test"
            source = (ROOT / file).read_text()
            names = (entry, Path(entry).name, entry.split("/")[0])
            assert any(n in source for n in names), f"{test} never names {entry}"


def test_a_new_example_without_an_entry_is_noticed() -> None:
    assert _covering_entry("okta/connector.toml") == "okta/connector.toml"
    assert _covering_entry("loadtest/point-reads.toml") == "loadtest"
    assert _covering_entry("kerberos/connector.toml") is None
    assert _covering_entry("worker-app/src2/index.js") is None
