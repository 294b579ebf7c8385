"""`alarmhub cluster status`: the instances sharing the database, and who owns what.

Read from the shared PostgreSQL database (the `instances` and `leases` tables),
with every age and expiry measured on the database's clock, the one that wrote
them: this command may run on a machine whose clock is off. An instance whose
last heartbeat is older than the failover time is `stale` (dead, hung or cut
off: its leases are, or are about to be, someone else's). On SQLite there is one
instance and it owns everything; the command says so.
"""

from __future__ import annotations

import argparse
from typing import Any

from alarmhub.cli.db import cluster_view
from alarmhub.cli.output import print_json, table
from alarmhub.core.cluster import instance_state
from alarmhub.settings import Settings
from alarmhub.store.cluster import ClusterView

INSTANCE_COLUMNS = [
    "id",
    "state",
    "host",
    "pid",
    "version",
    "started_at",
    "heartbeat_at",
    "heartbeat_age_s",
    "owns",
]
LEASE_COLUMNS = ["name", "holder", "epoch", "acquired_at", "expires_in_s"]
SINGLE = "sqlite: a single instance owns everything (several instances need PostgreSQL)"


def add_parser(sub: Any) -> None:
    cluster = sub.add_parser("cluster", help="instances sharing the database").add_subparsers(
        title="cluster"
    )
    st = cluster.add_parser("status", help="instances, heartbeats, leases")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_cluster_status)


def status(view: ClusterView, failover_s: float) -> dict[str, Any]:
    """The view as plain rows; ages and expiries in seconds on the database's clock."""
    instances = [
        {
            "id": i.id,
            "state": instance_state(i.heartbeat_at, i.stopped_at, view.now, failover_s).value,
            "host": i.host,
            "pid": i.pid,
            "version": i.version,
            "started_at": i.started_at.isoformat(),
            "heartbeat_at": i.heartbeat_at.isoformat(),
            "heartbeat_age_s": round((view.now - i.heartbeat_at).total_seconds(), 1),
            "owns": list(i.owns),
        }
        for i in view.instances
    ]
    leases = [
        {
            "name": lease.name,
            "holder": lease.holder,
            "epoch": lease.epoch,
            "acquired_at": lease.acquired_at.isoformat(),
            # Negative: expired, free for the next instance that tries.
            "expires_in_s": round((lease.expires_at - view.now).total_seconds(), 1),
        }
        for lease in view.leases
    ]
    return {
        "database_now": view.now.isoformat(),
        "failover_s": failover_s,
        "instances": instances,
        "leases": leases,
    }


def cmd_cluster_status(settings: Settings, args: argparse.Namespace) -> int:
    view = cluster_view(settings)
    if view is None:
        if args.json:
            print_json({"single_instance": True, "instances": [], "leases": []})
        else:
            print(SINGLE)
        return 0
    out = status(view, settings.failover_s)
    if args.json:
        print_json(out)
        return 0
    print(f"instances (stale: no heartbeat for {settings.failover_s:g} s)")
    table(INSTANCE_COLUMNS, [{**r, "owns": ",".join(r["owns"]) or "-"} for r in out["instances"]])
    print()
    print("leases")
    table(LEASE_COLUMNS, out["leases"])
    return 0
