"""Typed, frozen settings: `config/alarmhub.toml`, overridden by `ALARMHUB_*` variables.

A bad setting is one line that names the variable and says what is wrong; the
CLI turns it into exit status 2. Settings are read once at start and passed
down; nothing deep in the code reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from alarmhub import builtin
from alarmhub.core.national_id import valid_organisation_number
from alarmhub.core.sipcodes import SipListen, parse_digest_algorithms, parse_sip_listen
from alarmhub.settings.helseid import HelseIdClient, https_url
from alarmhub.settings.targets import (
    INSTANCE_ID,
    DatabaseTarget,
    Listen,
    MqttTarget,
    SettingsError,
    default_instance_id,
    instance_id_of,
    is_loopback,
    parse_database_url,
    parse_listen,
    parse_mqtt_url,
    parse_mqtt_urls,
    writable_dsn,
)

ENV_PREFIX = "ALARMHUB_"
DEFAULT_CONFIG = Path("config/alarmhub.toml")


class Settings(BaseSettings):
    """Every setting, with its default. `config/alarmhub.toml` documents each one."""

    # hide_input_in_errors: a ValidationError's text would repeat the value, and the
    # value of mqtt_url may hold the broker password (issue 13 item 10).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, hide_input_in_errors=True
    )

    # Declared before mqtt_url, whose check reads it.
    mqtt_allow_plain: bool = False
    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883", repr=False)
    mqtt_client_id: str = "alarmhub"
    # This process's own name among several sharing one database and broker (issue 15);
    # the MQTT client id above stays the service's, shared by all of them.
    instance_id: str = Field(default_factory=default_instance_id)
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)
    mqtt_reconnect_min_s: float = Field(default=0.5, gt=0)
    mqtt_reconnect_max_s: float = Field(default=30.0, gt=0)
    mqtt_paho_internals: bool = True
    database_url: str = "sqlite:///alarmhub.db"
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_wal_limit_mb: int = Field(default=64, ge=1, le=1024 * 1024)
    # The operator page over TLS: a PEM certificate (chain) and its key. Declared before
    # http_listen, whose check reads them (issue 13 item 8).
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = Field(default=None, validate_default=True)
    # Plain HTTP on an address other than loopback: only behind a TLS reverse proxy.
    http_allow_plain: bool = False
    http_listen: str = "127.0.0.1:8080"
    # Live streams (SSE) open at once, per user and in all: each one is walked on
    # every alarm change, on the loop that also runs ingest (issue 13 item 3).
    max_streams_per_user: int = Field(default=5, ge=1, le=1000)
    max_streams: int = Field(default=200, ge=1, le=100_000)
    # Per municipality: one municipality's users cannot take every slot (promise 3).
    max_streams_per_municipality: int = Field(default=50, ge=1, le=100_000)
    # Days one response-time report may span (API and `alarmhub report`).
    max_report_days: int = Field(default=366, ge=1, le=100 * 366)
    # Days an API token is valid when `tokens create` is not told otherwise (issue 13 #6).
    token_lifetime_days: int = Field(default=90, ge=1, le=3650)
    # Seconds between an open live stream's re-checks of its caller: a disabled user,
    # revoked or expired token or ended session loses the stream within this (<= 30 s).
    stream_recheck_s: float = Field(default=30.0, gt=0, le=30)
    # Seconds of quiet after which an open live stream sends `event: ping`: a page that
    # hears nothing for about twice this knows its stream is dead, whatever TCP says.
    stream_ping_s: float = Field(default=15.0, ge=0.5, le=60)
    # Unset: the rules alarmhub ships with (alarmhub.builtin), wherever it runs from.
    rules: Path = Field(default_factory=builtin.rules_file)
    devices_dir: Path | None = None
    max_payload_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)
    max_future_skew_s: int = Field(default=300, ge=0)
    # A device time further behind than this is clamped to receipt (issue 12 item 11).
    max_past_skew_s: int = Field(default=86400, ge=60)
    content_dedup_window_s: int = Field(default=30, ge=1)
    # Hours a device's own message id stays the same message (core/dedup.py); at
    # least one: it must outlast every redelivery (config/alarmhub.toml says why).
    message_id_dedup_window_h: float = Field(default=24, ge=1, le=24 * 365)
    # Days every received message (GPS positions included) and every dead letter are
    # kept before the pruner deletes them (issue 13 item 2); alarms, timelines and the
    # audit log are the record and stay. At least the dedup window: a redelivery must
    # find its first copy. docs/operations.md, "Retention", defends the defaults.
    inbox_retention_days: int = Field(default=14, ge=1, le=3650)
    dead_letter_retention_days: int = Field(default=30, ge=1, le=3650)
    # The municipality whose queue shows a press from an unregistered device
    # (core/strays.py); unset: such a press is a dead letter only (counted, alerted).
    unknown_device_municipality: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    commit_delay_ms: float = Field(default=2.0, ge=0, le=100)
    # SCAIP (docs/scaip.md): how long a request waits for its commit before it is
    # answered HOLD (snu 4), so that the device resends while the store cannot commit.
    scaip_hold_after_s: float = Field(default=4.0, gt=0, le=30)
    max_batch: int = Field(default=2000, ge=1, le=100_000)
    # Several instances on one PostgreSQL database (issue 15, docs/scaling.md): the
    # time within which the survivors take over a dead instance's single-owner work
    # (the lease's ttl is derived from it).
    failover_s: float = Field(default=15.0, ge=2, le=600)
    # PostgreSQL: an owner whose writes have failed this long under its grant while its
    # lease still renews hands the lease over (core/cluster.py StallTiming says why).
    owner_stall_s: float = Field(default=30.0, ge=1, le=3600)
    # SCAIP over SIP (issue 16, docs/scaip.md): the addresses to listen on (unset: off);
    # a tls:// address needs the certificate and key. Declared before scaip_listen,
    # whose check reads them. The digest realm the devices' credentials are made in.
    scaip_tls_cert: Path | None = None
    scaip_tls_key: Path | None = None
    scaip_listen: str | None = None
    scaip_realm: str = Field(default="alarmhub", pattern=r"^[A-Za-z0-9._@:-]{1,64}$")
    # The digest challenges offered, in order (some devices answer only the first).
    scaip_digest_algorithms: str = "SHA-256,MD5"
    # Offer qop auth-int beside auth (the body signed too): only where every device's
    # SIP stack is known to read a qop list (core/digest.py QOP_WITH_AUTH_INT says why).
    scaip_digest_auth_int: bool = False
    # What the receiver holds at once (sip/server.py SipLimits): TCP/TLS connections, requests
    # in hand (more: 503), and how long a silent connection keeps its slot.
    scaip_max_connections: int = Field(default=2000, ge=1, le=1_000_000)
    scaip_max_in_flight: int = Field(default=2000, ge=1, le=1_000_000)
    scaip_idle_timeout_s: float = Field(default=180.0, ge=10, le=86_400)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # Journal export (issue 17, docs/journal.md): on for exactly the municipalities whose
    # HelseID client is configured (journal_exporting). The response centre as the
    # journal note names it (its custodian and author's organisation).
    journal_organisation_name: str | None = Field(default=None, min_length=1, max_length=200)
    journal_organisation_number: str | None = None
    # Where notes go: POST {journal_url}/v1/Bundle (JFT/VKP; https unless loopback). Declared
    # before journal_helseid, whose check reads it.
    journal_url: str | None = None
    # One HelseID client per municipality, keyed by municipality code; export is on for
    # exactly these (journal_exporting). A JSON object in ALARMHUB_JOURNAL_HELSEID.
    journal_helseid: dict[str, HelseIdClient] = Field(default_factory=dict)

    @field_validator("journal_url")
    @classmethod
    def _journal_url(cls, v: str | None) -> str | None:
        return None if v is None else https_url(v).rstrip("/")

    @field_validator("journal_helseid")
    @classmethod
    def _journal_helseid(
        cls, v: dict[str, HelseIdClient], info: ValidationInfo
    ) -> dict[str, HelseIdClient]:
        for municipality in v:
            if not re.fullmatch(r"[0-9]{4}", municipality):
                raise ValueError(f"{municipality!r} is not a municipality code (four digits)")
        if v and "journal_url" in info.data and info.data["journal_url"] is None:
            raise ValueError(f"a HelseID client without {ENV_PREFIX}JOURNAL_URL sends nowhere")
        # A table copied from another municipality's, its client id left as it was, sent
        # this municipality's notes as the other's client: NHN and the journal take them
        # as written by that municipality, the data controller of other journals.
        by_client: dict[str, list[str]] = {}
        for municipality, config in sorted(v.items()):
            by_client.setdefault(config.client_id, []).append(municipality)
        for client_id, sharing in by_client.items():
            if len(sharing) > 1:
                raise ValueError(
                    f"municipalities {' and '.join(sharing)} share the HelseID client "
                    f"{client_id!r}: each writes to its residents' journals as its own client"
                )
        return v

    # Retries on 5xx, timeouts and connection errors: full jitter under base * 2^attempt,
    # at most max; the status URL is polled every poll_s; each request times out.
    journal_retry_base_s: float = Field(default=1.0, gt=0, le=3600)
    journal_retry_max_s: float = Field(default=300.0, gt=0, le=86400)
    journal_poll_s: float = Field(default=30.0, gt=0, le=86400)
    journal_timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("journal_organisation_number")
    @classmethod
    def _journal_organisation_number(cls, v: str | None) -> str | None:
        if v is not None and not valid_organisation_number(v):
            raise ValueError("not an organisation number: nine digits, the last a mod-11 check")
        return v

    # The key that seals the resident register's national identity numbers (issue 17):
    # base64 of 32 random bytes (`alarmhub residents new-key`). Unset: the register
    # cannot store or show a number. Keys replaced by a newer one stay readable while
    # listed in resident_old_keys (comma-separated), until `alarmhub residents rekey`.
    resident_key: SecretStr | None = Field(default=None, repr=False)
    resident_old_keys: SecretStr | None = Field(default=None, repr=False)

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt(cls, v: str, info: ValidationInfo) -> str:
        for target in parse_mqtt_urls(v):
            if (
                not target.tls
                and not is_loopback(target.host)
                and not info.data.get("mqtt_allow_plain", False)
            ):
                raise ValueError(
                    f"{target.shown} would send alarms and the broker password unencrypted to "
                    f"another machine; use mqtts://, or set {ENV_PREFIX}MQTT_ALLOW_PLAIN=true "
                    "if the network to the broker is trusted"
                )
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        parse_database_url(v)  # sqlite:/// or postgresql://; anything else is refused
        return v

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, v: str, info: ValidationInfo) -> str:
        listen = parse_listen(v)
        tls = info.data.get("http_tls_cert") is not None
        if not tls and not is_loopback(listen.host) and not info.data.get("http_allow_plain"):
            raise ValueError(
                f"{v} would serve logins and health data as plain HTTP to the network; set "
                f"{ENV_PREFIX}HTTP_TLS_CERT and {ENV_PREFIX}HTTP_TLS_KEY, or listen on "
                f"127.0.0.1 behind a TLS reverse proxy, or set {ENV_PREFIX}HTTP_ALLOW_PLAIN=true"
            )
        return v

    @field_validator("http_tls_cert")
    @classmethod
    def _tls_cert(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} is not a file (a PEM certificate, or chain)")
        return v

    @field_validator("http_tls_key")
    @classmethod
    def _tls_key(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        cert = info.data.get("http_tls_cert")
        if v is None:
            if cert is not None:
                raise ValueError(f"{ENV_PREFIX}HTTP_TLS_CERT is set: this must be its key file")
            return v
        if "http_tls_cert" not in info.data:
            return v  # the certificate's own error says what is wrong
        if cert is None:
            raise ValueError(f"set {ENV_PREFIX}HTTP_TLS_CERT too: a key alone serves nothing")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, v)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"{v} is not a readable key for {cert}: {exc.strerror or exc}"
            ) from None
        return v

    @field_validator("scaip_tls_cert")
    @classmethod
    def _scaip_cert(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} is not a file (a PEM certificate, or chain)")
        return v

    @field_validator("scaip_digest_algorithms")
    @classmethod
    def _scaip_algorithms(cls, v: str) -> str:
        parse_digest_algorithms(v)
        return v

    @field_validator("scaip_listen")
    @classmethod
    def _scaip_listen(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not v.strip():
            return None
        listen = parse_sip_listen(v)
        if not any(x.transport == "tls" for x in listen):
            return v
        if "scaip_tls_cert" not in info.data:
            return v  # the certificate's own error says what is wrong
        cert, key = info.data.get("scaip_tls_cert"), info.data.get("scaip_tls_key")
        if cert is None or key is None:
            raise ValueError(
                f"a tls:// address needs {ENV_PREFIX}SCAIP_TLS_CERT and {ENV_PREFIX}SCAIP_TLS_KEY "
                "(a PEM certificate, or chain, and its key)"
            )
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"{key} is not a readable key for {cert}: {exc.strerror or exc}"
            ) from None
        return v

    # A set path that is not there is a bad setting (exit 2, the variable named), not a
    # rules or profile error found later. Defaults are not validated: a wheel built
    # without its data fails where it loads them, naming the path it looked at.
    @field_validator("rules")
    @classmethod
    def _rules(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(
                f"{v} is not a file; unset, alarmhub uses its built-in rules "
                f"({builtin.rules_file()})"
            )
        return v

    @field_validator("devices_dir")
    @classmethod
    def _devices_dir(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_dir():
            raise ValueError(
                f"{v} is not a directory of device profiles; unset, alarmhub uses its "
                f"built-in profiles ({builtin.devices_dir()})"
            )
        return v

    @field_validator("inbox_retention_days", "dead_letter_retention_days")
    @classmethod
    def _retention(cls, v: int, info: ValidationInfo) -> int:
        window_h = info.data.get("message_id_dedup_window_h")
        if window_h is not None and v * 24 < window_h:
            raise ValueError(
                f"{v} days is shorter than message_id_dedup_window_h ({window_h:g} h): a "
                "redelivery would no longer find its first copy and count twice"
            )
        return v

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, v: str) -> str:
        if not re.fullmatch(INSTANCE_ID, v):
            raise ValueError("1-64 characters of A-Z a-z 0-9 . _ - (e.g. host-a-1)")
        return v

    @field_validator("resident_key", "resident_old_keys")
    @classmethod
    def _resident_keys(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            for part in v.get_secret_value().split(","):
                resident_key_bytes(part)
        return v

    @field_validator("mqtt_client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not v or len(v) > 128 or any(c in v for c in "+#/"):
            raise ValueError("a stable id of 1-128 characters without + # /")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 - pydantic-settings' signature
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which is passed in as init values.
        return (env_settings, init_settings)

    @property
    def rules_builtin(self) -> bool:
        """True when nobody set `rules` (variable, file or argument): the shipped rules."""
        return "rules" not in self.model_fields_set

    def journal_exporting(self) -> frozenset[str]:
        """The municipalities with journal export on: those whose HelseID client is set."""
        return frozenset(self.journal_helseid)

    @property
    def mqtt(self) -> MqttTarget:
        """The first broker of the list: where the simulator and tools publish."""
        return parse_mqtt_urls(self.mqtt_url)[0]

    @property
    def mqtt_brokers(self) -> tuple[MqttTarget, ...]:
        """Every broker of `mqtt_url`, in order: ingest goes round them (mqtt/client.py)."""
        return parse_mqtt_urls(self.mqtt_url)

    @property
    def database(self) -> DatabaseTarget:
        return parse_database_url(self.database_url)

    @property
    def listen(self) -> Listen:
        return parse_listen(self.http_listen)

    @property
    def resident_keys(self) -> tuple[bytes, ...]:
        """The resident register's keys, the current first; empty when none is set."""
        keys = [self.resident_key] if self.resident_key is not None else []
        if self.resident_old_keys is not None:
            keys.append(self.resident_old_keys)
        return tuple(
            resident_key_bytes(part) for k in keys for part in k.get_secret_value().split(",")
        )

    @property
    def sip_listen(self) -> tuple[SipListen, ...]:
        """The SCAIP receiver's addresses; empty when it is off."""
        return parse_sip_listen(self.scaip_listen) if self.scaip_listen else ()

    @property
    def digest_algorithms(self) -> tuple[str, ...]:
        return parse_digest_algorithms(self.scaip_digest_algorithms)

    @property
    def http_tls(self) -> bool:
        """True when alarmhub serves HTTPS itself (both TLS settings are set)."""
        return self.http_tls_cert is not None and self.http_tls_key is not None


