"""uvicorn's httptools protocol with head limits (protocol.py); a module of its own because httptools is
optional (uvicorn[standard]) and importing uvicorn's httptools protocol without it fails."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .protocol import HeadLimits


class GuardedHttpToolsProtocol(HeadLimits, HttpToolsProtocol):  # type: ignore[misc]  # (HeadLimits is typed as h11)
    """httptools has no head size limit of its own: HeadLimits is the only one."""
