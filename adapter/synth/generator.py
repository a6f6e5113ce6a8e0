"""Seeded synthetic AXIOM patients: hand-designed scenarios with known verdicts, and random patients.

A patient is first a `Design` — what is clinically true about them — and `build` turns a design into a
FHIR R4 Bundle. Scenarios are designs written by hand; random patients are designs drawn from
`random.Random(seed)` (never the global generator), so the same seed gives byte-identical files.
Every date is relative to `as_of`, so a scenario means the same thing on any evaluation date.

Regenerate the committed fixtures with
`axiom-cds synth tests/fixtures --seed 7 --count 6 --as-of 2026-11-21 --scenarios`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .. import tables
from . import fhir
from .fhir import ICD10, ICDO3, LOINC, SNOMED, Resource

Concept = tuple[str, str, str]  # system, code, display


# --------------------------------------------------------------------------- clinical vocabulary


@dataclass(frozen=True)
class Unit:
    """How one feed reports a lab: the spelling, the UCUM code (None: free text only) and the scale."""

    text: str
    ucum: str | None
    per_us: float  # value in this unit = value in US conventional units × per_us
    digits: int  # decimals the lab reports
    loinc: str | None = None  # the molar LOINC code this unit needs, else the lab's own code


@dataclass(frozen=True)
class Lab:
    """A lab the criteria read, with plausible values in US conventional units."""

    loinc: str
    ref: tuple[float, float]  # reference interval
    typical: tuple[float, float]  # a well patient's values
    abnormal: tuple[float, float]  # plausible values that fail the protocol threshold
    units: Mapping[str, Unit]  # by style: us (conventional), si, feed (real-world free-text spellings)


_COUNT_10_3 = {"us": Unit("K/uL", "10*3/uL", 1, 2), "si": Unit("10*9/L", "10*9/L", 1, 2),
               "feed": Unit("x10E3/uL", None, 1, 2)}
_ENZYME = {"us": Unit("U/L", "U/L", 1, 0), "si": Unit("ukat/L", "ukat/L", 1 / 60, 2),
           "feed": Unit("IU/L", None, 1, 0)}

LABS: dict[str, Lab] = {
    "anc": Lab("751-8", (1.5, 7.5), (2.2, 6.5), (0.3, 0.95), _COUNT_10_3),
    "platelets": Lab("777-3", (150, 400), (165, 380), (35, 95), {
        "us": Unit("K/uL", "10*3/uL", 1, 0), "si": Unit("10*9/L", "10*9/L", 1, 0),
        "feed": Unit("thou/uL", None, 1, 0)}),
    "hemoglobin": Lab("718-7", (12.0, 16.0), (11.6, 15.4), (7.1, 8.8), {
        "us": Unit("g/dL", "g/dL", 1, 1), "si": Unit("mmol/L", "mmol/L", 10_000 / 16_114.5, 2, "59260-0"),
        "feed": Unit("g/L", None, 10, 0)}),
    "total-bilirubin": Lab("1975-2", (0.1, 1.2), (0.3, 1.0), (1.9, 3.4), {
        "us": Unit("mg/dL", "mg/dL", 1, 1), "si": Unit("umol/L", "umol/L", 10_000 / 584.66, 0, "14631-6"),
        "feed": Unit("µmol/L", None, 10_000 / 584.66, 0, "14631-6")}),
    "ast": Lab("1920-8", (10, 40), (14, 36), (105, 240), _ENZYME),
    "alt": Lab("1742-6", (7, 40), (10, 35), (105, 260), _ENZYME),
    "creatinine": Lab("2160-0", (0.6, 1.2), (0.6, 1.1), (2.4, 4.2), {
        "us": Unit("mg/dL", "mg/dL", 1, 2), "si": Unit("umol/L", "umol/L", 88.4, 0, "14682-9"),
        "feed": Unit("µmol/L", None, 88.4, 0, "14682-9")}),
    "albumin": Lab("1751-7", (3.5, 5.0), (3.5, 4.7), (1.8, 2.4), {
        "us": Unit("g/dL", "g/dL", 1, 1), "si": Unit("g/L", "g/L", 10, 0), "feed": Unit("g/dl", None, 1, 1)}),
    "sodium": Lab("2951-2", (135, 145), (136, 143), (121, 128), {
        "us": Unit("mEq/L", "meq/L", 1, 0), "si": Unit("mmol/L", "mmol/L", 1, 0),
        "feed": Unit("mEq/L", None, 1, 0)}),
}
UNIT_STYLES = ("us", "si", "feed")

#: A well adult's labs (US conventional units): every protocol threshold comfortably met.
NORMAL_LABS: Mapping[str, float] = {
    "anc": 3.8, "platelets": 245, "hemoglobin": 12.9, "total-bilirubin": 0.6, "ast": 24, "alt": 21,
    "creatinine": 0.82, "albumin": 4.1, "sodium": 139,
}

DIAGNOSES: dict[str, tuple[Concept, tuple[str, str] | None]] = {
    "asps": ((ICDO3, "9581/3", "Alveolar soft part sarcoma"), None),
    "asps-histology": ((ICD10, "C49.21", "Malignant neoplasm of connective and soft tissue of right lower "
                                          "limb, including hip"), ("9581/3", "Alveolar soft part sarcoma")),
    "leiomyosarcoma": ((ICDO3, "8890/3", "Leiomyosarcoma, NOS"), None),
    "synovial-sarcoma": ((ICDO3, "9040/3", "Synovial sarcoma, NOS"), None),
    "sarcoma": ((SNOMED, "424413001", "Sarcoma"), None),
    "breast-cancer": ((ICD10, "C50.911", "Malignant neoplasm of unspecified site of right female breast"),
                      None),
}
NON_SARCOMA = frozenset({"breast-cancer"})
#: Adult ages at which each diagnosis is usually seen (ASPS and synovial sarcoma: young adults).
ADULT_AGES: dict[str, tuple[int, int]] = {
    "asps": (18, 42), "asps-histology": (18, 42), "synovial-sarcoma": (18, 50), "leiomyosarcoma": (38, 80),
    "sarcoma": (18, 80), "breast-cancer": (32, 80),
}
#: Diagnoses also seen in children around 12, the protocol's lower age limit.
PEDIATRIC = frozenset({"asps", "asps-histology", "synovial-sarcoma", "sarcoma"})

METASTASES: dict[str, Concept] = {
    "lung": (ICD10, "C78.01", "Secondary malignant neoplasm of right lung"),
    "lung-nos": (ICD10, "C78.00", "Secondary malignant neoplasm of unspecified lung"),
    "liver": (SNOMED, "94381002", "Secondary malignant neoplasm of liver"),
    "liver-icd": (ICD10, "C78.7", "Secondary malignant neoplasm of liver and intrahepatic bile duct"),
    "bone": (ICD10, "C79.51", "Secondary malignant neoplasm of bone"),
    "brain": (ICD10, "C79.31", "Secondary malignant neoplasm of brain"),
}

OTHER_CONDITIONS: dict[str, Concept] = {
    "gilbert": (ICD10, "E80.4", "Gilbert syndrome"),
    "hiv": (SNOMED, "86406008", "Human immunodeficiency virus infection"),
    "hypertension": (ICD10, "I10", "Essential (primary) hypertension"),
    "hypothyroidism": (ICD10, "E03.9", "Hypothyroidism, unspecified"),
}

TUMOR_METHODS: dict[str, Concept] = {
    "ct": (SNOMED, "77477000", "Computerized axial tomography"),
    "mri": (SNOMED, "113091000", "Magnetic resonance imaging"),
    "chest-x-ray": (SNOMED, "399208008", "Plain chest X-ray"),
}

#: Order-entry text as it reaches FHIR from systems that send no RxNorm coding.
ICI_TEXT: dict[str, str] = {
    "pembrolizumab": "Keytruda 200 mg IV", "nivolumab": "Opdivo 240 mg IV every 2 weeks",
    "atezolizumab": "Tecentriq 1200 mg IV", "ipilimumab": "Yervoy 1 mg/kg IV",
    "durvalumab": "Imfinzi 1500 mg IV", "avelumab": "Bavencio 800 mg IV", "cemiplimab": "Libtayo 350 mg IV",
}

#: Drugs sarcoma patients also take, none of them checkpoint inhibitors (RxNorm ingredients).
OTHER_DRUGS: dict[str, str] = {
    "pazopanib": "714438", "doxorubicin": "3639", "ondansetron": "26225", "lisinopril": "29046",
}

MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
DISEASE_STATUS = {"worsened": "271299001", "stable": "359746009", "improved": "268910001"}


def ici_rxnorm(drug: str) -> str:
    """RxNorm ingredient code of a checkpoint inhibitor, read from mappings/medications.yaml."""
    found = next((d.rxnorm for d in tables.medications().ici if d.name == drug), None)
    if found is None:
        raise KeyError(f"{drug} has no RxNorm code in mappings/medications.yaml")
    return found


# --------------------------------------------------------------------------- the design of a patient


@dataclass(frozen=True)
class Design:
    """What is clinically true about one synthetic patient; days are counted back from `as_of`."""

    sex: str = "female"
    age: int = 34
    birth_precision: str = "day"  # day, month or year (partial birth dates straddle the birthday)
    birth_offset_days: int = 137  # days before the birthday that gives `age`
    diagnosis: str = "asps"
    metastases: tuple[str, ...] = ("lung", "liver")
    conditions: tuple[str, ...] = ()  # keys of OTHER_CONDITIONS
    tumor_mm: float | None = 32.0
    tumor_method: str | None = "ct"
    tumor_unit: str = "mm"
    ici: str | None = "pembrolizumab"
    ici_resource: str = "MedicationRequest"
    ici_by_name: bool = False  # text only ("Keytruda 200 mg IV"), no RxNorm coding
    ici_days_before: int = 430
    disease_status: str | None = "worsened"
    status_days_before: int = 60
    other_drugs: tuple[str, ...] = ()
    ecog: int | None = 1
    karnofsky: int | None = None
    labs: Mapping[str, float] = field(default_factory=lambda: dict(NORMAL_LABS))
    unit_style: str = "us"
    units: Mapping[str, str] = field(default_factory=dict)  # per-lab style, overriding unit_style
    lab_days_before: int = 7
    stale_labs: frozenset[str] = frozenset()  # drawn 45 days before as_of instead
    unranged_labs: frozenset[str] = frozenset()  # sent without referenceRange
    errors: Mapping[str, float] = field(default_factory=dict)  # a newer, entered-in-error value
    weight_kg: float | None = 64.0
    height_cm: float | None = 166.0
    body_units: str = "metric"  # metric or us ([lb_av], [in_i])
    hiv_viral_load: tuple[float, str | None] | None = None  # copies/mL, comparator
    pregnancy: str | None = "negative"  # positive, negative, or None (not documented)
    breastfeeding: bool = False


@dataclass(frozen=True)
class Case:
    """One synthetic patient: the Bundle, and the verdict it was designed to produce (if fixed)."""

    name: str
    bundle: dict[str, Any]
    expected_overall: str | None
    description: str


# --------------------------------------------------------------------------- Design → FHIR


class _Chart:
    """One patient's resources under construction; ids derive from the patient id, so they are stable."""

    def __init__(self, pid: str, as_of: date) -> None:
        self.pid = pid
        self.as_of = as_of
        self.subject = f"Patient/{pid}"
        self.resources: list[Resource] = []
        self._count = 0

    def rid(self, kind: str) -> str:
        self._count += 1
        return f"{self.pid}-{kind}{self._count}"

    def day(self, days_before: int) -> str:
        return (self.as_of - timedelta(days=days_before)).isoformat()

    def stamp(self, days_before: int) -> str:
        """A dateTime with a timezone, as results arrive from a lab system."""
        return f"{self.day(days_before)}T08:30:00-05:00"

    def add(self, resource: Resource) -> None:
        self.resources.append(resource)


