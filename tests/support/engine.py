"""A tdslite engine session for tests that run statements without a server: the admin login on
an in-memory copy of the sample database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tdslite.engine import Engine, Session, User

__all__ = ["admin_session"]


@contextmanager
def admin_session() -> Iterator[Session]:
    """A session of the admin login ``sa`` on the sample database (in memory), closed after."""
    admin = User(login="sa", password="pw", role="admin", database_user="dbo")
    engine = Engine(":memory:", {"sa": admin}, seed="sample")
    try:
        yield engine.open_session(admin)
    finally:
        engine.close()
