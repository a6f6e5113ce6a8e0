"""A seeded population as a Bulk Data `$export` writes it: one NDJSON file per resource type, the resources
of all patients interleaved — for the population screen's tests and benchmark (`synth --population`).

Most patients are well or have ordinary chronic conditions, routine labs, vitals, visits and prescriptions;
a few percent have a cancer; far fewer a sarcoma. The sarcoma patients are the hand-designed generator's
random AXIOM patients (`generator.design_for`: ASPS and other soft tissue sarcomas, partial birth dates,
stale labs, checkpoint inhibitors, HIV, pregnancy …), some recoded as a bone sarcoma, Kaposi sarcoma or an
ICD-10-CM code alone, and reshaped the way real feeds send results (DESIGN.md "Real charts"): a CBC as a
DiagnosticReport whose results may lack their own subject and date, or as `contained` results, or as one
panel Observation with `component` values; a chemistry panel with `hasMember`; a corrected result beside
the final one it corrects; a sodium as `valueString`; instants in UTC; a checkpoint inhibitor as a
`medicationReference` to a Medication resource. Look-alikes exercise the narrowing: benign soft tissue
tumours, a refuted or entered-in-error sarcoma, a provisional ASPS, an ICD-O-3 code under its OID.

Prevalence (`Prevalence`) is a general EHR's with an oncology service: about 4 % of the patients with a
cancer, 0.06 % with a sarcoma (sarcomas are about 1 % of adult cancers, more in cancer centres) and a few
benign or refuted look-alikes; ASPS is enriched to a quarter of the sarcomas (really under 1 %) so that both
cohorts appear. Tests raise `Prevalence.sarcoma` to have many candidates in a small population. Clinical
codes come from the generator's vocabulary (mappings/ for the checkpoint inhibitors) and from the ordinary
code lists below, which the engine never reads.

Byte-deterministic: patient i is drawn from its own `random.Random(f"{seed}:{i}")` and every date is
relative to `as_of`; the lines of each chunk of patients are shuffled by a seeded generator; gzip files
carry no name and mtime 0.
"""

from __future__ import annotations

import gzip
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import date, timedelta
from io import BufferedIOBase
from pathlib import Path

import orjson

from . import fhir
from .fhir import ICD10, ICDO3, LOINC, SNOMED, Resource
from .generator import build, design_for, ici_rxnorm
from .realistic import PanelLab

CHUNK = 512  # patients whose lines are shuffled together (an export's order interleaves patients)
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ICDO3_OID = "urn:oid:2.16.840.1.113883.6.43.1"  # what some feeds send as the ICD-O-3 system


@dataclass(frozen=True)
class Prevalence:
    """Shares of the whole population (a patient is in one group)."""

    cancer: float = 0.04  # any cancer, sarcomas included
    sarcoma: float = 0.0006  # a soft tissue or bone sarcoma (AXIOM's candidates)
    asps: float = 0.25  # of the sarcomas
    lookalike: float = 0.0004  # benign soft tissue tumours, refuted / provisional sarcomas, codes under an OID
    deceased: float = 0.01


# --------------------------------------------------------------------------- ordinary vocabulary

FAMILIES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
            "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
            "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
            "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Nguyen", "Müller", "O'Brien")
GIVEN = {"female": ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Maria", "Susan", "Aisha", "Mei",
                    "Zoë"),
         "male": ("James", "Robert", "John", "Michael", "David", "William", "José", "Wei", "Omar", "Liam")}

