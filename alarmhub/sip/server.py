"""The SCAIP receiver's SIP server: listen, authenticate, hand each MESSAGE over, answer.

One request, in order (each step's answer is final and sent on the way it came):

1. framing and parsing (transport.py, wire.py): unparseable bytes are dropped and
   counted; a message sipmessage reads but that lacks a mandatory header is 400;
   over the size limits 413 (body) or 513 (datagram);
   a header read later that turns out broken (a Via, an Authorization) is 400 too,
   never an exception without an answer;
2. the server transaction (transactions.py): a retransmission (from the same
   source) is absorbed while the first copy is handled and answered with the same
   final response after;
3. the method: OPTIONS 200 (a keep-alive or capability query), REGISTER and
   MESSAGE go on, ACK is ignored, anything else 405 with `Allow`;
4. digest authentication (auth.py): 401 with a challenge, 403 for wrong
   credentials, 503 with Retry-After when the credentials cannot be read;
5. REGISTER: the contact binding is kept (registrar.py), 200 with the Contact;
   MESSAGE: the handler is awaited (the SCAIP side commits before it returns), its
   :class:`~alarmhub.sip.ports.Reply` becomes the final response, and a body not
   `inline` goes to the device's contact as a new MESSAGE (outbound.py). Every
   MESSAGE goes to the handler with its Content-Type, whatever it is: the SCAIP side
   refuses a type that is not XML (415 with `Accept`) only once it has kept the body
   as a dead letter, so the type is judged after authentication, with a device's name,
   and never by a layer that would have to throw the body away.

The server's work runs in one TaskGroup owned by :meth:`SipServer.run`; stopping
it (cancelling `run`) closes the listeners and connections, and cancels requests
still in the handler without answering them: the device resends them to the next
owner, as MQTT redelivers what was never acknowledged. An address that cannot be
bound (its port taken, below 1024 without the capability, not this machine's) is
logged and retried with back-off while the others listen (listeners.py): it never
ends `run`, and so never the owner's term nor the daemon's MQTT intake with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sipmessage import Request, Response

from alarmhub.clock import Clock
from alarmhub.core.digest import ALGORITHMS
from alarmhub.core.sipcodes import Rebind, SipDrop, SipListen, status_label
from alarmhub.observability.metrics import Metrics
from alarmhub.settings import Settings
from alarmhub.sip.auth import Authenticator, Verdict
from alarmhub.sip.listeners import Close, Listeners
from alarmhub.sip.outbound import Answers
from alarmhub.sip.ports import (
    SCAIP_CONTENT_TYPE,
    CredentialsLookup,
    InboundMessage,
    MessageHandler,
    Reply,
)
from alarmhub.sip.registrar import Registrar
from alarmhub.sip.transactions import Key, Seen, ServerTransactions, key_of
from alarmhub.sip.transport import Connections, Origin, UdpEndpoint
from alarmhub.sip.wire import (
    ALLOW,
    MAX_BODY,
    MAX_MESSAGE,
    header_block_of,
    parse,
    response_from_head,
    response_to,
)

log = structlog.get_logger("alarmhub.sip")
# The UDP socket's receive buffer asked of the kernel. The default (about 208 KiB on
# Linux) drops datagrams when a fleet's burst arrives faster than one event-loop turn
# reads it (the fake-device fleet measured the loss); a device whose datagram is dropped
# only resends, but later. Linux caps it at net.core.rmem_max (docs/scaip.md).
UDP_RCVBUF_BYTES = 4 * 1024 * 1024
# How an address that cannot be bound is tried again (listeners.py); read when a server
# is made, so that a test can shorten it.
REBIND = Rebind()


@dataclass(frozen=True, slots=True)
class SipLimits:
    """What one sender may make the server hold; the defaults suit a response centre.

    `max_connections`, `max_in_flight` and `idle_timeout_s` are settings
    (ALARMHUB_SCAIP_MAX_CONNECTIONS, _MAX_IN_FLIGHT, _IDLE_TIMEOUT_S): how many devices keep
    connections open, and how often they speak, is the fleet's. The rest bound what a
    stranger can make the server hold, and stay here.
    """

    max_connections: int = 2000  # TCP/TLS; a stranger's slot goes to a newcomer (slots.py)
    idle_timeout_s: float = 180.0
    message_deadline_s: float = 30.0  # a TCP/TLS message complete within this of its first byte
    auth_deadline_s: float = 30.0  # a TCP/TLS connection authenticates a request within this
    max_connections_per_device: int = 4  # connections one device's credentials protect
    max_in_flight: int = 2000  # requests being handled at once; more are answered 503
    answer_t1_s: float = 0.5
    answer_timer_f_s: float = 32.0


@dataclass
class _Tls:
    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = field(default_factory=ssl.create_default_context)


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class SipServer:
    """SIP over UDP, TCP and TLS for SCAIP devices; `bound` lists the addresses in use."""

    def __init__(
        self,
        listen: Sequence[SipListen],
        *,
        credentials: CredentialsLookup,
        handler: MessageHandler,
        clock: Clock,
        metrics: Metrics,
        realm: str = "alarmhub",
        digest_algorithms: tuple[str, ...] = ALGORITHMS,
        digest_auth_int: bool = False,
        tls: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        limits: SipLimits | None = None,
        rebind: Rebind | None = None,
    ) -> None:
        self._listen = tuple(listen)
        if any(x.transport == "tls" for x in self._listen) and tls is None:
            raise ValueError("a tls:// address needs a certificate and key")
        self.handler = handler  # replaceable until `run`: the SCAIP side's to set
        self._clock = clock
        self._metrics = metrics
        self._limits = limits or SipLimits()
        self._tls = _Tls(tls, tls_client or ssl.create_default_context())
        self.auth = Authenticator(
            realm,
            credentials,
            clock,
            metrics,
            algorithms=digest_algorithms,
            auth_int=digest_auth_int,
        )
        self.registrar = Registrar(clock.monotonic)
        self.transactions = ServerTransactions(clock.monotonic)
        self.connections = Connections(
            metrics,
            clock.monotonic,
            max_connections=self._limits.max_connections,
            idle_timeout_s=self._limits.idle_timeout_s,
            message_deadline_s=self._limits.message_deadline_s,
            auth_deadline_s=self._limits.auth_deadline_s,
            per_device=self._limits.max_connections_per_device,
            spawn=self._spawn,
        )
        self._udp: list[UdpEndpoint] = []
        self.answers = Answers(
            connections=self.connections,
            udp=lambda: self._udp[0] if self._udp else None,
            deliver=self._deliver,
            metrics=metrics,
            tls_client=self._tls.client,
            t1_s=self._limits.answer_t1_s,
            timer_f_s=self._limits.answer_timer_f_s,
        )
        self._listeners = Listeners(
            self._listen,
            self._open_one,
            metrics.sip_listening,
            rebind if rebind is not None else REBIND,
        )
        # Set once every address listens; cleared at each `run`'s start.
        self.started = self._listeners.all_bound
        self._tasks: asyncio.TaskGroup | None = None
        self._in_flight = 0

    @property
    def bound(self) -> list[SipListen]:
        """The addresses that listen (port 0 replaced by the port the kernel chose)."""
        return self._listeners.bound

    def unbound(self) -> list[str]:
        """The addresses of ALARMHUB_SCAIP_LISTEN that do not listen now (the lease's
        watch, daemon/sipwatch.py): all of them while `run` is not running."""
        return self._listeners.unbound()

    def port(self, transport: str) -> int:
        """The port bound for `transport` (the first such address)."""
        return next(x.port for x in self.bound if x.transport == transport)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> bool:
        """Run `work` in `run`'s TaskGroup (a TLS handshake); False when not running."""
        tasks = self._tasks
        if tasks is None:
            work.close()
            return False
        tasks.create_task(work, name=name)
        return True

    # --- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Listen until cancelled; then close everything (see the module's docstring).

        An address that cannot be bound is retried until it is (listeners.py), while
        the others listen: a port taken by another process never ends `run`, so it
        never ends the owner's term or the daemon with it.
        Run again for the next owner's term: the listeners are opened afresh.
        """
        async with contextlib.AsyncExitStack() as stack:
            self._tasks = tasks = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self.connections.close_all)
            # Before the connections: the retries are cancelled, then the listeners closed.
            stack.push_async_callback(self._listeners.close)
            try:
                await self._listeners.open(tasks)
                while True:
                    limits = self._limits
                    shortest = min(
                        limits.idle_timeout_s, limits.message_deadline_s, limits.auth_deadline_s
                    )
                    await asyncio.sleep(min(1.0, shortest / 4))
                    self.connections.sweep()
            finally:
                self._tasks = None
                log.info("sip.stopped")

    async def _open_one(self, spec: SipListen) -> tuple[int, Close]:
        """Bind one address and serve it (listeners.py `Open`); OSError when it cannot."""
        loop = asyncio.get_running_loop()
        if spec.transport == "udp":
            endpoint = UdpEndpoint(self._deliver)
            transport, _ = await loop.create_datagram_endpoint(
                lambda e=endpoint: e,  # type: ignore[misc]
                local_addr=(spec.host, spec.port),
            )
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF_BYTES)
            self._udp.append(endpoint)

            async def close_udp() -> None:
                self._udp.remove(endpoint)
                transport.close()

            return endpoint.local[1], close_udp
        kind = spec.transport
        # TLS too is accepted as TCP: the connection runs its own handshake
        # (transport.py), so that it holds its slot, and gives it back, from the accept.
        tls = self._tls.server if kind == "tls" else None
        srv = await loop.create_server(
            functools.partial(self.connections.accepted, kind, self._deliver, tls),
            spec.host,
            spec.port,
        )

        async def close_stream() -> None:
            # Only the listening socket: no new connection from here on. Not
            # `srv.wait_closed()`: from Python 3.12 it waits for every connection this
            # server accepted, and those are closed after the listeners (`run`,
            # `connections.close_all`), so the stop hung while a device held one open.
            srv.close()

        return int(srv.sockets[0].getsockname()[1]), close_stream

    # --- one message ---------------------------------------------------------------

    def _deliver(self, data: bytes, origin: Origin) -> None:
        """Called by the transports for every message; the work runs in a task of `run`."""
        tasks = self._tasks
        if tasks is None:
            return
        if self._in_flight >= self._limits.max_in_flight:
            self._answer_head(data, origin, 503)
            return
        self._in_flight += 1
        tasks.create_task(self._handle(data, origin), name="sip-request")

    async def _handle(self, data: bytes, origin: Origin) -> None:
        try:
            await self._handle_one(data, origin)
        except Exception:  # also one raised while answering 400 below: never the TaskGroup
            log.exception("sip.request_failed", peer=origin.peer, transport=origin.transport)
        finally:
            self._in_flight -= 1

    async def _handle_one(self, data: bytes, origin: Origin) -> None:
        if len(data) > MAX_MESSAGE:
            self._answer_head(data, origin, 513)
            return
        try:
            message = parse(data)
        except ValueError:
            self._answer_head(data, origin, 400)
            return
        if isinstance(message, Response):
            if not self.answers.on_response(message):
                self._metrics.sip_dropped.labels(SipDrop.RESPONSE.value).inc()
            return
        try:
            await self._request(message, origin)
        except ValueError:
            # sipmessage reads most headers when first asked: a broken Via, Contact or
            # Authorization surfaces here, and is the sender's error, not ours.
            self._answer_head(data, origin, 400)

    def _answer_head(self, data: bytes, origin: Origin, status: int) -> None:
        """Answer what can be read of a message alarmhub will not handle; else drop it."""
        head = header_block_of(data)
        answer = response_from_head(head, status, origin.peer) if head is not None else None
        if answer is None:
            self._metrics.sip_dropped.labels(SipDrop.UNPARSEABLE.value).inc()
            return
        origin.send(answer)
        self._metrics.sip_responses.labels(status_label(status)).inc()

    async def _request(self, request: Request, origin: Origin) -> None:
        if request.method == "ACK":
            return  # ends an INVITE transaction alarmhub refused; never answered
        key = key_of(request, origin.transport, origin.peer)
        seen, earlier = self.transactions.begin(key)
        if seen is Seen.PENDING:
            return
        if seen is Seen.ANSWERED:
            assert earlier is not None
            origin.send(earlier)
            return
        answered = False
        try:
            reply = await self._decide(request, origin)
            self._send(request, origin, key, reply)
            answered = True
        finally:
            if not answered:
                self.transactions.abandon(key)

    def _send(self, request: Request, origin: Origin, key: Key, reply: _Answer) -> None:
        data = response_to(
            request,
            reply.status,
            reply.reason,
            headers=list(reply.headers),
            body=reply.body,
            content_type=SCAIP_CONTENT_TYPE if reply.body else None,
            source=origin.peer,
        )
        self.transactions.answered(key, data)
        origin.send(data)
        self._metrics.sip_responses.labels(status_label(reply.status)).inc()

    async def _authenticate(self, request: Request, origin: Origin) -> Verdict:
        """Digest (auth.py); a connection that carried an authenticated request is a
        device's from then on, and keeps its slot (slots.py)."""
        verdict = await self.auth.check(request, f"{origin.transport}:{origin.peer[0]}")
        if verdict.user is not None and origin.conn is not None:
            self.connections.authenticated(origin.conn, verdict.user)
        return verdict

    async def _decide(self, request: Request, origin: Origin) -> _Answer:
        method = request.method
        if method == "OPTIONS":
            return _Answer(200, headers=(("Allow", ALLOW), ("Accept", SCAIP_CONTENT_TYPE)))
        if method not in ("MESSAGE", "REGISTER"):
            return _Answer(405, headers=(("Allow", ALLOW),))
        if len(request.body) > MAX_BODY:
            return _Answer(413)
        verdict = await self._authenticate(request, origin)
        if verdict.user is None:
            return _Answer(verdict.status, headers=verdict.headers)
        if method == "REGISTER":
            return self._register(verdict.user, request)
        return await self._message(verdict.user, request, origin)

    def _register(self, user: str, request: Request) -> _Answer:
        try:
            binding = self.registrar.register(user, request)
        except ValueError:
            return _Answer(400, "Bad Contact or Expires")
        if binding is None:
            return _Answer(200)
        contact, expires = binding
        return _Answer(200, headers=(("Contact", f"<{contact}>;expires={expires}"),))

    async def _message(self, user: str, request: Request, origin: Origin) -> _Answer:
        contact = _contact_of(request) or self.registrar.contact_of(user) or _from_of(request)
        message = InboundMessage(
            user=user,
            body=request.body,
            contact=contact,
            source=origin.peer,
            transport=origin.transport,
            call_id=request.call_id,
            received_at=self._clock.now(),
            content_type=_media_type(request),
        )
        try:
            reply = await self.handler(message)
        except Exception:
            log.exception("sip.handler_failed", user=user, call_id=request.call_id)
            return _Answer(500)
        if reply.body is None or reply.inline:
            return _Answer(reply.status, reply.reason, reply.headers, reply.body or b"")
        self._answer_later(contact, user, reply.body, origin)
        return _Answer(reply.status, reply.reason, reply.headers)

    def _answer_later(self, contact: str | None, user: str, body: bytes, origin: Origin) -> None:
        """The answer as a new MESSAGE, after the final response has gone out."""
        tasks = self._tasks
        if contact is None or tasks is None:
            self._metrics.scaip_answers.labels("no_contact").inc()
            log.warning("sip.answer_not_delivered", user=user, outcome="no_contact")
            return
        tasks.create_task(self.answers.send(contact, user, body, origin), name="sip-answer")


