"""FHIR resources → facts: codes to criterion inputs, units to canonical units, dates to intervals."""
