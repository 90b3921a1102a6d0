"""A tiny stand-in engine for the wire layer's unit tests ONLY (test_wire_*.py).

It answers a handful of made-up commands so the TDS encoding can be tested in isolation:
``ECHO`` returns its parameters as one row (each column typed like the parameter), ``ROWS n``
returns n int rows, ``FAIL n`` raises SqlError n, ``SLEEP`` runs until cancelled, ``COUNT n``
reports n affected rows, ``BEGIN``/``COMMIT``/``ROLLBACK`` toggle the transaction flag, ``NULLS``
returns a row of 20 columns, most of them NULL. The client tests (test_client_*.py) use the real
engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from tdslite.engine import Column, Param, ResultSet, RowCount, SqlError, SqlType, User


class StandinSession:
    def __init__(self, user: User) -> None:
        self.user = user
        self.effective_user = user.database_user
        self.database = "standin"
        self.in_transaction = False
        self.events: list[str] = []
        self.executed: list[str] = []
        self.params: list[list[Param]] = []
        self.resets = 0
        self._cancel = threading.Event()

    def execute(self, sql: str, params: Sequence[Param] = ()) -> Iterator[ResultSet | RowCount]:
        self._cancel.clear()
        self.executed.append(sql)
        self.params.append(list(params))
        for stmt in [s.strip() for s in sql.split(";") if s.strip()]:
            word, _, arg = stmt.partition(" ")
            word = word.upper()
            if word == "ECHO":
                cols = [Column(p.name.lstrip("@"), p.type) for p in params]
                yield ResultSet(cols, iter([tuple(p.value for p in params)]))
            elif word == "ROWS":
                n = int(arg)
                yield ResultSet(
                    [Column("n", SqlType("int")), Column("s", SqlType("nvarchar", length=50))],
                    iter([(i, f"row {i}") for i in range(n)]),
                )
            elif word == "NULLS":
                cols = [Column(f"c{i}", SqlType("int")) for i in range(20)]
                yield ResultSet(cols, iter([tuple(7 if i == 3 else None for i in range(20))]))
            elif word == "FAIL":
                raise SqlError(int(arg), f"standin failure {arg}", state=2, severity=16)
            elif word == "SLEEP":
                if self._cancel.wait(30):
                    raise SqlError(3617, "cancelled")
                yield RowCount(0)
            elif word == "COUNT":
                yield RowCount(int(arg))
            elif word == "BEGIN":
                self.begin()
            elif word == "COMMIT":
                self.commit()
            elif word == "ROLLBACK":
                self.rollback()
            elif word == "SET":
                pass
            else:
                raise SqlError(102, f"Incorrect syntax near '{word}'.")

    def cancel(self) -> None:
        self._cancel.set()

    def _end(self, how: str) -> None:
        if self.in_transaction:
            self.in_transaction = False
            self.events.append(how)

    def begin(self) -> None:
        if not self.in_transaction:
            self.in_transaction = True
            self.events.append("begin")

    def commit(self) -> None:
        self._end("commit")

    def rollback(self, name: str | None = None) -> None:
        self._end("rollback")

    def save(self, name: str) -> None:
        pass

    def statement_failed(self, exc: SqlError) -> bool:
        return False

    def take_transaction_events(self) -> list[str]:
        events, self.events = self.events, []
        return events

    def reset(self) -> None:
        self.resets += 1
        self._end("rollback")

    def close(self) -> None:
        pass


class StandinEngine:
    def __init__(self, users: dict[str, User]) -> None:
        self.users = users
        self.sessions: list[StandinSession] = []

    def authenticate(self, login: str, password: str) -> User:
        user = self.users.get(login)
        if user is None or user.password != password:
            raise SqlError(18456, f"Login failed for user '{login}'.", severity=14)
        return user

    def open_session(self, user: User, *, database: str | None = None) -> StandinSession:
        session = StandinSession(user)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        pass
