"""`GET /cds-services`: CDS Hooks discovery — the one service, its prefetch templates."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Response

from ...engine import fhir_wanted
from ...fhir.queries import prefetch_templates
from ...fhir.scopes import read_types, smart_scopes
from ...trials import Trial, load_trial
from ..deps import get_settings
from ..request import HOOK
from ..settings import Settings

SERVICE_ID = "axiom-eligibility"

router = APIRouter(tags=["cds-hooks"])


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def usage_requirements(trial: Trial) -> str:
    """What the EHR must grant the service's FHIR token, from the searches it makes."""
    types = read_types(fhir_wanted(trial))
    return (f"Read access to {', '.join(types[:-1])} and {types[-1]}: SMART scopes "
            f"{' '.join(smart_scopes(types))} (v1: {' '.join(smart_scopes(types, 1))}).")


def discovery(settings: Settings) -> dict[str, Any]:
    trial = load_trial(settings.trial)
    return {"services": [{
        "hook": HOOK,
        "id": SERVICE_ID,
        "title": f"{trial.short_title} trial eligibility ({trial.nct})",
        "description": (f"Checks the patient's chart against every eligibility criterion of {trial.title} "
                        f"({trial.nct}, trial record {trial.version}) and suggests a referral when the "
                        "patient may be eligible; shows nothing for patients without a sarcoma."),
        "prefetch": prefetch_templates(fhir_wanted(trial)),
        "usageRequirements": usage_requirements(trial),
    }]}


@router.get("/cds-services", summary="CDS Hooks discovery")
async def services(settings: Annotated[Settings, Depends(get_settings)]) -> Response:
    return json_response(discovery(settings))
