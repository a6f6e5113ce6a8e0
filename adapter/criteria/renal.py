"""Renal function: serum creatinine <= 1.5 x ULN, OR Cockcroft-Gault CrCl >= 30 mL/min/1.73 m².

Cockcroft-Gault (1976): CrCl = (140 − age) × weight / (72 × SCr mg/dL), × 0.85 if female, then
× 1.73 / BSA (Mosteller √(cm × kg / 3600)). The formula is monotonic in every input, so ranges
(a partial birth date, an unknown sex, a '<' creatinine) give a CrCl range by evaluating its corners.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..interval import Interval
from ..mapping.facts import Facts
from ..mapping.values import Measurement
from .common import fmt, join, upper_limit, usable_value, window
from .model import CriterionResult, Status, decide
from .params import RenalFunction

if TYPE_CHECKING:
    from ..trials import Criterion
    from .kinds import Context


def mosteller(height_cm: float, weight_kg: float) -> float:
    return math.sqrt(height_cm * weight_kg / 3600)


def cockcroft_gault(age: float, weight_kg: float, scr_mg_dl: float, sex_factor: float) -> float:
    """CrCl in mL/min (not normalised)."""
    return (140 - age) * weight_kg / (72 * scr_mg_dl) * sex_factor


def _sex_factors(gender: str | None, female_factor: float) -> tuple[float, float]:
    if gender == "female":
        return female_factor, female_factor
    if gender == "male":
        return 1.0, 1.0
    return female_factor, 1.0  # other / unknown / absent: both ends


def crcl_range(scr: Interval, age: tuple[int, int], weight: Interval, height: Interval | None,
               bsa: Interval | None, sex: tuple[float, float]) -> Interval:
    """CrCl per 1.73 m² as an interval (lowest, highest possible)."""

    def per_173(a: float, w: float, s: float, h_or_bsa: float, f: float) -> float:
        crcl = cockcroft_gault(a, w, s, f) if s > 0 else math.inf
        body = mosteller(h_or_bsa, w) if height is not None else h_or_bsa
        return crcl * 1.73 / body

    size_lo = height.lo if height is not None else (bsa.lo if bsa else 0)
    size_hi = height.hi if height is not None else (bsa.hi if bsa else 0)
    lo = per_173(age[1], weight.lo, scr.hi, size_hi, sex[0])
    hi = per_173(age[0], weight.hi, scr.lo, size_lo, sex[1])
    return Interval(lo, hi)


def evaluate(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """Either branch meeting its threshold is enough; the card says which one did."""
    p = criterion.params
    assert isinstance(p, RenalFunction)
    cid, k, crcl_min = criterion.id, p.creatinine_max_uln, p.crcl_min
    requirement = p.text or (f"creatinine <= {fmt(k)} x ULN, or CrCl >= {fmt(crcl_min)} mL/min/1.73 m2 "
                             "(Cockcroft-Gault)")
    found = usable_value(cid, requirement, facts, p.input, window(p, ctx))
    if isinstance(found, CriterionResult):
        return found
    scr, value = found.m, found.value

    # Branch A: creatinine against its ULN (undecided when the result's reference range cannot be read)
    uln = upper_limit(scr, p.default_uln, p.input, facts)
    a_problem = uln if isinstance(uln, str) else None
    branch_a = None if isinstance(uln, str) else uln.within(value, k)
    ratio = None if isinstance(uln, str) else uln.ratio(value)  # '1.67 x ULN'; None without a single ULN
    uln_text, assumed = ("reference range unreadable", None) if isinstance(uln, str) else (uln.shown, uln.note)

    # Branch B: Cockcroft-Gault, normalised to 1.73 m²
    crcl, b_evidence, b_why = _crcl(facts, p, ctx, value)
    branch_b = crcl.ge(crcl_min) if crcl is not None else None
    crcl_text = _crcl_text(crcl)

    status: Status
    if branch_a is True:
        status, why = "met", f"creatinine branch met ({ratio or scr.original} <= {fmt(k)} x ULN)"
    elif branch_b is True:
        status, why = "met", f"Cockcroft-Gault branch met ({crcl_text} >= {fmt(crcl_min)})"
    elif branch_a is False and branch_b is False:
        above = f"is {ratio} (> {fmt(k)} x ULN)" if ratio else f"is above {fmt(k)} x ULN"
        status, why = "not-met", f"creatinine {scr.original} {above} and {crcl_text} is below {fmt(crcl_min)}"
    else:
        status = decide(None)
        a_text = a_problem or (f"creatinine {ratio or scr.original} exceeds {fmt(k)} x ULN" if branch_a is False
                               else f"creatinine {scr.original} against {fmt(k)} x ULN depends on which "
                                    "reference range applies" if value.is_point
                               else f"creatinine {scr.original} spans {fmt(k)} x ULN")
        b_text = b_why or (f"{crcl_text} is below {fmt(crcl_min)}" if branch_b is False
                           else f"{crcl_text} spans {fmt(crcl_min)}" if crcl_text else "CrCl not computable")
        why = f"{a_text}; {b_text}"
    observed = f"creatinine {scr.dated}, {uln_text}" + (f"; {crcl_text}" if crcl_text else "")
    adult = p.formula_validated_from_age
    paediatric = (f"Cockcroft-Gault is not validated under {adult} (bedside Schwartz is the paediatric "
                  "standard); the protocol names Cockcroft-Gault") \
        if crcl is not None and facts.age and facts.age[0] < adult else None
    return CriterionResult(
        cid, status, requirement, observed=observed,
        evidence=[scr.ref or "", *b_evidence],
        note=join(why, assumed, paediatric, scr.caveat, *found.notes_for(status)),
    )


def _crcl_text(crcl: Interval | None) -> str | None:
    if crcl is None:
        return None
    if math.isclose(crcl.lo, crcl.hi):
        return f"CrCl {fmt(crcl.lo)} mL/min/1.73 m2"
    if math.isinf(crcl.hi):  # a '<' creatinine leaves the clearance without an upper bound
        return f"CrCl >= {fmt(crcl.lo)} mL/min/1.73 m2"
    return f"CrCl {fmt(crcl.lo)}-{fmt(crcl.hi)} mL/min/1.73 m2"


def _crcl(facts: Facts, p: RenalFunction, ctx: Context, scr: Interval
          ) -> tuple[Interval | None, list[str], str | None]:
    """CrCl range, its evidence, or why it cannot be computed."""
    if facts.age is None:
        return None, [], "CrCl not computable: no usable birth date"
    weight_sel = facts.observations.latest(p.weight_input, window(p, ctx, p.weight_window_days))
    height_sel = facts.observations.latest(p.height_input, window(p, ctx, p.height_window_days))
    bsa_sel = facts.observations.latest(p.bsa_input, window(p, ctx, p.weight_window_days))
    weight = _usable(weight_sel.chosen, "body weight")
    if isinstance(weight, str):
        return None, [], f"CrCl not computable: no usable body weight in the window{weight}"
    height = _usable(height_sel.chosen, "body height")
    bsa = _usable(bsa_sel.chosen, "BSA")
    body = height if not isinstance(height, str) else bsa if not isinstance(bsa, str) else None
    if body is None:
        return None, [weight.ref or ""], ("CrCl not computable: no body height or BSA to normalise to 1.73 m2"
                                          + "".join(why for why in (height, bsa) if isinstance(why, str)))
    sex = _sex_factors(facts.gender, p.female_factor)
    assert weight.value is not None
    crcl = crcl_range(scr, facts.age, weight.value,
                      height.value if not isinstance(height, str) else None,
                      bsa.value if not isinstance(bsa, str) else None, sex)
    return crcl, [weight.ref or "", body.ref or "", facts.patient_ref], None


def _usable(m: Measurement | None, what: str) -> Measurement | str:
    """A body measurement that can enter the formula (a value, converted, plausible, above zero), or
    why the one on file cannot — its unit or its range, as ' (…)' — or '' when there is none."""
    if m is None:
        return ""
    if m.unit_error or m.value is None:
        return f" ({what} {m.dated} could not be used: {m.unit_error or 'the value is not a quantity'})"
    if m.value.lo <= 0:
        return f" ({what} {m.dated} is not above zero)"
    return m
