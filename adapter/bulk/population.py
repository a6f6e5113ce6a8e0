"""`fetch_population`: a FHIR server's population (or one Group) as a folder of NDJSON for `screen`.

Bulk Data `$export` when the server offers it (export.py), FHIR search otherwise (search.py); either
way the folder ends up with `*.ndjson` files (`*.ndjson.gz` when the server gzips), `errors/` for the
export's OperationOutcome files, and `source.json` (0600) saying how it was produced — method, server,
group, transaction time, counts — so that the screen can say what `screened` means. The resource types
asked for are the ones the trial's FHIR searches read (adapter/fhir/scopes.py read_types).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from ..engine import fhir_wanted
from ..errors import InputError
from ..fhir.scopes import read_types
from ..fhir.urls import base_url_problem, shown
from ..fhir.wanted import Wanted
from ..fhir.wire import FHIR_ID
from ..trials import Trial, load_trial
from .auth import BackendServicesAuth, BackendServicesConfig
from .errors import DestinationError, ExportNotSupportedError
from .export import ERRORS_DIR, Exporter, ExportRequest, PollPolicy, Progress, ProgressFn
from .http import AllowedServer, SafeHttp, Sleep, TokenSource, origin_of
from .search import SearchProgress, search_population
from .state import SOURCE_NAME, ExportState, FileRecord, load_state, prepare, write_private

log = logging.getLogger("axiom_cds.bulk")

CONNECT_TIMEOUT_S = 15.0
SEARCH_NOTE = ("found by a FHIR search for the trial's diagnosis codes (the server has no $export): patients "
               "without such a code were not fetched, so 'screened' counts only these")
GROUP_SEARCH_NOTE = "the Group's members, fetched one by one by FHIR search (the server has no $export)"


@dataclass(frozen=True)
class PopulationDownload:
    """What `fetch_population` put in `directory`.

    `method`: export or search. `patients`: Patient resources written (search: the patients found).
    `resources`: per type, data files only. `errors`: OperationOutcome issues of the export's error
    files by severity. `resumed`: an earlier interrupted run was continued (or was already complete).
    `fallback_reason`: why search was used. `transaction_time`: the export's (search: when it ran).
    """

    directory: Path
    method: Literal["export", "search"]
    server: str  # the base URL as shown (no secrets)
    group: str | None
    transaction_time: str | None
    files: tuple[FileRecord, ...]
    resources: dict[str, int]
    patients: int
    errors: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    seconds: float = 0.0
    fallback_reason: str | None = None

    def source(self) -> dict[str, Any]:
        """The content of source.json."""
        note = None if self.method == "export" else (GROUP_SEARCH_NOTE if self.group else SEARCH_NOTE)
        return {"method": self.method, "server": self.server, "group": self.group,
                "transactionTime": self.transaction_time, "patients": self.patients,
                "resources": dict(sorted(self.resources.items())), "files": len(self.files),
                "errors": dict(sorted(self.errors.items())), "note": note, "fallbackReason": self.fallback_reason}


class StaticToken:
    """A bearer token given as is (`--token`), for servers that issue them out of band."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    def invalidate(self) -> None:
        pass  # nothing to refresh: a 401 stays a 401


def _check_arguments(base_url: str, group: str | None, file_origins: tuple[str, ...]) -> None:
    if (problem := base_url_problem(base_url)) is not None:
        raise InputError(f"the FHIR server URL {problem}")
    if group is not None and not FHIR_ID.fullmatch(group):
        raise InputError("the group must be a FHIR id (letters, digits, '-' and '.', at most 64)")
    for origin in file_origins:
        if origin_of(origin) is None or base_url_problem(origin) is not None:
            raise InputError("an allowed file origin must be scheme://host[:port], with no credentials or query")


