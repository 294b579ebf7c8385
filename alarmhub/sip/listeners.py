"""The SIP server's listening sockets: each address bound on its own, and retried until it is.

A port alarmhub could not bind (another process holds it, a port below 1024 without
the capability, a host that is no address of this machine) raised out of the server's
`run`, through the owner's term, and stopped the whole daemon: MQTT intake of every
other alarm with it, for one listener's port. Now only that address waits:

- the failure is logged at once at error level (`sip.bind_failed`: the address, its
  transport, host and port, the OS's error, a named `reason` and a `hint` saying what
  to do), then once a minute per address while it lasts, with the tries so far;
- `alarmhub_sip_listening{transport}` stays 0 for its transport: 1 only while every
  address of the transport listens, so AlarmhubScaipNotListening fires;
- it is tried again after 1 s, 2 s, 4 s, ... at most 30 s apart (core/sipcodes.py
  `Rebind`), in a task of the server's TaskGroup, and listens as soon as it binds
  (`sip.listening` with that address and the tries it took);
- the addresses that did bind listen meanwhile; `all_bound` is set once every one does.

Closing (the server's stop) cancels the retries before it closes the sockets: a stop
never waits for the next try, and nothing is bound after it.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Sequence

import structlog
from prometheus_client import Gauge

from alarmhub.core.sipcodes import Rebind, SipListen, bind_failure, bind_hint
from alarmhub.observability.logs import OncePer

log = structlog.get_logger("alarmhub.sip")

Close = Callable[[], Awaitable[None]]
# Binds one address and starts serving it: the port bound (the one asked for, or the
# kernel's choice for port 0) and how to close it; OSError when it cannot bind.
Open = Callable[[SipListen], Awaitable[tuple[int, Close]]]


class Listeners:
    """The addresses of ALARMHUB_SCAIP_LISTEN, bound by `open`, closed by `close`."""

    def __init__(
        self, listen: Sequence[SipListen], open_one: Open, gauge: Gauge, rebind: Rebind
    ) -> None:
        self._listen = tuple(listen)
        self._open = open_one
        self._gauge = gauge
        self._rebind = rebind
        self.bound: list[SipListen] = []  # as bound: port 0 replaced by the kernel's choice
        self.all_bound = asyncio.Event()
        self._up: set[SipListen] = set()  # the configured addresses that listen
        self._closers: list[Close] = []
        self._retries: list[asyncio.Task[None]] = []
        self._said = OncePer(60.0)
        self._set_gauges(0)  # 0 from the first scrape: a standby does not listen

    async def open(self, tasks: asyncio.TaskGroup) -> None:
        """Bind every address now; each that fails is retried in a task of `tasks`."""
        self.bound = []
        self.all_bound.clear()
        self._said = OncePer(60.0)  # a new term's first failure is said at once
        for spec in self._listen:
            if not await self._try(spec, 1):
                retry = tasks.create_task(self._retry(spec), name=f"sip-rebind {spec}")
                self._retries.append(retry)
        if self.bound:
            log.info("sip.listening", addresses=[str(x) for x in self.bound])
        self._check_all()

    def unbound(self) -> list[str]:
        """The configured addresses that do not listen now (all of them when closed)."""
        return [str(x) for x in self._listen if x not in self._up]

    async def close(self) -> None:
        """Stop retrying, then close what listens; the gauges go to 0 and `all_bound`
        is cleared: a new term's owner must not be judged on the last term's sockets."""
        self.all_bound.clear()
        retries, self._retries = self._retries, []
        for task in retries:
            task.cancel()
        if retries:
            await asyncio.wait(retries)
        self._set_gauges(0)
        self._up.clear()
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await close()

    async def _retry(self, spec: SipListen) -> None:
        tries = 1
        while True:
            await asyncio.sleep(self._rebind.delay(tries))
            tries += 1
            if await self._try(spec, tries):
                log.info("sip.listening", addresses=[str(self.bound[-1])], tries=tries)
                self._check_all()
                return

    async def _try(self, spec: SipListen, tries: int) -> bool:
        try:
            port, close = await self._open(spec)
        except OSError as exc:
            self._failed(spec, exc, tries)
            return False
        self._closers.append(close)
        self.bound.append(SipListen(spec.transport, spec.host, port))
        self._up.add(spec)
        if all(x in self._up for x in self._listen if x.transport == spec.transport):
            self._gauge.labels(spec.transport).set(1)
        return True

    def _failed(self, spec: SipListen, exc: OSError, tries: int) -> None:
        say, suppressed = self._said.should_log(str(spec))
        if not say:
            return
        reason = bind_failure(exc.errno)
        log.error(
            "sip.bind_failed",
            address=str(spec),
            transport=spec.transport,
            host=spec.host,
            port=spec.port,
            reason=reason.value,
            error=exc.strerror or str(exc),
            errno=errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else None,
            hint=bind_hint(reason),
            tries=tries,
            retry_in_s=self._rebind.delay(tries),
            since_last=suppressed,
        )

    def _check_all(self) -> None:
        if len(self._up) == len(self._listen):
            self.all_bound.set()

    def _set_gauges(self, value: int) -> None:
        """`alarmhub_sip_listening`: what AlarmhubScaipNotListening reads across instances."""
        for spec in self._listen:
            self._gauge.labels(spec.transport).set(value)
