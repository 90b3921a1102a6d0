"""`edgetds connector enroll TOKEN --out DIR`: register this connector with one token (SPEC.md 8.7).

1. Parse the token and verify it with the relay key it carries (a mistyped or cut-short token is
   caught here, before anything is sent), check it has not expired, and refuse to send it over
   plain http except to loopback.
2. Generate the connector's Ed25519 key in memory and POST the token, the public key and the
   proof of the key to ``{relay_url}/v1/tunnels/{tunnel}/enroll``.
3. Verify the relay's answer with the relay key the token carries: only the relay that made the
   token can sign it. Any refusal or a bad answer writes NOTHING.
4. Write DIR/connector.key (0600), DIR/connector.pub and DIR/connector.toml: an existing
   connector.toml keeps everything but the [connector] keys enrolment decides (id, tunnel,
   relay_urls, private_key_file, relay_public_keys); a new one is examples/connector.toml with
   those filled in.

The token is a credential: it is never logged or printed back.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import tomlkit
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    AuthError,
    EnrollClaims,
    check_enroll_time,
    key_id,
    make_enroll_request,
    parse_enroll_token,
    verify_enrolled,
)

__all__ = ["EnrollFailed", "Enrolled", "enroll", "read_token"]

#: The files enrolment writes into DIR.
KEY_FILE, PUB_FILE, CONFIG_FILE = "connector.key", "connector.pub", "connector.toml"
#: The shipped example a new connector.toml is made from (in a source checkout or an sdist).
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "connector.toml"

#: What to do about each refusal, by error code.
ADVICE = {
    "enroll.invalid_token": "ask the relay operator for a new token (edgetds relay enroll)",
    "enroll.expired": "ask the relay operator for a new token (edgetds relay enroll "
    "--expires-in sets a longer lifetime), and check this machine's clock",
    "enroll.used": "the token was used already; if it was not you, tell the relay operator "
    "(someone else enrolled with it). Ask for a new token",
    "enroll.invalid_proof": "the request was altered on its way to the relay; check proxies "
    "between here and the relay, then retry with a new token",
    "enroll.disabled": "the relay keeps no enrolled keys: its operator must set [relay] "
    "enrollment_file (or register connector.pub in the relay config by hand)",
    "tunnel.unknown": "the relay does not serve this tunnel; ask its operator to add it",
    "limits.rate_limited": "too many failed attempts from this address; wait and retry",
    "auth.relay_rejected": "the answer did not come from the relay that made the token (wrong "
    "URL, or something in between); nothing was written",
}


class EnrollFailed(Exception):
    """Enrolment did not happen; ``code`` names the failure class, the message what to do."""

    def __init__(self, code: str, message: str) -> None:
        advice = ADVICE.get(code)
        super().__init__(f"{code}: {message}" + (f"; {advice}" if advice else ""))
        self.code = code


@dataclass(frozen=True)
class Enrolled:
    """What enrolment did."""

    claims: EnrollClaims
    key_id: str
    key_file: Path
    pub_file: Path
    config_file: Path
    #: True when an existing connector.toml was updated (False: made from the example)
    updated: bool


def read_token(token: str | None, token_file: Path | None, stdin: Any) -> str:
    """The token from the argument, ``-`` (stdin) or a file; EnrollFailed if none or empty."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise EnrollFailed(
                "request.invalid", f"cannot read {token_file}: {exc.strerror}"
            ) from None
    elif token == "-":
        text = stdin.read()
    else:
        text = token or ""
    if not text.strip():
        raise EnrollFailed(
            "request.invalid", "no token given: pass TOKEN, --token-file FILE or - (stdin)"
        )
    return text.strip()


