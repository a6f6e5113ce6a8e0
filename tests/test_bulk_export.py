"""Bulk Data `$export` (adapter/bulk/export.py): against a real sekmet-fhir, and respx for what it cannot show.

sekmet-fhir runs the real flow: system and Group kick-off, 202 + X-Progress + Retry-After while the
job runs, the manifest, NDJSON files, DELETE. A counting proxy in front of it (tests/bulk_servers.py)
shows what was asked for on a resume. respx scripts the servers sekmet is not: odd Retry-After values,
URLs off the server, gzip, error files, refusals. Waits are asserted as requested (an injected sleep),
never timed.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import orjson
import pytest
import respx

from adapter.bulk import ExportCancelledError, ExportNotSupportedError, afetch_population, fetch_population
from adapter.bulk.errors import (
    DestinationError,
    ExportFailedError,
    ExportTimeoutError,
    KickoffRefusedError,
    ResponseTooLargeError,
    UnsafeUrlError,
)
from adapter.bulk.export import PollPolicy, Progress
from adapter.bulk.state import SOURCE_NAME, STATE_NAME
from adapter.engine import fhir_wanted
from adapter.errors import FhirServerError
from adapter.fhir.scopes import read_types
from adapter.fhir_sandbox import SekmetServer, running_server
from adapter.trials import load_trial
from tests import faulty_server as fault
from tests.bulk_servers import (
    BASE,
    CAPABILITY,
    FILE,
    PATIENTS,
    STATUS,
    Waits,
    bulk_proxy,
    by_patient,
    everything,
    group,
    key,
    load,
    manifest,
    medication_by_reference,
    population,
    scripted,
    verdict_from_folder,
    verdict_from_server,
)

pytestmark = pytest.mark.fhir_server
TYPES = read_types(fhir_wanted(load_trial("axiom")))
POPULATION = {**population(), "med-ref": (medication_by_reference(), True)}
GROUP_MEMBERS = sorted([*sorted(POPULATION)[3:7], "med-ref"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    with running_server(tmp_path_factory.mktemp("bulk-sekmet")) as sekmet:
        load(sekmet, [bundle for bundle, _ in POPULATION.values()])
        load(sekmet, [{"resourceType": "Bundle", "type": "collection",
                       "entry": [{"resource": group("axiom-cohort", GROUP_MEMBERS)}]}])
        yield sekmet


class CrashError(Exception):
    """Stands for the process dying (a kill, a lost connection): nothing is cleaned up."""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- the real flow


def test_export_holds_every_patients_resources_as_the_server_does(server: SekmetServer, tmp_path: Path) -> None:
    events: list[Progress] = []
    download = fetch_population(server.base_url, tmp_path / "out", progress=events.append)

    folder = tmp_path / "out"
    assert download.method == "export" and download.patients == len(POPULATION)
    resources, shared = by_patient(folder)
    assert sorted(resources) == sorted(POPULATION)
    assert [key(r) for r in shared] == [("Medication", "med-ref-drug")]  # the one the med-ref patient's order names
    for pid, exported in resources.items():
        held = everything(server, pid, set(TYPES))
        assert {key(r): r for r in exported} == held, pid  # byte-for-byte what the server holds, no more
    source = json.loads((folder / SOURCE_NAME).read_text())
    assert source["method"] == "export" and source["patients"] == len(POPULATION) and source["group"] is None
    assert source["transactionTime"] == download.transaction_time and source["resources"]["Patient"] == len(POPULATION)
    assert mode(folder) == 0o700
    assert all(mode(p) == 0o600 for p in folder.iterdir() if p.is_file())
    assert {e.phase for e in events} >= {"kickoff", "downloading", "done"}


def test_an_exported_patient_gets_the_verdict_evaluate_gives_from_the_server(server: SekmetServer,
                                                                              tmp_path: Path) -> None:
    fetch_population(server.base_url, tmp_path)
    resources, shared = by_patient(tmp_path)
    for pid in sorted(resources)[:12]:
        assert verdict_from_folder(resources[pid], shared) == verdict_from_server(server.base_url, pid), pid


def test_group_export_holds_the_members_only(server: SekmetServer, tmp_path: Path) -> None:
    download = fetch_population(server.base_url, tmp_path, group="axiom-cohort")

    resources, shared = by_patient(tmp_path)
    assert sorted(resources) == GROUP_MEMBERS
    assert download.patients == len(GROUP_MEMBERS) and download.group == "axiom-cohort"
    for pid in GROUP_MEMBERS:
        assert {key(r): r for r in resources[pid]} == everything(server, pid, set(TYPES))
    # the Group export holds no Medication; the one an order names was read by id, as evaluate would
    assert [key(r) for r in shared] == [("Medication", "med-ref-drug")]
    from_folder = verdict_from_folder(resources["med-ref"], shared)
    assert from_folder == verdict_from_server(server.base_url, "med-ref")
    assert from_folder[2]["prior-ici-progression"] == "met"


def test_an_unknown_group_is_refused_with_the_servers_reason(server: SekmetServer, tmp_path: Path) -> None:
    with pytest.raises(KickoffRefusedError, match="Group/no-such-group not found"):
        fetch_population(server.base_url, tmp_path, group="no-such-group")


def test_a_finished_download_is_not_repeated(server: SekmetServer, tmp_path: Path) -> None:
    with bulk_proxy(server.base_url).running() as proxy:
        first = fetch_population(proxy.base_url, tmp_path)
        before = proxy.by_resource()
        again = fetch_population(proxy.base_url, tmp_path)
        assert proxy.by_resource() == before  # not one more request
    assert again.resumed and again.files == first.files and again.patients == first.patients


def test_resume_after_the_kickoff_polls_on_without_a_second_kickoff(server: SekmetServer, tmp_path: Path) -> None:
    async def die(seconds: float) -> None:
        raise CrashError

    with bulk_proxy(server.base_url).running() as proxy:
        with pytest.raises(CrashError):
            asyncio.run(afetch_population(proxy.base_url, tmp_path, sleep=die))
        state = json.loads((tmp_path / STATE_NAME).read_text())
        assert state["status_url"].startswith(proxy.base_url) and state["manifest"] is None
        assert mode(tmp_path / STATE_NAME) == 0o600

        download = fetch_population(proxy.base_url, tmp_path)
        assert proxy.count("$export") == 1
    assert download.resumed and download.patients == len(POPULATION)
    resources, _ = by_patient(tmp_path)
    assert sorted(resources) == sorted(POPULATION)


def test_resume_after_one_file_downloads_only_the_others(server: SekmetServer, tmp_path: Path) -> None:
    def die_after_a_file(event: Progress) -> None:
        if event.phase == "downloading" and event.done == 1:
            raise CrashError

    with bulk_proxy(server.base_url).running() as proxy:
        with pytest.raises(CrashError):
            fetch_population(proxy.base_url, tmp_path, progress=die_after_a_file)
        done = json.loads((tmp_path / STATE_NAME).read_text())["files"]
        assert len(done) >= 1
        fetched_before = proxy.count("bulk-files")

        download = fetch_population(proxy.base_url, tmp_path)
        assert proxy.count("$export") == 1
        assert proxy.count("bulk-files") - fetched_before == len(download.files) - len(done)
    assert not list(tmp_path.glob("*.part"))
    resources, _ = by_patient(tmp_path)
    assert sorted(resources) == sorted(POPULATION)
    for pid in sorted(resources)[:5]:
        assert {key(r): r for r in resources[pid]} == everything(server, pid, set(TYPES))


def test_cancel_deletes_the_job_on_the_server(server: SekmetServer, tmp_path: Path) -> None:
    seen: dict[str, str] = {}

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None

        async def interrupt(seconds: float) -> None:  # what asyncio.run does on Ctrl-C: cancel the main task
            seen["status"] = json.loads((tmp_path / STATE_NAME).read_text())["status_url"]
            task.cancel()
            await asyncio.sleep(0)

        await afetch_population(server.base_url, tmp_path, sleep=interrupt)

    with pytest.raises(ExportCancelledError) as raised:
        asyncio.run(main())
    assert raised.value.deleted
    assert server.get(seen["status"]).status_code == 404  # the server forgot the job
    assert list(tmp_path.iterdir()) == []  # no state left to resume a deleted job from


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_cancels_a_running_export(signame: str, server: SekmetServer, tmp_path: Path) -> None:
    # the signal is the child's own, sent when it starts waiting for the job: Ctrl-C with Python's own handler
    # (a test run started in the background inherits SIGINT ignored: the export then ran to its end), or the
    # SIGTERM a scheduler or `kill` sends — either way the job is deleted on the server, not left running
    script = textwrap.dedent(f"""
        import json, os, signal, sys
        from pathlib import Path
        from adapter.bulk import fetch_population
        from adapter.bulk.errors import ExportCancelledError
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started with it ignored
        def said(event):
            if event.phase == "waiting":
                state = json.loads((Path({str(tmp_path)!r}) / {STATE_NAME!r}).read_text())
                print("waiting", state["status_url"], flush=True)
                os.kill(os.getpid(), signal.{signame})
        try:
            fetch_population({server.base_url!r}, Path({str(tmp_path)!r}), progress=said)
        except ExportCancelledError as exc:
            print(f"cancelled deleted={{exc.deleted}}", flush=True)
            sys.exit(3)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).parents[1])
    try:
        assert process.stdout is not None
        said, status_url = process.stdout.readline().split()
        assert said == "waiting"
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 3 and "cancelled deleted=True" in out
    assert server.get(status_url).status_code == 404


