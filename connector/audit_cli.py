"""`edgetds audit verify`: check an audit log's hash chain (connector/audit.py) and, with
--checkpoint, that it reaches the relay's signed checkpoint (connector/checkpoints.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from connector.audit import GENESIS, verify_files

__all__ = ["register"]


EPILOG = """\
examples:
  edgetds audit verify .demo/audit.jsonl
  edgetds audit verify audit.jsonl.* audit.jsonl      # a rotated chain (names sort oldest first)
  edgetds audit verify audit.jsonl --prev 3f5a...     # a file whose predecessor is archived

  # was the END cut off? compare with the relay's latest signed checkpoint of this connector
  EDGETDS_AUDIT_TOKEN=... edgetds audit verify audit.jsonl.* audit.jsonl \\
      --checkpoint 'https://relay.example/v1/tunnels/demo/audit/checkpoint?connector=conn-1' \\
      --config connector.toml                          # or --public-key conn-1.pub
  edgetds audit verify audit.jsonl --checkpoint saved-checkpoint.json --public-key ed25519:...

A hash chain shows a line edited, removed, reordered or inserted, but lines removed from the END
leave a chain that still verifies. The connector therefore sends the relay a checkpoint (the seq
and hash of its newest record, signed with the connector's key) every [audit]
checkpoint_every_records records and every checkpoint_interval_s seconds; --checkpoint fetches the
relay's latest one of the verified file (it adds &file=NAME, the last FILE's name without a
rotation suffix, unless the URL names one: replicas of one connector id write one file each, e.g.
audit-2.jsonl) or reads a saved copy, checks its signature with the connector's public key and
that the files reach it with the same hash.

exit status:
  0  the chain is intact (and reaches the checkpoint with its hash)
  1  the chain is broken: FILE:LINE: what is wrong (edited, removed, reordered, garbage, a
     truncated last line)
  2  usage error
  3  truncated or replaced: the files end before the checkpoint's record, or that record's hash
     differs from the checkpoint's
  4  the checkpoint cannot be fetched or read, or its signature does not verify
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="check the connector's hash-chained audit log",
        description="Tools for the connector's audit log (one hash-chained JSON line per query).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="actions", metavar="ACTION")
    verify = sub.add_parser(
        "verify",
        help="check the hash chain (and a relay checkpoint); report the first problem",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="the audit files, oldest first"
    )
    verify.add_argument(
        "--prev", default=GENESIS, help="hash the first record chains from (default: genesis)"
    )
    verify.add_argument(
        "--checkpoint",
        metavar="URL-or-FILE",
        help="the relay's checkpoint endpoint (GET /v1/tunnels/T/audit/checkpoint?connector=ID; "
        "&file=NAME of the verified file is added) or a saved checkpoint JSON file",
    )
    verify.add_argument(
        "--public-key",
        metavar="KEY-or-FILE",
        help="the connector's public key (ed25519:...) or its NAME.pub file, to check the "
        "checkpoint's signature",
    )
    verify.add_argument(
        "--config",
        metavar="CONNECTOR_TOML",
        help="take the public key (and connector id) from this connector config instead",
    )
    verify.add_argument(
        "--token-env",
        default="EDGETDS_AUDIT_TOKEN",
        metavar="NAME",
        help="environment variable holding the relay's audit token (default: %(default)s)",
    )
    verify.add_argument("--cafile", help="CA bundle for an https relay with a private CA")
    verify.set_defaults(func=_cmd_verify)

    def _usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=_usage)


def _cmd_verify(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        result = verify_files(args.files, prev=args.prev)
        print(result, file=sys.stdout if result.ok else sys.stderr)
        return 0 if result.ok else 1
    from connector import checkpoints as cp

    try:
        keys, connector_id = _checkpoint_keys(args)
        token = cp.token_from_env(args.token_env)
        loaded = cp.load_checkpoint(
            args.checkpoint,
            token=token,
            cafile=args.cafile,
            file=cp.audit_file_name(args.files),
        )
        for checkpoint in loaded:
            cp.verify_loaded(checkpoint, keys, connector_id=connector_id)
    except cp.CheckpointError as exc:
        print(f"checkpoint: {exc}", file=sys.stderr)
        return cp.EXIT_CHECKPOINT_UNUSABLE
    result = verify_files(args.files, prev=args.prev, at_seqs={c["seq"] for c in loaded})
    if not result.ok:
        print(result, file=sys.stderr)
        return 1
    print(result)
    status = 0
    for index, checkpoint in enumerate(loaded):
        ok, message = cp.compare(result, checkpoint)
        if index:  # the relay's conflict: the checkpoint held when the log first went backwards
            message = (
                f"conflict (the connector once sent a checkpoint that went backwards): {message}"
            )
        print(message, file=sys.stdout if ok else sys.stderr)
        status = status if ok else cp.EXIT_TRUNCATED
    return status


def _checkpoint_keys(args: argparse.Namespace) -> tuple[list[Any], str | None]:
    """The connector public key(s) and id that a checkpoint must verify under."""
    from connector.checkpoints import CheckpointError
    from identity.keys import KeyFileError, parse_public_key

    if args.config:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from connector.config import ConfigError, load_config

        try:
            config = load_config(args.config)
            key = load_pem_private_key(config.tunnel.private_key_pem, password=None)
            return [key.public_key()], config.tunnel.connector_id
        except (ConfigError, ValueError) as exc:
            raise CheckpointError(f"cannot take the public key from {args.config}: {exc}") from None
    if not args.public_key:
        raise CheckpointError(
            "pass --public-key ed25519:... (or NAME.pub) or --config connector.toml: the "
            "checkpoint's signature is checked with the connector's public key"
        )
    text = args.public_key
    if not text.startswith("ed25519:"):
        try:
            text = Path(text).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CheckpointError(f"cannot read {args.public_key}: {exc.strerror}") from None
    try:
        return [parse_public_key(text)], None
    except KeyFileError as exc:
        raise CheckpointError(f"--public-key: {exc}") from None
