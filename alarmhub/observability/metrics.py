"""Every Prometheus metric alarmhub exports, in one place, on an injected registry.

Label values come from enums and the registry of municipalities, never from a
device id, so the number of series is bounded. Known label combinations are
created at zero on start so that `rate()` and alerts see a series from the first
scrape, not only after the first failure. The catalogue is documented in
docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from alarmhub.core.digest import FAILURES as DIGEST_FAILURES
from alarmhub.core.journal.delivery import RefusalClass
from alarmhub.core.model import DeviceKind, Priority, RejectReason, Verdict
from alarmhub.core.retention import RetainedTable
from alarmhub.core.scaip import MessageType, Snu
from alarmhub.core.sipcodes import OTHER_STATUS, RESPONSE_STATUSES, AnswerOutcome, SipDrop

RESPONSE_BUCKETS = (5, 10, 15, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600)
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
UNKNOWN_KIND = "unknown"
# The leases an instance may hold (daemon/leadership.py INTAKE_LEASE), pre-created at 0.
LEASES = ("intake",)
# Why a holder handed its lease over itself (daemon/leadership.py STEP_DOWN_REASONS).
STEP_DOWN_REASONS = ("broker", "stalled", "sip")
# Why the store refused a decision, decided again on fresh rows (daemon/gate.py deciding):
# an alarm changed since it was read (StaleAlarmError), a device moved (DeviceMovedError).
REFUSAL_REASONS = ("alarm_changed", "device_moved")
# `ahead`: the device clock ran fast past max_future_skew; `behind`: slow past max_past_skew.
SKEW_DIRECTIONS = ("ahead", "behind")
# SCAIP: a request whose type cannot be read; the answers that are SIP refusals instead
# of an `<mrs>` (its `snu`), by their reason phrase: a forged `cid` (403), a Content-Type
# that is not SCAIP's (415), and 503 with Retry-After while either is not kept yet.
SCAIP_UNREAD = "unknown"
SCAIP_FORBIDDEN = "forbidden"
SCAIP_SIP_ANSWERS = {
    403: SCAIP_FORBIDDEN,
    415: "unsupported_media_type",
    503: "service_unavailable",
}
SCAIP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


# A journal send: the journal took the request (202), or it must be tried again.
JOURNAL_SEND_RESULTS = ("accepted", "retry")

# `*_created` series double the exposition and no alert or dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The catalogue, built one group per concern so each reads on one screen.

    The groups run in the order `/metrics` lists them (registration order), so
    a new metric belongs inside its group, not at the end of `__init__`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._ingest(self.registry)
        self._scaip(self.registry)
        self._alarms(self.registry)
        self._escalation(self.registry)
        self._broker(self.registry)
        self._store(self.registry)
        self._devices(self.registry)
        self._http(self.registry)
        self._sip(self.registry)
        self._journal(self.registry)
        self._zero()

    def _journal(self, r: CollectorRegistry) -> None:
        """Journal export (issue 17): sends, the EPJ's answers, and what still waits."""
        self.journal_sends = Counter(
            "alarmhub_journal_sends",
            "Journal requests (a Bundle posted), by result: accepted (202) or retry",
            ["result"],
            registry=r,
        )
        self.journal_confirmations = Counter(
            "alarmhub_journal_confirmations",
            "Journal notes the patient record confirmed",
            registry=r,
        )
        self.journal_refusals = Counter(
            "alarmhub_journal_refusals",
            "Journal notes refused, by reason class",
            ["reason"],
            registry=r,
        )
        self.journal_oldest_pending = Gauge(
            "alarmhub_journal_oldest_pending_age_seconds",
            "Age of the oldest journal export not yet confirmed or refused (0: none)",
            registry=r,
        )
        # A note held because the number behind its resident's pseudonym changed after
        # the alarm (core/journal/identity.py): it waits for an administrator.
        self.journal_holds = Counter(
            "alarmhub_journal_holds",
            "Journal notes held: the resident's national id changed since the alarm",
            registry=r,
        )
        self.journal_held = Gauge(
            "alarmhub_journal_held",
            "Journal notes held now, waiting for an administrator to release or cancel them",
            registry=r,
        )
        for result in JOURNAL_SEND_RESULTS:
            self.journal_sends.labels(result)
        for reason in RefusalClass:
            self.journal_refusals.labels(reason.value)

    def _ingest(self, r: CollectorRegistry) -> None:
        """What came in over MQTT and what decoding made of it (issue 12: per field, per clock)."""
        self.messages_received = Counter(
            "alarmhub_messages_received",
            "MQTT messages received, by device kind (unknown when the device is not registered)",
            ["device_kind"],
            registry=r,
        )
        self.messages_decoded = Counter(
            "alarmhub_messages_decoded",
            "Messages decoded into at least one event",
            ["device_kind"],
            registry=r,
        )
        self.messages_dead_lettered = Counter(
            "alarmhub_messages_dead_lettered",
            "Messages kept in the dead-letter store, by reason",
            ["reason", "device_kind"],
            registry=r,
        )
        # Issue 12 item 10: a message used with some of its fields left out.
        self.fields_dropped = Counter(
            "alarmhub_fields_dropped",
            "Fields or events left out of a message whose rest was used, by reason",
            ["reason", "device_kind"],
            registry=r,
        )
        # Issue 12 item 11: a device clock out of bounds, clamped to the time of receipt.
        self.clock_skew_clamped = Counter(
            "alarmhub_clock_skew_clamped",
            "Events whose device time was out of bounds and replaced by the time of receipt",
            ["direction", "device_kind"],
            registry=r,
        )
        self.messages_deduplicated = Counter(
            "alarmhub_messages_deduplicated",
            "Messages whose device message id was already committed (redelivery or device retry)",
            ["device_kind"],
            registry=r,
        )
        self.events = Counter(
            "alarmhub_events",
            "Decoded events by what the pipeline decided for them",
            ["verdict"],
            registry=r,
        )

    def _alarms(self, r: CollectorRegistry) -> None:
        """Alarms opened and open, and how fast people answered them."""
        self.alarms_raised = Counter(
            "alarmhub_alarms_raised",
            "Alarms opened, by alarm kind and priority",
            ["kind", "priority"],
            registry=r,
        )
        self.alarms_open = Gauge(
            "alarmhub_alarms_open",
            "Alarms not yet resolved, by priority and state",
            ["priority", "state"],
            registry=r,
        )
        self.oldest_unacknowledged = Gauge(
            "alarmhub_oldest_unacknowledged_alarm_age_seconds",
            "Age of the oldest open, unacknowledged alarm (0 when there is none)",
            ["priority"],
            registry=r,
        )
        # Municipality labels are bounded by the registry (a few hundred at most).
        self.time_to_acknowledge = Histogram(
            "alarmhub_time_to_acknowledge_seconds",
            "Seconds from raised to acknowledged",
            ["priority", "municipality"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.time_to_resolve = Histogram(
            "alarmhub_time_to_resolve_seconds",
            "Seconds from raised to resolved",
            ["priority", "municipality"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.sla_breaches = Counter(
            "alarmhub_sla_breaches",
            "Alarms acknowledged later than their priority's target",
            ["priority"],
            registry=r,
        )

    def _escalation(self, r: CollectorRegistry) -> None:
        """Escalation steps fired, and alarms that ran out of steps."""
        self.escalations = Counter(
            "alarmhub_escalations", "Escalation steps fired, by level", ["level"], registry=r
        )
        self.escalations_exhausted = Counter(
            "alarmhub_escalations_exhausted",
            "Alarms still open after their escalation policy's last step: nobody left to tell",
            ["priority"],
            registry=r,
        )

    def _broker(self, r: CollectorRegistry) -> None:
        """The ingest connection to the broker."""
        self.mqtt_connected = Gauge(
            "alarmhub_mqtt_connected",
            "1 while the ingest connection to the broker is up",
            registry=r,
        )
        self.mqtt_reconnects = Counter(
            "alarmhub_mqtt_reconnects", "Connections to the broker after the first", registry=r
        )
        # Issue 15: which single-owner work this instance does now (daemon/owner.py).
        self.lease_owned = Gauge(
            "alarmhub_lease_owned",
            "1 while this instance holds the lease and runs its work (intake: MQTT intake, "
            "escalations, supervision, notifications, pruning)",
            ["lease"],
            registry=r,
        )
        self.lease_step_downs = Counter(
            "alarmhub_lease_step_downs",
            "Leases this instance handed over itself while they still renewed, by reason: "
            "broker (no broker connection for the grace), stalled (its writes failed for "
            "ALARMHUB_OWNER_STALL_S), sip (a SCAIP address it could not bind, for the grace)",
            ["lease", "reason"],
            registry=r,
        )
        for lease in LEASES:
            self.lease_owned.labels(lease)
            for reason in STEP_DOWN_REASONS:
                self.lease_step_downs.labels(lease, reason)

    def _store(self, r: CollectorRegistry) -> None:
        """The batch commit, the WAL and the rows kept: is the store keeping up?"""
        self.commit_batch_size = Histogram(
            "alarmhub_commit_batch_messages",
            "Messages per committed batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "alarmhub_commit_seconds",
            "Wall time of one batch's database transaction",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.commit_failures = Counter(
            "alarmhub_commit_failures",
            "Batch commits that failed and will be retried (nothing is acknowledged meanwhile)",
            registry=r,
        )
        self.store_writable = Gauge(
            "alarmhub_store_writable", "1 while the last commit succeeded", registry=r
        )
        self.decisions_refused = Counter(
            "alarmhub_decisions_refused",
            "Commits refused because the rows they were decided on moved (alarm_changed, "
            "device_moved), decided again on the rows as stored",
            ["reason"],
            registry=r,
        )
        self.decision_refused_rounds = Gauge(
            "alarmhub_decision_refused_rounds",
            "Rounds the decision in hand has been refused running (0: none is); nothing "
            "commits or is acknowledged meanwhile",
            registry=r,
        )
        for reason in REFUSAL_REASONS:
            self.decisions_refused.labels(reason)
        self.store_wal_bytes = Gauge(
            "alarmhub_store_wal_bytes",
            "Bytes of the SQLite WAL in use after the last checkpoint",
            registry=r,
        )
        self.store_wal_truncations = Counter(
            "alarmhub_store_wal_truncations",
            "WAL cuts to zero after it outgrew sqlite_wal_limit_mb (readers kept it from reuse)",
            registry=r,
        )
        # Issue 13 item 2: set by the pruner after each pass (alarmhub/daemon/pruner.py).
        self.oldest_row_age = Gauge(
            "alarmhub_oldest_row_age_seconds",
            "Age of the oldest row kept, by table (inbox: messages used; dead_letters)",
            ["table"],
            registry=r,
        )

    def _devices(self, r: CollectorRegistry) -> None:
        """The registered devices and their heartbeat supervision."""
        self.devices = Gauge(
            "alarmhub_devices", "Registered active devices, by kind", ["device_kind"], registry=r
        )
        self.devices_offline = Gauge(
            "alarmhub_devices_offline",
            "Devices with an active device_offline alarm, by municipality",
            ["municipality"],
            registry=r,
        )
        self.devices_watched = Gauge(
            "alarmhub_devices_supervised",
            "Devices whose heartbeats are supervised (registered with a heartbeat interval)",
            registry=r,
        )
        self.supervision_step_seconds = Histogram(
            "alarmhub_supervision_step_seconds",
            "Wall time of one supervision step (finding every device that went silent)",
            buckets=(0.00001, 0.0001, 0.001, 0.01, 0.1, 1, 10),
            registry=r,
        )

    def _http(self, r: CollectorRegistry) -> None:
        """The web API."""
        self.http_requests = Counter(
            "alarmhub_http_requests",
            "HTTP requests by route template and status code",
            ["route", "status"],
            registry=r,
        )

    def _scaip(self, r: CollectorRegistry) -> None:
        """SCAIP requests over SIP and what they were answered (docs/scaip.md)."""
        self.scaip_requests = Counter(
            "alarmhub_scaip_requests",
            "SCAIP requests by message type (mty; unknown when unread) and answer (snu, or "
            "the SIP refusal: forbidden, unsupported_media_type, service_unavailable)",
            ["type", "answer"],
            registry=r,
        )
        self.scaip_answer_seconds = Histogram(
            "alarmhub_scaip_answer_seconds",
            "Seconds from a SCAIP request's receipt to its answer",
            buckets=SCAIP_BUCKETS,
            registry=r,
        )

    def _zero_scaip(self) -> None:
        for mty in [*(m.value for m in MessageType), SCAIP_UNREAD]:
            for snu in [*(str(int(s)) for s in Snu), *SCAIP_SIP_ANSWERS.values()]:
                self.scaip_requests.labels(mty, snu)

    def _sip(self, r: CollectorRegistry) -> None:
        """The SCAIP receiver's SIP layer: who failed to authenticate, what was answered."""
        self.scaip_digest_failures = Counter(
            "alarmhub_scaip_digest_failures",
            "SIP requests whose digest authentication failed, by reason (never an alarm)",
            ["reason"],
            registry=r,
        )
        self.sip_responses = Counter(
            "alarmhub_sip_responses",
            "Final SIP responses sent by the SCAIP receiver, by status",
            ["status"],
            registry=r,
        )
        self.sip_dropped = Counter(
            "alarmhub_sip_dropped",
            "SIP input dropped without an answer (unparseable, over a limit, a connection closed)",
            ["reason"],
            registry=r,
        )
        self.scaip_answers = Counter(
            "alarmhub_scaip_answers",
            "Answer MESSAGEs sent to a device's contact, by outcome",
            ["outcome"],
            registry=r,
        )
        self.sip_connections = Gauge(
            "alarmhub_sip_connections",
            "Open SIP connections (TCP and TLS, accepted and our own)",
            ["transport"],
            registry=r,
        )
        # Created per transport by the server for what ALARMHUB_SCAIP_LISTEN names, not
        # here: no series means no receiver configured, so an alert on 0 cannot fire for a
        # hub without SCAIP.
        self.sip_listening = Gauge(
            "alarmhub_sip_listening",
            "1 while this instance listens for SCAIP devices on the transport (only the "
            "intake owner does), else 0; no series for a transport not configured",
            ["transport"],
            registry=r,
        )
        for reason in DIGEST_FAILURES:
            self.scaip_digest_failures.labels(reason.value)
        for status in (*(str(s) for s in RESPONSE_STATUSES), OTHER_STATUS):
            self.sip_responses.labels(status)
        for drop in SipDrop:
            self.sip_dropped.labels(drop.value)
        for outcome in AnswerOutcome:
            self.scaip_answers.labels(outcome.value)
        for transport in ("tcp", "tls"):
            self.sip_connections.labels(transport)

    def _zero(self) -> None:
        self._zero_scaip()
        kinds = [*(k.value for k in DeviceKind), UNKNOWN_KIND]
        for kind in kinds:
            self.messages_received.labels(kind)
            self.messages_decoded.labels(kind)
            self.messages_deduplicated.labels(kind)
            for reason in RejectReason:
                self.messages_dead_lettered.labels(reason.value, kind)
                self.fields_dropped.labels(reason.value, kind)
            for direction in SKEW_DIRECTIONS:
                self.clock_skew_clamped.labels(direction, kind)
        for verdict in Verdict:
            self.events.labels(verdict.value)
        for p in Priority:
            label = str(int(p))
            for state in ("open", "acknowledged"):
                self.alarms_open.labels(label, state)
            self.oldest_unacknowledged.labels(label)
            self.sla_breaches.labels(label)
            self.escalations_exhausted.labels(label)
        for level in range(1, 4):
            self.escalations.labels(str(level))
        for kind in DeviceKind:
            self.devices.labels(kind.value)
        for table in RetainedTable:
            self.oldest_row_age.labels(table.value)
        self.store_writable.set(1)

    def zero_municipalities(self, municipalities: Iterable[str]) -> None:
        for m in municipalities:
            self.devices_offline.labels(m)
            for p in Priority:
                self.time_to_acknowledge.labels(str(int(p)), m)
                self.time_to_resolve.labels(str(int(p)), m)

    def zero_alarm_kinds(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            for p in Priority:
                self.alarms_raised.labels(kind, str(int(p)))