def test_a_redirect_off_the_server_is_not_followed(server: SekmetServer, tmp_path: Path) -> None:
    def elsewhere(h: fault.FaultyHandler) -> None:
        h.send_body(302, b"", headers={"Location": "http://127.0.0.2:9/stolen.ndjson"})

    with bulk_proxy(server.base_url, ("bulk-files", elsewhere, 1)).running() as proxy:
        with pytest.raises(UnsafeUrlError, match=r"redirected .* to http://127\.0\.0\.2:9; not followed"):
            fetch_population(proxy.base_url, tmp_path)
        assert json.loads((tmp_path / STATE_NAME).read_text())["manifest"] is not None  # a rerun can go on
        download = fetch_population(proxy.base_url, tmp_path)
    assert download.patients == len(POPULATION)


def test_a_folder_holding_another_download_is_refused(server: SekmetServer, tmp_path: Path) -> None:
    fetch_population(server.base_url, tmp_path, group="axiom-cohort")
    with pytest.raises(DestinationError, match="holds another download"):
        fetch_population(server.base_url, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "Patient.ndjson").write_text("{}\n")
    with pytest.raises(DestinationError, match="no download state"):
        fetch_population(server.base_url, other)


# --------------------------------------------------------------------------- scripted servers (respx)


async def test_retry_after_is_honoured_in_seconds_and_as_a_date_bounded_with_a_default(tmp_path: Path) -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    statuses = [httpx.Response(202, headers={"Retry-After": "7", "X-Progress": "collecting"}),
                httpx.Response(202, headers={"Retry-After": soon}),
                httpx.Response(202), httpx.Response(202),  # none: the default, growing
                httpx.Response(202, headers={"Retry-After": "86400"}),  # a day: bounded
                httpx.Response(202, headers={"Retry-After": "0"}),  # never a busy loop
                httpx.Response(200, json=manifest())]
    waits = Waits()
    with respx.mock(assert_all_called=False) as mock:
        kickoff = scripted(mock, statuses)
        download = await afetch_population(BASE, tmp_path, sleep=waits)
        sent = kickoff.calls.last.request
    assert waits.asked[0] == 7.0 and 25.0 <= waits.asked[1] <= 30.0
    assert waits.asked[2:] == [1.0, 1.5, PollPolicy().max_wait_s, PollPolicy().min_wait_s]
    assert sent.headers["prefer"] == "respond-async" and sent.headers["accept"] == "application/fhir+json"
    assert sent.url.params["_type"].split(",") == list(TYPES)
    assert download.patients == 2


