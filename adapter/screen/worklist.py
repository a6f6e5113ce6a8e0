"""worklist.json and worklist.csv: the contract of DESIGN.md "Population screening".

Attrition — patients remaining after each step:
1. `patients screened`: every Patient resource of the source (distinct ids);
2. `with a cohort diagnosis code`: a Condition of one of the trial's cohort diagnosis sets (the SQL
   narrowing; the engine reads nothing else to put a patient in a cohort);
3. `in a cohort`: the engine's verdict is not `not-applicable` (the diagnosis is met or unknown: a
   refuted, entered-in-error or not-yet-recorded diagnosis drops out here);
4. `not excluded`: no verdict `not-eligible` (no criterion not met, not deceased, cohort open);
5. `likely eligible`: every criterion met or not applicable.

`patients` holds one row per patient of step 3, likely-eligible first, then needs-review, then
not-eligible, each by patient reference. `unreadable` (beyond the contract) lists the candidates the engine
could not evaluate, with why: they are in no other row, never reported as not eligible.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date
from typing import Any

from ..trials import Trial
from .decide import PatientResult

RANK = {"likely-eligible": 0, "needs-review": 1, "not-eligible": 2}
STEPS = ("patients screened", "with a cohort diagnosis code", "in a cohort", "not excluded", "likely eligible")


def _row(report: dict[str, Any]) -> dict[str, Any]:
    statuses = {c["id"]: c["status"] for c in report["criteria"]}
    return {"patient": report["patient"], "overall": report["overall"], "cohort": report["cohort"],
            "statuses": statuses, "failing": [k for k, v in statuses.items() if v == "not-met"],
            "unknown": [k for k, v in statuses.items() if v == "unknown"]}


def in_worklist(results: Iterable[PatientResult]) -> list[PatientResult]:
    """The results of patients the trial applies to, in the worklist's order."""
    kept = [r for r in results if r.report is not None and r.report["overall"] != "not-applicable"]
    return sorted(kept, key=lambda r: (RANK[r.report["overall"]] if r.report else 9, r.patient))


def build(trial: Trial, as_of: date, screened: int, candidates: int, results: list[PatientResult],
          notes: list[str] | None = None) -> dict[str, Any]:
    rows = [_row(r.report) for r in in_worklist(results) if r.report is not None]
    remaining = (screened, candidates, len(rows), sum(r["overall"] != "not-eligible" for r in rows),
                 sum(r["overall"] == "likely-eligible" for r in rows))
    doc: dict[str, Any] = {
        "trial": {"id": trial.id, "nct": trial.nct, "version": trial.version},
        "asOf": as_of.isoformat(),
        "screened": screened,
        "candidates": candidates,
        "attrition": [{"step": step, "remaining": n} for step, n in zip(STEPS, remaining, strict=True)],
        "patients": rows,
        "unreadable": sorted(({"patient": r.patient, "reason": r.problem or ""} for r in results
                              if r.report is None), key=lambda u: u["patient"]),
    }
    if notes:
        doc["notes"] = list(notes)
    return doc


def to_csv(doc: dict[str, Any], criterion_ids: Iterable[str]) -> str:
    """The rows of `patients`, one per line: statuses one column per criterion, lists space-separated."""
    ids = list(criterion_ids)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["patient", "overall", "cohort", "failing", "unknown", *ids])
    for row in doc["patients"]:
        writer.writerow([row["patient"], row["overall"], row["cohort"] or "", " ".join(row["failing"]),
                         " ".join(row["unknown"]), *(row["statuses"].get(i, "") for i in ids)])
    return out.getvalue()