def years_before(day: date, years: int) -> date:
    """The same calendar day `years` earlier (29 February → 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def birth_text(design: Design, as_of: date) -> str:
    """Birth date giving `age` on as_of. A partial date makes `age` the oldest possible age and `age - 1`
    the youngest, except when as_of is the last day of the year (year) or month (month)."""
    if design.birth_precision == "year":
        return str(as_of.year - design.age)
    if design.birth_precision == "month":
        return years_before(as_of, design.age).isoformat()[:7]
    return (years_before(as_of, design.age) - timedelta(days=design.birth_offset_days)).isoformat()


def _condition(chart: _Chart, what: Concept, days_before: int,
               histology: tuple[str, str] | None = None) -> None:
    chart.add(fhir.condition(chart.rid("cond"), chart.subject, *what, histology=histology,
                             recorded=chart.day(days_before)))


def _add_conditions(chart: _Chart, design: Design) -> None:
    what, histology = DIAGNOSES[design.diagnosis]
    _condition(chart, what, 900, histology)
    for i, key in enumerate(design.metastases):
        _condition(chart, METASTASES[key], 200 - 20 * i)
    for i, key in enumerate(design.conditions):
        _condition(chart, OTHER_CONDITIONS[key], 1500 + 30 * i)


def _tumor_size(chart: _Chart, design: Design) -> Resource | None:
    if design.tumor_mm is None:
        return None
    size = design.tumor_mm if design.tumor_unit == "mm" else round(design.tumor_mm / 10, 1)
    component = {"code": fhir.concept(LOINC, "33728-7", "Size.maximum dimension in Tumor"),
                 "valueQuantity": fhir.quantity(float(size), design.tumor_unit, design.tumor_unit)}
    method = TUMOR_METHODS.get(design.tumor_method or "")
    return fhir.observation(chart.rid("tumor"), chart.subject, "21889-1", chart.stamp(14), component=[component],
                            method=fhir.concept(*method) if method else None, category="imaging")


def _add_disease_observations(chart: _Chart, design: Design) -> None:
    tumor = _tumor_size(chart, design)
    if tumor is not None:
        chart.add(tumor)
    if design.disease_status is not None:
        status = fhir.concept(SNOMED, DISEASE_STATUS[design.disease_status], design.disease_status.title())
        chart.add(fhir.observation(chart.rid("status"), chart.subject, "97509-4",
                                   chart.stamp(design.status_days_before), coded=status, category="exam"))
    if design.ecog is not None:
        chart.add(fhir.observation(chart.rid("ecog"), chart.subject, "89247-1", chart.stamp(10),
                                   integer=design.ecog, category="survey"))
    if design.karnofsky is not None:
        chart.add(fhir.observation(chart.rid("kps"), chart.subject, "89243-0", chart.stamp(10),
                                   integer=design.karnofsky, category="survey"))


def _add_medications(chart: _Chart, design: Design) -> None:
    if design.ici is not None:
        rxnorm = None if design.ici_by_name else ici_rxnorm(design.ici)
        name = ICI_TEXT[design.ici] if design.ici_by_name else design.ici
        chart.add(fhir.medication_request(chart.rid("med"), chart.subject, rxnorm, name,
                                          chart.day(design.ici_days_before), resource_type=design.ici_resource))
    for i, drug in enumerate(design.other_drugs):
        chart.add(fhir.medication_request(chart.rid("med"), chart.subject, OTHER_DRUGS[drug], drug,
                                          chart.day(700 - 90 * i), resource_type="MedicationStatement"))


def _convert(value: float, unit: Unit) -> float:
    return round(value * unit.per_us, unit.digits)


def lab_observation(chart: _Chart, key: str, value: float, style: str, days_before: int, *,
                    ranged: bool = True, status: str = "final") -> Resource:
    """One lab result in the style's unit and LOINC code, with its reference range when `ranged`."""
    lab = LABS[key]
    unit = lab.units[style]
    obs = fhir.observation(chart.rid("lab"), chart.subject, unit.loinc or lab.loinc, chart.stamp(days_before),
                           value=_convert(value, unit), unit=unit.text, ucum=unit.ucum, status=status)
    if ranged:
        low, high = (_convert(v, unit) for v in lab.ref)
        obs["referenceRange"] = [fhir.reference_range(low, high, unit.text, unit.ucum)]
    return obs


