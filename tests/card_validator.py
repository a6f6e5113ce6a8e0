"""CDS Hooks 2.0 card conformance, reusable on every card the tests produce.

Checks what the spec demands (shared/reference/cds-hooks.md): required fields, summary under 140
characters, indicator values, selectionBehavior with suggestions, link types, override reasons as
Codings with display, and no null / empty optional values anywhere.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

INDICATORS = {"info", "warning", "critical"}
SELECTION = {"at-most-one", "any"}
ACTIONS = {"create", "update", "delete"}


def _no_empty(value: Any, path: str, problems: list[str]) -> None:
    if value is None or value in ("", [], {}):
        problems.append(f"{path} is null or empty")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_empty(v, f"{path}.{k}", problems)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_empty(v, f"{path}[{i}]", problems)


def card_problems(card: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    _no_empty(card, "card", problems)
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary:
        problems.append("summary missing")
    elif len(summary) >= 140:
        problems.append(f"summary is {len(summary)} characters (must be under 140)")
    if card.get("indicator") not in INDICATORS:
        problems.append(f"indicator {card.get('indicator')!r}")
    source = card.get("source")
    if not isinstance(source, dict) or not source.get("label"):
        problems.append("source.label missing")
    elif "topic" in source and not {"code", "system"} <= set(source["topic"]):
        problems.append("source.topic is not a Coding")
    if "uuid" in card:
        uuid.UUID(str(card["uuid"]))
    suggestions = card.get("suggestions", [])
    if suggestions and card.get("selectionBehavior") not in SELECTION:
        problems.append("suggestions without a valid selectionBehavior")
    for s in suggestions:
        if not s.get("label"):
            problems.append("suggestion without label")
        for a in s.get("actions", []):
            if a.get("type") not in ACTIONS or not a.get("description"):
                problems.append(f"action {a.get('type')!r} lacks type or description")
            if a.get("type") in ("create", "update") and not isinstance(a.get("resource"), dict):
                problems.append("create/update action without a resource")
    for r in card.get("overrideReasons", []):
        if not (r.get("code") and r.get("system") and r.get("display")):
            problems.append(f"override reason {r} is not a Coding with display")
    for link in card.get("links", []):
        if not (link.get("label") and link.get("url")) or link.get("type") not in ("absolute", "smart"):
            problems.append(f"link {link} lacks label/url/type")
        if "appContext" in link and link.get("type") != "smart":
            problems.append("appContext on a non-smart link")
        if link.get("type") == "absolute" and not str(link.get("url", "")).startswith(("http://", "https://")):
            problems.append("absolute link is not an absolute URL")
    return problems


def assert_valid_response(body: dict[str, Any]) -> None:
    assert set(body) <= {"cards", "systemActions"}, body.keys()
    assert isinstance(body.get("cards"), list)
    for card in body["cards"]:
        problems = card_problems(card)
        assert not problems, problems


def without_uuids(response: dict[str, Any]) -> dict[str, Any]:
    """A CDS Hooks response minus what is random per response (card and suggestion uuids), to compare two."""
    copy: dict[str, Any] = json.loads(json.dumps(response))
    for card in copy["cards"]:
        card.pop("uuid", None)
        for suggestion in card.get("suggestions", []):
            suggestion.pop("uuid", None)
    return copy
