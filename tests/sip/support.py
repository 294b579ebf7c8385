"""A SIP device on loopback for the SIP layer's tests: builds requests, answers challenges.

Requests are built and responses read with sipmessage, as the server does; the digest
response is computed by core/digest.py's `digest_response` from the password, as a
device would (the server itself only ever holds HA1).
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sipmessage import URI, AuthChallenge, Message, Request, Response

from alarmhub.core.digest import (
    MD5,
    DeviceCredentials,
    credentials_for,
    digest_response,
    ha1,
)
from alarmhub.core.sipcodes import SipListen
from alarmhub.sim.scaip_wire import challenges_of
from alarmhub.sip.ports import InboundMessage, MessageHandler, Reply
from alarmhub.sip.server import SipLimits, SipServer
from alarmhub.sip.wire import StreamFramer, new_branch, new_token

SCAIP = "application/scaip+xml"
REALM = "alarmhub"
DEVICE = "4790012345"
PASSWORD = "pendant-secret"
MRQ = b"<mrq><ref>R1</ref><cid>4790012345</cid><dty>3</dty></mrq>"


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    crt, key = tmp_path / "sip-cert.pem", tmp_path / "sip-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


@dataclass
class Recorder:
    """A trivial MessageHandler: records each message; `gate` holds it until set."""

    reply: Callable[[InboundMessage], Reply] = lambda m: Reply()
    gate: asyncio.Event | None = None
    messages: list[InboundMessage] = field(default_factory=list)

    async def __call__(self, message: InboundMessage) -> Reply:
        self.messages.append(message)
        if self.gate is not None:
            await self.gate.wait()
        return self.reply(message)


class Credentials:
    """What the store would return: HA1 per device, made with the realm."""

    def __init__(self, **passwords: str) -> None:
        self.stored = {d: credentials_for(d, REALM, p) for d, p in passwords.items()}

    async def __call__(self, device_id: str) -> DeviceCredentials | None:
        return self.stored.get(device_id)


@asynccontextmanager
async def running(
    kinds: tuple[str, ...],
    handler: MessageHandler,
    credentials: Callable[[str], Awaitable[DeviceCredentials | None]],
    *,
    metrics,
    clock,
    tls: ssl.SSLContext | None = None,
    tls_client: ssl.SSLContext | None = None,
    limits: SipLimits | None = None,
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
    digest_auth_int: bool = False,
) -> AsyncIterator[SipServer]:
    server = SipServer(
        [SipListen(k, "127.0.0.1", 0) for k in kinds],  # type: ignore[arg-type]
        credentials=credentials,
        handler=handler,
        clock=clock,
        metrics=metrics,
        realm=REALM,
        digest_algorithms=digest_algorithms,
        digest_auth_int=digest_auth_int,
        tls=tls,
        tls_client=tls_client,
        limits=limits,
    )
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 5)
    try:
        yield server
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def request(
    method: str = "MESSAGE",
    *,
    port: int,
    transport: str = "UDP",
    user: str = DEVICE,
    body: bytes = MRQ,
    content_type: str | None = SCAIP,
    call_id: str | None = None,
    cseq: int = 1,
    branch: str | None = None,
    contact: str | None = None,
    authorization: str | None = None,
    local_port: int = 5999,
    extra: list[tuple[str, str]] | None = None,
) -> Request:
    uri = f"sip:alarmhub@127.0.0.1:{port}"
    req = Request(method, URI.parse(uri), body)
    h = req.headers
    h.add("Via", f"SIP/2.0/{transport} 127.0.0.1:{local_port};branch={branch or new_branch()}")
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:{user}@127.0.0.1:{local_port}>;tag={new_token(4)}")
    h.add("To", f"<{uri}>")
    h.add("Call-ID", call_id or new_token())
    h.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        h.add("Contact", contact)
    if authorization is not None:
        h.add("Authorization", authorization)
    if content_type is not None and body:
        h.add("Content-Type", content_type)
    for name, value in extra or []:
        h.add(name, value)
    h.add("Content-Length", str(len(body)))
    return req


def challenges(response: Response) -> list[AuthChallenge]:
    """The 401's challenges (read as the fake device reads them: sipmessage alone refuses
    the quoted `qop="auth,auth-int"`)."""
    return challenges_of(response)


def authorization(
    response: Response,
    req: Request,
    *,
    algorithm: str = MD5,
    user: str = DEVICE,
    password: str = PASSWORD,
    realm: str | None = None,
    nc: str = "00000001",
) -> str:
    """The Authorization header answering the challenge of `algorithm` in a 401."""
    [chosen] = [c for c in challenges(response) if c.parameters["algorithm"] == algorithm]
    nonce = chosen.parameters["nonce"]
    realm = realm or chosen.parameters["realm"]
    uri = str(req.uri)
    cnonce = new_token()
    answer = digest_response(
        algorithm,
        ha1(algorithm, user, realm, password),
        req.method,
        uri,
        nonce,
        qop="auth",
        nc=nc,
        cnonce=cnonce,
    )
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{answer}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


class Peer:
    """One device socket: UDP, or a TCP/TLS connection; messages in arrive on `inbox`."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.raw: list[bytes] = []
        self.send: Callable[[bytes], None] = lambda data: None
        self.reply_to: Callable[[bytes, tuple[str, int]], None] = lambda data, addr: None
        self.port = 0
        self.closed = asyncio.Event()
        self._close: Callable[[], None] = lambda: None

    def _got(self, data: bytes) -> None:
        self.raw.append(data)
        self.inbox.put_nowait(Message.parse(data))

    async def next(self, timeout: float = 5.0) -> Request | Response:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def ask(self, req: Request, timeout: float = 5.0) -> Response:
        self.send(bytes(req))
        got = await self.next(timeout)
        assert isinstance(got, Response), got
        return got

    def close(self) -> None:
        self._close()


@asynccontextmanager
async def udp_peer(server_port: int, local_port: int = 0) -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    peer = Peer()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:
            peer._got(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", local_port))
    peer.port = transport.get_extra_info("sockname")[1]
    peer.send = lambda data: transport.sendto(data, ("127.0.0.1", server_port))
    peer.reply_to = transport.sendto
    try:
        yield peer
    finally:
        transport.close()


@asynccontextmanager
async def stream_peer(
    server_port: int, tls: ssl.SSLContext | None = None, *, local_host: str = "127.0.0.1"
) -> AsyncIterator[Peer]:
    """A TCP/TLS connection from `local_host` (another loopback address, 127.0.0.2, is
    another peer address to the server: a device behind another NAT)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server_port, ssl=tls, local_addr=(local_host, 0)
    )
    peer = Peer()
    peer.port = writer.get_extra_info("sockname")[1]
    peer.send = writer.write
    peer._close = writer.close
    framer = StreamFramer()

    async def read() -> None:
        try:
            while data := await reader.read(65536):
                for message in framer.feed(data):
                    peer._got(message)
        except ConnectionError:
            pass  # closed by the server with a reset: closed all the same
        finally:
            peer.closed.set()

    task = asyncio.create_task(read())
    try:
        yield peer
    finally:
        writer.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def ok_to(req: Request) -> bytes:
    """The 200 OK a device sends for alarmhub's answer MESSAGE."""
    resp = Response(200, "OK")
    for via in req.headers.getlist("Via"):
        resp.headers.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        resp.headers.add(name, req.headers[name])
    resp.headers.add("Content-Length", "0")
    return bytes(resp)
