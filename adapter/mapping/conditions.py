"""Conditions → which code sets (ASPS, sarcoma, metastasis, Gilbert, HIV, pregnancy) a patient has.

Each set reads clinicalStatus and abatement[x] by its `semantics` in mappings/conditions.yaml: a
`diagnosis` (a cancer) stays whatever its status, a `current-state` condition (a metastasis, a
pregnancy) counts only while it is going on on the evaluation date, a `lifelong` one (Gilbert, HIV)
has no "resolved". verificationStatus refuted / entered-in-error removes a Condition from every set.
Codes are read from Condition.code, the mCODE histology extension, mCODE profiles (meta.profile) and
bodySite, on code + system only. An element of the wrong JSON type, or not valid FHIR, is read as
absent; only an invalid code or subject makes the Condition no evidence at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from fhir.resources.R4B.condition import Condition
from pydantic import ValidationError

from .. import tables
from ..fhir.elements import unreadable_concept
from ..fhir.wire import Entry
from .abatement import Abatement, abatement, legacy_abatement
from .dates import date_range
from .validation import validate


@dataclass(frozen=True)
class ConditionFact:
    set_id: str
    ref: str | None
    display: str
    coding: tables.Coding
    confirmed: bool  # verificationStatus not unconfirmed / provisional / differential (absent: confirmed)
    verified_code: bool  # the code is verified in mappings (not a '?' entry)
    note: str | None = None
    verification: str | None = None  # verificationStatus code as recorded; None when not recorded
    clinical_status: str | None = None  # clinicalStatus code as recorded; None when not recorded
    since: str | None = None  # onsetDateTime, else recordedDate, as written

    @property
    def provisional(self) -> bool:
        """Recorded as unconfirmed / provisional / differential: a modifier that may not be there."""
        return not self.confirmed


# Elements read, validated with the R4 model: narrative, notes, evidence and other extensions are not.
_READ = ("resourceType", "id", "subject", "code", "clinicalStatus", "verificationStatus", "meta", "bodySite",
         "onsetDateTime", "recordedDate", "abatementDateTime", "abatementAge", "abatementPeriod",
         "abatementRange", "abatementString", "extension")
_REQUIRED = frozenset({"resourceType", "subject", "code"})  # invalid here: the Condition is no evidence
_SHARED = ("code", "subject", "clinicalStatus", "verificationStatus", "meta")  # recur unchanged (validation.py)


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _codings(concept: Any) -> list[tables.Coding]:
    """(system, code) pairs in a stable order; anything of the wrong JSON type is absent."""
    if not isinstance(concept, dict):
        return []
    return sorted({(c["system"], c["code"]) for c in _list(concept.get("coding"))
                   if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)})


def _text(concept: Any) -> str:
    """Concept.text, else the first coding's display or code."""
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    for c in _list(concept.get("coding")):
        if isinstance(c, dict) and isinstance(c.get("display") or c.get("code"), str):
            return str(c.get("display") or c.get("code"))
    return ""


def _status(concept: Any, system: str) -> str | None:
    """The code of a status element, from a coding of its code system (or one that names none)."""
    if not isinstance(concept, dict):
        return None
    for c in _list(concept.get("coding")):
        if isinstance(c, dict) and isinstance(c.get("code"), str) and c.get("system", system) == system:
            return str(c["code"])
    return None


@dataclass(frozen=True)
class _Condition:
    """What one Condition says, each element of the wrong JSON type read as absent."""

    codings: list[tuple[tables.Coding, str]]  # code, then the histology extension; with their text
    text: str
    sites: list[tuple[tables.Coding, str]]
    profiles: frozenset[str]
    clinical: str | None
    verification: str | None


