"""Synthetic AXIOM-relevant patients as FHIR R4 Bundles (seeded, reproducible)."""
