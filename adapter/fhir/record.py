"""PatientRecord: one patient's raw FHIR resources, attributed to that patient and nothing else.

Resources stay raw here (fhir/wire.py: a head of a few elements, the rest parsed when first read):
validating thousands of Observations with pydantic costs ~30× a JSON parse, so the mapping layer
filters by code first and validates only what it keeps. What this module guarantees is attribution:
a resource whose subject is another patient, or no patient, is dropped and reported, never mixed in.
Results held by reports and panels (fhir/expand.py) are attributed through what holds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from ..errors import InputError
from .elements import unreadable_concept
from .expand import expand, is_container
from .urls import names
from .wanted import Wanted
from .wire import Entry, Resource, reference_key

CLINICAL_TYPES = ("Observation", "Condition", "MedicationStatement", "MedicationRequest",
                  "MedicationAdministration")
# DiagnosticReports are kept until their results are found (fhir/expand.py), not in the record
KEPT_TYPES = (*CLINICAL_TYPES, "Medication", "DiagnosticReport")


@dataclass
class PatientRecord:
    patient: Resource
    patient_ref: str
    resources: dict[str, list[Entry]] = field(default_factory=dict)
    medications: dict[str, Resource] = field(default_factory=dict)  # Medication by reference key
    dropped: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # search key → why it could not be had

    def of_type(self, resource_type: str) -> list[Entry]:
        return self.resources.get(resource_type, [])


def patient_keys(patient: Resource, full_url: str | None) -> frozenset[str]:
    """Every reference string that can point at this patient."""
    keys = set()
    pid = patient.get("id")
    if isinstance(pid, str) and pid:
        keys.add(f"Patient/{pid}")
    if full_url:
        keys.add(full_url)
    return frozenset(keys)


def first_error(exc: ValidationError) -> str:
    """A fhir.resources validation failure in one line: where, and what is wrong there."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}"


def validate_patient(patient: Resource) -> None:
    # fhir.resources reads "true" and "yes" as true; the engine reads the JSON (a death is no referral)
    if "deceasedBoolean" in patient and not isinstance(patient["deceasedBoolean"], bool):
        raise InputError("the Patient resource is not valid FHIR R4 (deceasedBoolean: a JSON boolean, true or "
                         "false, is expected)")
    try:
        Patient.model_validate(patient)
    except ValidationError as exc:
        raise InputError(f"the Patient resource is not valid FHIR R4 ({first_error(exc)})") from None


def patient_ref(patient: Resource, full_url: str | None) -> str:
    pid = patient.get("id")
    if isinstance(pid, str) and pid:
        return f"Patient/{pid}"
    if full_url and full_url.startswith("urn:uuid:"):
        return full_url
    if full_url and "/Patient/" in full_url:
        return reference_key(full_url)
    raise InputError("the Patient has no id and no urn:uuid fullUrl, so nothing can reference it")


def _absolute(url: str | None) -> str | None:
    """A RESTful absolute URL `base/Type/id` without its `_history/version`; None for anything else."""
    if not url or "://" not in url:
        return None
    parts = url.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts) if len(parts) >= 5 else None  # scheme, "", host, Type, id


