"""Shared by the Bulk Data tests: a sekmet-fhir server of their own, loaded with a known population.

The bulk tests export whole servers (system level), so they do not use the session's `fhir_server`,
which other test modules load and unload patients on: each bulk module starts its own sekmet-fhir
(about a second) and loads the committed fixture patients plus a few seeded synthetic ones, some of
them without a sarcoma. Helpers read a download folder back per patient, and evaluate a patient both
from the folder and through `evaluate --fhir-server`'s path, so that the tests compare verdicts.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import respx

from adapter.engine import evaluate_bundle, evaluate_record, fhir_wanted
from adapter.fhir.server import fetch_record
from adapter.fhir_sandbox import SekmetServer, to_transaction
from adapter.synth.generator import NON_SARCOMA, Design, build, generate
from adapter.trials import load_trial
from tests.faulty_server import Behaviour, FaultyFhirServer, FaultyHandler
from tests.service_server import FORWARDED_HEADERS

AS_OF = date(2026, 11, 21)  # the fixtures' evaluation date
FIXTURES = Path(__file__).parent / "fixtures"
NOT_SARCOMA_FIXTURES = frozenset({"breast-cancer-not-applicable"})  # every other fixture has a sarcoma code
Resource = dict[str, Any]


def population() -> dict[str, tuple[Resource, bool]]:
    """Patient id → (its Bundle, whether it has a sarcoma code): the fixtures and 16 seeded patients."""
    out: dict[str, tuple[Resource, bool]] = {}
    for path in sorted(FIXTURES.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        out[_patient_id(bundle)] = (bundle, path.stem not in NOT_SARCOMA_FIXTURES)
    for case in generate(11, 16, AS_OF):
        diagnosis = case.name.split("-", 2)[2]
        out[_patient_id(case.bundle)] = (case.bundle, diagnosis not in NON_SARCOMA)
    return out


def medication_by_reference(pid: str = "med-ref") -> Resource:
    """An ASPS patient whose checkpoint inhibitor is an order naming a Medication resource (by RxNorm
    there), as EHRs often send it: a Group export does not carry that Medication."""
    bundle = build(Design(), pid, AS_OF)
    order = next(e["resource"] for e in bundle["entry"] if "medicationCodeableConcept" in e["resource"])
    drug = {"resourceType": "Medication", "id": f"{pid}-drug", "code": order.pop("medicationCodeableConcept")}
    order["medicationReference"] = {"reference": f"Medication/{drug['id']}"}
    bundle["entry"].append({"resource": drug})
    return bundle


def _patient_id(bundle: Resource) -> str:
    return next(str(e["resource"]["id"]) for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def load(server: SekmetServer, bundles: list[Resource], token: str | None = None) -> None:
    """PUT every resource, a few patients per transaction (a bearer `token` for a server with auth on)."""
    headers = {"Content-Type": "application/fhir+json", **({"Authorization": f"Bearer {token}"} if token else {})}
    with httpx.Client(timeout=60.0, trust_env=False) as http:
        for start in range(0, len(bundles), 10):
            entries = [e for b in bundles[start:start + 10] for e in to_transaction(b)["entry"]]
            response = http.post(server.base_url, headers=headers,
                                 content=orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                                                       "entry": entries}))
            assert response.status_code == 200, response.text[:500]


def group(gid: str, members: list[str]) -> Resource:
    return {"resourceType": "Group", "id": gid, "type": "person", "actual": True,
            "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]}


def ndjson_resources(folder: Path) -> Iterator[Resource]:
    """Every resource of the folder's data files (`*.ndjson`, `*.ndjson.gz`, not errors/)."""
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".ndjson.gz"):
            data = gzip.decompress(path.read_bytes())
        elif path.name.endswith(".ndjson"):
            data = path.read_bytes()
        else:
            continue
        for line in data.splitlines():
            if line.strip():
                yield orjson.loads(line)


def owner(resource: Resource) -> str | None:
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return ref.removeprefix("Patient/") if ref.startswith("Patient/") else None


def by_patient(folder: Path) -> tuple[dict[str, list[Resource]], list[Resource]]:
    """The folder's resources per patient, and those about no patient (Medications)."""
    out: dict[str, list[Resource]] = {}
    shared = []
    for resource in ndjson_resources(folder):
        pid = owner(resource)
        if pid is None:
            shared.append(resource)
        else:
            out.setdefault(pid, []).append(resource)
    return out, shared


def key(resource: Resource) -> tuple[str, str]:
    return resource["resourceType"], resource["id"]


