"""The population generator (`axiom-cds synth --population`): NDJSON as `$export` writes it, seeded,
byte-deterministic, valid FHIR R4, with a realistic prevalence and the real-chart shapes in its candidates."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import Counter
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapter.synth.population import Prevalence, draw_patient, write_population

AS_OF = date(2026, 11, 21)
CLI = [sys.executable, "-m", "adapter.cli"]


def lines(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def test_the_same_seed_gives_the_same_bytes_and_gzip_holds_the_same_lines(tmp_path: Path) -> None:
    first = write_population(tmp_path / "a", 11, 700, AS_OF)
    second = write_population(tmp_path / "b", 11, 700, AS_OF)
    packed = write_population(tmp_path / "c", 11, 700, AS_OF, compress=True)
    assert [p.name for p in first.paths] == [p.name for p in second.paths]
    for a, b in zip(first.paths, second.paths, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    again = write_population(tmp_path / "d", 11, 700, AS_OF, compress=True)
    for a, b in zip(packed.paths, again.paths, strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{a.name}: gzip without a name or time stamp is deterministic"
    for plain, gz in zip(first.paths, packed.paths, strict=True):
        assert gz.name == plain.name + ".gz"
        assert gzip.decompress(gz.read_bytes()) == plain.read_bytes()
    other = write_population(tmp_path / "e", 12, 700, AS_OF)
    assert other.paths[0].read_bytes() != first.paths[0].read_bytes(), "another seed, another population"


def test_one_file_per_resource_type_with_the_patients_interleaved(tmp_path: Path) -> None:
    written = write_population(tmp_path, 3, 1200, AS_OF)
    for path in written.paths:
        kinds = {r["resourceType"] for r in lines(path)}
        assert kinds == {path.name.removesuffix(".ndjson")}, "as $export writes them: one type per file"
    assert {p.name for p in written.paths} >= {"Patient.ndjson", "Observation.ndjson", "Condition.ndjson",
                                               "MedicationRequest.ndjson", "MedicationStatement.ndjson",
                                               "DiagnosticReport.ndjson", "Encounter.ndjson"}
    subjects = [r["subject"]["reference"] for r in lines(tmp_path / "Observation.ndjson") if "subject" in r]
    changes = sum(a != b for a, b in pairwise(subjects))
    assert changes > len(subjects) * 0.9, "an export's order interleaves patients, it does not group them"
    patients = lines(tmp_path / "Patient.ndjson")
    assert len(patients) == len({p["id"] for p in patients}) == 1200


def test_prevalence_a_few_percent_with_a_cancer_far_fewer_with_a_sarcoma(tmp_path: Path) -> None:
    groups = write_population(tmp_path, 5, 8000, AS_OF).groups
    assert sum(groups.values()) == 8000
    cancer = (groups["cancer"] + groups["sarcoma"]) / 8000
    assert 0.02 <= cancer <= 0.07, groups
    assert 0 < groups["sarcoma"] <= groups["cancer"] / 5, groups
    assert groups["lookalike"] > 0 and groups["well"] > 0.9 * 8000, groups


@pytest.mark.parametrize("group", ["well", "cancer", "lookalike", "sarcoma"])
def test_every_resource_is_valid_fhir_r4(group: str) -> None:
    prevalence = {"well": Prevalence(cancer=0, sarcoma=0, lookalike=0),
                  "cancer": Prevalence(cancer=1.0, sarcoma=0, lookalike=0),
                  "lookalike": Prevalence(sarcoma=0, lookalike=1.0),
                  "sarcoma": Prevalence(sarcoma=1.0)}[group]
    for index in range(25):
        drawn, resources = draw_patient(9, index, AS_OF, prevalence)
        assert drawn == group
        assert resources[0]["resourceType"] == "Patient"
        for r in resources:
            get_fhir_model_class(r["resourceType"]).model_validate(r)
            subject = r.get("subject", {}).get("reference")
            assert subject in (None, f"Patient/{resources[0]['id']}"), "a patient's resources are about her"


def test_the_candidates_arrive_in_the_shapes_of_real_charts() -> None:
    """DESIGN.md "Real charts": reports whose results lack subject and date, contained results, panels
    with hasMember and with components, a correction beside the value it corrects, valueString, UTC
    instants, a Medication by reference, and sarcomas coded every way the code sets allow."""
    seen: Counter[str] = Counter()
    for index in range(250):
        _, resources = draw_patient(4, index, AS_OF, Prevalence(sarcoma=1.0))
        by_id = {f"{r['resourceType']}/{r['id']}": r for r in resources}
        for r in resources:
            kind = r["resourceType"]
            if kind == "DiagnosticReport" and r.get("contained"):
                seen["contained results"] += 1
            if kind == "DiagnosticReport" and any("subject" not in by_id.get(x["reference"], {"subject": 1})
                                                  for x in r.get("result", [])):
                seen["results without subject"] += 1
            if kind == "Observation":
                seen["hasMember panel"] += "hasMember" in r
                seen["component panel"] += r["code"]["coding"][0]["code"] == "57021-8"
                seen["corrected"] += r.get("status") == "corrected"
                seen["valueString"] += "valueString" in r
                seen["UTC instant"] += str(r.get("effectiveDateTime", "")).endswith("Z")
            if kind.startswith("Medication") and "medicationReference" in r:
                seen["medicationReference"] += by_id[r["medicationReference"]["reference"]]["resourceType"] == \
                    "Medication"
            if kind == "Condition":
                coding = r["code"]["coding"][0]
                seen[f"{coding['system'].rsplit('/', 1)[-1]} {coding['code'][:3]}"] += 1
                seen["histology extension"] += "extension" in r
    for shape in ("contained results", "results without subject", "hasMember panel", "component panel",
                  "corrected", "valueString", "UTC instant", "medicationReference", "histology extension",
                  "icd-o-3 958", "icd-o-3 889", "icd-10-cm C40", "icd-10-cm C46", "icd-10-cm C49", "sct 424"):
        assert seen[shape] > 0, f"no {shape} among 250 sarcoma patients: {sorted(seen)}"


def test_synth_population_on_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "synth", "--population", "40", "--seed", "3", "--as-of", "2026-11-21",
                           "--gzip", str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split()
    assert printed and all(p.endswith(".ndjson.gz") and Path(p).exists() for p in printed)
    assert len(lines(tmp_path / "Patient.ndjson.gz")) == 40
    for bad in (["--population", "5", "--scenarios"], ["--gzip"]):  # --scenarios writes Bundles; --gzip NDJSON
        done = subprocess.run([*CLI, "synth", *bad, str(tmp_path / "x")], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 2, done
        assert done.stderr.startswith("axiom-cds: error: ") and len(done.stderr.splitlines()) == 1, done.stderr
