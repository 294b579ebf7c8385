"""Alarm kind -> what its journal note says: VKP codes and the operator's choices.

The rules file's `[journal.<kind>]` sections, turned once into these frozen values
(config/rules.py). A kind is either exported (a VKP alert code, the mode of contact
and the reason of the encounter) or
explicitly not (`export = false`: technical alarms, which are about a device, not a
person's care). A kind with neither is a gap: `unmapped` finds it for every
municipality that has export on, and `alarmhub rules check` refuses the file.

The cause and action choices offered at resolve are not here: they are the one list
per kind of `[resolution.<kind>]` (core/resolution.py), which the resolve step, the
operator page and the note all read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class KindMapping:
    kind: str
    export: bool = True
    alert: str = ""  # vkp-alert-code-v090
    mode: str = "2"  # vkp-encounter-mode-v090: 2 toveis tale
    reason: str = "2"  # vkp-encounter-reason-v090: 2 hendelsesbasert tilsyn


@dataclass(frozen=True, slots=True)
class JournalMapping:
    kinds: Mapping[str, KindMapping] = field(default_factory=dict)

    def get(self, kind: str) -> KindMapping | None:
        return self.kinds.get(kind)


@dataclass(frozen=True, slots=True)
class Unmapped:
    """An alarm kind a municipality with export on can raise, with no journal mapping."""

    municipality: str
    kind: str

    def __str__(self) -> str:
        return (
            f"alarm kind {self.kind!r} has no [journal.{self.kind}] section, and municipality "
            f"{self.municipality} has journal export on: map it to a VKP alert code, or "
            "set export = false"
        )


def unmapped(
    kinds_by_municipality: Mapping[str, Iterable[str]],
    mapping: JournalMapping,
    export_municipalities: Iterable[str],
) -> list[Unmapped]:
    """Every (municipality, kind) that would resolve with no way to write its note.

    `kinds_by_municipality` gives the kinds each municipality can raise (the global
    rules' and its own); a municipality it does not name raises the global ones,
    under the key "*".
    """
    found: list[Unmapped] = []
    for code in sorted(set(export_municipalities)):
        kinds = kinds_by_municipality.get(code, kinds_by_municipality.get("*", ()))
        found.extend(Unmapped(code, k) for k in sorted(set(kinds)) if mapping.get(k) is None)
    return found


def parse_municipalities(text: str) -> frozenset[str]:
    """ "0301, 4601" -> {"0301", "4601"}; ValueError naming the first code that is not one."""
    found = {part.strip() for part in text.split(",") if part.strip()}
    for code in sorted(found):
        if not (len(code) == 4 and code.isascii() and code.isdigit()):
            raise ValueError(f"{code[:16]!r} is not a four-digit municipality code")
    return frozenset(found)
