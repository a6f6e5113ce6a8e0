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
    lines = [f"AXIOM eligibility for {0} demo patients, evaluated on {as_of.isoformat()}", ""]
    header = f"{'patient file':<44} {'cohort':<14} {'overall':<16} not met / to review"
    lines += [header, "-" * len(header)]
    shown = None
    cases = scenario_cases(as_of)
    for case in cases:
        path = out_dir / f"{case.name}.json"
        data = orjson.dumps(case.bundle, option=orjson.OPT_INDENT_2)
        path.write_bytes(data)
        report = evaluate_bundle(data, as_of)
        failing = [c.id for c in report.criteria if c.status == "not-met"]
        unknown = [c.id for c in report.criteria if c.status == "unknown"]
        detail = ", ".join(failing) + (" / " if failing and unknown else "") + ", ".join(unknown)
        lines.append(f"{path.name:<44} {report.cohort or '-':<14} {report.overall:<16} {detail or '-'}")
        if shown is None and report.overall == "likely-eligible":
            shown = (path, report)
    lines[0] = lines[0].format(len(cases))
    if shown:
        lines += ["", f"One report in full ({shown[0]}):", "", render(shown[1])]
    lines += ["", f"Bundles written to {out_dir}/ — try:",
              f"  .venv/bin/axiom-cds evaluate {out_dir}/<file>.json --as-of {as_of.isoformat()} --format text"]
    return "\n".join(lines)
