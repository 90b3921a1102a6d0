"""Signed audit checkpoints (SPEC.md 5.2): the connector sends them, ``audit verify`` checks them.

A hash chain catches a line edited, removed or reordered, but not lines cut from its END: what is
left still chains. So the connector signs its chain head (seq + hash of the last record) with its
own key and sends it to the relay in a CHECKPOINT frame every ``[audit] checkpoint_every_records``
records, at least every ``checkpoint_interval_s`` seconds, on every new connection and once more
on shutdown. The relay keeps the highest one per connector and audit file (replicas of one
connector each write their own file) and serves it
(``GET /v1/tunnels/{tunnel}/audit/checkpoint?connector=ID&file=NAME``). ``edgetds audit verify
FILES --checkpoint URL-or-file`` then asks for the checkpoint of the file it verifies (by its
name), checks its signature with the connector's public key and that the files reach it with the
same hash (:func:`compare`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from connector.audit import AuditLog, VerifyResult
from protocol import AuthError, sign_checkpoint, verify_checkpoint

__all__ = [
    "EXIT_CHECKPOINT_UNUSABLE",
    "EXIT_TRUNCATED",
    "AuditCheckpoints",
    "CheckpointError",
    "audit_file_name",
    "compare",
    "load_checkpoint",
    "verify_loaded",
]

log = logging.getLogger("edgetds.connector")

#: ``audit verify`` exit status: the files end before the checkpoint, or differ from it.
EXIT_TRUNCATED = 3
#: ``audit verify`` exit status: the checkpoint could not be read or does not verify.
EXIT_CHECKPOINT_UNUSABLE = 4

Sink = Callable[[dict[str, Any]], Awaitable[None]]


class AuditCheckpoints:
    """Signs the audit head and hands it to ``sink`` every N records and at least every M s.

    Args:
        audit: the connector's audit log (its ``on_write`` hook is taken).
        key: returns the connector's current private key (it can change on SIGHUP).
        connector_id, tunnel: this connector's.
        every_records: send after this many new records.
        interval_s: send at least this often.
        clock: unix seconds (the checkpoint's ``time``).
    """

    def __init__(
        self,
        audit: AuditLog,
        *,
        key: Callable[[], Ed25519PrivateKey],
        connector_id: str,
        tunnel: str,
        every_records: int = 100,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import trio

        self.audit = audit
        self._key = key
        self.connector_id = connector_id
        self.tunnel = tunnel
        self.every_records = every_records
        self.interval_s = interval_s
        self._clock = clock
        self._since = 0
        self._due = trio.Event()
        #: checkpoints handed to the sink so far
        self.sent = 0
        audit.on_write = self._written

    def _written(self, _record: Mapping[str, Any]) -> None:
        self._since += 1
        if self._since >= self.every_records:
            self._due.set()

    def make(self) -> dict[str, Any]:
        """A freshly signed checkpoint of the audit log's current head."""
        seq, head, name = self.audit.position()
        return sign_checkpoint(
            self._key(),
            connector_id=self.connector_id,
            tunnel=self.tunnel,
            seq=seq,
            head=head,
            file=name,
            now=int(self._clock()),
        )

    async def send_now(self, sink: Sink) -> None:
        """Sign the current head and hand it to ``sink`` (and restart both counters)."""
        import trio

        self._since = 0
        self._due = trio.Event()
        await sink(self.make())
        self.sent += 1

    async def run(self, sink: Sink) -> None:
        """Forever: wait for ``every_records`` records or ``interval_s``, whichever comes first."""
        import trio

        while True:
            with trio.move_on_after(self.interval_s):
                await self._due.wait()
            await self.send_now(sink)


# ------------------------------------------------------------------------ audit verify


class CheckpointError(Exception):
    """The checkpoint could not be read, or it does not verify (exit EXIT_CHECKPOINT_UNUSABLE)."""


def audit_file_name(files: Sequence[str | Path]) -> str:
    """The name of the audit file whose checkpoints cover ``files`` (oldest first): the last
    one's, without the ``.<12 digits>`` a rotation appends (connector/audit.py)."""
    return re.sub(r"\.[0-9]{12}$", "", Path(files[-1]).name)


def load_checkpoint(
    source: str,
    *,
    token: str | None = None,
    cafile: str | None = None,
    timeout_s: float = 10.0,
    file: str | None = None,
) -> list[dict[str, Any]]:
    """The checkpoint from the relay endpoint (an http(s) URL) or a JSON file, followed by the
    relay's ``conflict`` checkpoint when it holds one (the connector once went backwards).

    Both the endpoint's answer ``{"checkpoint": {...}, "conflict": ..., ...}`` (saved or fetched)
    and a bare checkpoint object are accepted. ``file``: the audit file name asked of the relay
    (``&file=``, SPEC.md 11.3) unless the URL names one.

    Raises:
        CheckpointError: unreachable, refused, not JSON, or the relay holds none.
    """
    if source.startswith(("https://", "http://")):
        url = urllib.parse.urlsplit(source)
        if file is not None and "file" not in urllib.parse.parse_qs(url.query):
            query = "&".join(filter(None, [url.query, urllib.parse.urlencode({"file": file})]))
            source = urllib.parse.urlunsplit(url._replace(query=query))
        doc = _fetch(source, token=token, cafile=cafile, timeout_s=timeout_s)
    else:
        try:
            doc = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CheckpointError(f"cannot read {source}: {exc.strerror}") from None
        except ValueError:
            raise CheckpointError(f"{source} is not JSON") from None
    found = [doc]
    if isinstance(doc, dict) and "checkpoint" in doc:
        found = [doc["checkpoint"]] + ([doc["conflict"]] if doc.get("conflict") else [])
        if doc["checkpoint"] is None:
            raise CheckpointError(
                f"{source}: the relay holds no checkpoint for this connector's audit file (none "
                "received yet: is the connector running with an [audit] file, and connected? "
                "The file name asked is the verified file's; a copy under another name needs "
                "&file=<its original name> in the URL)"
            )
    if not all(isinstance(item, dict) for item in found):
        raise CheckpointError(f"{source}: not a checkpoint object")
    return found


def _fetch(url: str, *, token: str | None, cafile: str | None, timeout_s: float) -> Any:
    import httpx

    if not token:
        raise CheckpointError(
            "the relay serves checkpoints only with its audit token: set EDGETDS_AUDIT_TOKEN "
            "(or --token-env NAME) to the secret whose sha256 is the relay's audit_token_sha256"
        )
    verify: Any = cafile if cafile else True
    try:
        response = httpx.get(
            url, headers={"authorization": f"Bearer {token}"}, timeout=timeout_s, verify=verify
        )
    except httpx.HTTPError as exc:
        raise CheckpointError(f"cannot fetch the checkpoint from {url}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        detail = f"{error.get('code')}: {error.get('message')}" if error else response.text[:200]
        raise CheckpointError(f"the relay refused: HTTP {response.status_code} {detail}")
    return body


def verify_loaded(
    checkpoint: Mapping[str, Any],
    keys: Sequence[Ed25519PublicKey],
    *,
    connector_id: str | None = None,
) -> None:
    """Check the checkpoint's signature (and connector id, if given).

    Raises:
        CheckpointError: it does not verify.
    """
    try:
        verify_checkpoint(checkpoint, keys, connector_id=connector_id)
    except AuthError as exc:
        raise CheckpointError(f"the checkpoint is not valid: {exc}") from None


def compare(result: VerifyResult, checkpoint: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether verified files reach the (verified) checkpoint with the same hash, and why."""
    seq, head = checkpoint["seq"], checkpoint["head"]
    signed = dt.datetime.fromtimestamp(checkpoint["time"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = f"record {seq} (hash {head}, signed {signed}, file {checkpoint['file'] or '-'})"
    ends = result.last_seq or 0
    if ends < seq:
        return False, (
            f"truncated: the file ends at record {ends} but the relay's checkpoint covers {where}; "
            f"{seq - ends} record(s) are missing from the end (restore them from a backup; "
            "if the log was rotated, pass every file, oldest first)"
        )
    if seq == 0:
        return True, "checkpoint: an empty chain (nothing to compare)"
    found = result.hashes.get(seq)
    if found is None:
        return False, (
            f"the checkpoint covers {where}, which is before the first file given; pass the "
            "older (rotated) files first"
        )
    if found != head:
        return False, (
            f"the head does not match the checkpoint: record {seq} has hash {found}"
            f" but the relay's checkpoint says {where}: the log was rewritten or replaced"
        )
    return True, f"checkpoint: matches {where}; {ends - seq} record(s) written after it"


def token_from_env(name: str) -> str | None:
    """The audit token from the environment variable ``name`` (None when unset or empty)."""
    return os.environ.get(name) or None
