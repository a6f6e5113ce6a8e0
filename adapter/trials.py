"""Trial definitions: one YAML file per trial version in `mappings/trials/`, validated when loaded.

A file names the trial (id, NCT number, record version and date), its cohorts, its attestations, what
its card offers, and a list of criteria — each a stable id, a `kind` (the rule it applies, registered in
`adapter/criteria/kinds.py`) and that kind's typed parameters (`adapter/criteria/params.py`). Everything
is checked at load: the shape, every parameter, and every name a criterion refers to (an input, a
condition set, a cohort, a unit). A bad file stops the tool with the file, the path in it and the reason.

`--trial FILE|ID` (CLI) and `AXIOM_TRIAL` (service) choose the file: an ID is a file name in
`mappings/trials/`, anything that looks like a path is read as one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import tables
from .criteria.kinds import KINDS
from .criteria.params import Params
from .errors import InputError
from .units import UnitError, factor


class TrialFileError(InputError):
    """The trial definition cannot be used: the file, where in it, and why."""


# --------------------------------------------------------------------------- the file's shape


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Record(_Strict):
    date: str
    source: str = Field(description="which version of the trial record this file encodes, for the card")
    url: str


class CohortSpec(_Strict):
    title: str
    open: bool = True


class AttestationSpec(_Strict):
    id: str
    text: str


class CodingSpec(_Strict):
    system: str
    code: str
    display: str | None = None


class ReferralSpec(_Strict):
    code: CodingSpec
    text: str
    identifier_system: str | None = Field(None, description="ServiceRequest.identifier system of the referral "
                                          "(value: trial id-patient id), by which an existing one is found")


class ReasonSpec(_Strict):
    code: str
    display: str


class CardSpec(_Strict):
    source_label: str
    topic: CodingSpec
    referral: ReferralSpec
    lab_inputs: dict[str, str] = Field(description="criterion id → the input whose absence suggests ordering "
                                                   "a panel (mappings/observations.yaml panels)")
    lab_order_category: CodingSpec = Field(description="ServiceRequest.category of a suggested lab order")
    override_system: str
    override_reasons: list[ReasonSpec]


class CriterionEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    kind: str


class TrialFile(_Strict):
    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    nct: str = Field(pattern=r"^NCT\d{8}$")
    title: str
    short_title: str
    version: str
    record: Record
    sponsor: str | None = None
    default_window_days: int = Field(gt=0)
    cohorts: dict[str, CohortSpec] = Field(min_length=1)
    criteria: list[CriterionEntry] = Field(min_length=1)
    attestations: list[AttestationSpec] = Field(default_factory=list)
    card: CardSpec

    @model_validator(mode="after")
    def _unique_ids(self) -> TrialFile:
        seen: set[str] = set()
        for i, c in enumerate(self.criteria):
            if c.id in seen:
                raise ValueError(f"criteria[{i}]: criterion id {c.id!r} appears twice")
            seen.add(c.id)
        return self


# --------------------------------------------------------------------------- the loaded trial


@dataclass(frozen=True)
class Criterion:
    """One criterion of a trial: its stable id, its kind and that kind's validated parameters."""

    id: str
    kind: str
    params: Params


@dataclass(frozen=True)
class Cohort:
    id: str
    title: str
    open: bool


@dataclass(frozen=True)
class Attestation:
    id: str
    text: str


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: what is derived from it is cached
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
    specs: tuple[Criterion, ...]
    attestations: tuple[Attestation, ...] = ()
    card: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def criterion_ids(self) -> tuple[str, ...]:
        """Every criterion id, in the file's order: the report's order."""
        return tuple(c.id for c in self.specs)

    def criterion(self, cid: str) -> Criterion:
        return next(c for c in self.specs if c.id == cid)

    @property
    def criteria(self) -> dict[str, dict[str, Any]]:
        """Each criterion's parameters as plain data, by id."""
        return {c.id: self.rule(c.id) for c in self.specs}

    def rule(self, cid: str) -> dict[str, Any]:
        """A criterion's parameters as plain data (keys as in the file)."""
        found = next((c for c in self.specs if c.id == cid), None)
        return found.params.model_dump(by_alias=True, exclude_none=True) if found else {}

    def window(self, cid: str, key: str = "window_days") -> int:
        """A criterion's window in days (`key` names another window parameter), else the trial's default."""
        value = self.rule(cid).get(key)
        return int(value) if value else self.default_window_days

    def lookback_windows(self) -> list[int]:
        """Every window a criterion reads data over (the FHIR searches must reach back that far)."""
        out = [self.default_window_days]
        for c in self.specs:
            out += [int(v) for k, v in c.params.model_dump().items() if k.endswith("window_days") and v]
        return out


