"""Config keys of the operations side, parsed for connector/config.py: [ops] listen (kept here so
the main schema module stays about the tunnel, database and policy).

``r`` is connector/config.py's problem-collecting reader (``get``, ``secret``, ``table``,
``unknown``, ``problem``): every mistake is recorded with its location, never raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["parse_ops_listen"]


def parse_ops_listen(r: Any, doc: Mapping[str, Any]) -> str:
    """[ops] listen = "127.0.0.1:9464": where /metrics, /healthz and /ready are served."""
    t = r.table(doc, "ops", "", required=False)
    r.unknown(t, {"listen"}, "ops")
    listen = r.get(t, "listen", "ops", str, "")
    if listen:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            r.problem("ops.listen", f'{listen!r} must be host:port, e.g. "127.0.0.1:9464"')
            return ""
    return str(listen)
