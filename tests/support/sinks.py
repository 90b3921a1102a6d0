"""A query result sink for tests that run connector.execute directly: it keeps every byte."""

from __future__ import annotations

__all__ = ["CollectSink"]


class CollectSink:
    """A `connector.results.Sink` that collects the NDJSON bytes of a result in ``data``."""

    def __init__(self) -> None:
        self.data = b""

    async def send_columns(self, data: bytes, *, flush: bool = True) -> None:
        self.data += data

    async def send_rows(self, data: bytes, *, flush: bool = True) -> None:
        self.data += data

    def hold(self, columns: bytes | None, rows: bytes) -> bool:
        self.data += (columns or b"") + rows
        return True