class _Whose:
    """Whether a subject reference is this patient (True), another (False), or there is none (None).

    When the Patient arrived under an absolute fullUrl, references are resolved as FHIR R4 resolves them
    in a Bundle ("Resolving references in Bundles"): an absolute one must name that URL, and a relative
    one resolves against the server base of the fullUrl of the resource holding it — `Patient/23` in an
    entry of another server is that server's patient 23. Otherwise `Patient/id` or the Patient's urn:uuid
    fullUrl names her, and an absolute reference only as `{server}/Patient/id` on the FHIR server in use
    (`server`): `https://other.example/fhir/Patient/id` is another server's patient of that id, and with
    no server and no absolute fullUrl of hers, nothing says an absolute reference is her.
    """

    def __init__(self, keys: set[str], patient_url: str | None, server: str | None = None,
                 ref: str | None = None) -> None:
        self.keys = keys
        self.url = _absolute(patient_url)
        self.prefix = self.url.rsplit("/", 2)[0] + "/" if self.url else None
        self.server = server
        self.ref = ref  # `Patient/id`, to be found on `server`
        self.seen: dict[str, bool] = {}  # a record repeats one subject string thousands of times

    def __call__(self, subject: str | None, full_url: str | None = None) -> bool | None:
        if subject is None:
            return None
        if self.prefix is not None and not subject.startswith(("urn:", "#")):
            if "://" in subject:
                return _absolute(subject) == self.url
            if full_url is not None and "://" in full_url and not self._on_base(full_url):
                return False
        elif "://" in subject and not subject.startswith("urn:"):
            hers = self.seen.get(subject)
            if hers is None:
                hers = self.seen[subject] = self.server is not None and self.ref is not None \
                    and names(subject, self.server, self.ref)
            return hers
        known = self.seen.get(subject)
        if known is None:
            known = self.seen[subject] = reference_key(subject) in self.keys
        return known

    def _on_base(self, full_url: str) -> bool:
        """Whether `base/Type/id[/_history/v]` has the Patient's base."""
        assert self.prefix is not None
        return full_url.startswith(self.prefix) and full_url.count("/", len(self.prefix)) in (1, 3)


def assemble(patient: Resource, patient_full_url: str | None, entries: Iterable[Entry],
             wanted: Wanted, server: str | None = None) -> PatientRecord:
    """Attribute entries to the patient; keep Observations of wanted codes (standalone, or held by a
    report or panel) and the other clinical types. `server`: the FHIR base the record came from (a
    hook's fhirServer, `--fhir-server`), the one base of absolute references to her."""
    validate_patient(patient)
    ref = patient_ref(patient, patient_full_url)
    whose = _Whose({reference_key(k) for k in patient_keys(patient, patient_full_url)} | {ref}, patient_full_url,
                   server, ref if ref.startswith("Patient/") else None)
    record = PatientRecord(patient=patient, patient_ref=ref)
    foreign = 0
    orphans: list[Entry] = []
    observations: list[Entry] = []  # every one, for the references of reports and panels
    containers: list[Entry] = []
    unreadable: list[str] = []
    for entry in entries:
        head = entry.head
        rtype = head.resourceType
        if rtype == "Medication":
            for key in filter(None, (entry.ref, entry.full_url)):
                record.medications[reference_key(key)] = entry.resource
            continue
        if rtype == "DiagnosticReport":
            containers.append(entry)
            continue
        if rtype not in CLINICAL_TYPES:
            continue
        if rtype == "Observation":
            observations.append(entry)
            if is_container(head, wanted):
                containers.append(entry)
            if wanted.code_of(head) is None:
                # a `code` that is not a CodeableConcept (coding an object, not a list): what it measures
                # cannot be told; said, not silently passed over (rare, so the resource is parsed to tell)
                if head.code is None and whose(head.subject_reference(), entry.full_url) \
                        and unreadable_concept(entry.resource.get("code")):
                    unreadable.append(entry.ref or "an Observation")
                continue
        owner = whose(head.subject_reference(), entry.full_url)
        if owner is None:
            orphans.append(entry)
        elif owner:
            record.resources.setdefault(rtype, []).append(entry)
        else:
            foreign += 1
    if containers:
        found = expand(containers, observations, whose, wanted)
        foreign += found.foreign
        if found.replaced:
            kept = record.of_type("Observation")
            record.resources["Observation"] = [e for e in kept if id(e) not in found.replaced]
            orphans = [e for e in orphans if id(e) not in found.replaced]
        if found.entries:
            record.resources.setdefault("Observation", []).extend(found.entries)
    if foreign:
        record.dropped.append(f"{foreign} resource(s) about another patient ignored")
    if orphans:
        record.dropped.append(f"{len(orphans)} resource(s) without a subject ignored")
    if unreadable:
        record.dropped.append(f"{', '.join(sorted(unreadable)[:5])}{' …' if len(unreadable) > 5 else ''}: "
                              "code is not a readable CodeableConcept (coding must be a list), not read")
    return record
