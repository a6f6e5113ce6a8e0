"""`axiom-cds screen --engine spark`: the same worklist as the local engine, byte for byte.

Spark SQL narrows and gathers, the one Python engine decides each candidate in Spark's Python workers; the
three files written (worklist.json, worklist.csv, report.html) must be the local engine's bytes on the
same data: a generated population (an export's layout; gzip files mixing every type, where the Patients
and Conditions are met late), the odd shapes and refused charts of tests/test_screen.py, and the real HL7
example charts. One SparkSession (`local[2]`, every socket on 127.0.0.1, no UI) serves the module: the
engine uses the active session. Without PySpark or Java, `--engine spark` stops with one line, exit 2.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.engine import evaluate_bundle
from adapter.screen import screen
from adapter.synth import fhir
from adapter.synth.fhir import ICDO3
from tests.test_screen import (
    AS_OF,
    FILES,
    HL7_GROUPS,
    _cli,
    _one_line_error,
    assert_same_verdicts,
    hostile_source,
    odd_source,
    read_lines,
)

HAVE_JAVA = bool(os.environ.get("JAVA_HOME")) or any(
    Path(d, "java").is_file() for d in os.environ.get("PATH", "").split(os.pathsep) if d)
needs_spark = pytest.mark.skipif(not HAVE_JAVA, reason="no Java for Spark (`make java` installs it)")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local Spark for the module (its start takes seconds to a minute); the engine uses it."""
    if not HAVE_JAVA:
        pytest.skip("no Java for Spark (`make java` installs it)")
    pytest.importorskip("pyspark", reason="PySpark is not installed: pip install 'axiom-cds[spark]'")
    from adapter.screen.spark import spark_session

    with spark_session("local[2]") as (session, _):
        conf = session.sparkContext.getConf()
        assert conf.get("spark.ui.enabled") == "false" and conf.get("spark.driver.bindAddress") == "127.0.0.1"
        yield session


def outputs(out: Path) -> list[bytes]:
    return [(out / name).read_bytes() for name in FILES]


def both(source: Path, tmp: Path) -> tuple[list[bytes], list[bytes]]:
    """The files the local engine writes and those the spark engine writes, for the same source."""
    screen(source, tmp / "local", AS_OF, progress=False)
    screen(source, tmp / "spark", AS_OF, engine="spark", progress=False)
    return outputs(tmp / "local"), outputs(tmp / "spark")


