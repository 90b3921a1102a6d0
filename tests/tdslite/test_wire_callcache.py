"""tdslite wire: the per-connection cache of a request's first call (server/_callcache.py, the
per-query sp_set_session_context preamble of a pooling client) never changes an answer.

- Whenever a template reads a payload, the call and bound parameters it gives are exactly what
  `_rpc.parse` and `_bind` give; one byte changed anywhere in a template's bytes is a miss.
- Over real sockets, every request answered on a connection that holds templates (of the same
  call, of one a byte off, and a cache that is full) is answered with the same bytes as on a
  new connection (no template), and the context keys it set are its own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import trio

from connector.execute import preamble_batch
from tdslite import TdsServer
from tdslite.engine import Param, _preamble
from tdslite.engine._session import _preamble_shape
from tdslite.server import _rpc
from tdslite.server._callcache import TEMPLATES_KEPT, CallCache
from tdslite.server._dispatch import _bind
from tests.tdslite._tds_helpers import PASSWORDS
from tests.tdslite._tds_raw import RESETCONNECTION, RawClient, all_headers, sql_batch

RPC = 0x03
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])


def plp(value: str) -> bytes:
    """A positional nvarchar(max) parameter as python-tds sends a statement: one PLP chunk."""
    data = value.encode("utf-16-le")
    head = b"\x00\x00\xe7\xff\xff" + COLLATION
    return head + struct.pack("<QI", len(data), len(data)) + data + b"\x00\x00\x00\x00"


def nvarchar(name: str, raw: bytes | None, *, max_len: int = 8000, status: int = 0) -> bytes:
    """A named nvarchar(max_len / 2) parameter holding ``raw`` (UTF-16 bytes; None: NULL)."""
    out = bytes([len(name)]) + name.encode("utf-16-le") + bytes([status, 0xE7])
    out += struct.pack("<H", max_len) + COLLATION
    if raw is None:
        return out + b"\xff\xff"
    return out + struct.pack("<H", len(raw)) + raw


def executesql(sql: str, decl: str, params: bytes) -> bytes:
    return struct.pack("<HHH", 0xFFFF, 10, 0) + plp(sql) + plp(decl) + params


def values(*texts: str) -> bytes:
    return b"".join(nvarchar(f"@c{i}", t.encode("utf-16-le")) for i, t in enumerate(texts))


def with_c0(raw: bytes | None, *, max_len: int = 8000, status: int = 0) -> bytes:
    """The preamble's three values, the first one as given (raw UTF-16, or None: NULL)."""
    first = nvarchar("@c0", raw, max_len=max_len, status=status)
    return first + nvarchar("@c1", b"b\x00") + nvarchar("@c2", b"c\x00")


def odd(params: bytes) -> bytes:
    """A request whose preamble carries ``params``."""
    return request(executesql(preamble_batch(), DECL, params))


DECL = "@c0 nvarchar(4000),@c1 nvarchar(4000),@c2 nvarchar(4000)"
XML_DECL = "@c0 xml,@c1 nvarchar(4000),@c2 nvarchar(4000)"
PROBE_SQL = (
    "SELECT CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS a, "
    "CAST(SESSION_CONTEXT(N'edgetds.sua') AS nvarchar(100)) AS b, "
    "CAST(SESSION_CONTEXT(N'edgetds.query_id') AS nvarchar(100)) AS c"
)


def request(first: bytes, *, sql: str = "SELECT @v AS v", value: str = "x") -> bytes:
    """The connector's one-request form: ``first`` (a call), then a SELECT of a bound value."""
    second = executesql(
        sql, "@v nvarchar(10)", nvarchar("@v", value.encode("utf-16-le"), max_len=20)
    )
    return all_headers() + first + b"\xff" + second


def preamble(*texts: str, sql: str = "") -> bytes:
    return executesql(sql or preamble_batch(), DECL, values(*texts))


# --- the template against the parser ----------------------------------------------------------


def parsed(payload: bytes) -> tuple[list[_rpc.RpcCall], list[Param]]:
    calls = _rpc.parse(payload)
    first = calls[0]
    return calls, _bind(first.params[2:], _rpc.declared_params(str(first.params[1].value)))


