"""FHIR JSON read lazily: a Bundle's resources stay bytes until something needs the whole resource.

Parsing a megabyte of prefetch into dicts costs more than everything the service then does with it,
and most of it is never read: of a thousand lab Observations the criteria look at the newest few per
code. So a Bundle is decoded (msgspec) into its entries' raw JSON plus a small `Head` per resource —
type, id, subject, codes, date, status — which is all that attribution, the date floor and the choice
by code read. `Entry.resource` parses the whole resource (orjson) the first time it is asked for.
A hook's Observation searches go one step further (`load_hook`): decoded in the request's single pass
as an `ObservationHead` each — the head plus the value elements the criteria read, as raw JSON.

Nothing is lost on the fast path: a resource whose head fields have an unexpected JSON type is parsed
whole at once and its head read the tolerant way (`head_of`), where a field of the wrong type counts
as absent. UTF-8 is checked for the whole document up front, because skipped JSON is not decoded.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Container, Iterator, Mapping
from typing import Any

import msgspec
import orjson

from ..errors import InputError

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id: what may be put in a URL or a message

Resource = dict[str, Any]


class Coding(msgspec.Struct, gc=False):
    system: str | None = None
    code: str | None = None


class Concept(msgspec.Struct, gc=False):
    coding: list[Coding] | None = None


class Reference(msgspec.Struct, gc=False):
    reference: str | None = None


class Period(msgspec.Struct, gc=False):
    start: str | None = None
    end: str | None = None


class Component(msgspec.Struct, gc=False):
    code: Concept | None = None


class Contained(msgspec.Struct, gc=False):
    resourceType: Any = None  # noqa: N815


def _code_in(concept: Concept | None, system: str, codes: Container[str]) -> str | None:
    if concept is None or concept.coding is None:
        return None
    for coding in concept.coding:
        if coding.system == system and coding.code in codes:
            return coding.code
    return None


class Head(msgspec.Struct, gc=False):
    """The elements read from every resource of a Bundle, named as in FHIR JSON.

    `hasMember` (Observation) and `result` (DiagnosticReport) say where else results sit (fhir/expand.py);
    `issued` is kept for the mapping layer to decide what an issued-only result means.
    """

    resourceType: str | None = None  # noqa: N815 -- FHIR's names, decoded by name
    id: str | None = None
    status: str | None = None
    code: Concept | None = None
    subject: Reference | None = None
    patient: Reference | None = None
    effectiveDateTime: str | None = None  # noqa: N815
    effectiveInstant: str | None = None  # noqa: N815
    effectivePeriod: Period | None = None  # noqa: N815
    effectiveTiming: Any = None  # noqa: N815 -- only whether it is there matters (fhir/expand.py)
    issued: str | None = None
    dataAbsentReason: Any = None  # noqa: N815 -- only whether it is there matters
    hasMember: list[Reference] | None = None  # noqa: N815
    result: list[Reference] | None = None

    def subject_reference(self) -> str | None:
        """The patient it is about: `subject`, else `patient` (MedicationStatement has both in R4)."""
        for ref in (self.subject, self.patient):
            if ref is not None and ref.reference is not None:
                return ref.reference
        return None

    def effective_text(self) -> str | None:
        """When an Observation was true of the patient: effective[x] (a period by its end), as written.

        `issued` is when a result was released, not when the patient was in that state: never used.
        """
        if self.effectiveDateTime is not None:
            return self.effectiveDateTime
        if self.effectiveInstant is not None:
            return self.effectiveInstant
        period = self.effectivePeriod
        if period is not None:
            return period.end if period.end is not None else period.start
        return None

    def code_in(self, system: str, codes: Container[str]) -> str | None:
        """The first of the resource's codes in `system` that is one of `codes`."""
        return _code_in(self.code, system, codes)

    def code_among(self, codes: Mapping[str, Container[str]]) -> str | None:
        """The first of the resource's codes in any of these systems (tried in order) and their codes."""
        for system, wanted in codes.items():
            code = self.code_in(system, wanted)
            if code is not None:
                return code
        return None

    def component_codings(self) -> Iterator[tuple[str | None, str | None]]:
        """(system, code) of every coding of its components' codes, where this kind of head reads them."""
        return iter(())

    def may_contain_observations(self) -> bool:
        """Whether it may hold contained Observations (a head that does not read `contained` says no)."""
        return False

    def may_hold_results(self) -> bool:
        """Quick test before the others: has it members, components or contained resources at all?"""
        return bool(self.hasMember)

    def references(self) -> list[str]:
        """Where its results or members are: `result` and `hasMember` references, in order."""
        return [r.reference for refs in (self.result, self.hasMember) for r in refs or () if r.reference]


