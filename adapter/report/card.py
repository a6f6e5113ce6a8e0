"""EligibilityReport → one CDS Hooks 2.0 card (or none when the trial does not apply).

The card never carries null or empty optional fields (CDS Hooks 2.0: leave them out).

`detail` is GitHub-flavoured Markdown, rendered by the EHR — often as HTML. Everything in it that comes
from the chart or the EHR (what the patient has, notes, data notes: displays, units, a server's
diagnostics) goes through `md_text`, so it shows as the text it is: never HTML, a link, emphasis, a
code span, a new table cell or a new line. Our own markup (the table, bold, the checklist) and the
trial's own text are written as markup. `summary` and the suggestions hold no chart text.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ..criteria.model import EligibilityReport
from ..tables import observations
from .text import plain

STATUS_TEXT = {"met": "met", "not-met": "**not met**", "unknown": "unknown", "not-applicable": "n/a"}
OVERALL_TEXT = {"likely-eligible": "likely eligible", "needs-review": "needs review",
                "not-eligible": "not eligible"}
SUMMARY_LIMIT = 140


# Characters with a meaning anywhere in a line of CommonMark/GFM: escapes, code spans, emphasis and
# strikethrough, links and images, table cells, entities; `<` only where it could open HTML or an
# autolink (a tag name, `/`, `!`, `?`) — "<= 1.5 x ULN" stays as written.
_INLINE = re.compile(r"[\\`*_~\[\]|&]|<(?=[A-Za-z/!?])")
# At the start of a line (a data note is a list item) these open a heading, a quote, a list or a rule.
_BLOCK_START = re.compile(r"[#>+=-]|\d{1,9}[.)](?=\s|$)")


def md_text(text: str) -> str:
    """Chart text as inert Markdown: one line, every character that would be markup backslash-escaped
    (CommonMark: any ASCII punctuation may be), so a renderer shows it exactly as the chart has it."""
    out = _INLINE.sub(lambda m: "\\" + m.group(0), plain(text))
    start = _BLOCK_START.match(out)
    return out[: start.end() - 1] + "\\" + out[start.end() - 1:] if start else out


def _cell(text: str | None) -> str:
    """Our own text (the trial's requirement) in a table cell: pipes escaped, one line."""
    return (text or "—").replace("|", "\\|").replace("\n", " ")


def summary(report: EligibilityReport) -> str:
    trial = report.trial
    cohort = trial.cohorts[report.cohort].title.split(" (")[0] if report.cohort else None
    head = f"{trial.short_title} trial ({trial.nct}): {OVERALL_TEXT[report.overall]}"
    if report.overall == "likely-eligible" and cohort:
        text = f"{head}, {cohort}"
    elif report.overall == "not-eligible":
        failed = [c.id for c in report.criteria if c.status == "not-met"]
        text = f"{head} ({', '.join(failed)})" if failed else head
    elif report.overall == "needs-review":
        unknown = sum(c.status == "unknown" for c in report.criteria)
        text = f"{head}: {unknown} criteria to check" + (f", {cohort}" if cohort else "")
    else:
        text = head
    return text if len(text) < SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 2] + "…"


def detail(report: EligibilityReport) -> str:
    rows = ["| Criterion | Requirement | Patient | Status |", "|---|---|---|---|"]
    for c in report.criteria:
        shown = [md_text(t) for t in (c.observed, c.note if c.status != "met" else None) if t]
        patient = " — ".join(filter(None, shown)) or "—"
        rows.append(f"| {c.id} | {_cell(c.requirement)} | {patient} | {STATUS_TEXT[c.status]} |")
    checklist = [f"- [ ] {a.text}" for a in report.trial.attestations]
    parts = [
        f"**{OVERALL_TEXT[report.overall].capitalize()}** for {report.trial.title}"
        + (f" — {report.trial.cohorts[report.cohort].title}." if report.cohort else "."),
        "\n".join(rows),
        "**Confirm with the patient (not in the chart):**\n" + "\n".join(checklist),
        *(["**Data notes:**\n" + "\n".join(f"- {md_text(n)}" for n in report.data_notes)]
          if report.data_notes else []),
        f"Trial record version {report.trial.version} ({report.trial.record_source}). "
        f"Evaluated on {report.as_of.isoformat()} from structured chart data; unknown means the chart "
        "does not say, not that the patient fails.",
    ]
    return "\n\n".join(parts)


def _referral(report: EligibilityReport) -> dict[str, Any]:
    ref = report.trial.card["referral"]
    return {
        "label": f"Refer to the {report.trial.short_title} study team",
        "uuid": str(uuid.uuid4()),
        "isRecommended": report.overall == "likely-eligible",
        "actions": [{
            "type": "create",
            "description": ref["text"],
            "resource": {
                "resourceType": "ServiceRequest",
                "status": "draft",
                "intent": "proposal",
                "subject": {"reference": report.patient},
                "code": {"coding": [ref["code"]], "text": ref["text"]},
                "reasonCode": [{"text": f"{report.trial.short_title} pre-screen: "
                                        f"{OVERALL_TEXT[report.overall]}"}],
            },
        }],
    }


def _lab_orders(report: EligibilityReport) -> dict[str, Any] | None:
    lab_inputs: dict[str, str] = report.trial.card["lab_inputs"]
    missing = {lab_inputs[c.id] for c in report.criteria
               if c.id in lab_inputs and c.status == "unknown" and c.missing in ("absent", "stale")}
    panels = [p for p in observations().panels if missing & set(p.covers)]
    if not panels:
        return None
    return {
        "label": "Order missing labs",
        "uuid": str(uuid.uuid4()),
        "actions": [{
            "type": "create",
            "description": f"Order {p.display} (missing or stale: {', '.join(sorted(missing & set(p.covers)))})",
            "resource": {
                "resourceType": "ServiceRequest",
                "status": "draft",
                "intent": "proposal",
                "category": [{"coding": [dict(report.trial.card["lab_order_category"])]}],
                "subject": {"reference": report.patient},
                "code": {"coding": [{"system": observations().system, "code": p.code, "display": p.display}],
                         "text": p.display},
            },
        } for p in panels],
    }


def card(report: EligibilityReport) -> dict[str, Any] | None:
    """The card for this report; None when the trial does not apply (no sarcoma) or the patient is
    deceased (DESIGN.md: a deceased patient gets no referral, and no card suggesting one)."""
    if report.overall == "not-applicable" or report.deceased:
        return None
    spec = report.trial.card
    # a not-eligible patient is not referred (the card shows why); missing labs are worth ordering
    referral = _referral(report) if report.overall != "not-eligible" else None
    suggestions = [s for s in (referral, _lab_orders(report)) if s]
    out: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": summary(report),
        "indicator": "info",
        "detail": detail(report),
        "source": {"label": spec["source_label"], "url": report.trial.url, "topic": dict(spec["topic"])},
    }
    if suggestions:
        out["suggestions"] = suggestions
        out["selectionBehavior"] = "any"
    out["overrideReasons"] = [{"system": spec["override_system"], "code": r["code"], "display": r["display"]}
                              for r in spec["override_reasons"]]
    out["links"] = [{"label": f"{report.trial.short_title} on ClinicalTrials.gov", "url": report.trial.url,
                     "type": "absolute"}]
    return out


def cards_response(report: EligibilityReport) -> dict[str, Any]:
    c = card(report)
    return {"cards": [c] if c else []}