def _read(r: dict[str, Any], table: tables.ConditionTable) -> _Condition:
    code = r.get("code")
    out = [(c, _text(code)) for c in _codings(code)]
    for ext in _list(r.get("extension")):
        if isinstance(ext, dict) and ext.get("url") == table.histology_extension:
            concept = ext.get("valueCodeableConcept")
            out.extend((c, _text(concept)) for c in _codings(concept))
    sites = [(c, _text(s)) for s in _list(r.get("bodySite")) for c in _codings(s)]
    meta = r.get("meta")
    profiles = frozenset(p.split("|", 1)[0] for p in _list(meta.get("profile") if isinstance(meta, dict) else None)
                         if isinstance(p, str))
    return _Condition(out, _text(code), sites, profiles, _status(r.get("clinicalStatus"), table.clinical_status_system),
                      _status(r.get("verificationStatus"), table.verification_status_system))


def _validated(r: dict[str, Any], histology_url: str) -> tuple[dict[str, Any], list[str]] | None:
    """The elements read that are valid FHIR R4, and the names of those dropped; None: no evidence."""
    doc = {k: r[k] for k in _READ if k in r}
    if isinstance(r.get("meta"), dict) and "profile" in r["meta"]:
        doc["meta"] = {"profile": r["meta"]["profile"]}
    else:
        doc.pop("meta", None)
    histology = [e for e in _list(r.get("extension")) if isinstance(e, dict) and e.get("url") == histology_url]
    doc.pop("extension", None)
    if histology:
        doc["extension"] = histology
    dropped: list[str] = []
    for _ in range(len(doc) + 1):
        try:
            validate(Condition, doc, _SHARED)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
            if not bad or bad & _REQUIRED or not bad <= doc.keys():
                return None
            for key in sorted(bad):
                doc.pop(key)
                dropped.append(key)
            continue
        return doc, dropped
    return None


def _recorded_after(r: dict[str, Any], as_of: date) -> bool:
    for key in ("onsetDateTime", "recordedDate"):
        rng = date_range(r.get(key))
        if rng is not None and rng[0] > as_of:
            return True
    return False


MAX_CODINGS = 65536  # distinct codings whose sets are remembered (a population has a few thousand)


@lru_cache(maxsize=MAX_CODINGS)
def _code_sets(table: tables.ConditionTable, coding: tables.Coding) -> tuple[tuple[str, bool], ...]:
    """(set id, verified code) of every set of `table` whose rules match `coding`, in the table's order;
    remembered per table and coding: every Condition of a population is matched against the same few codes."""
    return tuple((set_id, rule.verified) for set_id, code_set in table.sets.items()
                 if (rule := code_set.match(*coding)) is not None)


def _matches(c: _Condition, table: tables.ConditionTable) -> dict[str, tuple[tables.Coding, str, bool]]:
    """Set id → (coding, display, verified code) for every set the Condition is in."""
    found: dict[str, tuple[tables.Coding, str, bool]] = {}
    for coding, text in c.codings:
        for set_id, verified in _code_sets(table, coding):
            if set_id not in found:
                found[set_id] = (coding, text or coding[1], verified)
    for set_id, code_set in table.sets.items():
        profile = next(iter(sorted(code_set.profiles & c.profiles)), None)
        if profile is not None and set_id not in found:
            base, _, name = profile.rpartition("/")
            coding = c.codings[0][0] if c.codings else (base, name)
            found[set_id] = (coding, c.text or code_set.title, True)
    for set_id, code_set in table.sets.items():
        within = found.get(code_set.body_site_within or "")
        if within is None or set_id in found:
            continue
        site = next(((coding, text) for coding, text in c.sites if code_set.match_site(*coding)), None)
        if site is not None:
            found[set_id] = (within[0], f"{within[1]}, {site[1] or site[0][1]}", within[2])
    return found


def _current(c: _Condition, ab: Abatement, table: tables.ConditionTable) -> tuple[bool, str | None]:
    """A current-state condition on the evaluation date, and why when it is worth saying."""
    if ab.state in ("past", "undated"):
        return False, None
    if ab.state == "later":
        return True, f"abated {ab.text}, after the evaluation date"
    if ab.state == "maybe":
        return True, f"abatement {ab.text} may fall after the evaluation date: counted as current"
    if c.clinical is None:
        return True, "clinical status not recorded"
    return c.clinical in table.active_clinical_status, None


