"""medications.md: the drug classes prior-therapy criteria look for, and which medication records count."""

from __future__ import annotations

from ..tables import medications
from ..trials import Trial
from . import markdown as md
from .sources import pair, raw, source


def document(trials: list[tuple[str, Trial]]) -> str:
    table = medications()
    data = raw("medications.yaml")
    intro = [
        f"Medication resources are matched by RxNorm ingredient code ({md.code(table.system, False)}) first; a "
        "coding without a listed code is matched by ingredient or brand name (whole word, case-insensitive) in "
        "its display or text, and the evidence says so. A `medicationReference` is followed to its Medication.",
    ]
    users = [f"- Read by {md.code(stem, False)}: "
             + ", ".join(f"[{md.code(c.id, False)}](criteria-{stem}.md#{c.id})" for c in trial.specs
                         if getattr(c.params, "drugs", None) == "ici")
             for stem, trial in trials if any(getattr(c.params, "drugs", None) == "ici" for c in trial.specs)]
    rows = [[md.text(d.name), md.code(d.rxnorm) if d.rxnorm else "name only", ", ".join(md.code(n) for n in d.names),
             md.text(e.get("target", "")), md.text(source(e))] for d, e in pair(table.ici, data.get("ici"))]
    ici = ["## `ici`", "", "Immune checkpoint inhibitors.", *(["", *users] if users else []), "",
           *md.table(["drug", "RxNorm", "names matched", "target", "source"], rows)]
    excluded = ["## Records that do not count", "", "A record with one of these statuses is not exposure:", "",
                *md.table(["resource", "status"],
                          [[md.code(k), ", ".join(md.code(s) for s in sorted(v))]
                           for k, v in sorted(table.excluded_status.items())])]
    intents = data.get("exposure_intent") or {}
    intent_rows = [[md.code(k), ", ".join(md.code(c) for c in sorted(codes)), "yes" if absent else "no",
                    md.text(source(intents.get(k)))]
                   for k, (codes, absent) in sorted(table.exposure_intent.items())]
    exposure = ["## Requests that are exposure", "", "Only a request whose intent is an order: the drug was "
                "authorised to be given.", "",
                *md.table(["resource", "intents", "no intent counts", "source"], intent_rows)]
    return md.document("Medications", intro, ici, excluded, exposure)
