"""Digest authentication of SIP requests: the shell around core/digest.py's decisions.

Reads the Authorization header (sipmessage parses it), asks the core, looks the
device's stored HA1 up through the injected `credentials` callable, and turns the
outcome into the SIP answer:

- no credentials or malformed parameters: 401 with a fresh
  challenge per algorithm offered, by default SHA-256 first, then MD5 (RFC 8760
  §2.4), `qop="auth"` (`"auth,auth-int"` with ALARMHUB_SCAIP_DIGEST_AUTH_INT). Some
  devices (SIPp 3.6 among them) answer only the first challenge and know only MD5:
  `ALARMHUB_SCAIP_DIGEST_ALGORITHMS=MD5,SHA-256` serves them;
- our nonce, expired, or a nonce this process did not mint (a previous process's,
  after a restart: every device that reuses its last nonce presents one): 401 with
  `stale=true`, as RFC 7616 §3.3 says for an invalid nonce. The device answers it with
  the new nonce without a new password; without `stale`, a device that had just
  answered a challenge would take the second 401 for wrong credentials and give up;
- a nonce count (`nc`) already used with the nonce (a captured header presented
  again), or a nonce without qop used a second time: 401 with `stale=true` and a
  fresh nonce, which a genuine device answers without its user (core/digest.py's
  NonceUse); a digest `uri` other than the request's URI: 400 (RFC 7616 §3.4.6);
- the credentials cannot be read (the store is down): 503 with `Retry-After`, the
  SIP layer's HOLD: the device tries again, nothing is refused that may be genuine;
- wrong password, unknown user, or credentials made for another realm: 403, all
  three alike (no user enumeration). 403 rather than a new 401: the credentials
  were read and judged wrong, and a device looping on 401 would retry the same
  wrong password for ever.

Every failure is counted (`alarmhub_scaip_digest_failures_total{reason}`) and
logged as `sip.auth_failed` with the username, the reason and the peer, never the
response or anything derived from the password: once a minute per peer, with the
number of failures left unlogged since (a flood of bad requests is one line a minute).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import structlog
from sipmessage import URI, AuthChallenge, AuthParameters, Request

from alarmhub.clock import Clock
from alarmhub.core.digest import (
    ALGORITHMS,
    AUTH,
    NONCE_LIFETIME_S,
    QOP_WITH_AUTH_INT,
    REFUSED,
    Challenge,
    DigestOutcome,
    NonceUse,
    check_nonce,
    check_response,
    mint_nonce,
    nonce_count,
    read_authorization,
)
from alarmhub.core.sipcodes import DEFAULT_PORTS
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.ports import CredentialsLookup

log = structlog.get_logger("alarmhub.sip")


# Answered 401 with stale=true: the nonce, not the password, is what was wrong.
_STALE = frozenset({DigestOutcome.STALE, DigestOutcome.BAD_NONCE, DigestOutcome.REPLAYED})
# When a device whose credentials could not be read should try again (SCAIP's HOLD
# resends every 5-20 s; RFC 3261 §21.5.4).
RETRY_AFTER_S = 5
LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The authenticated username, or the status and headers to answer with."""

    user: str | None
    outcome: DigestOutcome | None  # None: the credentials could not be read
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


