"""Flow control: the negotiated limits and the credit windows.

Only COLUMNS and ROWS payload bytes are flow-controlled (connector -> relay); DONE and ERROR need no
credit, so a stream can always end. The connector keeps *send* windows (per stream and for the
connection) that CREDIT frames grow; the relay keeps the matching *receive* windows, refuses a peer
that overruns them, and re-grants credit as the application reports bytes delivered
(:meth:`Connection.consumed`). Credit is re-granted once half a window is consumed, so a steady
stream costs about two CREDIT frames per window instead of one per chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_FRAME",
    "DEFAULT_STATEMENT_BYTES",
    "MAX_FRAME_HARD",
    "MAX_STREAMS_HARD",
    "MAX_WINDOW",
    "MIN_FRAME",
    "Limits",
    "Window",
]

#: The default max frame payload (1 MiB).
DEFAULT_FRAME = 1024 * 1024
#: The default largest ad-hoc statement (UTF-8 bytes of the SQL text) a connector accepts (256 KiB),
#: assumed when its READY does not say (connectors that predate READY ``max_statement_bytes``).
DEFAULT_STATEMENT_BYTES = 256 * 1024
#: The largest max frame payload an endpoint may announce (16 MiB; Cloudflare accepts 32 MiB).
MAX_FRAME_HARD = 16 * 1024 * 1024
#: The largest window: a window above 2^31-1 is a flow-control error.
MAX_WINDOW = 2**31 - 1
#: The smallest max frame payload (16 KiB): smaller frames would make rows unsendable.
MIN_FRAME = 16 * 1024
#: The largest number of concurrent streams an endpoint may announce.
MAX_STREAMS_HARD = 65535


@dataclass(frozen=True, slots=True)
class Limits:
    """Flow-control and size limits, announced by the relay in HELLO (``"limits"``).

    Args:
        max_frame: the largest frame payload the announcing side accepts (bytes).
        stream_window: the initial per-stream send window of the connector (bytes).
        connection_window: the initial connection send window of the connector (bytes).
        max_streams: the most streams open at once.

    Raises:
        ValueError: a limit is out of range (see SPEC.md, "Limits").
    """

    max_frame: int = DEFAULT_FRAME
    stream_window: int = 1024 * 1024
    connection_window: int = 8 * 1024 * 1024
    max_streams: int = 128

    def __post_init__(self) -> None:
        for name in ("max_frame", "stream_window", "connection_window", "max_streams"):
            value = getattr(self, name)
            if type(value) is not int:
                raise ValueError(f"limits.{name} must be an integer, got {value!r}")
        if not MIN_FRAME <= self.max_frame <= MAX_FRAME_HARD:
            raise ValueError(
                f"limits.max_frame must be in [{MIN_FRAME}, {MAX_FRAME_HARD}], got {self.max_frame}"
            )
        if not self.max_frame <= self.stream_window <= self.connection_window <= MAX_WINDOW:
            raise ValueError(
                "limits must satisfy max_frame <= stream_window <= connection_window <= 2^31-1, "
                f"got {self.max_frame}, {self.stream_window}, {self.connection_window}"
            )
        if not 1 <= self.max_streams <= MAX_STREAMS_HARD:
            raise ValueError(
                f"limits.max_streams must be in [1, {MAX_STREAMS_HARD}], got {self.max_streams}"
            )

    def to_json(self) -> dict[str, int]:
        """The HELLO ``"limits"`` object."""
        return {
            "max_frame": self.max_frame,
            "stream_window": self.stream_window,
            "connection_window": self.connection_window,
            "max_streams": self.max_streams,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Limits:
        """Parse a HELLO ``"limits"`` object (unknown members are ignored).

        Raises:
            ValueError: a member is missing or out of range.
        """
        try:
            return cls(
                max_frame=obj["max_frame"],
                stream_window=obj["stream_window"],
                connection_window=obj["connection_window"],
                max_streams=obj["max_streams"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"limits object is missing a member: {exc}") from None


class Window:
    """One credit window. ``size`` may never exceed :data:`MAX_WINDOW`."""

    __slots__ = ("initial", "pending", "size")

    def __init__(self, initial: int) -> None:
        self.initial = initial
        self.size = initial
        #: Receive side only: bytes delivered but not yet re-granted as CREDIT.
        self.pending = 0

    def grow(self, increment: int) -> bool:
        """Add ``increment``; return False (and change nothing) if that would overflow."""
        if self.size + increment > MAX_WINDOW:
            return False
        self.size += increment
        return True

    def take_grant(self) -> int:
        """Receive side: the increment to send now (0 until half the window was consumed)."""
        if self.pending * 2 < self.initial:
            return 0
        grant, self.pending = self.pending, 0
        self.size += grant
        return grant
