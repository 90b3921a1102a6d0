"""Engine: the SQLite database, the users, logins, and the sessions opened on them."""

from __future__ import annotations

import datetime as dt
import hmac
import itertools
import os
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

from . import _errors
from ._catalog import CATALOG_TABLE, CREATE_CATALOG
from ._locks import TableLocks
from ._lru import LruCache
from ._objects import CREATE_OBJECTS, OBJECTS_TABLE
from ._perms import Principal, principals
from ._results import StatementFailed
from ._session import Session
from ._sysfuncs import VERSION
from ._sysviews import DEFAULT_PROVIDER_KINDS, CatalogProvider, registry_provider
from ._users import User

BUSY_TIMEOUT_SECONDS = 5.0
#: The system database every login may connect to; it holds no user tables here.
MASTER = "master"


class Engine:
    """A tdslite database: SQLite file + users + sessions.

    Args:
        db_path: the SQLite file (created if missing); ":memory:" uses a private temporary file
            (removed by close) so that every session sees the same database.
        users: login -> User (see load_users).
        seed: "sample" creates the demo schema and rows if the database has no tables.
        database: the database name clients see (DB_NAME(), USE); default "sample" when seeded
            with it, else the file's stem ("tdslite" for ":memory:").
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        users: dict[str, User],
        *,
        seed: str | None = None,
        database: str | None = None,
    ) -> None:
        self._tempdir: str | None = None
        if os.fspath(db_path) == ":memory:":
            self._tempdir = tempfile.mkdtemp(prefix="tdslite-")
            path = Path(self._tempdir) / "tdslite.db"
            default_name = "tdslite"
        else:
            path = Path(db_path)
            default_name = path.stem
        self.path = path
        self.database = database or ("sample" if seed == "sample" else default_name)
        self.users = dict(users)
        self.principals: dict[str, Principal] = principals(self.users)
        self._spids = itertools.count(51)
        self._sessions: set[Session] = set()
        self._lock = threading.Lock()
        #: Translated statements, shared by sessions (keyed by text, catalog and types).
        self.translations = LruCache(1024)
        #: Tables written by open transactions (READ COMMITTED blocking, see _locks.py).
        self.locks = TableLocks()
        #: Catalog providers: object kind -> function (see tdslite/engine/_sysviews.py).
        self.catalog_providers: dict[str, CatalogProvider] = {
            kind: registry_provider(kind) for kind in DEFAULT_PROVIDER_KINDS
        }
        #: The names (lower case) of every procedure the database held since this engine opened
        #: it: a name not in here is no user procedure, without asking SQLite (a superset: a
        #: procedure dropped or rolled back stays in).
        self.procedure_names: set[str] = set()
        #: create_date of tables in the catalog views (tdslite does not record creation times).
        self.started = dt.datetime.now().replace(microsecond=0)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(CREATE_CATALOG)
            conn.execute(CREATE_OBJECTS)
            empty = conn.execute(f"SELECT COUNT(*) FROM {CATALOG_TABLE}").fetchone()[0] == 0
            self.procedure_names.update(
                str(row[0]).lower()
                for row in conn.execute(
                    f"SELECT name FROM {OBJECTS_TABLE} WHERE type = 'PROCEDURE'"
                )
            )
        finally:
            conn.close()
        if seed is not None:
            from ._seed import SEEDS

            if seed not in SEEDS:
                raise ValueError(f"unknown seed {seed!r}; known: {', '.join(sorted(SEEDS))}")
            if empty:
                self._seed(SEEDS[seed])

    def _seed(self, batches: list[str]) -> None:
        owner = User(login="__seed", password=None, role="admin", database_user="__seed")
        self.principals.setdefault("__seed", Principal("__seed", "admin"))
        session = self.open_session(owner)
        try:
            session.begin()
            for batch in batches:
                for result in session.execute(batch):
                    if isinstance(result, StatementFailed):
                        raise result.error  # a seed must apply whole
            session.commit()
        finally:
            session.close()
            del self.principals["__seed"]

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL: commits survive a crash of tdslite, only an OS crash may lose the last ones
        # (the usual WAL setting; FULL costs an fsync per autocommit statement).
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def principal(self, database_user: str) -> Principal:
        principal = self.principals.get(database_user.lower())
        if principal is None:
            raise _errors.cannot_impersonate(database_user)
        return principal

    def authenticate(self, login: str, password: str) -> User:
        """Check a SQL-authentication login; raises SqlError 18456 (class 14) on failure."""
        user = self.users.get(login)
        expected = user.password if user is not None else None
        # Compare even when the login is unknown so timing does not reveal which logins exist.
        ok = hmac.compare_digest((expected or "\0invalid").encode(), password.encode())
        if user is None or expected is None or not ok:
            raise _errors.login_failed(login)
        return user

    def open_session(self, user: User, *, database: str | None = None) -> Session:
        """A new session for ``user`` (already authenticated by password or token).

        ``database`` empty or None: the login's default database (``User.default_database``,
        else the served one).  ``master`` always opens (no user tables there; ``USE`` the served
        database to see them), as every SQL Server login may connect to master.

        Raises:
            SqlError: 4060 if ``database`` is neither this engine's database nor master.
        """
        name = database or user.default_database or self.database
        known = self.database_name(name)
        if known is None:
            raise _errors.SqlError(
                4060,
                f'Cannot open database "{name}" requested by the login. The login failed.',
                severity=11,
            )
        conn = self._connect()
        session = Session(self, user, conn, spid=next(self._spids), database=known)
        with self._lock:
            self._sessions.add(session)
        return session

    def database_name(self, name: str) -> str | None:
        """The database ``name`` designates as its canonical spelling (the served database or
        master), or None for any other name."""
        if name.lower() == self.database.lower():
            return self.database
        return MASTER if name.lower() == MASTER else None

    def _forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.discard(session)

    def close(self) -> None:
        """Close every session; remove the private file of a ":memory:" engine."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None


__all__ = ["CATALOG_TABLE", "Engine", "VERSION"]