def _add_labs(chart: _Chart, design: Design) -> None:
    for key, value in design.labs.items():
        style = design.units.get(key, design.unit_style)
        days = 45 if key in design.stale_labs else design.lab_days_before
        chart.add(lab_observation(chart, key, value, style, days, ranged=key not in design.unranged_labs))
        if key in design.errors:
            chart.add(lab_observation(chart, key, design.errors[key], style, max(days - 5, 0),
                                      ranged=key not in design.unranged_labs, status="entered-in-error"))


def _add_body(chart: _Chart, design: Design) -> None:
    us = design.body_units == "us"
    if design.weight_kg is not None:
        weight = (round(design.weight_kg * 2.20462, 1), "lb", "[lb_av]") if us else (design.weight_kg, "kg", "kg")
        chart.add(fhir.observation(chart.rid("vital"), chart.subject, "29463-7", chart.stamp(10),
                                   value=weight[0], unit=weight[1], ucum=weight[2], category="vital-signs"))
    if design.height_cm is not None:
        height = (round(design.height_cm / 2.54, 1), "in", "[in_i]") if us else (design.height_cm, "cm", "cm")
        chart.add(fhir.observation(chart.rid("vital"), chart.subject, "8302-2", chart.stamp(10),
                                   value=height[0], unit=height[1], ucum=height[2], category="vital-signs"))