def _safe_transport(relay_url: str) -> bool:
    """https://, or http:// to a loopback host (SPEC.md 8.7)."""
    parts = urlsplit(relay_url)
    if parts.scheme == "https":
        return True
    host = parts.hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_out(out: Path, *, force: bool) -> None:
    """DIR exists (or is made) and is writable, and holds no key unless ``force``: checked before
    the token is spent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnrollFailed("request.invalid", f"cannot create {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise EnrollFailed("request.invalid", f"{out} is not writable by this user")
    if (out / KEY_FILE).exists() and not force:
        raise EnrollFailed(
            "request.invalid",
            f"{out / KEY_FILE} exists; enrolment makes a new key. Pass --force to replace it "
            "(the old key stops working once the relay has the new one), or pick another --out",
        )


def _post(url: str, body: dict[str, str], *, timeout: float, cafile: Path | None) -> Any:
    verify: Any = str(cafile) if cafile is not None else True
    try:
        response = httpx.post(url, json=body, timeout=timeout, verify=verify)
    except httpx.HTTPError as exc:
        raise EnrollFailed(
            "transport.lost", f"cannot reach {url.split('/v1/')[0]}: {exc}; check the network"
        ) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            raise EnrollFailed(
                "protocol.error",
                f"the relay answered HTTP {response.status_code} without an edgetds error "
                "(is relay_url the relay, not a proxy's page?)",
            )
        message = str(error.get("message", ""))
        raise EnrollFailed(error["code"], f"the relay refused the enrolment: {message}")
    return answer


def _write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def connector_toml(current: str | None, claims: EnrollClaims) -> str:
    """``current`` (or the shipped example) with the [connector] keys enrolment decides set."""
    template = current
    if template is None:
        template = EXAMPLE.read_text(encoding="utf-8") if EXAMPLE.exists() else ""
    doc = tomlkit.parse(template)
    table = doc.get("connector")
    if table is None:
        table = tomlkit.table()
        doc["connector"] = table
    ws_url = "ws" + claims.relay_url.removeprefix("http")  # http -> ws, https -> wss
    table["id"] = claims.connector_id
    table["tunnel"] = claims.tunnel
    table["relay_urls"] = [ws_url]
    table["private_key_file"] = KEY_FILE
    table.pop("private_key_env", None)  # the key is the enrolled file now
    table["relay_public_keys"] = [claims.relay_key]
    return tomlkit.dumps(doc)


def enroll(
    token: str,
    out: Path,
    *,
    force: bool = False,
    timeout: float = 30.0,
    cafile: Path | None = None,
    now: float | None = None,
) -> Enrolled:
    """Enrol with ``token`` and write the connector's files into ``out`` (see the module doc).

    Raises:
        EnrollFailed: nothing was written; the message names the code and what to do.
    """
    try:
        claims = parse_enroll_token(token)
        check_enroll_time(claims, now=time.time() if now is None else now)
    except AuthError as exc:
        raise EnrollFailed(exc.error_code, str(exc)) from None
    if not _safe_transport(claims.relay_url):
        raise EnrollFailed(
            "enroll.invalid_token",
            f"the token sends it to {claims.relay_url} over plain http, where anyone on the way "
            "could read it and enrol their own key first; only loopback may use http:// "
            "(make the token with --relay-url https://...)",
        )
    _check_out(out, force=force)
    config_path = out / CONFIG_FILE
    current = config_path.read_text(encoding="utf-8") if config_path.exists() else None
    try:
        new_config = connector_toml(current, claims)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise EnrollFailed("request.invalid", f"{config_path} is not valid TOML: {exc}") from None
    key = Ed25519PrivateKey.generate()
    body = make_enroll_request(token, key)
    url = f"{claims.relay_url}/v1/tunnels/{claims.tunnel}/enroll"
    answer = _post(url, body, timeout=timeout, cafile=cafile)
    try:
        verify_enrolled(answer, token=token, public_key=body["public_key"])
    except AuthError as exc:
        raise EnrollFailed(exc.error_code, str(exc)) from None
    _write_private_key(out / KEY_FILE, key)
    _write_text(out / PUB_FILE, body["public_key"] + "\n")
    _write_text(config_path, new_config)
    return Enrolled(
        claims=claims,
        key_id=key_id(key),
        key_file=out / KEY_FILE,
        pub_file=out / PUB_FILE,
        config_file=config_path,
        updated=current is not None,
    )


def report(done: Enrolled) -> str:
    """What enrolment did and the next steps, for the terminal."""
    c = done.claims
    config = done.config_file
    kept = (
        "updated its [connector] id, tunnel, relay_urls, private_key_file, relay_public_keys; "
        "kept the rest"
        if done.updated
        else "made from examples/connector.toml: fill in [database], [logins.*], [[issuers]], "
        "[policy] and [audit]"
    )
    return "\n".join(
        [
            f"enrolled connector {c.connector_id} on tunnel {c.tunnel} at {c.relay_url} "
            f"(connector key id {done.key_id}; relay key id {c.relay_key_id} pinned)",
            f"  wrote {done.key_file} (mode 0600), {done.pub_file}",
            f"  wrote {config} ({kept})",
            "next:",
            f"  edgetds connector check --config {config}",
            f"  edgetds connector run --config {config}",
        ]
    )
