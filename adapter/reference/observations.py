"""observations.md: every criterion input — its codes, unit, accepted unit spellings, ranges, ULN, search.

The accepted spellings are found by asking the unit logic itself (`units.factor`) about every spelling
the tables know, so the page lists exactly what converts, with the factor applied.
"""

from __future__ import annotations

from ..engine import lookback_days
from ..tables import InputSpec, UnitTable, observations, units
from ..trials import Trial
from ..units import UnitError, factor
from . import markdown as md
from .sources import pair, raw, source

# Inputs whose value is a score or a coded answer: no unit conversion (mapping/values.py).
_UNITLESS = (None, "1")


def _known_spellings(trials: list[tuple[str, Trial]]) -> list[str]:
    """Every unit spelling the data names: aliases and what they mean, canonical and display units, ULN units."""
    table = units()
    found = set(table.aliases) | set(table.aliases.values())
    for s in table.sets.values():
        found |= set(s.aliases) | set(s.aliases.values())
    for spec in observations().inputs.values():
        found |= {u for u in (spec.unit, spec.display_unit) if u}
    for _, trial in trials:
        for c in trial.specs:
            uln = getattr(c.params, "default_uln", None)
            if uln is not None:
                found.add(uln.unit)
    return sorted(found, key=lambda u: (u.casefold(), u))


def _where(spelling: str, spec: InputSpec, table: UnitTable) -> str:
    """Which table turns the spelling into UCUM for this input (the lookup order of units.normalise_spelling)."""
    text = spelling.strip().replace("µ", "u").replace("μ", "u")
    names = table.sets_for(spec.kind, spec.unit_aliases)
    for name in names:
        if text in table.sets[name].aliases:
            return f"alias set [{name}](units.md#{name})"
    if text in table.aliases:
        return "[aliases](units.md#aliases)"
    folded = text.lower()
    if folded not in table.never_fold:
        for name in names:
            if folded in table.sets[name].folded:
                return f"alias set [{name}](units.md#{name})"
        if folded in table.aliases_folded:
            return "[aliases](units.md#aliases)"
    return "UCUM"


def _factor_text(f: float) -> str:
    """1,000 · 0.001 · 0.00161145 (six significant digits, never an exponent)."""
    if f.is_integer():
        return f"{int(f):,}"
    shown = f"{f:.6g}"
    return f"{float(shown):.15f}".rstrip("0") if "e" in shown else shown


def _conversions(spec: InputSpec, spellings: list[str]) -> list[str]:
    """Rows: factor, the spellings converted by it, which tables read them."""
    assert spec.unit is not None
    table = units()
    groups: dict[float, list[tuple[str, str, bool]]] = {}
    for spelling in spellings:
        try:
            f = factor(spelling, spec.unit, spec.analyte, spec.kind, spec.unit_aliases)
        except UnitError:
            continue
        try:
            factor(spelling, spec.unit, None, spec.kind, spec.unit_aliases)
            molar = False
        except UnitError:  # converts only through the analyte's molar mass
            molar = True
        groups.setdefault(float(f"{f:.6g}"), []).append((spelling, _where(spelling, spec, table), molar))
    rows = []
    for f, found in sorted(groups.items()):
        how = "; ".join(sorted({h for _, h, _ in found}))
        if any(m for _, _, m in found):
            how += f"; the molar mass of [{spec.analyte}](units.md#molar-masses)"
        rows.append([md.text(f"× {_factor_text(f)}"), ", ".join(md.code(s) for s, _, _ in found), how])
    return md.table(["factor to " + md.code(spec.unit), "spellings", "read by"], rows)


