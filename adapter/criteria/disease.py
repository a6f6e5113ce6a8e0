"""Disease criteria: diagnosis and cohort, advanced disease, measurable disease, prior ICI + progression."""

from __future__ import annotations

from ..mapping.conditions import ConditionFact
from ..mapping.facts import Facts
from ..mapping.values import Measurement
from ..tables import Trial, answers, conditions
from .common import fmt, join
from .model import CriterionResult


def _cite(fact: ConditionFact) -> str:
    system = fact.coding[0].rsplit("/", 1)[-1]
    flag = "" if fact.verified_code else ", code not verified against a terminology server"
    return f"{fact.display} ({system} {fact.coding[1]}{flag})"


def diagnosis(facts: Facts, trial: Trial) -> tuple[CriterionResult, str | None]:
    """ASPS → cohort asps; other soft tissue sarcoma → safety run-in; bone sarcoma → a person decides."""
    requirement = trial.rule("diagnosis")["text"]
    missing = facts.missing_conditions()
    if missing:
        return CriterionResult("diagnosis", "unknown", requirement,
                               note=f"conditions could not be obtained ({missing})"), None
    for set_id, cohort in (("asps", "asps"), ("soft-tissue-sarcoma", "safety-run-in"),
                           ("bone-sarcoma", "safety-run-in")):
        found = facts.having(set_id)
        if not found:
            continue
        confirmed = [f for f in found if f.confirmed] or found
        best = confirmed[0]
        refs = [f.ref or "" for f in found]
        notes = [f.note for f in found if f.note]
        if set_id == "bone-sarcoma":
            return CriterionResult(
                "diagnosis", "unknown", requirement, observed=_cite(best), evidence=refs,
                note=join("a sarcoma of bone is recorded; the safety run-in asks for an advanced soft "
                          "tissue sarcoma — the study team decides", *notes)), cohort
        if not best.confirmed:
            return CriterionResult(
                "diagnosis", "unknown", requirement, observed=_cite(best), evidence=refs,
                note=join(f"{conditions().sets[set_id].title} is recorded as unconfirmed/provisional; "
                          "the protocol asks for histological or cytological confirmation", *notes)), cohort
        return CriterionResult("diagnosis", "met", requirement, observed=_cite(best), evidence=refs,
                               note=join(*notes)), cohort
    return CriterionResult("diagnosis", "not-met", requirement,
                           note="no sarcoma diagnosis among the patient's current conditions"), None


def _metastatic_observation(m: Measurement) -> bool:
    table = answers()
    for _, code in m.concepts:
        if m.input == "tnm-distant-metastasis" and code.startswith(table.m1_prefixes):
            return True
        if m.input == "stage-group" and code.upper() in table.stage_iv_codes:
            return True
    return False


def advanced_disease(facts: Facts, trial: Trial) -> CriterionResult:
    requirement = trial.rule("advanced-disease")["text"]
    mets = facts.having("metastasis")
    if mets:
        return CriterionResult("advanced-disease", "met", requirement, observed=_cite(mets[0]),
                               evidence=[m.ref or "" for m in mets])
    staged = [m for i in ("tnm-distant-metastasis", "stage-group")
              for m in facts.observations.all_in_window(i, None) if _metastatic_observation(m)]
    if staged:
        return CriterionResult("advanced-disease", "met", requirement, observed=staged[0].dated,
                               evidence=[m.ref or "" for m in staged])
    missing = facts.missing_conditions() or facts.missing_inputs("tnm-distant-metastasis", "stage-group")
    return CriterionResult(
        "advanced-disease", "unknown", requirement,
        note=join(f"data could not be obtained ({missing})" if missing else None,
                  "no metastasis or stage IV / M1 recorded; confirm the disease is unresectable "
                  "(not curable by surgery)"))


