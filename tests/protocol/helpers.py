"""Two-ended, synchronous test harness for protocol/ (like h11's tests/helpers.py ConnectionPair).

A :class:`ProtocolPair` holds a relay and a connector :class:`Connection` and pipes one side's
``data_to_send()`` into the other's ``receive_data()``, whole or one byte at a time. The keys below
are FIXED TEST KEYS (their private seeds are public): never use them outside tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import Connection, Limits, Role, events, make_attestation, sign_hello

#: TEST-ONLY Ed25519 seeds (also written into protocol/vectors/*.json).
RELAY_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
CONNECTOR_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
OTHER_SEED = bytes.fromhex("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7")

RELAY_KEY = Ed25519PrivateKey.from_private_bytes(RELAY_SEED)
CONNECTOR_KEY = Ed25519PrivateKey.from_private_bytes(CONNECTOR_SEED)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(OTHER_SEED)

RELAY_KEY_ID = "relay-test-1"
CONNECTOR_ID = "connector-test-1"
TUNNEL = "tunnel-test"
SESSION_ID = "5f0c6a4e-2d7b-4c1e-9a53-3f1d2b8e7c90"
NONCE = "bm9uY2Utbm9uY2Utbm9uY2U"  # 17 bytes, base64url
NOW = 1_800_000_000
OPTIONS: Mapping[str, Any] = {"max_rows": None, "timeout_ms": None}


def hello_fields(limits: Limits | None = None, caps: tuple[str, ...] = ()) -> dict[str, Any]:
    return sign_hello(
        RELAY_KEY,
        relay_key_id=RELAY_KEY_ID,
        session_id=SESSION_ID,
        tunnel=TUNNEL,
        connector_id=CONNECTOR_ID,
        nonce=NONCE,
        limits=limits if limits is not None else Limits(),
        caps=caps,
    )


def make_query(
    stream_id: int,
    *,
    query_id: str | None = None,
    sql: str | None = "select 1",
    query: str | None = None,
    params: Mapping[str, Any] | None = None,
    token: str = "user-token",
    now: float = NOW,
    nonce: str | None = None,
    session: Mapping[str, Any] | None = None,
) -> events.Query:
    query_id = query_id if query_id is not None else f"q-{stream_id}"
    params = params if params is not None else {"id": 7}
    attestation = make_attestation(
        RELAY_KEY,
        relay_key_id=RELAY_KEY_ID,
        session_id=SESSION_ID,
        query_id=query_id,
        token=token,
        sql=sql,
        query=query,
        params=params,
        options=OPTIONS,
        now=now,
        nonce=nonce,
        session=session,
    )
    return events.Query(
        stream_id, query_id, token, sql, query, params, OPTIONS, attestation, session
    )


class ProtocolPair:
    """A relay and a connector wired back to back, in memory, synchronously."""

    def __init__(
        self,
        *,
        relay_limits: Limits | None = None,
        connector_limits: Limits | None = None,
        byte_by_byte: bool = False,
    ) -> None:
        self.relay = Connection(Role.RELAY, limits=relay_limits)
        self.connector = Connection(Role.CONNECTOR, limits=connector_limits)
        self.byte_by_byte = byte_by_byte

    def peer(self, side: Connection) -> Connection:
        return self.connector if side is self.relay else self.relay

    def pipe(self, side: Connection) -> list[events.Event]:
        """Deliver everything ``side`` queued to its peer; return the peer's new events."""
        data = side.data_to_send()
        peer = self.peer(side)
        if self.byte_by_byte:
            for i in range(len(data)):
                peer.receive_data(data[i : i + 1])
        else:
            peer.receive_data(data)
        return peer.events()

    def send(self, side: Connection, *sent: events.Event) -> list[events.Event]:
        """``side`` sends ``sent``; return what the peer received."""
        for event in sent:
            side.send(event)
        return self.pipe(side)

    def handshake(self, *, max_streams: int = 128, caps: tuple[str, ...] = ()) -> None:
        hello = self.relay.limits
        [received] = self.send(self.relay, events.Hello(hello_fields(hello, caps)))
        assert isinstance(received, events.Hello)
        ready = events.Ready(
            CONNECTOR_ID, max_streams, caps, max_frame=self.connector.limits.max_frame
        )
        assert self.send(self.connector, ready) == [ready]

    def query(self, stream_id: int | None = None, **kwargs: Any) -> events.Query:
        """The relay opens a stream; return the Query the connector received."""
        sid = stream_id if stream_id is not None else self.relay.next_stream_id
        sent = make_query(sid, **kwargs)
        assert self.send(self.relay, sent) == [sent]
        return sent
