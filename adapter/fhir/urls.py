"""FHIR base URLs: which the service accepts, and what of a URL it ever shows.

A FHIR base URL is `http{s}://server{/path}` (FHIR R4 RESTful API, "Service Base URL"). A user name
or password in it would be sent with every request and copied wherever the URL goes — logs, audit
rows, the shared circuit breaker's message to other callers; a query string may hold a key just as
well. The EHR's credential is the bearer token, which is sent and never logged. So such URLs are
refused where they come in (hook, CLI, allow-list), and `shown` is what messages, logs and rows carry.
"""

from __future__ import annotations

from yarl import URL


def base_url_problem(url: str) -> str | None:
    """Why `url` is not a usable FHIR base URL, in words that do not repeat it; None when it is."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not hold spaces or control characters (a URL is percent-encoded)"
    try:
        parsed = URL(url)
    except ValueError:
        return "is not a URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "is not an absolute http(s) URL"
    if has_userinfo(url):
        return "must not hold a user name or password (the FHIR credential is the bearer token)"
    if "?" in url:
        return "must not have a query string (a FHIR base URL is http(s)://server/path)"
    if "#" in url:
        return "must not have a fragment (a FHIR base URL is http(s)://server/path)"
    return None


def has_userinfo(url: str) -> bool:
    """Whether the URL's authority holds a user name or password (even an empty one: `http://@host`)."""
    authority = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return "@" in authority


def shown(url: str) -> str:
    """`url` without what may be secret (user name, password, query string, fragment)."""
    try:
        parsed = URL(url)
    except ValueError:
        return "(not a URL)"
    if not parsed.is_absolute():
        return "(not an absolute URL)"
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def names(reference: str, base_url: str, key: str) -> bool:
    """Whether the absolute `reference` is `key` (`Type/id`) on the server at `base_url`: same scheme,
    host and port, path `{base path}/{key}` (a trailing `/_history/{version}` aside), nothing else."""
    try:
        ref, base = URL(reference), URL(base_url)
    except ValueError:
        return False
    if not ref.is_absolute() or has_userinfo(reference) or "?" in reference or "#" in reference \
            or "%2f" in ref.raw_path.lower():
        return False
    parts = ref.path.rstrip("/").split("/")
    if len(parts) > 2 and parts[-2] == "_history":
        parts = parts[:-2]
    return (ref.scheme, ref.host, ref.port) == (base.scheme, base.host, base.port) and \
        "/".join(parts) == f"{base.path.rstrip('/')}/{key}"
