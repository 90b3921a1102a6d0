"""tdslite's statement log names the statement each connection is running while it runs (its
entry comes when it ends), so a test can act while a statement runs instead of guessing."""

from __future__ import annotations

from pathlib import Path

import trio

from tdslite import StatementLog, open_server
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch, admin_connection
from tests.support.waiting import eventually

#: 10^7 rows counted: long enough to be seen running
MEDIUM = "SELECT COUNT(*) AS c FROM d a, d b, d c, d e, d f, d g, d h"


async def test_a_running_statement_is_listed_until_its_entry_is_recorded(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    log = StatementLog()
    async with open_server(users=users, db=":memory:", statement_log=log) as db:
        await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
        assert log.running == {}
        conn = await trio.to_thread.run_sync(admin_connection, db)
        cursor = conn.cursor()
        seen_running_before_its_entry = []
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, cursor.execute, MEDIUM)
                await eventually(lambda: log.is_running("FROM d a, d b"))
                seen_running_before_its_entry.append(
                    not [e for e in log.entries if e["statement"] == MEDIUM]
                )
        assert seen_running_before_its_entry == [True]
        assert cursor.fetchall() == [(10**7,)]
        (entry,) = [e for e in log.entries if e["statement"] == MEDIUM]
        assert entry["outcome"]["rows"] == 1
        assert not log.is_running("FROM d a, d b")
        assert log.running == {}
        conn.close()
