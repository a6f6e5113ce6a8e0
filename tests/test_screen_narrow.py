"""The narrowing's two reads: typed as FHIR shapes the data (fast), else with JSON columns (any shape).

A file of FHIR-shaped Patients and Conditions is read typed; one odd value anywhere (a `subject` that is a
string, a `coding` that is an object) stops that read, and the same files are read with JSON columns. Both
must leave the same rows, so that what the screen finds never depends on which read ran.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from adapter.screen import narrow
from adapter.screen.db import open_db
from adapter.screen.sources import find_sources
from adapter.synth import fhir
from adapter.synth.fhir import ICD10, ICDO3
from adapter.trials import load_trial

HISTOLOGY = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"


def _rows(folder: Path, typed: bool | None) -> list[tuple[Any, ...]]:
    """The scan table after reading `folder`'s Patient- and Condition-led files: typed, JSON, or as
    `scan_files` chooses (None)."""
    sources = find_sources(folder)
    files = sources.led_by("Patient", "Condition")
    codes = narrow.cohort_codes(load_trial("axiom"))
    with open_db() as con:
        narrow.scan_files(con, (), codes)  # the empty table
        if typed is None:
            narrow.scan_files(con, files, codes)
        else:
            narrow._insert_read(con, files, codes, typed=typed)
        rows: list[tuple[Any, ...]] = con.execute(f"SELECT * FROM {narrow.SCAN} ORDER BY ALL").fetchall()
    return rows


def test_fhir_shaped_data_reads_the_same_typed_and_as_json(population: Path) -> None:
    typed, as_json = _rows(population, typed=True), _rows(population, typed=False)
    assert typed == as_json
    cohort = [r for r in typed if r[0] == "Condition" and any(c["code"] == "9581/3" for c in r[3] or ())]
    assert cohort, "ASPS Conditions are read with their ICD-O-3 code (in code or the histology extension)"


def _odd_folder(folder: Path) -> Path:
    folder.mkdir()
    asps = fhir.condition("c1", "Patient/p1", ICD10, "C49.9", "Sarcoma")
    asps["extension"] = [{"url": HISTOLOGY, "valueCodeableConcept": {"coding": [{"system": ICDO3, "code": "9581/3"}]}},
                         {"url": "http://example.org/other", "valueString": "x"}]
    asps["meta"] = {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"]}
    lines = [fhir.patient("p1", "1990-01-01", "female"), fhir.patient("p2", "1980-01-01", "male"), asps,
             {"resourceType": "Condition", "id": "odd", "subject": "Patient/p2", "code": {"coding": {"code": "x"}}}]
    (folder / "Patient.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    return folder


def test_an_odd_value_is_read_with_json_columns_and_finds_the_same(tmp_path: Path) -> None:
    folder = _odd_folder(tmp_path / "odd")
    with pytest.raises(duckdb.Error):
        _rows(folder, typed=True)  # the subject that is a string stops the typed read
    chosen = _rows(folder, typed=None)
    assert chosen == _rows(folder, typed=False)
    by_id = {r[1]: r for r in chosen}
    assert {"system": ICDO3, "code": "9581/3"} in by_id["c1"][3], "the histology extension's code"
    assert by_id["odd"][2] is None and not by_id["odd"][3], "a string subject and an object coding find nothing"
    again = tmp_path / "fhir-shaped"
    again.mkdir()
    lines = (folder / "Patient.ndjson").read_bytes().splitlines()[:3]
    (again / "Patient.ndjson").write_bytes(b"".join(x + b"\n" for x in lines))
    assert [r for r in chosen if r[1] != "odd"] == _rows(again, typed=True), "the typed read of the other rows"


def test_a_condition_whose_code_cannot_be_read_makes_its_patient_a_candidate(tmp_path: Path) -> None:
    """The engine calls the diagnosis unknown when a Condition's code is no CodeableConcept (its coding an
    object): it may be ASPS. The narrowing must not drop that patient, or the worklist would miss a
    needs-review the engine gives — and it stays off the worklist when every code is readable."""
    from adapter.screen import screen
    from adapter.synth import fhir as synth

    broken = synth.condition("c-broken", "Patient/p-broken", ICDO3, "9581/3", "Alveolar soft part sarcoma")
    broken["code"] = {"coding": broken["code"]["coding"][0]}  # an object where FHIR has a list
    lines = [synth.patient("p-broken", "1990-05-02", "female"), broken,
             synth.patient("p-plain", "1980-01-01", "male"),
             synth.condition("c-plain", "Patient/p-plain", "http://snomed.info/sct", "38341003", "Hypertension")]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "all.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    summary = screen(folder, tmp_path / "out", as_of=date(2026, 11, 21), progress=False)
    rows = orjson.loads((tmp_path / "out" / "worklist.json").read_bytes())["patients"]
    assert [r["patient"] for r in rows] == ["Patient/p-broken"], rows
    assert rows[0]["overall"] == "needs-review" and rows[0]["statuses"]["diagnosis"] == "unknown", rows[0]
    assert summary.candidates == 1
