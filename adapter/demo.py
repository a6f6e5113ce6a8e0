"""`axiom-cds demo`: write the demo patients as FHIR Bundles and evaluate each one.

The demo set is the generator's named scenarios (deterministic), so what the README promises is what
a newcomer sees. Bundles land in a directory the user can open and re-run `evaluate` on.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson

from .engine import evaluate_bundle
from .report.text import render
from .synth.generator import scenario_cases


def run_demo(out_dir: Path, as_of: date) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = scenario_cases(as_of)
    lines = [f"AXIOM eligibility for {len(cases)} demo patients, evaluated on {as_of.isoformat()}", ""]
    header = f"{'patient file':<40} {'cohort':<14} {'overall':<16} why"
    lines += [header, "-" * len(header)]
    shown = None
    for case in cases:
        path = out_dir / f"{case.name}.json"
        data = orjson.dumps(case.bundle, option=orjson.OPT_INDENT_2)
        path.write_bytes(data)
        report = evaluate_bundle(data, as_of)
        failing = [c.id for c in report.criteria if c.status == "not-met"]
        unknown = [c.id for c in report.criteria if c.status == "unknown"]
        why = "; ".join(part for part in (
            f"not met: {', '.join(failing)}" if failing else "",
            f"to review: {', '.join(unknown)}" if unknown else "") if part)
        lines.append(f"{path.name:<40} {report.cohort or '-':<14} {report.overall:<16} {why or '-'}")
        if shown is None and report.overall == "likely-eligible":
            shown = (path, report)
    if shown:
        lines += ["", f"One report in full ({shown[0]}):", "", render(shown[1])]
    lines += ["", f"Bundles written to {out_dir}/ — try:",
              f"  .venv/bin/axiom-cds evaluate {out_dir}/<file>.json --as-of {as_of.isoformat()} --format text"]
    return "\n".join(lines)
