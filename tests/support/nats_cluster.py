"""A three-node nats-server cluster with JetStream and MQTT on loopback, owned by one test.

NATS 2.9 keeps MQTT sessions (subscriptions, unacknowledged QoS 1 messages) in
JetStream streams; with `stream_replicas: 3` they are replicated over the three
nodes, so a client can lose its node and resume the same session on another
(docs/scaling.md, "The broker side"). The cluster is usable only once JetStream
has elected a meta leader: until then an MQTT CONNECT cannot create or load the
session. `start()` waits for that on every node through the monitoring port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from alarmhub.dev.mosquitto import free_port, wait_for_port

NATS_SERVER = os.environ.get("ALARMHUB_TEST_NATS_SERVER", "/usr/sbin/nats-server")

CONFIG = """\
server_name: {name}
listen: 127.0.0.1:{client_port}
http: 127.0.0.1:{http_port}
jetstream {{
  store_dir: "{store_dir}"
  max_memory_store: 256MB
  max_file_store: {max_file_store}
}}
cluster {{
  name: alarmhub-test
  listen: 127.0.0.1:{cluster_port}
  routes: [{routes}]
}}
mqtt {{
  listen: 127.0.0.1:{mqtt_port}
  stream_replicas: 3
{mqtt_extra}}}
"""


def nats_server_binary() -> str | None:
    return NATS_SERVER if os.access(NATS_SERVER, os.X_OK) else shutil.which("nats-server")


@dataclass
class NatsNode:
    name: str
    root: Path
    client_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's MQTT listener, as ALARMHUB_MQTT_URL spells it."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, binary: str, routes: list[str], mqtt_extra: str, max_file_store: str) -> None:
        conf = self.root / f"{self.name}.conf"
        conf.write_text(
            CONFIG.format(
                name=self.name,
                client_port=self.client_port,
                http_port=self.http_port,
                store_dir=self.root / f"{self.name}-js",
                cluster_port=self.cluster_port,
                routes=", ".join(routes),
                mqtt_port=self.mqtt_port,
                mqtt_extra=mqtt_extra,
                max_file_store=max_file_store,
            )
        )
        with (self.root / f"{self.name}.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                if sig == signal.SIGKILL:
                    raise

    def log_text(self) -> str:
        log = self.root / f"{self.name}.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def monitor(self, path: str) -> dict[str, Any] | None:
        """A monitoring endpoint's JSON, or None while the node does not answer."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def leads(self) -> list[str]:
        """The JetStream streams and consumers whose replica leader is this node.

        Losing the leader of `$MQTT_sess` or `$MQTT_msgs` (or of the session's own
        consumer) stalls the MQTT layer until a new leader is elected; losing a node
        that leads none of them costs only the reconnect (docs/scaling.md).
        """
        jsz = self.monitor("/jsz?accounts=true&streams=true&consumers=true")
        led: list[str] = []
        for account in (jsz or {}).get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if (stream.get("cluster") or {}).get("leader") == self.name:
                    led.append(stream["name"])
                led.extend(
                    f"{stream['name']}>consumer"
                    for consumer in stream.get("consumer_detail") or []
                    if (consumer.get("cluster") or {}).get("leader") == self.name
                )
        return led

    def meta_leader(self) -> str | None:
        jsz = self.monitor("/jsz")
        if not jsz:
            return None
        leader = (jsz.get("meta_cluster") or {}).get("leader")
        return str(leader) if leader else None


@dataclass
class NatsCluster:
    """Three nodes; `mqtt_extra` adds lines to every node's `mqtt { }` block.

    `max_file_store` is each node's JetStream disk limit: the only bound on what
    the MQTT streams queue for an offline session (their own limits are unset).
    """

    root: Path
    mqtt_extra: str = ""
    max_file_store: str = "2GB"
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.nodes:
            self.nodes = [NatsNode(f"n{i + 1}", self.root) for i in range(self.size)]

    @property
    def url(self) -> str:
        """Every node's MQTT listener: a comma-separated ALARMHUB_MQTT_URL."""
        return ",".join(n.url for n in self.nodes)

    def node_on(self, mqtt_port: int) -> NatsNode:
        return next(n for n in self.nodes if n.mqtt_port == mqtt_port)

    def start(self, timeout: float = 60.0, attempts: int = 3) -> Self:
        """Start every node and wait until the cluster is ready.

        Twelve free ports are picked before any node binds one, so another process
        (another test, a client's ephemeral port) can take one in between: a node
        that exits saying so is retried on fresh ports, the whole cluster with it.
        """
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed: `apt-get install nats-server`")
        for attempt in range(attempts):
            for node in self.nodes:
                self.start_node(node, binary)
            try:
                self.wait_ready(timeout)
            except RuntimeError:
                taken = any(
                    "address already in use" in n.log_text() for n in self.nodes if not n.running
                )
                self.stop()
                if not taken or attempt == attempts - 1:
                    raise
                self.nodes = [NatsNode(n.name, self.root) for n in self.nodes]
                for stale in self.root.glob("*-js"):
                    shutil.rmtree(stale, ignore_errors=True)
            else:
                break
        return self

    def start_node(self, node: NatsNode, binary: str | None = None) -> None:
        routes = [f"nats-route://127.0.0.1:{n.cluster_port}" for n in self.nodes if n is not node]
        binary = binary or nats_server_binary() or NATS_SERVER
        node.start(binary, routes, self.mqtt_extra, self.max_file_store)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every running node answers, sees the same JetStream meta leader, takes MQTT."""
        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.running]
        while time.monotonic() < deadline:
            leaders = {n.meta_leader() for n in running}
            if len(leaders) == 1 and None not in leaders:
                break
            dead = [n for n in self.nodes if n.proc is not None and not n.running]
            if dead:
                tails = {n.name: n.log_text().splitlines()[-3:] for n in dead}
                raise RuntimeError(f"nats-server exited: {tails}")
            time.sleep(0.1)
        else:
            raise TimeoutError(f"no JetStream meta leader after {timeout} s; see {self.root}")
        for node in running:
            wait_for_port(node.mqtt_port, max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        for node in self.nodes:
            node.kill(signal.SIGTERM)
        for node in self.nodes:  # anything that ignored SIGTERM
            node.kill(signal.SIGKILL)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