async def test_the_polling_budget_ends_in_a_timeout_that_a_rerun_resumes(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(202, headers={"Retry-After": "60"})] * 3)
        with pytest.raises(ExportTimeoutError, match="rerun the same command"):
            await afetch_population(BASE, tmp_path, sleep=Waits(), policy=PollPolicy(timeout_s=100))
    assert json.loads((tmp_path / STATE_NAME).read_text())["status_url"] == STATUS


async def test_a_manifest_file_on_another_host_is_refused(tmp_path: Path) -> None:
    stolen = "https://files.elsewhere.example/job-1/Patient.ndjson"
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(200, json=manifest({"type": "Patient", "url": stolen}))])
        elsewhere = mock.get(stolen).respond(200, content=PATIENTS)
        with pytest.raises(UnsafeUrlError, match=r"a manifest file URL off the allowed server "
                                                 r"\(https://files\.elsewhere\.example\)"):
            await afetch_population(BASE, tmp_path, sleep=Waits(), token="t0ken")
    assert not elsewhere.called


async def test_a_status_url_on_another_host_is_refused(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/metadata").respond(200, json=CAPABILITY)
        mock.get(f"{BASE}/$export").respond(202, headers={"Content-Location": "https://attacker.example/status"})
        with pytest.raises(UnsafeUrlError, match="status URL off the allowed server"):
            await afetch_population(BASE, tmp_path, sleep=Waits())


async def test_a_configured_file_server_gets_the_token_only_when_the_manifest_requires_it(tmp_path: Path) -> None:
    files = "https://files.ehr.example.org/job-1/Patient.ndjson"
    for required in (True, False):
        folder = tmp_path / str(required)
        with respx.mock(assert_all_called=False) as mock:
            scripted(mock, [httpx.Response(200, json=manifest({"type": "Patient", "url": files}, token=required))],
                     {files: httpx.Response(200, content=PATIENTS)})
            download = await afetch_population(BASE, folder, sleep=Waits(), token="t0ken",
                                               allowed_file_origins=("https://files.ehr.example.org",))
            sent = mock.routes[-1].calls.last.request
            deletes = [call.request for call in mock.calls if call.request.method == "DELETE"]
        assert download.patients == 2
        assert sent.headers.get("authorization") == ("Bearer t0ken" if required else None)
        assert [d.headers.get("authorization") for d in deletes] == ["Bearer t0ken"]  # the job is the server's


async def test_a_presigned_file_url_gets_no_token_and_its_signature_is_not_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    signed = "https://files.ehr.example.org/job-1/Patient.ndjson?X-Amz-Signature=s3cr3t-signature&X-Amz-Expires=600"
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(200, json=manifest({"type": "Patient", "url": signed}, token=False))],
                 {signed: httpx.Response(200, content=PATIENTS)})
        download = await afetch_population(BASE, tmp_path, sleep=Waits(), token="t0ken",
                                           allowed_file_origins=("https://files.ehr.example.org",))
        sent = mock.routes[-1].calls.last.request
    assert download.patients == 2 and "authorization" not in sent.headers
    assert "HTTP Request" in caplog.text  # httpx did log the request line, without the query
    assert "s3cr3t-signature" not in caplog.text and "t0ken" not in caplog.text


