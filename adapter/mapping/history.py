"""mCODE HistoryOfMetastaticCancer Observations → what each one asserts.

The profile's value is `valueBoolean` and a modifier: absent or true records a past episode of
metastatic cancer, false asserts there was none. Because a misread value would reverse the meaning,
a value of the wrong JSON type (or another value[x]) is unreadable here, not "absent".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..fhir.elements import concept_text
from .observations import ObservationIndex
from .values import COUNTED_STATUS

INPUT = "metastatic-history"  # mappings/observations.yaml


@dataclass(frozen=True)
class HistoryAssertion:
    ref: str | None
    display: str
    when_text: str | None  # None: undated (a history still holds)
    present: bool | None  # True: a history of metastatic cancer; False: none; None: value unreadable

    @property
    def shown(self) -> str:
        said = {True: "", False: ": no", None: ": value unreadable"}[self.present]
        return f"{self.display}{said} ({self.when_text or 'undated'})"


def _present(resource: dict[str, object]) -> bool | None:
    values = [k for k in resource if k.startswith("value")]
    if not values:
        return True
    flag = resource.get("valueBoolean")
    return flag if values == ["valueBoolean"] and isinstance(flag, bool) else None


def metastatic_history(index: ObservationIndex) -> list[HistoryAssertion]:
    """Counted, valid assertions not dated after the evaluation date, newest first (undated last)."""
    out = []
    for item in index.by_input.get(INPUT, ()):
        head = item.entry.head
        if head.status not in COUNTED_STATUS or head.dataAbsentReason is not None:
            continue
        if item.when is not None and item.when[0] > index.as_of:
            continue
        if index.invalid(item.entry) is not None:
            continue
        r = item.entry.resource
        out.append(HistoryAssertion(item.entry.ref, concept_text(r.get("code")) or item.code.display,
                                    item.when_text, _present(r)))
    out.sort(key=lambda a: (a.when_text is not None, a.when_text or "", a.ref or ""), reverse=True)
    return out
