"""A throwaway Kerberos realm: MIT krb5kdc (Debian krb5-kdc) on 127.0.0.1, run as a child process.

The realm's database, stash, keytabs, krb5.conf and kdc.conf live in a temporary directory; no
root and no system file is needed. `open_realm` creates the database with kdb5_util, adds the
client principal (``svc_edgetds``) and SQL Server's service principal (``MSSQLSvc/localhost``, and
``MSSQLSvc/localhost:PORT`` when a port is given), writes a client keytab and a service keytab,
starts krb5kdc in the foreground on a free port, and waits for it to log that it serves.
Callers point ``KRB5_CONFIG`` at ``realm.krb5_conf`` (client and acceptor read it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.support.ports import reserved_port
from tests.support.waiting import eventually

REALM = "EDGETDS.TEST"
CLIENT = "svc_edgetds"
_TOOLS = ("kdb5_util", "kadmin.local", "krb5kdc")


@dataclass(frozen=True)
class Realm:
    krb5_conf: Path
    client_keytab: Path
    service_keytab: Path
    #: the client principal, user@REALM
    principal: str
    log: Path

    def env(self) -> dict[str, str]:
        """What a client and an acceptor need: the realm's krb5.conf, a private memory ccache."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5CCNAME": "MEMORY:edgetds-test"}


def _make_realm(directory: Path, service_ports: tuple[int, ...]) -> tuple[Realm, dict[str, str]]:
    """Write the configuration, create the database, principals and keytabs (blocking)."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's krb5-kdc and krb5-admin-server "
            "(scripts/install-system-deps does)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    port = reserved_port()
    krb5_conf, kdc_conf, log = (
        directory / "krb5.conf",
        directory / "kdc.conf",
        directory / "kdc.log",
    )
    krb5_conf.write_text(
        f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n"
        " dns_lookup_realm = false\n rdns = false\n dns_canonicalize_hostname = false\n"
        " udp_preference_limit = 1\n"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n"
        f"[domain_realm]\n localhost = {REALM}\n"
    )
    kdc_conf.write_text(
        f"[kdcdefaults]\n kdc_listen = 127.0.0.1:{port}\n kdc_tcp_listen = 127.0.0.1:{port}\n"
        f"[realms]\n {REALM} = {{\n  database_name = {directory}/principal\n"
        f"  key_stash_file = {directory}/stash\n  acl_file = {directory}/kadm5.acl\n }}\n"
        f"[logging]\n kdc = FILE:{log}\n"
    )
    env = {**os.environ, "KRB5_CONFIG": str(krb5_conf), "KRB5_KDC_PROFILE": str(kdc_conf)}

    def run(*args: str) -> None:
        subprocess.run(args, env=env, check=True, capture_output=True, timeout=60)

    client_keytab, service_keytab = directory / "client.keytab", directory / "mssqlsvc.keytab"
    run("kdb5_util", "create", "-s", "-r", REALM, "-P", "throwaway-master-key")
    services = ["MSSQLSvc/localhost", *(f"MSSQLSvc/localhost:{p}" for p in service_ports)]
    for principal in (CLIENT, *services):
        run("kadmin.local", "-r", REALM, "-q", f"addprinc -randkey {principal}")
    run("kadmin.local", "-r", REALM, "-q", f"ktadd -k {client_keytab} {CLIENT}")
    for principal in services:
        run("kadmin.local", "-r", REALM, "-q", f"ktadd -k {service_keytab} {principal}")
    client_keytab.chmod(0o600)
    return Realm(krb5_conf, client_keytab, service_keytab, f"{CLIENT}@{REALM}", log), env


@asynccontextmanager
async def open_realm(
    directory: Path, *, service_ports: tuple[int, ...] = ()
) -> AsyncIterator[Realm]:
    realm, env = await trio.to_thread.run_sync(_make_realm, directory, service_ports)
    kdc = await trio.lowlevel.open_process(
        ["krb5kdc", "-n"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(30):
            await eventually(
                lambda: realm.log.exists() and "commencing operation" in realm.log.read_text()
            )
        yield realm
    finally:
        kdc.terminate()
        with trio.CancelScope(shield=True):
            await kdc.wait()