def _add_hiv_and_pregnancy(chart: _Chart, design: Design) -> None:
    if design.hiv_viral_load is not None:
        copies, comparator = design.hiv_viral_load
        chart.add(fhir.observation(chart.rid("lab"), chart.subject, "20447-9", chart.stamp(12), value=copies,
                                   unit="copies/mL", ucum="{copies}/mL", comparator=comparator))
    if design.pregnancy is not None:
        answer = ("77386006", "Pregnant") if design.pregnancy == "positive" else ("60001007", "Not pregnant")
        chart.add(fhir.observation(chart.rid("preg"), chart.subject, "82810-3", chart.stamp(7),
                                   coded=fhir.concept(SNOMED, *answer), category="social-history"))
    if design.breastfeeding:
        chart.add(fhir.observation(chart.rid("preg"), chart.subject, "63895-7", chart.stamp(7),
                                   coded=fhir.concept(LOINC, "LA29252-6", "Currently breastfeeding"),
                                   category="social-history"))


def build(design: Design, pid: str, as_of: date, family: str = "Synthetic") -> dict[str, Any]:
    """Design → a collection Bundle holding exactly one Patient and their resources."""
    chart = _Chart(pid, as_of)
    _add_conditions(chart, design)
    _add_disease_observations(chart, design)
    _add_medications(chart, design)
    _add_labs(chart, design)
    _add_body(chart, design)
    _add_hiv_and_pregnancy(chart, design)
    patient = fhir.patient(pid, birth_text(design, as_of), design.sex, name=family)
    return fhir.bundle([patient, *chart.resources])


