"""units.md: the unit spellings rewritten to UCUM before parsing, the per-kind alias sets, molar masses."""

from __future__ import annotations

from ..tables import observations, units
from . import markdown as md
from .sources import raw, source


def document() -> str:
    table = units()
    data = raw("units.yaml")
    intro = [
        "A unit is read from `valueQuantity.code` (UCUM) first, then the free-text `unit`. `µ` and `μ` are read "
        "as `u`. Lookup order: the input's alias sets, exact; the shared aliases, exact; then both "
        "case-insensitively — except a spelling whose case carries its meaning (a case-sensitive set's). A "
        "spelling no table lists is parsed as UCUM or refused (the criterion is unknown), never guessed. Which "
        "spellings convert for each input, and by what factor: [observations.md](observations.md).",
    ]
    aliases = ["## `aliases`", "", "Spellings that mean one thing for every analyte.", "",
               *md.table(["spelling", "read as (UCUM)"],
                         [[md.code(k), md.code(v)] for k, v in table.aliases.items()])]
    sets = []
    raw_sets = data.get("sets") or {}
    inputs = observations().inputs.values()
    for sid, alias_set in table.sets.items():
        kinds = [k for k, names in table.kind_sets.items() if sid in names]
        own = [i.id for i in inputs if i.unit_aliases and sid in i.unit_aliases]
        users = [*(f"kind {md.code(k, False)}" for k in kinds), *(f"input [{md.code(i, False)}](observations.md#{i})"
                                                                  for i in own)]
        sets += ["", f"## {md.code(sid, False)}", "",
                 f"Used by: {', '.join(users) or 'nothing'} · "
                 f"{'case-sensitive (never re-cased)' if not alias_set.folded else 'matched case-insensitively too'}",
                 "", f"Source: {md.text(source(raw_sets.get(sid)))}", "",
                 *md.table(["spelling", "read as (UCUM)"],
                           [[md.code(k), md.code(v)] for k, v in alias_set.aliases.items()])]
    masses = data.get("molar_mass_g_per_mol") or {}
    molar = ["## Molar masses", "", "Molar ↔ mass conversion, per analyte (the input's `analyte`).", "",
             *md.table(["analyte", "g/mol", "source"],
                       [[md.code(k), md.text(md.number(v)), md.text(source(masses.get(k)))]
                        for k, v in table.molar_mass.items()])]
    charges = data.get("valence") or {}
    valence = ["## Valences", "", "Equivalents (`meq/L`) convert to moles only for these ions: 1 mmol = valence "
               "mEq. Any other analyte's value in equivalents is a unit error (unknown).", "",
               *md.table(["analyte", "valence", "source"],
                         [[md.code(k), md.text(str(v)), md.text(source(charges.get(k)))]
                          for k, v in table.valence.items()])]
    return md.document("Units", intro, aliases, sets[1:], molar, valence)
