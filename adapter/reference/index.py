"""index.md: what the reference holds, and each trial's criteria at a glance."""

from __future__ import annotations

from ..trials import Trial
from . import markdown as md
from .criteria import stated_requirements
from .sources import trial_file

PAGES = (
    ("observations.md", "Observation inputs: LOINC codes, units and accepted spellings, plausible ranges, "
                        "ULNs, searches"),
    ("conditions.md", "Condition code sets: SNOMED CT, ICD-10-CM and ICD-O-3 codes, semantics, profiles"),
    ("medications.md", "Medications: checkpoint inhibitors by RxNorm code and name, which records count"),
    ("answers.md", "Coded answers: ECOG, pregnancy, hCG, breastfeeding, disease status, tumor-size methods"),
    ("units.md", "Units: spellings read as UCUM, alias sets per kind, molar masses"),
)


def document(trials: list[tuple[str, Trial]]) -> str:
    intro = [
        "What the code uses, generated from `mappings/` through the same loaders the service uses "
        "(`AXIOM_MAPPINGS` honoured). Regenerate after changing the data: `axiom-cds reference` "
        "(`--check` only compares). How the rules are applied and where the protocol was interpreted: "
        "[../criteria.md](../criteria.md); the trial file format: [../trials.md](../trials.md).",
    ]
    pages = ["## Pages", "", *(f"- [{name}]({name}): {md.text(what)}" for name, what in
                               [*((f"criteria-{stem}.md", f"{t.short_title} criteria, version {t.version}")
                                  for stem, t in trials), *PAGES])]
    blocks = [intro, pages]
    for stem, trial in trials:
        stated = stated_requirements(trial)
        rows = [[f"[{md.code(c.id)}](criteria-{stem}.md#{c.id})", md.code(c.kind), md.words(stated[c.id])]
                for c in trial.specs]
        blocks.append([f"## {md.code(stem, False)}: {md.text(trial.short_title)} {md.text(trial.version)}", "",
                       f"{md.link(trial.nct, trial.url)} · {md.code(trial_file(trial), False)} · "
                       f"{len(trial.specs)} criteria, {len(trial.attestations)} attestations", "",
                       *md.table(["criterion", "kind", "requirement"], rows)])
    return md.document("Eligibility reference", *blocks)
