"""`axiom-cds sandbox --check` (what `make demo` runs): real servers, real hooks, the designed verdicts.

Run as a subprocess, exactly as a newcomer runs it, so start-up, signal handling and shutdown of both
servers are part of what is tested; the hooks carry only `fhirServer`, so the FHIR fallback is too.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapter.fhir_sandbox import free_port

pytestmark = pytest.mark.fhir_server

ROOT = Path(__file__).resolve().parents[1]


def test_sandbox_check_shows_the_expected_cards(tmp_path: Path) -> None:
    fhir_port, port = free_port(), free_port()
    result = subprocess.run(
        [sys.executable, "-m", "adapter.cli", "sandbox", "--check", "--dir", str(tmp_path), "--as-of", "2026-11-21",
         "--fhir-port", str(fhir_port), "--port", str(port)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"http://127.0.0.1:{port}/cds-services" in out
    assert f"http://127.0.0.1:{fhir_port}/fhir" in out
    lines = out.splitlines()

    def card_after(patient: str, designed: str) -> str:
        start = lines.index(f"  Patient/{patient} (designed: {designed})")
        return "\n".join(lines[start + 1:start + 4])

    eligible = card_after("scn-asps-likely-eligible", "likely-eligible")
    assert 'card: "AXIOM: likely eligible — ASPS cohort"' in eligible
    assert "[OK]" in eligible and "not met:" not in eligible
    low = card_after("scn-asps-low-platelets-not-eligible", "not-eligible")
    # the summary names the deciding value and the threshold; the failing row names the chart's value
    assert 'card: "AXIOM: not eligible — platelets 85,000/µL (needs ≥ 100,000/µL)"' in low
    assert "not met: platelets: 85 K/µL" in low and "≥ 100,000/µL" in low
    assert "sandbox check passed" in out
    # the hook bodies it used are left for curl, and carry fhirServer without prefetch
    body = (tmp_path / "check" / "hooks" / "asps-likely-eligible.json").read_text()
    assert f'"fhirServer": "http://127.0.0.1:{fhir_port}/fhir"' in body and "prefetch" not in body


def test_a_new_sandbox_session_starts_without_the_last_sessions_dismissals(tmp_path: Path) -> None:
    from adapter.sandbox import feedback_database
    from adapter.store import Feedback, Store

    db = feedback_database(tmp_path, keep=False)
    store = Store(f"sqlite:///{db}")
    store.add_feedback([Feedback("0b0e7b5e-7d4b-4c4f-9a37-2f1f9c1d7a10", "overridden",
                                 datetime(2026, 11, 21, tzinfo=UTC))])
    store.close()
    assert Store(f"sqlite:///{feedback_database(tmp_path, keep=True)}").feedback_count() == 1
    assert Store(f"sqlite:///{feedback_database(tmp_path, keep=False)}").feedback_count() == 0


def test_the_sandbox_log_says_when_a_card_was_held_back() -> None:
    from adapter.sandbox import HookLine

    def line(**fields: object) -> str:
        record = logging.LogRecord("axiom_cds.hook", logging.INFO, __file__, 1, "hook evaluated", None, None)
        record.__dict__.update(fields)
        return HookLine().format(record)

    shown = line(verdict="likely-eligible", cards=1, suppressed=False, total_ms=12)
    assert "verdict=likely-eligible cards=1" in shown and "no card" not in shown
    held = line(verdict="likely-eligible", cards=0, suppressed=True, total_ms=9)
    assert "cards=0" in held and "overridden recently" in held