class EntryHead(Head, gc=False):
    """A Bundle entry's head: also its components' codes and its contained resources' types, so that a
    panel or a container is known as one without parsing the resource."""

    component: list[Component] | None = None
    contained: list[Contained] | None = None

    def component_codings(self) -> Iterator[tuple[str | None, str | None]]:
        for part in self.component or ():
            if part.code is not None and part.code.coding is not None:
                for coding in part.code.coding:
                    yield coding.system, coding.code

    def may_contain_observations(self) -> bool:
        return any(c.resourceType == "Observation" for c in self.contained or ())

    def may_hold_results(self) -> bool:
        return bool(self.hasMember or self.component or self.contained)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _reference(value: Any) -> Reference | None:
    return Reference(_text(value.get("reference"))) if isinstance(value, dict) else None


def _concept(value: Any) -> Concept | None:
    codings = value.get("coding") if isinstance(value, dict) else None
    return Concept([Coding(_text(c.get("system")), _text(c.get("code"))) for c in codings if isinstance(c, dict)]) \
        if isinstance(codings, list) else None


def _period(value: Any) -> Period | None:
    return Period(_text(value.get("start")), _text(value.get("end"))) if isinstance(value, dict) else None


def _references(value: Any) -> list[Reference] | None:
    return [Reference(_text(r.get("reference"))) for r in value if isinstance(r, dict)] \
        if isinstance(value, list) else None


def head_of(resource: Resource) -> EntryHead:
    """A parsed resource's head, tolerant: a field of the wrong JSON type counts as absent."""
    period = resource.get("effectivePeriod")
    component = resource.get("component")
    contained = resource.get("contained")
    return EntryHead(
        resourceType=_text(resource.get("resourceType")),
        id=_text(resource.get("id")),
        status=_text(resource.get("status")),
        code=_concept(resource.get("code")),
        subject=_reference(resource.get("subject")),
        patient=_reference(resource.get("patient")),
        effectiveDateTime=_text(resource.get("effectiveDateTime")),
        effectiveInstant=_text(resource.get("effectiveInstant")),
        effectivePeriod=_period(period),
        effectiveTiming=resource.get("effectiveTiming"),
        issued=_text(resource.get("issued")),
        dataAbsentReason=resource.get("dataAbsentReason"),
        hasMember=_references(resource.get("hasMember")),
        result=_references(resource.get("result")),
        component=[Component(_concept(c.get("code")) if isinstance(c, dict) else None) for c in component]
        if isinstance(component, list) else None,
        contained=[Contained(c.get("resourceType") if isinstance(c, dict) else None) for c in contained]
        if isinstance(contained, list) else None,
    )


NULL = msgspec.Raw(b"null")


