"""Clinical facts as data: code tables and unit aliases from `mappings/`.

Nothing clinical is hard-coded in Python: codes, thresholds, windows and units are read here, once,
into frozen structures the other layers look things up in. `AXIOM_MAPPINGS` points at another
mappings directory (a site's amended trial definition, say).
"""

from __future__ import annotations

import os
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml

LOINC = "http://loinc.org"


def mappings_dir() -> Path:
    """AXIOM_MAPPINGS; else the copy of mappings/ an installed wheel carries in the package; else the checkout's.

    The repository keeps mappings/ at the top level as the one source of truth; the wheel build puts it at
    adapter/mappings/ (pyproject.toml, hatch `sources`), and an editable install reads the checkout's. The
    tables are read as files: pip installs wheels unpacked, so the package's resources are a directory.
    """
    env = os.environ.get("AXIOM_MAPPINGS")
    if env:
        return Path(env)
    packaged = resources.files("adapter") / "mappings"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "mappings"


def _load(name: str) -> dict[str, Any]:
    path = mappings_dir() / name
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


Coding = tuple[str, str]  # (system, code)


class _Coded(Protocol):
    """Anything that can say which of its codes in a system are among some codes (fhir.wire.Head)."""

    def code_among(self, codes: Mapping[str, Container[str]]) -> str | None: ...


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
    system: str = LOINC  # the code system of `codes` (mCODE's history of metastatic cancer is SNOMED CT)
    # unit logic (adapter/units.py, mapping/values.py): this input's own alias sets (units.yaml `sets`,
    # replacing its kind's), the physiological range in `unit` outside which a value is an entry or unit
    # error, and the unit a value is shown in when it differs from the UCUM one (copies/mL for /mL)
    unit_aliases: tuple[str, ...] | None = None
    plausible: tuple[float, float] | None = None
    # the range in `unit` a reference range's upper limit (a ULN) must lie in to be used (a unit slip in
    # the range would otherwise flip a ULN criterion)
    uln_plausible: tuple[float, float] | None = None
    display_unit: str | None = None
    # the component (its code) whose value is the input's value when present (tumor size: its longest
    # dimension, mCODE TumorSize), else valueQuantity
    value_component: str | None = None

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
    panels: tuple[Panel, ...]
    codes_by_system: dict[str, frozenset[str]] = field(default_factory=dict)

    def code_of(self, head: _Coded) -> str | None:
        """The first of an Observation's codes that maps to an input, matched on system + code."""
        return head.code_among(self.codes_by_system)


