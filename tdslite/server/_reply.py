"""One reply message under construction, shipped packet by packet as it grows.

The worker thread that runs a statement appends tokens; once more than a few packets are buffered,
all full packets but the last are sent (without END_OF_MESSAGE) through ``send``, which the caller
binds to ``trio.from_thread.run(transport.send_raw, ...)``: rows stream out while the statement is
still producing them, and a slow client slows the statement down instead of filling memory.
"""

from __future__ import annotations

from collections.abc import Callable

from ._legacy import downgrade
from ._packets import HEADER_SIZE, PacketType, encode_message

_FLUSH_PACKETS = 8
TDS72 = 0x72090002
TDS74 = 0x74000004


class Reply:
    def __init__(
        self,
        *,
        packet_size: int,
        spid: int,
        send: Callable[[bytes], None] | None = None,
        tds_version: int = TDS74,
    ) -> None:
        #: The client's TDS version: the forms of DONE and of result columns depend on it.
        self.tds_version = tds_version
        self._buf = bytearray()
        self._chunk = packet_size - HEADER_SIZE
        self._packet_size = packet_size
        self._spid = spid
        self._packet_id = 1
        self._flush_at = self._chunk * _FLUSH_PACKETS
        self.send = send

    @property
    def empty(self) -> bool:
        """Nothing written yet (and so nothing sent)."""
        return self._packet_id == 1 and not self._buf

    def write(self, token: bytes) -> None:
        if self.tds_version < TDS72:
            token = downgrade(token)  # DONE and INFO/ERROR are shorter in TDS 7.1
        self._buf += token
        if self.send is not None and len(self._buf) > self._flush_at:
            self._flush_full_packets()

    def _flush_full_packets(self) -> None:
        # keep >= 1 byte for the END_OF_MESSAGE packet
        self._send_packets((len(self._buf) - 1) // self._chunk * self._chunk)

    def flush(self) -> None:
        """Send everything written so far now, in packets without END_OF_MESSAGE (the last one
        may be short): RAISERROR ... WITH NOWAIT. Without ``send`` it stays buffered."""
        if self.send is not None and self._buf:
            self._send_packets(len(self._buf))

    def _send_packets(self, n: int) -> None:
        """The first ``n`` buffered bytes as packets without END_OF_MESSAGE."""
        data = encode_message(
            PacketType.REPLY,
            self._buf[:n],
            packet_size=self._packet_size,
            spid=self._spid,
            eom=False,
            packet_id=self._packet_id,
        )
        self._packet_id += -(-n // self._chunk)
        del self._buf[:n]
        assert self.send is not None
        self.send(data)

    def finish(self) -> bytes:
        """The rest of the message, END_OF_MESSAGE on its last packet."""
        data = encode_message(
            PacketType.REPLY,
            self._buf,
            packet_size=self._packet_size,
            spid=self._spid,
            packet_id=self._packet_id,
        )
        self._buf.clear()
        return data
