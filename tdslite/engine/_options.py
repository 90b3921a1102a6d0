"""SET options of a session and the @@OPTIONS bit mask SQL Server computes from them.

`SessionOptions` holds what SET changes besides NOCOUNT and XACT_ABORT (kept on the Session
itself): the ON/OFF options of @@OPTIONS, DATEFIRST, LANGUAGE, DATEFORMAT, TEXTSIZE and
LOCK_TIMEOUT. A fresh login and a reset (RESETCONNECTION, sp_reset_connection) start from
`SessionOptions()`: the ON defaults of a SQL Server client connection (@@OPTIONS 5496).
Most options are recorded and reported (@@OPTIONS, @@DATEFIRST, @@LANGUAGE, @@TEXTSIZE,
@@LOCK_TIMEOUT) but do not change what tdslite computes; see tdslite/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import Token, TokenType

from . import _errors

#: @@OPTIONS bits (SQL Server's "user options" server configuration layout).
BITS = {
    "DISABLE_DEF_CNST_CHK": 1,
    "IMPLICIT_TRANSACTIONS": 2,
    "CURSOR_CLOSE_ON_COMMIT": 4,
    "ANSI_WARNINGS": 8,
    "ANSI_PADDING": 16,
    "ANSI_NULLS": 32,
    "ARITHABORT": 64,
    "ARITHIGNORE": 128,
    "QUOTED_IDENTIFIER": 256,
    "NOCOUNT": 512,
    "ANSI_NULL_DFLT_ON": 1024,
    "ANSI_NULL_DFLT_OFF": 2048,
    "CONCAT_NULL_YIELDS_NULL": 4096,
    "NUMERIC_ROUNDABORT": 8192,
    "XACT_ABORT": 16384,
}
#: ANSI_WARNINGS, ANSI_PADDING, ANSI_NULLS, ARITHABORT, QUOTED_IDENTIFIER, ANSI_NULL_DFLT_ON,
#: CONCAT_NULL_YIELDS_NULL: what SQL Server clients (ODBC, OLE DB, tedious) switch on.
DEFAULT_BITS = 5496
#: SET ANSI_DEFAULTS ON|OFF switches these (IMPLICIT_TRANSACTIONS is refused on its own).
_ANSI_DEFAULTS = ("ANSI_NULLS", "ANSI_NULL_DFLT_ON", "ANSI_PADDING", "ANSI_WARNINGS")
_ANSI_DEFAULTS_ALSO = ("CURSOR_CLOSE_ON_COMMIT", "QUOTED_IDENTIFIER")
#: SET LANGUAGE names tdslite answers in (its messages are us_english).
LANGUAGES = {"us_english": "us_english", "english": "us_english"}
_DATEFORMATS = frozenset({"mdy", "dmy", "ymd", "ydm", "myd", "dym"})


@dataclass
class SessionOptions:
    """The SET options of one session (see the module docstring)."""

    bits: int = DEFAULT_BITS
    datefirst: int = 7
    language: str = "us_english"
    dateformat: str = "mdy"
    textsize: int = 2147483647
    lock_timeout: int = -1


def _number(tokens: list[Token], words: list[str]) -> int:
    digits = tokens[-1].text if tokens else ""
    negative = len(tokens) >= 2 and tokens[-2].token_type == TokenType.DASH
    if tokens[-1].token_type != TokenType.NUMBER or not digits.isdigit():
        raise _errors.syntax_error(digits or words[0])
    return -int(digits) if negative else int(digits)


def apply(options: SessionOptions, tokens: list[Token], words: list[str]) -> bool:
    """Apply ``SET <option> ...`` (tokens of the whole statement) if it is one of ours; False when
    the option is someone else's (NOCOUNT, XACT_ABORT, IDENTITY_INSERT, ...).

    Raises:
        SqlError: 102 for a malformed value, 2741 for an unknown language, 1005 for a bad
            DATEFIRST, 40517 for IMPLICIT_TRANSACTIONS ON and languages tdslite does not speak.
    """
    first = words[1] if len(words) > 1 else ""
    if first == "DATEFIRST":
        day = _number(tokens, words)
        if not 1 <= day <= 7:
            raise _errors.SqlError(
                1005, f"Line 1: Invalid number '{day}' for DATEFIRST.", severity=15
            )
        options.datefirst = day
        return True
    if first == "TEXTSIZE":
        size = _number(tokens, words)
        options.textsize = 4096 if size == 0 else (2147483647 if size < 0 else size)
        return True
    if first == "LOCK_TIMEOUT":
        options.lock_timeout = _number(tokens, words)
        return True
    if first in ("LANGUAGE", "DATEFORMAT"):
        if len(tokens) != 3:
            raise _errors.syntax_error(tokens[-1].text)
        value = tokens[2].text
        if first == "DATEFORMAT":
            if value.lower() not in _DATEFORMATS:
                raise _errors.SqlError(1005, f"Invalid parameter '{value}' for SET DATEFORMAT.")
            options.dateformat = value.lower()
            return True
        language = LANGUAGES.get(value.lower())
        if language is None:
            raise _errors.SqlError(
                2741,
                f"SET LANGUAGE failed because '{value}' is not an official language name or a "
                "language alias on this SQL Server (tdslite speaks us_english only).",
            )
        options.language = language
        return True
    names = [w for w in words[1:-1] if w not in (",", "")]
    value = words[-1] if words else ""
    if not names or value not in ("ON", "OFF") or any(n not in _SETTABLE for n in names):
        return False
    for name in names:
        if name == "IMPLICIT_TRANSACTIONS" and value == "ON":
            raise _errors.unsupported("SET IMPLICIT_TRANSACTIONS ON")
        switched: tuple[str, ...] = (
            _ANSI_DEFAULTS + _ANSI_DEFAULTS_ALSO if name == "ANSI_DEFAULTS" else (name,)
        )
        for option in switched:
            bit = BITS[option]
            options.bits = options.bits | bit if value == "ON" else options.bits & ~bit
        if value == "ON" and name in ("ANSI_NULL_DFLT_ON", "ANSI_NULL_DFLT_OFF"):
            other = "ANSI_NULL_DFLT_OFF" if name == "ANSI_NULL_DFLT_ON" else "ANSI_NULL_DFLT_ON"
            options.bits &= ~BITS[other]
    return True


#: ON/OFF options this module keeps (NOCOUNT and XACT_ABORT live on the Session).
_SETTABLE = frozenset(BITS) - {"NOCOUNT", "XACT_ABORT"} | {"ANSI_DEFAULTS"}
