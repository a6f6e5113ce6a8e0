"""The scopes an EHR grants must cover every resource the service reads, or a hook meets a 403."""

import re

from adapter.cds.routes.discovery import discovery
from adapter.cds.settings import Settings
from adapter.engine import fhir_wanted
from adapter.fhir.scopes import read_types, smart_scopes
from adapter.trials import load_trial


def test_every_prefetched_or_included_type_has_a_read_scope() -> None:
    service = discovery(Settings(auth_required=False))["services"][0]
    requested = set()
    for template in service["prefetch"].values():
        requested.add(re.match(r"[A-Za-z]+", template)[0])  # type: ignore[index]
        requested.update(m for m in re.findall(r"_include(?::iterate)?=([A-Za-z]+):", template))
    requested.add("Medication")  # medications named by reference are read as Medication/{id}
    for resource_type in requested:
        assert f"patient/{resource_type}.rs" in service["usageRequirements"]
        assert f"patient/{resource_type}.read" in service["usageRequirements"]


def test_scope_syntax_v1_and_v2() -> None:
    types = read_types(fhir_wanted(load_trial("axiom")))
    assert "DiagnosticReport" in types  # results arrive through reports (DESIGN "Real charts")
    assert smart_scopes(("Observation",)) == ["patient/Observation.rs"]
    assert smart_scopes(("Observation",), 1) == ["patient/Observation.read"]
    assert smart_scopes(("Observation",), 2, "system") == ["system/Observation.rs"]


def test_the_integrator_guide_lists_exactly_the_scopes_the_service_needs() -> None:
    from pathlib import Path
    guide = " ".join((Path(__file__).parents[1] / "docs" / "integrators.md").read_text().split())
    types = read_types(fhir_wanted(load_trial("axiom")))
    for version in (1, 2):
        assert " ".join(smart_scopes(types, version)) in guide, f"docs/integrators.md: SMART v{version} scopes"