@pytest.fixture(scope="module")
def local_files(population: Path, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The local engine's files for the population (tests/test_screen.py: its verdicts are `evaluate`'s)."""
    out = tmp_path_factory.mktemp("local")
    screen(population, out, AS_OF, progress=False)
    return outputs(out)


# --------------------------------------------------------------------------- the same bytes


def test_a_generated_population_gives_the_local_engines_worklist(spark: Any, population: Path,
                                                                local_files: list[bytes], tmp_path: Path) -> None:
    screen(population, tmp_path, AS_OF, engine="spark", progress=False)
    assert outputs(tmp_path) == local_files, "worklist.json, worklist.csv and report.html byte for byte"
    doc = orjson.loads(local_files[0])
    assert {r["overall"] for r in doc["patients"]} == {"likely-eligible", "needs-review", "not-eligible"}
    assert doc["candidates"] > len(doc["patients"]) > 10


def test_gzip_files_mixing_every_type_give_the_same_worklist(spark: Any, population: Path,
                                                            local_files: list[bytes], tmp_path: Path) -> None:
    """No file led by a Patient or Condition: every candidate is found in the gathering pass (the strays),
    then gathered in one more pass, as the local engine does."""
    lines = read_lines(population)
    random.Random(5).shuffle(lines)
    lead = next(i for i, line in enumerate(lines) if b'"Observation"' in line)
    lines.insert(0, lines.pop(lead))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    half = len(lines) // 2
    (mixed / "part-1.ndjson.gz").write_bytes(gzip.compress(b"\n".join(lines[:half]) + b"\n"))
    (mixed / "part-2.ndjson.gz").write_bytes(gzip.compress(b"\n\n".join(lines[half:]) + b"\r\n"))
    screen(mixed, tmp_path / "spark", AS_OF, engine="spark", progress=False)
    assert outputs(tmp_path / "spark") == local_files


def test_a_result_without_a_subject_that_names_another_patient_is_gathered_as_locally(spark: Any,
                                                                                      tmp_path: Path) -> None:
    """A candidate's CBC report points at a platelet result without a subject whose performer is another
    Patient: the result is hers (FHIR: the report's subject applies), whichever engine gathers it."""
    src = tmp_path / "src"
    src.mkdir()
    platelets = fhir.observation("plt-1", "Patient/p1", "777-3", "2026-11-14T08:00:00Z", value=50, unit="10*3/uL")
    del platelets["subject"]
    platelets["performer"] = [{"reference": "Patient/p2"}]  # odd, but FHIR allows it
    report = {"resourceType": "DiagnosticReport", "id": "cbc-1", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
              "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-11-14T08:00:00Z",
              "result": [{"reference": "Observation/plt-1"}]}
    files = {"Patient": [fhir.patient("p1", "1988-04-05", "female"), fhir.patient("p2", "1970-01-01", "male")],
             "Condition": [fhir.condition("c1", "Patient/p1", ICDO3, "9581/3", "Alveolar soft part sarcoma")],
             "DiagnosticReport": [report], "Observation": [platelets]}
    for name, resources in files.items():
        (src / f"{name}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    local, spark_files = both(src, tmp_path)
    doc = orjson.loads(local[0])
    assert doc["patients"][0]["statuses"]["platelets"] == "not-met", "50,000/uL from the report's result"
    assert spark_files == local


def test_odd_shapes_and_refused_charts_are_handled_as_locally(spark: Any, tmp_path: Path) -> None:
    """Escaped references, a subject that is a string, coding that is an object; a Patient that is not
    valid FHIR and a sarcoma Condition without its Patient: unreadable with the same reasons."""
    folder = odd_source(tmp_path / "src")
    condition = orjson.loads(b"".join(line for line in (folder / "mixed.ndjson").read_bytes().splitlines(True)
                                      if b'"codd1"' in line))
    absolute = {**condition, "id": "c-abs", "subject": {"reference": "https://ehr.example/fhir/Patient/odd1"}}
    with (folder / "mixed.ndjson").open("ab") as fh:  # an absolute reference: a note in the worklist
        fh.write(orjson.dumps(absolute) + b"\n")
    local, on_spark = both(folder, tmp_path)
    assert on_spark == local
    doc = orjson.loads(on_spark[0])
    assert {u["patient"] for u in doc["unreadable"]} == {"Patient/bad-birth", "Patient/nobody"}
    assert any("absolute URL" in note for note in doc["notes"])


def _hl7_export(group: tuple[str, ...], folder: Path) -> None:
    """tests/test_screen.py's HL7 charts as one export (one file per resource type)."""
    from tests.test_hl7_examples import CHARTS

    folder.mkdir()
    by_type: dict[str, list[bytes]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for name in group:
        bundle = CHARTS[name]()
        evaluate_bundle(orjson.dumps(bundle), AS_OF)
        for entry in bundle["entry"]:
            r = entry["resource"]
            if (r["resourceType"], r.get("id")) in seen and r["resourceType"] == "Condition":
                r["id"] = f"{r['id']}-{name}"
            seen.add((r["resourceType"], r.get("id")))
            by_type[r["resourceType"]].append(orjson.dumps(r))
    for kind, lines in by_type.items():
        (folder / f"{kind}.ndjson").write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("group", HL7_GROUPS, ids=lambda g: "+".join(g)[:40])
def test_real_hl7_charts_give_the_same_worklist(spark: Any, group: tuple[str, ...], tmp_path: Path) -> None:
    _hl7_export(group, tmp_path / "export")
    local, on_spark = both(tmp_path / "export", tmp_path)
    assert on_spark == local
    assert_same_verdicts(tmp_path / "export", orjson.loads(on_spark[0]))


# --------------------------------------------------------------------------- the command line


def test_the_command_line_on_spark_prints_the_same_counts_and_logs_no_patient_data(spark: Any, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    src = str(hostile_source(tmp_path / "src"))
    monkeypatch.setenv("AXIOM_SPARK_MASTER", "spark://unused:7077")  # --spark-master wins over it
    local = _cli(src, "--out", str(tmp_path / "local"), "--as-of", "2026-11-21")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = _cli(src, "--out", str(tmp_path / "spark"), "--as-of", "2026-11-21", "--engine", "spark",
                      "--spark-master", "local[2]", "-v", "--progress")
    finally:  # -v routes the root logger to this run's stderr, which CliRunner closes
        root.handlers[:], root.level = handlers, level
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == local.stdout.splitlines()[0]
    assert outputs(tmp_path / "spark") == outputs(tmp_path / "local")
    logged = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = {entry["event"]: entry for entry in logged}
    assert {"spark started", "screen gathered", "screen decided", "screen written"} <= set(events)
    assert events["screen gathered"]["candidates"] == 1
    assert "evil" not in result.stderr and "alert" not in result.stderr, "ids, names and texts never logged"
    assert "starting Spark" in result.stderr and "deciding" in result.stderr, "the steps on stderr"


def test_a_line_that_is_not_json_stops_the_spark_screen_with_one_line(spark: Any, tmp_path: Path) -> None:
    src = hostile_source(tmp_path / "src")
    with (src / "Observation.ndjson").open("wb") as fh:
        fh.write(b'{"resourceType":"Observation","id":"a","subject":{"reference":"Patient/evil"}}\n\n')
        fh.write(b'{"resourceType":"Observation","id":"b","subject":{"reference":"Patient/ev\n')
    _one_line_error(_cli(str(src), "--out", str(tmp_path / "out"), "--engine", "spark"), "Observation.ndjson",
                    "line 3", "not valid JSON")
    assert not (tmp_path / "out" / "worklist.json").exists()


def test_a_broken_line_that_names_a_candidate_stops_the_spark_screen(spark: Any, tmp_path: Path) -> None:
    """Spark parses only the lines that may concern a candidate (and every cut line): a line broken inside,
    shaped as one object, that names a candidate is parsed, and refused as locally."""
    src = hostile_source(tmp_path / "src")
    with (src / "Observation.ndjson").open("wb") as fh:
        fh.write(b'{"resourceType":"Observation","id":"a","subject":{"reference":"Patient/evil"},"value":,}\n')
    _one_line_error(_cli(str(src), "--out", str(tmp_path / "out"), "--engine", "spark"), "Observation.ndjson",
                    "line 1", "not valid JSON")
    assert not (tmp_path / "out" / "worklist.json").exists()


def test_without_pyspark_the_spark_engine_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` now raises ImportError
    monkeypatch.delitem(sys.modules, "adapter.screen.spark", raising=False)
    result = _cli(str(hostile_source(tmp_path / "src")), "--out", str(tmp_path / "out"), "--engine", "spark")
    _one_line_error(result, "--engine spark needs PySpark", "pip install 'axiom-cds[spark]'")


def test_without_java_the_spark_engine_says_so_in_one_line(tmp_path: Path) -> None:
    """A fresh process (no Spark session active) whose PATH has no java and no JAVA_HOME."""
    pytest.importorskip("pyspark", reason="PySpark is not installed: pip install 'axiom-cds[spark]'")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "PYTHONPATH")}
    env["PATH"] = str(bin_dir)
    done = subprocess.run([str(bin_dir / "axiom-cds"), "screen", str(hostile_source(tmp_path / "src")), "--out",
                           str(tmp_path / "out"), "--engine", "spark"], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("axiom-cds: error: --engine spark needs Java 17"), done.stderr
