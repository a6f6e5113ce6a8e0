"""Results where FHIR lets them sit besides a standalone Observation (DESIGN.md "Real charts").

US Core, mCODE, Epic and Oracle Health feeds put lab results in a DiagnosticReport's `result`, in
`contained` resources, in an Observation panel's `hasMember`, and in a panel's `component`s. Each such
result becomes an `Entry` of its own, built as a resource with what it inherits filled in, so that the
mapping layer reads it like any Observation:
- a result or member without `subject` takes its report's (panel's); one without effective[x] takes the
  report's effective[x] (and its `issued` when it has none); a result about another patient stays out;
- a component whose code is wanted becomes an Observation of that code with the component's value[x],
  dataAbsentReason, referenceRange and interpretation, and the panel's status, subject, effective[x],
  method and issued. It is cited as the panel, as is a contained result as its container: the
  report's evidence must point at a resource that exists.
Only resources that can hold results are looked at (a DiagnosticReport; an Observation with `hasMember`,
contained Observations or a wanted component), so thousands of plain Observations cost nothing more.
The outcome does not depend on the order of the Bundle: containers are visited in the order of their
citations, and a result is claimed once — a result both standalone and in a report is one result.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .wanted import Wanted
from .wire import Entry, Head, Resource, head_fields, head_of, reference_key

# (subject reference or None, fullUrl of the resource holding it) → True: this patient, False: another,
# None: nobody
Whose = Callable[[str | None, str | None], bool | None]

EFFECTIVE = ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "effectiveTiming")
FROM_PANEL = ("id", "status", "subject", "effectiveDateTime", "effectivePeriod", "effectiveInstant",
              "effectiveTiming", "issued", "method")
FROM_COMPONENT = ("dataAbsentReason", "referenceRange", "interpretation")
# A report or panel in one of these statuses (FHIR R4 DiagnosticReport/Observation status) was never
# valid: it gives its results no subject or date. Results keep their own status either way.
VOID_STATUS = frozenset({"entered-in-error", "cancelled"})


def is_container(head: Head, wanted: Wanted) -> bool:
    """Whether the resource may hold results elsewhere than at its top level."""
    if head.resourceType == "DiagnosticReport":
        return True
    if head.resourceType != "Observation" or not head.may_hold_results():
        return False
    return bool(head.hasMember) or head.may_contain_observations() or wanted.any_of(head.component_codings())


@dataclass
class Expansion:
    entries: list[Entry] = field(default_factory=list)  # results found inside containers, wanted codes only
    replaced: set[int] = field(default_factory=set)  # id() of Bundle entries an expanded copy stands for
    foreign: int = 0  # contained results of wanted codes about another patient


@dataclass
class _Node:
    """A container being read: the resource (with what it inherited), how it is cited, its fullUrl, and
    the resource whose `contained` its `#id` references point into (itself, or the one holding it)."""

    resource: Resource
    cite: str | None
    full_url: str | None
    holder: Resource
    _gifts: dict[tuple[bool, bool, bool], tuple[Resource, dict[str, Any]]] = field(default_factory=dict)

    def gives(self, subject: bool, effective: bool, issued: bool) -> tuple[Resource, dict[str, Any]]:
        """What it gives a result lacking these: the elements, and the same as head fields (once per kind
        of result: a report's results mostly lack the same things)."""
        key = (subject, effective, issued)
        if key not in self._gifts:
            r = self.resource
            given: Resource = {"subject": r["subject"]} if subject and _subject(r) is not None else {}
            if effective:
                given.update({k: r[k] for k in EFFECTIVE if k in r})
                if issued and "issued" in r:
                    given["issued"] = r["issued"]
            self._gifts[key] = (given, head_fields(given))
        return self._gifts[key]


def _order(entry: Entry) -> tuple[Any, ...]:
    """A sort key that does not depend on where the entry sits in the Bundle."""
    h = entry.head
    period = h.effectivePeriod
    return (entry.ref or entry.full_url or "", h.effectiveDateTime or "", h.effectiveInstant or "",
            (period.start or "", period.end or "") if period is not None else ("", ""),
            h.subject_reference() or "", tuple(h.references()))


def _references(resource: Resource) -> list[str]:
    """`result` (DiagnosticReport) and `hasMember` (Observation) references, in order."""
    out = []
    for name in ("result", "hasMember"):
        refs = resource.get(name)
        for ref in refs if isinstance(refs, list) else ():
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                out.append(ref["reference"])
    return out


def _contained(resource: Resource, local_id: str) -> Resource | None:
    found = resource.get("contained")
    for item in found if isinstance(found, list) else ():
        if isinstance(item, dict) and item.get("id") == local_id and item.get("resourceType") == "Observation":
            return item
    return None


def _subject(resource: Resource) -> str | None:
    subject = resource.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return ref if isinstance(ref, str) else None


def _codings(concept: Any) -> Iterable[tuple[str, str]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for c in codings if isinstance(codings, list) else ():
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str):
            yield c["system"], c["code"]


class _Expander:
    def __init__(self, observations: list[Entry], whose: Whose, wanted: Wanted) -> None:
        self.observations = observations
        self.whose = whose
        self.wanted = wanted
        self.out = Expansion()
        self.claimed: set[int] = set()  # results that took their container's context (id of entry or dict)
        self.visited: set[int] = set()  # containers read
        self._index: dict[str, Entry] | None = None

    def lookup(self, reference: str) -> Entry | None:
        """The Observation of the Bundle a reference points at: `Observation/id`, absolute, or its fullUrl."""
        if self._index is None:
            self._index = {}
            for entry in self.observations:
                keys = [f"Observation/{entry.head.id}"] if entry.head.id else []
                if entry.full_url and entry.full_url.startswith("urn:"):
                    keys.append(entry.full_url)
                elif entry.full_url and not keys:  # an absolute fullUrl names the same as its id
                    keys.append(reference_key(entry.full_url))
                for key in keys:
                    other = self._index.setdefault(key, entry)
                    if other is not entry and _order(entry) < _order(other):  # one id twice: not by position
                        self._index[key] = entry
        if reference.startswith("Observation/") and reference.count("/") == 1:
            return self._index.get(reference)  # the usual form, already a key
        return self._index.get(reference if reference.startswith("urn:") else reference_key(reference))

    def root(self, entry: Entry) -> None:
        """Read a container that is the patient's, and everything it holds."""
        if id(entry) in self.visited:
            return
        self.visited.add(id(entry))
        if self.whose(entry.head.subject_reference(), entry.full_url) is not True:
            return  # another patient's report, or nobody's: what it holds is not attributed through it
        queue = deque([_Node(entry.resource, entry.ref, entry.full_url, entry.resource)])
        while queue:
            node = queue.popleft()
            status = node.resource.get("status")
            if isinstance(status, str) and status in VOID_STATUS:
                continue
            if node.resource.get("resourceType") == "Observation":
                self.components(node)
            for reference in _references(node.resource):
                child = self.child(node, reference)
                if child is not None:
                    queue.append(child)

    def child(self, node: _Node, reference: str) -> _Node | None:
        """One result of `node`: an expanded copy when it inherits anything (claimed once, by the first
        container with something to give); the node to read next when it is itself a container."""
        contained = reference.startswith("#")
        if contained:
            found = _contained(node.holder, reference[1:])
            if found is None:
                return None
            # resolved as its container's references are (FHIR R4: contained resources share its fullUrl)
            source, key = Entry(head_of(found), node.full_url, resource=found, cite=node.cite), id(found)
        else:
            target = self.lookup(reference)
            if target is None:
                return None  # not in the Bundle (a search that did not _include it)
            source, key = target, id(target)
        head = source.head
        read = self.wanted.code_of(head) is not None
        container = is_container(head, self.wanted)
        if key in self.claimed or not (read or container):
            return None  # taken, or nothing anyone reads: left unparsed
        owner = self.whose(head.subject_reference(), source.full_url)
        if owner is False:
            if contained and read:
                self.out.foreign += 1  # (a Bundle entry about another patient is counted with the Bundle)
            self.claimed.add(key)
            return None
        undated = head.effective_text() is None and head.effectiveTiming is None
        given, as_head = node.gives(owner is None, undated, head.issued is None)
        if owner is None and "subject" not in given:
            return None  # nobody's, and the container has no subject to give
        if not given and not contained:  # read as it stands, where it stands
            if id(source) in self.visited or not container:
                return None
            self.visited.add(id(source))
            return _Node(source.resource, source.ref, source.full_url, source.resource)
        self.claimed.add(key)
        copy = source.inheriting(given, as_head)
        if not contained:
            self.out.replaced.add(id(source))
            self.visited.add(id(source))
        if read:
            self.out.entries.append(copy)
        if not container:
            return None
        return _Node(copy.resource, copy.ref, copy.full_url, node.holder if contained else copy.resource)

    def components(self, node: _Node) -> None:
        """A panel's components of wanted codes, each as an Observation of its own, cited as the panel."""
        parts = node.resource.get("component")
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict) or not self.wanted.any_of(_codings(part.get("code"))):
                continue
            resource: Resource = {"resourceType": "Observation", "code": part["code"]}
            resource.update({k: node.resource[k] for k in FROM_PANEL if k in node.resource})
            resource.update({k: v for k, v in part.items() if k.startswith("value") or k in FROM_COMPONENT})
            self.out.entries.append(Entry(head_of(resource), node.full_url, resource=resource, cite=node.cite))


def expand(containers: list[Entry], observations: list[Entry], whose: Whose, wanted: Wanted) -> Expansion:
    """The results held by `containers` (see `is_container`), resolved among the Bundle's `observations`.

    Reports are read first, then panels that no container names, then the rest (panels of panels,
    cycles): a result takes the context of the first container that claims it.
    """
    x = _Expander(observations, whose, wanted)
    ordered = sorted(containers, key=_order)
    panels = {id(e) for e in ordered if e.head.resourceType == "Observation"}
    named = set()
    for entry in ordered if panels else ():  # which panels are held by another container
        for reference in entry.head.references():
            if not reference.startswith("#") and (target := x.lookup(reference)) is not None:
                named.add(id(target))
    for entry in ordered:
        if entry.head.resourceType == "DiagnosticReport":
            x.root(entry)
    for entry in ordered:
        if id(entry) not in named:
            x.root(entry)
    for entry in ordered:
        x.root(entry)
    return x.out