def outcome(read: Callable[..., object], *args: object) -> object:
    """What ``read(*args)`` returns, or the type of what it raises (a hit's later calls are
    parsed by the parser, which may refuse them)."""
    try:
        return read(*args)
    except Exception as exc:  # noqa: BLE001 - compared, whatever it is
        return type(exc)


def add(cache: CallCache, payload: bytes) -> None:
    """Keep the template of ``payload``'s first call, as `Dispatcher.runs_inline` keeps it."""
    calls, bound = parsed(payload)
    shape = _preamble_shape(_preamble.match(str(calls[0].params[0].value)) or (), bound)
    assert shape is not None
    cache.add(payload, calls[0], bound, shape, skip_headers=True)


def cache_of(payload: bytes) -> CallCache:
    cache = CallCache()
    add(cache, payload)
    assert len(cache.templates) == 1
    return cache


def hit_or_none(cache: CallCache, payload: bytes) -> tuple[list[_rpc.RpcCall], list[Param]] | None:
    """What a template gives for ``payload``: its calls and the first one's bound parameters."""
    found = cache.lookup(payload, skip_headers=True)
    if found is None:
        return None
    template, read, rest = found
    return [template.call(read), *rest], template.bound(read)


def test_a_hit_reads_what_the_parser_reads_and_a_changed_byte_of_the_template_misses() -> None:
    first = preamble("alice", "https://idp", "q-1")
    payload = request(first)
    cache = cache_of(payload)
    template = cache.templates[0]
    again = request(preamble("bob", "https://other", "q-2"))
    assert hit_or_none(cache, again) == parsed(again)
    start = len(all_headers())
    # the template's own bytes: the head, and each value parameter's bytes before its length
    own = set(range(start, start + len(template.head)))
    pos = start + len(template.head)
    for meta, skip, _ in template.reads:
        own |= set(range(pos, pos + len(meta)))
        pos += skip + int.from_bytes(payload[pos + skip - 2 : pos + skip], "little")
    hits = 0
    for i in range(start, len(payload)):
        for delta in (1, 0x80):
            changed = bytearray(payload)
            changed[i] ^= delta
            want = outcome(parsed, bytes(changed))
            got = outcome(hit_or_none, cache, bytes(changed))
            if i in own:
                assert got is None, (i, delta)
            elif got is not None:
                hits += 1
                assert got == want, (i, delta)
    assert hits > 0  # (bytes of the values, and of the second call)


def test_values_a_template_does_not_read_are_misses() -> None:
    cache = cache_of(request(preamble("a", "b", "c")))
    raw = "é€\U0001f600".encode("utf-16-le")
    cases = {
        "non-ascii": (values("é€", "\U0001f600", ""), True),
        "null": (with_c0(None), False),
        "odd-length": (with_c0(raw[:-1]), False),
        "lone-surrogate": (with_c0(b"\x00\xd8"), False),
        "too-long": (with_c0(b"a\x00" * 4001), False),
        "other-max-len": (with_c0(b"a\x00", max_len=7998), False),
        "output": (with_c0(b"a\x00", status=1), False),
        "extra": (values("a", "b", "c") + nvarchar("@c3", b"d\x00"), False),
        "fewer": (values("a", "b"), False),
    }
    for name, (params, hit) in cases.items():
        payload = odd(params)
        got = hit_or_none(cache, payload)
        assert (got is not None) == hit, name
        if got is not None:
            assert got == parsed(payload), name
    # cut short anywhere: a miss, or the parser's own reading (or error)
    payload = request(preamble("alice", "https://idp", "q-1"))
    for end in range(len(payload)):
        got = outcome(hit_or_none, cache, payload[:end])
        if got is not None:
            assert got == outcome(parsed, payload[:end]), end


def test_no_template_of_a_value_bound_to_another_declared_type() -> None:
    for decl in (
        "@c0 xml,@c1 nvarchar(4000),@c2 nvarchar(4000)",
        "@c0 nvarchar(10),@c1 nvarchar(4000),@c2 nvarchar(4000)",
        "@c0 int,@c1 nvarchar(4000),@c2 nvarchar(4000)",
    ):
        cache = CallCache()
        add(cache, request(executesql(preamble_batch(), decl, values("7", "b", "c"))))
        assert cache.templates == [], decl


