"""The whole product path under workerd: examples/worker-app -> service binding -> relay Worker ->
real connector -> tdslite, with a dev-IdP token for the signed-in user. Nothing of ours mocked."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import open_dev_idp
from tdslite import open_server
from tests.support.e2e_stack import TDSLITE_USERS, admin_batch
from tests.support.worker_relay import open_worker_relay
from tests.worker.helpers import connector_config

ORDERS = [
    "CREATE TABLE orders (id int NOT NULL, owner nvarchar(50) NOT NULL, item nvarchar(50), "
    "total decimal(18,4))",
    "INSERT INTO orders (id, owner, item, total) VALUES (1, N'alice', N'book', 12.5), "
    "(2, N'bob', N'lamp', 40), (3, N'alice', N'pen', 1.25)",
]


async def test_example_app_serves_the_signed_in_users_orders(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    with trio.fail_after(60):
        async with (
            open_dev_idp(key_dir=tmp_path / "idp") as idp,
            open_server(users=users, db=":memory:") as db,
        ):
            await trio.to_thread.run_sync(admin_batch, db, ORDERS)
            async with open_worker_relay(
                tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, app=True
            ) as relay:
                path = connector_config(tmp_path / "connector", relay, issuer=idp.issuer, db=db)
                async with (
                    open_connector(load_config(path)) as connector,
                    httpx.AsyncClient(timeout=20) as client,
                ):
                    await connector.wait_ready()
                    token = idp.mint(sub="alice", groups=["analysts"])
                    response = await client.get(
                        f"{relay.app_url}/api/orders", headers={"Authorization": f"Bearer {token}"}
                    )
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert body["owner"] == "alice"
                    assert body["orders"] == [
                        {"id": 1, "item": "book", "total": "12.5000"},
                        {"id": 3, "item": "pen", "total": "1.2500"},
                    ]
                    # A contractor is denied by the connector's policy: a typed 403, no rows.
                    denied = idp.mint(sub="carl", groups=["contractors"])
                    response = await client.get(
                        f"{relay.app_url}/api/orders", headers={"Authorization": f"Bearer {denied}"}
                    )
                    assert response.status_code == 403
                    assert response.json()["error"] == "policy.denied"
