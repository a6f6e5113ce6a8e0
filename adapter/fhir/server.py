"""Pull one patient's record from a FHIR R4 server (the CLI's `--fhir-server` mode)."""

from __future__ import annotations

from datetime import date

import aiohttp

from ..errors import FhirServerError
from .client import SessionClient
from .gather import gather_record
from .queries import searches
from .record import PatientRecord
from .wanted import Wanted
from .wire import FHIR_ID


async def fetch_record(base_url: str, patient_id: str, wanted: Wanted, as_of: date | None,
                       token: str | None = None, timeout: float = 30.0) -> PatientRecord:
    """The patient's record; raises FhirServerError when the Patient itself cannot be had."""
    if not FHIR_ID.fullmatch(patient_id):
        raise FhirServerError(f"{patient_id!r} is not a FHIR id")
    try:
        async with aiohttp.ClientSession() as session:
            client = SessionClient(base_url, session, token, timeout)
            return await gather_record(patient_id, searches(patient_id, wanted, as_of), None, client,
                                       deadline_s=timeout * 4, wanted=wanted)
    except (aiohttp.InvalidURL, ValueError) as exc:
        raise FhirServerError(f"invalid FHIR server URL ({exc})") from None
