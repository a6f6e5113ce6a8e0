"""A realistic heavy chart for the performance benchmark: one ASPS patient with three years of labs.

The benchmark ("evaluation from raw JSON bytes in at most 3× json.loads") is only meaningful on a record
shaped like a real export, where most resources are irrelevant to the trial and have to be skipped
cheaply: 100 blood draws × 20 LOINC codes = exactly 2,000 laboratory Observations (11 codes the
engine maps, 9 common ones it does not), each with a UCUM quantity, a reference range and an
interpretation flag; 40 Conditions, mostly unrelated to the cancer; 20 medication resources of all
three types, a few of them checkpoint inhibitors. Five more Observations (weight, height, ECOG, CT
tumor size, disease status) make the patient evaluable. About 2.5 MB as compact JSON.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from . import fhir
from .fhir import ICD10, LOINC, SNOMED, Resource
from .generator import ici_rxnorm

DRAWS = 100
YEARS_DAYS = 3 * 365
LAB_CATEGORY = "laboratory"
BASE_URL = "https://ehr.example.org/fhir/R4"
PERFORMER = {"reference": "Organization/clinical-lab-1", "display": "University Hospital Clinical Laboratory"}


@dataclass(frozen=True)
class PanelLab:
    """One analyte of the routine panels, in the unit this lab reports it."""

    loinc: str
    display: str
    unit: str  # Quantity.unit as printed
    ucum: str  # Quantity.code
    low: float
    high: float
    mean: float
    sd: float
    digits: int


#: The 20 analytes of a CBC with differential + comprehensive metabolic panel + monthly hCG. The first
#: 11 are mapped in mappings/observations.yaml; the last 9 are common results the engine never reads.
PANEL: tuple[PanelLab, ...] = (
    PanelLab("751-8", "Neutrophils [#/volume] in Blood by Automated count", "K/uL", "10*3/uL",
             1.5, 7.5, 3.6, 0.9, 2),
    PanelLab("777-3", "Platelets [#/volume] in Blood by Automated count", "K/uL", "10*3/uL",
             150, 400, 238, 38, 0),
    PanelLab("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "g/dL", 12.0, 15.5, 12.6, 0.8, 1),
    PanelLab("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL",
             0.1, 1.2, 0.6, 0.18, 1),
    PanelLab("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L",
             "U/L", 10, 40, 25, 7, 0),
    PanelLab("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L",
             "U/L", 7, 40, 22, 8, 0),
    PanelLab("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 0.5, 1.1, 0.78, 0.09, 2),
    PanelLab("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", "g/dL", 3.5, 5.0, 4.0, 0.3, 1),
    PanelLab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mEq/L", "meq/L", 135, 145, 139, 2, 0),
    PanelLab("35591-7", "Creatinine renal clearance predicted by Cockcroft-Gault formula", "mL/min", "mL/min",
             75, 140, 104, 10, 0),
    PanelLab("19080-1", "Choriogonadotropin [Units/volume] in Serum or Plasma", "mIU/mL", "m[IU]/mL",
             0, 5, 1, 0, 0),
    PanelLab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "K/uL", "10*3/uL",
             4.0, 11.0, 6.1, 1.2, 1),
    PanelLab("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", "%", 36, 46, 38, 2.2, 1),
    PanelLab("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 70, 99, 92, 11, 0),
    PanelLab("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mEq/L", "meq/L", 3.5, 5.1, 4.2, 0.3, 1),
    PanelLab("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mEq/L", "meq/L", 98, 107, 102, 2, 0),
    PanelLab("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mEq/L", "meq/L",
             22, 29, 25, 1.6, 0),
    PanelLab("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 7, 20, 13, 3, 0),
    PanelLab("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 8.6, 10.3, 9.4, 0.3, 1),
    PanelLab("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma", "U/L", "U/L",
             44, 147, 88, 18, 0),
)

#: The cancer and its spread, then 36 conditions a young adult's chart accumulates over the years.
CANCER_CONDITIONS: tuple[tuple[str, str, str], ...] = (
    (ICD10, "C78.01", "Secondary malignant neoplasm of right lung"),
    (ICD10, "C78.02", "Secondary malignant neoplasm of left lung"),
    (ICD10, "C79.31", "Secondary malignant neoplasm of brain"),
)
OTHER_CONDITIONS: tuple[tuple[str, str, str, str], ...] = (  # system, code, display, clinical status
    (ICD10, "I10", "Essential (primary) hypertension", "active"),
    (ICD10, "E78.5", "Hyperlipidemia, unspecified", "active"),
    (ICD10, "K21.9", "Gastro-esophageal reflux disease without esophagitis", "active"),
    (ICD10, "F41.1", "Generalized anxiety disorder", "active"),
    (ICD10, "G47.00", "Insomnia, unspecified", "active"),
    (ICD10, "E03.9", "Hypothyroidism, unspecified", "active"),
    (ICD10, "M54.50", "Low back pain, unspecified", "resolved"),
    (ICD10, "J45.909", "Unspecified asthma, uncomplicated", "active"),
    (ICD10, "R53.83", "Other fatigue", "active"),
    (ICD10, "G89.3", "Neoplasm related pain (acute) (chronic)", "active"),
    (ICD10, "D64.9", "Anemia, unspecified", "resolved"),
    (ICD10, "E55.9", "Vitamin D deficiency, unspecified", "active"),
    (ICD10, "K59.00", "Constipation, unspecified", "active"),
    (ICD10, "J30.9", "Allergic rhinitis, unspecified", "active"),
    (ICD10, "N39.0", "Urinary tract infection, site not specified", "resolved"),
    (ICD10, "J06.9", "Acute upper respiratory infection, unspecified", "resolved"),
    (ICD10, "U07.1", "COVID-19", "resolved"),
    (ICD10, "S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter", "resolved"),
    (ICD10, "R51.9", "Headache, unspecified", "resolved"),
    (ICD10, "H52.13", "Myopia, bilateral", "active"),
    (ICD10, "K52.9", "Noninfective gastroenteritis and colitis, unspecified", "resolved"),
    (ICD10, "L30.9", "Dermatitis, unspecified", "resolved"),
    (ICD10, "E86.0", "Dehydration", "resolved"),
    (ICD10, "I82.401", "Acute embolism and thrombosis of unspecified deep veins of right lower extremity",
     "resolved"),
    (ICD10, "Z79.01", "Long term (current) use of anticoagulants", "inactive"),
    (ICD10, "R74.01", "Elevation of levels of liver transaminase levels", "resolved"),
    (ICD10, "E87.1", "Hypo-osmolality and hyponatremia", "resolved"),
    (SNOMED, "267036007", "Dyspnea", "resolved"),
    (SNOMED, "271737000", "Anemia", "resolved"),
    (SNOMED, "43116000", "Eczema", "active"),
    (SNOMED, "82423001", "Chronic pain", "active"),
    (SNOMED, "386661006", "Fever", "resolved"),
    (SNOMED, "422587007", "Nausea", "resolved"),
    (SNOMED, "84229001", "Fatigue", "active"),
    (SNOMED, "35489007", "Depressive disorder", "active"),
    (SNOMED, "68566005", "Urinary tract infectious disease", "resolved"),
)

#: Medication history: name, RxNorm (None: text-only order), resource type, status, months ago.
ICI = "from-mappings"  # RxNorm read from mappings/medications.yaml
MEDICATIONS: tuple[tuple[str, str | None, str, str, int], ...] = (
    ("atezolizumab", ICI, "MedicationRequest", "stopped", 22),
    ("atezolizumab", ICI, "MedicationAdministration", "completed", 22),
    ("atezolizumab", ICI, "MedicationAdministration", "completed", 10),
    ("Tecentriq 1200 mg IV every 3 weeks", None, "MedicationStatement", "completed", 21),
    ("pazopanib", "714438", "MedicationStatement", "completed", 30),
    ("ondansetron", "26225", "MedicationRequest", "active", 3),
    ("dexamethasone", "3264", "MedicationAdministration", "completed", 9),
    ("lisinopril", "29046", "MedicationStatement", "active", 26),
    ("amlodipine", "17767", "MedicationRequest", "active", 14),
    ("atorvastatin", "83367", "MedicationStatement", "active", 24),
    ("omeprazole", "7646", "MedicationStatement", "active", 18),
    ("acetaminophen", "161", "MedicationStatement", "active", 30),
    ("oxycodone", "7804", "MedicationRequest", "active", 5),
    ("levothyroxine", "10582", "MedicationRequest", "active", 15),
    ("lorazepam", "6470", "MedicationRequest", "active", 12),
    ("prochlorperazine", "8704", "MedicationRequest", "completed", 8),
    ("enoxaparin", "67108", "MedicationAdministration", "completed", 19),
    ("polyethylene glycol 3350", "221147", "MedicationStatement", "active", 6),
    ("cholecalciferol", "2418", "MedicationStatement", "active", 20),
    ("prednisone", "8640", "MedicationRequest", "completed", 11),
)


class _Ids:
    """Sequential resource ids under one patient id (deterministic, valid FHIR ids)."""

    def __init__(self, pid: str) -> None:
        self.pid = pid
        self.count = 0

    def __call__(self, kind: str) -> str:
        self.count += 1
        return f"{self.pid}-{kind}{self.count}"


def _flag(value: float, lab: PanelLab) -> str:
    return "L" if value < lab.low else "H" if value > lab.high else "N"


def _lab_result(rid: str, subject: str, lab: PanelLab, when: str, rng: random.Random) -> Resource:
    """One result with the feed's trimmings: display, reference range (low + high), interpretation."""
    if lab.loinc == "19080-1":  # a negative pregnancy test is reported below the assay limit
        value, comparator, flag = 2.0, "<", "N"
    else:
        value = round(max(rng.gauss(lab.mean, lab.sd), lab.mean / 5), lab.digits)
        comparator, flag = None, _flag(value, lab)
    obs = fhir.observation(rid, subject, lab.loinc, when, value=value, unit=lab.unit, ucum=lab.ucum,
                           comparator=comparator, status="amended" if rng.random() < 0.02 else "final")
    obs["code"] = fhir.concept(LOINC, lab.loinc, lab.display, text=lab.display.split(" [")[0])
    obs["meta"] = {"lastUpdated": f"{when[:10]}T14:05:12.000-05:00"}
    obs["issued"] = f"{when[:10]}T14:05:00-05:00"
    obs["performer"] = [PERFORMER]
    obs["referenceRange"] = [fhir.reference_range(lab.low, lab.high, lab.unit, lab.ucum)]
    obs["interpretation"] = fhir.interpretation(flag)
    return obs


