"""A small result leaves the connector as ONE WebSocket message (COLUMNS + ROWS + DONE), seen by
a scripted relay; a result that needs several database fetches is still streamed chunk by chunk
(the connector never holds rows back while it waits for the database)."""

from __future__ import annotations

from pathlib import Path

import pytds
import trio

import tdslite
from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP
from tests.connector.rogue_relay import RogueRelay
from tests.support.connector_keys import Keys, config_for
from tests.support.connector_stack import TDSLITE_USERS

ADMIN = '[users.owner]\npassword = "owner-pw"\nrole = "admin"\n'


def _kinds(message: list[tuple[str, int]]) -> list[str]:
    return [kind for kind, _ in message]


def _digits(host: str, port: int, database: str) -> None:
    with (
        pytds.connect(
            dsn=host,
            port=port,
            database=database,
            user="owner",
            password="owner-pw",
            autocommit=True,
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("CREATE TABLE d (n int NOT NULL)")
        cursor.execute("INSERT INTO d (n) VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)")


async def test_small_result_is_one_message_big_result_streams(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS + ADMIN)
    token = idp.mint(sub="alice", groups=["analysts"])
    with trio.fail_after(30):
        async with tdslite.open_server(users=users) as db:
            await trio.to_thread.run_sync(_digits, db.host, db.port, db.engine.database)
            path = config_for(
                tmp_path,
                keys,
                idp,
                rogue.ws_url,
                db_port=db.port,
                database=db.engine.database,
                ha_connections=1,
            )
            async with open_connector(load_config(path)) as connector:
                await connector.wait_ready()
                session = await rogue.wait_session()
                await session.ready.wait()
                for sql in ("SELECT 1 AS one", "SELECT 2 AS two WHERE 1 = 0"):
                    before = len(session.messages)
                    result = await session.query(token=token, sql=sql)
                    await result.done.wait()
                    assert result.terminal == "done", result.body
                    sent = [_kinds(m) for m in session.messages[before:] if m]
                    assert sent in ([["Columns", "Rows", "Done"]], [["Columns", "Done"]]), sent
                # 12 at once on one link: each stream's frames still travel together
                before = len(session.messages)
                results = []
                async with trio.open_nursery() as nursery:
                    for n in range(12):
                        results.append(await session.query(token=token, sql=f"SELECT {n} AS n"))
                    for result in results:
                        nursery.start_soon(result.done.wait)
                for result in results:
                    assert result.terminal == "done", result.body
                    carrying = [
                        [kind for kind, sid in m if sid == result.stream_id]
                        for m in session.messages[before:]
                    ]
                    assert [k for k in carrying if k] == [["Columns", "Rows", "Done"]], carrying
                # 1,000 rows of ~110 bytes: several 32 KiB chunks, each sent as it is fetched
                before = len(session.messages)
                big = await session.query(
                    token=token,
                    sql=f"SELECT a.n, '{'x' * 100}' AS pad FROM d a CROSS JOIN d b CROSS JOIN d c",
                )
                await big.done.wait()
                assert big.terminal == "done", big.body
                sent = [m for m in session.messages[before:] if "Rows" in _kinds(m)]
                assert len(sent) >= 2, sent
