"""tdslite: a TDS 7.4 server backed by SQLite that real SQL Server clients accept.

Start one in process (tests, demo)::

    async with tdslite.open_server(db=":memory:", users="users.toml", seed="sample") as server:
        ...  # connect any TDS client to server.host, server.port

or from the shell: ``edgetds tdslite serve --port 0 --db demo.sqlite --users users.toml``.
See tdslite/README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from tdslite.server import (
        FedAuthConfig,
        SspiConfig,
        StatementLog,
        TdsServer,
        make_ssl_context,
        open_server,
    )

__all__ = [
    "FedAuthConfig",
    "SspiConfig",
    "StatementLog",
    "TdsServer",
    "make_ssl_context",
    "open_server",
]

# Lazy: `edgetds --help` imports tdslite.cli, which must not load the engine (sqlglot, ...).
__getattr__, __dir__, _ = lazy_loader.attach(__name__, submod_attrs={"server": __all__})