class Authenticator:
    def __init__(
        self,
        realm: str,
        credentials: CredentialsLookup,
        clock: Clock,
        metrics: Metrics,
        *,
        algorithms: tuple[str, ...] = ALGORITHMS,
        nonce_lifetime_s: float = NONCE_LIFETIME_S,
        auth_int: bool = False,
    ) -> None:
        self.realm = realm
        self.algorithms = algorithms
        self._qop = QOP_WITH_AUTH_INT if auth_int else AUTH
        self._lookup = credentials
        self._clock = clock
        self._metrics = metrics
        self._lifetime = nonce_lifetime_s
        self._secret = secrets.token_bytes(32)  # per process: nonces of another die here
        self._used = NonceUse(nonce_lifetime_s)
        self._failures_logged = OncePer(LOG_EVERY_S)
        self._lookup_logged = OncePer(LOG_EVERY_S)

    def challenge(self, *, stale: bool = False) -> tuple[tuple[str, str], ...]:
        """One WWW-Authenticate header per algorithm, the preferred first."""
        nonce = mint_nonce(self._secret, self._clock.now(), secrets.token_bytes(8))
        extra = {"stale": "true"} if stale else {}
        return tuple(
            (
                "WWW-Authenticate",
                str(
                    AuthChallenge(
                        "Digest",
                        AuthParameters(
                            realm=self.realm, nonce=nonce, algorithm=alg, qop=self._qop, **extra
                        ),
                    )
                ),
            )
            for alg in self.algorithms
        )

    async def check(self, request: Request, peer: str) -> Verdict:
        header = request.headers.get("Authorization")
        if header is None:
            return Verdict(None, DigestOutcome.MISSING, 401, self.challenge())
        try:
            creds = request.authorization
        except ValueError:
            creds = None
        params = creds.parameters if creds is not None else None
        if creds is None or params is None:
            return self._failed(DigestOutcome.MALFORMED, None, request, peer)
        answer = read_authorization(creds.scheme, params, self.algorithms)
        if isinstance(answer, DigestOutcome):
            return self._failed(answer, params.get("username"), request, peer)
        outcome = check_nonce(answer, self.realm, self._secret, self._clock.now(), self._lifetime)
        if outcome is DigestOutcome.OK and not _same_uri(answer.uri, str(request.uri)):
            outcome = DigestOutcome.URI_MISMATCH
        if outcome is DigestOutcome.OK:
            try:
                outcome = await self._verify(answer, request)
            except _UnavailableError as exc:
                return self._unavailable(answer.username, exc.__cause__ or exc)
        if outcome is DigestOutcome.OK and not self._used.use(
            f"{answer.username}\0{answer.nonce}", nonce_count(answer.nc), self._clock.monotonic()
        ):
            # After the response matched, so a forger cannot burn a device's counts, and
            # per device, so another device shown this nonce cannot burn them either;
            # synchronous, so two copies racing past the lookup cannot both pass.
            outcome = DigestOutcome.REPLAYED
        if outcome is DigestOutcome.OK:
            return Verdict(answer.username, outcome)
        return self._failed(outcome, answer.username, request, peer)

    async def _verify(self, answer: Challenge, request: Request) -> DigestOutcome:
        try:
            stored = await self._lookup(answer.username)
        except Exception as exc:  # whatever the store raises when it cannot read
            raise _UnavailableError from exc
        outcome = check_response(answer, request.method, self.realm, stored, request.body)
        if outcome is DigestOutcome.REALM_CHANGED and stored is not None:
            log.warning(
                "sip.credentials_realm_changed",
                user=answer.username,
                stored_realm=stored.realm,
                realm=self.realm,
                hint="the realm setting changed: set the device's credentials again "
                "(alarmhub devices credentials)",
            )
        return outcome

    def _unavailable(self, user: str, exc: BaseException) -> Verdict:
        """The store could not say: 503 and Retry-After, the SIP layer's HOLD."""
        say, suppressed = self._lookup_logged.should_log("lookup")
        if say:
            log.warning(
                "sip.credentials_unavailable",
                user=user,
                error=f"{type(exc).__name__}: {exc}",
                suppressed=suppressed,
            )
        return Verdict(None, None, 503, (("Retry-After", str(RETRY_AFTER_S)),))

    def _failed(
        self, outcome: DigestOutcome, user: str | None, request: Request, peer: str
    ) -> Verdict:
        self._metrics.scaip_digest_failures.labels(outcome.value).inc()
        say, suppressed = self._failures_logged.should_log(peer)
        if say:
            log.warning(
                "sip.auth_failed",
                reason=outcome.value,
                user=user,
                method=request.method,
                peer=peer,
                suppressed=suppressed,
            )
        if outcome in REFUSED:
            return Verdict(None, outcome, 403)
        if outcome is DigestOutcome.URI_MISMATCH:
            return Verdict(None, outcome, 400)
        return Verdict(None, outcome, 401, self.challenge(stale=outcome in _STALE))


class _UnavailableError(Exception):
    """The credentials lookup failed: the store could not answer."""


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    """Whether the digest `uri` names the server the request was sent to (RFC 7616 §3.4.6).

    Scheme, host and port, not the user part: SIPp and other stacks put only the
    server's address there (`sip:host:port`) whatever the Request-URI's user.
    """
    if digest_uri == request_uri:
        return True
    try:
        a, b = URI.parse(digest_uri), URI.parse(request_uri)
    except ValueError:
        return False
    return _server_of(a) == _server_of(b)


def _server_of(uri: URI) -> tuple[str, str, int]:
    scheme = uri.scheme.lower()
    return (
        scheme,
        (uri.host or "").lower().strip("[]"),
        uri.port or DEFAULT_PORTS["tls" if scheme == "sips" else "udp"],
    )