def _counts(files: tuple[FileRecord, ...]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for record in files:
        if not record.error:
            counts[record.type] += record.resources
    return dict(counts)


def _write_source(download: PopulationDownload) -> None:
    write_private(download.directory / SOURCE_NAME, orjson.dumps(download.source(), option=orjson.OPT_INDENT_2))


async def afetch_population(
    base_url: str, dest_dir: Path, *, group: str | None = None,
    auth: BackendServicesConfig | TokenSource | None = None, token: str | None = None,
    progress: ProgressFn | None = None, use_search_fallback: bool = True, trial: str = "axiom",
    allowed_file_origins: tuple[str, ...] = (), since: str | None = None, as_of: date | None = None,
    scan_all: bool = False, policy: PollPolicy | None = None, sleep: Sleep | None = None, timeout: float = 60.0,
    client: httpx.AsyncClient | None = None,
) -> PopulationDownload:
    """The async form of `fetch_population`; also `auth` may be any TokenSource, `sleep` replaces the
    waits between polls (tests), `client` is an httpx client to use."""
    _check_arguments(base_url, group, allowed_file_origins)
    base = base_url.rstrip("/")
    definition = load_trial(trial)
    wanted = fhir_wanted(definition)
    dest = prepare(dest_dir)
    started = asyncio.get_running_loop().time()
    own = client is None
    http_client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
                                              follow_redirects=False, trust_env=False)
    try:
        source: TokenSource | None = BackendServicesAuth(auth, base, http_client) \
            if isinstance(auth, BackendServicesConfig) else auth if auth is not None else \
            StaticToken(token) if token else None
        previous = load_state(dest)
        if previous is None or previous.method == "export":
            http = SafeHttp(http_client, AllowedServer(base, allowed_file_origins), source, sleep)
            request = ExportRequest(read_types(wanted), group, since)
            try:
                result = await Exporter(http, base, dest, request, policy=policy, progress=progress).run()
            except ExportNotSupportedError as exc:
                if not use_search_fallback:
                    raise
                log.info("no $export: falling back to FHIR search", extra={"fhir_server": shown(base)})
                reason = str(exc)
            else:
                files = tuple(result.files)
                counts = _counts(files)
                download = PopulationDownload(dest, "export", shown(base), group, result.transaction_time, files,
                                              counts, counts.get("Patient", 0), dict(result.errors), result.resumed,
                                              asyncio.get_running_loop().time() - started)
                _write_source(download)
                _done(progress, download)
                return download
        else:
            reason = "an earlier run of this folder used FHIR search"
        download = await _by_search(base, dest, definition, wanted, source, group, as_of, scan_all, progress,
                                    timeout, reason, previous)
        download = replace(download, seconds=asyncio.get_running_loop().time() - started)
        _write_source(download)
        _done(progress, download)
        return download
    finally:
        if own:
            await http_client.aclose()


def _done(progress: ProgressFn | None, download: PopulationDownload) -> None:
    log.info("population downloaded", extra={"fhir_server": download.server, "method": download.method,
                                              "patients": download.patients, "files": len(download.files),
                                              "seconds": round(download.seconds, 3)})
    if progress is not None:
        progress(Progress("done", f"{download.patients} patients by {download.method}", len(download.files),
                          len(download.files)))


SEARCH_IDS_NAME = ".axiom-search-patients.json"  # the search fallback's patients, while it runs


