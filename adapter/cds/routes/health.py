"""`GET /healthz`: liveness for orchestrators — open, no token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from ... import __version__
from ...trials import load_trial
from ..deps import get_settings
from ..settings import Settings
from .discovery import json_response

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(settings: Annotated[Settings, Depends(get_settings)]) -> Response:
    return json_response({"status": "ok", "version": __version__, "trial": load_trial(settings.trial).version})