def measurable_disease(facts: Facts, trial: Trial) -> CriterionResult:
    """At least one lesion >= 10 mm by CT/MRI/calipers or >= 20 mm by chest x-ray; no method: >= 20 mm."""
    rule = trial.rule("measurable-disease")
    thresholds = {k: float(v) for k, v in rule["min_mm"].items()}
    requirement = rule["text"]
    window = trial.window("measurable-disease")
    missing = facts.missing_inputs("tumor-size")
    if missing:
        return CriterionResult("measurable-disease", "unknown", requirement,
                               note=f"data could not be obtained ({missing})")
    sizes = [m for m in facts.observations.all_in_window("tumor-size", window)
             if m.value is not None and not m.unit_error]
    if not sizes:
        sel = facts.observations.latest("tumor-size", window)
        return CriterionResult("measurable-disease", "unknown", requirement,
                               observed=sel.stale.dated if sel.stale else None,
                               evidence=[sel.stale.ref or ""] if sel.stale else [],
                               note=sel.absence("tumor measurement", window))
    methods = answers().tumor_method
    undecided: list[str] = []
    for m in sizes:
        assert m.value is not None
        category = next((methods[c] for c in m.methods if c in methods), "unspecified")
        limit = thresholds[category]
        verdict = m.value.ge(limit)
        if verdict:
            how = category.replace("-", " ") if category != "unspecified" else "no method recorded"
            return CriterionResult("measurable-disease", "met", requirement, observed=m.dated,
                                   evidence=[m.ref or ""], note=f"{how}: >= {fmt(limit)} mm")
        smallest_limit = min(thresholds.values())
        if category == "unspecified" and m.value.ge(smallest_limit) is not False:
            undecided.append(f"{m.original} ({m.when_text}) has no measurement method: measurable only "
                             f"if by CT, MRI or calipers")
        elif verdict is None:
            undecided.append(f"{m.original} ({m.when_text}) spans the {fmt(limit)} mm threshold")
    largest = sizes[0]
    if undecided:
        return CriterionResult("measurable-disease", "unknown", requirement, observed=largest.dated,
                               evidence=[m.ref or "" for m in sizes], note=join(*undecided))
    return CriterionResult("measurable-disease", "not-met", requirement, observed=largest.dated,
                           evidence=[m.ref or "" for m in sizes],
                           note=f"every lesion measured in the last {window} days is below the "
                                "threshold for its method")


def prior_ici_progression(facts: Facts, trial: Trial, cohort: str | None) -> CriterionResult:
    rule = trial.rule("prior-ici-progression")
    requirement = rule["text"]
    if cohort not in rule.get("cohorts", []):
        return CriterionResult("prior-ici-progression", "not-applicable", requirement,
                               note="applies to the ASPS cohort only")
    missing = facts.missing_medications() or facts.missing_inputs("disease-status")
    exposures = facts.exposures
    if not exposures:
        return CriterionResult(
            "prior-ici-progression", "unknown", requirement,
            note=join(f"data could not be obtained ({missing})" if missing else None,
                      "no prior immune checkpoint inhibitor found in the medication history; "
                      "check outside records"))
    dated = [e for e in exposures if e.start is not None]
    first = min(dated, key=lambda e: e.start) if dated else None  # type: ignore[arg-type,return-value]
    statuses = facts.observations.all_in_window("disease-status", None)
    outcome = answers().disease_status
    worsened = [m for m in statuses if any(outcome.get(c) == "worsened" for c in m.concepts)]
    drug_text = (f"{first.drug} from {first.start_text}" if first else f"{exposures[0].drug} (undated)")
    by_name = [f"{e.drug} matched by name, not RxNorm code" for e in exposures[:1] if e.by_name]
    ici_refs = [e.ref or "" for e in exposures]
    if first is None:
        return CriterionResult(
            "prior-ici-progression", "unknown", requirement, observed=drug_text, evidence=ici_refs,
            note=join("the ICI therapy has no date, so progression after it cannot be placed", *by_name))
    assert first.start is not None
    after = [m for m in worsened if m.when > first.start]
    if after:
        p = after[0]
        return CriterionResult(
            "prior-ici-progression", "met", requirement, observed=f"{drug_text}; progression {p.when_text}",
            evidence=[*ici_refs, p.ref or ""], note=join(*by_name))
    return CriterionResult(
        "prior-ici-progression", "unknown", requirement, observed=drug_text, evidence=ici_refs,
        note=join("no disease progression documented after the ICI started; the protocol accepts "
                  "clinical or radiological progression (physician's rationale)", *by_name))
