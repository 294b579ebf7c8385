"""A minimal SCAIP receiver for testing the simulated device on its own.

Written apart from the device's code (it shares only `sipmessage`'s parser): it challenges
with digest, checks the response itself with hashlib and the known password, answers
200 OK, and then answers each `<mrq>` per a script of `snu` values, as a new MESSAGE to
the request's Contact (or inline in the 200 OK body). Over UDP it answers from its socket;
over TCP on the request's connection, and it opens a new connection to the contact for
its answer MESSAGEs, as a receiver does.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from sipmessage import AuthCredentials, Message, Request, Response

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass
class Accepted:
    """A MESSAGE that passed digest: who, with which algorithm, what it said."""

    user: str
    algorithm: str
    call_id: str
    branch: str
    ref: str
    body: bytes


@dataclass
class ScaipPeer:
    passwords: dict[str, str]
    script: list[int] = field(default_factory=lambda: [0])  # snu per attempt of one ref
    algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    inline: bool = False  # answer in the 200 OK body instead of a new MESSAGE
    stale_once: bool = False  # the first credentials get `stale=true` and a new nonce
    drop_first_datagram: bool = False  # ignore each transaction's first copy (Timer E)
    silent: bool = False  # 200 OK but never an answer
    answer_twice: bool = False  # send each answer MESSAGE twice (a receiver's retransmit)
    hbi: int | None = None  # put into answers to requests with hbo
    realm: str = "alarmhub-test"
    accepted: list[Accepted] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # 401/403 statuses sent after credentials
    seen_branches: Counter[str] = field(default_factory=Counter)
    answers_acked: int = 0
    _nonces: set[str] = field(default_factory=set)
    _staled: bool = False
    _udp: asyncio.DatagramTransport | None = None
    _server: asyncio.Server | None = None
    _responses: dict[str, bytes] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, kind: str) -> int:
        loop = asyncio.get_running_loop()
        if kind == "udp":
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=("127.0.0.1", 0)
            )
            return int(self._udp.get_extra_info("sockname")[1])
        self._server = await asyncio.start_server(self._tcp_conn, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()

    # --- handling -----------------------------------------------------------------

    def handle(self, data: bytes, reply, kind: str) -> None:
        msg = Message.parse(data)
        if isinstance(msg, Response):
            self.answers_acked += msg.code == 200
            return
        assert isinstance(msg, Request)
        branch = msg.via[0].parameters["branch"] or ""
        self.seen_branches[branch] += 1
        if self.drop_first_datagram and kind == "udp" and self.seen_branches[branch] == 1:
            return
        if branch in self._responses:  # a retransmission: the transaction's response again
            reply(self._responses[branch])
            return
        status, extra, algorithm = self._authenticate(msg)
        if status != 200:
            reply(self._remember(branch, self._response(msg, status, extra)))
            return
        ref = _element(msg.body, "ref")
        user = msg.authorization.parameters["username"]  # type: ignore[union-attr,index]
        self.accepted.append(Accepted(user, algorithm, msg.call_id, branch, ref, msg.body))
        snu = self.script[min(sum(a.ref == ref for a in self.accepted) - 1, len(self.script) - 1)]
        mrs = self._mrs(ref, snu, msg.body)
        if self.inline:
            reply(self._remember(branch, self._response(msg, 200, [], mrs)))
            return
        reply(self._remember(branch, self._response(msg, 200, [])))
        if not self.silent:
            contact = msg.contact[0].uri
            task = asyncio.get_running_loop().create_task(self._answer(kind, contact, mrs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _remember(self, branch: str, response: bytes) -> bytes:
        self._responses[branch] = response
        return response

    def _authenticate(self, msg: Request) -> tuple[int, list[str], str]:
        creds = msg.headers.get("Authorization")
        if creds is None:
            return 401, self._challenges(stale=False), ""
        auth = AuthCredentials.parse(creds)
        p: Mapping[str, str] = auth.parameters or {}
        algorithm = p.get("algorithm", "MD5")
        password = self.passwords.get(p.get("username", ""))
        if password is None or algorithm not in self.algorithms or p["nonce"] not in self._nonces:
            self.refused.append(403)
            return 403, [], algorithm
        h = HASHES[algorithm]

        def hx(s: str) -> str:
            return h(s.encode()).hexdigest()

        ha1 = hx(f"{p['username']}:{p['realm']}:{password}")
        ha2 = hx(f"MESSAGE:{p['uri']}")
        expected = hx(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        if p.get("qop") != "auth" or p["response"] != expected:
            self.refused.append(403)
            return 403, [], algorithm
        if self.stale_once and not self._staled:
            self._staled = True
            self._nonces.discard(p["nonce"])
            return 401, self._challenges(stale=True), algorithm
        return 200, [], algorithm

    def _challenges(self, stale: bool) -> list[str]:
        nonce = secrets.token_hex(12)
        self._nonces.add(nonce)
        tail = ", stale=true" if stale else ""
        return [
            f'WWW-Authenticate: Digest realm="{self.realm}", nonce="{nonce}", '
            f'qop="auth", algorithm={a}{tail}'
            for a in self.algorithms
        ]

    def _mrs(self, ref: str, snu: int, request_body: bytes) -> bytes:
        extra = ""
        if self.hbi is not None and _element(request_body, "hbo") == "001":
            extra = f"<hbi>{self.hbi}</hbi>"
        if snu == 0:
            extra += "<mre>1</mre><cre>61</cre><tnu>+4722000000</tnu>"
        return f"<mrs><ref>{ref}</ref><snu>{snu}</snu>{extra}</mrs>".encode()

    def _response(self, req: Request, status: int, extra: list[str], body: bytes = b"") -> bytes:
        phrase = {200: "OK", 401: "Unauthorized", 403: "Forbidden"}[status]
        lines = [f"SIP/2.0 {status} {phrase}"]
        lines += [f"Via: {v}" for v in req.headers.getlist("Via")]
        lines += [
            f"From: {req.headers['From']}",
            f"To: {req.headers['To']};tag=peer",
            f"Call-ID: {req.call_id}",
            f"CSeq: {req.headers['CSeq']}",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/scaip+xml")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _answer(self, kind: str, contact, mrs: bytes) -> None:
        call_id = secrets.token_hex(8)
        head = (
            f"MESSAGE {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/{kind.upper()} 127.0.0.1:1;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:receiver@127.0.0.1>;tag=r{call_id[:6]}\r\n"
            f"To: <{contact}>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/scaip+xml\r\nContent-Length: {len(mrs)}\r\n\r\n"
        )
        data = head.encode() + mrs
        if kind == "udp":
            assert self._udp is not None
            for _ in range(2 if self.answer_twice else 1):  # a retransmission: same Call-ID
                self._udp.sendto(data, (contact.host, contact.port))
            return
        reader, writer = await asyncio.open_connection(contact.host, contact.port)
        writer.write(data)
        await writer.drain()
        got = await reader.readuntil(b"\r\n\r\n")
        self.answers_acked += got.startswith(b"SIP/2.0 200")
        writer.close()

    async def _tcp_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: *(\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
                body = await reader.readexactly(length)
                self.handle(head + body, writer.write, "tcp")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, peer: ScaipPeer) -> None:
        self.peer = peer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        transport = self.transport
        assert transport is not None
        self.peer.handle(data, lambda out: transport.sendto(out, addr), "udp")


def _element(body: bytes, name: str) -> str:
    m = re.search(rf"<{name}>([^<]*)</{name}>".encode(), body)
    return m[1].decode() if m else ""
