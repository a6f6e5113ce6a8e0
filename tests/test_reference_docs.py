"""docs/reference/ is generated from mappings/ (`axiom-cds reference`) and must never drift from it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter import reference, tables
from adapter.cli import app
from adapter.reference.markdown import NOTICE
from adapter.trials import load_trial

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "reference"
FIXTURES = Path(__file__).parent / "fixtures"
REGENERATE = "run `.venv/bin/axiom-cds reference` and commit docs/reference/"


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return reference.documents()


def _cli(mappings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in a fresh process: the tables are read once per process, so another mappings
    directory needs one."""
    env = {**os.environ, "AXIOM_MAPPINGS": str(mappings)}
    return subprocess.run([sys.executable, "-m", "adapter.cli", "reference", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def _section(page: str, heading: str) -> str:
    """The text of one `## heading` section."""
    start = page.index(f"\n## {heading}\n")
    end = page.find("\n## ", start + 1)
    return page[start:end if end != -1 else None]


def _cells(row: str) -> list[str]:
    """A GFM table row split on its unescaped pipes."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def test_the_checked_in_reference_is_what_the_data_generates(pages: dict[str, str]) -> None:
    stale = reference.stale(DOCS, pages)
    assert not stale, f"docs/reference/ differs from mappings/ ({', '.join(stale)}): {REGENERATE}"
    result = CliRunner().invoke(app, ["reference", "--check", "--out", str(DOCS)])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_the_criteria_page_has_one_section_per_criterion_in_the_reports_order(pages: dict[str, str]) -> None:
    trial = load_trial("axiom")
    page = pages["criteria-axiom.md"]
    headings = re.findall(r"^## `([^`]+)`$", page, flags=re.MULTILINE)
    assert headings == list(trial.criterion_ids)  # every id exactly once, nothing else as a criterion heading
    assert len(trial.criterion_ids) == 17
    # the requirement is the report's own wording, in clinical notation, beside the thresholds it uses
    platelets = _section(page, "`platelets`")
    assert "Requirement (report and card): ≥ 100,000/µL" in platelets
    assert "| `min` | 100,000 |" in platelets
    bilirubin = _section(page, "`total-bilirubin`")
    assert "≤ 3 × ULN with Gilbert syndrome" in bilirubin
    assert "(0.1-1.2 mg/dL); institutional ULN governs |" in bilirubin  # the default ULN row carries its source
    renal = _section(page, "`renal-function`")
    assert "`height_window_days` 365 days" in renal
    # each criterion links the inputs it reads, and the index links each criterion
    assert "[`pregnancy-status`](observations.md#pregnancy-status)" in _section(page, "`pregnancy-breastfeeding`")
    for cid in trial.criterion_ids:
        assert pages["index.md"].count(f"](criteria-axiom.md#{cid})") == 1


def test_every_code_row_carries_its_source(pages: dict[str, str]) -> None:
    anc = _section(pages["observations.md"], "`anc`")
    assert "| `751-8` | Neutrophils \\[#/volume\\] in Blood by Automated count | — | LOINC; codes.md C |" in anc
    assert "`K/uL`" in anc and "× 1,000" in anc  # the unit logic itself says K/uL converts to /uL
    asps = _section(pages["conditions.md"], "`asps`")
    assert "| ICD-O-3 | morphology 9581 with behaviour /3, /6 (code or mCODE histology) | yes | ICD-O-3 9581/3" in asps
    gilbert = _section(pages["conditions.md"], "`gilbert`")
    assert "`E80.4` and every code under it" in gilbert and "**no**" in gilbert  # the unverified SNOMED code
    assert "| atezolizumab | `1792776` |" in pages["medications.md"]
    # no absolute path or date leaks into the pages (they must be the same on every machine, every day)
    for name, text in pages.items():
        assert str(ROOT) not in text, name
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), name
        assert "\r" not in text and text.endswith("\n") and not text.endswith("\n\n"), name


def test_a_changed_threshold_and_a_pipe_in_a_display_show_up_and_fail_the_check(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(tables.mappings_dir(), mappings)

    def edit(name: str, old: str, new: str) -> None:
        path = mappings / name
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, (name, old)
        path.write_text(text.replace(old, new), encoding="utf-8")

    edit("trials/axiom.yaml", "input: platelets, min: 100000,", "input: platelets, min: 75000,")
    edit("observations.yaml", '"Neutrophils [#/volume] in Blood by Manual count"', '"Neutrophils | manual count"')
    edit("conditions.yaml", '"SNOMED CT Sarcoma (disorder); codes.md V"', '"SNOMED CT Sarcoma | disorder"')
    shutil.copy(FIXTURES / "trials" / "axiom-amended.yaml", mappings / "trials" / "axiom-amended.yaml")
    before = {p.name: p.read_bytes() for p in DOCS.glob("*.md")}

    out = tmp_path / "out"
    written = _cli(mappings, "--out", str(out))
    assert written.returncode == 0, written.stderr
    criteria = (out / "criteria-axiom.md").read_text(encoding="utf-8")
    platelets = _section(criteria, "`platelets`")
    assert "≥ 75,000/µL" in platelets and "| `min` | 75,000 |" in platelets and "100,000" not in platelets
    assert "≥ 75,000/µL" in (out / "index.md").read_text(encoding="utf-8")
    # a `|` in data is escaped: the row keeps its four cells
    row = next(line for line in (out / "observations.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `753-4` |"))
    assert "Neutrophils \\| manual count" in row and len(_cells(row)) == 4
    row = next(line for line in (out / "conditions.md").read_text(encoding="utf-8").splitlines()
               if "`424413001`" in line)
    assert "SNOMED CT Sarcoma \\| disorder" in row and len(_cells(row)) == 4
    # a second trial file gets its own page, with its own criterion ids
    amended = (out / "criteria-axiom-amended.md").read_text(encoding="utf-8")
    assert "\n## `no-prior-ici`\n" in amended and "\n## `prior-ici-progression`\n" not in amended
    assert "| `min_years` | 18 |" in amended

    checked = _cli(mappings, "--check", "--out", str(DOCS))
    assert checked.returncode == 1
    message = checked.stderr.strip()
    assert len(message.splitlines()) == 1
    for name in ("criteria-axiom.md", "criteria-axiom-amended.md", "index.md", "observations.md", "conditions.md"):
        assert name in message
    assert "units.md" not in message  # only what changed is named (units do not depend on a trial)
    assert "axiom-cds reference" in message
    assert {p.name: p.read_bytes() for p in DOCS.glob("*.md")} == before  # --check writes nothing


def test_unusable_mappings_stop_the_command_with_one_line(tmp_path: Path) -> None:
    result = _cli(tmp_path / "no-such-mappings", "--check", "--out", str(DOCS))
    assert result.returncode == 2
    assert result.stderr.startswith("axiom-cds: error: reference: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_writing_updates_only_what_changed_and_removes_pages_no_longer_generated(
        tmp_path: Path, pages: dict[str, str]) -> None:
    assert sorted(reference.write(tmp_path, pages)) == sorted(pages)
    assert reference.write(tmp_path, pages) == []  # a second run changes nothing
    (tmp_path / "criteria-withdrawn.md").write_text(f"# old\n\n{NOTICE}\n", encoding="utf-8")  # a trial since removed
    (tmp_path / "notes.md").write_text("# written by hand\n", encoding="utf-8")
    (tmp_path / "units.md").write_text("edited by hand\n", encoding="utf-8")
    assert reference.stale(tmp_path, pages) == ["criteria-withdrawn.md", "units.md"]
    reference.write(tmp_path, pages)
    assert not (tmp_path / "criteria-withdrawn.md").exists()
    assert (tmp_path / "notes.md").exists()  # never a page it did not write
    assert (tmp_path / "units.md").read_text(encoding="utf-8") == pages["units.md"]
