"""The users file (TOML): logins, their roles, database users, impersonation and table grants.

Format (documented in tdslite/README.md, "Supported T-SQL")::

    [users.analyst_ro]
    password = "s3cret"            # omit: the login can only come in with a FEDAUTH token
    role = "read-only"             # "read-only" | "read-write" | "admin"
    database_user = "analyst"      # default: the login name
    can_impersonate = []           # database users EXECUTE AS USER may switch to
    grants = { orders = "read" }   # optional: tables "read" | "write", procedures "execute"
    default_database = "master"    # optional: the database of a login that names none
    windows = true                 # optional: a Windows login (DOMAIN\\user or user@REALM),
                                   # only by integrated (SSPI: NTLM/Kerberos) authentication

A database user's permissions are those of the login(s) mapped to it; logins that share a database
user must agree on role and grants.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

ROLES = ("read-only", "read-write", "admin")
GRANT_LEVELS = ("read", "write", "execute")
_KEYS = {
    "password",
    "role",
    "database_user",
    "can_impersonate",
    "grants",
    "default_database",
    "windows",
}


@dataclass(frozen=True)
class User:
    """An entry of the users file.

    Attributes:
        login: the login name (the TOML table key).
        password: SQL authentication password; None: login only by FEDAUTH token.
        role: "read-only" | "read-write" | "admin".
        database_user: the database user this login maps to.
        can_impersonate: database users EXECUTE AS USER may switch to.
        grants: optional per-table grants: table -> "read" | "write"; when given, only these
            tables are accessible.
        default_database: the database a login that names none (LOGIN7 database empty) starts
            in; None: the served database.
        windows: a Windows login: it logs in only by integrated (SSPI) authentication, never
            by password or FEDAUTH token.
    """

    login: str
    password: str | None
    role: str
    database_user: str
    can_impersonate: tuple[str, ...] = ()
    grants: dict[str, str] = field(default_factory=dict)
    default_database: str | None = None
    windows: bool = False

    def __hash__(self) -> int:
        return hash(self.login)

    def __repr__(self) -> str:  # never show the password
        return (
            f"User(login={self.login!r}, role={self.role!r}, database_user={self.database_user!r})"
        )


class UsersFileError(ValueError):
    """The users file is invalid; the message names the file and the offending key."""


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise UsersFileError(f"{where}: {message}")


def parse_users(data: dict[str, Any], *, source: str = "users file") -> dict[str, User]:
    """Validate already-parsed TOML data (``{"users": {...}}``) into ``login -> User``.

    Raises:
        UsersFileError: naming the offending key and how to fix it.
    """
    unknown_top = set(data) - {"users"}
    _check(
        not unknown_top, source, f"unknown top-level key(s) {sorted(unknown_top)}; use [users.NAME]"
    )
    users_table = data.get("users")
    _check(isinstance(users_table, dict) and bool(users_table), source, "no [users.NAME] entries")
    assert isinstance(users_table, dict)
    users: dict[str, User] = {}
    for login, entry in users_table.items():
        where = f"{source}: users.{login}"
        _check(isinstance(entry, dict), where, "must be a table")
        unknown = set(entry) - _KEYS
        _check(not unknown, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        password = entry.get("password")
        _check(
            password is None or isinstance(password, str), f"{where}.password", "must be a string"
        )
        role = entry.get("role")
        _check(role in ROLES, f"{where}.role", f"must be one of {', '.join(ROLES)} (got {role!r})")
        db_user = entry.get("database_user", login)
        _check(
            isinstance(db_user, str) and db_user != "",
            f"{where}.database_user",
            "must be a non-empty string",
        )
        imp = entry.get("can_impersonate", [])
        _check(
            isinstance(imp, list) and all(isinstance(x, str) for x in imp),
            f"{where}.can_impersonate",
            "must be a list of database user names",
        )
        grants = entry.get("grants", {})
        _check(
            isinstance(grants, dict), f"{where}.grants", 'must be a table like { orders = "read" }'
        )
        for table, level in grants.items():
            _check(
                level in GRANT_LEVELS,
                f"{where}.grants.{table}",
                'must be "read", "write" or "execute"',
            )
            _check(
                not (level == "write" and role == "read-only"),
                f"{where}.grants.{table}",
                'a read-only login cannot be granted "write"',
            )
        default_db = entry.get("default_database")
        _check(
            default_db is None or (isinstance(default_db, str) and default_db != ""),
            f"{where}.default_database",
            "must be a database name",
        )
        windows = entry.get("windows", False)
        _check(isinstance(windows, bool), f"{where}.windows", "must be true or false")
        _check(
            not (windows and password is not None),
            f"{where}.password",
            "a Windows login (windows = true) has no password: it logs in by NTLM or Kerberos",
        )
        users[login] = User(
            login=login,
            password=password,
            role=str(role),
            database_user=db_user,
            can_impersonate=tuple(imp),
            grants={str(k).lower(): str(v) for k, v in grants.items()},
            default_database=default_db,
            windows=windows,
        )
    by_db_user: dict[str, User] = {}
    for user in users.values():
        other = by_db_user.setdefault(user.database_user, user)
        _check(
            (other.role, other.grants) == (user.role, user.grants),
            f"{source}: users.{user.login}",
            f"shares database_user {user.database_user!r} with users.{other.login} but has a "
            "different role or grants",
        )
    for user in users.values():
        for target in user.can_impersonate:
            _check(
                target in by_db_user,
                f"{source}: users.{user.login}.can_impersonate",
                f"{target!r} is not the database_user of any login",
            )
    return users


def load_users(path: str | os.PathLike[str]) -> dict[str, User]:
    """Read and validate a TOML users file; returns ``login -> User``.

    Raises:
        UsersFileError: invalid TOML or entries (the message names the file and key).
        OSError: the file cannot be read.
    """
    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise UsersFileError(f"{os.fspath(path)}: not valid TOML: {exc}") from None
    return parse_users(data, source=os.fspath(path))
