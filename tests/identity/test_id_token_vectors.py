"""protocol/vectors/id_tokens.json against identity/oidc.py (the Worker runs the same file).

Each issuer's static JWKS is written to a file (jwks_file) and the verifier's clock is the
vectors' fixed ``now``: real Ed25519 signatures, the real verifier, no network.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from identity.oidc import TokenError, TokenVerifier

DOC = json.loads(
    (Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "id_tokens.json").read_text(
        encoding="utf-8"
    )
)
VECTORS: list[dict[str, Any]] = DOC["vectors"]


@pytest.fixture
async def verifier(tmp_path: Path) -> AsyncIterator[TokenVerifier]:
    issuers = []
    for i, entry in enumerate(DOC["issuers"]):
        (tmp_path / f"jwks-{i}.json").write_text(json.dumps(entry["jwks"]), encoding="utf-8")
        table = {k: v for k, v in entry.items() if k != "jwks"}
        issuers.append({**table, "jwks_file": f"jwks-{i}.json"})
    table = {"leeway_s": DOC["leeway_s"], "verified_cache_size": 0, "issuers": issuers}
    v = TokenVerifier.from_config(table, base_dir=tmp_path, clock=lambda: DOC["now"])
    async with v:
        yield v


def test_vector_file_covers_the_rules() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names)), "vector names are unique"
    assert sum(v["valid"] for v in VECTORS) >= 10
    codes = {v["error"] for v in VECTORS if not v["valid"]}
    assert codes == {
        "auth.invalid_token",
        "auth.expired",
        "auth.wrong_audience",
        "auth.unknown_issuer",
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_id_token_vector(verifier: TokenVerifier, vector: dict[str, Any]) -> None:
    with trio.fail_after(10):
        if vector["valid"]:
            identity = await verifier.verify(vector["token"])
            assert identity.subject == vector["subject"]
            assert dict(identity.claims) == vector["claims"]
            return
        with pytest.raises(TokenError) as info:
            await verifier.verify(vector["token"])
    assert info.value.code == vector["error"], info.value.message
