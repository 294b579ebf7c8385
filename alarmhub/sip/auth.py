"""Digest authentication of SIP requests: the shell around core/digest.py's decisions.

Reads the Authorization header (sipmessage parses it), asks the core, looks the
device's stored HA1 up through the injected `credentials` callable, and turns the
outcome into the SIP answer:

- no credentials or malformed parameters: 401 with a fresh
  challenge per algorithm offered, by default SHA-256 first, then MD5 (RFC 8760
  §2.4), `qop="auth"`. Some devices (SIPp 3.6 among them) answer only the first
  challenge and know only MD5: `ALARMHUB_SCAIP_DIGEST_ALGORITHMS=MD5,SHA-256`
  serves them;
- our nonce, expired, or a nonce this process did not mint (a previous process's,
  after a restart: every device that reuses its last nonce presents one): 401 with
  `stale=true`, as RFC 7616 §3.3 says for an invalid nonce. The device answers it with
  the new nonce without a new password; without `stale`, a device that had just
  answered a challenge would take the second 401 for wrong credentials and give up;
- wrong password, unknown user, or credentials made for another realm: 403, all
  three alike (no user enumeration). 403 rather than a new 401: the credentials
  were read and judged wrong, and a device looping on 401 would retry the same
  wrong password for ever.

Every failure is counted (`alarmhub_scaip_digest_failures_total{reason}`) and
logged as `sip.auth_failed` with the username, the reason and the peer, never the
response or anything derived from the password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import structlog
from sipmessage import AuthChallenge, AuthParameters, Request

from alarmhub.clock import Clock
from alarmhub.core.digest import (
    ALGORITHMS,
    NONCE_LIFETIME_S,
    REFUSED,
    DigestOutcome,
    check_nonce,
    check_response,
    mint_nonce,
    read_authorization,
)
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.ports import CredentialsLookup

log = structlog.get_logger("alarmhub.sip")


# Answered 401 with stale=true: the nonce, not the password, is what was wrong.
_STALE = frozenset({DigestOutcome.STALE, DigestOutcome.BAD_NONCE})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The authenticated username, or the status and headers to answer with."""

    user: str | None
    outcome: DigestOutcome
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
    ) -> None:
        self.realm = realm
        self.algorithms = algorithms
        self._lookup = credentials
        self._clock = clock
        self._metrics = metrics
        self._lifetime = nonce_lifetime_s
        self._secret = secrets.token_bytes(32)  # per process: nonces of another die here

    def challenge(self, *, stale: bool = False) -> tuple[tuple[str, str], ...]:
        """One WWW-Authenticate header per algorithm, the preferred first."""
        nonce = mint_nonce(self._secret, self._clock.now())
        extra = {"stale": "true"} if stale else {}
        return tuple(
            (
                "WWW-Authenticate",
                str(
                    AuthChallenge(
                        "Digest",
                        AuthParameters(
                            realm=self.realm, nonce=nonce, algorithm=alg, qop="auth", **extra
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
        if outcome is DigestOutcome.OK:
            stored = await self._lookup(answer.username)
            outcome = check_response(answer, request.method, self.realm, stored)
            if outcome is DigestOutcome.REALM_CHANGED and stored is not None:
                log.warning(
                    "sip.credentials_realm_changed",
                    user=answer.username,
                    stored_realm=stored.realm,
                    realm=self.realm,
                    hint="the realm setting changed: set the device's credentials again "
                    "(alarmhub devices credentials)",
                )
        if outcome is DigestOutcome.OK:
            return Verdict(answer.username, outcome)
        return self._failed(outcome, answer.username, request, peer)

    def _failed(
        self, outcome: DigestOutcome, user: str | None, request: Request, peer: str
    ) -> Verdict:
        self._metrics.scaip_digest_failures.labels(outcome.value).inc()
        log.warning(
            "sip.auth_failed",
            reason=outcome.value,
            user=user,
            method=request.method,
            peer=peer,
        )
        if outcome in REFUSED:
            return Verdict(None, outcome, 403)
        return Verdict(None, outcome, 401, self.challenge(stale=outcome in _STALE))