# --------------------------------------------------------------------------- hand-designed scenarios


@dataclass(frozen=True)
class Scenario:
    """A named design and the verdict the clinical rules of DESIGN.md give it."""

    name: str
    expected: str
    description: str
    design: Design


def _labs(**changes: float) -> dict[str, float]:
    """Normal labs with some values changed (keyword = lab key with '_' for '-')."""
    return {**NORMAL_LABS, **{k.replace("_", "-"): v for k, v in changes.items()}}


_BASE = Design()  # ASPS, lung + liver mets, CT 32 mm, pembrolizumab then progression, ECOG 1, female 34
_STS = Design(sex="male", age=58, diagnosis="leiomyosarcoma", metastases=("lung-nos",), tumor_mm=45.0,
              ici=None, disease_status=None, ecog=0, weight_kg=81.0, height_cm=178.0, pregnancy=None)
_CHILD = replace(_BASE, age=11, birth_offset_days=100, weight_kg=37.0, height_cm=146.0,
                 labs=_labs(creatinine=0.55), pregnancy=None)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("asps-likely-eligible", "likely-eligible",
             "ASPS (ICD-O-3 9581/3), lung + liver metastases, CT 32 mm, pembrolizumab then progression, "
             "ECOG 1, normal labs in US units with reference ranges, female 34, not pregnant", _BASE),
    Scenario("asps-si-units-likely-eligible", "likely-eligible",
             "ASPS via the mCODE histology extension on C49.21; labs in SI units (10*9/L, mmol/L Fe-basis "
             "hemoglobin, umol/L, ukat/L, g/L), creatinine and bilirubin as free-text µmol/L, weight in lb",
             replace(_BASE, diagnosis="asps-histology", unit_style="si",
                     units={"creatinine": "feed", "total-bilirubin": "feed"}, body_units="us")),
    Scenario("asps-ici-by-name-likely-eligible", "likely-eligible",
             "ASPS whose checkpoint inhibitor is a text-only MedicationStatement 'Keytruda 200 mg IV' "
             "(no RxNorm), progression after it; labs as free-text feed spellings (x10E3/uL, thou/uL, IU/L)",
             replace(_BASE, ici_by_name=True, ici_resource="MedicationStatement", unit_style="feed")),
    Scenario("sts-safety-run-in-likely-eligible", "likely-eligible",
             "leiomyosarcoma (8890/3) with lung metastases, CT 45 mm, no ICI (not needed in the run-in), "
             "ECOG 0, male 58", _STS),
    Scenario("asps-low-platelets-not-eligible", "not-eligible",
             "ASPS, otherwise eligible, platelets 85 K/uL (< 100,000/uL)",
             replace(_BASE, labs=_labs(platelets=85))),
    Scenario("asps-missing-labs-needs-review", "needs-review",
             "ASPS, otherwise eligible, no lab results at all", replace(_BASE, labs={})),
    Scenario("asps-stale-labs-needs-review", "needs-review",
             "ASPS, otherwise eligible, every lab drawn 60 days before the evaluation date (window 28)",
             replace(_BASE, lab_days_before=60)),
    Scenario("asps-entered-in-error", "likely-eligible",
             "ASPS; the newest platelet count (42 K/uL) is entered-in-error, the older valid one in the "
             "window is 245 K/uL", replace(_BASE, errors={"platelets": 42})),
    Scenario("gilbert-bilirubin", "likely-eligible",
             "ASPS with Gilbert syndrome (E80.4), total bilirubin 3.0 mg/dL = 2.5 x ULN (limit 3 x ULN)",
             replace(_BASE, conditions=("gilbert",), labs=_labs(total_bilirubin=3.0))),
    Scenario("liver-mets-ast", "likely-eligible",
             "ASPS with liver metastases (C78.7), AST 160 U/L = 4 x ULN and ALT 120 U/L = 3 x ULN "
             "(limit 5 x ULN)",
             replace(_BASE, metastases=("liver-icd",), labs=_labs(ast=160, alt=120))),
    Scenario("hiv-undetectable", "likely-eligible",
             "ASPS with HIV (SNOMED 86406008), viral load < 20 copies/mL 12 days ago",
             replace(_BASE, conditions=("hiv",), hiv_viral_load=(20, "<"))),
    Scenario("hiv-detectable-not-eligible", "not-eligible",
             "ASPS with HIV, viral load 12,400 copies/mL 12 days ago",
             replace(_BASE, conditions=("hiv",), hiv_viral_load=(12_400, None))),
    Scenario("pregnant-not-eligible", "not-eligible",
             "ASPS, otherwise eligible, pregnancy status 82810-3 = pregnant (SNOMED 77386006)",
             replace(_BASE, age=29, pregnancy="positive")),
    Scenario("breastfeeding-not-eligible", "not-eligible",
             "ASPS, otherwise eligible, breastfeeding status 63895-7 = currently breastfeeding",
             replace(_BASE, age=31, breastfeeding=True)),
    Scenario("child-age-11-not-eligible", "not-eligible",
             "ASPS in a child aged 11 on the evaluation date (full birth date)", _CHILD),
    Scenario("partial-birthdate-age-unknown", "needs-review",
             "ASPS, birth date given as a year only, the patient may be 11 or 12",
             replace(_CHILD, age=12, birth_precision="year")),
    Scenario("breast-cancer-not-applicable", "not-applicable",
             "breast cancer (C50.911) with liver metastases, no sarcoma",
             replace(_BASE, age=52, diagnosis="breast-cancer", metastases=("liver-icd",), ici=None,
                     disease_status=None, pregnancy=None)),
    Scenario("renal-cg-branch", "likely-eligible",
             "ASPS, male 45, 82 kg, 178 cm, creatinine 2.16 mg/dL = 1.8 x ULN, Cockcroft-Gault "
             "43 mL/min/1.73 m2 (>= 30)",
             replace(_BASE, sex="male", age=45, weight_kg=82.0, height_cm=178.0, pregnancy=None,
                     labs=_labs(creatinine=2.16))),
    Scenario("tumor-no-method-needs-review", "needs-review",
             "ASPS, otherwise eligible, one lesion of 15 mm with no measurement method (>= 10 mm counts "
             "only by CT/MRI/calipers)", replace(_BASE, tumor_mm=15.0, tumor_method=None)),
    Scenario("karnofsky-60-not-eligible", "not-eligible",
             "ASPS, otherwise eligible, performance status recorded only as Karnofsky 60 (< 70)",
             replace(_BASE, ecog=None, karnofsky=60)),
)