def everything(server: SekmetServer, pid: str, types: set[str]) -> dict[tuple[str, str], Resource]:
    """What the server holds about the patient (Patient/$everything: her resources, of the exported types;
    sekmet's answer also names other patients, who are not hers)."""
    response = server.get(f"Patient/{pid}/$everything")
    assert response.status_code == 200
    bundle = response.json()
    assert not any(link["relation"] == "next" for link in bundle.get("link", []))
    return {key(e["resource"]): e["resource"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] in types and owner(e["resource"]) == pid}


def verdict(report: Any) -> tuple[str, str | None, dict[str, str]]:
    body = report.to_json()
    return body["overall"], body["cohort"], {c["id"]: c["status"] for c in body["criteria"]}


def verdict_from_folder(resources: list[Resource], shared: list[Resource]) -> tuple[str, str | None, dict[str, str]]:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": r} for r in [*resources, *shared]]}
    return verdict(evaluate_bundle(orjson.dumps(bundle), AS_OF))


def verdict_from_server(base_url: str, pid: str, token: str | None = None) -> tuple[str, str | None, dict[str, str]]:
    """What `axiom-cds evaluate --fhir-server URL --patient ID` decides."""
    record = asyncio.run(fetch_record(base_url, pid, fhir_wanted(load_trial("axiom")), AS_OF, token))
    return verdict(evaluate_record(record, AS_OF))


# --------------------------------------------------------------------------- a proxy that counts


BULK_HEADERS = ("content-location", "retry-after", "x-progress")


def bulk_forward(h: FaultyHandler) -> None:
    """Forward a Bulk Data request with its headers (Prefer in; Content-Location, Retry-After, X-Progress
    out), the server's URLs rewritten to the proxy's: the faulty proxy's own forward drops headers."""
    headers = {k: v for k, v in h.headers.items() if k.lower() in FORWARDED_HEADERS}
    response = h.proxy.http.get(h.proxy.origin + h.path, headers=headers)
    upstream, here = h.proxy.upstream.rstrip("/"), h.proxy.base_url
    extra = {name: response.headers[name].replace(upstream, here) for name in BULK_HEADERS if name in response.headers}
    h.send_body(response.status_code, response.content.replace(upstream.encode(), here.encode()),
                response.headers.get("content-type", "application/fhir+json"), extra)


def bulk_proxy(upstream: str, *first: tuple[str, Behaviour, int | None]) -> FaultyFhirServer:
    """A counting proxy in front of sekmet-fhir that passes $export, its status and its files through;
    `first`: (resource, behaviour, times) rules that come before that."""
    proxy = FaultyFhirServer(upstream)
    for resource, behaviour, times in first:
        proxy.script(resource, behaviour, times)
    for resource in ("$export", "Group", "Patient", "bulk-status", "bulk-files"):
        proxy.script(resource, bulk_forward)
    return proxy


def without_export(h: FaultyHandler) -> None:
    """The server's CapabilityStatement with every export operation taken out: a server without $export."""
    _, data, content_type = h.upstream()
    capability = orjson.loads(data)
    for rest in capability.get("rest", []):
        rest["operation"] = [op for op in rest.get("operation", []) if op["name"] != "export"]
        for resource in rest.get("resource", []):
            resource["operation"] = [op for op in resource.get("operation", []) if op["name"] != "export"]
    h.send_body(200, orjson.dumps(capability), content_type)


# --------------------------------------------------------------------------- scripted servers (respx)


BASE = "https://ehr.example.org/fhir"
STATUS = "https://ehr.example.org/fhir/bulk-status/job-1"
FILE = "https://ehr.example.org/fhir/bulk-files/job-1/Patient.ndjson"
CAPABILITY = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "operation": [
    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}]}
PATIENTS = b'{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b"}\n'


def manifest(*outputs: dict[str, Any], errors: tuple[dict[str, Any], ...] = (), token: bool = True) -> dict[str, Any]:
    return {"transactionTime": "2026-11-21T08:00:00Z", "request": f"{BASE}/$export", "requiresAccessToken": token,
            "output": list(outputs) or [{"type": "Patient", "url": FILE, "count": 2}], "error": list(errors)}


def scripted(mock: respx.MockRouter, statuses: list[httpx.Response], files: dict[str, httpx.Response] | None = None,
             capability: Any = CAPABILITY) -> respx.Route:
    mock.get(f"{BASE}/metadata").respond(200, json=capability)
    kickoff = mock.get(f"{BASE}/$export").respond(202, headers={"Content-Location": STATUS})
    mock.get(STATUS).mock(side_effect=statuses)
    mock.delete(STATUS).respond(202)
    for url, response in (files or {FILE: httpx.Response(200, content=PATIENTS)}).items():
        mock.get(url).mock(return_value=response)
    return kickoff


class Waits:
    """The injected sleep: records each wait asked for, sleeps not at all."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
