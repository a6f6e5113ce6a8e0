"""The FHIR resource types the service reads, and the SMART scopes that grant them.

Derived from the searches (fhir/queries.py) so discovery's `usageRequirements`, the integrator guide and
an EHR's app registration name exactly what is read: a new search is a new scope, never a surprise 403.
"""

from __future__ import annotations

from .queries import searches
from .wanted import Wanted

# Read by reference, not searched: `_include`d or read as `Medication/{id}` (fhir/gather.py).
REFERENCED_TYPES = ("Medication",)


def read_types(wanted: Wanted) -> tuple[str, ...]:
    """Every resource type a hook reads: the Patient, each search's type and what they include."""
    types = {"Patient", *REFERENCED_TYPES}
    for search in searches("x", wanted, None):
        types.add(search.resource_type)
        types.update(inc.split(":")[0] for k, inc in search.params.items() if k.startswith("_include"))
    return tuple(sorted(types))


def smart_scopes(types: tuple[str, ...], version: int = 2, context: str = "patient") -> list[str]:
    """Read scopes for `types`: v2 `patient/Observation.rs` (read + search), v1 `patient/Observation.read`."""
    suffix = {1: "read", 2: "rs"}[version]
    return [f"{context}/{t}.{suffix}" for t in types]
