"""Units: UCUM (via ucumvert) into one pint registry, with real-world aliases and molar masses.

Feeds send `K/uL`, `x10E3/uL`, `mEq/L` and friends; these are rewritten to UCUM first (mappings/
units.yaml), because plain UCUM parsing reads `K/uL` as kelvin per microlitre. A unit that cannot be
converted raises `UnitError`: the criterion becomes `unknown`, never a guess. Factors are cached per
(unit, target, analyte): a record of 2,000 Observations uses a handful of distinct units.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

from ucumvert import PintUcumRegistry, UcumToPintTransformer, get_ucum_parser, parse_ucum

from . import tables


class UnitError(ValueError):
    """A unit is missing, unparseable, or not convertible to what the criterion needs."""


@cache
def _registry() -> tuple[Any, Any, Any]:
    ureg = PintUcumRegistry()
    # Build the transformer on our registry: the default one returns quantities of pint's
    # application registry, which cannot use our molar-mass contexts (codes.md, "Traps").
    transformer = UcumToPintTransformer(ureg=ureg).transform
    return ureg, get_ucum_parser(), transformer


def normalise_spelling(unit: str, kind: str | None = None) -> str:
    """Apply the alias table: exact spelling first, then case-folded."""
    text = unit.strip().replace("µ", "u").replace("μ", "u")  # micro sign, Greek mu
    table = tables.units()
    if kind == "activity":
        text = table.activity_aliases.get(text, text)
    if text in table.aliases:
        return table.aliases[text]
    return table.aliases_folded.get(text.lower(), text)


@lru_cache(maxsize=4096)
def parse(unit: str, kind: str | None = None) -> Any:
    """Parse one unit spelling into a pint Quantity of magnitude 1 (annotations dropped)."""
    ureg, parser, transform = _registry()
    spelling = normalise_spelling(unit, kind)
    if not spelling:
        raise UnitError("no unit")
    try:
        result = transform(parse_ucum(spelling, parser))
    except Exception as exc:  # lark and pint raise many types; all mean "not a unit we know"
        raise UnitError(f"unit '{unit}' is not UCUM or a known alias") from exc
    if not isinstance(result, ureg.Quantity):
        # a bare annotation such as {score} or {copies}: dimensionless
        return ureg.Quantity(1, "dimensionless")
    return result


@lru_cache(maxsize=4096)
def factor(unit: str, target: str, analyte: str | None = None, kind: str | None = None) -> float:
    """Multiply a value in `unit` by this to get `target`. Molar ↔ mass uses the analyte's molar mass."""
    ureg, _, _ = _registry()
    source = parse(unit, kind)
    goal = parse(target, kind)
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
    code: str | None, text: str | None, target: str, analyte: str | None = None, kind: str | None = None
) -> tuple[float, str]:
    """Factor for a FHIR Quantity: UCUM `code` first, then the free-text `unit`.

    Returns the factor and the spelling that was used.
    """
    errors: list[str] = []
    for spelling in (code, text):
        if spelling and spelling.strip():
            try:
                return factor(spelling.strip(), target, analyte, kind), spelling.strip()
            except UnitError as exc:
                errors.append(str(exc))
    if not errors:
        raise UnitError("no unit")
    raise UnitError(errors[0])
