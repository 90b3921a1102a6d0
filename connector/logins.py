"""How a pool's connections log in: SQL authentication, Windows (NTLM, Kerberos) or Entra ID.

``[logins.NAME] auth`` picks the method (connector/config.py):

- ``sql``: user and password in LOGIN7.
- ``ntlm`` / ``kerberos``: integrated authentication: pyspnego makes the SSPI tokens python-tds
  carries (LOGIN7's SSPI field, then SSPI messages). Kerberos takes its ticket with the login's
  keytab (``keytab``), else from ``KRB5_CLIENT_KTNAME`` or the credential cache, for the SPN
  ``MSSQLSvc/HOST:PORT`` (or ``spn``).
- ``entra``: an Entra ID access token from azure-identity (managed identity, workload identity,
  client secret or certificate) in LOGIN7's FEDAUTH feature extension (python-tds
  ``access_token_callable``); the token is kept and replaced ``refresh_before_s`` before it expires.

A failure before SQL Server could answer is a `LoginStepError` that names its step (``ticket``,
``token``, ``SSPI``) and a hint; no password, ticket or token is ever in a message or a log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from connector.config import DatabaseConfig, EntraConfig, LoginConfig

__all__ = ["LoginStepError", "TokenSource", "connect_arguments", "default_spn", "step_hint"]


class LoginStepError(Exception):
    """Getting a login's credential failed before SQL Server was asked (``step`` says where)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


#: What to check when a step fails (diag and the start-up login check print it).
_HINTS = {
    "ticket": (
        "Kerberos could not get a service ticket: check [logins.NAME] keytab (or "
        "KRB5_CLIENT_KTNAME) and user (the keytab's principal), the realm's KDC in krb5.conf "
        "(KRB5_CONFIG), that the SPN (spn, default MSSQLSvc/HOST:PORT) is registered, and the clock"
    ),
    "token": (
        "no Entra ID access token: check [logins.NAME] credential and client_id/tenant_id, and "
        "that this host reaches the token endpoint (managed identity: IDENTITY_ENDPOINT or "
        "the instance metadata service; workload identity: AZURE_FEDERATED_TOKEN_FILE)"
    ),
    "SSPI": (
        "SQL Server refused the Windows login's SSPI exchange (error 18452): check user "
        "(DOMAIN\\user) and the password, that the domain is trusted by SQL Server's, and the SPN"
    ),
    "18456": (
        "SQL Server authenticated nobody it knows as this login: for sql, check user and the "
        "password_file / password_env (and that SQL authentication is enabled); for Windows and "
        "Entra logins, that a login exists for the principal (CREATE LOGIN [DOMAIN\\user] FROM "
        "WINDOWS, or CREATE USER [name] FROM EXTERNAL PROVIDER) and that the token's audience "
        "is SQL Server's"
    ),
}


def step_hint(step: str) -> str:
    return _HINTS.get(step, "")


def default_spn(db: DatabaseConfig) -> str:
    """SQL Server's SPN as Windows clients ask for it: MSSQLSvc/HOST:PORT."""
    return f"MSSQLSvc/{db.host}:{db.port}"


class _Spnego:
    """python-tds's AuthProtocol over a pyspnego client context whose first token is made
    before python-tds connects (so a missing ticket is told apart from a refusal)."""

    def __init__(self, context: Any, first: bytes) -> None:
        self._context = context
        self._first = first

    def create_packet(self) -> bytes:
        return self._first

    def handle_next(self, packet: bytes) -> bytes | None:
        from spnego.exceptions import SpnegoError

        try:
            answer: bytes | None = self._context.step(packet)
        except SpnegoError as exc:
            raise LoginStepError("SSPI", f"SSPI exchange failed: {_gss_text(exc)}") from None
        return answer

    def close(self) -> None:
        pass


def _gss_text(exc: BaseException) -> str:
    """pyspnego's error without its numeric noise (it holds no secret: names and reasons)."""
    text = str(exc)
    return text.split("Minor (", 1)[-1].split("): ", 1)[-1] if "Minor (" in text else text


