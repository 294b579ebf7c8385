"""Count what a loopback capture carried, per TCP connection: segments and bytes of payload.

    tcpdump -i lo -s 160 -w /tmp/lat.pcap tcp &   # then a latency run of the bench
    .venv/bin/python -m bench.pcap_flows /tmp/lat.pcap

How the broker's messages reached alarmhub is a question of segments, not of time:
with Nagle's algorithm on in the broker, 20,000 messages reached alarmhub in 2,382
segments and the echo client's in one segment each (docs/performance.md, "eleventh
part"). MQTT client ids are read from the CONNECT packets, so each connection is named.
Reads classic pcap files of IPv4 over Ethernet (what tcpdump writes on `lo`).
"""

from __future__ import annotations

import struct
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

Packet = tuple[float, int, int, int, bytes]  # time, source port, destination port, length, payload


def packets(path: Path) -> Iterator[Packet]:
    with path.open("rb") as f:
        magic = struct.unpack("<I", f.read(24)[:4])[0]
        scale = 1e9 if magic == 0xA1B23C4D else 1e6  # nanosecond or microsecond stamps
        while len(header := f.read(16)) == 16:
            sec, frac, incl, _orig = struct.unpack("<IIII", header)
            ip = f.read(incl)[14:]
            if not ip or ip[0] >> 4 != 4 or ip[9] != 6:  # IPv4 carrying TCP only
                continue
            ihl = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:]
            sport, dport = struct.unpack(">HH", tcp[:4])
            offset = (tcp[12] >> 4) * 4
            yield sec + frac / scale, sport, dport, total - ihl - offset, tcp[offset:]


def client_id(payload: bytes) -> str | None:
    """The client id of an MQTT 3.1.1 CONNECT packet, if the payload starts with one."""
    if payload[:1] != b"\x10" or b"MQTT" not in payload[:20]:
        return None
    at = payload.index(b"MQTT") + 4 + 1 + 1 + 2  # protocol level, flags, keep-alive
    size = struct.unpack(">H", payload[at : at + 2])[0]
    return payload[at + 2 : at + 2 + size].decode(errors="replace")


def main(path: Path, top: int = 20) -> None:
    flows: dict[tuple[int, int], list[int]] = defaultdict(list)
    names: dict[tuple[int, int], str] = {}
    for _t, sport, dport, size, payload in packets(path):
        if size <= 0:
            continue
        flows[sport, dport].append(size)
        if (name := client_id(payload)) is not None:
            names[sport, dport] = names[dport, sport] = name
    print("source port -> destination port: segments, payload bytes, MQTT client")
    for (sport, dport), sizes in sorted(flows.items(), key=lambda kv: -len(kv[1]))[:top]:
        who = names.get((sport, dport), "")
        print(f"{sport:>5} -> {dport:<5} {len(sizes):>8,} {sum(sizes):>12,}  {who}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
