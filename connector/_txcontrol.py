"""Refuse statements that control the transaction themselves, inside a session (SPEC.md 7.4).

A session's transaction is opened, committed and rolled back by its operations (``begin``,
``commit``, ``rollback``, ``savepoint``, ``rollback_to``); a statement that does it itself
(``COMMIT``, ``ROLLBACK``, ``SAVE TRANSACTION``, ``BEGIN TRAN``, ``SET IMPLICIT_TRANSACTIONS``,
``SET XACT_ABORT``) would leave the connector believing in a transaction that is gone, so it is
refused with ``policy.denied`` before it reaches SQL Server.

Strategy: tokenize with sqlglot's T-SQL tokenizer, which keeps strings (``'..'``, ``N'..'``) and
quoted identifiers (``[..]``, ``".."``) as their own tokens and drops comments, nested ``/* */``
ones included, as SQL Server does. Only unquoted words are looked at, so ``'COMMIT'`` or a column
``[rollback]`` pass. Fail closed: a text the tokenizer cannot read (an unterminated string,
comment or bracket), or one where SQL Server and sqlglot might cut the lexemes differently (the
read-only check's character and lexeme steps, connector/_readonly.py: e.g. ``*/*``, which sqlglot
reads as one more comment opener than SQL Server does) is refused, and so is dynamic SQL
(``EXEC (...)``, ``sp_executesql`` and the other procedures that run a string), whose text
cannot be checked. The connector also watches the
transaction descriptor SQL Server reports after every statement (connector/sessions.py), so a
transaction ended by a stored procedure still ends the session.
"""

from __future__ import annotations

from sqlglot.tokenizer_core import TokenType

from connector._readonly import read_tokens

__all__ = ["transaction_control"]

_QUOTED = {TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.IDENTIFIER}
#: words that end or change the transaction wherever they stand
_ALWAYS = {"COMMIT", "ROLLBACK", "SAVE", "IMPLICIT_TRANSACTIONS", "XACT_ABORT"}
#: ``BEGIN x``: a transaction, not a ``BEGIN ... END`` / ``TRY`` / ``CATCH`` block
_BEGIN_TRANSACTION = {"TRAN", "TRANSACTION", "DISTRIBUTED"}
#: procedures that run a statement given as a string (quoted or not, any schema)
_DYNAMIC_PREFIXES = ("SP_EXECUTESQL", "SP_PREP", "SP_EXECUTE", "SP_CURSOR")


def transaction_control(sql: str) -> str | None:
    """Why ``sql`` may control the transaction (a short phrase for the refusal), or None.

    None only when every unquoted word is harmless; a text that cannot be tokenized is refused.
    """
    tokens = read_tokens(sql)
    if not isinstance(tokens, list):
        return f"the statement cannot be read safely: {tokens.reason}"
    for i, token in enumerate(tokens):
        word = token.text.upper()
        if word.startswith(_DYNAMIC_PREFIXES):
            return f"dynamic SQL ({token.text}) cannot be checked"
        if token.token_type in _QUOTED:
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if word in _ALWAYS:
            return f"{word} controls the transaction"
        if word == "BEGIN" and (following is None or following.text.upper() in _BEGIN_TRANSACTION):
            return "BEGIN TRANSACTION controls the transaction"
        if word in ("EXEC", "EXECUTE") and (
            following is None or following.token_type is TokenType.L_PAREN
        ):
            return "dynamic SQL (EXEC of a string) cannot be checked"
    return None
