"""FHIR access: a Bundle file, a FHIR server, or (in the service) a hook's prefetch → PatientRecord."""
