"""Units: UCUM (via ucumvert) into one pint registry, with real-world aliases and molar masses.

Feeds send `K/uL`, `x10E3/uL`, `mEq/L` and friends; these are rewritten to UCUM first (mappings/
units.yaml), because plain UCUM parsing reads `K/uL` as kelvin per microlitre. Some spellings mean
different things for different analytes — IU/L is the enzyme unit U/L for AST but the international
unit for hCG; G/L is giga (10^9) per litre for a count and never grams — so aliases come in sets that
only the kinds (or inputs) they are true for use. A unit that cannot be converted raises `UnitError`:
the criterion becomes `unknown`, never a guess. Factors are cached per (unit, target, analyte, sets):
a record of 2,000 Observations uses a handful of distinct units.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import ucumvert
from pint import UnitRegistry
from ucumvert import PintUcumRegistry, UcumToPintTransformer, get_ucum_parser, parse_ucum

from . import tables

UCUM_DEFINITIONS = Path(ucumvert.__file__).resolve().parent / "pint_ucum_defs.txt"


class UnitError(ValueError):
    """A unit is missing, unparseable, or not convertible to what the criterion needs."""


class _Registry(PintUcumRegistry):  # type: ignore[misc]  # pint and ucumvert are untyped
    """ucumvert's registry (pint's units + UCUM's) at about 40 % of its build time, which every process pays.

    ucumvert's own `_after_init` also builds pint's application registry a second time (its transformer's
    default registry, never used here) and a second UCUM parser, and pint's unit cache twice (before and
    after the UCUM definitions). Here: pint's definitions, then UCUM's, one cache, one parser, and the
    transformer on this registry — the same definitions loaded in the same order, so the same units.
    """

    _deferred_cache = False

    def _after_init(self) -> None:
        self._deferred_cache = True
        try:
            UnitRegistry._after_init(self)  # pint's own definitions; its cache is built once, below
            loaded = self.load_definitions(UCUM_DEFINITIONS)
        finally:
            self._deferred_cache = False
        self._build_cache(loaded)
        self._ucum_parser = get_ucum_parser()
        # quantities of this registry: the default would be pint's application registry, which cannot use
        # our molar-mass contexts (codes.md, "Traps")
        self._from_ucum_transformer = UcumToPintTransformer(ureg=self).transform

    def _build_cache(self, loaded_files: Any = None) -> None:
        if not self._deferred_cache:
            super()._build_cache(loaded_files)


@cache
def _registry() -> tuple[Any, Any, Any]:
    ureg = _Registry()
    return ureg, ureg._ucum_parser, ureg._from_ucum_transformer


@cache
def _arbitrary_units() -> frozenset[str]:
    """pint names of UCUM's arbitrary units ([IU], [arb'U], [CFU]…: isArbitrary in UCUM's own
    ucum-essence.xml, vendored by ucumvert). UCUM: an arbitrary unit is commensurable only with itself;
    pint reads them as dimensionless, so without this check 10*9/L would "convert" to m[IU]/mL."""
    ureg, parser, transform = _registry()
    essence = Path(ucumvert.__file__).parent / "vendor" / "ucum-essence.xml"
    names: set[str] = set()
    for unit in ElementTree.parse(essence).getroot().iter():  # the package's own file
        if unit.tag.endswith("unit") and unit.get("isArbitrary") == "yes" and unit.get("Code"):
            try:
                q = transform(parse_ucum(str(unit.get("Code")), parser))
            except Exception:  # a UCUM unit ucumvert does not map cannot appear in a parsed value either
                continue
            if isinstance(q, ureg.Quantity):
                names.update(_base_name(ureg, n) for n, _ in q.unit_items())
    return frozenset(names)


def _base_name(ureg: Any, name: str) -> str:
    """'milliinternational_unit' → 'international_unit' (the unit without its prefix)."""
    parsed = ureg.parse_unit_name(name)
    return str(parsed[0][1]) if parsed else name


def _arbitrary_powers(ureg: Any, q: Any) -> dict[str, float]:
    arbitrary = _arbitrary_units()
    out: dict[str, float] = {}
    for name, power in q.unit_items():
        base = _base_name(ureg, name)
        if base in arbitrary:
            out[base] = out.get(base, 0) + power
    return {k: v for k, v in out.items() if v}


def normalise_spelling(unit: str, kind: str | None = None, aliases: tuple[str, ...] | None = None) -> str:
    """Apply the alias tables: the kind's (or input's) sets, then the shared one, exact spelling first,
    then case-folded — never re-casing a spelling whose case carries its meaning (G/L vs g/L)."""
    text = unit.strip().replace("µ", "u").replace("μ", "u")  # micro sign, Greek mu
    table = tables.units()
    sets = [table.sets[name] for name in table.sets_for(kind, aliases)]
    for s in sets:
        if text in s.aliases:
            return s.aliases[text]
    if text in table.aliases:
        return table.aliases[text]
    folded = text.lower()
    if folded in table.never_fold:
        return text
    for s in sets:
        if folded in s.folded:
            return s.folded[folded]
    return table.aliases_folded.get(folded, text)


@lru_cache(maxsize=4096)
def parse(unit: str, kind: str | None = None, aliases: tuple[str, ...] | None = None) -> Any:
    """Parse one unit spelling into a pint Quantity of magnitude 1 (annotations dropped)."""
    spelling = normalise_spelling(unit, kind, aliases)
    if not spelling:
        raise UnitError("no unit")
    try:
        return _ucum(spelling)
    except UnitError as exc:
        raise UnitError(f"unit '{unit}' is not UCUM or a known alias") from exc.__cause__


@lru_cache(maxsize=4096)
def _ucum(spelling: str) -> Any:
    """A UCUM spelling as a pint Quantity: cached apart from `parse`, because many spellings a feed sends
    (K/uL, x10E3/uL, thou/uL) are one UCUM unit, and UCUM's Earley parse is the slow part."""
    ureg, parser, transform = _registry()
    try:
        result = transform(parse_ucum(spelling, parser))
    except Exception as exc:  # lark and pint raise many types; all mean "not a unit we know"
        raise UnitError(spelling) from exc
    if not isinstance(result, ureg.Quantity):
        # a bare annotation such as {score} or {copies}: dimensionless
        return ureg.Quantity(1, "dimensionless")
    return result


