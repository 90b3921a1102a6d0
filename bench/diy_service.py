"""The do-it-yourself baseline: the small HTTP service a team would write instead of edgetds.

What the tunnel is compared with: a service that takes the same ``POST .../query`` body
(``{"sql", "params"}``), binds the parameters as the connector does
(`connector.encode.decode_params`, sp_executesql through `connector.execute.run_statement`),
runs the statement on ONE shared python-tds login (a pool of connections of that login, one per
concurrent request), and answers the same NDJSON shape (``{"columns": ...}``, row arrays from
`connector.encode.RowEncoder`, ``{"done": ...}``). No identity, no policy, no audit, no session
context, no relay, no WebSocket. Two ways a team would write it (``--server``):

- ``hypercorn`` (default): an ASGI app on hypercorn (Trio worker), python-tds in worker threads
  (``trio.to_thread``), the answer streamed a batch of rows at a time;
- ``stdlib``: ``http.server.ThreadingHTTPServer`` (HTTP/1.1 keep-alive, a thread per client
  connection), python-tds called in the request's own thread (no hand-off between threads), the
  whole answer built in memory and sent with its Content-Length. The leaner of the two for small
  results (no event loop, no thread hop), at the price of holding a result in memory: fine for
  the benchmark's small queries, not for a service that streams large ones.

Run alone: ``.venv/bin/python -m bench.diy_service --direct "host=127.0.0.1;port=1433;
user=reader;password=...;database=..." [--server hypercorn|stdlib] [--port 0] [--pool 16]``; it
prints ``diy listening on http://HOST:PORT`` and serves until killed. bench/tunnel.py starts it
as its own process (its own GIL, its CPU read like the other parts': bench/cputime.py).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from asgiapp import answer_lifespan, read_body
from connector.encode import (
    BoundParam,
    ParamError,
    RowEncoder,
    columns_line,
    decode_params,
    describe,
)
from connector.execute import run_statement
from edgetds.loadtest.targets import DirectSpec, parse_direct
from protocol import ErrorCode, done_record, error_record

__all__ = ["DiyApp", "StdlibDiy", "main"]

_HEADERS = [(b"content-type", b"application/x-ndjson")]
_FETCH_ROWS = 500


class _Query:
    """One request's cursor, touched by one worker thread at a time."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cursor: Any = None
        self.encoder: RowEncoder | None = None
        self.result_sets = 0
        self.rows = 0
        self.finished = False

    def start(self, sql: str, params: list[BoundParam]) -> bytes:
        self.cursor = self.conn.cursor()
        run_statement(self.cursor, sql, params)
        return self._next_result()

    def _next_result(self) -> bytes:
        """COLUMNS of the next result set and its first rows (b"" and finished: none left)."""
        while not self.finished:
            if self.cursor.description:
                cols = describe(self.cursor.description)
                self.encoder = RowEncoder(cols)
                self.result_sets += 1
                return columns_line(cols) + self._fetch()
            if not self.cursor.nextset():
                self.finished = True
        return b""

    def _fetch(self) -> bytes:
        assert self.encoder is not None
        rows = self.cursor.fetchmany(_FETCH_ROWS)
        if not rows:
            self.encoder = None
            if not self.cursor.nextset():
                self.finished = True
            return b""
        self.rows += len(rows)
        encode = self.encoder.encode
        return b"".join([encode(row) for row in rows])

    def more(self) -> bytes:
        return self._next_result() if self.encoder is None else self._fetch()


class DiyApp:
    """The ASGI app (see the module docstring)."""

    def __init__(self, spec: DirectSpec, *, pool: int) -> None:
        self.spec = spec
        self.limiter = trio.CapacityLimiter(pool)
        self.idle: list[Any] = []

    def _connect(self) -> Any:
        return self.spec.connect(timeout=60, appname="edgetds-diy")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if scope["method"] != "POST":
            await _answer(send, 405, error_record(ErrorCode.REQUEST_INVALID, "POST a query"))
            return
        try:
            sql, params = _request(body)
        except (ValueError, KeyError, TypeError, ParamError) as exc:
            await _answer(send, 400, error_record(ErrorCode.REQUEST_INVALID, str(exc)))
            return
        await self._run(send, sql, params)

    async def _run(self, send: Any, sql: str, params: list[BoundParam]) -> None:
        from pytds import tds_base

        started = time.monotonic()
        async with self.limiter:
            conn = self.idle.pop() if self.idle else None
            try:
                if conn is None:
                    conn = await trio.to_thread.run_sync(self._connect)
                query = _Query(conn)
                try:
                    data = await trio.to_thread.run_sync(query.start, sql, params)
                except tds_base.Error as exc:
                    await _answer(send, 200, _sql_error(exc))
                    return
                await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
                while not query.finished:
                    if data:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                    data = await trio.to_thread.run_sync(query.more)
                elapsed = int(1000 * (time.monotonic() - started))
                done = done_record(
                    rows=query.rows,
                    result_sets=query.result_sets,
                    elapsed_ms=elapsed,
                    query_id=None,
                )
                await send({"type": "http.response.body", "body": data + done})
            except BaseException:
                if conn is not None:
                    conn.close()
                conn = None
                raise
            finally:
                if conn is not None:
                    self.idle.append(conn)


