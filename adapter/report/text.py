"""EligibilityReport → a readable table for a research coordinator (terminal or printout)."""

from __future__ import annotations

import textwrap

from ..criteria.model import EligibilityReport

MARK = {"met": "MET", "not-met": "NOT MET", "unknown": "UNKNOWN", "not-applicable": "n/a"}


def render(report: EligibilityReport, width: int = 110) -> str:
    t = report.trial
    lines = [
        f"{t.short_title} ({t.nct}) eligibility — trial version {t.version}",
        f"Patient {report.patient} · evaluated on {report.as_of.isoformat()}",
        f"Cohort: {t.cohorts[report.cohort].title if report.cohort else '—'}",
        f"Overall: {report.overall.upper()}",
        *(f"  · {r}" for r in report.reasons),
        "",
    ]
    id_w, st_w = 24, 8
    text_w = max(30, width - id_w - st_w - 4)
    lines.append(f"{'criterion':<{id_w}}  {'status':<{st_w}}  requirement / patient / note")
    lines.append("-" * min(width, id_w + st_w + 4 + text_w))
    for c in report.criteria:
        body = [f"needs {c.requirement}"]
        if c.observed:
            body.append(f"patient: {c.observed}")
        if c.note:
            body.append(f"note: {c.note}")
        if c.evidence:
            body.append("evidence: " + ", ".join(c.evidence))
        wrapped = [w for b in body for w in textwrap.wrap(b, text_w, subsequent_indent="  ")]
        for i, w in enumerate(wrapped):
            head = f"{c.id:<{id_w}}  {MARK[c.status]:<{st_w}}" if i == 0 else " " * (id_w + st_w + 2)
            lines.append(f"{head}  {w}")
    lines += ["", "To confirm with the patient (never in the chart):"]
    lines += [f"  [ ] {a.text}" for a in t.attestations]
    if report.data_notes:
        lines += ["", "Data notes:", *(f"  · {n}" for n in report.data_notes)]
    return "\n".join(lines)
