"""The demo's scripted story: a few people query the running stack through the relay's HTTP API.

Each step prints the request (SQL and parameters, never the token), the answer (a table, or the
error code, message and HTTP status) and a verdict against what the script expects. The demo is
also a smoke test: any unexpected answer makes `edgetds demo` exit non-zero.

    client = DemoClient("http://127.0.0.1:PORT", tunnel="demo")
    ok = Story(client, idp, layout, out).run()
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgetds._demo_output import Output, self_command, show_path
from edgetds._demo_stack import Layout
from edgetds.devidp import DevIdP
from protocol import ErrorCode

__all__ = ["DemoClient", "QueryResult", "Story"]


@dataclass(frozen=True)
class QueryResult:
    """One HTTP answer of the query API, parsed (first result set only for the table)."""

    status: int
    columns: list[dict[str, Any]] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def code(self) -> str | None:
        return None if self.error is None else str(self.error.get("code"))

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.status} {self.code}: {self.error.get('message', '')}"
        assert self.done is not None
        done = self.done
        if "rows_affected" in done and not self.columns:
            what = f"{done['rows_affected']} row(s) affected"
        else:
            what = f"{done.get('rows', len(self.rows))} row(s)"
        return f"{self.status} OK: {what} in {done.get('elapsed_ms', '?')} ms"


class DemoClient:
    """The relay's client HTTP API (SPEC.md): POST .../query and GET .../status."""

    def __init__(self, base_url: str, *, tunnel: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.tunnel = tunnel
        self.http = httpx.Client(timeout=timeout_s)

    @property
    def query_path(self) -> str:
        return f"/v1/tunnels/{self.tunnel}/query"

    def close(self) -> None:
        self.http.close()

    def status(self, token: str) -> dict[str, Any]:
        """``{"tunnel", "connectors", "connections"}``; raises httpx errors or ValueError."""
        response = self.http.get(
            f"{self.base_url}/v1/tunnels/{self.tunnel}/status",
            headers={"authorization": f"Bearer {token}"},
        )
        if response.status_code != 200:
            raise ValueError(f"status answered {response.status_code}: {response.text.strip()}")
        body: dict[str, Any] = response.json()
        return body

    def query(self, token: str, sql: str, params: Mapping[str, Any]) -> QueryResult:
        response = self.http.post(
            self.base_url + self.query_path,
            headers={"authorization": f"Bearer {token}"},
            json={"sql": sql, "params": dict(params)},
        )
        return parse_response(response.status_code, response.content)

    @property
    def transaction_path(self) -> str:
        return f"/v1/tunnels/{self.tunnel}/transaction"

    def transaction(self, token: str, statements: list[dict[str, Any]]) -> QueryResult:
        """POST .../transaction (SPEC.md 11.6): all statements commit, or none."""
        response = self.http.post(
            self.base_url + self.transaction_path,
            headers={"authorization": f"Bearer {token}"},
            json={"statements": statements},
        )
        return parse_response(response.status_code, response.content)


def parse_response(status: int, body: bytes) -> QueryResult:
    """NDJSON (200) or one JSON error object (4xx/5xx) into a QueryResult."""
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    columns: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    done = error = None
    for line in lines:
        if isinstance(line, list):
            rows.append(line)
        elif "columns" in line and not columns:
            columns = line["columns"]
        elif "done" in line:
            done = line["done"]
        elif "error" in line:
            error = line["error"]
    if done is None and error is None:
        error = {"code": "demo.truncated", "message": "the response had no terminal line"}
    return QueryResult(status, columns, rows, done, error)


@dataclass(frozen=True)
class Person:
    name: str
    groups: tuple[str, ...]
    expired: bool = False

    @property
    def who(self) -> str:
        groups = ", ".join(self.groups) if self.groups else "no group"
        return f"{self.name} ({'expired token' if self.expired else groups})"


ALICE = Person("alice", ("analysts",))
BOB = Person("bob", ("admins",))
MALLORY = Person("mallory", ("analysts",), expired=True)
CAROL = Person("carol", ())

TOP_CUSTOMERS = """
SELECT TOP 3 c.name, COUNT(*) AS orders, SUM(o.amount) AS total
FROM customers c JOIN orders o ON o.customer_id = c.id
WHERE c.region = @region AND o.status <> @skip
GROUP BY c.name
ORDER BY total DESC
"""
WHO_IS_ASKING = """
SELECT SUSER_NAME() AS sql_login,
       CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS end_user
"""
DELETE_CANCELLED = "DELETE FROM orders WHERE status = @status"
UPDATE_PRICE = "UPDATE products SET price = @price WHERE name = @name"
ORDER_QUANTITIES = "SELECT id, quantity, product_id FROM orders WHERE id IN (1, 2) ORDER BY id"
#: bob moves 2 units from order 1 to order 2, and (his mistake) onto a product that does not
#: exist: the second UPDATE breaks the foreign key, so the first must not stay either
MOVE_STOCK: list[dict[str, Any]] = [
    {"sql": "UPDATE orders SET quantity = quantity - @n WHERE id = 1", "params": {"n": 2}},
    {
        "sql": "UPDATE orders SET quantity = quantity + @n, product_id = @product WHERE id = 2",
        "params": {"n": 2, "product": 9999},
    },
]
PARTS_PRICES = "SELECT name, category, price FROM products WHERE category = @category ORDER BY name"
NEW_PRICE = "5.49"


class Story:
    """The script. `run()` prints every step and returns True when all went as expected."""

    def __init__(self, client: DemoClient, idp: DevIdP, layout: Layout, out: Output) -> None:
        self.client = client
        self.idp = idp
        self.layout = layout
        self.out = out
        self.failures: list[str] = []

    def token(self, person: Person) -> str:
        if person.expired:
            now = int(time.time())  # issued an hour ago, expired five minutes ago
            extra = {"iat": now - 3900, "nbf": now - 3900, "exp": now - 300}
            return self.idp.mint(sub=person.name, groups=person.groups, extra_claims=extra)
        return self.idp.mint(sub=person.name, groups=person.groups, expires_in=600)

    def check(self, step: str, ok: bool, good: str, bad: str) -> bool:
        self.out.verdict(ok, good if ok else bad)
        if not ok:
            self.failures.append(f"{step}: {bad}")
        return ok

    def ask(
        self, step: str, person: Person, title: str, sql: str, params: Mapping[str, Any]
    ) -> QueryResult:
        self.out.heading(f"{step}. {person.who}: {title}")
        self.out.request(person.name, self.client.query_path, sql, params)
        result = self.client.query(self.token(person), sql.strip(), params)
        self.out.wrapped("<- " + result.describe())
        if result.columns:
            self.out.table(result.columns, result.rows)
        return result

    def expect_error(self, step: str, result: QueryResult, code: str, status: int) -> bool:
        return self.check(
            step,
            (result.status, result.code) == (status, code),
            f"refused with {code} ({status}), as the script expects",
            f"expected {status} {code}, got {result.describe()}",
        )

    def run(self) -> bool:
        steps: list[Callable[[], None]] = [
            self.step_read,
            self.step_who,
            self.step_delete,
            self.step_write,
            self.step_transaction,
            self.step_expired,
            self.step_no_group,
            self.step_audit,
        ]
        for step in steps:
            step()
        return not self.failures

    # -- the steps ----------------------------------------------------------------------------

    def step_read(self) -> None:
        params = {"region": "north", "skip": "cancelled"}
        result = self.ask("1", ALICE, "top customers in the north", TOP_CUSTOMERS, params)
        self.check(
            "1",
            result.status == 200 and result.error is None and len(result.rows) > 0,
            f"{len(result.rows)} rows for alice, through the read-only 'analyst' role",
            f"expected 200 with rows, got {result.describe()}",
        )

    def step_who(self) -> None:
        title = "who is asking, as SQL Server sees it"
        result = self.ask("1b", ALICE, title, WHO_IS_ASKING, {})
        self.check(
            "1b",
            result.status == 200 and result.rows == [["reader", "alice"]],
            "SQL Server sees the role's least-privilege login 'reader', and alice in "
            "SESSION_CONTEXT(N'edgetds.sub') (set read-only by the connector; row-level security "
            "can use it)",
            f"expected one row ['reader', 'alice'], got {result.rows} ({result.describe()})",
        )

    def step_delete(self) -> None:
        params = {"status": "cancelled"}
        title = "delete the cancelled orders"
        result = self.ask("2", ALICE, title, DELETE_CANCELLED, params)
        self.expect_error("2", result, ErrorCode.POLICY_NOT_READ_ONLY, 403)
        # tdslite logs a statement as its reply goes out: give step 1's line a moment to land
        statements = _wait_json_lines(
            self.layout.statement_log,
            lambda items: any("TOP 3" in str(s.get("statement", "")).upper() for s in items),
        )
        deletes = [s for s in statements if "DELETE" in str(s.get("statement", "")).upper()]
        selects = [s for s in statements if "TOP 3" in str(s.get("statement", "")).upper()]
        self.check(
            "2",
            bool(selects) and not deletes,
            f"tdslite's statement log ({self.layout.statement_log.name}) has {len(statements)} "
            "statements, step 1's SELECT among them, and no DELETE: it never reached the database",
            f"statement log: {len(deletes)} DELETE(s), {len(selects)} SELECT(s) of step 1 "
            f"(expected 0 and 1) in {self.layout.statement_log}",
        )

    def step_write(self) -> None:
        params = {"price": {"type": "decimal(10,2)", "value": NEW_PRICE}, "name": "Widget"}
        result = self.ask("3", BOB, "raise the price of the Widget", UPDATE_PRICE, params)
        affected = (result.done or {}).get("rows_affected")
        self.check(
            "3",
            result.status == 200 and affected == 1,
            "1 row updated, through the read-write 'admin' role",
            f"expected 200 with rows_affected 1, got {result.describe()}",
        )
        params = {"category": "widgets"}
        result = self.ask("3b", BOB, "check the widget prices", PARTS_PRICES, params)
        names = [c.get("name") for c in result.columns]
        prices = {}
        if "name" in names and "price" in names:
            at_name, at_price = names.index("name"), names.index("price")
            prices = {row[at_name]: row[at_price] for row in result.rows}
        self.check(
            "3b",
            prices.get("Widget") == NEW_PRICE,
            f"the Widget now costs {NEW_PRICE}",
            f"expected Widget at {NEW_PRICE}, got {prices.get('Widget')!r} ({result.describe()})",
        )

    def step_transaction(self) -> None:
        before = self.client.query(self.token(BOB), ORDER_QUANTITIES, {})
        self.out.heading(f"3c. {BOB.who}: move 2 units from order 1 to order 2, in one transaction")
        for statement in MOVE_STOCK:
            self.out.request(
                BOB.name, self.client.transaction_path, statement["sql"], statement["params"]
            )
        result = self.client.transaction(self.token(BOB), MOVE_STOCK)
        self.out.wrapped("<- " + result.describe())
        error = result.error or {}
        self.check(
            "3c",
            result.status == 200
            and error.get("statement") == 1
            and (error.get("sql") or {}).get("number") == 547
            and (error.get("session") or {}).get("state") == "ended",
            "the second UPDATE broke the foreign key (547), so the transaction was rolled back: "
            "the first UPDATE did not stay either",
            f"expected statement 1 to fail with SQL Server error 547, got {result.describe()}",
        )
        after = self.ask("3d", BOB, "the two orders after the failed move", ORDER_QUANTITIES, {})
        self.check(
            "3d",
            after.status == 200 and after.rows == before.rows and len(after.rows) == 2,
            "both orders hold what they held before: nothing of the failed transaction stayed",
            f"expected the orders unchanged ({before.rows}), got {after.rows}",
        )

    def step_expired(self) -> None:
        result = self.ask("4", MALLORY, "replay an old token", "SELECT name FROM customers", {})
        if self.expect_error("4", result, ErrorCode.AUTH_EXPIRED, 401):
            self.out.say(
                "refused at the relay: the audit log below has no line for mallory", indent=2
            )

    def step_no_group(self) -> None:
        result = self.ask("5", CAROL, "read the customers", "SELECT name FROM customers", {})
        self.expect_error("5", result, ErrorCode.POLICY_DENIED, 403)

    def step_audit(self) -> None:
        from connector.audit import verify_files

        path = self.layout.audit_log
        self.out.heading(f"6. the connector's audit log ({show_path(path)})")
        # bob's transaction: begin, two statements, rollback, its end; the SELECTs around it
        expected = ["alice", "alice", "alice", "bob", "bob"] + ["bob"] * 7 + ["carol"]
        # the connector appends a query's audit line just after it answered
        records = _wait_json_lines(path, lambda items: len(items) >= len(expected))
        columns = [
            {"name": n, "type": t}
            for n, t in (
                ("seq", "int"),
                ("subject", ""),
                ("role", ""),
                ("statement", ""),
                ("outcome", ""),
                ("rows", "int"),
                ("hash", ""),
            )
        ]
        rows = [_audit_row(r) for r in records]
        self.out.table(columns, rows)
        if records:
            self.out.say(
                "the first line in full (one key a line here; one line on disk):", indent=2
            )
            self.out.say(_one_key_a_line(records[0]), indent=4)
        subjects = [str(r.get("subject")) for r in records]
        self.check(
            "6",
            subjects == expected,
            "one line per query that reached the connector (mallory's never did)",
            f"expected audit subjects {expected}, got {subjects}",
        )
        self.out.say(f"$ {self_command()} audit verify {show_path(path)}", indent=2)
        result = verify_files([path])
        self.out.say(str(result), indent=4)
        self.check(
            "6",
            result.ok and result.records == len(records),
            "hash chain verified: no line edited, removed or reordered",
            f"audit verification failed: {result}",
        )


def _json_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    # a line being written may be incomplete: only whole lines count
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def _wait_json_lines(
    path: Path, enough: Callable[[list[dict[str, Any]]], bool], *, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` once ``enough(lines)`` holds, or whatever is there at timeout."""
    deadline = time.monotonic() + timeout_s
    items = _json_lines(path)
    while not enough(items) and time.monotonic() < deadline:
        time.sleep(0.05)
        items = _json_lines(path)
    return items


def _one_key_a_line(record: Mapping[str, Any]) -> str:
    items = [f"  {json.dumps(k)}: {json.dumps(record[k])}" for k in sorted(record)]
    return "{\n" + ",\n".join(items) + "\n}"


def _audit_row(record: Mapping[str, Any]) -> list[Any]:
    statement = record.get("statement") or {}
    text = statement.get("sql") or f"query {statement.get('query')}"
    outcome = record.get("outcome") or {}
    status = str(outcome.get("status"))
    if outcome.get("error_code"):
        status += f" {outcome['error_code']}"
    rows = outcome.get("rows")
    return [
        record.get("seq"),
        record.get("subject"),
        record.get("role") or "-",
        " ".join(str(text).split()),
        status,
        rows,
        str(record.get("hash", ""))[:12],
    ]
