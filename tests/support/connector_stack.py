"""Build a real connector for tests: key files, a connector.toml on disk, and the standard policy.

    key = generate_key_files(tmp_path, "conn-1")
    path = write_connector_config(tmp_path, relay_url=..., relay_public_key=..., ...)
    async with open_connector(load_config(path)) as connector:
        await connector.wait_ready()

Everything goes through the same files and loaders as ``edgetds connector run --config``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from identity.keys import encode_public_key

#: Policy used by the connector tests: analysts read (ad-hoc SELECT + a named query), admins
#: write, contractors denied. Logins must match the tdslite users file of the test.
TEST_POLICY = """
[[deny]]
match = { groups = ["contractors"] }
reason = "contractors have no database access"

[roles.analyst]
match = { groups = ["analysts"] }
login = "reader"
read_only = true
allow_sql = true
max_rows = 1000000
timeout_ms = 240000

[roles.analyst.queries.echo_int]
sql = "SELECT @n AS n"
params = { n = "int" }

[roles.tiny]
match = { groups = ["tiny"] }
login = "reader"
allow_sql = true
max_bytes = 64

[roles.admin]
match = { groups = ["admins"] }
login = "writer"
read_only = false
allow_sql = true
log_param_values = true
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_connector_config(
    directory: Path,
    *,
    relay_urls: list[str],
    relay_public_keys: list[str],
    private_key_file: Path,
    issuer: str,
    db_host: str,
    db_port: int,
    database: str = "master",
    logins: Mapping[str, tuple[str, str]] | None = None,
    policy: str = TEST_POLICY,
    connector_id: str = "conn-1",
    tunnel: str = "demo",
    audit: bool = True,
    audience: str = "edgetds",
    audit_options: Mapping[str, Any] | None = None,
    login_check_interval_s: float = 0,
    **connector: Any,
) -> Path:
    """Write connector.toml (+ policy.toml and password files) into ``directory``.

    Logins are checked at start-up only (``login_check_interval_s = 0``), so no periodic
    ``SELECT 1`` lands in a test's statement log; a test of the periodic check sets it."""
    directory.mkdir(parents=True, exist_ok=True)
    logins = logins or {"reader": ("reader", "reader-pw"), "writer": ("writer", "writer-pw")}
    lines = [
        "[connector]",
        f"id = {_toml_value(connector_id)}",
        f"tunnel = {_toml_value(tunnel)}",
        f"relay_urls = {_toml_value(relay_urls)}",
        f"private_key_file = {_toml_value(str(private_key_file))}",
        f"relay_public_keys = {_toml_value(relay_public_keys)}",
    ]
    defaults = {"stagger_s": 0.05, "backoff_base_s": 0.05, "backoff_cap_s": 0.5}
    for key, value in {**defaults, **connector}.items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines += [
        "",
        "[database]",
        f"host = {_toml_value(db_host)}",
        f"port = {db_port}",
        f"database = {_toml_value(database)}",
        "login_timeout_s = 3",
        f"login_check_interval_s = {login_check_interval_s}",
    ]
    for name, (user, password) in logins.items():
        secret = directory / f"{name}.password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        lines += [
            "",
            f"[logins.{name}]",
            f"user = {_toml_value(user)}",
            f"password_file = {_toml_value(str(secret))}",
            "pool_size = 16",
        ]
    lines += [
        "",
        "[[issuers]]",
        f"issuer = {_toml_value(issuer)}",
        f"audience = {_toml_value(audience)}",
    ]
    (directory / "policy.toml").write_text(policy)
    lines += ["", "[policy]", 'file = "policy.toml"']
    if audit:
        lines += ["", "[audit]", 'file = "audit.jsonl"']
        lines += [f"{k} = {_toml_value(v)}" for k, v in (audit_options or {}).items()]
    path = directory / "connector.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config_to_enrol(directory: Path, *, issuer: str, db: Any, **options: Any) -> Path:
    """connector.toml as a host has it before `edgetds connector enroll`: the database (the
    tdslite server ``db``), logins, issuer and policy set, the [connector] link settings (id,
    tunnel, relay_urls, private_key_file, relay_public_keys) placeholders that enrolment fills
    in; ``options`` as for :func:`write_connector_config`."""
    placeholder = Ed25519PrivateKey.generate()
    return write_connector_config(
        directory,
        relay_urls=["wss://placeholder.invalid"],
        relay_public_keys=[encode_public_key(placeholder)],
        private_key_file=Path("placeholder.key"),
        issuer=issuer,
        db_host=db.host,
        db_port=db.port,
        database=db.engine.database,
        connector_id="placeholder",
        **options,
    )


#: tdslite users matching the default logins above.
TDSLITE_USERS = """
[users.reader]
password = "reader-pw"
role = "read-only"

[users.writer]
password = "writer-pw"
role = "read-write"
"""
