"""The connector against a rogue relay that holds the pinned key: mutual authentication, then
every QUERY is refused unless its attestation AND its user token verify; refusals never touch
the database (here: the database port is closed, so reaching it would show as
connector.database_unavailable instead of the refusal code)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.audit import verify_files
from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP
from tests.connector.rogue_relay import RogueRelay
from tests.support.connector_keys import Keys, closed_port, config_for


def _error(body: bytes) -> dict:
    line = json.loads(body.decode().splitlines()[-1])
    assert "error" in line, line
    return line["error"]


async def test_hello_verified_ready_then_attacks_refused(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    path = config_for(tmp_path, keys, idp, rogue.ws_url, db_port=closed_port(), ha_connections=1)
    good = idp.mint(sub="alice", groups=["analysts"])
    with trio.fail_after(20):
        async with open_connector(load_config(path)) as connector:
            await connector.wait_ready()
            session = await rogue.wait_session()
            await session.ready.wait()

            async def run(**kw: object) -> dict:
                result = await session.query(**kw)  # type: ignore[arg-type]
                await result.done.wait()
                assert result.terminal == "error"
                return _error(result.body)

            sql = "SELECT 1 AS one"
            # user tokens: expired, wrong audience, unknown issuer, tampered, missing
            assert (
                await run(token=idp.mint(sub="a", groups=["analysts"], expires_in=-120), sql=sql)
            )["code"] == "auth.expired"
            assert (await run(token=idp.mint(sub="a", groups=["analysts"], aud="other"), sql=sql))[
                "code"
            ] == "auth.wrong_audience"
            other = DevIdP([])
            other.issuer = "http://127.0.0.1:1/not-trusted"
            assert (await run(token=other.mint(sub="a", groups=["analysts"]), sql=sql))[
                "code"
            ] == "auth.unknown_issuer"
            head, payload, sig = good.split(".")
            tampered = f"{head}.{payload[:-4]}AAAA.{sig}"
            assert (await run(token=tampered, sql=sql))["code"] == "auth.invalid_token"
            # a subject longer than SQL Server's session context holds (4,000 UTF-16 units; a
            # character beyond U+FFFF counts two): refused by name before the database
            for sub in ("s" * 4001, "s" * 3999 + "\U0001f600"):
                err = await run(token=idp.mint(sub=sub, groups=["analysts"]), sql=sql)
                assert err["code"] == "auth.invalid_token", err
                assert "sub claim" in err["message"]
                assert "edgetds.sub" in err["message"]
                assert sub not in err["message"]
            # 4,000 units fit: the query reaches for the database (down here)
            err = await run(
                token=idp.mint(sub="s" * 3998 + "\U0001f600", groups=["analysts"]), sql=sql
            )
            assert err["code"] == "connector.database_unavailable"

            # attestations: wrong key, altered statement, stale, wrong session, replayed
            wrong = Ed25519PrivateKey.generate()
            assert (await run(token=good, sql=sql, key=wrong))["code"] == "auth.attestation_invalid"
            err = await run(token=good, sql=sql, session_id="00000000-0000-4000-8000-000000000000")
            assert err["code"] == "auth.attestation_invalid"
            assert (await run(token=good, sql=sql, tamper={"sql": "DELETE FROM t"}))[
                "code"
            ] == "auth.attestation_invalid"
            assert (await run(token=good, sql=sql, now=time.time() - 600))[
                "code"
            ] == "auth.attestation_invalid"
            first = await session.query(token=good, sql="DELETE FROM y")
            await first.done.wait()
            err = await run(
                token=good,
                sql="DELETE FROM y",
                query_id=first.query_id,
                attestation=first.query.attestation,
            )
            assert err["code"] == "auth.replay"
            # policy refusals
            err = await run(token=good, sql="DELETE FROM orders")
            assert err["code"] == "policy.not_read_only"
            err = await run(token=idp.mint(sub="c", groups=["contractors"]), sql=sql)
            assert err["code"] == "policy.denied"
            err = await run(token=idp.mint(sub="x", groups=["nobody"]), sql=sql)
            assert err["code"] == "policy.denied"
            # a fully valid query reaches for the database, which is down: a clear typed error
            err = await run(token=good, sql=sql)
            assert err["code"] == "connector.database_unavailable"
            # replay of a query id (fresh nonce, same id)
            qid = "6a1b5f0e-0000-4000-8000-000000000001"
            first = await run(token=good, sql="DELETE FROM x", query_id=qid)
            assert first["code"] == "policy.not_read_only"
            again = await run(token=good, sql="DELETE FROM x", query_id=qid)
            assert again["code"] == "query.duplicate"
            assert connector.service.counts.get("ok", 0) == 0
    audit = tmp_path / "connector" / "audit.jsonl"
    assert verify_files([audit]).ok
    text = audit.read_text()
    assert good not in text  # tokens never reach the audit log
    records = [json.loads(line) for line in text.splitlines()]
    assert {r["outcome"]["status"] for r in records} <= {"refused", "error"}


async def test_hello_signed_by_unpinned_key_is_refused(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    rogue.hello_key = Ed25519PrivateKey.generate()
    path = config_for(tmp_path, keys, idp, rogue.ws_url, db_port=closed_port(), ha_connections=1)
    with trio.fail_after(20):
        async with open_connector(load_config(path)) as connector:
            session = await rogue.wait_session()
            await session.closed.wait()
            assert session.close_code == 4001
            assert not session.ready.is_set()
            assert connector.ready_links == 0
            # it keeps trying (with backoff), and keeps refusing
            await rogue.wait_session(2)
            assert not any(s.ready.is_set() for s in rogue.sessions)


@pytest.mark.parametrize("field", ["nonce", "tunnel", "connector_id"])
async def test_hello_for_another_connection_is_refused(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay, field: str
) -> None:
    setattr(rogue, f"hello_{field}", "someone-else-0000000000")
    path = config_for(tmp_path, keys, idp, rogue.ws_url, db_port=closed_port(), ha_connections=1)
    with trio.fail_after(20):
        async with open_connector(load_config(path)):
            session = await rogue.wait_session()
            await session.closed.wait()
            assert session.close_code == 4001
            assert not session.ready.is_set()


async def test_key_rotation_any_pinned_key_is_accepted(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    from identity.keys import encode_public_key

    old = encode_public_key(Ed25519PrivateKey.generate())
    path = config_for(tmp_path, keys, idp, rogue.ws_url, db_port=closed_port(), ha_connections=1)
    text = path.read_text().replace(
        f'relay_public_keys = ["{keys.relay_public}"]',
        f'relay_public_keys = ["{old}", "{keys.relay_public}"]',
    )
    path.write_text(text)
    assert old in path.read_text()
    with trio.fail_after(20):
        async with open_connector(load_config(path)) as connector:
            await connector.wait_ready()
            session = await rogue.wait_session()
            await session.ready.wait()  # the relay got READY
