"""Control flow: the block executor that runs a batch's statements (and, later, a procedure body).

Entry points:

- `build(items)` turns the prepared pieces of a batch (as _batch cut them: ``IF <cond>``,
  ``BEGIN``, ``END TRY``, ``ELSE``, plain statements...) into a tree of `Node`s, raising SQL
  Server's compile errors (102 unbalanced BEGIN/END, 135/136 BREAK/CONTINUE outside WHILE, 10704
  THROW without arguments outside CATCH, 178 RETURN with a value in a batch) before anything runs.
- `run(session, nodes, variables)` runs such a tree in ``session`` with the variables (and RPC
  parameters) given, yielding what Session.execute yields: ResultSet, RowCount, StatementFailed
  and Info. It is the one way statements run: a batch is `run` of its tree; a procedure body can
  be `run` the same way (``procedure=`` names it in ERROR_PROCEDURE() and in messages, and
  RETURN's value is then `Runner.return_status`).

Semantics, as SQL Server:

- IF/ELSE, BEGIN...END, WHILE with BREAK/CONTINUE, RETURN (ends the batch quietly).
- Errors (`Runner.failed`): inside TRY an error of severity 11-19 that is not a compile error
  (name resolution, syntax, unsupported) goes to the CATCH block and is not sent to the client;
  ERROR_NUMBER()/MESSAGE()/SEVERITY()/STATE()/LINE()/PROCEDURE() describe it there. If the
  error would have rolled the transaction back (XACT_ABORT ON, conversion failures, THROW with
  XACT_ABORT ON) the transaction is doomed instead: XACT_STATE() is -1, writes and COMMIT fail
  with 3930, only ROLLBACK ends it, and a batch that ends with it still doomed rolls it back with
  error 3998. Outside TRY, Session.statement_failed decides (the batch goes on, or ends, with or
  without a rollback); a DML statement that fails and lets the batch go on is followed by INFO
  3621 "The statement has been terminated." (`SqlError.terminated`).
- THROW ends the batch (rolls back with XACT_ABORT ON); RAISERROR severity 11-18 sends an error
  and the batch goes on (it ignores XACT_ABORT), severity 0-10 an INFO message; WITH NOWAIT
  asks the wire layer to send what it holds at once (`Info.nowait`). PRINT sends an INFO message.
- WAITFOR DELAY waits (cancellable: Session.cancel wakes it, error 3617).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Union

from sqlglot import Token, TokenType

from . import _errors
from ._batch import Statement, tokenize, word
from ._errors import SqlError
from ._printf import as_text as _text
from ._printf import format_message
from ._results import Info, ResultSet, StatementFailed
from ._scalars import value_at
from ._state import FlowState, Prepared, Result, SessionView, Variable

#: Statements this module runs itself (the rest go to Session._run_statement).
FLOW_KEYWORDS = frozenset(
    {"IF", "WHILE", "ELSE", "END", "BREAK", "CONTINUE", "RETURN", "THROW", "RAISERROR"}
    | {"PRINT", "WAITFOR"}
)
#: Errors found while compiling a statement: never caught by TRY at the same level.
_NOT_CAUGHT = frozenset({102, 105, 134, 137, 195, 207, 208, 209, 40517, 3617})
#: Run-time errors that terminate a DML statement (SQL Server adds 3621 after them).
_TERMINATING = frozenset({515, 544, 547, 2601, 2627, 2628, 8134, 8115, 8152})
_DML = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})
_WRITES = _DML | {"CREATE", "DROP", "ALTER", "TRUNCATE", "SAVE", "COMMIT"}
#: Errors that doom an open transaction inside TRY (with XACT_ABORT OFF): the batch-aborting ones.
_DOOMING = frozenset({241, 245, 8114, 8169, 1205})
_WAITFOR_TIME = re.compile(r"^\s*(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.:](\d{1,3}))?)?\s*$")


# -- the tree ---------------------------------------------------------------------------------


@dataclass
class Simple:
    item: Prepared


@dataclass
class Block:
    body: list[Node]


@dataclass
class If:
    item: Prepared  #: the piece ``IF <cond>``
    condition: Prepared  #: ``SELECT CASE WHEN <cond> THEN 1 ELSE 0 END``
    then: Node
    otherwise: Node | None


@dataclass
class While:
    item: Prepared
    condition: Prepared
    body: Node


@dataclass
class Try:
    body: list[Node]
    catch: list[Node]


Node = Union[Simple, Block, If, While, Try]  # noqa: UP007 (a runtime alias under 3.11)


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    pass


class _Caught(Exception):
    def __init__(self, error: SqlError) -> None:
        super().__init__(error.message)
        self.error = error


def _is_block(statement: Statement, kind: str | None) -> bool:
    words = statement.words
    if kind is None:
        return words == ("BEGIN",)
    return words == ("BEGIN", kind)


def _is_end(statement: Statement, kind: str | None) -> bool:
    return statement.keyword == "END" and statement.words == (
        ("END",) if kind is None else ("END", kind)
    )


class _Builder:
    def __init__(self, session: SessionView, items: list[Prepared], procedure: bool) -> None:
        self.session = session
        self.items = items
        self.index = 0
        self.loops = 0
        self.catches = 0
        self.procedure = procedure

    def _near(self) -> SqlError:
        if self.index < len(self.items):
            statement = self.items[self.index].statement
            return _errors.syntax_error(statement.words[0] if statement.words else "").at_line(
                statement.line
            )
        last = self.items[-1].statement if self.items else None
        return _errors.syntax_error(last.text.split()[-1] if last else "").at_line(
            last.line if last else 1
        )

    def block(self, kind: str | None) -> list[Node]:
        """Statements up to ``END [kind]`` (consumed), or to the end of the batch (kind "")."""
        body: list[Node] = []
        while True:
            if self.index >= len(self.items):
                if kind == "":
                    return body
                raise self._near()
            statement = self.items[self.index].statement
            if kind != "" and _is_end(statement, kind):
                self.index += 1
                return body
            body.append(self.statement())

    def statement(self) -> Node:
        if self.index >= len(self.items):
            raise self._near()
        item = self.items[self.index]
        statement = item.statement
        keyword = statement.keyword
        words = statement.words
        if keyword == "BEGIN" and words[1:2] not in (("TRAN",), ("TRANSACTION",)):
            self.index += 1
            if _is_block(statement, None):
                return Block(self.block(None))
            if _is_block(statement, "TRY"):
                body = self.block("TRY")
                if self.index >= len(self.items) or not _is_block(
                    self.items[self.index].statement, "CATCH"
                ):
                    raise self._near()
                self.index += 1
                self.catches += 1
                try:
                    catch = self.block("CATCH")
                finally:
                    self.catches -= 1
                return Try(body, catch)
            raise _errors.unsupported(" ".join(words[:2])).at_line(statement.line)
        if keyword in ("END", "ELSE"):
            raise self._near()
        self.index += 1
        if keyword in ("IF", "WHILE"):
            if len(words) < 2:
                raise _errors.syntax_error(keyword).at_line(statement.line)
            condition = self._condition(statement)
            if keyword == "WHILE":
                self.loops += 1
                try:
                    return While(item, condition, self.statement())
                finally:
                    self.loops -= 1
            then = self.statement()
            otherwise = None
            if self.index < len(self.items) and self.items[self.index].statement.keyword == "ELSE":
                self.index += 1
                otherwise = self.statement()
            return If(item, condition, then, otherwise)
        if keyword == "WAITFOR" and words[1:2] != ("DELAY",):
            raise _errors.unsupported(" ".join(words[:2])).at_line(statement.line)
        if keyword in ("BREAK", "CONTINUE") and not self.loops:
            number = 135 if keyword == "BREAK" else 136
            raise SqlError(
                number,
                f"Cannot use a {keyword} statement outside the scope of a WHILE statement.",
                severity=15,
            ).at_line(statement.line)
        if keyword == "THROW" and len(words) == 1 and not self.catches:
            raise SqlError(
                10704,
                "To rethrow an error, a THROW statement must be used inside a CATCH block. "
                "Insert the THROW statement inside a CATCH block, or add error parameters to "
                "the THROW statement.",
                severity=15,
            ).at_line(statement.line)
        if keyword == "RETURN" and len(tokenize(statement.text)) > 1 and not self.procedure:
            raise SqlError(
                178,
                "A RETURN statement with a return value cannot be used in this context.",
                severity=15,
            ).at_line(statement.line)
        return Simple(item)

    def _condition(self, statement: Statement) -> Prepared:
        """``IF|WHILE <cond>`` as the query ``SELECT CASE WHEN <cond> THEN 1 ELSE 0 END``."""
        cond = statement.sql[len(statement.keyword) :]
        sql = f"SELECT CASE WHEN {cond} THEN 1 ELSE 0 END"
        tokens = tokenize(sql)
        words = tuple(w for w in (word(tokens, i) for i in range(len(tokens))) if w)
        query = Statement("SELECT", statement.text, sql, words, statement.line)
        return self.session._prepare(query)


def build(session: SessionView, items: list[Prepared], *, procedure: bool = False) -> list[Node]:
    """The tree of a batch's (or procedure body's) prepared pieces (see the module docstring).

    Raises:
        SqlError: SQL Server's compile errors for misplaced control flow.
    """
    return _Builder(session, items, procedure).block("")


# -- running ----------------------------------------------------------------------------------


def run(
    session: SessionView,
    nodes: list[Node],
    variables: dict[str, Variable],
    *,
    procedure: str | None = None,
) -> Iterator[Result]:
    """Run ``nodes`` (see the module docstring); the batch's last statement-level error is raised
    rather than yielded (the wire layer then ends the reply with it)."""
    runner = Runner(session, variables, procedure=procedure)
    held: StatementFailed | None = None
    try:
        for result in runner.run(nodes):
            if held is not None:
                yield held
                held = None
            if isinstance(result, StatementFailed):
                held = result
            else:
                yield result
    except SqlError as exc:
        if held is not None:
            yield held
            held = None
        doomed = runner.end_doomed()
        if doomed is None:
            raise
        yield StatementFailed(exc)
        raise doomed from None
    doomed = runner.end_doomed()
    if doomed is not None:
        if held is not None:
            yield held
        raise doomed
    if held is not None:
        raise held.error


class Runner:
    """Runs a tree of nodes in a session (see the module docstring)."""

    def __init__(
        self, session: SessionView, variables: dict[str, Variable], *, procedure: str | None = None
    ) -> None:
        self.session = session
        self.flow: FlowState = session.flow
        self.variables = variables
        self.procedure = procedure
        self.return_status = 0

    def run(self, nodes: list[Node]) -> Iterator[Result]:
        try:
            for node in nodes:
                yield from self.node(node)
        except _Return:
            pass

    def end_doomed(self) -> SqlError | None:
        """A transaction still doomed at the end of the batch is rolled back: error 3998."""
        if not self.flow.doomed or self.procedure is not None:
            return None
        self.flow.doomed = False
        if not self.session.in_transaction:
            return None
        self.session._abort_transaction()
        return SqlError(
            3998,
            "Uncommittable transaction is detected at the end of the batch. The transaction is "
            "rolled back.",
        )

    def node(self, node: Node) -> Iterator[Result]:
        if isinstance(node, Simple):
            yield from self.simple(node.item)
        elif isinstance(node, Block):
            for child in node.body:
                yield from self.node(child)
        elif isinstance(node, If):
            truth = yield from self.truth(node.item, node.condition)
            if truth:
                yield from self.node(node.then)
            elif node.otherwise is not None:
                yield from self.node(node.otherwise)
        elif isinstance(node, While):
            while (yield from self.truth(node.item, node.condition)):
                try:
                    yield from self.node(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
        else:
            yield from self.try_catch(node)

    def try_catch(self, node: Try) -> Iterator[Result]:
        caught: SqlError | None = None
        self.flow.try_depth += 1
        try:
            for child in node.body:
                yield from self.node(child)
        except _Caught as exc:
            caught = exc.error
        finally:
            self.flow.try_depth -= 1
        if caught is None:
            return
        self.flow.caught.append(caught)
        try:
            for child in node.catch:
                yield from self.node(child)
        finally:
            self.flow.caught.pop()

    def truth(self, item: Prepared, condition: Prepared) -> Generator[Result, None, bool]:
        """Evaluate an IF/WHILE condition (a generator so errors go the usual way)."""
        self.session.started.append(item.statement.keyword)
        rowcount = self.session._rowcount  # `UPDATE ...; IF @@ROWCOUNT = 0 ...` reads it
        try:
            value = None
            for result in self.session._run_statement(condition, self.variables):
                if isinstance(result, ResultSet):
                    rows = list(result.rows)
                    value = rows[0][0] if rows else None
            self.flow.last_error = 0
            self.session._rowcount = rowcount
            return value == 1
        except SqlError as exc:
            if exc.line == 1:
                exc.line = item.statement.line
            yield from self.failed(exc, item.statement)
            return False

    def simple(self, item: Prepared) -> Iterator[Result]:
        statement = item.statement
        keyword = statement.keyword
        try:
            if keyword in FLOW_KEYWORDS:
                self.session.started.append(keyword)
                if self.session._cancel_requested:
                    raise _errors.cancelled()
                yield from self.flow_statement(item)
                return
            if self.flow.doomed and self.session.in_transaction and keyword in _WRITES:
                raise SqlError(
                    3930,
                    "The current transaction cannot be committed and cannot support operations "
                    "that write to the log file. Roll back the transaction.",
                ).at_line(statement.line)
            yield from self.session._run_statement(item, self.variables)
            self.flow.last_error = 0
        except SqlError as exc:
            if exc.line == 1 and statement.line != 1:
                exc.line = statement.line
            if self.procedure is not None and exc.procedure is None:
                exc.procedure = self.procedure
            yield from self.failed(exc, statement, throw=keyword == "THROW")

    def failed(
        self, exc: SqlError, statement: Statement, *, throw: bool = False
    ) -> Iterator[Result]:
        """A statement failed: to CATCH, on with the batch (StatementFailed), or raise."""
        session = self.session
        self.flow.last_error = exc.number
        if self.flow.try_depth and 10 < exc.severity < 20 and exc.number not in _NOT_CAUGHT:
            if session.in_transaction and (session.xact_abort or exc.number in _DOOMING):
                self.flow.doomed = True
            raise _Caught(exc)
        if throw:
            if session.xact_abort:
                session._abort_transaction()
            raise exc
        if not session.statement_failed(exc):
            raise exc
        if statement.keyword in _DML or (
            statement.keyword == "WITH" and _DML & set(statement.words)
        ):
            exc.terminated = exc.number in _TERMINATING
        yield StatementFailed(exc)

    # -- THROW, RAISERROR, PRINT, WAITFOR, RETURN, BREAK, CONTINUE ------------------------------

    def flow_statement(self, item: Prepared) -> Iterator[Result]:
        statement = item.statement
        keyword = statement.keyword
        session = self.session
        if keyword == "BREAK":
            raise _Break
        if keyword == "CONTINUE":
            raise _Continue
        tokens = tokenize(statement.text)
        if keyword == "RETURN":
            from ._procedures import return_status

            self.return_status = return_status(session, statement, self.variables)
            raise _Return
        if keyword == "THROW":
            error = self._throw(tokens)  # a rethrow keeps the original error's line
            raise error if len(tokens) == 1 else error.at_line(statement.line)
        if keyword == "PRINT":
            values = self._arguments(tokens[1:])
            text = "" if not values or values[0] is None else _text(values[0])
            session._rowcount = 0
            self.flow.last_error = 0
            yield Info(SqlError(0, text[:8000], state=1, severity=0, line=statement.line))
            return
        if keyword == "WAITFOR":
            self._waitfor(tokens)
            self.flow.last_error = 0
            return
        if keyword == "RAISERROR":
            error, nowait, seterror = self._raiserror(tokens)
            error.line = statement.line
            error.procedure = self.procedure
            session._rowcount = 0
            if error.severity <= 10:
                self.flow.last_error = error.number if seterror else 0
                yield Info(error, nowait=nowait)
                return
            self.flow.last_error = error.number
            if self.flow.try_depth:
                raise _Caught(error)
            yield StatementFailed(error)
            return
        raise _errors.unsupported(keyword).at_line(statement.line)

    def _arguments(self, tokens: list[Token]) -> list[object]:
        """Comma-separated literals or @variables."""
        values: list[object] = []
        index = 0
        toks = list(tokens)
        while index < len(toks):
            value, _, index = value_at(self.session, toks, index, self.variables)
            values.append(value)
            if index < len(toks):
                if toks[index].token_type != TokenType.COMMA:
                    raise _errors.syntax_error(toks[index].text)
                index += 1
        return values

    def _throw(self, tokens: list[Token]) -> SqlError:
        if len(tokens) == 1:
            original = self.flow.caught[-1]
            again = SqlError(
                original.number,
                original.message,
                state=original.state,
                severity=original.severity,
                line=original.line,
            )
            again.procedure = original.procedure
            return again
        values = self._arguments(tokens[1:])
        if len(values) != 3:
            raise _errors.syntax_error("THROW")
        number, message, state = values
        if not isinstance(number, int) or not 50000 <= number <= 2147483647:
            raise SqlError(
                35100,
                f"Error number {number} in the THROW statement is outside the valid range. "
                "Specify an error number in the valid range of 50000 to 2147483647.",
            )
        if not isinstance(state, int) or not 0 <= state <= 255:
            raise SqlError(
                35101, f"State {state} in the THROW statement is outside the valid range."
            )
        error = SqlError(number, _text(message)[:2048] if message is not None else "", state=state)
        error.procedure = self.procedure
        return error

    def _raiserror(self, tokens: list[Token]) -> tuple[SqlError, bool, bool]:
        toks = list(tokens)
        if len(toks) < 3 or toks[1].token_type != TokenType.L_PAREN:
            raise _errors.syntax_error("RAISERROR")
        depth, close = 0, -1
        for index, token in enumerate(toks):
            kind = token.token_type
            if kind == TokenType.L_PAREN:
                depth += 1
            elif kind == TokenType.R_PAREN:
                depth -= 1
                if depth == 0:
                    close = index
                    break
        if close < 0:
            raise _errors.syntax_error("RAISERROR")
        values = self._arguments(toks[2:close])
        rest = [word(toks, i).upper() for i in range(close + 1, len(toks))]
        options = {w for w in rest if w not in ("WITH", ",")}
        if rest and (rest[0] != "WITH" or not options <= {"NOWAIT", "LOG", "SETERROR"}):
            raise _errors.syntax_error(rest[0] if rest[0] != "WITH" else rest[-1])
        if len(values) < 3:
            raise _errors.syntax_error(")")
        if len(values) > 23:
            raise SqlError(
                2747,
                "Too many substitution parameters for RAISERROR. Cannot exceed 20 substitution "
                "parameters.",
                severity=16,
            )
        message, severity, state = values[:3]
        severity = 0 if not isinstance(severity, int) else max(0, min(severity, 25))
        if severity > 18:
            raise SqlError(
                2754,
                "Error severity levels greater than 18 can only be specified by members of the "
                "sysadmin role, using the WITH LOG option.",
            )
        state = 1 if not isinstance(state, int) or state < 0 else state
        if state > 255:
            raise _errors.unsupported("RAISERROR with a state above 255")
        if isinstance(message, int) and not isinstance(message, bool):
            if message < 13000 or message == 50000:
                raise SqlError(
                    2732,
                    f"Error number {message} is invalid. The number must be from 13000 through "
                    "2147483647 and it cannot be 50000.",
                )
            text = (
                f"Error {message}, severity {severity}, state {state} was raised, but no message "
                "with that error number was found in sys.messages. If error is larger than 50000, "
                "make sure the user-defined message is added using sp_addmessage."
            )
            error = SqlError(
                18054, text, state=state, severity=max(severity, 11) if severity > 10 else 16
            )
            return error, "NOWAIT" in options, "SETERROR" in options
        text = format_message(_text(message) if message is not None else "", values[3:])
        if len(text) > 2047:
            text = text[:2044] + "..."
        return (
            SqlError(50000, text, state=state, severity=severity),
            "NOWAIT" in options,
            "SETERROR" in options,
        )

    def _waitfor(self, tokens: list[Token]) -> None:
        toks = list(tokens)
        what = word(toks, 1) if len(toks) > 1 else ""
        if what != "DELAY":
            raise _errors.unsupported(f"WAITFOR {what}".strip())
        values = self._arguments(toks[2:])
        text = _text(values[0]) if values and values[0] is not None else ""
        match = _WAITFOR_TIME.match(text)
        if len(values) != 1 or match is None:
            raise SqlError(
                148,
                f"Incorrect time syntax in time string '{text}' used with WAITFOR.",
                severity=15,
            )
        hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
        if minutes > 59 or seconds > 59 or hours > 23:
            raise SqlError(
                148,
                f"Incorrect time syntax in time string '{text}' used with WAITFOR.",
                severity=15,
            )
        fraction = match.group(4) or ""
        total = (
            hours * 3600
            + minutes * 60
            + seconds
            + (int(fraction.ljust(3, "0")) if fraction else 0) / 1000
        )
        del millis
        if self.session._cancel_requested or self.flow.wake.wait(total):
            raise _errors.cancelled()


def session_globals(session: SessionView) -> dict[str, object]:
    """The bound values (@__G_NAME) control flow and SET options provide (see _builtins)."""
    flow = session.flow
    caught = flow.caught[-1] if flow.caught else None
    options = session.set_options
    if not session.in_transaction:
        xact_state = 0
    else:
        xact_state = -1 if flow.doomed else 1
    return {
        "__g_error": flow.last_error,
        "__g_error_number": caught.number if caught else None,
        "__g_error_message": caught.message if caught else None,
        "__g_error_severity": caught.severity if caught else None,
        "__g_error_state": caught.state if caught else None,
        "__g_error_line": caught.line if caught else None,
        "__g_error_procedure": caught.procedure if caught else None,
        "__g_xact_state": xact_state,
        "__g_host_name": session.host_name,
        "__g_language": options.language,
        "__g_datefirst": options.datefirst,
        "__g_textsize": options.textsize,
        "__g_lock_timeout": options.lock_timeout,
    }
