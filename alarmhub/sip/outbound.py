"""The answer as a new MESSAGE to the device's contact (SCAIP guideline §7.5).

After the plain final response to its request, the device gets the `<mrs>` answer
in a request of alarmhub's own: a new Call-ID, From alarmhub, To the contact, CSeq
1, `Content-Type: application/scaip+xml`. A non-INVITE client transaction (RFC
3261 §17.1.2): over UDP it is resent on Timer E (T1 = 0.5 s doubling to T2 = 4 s)
until a final response comes or Timer F (32 s) ends it; over TCP or TLS it goes on
the connection the device's request came on while that is open, else on a new
connection to the contact, and is sent once. Each outcome is counted
(`alarmhub_scaip_answers_total{outcome}`) and a failure logged (`sip.answer_failed`).

Where a UDP answer goes: a device behind NAT (a 4G router, carrier-grade NAT) names
its private address in its Contact, which nothing outside can reach; the address its
request came from is the NAT's binding, which leads back to it for a while. So, as
common SIP servers do for a client behind NAT (Kamailio's nathelper, Asterisk's
`rewrite_contact`; RFC 3581's symmetric routing, carried over to the requests sent
back): when the Contact's address is not the request's source address, the answer
is sent to the source address and port, with the Contact still its Request-URI.
When they are the same address, the device said where it listens and is reachable
there (a port of its own for requests, as SIPp's two instances use): the Contact's
port is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable

import structlog
from sipmessage import URI, Request, Response

from alarmhub.core.sipcodes import DEFAULT_PORTS, AnswerOutcome
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.ports import SCAIP_CONTENT_TYPE
from alarmhub.sip.transport import (
    Address,
    Connections,
    Deliver,
    Origin,
    StreamConnection,
    UdpEndpoint,
)
from alarmhub.sip.wire import branch_of, new_branch, new_token

log = structlog.get_logger("alarmhub.sip")
T1_S = 0.5
T2_S = 4.0
TIMER_F_S = 64 * T1_S


def destination(contact: str, came_on: str) -> tuple[str, str, int]:
    """(transport, host, port) of a contact URI; ValueError when it is not a SIP URI."""
    uri = URI.parse(contact)
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise ValueError(f"not a SIP URI: {contact!r}")
    param = (uri.parameters.get("transport") or "").lower()
    kind = "tls" if uri.scheme == "sips" else param if param in DEFAULT_PORTS else came_on
    return kind, uri.host.strip("[]"), uri.port or DEFAULT_PORTS[kind]


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


async def udp_destination(host: str, port: int, source: Address) -> Address:
    """Where a UDP answer goes: the contact if it is the source's address, else the source.

    The contact's name is resolved; one that does not resolve (a name on the
    device's own network) is as unreachable as a private address: the source.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return source
    resolved = str(infos[0][4][0])
    return (resolved, port) if _same_ip(resolved, source[0]) else source