def _where(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """A pydantic error location as a path in the file, naming the criterion by its id."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
            if loc[:i] == ("criteria",):
                entries = data.get("criteria")
                if isinstance(entries, list) and part < len(entries) and isinstance(entries[part], dict):
                    parts[-1] += f" ({entries[part].get('id')})"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _fail(path: Path, where: str, why: str) -> TrialFileError:
    return TrialFileError(f"trial definition {path}: {where}: {why}")


def _params(path: Path, i: int, entry: CriterionEntry) -> Params:
    kind = KINDS.get(entry.kind)
    where = f"criteria[{i}] ({entry.id})"
    if kind is None:
        raise _fail(path, f"{where}.kind", f"unknown kind {entry.kind!r} (known: {', '.join(sorted(KINDS))})")
    try:
        return kind.params.model_validate(entry.model_extra or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        sub = ".".join(str(p) for p in first.get("loc", ()))
        raise _fail(path, f"{where}{'.' + sub if sub else ''}", str(first.get("msg"))) from None


def _check_references(path: Path, spec: TrialFile, criteria: list[Criterion]) -> None:
    """Every name a criterion uses exists: inputs, condition sets, cohorts; and its units convert."""
    inputs = tables.observations().inputs
    sets = tables.conditions().sets
    for i, c in enumerate(criteria):
        where = f"criteria[{i}] ({c.id})"
        for name in c.params.inputs():
            if name not in inputs:
                raise _fail(path, where, f"unknown input {name!r} (mappings/observations.yaml)")
        for name in c.params.condition_sets():
            if name not in sets:
                raise _fail(path, where, f"unknown condition set {name!r} (mappings/conditions.yaml)")
        for name in c.params.cohorts():
            if name not in spec.cohorts:
                raise _fail(path, where, f"unknown cohort {name!r} (known: {', '.join(spec.cohorts)})")
        _check_units(path, where, c.params)
    for cid, input_id in spec.card.lab_inputs.items():
        if cid not in {c.id for c in criteria} or input_id not in inputs:
            raise _fail(path, f"card.lab_inputs.{cid}", "names an unknown criterion or input")


def _check_units(path: Path, where: str, params: Params) -> None:
    inputs = tables.observations().inputs
    unit = getattr(params, "unit", None)
    input_id = getattr(params, "input", None)
    if isinstance(unit, str) and isinstance(input_id, str) and inputs[input_id].unit != unit:
        raise _fail(path, f"{where}.unit", f"{unit!r} is not the canonical unit of {input_id} "
                                           f"({inputs[input_id].unit!r}, mappings/observations.yaml)")
    default = getattr(params, "default_uln", None)
    if default is not None and isinstance(input_id, str):
        spec = inputs[input_id]
        try:
            factor(default.unit, str(spec.unit), spec.analyte, spec.kind, spec.unit_aliases)
        except UnitError as exc:
            raise _fail(path, f"{where}.default_uln.unit", str(exc)) from None


def trial_path(name: str) -> Path:
    """`--trial` / AXIOM_TRIAL: a file path, or the id of a file in mappings/trials/."""
    if name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file():
        return Path(name)
    return tables.mappings_dir() / "trials" / f"{name}.yaml"


@cache
def load_trial(name: str = "axiom") -> Trial:
    """The validated trial definition; TrialFileError (one line) when it cannot be used."""
    path = trial_path(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in (tables.mappings_dir() / "trials").glob("*.yaml"))
        raise TrialFileError(f"no trial definition {name!r} ({path}; known ids: {', '.join(known)})") from None
    except OSError as exc:
        raise TrialFileError(f"cannot read trial definition {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TrialFileError(f"trial definition {path} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise _fail(path, "(top level)", "expected a mapping")
    try:
        spec = TrialFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _fail(path, _where(tuple(first.get("loc", ())), data), str(first.get("msg"))) from None
    criteria = [Criterion(e.id, e.kind, _params(path, i, e)) for i, e in enumerate(spec.criteria)]
    _check_references(path, spec, criteria)
    return Trial(
        id=spec.id, nct=spec.nct, title=spec.title, short_title=spec.short_title, version=spec.version,
        record_date=spec.record.date, record_source=spec.record.source, url=spec.record.url,
        default_window_days=spec.default_window_days,
        cohorts={k: Cohort(k, v.title, v.open) for k, v in spec.cohorts.items()},
        specs=tuple(criteria),
        attestations=tuple(Attestation(a.id, a.text) for a in spec.attestations),
        card=spec.card.model_dump(exclude_none=True),
        path=str(path),
    )
