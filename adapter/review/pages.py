"""Server-rendered pages: Jinja2 with autoescape on (every value from the chart or the EHR is text, never
markup), one stylesheet served by the app itself, and the headers every review response carries.

Content-Security-Policy: nothing may load but our stylesheet (`default-src 'none'; style-src 'self'`):
no script at all, no inline style, no image, no connection; forms post only to this app; framing only
by the origins configured in AXIOM_REVIEW_FRAME_ANCESTORS ('none' by default). Pages hold PHI: never
cached, never sent as a Referer.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2
from fastapi import Response
from fastapi.responses import HTMLResponse


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("adapter.review", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


STATIC = {"review.css": "text/css", "favicon.svg": "image/svg+xml"}  # everything a page loads


@cache
def static(name: str) -> bytes:
    return resources.files("adapter.review").joinpath(f"static/{name}").read_bytes()


def security_headers(frame_ancestors: tuple[str, ...]) -> dict[str, str]:
    ancestors = " ".join(frame_ancestors) or "'none'"
    headers = {
        "Content-Security-Policy": f"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                   f"frame-ancestors {ancestors}; base-uri 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if not frame_ancestors:
        headers["X-Frame-Options"] = "DENY"  # for browsers that predate frame-ancestors
    return headers


def page(template: str, status_code: int = 200, **context: Any) -> Response:
    return HTMLResponse(environment().get_template(template).render(**context), status_code=status_code)
