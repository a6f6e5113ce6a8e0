"""Service configuration: environment variables `AXIOM_*`, optionally a YAML file (`AXIOM_CONFIG`).

Environment wins over the file; the file wins over defaults. Nothing here is clinical: thresholds and
codes live in mappings/.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource
from yarl import URL

from ..fhir.urls import base_url_problem, shown
from ..report.referral import StudyTeam


def _fhir_base(url: str) -> str:
    """An absolute http(s) base URL: a typo in an allow-list must stop the service, not allow nothing;
    a password in it must stop it too, and the error must not repeat the password (fhir/urls.py)."""
    problem = base_url_problem(url)
    if problem is not None:
        raise ValueError(f"FHIR base URL {shown(url)!r} {problem}")
    return url.rstrip("/")


FhirBase = Annotated[str, AfterValidator(_fhir_base)]


def _long_enough(secret: SecretStr | None) -> SecretStr | None:
    """A short secret can be guessed, and then every patient hash reversed as if there were none."""
    if secret is not None and len(secret.get_secret_value()) < 16:
        raise ValueError("AXIOM_PATIENT_KEY_SECRET must be at least 16 characters")
    return secret


def _public_base(url: str | None) -> str | None:
    """The base of every JWT audience: an absolute http(s) URL without credentials, query or fragment."""
    if url is None or not url.strip():
        return None
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.user or parsed.query_string \
            or parsed.fragment:
        raise ValueError(f"{url!r} is not an absolute http(s) base URL (no credentials, query or fragment)")
    return url.rstrip("/")


def config_sources(settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                   env_settings: PydanticBaseSettingsSource, section: str | None = None
                   ) -> tuple[PydanticBaseSettingsSource, ...]:
    """Arguments, then AXIOM_* environment, then the YAML file AXIOM_CONFIG names (its `section`, if
    given, when the file has one); no .env or secrets directory: configuration comes from two places."""
    sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
    config = os.environ.get("AXIOM_CONFIG")
    if config and (section is None or _has_section(Path(config), section)):
        sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=Path(config), yaml_config_section=section))
    return tuple(sources)


def _has_section(path: Path, name: str) -> bool:
    """Whether the YAML file has a `name:` mapping (the service's own settings ignore it)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # the service's Settings reads the same file and reports what is wrong with it
    return isinstance(data, dict) and isinstance(data.get(name), dict)


class IssuerConfig(BaseModel):
    """An EHR allowed to call this service (CDS Hooks 2.0 JWT issuer)."""

    iss: str
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    allowed_jku: list[str] = Field(default_factory=list)
    tenant: str | None = None
    client_id: str | None = Field(None, description="Required `sub` claim: the client id the EHR registered this "
                                  "service under (Epic signs its CDS Hooks JWTs with sub = client id)")
    algorithms: list[str] = Field(default_factory=lambda: ["ES384", "RS384"])
    fhir_servers: list[FhirBase] = Field(default_factory=list, description="FHIR base URLs this EHR's hooks may "
                                         "name as fhirServer; replaces AXIOM_FHIR_SERVERS for it")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AXIOM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    worker_start_timeout_s: int = Field(60, ge=5, description="With AXIOM_WORKERS > 1: how long a worker may take "
                                        "to start and to answer the supervisor's health check before it is "
                                        "killed and restarted (uvicorn's default, 5 s, restarts workers forever on "
                                        "a loaded host: a worker imports the engine and its tables first)")
    trial: str = "axiom"
    public_base_url: Annotated[str | None, AfterValidator(_public_base)] = Field(
        None, description="The URL EHRs call this service at: every JWT's aud is this plus the path called "
        "(never the request's Host header). Required when authentication is on")
    cors_origins: list[str] = Field(default_factory=list, description="Browser origins (web pages) allowed to "
                                    "call the service; default none. `axiom-cds sandbox` allows the CDS Hooks "
                                    "sandbox and localhost pages")
    cors_origin_regex: str | None = Field(None, description="Browser origins allowed besides the list, as a "
                                          "regular expression matched against the whole origin; default none")
    max_header_kb: float = Field(64.0, gt=0, description="Largest request head (request line and headers) "
                                 "accepted; above it the answer is 431 and the connection is closed")
    header_timeout_s: float = Field(10.0, gt=0, description="Time a connection has to send a complete request "
                                    "head, from its opening or from the previous response; then 408 and closed")
    body_timeout_s: float = Field(60.0, gt=0, description="Time a request has to send its whole body once its "
                                  "head is in; then 408 and closed")
    shutdown_grace_s: int = Field(20, ge=1, description="On SIGTERM/SIGINT, how long requests in flight "
                                    "(hooks) may still run once no new connection is accepted; then they are "
                                    "cancelled. An orchestrator must wait longer before it kills the process")
    shutdown_drain_s: float = Field(0.0, ge=0, description="On SIGTERM/SIGINT, how long the service still accepts "
                                    "and answers, /readyz 503, before it stops accepting: for load balancers that "
                                    "learn readiness by polling; 0: stop accepting at once")
    tls_certfile: Path | None = Field(None, description="PEM certificate (leaf first, then intermediates): serve "
                                      "HTTPS directly; with AXIOM_TLS_KEYFILE")
    tls_keyfile: Path | None = Field(None, description="PEM private key of the certificate")
    tls_keyfile_password: SecretStr | None = Field(None, description="Password of an encrypted AXIOM_TLS_KEYFILE")
    tls_client_ca: Path | None = Field(None, description="PEM CA certificates: every client must present a "
                                       "certificate signed by one of them (mutual TLS); default: none asked")
    patient_key_secret: Annotated[SecretStr | None, AfterValidator(_long_enough)] = Field(
        None, description="Secret (16+ characters) keying the patient hash in logs and issued cards; default: "
        "one generated at first start and kept in the database")
    fhir_deadline_s: float = Field(3.0, description="Overall budget for FHIR calls of one hook")
    fhir_request_timeout_s: float = Field(2.5, description="Timeout of one FHIR request, from when it is sent")
    fhir_connections_per_server: int = Field(32, ge=1, le=1024, description="Requests in flight to one FHIR "
                                             "server at once, across all hooks (a hook sends about 8); the "
                                             "others wait, each hook's Patient read first")
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
    show_not_eligible: bool = Field(True, description="Show a card for a patient who fails a criterion: the "
                                    "clinician learns why not and can correct a chart error behind it")
    study_team: StudyTeam | None = Field(None, description="Who receives referrals at this site (name, site, "
                                         "phone, email, performer reference, site_status); shown on the card")
    audit_days: int = Field(0, ge=0, description="Days audit rows (one per evaluation, with the patient id) are "
                            "kept; 0: for ever — the hospital's retention policy decides")
    feedback_comment_days: int = Field(90, ge=0, description="Days a clinician's free-text feedback comment "
                                       "(may hold PHI) is kept; 0: never stored. Reason codes are kept")
    as_of: date | None = Field(None, description="Fixed evaluation date (testing and demos); default today")
    auth_required: bool = Field(True, description="Verify the EHR's JWT on every call; off only with --no-auth")
    trusted_issuers: list[IssuerConfig] = Field(default_factory=list)
    trust_presets: list[str] = Field(default_factory=list, description="e.g. ['cds-hooks-sandbox'] (testing only)")
    jwt_clock_skew_s: int = 60
    jwt_max_lifetime_s: int = Field(3600, gt=0, description="Longest JWT lifetime accepted (exp - iat). CDS Hooks "
                                    "recommends 5 minutes; an hour admits EHRs that issue longer-lived tokens, "
                                    "while a leaked, unused token stays good for an hour at most")
    gc_tuning: bool = True
    max_request_mb: float = Field(16.0, description="Largest hook request body accepted (413 above)")
    log_json: bool = Field(True, description="JSON log lines (one object per line)")
    log_level: str = "INFO"
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics, without a token "
                                  "(counts and timings only, no patient data); off: /metrics is 404")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return config_sources(settings_cls, init_settings, env_settings)
