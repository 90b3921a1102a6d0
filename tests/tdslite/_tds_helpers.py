"""Small helpers shared by tdslite's client tests (blocking clients run in worker threads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

from tests.support.waiting import eventually

T = TypeVar("T")

#: Logins of the users file written by `tds_users_file` -> their passwords.
PASSWORDS = {
    "admin": "Adm1n-pw",
    "writer": "Wr1ter-pw",
    "reader": "Re4der-pw",
}

USERS_TOML = """\
[users.admin]
password = "Adm1n-pw"
role = "admin"
database_user = "dbo_admin"

[users.writer]
password = "Wr1ter-pw"
role = "read-write"
database_user = "app"

[users.reader]
password = "Re4der-pw"
role = "read-only"
database_user = "analyst"

[users."ana@example.com"]
role = "read-only"
database_user = "analyst"
"""


def pytds_connect(server: Any, login: str = "admin") -> Any:
    """A python-tds connection (autocommit) to a running tdslite as one of `PASSWORDS`' logins."""
    import pytds

    return pytds.connect(
        server.host,
        port=server.port,
        user=login,
        password=PASSWORDS[login],
        autocommit=True,
        timeout=10,
    )


async def in_thread(fn: Callable[..., T], *args: Any, limit: float = 20, **kw: Any) -> T:
    """Run a blocking client call in a worker thread, failing after ``limit`` seconds."""
    with trio.fail_after(limit):
        return await trio.to_thread.run_sync(lambda: fn(*args, **kw))


async def wait_until(predicate: Callable[[], bool], *, interval: float = 0.01) -> None:
    """Wait for state written by worker threads, which cannot set a trio.Event."""
    await eventually(predicate, interval=interval)