def scenario_cases(as_of: date) -> list[Case]:
    """The hand-designed scenarios, each with the verdict the clinical rules give it."""
    return [Case(s.name, build(s.design, f"scn-{s.name}", as_of, family=_family(s.name)), s.expected,
                 s.description) for s in SCENARIOS]


def _family(name: str) -> str:
    return "".join(part.title() for part in name.split("-")[:3])


# --------------------------------------------------------------------------- random patients


def _uniform(rng: random.Random, bounds: tuple[float, float], digits: int = 2) -> float:
    return round(rng.uniform(*bounds), digits)


def _draw_person(rng: random.Random, diagnosis: str) -> dict[str, Any]:
    sex = "female" if diagnosis in NON_SARCOMA else rng.choice(("female", "male"))
    if rng.random() < 0.15 and diagnosis in PEDIATRIC:
        age = rng.choice((11, 12, 13))
        precision = rng.choice(("day", "month", "year"))
        weight, height = _uniform(rng, (31, 52), 1), _uniform(rng, (138, 162), 0)
    else:
        age, precision = rng.randint(*ADULT_AGES[diagnosis]), "day"
        tall = sex == "male"
        weight = _uniform(rng, (60, 110) if tall else (48, 95), 1)
        height = _uniform(rng, (165, 192) if tall else (152, 178), 0)
    return {"sex": sex, "age": age, "birth_precision": precision, "birth_offset_days": rng.randint(1, 360),
            "weight_kg": weight, "height_cm": height, "body_units": rng.choice(("metric", "metric", "us"))}


