"""The SIP layer's plain values: listen addresses, digest algorithms, metric vocabularies.

Parsed and checked here, purely, so that settings.py can refuse a bad value with
one clear line; the enums let `observability/metrics.py` pre-create every series
at zero and `alarmhub/sip/` count only what is listed here.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from alarmhub.core.digest import ALGORITHMS

TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True, slots=True)
class SipListen:
    """One address the SCAIP receiver listens on: `udp://`, `tcp://` or `tls://host:port`."""

    transport: Literal["udp", "tcp", "tls"]
    host: str
    port: int  # 0: any free port (tests); the server reports the one it bound

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def parse_sip_listen(value: str) -> tuple[SipListen, ...]:
    """`udp://0.0.0.0:5060,tcp://0.0.0.0:5060,tls://0.0.0.0:5061`; default ports per RFC 3261."""
    found: list[SipListen] = []
    for part in (p.strip() for p in value.split(",")):
        parts = urlsplit(part)
        if parts.scheme not in TRANSPORTS or parts.path or parts.query or parts.username:
            raise ValueError(
                f"expected udp://host:port, tcp://host:port or tls://host:port, got {part!r}"
            )
        if not parts.hostname:
            raise ValueError(f"no host in {part!r} (0.0.0.0 listens on every address)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port in {part!r}") from None
        transport: Literal["udp", "tcp", "tls"] = parts.scheme  # type: ignore[assignment]
        found.append(
            SipListen(
                transport,
                parts.hostname,
                port if port is not None else DEFAULT_PORTS[transport],
            )
        )
    same = [str(x) for x in found if found.count(x) > 1]
    if same:
        raise ValueError(f"{same[0]} is listed twice")
    return tuple(found)


def parse_digest_algorithms(value: str) -> tuple[str, ...]:
    """`SHA-256,MD5`: the digest algorithms offered, in the order of the challenges."""
    names = tuple(x.strip().upper() for x in value.split(",") if x.strip())
    unknown = [n for n in names if n not in ALGORITHMS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"a list of {' and '.join(ALGORITHMS)}, each once, e.g. SHA-256,MD5")
    return names


# The final responses alarmhub's SIP server sends; any other status a handler picks is
# counted as "other" (alarmhub_sip_responses_total{status}).
RESPONSE_STATUSES = (200, 400, 401, 403, 404, 405, 413, 415, 420, 481, 500, 503, 513)
OTHER_STATUS = "other"


def status_label(status: int) -> str:
    return str(status) if status in RESPONSE_STATUSES else OTHER_STATUS


class SipDrop(StrEnum):
    """Why bytes that arrived were dropped without any SIP answer."""

    UNPARSEABLE = "unparseable"  # not a SIP message at all: nothing to answer to
    RESPONSE = "response"  # a response no outgoing transaction waits for
    OVERSIZED = "oversized"  # a TCP/TLS message or header block over the limit: connection closed
    CONNECTIONS = "connections"  # a TCP/TLS connection over the limit: closed at once
    IDLE = "idle"  # a TCP/TLS connection closed after the idle timeout
    SLOW = "slow"  # a TCP/TLS connection that did not complete a message within its deadline
    # A TCP/TLS connection that had not authenticated a request (sip/slots.py):
    EVICTED = "evicted"  # closed to give its slot to a newcomer, every slot being taken
    UNAUTHENTICATED = "unauthenticated"  # closed: none within auth_deadline_s of its opening


class AnswerOutcome(StrEnum):
    """What became of one answer MESSAGE sent to a device's contact (Reply.inline False)."""

    DELIVERED = "delivered"  # a 2xx final response
    REFUSED = "refused"  # a final response of 300 or more
    TIMEOUT = "timeout"  # no final response within Timer F (32 s)
    UNREACHABLE = "unreachable"  # the contact could not be reached (connect, send)
    NO_CONTACT = "no_contact"  # neither Contact, From nor a registration gives an address


@dataclass(frozen=True, slots=True)
class Rebind:
    """How a listener that could not bind its address tries again (sip/listeners.py).

    Doubling from `first_s` to at most `most_s`, no jitter: one process retries one
    address, there is no fleet to spread out. The defaults take a port the previous
    process lets go a second or two late at once, and cost one failed bind every
    30 s for as long as the cause lasts.
    """

    first_s: float = 1.0
    most_s: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failed try in a row (1, 2, ...)."""
        return min(self.most_s, self.first_s * 2.0 ** min(max(failures, 1) - 1, 30))


class BindFailure(StrEnum):
    """Why a SIP listener could not bind its address, as the log names it."""

    ADDRESS_IN_USE = "address_in_use"
    PERMISSION_DENIED = "permission_denied"
    ADDRESS_NOT_AVAILABLE = "address_not_available"  # the host is no address of this machine
    OTHER = "other"


_BIND_FAILURES = {
    errno.EADDRINUSE: BindFailure.ADDRESS_IN_USE,
    errno.EACCES: BindFailure.PERMISSION_DENIED,
    errno.EPERM: BindFailure.PERMISSION_DENIED,
    errno.EADDRNOTAVAIL: BindFailure.ADDRESS_NOT_AVAILABLE,
}

_BIND_HINTS = {
    BindFailure.ADDRESS_IN_USE: (
        "another process holds this port (`ss -lunp` for udp, `ss -ltnp` for tcp/tls, "
        "filtered on the port): stop it, or give alarmhub another port in "
        "ALARMHUB_SCAIP_LISTEN and the devices with it"
    ),
    BindFailure.PERMISSION_DENIED: (
        "a port below 1024 needs CAP_NET_BIND_SERVICE (the systemd unit grants none: "
        "CapabilityBoundingSet= and AmbientCapabilities=), or use a port of 1024 or "
        "more in ALARMHUB_SCAIP_LISTEN"
    ),
    BindFailure.ADDRESS_NOT_AVAILABLE: (
        "the host is not an address of this machine: bring the interface or floating "
        "address up, or fix ALARMHUB_SCAIP_LISTEN (0.0.0.0 listens on every address)"
    ),
    BindFailure.OTHER: "see the error; check ALARMHUB_SCAIP_LISTEN and the host's network",
}


def bind_failure(code: int | None) -> BindFailure:
    """The named reason for an OSError's errno from bind()."""
    return _BIND_FAILURES.get(code, BindFailure.OTHER) if code is not None else BindFailure.OTHER


def bind_hint(reason: BindFailure) -> str:
    """What the operator can do about it; alarmhub retries by itself meanwhile."""
    return _BIND_HINTS[reason] + "; alarmhub retries by itself and listens once it can"
