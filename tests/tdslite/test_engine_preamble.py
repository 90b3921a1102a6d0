"""tdslite engine: the sp_set_session_context fast path (engine/_preamble.py) answers exactly as
the general path does: same results, same errors, same SESSION_CONTEXT values and types, same
session state afterwards. Each case runs the same batch and parameters on two fresh sessions of
identical engines, once through `Session.execute` (fast path where the shape matches) and once
through the general path alone, and compares everything a client can observe."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connector.execute import CONTEXT_KEYS, preamble_batch
from tdslite.engine import Engine, Param, ResultSet, Session, SqlError, SqlType, User, _preamble

ADMIN = User(login="sa", password="pw", role="admin", database_user="dbo")
READER = User(login="ro", password="pw", role="read-only", database_user="reader")
NVARCHAR = SqlType("nvarchar", length=4000)
BATCH = preamble_batch()
KEYS = ("edgetds.sub", "edgetds.iss", "edgetds.query_id", "other")


def params(*values: object, kind: SqlType = NVARCHAR) -> list[Param]:
    return [Param(f"@c{i}", kind, value) for i, value in enumerate(values)]


@pytest.fixture
def pair() -> Iterator[Callable[[User], tuple[Session, Session]]]:
    engines: list[Engine] = []

    def open_pair(user: User) -> tuple[Session, Session]:
        sessions = []
        for _ in range(2):
            engine = Engine(":memory:", {"sa": ADMIN, "ro": READER})
            engines.append(engine)
            sessions.append(engine.open_session(user))
        return sessions[0], sessions[1]

    yield open_pair
    for engine in engines:
        engine.close()


def outcome(run: Callable[[], Iterator[Any]]) -> tuple[list[Any], tuple[int, str] | None]:
    """The results of ``run()`` (a batch) and its error (number, message), raised when called
    (parsing, binding) or while its results are read."""
    seen: list[Any] = []
    try:
        for result in run():
            seen.append(list(result.rows) if isinstance(result, ResultSet) else repr(result))
    except SqlError as exc:
        return seen, (exc.number, exc.message)
    return seen, None


def observe(session: Session) -> Any:
    """What a client (and the next batch) can see of the session."""
    select = ", ".join(
        f"SESSION_CONTEXT(N'{k}'), SQL_VARIANT_PROPERTY(SESSION_CONTEXT(N'{k}'), 'BaseType'), "
        f"SQL_VARIANT_PROPERTY(SESSION_CONTEXT(N'{k}'), 'MaxLength')"
        for k in KEYS
    )
    error = outcome(lambda: session.execute("SELECT @@ERROR"))
    rows = outcome(lambda: session.execute(f"SELECT {select}"))
    return error, rows, list(session.started)[:-2], dict(session._context)


def both(
    fast: Session, general: Session, sql: str, values: Sequence[Param]
) -> tuple[Any, Any, Any]:
    got = outcome(lambda: fast.execute(sql, values))
    want = outcome(lambda: general._general(sql, values))
    assert got == want
    assert observe(fast) == observe(general)
    return got


def test_the_connector_batch_takes_the_fast_path(
    pair: Callable[[User], tuple[Session, Session]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(CONTEXT_KEYS) == 3
    assert _preamble.match(BATCH) == tuple((k, f"c{i}", True) for i, k in enumerate(CONTEXT_KEYS))
    fast, _ = pair(READER)

    def refuse(sql: str, values: Sequence[Param]) -> Iterator[Any]:
        raise AssertionError("the general path ran")

    monkeypatch.setattr(fast, "_general", refuse)
    assert outcome(lambda: fast.execute(BATCH, params("alice", "i", "q-1"))) == ([], None)
    assert fast._context["edgetds.sub"][0] == "alice"


@pytest.mark.parametrize(
    ("sql", "values"),
    [
        pytest.param(BATCH, params("alice", "https://idp", "q-1"), id="connector"),
        pytest.param(BATCH, params("ü" * 4000, "", "q"), id="long-and-empty"),
        pytest.param(BATCH, params(None, None, None), id="nulls"),
        pytest.param(BATCH, params(7, 8, 9, kind=SqlType("int")), id="ints"),
        pytest.param(BATCH, params("a", "b"), id="undeclared-parameter"),
        pytest.param(
            "EXEC sp_set_session_context @key = N'other', @value = @c0, @read_only = 0",
            params("x"),
            id="not-read-only",
        ),
        pytest.param(
            "EXEC sp_set_session_context @key = N'other', @value = @c0, @read_only = 1;"
            "EXEC sp_set_session_context @key = N'other', @value = @c1, @read_only = 1",
            params("x", "y"),
            id="same-key-twice",
        ),
        pytest.param(
            "EXEC sp_set_session_context @key = N'other', @value = @c0, @read_only = 1;",
            params("x"),
            id="trailing-semicolon",
        ),
        pytest.param(
            "EXEC sp_set_session_context @key = N'other', @value = @__g_x, @read_only = 1",
            [Param("@__g_x", NVARCHAR, "x")],
            id="reserved-name",
        ),
    ],
)
@pytest.mark.parametrize("user", [READER, ADMIN], ids=["reader", "admin"])
def test_same_answer_as_the_general_path(
    pair: Callable[[User], tuple[Session, Session]], user: User, sql: str, values: list[Param]
) -> None:
    fast, general = pair(user)
    both(fast, general, sql, values)


def test_read_only_keys_are_refused_alike(pair: Callable[[User], tuple[Session, Session]]) -> None:
    fast, general = pair(READER)
    first = both(fast, general, BATCH, params("alice", "i", "q-1"))
    assert first == ([], None)
    # the same keys again without a reset: 15664 from both, the values stay
    again = both(fast, general, BATCH, params("mallory", "i", "q-2"))
    assert again[1] is not None
    assert again[1][0] == 15664
    assert fast._context["edgetds.sub"][0] == "alice"
    # after a reset the keys can be set again
    fast.reset()
    general.reset()
    assert both(fast, general, BATCH, params("bob", "i", "q-3")) == ([], None)
    assert fast._context["edgetds.sub"][0] == "bob"


def test_a_procedure_of_that_name_runs_alike(
    pair: Callable[[User], tuple[Session, Session]],
) -> None:
    fast, general = pair(ADMIN)
    create = (
        "CREATE PROCEDURE sp_set_session_context @key nvarchar(100), @value nvarchar(100), "
        "@read_only int AS SELECT @key AS k, @value AS v"
    )
    assert outcome(functools.partial(fast.execute, create))[1] is None
    assert outcome(functools.partial(general.execute, create))[1] is None
    assert both(fast, general, BATCH, params("a", "b", "c"))[0] != []


def test_a_cancel_before_the_first_step_is_reported_alike(
    pair: Callable[[User], tuple[Session, Session]],
) -> None:
    fast, general = pair(READER)
    results = fast.execute(BATCH, params("a", "b", "c"))
    fast.cancel()
    got = outcome(lambda: results)
    general_results = general._general(BATCH, params("a", "b", "c"))
    general.cancel()
    assert got == outcome(lambda: general_results)
    assert got[1] is not None
    assert got[1][0] == 3617
    assert fast._context == general._context == {}


def test_table_variables_in_scope_take_the_general_path(
    pair: Callable[[User], tuple[Session, Session]],
) -> None:
    fast, general = pair(ADMIN)
    sql = "DECLARE @t TABLE (a int); " + BATCH
    both(fast, general, sql, params("a", "b", "c"))
    assert _preamble.match(sql) is None


def test_after_a_failed_statement_error_is_cleared_alike(
    pair: Callable[[User], tuple[Session, Session]],
) -> None:
    fast, general = pair(READER)
    assert outcome(lambda: fast.execute("SELECT 1/0"))[1] is not None
    assert outcome(lambda: general.execute("SELECT 1/0"))[1] is not None
    both(fast, general, BATCH, params("a", "b", "c"))
    assert outcome(lambda: fast.execute("SELECT @@ERROR")) == ([[(0,)]], None)


#: the connector's batch with ONE character changed: each leaves the fast path's shape, or (an
#: undeclared value) makes the fast path decline
ONE_OFF = {
    "read-only-2": BATCH.replace("@read_only = 1", "@read_only = 2", 1),
    "space-in-key": BATCH.replace("N'edgetds.sub'", "N'edgetds sub'"),
    "undeclared-value": BATCH.replace("@value = @c0", "@value = @c9"),
    "unknown-procedure": BATCH.replace("context @key", "contexx @key", 1),
    "no-semicolon": BATCH.replace(";", " ", 1),
    "lowercase-exec": BATCH.replace("EXEC", "EXEc", 1),
    "varchar-key": BATCH.replace("N'edgetds.iss'", " 'edgetds.iss'"),
    "trailing-space": BATCH + " ",
    "leading-space": " " + BATCH,
}


@pytest.mark.parametrize("sql", ONE_OFF.values(), ids=ONE_OFF.keys())
def test_one_character_off_takes_the_general_path_with_the_same_answer(
    pair: Callable[[User], tuple[Session, Session]], sql: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(sql) == len(BATCH) + (1 if sql.strip() == BATCH else 0)
    fast, general = pair(READER)

    def refuse(*args: Any) -> Iterator[Any]:
        raise AssertionError("the fast path ran")

    monkeypatch.setattr(fast, "_run_contexts", refuse)
    both(fast, general, sql, params("alice", "https://idp", "q-1"))


PROCEDURE = (
    "CREATE PROCEDURE {name} @key nvarchar(100), @value nvarchar(100), @read_only int "
    "AS SELECT @key AS k, @value AS v"
)


def runs_the_procedure(engine: Engine) -> None:
    """The connector's batch on a new session of ``engine`` calls the user's procedure, exactly
    as the general path does."""
    fast, general = engine.open_session(ADMIN), engine.open_session(ADMIN)
    got = outcome(lambda: fast.execute(BATCH, params("a", "b", "c")))
    assert got == outcome(lambda: general._general(BATCH, params("a", "b", "c")))
    assert got[0][0] == [("edgetds.sub", "a")]
    assert fast._context == {}


@pytest.mark.parametrize("name", ["sp_set_session_context", "dbo.SP_Set_Session_Context"])
def test_a_procedure_another_session_made_runs(name: str, tmp_path: Path) -> None:
    """The fast path asks SQLite for a procedure of that name only when the engine ever held one
    (`Engine.procedure_names`): one made by another session, whatever its case, runs, and so does
    one found in the file when an engine opens it."""
    db = tmp_path / "shared.db"
    engine = Engine(db, {"sa": ADMIN})
    try:
        first = engine.open_session(ADMIN)
        assert outcome(lambda: first.execute(BATCH, params("a", "b", "c"))) == ([], None)
        assert "sp_set_session_context" not in engine.procedure_names
        assert (
            outcome(lambda: engine.open_session(ADMIN).execute(PROCEDURE.format(name=name)))[1]
            is None
        )
        first.reset()
        runs_the_procedure(engine)
    finally:
        engine.close()
    reopened = Engine(db, {"sa": ADMIN})
    try:
        assert "sp_set_session_context" in reopened.procedure_names
        runs_the_procedure(reopened)
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("sql", "inline"),
    [
        ("SELECT @c0 AS n", True),
        ("SELECT 1", True),
        ("SELECT @c0, -1 AS m, N'x' AS s, NULL AS z, @@SPID AS spid", True),
        ("SELECT @c0 AS n FROM t", False),
        ("SELECT 1 WHERE @c0 = 1", False),
        ("SELECT TOP 1 @c0", False),
        ("SELECT @c0 + 1", False),
        ("SELECT LEN(@c0)", False),
        ("SELECT (SELECT 1)", False),
        ("SELECT @c0 AS n INTO #t", False),
        ("SELECT 1 UNION SELECT 2", False),
        ("SELECT 1; SELECT 2", False),
        ("SELECT @c0 = 1", False),
        ("UPDATE t SET a = 1", False),
        ("SELEC 1", False),
    ],
)
def test_select_inline_takes_selects_of_values_only(
    pair: Callable[[User], tuple[Session, Session]], sql: str, inline: bool
) -> None:
    session, _ = pair(READER)
    assert session.select_inline(sql, params("a")) is inline
    if inline:  # and they run as they always do
        assert outcome(lambda: session.execute(sql, params("a")))[1] is None