def _equivalents(ureg: Any, q: Any) -> float:
    """The power of UCUM `eq` in a unit: pint converts it as a mole, which is true only per unit charge."""
    return float(sum(power for name, power in q.unit_items() if _base_name(ureg, name) == "equivalents"))


@lru_cache(maxsize=4096)
def factor(unit: str, target: str, analyte: str | None = None, kind: str | None = None,
           aliases: tuple[str, ...] | None = None) -> float:
    """Multiply a value in `unit` by this to get `target`. Molar ↔ mass uses the analyte's molar mass;
    equivalents ↔ moles its valence (mappings/units.yaml), and no other analyte's value in mEq converts.

    `kind` (mappings/observations.yaml) picks the alias sets; `aliases` names an input's own instead.
    """
    ureg, _, _ = _registry()
    source = parse(unit, kind, aliases)
    goal = parse(target, kind, aliases)
    if _arbitrary_powers(ureg, source) != _arbitrary_powers(ureg, goal):
        raise UnitError(f"cannot convert '{unit}' to {target}: an arbitrary unit such as [IU] converts "
                        "only to itself (UCUM)")
    charge = _equivalents(ureg, source) - _equivalents(ureg, goal)
    per_charge = 1.0
    if charge:
        valence = tables.units().valence.get(analyte or "")
        if valence is None:
            raise UnitError(f"cannot convert '{unit}' to {target}: equivalents convert to moles only for an "
                            "ion of known charge")
        per_charge = float(valence) ** -charge  # pint reads each eq as a mole; a mole is `valence` eq
    return per_charge * _pint_factor(ureg, source, goal, unit, target, analyte)


def _pint_factor(ureg: Any, source: Any, goal: Any, unit: str, target: str, analyte: str | None) -> float:
    try:
        return float((source / goal).to("dimensionless").magnitude)
    except Exception as exc:
        if analyte is None:
            raise UnitError(f"cannot convert '{unit}' to {target}") from exc
    mass = tables.units().molar_mass.get(analyte)
    if mass is None:
        raise UnitError(f"cannot convert '{unit}' to {target}: no molar mass for {analyte}")
    try:
        with ureg.context("chemistry", mw=mass * ureg("g/mol")):
            return float(source.to(goal.units).magnitude / goal.magnitude)
    except Exception as exc:
        raise UnitError(f"cannot convert '{unit}' to {target}") from exc


def quantity_factor(
    code: str | None, text: str | None, target: str, analyte: str | None = None, kind: str | None = None,
    aliases: tuple[str, ...] | None = None,
) -> tuple[float, str]:
    """Factor for a FHIR Quantity: UCUM `code` first, then the free-text `unit`.

    Returns the factor and the spelling that was used. When both convert but to different values
    (code µmol/L, unit mg/dL) the Quantity contradicts itself: which one the number is in cannot be
    told, so it is refused rather than read by the code and shown by the text.
    """
    errors: list[str] = []
    found: list[tuple[float, str]] = []
    for spelling in (code, text):
        if isinstance(spelling, str) and spelling.strip():
            try:
                found.append((factor(spelling.strip(), target, analyte, kind, aliases), spelling.strip()))
            except UnitError as exc:
                errors.append(str(exc))
    if len(found) == 2 and not math.isclose(found[0][0], found[1][0], rel_tol=1e-9):
        raise UnitError(f"the UCUM code '{found[0][1]}' and the unit '{found[1][1]}' disagree")
    if found:
        return found[0]
    if not errors:
        raise UnitError("no unit")
    raise UnitError(errors[0])
