"""The population screen (`axiom-cds screen`): for every patient, the verdict `evaluate` gives.

The proof is the naive path, written again here in plain Python: every patient of a generated population
is regrouped from the NDJSON lines (the Patient, every resource whose subject — else patient — reference is
hers, the subject-less results and Medications they point at) and evaluated one by one through the engine;
the worklist must hold exactly the patients the engine does not call not-applicable, with the same
overall verdict, cohort and statuses. Then the contract, the files, and what a source can get wrong.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import logging
import random
import re
import stat
from collections import defaultdict
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the venv (as in test_cli.py)
import orjson
import pytest
from typer.testing import CliRunner

from adapter.cli import app
from adapter.engine import evaluate_bundle
from adapter.errors import InputError
from adapter.fhir.wire import reference_key
from adapter.screen import SourceError, screen
from adapter.screen.decide import bundle_bytes
from adapter.synth import fhir
from adapter.synth.fhir import ICD10, ICDO3
from adapter.synth.population import write_population
from adapter.trials import load_trial
from tests.helpers import ENRICHED

AS_OF = date(2026, 11, 21)
FILES = ("worklist.json", "worklist.csv", "report.html")
runner = CliRunner()


# --------------------------------------------------------------------------- the naive path, again


def read_lines(folder: Path) -> list[bytes]:
    out = []
    for path in sorted(folder.iterdir()):
        if path.name.endswith((".ndjson", ".ndjson.gz")):
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rb") as fh:
                out += [line.strip() for line in fh if line.strip()]
    return out


def _subject(r: dict[str, Any]) -> str | None:
    for name in ("subject", "patient"):
        ref = r.get(name)
        if isinstance(ref, dict) and ref.get("reference") is not None:
            return str(ref["reference"])
    return None


def _pointers(r: dict[str, Any]) -> list[str]:
    refs = [x.get("reference") for name in ("result", "hasMember") for x in r.get(name) or ()
            if isinstance(x, dict)]
    med = r.get("medicationReference")
    refs.append(med.get("reference") if isinstance(med, dict) else None)
    return [x for x in refs if isinstance(x, str) and not x.startswith("#")]


def patient_bundles(folder: Path) -> dict[str, bytes]:
    """Every Patient's Bundle, regrouped in Python from the source's lines."""
    patients: dict[str, list[bytes]] = defaultdict(list)
    own: dict[str, list[bytes]] = defaultdict(list)
    loose: dict[str, bytes] = {}
    for line in read_lines(folder):
        r = orjson.loads(line)
        if r["resourceType"] == "Patient":
            patients[r["id"]].append(line)
        elif (ref := _subject(r)) is not None:
            own[reference_key(ref)].append(line)
        elif r["resourceType"] in ("Observation", "Medication"):
            loose[f"{r['resourceType']}/{r['id']}"] = line
    bundles = {}
    for pid, lines in patients.items():
        mine = own.get(f"Patient/{pid}", [])
        pointed: dict[str, bytes] = {}
        queue = [ref for line in mine for ref in _pointers(orjson.loads(line))]
        while queue:
            key = reference_key(queue.pop())
            if key in loose and key not in pointed:
                pointed[key] = loose[key]
                queue += _pointers(orjson.loads(loose[key]))
        bundles[f"Patient/{pid}"] = bundle_bytes([*sorted(lines), *sorted(mine), *sorted(pointed.values())])
    return bundles


def evaluate_each(folder: Path) -> dict[str, dict[str, Any] | str]:
    """Each patient's report as JSON, or the engine's InputError."""
    out: dict[str, dict[str, Any] | str] = {}
    for ref, data in patient_bundles(folder).items():
        try:
            out[ref] = evaluate_bundle(data, AS_OF).to_json()
        except InputError as exc:
            out[ref] = str(exc)
    return out


def assert_same_verdicts(folder: Path, doc: dict[str, Any]) -> dict[str, dict[str, Any] | str]:
    """The worklist holds exactly the patients the engine applies the trial to, with its verdicts."""
    expected = evaluate_each(folder)
    rows = {row["patient"]: row for row in doc["patients"]}
    unreadable = {u["patient"] for u in doc["unreadable"]}
    assert doc["screened"] == len(expected)
    for ref, report in expected.items():
        if isinstance(report, str):
            assert ref in unreadable or ref not in rows, f"{ref}: the engine refuses its Bundle ({report})"
            continue
        if report["overall"] == "not-applicable":
            assert ref not in rows, f"{ref}: the engine says not-applicable, the worklist lists it"
            continue
        row = rows.get(ref)
        assert row is not None, f"{ref}: {report['overall']} per the engine, missing from the worklist"
        statuses = {c["id"]: c["status"] for c in report["criteria"]}
        assert (row["overall"], row["cohort"], row["statuses"]) == (report["overall"], report["cohort"], statuses), ref
        assert row["failing"] == [k for k, v in statuses.items() if v == "not-met"]
        assert row["unknown"] == [k for k, v in statuses.items() if v == "unknown"]
    assert set(rows) <= set(expected), "no row for a patient the source does not hold"
    return expected


# --------------------------------------------------------------------------- fixtures


def run(source: Path, out: Path, **kw: Any) -> dict[str, Any]:
    screen(source, out, AS_OF, **kw)
    doc: dict[str, Any] = orjson.loads((out / "worklist.json").read_bytes())
    return doc


@pytest.fixture(scope="module")
def screened(population: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("worklist")
    return out, run(population, out)


# --------------------------------------------------------------------------- the one engine


def test_every_patient_gets_the_verdict_evaluate_gives_on_their_bundle(
        population: Path, screened: tuple[Path, dict[str, Any]]) -> None:
    _, doc = screened
    expected = assert_same_verdicts(population, doc)
    verdicts = {(r["overall"], r["cohort"]) for r in doc["patients"]}
    for overall in ("likely-eligible", "needs-review", "not-eligible"):
        assert any(v[0] == overall for v in verdicts), f"the population has no {overall} patient: {verdicts}"
    assert {v[1] for v in verdicts} == {"asps", "safety-run-in"}, "both cohorts"
    narrowed_out = doc["candidates"] - len(doc["patients"])
    assert narrowed_out > 0, "refuted and entered-in-error sarcomas are candidates the engine then rules out"
    applies = sum(not isinstance(r, str) and r["overall"] != "not-applicable" for r in expected.values())
    assert applies == len(doc["patients"]) and doc["unreadable"] == []


def test_a_narrowed_source_screens_like_the_whole_one(population: Path, screened: tuple[Path, dict[str, Any]],
                                                     tmp_path: Path) -> None:
    """Patients the narrowing drops are not-applicable whatever else their chart holds: screening only the
    candidates' own lines gives the same worklist (the narrowing is a superset of the worklist)."""
    _, doc = screened
    keep = {row["patient"] for row in doc["patients"]}
    folder = tmp_path / "kept"
    folder.mkdir()
    lines = [line for line in read_lines(population)
             if ((r := orjson.loads(line))["resourceType"] == "Patient" and f"Patient/{r['id']}" in keep)
             or ((ref := _subject(r)) is not None and reference_key(ref) in keep)
             or (_subject(r) is None and r["resourceType"] in ("Observation", "Medication"))]
    (folder / "kept.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    again = run(folder, tmp_path / "out")
    assert again["patients"] == doc["patients"]


# --------------------------------------------------------------------------- the contract

ROW = {"type": "object", "additionalProperties": False,
       "required": ["patient", "overall", "cohort", "statuses", "failing", "unknown"],
       "properties": {"patient": {"type": "string", "pattern": "^Patient/[A-Za-z0-9.-]+$"},
                      "overall": {"enum": ["likely-eligible", "needs-review", "not-eligible"]},
                      "cohort": {"enum": ["asps", "safety-run-in", None]},
                      "statuses": {"type": "object", "additionalProperties": {
                          "enum": ["met", "not-met", "unknown", "not-applicable"]}},
                      "failing": {"type": "array", "items": {"type": "string"}},
                      "unknown": {"type": "array", "items": {"type": "string"}}}}
WORKLIST = {"type": "object", "required": ["trial", "asOf", "screened", "candidates", "attrition", "patients"],
            "properties": {
                "trial": {"type": "object", "required": ["id", "nct", "version"], "additionalProperties": False,
                          "properties": {k: {"type": "string"} for k in ("id", "nct", "version")}},
                "asOf": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                "screened": {"type": "integer", "minimum": 0}, "candidates": {"type": "integer", "minimum": 0},
                "attrition": {"type": "array", "minItems": 2, "items": {
                    "type": "object", "additionalProperties": False, "required": ["step", "remaining"],
                    "properties": {"step": {"type": "string"}, "remaining": {"type": "integer", "minimum": 0}}}},
                "patients": {"type": "array", "items": ROW},
                "unreadable": {"type": "array", "items": {"type": "object", "required": ["patient", "reason"]}}}}


def test_worklist_json_has_the_contract_shape(screened: tuple[Path, dict[str, Any]]) -> None:
    _, doc = screened
    jsonschema.validate(doc, WORKLIST)
    trial = load_trial("axiom")
    assert doc["trial"] == {"id": trial.id, "nct": trial.nct, "version": trial.version}
    assert doc["asOf"] == "2026-11-21"
    for row in doc["patients"]:
        assert list(row["statuses"]) == list(trial.criterion_ids), "every criterion once, in the trial's order"
    remaining = [a["remaining"] for a in doc["attrition"]]
    assert [a["step"] for a in doc["attrition"]] == ["patients screened", "with a cohort diagnosis code",
                                                    "in a cohort", "not excluded", "likely eligible"]
    assert remaining == sorted(remaining, reverse=True), "patients only drop out"
    assert remaining[:3] == [doc["screened"], doc["candidates"], len(doc["patients"])]
    assert remaining[3] == sum(r["overall"] != "not-eligible" for r in doc["patients"])
    assert remaining[4] == sum(r["overall"] == "likely-eligible" for r in doc["patients"])
    rank = {"likely-eligible": 0, "needs-review": 1, "not-eligible": 2}
    keys = [(rank[r["overall"]], r["patient"]) for r in doc["patients"]]
    assert keys == sorted(keys), "likely eligible first, then by patient"


def test_the_csv_holds_the_same_rows(screened: tuple[Path, dict[str, Any]]) -> None:
    out, doc = screened
    rows = list(csv.DictReader(io.StringIO((out / "worklist.csv").read_text(encoding="utf-8"))))
    ids = list(load_trial("axiom").criterion_ids)
    assert len(rows) == len(doc["patients"])
    for got, row in zip(rows, doc["patients"], strict=True):
        assert got["patient"] == row["patient"] and got["overall"] == row["overall"]
        assert got["cohort"] == (row["cohort"] or "")
        assert got["failing"].split() == row["failing"] and got["unknown"].split() == row["unknown"]
        assert {i: got[i] for i in ids} == row["statuses"]


def test_the_files_hold_patient_data_and_are_private(screened: tuple[Path, dict[str, Any]]) -> None:
    out, _ = screened
    for name in FILES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name


# --------------------------------------------------------------------------- report.html


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


HOSTILE_NAME = "<script>alert('name')</script>"
HOSTILE_TEXT = '<img src="https://evil.example/x.png" onerror="alert(1)">ASPS'


def hostile_source(folder: Path) -> Path:
    """An ASPS patient whose name and diagnosis text are markup."""
    folder.mkdir(parents=True, exist_ok=True)
    patient = fhir.patient("evil", "1990-02-03", "female", name=HOSTILE_NAME)
    condition = fhir.condition("c-evil", "Patient/evil", ICDO3, "9581/3", HOSTILE_TEXT)
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    (folder / "Condition.ndjson").write_bytes(orjson.dumps(condition) + b"\n")
    return folder


def test_report_html_is_self_contained_and_shows_chart_text_as_text(screened: tuple[Path, dict[str, Any]],
                                                                    tmp_path: Path) -> None:
    doc = run(hostile_source(tmp_path / "src"), tmp_path / "out")
    assert [r["patient"] for r in doc["patients"]] == ["Patient/evil"]
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert HOSTILE_NAME not in page and "&lt;script&gt;alert(" in page, "the name is text"
    assert "<img" not in page and "&lt;img src=" in page, "the diagnosis text is text"
    for source_page in (page, (screened[0] / "report.html").read_text(encoding="utf-8")):
        parsed = _Tags()
        parsed.feed(source_page)
        tags = [t for t, _ in parsed.tags]
        assert "link" not in tags and "img" not in tags and "iframe" not in tags
        for tag, attrs in parsed.tags:
            for name in ("src", "href", "action", "srcset"):
                assert not re.match(r"\s*(https?:)?//", attrs.get(name) or ""), f"<{tag} {name}> loads from afar"
            assert tag != "script" or "src" not in attrs
        csp = next(a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv") ==
                   "Content-Security-Policy")
        assert csp and "default-src 'none'" in csp
        assert len(parsed.scripts) == 1 and _sha(parsed.scripts[0]) in csp, "only the page's own script runs"
        assert len(parsed.styles) == 1 and _sha(parsed.styles[0]) in csp
        assert "<svg" in source_page and "attrition" in source_page.lower()


def test_report_html_lists_every_worklist_patient_with_each_criterion(screened: tuple[Path, dict[str, Any]]) -> None:
    out, doc = screened
    page = (out / "report.html").read_text(encoding="utf-8")
    for row in doc["patients"]:
        assert page.count(f">{row['patient']}<") >= 2, "in the sortable table and in the detail"
    assert page.count("<details") == len(doc["patients"])
    assert page.count("<tr><td>hemoglobin</td>") == len(doc["patients"])


# --------------------------------------------------------------------------- the same input, the same bytes


def _outputs(out: Path) -> list[bytes]:
    return [(out / name).read_bytes() for name in FILES]


def test_the_same_input_gives_the_same_bytes_in_any_line_order_and_any_file_layout(
        population: Path, screened: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = screened
    again = tmp_path / "again"
    run(population, again)
    assert _outputs(again) == _outputs(out)
    lines = read_lines(population)
    random.Random(5).shuffle(lines)
    mixed = tmp_path / "mixed"  # every type in each file, led by an Observation: Conditions are met late
    mixed.mkdir()
    lead = next(i for i, line in enumerate(lines) if b'"Observation"' in line)
    lines.insert(0, lines.pop(lead))
    half = len(lines) // 2
    (mixed / "part-1.ndjson").write_bytes(b"\n".join(lines[:half]) + b"\n")
    (mixed / "part-2.ndjson").write_bytes(b"\n\n".join(lines[half:]) + b"\r\n")
    run(mixed, tmp_path / "out-mixed")
    assert _outputs(tmp_path / "out-mixed") == _outputs(out)


def test_a_file_of_a_type_the_engine_never_reads_is_still_searched_past_its_own_lines(
        population: Path, screened: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """An Encounter-led file's Encounters are never looked into (the engine reads none), but a candidate's
    sarcoma Condition, labs and Patient written into that file are hers all the same."""
    out, doc = screened
    moved_to = tmp_path / "moved"
    moved_to.mkdir()
    ref = doc["patients"][0]["patient"]
    encounters = (population / "Encounter.ndjson").read_bytes().splitlines()
    assert encounters and b'"resourceType":"Encounter"' in encounters[0]
    moved: list[bytes] = []
    for path in sorted(population.iterdir()):
        if path.name == "Encounter.ndjson":
            continue
        keep = []
        for line in path.read_bytes().splitlines():
            r = orjson.loads(line)
            mine = f"Patient/{r['id']}" == ref if r["resourceType"] == "Patient" else _subject(r) == ref
            (moved if mine and r["resourceType"] in ("Patient", "Condition", "Observation") else keep).append(line)
        (moved_to / path.name).write_bytes(b"".join(x + b"\n" for x in keep))
    assert any(b'"resourceType":"Condition"' in x for x in moved) and any(b'"Observation"' in x for x in moved)
    (moved_to / "Encounter.ndjson").write_bytes(b"".join(x + b"\n" for x in [encounters[0], *moved, *encounters[1:]]))
    run(moved_to, tmp_path / "out-moved")
    assert _outputs(tmp_path / "out-moved") == _outputs(out), f"{ref}'s resources in the Encounter file"


def test_gzip_files_give_the_same_worklist(population: Path, screened: tuple[Path, dict[str, Any]],
                                           tmp_path: Path) -> None:
    packed = tmp_path / "gz"
    write_population(packed, 21, 1500, AS_OF, compress=True, prevalence=ENRICHED)
    assert all(p.name.endswith(".ndjson.gz") for p in packed.iterdir())
    run(packed, tmp_path / "out")
    assert _outputs(tmp_path / "out") == _outputs(screened[0])


# --------------------------------------------------------------------------- odd data and bad input


def odd_source(folder: Path) -> Path:
    """Shapes real feeds send that the SQL must not trip on, and charts the engine refuses."""
    folder.mkdir(parents=True, exist_ok=True)
    patients = [fhir.patient(p, "1988-04-05", "female") for p in ("odd1", "odd2", "odd3", "odd4", "well")]
    patients.append({**fhir.patient("bad-birth", None, "male"), "birthDate": "1990-13-45"})  # not valid FHIR
    asps = [fhir.condition(f"c{p}", f"Patient/{p}", ICDO3, "9581/3", "Alveolar soft part sarcoma")
            for p in ("odd1", "odd2", "bad-birth", "nobody")]
    odd = [
        {"resourceType": "Condition", "id": "w1", "subject": "Patient/well", "code": {"coding": {"code": "x"}}},
        {"resourceType": "Condition", "id": "w2", "subject": {"reference": "Patient/well"},
         "code": {"coding": ["9581/3", 7, None]}, "extension": {"url": "x"}},
        {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": 12},
         "code": "777-3"},
        fhir.condition("c-odd3", "Patient/odd3", ICD10, "C49.9", "Sarcoma", verification="refuted"),
        fhir.observation("o2", "Patient/odd1", "777-3", "2026-11-10T08:00:00Z", value=250, unit="K/uL"),
    ]
    lines = [orjson.dumps(r) for r in [*patients, *asps, *odd]]
    escaped = orjson.dumps(fhir.condition("c-odd4", "Patient/odd4", ICDO3, "8890/3", "Leiomyosarcoma"))
    lines.append(escaped.replace(b'"Patient/odd4"', b'"Pati\\u0065nt\\/odd4"'))  # the same reference, escaped
    lines.append(orjson.dumps(fhir.observation("o3", "Patient/odd2", "718-7", "2026-11-10", value=12.5,
                                               unit="g/dL")).replace(b"Patient/odd2", b"Patient\\/odd2"))
    (folder / "mixed.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def test_odd_shapes_are_read_and_charts_the_engine_refuses_are_not_given_a_verdict(tmp_path: Path) -> None:
    folder = odd_source(tmp_path / "src")
    doc = run(folder, tmp_path / "out")
    expected = assert_same_verdicts(folder, doc)
    rows = {r["patient"]: r for r in doc["patients"]}
    assert {"Patient/odd1", "Patient/odd2", "Patient/odd4"} <= set(rows), "escaped references are hers too"
    assert "Patient/odd3" not in rows and "Patient/well" not in rows
    assert rows["Patient/odd2"]["statuses"]["hemoglobin"] == "met", "the result sent as Patient\\/odd2"
    unreadable = {u["patient"]: u["reason"] for u in doc["unreadable"]}
    assert set(unreadable) == {"Patient/bad-birth", "Patient/nobody"}
    assert isinstance(expected["Patient/bad-birth"], str), "evaluate refuses that Bundle too"
    assert "not valid FHIR" in unreadable["Patient/bad-birth"]
    assert "no Patient resource" in unreadable["Patient/nobody"]
    assert "Patient/bad-birth" not in rows, "a chart that cannot be read is never reported as not eligible"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Patient/bad-birth" in page and "Not evaluated" in page


def test_a_candidates_patient_is_found_however_its_line_is_written(tmp_path: Path) -> None:
    """An export writes `{"resourceType":"Patient","id":"…"`, and the id is read right there; a Patient
    line written otherwise (keys in another order, spaces, an escaped id) is searched whole. Either way only
    the candidate's own Patient joins her chart: not one whose identifier is her id, nor one whose id
    begins with hers."""
    folder = tmp_path / "src"
    folder.mkdir()
    ids = ("p1", "p2", "p3", "p4", "p5")
    first = orjson.dumps(fhir.patient("p1", "1988-04-05", "female", "Export"))
    reordered = orjson.dumps({"id": "p2", **fhir.patient("p2", "1988-04-05", "female", "Reordered")})
    spaced = orjson.dumps(fhir.patient("p3", "1988-04-05", "female", "Spaced")).replace(b'":"', b'": "')
    escaped = orjson.dumps(fhir.patient("p4", "1988-04-05", "female", "Escaped")).replace(b'"p4"', b'"p\\u0034"')
    meta_first = orjson.dumps({"resourceType": "Patient", "meta": {"versionId": "3"},
                               **fhir.patient("p5", "1988-04-05", "female", "MetaFirst")})
    namesake = {**fhir.patient("p10", "1970-01-01", "male", "Namesake"), "identifier": [{"value": "p1"}]}
    patients = [first, reordered, spaced, escaped, meta_first, orjson.dumps(namesake)]
    assert not any(line.startswith(b'{"resourceType":"Patient","id":"') for line in (reordered, spaced))
    (folder / "Patient.ndjson").write_bytes(b"".join(line + b"\n" for line in patients))
    asps = [fhir.condition(f"c-{p}", f"Patient/{p}", ICDO3, "9581/3", "Alveolar soft part sarcoma") for p in ids]
    (folder / "Condition.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in asps))
    doc = run(folder, tmp_path / "out")
    assert_same_verdicts(folder, doc)
    rows = {r["patient"]: r for r in doc["patients"]}
    assert set(rows) == {f"Patient/{p}" for p in ids}, "each candidate found by her Patient, however written"
    assert all(r["cohort"] == "asps" for r in rows.values())
    assert doc["unreadable"] == [] and doc["screened"] == 6, "a second Patient in a chart makes it unreadable"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Namesake" not in page and all(n in page for n in ("Export", "Reordered", "Spaced", "Escaped", "MetaFirst"))


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["screen", *args], catch_exceptions=False)


def _one_line_error(result: Any, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("axiom-cds: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_bad_sources_stop_with_one_line_and_exit_2(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    _one_line_error(_cli(str(tmp_path / "nowhere"), "--out", out), "no such folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    _one_line_error(_cli(str(tmp_path / "empty"), "--out", out), "no *.ndjson")
    src = hostile_source(tmp_path / "src")
    with (src / "Observation.ndjson").open("wb") as fh:
        fh.write(b'{"resourceType":"Observation","id":"a","subject":{"reference":"Patient/evil"}}\n\n')
        fh.write(b'{"resourceType":"Observation","id":"b","subject":{"reference":"Patient/ev\n')
    _one_line_error(_cli(str(src), "--out", out, "--as-of", "2026-11-21"), "Observation.ndjson", "line 3",
                    "not valid JSON")
    assert not (tmp_path / "out" / "worklist.json").exists(), "nothing half-screened is written"
    (src / "Observation.ndjson").unlink()
    conditions = (src / "Condition.ndjson").read_bytes()
    (src / "Condition.ndjson").write_bytes(conditions + b'{"resourceType":"Condition","id":"a","id":"b"}\n')
    _one_line_error(_cli(str(src), "--out", out, "--as-of", "2026-11-21"), "Condition.ndjson", "line 2",
                    'key "id" twice')
    (src / "Condition.ndjson").write_bytes(conditions)
    (src / "Extra.ndjson.gz").write_bytes(b"not gzip at all")
    _one_line_error(_cli(str(src), "--out", out), "Extra.ndjson.gz", "cannot be read")


def test_bad_options_stop_with_one_line_and_exit_2(tmp_path: Path) -> None:
    src = str(hostile_source(tmp_path / "src"))
    (tmp_path / "a-file").write_text("x")
    _one_line_error(_cli(src, "--out", str(tmp_path / "a-file" / "out")), "--out", "cannot write there")
    with pytest.raises(SourceError, match="--engine nowhere is not available"):  # spark: tests/test_screen_spark.py
        screen(Path(src), tmp_path / "out", AS_OF, engine="nowhere")
    _one_line_error(_cli(src, "--out", str(tmp_path / "out"), "--as-of", "21/11/2026"), "--as-of")
    _one_line_error(_cli(src, "--out", str(tmp_path / "out"), "--trial", str(tmp_path / "none.yaml")))
    with pytest.raises(SourceError):
        screen(tmp_path / "nowhere", tmp_path / "out", AS_OF)


def test_the_command_line_prints_counts_and_logs_no_patient_data(tmp_path: Path) -> None:
    src = hostile_source(tmp_path / "src")
    quiet = _cli(str(src), "--out", str(tmp_path / "quiet"), "--as-of", "2026-11-21")
    assert quiet.exit_code == 0 and quiet.stderr == "", "no bar and no log off a terminal unless asked"
    assert quiet.stdout.splitlines()[0] == ("1 patients screened: 1 with a cohort diagnosis code, 1 in a cohort, "
                                            "0 likely eligible")
    assert [Path(p).name for p in quiet.stdout.splitlines()[1:]] == list(FILES)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = _cli(str(src), "--out", str(tmp_path / "out"), "--as-of", "2026-11-21", "-v", "--progress")
    finally:  # -v routes the root logger to this run's stderr, which CliRunner closes
        root.handlers[:], root.level = handlers, level
    assert result.exit_code == 0, result.output
    logged = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {entry["event"] for entry in logged} >= {"screen gathered", "screen decided", "screen written"}
    assert "evil" not in result.stderr and "alert" not in result.stderr, "ids, names and texts never logged"
    assert "deciding" in result.stderr, "--progress shows the steps on stderr"
    assert _outputs(tmp_path / "quiet") == _outputs(tmp_path / "out"), "the bar changes nothing written"


# --------------------------------------------------------------------------- real HL7 charts

# Charts of tests/test_hl7_examples.py (real mCODE and R4 example files, mutated there), grouped so that no
# two charts of a group share the id of a resource another one points at (the jenny-m and pat2 variants
# reuse theirs, the genetics report and pat2's panel both number their results o1, o2 …): one export never
# holds two resources of one type and id.
HL7_GROUPS = (
    ("brian-l-asps", "f001-asps", "father-document", "jenny-m-asps", "john-anyperson-asps", "pat2-ghp-asps",
     "xds-transaction"),
    ("jenny-m-leiomyosarcoma", "pat2-cbc-asps", "genetics-example1-report-asps"),
    ("jenny-m",),
)


@pytest.mark.parametrize("group", HL7_GROUPS, ids=lambda g: "+".join(g)[:40])
def test_real_hl7_charts_as_ndjson_screen_as_evaluate_judges_them(group: tuple[str, ...], tmp_path: Path) -> None:
    from tests.test_hl7_examples import CHARTS  # the charts built there from the vendored files

    folder = tmp_path / "export"
    folder.mkdir()
    by_type: dict[str, list[bytes]] = defaultdict(list)
    expected = {}
    seen: set[tuple[str, str]] = set()
    for name in group:
        bundle = CHARTS[name]()
        report = evaluate_bundle(orjson.dumps(bundle), AS_OF).to_json()
        expected[report["patient"]] = report
        for entry in bundle["entry"]:
            r = entry["resource"]
            if (r["resourceType"], r.get("id")) in seen and r["resourceType"] == "Condition":
                r["id"] = f"{r['id']}-{name}"  # the primary lent to several charts (nothing points at it)
            assert (r["resourceType"], r.get("id")) not in seen, "one export: one resource per type and id"
            seen.add((r["resourceType"], r.get("id")))
            by_type[r["resourceType"]].append(orjson.dumps(r))
    for kind, lines in by_type.items():
        (folder / f"{kind}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    doc = run(folder, tmp_path / "out")
    assert_same_verdicts(folder, doc)
    rows = {r["patient"]: r for r in doc["patients"]}
    for ref, report in expected.items():
        if report["overall"] == "not-applicable":
            assert ref not in rows, ref
            continue
        statuses = {c["id"]: c["status"] for c in report["criteria"]}
        assert (rows[ref]["overall"], rows[ref]["cohort"], rows[ref]["statuses"]) == \
            (report["overall"], report["cohort"], statuses), f"{ref}: as `evaluate` judges the original Bundle"