def test_a_full_cache_drops_its_oldest_template() -> None:
    cache = CallCache()
    batch = preamble_batch()
    sqls = [batch.replace("edgetds.sub", f"edgetds.s{i}") for i in range(TEMPLATES_KEPT + 1)]
    for sql in sqls:
        add(cache, request(preamble("a", "b", "c", sql=sql)))
    assert len(cache.templates) == TEMPLATES_KEPT
    assert hit_or_none(cache, request(preamble("x", "y", "z", sql=sqls[0]))) is None
    for sql in sqls[1:]:
        payload = request(preamble("x", "y", "z", sql=sql))
        assert hit_or_none(cache, payload) == parsed(payload)


# --- over the wire: the same answers as without a template ------------------------------------


async def answers(server: TdsServer, warm: list[bytes], probe: bytes) -> tuple[bytes, bytes]:
    """On a new connection: each of ``warm`` (with RESETCONNECTION), then ``probe`` (the same):
    the reply to ``probe`` and to PROBE_SQL after it (which shows the keys it set)."""
    client = await RawClient.connect("127.0.0.1", server.port, "reader", PASSWORDS["reader"])
    try:
        for payload in warm:
            await client.send(RPC, payload, RESETCONNECTION)
            await client.receive()
        await client.send(RPC, probe, RESETCONNECTION)
        reply = await client.receive()
        await client.send(0x01, sql_batch(PROBE_SQL))
        return reply, await client.receive()
    finally:
        await client.aclose()


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


async def test_answers_with_templates_are_the_answers_without(tds_server: TdsServer) -> None:
    sua = preamble_batch().replace("edgetds.sub", "edgetds.sua")
    assert len(sua) == len(preamble_batch())
    template = request(preamble("alice", "https://idp", "q-1"))

    def shows(*texts: str) -> Callable[[bytes], bool]:
        return lambda context: all(utf16(t) in context for t in texts)

    probes: dict[str, tuple[bytes, Callable[[bytes], bool]]] = {
        "same-call": (request(preamble("bob", "https://idp2", "q-2")), shows("bob", "q-2")),
        "one-byte-off-key": (
            request(preamble("carol", "https://idp", "q-3", sql=sua)),
            shows("carol", "q-3"),
        ),
        "non-ascii": (request(preamble("é€", "\U0001f600", "q-4")), shows("é€", "q-4")),
        "null-value": (odd(with_c0(None)), shows()),
        "lone-surrogate": (odd(with_c0(b"\x00\xd8")), shows()),
        "odd-length": (odd(with_c0(b"a\x00b")), shows()),
        "too-long": (odd(with_c0(b"a\x00" * 4001)), shows()),
        "undeclared": (odd(values("a", "b") + nvarchar("@c9", b"c\x00")), shows()),
        "xml-declared": (
            request(executesql(preamble_batch(), XML_DECL, values("<a>", "b", "c"))),
            shows(),
        ),
    }
    # a full cache: TEMPLATES_KEPT other calls after the template, and the template after them
    batch = preamble_batch()
    others = [
        request(preamble("o", "p", f"q{i}", sql=batch.replace("edgetds.iss", f"edgetds.is{i}")))
        for i in range(TEMPLATES_KEPT)
    ]
    xml = request(executesql(preamble_batch(), XML_DECL, values("<a/>", "b", "c")))
    with trio.fail_after(120):
        for name, (probe, seen) in probes.items():
            warm = [xml, xml] if name.startswith("xml") else [template, template]
            warmed = await answers(tds_server, warm, probe)
            assert warmed == await answers(tds_server, [], probe), name
            assert seen(warmed[1]), name
        probe = request(preamble("dave", "https://idp", "q-5"))
        for warm in ([template, *others], [*others, template]):
            warmed = await answers(tds_server, warm, probe)
            assert warmed == await answers(tds_server, [], probe)
            assert shows("dave", "q-5")(warmed[1])
