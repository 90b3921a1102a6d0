"""Ed25519 key files for connectors and relays, and `edgetds keygen`.

The conventions:

- private keys on disk are PKCS#8 PEM files, mode 0600;
- public keys travel as ``ed25519:`` + base64url (no padding) of the raw 32 bytes;
- a key id is the first 16 characters of base64url(sha256(raw public key)) (`protocol.key_id`,
  the ``relay_key_id`` of SPEC.md section 8.3).

``edgetds keygen --out DIR --name NAME`` writes ``NAME.key`` and ``NAME.pub`` and prints the public
key and its id.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import b64url, raw_public_key
from protocol import key_id as _protocol_key_id

__all__ = [
    "KeyFileError",
    "GeneratedKey",
    "encode_public_key",
    "generate_key_files",
    "key_id",
    "load_private_key",
    "parse_public_key",
]

PUBLIC_KEY_PREFIX = "ed25519:"


class KeyFileError(ValueError):
    """A key file or key string is unusable; the message says which and how to fix it."""


def encode_public_key(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Return ``ed25519:<base64url>`` of a public key (or of a private key's public half)."""
    return PUBLIC_KEY_PREFIX + b64url(raw_public_key(key))


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey | str) -> str:
    """Return the 16-character key id of a public key (object or ``ed25519:`` string)."""
    if isinstance(key, str):
        key = parse_public_key(key)
    return _protocol_key_id(key)


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Parse an ``ed25519:<base64url>`` public key string.

    Raises:
        KeyFileError: the string does not have that form or does not hold 32 bytes.
    """
    text = text.strip()
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise KeyFileError(
            f"public key must start with {PUBLIC_KEY_PREFIX!r} (got {text[:12]!r}...); "
            "copy the line from NAME.pub written by `edgetds keygen`"
        )
    body = text[len(PUBLIC_KEY_PREFIX) :]
    if not body or body.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise KeyFileError("public key is not valid base64url (alphabet A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"public key is not valid base64url: {exc}") from None
    if len(raw) != 32:
        raise KeyFileError(f"public key must hold 32 bytes, it holds {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an Ed25519 PKCS#8 PEM private key file.

    Refuses files that other users can read (like ssh does), since the key is the connector's
    identity towards the relay.

    Raises:
        KeyFileError: the file is missing, readable by others, or not an Ed25519 PKCS#8 PEM key.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key file {path}: {exc.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"private key file {path} is accessible by group/others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PKCS#8 PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, an Ed25519 key is required")
    return key


@dataclass(frozen=True)
class GeneratedKey:
    """What `generate_key_files` wrote."""

    private_path: Path
    public_path: Path
    public_key: str
    key_id: str


def generate_key_files(
    out_dir: str | os.PathLike[str], name: str, *, overwrite: bool = False
) -> GeneratedKey:
    """Create NAME.key (PKCS#8 PEM, 0600) and NAME.pub (``ed25519:...`` + newline) in out_dir.

    Raises:
        KeyFileError: the name is not a plain file name, or a file exists and overwrite is False.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a plain file name such as 'conn-1'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{name}.key"
    public_path = out / f"{name}.pub"
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise KeyFileError(f"{path} already exists; pick another --name or delete it first")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 from the start: never let the key exist with wider permissions.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(private_path, 0o600)
    public = encode_public_key(key)
    public_path.write_text(public + "\n", encoding="ascii")
    return GeneratedKey(private_path, public_path, public, key_id(key))
