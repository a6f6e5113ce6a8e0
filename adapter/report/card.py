"""EligibilityReport → one CDS Hooks 2.0 card (or none when the trial does not apply).

The card never carries null or empty optional fields (CDS Hooks 2.0: leave them out).

`detail` is GitHub-flavoured Markdown, rendered by the EHR — often as HTML. Everything in it that comes
from the chart or the EHR (what the patient has, notes, data notes: displays, units, a server's
diagnostics) goes through `md_text`, so it shows as the text it is: never HTML, a link, emphasis, a
code span, a new table cell or a new line. Our own markup (the table, bold, the checklist) and the
trial's own text are written as markup. `summary` and the suggestions hold no chart text.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from ..cds.settings import Settings
from ..criteria.model import CriterionResult, EligibilityReport
from ..tables import observations
from ..trials import Trial
from .referral import StudyTeam, performer, recruitment_line, referable, referral_identifier
from .text import plain

# Lists only, no tables: EHR card renderers that show Markdown as text (or drop tables) still read well.
SETTLE = "; to settle: "
NOT_MET_HEADING, UNKNOWN_HEADING, NEEDS = "**Not met:**", "**Unknown — what would settle it:**", " — needs "
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


def plural(n: int, one: str, many: str) -> str:
    """'1 criterion', '2 criteria'."""
    return f"{n} {one if n == 1 else many}"


# Our own notation made clinical: comparators as symbols, microlitres as µL, ratios to the ULN with two
# decimals (one precision for every value, no rounding across a limit) and dates whose hyphens never break.
_RATIO = re.compile(r"(?<=\()(\d+(?:\.\d+)?) x ULN")
_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_SPACED_MICRO = re.compile(r"(?<=\d) /uL\b")
_MICRO = re.compile(r"(?<![A-Za-z])uL\b")
# the clearance unit "mL/min/1.73 m2" as "mL/min/1.73 m²", kept whole and on its value's line (the CDS
# Hooks sandbox split it at both spaces)
_SQUARE_METRES = re.compile(r"(?<=\d) m2\b")
_CLEARANCE = re.compile(r"(?<=\d) (?=mL/min\b)")
# a count of five or more digits before a unit ("12400 copies/mL"), grouped like "85,000/µL"; never a
# port or path segment of a URL ("http://host:18091/fhir")
_LONG_COUNT = re.compile(r"(?<![\d.,\w:/-])(\d{5,})(?= ?(?:copies\b|[A-Za-zµ]*/))")
# a resource our own notes name for the review app ("Gilbert syndrome documented (Condition/…-cond4)"):
# an id, not a finding — the review app links the resource itself
_REFERENCE = re.compile(r" \([A-Z][A-Za-z]+/[A-Za-z0-9.-]{1,64}\)")


def clinical(text: str) -> str:
    """A value, requirement or note in the notation a clinician reads (applied before `md_text`)."""
    out = _RATIO.sub(lambda m: f"{float(m.group(1)):.2f} × ULN", _REFERENCE.sub("", text))
    out = out.replace(" x ULN", " × ULN").replace(">=", "≥").replace("<=", "≤")
    out = _MICRO.sub("µL", _SPACED_MICRO.sub("/µL", out))
    out = _CLEARANCE.sub("\u00a0", _SQUARE_METRES.sub("\u00a0m²", out))
    out = _LONG_COUNT.sub(lambda m: f"{int(m.group(1)):,}", out)
    return _DATE.sub("\\1\u2011\\2\u2011\\3", out)


def label(report: EligibilityReport, cid: str) -> str:
    return criterion_label(report.trial, cid)


def criterion_label(trial: Trial, cid: str) -> str:
    """The criterion in a clinician's words: the trial file's `label`, else the label of the one
    Observation input it reads (mappings/observations.yaml), else its id."""
    params = trial.criterion(cid).params
    if params.label:
        return params.label
    own_input = getattr(params, "input", None)  # the kinds that read one Observation input (labs)
    spec = observations().inputs.get(own_input) if isinstance(own_input, str) else None
    return spec.label if spec else cid.replace("-", " ")


def _missing_labs(report: EligibilityReport) -> list[CriterionResult]:
    """Lab criteria unknown because the result is absent or stale: ordering the test settles them."""
    lab_inputs: dict[str, str] = report.trial.card.get("lab_inputs", {})
    return [c for c in report.criteria
            if c.id in lab_inputs and c.status == "unknown" and c.missing in ("absent", "stale")]


def _value(c: CriterionResult) -> str | None:
    """The deciding value without its date, when it is a number the summary may show (plain text, ours)."""
    if not c.observed:
        return None
    value = c.observed.split(" = ")[-1]
    value = clinical(re.sub(r" \([^)]*\)", "", value).split(", ")[0])
    return value if _NUMBER.fullmatch(value) else None


# a number with its unit, optionally after one word ("Karnofsky 60"): what the summary may quote
_NUMBER = re.compile(r"([A-Za-z]+ )?[<>≤≥]? ?\d[\d.,]* ?[A-Za-z/%µ]{0,8}(\.[0-9]+)?( [A-Za-z/%]{1,8})?")

# a rule's own short note ("pregnancy or breastfeeding documented"), never one quoting chart text
_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9 ,.≥≤/-]{0,68}")


def _finding(report: EligibilityReport, c: CriterionResult) -> str:
    """One failed criterion as the summary says it: 'platelets 85,000/µL (needs ≥ 100,000/µL)'."""
    value = _value(c)
    requirement = clinical(c.requirement)
    if value and len(requirement) <= 40:
        return f"{label(report, c.id)} {value} (needs {requirement})"
    if value:
        return f"{label(report, c.id)} {value}"
    note = plain(c.note or "")
    return note if _WORDS.fullmatch(note) else f"{label(report, c.id)} not met"


def summary(report: EligibilityReport) -> str:
    """< 140 characters, clinical words, the deciding value first. Plain text (CDS Hooks), no chart text
    beyond a number and its unit."""
    trial = report.trial
    cohort = trial.cohorts[report.cohort].title.split(" (")[0] if report.cohort else None
    head = f"{trial.short_title}: {OVERALL_TEXT[report.overall]}"
    if report.overall == "not-eligible":
        failed = [c for c in report.criteria if c.status == "not-met"]
        text = head + (f" — {_finding(report, failed[0])}" if failed else "")
        if len(failed) > 1:
            text += f" + {plural(len(failed) - 1, 'other criterion', 'other criteria')}"
    elif report.overall == "needs-review":
        labs = _missing_labs(report)
        others = [c for c in report.criteria if c.status == "unknown" and c not in labs]
        parts = []
        if labs:
            names = [label(report, c.id) for c in labs]
            parts.append(f"{plural(len(labs), 'lab', 'labs')} missing or stale "
                         f"({', '.join(names[:3])}{', …' if len(names) > 3 else ''})")
        if others:
            parts.append(f"{plural(len(others), 'criterion', 'criteria')} to check "
                         f"({', '.join(label(report, c.id) for c in others)})")
        text = head + (f" ({cohort})" if cohort else "") + (" — " + "; ".join(parts) if parts else "")
    elif cohort:
        text = f"{head} — {cohort}"
    else:
        text = head
    text = plain(text)
    return text if len(text) < SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 2].rstrip(" ,;(") + "…"


def _settle(report: EligibilityReport, c: CriterionResult) -> str:
    """What would turn an unknown into met or not met (our words)."""
    if c.missing == "unavailable":
        return "open the card again when the EHR's FHIR server answers"
    if c.missing in ("absent", "stale"):
        lab_inputs: dict[str, str] = report.trial.card.get("lab_inputs", {})
        spec = observations().inputs.get(lab_inputs.get(c.id, ""))
        return f"a new {spec.label if spec else label(report, c.id)} (last {report.trial.window(c.id)} days)"
    return "a coded entry in the chart, or the study team's review"


# a note that only restates the limit ("below 100,000/µL" beside "needs ≥ 100,000/µL")
_RESTATED = re.compile(r"(?:below|above|under|over) (.+)")


def _patient(c: CriterionResult) -> str:
    """Observed value and note, each once (a stale note already names the value and its date; a note
    that only restates the limit the row quotes anyway is left out)."""
    restated = _RESTATED.fullmatch(clinical(c.note or ""))
    note = None if restated and restated.group(1) in clinical(c.requirement) else c.note
    shown = [t for t in (c.observed, note) if t]
    if c.observed and note and c.observed in note:
        shown = [note]
    return " — ".join(md_text(clinical(t)) for t in shown) or "—"


def detail(report: EligibilityReport) -> str:
    """Decisive rows first: not met, then unknown with what would settle each, then met with a caveat
    (each caveat once); the plain met and the not-applicable criteria folded into one line each. A
    not-eligible card folds every met criterion: its caveats matter once the failure is corrected, and
    the card is evaluated again then."""
    eligible = report.overall != "not-eligible"
    failed = [c for c in report.criteria if c.status == "not-met"]
    unknown = [c for c in report.criteria if c.status == "unknown"]
    caveated = [c for c in report.criteria if c.status == "met" and c.note and eligible]
    plain_met = [c for c in report.criteria if c.status == "met" and c not in caveated]
    not_applicable = [c for c in report.criteria if c.status == "not-applicable"]
    cohort = report.trial.cohorts[report.cohort].title.split(" (")[0] if report.cohort else None
    parts = [f"**{OVERALL_TEXT[report.overall].capitalize()}** for {report.trial.short_title} ({report.trial.nct})"
             + (f" — {cohort}." if cohort else ".")]
    if failed:
        parts.append(NOT_MET_HEADING + "\n" + "\n".join(
            f"- **{md_text(label(report, c.id))}:** {_patient(c)}{NEEDS}{md_text(clinical(c.requirement))}"
            for c in failed))
    if unknown:
        parts.append(UNKNOWN_HEADING + "\n" + "\n".join(
            f"- **{md_text(label(report, c.id))}:** {_patient(c)}{NEEDS}{md_text(clinical(c.requirement))}"
            f"{SETTLE}{md_text(_settle(report, c))}" for c in unknown))
    if caveated:
        by_note: dict[str, list[CriterionResult]] = {}
        for c in caveated:
            by_note.setdefault(c.note or "", []).append(c)
        lines = [", ".join(f"{label(report, c.id)} {md_text(clinical(c.observed or ''))}".rstrip() for c in cs)
                 + f" — {md_text(clinical(note))}" for note, cs in by_note.items()]
        parts.append(f"**Met, with {'a note' if len(lines) == 1 else 'notes'} to read:**\n"
                     + "\n".join(f"- {line}" for line in lines))
    folded = []
    if plain_met:
        folded.append("**Also met:** " + ", ".join(label(report, c.id) for c in plain_met) + ".")
    if not_applicable:
        folded.append("**Not applicable:** " + ", ".join(
            label(report, c.id) + (f" ({md_text(c.note)})" if c.note else "") for c in not_applicable) + ".")
    if folded:
        parts.append("  \n".join(folded))
    if eligible and report.trial.attestations:
        parts.append("**Confirm with the patient (not in the chart):**\n"
                     + "\n".join(f"- [ ] {a.text}" for a in report.trial.attestations))
    if report.data_notes:
        parts.append("**Data notes:**\n" + "\n".join(f"- {md_text(n)}" for n in report.data_notes))
    return "\n\n".join(parts)


def _footer(report: EligibilityReport, suppress_days: int | None) -> str:
    """The small print, one paragraph: when and from what, what unknown means (only when a row is
    unknown), how long Dismiss hides the card."""
    unknown = any(c.status == "unknown" for c in report.criteria)
    return (f"Evaluated on {clinical(report.as_of.isoformat())} from structured chart data (trial record "
            f"version {report.trial.version})."
            + (" Unknown means the chart does not say, not that the patient fails." if unknown else "")
            + " " + _dismiss_note(suppress_days))


def _dismiss_note(suppress_days: int | None) -> str:
    """How long dismissing with a reason hides the card (settings.suppress_days; the service's default)."""
    if suppress_days is None:
        suppress_days = int(Settings.model_fields["suppress_days"].default)
    return (f"Dismissing this card with a reason hides it for {plural(suppress_days, 'day', 'days')}, "
            "unless the verdict changes.")


def _recruitment(report: EligibilityReport, team: StudyTeam | None) -> str:
    """Whom to contact and whether they enrol: for a patient who may be eligible only."""
    if report.overall == "not-eligible":
        return ""
    return f"**Recruitment:** {md_text(recruitment_line(report, team))}.\n\n"


def _referral(report: EligibilityReport, team: StudyTeam | None) -> dict[str, Any]:
    ref = report.trial.card["referral"]
    return {
        "label": f"Refer to the {report.trial.short_title} study team" + (f" ({team.name})" if team else ""),
        "uuid": str(uuid.uuid4()),
        "isRecommended": report.overall == "likely-eligible",
        "actions": [{
            "type": "create",
            "description": ref["text"],
            "resource": {
                "resourceType": "ServiceRequest",
                **referral_identifier(report),  # one referral per trial and patient: the review app finds it
                "status": "draft",
                "intent": "proposal",
                "subject": {"reference": report.patient},
                "code": {"coding": [ref["code"]], "text": ref["text"]},
                "reasonCode": [{"text": f"{report.trial.short_title} pre-screen: "
                                        f"{OVERALL_TEXT[report.overall]}"}],
                **performer(team),
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


def card(report: EligibilityReport, suppress_days: int | None = None,
         team: StudyTeam | None = None, review_url: str | None = None,
         hook_instance: str | None = None) -> dict[str, Any] | None:
    """The card for this report; None when the trial does not apply (no sarcoma) or the patient is
    deceased (DESIGN.md: a deceased patient gets no referral, and no card suggesting one).

    `review_url`: the review app's launch URL (adapter/review), when the service has one set up; the card
    then links to it as a SMART app, with the trial and `hook_instance` as appContext (no PHI)."""
    if report.overall == "not-applicable" or report.deceased:
        return None
    spec = report.trial.card
    # a not-eligible patient is not referred (the card shows why), nor one whose cohort or site does not
    # enrol now; missing labs are worth ordering
    referral = _referral(report, team) if referable(report, team) else None
    suggestions = [s for s in (referral, _lab_orders(report)) if s]
    out: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": summary(report),
        "indicator": "info",
        "detail": detail(report) + "\n\n" + _recruitment(report, team) + _footer(report, suppress_days),
        "source": {"label": spec["source_label"], "url": report.trial.url, "topic": dict(spec["topic"])},
    }
    if suggestions:
        out["suggestions"] = suggestions
        out["selectionBehavior"] = "any"
    out["overrideReasons"] = [{"system": spec["override_system"], "code": r["code"], "display": r["display"]}
                              for r in spec["override_reasons"]]
    out["links"] = [{"label": f"{report.trial.short_title} on ClinicalTrials.gov", "url": report.trial.url,
                     "type": "absolute"}]
    if review_url:  # read back by adapter/review/config.py read_app_context
        context = {"trial": report.trial.id, **({"hookInstance": hook_instance} if hook_instance else {})}
        out["links"].insert(0, {"label": "Review eligibility", "url": review_url, "type": "smart",
                                "appContext": json.dumps(context, separators=(",", ":"))})
    return out


def cards_response(report: EligibilityReport) -> dict[str, Any]:
    c = card(report)
    return {"cards": [c] if c else []}
