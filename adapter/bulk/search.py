"""Fallback for servers without `$export`: find the trial's patients by FHIR search, fetch each one.

Which patients: those with a Condition in one of the trial's cohort code sets (the condition sets its
cohort-deciding criteria name, mappings/conditions.yaml) — the only patients whose verdict can be
other than not-applicable. A token search cannot say everything those sets say, so the plan has parts:
- `Condition?code=system|code,…` for every code the sets enumerate: exact codes, and each ICD-O-3
  morphology range expanded with its behaviours (`9581/3`, `9581/6`, …), in requests of bounded length;
- `Condition?code=system|` (any code of the system) for a system the sets match by prefix (ICD-10-CM
  `C49` covers `C49.21`), each Condition then matched with the engine's own rules (CodeSet.match);
- with `scan_all`, every Condition, matched the same way (also finds an ICD-O-3 morphology recorded
  only in the mCODE histology extension of a Condition coded otherwise).
With a Group, its members are the population instead (every member is fetched).

Each patient is then fetched with the searches `evaluate --fhir-server` sends (adapter/fhir/queries.py,
through the FHIR layer's SessionClient: same paging rules, retries, bounds and redirect refusal), and
the raw resources are written as NDJSON, one file per type, each resource once. `screened` on such a
folder counts only the patients found: source.json says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import orjson

from .. import tables
from ..criteria.kinds import COHORT_KINDS
from ..errors import FhirServerError, InputError
from ..fhir.bundle import bundle_entries
from ..fhir.client import SessionClient, absolute_link, next_link, read_patient, same_server, search_all
from ..fhir.gather import _medication_reads, merge_searches
from ..fhir.queries import searches
from ..fhir.urls import names, shown
from ..fhir.wanted import Wanted
from ..fhir.wire import FHIR_ID, reference_key
from ..trials import Trial
from .errors import SearchFailedError
from .export import Progress, ProgressFn
from .state import FileRecord, append_private, create_private

log = logging.getLogger("axiom_cds.bulk")

PAGE_SIZE = "1000"
MAX_QUERY_CHARS = 4000  # of one request's code list: well under the 8 KB URL limits of common servers
MAX_PAGES = 100_000  # of one population search (1000 a page)
MAX_GROUP_MEMBERS = 1_000_000
PARALLEL_PATIENTS = 4
CONDITION_ELEMENTS = "subject,code,extension"


@dataclass(frozen=True)
class SearchPlan:
    """The Condition searches that find the trial's patients, and the rules every hit is checked by."""

    sets: tuple[tables.CodeSet, ...]
    tokens: tuple[str, ...]  # system|code, searched exactly
    scanned_systems: tuple[str, ...]  # searched as `system|`, each Condition matched by the rules

    def requests(self, scan_all: bool = False) -> list[dict[str, str]]:
        """The search parameters of each request."""
        common = {"_elements": CONDITION_ELEMENTS, "_count": PAGE_SIZE}
        if scan_all:
            return [common]
        out = [{"code": chunk, **common} for chunk in _chunks(self.tokens, MAX_QUERY_CHARS)]
        return out + [{"code": f"{system}|", **common} for system in self.scanned_systems]

    def matches(self, condition: dict[str, Any]) -> bool:
        """Whether a Condition's code (or its mCODE histology) is in one of the sets."""
        return any(s.match(system, code) for system, code in _codings(condition) for s in self.sets)


def cohort_sets(trial: Trial) -> tuple[str, ...]:
    """The condition sets that decide the trial's cohorts: a patient with none of them is not-applicable."""
    return tuple(dict.fromkeys(name for spec in trial.specs if spec.kind in COHORT_KINDS
                               for name in spec.params.condition_sets()))


