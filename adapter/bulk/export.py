"""FHIR Bulk Data Access (v2) `$export` client: kick-off, polling, manifest, streamed downloads, resume, cancel.

1. Kick-off: `GET [base]/$export` (or `Group/[id]/$export`, `Patient/$export`) with
   `Accept: application/fhir+json`, `Prefer: respond-async` and `_type` limited to what the trial
   reads; the answer is 202 with the status URL in Content-Location. A server whose
   CapabilityStatement declares no export operation, or that answers 404/405/501, raises
   ExportNotSupportedError (the caller falls back to FHIR search).
2. Polling: 202 while running, waited for by the server's Retry-After (seconds or HTTP date, bounded
   by `PollPolicy`), by a growing default when it sends none; X-Progress is logged, bounded.
3. Manifest (200): every output and error file URL must be on the allowed server (http.py); each
   file is streamed to `NAME.part` and renamed when whole; `requiresAccessToken: false` files get no
   token. Error files (OperationOutcome NDJSON) go to `errors/` and are counted by severity.
   Medications the files reference but do not hold (Group exports) are read by id (references.py).
4. Resume: the state file (state.py) holds the status URL, the manifest and the finished files, so a
   rerun after an interruption polls or downloads on instead of kicking off again; a completed
   download is returned as it is. A job the server has forgotten (404/410) is kicked off anew.
5. Cancel: a cancellation (Ctrl-C under asyncio.run) DELETEs the status URL, removes what was
   written, and raises ExportCancelledError. After a complete download the job is DELETEd too (the spec's
   signal that the server may drop the files).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from yarl import URL

from ..fhir.client import retry_after_seconds
from ..fhir.urls import shown
from .errors import (
    BulkError,
    DestinationError,
    ExportCancelledError,
    ExportFailedError,
    ExportNotSupportedError,
    ExportTimeoutError,
    KickoffRefusedError,
    bounded,
)
from .http import SafeHttp, diagnostics
from .references import fetch_medications, missing_medications
from .state import SOURCE_NAME, STATE_NAME, ExportState, FileRecord, clear_state, load_state

log = logging.getLogger("axiom_cds.bulk")

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
ERRORS_DIR = "errors"
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
MAX_FILES = 100_000  # entries of one manifest
MAX_PROGRESS_CHARS = 100
PARALLEL_DOWNLOADS = 3
DELETE_TIMEOUT_S = 10.0
NOT_SUPPORTED = (404, 405, 501)
GONE = (404, 410)
REFERENCED = "referenced:Medication"  # the state's key for the Medications read by id
EXPORT_OPERATIONS = frozenset({"export", "group-export", "patient-export", "$export"})


@dataclass(frozen=True)
class Progress:
    """What the run is doing, for a progress bar: `phase` kickoff | waiting | downloading | searching |
    fetching | done; `done` of `total` (files, patients) where that is known; `message` bounded."""

    phase: str
    message: str = ""
    done: int = 0
    total: int | None = None


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class ExportRequest:
    """What to export: `group` (Group/[id]/$export), else every patient (`patient_level`: Patient/$export)
    or the whole system ($export); `types` for `_type`; `since` (FHIR instant) for `_since`."""

    types: tuple[str, ...]
    group: str | None = None
    since: str | None = None
    patient_level: bool = False

    @property
    def path(self) -> str:
        if self.group is not None:
            return f"Group/{self.group}/$export"
        return "Patient/$export" if self.patient_level else "$export"

    @property
    def params(self) -> dict[str, str]:
        params = {"_type": ",".join(self.types)} if self.types else {}
        if self.since:
            params["_since"] = self.since
        return params

    def url(self, base_url: str) -> str:
        return str(URL(f"{base_url.rstrip('/')}/{self.path}").with_query(self.params))


@dataclass(frozen=True)
class PollPolicy:
    """How long to wait between status requests and in all. A Retry-After is honoured within
    [`min_wait_s`, `max_wait_s`]; without one the wait starts at `default_wait_s` and grows by `backoff`
    up to `max_default_wait_s`. `timeout_s` bounds the total wait (then ExportTimeoutError; a rerun resumes)."""

    default_wait_s: float = 1.0
    backoff: float = 1.5
    max_default_wait_s: float = 60.0
    min_wait_s: float = 0.5
    max_wait_s: float = 600.0
    timeout_s: float = 12 * 3600.0


@dataclass
class ExportResult:
    """A complete export on disk. `errors`: OperationOutcome issues by severity, from the error files."""

    manifest: dict[str, Any]
    files: list[FileRecord]
    resumed: bool
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def transaction_time(self) -> str | None:
        value = self.manifest.get("transactionTime")
        return value if isinstance(value, str) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _report(progress: ProgressFn | None, event: Progress) -> None:
    if progress is not None:
        progress(event)


def declares_export(capability: Any) -> bool | None:
    """Whether a CapabilityStatement declares an export operation (system, Patient or Group level), or
    instantiates the Bulk Data IG; None when `capability` is not a CapabilityStatement."""
    if not isinstance(capability, dict) or capability.get("resourceType") != "CapabilityStatement":
        return None
    instantiates = capability.get("instantiates")
    if isinstance(instantiates, list) and any(isinstance(u, str) and "bulk-data" in u for u in instantiates):
        return True
    for rest in capability.get("rest") or ():
        if not isinstance(rest, dict):
            continue
        holders = [rest, *(r for r in rest.get("resource") or () if isinstance(r, dict))]
        for holder in holders:
            for op in holder.get("operation") or ():
                if not isinstance(op, dict):
                    continue
                name = str(op.get("name", "")).lower()
                definition = str(op.get("definition", "")).rstrip("/").rsplit("/", 1)[-1].lower()
                if name in EXPORT_OPERATIONS or definition in EXPORT_OPERATIONS or definition.endswith("-export"):
                    return True
    return False


class Exporter:
    """One `$export` of one server into one folder (see the module docstring)."""

    def __init__(self, http: SafeHttp, base_url: str, dest: Path, request: ExportRequest, *,
                 policy: PollPolicy | None = None, progress: ProgressFn | None = None,
                 parallel: int = PARALLEL_DOWNLOADS) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.dest = dest
        self.request = request
        self.policy = policy or PollPolicy()
        self.progress = progress
        self.parallel = max(1, parallel)
        self.kickoffs = 0  # kick-off requests sent by this run (the tests count them)
        self.state = ExportState(server=self.base_url, request=request.url(self.base_url))
        self._declared: bool | None = None

    # ------------------------------------------------------------------ the whole run

    async def run(self) -> ExportResult:
        started = time.perf_counter()
        resumed = self._resume()
        if self.state.complete and self.state.manifest is not None:
            return self._result(resumed, started)
        try:
            if self.state.manifest is None:
                if self.state.status_url is None:
                    await self._kickoff()
                manifest = await self._poll()
                if manifest is None:  # the server forgot the job (expired, restarted): ask again
                    log.warning("bulk export job gone; kicking off again", extra={"fhir_server": shown(self.base_url)})
                    self.state.status_url = None
                    await self._kickoff()
                    manifest = await self._poll()
                    if manifest is None:
                        raise ExportFailedError("the server lost the export job just after accepting it")
                self.state.manifest = manifest
                self.state.save(self.dest)
            await self._download_all()
            await self._referenced_medications()
            self.state.complete = True
            self.state.save(self.dest)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the cancel is handled here: the DELETE below must be sent
            deleted = await self._cancel()
            said = "; the server was asked to delete the job" if deleted else \
                " (the server did not confirm deleting the job)"
            raise ExportCancelledError(f"export cancelled{said}", deleted) from None
        await self._clean_up_server()
        return self._result(resumed, started)

    def _result(self, resumed: bool, started: float) -> ExportResult:
        assert self.state.manifest is not None
        files = sorted(self.state.files.values(), key=lambda f: f.name)
        return ExportResult(self.state.manifest, files, resumed, self._error_counts(files),
                            time.perf_counter() - started)

    def _resume(self) -> bool:
        """Take over the state an earlier run left; refuse a folder holding something else."""
        found = load_state(self.dest)
        if found is None:
            strays = [p.name for p in self.dest.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz"))
                      or p.name in (SOURCE_NAME, ERRORS_DIR)]
            if strays:
                raise DestinationError(f"{self.dest} already holds {strays[0]} but no download state: choose an "
                                       "empty folder")
            return False
        if found.method != "export" or found.server != self.state.server or found.request != self.state.request:
            raise DestinationError(f"{self.dest} holds another download ({found.method} from {shown(found.server)}); "
                                   f"choose another folder, or remove {STATE_NAME} and its files")
        self.state = found
        log.info("bulk export resumed", extra={"fhir_server": shown(self.base_url), "files_done": len(found.files),
                                               "complete": found.complete})
        return True

    # ------------------------------------------------------------------ kick-off

    async def _capability(self) -> bool | None:
        """Whether the server declares $export (None: no readable CapabilityStatement)."""
        try:
            answer = await self.http.json("GET", f"{self.base_url}/metadata", "CapabilityStatement",
                                          headers={"Accept": FHIR_JSON})
        except BulkError as exc:
            log.info("CapabilityStatement not read", extra={"fhir_server": shown(self.base_url),
                                                            "reason": type(exc).__name__})
            return None
        if answer.status != 200:
            return None
        try:
            return declares_export(orjson.loads(answer.body))
        except orjson.JSONDecodeError:
            return None

    async def _kickoff(self) -> None:
        _report(self.progress, Progress("kickoff", f"asking {shown(self.base_url)} for an export"))
        if self._declared is None:
            self._declared = await self._capability()
        if self._declared is False:
            raise ExportNotSupportedError(f"{shown(self.base_url)} declares no $export operation in its "
                                     "CapabilityStatement")
        self.kickoffs += 1
        answer = await self.http.json("GET", f"{self.base_url}/{self.request.path}", "kick-off",
                                      headers={"Accept": FHIR_JSON, "Prefer": "respond-async"},
                                      params=self.request.params)
        said = diagnostics(answer.body)
        because = f": {said}" if said else ""
        if answer.status in NOT_SUPPORTED and not (answer.status == 404 and self._declared):
            raise ExportNotSupportedError(f"{shown(self.base_url)} has no {self.request.path} "
                                          f"({answer.status}){because}")
        if answer.status in (401, 403):
            raise KickoffRefusedError(f"the server refused access to {self.request.path} ({answer.status})"
                                      f"{because}; check the client's registration and scopes")
        if 400 <= answer.status < 500:
            raise KickoffRefusedError(f"the server refused the export ({answer.status}){because}")
        if answer.status != 202:
            raise ExportFailedError(f"the server answered the kick-off with {answer.status}, not 202 Accepted{because}")
        location = answer.headers.get("content-location")
        if not location:
            raise ExportFailedError("the server accepted the export but sent no Content-Location to poll")
        status_url = str(URL(answer.url).join(URL(location)))
        self.http.allowed.check(status_url, "the export's status URL")
        self.state.status_url, self.state.kicked_off = status_url, _now()
        self.state.save(self.dest)
        log.info("bulk export kicked off", extra={"fhir_server": shown(self.base_url), "level": self.request.path,
                                                  "types": len(self.request.types)})

    # ------------------------------------------------------------------ polling

    def _wait(self, header: str | None, default: float) -> float:
        asked = retry_after_seconds(header)
        if asked is None:
            return default
        return min(self.policy.max_wait_s, max(self.policy.min_wait_s, asked))

    async def _poll(self) -> dict[str, Any] | None:
        """The manifest once the job completes; None when the server no longer knows the job."""
        assert self.state.status_url is not None
        waited = 0.0
        default = self.policy.default_wait_s
        while True:
            answer = await self.http.json("GET", self.state.status_url, "export status",
                                          headers={"Accept": "application/json"})
            if answer.status == 200:
                return self._manifest(answer.json("manifest"))
            if answer.status in GONE:
                return None
            said = diagnostics(answer.body)
            if answer.status != 202:
                raise ExportFailedError(f"the export failed on the server ({answer.status})"
                                        + (f": {said}" if said else ""))
            note = bounded(answer.headers.get("x-progress", ""), MAX_PROGRESS_CHARS)
            wait = self._wait(answer.headers.get("retry-after"), default)
            if answer.headers.get("retry-after") is None:
                default = min(self.policy.max_default_wait_s, default * self.policy.backoff)
            if waited + wait > self.policy.timeout_s:
                raise ExportTimeoutError(f"the export was not complete after {waited:.0f} s of waiting; rerun the "
                                         "same command to keep waiting (the status URL is kept)")
            log.info("bulk export in progress", extra={"progress": note, "retry_in_s": round(wait, 3)})
            _report(self.progress, Progress("waiting", note))
            await self.http.sleep(wait)
            waited += wait

    def _manifest(self, doc: Any) -> dict[str, Any]:
        """The manifest, checked: its lists, types and counts usable, every URL on the allowed server."""
        if not isinstance(doc, dict):
            raise ExportFailedError("the export's manifest is not a JSON object")
        if not isinstance(doc.get("output", []), list) or not isinstance(doc.get("error", []), list):
            raise ExportFailedError("the export's manifest has no output/error lists")
        entries = [*(doc.get("output") or ()), *(doc.get("error") or ())]
        if len(entries) > MAX_FILES:
            raise ExportFailedError(f"the export's manifest lists more than {MAX_FILES} files; refused")
        for item in entries:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str) \
                    or not RESOURCE_TYPE.fullmatch(str(item.get("type", ""))):
                raise ExportFailedError("the export's manifest has a file without a usable type and url")
            self.http.allowed.check(item["url"], "a manifest file URL")
        if doc.get("requiresAccessToken") is not True and doc.get("requiresAccessToken") is not False:
            raise ExportFailedError("the export's manifest does not say whether its files require the access token")
        return doc

    # ------------------------------------------------------------------ downloads

    def _names(self, manifest: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
        """(url, type, file name, is error) for every file, named `Type-N.ndjson` in manifest order."""
        seen: Counter[tuple[str, str]] = Counter()
        out = []
        for key, error in (("output", False), ("error", True)):
            for item in manifest.get(key) or ():
                kind = str(item["type"])
                seen[(key, kind)] += 1
                name = f"{kind}-{seen[(key, kind)]}.ndjson"
                name = f"{ERRORS_DIR}/{name}" if error else name
                out.append((str(item["url"]), kind, name, error))
        return out

    async def _download_all(self) -> None:
        manifest = self.state.manifest
        assert manifest is not None
        todo = [f for f in self._names(manifest) if f[0] not in self.state.files]
        total = len(self._names(manifest))
        _report(self.progress, Progress("downloading", f"{len(todo)} files to download", total - len(todo), total))
        if any(f[3] for f in todo):
            (self.dest / ERRORS_DIR).mkdir(mode=0o700, exist_ok=True)
        queue: asyncio.Queue[tuple[str, str, str, bool]] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                url, kind, name, error = queue.get_nowait()
                record = await self._download(url, kind, name, error)
                self.state.files[url] = record
                self.state.save(self.dest)
                _report(self.progress, Progress("downloading", f"{record.name}: {record.resources} resources",
                                                len(self.state.files), total))

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.parallel, len(todo)))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise

    async def _download(self, url: str, kind: str, name: str, error: bool) -> FileRecord:
        path = self.dest / name
        part = path.with_name(path.name + ".part")
        requires = self.state.manifest is not None and self.state.manifest.get("requiresAccessToken") is True
        answer = await self.http.download(url, part, f"the export file {name}", headers={"Accept": NDJSON},
                                          with_token=requires)
        if answer.status != 200:
            part.unlink(missing_ok=True)
            said = diagnostics(answer.body)
            raise ExportFailedError(f"the server answered {answer.status} for the export file {name}"
                                    + (f": {said}" if said else "") + "; rerun the same command to try again")
        gz = _is_gzip(part)
        if gz:
            path = path.with_name(path.name + ".gz")
        lines = _count_lines(part, gz)
        size = part.stat().st_size
        os.replace(part, path)
        log.info("bulk file downloaded", extra={"type": kind, "bytes": size, "resources": lines, "error_file": error})
        return FileRecord(str(path.relative_to(self.dest)), kind, size, lines, error)

    async def _referenced_medications(self) -> None:
        """Medications the files reference but do not hold (references.py), read once."""
        if REFERENCED in self.state.files:
            return
        ids = missing_medications(self.dest, list(self.state.files.values()), self.base_url)
        if ids:
            log.info("referenced Medications read by id", extra={"medications": len(ids)})
            self.state.files[REFERENCED] = await fetch_medications(self.http, self.base_url, self.dest, ids)
            self.state.save(self.dest)

    def _error_counts(self, files: list[FileRecord]) -> Counter[str]:
        """OperationOutcome issues of the error files, by severity (the diagnostics are not repeated)."""
        counts: Counter[str] = Counter()
        for record in files:
            if not record.error:
                continue
            with _open_lines(self.dest / record.name, record.name.endswith(".gz")) as lines:
                for line in lines:
                    try:
                        outcome = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        counts["unreadable"] += 1
                        continue
                    issues = outcome.get("issue") if isinstance(outcome, dict) else None
                    for issue in issues if isinstance(issues, list) else [None]:
                        severity = issue.get("severity") if isinstance(issue, dict) else None
                        counts[str(severity) if severity in ("fatal", "error", "warning", "information")
                               else "unknown"] += 1
        return counts

    # ------------------------------------------------------------------ cancel and clean-up

    async def _delete_job(self) -> bool:
        if self.state.status_url is None:
            return False
        try:
            answer = await asyncio.wait_for(self.http.json("DELETE", self.state.status_url, "export cancel"),
                                            DELETE_TIMEOUT_S)
        except (BulkError, TimeoutError):
            return False
        return 200 <= answer.status < 300

    async def _cancel(self) -> bool:
        deleted = await self._delete_job()
        for record in self.state.files.values():
            (self.dest / record.name).unlink(missing_ok=True)
        for part in [*self.dest.glob("*.part"), *self.dest.glob(f"{ERRORS_DIR}/*.part")]:
            part.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.dest / ERRORS_DIR).rmdir()
        clear_state(self.dest)
        log.info("bulk export cancelled", extra={"fhir_server": shown(self.base_url), "deleted": deleted})
        return deleted

    async def _clean_up_server(self) -> None:
        """Tell the server the files may go (DELETE the job), once; a failure only means it keeps them."""
        if self.state.cleaned_up or self.state.status_url is None:
            return
        self.state.cleaned_up = await self._delete_job()
        self.state.save(self.dest)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


@contextlib.contextmanager
def _open_lines(path: Path, gz: bool) -> Iterator[Iterator[bytes]]:
    with (gzip.open(path, "rb") if gz else path.open("rb")) as fh:
        yield (line for line in fh if line.strip())


def _count_lines(path: Path, gz: bool) -> int:
    """Lines (NDJSON resources) in the file, read in chunks; a gzipped file is decompressed on the fly."""
    count = 0
    last = b"\n"
    inflate = zlib.decompressobj(wbits=47) if gz else None  # 47: a gzip or zlib header, detected
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            data = inflate.decompress(chunk) if inflate is not None else chunk
            if data:
                count += data.count(b"\n")
                last = data[-1:]
    return count + (0 if last == b"\n" else 1)