def _unit_facts(input_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An input's `unit_aliases`, `plausible` range and `display_unit`, checked (a bad file stops the tool)."""
    where = f"{mappings_dir() / 'observations.yaml'}: inputs.{input_id}"
    out: dict[str, Any] = {"display_unit": str(spec["display_unit"]) if spec.get("display_unit") else None}
    if "unit_aliases" in spec:
        names = tuple(str(n) for n in spec["unit_aliases"] or ())
        unknown = [n for n in names if n not in units().sets]
        if unknown:
            raise ValueError(f"{where}.unit_aliases: no alias set {unknown[0]!r} in units.yaml")
        out["unit_aliases"] = names
    for name in ("plausible", "uln_plausible"):
        rng = spec.get(name)
        if rng is None:
            continue
        try:
            lo, hi = float(rng["min"]), float(rng["max"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{where}.{name}: needs numbers `min` and `max`") from exc
        if not lo <= hi or not rng.get("source") or spec.get("unit") is None:
            raise ValueError(f"{where}.{name}: needs min <= max, a `source` and the input's `unit`")
        out[name] = (lo, hi)
    return out


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
            system=str(spec.get("system", data["system"])),
            value_component=str(spec["components"][spec["value_component"]]["code"])
            if spec.get("value_component") else None,
            **_unit_facts(input_id, spec),
        )
    panels = tuple(Panel(str(p["code"]), p["display"], tuple(p["covers"])) for p in data["panels"])
    systems: dict[str, set[str]] = {data["system"]: set()}  # the main system (LOINC) is tried first
    for spec in inputs.values():
        systems.setdefault(spec.system, set()).update(spec.codes)
    return ObservationTable(data["system"], by_code, inputs, panels,
                            {k: frozenset(v) for k, v in systems.items()})


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


SEMANTICS = ("diagnosis", "current-state", "lifelong")  # how a set reads clinicalStatus / abatement[x]


def _rule_match(rule: CodeRule, code: str) -> bool:
    if rule.code is not None:
        return rule.code == code.strip()
    if rule.prefix is not None:
        return icd10_key(code).startswith(rule.prefix)
    if rule.morphology is not None:
        parsed = parse_icdo3(code)
        # a bare morphology without behaviour is not evidence of malignancy
        return bool(parsed and rule.morphology[0] <= parsed[0] <= rule.morphology[1]
                    and parsed[1] is not None and parsed[1] in rule.behavior)
    return False


def _first_match(rules: tuple[CodeRule, ...], system: str | None, code: str | None) -> CodeRule | None:
    if not system or not code:
        return None
    return next((r for r in rules if r.system == system and _rule_match(r, code)), None)


@dataclass(frozen=True)
class CodeSet:
    id: str
    title: str
    rules: tuple[CodeRule, ...]
    semantics: str = "current-state"  # one of SEMANTICS
    profiles: frozenset[str] = frozenset()  # meta.profile canonicals (no version) that put a Condition here
    body_site_within: str | None = None  # a Condition of this set whose bodySite is in `body_sites`
    body_sites: tuple[CodeRule, ...] = ()

    def match(self, system: str | None, code: str | None) -> CodeRule | None:
        return _first_match(self.rules, system, code)

    def match_site(self, system: str | None, code: str | None) -> CodeRule | None:
        return _first_match(self.body_sites, system, code)


@dataclass(frozen=True, eq=False)  # hashed by identity: what is derived from it is cached (mapping/conditions.py)
class ConditionTable:
    systems: dict[str, str]
    histology_extension: str
    sets: dict[str, CodeSet]
    clinical_status_system: str
    verification_status_system: str
    active_clinical_status: frozenset[str]
    excluded_verification_status: frozenset[str]
    unconfirmed_verification_status: frozenset[str]
    age_units: dict[str, tuple[str, int]]  # Age unit → ("years" | "months" | "days", how many)


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


def _code_set(sid: str, s: dict[str, Any], systems: dict[str, str], where: str) -> CodeSet:
    semantics = s.get("semantics")
    if semantics not in SEMANTICS:
        raise ValueError(f"{where}: sets.{sid}.semantics: {semantics!r} is not one of {', '.join(SEMANTICS)}")
    sites = s.get("body_sites") or {}
    return CodeSet(
        sid, s["title"], _rules(s["codes"], systems), semantics,
        profiles=frozenset(str(p["url"]) for p in s.get("profiles") or ()),
        body_site_within=str(sites["within"]) if sites else None,
        body_sites=_rules(sites.get("sites") or [], systems),
    )


def _age_units(data: dict[str, Any], where: str) -> dict[str, tuple[str, int]]:
    out = {}
    for unit, spec in data.items():
        ((field_, n),) = dict(spec).items()
        if field_ not in ("years", "months", "days"):
            raise ValueError(f"{where}: age_units.{unit}: {field_!r} is not years, months or days")
        out[str(unit)] = (str(field_), int(n))
    return out


@cache
def conditions() -> ConditionTable:
    data = _load("conditions.yaml")
    where = str(mappings_dir() / "conditions.yaml")
    systems = data["systems"]
    sets = {sid: _code_set(sid, s, systems, where) for sid, s in data["sets"].items()}
    for sid, code_set in sets.items():
        if code_set.body_site_within is not None and code_set.body_site_within not in sets:
            raise ValueError(f"{where}: sets.{sid}.body_sites.within: no set {code_set.body_site_within!r}")
    return ConditionTable(
        systems=systems,
        histology_extension=data["histology_extension"],
        sets=sets,
        clinical_status_system=str(data["clinical_status_system"]),
        verification_status_system=str(data["verification_status_system"]),
        active_clinical_status=frozenset(data["active_clinical_status"]),
        excluded_verification_status=frozenset(data["excluded_verification_status"]),
        unconfirmed_verification_status=frozenset(data["unconfirmed_verification_status"]),
        age_units=_age_units(data["age_units"], where),
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
    range_normal: frozenset[Coding]  # Observation.referenceRange.type of a normal range
    range_normal_text: frozenset[str]  # … or its whole text, case-folded
    range_not_normal: frozenset[Coding]
    range_sex: dict[Coding, str]  # referenceRange.appliesTo coding → "male" | "female"
    tumor_method: dict[Coding, str]
    m1_prefixes: tuple[str, ...]
    stage_iv_codes: frozenset[str]
    m1_codings: frozenset[Coding]
    stage_iv_codings: frozenset[Coding]


@cache
def answers() -> AnswerTable:
    data = _load("answers.yaml")
    systems = data["systems"]

    def codings(entries: list[dict[str, Any]]) -> frozenset[Coding]:
        return frozenset((systems[e["system"]], str(e["code"])) for e in entries)

    disease_status = {c: status for status, es in data["disease-status"].items() for c in codings(es)}
    tumor_method = {c: cat for cat, es in data["tumor-method"].items() for c in codings(es)}
    ranges = data["reference-range"]
    return AnswerTable(
        ecog={(systems[e["system"]], str(e["code"])): int(e["score"]) for e in data["ecog"]},
        pregnancy_positive=codings(data["pregnancy-status"]["positive"]),
        pregnancy_negative=codings(data["pregnancy-status"]["negative"]),
        presence_positive=codings(data["presence"]["positive"]),
        presence_negative=codings(data["presence"]["negative"]),
        breastfeeding_positive=codings(data["breastfeeding"]["positive"]),
        breastfeeding_negative=codings(data["breastfeeding"]["negative"]),
        disease_status=disease_status,
        range_normal=codings(ranges["normal"]),
        range_normal_text=frozenset(str(t).casefold() for t in ranges["normal-text"]),
        range_not_normal=codings(ranges["not-normal"]),
        range_sex={c: sex for sex, es in ranges["sex"].items() for c in codings(es)},
        tumor_method=tumor_method,
        m1_prefixes=tuple(data["m1-prefixes"]),
        stage_iv_codes=frozenset(str(c) for c in data["stage-iv-codes"]),
        m1_codings=codings(data["m1-snomed"]),
        stage_iv_codings=codings(data["stage-iv-snomed"]),
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
    # per resource type: the intents that are exposure (an order), and whether a missing intent counts
    exposure_intent: dict[str, tuple[frozenset[str], bool]] = field(default_factory=dict)


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
        exposure_intent={k: (frozenset(str(c) for c in v["codes"]), bool(v["absent_counts"]))
                         for k, v in (data.get("exposure_intent") or {}).items()},
    )


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class AliasSet:
    """Spellings true for some kinds of analyte only (IU/L is U/L for enzymes, G/L a count)."""

    id: str
    aliases: dict[str, str]
    folded: dict[str, str]  # empty when the set is case-sensitive


@dataclass(frozen=True)
class UnitTable:
    aliases: dict[str, str]
    aliases_folded: dict[str, str]
    sets: dict[str, AliasSet]
    kind_sets: dict[str, tuple[str, ...]]
    never_fold: frozenset[str]  # folded spellings a case-sensitive set gives a meaning: never re-cased
    molar_mass: dict[str, float]
    valence: dict[str, int] = field(default_factory=dict)  # charge of an ion: equivalents = moles × valence

    def sets_for(self, kind: str | None, override: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The alias sets an input uses: its own when it names them, else its kind's."""
        return override if override is not None else self.kind_sets.get(kind or "", ())


@cache
def units() -> UnitTable:
    data = _load("units.yaml")
    where = mappings_dir() / "units.yaml"
    aliases = {str(k): str(v) for k, v in data["aliases"].items()}
    sets: dict[str, AliasSet] = {}
    for sid, spec in (data.get("sets") or {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("aliases"), dict) or not spec.get("source"):
            raise ValueError(f"{where}: sets.{sid}: needs `aliases` (a mapping) and a `source`")
        own = {str(k): str(v) for k, v in spec["aliases"].items()}
        folded = {} if spec.get("case_sensitive") else {k.lower(): v for k, v in own.items()}
        sets[str(sid)] = AliasSet(str(sid), own, folded)
    kind_sets = {str(k): tuple(str(s) for s in v) for k, v in (data.get("kinds") or {}).items()}
    for kind, names in kind_sets.items():
        for name in names:
            if name not in sets:
                raise ValueError(f"{where}: kinds.{kind}: no alias set {name!r}")
    never_fold = frozenset(k.lower() for s in sets.values() if not s.folded for k in s.aliases)
    return UnitTable(
        aliases=aliases,
        aliases_folded={k.lower(): v for k, v in aliases.items()},
        sets=sets,
        kind_sets=kind_sets,
        never_fold=never_fold,
        molar_mass={k: float(v["value"]) for k, v in data["molar_mass_g_per_mol"].items()},
        valence={k: int(v["value"]) for k, v in (data.get("valence") or {}).items()},
    )