def _labs(ids: _Ids, subject: str, as_of: date, rng: random.Random) -> list[Resource]:
    """100 draws every ~11 days over three years; the newest is 3-6 days before as_of."""
    out = []
    for i in range(DRAWS):
        day = as_of - timedelta(days=YEARS_DAYS - 11 * i - rng.randint(0, 3))
        when = f"{day.isoformat()}T07:{rng.randint(0, 59):02d}:00-05:00"
        out += [_lab_result(ids("lab"), subject, lab, when, rng) for lab in PANEL]
    return out


def _conditions(ids: _Ids, subject: str, as_of: date) -> list[Resource]:
    def day(n: int) -> str:
        return (as_of - timedelta(days=n)).isoformat()

    out = [fhir.condition(ids("cond"), subject, ICD10, "C49.21", "Malignant neoplasm of connective and soft "
                          "tissue of right lower limb, including hip", histology=("9581/3", "Alveolar soft "
                          "part sarcoma"), recorded=day(1000))]
    out += [fhir.condition(ids("cond"), subject, *c, recorded=day(800 - 200 * i))
            for i, c in enumerate(CANCER_CONDITIONS)]
    out += [fhir.condition(ids("cond"), subject, system, code, display, clinical=status,
                           recorded=day(2500 - 61 * i))
            for i, (system, code, display, status) in enumerate(OTHER_CONDITIONS)]
    return out