#: Chronic conditions of a general practice list (none is a cancer).
ORDINARY_CONDITIONS: tuple[tuple[str, str, str], ...] = (
    (ICD10, "I10", "Essential (primary) hypertension"),
    (ICD10, "E11.9", "Type 2 diabetes mellitus without complications"),
    (ICD10, "E78.5", "Hyperlipidemia, unspecified"),
    (ICD10, "J45.909", "Unspecified asthma, uncomplicated"),
    (ICD10, "E03.9", "Hypothyroidism, unspecified"),
    (ICD10, "F32.A", "Depression, unspecified"),
    (ICD10, "M17.11", "Unilateral primary osteoarthritis, right knee"),
    (ICD10, "K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    (ICD10, "N18.30", "Chronic kidney disease, stage 3 unspecified"),
    (ICD10, "G43.909", "Migraine, unspecified, not intractable, without status migrainosus"),
    (ICD10, "E66.9", "Obesity, unspecified"),
    (ICD10, "J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    (ICD10, "I48.91", "Unspecified atrial fibrillation"),
    (ICD10, "F41.1", "Generalized anxiety disorder"),
    (SNOMED, "38341003", "Hypertensive disorder"),
    (SNOMED, "44054006", "Diabetes mellitus type 2"),
    (SNOMED, "195967001", "Asthma"),
)

#: Cancers other than sarcoma: ICD-10-CM site code, and an ICD-O-3 histology sent in the mCODE extension.
OTHER_CANCERS: tuple[tuple[str, str, tuple[str, str] | None], ...] = (
    ("C50.911", "Malignant neoplasm of unspecified site of right female breast", ("8500/3", "Infiltrating duct "
                                                                                  "carcinoma, NOS")),
    ("C34.90", "Malignant neoplasm of unspecified part of unspecified bronchus or lung", ("8140/3",
                                                                                          "Adenocarcinoma, NOS")),
    ("C61", "Malignant neoplasm of prostate", ("8140/3", "Adenocarcinoma, NOS")),
    ("C18.9", "Malignant neoplasm of colon, unspecified", None),
    ("C43.9", "Malignant melanoma of skin, unspecified", ("8720/3", "Malignant melanoma, NOS")),
    ("C85.90", "Non-Hodgkin lymphoma, unspecified, unspecified site", None),
    ("C67.9", "Malignant neoplasm of bladder, unspecified", None),
    ("C64.9", "Malignant neoplasm of unspecified kidney, except renal pelvis", ("8312/3", "Renal cell "
                                                                                 "carcinoma, NOS")),
    ("C73", "Malignant neoplasm of thyroid gland", ("8260/3", "Papillary adenocarcinoma, NOS")),
)
CANCER_METASTASES = (("C78.01", "Secondary malignant neoplasm of right lung"),
                     ("C79.51", "Secondary malignant neoplasm of bone"),
                     ("C78.7", "Secondary malignant neoplasm of liver and intrahepatic bile duct"))
#: Cancers treated with checkpoint inhibitors in practice (the drug does not make a sarcoma).
ICI_CANCERS = frozenset({"C34.90", "C43.9", "C64.9", "C67.9"})
CHEMO = (("3639", "doxorubicin"), ("2555", "cisplatin"), ("56946", "paclitaxel"), ("4492", "fluorouracil"))
ICI_USED = ("pembrolizumab", "nivolumab")  # their RxNorm codes are read from mappings/medications.yaml

ORDINARY_DRUGS = (("29046", "lisinopril"), ("6809", "metformin"), ("83367", "atorvastatin"),
                  ("10582", "levothyroxine"), ("435", "albuterol"), ("7646", "omeprazole"), ("36437", "sertraline"),
                  ("17767", "amlodipine"), ("5640", "ibuprofen"), ("1191", "aspirin"))


#: A basic metabolic panel and a CBC as a primary care lab reports them (some codes the engine maps).
BMP = (
    PanelLab("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 70, 99, 98, 18, 0),
    PanelLab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 135, 145, 139, 2.5, 0),
    PanelLab("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 3.5, 5.1, 4.2, 0.4, 1),
    PanelLab("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 98, 107, 102, 2.5, 0),
    PanelLab("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L",
               22, 29, 25, 1.8, 0),
    PanelLab("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 7, 20, 14, 4, 0),
    PanelLab("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 0.6, 1.2, 0.9, 0.2, 2),
    PanelLab("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 8.6, 10.3, 9.4, 0.4, 1),
)
CBC = (
    PanelLab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "K/uL", "10*3/uL", 4, 11, 7, 1.8, 1),
    PanelLab("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "g/dL", 12, 16, 13.8, 1.3, 1),
    PanelLab("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", "%", 36, 46, 41, 3.5, 1),
    PanelLab("777-3", "Platelets [#/volume] in Blood by Automated count", "K/uL", "10*3/uL", 150, 400, 250, 55, 0),
)
OTHER_LABS = (
    PanelLab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 4, 5.6, 5.7, 0.8, 1),
    PanelLab("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation", "mg/dL", "mg/dL",
               0, 99, 112, 30, 0),
    PanelLab("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", "m[IU]/L", 0.4, 4.0, 1.9, 0.9, 2),
)
#: Vital signs taken at a visit: LOINC, display, unit, UCUM, mean, sd, decimals (blood pressure is a panel).
VITALS = (
    ("8867-4", "Heart rate", "/min", "/min", 74, 11, 0),
    ("8310-5", "Body temperature", "Cel", "Cel", 36.8, 0.3, 1),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%", 97.5, 1.2, 0),
)
YEARS_OF_HISTORY = 6

CBC_CODES = frozenset({"751-8", "777-3", "718-7", "59260-0"})
CHEMISTRY_CODES = frozenset({"1975-2", "14631-6", "1920-8", "1742-6", "2160-0", "14682-9", "1751-7", "2951-2"})


# --------------------------------------------------------------------------- one patient


class _Patient:
    """The resources of one patient under construction; ids derive from the patient id."""

    def __init__(self, pid: str, as_of: date, rng: random.Random) -> None:
        self.pid = pid
        self.subject = f"Patient/{pid}"
        self.as_of = as_of
        self.rng = rng
        self.resources: list[Resource] = []
        self._n = 0

    def rid(self, kind: str) -> str:
        self._n += 1
        return f"{self.pid}.{kind}{self._n}"  # never one of the generator's `{pid}-{kind}{n}`

    def day(self, days_before: int) -> str:
        return (self.as_of - timedelta(days=days_before)).isoformat()

    def stamp(self, days_before: int) -> str:
        return f"{self.day(days_before)}T{self.rng.randint(7, 17):02d}:{self.rng.randint(0, 59):02d}:00-05:00"


def _person(rng: random.Random, pid: str, as_of: date, prevalence: Prevalence, *, age: int | None = None,
            sex: str | None = None) -> Resource:
    sex = sex or rng.choice(("female", "male"))
    age = age if age is not None else min(int(rng.triangular(0, 98, 45)), 97)
    born = as_of - timedelta(days=365 * age + rng.randint(0, 364))
    patient: Resource = {
        "resourceType": "Patient", "id": pid,
        "meta": {"lastUpdated": f"{(as_of - timedelta(days=rng.randint(1, 400))).isoformat()}T10:00:00Z"},
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": f"MRN{rng.randint(10**6, 10**7)}"}],
        "name": [{"use": "official", "family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN[sex])]}],
        "gender": sex, "birthDate": born.isoformat(),
    }
    if rng.random() < prevalence.deceased:
        patient["deceasedDateTime"] = (as_of - timedelta(days=rng.randint(5, 900))).isoformat()
    return patient


def _routine_lab(p: _Patient, lab: PanelLab, when: str) -> Resource:
    value = round(max(p.rng.gauss(lab.mean, lab.sd), lab.mean / 4), lab.digits)
    obs = fhir.observation(p.rid("lab"), p.subject, lab.loinc, when, value=value, unit=lab.unit, ucum=lab.ucum)
    obs["code"] = fhir.concept(LOINC, lab.loinc, lab.display)
    obs["referenceRange"] = [fhir.reference_range(lab.low, lab.high, lab.unit, lab.ucum)]
    obs["interpretation"] = fhir.interpretation("L" if value < lab.low else "H" if value > lab.high else "N")
    return obs


def _report(p: _Patient, code: tuple[str, str], results: list[Resource], when: str) -> Resource:
    return {"resourceType": "DiagnosticReport", "id": p.rid("dr"), "status": "final",
            "category": [fhir.concept(V2_0074, "LAB", "Laboratory")], "code": fhir.concept(LOINC, *code),
            "subject": {"reference": p.subject}, "effectiveDateTime": when, "issued": when,
            "result": [{"reference": f"Observation/{r['id']}"} for r in results]}


def _visit(p: _Patient, age: int, days_before: int, weight: float) -> None:
    """One ambulatory visit: the Encounter and its vital signs (adults: weight and blood pressure too)."""
    rng = p.rng
    when = p.stamp(days_before)
    p.resources.append({"resourceType": "Encounter", "id": p.rid("enc"), "status": "finished",
                        "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                        "type": [fhir.concept(SNOMED, "185349003", "Encounter for check up")],
                        "subject": {"reference": p.subject}, "period": {"start": when, "end": when}})
    encounter = {"reference": f"Encounter/{p.resources[-1]['id']}"}
    vitals: list[Resource] = []
    for loinc, display, unit, ucum, mean, sd, digits in VITALS:
        obs = fhir.observation(p.rid("vital"), p.subject, loinc, when, value=round(rng.gauss(mean, sd), digits),
                               unit=unit, ucum=ucum, category="vital-signs")
        obs["code"] = fhir.concept(LOINC, loinc, display)
        vitals.append(obs)
    if age >= 18:
        vitals.append(fhir.observation(p.rid("vital"), p.subject, "29463-7", when,
                                       value=round(weight + rng.gauss(0, 1.5), 1), unit="kg", ucum="kg",
                                       category="vital-signs"))
        vitals.append(fhir.observation(p.rid("vital"), p.subject, "85354-9", when, category="vital-signs", component=[
            {"code": fhir.concept(LOINC, "8480-6", "Systolic blood pressure"),
             "valueQuantity": fhir.quantity(rng.randint(100, 165), "mmHg", "mm[Hg]")},
            {"code": fhir.concept(LOINC, "8462-4", "Diastolic blood pressure"),
             "valueQuantity": fhir.quantity(rng.randint(60, 100), "mmHg", "mm[Hg]")}]))
    for obs in vitals:
        obs["encounter"] = encounter
    p.resources.extend(vitals)
    if rng.random() < 0.3:
        _panel(p, ("24320-4", "Basic metabolic panel - Serum or Plasma"), BMP, when)
    if rng.random() < 0.2:
        _panel(p, ("58410-2", "CBC panel - Blood by Automated count"), CBC, when)
    if rng.random() < 0.1:
        labs = [_routine_lab(p, rng.choice(OTHER_LABS), when)]
        p.resources.extend(labs)


def _panel(p: _Patient, code: tuple[str, str], labs: tuple[PanelLab, ...], when: str) -> None:
    """A panel's results, usually with the DiagnosticReport that cites them."""
    results = [_routine_lab(p, lab, when) for lab in labs]
    p.resources.extend(results)
    if p.rng.random() < 0.7:
        p.resources.append(_report(p, code, results, when))


def _ordinary_care(p: _Patient, age: int, *, visits: int | None = None) -> None:
    """Years of ordinary care of any chart: visits with vitals and routine labs, chronic conditions and
    prescriptions (renewed once in a while)."""
    rng = p.rng
    count = visits if visits is not None else rng.choices(range(9), weights=(14, 14, 14, 14, 12, 10, 8, 8, 6))[0]
    weight = rng.uniform(52, 110) if age >= 18 else rng.uniform(8, 60)
    for day in sorted(rng.sample(range(1, 365 * YEARS_OF_HISTORY), count)):
        _visit(p, age, day, weight)
    conditions = rng.choices((0, 1, 2, 3, 4), weights=(40, 28, 17, 10, 5))[0] if age >= 18 else rng.choice((0, 0, 1))
    for system, code, display in rng.sample(ORDINARY_CONDITIONS, conditions):
        p.resources.append(fhir.condition(p.rid("cond"), p.subject, system, code, display,
                                          recorded=p.day(rng.randint(30, 4000))))
    for rxnorm, name in rng.sample(ORDINARY_DRUGS, rng.choice((0, 0, 1, 1, 2, 3)) if age >= 18 else 0):
        kind = rng.choice(("MedicationRequest", "MedicationStatement"))
        for _ in range(rng.choice((1, 1, 2, 3))):
            p.resources.append(fhir.medication_request(p.rid("med"), p.subject, rxnorm, name,
                                                       p.day(rng.randint(10, 1500)), status="active",
                                                       resource_type=kind))


def _well(p: _Patient, patient: Resource) -> None:
    _ordinary_care(p, _age(patient, p.as_of))


def _age(patient: Resource, as_of: date) -> int:
    return as_of.year - int(str(patient.get("birthDate", as_of.isoformat()))[:4])


def _cancer(p: _Patient, patient: Resource) -> None:
    """Another cancer (not a sarcoma): staging, metastases, chemotherapy, sometimes a checkpoint inhibitor."""
    rng = p.rng
    _ordinary_care(p, _age(patient, p.as_of))
    code, display, histology = rng.choice(OTHER_CANCERS)
    if patient["gender"] == "male" and code.startswith("C50"):
        code, display, histology = OTHER_CANCERS[1]
    if patient["gender"] == "female" and code == "C61":
        code, display, histology = OTHER_CANCERS[3]
    clinical = rng.choices(("active", "remission", "resolved"), weights=(6, 3, 1))[0]
    p.resources.append(fhir.condition(p.rid("cond"), p.subject, ICD10, code, display, clinical=clinical,
                                      histology=histology if rng.random() < 0.6 else None,
                                      recorded=p.day(rng.randint(60, 3000))))
    if rng.random() < 0.3:
        met = rng.choice(CANCER_METASTASES)
        p.resources.append(fhir.condition(p.rid("cond"), p.subject, ICD10, *met, recorded=p.day(rng.randint(20, 400))))
    drugs = rng.sample(CHEMO, rng.randint(0, 2))
    if code in ICI_CANCERS and rng.random() < 0.5:
        name = rng.choice(ICI_USED)
        drugs.append((ici_rxnorm(name), name))
    for rxnorm, name in drugs:
        p.resources.append(fhir.medication_request(p.rid("med"), p.subject, rxnorm, name,
                                                   p.day(rng.randint(30, 900)), resource_type="MedicationRequest"))
    if rng.random() < 0.4:
        status = rng.choice((("271299001", "Patient's condition worsened"), ("359746009", "Stable")))
        p.resources.append(fhir.observation(p.rid("status"), p.subject, "97509-4", p.stamp(rng.randint(10, 200)),
                                            coded=fhir.concept(SNOMED, *status), category="exam"))


LOOKALIKES = ("lipoma", "benign-soft-tissue", "refuted-sarcoma", "entered-in-error", "provisional-asps",
              "icdo3-oid")


def _lookalike(p: _Patient, patient: Resource) -> None:
    """A chart that looks like a sarcoma to a text search and is (mostly) not one to the trial's code sets."""
    rng = p.rng
    _ordinary_care(p, _age(patient, p.as_of))
    kind = rng.choice(LOOKALIKES)
    recorded = p.day(rng.randint(60, 2000))
    add = p.resources.append
    if kind == "lipoma":
        add(fhir.condition(p.rid("cond"), p.subject, ICD10, "D17.1", "Benign lipomatous neoplasm of skin and "
                           "subcutaneous tissue of trunk", histology=("8850/0", "Lipoma, NOS"), recorded=recorded))
    elif kind == "benign-soft-tissue":
        add(fhir.condition(p.rid("cond"), p.subject, ICD10, "D21.9", "Benign neoplasm of connective and other "
                           "soft tissue, unspecified", histology=("8890/0", "Leiomyoma, NOS"), recorded=recorded))
    elif kind == "refuted-sarcoma":
        add(fhir.condition(p.rid("cond"), p.subject, ICD10, "C49.9", "Malignant neoplasm of connective and soft "
                           "tissue, unspecified", verification="refuted", clinical=None, recorded=recorded))
    elif kind == "entered-in-error":
        add(fhir.condition(p.rid("cond"), p.subject, ICDO3, "8890/3", "Leiomyosarcoma, NOS",
                           verification="entered-in-error", clinical=None, recorded=recorded))
    elif kind == "provisional-asps":
        add(fhir.condition(p.rid("cond"), p.subject, ICDO3, "9581/3", "Alveolar soft part sarcoma",
                           verification="provisional", recorded=recorded))
    else:
        add(fhir.condition(p.rid("cond"), p.subject, ICDO3_OID, "9581/3", "Alveolar soft part sarcoma",
                           recorded=recorded))


SARCOMAS = ("leiomyosarcoma", "synovial-sarcoma", "sarcoma")
RECODES = {  # a sarcoma recorded the other ways real charts record it: (system, code, display, histology)
    "osteosarcoma": (ICD10, "C40.21", "Malignant neoplasm of long bones of right lower limb",
                     ("9180/3", "Osteosarcoma, NOS")),
    "kaposi": (ICD10, "C46.9", "Kaposi's sarcoma, unspecified", None),
    "icd10-only": (ICD10, "C49.9", "Malignant neoplasm of connective and soft tissue, unspecified", None),
    "rhabdomyosarcoma": (ICDO3, "8900/3", "Rhabdomyosarcoma, NOS", None),
}


def _sarcoma(p: _Patient, patient: Resource, prevalence: Prevalence) -> Resource:
    """A random AXIOM patient of the hand-designed generator, in this population's names and shapes."""
    rng = p.rng
    asps = rng.random() < prevalence.asps
    diagnosis = rng.choice(("asps", "asps-histology")) if asps else rng.choice(SARCOMAS)
    design = design_for(rng, diagnosis)
    recode = None if asps else rng.choices((None, *RECODES), weights=(10, 2, 1, 2, 1))[0]
    if recode == "kaposi":
        design = replace(design, conditions=("hiv",), hiv_viral_load=design.hiv_viral_load or (20.0, "<"))
    bundle = build(design, p.pid, p.as_of)
    resources: list[Resource] = [e["resource"] for e in bundle["entry"]]
    built_patient, *chart = resources
    patient = {**patient, "gender": built_patient["gender"], "birthDate": built_patient["birthDate"]}
    patient["name"] = [{"use": "official", "family": patient["name"][0]["family"],
                        "given": [rng.choice(GIVEN[patient["gender"]])]}]
    if recode is not None:
        system, code, display, histology = RECODES[recode]
        primary = chart[0]
        fresh = fhir.condition(primary["id"], p.subject, system, code, display, histology=histology,
                               recorded=primary.get("recordedDate"))
        chart[0] = fresh
    if rng.random() < 0.2:
        chart[0]["clinicalStatus"] = fhir.concept("http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                  rng.choice(("remission", "inactive")))
    p.resources.extend(_real_chart(p, chart))
    _ordinary_care(p, design.age, visits=rng.randint(3, 9))
    return patient


# --------------------------------------------------------------------------- real-chart shapes


def _code(r: Resource) -> str | None:
    codings = r.get("code", {}).get("coding") or [{}]
    code = codings[0].get("code")
    return code if isinstance(code, str) else None


def _plain_results(chart: list[Resource], codes: frozenset[str]) -> list[Resource]:
    """Final lab results of these codes drawn at the chart's first lab instant (a draw)."""
    found = [r for r in chart if r["resourceType"] == "Observation" and _code(r) in codes
             and r.get("status") == "final" and "valueQuantity" in r]
    if not found:
        return []
    when = found[0]["effectiveDateTime"]
    return [r for r in found if r["effectiveDateTime"] == when]


def _as_report(p: _Patient, chart: list[Resource], results: list[Resource]) -> list[Resource]:
    """The CBC as a DiagnosticReport; half the time its results lack subject and date (the report's apply)."""
    report = _report(p, ("58410-2", "CBC panel - Blood by Automated count"), results, results[0]["effectiveDateTime"])
    if p.rng.random() < 0.5:
        for r in results:
            del r["subject"], r["effectiveDateTime"]
    return [*chart, report]


def _as_contained(p: _Patient, chart: list[Resource], results: list[Resource]) -> list[Resource]:
    """The CBC's results contained in the report that cites them as `#id`."""
    report = _report(p, ("58410-2", "CBC panel - Blood by Automated count"), results, results[0]["effectiveDateTime"])
    contained = []
    for i, r in enumerate(results):
        inner = {k: v for k, v in r.items() if k not in ("subject", "effectiveDateTime")}
        inner["id"] = f"r{i}"
        contained.append(inner)
    report["contained"] = contained
    report["result"] = [{"reference": f"#r{i}"} for i in range(len(results))]
    kept = [r for r in chart if all(r is not x for x in results)]
    return [*kept, report]


def _as_components(p: _Patient, chart: list[Resource], results: list[Resource]) -> list[Resource]:
    """The CBC as one panel Observation whose components carry the values."""
    first = results[0]
    panel = fhir.observation(p.rid("panel"), p.subject, "57021-8", first["effectiveDateTime"])
    panel["code"] = fhir.concept(LOINC, "57021-8", "CBC W Auto Differential panel - Blood")
    panel["component"] = [{k: r[k] for k in ("code", "valueQuantity", "referenceRange") if k in r} for r in results]
    kept = [r for r in chart if all(r is not x for x in results)]
    return [*kept, panel]


def _as_members(p: _Patient, chart: list[Resource], results: list[Resource]) -> list[Resource]:
    """The chemistry results as members of a panel Observation (`hasMember`), each still its own resource."""
    panel = fhir.observation(p.rid("panel"), p.subject, "24323-8", results[0]["effectiveDateTime"])
    panel["code"] = fhir.concept(LOINC, "24323-8", "Comprehensive metabolic 2000 panel - Serum or Plasma")
    panel["hasMember"] = [{"reference": f"Observation/{r['id']}"} for r in results]
    return [*chart, panel]


def _corrected(p: _Patient, chart: list[Resource]) -> list[Resource]:
    """One result corrected: the superseded final value stays beside the correction, at the same instant."""
    labs = [r for r in chart if r["resourceType"] == "Observation" and r.get("status") == "final"
            and "valueQuantity" in r and "effectiveDateTime" in r and r.get("category", [{}])[0].get(
                "coding", [{}])[0].get("code") == "laboratory"]
    if not labs:
        return chart
    target = p.rng.choice(labs)
    wrong = {**target, "id": p.rid("lab"), "valueQuantity": {**target["valueQuantity"],
                                                             "value": round(target["valueQuantity"]["value"] * 3, 2)}}
    target["status"] = "corrected"
    return [*chart, wrong]


def _utc(stamp: str) -> str:
    """`2026-11-14T08:30:00-05:00` as the same instant in UTC."""
    day, _, clock = stamp.partition("T")
    hour = int(clock[:2]) + 5
    moved = date.fromisoformat(day) + timedelta(days=hour // 24)
    return f"{moved.isoformat()}T{hour % 24:02d}{clock[2:8]}Z"


def _real_chart(p: _Patient, chart: list[Resource]) -> list[Resource]:
    """Reshape a generated chart the ways DESIGN.md "Real charts" lists (each with some probability)."""
    rng = p.rng
    cbc = _plain_results(chart, CBC_CODES)
    if len(cbc) >= 2:
        shape = rng.choices(("plain", "report", "contained", "components"), weights=(4, 3, 1, 2))[0]
        if shape == "report":
            chart = _as_report(p, chart, cbc)
        elif shape == "contained":
            chart = _as_contained(p, chart, cbc)
        elif shape == "components":
            chart = _as_components(p, chart, cbc)
    chemistry = _plain_results(chart, CHEMISTRY_CODES)
    if len(chemistry) >= 2 and rng.random() < 0.3:
        chart = _as_members(p, chart, chemistry)
    if rng.random() < 0.12:
        chart = _corrected(p, chart)
    for r in chart:
        if r["resourceType"] != "Observation":
            continue
        quantity = r.get("valueQuantity")
        if _code(r) == "2951-2" and quantity and rng.random() < 0.1:
            r["valueString"] = f"{quantity['value']:g} {quantity.get('unit', 'mmol/L')}"
            del r["valueQuantity"]
        if isinstance(r.get("effectiveDateTime"), str) and r["effectiveDateTime"].endswith("-05:00") \
                and rng.random() < 0.1:
            r["effectiveDateTime"] = _utc(r["effectiveDateTime"])
    return _medication_references(p, chart)


def _medication_references(p: _Patient, chart: list[Resource]) -> list[Resource]:
    """Some RxNorm-coded orders point at a Medication resource (as Epic's exports do) instead of a code."""
    out = []
    for r in chart:
        concept = r.get("medicationCodeableConcept")
        if concept and concept.get("coding") and p.rng.random() < 0.3:
            med_id = p.rid("medication")
            out.append({"resourceType": "Medication", "id": med_id, "code": concept})
            out.append({**{k: v for k, v in r.items() if k != "medicationCodeableConcept"},
                        "medicationReference": {"reference": f"Medication/{med_id}"}})
        else:
            out.append(r)
    return out


# --------------------------------------------------------------------------- the population


def patient_id(seed: int, index: int) -> str:
    return f"s{seed}-{index:07d}"


def draw_patient(seed: int, index: int, as_of: date,
                 prevalence: Prevalence = Prevalence()) -> tuple[str, list[Resource]]:
    """Patient `index` of the population: its group (well, cancer, lookalike, sarcoma) and its resources,
    the Patient first."""
    rng = random.Random(f"{seed}:{index}")
    pid = patient_id(seed, index)
    p = _Patient(pid, as_of, rng)
    u = rng.random()
    patient = _person(rng, pid, as_of, prevalence)
    if u < prevalence.sarcoma:
        group = "sarcoma"
        patient = _sarcoma(p, patient, prevalence)
    elif u < prevalence.sarcoma + prevalence.lookalike:
        group = "lookalike"
        _lookalike(p, patient)
    elif u < prevalence.cancer + prevalence.lookalike:
        group = "cancer"
        _cancer(p, patient)
    else:
        group = "well"
        _well(p, patient)
    return group, [patient, *p.resources]


def population(seed: int, count: int, as_of: date, prevalence: Prevalence = Prevalence()
               ) -> Iterator[tuple[str, list[Resource]]]:
    for index in range(count):
        yield draw_patient(seed, index, as_of, prevalence)


@dataclass
class PopulationFiles:
    """What `write_population` wrote: the files, and how many patients of each group."""

    paths: list[Path]
    groups: Counter[str]
    resources: Counter[str]


def _open(stack: ExitStack, path: Path, compress: bool) -> BufferedIOBase:
    raw = stack.enter_context(path.open("wb"))
    if not compress:
        return raw
    return stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))


def write_population(out_dir: Path, seed: int, count: int, as_of: date, *, compress: bool = False,
                     prevalence: Prevalence = Prevalence()) -> PopulationFiles:
    """`{Type}.ndjson` (or `.ndjson.gz`) per resource type in `out_dir`; the same arguments give the same bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".ndjson.gz" if compress else ".ndjson"
    files: dict[str, BufferedIOBase] = {}
    groups: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    with ExitStack() as stack:
        for start in range(0, count, CHUNK):
            lines: dict[str, list[bytes]] = {}
            for index in range(start, min(start + CHUNK, count)):
                group, resources = draw_patient(seed, index, as_of, prevalence)
                groups[group] += 1
                for r in resources:
                    lines.setdefault(r["resourceType"], []).append(orjson.dumps(r))
            shuffle = random.Random(f"{seed}:chunk:{start}")
            for kind in sorted(lines):
                shuffle.shuffle(lines[kind])
                if kind not in files:
                    files[kind] = _open(stack, out_dir / f"{kind}{suffix}", compress)
                files[kind].write(b"\n".join(lines[kind]) + b"\n")
                kinds[kind] += len(lines[kind])
    return PopulationFiles(sorted(out_dir / f"{kind}{suffix}" for kind in files), groups, kinds)
