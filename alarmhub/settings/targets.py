"""Where alarmhub connects and listens: URLs and addresses read from the settings.

Plain values and parsers, kept apart from the settings model so each stays short;
`alarmhub.settings` re-exports them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from alarmhub.redact import redact_url

# What an instance id may be: safe in a log line, a metric label, a file name and SQL text.
INSTANCE_ID = r"[A-Za-z0-9._-]{1,64}"


def default_instance_id() -> str:
    """The host name and the process id, e.g. `host-a-12345`: unique while the process lives."""
    return instance_id_of(socket.gethostname(), os.getpid())


def instance_id_of(host: str, pid: int) -> str:
    """`host-pid` as a valid instance id: other characters become `-`, the host is cut to fit."""
    tail = f"-{pid}"
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in host)
    return f"{safe[: 64 - len(tail)] or 'host'}{tail}"


class SettingsError(Exception):
    """One clear line for a person: which setting, and what to do about it."""


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = field(repr=False)
    shown: str  # the URL with its password redacted: what logs, errors and /readyz show


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    kind: Literal["sqlite", "postgresql"]
    path: Path | None  # sqlite
    dsn: str | None  # postgresql


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int


def parse_mqtt_url(url: str) -> MqttTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {redact_url(url)!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {redact_url(url)!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {redact_url(url)!r}") from None  # its text has the URL
    tls = parts.scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        shown=redact_url(url),
    )


def parse_mqtt_urls(value: str) -> tuple[MqttTarget, ...]:
    """A comma-separated list of brokers, in the order alarmhub tries them.

    Several URLs name the nodes of one clustered broker that keeps sessions across
    its nodes (docs/scaling.md, "The broker side"); one URL is the list of one.
    All share a scheme: paho's TLS context is set once per client, so one client
    cannot speak TLS to one node and plain MQTT to the next.
    """
    targets = tuple(parse_mqtt_url(part.strip()) for part in value.split(","))
    if len({t.tls for t in targets}) > 1:
        shown = ",".join(t.shown for t in targets)
        raise ValueError(f"mix of mqtt:// and mqtts:// in {shown!r}: use one scheme for all")
    return targets


def is_loopback(host: str) -> bool:
    """True for a host name or address that never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def writable_dsn(url: str) -> str:
    """A URL naming several PostgreSQL hosts, made to connect only to the one taking writes.

    `host1:port1,host2:port2` lists a primary and its standbys (docs/scaling.md,
    "PostgreSQL with high availability"); asyncpg's default `target_session_attrs=any`
    would take the first host that answers, a read-only standby included, and every
    write there would fail. alarmhub always writes, so it asks for `read-write`
    unless the URL says otherwise. A single host is left as given.
    """
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    if "," not in hosts or "target_session_attrs=" in parts.query:
        return url
    query = f"{parts.query}&" if parts.query else ""
    return parts._replace(query=query + "target_session_attrs=read-write").geturl()


def parse_database_url(url: str) -> DatabaseTarget:
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        if not rest or rest == "/":
            raise ValueError("sqlite URL has no file name: use sqlite:///alarmhub.db")
        # sqlite:///relative.db is relative; sqlite:////abs/path.db is absolute.
        return DatabaseTarget("sqlite", Path(rest), None)
    if url.startswith(("postgresql://", "postgres://")):
        return DatabaseTarget("postgresql", None, writable_dsn(url))
    raise ValueError(
        "expected sqlite:///file.db, sqlite:////absolute/file.db or postgresql://…, "
        f"got {redact_url(url)!r}"
    )


def parse_listen(value: str) -> Listen:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:8080, got {value!r}")
    return Listen(host.strip("[]"), int(port_text))