def local_ip_toward(ip: str) -> str:
    """The address this host sends from toward `ip` (a connected UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, 9))
        return str(probe.getsockname()[0])


class Answers:
    def __init__(
        self,
        *,
        connections: Connections,
        udp: Callable[[], UdpEndpoint | None],
        deliver: Deliver,
        metrics: Metrics,
        tls_client: ssl.SSLContext | None,
        t1_s: float = T1_S,
        timer_f_s: float = TIMER_F_S,
    ) -> None:
        self._connections = connections
        self._udp = udp
        self._deliver = deliver
        self._metrics = metrics
        self._tls = tls_client
        self._t1 = t1_s
        self._timer_f = timer_f_s
        self._pending: dict[str, asyncio.Future[int]] = {}

    def on_response(self, response: Response) -> bool:
        """A response to one of our MESSAGEs; False when no transaction waits for it."""
        branch = branch_of(response)
        future = self._pending.get(branch or "")
        if future is None:
            return False
        if response.code >= 200 and not future.done():
            future.set_result(response.code)
        return True

    async def send(self, contact: str, user: str, body: bytes, origin: Origin) -> AnswerOutcome:
        try:
            outcome = await self._send(contact, user, body, origin)
        except Exception as exc:  # a bad contact, DNS, a refused connection: never the server
            log.warning("sip.answer_failed", user=user, contact=contact, error=str(exc))
            outcome = AnswerOutcome.UNREACHABLE
        self._metrics.scaip_answers.labels(outcome.value).inc()
        if outcome is not AnswerOutcome.DELIVERED:
            log.warning("sip.answer_not_delivered", user=user, contact=contact, outcome=outcome)
        return outcome

    async def _send(self, contact: str, user: str, body: bytes, origin: Origin) -> AnswerOutcome:
        kind, host, port = destination(contact, origin.transport)
        loop = asyncio.get_running_loop()
        branch = new_branch()
        future: asyncio.Future[int] = loop.create_future()
        self._pending[branch] = future
        try:
            if kind == "udp":
                if origin.transport == "udp":
                    peer = await udp_destination(host, port, origin.peer)
                else:
                    peer = await _resolve(host, port)
                return await self._over_udp(contact, user, body, peer, branch, future)
            return await self._over_stream(
                kind, contact, user, body, (host, port), origin, branch, future
            )
        finally:
            del self._pending[branch]

    async def _over_udp(
        self,
        contact: str,
        user: str,
        body: bytes,
        peer: Address,
        branch: str,
        future: asyncio.Future[int],
    ) -> AnswerOutcome:
        endpoint = self._udp()
        if endpoint is None:
            raise ValueError("no UDP listener to send from")
        sent_by = (local_ip_toward(peer[0]), endpoint.local[1])
        data = _message(contact, user, body, "UDP", sent_by, branch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timer_f
        interval = self._t1
        while True:
            endpoint.sendto(data, peer)
            left = deadline - loop.time()
            if left <= 0:
                return AnswerOutcome.TIMEOUT
            try:
                status = await asyncio.wait_for(asyncio.shield(future), min(interval, left))
            except TimeoutError:
                interval = min(interval * 2, T2_S)
                continue
            return AnswerOutcome.DELIVERED if status < 300 else AnswerOutcome.REFUSED

    async def _over_stream(
        self,
        kind: str,
        contact: str,
        user: str,
        body: bytes,
        where: tuple[str, int],
        origin: Origin,
        branch: str,
        future: asyncio.Future[int],
    ) -> AnswerOutcome:
        # The device's own connection first, before any name is resolved: behind NAT it
        # is the only way back, and the contact's name may mean nothing out here.
        conn = origin.conn if origin.transport == kind and origin.conn is not None else None
        if conn is None or not conn.open:
            peer = await _resolve(*where)
            conn = self._connections.find(kind, peer)
            if conn is None:
                conn = await self._connect(kind, peer)
        conn.send(_message(contact, user, body, kind.upper(), conn.local, branch))
        try:
            status = await asyncio.wait_for(future, self._timer_f)
        except TimeoutError:
            return AnswerOutcome.TIMEOUT
        return AnswerOutcome.DELIVERED if status < 300 else AnswerOutcome.REFUSED

    async def _connect(self, kind: str, peer: Address) -> StreamConnection:
        tls = self._tls if kind == "tls" else None
        if kind == "tls" and tls is None:
            raise ValueError("no TLS client context")
        return await self._connections.connect(kind, self._deliver, peer, tls)


async def _resolve(host: str, port: int) -> Address:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return (str(infos[0][4][0]), int(infos[0][4][1]))


def _message(
    contact: str, user: str, body: bytes, via: str, sent_by: Address, branch: str
) -> bytes:
    uri = URI.parse(contact)
    host = f"[{sent_by[0]}]" if ":" in sent_by[0] else sent_by[0]
    request = Request("MESSAGE", uri, body)
    request.headers.add("Via", f"SIP/2.0/{via} {host}:{sent_by[1]};branch={branch};rport")
    request.headers.add("Max-Forwards", "70")
    request.headers.add("From", f"<sip:alarmhub@{host}>;tag={new_token(4)}")
    request.headers.add("To", f"<{URI(uri.scheme, uri.host, user, port=uri.port)}>")
    request.headers.add("Call-ID", f"{new_token(12)}@alarmhub")
    request.headers.add("CSeq", "1 MESSAGE")
    request.headers.add("Content-Type", SCAIP_CONTENT_TYPE)
    request.headers.add("Content-Length", str(len(body)))
    return bytes(request)