def _search_progress(dest: Path, previous: ExportState | None) -> SearchProgress | None:
    """Where an interrupted search fallback of this folder stopped; None to start afresh (no checkpoint,
    or its list of patients gone or unreadable)."""
    if previous is None or not previous.search:
        return None
    try:
        ids = orjson.loads((dest / SEARCH_IDS_NAME).read_bytes())
        done, sizes = int(previous.search["done"]), dict(previous.search["sizes"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return SearchProgress(ids, done, {str(k): int(v) for k, v in sizes.items()})


async def _by_search(base: str, dest: Path, definition: Trial, wanted: Wanted, source: TokenSource | None,
                     group: str | None, as_of: date | None, scan_all: bool, progress: ProgressFn | None,
                     timeout: float, reason: str, previous: ExportState | None) -> PopulationDownload:
    """The search fallback: a complete earlier run is returned as it is; an interrupted one (a crash, a
    failed fetch) goes on from its last whole batch of patients (search.py SearchProgress)."""
    signature = f"search {base} group={group} trial={definition.id} as_of={as_of} scan_all={scan_all}"
    if previous is not None and previous.request == signature and previous.complete:
        files = tuple(sorted(previous.files.values(), key=lambda f: f.name))
        return PopulationDownload(dest, "search", shown(base), group, previous.kicked_off, files, _counts(files),
                                  previous.patients or 0, resumed=True, fallback_reason=reason)
    if previous is not None and previous.request != signature:
        raise DestinationError(f"{dest} holds another download ({previous.method} from {shown(previous.server)}); "
                               "choose another folder")
    if previous is None and any(p.name.endswith((".ndjson", ".ndjson.gz")) or p.name in (SOURCE_NAME, ERRORS_DIR)
                                for p in dest.iterdir()):
        raise DestinationError(f"{dest} already holds NDJSON files but no download state: choose an empty folder")
    resume = _search_progress(dest, previous)
    state = previous if resume is not None and previous is not None else ExportState(
        server=base, request=signature, method="search", kicked_off=datetime.now(UTC).isoformat(timespec="seconds"))
    state.save(dest)

    ids_written: list[bool] = []

    def checkpoint(progress_now: SearchProgress) -> None:
        if not ids_written:  # once a run: the checkpoints stay small however many patients there are
            write_private(dest / SEARCH_IDS_NAME, orjson.dumps(progress_now.ids))
            ids_written.append(True)
        state.search = {"done": progress_now.done, "sizes": progress_now.sizes}
        state.save(dest)

    token: Callable[[], Awaitable[str]] | None = source.token if source is not None else None
    result = await search_population(base, dest, definition, wanted, token=token, group=group, as_of=as_of,
                                     scan_all=scan_all, progress=progress, timeout=timeout, resume=resume,
                                     checkpoint=checkpoint)
    state.files = {f.name: f for f in result.files}
    state.patients, state.complete, state.search = result.patients, True, None
    state.save(dest)
    (dest / SEARCH_IDS_NAME).unlink(missing_ok=True)
    files = tuple(result.files)
    return PopulationDownload(dest, "search", shown(base), group, state.kicked_off, files, _counts(files),
                              result.patients, fallback_reason=reason)


def fetch_population(
    base_url: str, dest_dir: Path, *, group: str | None = None, auth: BackendServicesConfig | None = None,
    token: str | None = None, progress: ProgressFn | None = None, use_search_fallback: bool = True,
    trial: str = "axiom", allowed_file_origins: tuple[str, ...] = (), since: str | None = None,
    as_of: date | None = None, scan_all: bool = False, policy: PollPolicy | None = None,
    timeout: float = 60.0,
) -> PopulationDownload:
    """Download the population of the FHIR server at `base_url` (or of Group `group`) into `dest_dir`.

    Bulk Data `$export` (system level, or Group level with `group`) of the types the trial reads; when
    the server has none and `use_search_fallback`, FHIR search for the patients with a cohort diagnosis
    code (a Group's members with `group`; `scan_all`: read every Condition). `auth`: SMART Backend
    Services (a private-key JWT client); `token`: a bearer token given as is; neither: no
    Authorization. `allowed_file_origins`: file servers (scheme://host[:port]) the manifest may point
    to besides the FHIR server. `since`: `_since` (a FHIR instant). `as_of`: the search fallback reads
    windowed results from the trial's look-back before it (default: everything). `progress` is called
    with a Progress at each step. Timeouts: `timeout` per request, `policy` for the polling.

    Rerunning with the same arguments and folder resumes an interrupted export (no second kick-off,
    finished files kept) and returns a complete one without a request. Ctrl-C or SIGTERM DELETEs the export job and
    raises ExportCancelledError. Every failure is a BulkError (a FhirServerError), bad arguments an
    InputError: one line each for the CLI (exit 2).
    """
    return asyncio.run(_cancelled_by_sigterm(afetch_population(
        base_url, dest_dir, group=group, auth=auth, token=token, progress=progress,
        use_search_fallback=use_search_fallback, trial=trial, allowed_file_origins=allowed_file_origins,
        since=since, as_of=as_of, scan_all=scan_all, policy=policy, timeout=timeout)))


async def _cancelled_by_sigterm(job: Awaitable[PopulationDownload]) -> PopulationDownload:
    """Run `job`; SIGTERM (a scheduler stopping the run, `kill`) cancels it as Ctrl-C does under
    asyncio.run — the export job is DELETEd on the server, not left running there. Only in the main
    thread, where signal handlers can be set; elsewhere SIGTERM keeps its own meaning."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    handled = False
    if task is not None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            handled = True
    try:
        return await job
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)
