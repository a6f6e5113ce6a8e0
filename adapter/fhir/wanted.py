"""What the FHIR layer is asked to find: Observation codes and how far back, told by the caller.

The FHIR layer knows nothing of trials or criteria (DESIGN.md "Data flow"): the engine works out, from
the trial and the code tables, which Observation codes matter, which search fetches each, and how many
days of windowed results to read; the FHIR layer searches for those, keeps those, and looks for them
wherever FHIR lets a result sit (fhir/expand.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .wire import Head

Coding = tuple[str, str]  # (system, code)


@dataclass(frozen=True)
class Wanted:
    """`codes`: system → the Observation codes kept, from any source (a Bundle, a search, a panel).
    `searches`: the Observation searches, as (search key, the codes it asks for), in order.
    `whole_history`: the search keys read without a date floor; the others read `lookback_days` back."""

    codes: Mapping[str, frozenset[str]]
    searches: tuple[tuple[str, tuple[Coding, ...]], ...] = ()
    whole_history: frozenset[str] = frozenset()
    lookback_days: int = 0
    _pairs: frozenset[Coding] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pairs", frozenset((s, c) for s, cs in self.codes.items() for c in cs))

    def code_of(self, head: Head) -> str | None:
        """The first of a resource's codes that is wanted (systems tried in `codes` order)."""
        return head.code_among(self.codes)

    def any_of(self, codings: Iterable[tuple[object, object]]) -> bool:
        """Whether any of these (system, code) pairs is wanted."""
        return any(pair in self._pairs for pair in codings)
