"""The whole product path under workerd: examples/worker-app -> service binding -> relay Worker ->
real connector -> tdslite, with a dev-IdP token for the signed-in user. Nothing of ours mocked.
The app answers with the plain client (/api/orders) and with Kysely (/api/kysely/orders, and
/api/transfer: a Kysely transaction on an edgetds session)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP
from tdslite import TdsServer
from tests.support.e2e_stack import admin_connection
from tests.support.worker_relay import open_worker_relay
from tests.worker.helpers import connector_config, idp_and_db

#: The tables of examples/worker-app/README.md.
APP_SQL = [
    "CREATE TABLE orders (id int NOT NULL, owner nvarchar(50) NOT NULL, item nvarchar(50), "
    "total decimal(18,4))",
    "INSERT INTO orders (id, owner, item, total) VALUES (1, N'alice', N'book', 12.5), "
    "(2, N'bob', N'lamp', 40), (3, N'alice', N'pen', 1.25)",
    "CREATE TABLE stock (id int NOT NULL PRIMARY KEY, item nvarchar(50) NOT NULL, "
    "qty int NOT NULL)",
    "INSERT INTO stock (id, item, qty) VALUES (1, N'apples', 10), (2, N'pears', 0)",
]

ALICES_ORDERS = [
    {"id": 1, "item": "book", "total": "12.5000"},
    {"id": 3, "item": "pen", "total": "1.2500"},
]


@dataclass
class App:
    idp: DevIdP
    db: TdsServer
    url: str
    client: httpx.AsyncClient

    async def call(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await self.client.request(method, f"{self.url}{path}", headers=headers, **kw)

    async def stock(self) -> dict[int, int]:
        """qty by id, read directly from tdslite (not through the path under test)."""
        return dict(await trio.to_thread.run_sync(admin_rows, self.db, "SELECT id, qty FROM stock"))


def admin_rows(db: TdsServer, sql: str) -> list[tuple[Any, ...]]:
    conn = admin_connection(db)
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        conn.close()


@asynccontextmanager
async def open_app(tmp_path: Path) -> AsyncIterator[App]:
    """dev IdP + tdslite (APP_SQL) + relay Worker and the example app under workerd + connector."""
    async with idp_and_db(tmp_path, APP_SQL) as (idp, db):
        async with open_worker_relay(
            tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, app=True
        ) as relay:
            assert relay.app_url is not None
            path = connector_config(tmp_path / "connector", relay, issuer=idp.issuer, db=db)
            async with (
                open_connector(load_config(path)) as connector,
                httpx.AsyncClient(timeout=20) as client,
            ):
                await connector.wait_ready()
                yield App(idp, db, relay.app_url, client)


async def test_example_app_serves_the_signed_in_users_orders(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_app(tmp_path) as app:
            token = app.idp.mint(sub="alice", groups=["analysts"])
            response = await app.call("GET", "/api/orders", token)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["owner"] == "alice"
            assert body["orders"] == ALICES_ORDERS
            # The same through Kysely (EdgetdsDialect over the same service binding).
            response = await app.call("GET", "/api/kysely/orders", token)
            assert response.status_code == 200, response.text
            assert response.json() == {"owner": "alice", "orders": ALICES_ORDERS}
            # A contractor is denied by the connector's policy: a typed 403, no rows, both ways.
            denied = app.idp.mint(sub="carl", groups=["contractors"])
            for path in ("/api/orders", "/api/kysely/orders"):
                response = await app.call("GET", path, denied)
                assert response.status_code == 403
                assert response.json()["error"] == "policy.denied"


async def test_example_app_transfer_is_one_transaction(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_app(tmp_path) as app:
            token = app.idp.mint(sub="kim", groups=["admins"])
            response = await app.call(
                "POST", "/api/transfer", token, json={"from": 1, "to": 2, "qty": 3}
            )
            assert response.status_code == 200, response.text
            assert response.json() == {
                "moved": 3,
                "from": {"id": 1, "item": "apples", "qty": 7},
                "to": {"id": 2, "item": "pears", "qty": 3},
            }
            assert await app.stock() == {1: 7, 2: 3}
            # Not enough stock: the first update matches no row, nothing changes.
            response = await app.call(
                "POST", "/api/transfer", token, json={"from": 2, "to": 1, "qty": 4}
            )
            assert response.status_code == 409, response.text
            assert response.json()["error"] == "insufficient_stock"
            # An unknown target: the first update ran in the transaction and is rolled back.
            response = await app.call(
                "POST", "/api/transfer", token, json={"from": 1, "to": 99, "qty": 2}
            )
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "unknown_row"
            assert await app.stock() == {1: 7, 2: 3}
            # A read-only role's transfer is refused by the connector's policy; nothing changes.
            reader = app.idp.mint(sub="alice", groups=["analysts"])
            response = await app.call(
                "POST", "/api/transfer", reader, json={"from": 1, "to": 2, "qty": 1}
            )
            assert response.status_code == 403, response.text
            assert await app.stock() == {1: 7, 2: 3}