async def test_a_gzipped_file_is_kept_gzipped_and_counted(tmp_path: Path) -> None:
    packed = httpx.Response(200, content=gzip.compress(PATIENTS), headers={"Content-Encoding": "gzip"})
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(200, json=manifest())], {FILE: packed})
        download = await afetch_population(BASE, tmp_path, sleep=Waits())
    assert [f.name for f in download.files] == ["Patient-1.ndjson.gz"]
    assert gzip.decompress((tmp_path / "Patient-1.ndjson.gz").read_bytes()) == PATIENTS
    assert download.patients == 2


async def test_error_files_are_counted_by_severity_apart_from_the_data(tmp_path: Path) -> None:
    error_url = "https://ehr.example.org/fhir/bulk-files/job-1/errors.ndjson"
    outcomes = b"".join(orjson.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": s, "code": "processing", "diagnostics": "Observation/x could not be read"}]}) + b"\n"
        for s in ("error", "error", "warning"))
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(200, json=manifest(errors=({"type": "OperationOutcome", "url": error_url},)))],
                 {FILE: httpx.Response(200, content=PATIENTS), error_url: httpx.Response(200, content=outcomes)})
        download = await afetch_population(BASE, tmp_path, sleep=Waits())
    assert download.errors == {"error": 2, "warning": 1}
    assert (tmp_path / "errors" / "OperationOutcome-1.ndjson").read_bytes() == outcomes
    assert json.loads((tmp_path / SOURCE_NAME).read_text())["errors"] == {"error": 2, "warning": 1}
    assert download.resources == {"Patient": 2}


