"""FEDAUTH access tokens (python-tds ``access_token_callable``, Entra ID style) verified with pyjwt.

A token is accepted when its signature checks against the configured JWKS (a file, or an http(s) URL
fetched and cached), its ``iss`` equals the configured issuer, its ``aud`` contains the configured
audience, and it has not expired. The login it maps to is the value of ``login_claim`` (default
``preferred_username``; ``oid`` or ``upn`` are common choices): the users-file entry of that
login.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")


class FedAuthError(Exception):
    """The token was refused; the message says why (it never contains the token)."""


@dataclass(frozen=True)
class FedAuthConfig:
    """How to verify FEDAUTH tokens.

    Args:
        issuer: required ``iss``.
        jwks: a JWKS JSON file path, or an http(s) URL serving one.
        audience: required ``aud``.
        login_claim: the claim whose value is the tdslite login.
        leeway: clock skew allowed on ``exp``/``nbf``, seconds.
    """

    issuer: str
    jwks: str
    audience: str
    login_claim: str = "preferred_username"
    leeway: float = 30.0
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    def _key_for(self, token: str) -> Any:
        if self.jwks.startswith(("http://", "https://")):
            if self._client is None:
                object.__setattr__(self, "_client", jwt.PyJWKClient(self.jwks, cache_keys=True))
            return self._client.get_signing_key_from_jwt(token).key
        try:
            keyset = jwt.PyJWKSet.from_dict(json.loads(Path(self.jwks).read_text("utf-8")))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise FedAuthError(f"cannot read the JWKS file {self.jwks}: {exc}") from None
        kid = jwt.get_unverified_header(token).get("kid")
        for key in keyset.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise FedAuthError(f"no key with kid {kid!r} in the JWKS")

    def verify(self, token: str) -> str:
        """Return the login named by the token (blocking: may fetch the JWKS).

        Raises:
            FedAuthError: bad signature, issuer, audience, expiry, or a missing login claim.
        """
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=list(_ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise FedAuthError(f"access token refused: {exc}") from None
        login = claims.get(self.login_claim)
        if not isinstance(login, str) or not login:
            raise FedAuthError(f"access token has no {self.login_claim!r} claim to map to a login")
        return login
