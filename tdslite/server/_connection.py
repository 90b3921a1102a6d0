"""One client connection: PRELOGIN (+TLS), LOGIN7, then requests until the client leaves.

Steps, as SQL Server does them:
1. PRELOGIN: read the client's options, answer with ours and the encryption decision.
2. TLS handshake inside PRELOGIN packets when encryption is ON or OFF (login-only).
3. LOGIN7: SQL authentication against the engine, a FEDAUTH access token, or integrated (SSPI:
   NTLM/Kerberos) authentication, whose tokens go back and forth in SSPI tokens and messages;
   wrong credentials get error 18456 (18452 for a refused SSPI exchange) class 14 and the
   connection is closed. Then LOGINACK, ENVCHANGEs, DONE.
4. Requests: this task keeps reading the socket while a worker thread runs the statement, so an
   ATTENTION cancels it (``Session.cancel()``) and is acknowledged with DONE(ATTN).
"""

from __future__ import annotations

import datetime
import logging
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import trio

from tdslite.engine import Engine, Session, SqlError, User

from . import _login7, _prelogin
from . import _tokens as tk
from ._dispatch import Dispatcher
from ._fedauth import FedAuthConfig, FedAuthError
from ._packets import (
    DEFAULT_PACKET_SIZE,
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    Message,
    PacketType,
    ProtocolError,
)
from ._reply import Reply
from ._requests import Request, SessionState
from ._sspi import SspiConfig, SspiError
from ._statementlog import StatementLog
from ._tokens import Done, EnvChange
from ._transport import ConnectionClosed, PacketTransport

log = logging.getLogger("tdslite.server")

#: TDS versions we answer with in LOGINACK, as SQL Server 2022: 7.4 to 7.4 and newer clients,
#: 7.3 (A or B), 7.2 and 7.1 (rev 1) to clients asking for those.
_TDS_74 = 0x74000004
_KNOWN_TDS = (0x71000001, 0x72090002, 0x730A0003, 0x730B0003, _TDS_74)
#: Seconds a client has from connecting to being logged in.
LOGIN_TIMEOUT = 30.0
#: SSPI round trips allowed before a login is refused (NTLM needs 2, Kerberos 1, SPNEGO 2-3).
MAX_SSPI_ROUNDS = 4
#: What SQL Server answers when integrated authentication fails (MS-TDS clients show it as is).
_UNTRUSTED = (
    "Login failed. The login is from an untrusted domain and cannot be used with Integrated "
    "authentication."
)
#: Seconds between repeated Session.cancel() calls while a cancelled request is still running.
CANCEL_REPEAT = 0.05


@dataclass
class ServerContext:
    """What every connection of one server shares."""

    engine: Engine
    users: dict[str, User]
    limiter: trio.CapacityLimiter
    ssl_context: ssl.SSLContext | None = None
    fedauth: FedAuthConfig | None = None
    sspi: SspiConfig | None = None
    statement_log: StatementLog | None = None
    _next_id: int = 50
    _next_descriptor: int = 0

    def new_connection_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def new_descriptor(self) -> int:
        self._next_descriptor += 1
        return self._next_descriptor


def agreed_version(requested: int) -> int:
    """The LOGINACK TDS version for a client's LOGIN7 version: the newest we speak that is not
    newer than the client's (7.1 rev 0 and older clients get 7.1 rev 1)."""
    fitting = [v for v in _KNOWN_TDS if v <= requested]
    return max(fitting) if fitting else _KNOWN_TDS[0]


class LoginFailed(Exception):
    """The login is refused with ``errors`` (each one an ERROR token, in order)."""

    def __init__(self, *errors: SqlError) -> None:
        super().__init__(" ".join(err.message for err in errors))
        self.errors = errors


