"""Fixtures for tdslite's tests: a users file, a running server (real engine), TLS files.

Other areas' tests start tdslite themselves with ``tdslite.open_server(...)`` (see
tdslite/README.md); these fixtures show how.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from tdslite import TdsServer, open_server
from tests.tdslite._tds_helpers import USERS_TOML


@pytest.fixture
def tds_users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    path.write_text(USERS_TOML, encoding="utf-8")
    return path


@pytest.fixture
async def tds_server(tmp_path: Path, tds_users_file: Path) -> AsyncIterator[TdsServer]:
    """tdslite on 127.0.0.1:<free port>, real engine, a fresh empty SQLite file."""
    async with open_server(db=tmp_path / "tdslite.sqlite", users=tds_users_file) as server:
        yield server


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    """A trustme CA, a server cert for "localhost" (CN too: python-tds 1.17 checks the CN), and
    another CA that did not sign it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", common_name="localhost")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "other_ca": tmp_path / "other-ca.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(files["cert"]), append=True)
    cert.private_key_pem.write_to_path(str(files["key"]))
    trustme.CA().cert_pem.write_to_path(str(files["other_ca"]))
    return {name: str(path) for name, path in files.items()}
