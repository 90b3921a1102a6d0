"""The shape rules of an end user's token: strict parsing, header members, claim types and times.

The Worker applies the same rules in ``relay/worker/src/idtoken.js``, step for step, and both run
``protocol/vectors/id_tokens.json``. Every rule refuses (fails closed) with ``auth.invalid_token``
unless it says otherwise:

1. **Segments**: exactly three non-empty unpadded base64url segments (``[A-Za-z0-9_-]``).
2. **JSON** of header and payload: strict UTF-8 (a BOM is refused), one JSON object, no duplicate
   member names at any depth (``json.loads`` would keep the last one silently: a second ``sub`` or
   ``groups`` would win), no ``NaN``/``Infinity``, no number literal over
   ``MAX_NUMBER_CHARS`` characters, nested at most ``MAX_NESTING`` levels.
3. **Header** (after the issuer is known): ``crit``, ``cty`` and ``b64`` are refused whatever their
   value (no JWS extension, nested token or unencoded payload is implemented); ``typ``, when
   present, is ``JWT`` or ``at+jwt`` (case-insensitive, ``application/`` prefix optional); ``kid``,
   when present, is a string. ``jku``, ``x5u``, ``jwk``, ``x5c`` and ``x5t`` are ignored: keys come
   only from configuration.
4. **Claims** (after the signature verified), in this order: ``exp`` present; ``exp``/``nbf``/
   ``iat`` are JSON numbers (not strings, not booleans), finite, in ``[0, 2**53 - 1]``; ``sub`` a
   non-empty string; ``iss`` the issuer; ``jti`` a string when present; ``aud`` present
   (``auth.wrong_audience`` if not), a non-empty string or a non-empty list of non-empty strings,
   one of which is accepted (``auth.wrong_audience``); ``exp > now - leeway`` (``auth.expired``);
   ``nbf < exp`` and ``iat < exp``; lifetime ``exp - iat`` (``exp - now`` without ``iat``, plus
   leeway) at most the issuer's ``max_token_lifetime_s``; ``nbf`` and ``iat`` at most
   ``now + leeway`` (not valid yet).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from protocol import ErrorCode

__all__ = [
    "DEFAULT_MAX_TOKEN_LIFETIME_S",
    "MAX_NESTING",
    "MAX_NUMBER_CHARS",
    "TokenError",
    "check_claims",
    "check_header",
    "parse_token",
]

#: A token whose lifetime (``exp - iat``) is longer than this is refused unless the issuer says
#: otherwise (``max_token_lifetime_s``): IdPs issue access tokens for minutes to hours.
DEFAULT_MAX_TOKEN_LIFETIME_S = 86_400
#: Objects and arrays nested deeper than this are refused (claims are shallow in practice).
MAX_NESTING = 16
#: A number literal longer than this is refused (no IdP sends one; the two runtimes would differ).
MAX_NUMBER_CHARS = 64
#: The largest NumericDate accepted (2**53 - 1: exact in both Python and JavaScript).
MAX_NUMERIC_DATE = 2**53 - 1

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_TYPES = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_REFUSED_HEADERS = {
    "crit": "critical JWS extensions ('crit') are not implemented",
    "cty": "nested or typed-content tokens ('cty') are not accepted",
    "b64": "unencoded payloads ('b64') are not accepted",
}


class TokenError(Exception):
    """An end user's bearer token was refused. ``code`` is a FIXED protocol error code (``auth.*``
    or ``internal``). (`protocol.AuthError` is the other kind: a connector token, HELLO or
    attestation that failed.)"""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _invalid(message: str) -> TokenError:
    return TokenError(ErrorCode.AUTH_INVALID_TOKEN, message)


class _Refused(ValueError):
    """Raised inside json.loads hooks; turned into auth.invalid_token by the caller."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"has a duplicate member name {key[:40]!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _Refused(f"has {name}, which is not JSON")


def _number(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"has a number literal over {MAX_NUMBER_CHARS} characters")
    return text


def _depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_NESTING:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return True


#: json.loads(text, **hooks) builds a decoder (and its scanner) per call; its decode() keeps no
#: state between calls (a BOM, which json.loads refuses by name, is refused as not JSON here)
_DECODER = json.JSONDecoder(
    object_pairs_hook=_object,
    parse_constant=_constant,
    parse_int=lambda s: int(_number(s)),
    parse_float=lambda s: float(_number(s)),
)


def _segment_json(segment: str, what: str) -> dict[str, Any]:
    if len(segment) % 4 == 1:
        raise _invalid(f"token {what} is not base64url JSON")
    try:
        text = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode("utf-8")
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise _invalid(f"token {what} {exc}") from None
    except RecursionError:
        raise _invalid(f"token {what} is nested deeper than {MAX_NESTING} levels") from None
    except (binascii.Error, ValueError):
        raise _invalid(f"token {what} is not base64url JSON (strict UTF-8)") from None
    if not isinstance(value, dict):
        raise _invalid(f"token {what} is not a JSON object")
    if not _depth_ok(value):
        raise _invalid(f"token {what} is nested deeper than {MAX_NESTING} levels")
    return value


def parse_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The strictly parsed (still unverified) header and payload of a compact JWS.

    Raises:
        TokenError: auth.invalid_token naming what is malformed (never quoting the token).
    """
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
        raise _invalid("token is not a signed JWT (three base64url segments: header.payload.sig)")
    return _segment_json(parts[0], "header"), _segment_json(parts[1], "payload")


def check_header(header: dict[str, Any]) -> None:
    """Refuse header members this verifier does not implement, and a foreign ``typ``."""
    for name, why in _REFUSED_HEADERS.items():
        if name in header:
            raise _invalid(f"token header: {why}")
    typ = header.get("typ")
    if "typ" in header and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        shown = typ[:40] if isinstance(typ, str) else type(typ).__name__
        raise _invalid(
            f"token type (typ) {shown!r} is not an access or ID token (expected JWT or at+jwt)"
        )
    if "kid" in header and not isinstance(header["kid"], str):
        raise _invalid("token header 'kid' is not a string")


def _numeric_date(claims: dict[str, Any], name: str) -> float | int | None:
    if name not in claims:
        return None
    value = claims[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (isinstance(value, int) or math.isfinite(value))
        or not 0 <= value <= MAX_NUMERIC_DATE
    ):
        raise _invalid(
            f"token claim {name!r} must be a number of seconds since 1970 "
            f"(a JSON number in [0, 2^53-1], not {type(value).__name__})"
        )
    return value


def _audiences(claims: dict[str, Any]) -> tuple[str, ...]:
    if "aud" not in claims:
        raise TokenError(ErrorCode.AUTH_WRONG_AUDIENCE, "token has no 'aud' claim")
    aud = claims["aud"]
    if isinstance(aud, str) and aud:
        return (aud,)
    if isinstance(aud, list) and aud and all(isinstance(a, str) and a for a in aud):
        return tuple(aud)
    raise _invalid("token claim 'aud' must be a non-empty string or list of non-empty strings")


def check_claims(
    claims: dict[str, Any],
    *,
    issuer: str,
    audiences: Sequence[str],
    max_lifetime_s: float,
    leeway_s: float,
    now: float,
) -> tuple[str, tuple[str, ...], float | int]:
    """Check the verified payload of a token (module docstring, rule 4).

    Returns:
        (sub, aud as a tuple, exp).

    Raises:
        TokenError: auth.invalid_token, auth.wrong_audience or auth.expired.
    """
    if "exp" not in claims:
        raise _invalid("token has no 'exp' claim")
    exp = _numeric_date(claims, "exp")
    assert exp is not None
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _invalid("token has no 'sub' claim (a non-empty string)")
    if claims.get("iss") != issuer:
        raise _invalid("token 'iss' claim does not name its issuer")
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise _invalid("token claim 'jti' must be a string")
    aud = _audiences(claims)
    if not set(aud) & set(audiences):
        raise TokenError(
            ErrorCode.AUTH_WRONG_AUDIENCE,
            f"token audience is not one of {list(audiences)}; request a token for it",
        )
    if exp <= now - leeway_s:
        raise TokenError(ErrorCode.AUTH_EXPIRED, "token has expired; get a fresh one")
    for name, start in (("nbf", nbf), ("iat", iat)):
        if start is not None and start >= exp:
            raise _invalid(f"token '{name}' is not before its 'exp': it is never valid")
    lifetime = exp - (iat if iat is not None else now)
    if lifetime > max_lifetime_s + (0 if iat is not None else leeway_s):
        raise _invalid(
            f"token lifetime {int(lifetime)} s is over the issuer's max_token_lifetime_s "
            f"({int(max_lifetime_s)} s); ask the IdP for shorter-lived tokens"
        )
    if (nbf is not None and nbf > now + leeway_s) or (iat is not None and iat > now + leeway_s):
        raise _invalid("token is not valid yet (nbf/iat in the future; check the clocks)")
    return sub, aud, exp
