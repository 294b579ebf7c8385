"""The imperative shell's long-running services: escalation, notification,
supervision, suppression release, backlog, fan-out to live listeners, pruning.

Each reads, calls a pure function in `alarmhub.core`, writes through the store,
and announces what happened; `alarmhub.app` wires them together.
"""
