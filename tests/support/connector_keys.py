"""Connector test pieces: its key pair and a pinned relay key (`Keys`), a config that points it
at one relay (`config_for`), and a loopback port nothing listens on (`closed_port`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetds.devidp import DevIdP
from identity.keys import GeneratedKey, encode_public_key
from tests.support.connector_stack import write_connector_config
from tests.support.ports import closed_port

__all__ = ["Keys", "closed_port", "config_for"]


@dataclass
class Keys:
    connector: GeneratedKey
    relay: Ed25519PrivateKey

    @property
    def relay_public(self) -> str:
        return encode_public_key(self.relay)


def config_for(
    tmp_path: Path, keys: Keys, idp: DevIdP, relay_url: str, *, db_port: int, **kw: object
) -> Path:
    return write_connector_config(
        tmp_path / "connector",
        relay_urls=[relay_url],
        relay_public_keys=[keys.relay_public],
        private_key_file=keys.connector.private_path,
        issuer=idp.issuer,
        db_host="127.0.0.1",
        db_port=db_port,
        **kw,  # type: ignore[arg-type]
    )
