"""EligibilityReport → a readable table for a research coordinator (terminal or printout).

Chart text (displays, units, a server's diagnostics) is shown through `plain`: a chart can carry
terminal escape sequences and bidirectional overrides, which would rewrite the screen or show a value
reversed.
"""

from __future__ import annotations

import re
import textwrap

from ..criteria.model import EligibilityReport

# C0 and C1 controls (newlines and tabs included: one value, one line) and Unicode's bidirectional
# embeddings, overrides and isolates, which make text display in another order than it is stored.
_UNSHOWN = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]+")


def plain(text: str) -> str:
    """Text from the chart as one line that shows what it stores: every run of control or bidi-control
    characters becomes one space."""
    return _UNSHOWN.sub(" ", text).strip()


MARK = {"met": "MET", "not-met": "NOT MET", "unknown": "UNKNOWN", "not-applicable": "n/a"}


def render(report: EligibilityReport, width: int = 110) -> str:
    t = report.trial
    lines = [
        f"{t.short_title} ({t.nct}) eligibility — trial version {t.version}",
        f"Patient {plain(report.patient)} · evaluated on {report.as_of.isoformat()}",
        f"Cohort: {t.cohorts[report.cohort].title if report.cohort else '—'}",
        f"Overall: {report.overall.upper()}",
        *(f"  · {plain(r)}" for r in report.reasons),
        "",
    ]
    id_w, st_w = 24, 8
    text_w = max(30, width - id_w - st_w - 4)
    lines.append(f"{'criterion':<{id_w}}  {'status':<{st_w}}  requirement / patient / note")
    lines.append("-" * min(width, id_w + st_w + 4 + text_w))
    for c in report.criteria:
        body = [f"needs {c.requirement}"]
        if c.observed:
            body.append(f"patient: {plain(c.observed)}")
        if c.note:
            body.append(f"note: {plain(c.note)}")
        if c.evidence:
            body.append("evidence: " + ", ".join(plain(e) for e in c.evidence))
        wrapped = [w for b in body for w in textwrap.wrap(b, text_w, subsequent_indent="  ")]
        for i, w in enumerate(wrapped):
            head = f"{c.id:<{id_w}}  {MARK[c.status]:<{st_w}}" if i == 0 else " " * (id_w + st_w + 2)
            lines.append(f"{head}  {w}")
    lines += ["", "To confirm with the patient (never in the chart):"]
    lines += [f"  [ ] {a.text}" for a in t.attestations]
    if report.data_notes:
        lines += ["", "Data notes:", *(f"  · {plain(n)}" for n in report.data_notes)]
    return "\n".join(lines)
