"""answers.md: the coded answers the criteria read (ECOG, pregnancy, hCG, breastfeeding, disease status,
tumor-size methods, TNM M1 and stage IV)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tables import Coding, answers
from ..trials import Trial
from . import markdown as md
from .sources import raw, source

_NAMES = {"snomed": "SNOMED CT", "loinc": "LOINC", "ajcc": "AJCC"}


class _Lookup:
    """The file's entry (its source) for a loaded coding: the loader keeps codings in sets and maps."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.systems: dict[str, str] = {str(k): str(v) for k, v in (data.get("systems") or {}).items()}
        self.entries: dict[Coding, dict[str, Any]] = {}
        for value in data.values():
            for e in _entries(value):
                if "system" in e and "code" in e:
                    self.entries.setdefault((self.systems.get(str(e["system"]), ""), str(e["code"])), e)

    def system(self, url: str) -> str:
        key = next((k for k, v in self.systems.items() if v == url), url)
        return _NAMES.get(key, key)

    def row(self, coding: Coding, *middle: str) -> list[str]:
        system, code = coding
        return [md.text(self.system(system)), md.code(code), *middle, md.text(source(self.entries.get(coding)))]


def _entries(value: object) -> Iterable[dict[str, Any]]:
    if isinstance(value, dict):
        yield from (e for v in value.values() for e in _entries(v))
    elif isinstance(value, list):
        yield from (e for e in value if isinstance(e, dict))


def _codes(lookup: _Lookup, codings: Iterable[Coding], meaning: str) -> list[list[str]]:
    return [lookup.row(c, md.text(meaning)) for c in sorted(codings)]


def _grouped(mapping: dict[Coding, str]) -> list[tuple[Coding, str]]:
    """A loaded coding → category map in the file's category order, codes sorted within (the loader
    builds it from sets, whose order changes from run to run)."""
    order = {cat: i for i, cat in enumerate(dict.fromkeys(mapping.values()))}
    return sorted(mapping.items(), key=lambda item: (order[item[1]], item[0]))


def _measurable_limits(category: str, trials: list[tuple[str, Trial]]) -> str:
    out = []
    for stem, trial in trials:
        for c in trial.specs:
            limits = getattr(c.params, "min_mm", None)
            if isinstance(limits, dict):
                limit = limits.get(category)
                shown = f">= {md.number(limit)} mm" if limit is not None else "no limit"
                out.append(f"{stem} {c.id}: {shown}")
    return md.words("; ".join(out))


def document(trials: list[tuple[str, Trial]]) -> str:
    table = answers()
    lookup = _Lookup(raw("answers.yaml"))
    header = ["system", "code", "means", "source"]
    ecog = ["## `ecog`", "", "ECOG answers, when an [ecog](observations.md#ecog) Observation carries a code "
            "instead of a number.", "", *md.table(header, [lookup.row(c, md.text(f"ECOG {score}"))
                                                for c, score in table.ecog.items()])]
    status = ["## `pregnancy-status`", "", *md.table(header, [
        *_codes(lookup, table.pregnancy_positive, "pregnant"),
        *_codes(lookup, table.pregnancy_negative, "not pregnant")])]
    presence = ["## `presence`", "", "Qualitative hCG tests.", "", *md.table(header, [
        *_codes(lookup, table.presence_positive, "positive"), *_codes(lookup, table.presence_negative, "negative")])]
    feeding = ["## `breastfeeding`", "", *md.table(header, [
        *_codes(lookup, table.breastfeeding_positive, "breastfeeding"),
        *_codes(lookup, table.breastfeeding_negative, "not breastfeeding")])]
    disease = ["## `disease-status`", "",
               "[Cancer disease status](observations.md#disease-status) answers; `worsened` is progression.", "",
               *md.table(header, [lookup.row(c, md.code(s)) for c, s in _grouped(table.disease_status)])]
    methods = ["## `tumor-method`", "", "Observation.method of a tumor size, as the protocol's method category; "
               "the size limit of each category is the trial's (`min_mm`).", "",
               *md.table(["system", "code", "category", "limit", "source"],
                         [[*lookup.row(c, md.code(cat))[:3], _measurable_limits(cat, trials),
                           lookup.row(c)[-1]] for c, cat in _grouped(table.tumor_method)])]
    staging = ["## Metastatic staging", "",
               "TNM distant metastasis values starting with one of these mean M1 (metastatic): "
               + ", ".join(md.code(m, False) for m in table.m1_prefixes) + "; stage groups meaning stage IV: "
               + ", ".join(md.code(s, False) for s in sorted(table.stage_iv_codes)) + ". Source: the comment above "
               "them in mappings/answers.yaml (the lists carry none). mCODE 4.0's SNOMED CT values for the same:", "",
               *md.table(header, [lookup.row(c, "M1") for c in sorted(table.m1_codings)]
                         + [lookup.row(c, "stage IV") for c in sorted(table.stage_iv_codings)])]
    return md.document("Coded answers", ecog, status, presence, feeding, disease, methods, staging)