def search_plan(trial: Trial) -> SearchPlan:
    """The plan for `trial`, from mappings/conditions.yaml and the trial file only."""
    table = tables.conditions()
    sets = tuple(table.sets[name] for name in cohort_sets(trial))
    tokens: dict[str, None] = {}
    scanned: dict[str, None] = {}
    for code_set in sets:
        for rule in code_set.rules:
            if rule.code is not None:
                tokens[f"{rule.system}|{rule.code}"] = None
            elif rule.morphology is not None:
                low, high = rule.morphology
                for morphology in range(low, high + 1):
                    for behaviour in rule.behavior:
                        tokens[f"{rule.system}|{morphology}/{behaviour}"] = None
            elif rule.prefix is not None:
                scanned[rule.system] = None
    return SearchPlan(sets, tuple(tokens), tuple(scanned))


def _chunks(tokens: Iterable[str], limit: int) -> list[str]:
    out: list[str] = []
    current = ""
    for token in tokens:
        joined = f"{current},{token}" if current else token
        if current and len(joined) > limit:
            out.append(current)
            joined = token
        current = joined
    return [*out, current] if current else out


def _codings(condition: dict[str, Any]) -> Iterable[tuple[str, str]]:
    concepts = [condition.get("code")]
    histology = tables.conditions().histology_extension
    for ext in condition.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == histology:
            concepts.append(ext.get("valueCodeableConcept"))
    for concept in concepts:
        for coding in (concept.get("coding") if isinstance(concept, dict) else None) or ():
            if isinstance(coding, dict) and isinstance(system := coding.get("system"), str) \
                    and isinstance(code := coding.get("code"), str):
                yield system, code


def _subject_id(resource: dict[str, Any], base_url: str) -> str | None:
    """The id of the Patient a resource is about, when it names one on this server."""
    subject = resource.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(ref, str) or ref.startswith(("urn:", "#")):
        return None
    key = reference_key(ref)
    if "://" in ref and not names(ref, base_url, key):
        return None  # another server's patient
    kind, _, pid = key.partition("/")
    return pid if kind == "Patient" and FHIR_ID.fullmatch(pid) else None


async def _pages(client: SessionClient, resource_type: str, params: dict[str, str], label: str) \
        -> AsyncIterator[list[dict[str, Any]]]:
    """The resources of every page of one search, next links followed only on the server, no repeats."""
    page = await client.get_json(resource_type, params)
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        try:
            entries = bundle_entries(page)[1]
        except InputError:
            raise SearchFailedError(f"the {label} search came back as a malformed Bundle") from None
        yield [e.resource for e in entries]
        nxt = next_link(page)
        if nxt is None:
            return
        nxt = absolute_link(nxt, client.url)
        if nxt in seen or not same_server(nxt, client.url):
            raise SearchFailedError(f"the next link of the {label} search repeats or leaves the FHIR server")
        seen.add(nxt)
        page = await client.get_json(nxt)
    raise SearchFailedError(f"the {label} search has more than {MAX_PAGES} pages")


async def find_patients(client: SessionClient, plan: SearchPlan, scan_all: bool = False) -> list[str]:
    """Ids of the patients with a Condition of the plan's sets, sorted."""
    found: set[str] = set()
    for i, params in enumerate(plan.requests(scan_all)):
        async for resources in _pages(client, "Condition", params, f"Condition (part {i + 1})"):
            for resource in resources:
                if isinstance(resource, dict) and resource.get("resourceType") == "Condition" \
                        and plan.matches(resource) and (pid := _subject_id(resource, client.url)) is not None:
                    found.add(pid)
    return sorted(found)


async def group_members(client: SessionClient, group: str) -> list[str]:
    """Ids of a Group's Patient members on this server, sorted."""
    doc = await client.get_json(f"Group/{group}")
    if not isinstance(doc, dict) or doc.get("resourceType") != "Group":
        raise SearchFailedError(f"Group/{group} did not come back as a Group")
    members = doc.get("member") or []
    if not isinstance(members, list) or len(members) > MAX_GROUP_MEMBERS:
        raise SearchFailedError(f"Group/{group} has an unusable member list")
    ids = {pid for m in members if isinstance(m, dict) and isinstance(m.get("entity"), dict)
           and (pid := _subject_id({"subject": m["entity"]}, client.url)) is not None}
    return sorted(ids)


