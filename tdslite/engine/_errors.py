"""SqlError and the SQL Server errors tdslite raises, with SQL Server's numbers, class and state.

- SqlError(Exception): number, message, state, severity (class), line
    - raised by Engine.authenticate (18456), Session.execute and the transaction methods

The constructors below keep each message text in one place; messages follow SQL Server's own
wording (sys.messages) so clients and people recognise them.  They never include parameter values.
"""

from __future__ import annotations


class SqlError(Exception):
    """A SQL Server-style error: number, state, class (severity) and the line of the batch.

    Args:
        number: the SQL Server error number (e.g. 208 invalid object name).
        message: the message text, as SQL Server words it.
        state: SQL Server's state code.
        severity: the error class (11-16 user errors, 14 security).
        line: 1-based line in the batch where the failing statement starts.
    """

    def __init__(
        self, number: int, message: str, *, state: int = 1, severity: int = 16, line: int = 1
    ) -> None:
        super().__init__(message)
        self.number = number
        self.message = message
        self.state = state
        self.severity = severity
        self.line = line
        #: The procedure it was raised in (ERROR_PROCEDURE(), the ERROR token's ProcName).
        self.procedure: str | None = None
        #: It ended a DML statement and the batch went on: SQL Server adds INFO 3621.
        self.terminated = False

    def __repr__(self) -> str:
        return (
            f"SqlError({self.number}, {self.message!r}, state={self.state}, "
            f"severity={self.severity}, line={self.line})"
        )

    def at_line(self, line: int) -> SqlError:
        """This error with its line set (errors are created before the line is known)."""
        self.line = line
        return self


def syntax_error(near: str) -> SqlError:
    return SqlError(102, f"Incorrect syntax near '{near}'.", severity=15)


def unsupported(what: str) -> SqlError:
    # 40517 is SQL Server's (Azure SQL's) "not supported in this version" error.
    return SqlError(
        40517,
        f"Keyword or statement option '{what}' is not supported in this version of SQL Server "
        "(tdslite). See tdslite/README.md, 'Supported T-SQL'.",
    )


def invalid_object(name: str) -> SqlError:
    return SqlError(208, f"Invalid object name '{name}'.")


def invalid_column(name: str) -> SqlError:
    return SqlError(207, f"Invalid column name '{name}'.")


def permission_denied(permission: str, table: str, database: str) -> SqlError:
    return SqlError(
        229,
        f"The {permission} permission was denied on the object '{table}', "
        f"database '{database}', schema 'dbo'.",
        state=5,
        severity=14,
    )


def ddl_denied(statement: str, database: str) -> SqlError:
    return SqlError(262, f"{statement} permission denied in database '{database}'.", severity=14)


def drop_denied(table: str) -> SqlError:
    return SqlError(
        3701,
        f"Cannot drop the table '{table}', because it does not exist or you do not have "
        "permission.",
        state=5,
        severity=11,
    )


def already_exists(name: str) -> SqlError:
    return SqlError(2714, f"There is already an object named '{name}' in the database.", state=6)


def pk_violation(constraint: str, table: str, key: str) -> SqlError:
    return SqlError(
        2627,
        f"Violation of PRIMARY KEY constraint '{constraint}'. Cannot insert duplicate key in "
        f"object 'dbo.{table}'. The duplicate key value is ({key}).",
        severity=14,
    )


def unique_violation(constraint: str, table: str, key: str) -> SqlError:
    return SqlError(
        2627,
        f"Violation of UNIQUE KEY constraint '{constraint}'. Cannot insert duplicate key in "
        f"object 'dbo.{table}'. The duplicate key value is ({key}).",
        severity=14,
    )


def null_violation(column: str, table: str, database: str, statement: str) -> SqlError:
    return SqlError(
        515,
        f"Cannot insert the value NULL into column '{column}', table '{database}.dbo.{table}'; "
        f"column does not allow nulls. {statement} fails.",
        state=2,
    )


def truncation(table: str, column: str) -> SqlError:
    return SqlError(
        2628,
        f"String or binary data would be truncated in table '{table}', column '{column}'.",
    )


def divide_by_zero() -> SqlError:
    return SqlError(8134, "Divide by zero error encountered.")


def unknown_procedure(name: str) -> SqlError:
    return SqlError(2812, f"Could not find stored procedure '{name}'.", state=62)


def login_failed(login: str) -> SqlError:
    return SqlError(18456, f"Login failed for user '{login}'.", severity=14)


def cannot_impersonate(user: str) -> SqlError:
    return SqlError(
        15517,
        f'Cannot execute as the database principal because the principal "{user}" does not '
        "exist, this type of principal cannot be impersonated, or you do not have permission.",
    )


def read_only_key(key: str) -> SqlError:
    return SqlError(
        15664,
        f"Cannot set key '{key}' in the session context. The key has been set as read_only for "
        "this session.",
    )


def no_begin(verb: str) -> SqlError:
    number = 3902 if verb == "COMMIT" else 3903
    return SqlError(
        number, f"The {verb} TRANSACTION request has no corresponding BEGIN TRANSACTION."
    )


def identity_insert(table: str) -> SqlError:
    return SqlError(
        544,
        f"Cannot insert explicit value for identity column in table '{table}' when "
        "IDENTITY_INSERT is set to OFF.",
    )


def conversion_failed(source: str, value: str, target: str) -> SqlError:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return SqlError(
        245,
        f"Conversion failed when converting the {source} value '{shown}' to data type {target}.",
    )


def datetime_conversion() -> SqlError:
    return SqlError(
        241, "Conversion failed when converting date and/or time from character string."
    )


def overflow(target: str) -> SqlError:
    return SqlError(8115, f"Arithmetic overflow error converting expression to data type {target}.")


def undeclared_variable(name: str) -> SqlError:
    return SqlError(137, f'Must declare the scalar variable "{name}".', state=2, severity=15)


def redeclared_variable(name: str) -> SqlError:
    return SqlError(
        134,
        f"The variable name '{name}' has already been declared. Variable names must be unique "
        "within a query batch or stored procedure.",
        severity=15,
    )


def unknown_database(name: str) -> SqlError:
    return SqlError(
        911, f"Database '{name}' does not exist. Make sure that the name is entered correctly."
    )


def cancelled() -> SqlError:
    return SqlError(3617, "The statement was cancelled by the client (attention).", severity=16)


def no_savepoint(name: str) -> SqlError:
    return SqlError(
        6401, f"Cannot roll back {name}. No transaction or savepoint of that name was found."
    )


def save_without_transaction() -> SqlError:
    return SqlError(628, "Cannot issue SAVE TRANSACTION when there is no active transaction.")