def _facts(spec: InputSpec, entry: dict[str, object], trials: list[tuple[str, Trial]]) -> list[str]:
    table = observations()
    lines = []
    if spec.plausible:
        lo, hi = spec.plausible
        why = md.text(source(entry.get("plausible")))
        lines.append(f"- Plausible range: {md.text(md.number(lo))} – {md.text(md.number(hi))} "
                     f"{md.code(spec.unit, False)}; outside it a value is an entry or unit error (unknown) — {why}")
    if spec.analyte:
        mass = units().molar_mass.get(spec.analyte)
        shown = f"{md.text(md.number(mass))} g/mol" if mass else "no molar mass"
        lines.append(f"- Analyte {md.code(spec.analyte, False)}: [molar mass](units.md#molar-masses) {shown}")
    if spec.display_unit:
        lines.append(f"- Shown as {md.code(spec.display_unit, False)}")
    if spec.value_component:
        lines.append(f"- Value: the component {md.code(spec.value_component, False)} when present, else valueQuantity")
    if spec.informative:
        lines.append("- Informative only: shown when sent, never searched for, never decides a criterion")
    for stem, trial in trials:
        users = [c for c in trial.specs if spec.id in c.params.inputs()]
        if users:
            links = ", ".join(f"[{md.code(c.id, False)}](criteria-{stem}.md#{c.id})" for c in users)
            lines.append(f"- Read by {md.code(stem, False)}: {links}")
        for c in users:
            uln = getattr(c.params, "default_uln", None)
            if uln is not None and getattr(c.params, "input", None) == spec.id:
                lines.append(f"- ULN for {md.code(stem, False)} {md.code(c.id, False)}: the result's own "
                             f"referenceRange.high (converted), else {md.text(md.number(uln.value))} "
                             f"{md.code(uln.unit, False)}, marked 'assumed ULN' — {md.text(uln.source)}")
    panels = [pn for pn in table.panels if spec.id in pn.covers]
    if panels:
        lines.append("- Missing or stale: the card suggests ordering "
                     + ", ".join(f"{md.code(pn.code, False)} {md.text(pn.display)}" for pn in panels))
    return lines


def _lookback(spec: InputSpec, trials: list[tuple[str, Trial]]) -> str:
    if spec.history:
        return "whole history"
    reach = ", ".join(f"{stem} {lookback_days(trial)} days" for stem, trial in trials)
    return f"the reading criterion's window (searched back: {reach})"


def _section(spec: InputSpec, entry: dict[str, object], trials: list[tuple[str, Trial]],
             spellings: list[str]) -> list[str]:
    table = observations()
    system = "LOINC" if spec.system == table.system else spec.system
    lines = [
        f"## {md.code(spec.id, False)}",
        "",
        f"**{md.text(spec.label)}** · kind {md.code(spec.kind, False)} · unit "
        f"{md.code(spec.unit, False) if spec.unit not in _UNITLESS else 'none (' + spec.kind + ')'} · "
        f"search / prefetch key {md.code(spec.search, False)} · look-back: {_lookback(spec, trials)}",
    ]
    facts = _facts(spec, entry, trials)
    if facts:
        lines += ["", *facts]
    rows = []
    for code, e in pair(spec.codes, entry.get("codes")):
        obs_code = table.by_code[code]
        kind = obs_code.kind if obs_code.kind != spec.kind else ""
        rows.append([md.code(code), md.text(obs_code.display), md.code(kind) if kind else "", md.text(source(e))])
    components = entry.get("components")
    if spec.value_component and isinstance(components, dict):
        for name, comp in components.items():
            if isinstance(comp, dict) and str(comp.get("code")) == spec.value_component:
                rows.append([md.code(spec.value_component), md.text(comp.get("display", "")),
                             md.text(f"component ({name})"), md.text(source(comp))])
    lines += ["", *md.table([f"code ({md.text(system)})", "display", "value kind (when not the input's)", "source"],
                            rows)]
    if spec.unit not in _UNITLESS:
        lines += ["", f"Unit spellings the tables know that convert to {md.code(spec.unit, False)} (any other "
                      "UCUM unit of the same dimension converts too; a unit that does not convert is unknown):",
                  "", *_conversions(spec, spellings)]
    return lines


def document(trials: list[tuple[str, Trial]]) -> str:
    table = observations()
    data = raw("observations.yaml")
    entries = data.get("inputs") or {}
    spellings = _known_spellings(trials)
    intro = [
        "Each input the criteria read, with the Observation codes mapped to it. Matching is on system + "
        f"code, never on display text; the main system is {md.code(table.system, False)}. Values are "
        "converted to the input's unit before any comparison (UCUM via ucumvert and pint, after the "
        "spellings of [units.md](units.md)); a code's own value kind (molar for a mass input, log10) decides "
        "how its value is read. Search keys name the FHIR search and CDS Hooks prefetch key that fetch it.",
    ]
    sections = [line for spec in table.inputs.values()
                for line in ["", *_section(spec, entries.get(spec.id) or {}, trials, spellings)]][1:]
    panel_rows = [[md.code(pn.code), md.text(pn.display), ", ".join(f"[{md.code(i)}](#{i})" for i in pn.covers),
                   md.text(source(e))] for pn, e in pair(table.panels, data.get("panels"))]
    panels = ["## Panels", "", "What the card suggests ordering when a covered lab is missing or stale.", "",
              *md.table(["code", "display", "covers", "source"], panel_rows)]
    return md.document("Observation inputs", intro, sections, panels)