async def patient_resources(client: SessionClient, patient_id: str, wanted: Wanted,
                            as_of: date | None) -> list[dict[str, Any]]:
    """The Patient and every resource the FHIR layer's searches return for her (raw, each once), plus
    the Medications they name that no `_include` brought."""
    plan = merge_searches(searches(patient_id, wanted, as_of))
    results = await asyncio.gather(read_patient(client, patient_id), *(search_all(client, s) for s in plan))
    patient, found = results[0], [e for entries in results[1:] for e in entries]
    out: dict[tuple[str, str], dict[str, Any]] = {("Patient", patient_id): patient}
    for entry in found:
        resource = entry.resource
        key = (str(resource.get("resourceType")), str(resource.get("id")))
        out.setdefault(key, resource)
    for ref in _medication_reads(found, client.url):
        medication = await client.get_json(ref)
        if isinstance(medication, dict) and medication.get("resourceType") == "Medication":
            out.setdefault(("Medication", str(medication.get("id"))), medication)
    return list(out.values())


@dataclass
class SearchProgress:
    """How far a search fallback got: the patients found (None: not yet), how many of them are written,
    and the size of each part file then. Saved after every batch, so a rerun after a crash or a failed
    fetch goes on from the last whole batch instead of fetching every patient again (the ids once, in
    their own file; each checkpoint only `done` and `sizes`)."""

    ids: list[str] | None = None
    done: int = 0
    sizes: dict[str, int] = field(default_factory=dict)


class NdjsonWriter:
    """One `Type-1.ndjson` per resource type, written as `.part` and renamed by `close`; each resource once."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.handles: dict[str, BinaryIO] = {}
        self.counts: dict[str, int] = {}
        self.seen: set[tuple[str, str]] = set()

    def resume(self, sizes: dict[str, int]) -> bool:
        """Reopen the part files as a checkpoint left them (cut back to its sizes: what was written after
        it is written again), with what they hold; False when one is missing or shorter (start again).
        A part already renamed to its final name (a crash while `close` renamed them, before the state
        said complete) is taken back."""
        for kind in sizes:
            part, final = self._part(kind), self._final(kind)
            if not part.exists() and final.exists():
                final.replace(part)
        parts = {p.name.removesuffix("-1.ndjson.part"): p for p in self.dest.glob("*-1.ndjson.part")}
        if any(kind not in parts or parts[kind].stat().st_size < size for kind, size in sizes.items()):
            return False
        for kind, part in parts.items():
            if kind not in sizes:
                part.unlink()
                continue
            count, read = 0, 0
            with part.open("rb") as fh:  # line by line: a part may hold gigabytes
                for line in fh:
                    read += len(line)
                    if read > sizes[kind]:
                        break
                    count += 1
                    rid = orjson.loads(line).get("id")
                    if rid is not None:
                        self.seen.add((kind, str(rid)))
            self.counts[kind] = count
            self.handles[kind] = append_private(part, sizes[kind])
        return True

    def _final(self, kind: str) -> Path:
        return self.dest / f"{kind}-1.ndjson"

    def checkpoint(self) -> dict[str, int]:
        """Everything written so far on disk (flushed and synced); the part files' sizes."""
        sizes = {}
        for kind, handle in self.handles.items():
            handle.flush()
            os.fsync(handle.fileno())
            sizes[kind] = handle.tell()
        return sizes

    def abandon(self) -> None:
        """Close the part files and remove them, and any file a run of this folder renamed into place (a
        cancelled or restarted run leaves nothing of the patients behind for `screen` to read)."""
        for kind in list(self.handles):
            self.handles.pop(kind).close()
        for part in [*self.dest.glob("*-1.ndjson.part"), *self.dest.glob("*-1.ndjson")]:
            part.unlink(missing_ok=True)

    def suspend(self) -> None:
        """Close the part files, kept for a rerun to go on from the last checkpoint."""
        for kind in list(self.handles):
            self.handles.pop(kind).close()

    def _part(self, kind: str) -> Path:
        return self.dest / f"{kind}-1.ndjson.part"

    def write(self, resource: dict[str, Any]) -> None:
        kind = str(resource.get("resourceType") or "")
        if not kind.isalpha():
            return
        if resource.get("id") is not None:
            key = (kind, str(resource["id"]))
            if key in self.seen:
                return
            self.seen.add(key)
        if kind not in self.handles:
            self.handles[kind] = create_private(self._part(kind))
        self.handles[kind].write(orjson.dumps(resource) + b"\n")
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def close(self) -> list[FileRecord]:
        """The files, renamed into place."""
        records = []
        for kind in sorted(self.handles):
            self.handles[kind].close()
            part = self._part(kind)
            final = self._final(kind)
            part.replace(final)
            records.append(FileRecord(final.name, kind, final.stat().st_size, self.counts[kind]))
        self.handles.clear()
        return records


