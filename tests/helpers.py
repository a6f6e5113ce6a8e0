"""Build one-patient Bundles in a line and evaluate them: the vocabulary of the criterion tests."""

from __future__ import annotations

import subprocess
from datetime import date, timedelta
from typing import Any

import orjson

from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle
from adapter.report.card import NOT_MET_HEADING, UNKNOWN_HEADING
from adapter.synth import fhir
from adapter.synth.fhir import ICD10, ICDO3, LOINC, SNOMED
from adapter.synth.population import Prevalence

AS_OF = date(2026, 11, 21)
# a generated population with many screen candidates in 1,500 patients (the conftest's `population`)
ENRICHED = Prevalence(cancer=0.06, sarcoma=0.04, asps=0.3, lookalike=0.03)
PID = "p1"
SUBJECT = f"Patient/{PID}"

__all__ = ["AS_OF", "ICD10", "ICDO3", "LOINC", "PID", "SNOMED", "SUBJECT", "asps", "days_ago", "evaluate", "lab"]


def days_ago(n: int) -> str:
    return (AS_OF - timedelta(days=n)).isoformat()


_counter = iter(range(1, 10**9))


def lab(loinc: str, value: float | None, unit: str | None = None, *, ucum: str | None = None,
        ago: int = 7, **kw: Any) -> dict[str, Any]:
    """A lab Observation for the test patient, `ago` days before AS_OF."""
    return fhir.observation(f"o{next(_counter)}", SUBJECT, loinc, days_ago(ago), value=value, unit=unit,
                            ucum=ucum, **kw)


def asps(**kw: Any) -> dict[str, Any]:
    return fhir.condition(f"c{next(_counter)}", SUBJECT, ICDO3, "9581/3", "Alveolar soft part sarcoma", **kw)


def evaluate(*resources: dict[str, Any], birth_date: str | None = "1990-05-02", gender: str | None = "female",
             as_of: date = AS_OF) -> EligibilityReport:
    """Evaluate the test patient with these resources (serialised to bytes, as the CLI reads them)."""
    bundle = fhir.bundle([fhir.patient(PID, birth_date, gender), *resources])
    return evaluate_bundle(orjson.dumps(bundle), as_of)


def stop(process: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """Stop a server process started by a test: SIGTERM, then SIGKILL if it does not exit in time."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace_s)


# The card's decisive sections: a list each, "- **label:** patient — needs requirement[; to settle: …]".
CARD_SECTIONS = {NOT_MET_HEADING: "not-met", UNKNOWN_HEADING: "unknown"}


def decisive_rows(detail: str) -> dict[str, tuple[str, str]]:
    """The card's decisive criteria as its Markdown source has them: label → (status, whole line)."""
    out: dict[str, tuple[str, str]] = {}
    section = None
    for line in detail.splitlines():
        if line in CARD_SECTIONS:
            section = CARD_SECTIONS[line]
        elif section and line.startswith("- **") and ":** " in line:
            out[line[4:line.index(":** ")]] = (section, line)
        else:
            section = None
    return out
