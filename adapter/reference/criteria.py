"""criteria-<trial>.md: every criterion of one trial definition, in the report's order.

Each criterion shows the requirement exactly as its rule states it in the report and on the card (the
engine run on a patient with no data), the rule in clinical words built from its typed parameters, its
windows, cohorts and inputs, and every parameter with where it comes from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any, get_args

import orjson
from pydantic import BaseModel

from ..criteria import params as p
from ..criteria.evaluate import evaluate
from ..criteria.kinds import COHORT_KINDS
from ..engine import fhir_wanted, lookback_days
from ..fhir.bundle import record_from_bytes
from ..mapping.facts import build_facts
from ..report.card import criterion_label
from ..tables import answers, conditions, observations
from ..trials import Criterion, Trial
from . import markdown as md
from .sources import trial_file

# Any day will do: a requirement never depends on the evaluation date (every window counts back from it).
_AS_OF = date(2000, 1, 1)
# The parameters shown above the table rather than in it.
_SHOWN_ABOVE = ("text", "label", "sources")


def stated_requirements(trial: Trial) -> dict[str, str]:
    """Each criterion's `requirement` as the report and the card state it: the engine's own output for a
    patient with no data, so the reference can never word a rule differently from the report."""
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient", "id": "reference"}}]}
    record = record_from_bytes(orjson.dumps(bundle), fhir_wanted(trial))
    report = evaluate(build_facts(record, _AS_OF, lookback_days(trial)), trial)
    return {c.id: c.requirement for c in report.criteria}


def _label(input_id: str) -> str:
    return observations().inputs[input_id].label


def _set_title(set_id: str) -> str:
    return conditions().sets[set_id].title


def _n(value: float) -> str:
    return md.number(value)


def _uln(q: p.Quantity) -> str:
    return f"the result's own referenceRange.high, else {_n(q.value)} {q.unit} (shown as 'assumed ULN')"


def _diagnosis(x: p.Diagnosis, trial: Trial) -> str:
    rules = [f"{_set_title(r.condition)} → {trial.cohorts[r.cohort].title}"
             + (f" (unknown: {r.review})" if r.review else "") for r in x.rules]
    return "The first of these the patient has decides the cohort: " + "; ".join(rules) + \
        ". Only a confirmed diagnosis is met; an unconfirmed one is unknown. None of them: not-met (no card)."


def _advanced(x: p.AdvancedDisease, trial: Trial) -> str:
    shown = ", ".join(_label(i) for i in x.observations)
    return (f"A current {_set_title(x.condition)} condition, or {shown} showing metastatic disease "
            f"(M1 / stage IV), or a recorded {_label(x.history_input)}.")


def _measurable(x: p.MeasurableDisease, trial: Trial) -> str:
    limits = "; ".join(f"{category}: >= {_n(mm)} mm" for category, mm in x.min_mm.items())
    others = sorted(set(answers().tumor_method.values()) - set(x.min_mm))
    rest = f" Method categories without a limit ({', '.join(others)}) never qualify a lesion alone." if others else ""
    return f"A {_label(x.input)} at or above the limit of its measurement method — {limits}.{rest}"


def _prior(x: p.PriorTherapy, trial: Trial) -> str:
    return (f"A prior {x.drugs.upper()} in the medication history, then a worsened {_label(x.progression_input)} "
            f"dated after it started; other cohorts: not-applicable.")


def _no_prior(x: p.NoPriorTherapy, trial: Trial) -> str:
    return (f"No {x.drugs.upper()} in the medication history (any exposure: not-met); a history without one: "
            f"{x.when_none_recorded}; other cohorts: not-applicable.")


def _age(x: p.MinimumAge, trial: Trial) -> str:
    return f"Age >= {_n(x.min_years)} years on the evaluation date (a partial birth date decides only when " \
           "every possible birthday agrees)."


def _performance(x: p.PerformanceStatus, trial: Trial) -> str:
    return f"{_label(x.ecog_input)} <= {_n(x.ecog_max)} or {_label(x.karnofsky_input)} >= {_n(x.karnofsky_min)}."


def _lab_minimum(x: p.LabMinimum, trial: Trial) -> str:
    return f"{_label(x.input)} >= {_n(x.min)} {x.display_unit or x.unit}, compared in {x.unit}."


def _lab_uln(x: p.LabUlnMultiple, trial: Trial) -> str:
    raised = (f"; <= {_n(x.modifier.max_uln)} x ULN with confirmed {_set_title(x.modifier.condition)} (an "
              "unconfirmed one decides only where both limits agree)") if x.modifier else ""
    return f"{_label(x.input)} <= {_n(x.max_uln)} x ULN{raised}. ULN: {_uln(x.default_uln)}."


def _renal(x: p.RenalFunction, trial: Trial) -> str:
    return (f"{_label(x.input)} <= {_n(x.creatinine_max_uln)} x ULN (ULN: {_uln(x.default_uln)}), or creatinine "
            f"clearance >= {_n(x.crcl_min)} mL/min/1.73 m2 by Cockcroft-Gault: (140 − age) × weight kg / "
            f"(72 × creatinine mg/dL), × {_n(x.female_factor)} if female, × 1.73 / BSA (BSA: {x.bsa_formula} from "
            f"{_label(x.height_input)} and weight, else a recorded {_label(x.bsa_input)}); {x.weight} "
            f"{_label(x.weight_input)}. "
            f"Below age {_n(x.formula_validated_from_age)} the card notes the formula is not validated.")


def _unit(input_id: str) -> str:
    spec = observations().inputs[input_id]
    return spec.display_unit or spec.unit or ""


def _hiv(x: p.HivControlled, trial: Trial) -> str:
    unit = _unit(x.input)
    return (f"Only with {_set_title(x.condition)} recorded (else not-applicable): an undetectable "
            f"{_label(x.input)} in the window, taken as effective ART — below {_n(x.undetectable_below)} {unit}, "
            f"or '< X {unit}' for an assay limit X up to {_n(x.assay_limit_max)}; detectable: not-met; none in "
            "the window: unknown.")


def _pregnancy(x: p.NotPregnant, trial: Trial) -> str:
    hcg = next((i for i in x.inputs() if observations().inputs[i].unit), None)
    quantitative = (f"; {_label(hcg)} >= {_n(x.hcg_positive_min)} {_unit(hcg)} is positive, below "
                    f"{_n(x.hcg_negative_below)} negative, between: unknown") if hcg else ""
    return (f"Not-met when {_set_title(x.condition)} or breastfeeding is documented in the window"
            f"{quantitative}. Nothing documented: met.")


# Subclasses first (NoPriorTherapy is a PriorTherapy).
_DESCRIBE: list[tuple[type[Any], Callable[[Any, Trial], str]]] = [
    (p.Diagnosis, _diagnosis), (p.AdvancedDisease, _advanced), (p.MeasurableDisease, _measurable),
    (p.NoPriorTherapy, _no_prior), (p.PriorTherapy, _prior), (p.MinimumAge, _age),
    (p.PerformanceStatus, _performance), (p.LabMinimum, _lab_minimum), (p.LabUlnMultiple, _lab_uln),
    (p.RenalFunction, _renal), (p.HivControlled, _hiv), (p.NotPregnant, _pregnancy),
]


def in_words(criterion: Criterion, trial: Trial) -> str | None:
    """The rule in clinical words from its parameters; None for a kind this page does not know yet
    (its parameter table still shows everything)."""
    describe = next((f for t, f in _DESCRIBE if isinstance(criterion.params, t)), None)
    return describe(criterion.params, trial) if describe else None


def _flatten(value: Any, path: str, source: str) -> list[tuple[str, Any, str]]:
    """(parameter path, value, source) rows; an object's own `source` is the source of its other fields."""
    if isinstance(value, dict):
        own = str(value["source"]) if isinstance(value.get("source"), str) else source
        return [row for k, v in value.items() if k != "source" for row in _flatten(v, f"{path}.{k}", own)]
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return [row for i, v in enumerate(value) for row in _flatten(v, f"{path}[{i}]", source)]
    return [(path, value, source)]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return md.code(str(value).lower())
    if isinstance(value, int | float):
        return md.text(md.number(value))
    if isinstance(value, list):
        return ", ".join(md.code(v) for v in value)
    return md.text(value) if " " in str(value) else md.code(value)  # prose as prose, names and units as code


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (`Modifier | None`, `list[CohortRule]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _description(model: type[BaseModel], path: str) -> str | None:
    """A parameter's description in params.py, looked up along its path ('rules[0].review'); a key of a
    plain mapping ('min_mm.chest-x-ray') is described by the mapping's field."""
    name, _, rest = re.sub(r"\[\d+\]", "", path).partition(".")
    field = next((f for k, f in model.model_fields.items() if (f.alias or k) == name), None)
    if field is None:
        return None
    inner = _models(field.annotation)
    return _description(inner[0], rest) if rest and inner else field.description


def _parameters(criterion: Criterion, trial: Trial) -> list[str]:
    model = type(criterion.params)
    data = criterion.params.model_dump(by_alias=True, exclude_none=True)
    default_source = f"trial definition ({trial.version})"
    rows = []
    for name, value in data.items():
        if name in _SHOWN_ABOVE:
            continue
        for path, leaf, source in _flatten(value, name, criterion.params.sources.get(name, default_source)):
            rows.append([md.code(path), _value(leaf), md.text(_description(model, path) or ""),
                         md.text(criterion.params.sources.get(path, source))])
    return md.table(["parameter", "value", "meaning (adapter/criteria/params.py)", "source"], rows)


def _windows(criterion: Criterion, trial: Trial) -> str:
    params = criterion.params
    inputs = observations().inputs
    windowed = [i for i in params.inputs() if not inputs[i].history]
    if not windowed:
        history = [i for i in params.inputs() if inputs[i].history]
        return "whole history" if history else "none (it reads no time-bound observation)"
    own = params.window_days
    text = f"{own} days (`window_days`)" if own else f"{trial.default_window_days} days (the trial's default)"
    extra = [f"`{k}` {v} days" for k, v in params.model_dump().items() if k.endswith("_window_days") and v]
    return text + ("; " + ", ".join(extra) if extra else "")


def _cohorts(criterion: Criterion, trial: Trial) -> str:
    named = criterion.params.cohorts()
    if not named:
        return "every cohort"
    links = ", ".join(md.code(c, cell=False) for c in dict.fromkeys(named))
    if criterion.kind in COHORT_KINDS:
        return f"decides the cohort: {links}"
    return f"{links} only (others: not-applicable)"


def _reads(criterion: Criterion) -> list[str]:
    params = criterion.params
    inputs = observations().inputs
    out = []
    shown = [f"[{md.code(i, cell=False)}](observations.md#{i}) ({md.text(inputs[i].label)})" for i in params.inputs()]
    if shown:
        out.append("- Observations: " + ", ".join(shown))
    sets = [f"[{md.code(s, cell=False)}](conditions.md#{s}) ({md.text(_set_title(s))})"
            for s in dict.fromkeys(params.condition_sets())]
    if sets:
        out.append("- Conditions: " + ", ".join(sets))
    drugs = getattr(params, "drugs", None)
    if isinstance(drugs, str):
        out.append(f"- Medications: [{md.code(drugs, cell=False)}](medications.md#{drugs})")
    if isinstance(params, p.MeasurableDisease):
        out.append("- Method categories: [tumor-method](answers.md#tumor-method)")
    if not out:
        out.append("- Patient.birthDate" if isinstance(params, p.MinimumAge) else "- nothing from the chart")
    return out


def _criterion(criterion: Criterion, trial: Trial, stated: str) -> list[str]:
    words = in_words(criterion, trial)
    lines = [
        f"## {md.code(criterion.id, cell=False)}",
        "",
        f"**{md.text(criterion_label(trial, criterion.id))}** · kind {md.code(criterion.kind, cell=False)} · "
        f"cohorts: {_cohorts(criterion, trial)} · look-back: {_windows(criterion, trial)}",
        "",
        f"- Requirement (report and card): {md.words(stated)}",
    ]
    if words:
        lines.append(f"- In clinical words: {md.words(words)}")
    if criterion.params.text and criterion.params.text != stated:
        lines.append(f"- Protocol wording: {md.text(criterion.params.text)}")
    lines += ["", "Reads:", "", *_reads(criterion), "", *_parameters(criterion, trial)]
    return lines


def document(stem: str, trial: Trial) -> str:
    stated = stated_requirements(trial)
    intro = [
        f"{md.text(trial.title)} — {md.link(trial.nct, trial.url)}, trial version {md.code(trial.version, cell=False)} "
        f"(record {md.text(trial.record_date)}), from {md.code(trial_file(trial), cell=False)} "
        f"(`--trial {stem}`).",
        "",
        f"The file encodes: {md.text(trial.record_source)}. A parameter without its own source is the trial "
        "definition's (its comments give the reasons for choices the protocol leaves open). Time-bound data "
        f"is read over {trial.default_window_days} days before the evaluation date unless a criterion says "
        "otherwise. The report lists the criteria in this order; statuses: met, not-met, unknown (data "
        "missing, stale or ambiguous), not-applicable.",
    ]
    cohorts = ["## Cohorts", "", *md.table(
        ["cohort", "title", "open"],
        [[md.code(c.id), md.text(c.title), "yes" if c.open else "**closed**"] for c in trial.cohorts.values()])]
    attest = ["## Attestations", "", "Listed on the card as a checklist; they never block.", "", *md.table(
        ["id", "text"], [[md.code(a.id), md.text(a.text)] for a in trial.attestations])]
    criteria = [line for c in trial.specs for line in ["", *_criterion(c, trial, stated[c.id])]][1:]
    return md.document(f"{md.text(trial.short_title)} criteria ({md.text(trial.version)})",
                       intro, cohorts, attest, criteria)
