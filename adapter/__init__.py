"""AXIOM trial eligibility from FHIR R4 data, as a CDS Hooks service and a CLI.

Data flows one way: request → fhir (record) → mapping (facts) → criteria (report) → report (card).
"""

__version__ = "0.1.0"