def resident_key_bytes(text: str) -> bytes:
    """A resident key's 32 bytes from its base64; the error never repeats the key."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError("not a base64 32-byte key: make one with `alarmhub residents new-key`")
    return key


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), then the environment; raise SettingsError on any fault."""
    path = config_path or Path(os.environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG))
    file_values: dict[str, Any] = {}
    if path.exists():
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    elif config_path is not None:
        raise SettingsError(f"{path}: no such settings file")
    file_values.update(overrides)
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, path)) from exc


def _explain(exc: ValidationError, path: Path) -> str:
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        env = f"{ENV_PREFIX}{name.upper()}"
        where = f"{env} (or `{name}` in {path})"
        if err["type"] == "extra_forbidden":
            where = f"`{name}` in {path} is not a setting"
            lines.append(f"{where}; see config/alarmhub.toml for the list")
            continue
        message = err["msg"].removeprefix("Value error, ")
        if len(err["loc"]) > 1:  # inside a table: which entry, e.g. `0301.key_file`
            message = f"{'.'.join(str(part) for part in err['loc'][1:])}: {message}"
        lines.append(f"setting {where}: {message}")
    return "; ".join(lines)


__all__ = [
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "INSTANCE_ID",
    "DatabaseTarget",
    "Listen",
    "MqttTarget",
    "Settings",
    "SettingsError",
    "default_instance_id",
    "instance_id_of",
    "is_loopback",
    "load_settings",
    "parse_database_url",
    "parse_listen",
    "parse_mqtt_url",
    "parse_mqtt_urls",
    "resident_key_bytes",
    "writable_dsn",
]