class Connection:
    def __init__(self, ctx: ServerContext, stream: trio.abc.Stream) -> None:
        self.ctx = ctx
        self.id = ctx.new_connection_id()
        self.transport = PacketTransport(stream, spid=self.id)
        self._stream = stream
        self._encrypted = False
        #: The last SSPI token of an integrated login, sent just before LOGINACK.
        self._sspi_final: bytes | None = None
        #: The TDS version agreed in LOGINACK (decides DONE and column wire forms).
        self.tds_version = _TDS_74
        self.dispatcher: Dispatcher | None = None
        self._running: Request | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        try:
            await self._run()
        except ConnectionClosed as exc:
            log.debug("connection %d closed: %s", self.id, exc)
        except ProtocolError as exc:
            log.warning("connection %d: protocol error, closing: %s", self.id, exc)
        finally:
            with trio.CancelScope(shield=True):
                if self.dispatcher is not None:
                    session = self.dispatcher.state.session
                    session.cancel()
                    await trio.to_thread.run_sync(session.close)
                await self.transport.aclose()

    async def _run(self) -> None:
        # PRELOGIN, TLS and LOGIN7 must be done within LOGIN_TIMEOUT (a silent or trickling
        # client must not hold a connection slot forever)
        with trio.move_on_after(LOGIN_TIMEOUT) as scope:
            ok = await self._handshake()
        if scope.cancelled_caught:
            log.info("connection %d: no login within %s s, closing", self.id, LOGIN_TIMEOUT)
            return
        if ok:
            await self._serve_requests()

    async def _handshake(self) -> bool:
        """PRELOGIN, TLS, LOGIN7; True when logged in (`self.dispatcher` is set)."""
        msg = await self.transport.receive_message()
        if msg.type != PacketType.PRELOGIN:
            raise ProtocolError(f"expected PRELOGIN, got packet type {msg.type}")
        client = _prelogin.parse(msg.payload)
        answer = _prelogin.choose_encryption(
            client.encryption, have_cert=self.ctx.ssl_context is not None
        )
        log.debug(
            "connection %d: PRELOGIN encryption client=%s answer=%s",
            self.id,
            client.encryption.name,
            answer.name,
        )
        reply = _prelogin.build_reply(answer, thread_id=self.id)
        await self.transport.send_message(PacketType.REPLY, reply)
        if answer == _prelogin.Encrypt.NOT_SUP and client.encryption in (
            _prelogin.Encrypt.ON,
            _prelogin.Encrypt.REQ,
        ):
            log.warning(
                "connection %d: the client requires encryption but tdslite has no certificate "
                "(start it with --tls-cert and --tls-key)",
                self.id,
            )
        self._encrypted = answer == _prelogin.Encrypt.ON
        if answer in (_prelogin.Encrypt.ON, _prelogin.Encrypt.OFF):
            assert self.ctx.ssl_context is not None
            await self.transport.start_tls(self.ctx.ssl_context)
        msg = await self.transport.receive_message()
        if answer == _prelogin.Encrypt.OFF:
            self.transport.use_clear()
        if msg.type != PacketType.LOGIN7:
            raise ProtocolError(f"expected LOGIN7, got packet type {msg.type}")
        login = _login7.parse(msg.payload)
        try:
            state = await self._login(login)
        except LoginFailed as exc:
            out = Reply(packet_size=DEFAULT_PACKET_SIZE, spid=self.id)
            for err in exc.errors:
                out.write(
                    tk.message(err.number, err.message, state=err.state, severity=err.severity)
                )
            out.write(tk.done(Done.ERROR, 0))
            await self.transport.send_raw(out.finish())
            log.info("connection %d: login failed: %s", self.id, exc)
            return False
        self.dispatcher = Dispatcher(state)
        return True

    async def _login(self, login: _login7.Login7) -> SessionState:
        user = await self._authenticate(login)
        engine = self.ctx.engine
        try:
            session = await trio.to_thread.run_sync(
                lambda: _open_session(engine, user, login.database, login.hostname),
                limiter=self.ctx.limiter,
            )
        except SqlError as exc:
            # As SQL Server: 4060 "Cannot open database" is followed by 18456, which tells the
            # client the login is over (python-tds retries a lone 4060 until its login timeout).
            failed = SqlError(18456, f"Login failed for user '{user.login}'.", severity=14)
            raise LoginFailed(exc, failed) from None
        state = SessionState(
            session=session,
            connection_id=self.id,
            login=user.login,
            statement_log=self.ctx.statement_log,
            database=session.database,
            next_descriptor=self.ctx.new_descriptor,
        )
        version = self.tds_version = agreed_version(login.tds_version)
        size = login.packet_size or DEFAULT_PACKET_SIZE
        size = max(MIN_PACKET_SIZE, min(MAX_PACKET_SIZE, size))
        facts = getattr(session, "client", None)  # an engine stand-in may keep none
        if isinstance(facts, dict):
            facts.update(self._client_facts(login, version), net_packet_size=size)
        out = Reply(packet_size=DEFAULT_PACKET_SIZE, spid=self.id, tds_version=version)
        if self._sspi_final:
            out.write(tk.sspi(self._sspi_final))
        out.write(tk.database_changed(session.database, "master"))
        out.write(tk.envchange_collation())
        out.write(tk.envchange_text(EnvChange.LANGUAGE, "us_english", ""))
        out.write(
            tk.message(
                5703, "Changed language setting to us_english.", severity=0, state=1, info=True
            )
        )
        out.write(tk.loginack(version))
        out.write(tk.envchange_text(EnvChange.PACKET_SIZE, str(size), str(DEFAULT_PACKET_SIZE)))
        out.write(tk.done(Done.FINAL, 0))
        await self.transport.send_raw(out.finish())
        self.transport.packet_size = size
        return state

    def _client_facts(self, login: _login7.Login7, version: int) -> dict[str, object]:
        """What sys.dm_exec_sessions / sys.dm_exec_connections show of this connection."""
        sock = getattr(self._stream, "socket", None)
        peer = local = (None, None)
        try:
            if sock is not None:
                peer, local = sock.getpeername()[:2], sock.getsockname()[:2]
        except OSError:
            pass
        return {
            "login_time": datetime.datetime.now().replace(microsecond=0),
            "host_name": login.hostname, "program_name": login.appname,
            "host_process_id": login.client_pid, "client_version": version >> 24 & 0xFF,
            "client_interface_name": None, "protocol_version": version,
            "encrypt_option": "TRUE" if self._encrypted else "FALSE",
            "client_net_address": peer[0], "client_tcp_port": peer[1],
            "local_net_address": local[0], "local_tcp_port": local[1],
            "connection_id": str(uuid.uuid4()).upper(),
        }  # fmt: skip

    async def _authenticate(self, login: _login7.Login7) -> User:
        if login.access_token is not None:
            if self.ctx.fedauth is None:
                raise LoginFailed(
                    SqlError(
                        18456,
                        "Login failed: this tdslite accepts no access tokens "
                        "(start it with --fedauth-issuer/--fedauth-jwks/--fedauth-audience).",
                        severity=14,
                    )
                )
            fedauth = self.ctx.fedauth
            try:
                name = await trio.to_thread.run_sync(fedauth.verify, login.access_token)
            except FedAuthError as exc:
                log.info("connection %d: %s", self.id, exc)
                raise LoginFailed(
                    SqlError(
                        18456, "Login failed for user '<token-identified principal>'.", severity=14
                    )
                ) from None
            user = self.ctx.users.get(name)
            if user is None or user.windows:
                log.info("connection %d: token login %r is not in the users file", self.id, name)
                raise LoginFailed(SqlError(18456, f"Login failed for user '{name}'.", severity=14))
            return user
        if login.sspi:
            return await self._integrated(login)
        engine = self.ctx.engine
        try:
            return await trio.to_thread.run_sync(
                engine.authenticate, login.username, login.password, limiter=self.ctx.limiter
            )
        except SqlError as exc:
            raise LoginFailed(exc) from None

    async def _integrated(self, login: _login7.Login7) -> User:
        """The SSPI exchange: tokens back and forth until the acceptor is complete."""
        if self.ctx.sspi is None:
            log.info(
                "connection %d: integrated login refused: tdslite was started without "
                "--ntlm-users or --kerberos-keytab",
                self.id,
            )
            raise LoginFailed(SqlError(18452, _UNTRUSTED, severity=14))
        acceptor = self.ctx.sspi.acceptor()
        token = login.sspi_token
        for _ in range(MAX_SSPI_ROUNDS):
            try:
                answer = await trio.to_thread.run_sync(
                    acceptor.step, token, limiter=self.ctx.limiter
                )
            except SspiError as exc:
                log.info("connection %d: integrated login refused: %s", self.id, exc)
                raise LoginFailed(SqlError(18452, _UNTRUSTED, severity=14)) from None
            if acceptor.complete:
                self._sspi_final = answer
                break
            out = Reply(packet_size=DEFAULT_PACKET_SIZE, spid=self.id)
            out.write(tk.sspi(answer or b""))
            await self.transport.send_raw(out.finish())
            msg = await self.transport.receive_message()
            # python-tds 1.17 sends the next token with the LOGIN7 packet type, not SSPI's
            if msg.type not in (PacketType.SSPI, PacketType.LOGIN7):
                raise ProtocolError(f"expected an SSPI message, got packet type {msg.type}")
            token = msg.payload
        else:
            log.info("connection %d: SSPI exchange not complete after %d rounds", self.id, _)
            raise LoginFailed(SqlError(18452, _UNTRUSTED, severity=14))
        name = acceptor.principal
        user = next(
            (u for u in self.ctx.users.values() if u.windows and u.login.lower() == name.lower()),
            None,
        )
        if user is None:
            log.info("connection %d: Windows login %r is not in the users file", self.id, name)
            raise LoginFailed(SqlError(18456, f"Login failed for user '{name}'.", severity=14))
        return user

    # --- requests ---------------------------------------------------------------------------------

    async def _serve_requests(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while True:
                    msg = await self.transport.receive_message()
                    if msg.type == PacketType.ATTENTION:
                        await self._attention()
                        continue
                    if self._running is not None:
                        await self._running.done.wait()
                    reply = Reply(
                        packet_size=self.transport.packet_size,
                        spid=self.id,
                        tds_version=self.tds_version,
                    )
                    assert self.dispatcher is not None
                    if self.dispatcher.runs_inline(msg, self.tds_version):
                        # small and quick: answered here, the reply buffered and sent whole; an
                        # ATTENTION sent meanwhile is read after it (and acknowledged alone)
                        self._dispatch(self.dispatcher, Request(reply), msg)
                        await self.transport.send_raw(reply.finish())
                        continue
                    request = Request(reply, done=trio.Event())
                    self._running = request
                    nursery.start_soon(self._handle, request, msg)
            except ConnectionClosed as exc:
                log.debug("connection %d closed: %s", self.id, exc)
            except ProtocolError as exc:
                log.warning("connection %d: protocol error, closing: %s", self.id, exc)
            finally:
                if self._running is not None:
                    await self._attention()  # the client is gone: stop what it asked for

    async def _attention(self) -> None:
        request = self._running
        if request is None:
            await self.transport.send_raw(self._attention_ack())
            return
        if not request.cancelled:
            request.cancelled = True
            assert self._nursery is not None
            self._nursery.start_soon(self._keep_cancelling, request)

    def _attention_ack(self) -> bytes:
        """The attention acknowledgement: a message holding only DONE(ATTN)."""
        reply = Reply(
            packet_size=self.transport.packet_size, spid=self.id, tds_version=self.tds_version
        )
        reply.write(tk.done(Done.ATTN, 0))
        return reply.finish()

    async def _keep_cancelling(self, request: Request) -> None:
        # Session.cancel() interrupts the SQLite statement running *now*; a statement that starts
        # a moment later (still being translated when the ATTENTION came) would miss it. So
        # repeat until the request is over.
        assert self.dispatcher is not None
        session = self.dispatcher.state.session
        while not request.done.is_set():
            session.cancel()
            with trio.move_on_after(CANCEL_REPEAT):
                await request.done.wait()

    async def _handle(self, request: Request, msg: Message) -> None:
        assert self.dispatcher is not None
        dispatcher = self.dispatcher
        token = trio.lowlevel.current_trio_token()

        def send(data: bytes) -> None:
            try:
                trio.from_thread.run(self.transport.send_raw, data, trio_token=token)
            except (ConnectionClosed, trio.RunFinishedError, trio.Cancelled):
                # nobody to send to: stop producing rows, the reader ends the connection
                request.cancelled = True
                request.reply.send = None

        try:
            request.reply.send = send
            await trio.to_thread.run_sync(
                self._dispatch, dispatcher, request, msg, limiter=self.ctx.limiter
            )
            # No checkpoint from here to `_running = None`: an ATTENTION read before this point
            # is acknowledged here, one read after it by `_attention` (queued behind this reply on
            # the send lock). Either way exactly one DONE(ATTN), and always in a message of its
            # own after the request's reply: tedious reads one message for the request and then
            # exactly one for the acknowledgement.
            reply = request.reply
            if request.cancelled and reply.empty:
                reply.write(tk.done(Done.FINAL, 0))
            data = reply.finish()
            if request.cancelled:
                data += self._attention_ack()
            self._running = None
            await self.transport.send_raw(data)
        except ConnectionClosed:
            pass  # the reader task sees the same and ends the connection
        finally:
            if self._running is request:  # a next request may already be running
                self._running = None
            request.done.set()

    @staticmethod
    def _dispatch(dispatcher: Dispatcher, request: Request, msg: Message) -> None:
        """Blocking: in a worker thread, or on the event loop (in the reading task) when
        `Dispatcher.runs_inline`."""
        reply = request.reply
        if msg.ignored:
            reply.write(tk.done(Done.FINAL, 0))
            return
        if msg.reset_connection:
            dispatcher.reset(reply)
            reply.write(tk.RESET_ACK)
        handlers: dict[int, Any] = {
            PacketType.SQL_BATCH: dispatcher.batch,
            PacketType.RPC: dispatcher.rpc,
            PacketType.TRANSACTION_MANAGER: dispatcher.transaction,
            PacketType.BULK_LOAD: dispatcher.bulk,
        }
        handler = handlers.get(msg.type)
        if handler is None:
            reply.write(tk.message(40000, f"packet type {msg.type} is not supported by tdslite"))
            reply.write(tk.done(Done.ERROR, 0))
            return
        try:
            handler(request, msg.payload)
        except ProtocolError as exc:
            # a malformed request body: say so and keep the connection (the framing was fine)
            reply.write(tk.message(8009, f"The incoming TDS request is incorrect: {exc}"))
            reply.write(tk.done(Done.ERROR, 0))


def _open_session(engine: Engine, user: User, database: str, host_name: str) -> Session:
    """A session for a login; HOST_NAME() answers the workstation name the client sent."""
    session = engine.open_session(user, database=database or None)
    session.host_name = host_name
    return session