def _medications(ids: _Ids, subject: str, as_of: date) -> list[Resource]:
    out = []
    for name, rxnorm, rtype, status, months in MEDICATIONS:
        code = ici_rxnorm(name) if rxnorm == ICI else rxnorm
        when = (as_of - timedelta(days=30 * months)).isoformat()
        out.append(fhir.medication_request(ids("med"), subject, code, name, when, status=status,
                                           resource_type=rtype))
    return out


def _status_observations(ids: _Ids, subject: str, as_of: date) -> list[Resource]:
    """What makes the patient evaluable beyond the labs: body size, ECOG, a CT measurement, progression."""

    def stamp(n: int) -> str:
        return f"{(as_of - timedelta(days=n)).isoformat()}T10:15:00-05:00"

    size = {"code": fhir.concept(LOINC, "33728-7", "Size.maximum dimension in Tumor"),
            "valueQuantity": fhir.quantity(34.0, "mm", "mm")}
    return [
        fhir.observation(ids("vital"), subject, "29463-7", stamp(5), value=61.4, unit="kg", ucum="kg",
                         category="vital-signs"),
        fhir.observation(ids("vital"), subject, "8302-2", stamp(5), value=167.0, unit="cm", ucum="cm",
                         category="vital-signs"),
        fhir.observation(ids("ecog"), subject, "89247-1", stamp(5), integer=1, category="survey"),
        fhir.observation(ids("tumor"), subject, "21889-1", stamp(12), component=[size], category="imaging",
                         method=fhir.concept(SNOMED, "77477000", "Computerized axial tomography")),
        fhir.observation(ids("status"), subject, "97509-4", stamp(120), category="exam",
                         coded=fhir.concept(SNOMED, "271299001", "Patient's condition worsened")),
    ]


def realistic_bundle(seed: int, as_of: date) -> dict[str, Any]:
    """One ASPS patient (female, 29) with 2,000 lab results, 40 Conditions and 20 medication resources."""
    rng = random.Random(seed)
    pid = f"real-{rng.getrandbits(40):010x}"
    ids = _Ids(pid)
    subject = f"Patient/{pid}"
    birth = (as_of - timedelta(days=29 * 365 + 120)).isoformat()
    resources = [fhir.patient(pid, birth, "female", name="Realistic"),
                 *_conditions(ids, subject, as_of), *_medications(ids, subject, as_of),
                 *_status_observations(ids, subject, as_of), *_labs(ids, subject, as_of, rng)]
    urls = [f"{BASE_URL}/{r['resourceType']}/{r['id']}" for r in resources]
    return fhir.bundle(resources, full_urls=urls)
