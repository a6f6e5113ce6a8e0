"""The SMART on FHIR review app the clinician opens from the card (docs/review-app.md).

`routes.install` adds it to the service (adapter/cds/app.py); it has its own authentication (SMART App
Launch, EHR launch) and never the CDS Hooks JWT dependency. Nothing is imported here, so the card
(report/card.py) and the hook can use `config` without loading the pages.
"""
