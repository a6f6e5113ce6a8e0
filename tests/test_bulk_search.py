"""The search fallback (adapter/bulk/search.py): a server without `$export`, searched for the trial's patients.

The server is sekmet-fhir behind a proxy that takes the export operation out of its CapabilityStatement
(or answers the kick-off 404): a real server without `$export`, whose searches, paging and reads are
real. The population mixes sarcoma patients (ASPS and other soft tissue sarcomas, coded in ICD-O-3,
ICD-10-CM with an mCODE histology, or SNOMED CT) with patients who have none.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.bulk import ExportNotSupportedError, fetch_population
from adapter.bulk.errors import SearchFailedError
from adapter.bulk.search import search_plan
from adapter.bulk.state import SOURCE_NAME, STATE_NAME
from adapter.fhir_sandbox import SekmetServer, running_server
from adapter.synth import fhir
from adapter.tables import conditions
from adapter.trials import load_trial
from tests import faulty_server as fault
from tests.bulk_servers import (
    FIXTURES,
    bulk_proxy,
    by_patient,
    group,
    load,
    population,
    verdict_from_folder,
    verdict_from_server,
    without_export,
)

pytestmark = pytest.mark.fhir_server
POPULATION = population()
SARCOMA = sorted(pid for pid, (_, sarcoma) in POPULATION.items() if sarcoma)
# An ASPS recorded only as the mCODE histology of a Condition coded "malignant neoplastic disease":
# no code search can find it; reading every Condition (scan_all) does.
HISTOLOGY_ONLY = fhir.bundle([fhir.patient("hist-only", "1990-03-04"),
                              fhir.condition("hist-only-c1", "Patient/hist-only", fhir.SNOMED, "363346000",
                                             "Malignant neoplastic disease", histology=("9581/3", "ASPS"))])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    with running_server(tmp_path_factory.mktemp("search-sekmet")) as sekmet:
        load(sekmet, [*(bundle for bundle, _ in POPULATION.values()), HISTOLOGY_ONLY])
        members = [SARCOMA[0], SARCOMA[1], next(p for p, (_, s) in POPULATION.items() if not s)]
        load(sekmet, [fhir.bundle([group("mixed", members)])])
        yield sekmet


def no_export(server: SekmetServer) -> fault.FaultyFhirServer:
    """sekmet-fhir as a server without $export: its CapabilityStatement declares none."""
    return bulk_proxy(server.base_url, ("metadata", without_export, None))


def test_without_export_the_search_finds_exactly_the_sarcoma_patients(server: SekmetServer, tmp_path: Path) -> None:
    with no_export(server).running() as proxy:
        download = fetch_population(proxy.base_url, tmp_path)
        assert proxy.count("$export") == 0  # the CapabilityStatement said so: no kick-off tried

    resources, _ = by_patient(tmp_path)
    assert sorted(resources) == SARCOMA
    assert download.method == "search" and download.patients == len(SARCOMA)
    assert "declares no $export" in (download.fallback_reason or "")
    source = json.loads((tmp_path / SOURCE_NAME).read_text())
    assert source["method"] == "search" and source["patients"] == len(SARCOMA)
    assert "'screened' counts only these" in source["note"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.iterdir() if p.is_file())


def test_a_searched_patient_gets_the_verdict_evaluate_gives_from_the_server(server: SekmetServer,
                                                                             tmp_path: Path) -> None:
    with no_export(server).running() as proxy:
        fetch_population(proxy.base_url, tmp_path)
    resources, shared = by_patient(tmp_path)
    verdicts = {pid: verdict_from_folder(resources[pid], shared) for pid in SARCOMA}
    for pid in SARCOMA:
        assert verdicts[pid] == verdict_from_server(server.base_url, pid), pid
    assert len({v[0] for v in verdicts.values()}) >= 3  # a mix of verdicts, not one answer for all


def test_a_kickoff_answered_404_falls_back_as_well(server: SekmetServer, tmp_path: Path) -> None:
    proxy = bulk_proxy(server.base_url, ("metadata", fault.status(500), None), ("$export", fault.status(404), None))
    with proxy.running():
        download = fetch_population(proxy.base_url, tmp_path)
    assert download.method == "search" and download.patients == len(SARCOMA)
    assert "(404)" in (download.fallback_reason or "")


def test_without_the_fallback_the_caller_is_told(server: SekmetServer, tmp_path: Path) -> None:
    with no_export(server).running() as proxy, pytest.raises(ExportNotSupportedError):
        fetch_population(proxy.base_url, tmp_path, use_search_fallback=False)
    assert list(tmp_path.iterdir()) == []


def test_a_group_is_fetched_member_by_member(server: SekmetServer, tmp_path: Path) -> None:
    with no_export(server).running() as proxy:
        download = fetch_population(proxy.base_url, tmp_path, group="mixed")
    resources, _ = by_patient(tmp_path)
    assert len(resources) == 3 == download.patients  # every member, with a sarcoma or not
    assert "Group's members" in json.loads((tmp_path / SOURCE_NAME).read_text())["note"]


def test_reading_every_condition_also_finds_a_histology_only_diagnosis(server: SekmetServer, tmp_path: Path) -> None:
    with no_export(server).running() as proxy:
        download = fetch_population(proxy.base_url, tmp_path, scan_all=True)
    resources, _ = by_patient(tmp_path)
    assert sorted(resources) == sorted([*SARCOMA, "hist-only"]) and download.patients == len(SARCOMA) + 1


def test_a_failed_fetch_leaves_no_partial_population_and_the_rerun_goes_on_where_it_stopped(
        server: SekmetServer, tmp_path: Path) -> None:
    """The server fails after the first batch of patients: no finished NDJSON is left (a population with a
    patient missing would give a wrong `screened`), the written batch is kept; the same command, once the
    server is well, fetches only the patients not yet written — and the folder is the one an uninterrupted
    run writes, byte for byte."""
    import itertools

    from adapter.bulk.search import PARALLEL_PATIENTS

    calls = itertools.count()

    def fail_after_one_batch(h: fault.FaultyHandler) -> None:  # one MedicationStatement search a patient
        if next(calls) < PARALLEL_PATIENTS:
            h.forward()
        else:
            fault.status(500)(h)

    proxy = no_export(server)
    proxy.script("MedicationStatement", fail_after_one_batch)
    with proxy.running():
        with pytest.raises(SearchFailedError, match=r"answered 500.*rerun the same command"):
            fetch_population(proxy.base_url, tmp_path)
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".ndjson")]
        state = json.loads((tmp_path / STATE_NAME).read_text())
        assert state["complete"] is False and state["search"]["done"] == PARALLEL_PATIENTS
        assert "ids" not in state["search"]  # the patients found are kept apart, written once
        proxy.heal()
        proxy.script("metadata", without_export)
        before = proxy.count("Patient")
        download = fetch_population(proxy.base_url, tmp_path)  # the same command, once the server is well
        assert proxy.count("Patient") - before == len(SARCOMA) - PARALLEL_PATIENTS  # the rest only
    assert download.patients == len(SARCOMA)
    with no_export(server).running() as whole:
        fetch_population(whole.base_url, tmp_path / "whole")
    for name in sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".ndjson")):
        assert (tmp_path / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not list(tmp_path.glob("*.part"))


def test_a_crash_mid_batch_resumes_from_the_last_whole_batch(server: SekmetServer, tmp_path: Path) -> None:
    """Killed while a batch was being written (the part files hold more than the checkpoint says): the
    rerun cuts them back and writes that batch again — each resource once."""
    with no_export(server).running() as proxy:
        def crash_at_second_batch(event: Any) -> None:
            if event.phase == "fetching" and event.done == PARALLEL_PATIENTS:
                for part in tmp_path.glob("*.part"):  # a half-written next batch
                    with part.open("ab") as fh:
                        fh.write(b'{"resourceType":"Observation","id":"half-writ')
                raise CrashError

        from adapter.bulk.search import PARALLEL_PATIENTS

        class CrashError(Exception):
            pass

        with pytest.raises(CrashError):
            fetch_population(proxy.base_url, tmp_path, progress=crash_at_second_batch)
        assert list(tmp_path.glob("*.part")), "a crash leaves the written batch for the rerun"
        download = fetch_population(proxy.base_url, tmp_path)
    assert download.patients == len(SARCOMA)
    resources, _ = by_patient(tmp_path)
    assert sorted(resources) == SARCOMA
    keys = [(r["resourceType"], r["id"]) for rs in resources.values() for r in rs]
    assert len(keys) == len(set(keys))


def test_a_finished_search_is_not_repeated(server: SekmetServer, tmp_path: Path) -> None:
    with no_export(server).running() as proxy:
        fetch_population(proxy.base_url, tmp_path)
        before = proxy.count()
        again = fetch_population(proxy.base_url, tmp_path)
        assert proxy.count() == before
    assert again.resumed and again.method == "search" and again.patients == len(SARCOMA)


def test_the_search_codes_come_from_the_trial_and_the_condition_tables() -> None:
    table = conditions()
    axiom, other = search_plan(load_trial("axiom")), search_plan(load_trial(str(FIXTURES / "trials" /
                                                                                "other-trial.yaml")))
    icdo3 = table.systems["icdo3"]
    assert f"{icdo3}|9581/3" in axiom.tokens and f"{icdo3}|9581/6" in axiom.tokens
    assert f"{table.systems['snomed']}|424413001" in axiom.tokens
    assert axiom.scanned_systems == (table.systems["icd10cm"],)  # C49, C46, C40, C41 are prefixes
    # the other trial's cohorts name no sarcoma of bone: its morphologies are not searched for
    assert f"{icdo3}|9180/3" in axiom.tokens and f"{icdo3}|9180/3" not in other.tokens
    assert all(len(params["code"]) <= 4000 for params in axiom.requests() if "code" in params)


def test_a_crash_while_the_files_are_renamed_into_place_fetches_nobody_again(
        server: SekmetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the part files were renamed to their final names, before the state said complete: the
    rerun takes them back as they are and fetches no patient again (a reviewer's case)."""
    from adapter.bulk.search import NdjsonWriter

    class CrashError(Exception):
        pass

    real_close = NdjsonWriter.close

    def close_then_crash(self: NdjsonWriter) -> Any:
        real_close(self)
        raise CrashError

    with no_export(server).running() as proxy:
        monkeypatch.setattr(NdjsonWriter, "close", close_then_crash)
        with pytest.raises(CrashError):
            fetch_population(proxy.base_url, tmp_path)
        monkeypatch.setattr(NdjsonWriter, "close", real_close)
        before = proxy.count("Patient")
        download = fetch_population(proxy.base_url, tmp_path)
        assert proxy.count("Patient") == before
    assert download.patients == len(SARCOMA)
    resources, _ = by_patient(tmp_path)
    assert sorted(resources) == SARCOMA
