"""Integrated (Windows) authentication: the SSPI exchange of LOGIN7, accepted with pyspnego.

The client's first token rides in LOGIN7; tdslite answers with an SSPI token (0xED) and the client
sends the next one in an SSPI message (packet type 0x11), until pyspnego's acceptor is complete.
Then the login is the principal pyspnego authenticated: ``DOMAIN\\user`` for NTLM,
``user@REALM`` for Kerberos, looked up (case-insensitively) in the users file.

- NTLM is checked against a credentials file (``--ntlm-users FILE``), one ``DOMAIN:USER:PASSWORD``
  per line (the format pyspnego and gss-ntlmssp read through ``NTLM_USER_FILE``).
- Kerberos needs the service's keytab (``--kerberos-keytab FILE``, e.g. holding
  ``MSSQLSvc/host:port@REALM``) and a krb5.conf that names the realm's KDC (``KRB5_CONFIG``).

pyspnego takes both locations only from the environment (``NTLM_USER_FILE``, ``KRB5_KTNAME``), so
they are process-wide: one tdslite process serves one set of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: The service class of SQL Server's SPN (MSSQLSvc/host:port).
SERVICE = "MSSQLSvc"


class SspiError(Exception):
    """The exchange failed; the message says why (never a token or a password)."""


@dataclass(frozen=True)
class SspiConfig:
    """Where the acceptor finds what it checks tokens against.

    Args:
        ntlm_users: the NTLM credentials file (``DOMAIN:USER:PASSWORD`` lines), or None.
        keytab: the Kerberos service keytab, or None.
    """

    ntlm_users: str | None = None
    keytab: str | None = None

    def acceptor(self) -> Acceptor:
        """A new acceptor for one login (blocking only in Kerberos calls)."""
        import spnego

        if self.ntlm_users:
            os.environ["NTLM_USER_FILE"] = self.ntlm_users
        if self.keytab:
            os.environ["KRB5_KTNAME"] = self.keytab
        # negotiate accepts SPNEGO and the raw NTLM and Kerberos tokens clients send to SQL Server
        return Acceptor(spnego.server(protocol="negotiate", service=SERVICE))


class Acceptor:
    """One login's SSPI context."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def step(self, token: bytes) -> bytes | None:
        """The answer to the client's ``token`` (None: nothing to send back)."""
        from spnego.exceptions import SpnegoError

        try:
            answer: bytes | None = self._context.step(token)
        except SpnegoError as exc:
            raise SspiError(f"SSPI token refused: {exc}") from None
        except (ValueError, KeyError, OSError) as exc:  # a malformed token, an unreadable file
            raise SspiError(f"SSPI token refused: {type(exc).__name__}: {exc}") from None
        return answer

    @property
    def complete(self) -> bool:
        return bool(self._context.complete)

    @property
    def principal(self) -> str:
        return str(self._context.client_principal or "")
