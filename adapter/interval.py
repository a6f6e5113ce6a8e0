"""Closed/open intervals for values that are not a single number.

A FHIR `valueQuantity.comparator` ("< 0.2 mg/dL"), a partial birth date or an unknown sex all make an
input a range. A criterion is decided only when the whole range is on one side of its threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_REL_TOL = 1e-9  # unit conversions and ULN multiples must not move a value off its boundary


def _eq(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-12)


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def point(cls, value: float) -> Interval:
        return cls(value, value)

    @classmethod
    def from_comparator(cls, value: float, comparator: str | None) -> Interval:
        """Quantity values are non-negative: '< 5' is [0, 5)."""
        match comparator:
            case None | "":
                return cls.point(value)
            case "<":
                return cls(0.0, value, hi_open=True)
            case "<=":
                return cls(0.0, value)
            case ">":
                return cls(value, math.inf, lo_open=True)
            case ">=":
                return cls(value, math.inf)
        raise ValueError(f"unknown comparator {comparator!r}")

    @property
    def is_point(self) -> bool:
        return self.lo == self.hi

    def scale(self, factor: float) -> Interval:
        if factor < 0:
            raise ValueError("negative scale")
        return Interval(self.lo * factor, self.hi * factor, self.lo_open, self.hi_open)

    # --- comparisons against a threshold: True (all values), False (no value), None (undecided)

    def ge(self, t: float) -> bool | None:
        """Is every value >= t?"""
        if self.lo > t or _eq(self.lo, t):
            return True
        if self.hi < t and not _eq(self.hi, t):
            return False
        if _eq(self.hi, t) and self.hi_open:
            return False
        return None

    def le(self, t: float) -> bool | None:
        """Is every value <= t?"""
        if self.hi < t or _eq(self.hi, t):
            return True
        if self.lo > t and not _eq(self.lo, t):
            return False
        if _eq(self.lo, t) and self.lo_open:
            return False
        return None

    def lt(self, t: float) -> bool | None:
        """Is every value < t?"""
        if self.hi < t and not _eq(self.hi, t):
            return True
        if _eq(self.hi, t) and self.hi_open:
            return True
        if self.lo > t or _eq(self.lo, t):
            return False
        return None
