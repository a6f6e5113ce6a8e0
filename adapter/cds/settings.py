"""Service configuration: environment variables `AXIOM_*`, optionally a YAML file (`AXIOM_CONFIG`).

Environment wins over the file; the file wins over defaults. Nothing here is clinical: thresholds and
codes live in mappings/.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource
from yarl import URL

SANDBOX_ORIGINS = ["https://sandbox.cds-hooks.org", "http://localhost:8080", "http://127.0.0.1:8080",
                   "http://localhost:3000", "http://127.0.0.1:3000"]


def _fhir_base(url: str) -> str:
    """An absolute http(s) base URL: a typo in an allow-list must stop the service, not allow nothing."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r} is not an absolute http(s) FHIR base URL")
    return url.rstrip("/")


FhirBase = Annotated[str, AfterValidator(_fhir_base)]


class IssuerConfig(BaseModel):
    """An EHR allowed to call this service (CDS Hooks 2.0 JWT issuer)."""

    iss: str
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    allowed_jku: list[str] = Field(default_factory=list)
    tenant: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["ES384", "RS384"])
    fhir_servers: list[FhirBase] = Field(default_factory=list, description="FHIR base URLs this EHR's hooks may "
                                         "name as fhirServer; replaces AXIOM_FHIR_SERVERS for it")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AXIOM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    trial: str = "axiom"
    public_base_url: str | None = Field(
        None, description="The URL EHRs call this service at (behind a proxy); used for links and JWT aud")
    cors_origins: list[str] = Field(default_factory=lambda: list(SANDBOX_ORIGINS))
    cors_origin_regex: str | None = Field(
        r"https?://(localhost|127\.0\.0\.1)(:\d+)?", description="Browser origins allowed besides the list: by "
        "default any port on this machine (a CDS Hooks sandbox served locally); empty: none")
    fhir_deadline_s: float = Field(3.0, description="Overall budget for FHIR calls of one hook")
    fhir_request_timeout_s: float = Field(2.5, description="Timeout of one FHIR request")
    fhir_retries: int = Field(2, ge=0, le=10, description="Retries of a FHIR GET answered 429/503 or reset "
                                                          "before any byte, while they fit in the deadline")
    fhir_breaker_failures: int = Field(5, ge=0, description="Consecutive failures (timeouts, connection errors, "
                                                            "5xx) that stop calls to a FHIR server; 0: never")
    fhir_breaker_cooldown_s: float = Field(5.0, gt=0, description="Longest time a failing FHIR server is not called "
                                                                  "before one trial request (a server back from an "
                                                                  "outage waits at most this long for its first hook)")
    fhir_breaker_first_cooldown_s: float = Field(2.0, gt=0, description="First cool-down after the breaker "
                                                 "opens; doubles after each failed trial, up to the maximum")
    fhir_max_response_mb: float = Field(50.0, gt=0, description="Largest FHIR response body accepted")
    fhir_max_entries_per_page: int = Field(5000, ge=1, description="Most entries accepted in one page of a search")
    fhir_servers: list[FhirBase] = Field(default_factory=list, description="FHIR base URLs a hook may name as "
                                         "fhirServer (the service calls nothing else); empty: any")
    database_url: str = "sqlite:///axiom-cds.db"
    suppress_days: int = Field(30, description="No card for a patient whose card was overridden, unless the "
                                               "verdict changes")
    audit_days: int = Field(0, ge=0, description="Days audit rows (one per evaluation, with the patient id) are "
                            "kept; 0: for ever — the hospital's retention policy decides")
    feedback_comment_days: int = Field(90, ge=0, description="Days a clinician's free-text feedback comment "
                                       "(may hold PHI) is kept; 0: never stored. Reason codes are kept")
    as_of: date | None = Field(None, description="Fixed evaluation date (testing and demos); default today")
    auth_required: bool = Field(True, description="Verify the EHR's JWT on every call; off only with --no-auth")
    trusted_issuers: list[IssuerConfig] = Field(default_factory=list)
    trust_presets: list[str] = Field(default_factory=list, description="e.g. ['cds-hooks-sandbox'] (testing only)")
    jwt_clock_skew_s: int = 60
    gc_tuning: bool = True
    max_request_mb: float = Field(16.0, description="Largest hook request body accepted (413 above)")
    log_json: bool = Field(True, description="JSON log lines (one object per line)")
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("AXIOM_CONFIG")
        if config:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=Path(config)))
        return tuple(sources)
