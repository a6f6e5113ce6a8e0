"""conditions.md: every Condition code set — its codes (SNOMED CT, ICD-10-CM, ICD-O-3), semantics, profiles."""

from __future__ import annotations

from ..tables import CodeRule, CodeSet, ConditionTable, conditions, icd10_key
from ..trials import Trial
from . import markdown as md
from .sources import pair, raw, source

_NAMES = {"snomed": "SNOMED CT", "icd10cm": "ICD-10-CM", "icdo3": "ICD-O-3"}


def _system(url: str, table: ConditionTable) -> str:
    key = next((k for k, v in table.systems.items() if v == url), url)
    return _NAMES.get(key, key)


def _match(rule: CodeRule, entry: dict[str, object]) -> str:
    """What a rule matches, as the matcher reads it (tables._rule_match)."""
    if rule.code is not None:
        return md.code(rule.code)
    if rule.prefix is not None:
        written = str(entry.get("prefix", ""))
        shown = written if icd10_key(written) == rule.prefix else rule.prefix  # as the file spells it
        return f"{md.code(shown)} and every code under it (dots ignored)"
    if rule.morphology is not None:
        low, high = rule.morphology
        span = f"{low}" if low == high else f"{low}–{high}"
        behaviour = ", ".join(f"/{b}" for b in rule.behavior)
        return f"morphology {md.text(span)} with behaviour {md.text(behaviour)} (code or mCODE histology)"
    return "nothing"


def _rules(rules: tuple[CodeRule, ...], entries: object, table: ConditionTable) -> list[str]:
    rows = [[md.text(_system(r.system, table)), _match(r, e), "yes" if r.verified else "**no**", md.text(source(e))]
            for r, e in pair(rules, entries)]
    return md.table(["system", "matches", "verified", "source (with the display)"], rows)


def _users(set_id: str, trials: list[tuple[str, Trial]]) -> list[str]:
    out = []
    for stem, trial in trials:
        users = [c for c in trial.specs if set_id in c.params.condition_sets()]
        if users:
            links = ", ".join(f"[{md.code(c.id, False)}](criteria-{stem}.md#{c.id})" for c in users)
            out.append(f"- Read by {md.code(stem, False)}: {links}")
    return out


def _section(code_set: CodeSet, entry: dict[str, object], table: ConditionTable,
             trials: list[tuple[str, Trial]]) -> list[str]:
    lines = [f"## {md.code(code_set.id, False)}", "",
             f"**{md.text(code_set.title)}** · semantics [{code_set.semantics}](#{code_set.semantics})"]
    users = _users(code_set.id, trials)
    if code_set.body_site_within:
        users.append(f"- Also a Condition of [{md.code(code_set.body_site_within, False)}]"
                     f"(#{code_set.body_site_within}) whose bodySite is one of the sites below")
    if users:
        lines += ["", *users]
    lines += ["", "A code is in the set when a row matches it:", "", *_rules(code_set.rules, entry.get("codes"), table)]
    profiles = entry.get("profiles")
    if code_set.profiles and isinstance(profiles, list):
        rows = [[md.code(url), md.text(source(next((p for p in profiles if isinstance(p, dict)
                                                     and p.get("url") == url), {})))]
                for url in sorted(code_set.profiles)]
        lines += ["", "A Condition with one of these profiles (meta.profile, version ignored) is in the set "
                      "whatever its code:", "", *md.table(["profile", "source"], rows)]
    if code_set.body_sites:
        sites = entry.get("body_sites")
        site_entries = sites.get("sites") if isinstance(sites, dict) else None
        lines += ["", "Body sites:", "", *_rules(code_set.body_sites, site_entries, table)]
    return lines


def document(trials: list[tuple[str, Trial]]) -> str:
    table = conditions()
    data = raw("conditions.yaml")
    entries = data.get("sets") or {}
    intro = [
        "Condition code sets the criteria read. Matching is on system + code, never on display text: a code "
        "matches a set when one of the set's rules does. A code marked not verified is matched, and the "
        "evidence says it is unverified. verificationStatus "
        + ", ".join(md.code(s, False) for s in sorted(table.excluded_verification_status))
        + " removes a Condition from every set; "
        + ", ".join(md.code(s, False) for s in sorted(table.unconfirmed_verification_status))
        + " leave it unconfirmed. A Condition first recorded after the evaluation date does not count yet.",
        "",
        "ICD-O-3 morphology is also read from the mCODE histology extension "
        f"{md.code(table.histology_extension, False)}.",
    ]
    systems = ["## Systems", "", *md.table(
        ["system", "key", "URL"],
        [[md.text(_NAMES.get(k, k)), md.code(k), md.code(v)] for k, v in table.systems.items()])]
    reasons = data.get("semantics") or {}
    semantics = ["## Semantics", "",
                 f"How clinicalStatus ({md.code(table.clinical_status_system, False)}) and abatement[x] decide "
                 "whether a Condition of a set counts on the evaluation date. Current-state: active while "
                 "clinicalStatus is " + ", ".join(md.code(s, False) for s in sorted(table.active_clinical_status))
                 + " (absent: counted, noted).", ""]
    for name in dict.fromkeys(s.semantics for s in table.sets.values()):
        found = reasons.get(name)
        reason: dict[str, object] = found if isinstance(found, dict) else {}
        semantics += [f"### {name}", "", md.text(reason.get("reason", "")), "",
                      f"Source: {md.text(source(reason))}", ""]
    sections = [line for s in table.sets.values()
                for line in ["", *_section(s, entries.get(s.id) or {}, table, trials)]][1:]
    age_rows = [[md.code(unit), md.text(f"{n} {field if n != 1 else field.removesuffix('s')}")]
                for unit, (field, n) in table.age_units.items()]
    ages = ["## Age units", "", "abatementAge and abatementRange units (UCUM Age codes and the spellings feeds "
            f"send in Age.unit). Source: {md.text(data.get('age_units_source', ''))}", "",
            *md.table(["unit", "means"], age_rows)]
    return md.document("Condition code sets", intro, systems, semantics[:-1], sections, ages)
