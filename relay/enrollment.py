"""The relay's enrolled connector keys and consumed enrolment tokens (SPEC.md 8.7).

``POST /v1/tunnels/{tunnel}/enroll`` (relay/app.py) checks a request with
``protocol.check_enroll_request`` and records it here. Per tunnel the store keeps, by connector
id, the ONE key enrolled last (a new enrolment of the id replaces it), and the ``jti`` of every
token consumed, until ``exp + 5`` s. Keys of the static configuration are not kept here: the
connector-token check consults the union (:func:`with_enrolled`).

The state lives in ``[relay] enrollment_file``, a JSON file read at start and on SIGHUP (a damaged
one refuses start-up, naming the path: relay/config.py ``read_enrollment_file``) and rewritten on
every enrolment BEFORE the relay answers: a temporary file in the same directory, fsynced, renamed
over the old one, the directory fsynced. A token is consumed exactly when its key is recorded: the
relay checks and records under one lock, and only a written file changes what it holds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from identity import keys
from protocol import ENROLL_LEEWAY, EnrollRequest, raw_public_key
from relay.config import TunnelConfig, read_enrollment_file

__all__ = ["EnrollmentStore", "with_enrolled"]


class EnrollmentStore:
    """Enrolled keys and consumed token ids, kept in ``path`` (see the module docstring).

    Raises:
        ConfigError: the file is damaged (its path named).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._state = read_enrollment_file(self.path)

    def keys(self, tunnel: str) -> dict[str, Ed25519PublicKey]:
        """The enrolled key of each connector id of ``tunnel``."""
        held = self._state["tunnels"].get(tunnel, {}).get("connectors", {})
        return {cid: keys.parse_public_key(item["public_key"]) for cid, item in held.items()}

    def count(self) -> int:
        """How many keys are enrolled, over every tunnel."""
        return sum(len(t["connectors"]) for t in self._state["tunnels"].values())

    def consumed(self, tunnel: str, *, now: float) -> frozenset[str]:
        """The token ids consumed for ``tunnel`` and not yet forgettable at ``now``."""
        held = self._state["tunnels"].get(tunnel, {}).get("consumed", {})
        return frozenset(jti for jti, until in held.items() if until >= now)

    def prepare(self, request: EnrollRequest, *, now: int) -> tuple[dict[str, Any], str | None]:
        """The state after recording ``request`` (nothing changes until :meth:`commit`), and the
        key it replaces (``ed25519:...``) if the connector id had one enrolled."""
        state = copy.deepcopy(self._state)
        claims = request.claims
        tunnel = state["tunnels"].setdefault(claims.tunnel, {"connectors": {}, "consumed": {}})
        # forget what has expired, then consume this token
        tunnel["consumed"] = {j: t for j, t in tunnel["consumed"].items() if t >= now}
        tunnel["consumed"][claims.jti] = claims.exp + ENROLL_LEEWAY
        previous = tunnel["connectors"].get(claims.connector_id)
        tunnel["connectors"][claims.connector_id] = {
            "public_key": request.public_key,
            "key_id": request.key_id,
            "jti": claims.jti,
            "enrolled_at": now,
        }
        replaced = previous["public_key"] if previous else None
        return state, (replaced if replaced != request.public_key else None)

    def write(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` durably (temporary file, fsync, rename, fsync of the directory).

        Blocking: run it in a thread. Raises OSError when it cannot.
        """
        text = json.dumps(state, indent=1, sort_keys=True) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def commit(self, state: dict[str, Any]) -> None:
        """Hold ``state`` (after :meth:`write` succeeded)."""
        self._state = state


def with_enrolled(
    tunnels: Mapping[str, TunnelConfig], store: EnrollmentStore | None
) -> dict[str, TunnelConfig]:
    """The tunnels with each connector id's enrolled key added to its static keys (the union the
    connector-token check consults, SPEC.md 8.7)."""
    merged: dict[str, TunnelConfig] = {}
    for name, tunnel in tunnels.items():
        enrolled = store.keys(name) if store is not None else {}
        if not enrolled:
            merged[name] = tunnel
            continue
        connectors = dict(tunnel.connectors)
        for cid, key in enrolled.items():
            static = connectors.get(cid, ())
            if raw_public_key(key) not in {raw_public_key(k) for k in static}:
                connectors[cid] = (*static, key)
        merged[name] = dataclasses.replace(tunnel, connectors=connectors)
    return merged