@dataclass(frozen=True)
class SearchResult:
    patients: int
    files: list[FileRecord]


async def search_population(base_url: str, dest: Path, trial: Trial, wanted: Wanted, *,
                            token: Callable[[], Any] | None = None, group: str | None = None,
                            as_of: date | None = None, scan_all: bool = False, progress: ProgressFn | None = None,
                            timeout: float = 60.0, parallel: int = PARALLEL_PATIENTS,
                            resume: SearchProgress | None = None,
                            checkpoint: Callable[[SearchProgress], None] | None = None) -> SearchResult:
    """Find the patients (the Group's members, or by diagnosis code), fetch each, write NDJSON into `dest`.

    `token`: an async callable giving the current bearer token (refreshed between batches), or None.
    `resume`: where an earlier run of the same request stopped (its part files still in `dest`);
    `checkpoint` is called with the progress after the patients are found and after every batch — saved,
    it lets a rerun go on. Raises SearchFailedError (a BulkError) when a search or a patient's fetch
    fails: the part files are kept for the rerun, never renamed into a population with a patient
    missing (that would give a wrong `screened`). A cancel (Ctrl-C) removes them.
    """
    async def bearer() -> str | None:
        return str(await token()) if token is not None else None

    writer = NdjsonWriter(dest)
    state = resume if resume is not None and resume.ids is not None and writer.resume(resume.sizes) \
        else SearchProgress()
    if state.ids is None:
        writer.abandon()  # part files of a run that cannot be resumed: start clean
    try:
        async with aiohttp.ClientSession() as session:
            client = SessionClient(base_url, session, await bearer(), timeout)
            if state.ids is None:
                if progress is not None:
                    progress(Progress("searching", f"finding patients on {shown(base_url)}"))
                state.ids = await group_members(client, group) if group is not None else \
                    await find_patients(client, search_plan(trial), scan_all)
                if checkpoint is not None:
                    checkpoint(state)
            ids = state.ids
            log.info("search fallback found patients", extra={"fhir_server": shown(base_url), "patients": len(ids),
                                                               "group": group is not None, "resumed_at": state.done})
            for start in range(state.done, len(ids), parallel):
                batch = ids[start:start + parallel]
                client = SessionClient(base_url, session, await bearer(), timeout)
                records = await asyncio.gather(*(patient_resources(client, pid, wanted, as_of) for pid in batch))
                for resources in records:  # in id order, whatever finished first: the same files every run
                    for resource in resources:
                        writer.write(resource)
                state.done, state.sizes = start + len(batch), writer.checkpoint()
                if checkpoint is not None:
                    checkpoint(state)
                if progress is not None:
                    progress(Progress("fetching", "", state.done, len(ids)))
    except SearchFailedError:
        writer.suspend()
        raise
    except FhirServerError as exc:
        writer.suspend()
        raise SearchFailedError(f"the search fallback failed: {exc}; rerun the same command to go on "
                                f"from patient {state.done + 1} of {len(state.ids or [])}") from None
    except (asyncio.CancelledError, KeyboardInterrupt):  # a cancel: nothing of the patients is left behind
        writer.abandon()
        raise
    except BaseException:  # anything else (a full disk, a bug): kept, as a crash leaves them, for the rerun
        writer.suspend()
        raise
    return SearchResult(len(ids), writer.close())
