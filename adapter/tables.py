"""Clinical facts as data: code tables, unit aliases and trial definitions from `mappings/`.

Nothing clinical is hard-coded in Python: codes, thresholds, windows and units are read here, once,
into frozen structures the other layers look things up in. `AXIOM_MAPPINGS` points at another
mappings directory (a site's amended trial definition, say).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

LOINC = "http://loinc.org"


def mappings_dir() -> Path:
    env = os.environ.get("AXIOM_MAPPINGS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "mappings"


def _load(name: str) -> dict[str, Any]:
    path = mappings_dir() / name
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


Coding = tuple[str, str]  # (system, code)


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class ObservationCode:
    input: str
    code: str
    kind: str
    display: str


@dataclass(frozen=True)
class InputSpec:
    id: str
    label: str
    kind: str
    unit: str | None
    analyte: str | None
    codes: tuple[str, ...]
    informative: bool = False
    search: str = "labs"  # which FHIR search / prefetch key fetches it (fhir/queries.py)

    @property
    def history(self) -> bool:
        """Read over the whole history (disease status, staging), not a window."""
        return self.search == "history"


@dataclass(frozen=True)
class Panel:
    code: str
    display: str
    covers: tuple[str, ...]


@dataclass(frozen=True)
class ObservationTable:
    system: str
    by_code: dict[str, ObservationCode]
    inputs: dict[str, InputSpec]
    tumor_longest_component: str
    panels: tuple[Panel, ...]


@cache
def observations() -> ObservationTable:
    data = _load("observations.yaml")
    by_code: dict[str, ObservationCode] = {}
    inputs: dict[str, InputSpec] = {}
    for input_id, spec in data["inputs"].items():
        codes = []
        for entry in spec["codes"]:
            code = str(entry["code"])
            by_code[code] = ObservationCode(input_id, code, entry.get("kind", spec["kind"]), entry["display"])
            codes.append(code)
        inputs[input_id] = InputSpec(
            id=input_id,
            label=spec.get("label", input_id),
            kind=spec["kind"],
            unit=spec.get("unit"),
            analyte=spec.get("analyte"),
            codes=tuple(codes),
            informative=bool(spec.get("informative", False)),
            search=str(spec.get("search", "labs")),
        )
    panels = tuple(Panel(str(p["code"]), p["display"], tuple(p["covers"])) for p in data["panels"])
    longest = str(data["inputs"]["tumor-size"]["components"]["longest"]["code"])
    return ObservationTable(data["system"], by_code, inputs, longest, panels)


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class CodeRule:
    system: str
    code: str | None = None
    prefix: str | None = None  # normalised ICD-10-CM prefix (no dot, upper case)
    morphology: tuple[int, int] | None = None
    behavior: tuple[int, ...] = ()
    verified: bool = True


def icd10_key(code: str) -> str:
    return code.replace(".", "").strip().upper()


def parse_icdo3(code: str) -> tuple[int, int | None] | None:
    """'9581/3' → (9581, 3); '8800' → (8800, None); anything else → None."""
    text = code.strip().upper().removeprefix("M").removeprefix("-")
    morph, _, behavior = text.partition("/")
    if not (morph.isdigit() and len(morph) == 4):
        return None
    if behavior and not (behavior.isdigit() and len(behavior) == 1):
        return None
    return int(morph), (int(behavior) if behavior else None)


@dataclass(frozen=True)
class CodeSet:
    id: str
    title: str
    rules: tuple[CodeRule, ...]

    def match(self, system: str | None, code: str | None) -> CodeRule | None:
        if not system or not code:
            return None
        for rule in self.rules:
            if rule.system != system:
                continue
            if rule.code is not None and rule.code == code.strip():
                return rule
            if rule.prefix is not None and icd10_key(code).startswith(rule.prefix):
                return rule
            if rule.morphology is not None:
                parsed = parse_icdo3(code)
                # a bare morphology without behaviour is not evidence of malignancy
                if (parsed and rule.morphology[0] <= parsed[0] <= rule.morphology[1]
                        and parsed[1] is not None and parsed[1] in rule.behavior):
                    return rule
        return None


@dataclass(frozen=True)
class ConditionTable:
    systems: dict[str, str]
    histology_extension: str
    sets: dict[str, CodeSet]
    active_clinical_status: frozenset[str]
    excluded_verification_status: frozenset[str]
    unconfirmed_verification_status: frozenset[str]


def _rules(entries: list[dict[str, Any]], systems: dict[str, str]) -> tuple[CodeRule, ...]:
    rules = []
    for e in entries:
        morph = e.get("morphology")
        rules.append(
            CodeRule(
                system=systems[e["system"]],
                code=str(e["code"]) if "code" in e else None,
                prefix=icd10_key(str(e["prefix"])) if "prefix" in e else None,
                morphology=(int(morph[0]), int(morph[1])) if morph else None,
                behavior=tuple(int(b) for b in e.get("behavior", ())),
                verified=bool(e.get("verified", True)),
            )
        )
    return tuple(rules)


@cache
def conditions() -> ConditionTable:
    data = _load("conditions.yaml")
    systems = data["systems"]
    sets = {
        sid: CodeSet(sid, s["title"], _rules(s["codes"], systems)) for sid, s in data["sets"].items()
    }
    return ConditionTable(
        systems=systems,
        histology_extension=data["histology_extension"],
        sets=sets,
        active_clinical_status=frozenset(data["active_clinical_status"]),
        excluded_verification_status=frozenset(data["excluded_verification_status"]),
        unconfirmed_verification_status=frozenset(data["unconfirmed_verification_status"]),
    )


# --------------------------------------------------------------------------- coded answers


@dataclass(frozen=True)
class AnswerTable:
    ecog: dict[Coding, int]
    pregnancy_positive: frozenset[Coding]
    pregnancy_negative: frozenset[Coding]
    presence_positive: frozenset[Coding]
    presence_negative: frozenset[Coding]
    breastfeeding_positive: frozenset[Coding]
    breastfeeding_negative: frozenset[Coding]
    disease_status: dict[Coding, str]
    tumor_method: dict[Coding, str]
    m1_prefixes: tuple[str, ...]
    stage_iv_codes: frozenset[str]


@cache
def answers() -> AnswerTable:
    data = _load("answers.yaml")
    systems = data["systems"]

    def codings(entries: list[dict[str, Any]]) -> frozenset[Coding]:
        return frozenset((systems[e["system"]], str(e["code"])) for e in entries)

    disease_status = {c: status for status, es in data["disease-status"].items() for c in codings(es)}
    tumor_method = {c: cat for cat, es in data["tumor-method"].items() for c in codings(es)}
    return AnswerTable(
        ecog={(systems[e["system"]], str(e["code"])): int(e["score"]) for e in data["ecog"]},
        pregnancy_positive=codings(data["pregnancy-status"]["positive"]),
        pregnancy_negative=codings(data["pregnancy-status"]["negative"]),
        presence_positive=codings(data["presence"]["positive"]),
        presence_negative=codings(data["presence"]["negative"]),
        breastfeeding_positive=codings(data["breastfeeding"]["positive"]),
        breastfeeding_negative=codings(data["breastfeeding"]["negative"]),
        disease_status=disease_status,
        tumor_method=tumor_method,
        m1_prefixes=tuple(data["m1-prefixes"]),
        stage_iv_codes=frozenset(str(c) for c in data["stage-iv-codes"]),
    )


# --------------------------------------------------------------------------- medications


@dataclass(frozen=True)
class Drug:
    name: str
    rxnorm: str | None
    names: tuple[str, ...]  # ingredient and brand names, lower case


@dataclass(frozen=True)
class MedicationTable:
    system: str
    ici: tuple[Drug, ...]
    by_rxnorm: dict[str, Drug]
    excluded_status: dict[str, frozenset[str]]


@cache
def medications() -> MedicationTable:
    data = _load("medications.yaml")
    drugs = tuple(
        Drug(
            name=d["name"],
            rxnorm=str(d["rxnorm"]) if d.get("rxnorm") else None,
            names=tuple(n.lower() for n in [d["name"], *d.get("brands", [])]),
        )
        for d in data["ici"]
    )
    return MedicationTable(
        system=data["system"],
        ici=drugs,
        by_rxnorm={d.rxnorm: d for d in drugs if d.rxnorm},
        excluded_status={k: frozenset(v) for k, v in data["excluded_status"].items()},
    )


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class UnitTable:
    aliases: dict[str, str]
    aliases_folded: dict[str, str]
    activity_aliases: dict[str, str]
    molar_mass: dict[str, float]


@cache
def units() -> UnitTable:
    data = _load("units.yaml")
    aliases = {str(k): str(v) for k, v in data["aliases"].items()}
    return UnitTable(
        aliases=aliases,
        aliases_folded={k.lower(): v for k, v in aliases.items()},
        activity_aliases={str(k): str(v) for k, v in data.get("activity_aliases", {}).items()},
        molar_mass={k: float(v["value"]) for k, v in data["molar_mass_g_per_mol"].items()},
    )


# --------------------------------------------------------------------------- trial definition


@dataclass(frozen=True)
class Attestation:
    id: str
    text: str


@dataclass(frozen=True)
class Cohort:
    id: str
    title: str
    open: bool


@dataclass(frozen=True)
class Trial:
    id: str
    nct: str
    title: str
    short_title: str
    version: str
    record_date: str
    record_source: str
    url: str
    default_window_days: int
    cohorts: dict[str, Cohort]
    criteria: dict[str, dict[str, Any]]
    attestations: tuple[Attestation, ...] = field(default_factory=tuple)
    card: dict[str, Any] = field(default_factory=dict)

    def rule(self, criterion: str) -> dict[str, Any]:
        return self.criteria.get(criterion, {})

    def window(self, criterion: str, key: str = "window_days") -> int:
        return int(self.rule(criterion).get(key, self.default_window_days))


@cache
def trial(name: str = "axiom") -> Trial:
    data = _load(f"trials/{name}.yaml")
    return Trial(
        id=data["id"],
        nct=data["nct"],
        title=data["title"],
        short_title=data["short_title"],
        version=str(data["version"]),
        record_date=str(data["record"]["date"]),
        record_source=data["record"]["source"],
        url=data["record"]["url"],
        default_window_days=int(data["default_window_days"]),
        cohorts={k: Cohort(k, v["title"], bool(v["open"])) for k, v in data["cohorts"].items()},
        criteria={k: dict(v or {}) for k, v in data["criteria"].items()},
        attestations=tuple(Attestation(a["id"], a["text"]) for a in data["attestations"]),
        card=dict(data.get("card") or {}),
    )