def _integrated(login: LoginConfig, db: DatabaseConfig) -> _Spnego:
    """A pyspnego client context and its first token (blocking: Kerberos asks the KDC)."""
    try:
        import spnego
    except ImportError:  # pragma: no cover - pyspnego is a dependency
        raise LoginStepError("SSPI", "pyspnego is not installed") from None
    service, _, host = (login.spn or default_spn(db)).partition("/")
    step = "ticket" if login.auth == "kerberos" else "SSPI"
    try:
        if login.auth == "ntlm":
            context = spnego.client(
                login.user, login.password, hostname=host, service=service, protocol="ntlm"
            )
        else:
            credential: Any = None
            if login.keytab:
                credential = spnego.KerberosKeytab(keytab=login.keytab, principal=login.user)
            elif login.user:
                credential = login.user
            context = spnego.client(credential, hostname=host, service=service, protocol="kerberos")
        first = context.step()
    except ImportError as exc:
        raise LoginStepError(
            step,
            f"Kerberos needs the gssapi and krb5 packages (pip install 'edgetds[kerberos]'): {exc}",
        ) from None
    except Exception as exc:  # pyspnego/gssapi/krb5 raise many types; none carries a secret
        raise LoginStepError(
            step, f"cannot start the {login.auth} exchange for {service}/{host}: {_gss_text(exc)}"
        ) from None
    if not first:
        raise LoginStepError(step, f"pyspnego made no {login.auth} token for {service}/{host}")
    return _Spnego(context, first)


class TokenSource:
    """An Entra ID access token for SQL Server, kept until ``refresh_before_s`` before expiry.

    Called by python-tds (``access_token_callable``) in the worker thread that logs in; a lock
    keeps the pool's threads from fetching at once.
    """

    def __init__(
        self,
        entra: EntraConfig,
        *,
        credential: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entra = entra
        self._credential = credential
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires_on = 0.0
        #: how many tokens were fetched (tests check refreshes)
        self.fetched = 0

    def _make_credential(self) -> Any:
        from azure import identity

        e = self._entra
        common: dict[str, Any] = {}
        if e.authority_host:
            # a national cloud or a test issuer: MSAL's instance discovery only knows Microsoft's
            common.update(authority=e.authority_host, disable_instance_discovery=True)
        if e.credential == "managed_identity":
            return identity.ManagedIdentityCredential(client_id=e.client_id or None)
        if e.credential == "workload_identity":
            kwargs: dict[str, Any] = dict(common)
            for key, value in (
                ("client_id", e.client_id),
                ("tenant_id", e.tenant_id),
                ("token_file_path", e.federated_token_file),
            ):
                if value:
                    kwargs[key] = value
            return identity.WorkloadIdentityCredential(**kwargs)
        if e.credential == "client_secret":
            return identity.ClientSecretCredential(
                e.tenant_id, e.client_id, e.client_secret, **common
            )
        return identity.CertificateCredential(
            e.tenant_id, e.client_id, certificate_path=e.certificate_file, **common
        )

    def __call__(self) -> str:
        with self._lock:
            if self._token and self._expires_on - self._clock() > self._entra.refresh_before_s:
                return self._token
            try:
                if self._credential is None:
                    self._credential = self._make_credential()
                token = self._credential.get_token(self._entra.scope)
            except Exception as exc:  # azure-identity's errors name the cause, never the secret
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise LoginStepError(
                    "token",
                    f"no Entra ID token ({self._entra.credential}) for {self._entra.scope}: {text}",
                ) from None
            self._token, self._expires_on = token.token, float(token.expires_on)
            self.fetched += 1
            return self._token


def connect_arguments(
    login: LoginConfig, db: DatabaseConfig, tokens: TokenSource | None
) -> dict[str, Any]:
    """python-tds ``connect`` keyword arguments that log ``login`` in (blocking for Kerberos and
    Entra: the ticket or token is fetched here). Raises `LoginStepError`."""
    if login.auth == "sql":
        return {"user": login.user, "password": login.password}
    if login.auth in ("ntlm", "kerberos"):
        return {"auth": _integrated(login, db)}
    assert tokens is not None
    token = tokens()  # fetched now, so a failure is the token step and not a connect error
    return {"access_token_callable": lambda: token}
