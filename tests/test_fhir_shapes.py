"""A fact is found wherever FHIR lets it sit (DESIGN.md "Real charts", issue 8 item 1).

Real feeds send lab results inside a DiagnosticReport (`result`, the report's subject and effective time
applying to results that lack their own), as `contained` resources, as `hasMember` panels and as a panel's
`component` values; and medication exposure through `medicationReference`, only for requests that are
orders. Every test below states a patient, what the chart holds and the status the clinical rule gives.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle, evaluate_record, fhir_wanted
from adapter.fhir.gather import gather_record
from adapter.fhir.queries import REPORTS_KEY, prefetch_templates, searches
from adapter.fhir.wire import ObservationHead, load_hook
from adapter.synth import fhir
from adapter.synth.fhir import LOINC, RXNORM, SNOMED
from adapter.trials import load_trial as trial
from tests.helpers import AS_OF, PID, SUBJECT, asps, days_ago

Resource = dict[str, Any]
CBC = "58410-2"  # Complete blood count (hemogram) panel - Blood by Automated count: no input of its own
BASE = "https://ehr.example.org/fhir/R4"


def bundle(*resources: Resource, full_urls: dict[str, str] | None = None) -> Resource:
    """The test patient (ASPS) and these resources; `full_urls` by resource id."""
    out = fhir.bundle([fhir.patient(PID, "1990-05-02", "female"), asps(), *resources])
    for entry in out["entry"]:
        rid = entry["resource"].get("id")
        if full_urls and rid in full_urls:
            entry["fullUrl"] = full_urls[rid]
    return out


def evaluate(*resources: Resource, full_urls: dict[str, str] | None = None) -> EligibilityReport:
    return evaluate_bundle(orjson.dumps(bundle(*resources, full_urls=full_urls)), AS_OF)


def result(oid: str, loinc: str, value: float, unit: str, *, subject: str | None = None, when: str | None = None,
           **kw: Any) -> Resource:
    """A lab result as a lab system sends it inside a report: no subject and no date unless given."""
    r = fhir.observation(oid, subject or SUBJECT, loinc, when or days_ago(1), value=value, unit=unit, **kw)
    if subject is None:
        del r["subject"]
    if when is None:
        del r["effectiveDateTime"]
    return r


def report(rid: str, *references: str, when: str | None = days_ago(5), subject: str = SUBJECT,
           contained: list[Resource] | None = None, **extra: Any) -> Resource:
    """A CBC DiagnosticReport of the test patient listing `references` as its results."""
    r: Resource = {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
                   "code": fhir.concept(LOINC, CBC, "CBC panel"), "subject": {"reference": subject},
                   "result": [{"reference": ref} for ref in references], **extra}
    if when is not None:
        r["effectiveDateTime"] = when
    if contained:
        r["contained"] = contained
    return r


def panel(oid: str, *, members: list[str] | None = None, components: list[Resource] | None = None,
          when: str | None = days_ago(4), subject: str | None = SUBJECT, status: str = "final",
          **extra: Any) -> Resource:
    """A CBC panel Observation: its values as `hasMember` references or as `component`s."""
    r: Resource = {"resourceType": "Observation", "id": oid, "status": status,
                   "code": fhir.concept(LOINC, CBC, "CBC panel"), **extra}
    if subject is not None:
        r["subject"] = {"reference": subject}
    if when is not None:
        r["effectiveDateTime"] = when
    if members is not None:
        r["hasMember"] = [{"reference": m} for m in members]
    if components is not None:
        r["component"] = components
    return r


def component(loinc: str, value: float, unit: str, *, high: float | None = None, **kw: Any) -> Resource:
    c: Resource = {"code": fhir.concept(LOINC, loinc), "valueQuantity": fhir.quantity(value, unit), **kw}
    if high is not None:
        c["referenceRange"] = [{"high": fhir.quantity(high, unit)}]
    return c


def dated(row: Any, days: int) -> bool:
    """The criterion shows the value dated `days` before the evaluation date."""
    return row.observed is not None and f"({days_ago(days)})" in row.observed


# --------------------------------------------------------------------------- DiagnosticReport.result


@pytest.mark.parametrize("how", ["relative", "absolute", "urn:uuid"])
def test_a_platelet_count_only_inside_a_report_is_found_and_dated_by_the_report(how: str) -> None:
    # 85 K/uL = 85,000/uL, under the 100,000/uL minimum; the lab sent it without subject or date
    plt = result("plt", "777-3", 85, "K/uL")
    uuid = "urn:uuid:0c3a5f5e-7a8e-4f0b-9d43-3b8f3c1d2e10"
    reference = {"relative": "Observation/plt", "absolute": f"{BASE}/Observation/plt", "urn:uuid": uuid}[how]
    full_urls = {"plt": uuid} if how == "urn:uuid" else {"plt": f"{BASE}/Observation/plt"}
    row = evaluate(report("dr1", reference, when=days_ago(5)), plt, full_urls=full_urls).criterion("platelets")
    assert row.status == "not-met", row
    assert dated(row, 5)
    assert row.evidence == ["Observation/plt"]


def test_without_its_report_a_result_without_subject_is_nobodys() -> None:
    row = evaluate(result("plt", "777-3", 85, "K/uL")).criterion("platelets")
    assert row.status == "unknown"  # never the patient's by default, and never not-met


def test_a_result_about_another_patient_stays_out_even_when_the_report_lists_it() -> None:
    other = result("plt", "777-3", 85, "K/uL", subject="Patient/someone-else", when=days_ago(5))
    rep = evaluate(report("dr1", "Observation/plt"), other)
    assert rep.criterion("platelets").status == "unknown"
    assert any("another patient" in note for note in rep.data_notes)


def test_a_result_keeps_its_own_date_and_the_report_gives_only_what_is_missing() -> None:
    plt = result("plt", "777-3", 250, "K/uL", when=days_ago(12))  # drawn 12 days ago, reported 5 days ago
    row = evaluate(report("dr1", "Observation/plt", when=days_ago(5)), plt).criterion("platelets")
    assert row.status == "met" and dated(row, 12)


def test_a_report_older_than_the_window_makes_its_undated_result_stale() -> None:
    row = evaluate(report("dr1", "Observation/plt", when=days_ago(40)),
                   result("plt", "777-3", 250, "K/uL")).criterion("platelets")
    assert row.status == "unknown" and "stale" in (row.note or "")


def test_a_report_with_an_effective_period_dates_its_results() -> None:
    dr = report("dr1", "Observation/plt", when=None,
                effectivePeriod={"start": f"{days_ago(6)}T08:00:00Z", "end": f"{days_ago(6)}T09:00:00Z"})
    row = evaluate(dr, result("plt", "777-3", 85, "K/uL")).criterion("platelets")
    assert row.status == "not-met" and row.observed is not None and days_ago(6) in row.observed


def test_a_result_both_standalone_and_in_a_report_is_one_result() -> None:
    plt = result("plt", "777-3", 85, "K/uL", subject=SUBJECT, when=days_ago(5))
    rep = evaluate(report("dr1", "Observation/plt"), report("dr2", "Observation/plt", when=days_ago(3)), plt)
    row = rep.criterion("platelets")
    assert row.status == "not-met" and row.evidence == ["Observation/plt"]
    assert dated(row, 5)  # its own date


def test_an_undated_standalone_result_listed_by_a_report_is_dated_by_it_not_ignored() -> None:
    plt = result("plt", "777-3", 85, "K/uL", subject=SUBJECT)
    row = evaluate(report("dr1", "Observation/plt"), plt).criterion("platelets")
    assert row.status == "not-met" and "undated" not in (row.note or "")


def test_a_report_entered_in_error_dates_nothing() -> None:
    dr = report("dr1", "Observation/plt", status="entered-in-error")
    row = evaluate(dr, result("plt", "777-3", 85, "K/uL")).criterion("platelets")
    assert row.status == "unknown"  # neither the patient's nor dated: not evidence


@pytest.mark.parametrize("odd", [
    {"result": {"reference": "Observation/plt"}}, {"result": [{"reference": 7}, "Observation/plt", None]},
    {"result": [{"reference": "#plt"}], "contained": {"id": "plt"}}, {"subject": "Patient/p1"},
    {"effectiveDateTime": 20261116},
])
def test_a_report_of_odd_json_types_is_read_as_far_as_it_can_be_never_a_crash(odd: dict[str, Any]) -> None:
    rep = evaluate({**report("dr1", "Observation/plt"), **odd}, result("plt", "777-3", 85, "K/uL"))
    assert rep.criterion("platelets").status == "unknown"


@pytest.mark.parametrize("odd", [{"component": {"code": "777-3"}}, {"component": [7, None, {"code": 5}]},
                                 {"hasMember": [{"reference": ["Observation/plt"]}]}, {"contained": [3]}])
def test_a_panel_of_odd_json_types_is_never_a_crash(odd: dict[str, Any]) -> None:
    rep = evaluate({**panel("cbc1"), **odd}, result("plt", "777-3", 85, "K/uL"))
    assert rep.criterion("platelets").status == "unknown"


@pytest.mark.parametrize(("full_url", "subject", "hers"), [
    (f"{BASE}/Observation/plt", SUBJECT, True),  # relative, resolved against her own server
    ("https://other.example/fhir/Observation/plt", SUBJECT, False),  # that server's patient p1
    (f"{BASE}/Observation/plt", f"{BASE}/Patient/{PID}", True),
    (f"{BASE}/Observation/plt", f"https://other.example/fhir/Patient/{PID}", False),
    (None, SUBJECT, True),  # no fullUrl to resolve against: the Bundle's own Patient/p1
])
def test_a_relative_subject_is_resolved_against_the_fullurl_of_its_resource(full_url: str | None, subject: str,
                                                                         hers: bool) -> None:
    """FHIR R4 Bundle, "Resolving references in Bundles": the Patient arrived as {BASE}/Patient/p1."""
    plt = fhir.observation("plt", subject, "777-3", days_ago(3), value=85, unit="K/uL")
    full_urls = {PID: f"{BASE}/Patient/{PID}", **({"plt": full_url} if full_url else {})}
    rep = evaluate(plt, full_urls=full_urls)
    assert rep.criterion("platelets").status == ("not-met" if hers else "unknown")


# --------------------------------------------------------------------------- contained


def test_a_result_contained_in_a_report_is_found_and_cited_as_the_report() -> None:
    dr = report("dr1", "#plt", contained=[result("plt", "777-3", 85, "K/uL")])
    row = evaluate(dr).criterion("platelets")
    assert row.status == "not-met" and row.evidence == ["DiagnosticReport/dr1"]
    assert dated(row, 5)


def test_a_contained_result_about_another_patient_stays_out() -> None:
    stranger = result("plt", "777-3", 85, "K/uL", subject="Patient/someone-else", when=days_ago(5))
    rep = evaluate(report("dr1", "#plt", contained=[stranger]))
    assert rep.criterion("platelets").status == "unknown"


def test_a_panels_contained_members_are_found() -> None:
    members = [result("hgb", "718-7", 8.1, "g/dL", ucum="g/dL"), result("plt", "777-3", 250, "K/uL")]
    rep = evaluate(panel("cbc1", members=["#hgb", "#plt"], contained=members))
    assert rep.criterion("hemoglobin").status == "not-met"  # 8.1 g/dL < 9 g/dL
    assert rep.criterion("platelets").status == "met"
    assert rep.criterion("hemoglobin").evidence == ["Observation/cbc1"]


# --------------------------------------------------------------------------- hasMember


def test_panel_members_take_the_panels_subject_and_date() -> None:
    rep = evaluate(panel("cbc1", members=["Observation/plt", "Observation/anc"], when=days_ago(4)),
                   result("plt", "777-3", 85, "K/uL"), result("anc", "751-8", 2.1, "K/uL"))
    plt = rep.criterion("platelets")
    assert plt.status == "not-met" and plt.evidence == ["Observation/plt"]
    assert dated(plt, 4)
    assert rep.criterion("anc").status == "met"  # 2,100/uL >= 1,000/uL


def test_a_panel_in_a_report_passes_the_reports_date_down_to_its_members() -> None:
    rep = evaluate(report("dr1", "Observation/cbc1", when=days_ago(6)),
                   panel("cbc1", members=["Observation/plt"], when=None, subject=None),
                   result("plt", "777-3", 85, "K/uL"))
    row = rep.criterion("platelets")
    assert row.status == "not-met" and dated(row, 6)


def test_panels_that_name_each_other_do_not_loop() -> None:
    a = panel("a", members=["Observation/b", "Observation/plt"])
    b = panel("b", members=["Observation/a"])
    row = evaluate(a, b, result("plt", "777-3", 85, "K/uL")).criterion("platelets")
    assert row.status == "not-met"


# --------------------------------------------------------------------------- component


def test_a_cbc_panels_platelet_component_decides_platelets() -> None:
    cbc = panel("panel1", components=[component("777-3", 85, "K/uL"), component("718-7", 13.2, "g/dL")])
    rep = evaluate(cbc)
    plt = rep.criterion("platelets")
    assert plt.status == "not-met" and plt.evidence == ["Observation/panel1"]  # cited as the panel
    assert dated(plt, 4)
    assert rep.criterion("hemoglobin").status == "met"


def test_a_components_own_reference_range_is_its_uln() -> None:
    # AST 110 U/L: 2.2 x its lab's ULN of 50 (met); it would be 2.75 x the default ULN of 40 (not met)
    rep = evaluate(panel("cmp1", components=[component("1920-8", 110, "U/L", high=50)]))
    row = rep.criterion("ast")
    assert row.status == "met", row
    assert "assumed" not in (row.note or "")


def test_a_component_without_a_value_is_not_a_result() -> None:
    absent = {"code": fhir.concept(LOINC, "777-3"),
              "dataAbsentReason": fhir.concept("http://terminology.hl7.org/CodeSystem/data-absent-reason", "error")}
    assert evaluate(panel("cbc1", components=[absent])).criterion("platelets").status == "unknown"


def test_components_of_a_panel_entered_in_error_are_not_results() -> None:
    cbc = panel("cbc1", components=[component("777-3", 85, "K/uL")], status="entered-in-error")
    assert evaluate(cbc).criterion("platelets").status == "unknown"


def test_a_tumor_size_still_reads_its_longest_dimension_component() -> None:
    tumor = fhir.observation("tumor", SUBJECT, "21889-1", days_ago(12), category="imaging",
                             method=fhir.concept(SNOMED, "77477000", "Computerized axial tomography"),
                             component=[{"code": fhir.concept(LOINC, "33728-7"),
                                         "valueQuantity": fhir.quantity(24, "mm", "mm")}])
    row = evaluate(tumor).criterion("measurable-disease")
    assert row.status == "met" and row.evidence == ["Observation/tumor"]


# --------------------------------------------------------------------------- order of the Bundle


def test_the_report_does_not_depend_on_the_order_of_the_bundle() -> None:
    """One undated result named by two reports of different dates, a panel, a contained result: every
    shuffle of the entries gives the same report."""
    entries = bundle(
        report("dr-a", "Observation/plt", when=days_ago(20)),
        report("dr-b", "Observation/plt", "#hgb", when=days_ago(3),
               contained=[result("hgb", "718-7", 8.5, "g/dL", ucum="g/dL")]),
        result("plt", "777-3", 85, "K/uL"),
        panel("cbc1", components=[component("751-8", 0.8, "K/uL")]),
    )
    first = evaluate_bundle(orjson.dumps(entries), AS_OF).to_json()
    rng = random.Random(8)
    for _ in range(12):
        rng.shuffle(entries["entry"])
        assert evaluate_bundle(orjson.dumps(entries), AS_OF).to_json() == first
    statuses = {c["id"]: c["status"] for c in first["criteria"]}
    assert statuses["platelets"] == statuses["hemoglobin"] == statuses["anc"] == "not-met"


# --------------------------------------------------------------------------- the hook's prefetch, read lazily


def _searchset(*resources: Resource) -> Resource:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


async def _from_prefetch(prefetch: Resource) -> dict[str, Any]:
    wanted = fhir_wanted(trial())
    record = await gather_record(PID, searches(PID, wanted, AS_OF), prefetch, None, 2.0, wanted=wanted)
    return evaluate_record(record, AS_OF).to_json()


async def test_prefetched_reports_panels_and_components_read_lazily_give_the_bundles_report() -> None:
    """The hook's Observation searches are decoded as heads plus value elements (fhir/wire.py): a panel's
    components, members and contained results must survive that, and a report's undated results must
    not fall to the prefetch's date floor."""
    cbc = panel("cbc1", components=[component("777-3", 85, "K/uL")])
    members = panel("cbc2", members=["#hgb"], contained=[result("hgb", "718-7", 8.2, "g/dL", ucum="g/dL")])
    dr = report("dr1", "Observation/anc")
    anc = result("anc", "751-8", 0.6, "K/uL")
    full = bundle(cbc, members, dr, anc)
    prefetch = {"patient": full["entry"][0]["resource"], "conditions": _searchset(full["entry"][1]["resource"]),
                "labs": _searchset(cbc, members), REPORTS_KEY: _searchset(dr, anc)}
    for key in ("performance", "history", "medicationStatement", "medicationRequest", "medicationAdministration"):
        prefetch[key] = _searchset()
    body = orjson.dumps({"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                         "context": {"patientId": PID}, "prefetch": prefetch})
    wanted = fhir_wanted(trial())
    observation_keys = frozenset(s.key for s in searches(PID, wanted, None) if s.resource_type == "Observation")
    lazy = load_hook(body, tuple(prefetch_templates(wanted)), frozenset({"patient"}), observation_keys)["prefetch"]
    from_lazy = await _from_prefetch(lazy)
    assert from_lazy == await _from_prefetch(orjson.loads(body)["prefetch"])
    assert from_lazy == evaluate_bundle(orjson.dumps(full), AS_OF).to_json()
    statuses = {c["id"]: c["status"] for c in from_lazy["criteria"]}
    assert statuses["platelets"] == statuses["hemoglobin"] == statuses["anc"] == "not-met"


def test_an_observation_head_keeps_value_string_issued_members_and_contained() -> None:
    obs = panel("p", members=["#m"], contained=[result("m", "777-3", 85, "K/uL")], issued="2026-11-20T10:00:00Z",
                valueString="see members")
    decoded = orjson.loads(orjson.dumps(obs))
    head = load_hook(orjson.dumps({"prefetch": {"labs": _searchset(obs)}}), ("labs",), frozenset(),
                     frozenset({"labs"}))["prefetch"]["labs"].entry[0].resource
    assert isinstance(head, ObservationHead)
    kept = head.as_resource()
    for name in ("issued", "valueString", "hasMember", "contained"):
        assert kept[name] == decoded[name], name


# --------------------------------------------------------------------------- medications


def _ici_patient(*medications: Resource) -> EligibilityReport:
    progression = fhir.observation("status", SUBJECT, "97509-4", days_ago(22), category="exam",
                                   coded=fhir.concept(SNOMED, "271299001", "Patient's condition worsened"))
    return evaluate(progression, *medications)


def _pembrolizumab_request(intent: Any, status: Any = "completed") -> Resource:
    r = fhir.medication_request("mr1", SUBJECT, "1547545", "pembrolizumab", "2025-06-01", status=status)
    if intent is None:
        del r["intent"]
    else:
        r["intent"] = intent
    return r


@pytest.mark.parametrize(("intent", "expected"), [
    ("order", "met"), ("original-order", "met"), ("instance-order", "met"),
    # a suggestion or an intention is not exposure: no ICI is known, so progression after one cannot be
    ("proposal", "unknown"), ("plan", "unknown"), ("option", "unknown"), ("directive", "unknown"),
    # intent is required in R4; a feed that leaves it out (DSTU2 MedicationOrder) records orders
    (None, "met"),
    # not a string: read as absent, never a crash
    (["order"], "met"), ({"code": "plan"}, "met"),
])
def test_only_an_ordered_checkpoint_inhibitor_is_prior_exposure(intent: Any, expected: str) -> None:
    row = _ici_patient(_pembrolizumab_request(intent)).criterion("prior-ici-progression")
    assert row.status == expected, row
    if expected == "met":
        assert row.observed is not None and row.observed.startswith("pembrolizumab")


@pytest.mark.parametrize("status", [["completed"], {"code": "completed"}, 7])
def test_a_status_of_the_wrong_type_is_absent_not_a_crash(status: Any) -> None:
    row = _ici_patient(_pembrolizumab_request("order", status=status)).criterion("prior-ici-progression")
    assert row.status == "met"  # no status that says it was not given


def test_exposure_through_a_referenced_or_contained_medication() -> None:
    med = {"resourceType": "Medication", "id": "med-pembro", "code": fhir.concept(RXNORM, "1547545")}
    by_reference = _pembrolizumab_request("order")
    del by_reference["medicationCodeableConcept"]
    by_reference["medicationReference"] = {"reference": "Medication/med-pembro"}
    contained = _pembrolizumab_request("order")
    contained["id"] = "mr2"
    del contained["medicationCodeableConcept"]
    contained["contained"] = [{**med, "id": "m"}]
    contained["medicationReference"] = {"reference": "#m"}
    for resources in ([med, by_reference], [contained]):
        row = _ici_patient(*resources).criterion("prior-ici-progression")
        assert row.status == "met" and row.observed is not None and row.observed.startswith("pembrolizumab")


def test_a_plan_for_pembrolizumab_does_not_count_even_beside_a_cancelled_order() -> None:
    plan = _pembrolizumab_request("plan")
    cancelled = {**_pembrolizumab_request("order", status="cancelled"), "id": "mr2"}
    row = _ici_patient(plan, cancelled).criterion("prior-ici-progression")
    assert row.status == "unknown" and "no prior immune checkpoint inhibitor" in (row.note or "")


# --------------------------------------------------------------------------- the FHIR layer knows nothing of trials


def test_the_fhir_layer_imports_nothing_of_trials_criteria_or_code_tables() -> None:
    """It is told which codes to search for and how far back (fhir/wanted.py); DESIGN.md "Data flow"."""
    package = Path(__file__).resolve().parents[1] / "adapter" / "fhir"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not any(part in ("tables", "trials", "criteria", "mapping") for part in name.split(".")), \
                    f"{path.name} imports {name}"


def test_the_searches_look_in_reports_and_in_panel_components() -> None:
    templates = prefetch_templates(fhir_wanted(trial()))
    assert templates[REPORTS_KEY].startswith("DiagnosticReport?patient={{context.patientId}}")
    assert "_include=DiagnosticReport:result" in templates[REPORTS_KEY]
    assert "_include:iterate=Observation:has-member" in templates[REPORTS_KEY]
    labs = dict(p.split("=", 1) for p in templates["labs"].split("?", 1)[1].split("&"))
    assert "http://loinc.org|777-3" in labs["combo-code"].split(",")  # a CBC panel's platelet component too