async def not_wired(message: InboundMessage) -> Reply:
    """The handler until the SCAIP side is wired: 503, so the device keeps resending and
    nothing is answered as handled that was not committed."""
    log.warning("sip.no_scaip_handler", user=message.user)
    return Reply(503, "SCAIP intake not available")


def sip_server_from(
    settings: Settings,
    credentials: CredentialsLookup,
    clock: Clock,
    metrics: Metrics,
    handler: MessageHandler = not_wired,
) -> SipServer | None:
    """The server `ALARMHUB_SCAIP_LISTEN` asks for, or None when it is unset (off).

    The SCAIP side sets :attr:`SipServer.handler` when it is wired (issue 16 part 2);
    until then every authenticated MESSAGE is answered 503 (:func:`not_wired`).
    """
    if not settings.sip_listen:
        return None
    cert, key = settings.scaip_tls_cert, settings.scaip_tls_key
    return SipServer(
        settings.sip_listen,
        credentials=credentials,
        handler=handler,
        clock=clock,
        metrics=metrics,
        realm=settings.scaip_realm,
        digest_algorithms=settings.digest_algorithms,
        digest_auth_int=settings.scaip_digest_auth_int,
        tls=server_tls(cert, key) if cert is not None and key is not None else None,
        limits=SipLimits(
            max_connections=settings.scaip_max_connections,
            max_in_flight=settings.scaip_max_in_flight,
            idle_timeout_s=settings.scaip_idle_timeout_s,
        ),
    )


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def _media_type(request: Request) -> str:
    """The Content-Type's media type, lower-case; "" when there is none or it is unreadable."""
    try:
        media = request.content_type
    except ValueError:
        return ""
    return media.mime_type.lower() if media is not None else ""


def _contact_of(request: Request) -> str | None:
    try:
        contacts = request.contact
    except ValueError:
        return None
    return str(contacts[0].uri) if contacts else None


def _from_of(request: Request) -> str | None:
    try:
        return str(request.from_address.uri)
    except ValueError:
        return None
