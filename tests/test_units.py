"""Units: the alias table, UCUM parsing traps, and molar ↔ mass conversions per analyte."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter import tables
from adapter.interval import Interval
from adapter.units import UnitError, factor, normalise_spelling

CANONICAL = {"10*3/uL": ("/uL", 1000.0), "10*3/mm3": ("/uL", 1000.0), "10*9/L": ("/uL", 1000.0), "/uL": ("/uL", 1.0),
             "10*12/L": ("/uL", 1e6), "/nL": ("/uL", 1000.0), "/pL": ("/uL", 1e6),
             "/mm3": ("/uL", 1.0), "/mL": ("/mL", 1.0), "meq/L": ("meq/L", 1.0), "U/L": ("U/L", 1.0),
             "m[IU]/mL": ("m[IU]/mL", 1.0), "[IU]/L": ("m[IU]/mL", 1.0), "[IU]/mL": ("m[IU]/mL", 1000.0),
             "m[IU]/L": ("m[IU]/mL", 0.001), "mg/dL": ("mg/dL", 1.0), "g/dL": ("g/dL", 1.0),
             "umol/L": ("umol/L", 1.0), "mL/min": ("mL/min", 1.0), "[lb_av]": ("kg", 0.45359237),
             "[in_i]": ("cm", 2.54), "m2": ("m2", 1.0)}
# (set, kind it is used with) for every alias set of mappings/units.yaml
@pytest.mark.parametrize(("alias", "ucum"), sorted(tables.units().aliases.items()))
def test_every_alias_in_the_table_converts_like_its_ucum_form(alias: str, ucum: str) -> None:
    target, expected = CANONICAL[ucum]
    assert factor(alias, target) == pytest.approx(expected)


SET_ALIASES = [(name, alias, ucum) for name, s in sorted(tables.units().sets.items())
               for alias, ucum in sorted(s.aliases.items())]


@pytest.mark.parametrize(("name", "alias", "ucum"), SET_ALIASES)
def test_every_alias_of_a_set_converts_like_its_ucum_form_for_the_inputs_that_use_it(name: str, alias: str,
                                                                                     ucum: str) -> None:
    target, expected = CANONICAL[ucum]
    assert factor(alias, target, aliases=(name,)) == pytest.approx(expected)


def test_k_per_ul_is_never_kelvin() -> None:
    assert normalise_spelling("K/uL") == "10*3/uL"
    assert factor("K/uL", "/uL") == 1000


def test_micro_sign_and_greek_mu_are_u() -> None:
    assert factor("µmol/L", "umol/L") == 1 and factor("μmol/L", "umol/L") == 1


def test_international_units_are_enzyme_units_only_for_enzymes() -> None:
    assert factor("[IU]/L", "U/L", kind="activity") == 1
    assert factor("IU/L", "U/L", kind="activity") == 1
    with pytest.raises(UnitError):
        factor("[IU]/L", "U/L")


HCG = tables.observations().inputs["hcg-quantitative"]


def test_for_hcg_an_iu_per_litre_is_a_milli_iu_per_millilitre_not_an_enzyme_unit() -> None:
    # WHO international unit: 1 IU/L = 1 mIU/mL, the unit the hCG thresholds are in
    assert factor("IU/L", "m[IU]/mL", kind=HCG.kind, aliases=HCG.unit_aliases) == 1
    assert factor("mIU/mL", "m[IU]/mL", kind=HCG.kind, aliases=HCG.unit_aliases) == 1
    assert normalise_spelling("IU/L", HCG.kind, HCG.unit_aliases) == "[IU]/L"
    assert normalise_spelling("IU/L", "activity") == "U/L"


@pytest.mark.parametrize("count", ["10*9/L", "K/uL", "/uL", "G/L"])
def test_an_arbitrary_unit_never_converts_to_or_from_a_plain_count(count: str) -> None:
    # UCUM: [IU] is commensurable only with itself (pint would read it as dimensionless)
    with pytest.raises(UnitError):
        factor(count, "m[IU]/mL", kind=HCG.kind, aliases=HCG.unit_aliases)
    with pytest.raises(UnitError):
        factor("m[IU]/mL", "/uL", kind="count")


@pytest.mark.parametrize(("spelling", "per_ul"), [
    ("G/L", 1000), ("G/l", 1000), ("Giga/L", 1000), ("10^9/L", 1000), ("10E9/L", 1000), ("x10^9/l", 1000),
    ("/nL", 1000), ("T/L", 1e6), ("10^12/L", 1e6), ("/pL", 1e6),
])
def test_si_count_spellings_are_powers_of_ten_per_litre(spelling: str, per_ul: float) -> None:
    assert factor(spelling, "/uL", kind="count") == pytest.approx(per_ul)


@pytest.mark.parametrize("kind", ["mass", "molar", "activity", "length", None])
def test_giga_per_litre_is_never_read_as_grams(kind: str | None) -> None:
    # G/L is giga (10^9) per litre; re-cased it would be g/L. Outside counts it is not a unit we convert.
    assert normalise_spelling("G/L", kind) == "G/L"
    assert normalise_spelling("T/L", kind) == "T/L"
    with pytest.raises(UnitError):
        factor("G/L", "g/dL", "albumin", kind)


def test_grams_per_litre_are_never_a_count() -> None:
    assert factor("g/l", "g/dL", "albumin", "mass") == pytest.approx(0.1)
    with pytest.raises(UnitError):
        factor("g/L", "/uL", kind="count")
    with pytest.raises(UnitError):
        factor("g/l", "/uL", kind="count")


def test_every_kind_and_input_names_alias_sets_that_exist() -> None:
    table = tables.units()
    for kind, names in table.kind_sets.items():
        assert all(n in table.sets for n in names), kind
    for spec in tables.observations().inputs.values():
        assert all(n in table.sets for n in spec.unit_aliases or ()), spec.id


def test_every_physiological_range_is_in_the_inputs_unit_and_ordered() -> None:
    for spec in tables.observations().inputs.values():
        if spec.plausible is not None:
            assert spec.unit is not None and spec.plausible[0] <= spec.plausible[1], spec.id


def test_katal_to_enzyme_units() -> None:
    assert factor("ukat/L", "U/L", kind="activity") == pytest.approx(60)


@pytest.mark.parametrize(("analyte", "mass_unit", "molar_unit", "one_mass_in_molar"), [
    ("bilirubin", "mg/dL", "umol/L", 17.10),
    ("creatinine", "mg/dL", "umol/L", 88.4),
    ("hemoglobin-fe", "g/dL", "mmol/L", 1 / 1.611),
    ("albumin", "g/dL", "umol/L", 150.5),  # 10 g/L ÷ 66,437 g/mol
])
def test_published_molar_factors(analyte: str, mass_unit: str, molar_unit: str, one_mass_in_molar: float) -> None:
    assert factor(mass_unit, molar_unit, analyte) == pytest.approx(one_mass_in_molar, rel=2e-3)


@given(st.sampled_from(["bilirubin", "creatinine", "hemoglobin-fe", "albumin"]),
       st.floats(min_value=1e-3, max_value=1e4, allow_nan=False))
def test_molar_mass_round_trip_is_identity(analyte: str, value: float) -> None:
    there = value * factor("mg/dL", "umol/L", analyte)
    back = there * factor("umol/L", "mg/dL", analyte)
    assert math.isclose(back, value, rel_tol=1e-9)


@given(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), st.sampled_from(["K/uL", "10*9/L", "x10E3/uL"]))
def test_count_conversions_round_trip(value: float, unit: str) -> None:
    assert math.isclose(value * factor(unit, "/uL") * factor("/uL", unit), value, rel_tol=1e-9)


@pytest.mark.parametrize("bad", ["kelvin", "%", "mg/dL", "", "   ", "furlongs"])
def test_units_that_cannot_become_a_count_raise(bad: str) -> None:
    with pytest.raises(UnitError):
        factor(bad, "/uL")


def test_mass_to_molar_without_an_analyte_is_refused() -> None:
    with pytest.raises(UnitError):
        factor("mg/dL", "umol/L")


# ------------------------------------------------------------------ intervals

def test_interval_boundaries_tolerate_float_noise() -> None:
    assert Interval.point(1.5 * 1.2).le(1.8) is True  # 1.7999999999999998
    assert Interval.point(0.1 + 0.2).ge(0.3) is True


@pytest.mark.parametrize(("comparator", "value", "threshold", "ge", "le"), [
    ("<", 5.0, 5.0, False, True), ("<=", 5.0, 5.0, None, True), (">", 5.0, 5.0, True, False),
    (">=", 5.0, 5.0, True, None), ("<", 10.0, 5.0, None, None), (">", 1.0, 5.0, None, None),
])
def test_comparator_intervals(comparator: str, value: float, threshold: float, ge: bool | None,
                              le: bool | None) -> None:
    interval = Interval.from_comparator(value, comparator)
    assert interval.ge(threshold) is ge
    assert interval.le(threshold) is le


def test_milliequivalents_are_millimoles_only_for_a_monovalent_ion() -> None:
    """Na+ carries one charge: 140 mEq/L is 140 mmol/L. UCUM's eq is a mole to pint, so without the
    valence rule 9 "mEq/L" of hemoglobin would become 14.5 g/dL; it is refused instead."""
    assert factor("mEq/L", "mmol/L", "sodium") == 1.0
    assert factor("mmol/L", "meq/L", "sodium") == 1.0
    with pytest.raises(UnitError, match="ion of known charge"):
        factor("mEq/L", "g/dL", "hemoglobin-fe")
    with pytest.raises(UnitError, match="ion of known charge"):
        factor("mEq/L", "mmol/L")  # no analyte named: no valence to use
