"""What an operator records on resolving an alarm: a cause (årsak) and the action taken (tiltak).

Each is a code from a short list per alarm kind (the rules file's
``[resolution.<alarm kind>]``, else ``[resolution.default]``, else the lists below),
plus free text. The codes are what the journal note and the statistics are built
from; the text is what the operator saw. Pure values and one pure check, shared by
the API (which answers a wrong code with 422 and the allowed codes) and the core's
resolve action (which stores what was chosen, with the choice's text at that time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_FREE_TEXT = 500
DEFAULT_KEY = "default"  # the rules file's list for alarm kinds without their own

# The keys of the `resolved` timeline entry's detail (Resolution.detail writes them;
# the journal note reads them back with `from_detail`): one spelling, here.
CAUSE, CAUSE_LABEL, CAUSE_TEXT = "cause", "cause_label", "cause_text"
ACTION, ACTION_LABEL, ACTION_TEXT = "action_taken", "action_label", "action_text"


@dataclass(frozen=True, slots=True)
class Choice:
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class Choices:
    """The causes and actions an operator may pick for one alarm kind."""

    causes: tuple[Choice, ...]
    actions: tuple[Choice, ...]

    def cause(self, code: str) -> Choice | None:
        return next((c for c in self.causes if c.code == code), None)

    def action(self, code: str) -> Choice | None:
        return next((c for c in self.actions if c.code == code), None)


# Used when the rules file has no [resolution.default]: never an empty list to pick from.
BUILTIN_DEFAULT = Choices(
    causes=(
        Choice("needed_help", "Trengte hjelp"),
        Choice("fall", "Fall"),
        Choice("illness", "Sykdom eller ubehag"),
        Choice("unintended", "Utløst ved et uhell"),
        Choice("technical", "Teknisk feil"),
        Choice("unknown", "Ukjent årsak"),
    ),
    actions=(
        Choice("talked", "Samtale via alarmen"),
        Choice("home_care", "Hjemmetjenesten varslet"),
        Choice("responder_sent", "Utrykning sendt"),
        Choice("ambulance", "AMK/ambulanse varslet"),
        Choice("relative", "Pårørende kontaktet"),
        Choice("none", "Ingen tiltak nødvendig"),
    ),
)


@dataclass(frozen=True, slots=True)
class Resolutions:
    """The choices per alarm kind, and the default for every other kind."""

    default: Choices = BUILTIN_DEFAULT
    kinds: Mapping[str, Choices] = field(default_factory=lambda: MappingProxyType({}))

    def for_kind(self, kind: str) -> Choices:
        return self.kinds.get(kind, self.default)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the operator picked: each a choice of the alarm kind's list, or none."""

    cause: Choice | None = None
    cause_text: str | None = None
    action: Choice | None = None
    action_text: str | None = None

    @property
    def has_cause(self) -> bool:
        return self.cause is not None or bool(self.cause_text)

    @property
    def has_action(self) -> bool:
        return self.action is not None or bool(self.action_text)

    def detail(self) -> dict[str, str]:
        """The timeline entry's fields for it: codes, the choices' texts, the free texts."""
        out: dict[str, str] = {}
        if self.cause is not None:
            out[CAUSE] = self.cause.code
            out[CAUSE_LABEL] = self.cause.text
        if self.cause_text:
            out[CAUSE_TEXT] = self.cause_text
        if self.action is not None:
            out[ACTION] = self.action.code
            out[ACTION_LABEL] = self.action.text
        if self.action_text:
            out[ACTION_TEXT] = self.action_text
        return out


def from_detail(detail: Mapping[str, object]) -> Resolution:
    """What a `resolved` timeline entry recorded (`Resolution.detail`), read back.

    The choice's text is the one the operator saw when resolving (stored beside the
    code), so a list changed since does not rewrite what was recorded.
    """

    def choice(code_key: str, label_key: str) -> Choice | None:
        code, label = detail.get(code_key), detail.get(label_key)
        if not isinstance(code, str) or not code:
            return None
        return Choice(code, label if isinstance(label, str) and label else code)

    def text(key: str) -> str | None:
        value = detail.get(key)
        return value.strip() or None if isinstance(value, str) else None

    return Resolution(
        choice(CAUSE, CAUSE_LABEL),
        text(CAUSE_TEXT),
        choice(ACTION, ACTION_LABEL),
        text(ACTION_TEXT),
    )


@dataclass(frozen=True, slots=True)
class Unknown:
    """A code not in the alarm kind's list: which field, and the codes it allows."""

    field: str  # "cause" or "action_taken"
    code: str
    allowed: tuple[str, ...]

    @property
    def message(self) -> str:
        return (
            f"{self.field} {self.code!r} is not a choice for this alarm kind; "
            f"allowed: {', '.join(self.allowed)}"
        )


def choose(
    choices: Choices,
    cause: str | None,
    action: str | None,
    cause_text: str | None = None,
    action_text: str | None = None,
) -> Resolution | Unknown:
    """The operator's codes looked up in the alarm kind's `choices`."""
    picked_cause = choices.cause(cause) if cause is not None else None
    if cause is not None and picked_cause is None:
        return Unknown("cause", cause, tuple(c.code for c in choices.causes))
    picked_action = choices.action(action) if action is not None else None
    if action is not None and picked_action is None:
        return Unknown("action_taken", action, tuple(c.code for c in choices.actions))
    return Resolution(picked_cause, cause_text or None, picked_action, action_text or None)
