"""On BOTH relays, with real connectors: a connector that cannot verify the relay's HELLO (the
relay signs with a key it does not pin) refuses to serve; SQL injection strings sent as
parameters arrive as data. Connector tokens that are wrong, expired or replayed are refused
before the upgrade by both relays in tests/conformance/test_auth.py."""

from __future__ import annotations

import json

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.chaos import HYGIENE
from tests.support.chaos_stack import Chaos, open_relay, public_text
from tests.support.waiting import eventually

INJECTIONS = {
    "a": "'; DROP TABLE notes; --",
    "b": "1 OR 1=1",
    "c": "x'); DELETE FROM notes WHERE ('1'='1",
    "d": "]; EXEC xp_cmdshell 'whoami'; --",
    "e": "' UNION SELECT name FROM sys.tables --",
}


async def test_unpinned_relay_is_refused_and_injection_params_are_data(
    chaos: Chaos, relay_kind: str
) -> None:
    for value in INJECTIONS.values():
        HYGIENE.secret(value, "an analyst's parameter value (log_param_values = false)")
    wrong_pin = public_text(Ed25519PrivateKey.generate())
    with trio.fail_after(120):
        async with open_relay(relay_kind, chaos) as relay, chaos.connector("conn-1"):
            await chaos.wait_connections(2)
            async with chaos.connector("conn-2", relay_public_keys=[wrong_pin]) as refusing:
                needle = f"refusing to serve relay {relay.ws_url}"
                await eventually(lambda: chaos.connector_log().count(needle) >= 2)
                assert await chaos.connections() == 2, "conn-2 must never register"
                assert refusing.returncode is None  # it keeps trying, with backoff
            before = len(chaos.db.log.entries)
            sql = "SELECT @a AS a, @b AS b, @c AS c, @d AS d, @e AS e"
            response = await chaos.http.post(
                chaos.query_url,
                json={"sql": sql, "params": INJECTIONS},
                headers={"Authorization": f"Bearer {chaos.token}"},
            )
            count = await chaos.http.post(
                chaos.query_url,
                json={"sql": "SELECT COUNT(*) AS n FROM notes"},
                headers={"Authorization": f"Bearer {chaos.token}"},
            )
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert json.loads(lines[1]) == list(INJECTIONS.values()), lines
    assert count.text.splitlines()[1] == "[2]", count.text
    ran = [e["statement"] for e in chaos.db.log.entries[before:]]
    assert sql in ran
    assert not any(v in s for s in ran for v in INJECTIONS.values()), ran