def _draw_disease(rng: random.Random, diagnosis: str) -> dict[str, Any]:
    mets = rng.sample(sorted(METASTASES), rng.choice((0, 1, 1, 2)))
    method = rng.choice(("ct", "ct", "mri", "chest-x-ray", None))
    return {"diagnosis": diagnosis, "metastases": tuple(mets), "tumor_mm": float(rng.randint(8, 90)),
            "tumor_method": method, "tumor_unit": rng.choice(("mm", "mm", "cm"))}


def _draw_treatment(rng: random.Random) -> dict[str, Any]:
    drugs = tuple(sorted(rng.sample(sorted(OTHER_DRUGS), rng.randint(0, 2))))
    if rng.random() < 0.35:
        return {"ici": None, "disease_status": rng.choice((None, "stable")), "other_drugs": drugs}
    started = rng.randint(120, 900)
    status, when = rng.choices((("worsened", rng.randint(20, started - 30)), ("worsened", started + 60),
                                ("stable", rng.randint(20, 90)), (None, 0)), weights=(6, 1, 2, 1))[0]
    return {"ici": rng.choice(sorted(ICI_TEXT)), "ici_resource": rng.choice(MEDICATION_TYPES),
            "ici_by_name": rng.random() < 0.3, "ici_days_before": started, "disease_status": status,
            "status_days_before": when, "other_drugs": drugs}


