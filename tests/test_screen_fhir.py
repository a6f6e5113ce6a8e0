"""`axiom-cds screen --fhir-server`: a FHIR server's population, downloaded then screened, gets for every
patient the verdict `evaluate --fhir-server` gives that patient (one engine, two ways in)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.cli import app
from adapter.fhir_sandbox import SekmetServer, running_server
from tests.bulk_servers import AS_OF, load, population, verdict_from_server

pytestmark = pytest.mark.fhir_server
POPULATION = population()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    with running_server(tmp_path_factory.mktemp("screen-sekmet")) as sekmet:
        load(sekmet, [bundle for bundle, _ in POPULATION.values()])
        yield sekmet


def screen(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["screen", *args, "--as-of", AS_OF.isoformat()])
    return result.exit_code, result.output


def test_every_patient_of_the_server_gets_evaluates_verdict(server: SekmetServer, tmp_path: Path) -> None:
    code, output = screen("--fhir-server", server.base_url, "--out", str(tmp_path))
    assert code == 0, output
    worklist = json.loads((tmp_path / "worklist.json").read_text())
    assert worklist["screened"] == len(POPULATION), "every Patient the export holds is counted"
    listed = {row["patient"].removeprefix("Patient/"): row for row in worklist["patients"]}
    for pid in sorted(POPULATION):
        overall, cohort, statuses = verdict_from_server(server.base_url, pid)
        if overall == "not-applicable":
            assert pid not in listed, f"{pid}: no cohort diagnosis, not on the worklist"
            continue
        row = listed[pid]
        assert (row["overall"], row["cohort"], row["statuses"]) == (overall, cohort, statuses), pid
    # rerun: the finished download is not repeated, the worklist is the same
    first = (tmp_path / "worklist.json").read_bytes()
    code, output = screen("--fhir-server", server.base_url, "--out", str(tmp_path))
    assert code == 0, output
    assert (tmp_path / "worklist.json").read_bytes() == first


def test_a_folder_and_a_server_together_or_neither_is_one_line_exit_2(server: SekmetServer, tmp_path: Path) -> None:
    for args in ([str(tmp_path), "--fhir-server", server.base_url], []):
        code, output = screen(*args, "--out", str(tmp_path / "out"))
        assert code == 2 and "one of them" in output and "Traceback" not in output, output


def test_an_unreachable_server_is_one_line_exit_2(tmp_path: Path) -> None:
    code, output = screen("--fhir-server", "http://127.0.0.1:9/fhir", "--out", str(tmp_path))
    assert code == 2 and len(output.strip().splitlines()) == 1 and "Traceback" not in output, output
