"""The relay's store of connectors' signed audit checkpoints (SPEC.md 5.2, 11.3).

Per (tunnel, connector id, audit file name) the relay keeps the checkpoint with the highest
``seq`` (replicas of one connector id write one file each, so each file is its own chain; at
most `MAX_FILES` files per tunnel and connector id, a checkpoint of one more is not kept): a
higher one replaces it, the same ``seq`` and ``head`` refreshes it, anything else (a lower
``seq``, or the same ``seq`` with another ``head``) is refused and reported: the connector's log
lost its end, or was replaced. The checkpoint held when that first happens is kept from then on
as ``conflict``, so a log that was cut and then grew past the old checkpoint still fails ``audit
verify`` (its record at the conflict's seq has another hash). A checkpoint is stored only after
its signature verified under one of the connector id's registered keys. In memory, plus, with
``[relay] checkpoint_file``, a JSON file rewritten atomically (temporary file + rename) on every
change and read at start, so a restart keeps them (a file written before checkpoints were kept
per audit file is read too: relay/config.py ``read_checkpoint_file``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import AuthError, verify_checkpoint
from relay.config import CHECKPOINT_FILE_VERSION, read_checkpoint_file

__all__ = ["MAX_FILES", "CheckpointStore", "Offer", "checkpoint_files_conflict"]

#: What :meth:`CheckpointStore.offer` did with a checkpoint.
Offer = Literal["stored", "invalid", "regressed", "too_many_files"]

#: The audit files per tunnel and connector id whose checkpoints are kept (SPEC.md 5.2): each
#: replica writes one file, so this is far above what a connector id writes; it bounds what a
#: connector key can make the relay keep.
MAX_FILES = 64


class CheckpointStore:
    """The latest signed checkpoint per (tunnel, connector id, file); see the module docstring.

    Args:
        path: the JSON file that keeps them across restarts ("" = memory only).
    """

    def __init__(self, path: str | Path = "") -> None:
        self.path = Path(path) if path else None
        self._items = read_checkpoint_file(self.path) if self.path is not None else {}

    def get(self, tunnel: str, connector_id: str, file: str) -> dict[str, Any] | None:
        """``{"checkpoint": {...}, "received_at": unix s, "conflict": {...} | None}`` or None."""
        return self._items.get((tunnel, connector_id, file))

    def files(self, tunnel: str, connector_id: str) -> list[str]:
        """The audit file names the connector's checkpoints were kept for, sorted."""
        return sorted(f for t, c, f in self._items if (t, c) == (tunnel, connector_id))

    def offer(
        self,
        fields: Mapping[str, Any],
        keys: Sequence[Ed25519PublicKey],
        *,
        tunnel: str,
        connector_id: str,
    ) -> tuple[Offer, str]:
        """Verify and maybe store a checkpoint received on a connection of ``connector_id``.

        Returns what was done and why (for the log).
        """
        try:
            verify_checkpoint(fields, keys, connector_id=connector_id, tunnel=tunnel)
        except AuthError as exc:
            return "invalid", str(exc)
        key = (tunnel, connector_id, fields["file"])
        held = self._items.get(key)
        if held is None and len(self.files(tunnel, connector_id)) >= MAX_FILES:
            return "too_many_files", (
                f"file {fields['file']!r}: checkpoints of {MAX_FILES} other audit files of this "
                "connector are kept already, the most a relay keeps; this one is not"
            )
        if held is not None:
            old = held["checkpoint"]
            if fields["seq"] < old["seq"] or (
                fields["seq"] == old["seq"] and fields["head"] != old["head"]
            ):
                if held.get("conflict") is None:
                    held["conflict"] = old
                    self._save()
                return "regressed", (
                    f"file {fields['file']!r}: seq {fields['seq']} (head {fields['head'][:16]}...) "
                    f"after seq {old['seq']} (head {old['head'][:16]}...): the connector's audit "
                    "log lost its end or was replaced; the higher checkpoint is kept"
                )
        conflict = held.get("conflict") if held is not None else None
        item = {"checkpoint": dict(fields), "received_at": int(time.time()), "conflict": conflict}
        self._items[key] = item
        self._save()
        return "stored", f"seq {fields['seq']}"

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {
            "version": CHECKPOINT_FILE_VERSION,
            "checkpoints": [self._items[k] for k in sorted(self._items)],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def checkpoint_files_conflict(connector_id: str, files: Sequence[str]) -> dict[str, Any]:
    """The 409 answer to ``GET .../audit/checkpoint?connector=ID`` without ``file`` when the
    connector's checkpoints are of several audit files (SPEC.md 11.3): their names, how to ask."""
    names = ", ".join(files)
    return {
        "error": {
            "code": "request.invalid",
            "message": (
                f"connector {connector_id} has checkpoints of {len(files)} audit files ({names}): "
                "name the one to verify with &file=<audit file name>"
            ),
        },
        "files": list(files),
    }