class StdlibDiy(http.server.ThreadingHTTPServer):
    """The ``stdlib`` service (see the module docstring): python-tds in each request's thread,
    connections of the one login kept in a LIFO queue (at most ``pool``; a request that finds
    none free waits for one)."""

    daemon_threads = True
    #: the listen backlog (socketserver's default, 5, drops the SYNs of a pool of clients that
    #: connect at once: their retries come 1 s and 3 s later)
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], spec: DirectSpec, *, pool: int) -> None:
        super().__init__(address, _StdlibHandler)
        self.spec = spec
        self.idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self.slots = threading.BoundedSemaphore(pool)

    def answer(self, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, NDJSON body) for one request's body."""
        from pytds import tds_base

        started = time.monotonic()
        try:
            sql, params = _request(body)
        except (ValueError, KeyError, TypeError, ParamError) as exc:
            return 400, error_record(ErrorCode.REQUEST_INVALID, str(exc))
        with self._connection() as conn:
            query = _Query(conn)
            try:
                parts = [query.start(sql, params)]
            except tds_base.Error as exc:
                return 200, _sql_error(exc)
            while not query.finished:
                parts.append(query.more())
        elapsed = int(1000 * (time.monotonic() - started))
        done = done_record(
            rows=query.rows, result_sets=query.result_sets, elapsed_ms=elapsed, query_id=None
        )
        return 200, b"".join(parts) + done

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A connection of the login: an idle one or a new one; back to the idle ones after the
        block, closed when the block raised."""
        with self.slots:
            try:
                conn = self.idle.get_nowait()
            except queue.Empty:
                conn = self.spec.connect(timeout=60, appname="edgetds-diy")
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            self.idle.put(conn)


def _request(body: bytes) -> tuple[str, list[BoundParam]]:
    """A request body's statement and bound parameters (ValueError, KeyError, TypeError or
    ParamError: not a query)."""
    request = json.loads(body)
    return request["sql"], decode_params(request.get("params") or {})


def _sql_error(exc: Exception) -> bytes:
    number = int(getattr(exc, "msg_no", 0) or 0)
    return error_record(ErrorCode.SQL_ERROR, f"SQL Server error {number}: {exc}")


class _StdlibHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: the header block and the body go out as two writes, and with Nagle's
    #: algorithm the second waits for the client's delayed ACK of the first (40 ms here)
    disable_nagle_algorithm = True
    server: StdlibDiy

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        status, answer = self.server.answer(body)
        self.send_response(status)
        self.send_header("content-type", "application/x-ndjson")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """No access log (hypercorn's is off too)."""


async def _answer(send: Any, status: int, line: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": line})


async def serve_diy(
    spec: DirectSpec,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    pool: int = 16,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `DiyApp` until cancelled; reports the bound URL."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    app: Any = DiyApp(spec, pool=pool)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(serve, app, config))
        task_status.started(str(binds[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--direct", required=True, help="host=..;port=..;user=..;password=..")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pool", type=int, default=16, help="connections of the one login")
    parser.add_argument(
        "--server",
        choices=("hypercorn", "stdlib"),
        default="hypercorn",
        help="hypercorn: ASGI on Trio, python-tds in worker threads; stdlib: ThreadingHTTPServer, "
        "python-tds in the request's thread (see above)",
    )
    args = parser.parse_args(argv)
    if args.server == "stdlib":
        server = StdlibDiy(("127.0.0.1", args.port), parse_direct(args.direct), pool=args.pool)
        port = server.server_address[1]
        print(f"diy listening on http://127.0.0.1:{port}", flush=True)
        server.serve_forever()
        return

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                functools.partial(
                    serve_diy, parse_direct(args.direct), port=args.port, pool=args.pool
                )
            )
            print(f"diy listening on {url}", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