async def test_a_refused_kickoff_says_the_servers_reason_bounded(tmp_path: Path) -> None:
    reason = "_type Observation is not permitted for this client. " + "x" * 5000
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/metadata").respond(200, json=CAPABILITY)
        mock.get(f"{BASE}/$export").respond(400, json={"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "invalid", "diagnostics": reason}]})
        with pytest.raises(KickoffRefusedError, match="refused the export \\(400\\): _type Observation") as raised:
            await afetch_population(BASE, tmp_path)
    assert isinstance(raised.value, FhirServerError) and len(str(raised.value)) < 400


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_a_server_without_export_is_told_apart(tmp_path: Path, status: int) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/metadata").respond(500)
        mock.get(f"{BASE}/$export").respond(status)
        with pytest.raises(ExportNotSupportedError, match=f"has no \\$export \\({status}\\)"):
            await afetch_population(BASE, tmp_path, use_search_fallback=False)


async def test_a_capability_statement_without_export_is_believed(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/metadata").respond(200, json={"resourceType": "CapabilityStatement", "rest": [
            {"mode": "server", "resource": [{"type": "Patient", "operation": [{"name": "everything"}]}]}]})
        kickoff = mock.get(f"{BASE}/$export").respond(202, headers={"Content-Location": STATUS})
        with pytest.raises(ExportNotSupportedError, match="declares no \\$export"):
            await afetch_population(BASE, tmp_path, use_search_fallback=False)
    assert not kickoff.called


async def test_a_failed_job_says_why(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(500, json={"resourceType": "OperationOutcome", "issue": [
            {"severity": "fatal", "code": "exception", "diagnostics": "disk full"}]})])
        with pytest.raises(ExportFailedError, match=r"failed on the server \(500\): disk full"):
            await afetch_population(BASE, tmp_path, sleep=Waits())


async def test_a_huge_manifest_is_refused_while_reading(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(200, content=b'{"output": [' + b" " * (17 * 1024 * 1024) + b"]}")])
        with pytest.raises(ResponseTooLargeError):
            await afetch_population(BASE, tmp_path, sleep=Waits())


async def test_x_progress_is_logged_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="axiom_cds.bulk")
    with respx.mock(assert_all_called=False) as mock:
        scripted(mock, [httpx.Response(202, headers={"X-Progress": "p" * 5000}), httpx.Response(200, json=manifest())])
        await afetch_population(BASE, tmp_path, sleep=Waits())
    noted = [r.progress for r in caplog.records if hasattr(r, "progress")]
    assert noted and all(0 < len(p) <= 100 for p in noted)


async def test_a_job_the_server_forgot_is_kicked_off_again(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        kickoff = scripted(mock, [httpx.Response(202), httpx.Response(404), httpx.Response(200, json=manifest())])

        async def die_once(seconds: float) -> None:
            if not (tmp_path / "died").exists():
                (tmp_path / "died").touch()
                raise CrashError

        with pytest.raises(CrashError):
            await afetch_population(BASE, tmp_path / "out", sleep=die_once)
        download = await afetch_population(BASE, tmp_path / "out", sleep=Waits())
    assert kickoff.call_count == 2 and download.patients == 2


def test_file_modes_hold_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with respx.mock(assert_all_called=False) as mock:
            scripted(mock, [httpx.Response(200, json=manifest())])
            fetch_population(BASE, tmp_path / "out")
    finally:
        os.umask(old)
    assert all(mode(p) == 0o600 for p in (tmp_path / "out").iterdir())
