"""tdslite's TDS 7.4 server: the wire side (PRELOGIN, TLS, LOGIN7, tokens, RPC) over the engine.

Public names: `open_server` (in-process starter), `TdsServer`, `StatementLog`, `FedAuthConfig`,
`SspiConfig`, `make_ssl_context`. Everything else is private (``_*.py`` modules).
"""

from __future__ import annotations

from ._fedauth import FedAuthConfig, FedAuthError
from ._server import DEFAULT_THREADS, TdsServer, make_ssl_context, open_server
from ._sspi import SspiConfig
from ._statementlog import StatementLog

__all__ = [
    "DEFAULT_THREADS",
    "FedAuthConfig",
    "FedAuthError",
    "SspiConfig",
    "StatementLog",
    "TdsServer",
    "make_ssl_context",
    "open_server",
]