def _counts(semantics: str, title: str, c: _Condition, ab: Abatement,
            table: tables.ConditionTable) -> tuple[bool, str | None]:
    if semantics == "current-state":
        return _current(c, ab, table)
    if c.clinical is None:
        return True, "clinical status not recorded"
    if c.clinical in table.active_clinical_status:
        return True, None
    if semantics == "lifelong":
        return True, f"recorded as {c.clinical}; {title} is lifelong"
    return True, f"clinical status {c.clinical} (a resected or treated cancer stays the diagnosis)"


def condition_facts(entries: list[Entry], as_of: date, birth_date: str | None = None) -> list[ConditionFact]:
    """One fact per (condition, code set) it belongs to and counts for on `as_of`.

    `birth_date` places an abatementAge / abatementRange in time; without it such an abatement is
    read as abated on an unknown date.
    """
    table = tables.conditions()
    facts: list[tuple[tuple[object, ...], ConditionFact]] = []
    for entry in entries:
        r = entry.resource
        if not isinstance(r, dict) or not _matches(_read(r, table), table):
            continue  # the cheap raw read first: validation only for the Conditions that matter
        valid = _validated(r, table.histology_extension)
        # its code or subject not valid FHIR: read as sent, but never as confirmed (a diagnosis to confirm,
        # an allowance undecided) — never dropped without a word, so a patient never silently vanishes
        doc, dropped = valid if valid is not None else ({k: r[k] for k in _READ if k in r}, [])
        untrusted = None if valid is not None else "not valid FHIR R4 as sent (code or subject): confirm in the chart"
        c = _read(doc, table)
        if c.verification in table.excluded_verification_status or _recorded_after(doc, as_of):
            continue
        ab = abatement(doc, as_of, birth_date, table.age_units)
        if ab.state == "none":
            ab = legacy_abatement(r)
        invalid = [untrusted, *(f"{key} is not valid FHIR R4: read as absent" for key in dropped)]
        # an unreadable verificationStatus may have said refuted or provisional, an unreadable clinicalStatus
        # resolved (which ends a current state, not a diagnosis): not a confirmed fact then
        unsure = {"verificationStatus", "clinicalStatus"} & set(dropped)
        since = next((doc[k] for k in ("onsetDateTime", "recordedDate") if isinstance(doc.get(k), str)), None)
        since_days = date_range(since)
        for set_id, (coding, display, verified) in _matches(c, table).items():
            code_set = table.sets[set_id]
            counts, why = _counts(code_set.semantics, code_set.title, c, ab, table)
            if not counts:
                continue
            fact = ConditionFact(
                set_id=set_id, ref=entry.ref, display=display, coding=coding,
                confirmed=untrusted is None and c.verification not in table.unconfirmed_verification_status
                and not (unsure if code_set.semantics == "current-state" else unsure - {"clinicalStatus"}),
                verified_code=verified, note="; ".join(n for n in (why, *invalid) if n) or None,
                verification=c.verification, clinical_status=c.clinical, since=since,
            )
            # never the Bundle's order: confirmed and verified first, then the most recent, then by id
            newest = -since_days[1].toordinal() if since_days else 0
            facts.append(((not fact.confirmed, not verified, newest, entry.ref or "", coding, display), fact))
    return [fact for _, fact in sorted(facts, key=lambda kf: kf[0])]


def unreadable_codes(entries: list[Entry]) -> list[str]:
    """The Conditions whose `code` is there but is no CodeableConcept a code can be read from (a string,
    or `coding` an object, not a list): what they record cannot be told — it may be a diagnosis the trial
    enrols. A code with text only is readable: it names no code (words are never interpreted). The
    screen's narrowing (adapter/screen/narrow.py, spark.py) makes such a patient a candidate too."""
    out = []
    for entry in entries:
        r = entry.resource
        if isinstance(r, dict) and unreadable_concept(r.get("code")):
            out.append(entry.ref or "a Condition")
    return sorted(out)
