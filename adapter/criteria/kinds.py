"""Criterion kinds: each name a trial file may give as `kind`, with its parameter model and its rule.

One map, as in a rules engine: the trial definition says which rule each criterion applies and with
which parameters; adding a rule is adding an entry here (and its model in `params.py`); changing a
threshold, window, cohort or code never is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..mapping.facts import Facts
from . import disease, labs, patient, renal, therapy
from . import params as p
from .model import CriterionResult

if TYPE_CHECKING:
    from ..trials import Criterion, Trial


@dataclass(frozen=True)
class Context:
    """What a rule may know besides the facts: the trial it belongs to and the patient's cohort."""

    trial: Trial
    cohort: str | None


Rule = Callable[[Facts, "Criterion", Context], CriterionResult]


@dataclass(frozen=True)
class Kind:
    params: type[p.Params]
    rule: Rule


KINDS: dict[str, Kind] = {
    "diagnosis": Kind(p.Diagnosis, disease.diagnosis),
    "advanced-disease": Kind(p.AdvancedDisease, disease.advanced_disease),
    "measurable-disease": Kind(p.MeasurableDisease, disease.measurable_disease),
    "prior-therapy-progression": Kind(p.PriorTherapy, disease.prior_ici_progression),
    "no-prior-therapy": Kind(p.NoPriorTherapy, therapy.no_prior_therapy),
    "minimum-age": Kind(p.MinimumAge, patient.age),
    "performance-status": Kind(p.PerformanceStatus, patient.performance_status),
    "lab-minimum": Kind(p.LabMinimum, labs.threshold),
    "lab-uln-multiple": Kind(p.LabUlnMultiple, labs.uln_multiple),
    "renal-function": Kind(p.RenalFunction, renal.evaluate),
    "hiv-controlled": Kind(p.HivControlled, patient.hiv),
    "not-pregnant-or-breastfeeding": Kind(p.NotPregnant, patient.pregnancy_breastfeeding),
}

# Kinds whose result puts the patient in a cohort: they run first, and their not-met means the trial
# does not apply (no card).
COHORT_KINDS = frozenset({"diagnosis"})