class ObservationHead(Head, gc=False):
    """An Observation from an Observation search of a hook's prefetch: its head, and the value elements
    the criteria read (adapter/mapping/values.py READ_ELEMENTS) as raw JSON — decoded in the same
    pass as the request, nothing else of it kept. Codings keep system and code only."""

    valueQuantity: msgspec.Raw = NULL  # noqa: N815
    valueCodeableConcept: msgspec.Raw = NULL  # noqa: N815
    valueInteger: msgspec.Raw = NULL  # noqa: N815
    valueBoolean: msgspec.Raw = NULL  # noqa: N815 -- mCODE history of metastatic cancer (a modifier)
    valueString: msgspec.Raw = NULL  # noqa: N815
    referenceRange: msgspec.Raw = NULL  # noqa: N815
    component: msgspec.Raw = NULL
    method: msgspec.Raw = NULL
    contained: msgspec.Raw = NULL  # a panel's members may be contained (fhir/expand.py)

    def component_codings(self) -> Iterator[tuple[str | None, str | None]]:
        parts = _parse(self.component) if self.component is not NULL else None
        for part in parts if isinstance(parts, list) else ():
            concept = _concept(part.get("code")) if isinstance(part, dict) else None
            for coding in concept.coding or () if concept is not None else ():
                yield coding.system, coding.code

    def may_contain_observations(self) -> bool:
        return self.contained is not NULL

    def may_hold_results(self) -> bool:
        return bool(self.hasMember) or self.component is not NULL or self.contained is not NULL

    def as_resource(self) -> Resource:
        """The Observation as parsed JSON, made of what was kept."""
        out: Resource = {"resourceType": self.resourceType}
        for name in ("id", "status", "effectiveDateTime", "effectiveInstant", "effectiveTiming", "issued",
                     "dataAbsentReason"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        if self.code is not None:
            out["code"] = {} if self.code.coding is None else {"coding": [
                {k: v for k, v in (("system", c.system), ("code", c.code)) if v is not None} for c in self.code.coding]}
        for name, ref in (("subject", self.subject), ("patient", self.patient)):
            if ref is not None:
                out[name] = {} if ref.reference is None else {"reference": ref.reference}
        if self.effectivePeriod is not None:
            out["effectivePeriod"] = {k: v for k, v in (("start", self.effectivePeriod.start),
                                                        ("end", self.effectivePeriod.end)) if v is not None}
        if self.hasMember is not None:
            out["hasMember"] = [{} if r.reference is None else {"reference": r.reference} for r in self.hasMember]
        for name in _OBSERVATION_RAW:
            if (raw := getattr(self, name)) is not NULL:
                out[name] = _parse(raw)
        return out


_OBSERVATION_RAW = tuple(f for f in ObservationHead.__struct_fields__ if f not in Head.__struct_fields__)


def head_fields(fields: Resource) -> dict[str, Any]:
    """Subject, effective[x] and issued elements, as the head holds them (read the tolerant way)."""
    out: dict[str, Any] = {}
    if "subject" in fields:
        out["subject"] = _reference(fields["subject"])
    for name in ("effectiveDateTime", "effectiveInstant", "issued"):
        if name in fields:
            out[name] = _text(fields[name])
    if "effectivePeriod" in fields:
        out["effectivePeriod"] = _period(fields["effectivePeriod"])
    if "effectiveTiming" in fields:
        out["effectiveTiming"] = fields["effectiveTiming"]
    return out


class Entry:
    """A resource of a patient's record and the fullUrl it arrived under (for urn:uuid citations).

    Built with the resource's raw JSON (parsed on first use of `resource`), already parsed, or with an
    ObservationHead that holds all of it that is read. `cite`: how the report cites a result that is
    not a resource of its own (a contained Observation, a panel's component) — the resource holding it.
    """

    __slots__ = ("_overlay", "_raw", "_resource", "cite", "full_url", "head")

    def __init__(self, head: Head, full_url: str | None, raw: msgspec.Raw | None = None,
                 resource: Resource | None = None, cite: str | None = None,
                 overlay: Resource | None = None) -> None:
        self.head = head
        self.full_url = full_url
        self._raw = raw
        self._resource = resource
        self.cite = cite
        self._overlay = overlay  # elements set over the resource's own when it is parsed (`inheriting`)

    @property
    def resource(self) -> Resource:
        """The whole resource as parsed JSON (parsed once, on first use)."""
        if self._resource is None:
            if self._raw is not None:
                self._resource = _parse(self._raw)
                self._raw = None
            else:
                assert isinstance(self.head, ObservationHead)
                self._resource = self.head.as_resource()
        if self._overlay is not None:
            self._resource = {**self._resource, **self._overlay}
            self._overlay = None
        return self._resource

    def inheriting(self, fields: Resource, as_head: dict[str, Any] | None = None) -> Entry:
        """This resource with `fields` (subject, effective[x], issued) given by the report or panel that
        holds it: the head at once, the resource when first read — most results are never read whole.
        `as_head`: `head_fields(fields)`, when the caller has it already."""
        changes = head_fields(fields) if as_head is None else as_head
        return Entry(msgspec.structs.replace(self.head, **changes), self.full_url, self._raw, self._resource,
                     self.cite, {**self._overlay, **fields} if self._overlay else fields)

    @property
    def ref(self) -> str | None:
        """How the report cites this resource: `Type/id`, else its urn:uuid fullUrl."""
        if self.cite is not None:
            return self.cite
        if self.head.id:
            return f"{self.head.resourceType}/{self.head.id}"
        if self.full_url and self.full_url.startswith("urn:uuid:"):
            return self.full_url
        return None


def reference_key(reference: str) -> str:
    """Normalise `Patient/1`, `http://x/fhir/Patient/1`, `Patient/1/_history/2` to `Patient/1`.

    urn:uuid references are returned unchanged.
    """
    if reference.startswith("urn:"):
        return reference
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else reference


# --------------------------------------------------------------------------- documents


class _BundleEntry(msgspec.Struct, gc=False):
    fullUrl: Any = None  # noqa: N815
    resource: msgspec.Raw = msgspec.Raw(b"null")


class Lazy(msgspec.Struct, gc=False):
    """A resource decoded lazily: its type; for a Bundle its entries (raw) and links; for an
    OperationOutcome its issues. Everything else in it is skipped unread."""

    resourceType: Any = None  # noqa: N815
    entry: list[_BundleEntry] | None = None
    link: Any = None
    issue: Any = None


class _ObservationEntry(msgspec.Struct, gc=False):
    fullUrl: Any = None  # noqa: N815
    resource: ObservationHead | None = None


class LazyObservations(msgspec.Struct, gc=False):
    """A Bundle of an Observation search, its entries decoded as ObservationHeads (see `load_hook`)."""

    resourceType: Any = None  # noqa: N815
    entry: list[_ObservationEntry] | None = None
    link: Any = None
    issue: Any = None


LAZY = (Lazy, LazyObservations)
_HEAD = msgspec.json.Decoder(EntryHead)
_LAZY = msgspec.json.Decoder(Lazy)
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError


@functools.cache
def _hook_decoder(prefetch_keys: tuple[str, ...], eager_keys: frozenset[str],
                  observation_keys: frozenset[str]) -> msgspec.json.Decoder[Any]:
    """A decoder for hook requests whose prefetch has these keys: the eager ones (the Patient) parsed
    whole, the Observation searches as ObservationHeads, the other searches lazily (raw entries);
    prefetch keys the service did not ask for are skipped."""

    def kind(key: str) -> Any:
        if key in eager_keys:
            return Any
        return (LazyObservations if key in observation_keys else Lazy) | None

    prefetch = msgspec.defstruct("Prefetch", [(key, kind(key), None) for key in prefetch_keys], gc=False)
    hook = msgspec.defstruct("Hook", [("hook", Any, None), ("hookInstance", Any, None), ("context", Any, None),
                                      ("fhirServer", Any, None), ("fhirAuthorization", Any, None),
                                      ("prefetch", prefetch | None, None)], gc=False)
    return msgspec.json.Decoder(hook)


def check_utf8(data: bytes) -> None:
    """JSON is UTF-8; msgspec does not decode what it skips, so the whole document is checked here."""
    if data.isascii():
        return  # the common case, checked without building a string
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not JSON (the text is not valid UTF-8)") from None


def load_json(data: bytes | msgspec.Raw) -> Any:
    """Any JSON document, fully parsed; InputError (saying what is wrong) when it is not JSON.

    A number no double holds (`1e400`, an integer of 310+ digits) is JSON, and orjson refuses the whole
    document for it: such a document is read by `_loads_wide` instead, that number as ±inf.
    """
    try:
        return orjson.loads(memoryview(data))
    except orjson.JSONDecodeError as exc:
        if not exc.msg.startswith(_OUT_OF_RANGE):
            raise InputError(f"not JSON ({exc.args[0].split(':')[0]})") from None
    return _loads_wide(bytes(data))


_OUT_OF_RANGE = "number is infinity"  # orjson's message for a number beyond a double's range


def _number(text: str) -> int | float:
    """A JSON integer as orjson reads it: exact within 64 bits, else the nearest double (±inf beyond a
    double's range). Never `int()` of a long digit string: Python refuses 4,300+ digits (ValueError),
    and no FHIR integer needs more than 10."""
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return float(text)


def _refuse_constant(name: str) -> Any:
    raise InputError(f"not JSON ({name} is not a JSON value)")


def _loads_wide(data: bytes) -> Any:
    """The standard library's parse of JSON that holds numbers beyond a double's range: those numbers
    read as ±inf, which no FHIR element allows, so the resource holding one is refused on its own (not
    valid FHIR) and every other field is read as usual. NaN and Infinity, which are not JSON, stay
    refused; InputError for anything unreadable."""
    try:
        return json.loads(data, parse_int=_number, parse_constant=_refuse_constant)
    except RecursionError:
        raise InputError("not JSON (nested too deeply)") from None
    except ValueError as exc:
        raise InputError(f"not JSON ({str(exc).split(':')[0]})") from None


def load_resource(data: bytes) -> Any:
    """A FHIR document: a Bundle lazily (as `Lazy`), anything else parsed whole (None for JSON null).

    Whatever the lazy decoder refuses — not an object, entries that are not objects, broken JSON — is
    parsed whole instead, so callers see the same values and the same errors as from `load_json`.
    """
    check_utf8(data)
    try:
        lazy = _LAZY.decode(data)
    except _DECODE_ERRORS:
        return load_json(data)
    return lazy if lazy.resourceType == "Bundle" else load_json(data)


def load_hook(data: bytes, prefetch_keys: tuple[str, ...], eager_keys: frozenset[str],
              observation_keys: frozenset[str] = frozenset()) -> Any:
    """A hook request as a dict, its prefetch searches decoded lazily, in one pass.

    A body the lazy decoder refuses (not an object, a prefetch value that is not an object) is parsed
    whole, for the request's validation and the gatherer to say what is wrong with it.
    """
    check_utf8(data)
    try:
        hook = _hook_decoder(prefetch_keys, eager_keys, observation_keys).decode(data)
    except _DECODE_ERRORS:
        return load_json(data)
    out = {name: getattr(hook, name) for name in hook.__struct_fields__ if getattr(hook, name) is not None}
    if hook.prefetch is not None:
        out["prefetch"] = {key: getattr(hook.prefetch, key) for key in prefetch_keys}
    return out


def _parse(raw: msgspec.Raw) -> Any:
    """One resource's JSON, already checked by msgspec's decoder (syntax) and `check_utf8`.

    The one thing msgspec lets through when skipping and orjson refuses is a number out of a double's
    range (`1e400`, an integer of 310 or 5,000 digits): `_loads_wide` reads it as ±inf, which the FHIR
    validation then refuses, so that resource alone is reported as not valid FHIR instead of failing the
    whole request late.
    """
    try:
        return orjson.loads(memoryview(raw))
    except orjson.JSONDecodeError:
        return _loads_wide(bytes(raw))


def head_and_resource(raw: msgspec.Raw) -> tuple[EntryHead | None, Resource | None]:
    """A resource's Head; and the parsed resource too when the head had to be read the tolerant way.

    (None, None) when the entry's resource is not a JSON object.
    """
    try:
        return _HEAD.decode(raw), None
    except msgspec.ValidationError:
        resource = _parse(raw)
        if not isinstance(resource, dict):
            return None, None
        return head_of(resource), resource


def is_bundle(value: Any) -> bool:
    """A Bundle, lazy or parsed."""
    if isinstance(value, LAZY):
        return bool(value.resourceType == "Bundle")
    return isinstance(value, dict) and value.get("resourceType") == "Bundle"


def is_lazy(value: Any) -> bool:
    return isinstance(value, LAZY)


def resource_type(value: Any) -> Any:
    """The resourceType of a lazy or parsed resource (None for anything else)."""
    if isinstance(value, LAZY):
        return value.resourceType
    return value.get("resourceType") if isinstance(value, dict) else None


def issues(value: Any) -> list[Any]:
    """An OperationOutcome's issues, lazy or parsed."""
    found = value.issue if isinstance(value, LAZY) else value.get("issue") if isinstance(value, dict) else None
    return found if isinstance(found, list) else []


def bundle_links(bundle: Lazy | LazyObservations | Resource) -> Any:
    return bundle.link if isinstance(bundle, LAZY) else bundle.get("link")


def bundle_size(bundle: Lazy | LazyObservations | Resource) -> int:
    """How many entries a Bundle holds (0 when `entry` is not a list: the Bundle's reader says why)."""
    items = bundle.entry if isinstance(bundle, LAZY) else bundle.get("entry")
    return len(items) if isinstance(items, list) else 0
