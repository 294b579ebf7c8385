"""The imperative shell's long-running services, one module each.

gate (the write lock + retry-until-committed every writer shares), ingest (the
per-batch sandwich), actions (people's actions), registry (registration, the
registry poll, rules reload), escalator, notifier, supervisor, suppression
(release of what a silence or an inhibiting alarm hid), pruner (retention),
backlog, fanout (live listeners), state (what the daemon holds in memory).

Each reads, calls a pure function in `alarmhub.core`, writes through the store,
and announces what happened. Each is constructed with the few things it uses
(a narrow store port from `alarmhub.store.ports`, the gate, the clock,
callbacks), never the hub, and none imports `alarmhub.app`, which wires them
together, nor `alarmhub.store.sqlite` (an import-linter contract). The store
ports are defined there once; the Protocols here are the services' other
collaborators (the broker, the batch source, supervision's callbacks).
"""