def _draw_performance(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.75:
        return {"ecog": rng.choices((0, 1, 2, 3), weights=(4, 4, 2, 1))[0], "karnofsky": None}
    return {"ecog": None, "karnofsky": rng.choice((60, 70, 80, 90, 100))}


def _draw_labs(rng: random.Random) -> dict[str, Any]:
    labs: dict[str, float] = {}
    units: dict[str, str] = {}
    stale: set[str] = set()
    unranged: set[str] = set()
    errors: dict[str, float] = {}
    style = rng.choice(UNIT_STYLES)  # the patient's main lab; some results come from elsewhere
    for key, lab in LABS.items():
        if rng.random() < 0.05:
            continue
        labs[key] = _uniform(rng, lab.typical if rng.random() < 0.95 else lab.abnormal)
        units[key] = style if rng.random() < 0.8 else rng.choice(UNIT_STYLES)
        if rng.random() < 0.08:
            stale.add(key)
        if rng.random() < 0.2:
            unranged.add(key)
        if rng.random() < 0.06:
            errors[key] = _uniform(rng, lab.abnormal)
    return {"labs": labs, "units": units, "stale_labs": frozenset(stale), "unranged_labs": frozenset(unranged),
            "errors": errors, "lab_days_before": rng.randint(1, 20)}


def _draw_exclusions(rng: random.Random, person: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"conditions": (), "hiv_viral_load": None, "pregnancy": None}
    if rng.random() < 0.1:
        detectable = rng.random() < 0.4
        out["conditions"] = ("hiv",)
        out["hiv_viral_load"] = (float(rng.randint(200, 60_000)), None) if detectable else (20.0, "<")
    elif rng.random() < 0.1:
        out["conditions"] = (rng.choice(("gilbert", "hypertension", "hypothyroidism")),)
    if person["sex"] == "female" and 15 <= person["age"] <= 45:
        out["pregnancy"] = rng.choices(("positive", "negative", None), weights=(1, 4, 5))[0]
        out["breastfeeding"] = rng.random() < 0.05
    return out


def expected_for(design: Design) -> str | None:
    """The verdict a random design is certain to get, when one fact decides it; else None."""
    if design.diagnosis in NON_SARCOMA:
        return "not-applicable"
    detectable = design.hiv_viral_load is not None and design.hiv_viral_load[1] is None
    child = design.age < 12  # a partial birth date is at most `age` years old (see birth_text)
    if design.pregnancy == "positive" or design.breastfeeding or detectable or child:
        return "not-eligible"
    return None


def describe(design: Design) -> str:
    """One line saying what a random patient exercises."""
    parts = [f"{design.diagnosis}, {design.sex} {design.age}y (birth date to the {design.birth_precision})",
             f"metastases: {', '.join(design.metastases) or 'none'}",
             f"tumor {design.tumor_mm:g} mm by {design.tumor_method or 'no method'}"]
    if design.ici:
        how = "by name" if design.ici_by_name else "RxNorm"
        parts.append(f"{design.ici} ({design.ici_resource}, {how}), disease status {design.disease_status}")
    parts.append(f"ECOG {design.ecog}" if design.ecog is not None else f"Karnofsky {design.karnofsky}")
    parts.append(f"{len(design.labs)} labs ({', '.join(sorted(set(design.units.values())))} units), "
                 f"{len(design.stale_labs)} stale, {len(design.errors)} entered-in-error, "
                 f"{len(design.unranged_labs)} without reference range")
    if design.conditions:
        parts.append(f"also {', '.join(design.conditions)}")
    if design.hiv_viral_load:
        parts.append(f"HIV viral load {design.hiv_viral_load[1] or ''}{design.hiv_viral_load[0]:g}")
    if design.pregnancy or design.breastfeeding:
        parts.append(f"pregnancy {design.pregnancy}, breastfeeding {design.breastfeeding}")
    return "; ".join(parts)


def random_design(rng: random.Random) -> Design:
    diagnosis = rng.choices(sorted(DIAGNOSES), weights=(3, 2, 1, 2, 1, 1))[0]
    return design_for(rng, diagnosis)


def design_for(rng: random.Random, diagnosis: str) -> Design:
    """A random patient with this diagnosis (a key of DIAGNOSES); the population generator picks its own."""
    person = _draw_person(rng, diagnosis)
    return Design(**person, **_draw_disease(rng, diagnosis), **_draw_treatment(rng), **_draw_performance(rng),
                  **_draw_labs(rng), **_draw_exclusions(rng, person))


def generate(seed: int, count: int, as_of: date) -> list[Case]:
    """`count` random patients; the same seed and as_of always give the same patients, byte for byte."""
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        design = random_design(rng)
        pid = f"syn-{rng.getrandbits(48):012x}"
        name = f"seed{seed}-{i:03d}-{design.diagnosis}"
        cases.append(Case(name, build(design, pid, as_of, family=f"Seed{seed}Patient{i}"), expected_for(design),
                          describe(design)))
    return cases


# --------------------------------------------------------------------------- files


def to_json(bundle: Mapping[str, Any]) -> str:
    """The on-disk form: 2-space indent, UTF-8 kept as is (µmol/L), newline at the end."""
    return json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"


def write_bundles(out_dir: Path, seed: int, count: int, as_of: date, *, scenarios: bool = False) -> list[Path]:
    """One `{name}.json` per generated case (and per scenario when asked); nothing else is written."""
    cases = [*(scenario_cases(as_of) if scenarios else []), *generate(seed, count, as_of)]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases:
        path = out_dir / f"{case.name}.json"
        path.write_text(to_json(case.bundle), encoding="utf-8")
        paths.append(path)
    return paths
