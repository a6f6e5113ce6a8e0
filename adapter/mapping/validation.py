"""FHIR R4 validation (fhir.resources R4B models) of the elements read, with the repeated parts validated once.

fhir.resources validates each nested element by a Python round trip through its own model, which makes
validation most of an evaluation's time. Many elements recur unchanged across resources and patients —
an Observation's `code` and `subject`, a Condition's `clinicalStatus` — and their validity depends on
their content alone, so each distinct content is validated once per process and its model instance
reused: fhir.resources takes an instance of the element's model as already valid (fhir_core
`fhir_model_validator`) and runs the resource's own checks (required elements, choice types) on it as
on the dict. The outcome is the same; whenever anything fails, the whole resource is validated again as
given, so the error (and the reason shown to a user) is exactly what the model says for it.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from functools import cache
from typing import Any, Union, get_args, get_origin

import orjson
from pydantic import ValidationError

MAX_CACHED = 4096  # distinct element contents kept per process (each a small model instance)

_parts: dict[tuple[type[Any], str, bytes], Any] = {}
_outcomes: dict[tuple[type[Any], bytes], str | None] = {}


def _key(value: Any) -> bytes | None:
    """The content as canonical bytes, or None when it cannot be one (e.g. an integer beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return None


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= MAX_CACHED:
        cache.clear()
    cache[key] = value


def _field_types(annotation: Any) -> Iterator[Any]:
    args = get_args(annotation)
    if not args:
        yield annotation
    for arg in args:
        yield from _field_types(arg)


def load_element_models(*models: type[Any]) -> frozenset[type[Any]]:
    """Import the model class of every element type these models can hold, and theirs (49 classes for
    Patient, Observation and Condition), and return them. fhir.resources imports each the first time a
    resource holds that element — 12 ms for a first `meta`, paid in a hook or by each screen worker —
    so a long-lived process loads them when it warms up."""
    seen: set[type[Any]] = set()
    todo = list(models)
    while todo:
        model = todo.pop()
        for field in model.model_fields.values():
            for kind in _field_types(field.annotation):
                if hasattr(kind, "get_model_klass"):
                    element = kind.get_model_klass()
                    if element not in seen:
                        seen.add(element)
                        todo.append(element)
    return frozenset(seen)


@cache
def _element_model(model: Any, name: str) -> Any | None:
    """The model class of the single complex element `name` (`X` or `X | None`); None for anything else."""
    annotation = model.model_fields[name].annotation
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else None
    return annotation.get_model_klass() if hasattr(annotation, "get_model_klass") else None


def _part(model: Any, name: str, value: dict[str, Any]) -> Any | None:
    """The validated model instance of element `name` (a single complex element) with this content, or
    None when it is not valid (or its content has no canonical form)."""
    element = _element_model(model, name)
    key = _key(value)
    if element is None or key is None:
        return None
    found = _parts.get((model, name, key))
    if found is None:
        try:
            found = element.model_validate(value)
        except ValidationError:
            return None
        _remember(_parts, (model, name, key), found)
    return found


def validate(model: type[Any], doc: dict[str, Any], shared: tuple[str, ...]) -> None:
    """`model.model_validate(doc)`: raises its ValidationError, the same errors. `shared` names single
    complex elements (not lists) whose content recurs across resources."""
    fast = dict(doc)
    for name in shared:
        value = doc.get(name)
        if isinstance(value, dict):
            instance = _part(model, name, value)
            if instance is None:
                break  # not valid on its own: the resource is validated as given, below
            fast[name] = instance
    else:
        try:
            model.model_validate(fast)
        except ValidationError:
            pass
        else:
            return
    model.model_validate(doc)  # the authority: raises the error as the resource as given has it


def first_problem(model: type[Any], doc: dict[str, Any], describe: Any) -> str | None:
    """None when `doc` is valid for `model`, else `describe(ValidationError)`; cached by content, for
    elements that recur whole (a lab's reference range)."""
    key = _key(doc)
    if key is not None and (model, key) in _outcomes:
        return _outcomes[(model, key)]
    try:
        model.model_validate(doc)
        outcome = None
    except ValidationError as exc:
        outcome = str(describe(exc))
    if key is not None:
        _remember(_outcomes, (model, key), outcome)
    return outcome
