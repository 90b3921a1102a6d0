"""The write lock of a tunnel link: a free lock is taken without a Trio schedule point (the link's
reader flushes after every message, and a query writes its answer under it), and it still
serialises writers (tests/connector/test_coalesce.py sends 12 answers at once on one link)."""

from __future__ import annotations

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import TunnelConfig
from connector.results import CancelToken
from connector.tunnel import StreamSink, TunnelLink
from protocol import events


async def _never_called(
    link: TunnelLink, query: events.Query, sink: StreamSink, cancel: CancelToken
) -> None:
    raise AssertionError("no query is served here")


def _link() -> TunnelLink:
    cfg = TunnelConfig(
        connector_id="c1",
        tunnel="t",
        relay_urls=("ws://127.0.0.1:9",),
        private_key_pem=b"",
        relay_public_keys=(),
    )
    return TunnelLink(
        cfg,
        "ws://127.0.0.1:9",
        private_key=Ed25519PrivateKey.generate(),
        relay_keys={},
        handler=_never_called,
    )


async def test_a_free_write_lock_is_taken_without_a_schedule_point() -> None:
    link = _link()
    with trio.fail_after(5):
        with trio.testing.assert_no_checkpoints():
            await link.flush()  # nothing queued: no round of the run loop
        # a writer holding the lock still makes the next one wait for it
        await link._send_lock.acquire()
        flushed: list[str] = []

        async def flush() -> None:
            await link.flush()
            flushed.append("flushed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            await trio.testing.wait_all_tasks_blocked()
            assert flushed == []
            link._send_lock.release()
        assert flushed == ["flushed"]
        assert not link._send_lock.locked()
