"""The review app's configuration: environment variables `AXIOM_REVIEW_*`, or `review:` in `AXIOM_CONFIG`.

A class of its own beside the service's `Settings` (adapter/cds/settings.py): the review app is a SMART
client of the EHR, registered there separately, and its settings mean nothing to the CDS Hooks
endpoints. Environment wins over the file; the file wins over defaults. Every field is documented in
docs/review-app.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..cds.settings import FhirBase, config_sources
from ..fhir.urls import base_url_problem


def _public_base(url: str | None) -> str | None:
    """An absolute http(s) base URL without credentials, query or fragment (the browser is sent there)."""
    if url is None or not url.strip():
        return None
    if (problem := base_url_problem(url)) is not None:
        raise ValueError(f"the review app's public base URL {problem}")
    return url.rstrip("/")


PublicBase = Annotated[str | None, AfterValidator(_public_base)]


def _origin_source(value: str) -> str:
    """A CSP frame-ancestors source: an origin (`https://ehr.example`, `https://*.ehr.example`) or 'self'.
    Anything else could widen or break the policy (a `;` would add a directive)."""
    if value == "'self'":
        return value
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or any(c in rest for c in " ;,'\"/?#@"):
        raise ValueError(f"{value!r} is not an origin such as https://ehr.example or 'self'")
    return value


class ReviewSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AXIOM_REVIEW_", extra="ignore")

    allowed_issuers: list[FhirBase] = Field(default_factory=list, description="FHIR base URLs (the SMART `iss`) "
                                            "the app may be launched from; empty: the review app is off")
    client_id: str | None = Field(None, min_length=1, max_length=255, description="The client id the EHR "
                                  "registered the review app under")
    client_secret: SecretStr | None = Field(None, description="Set for a confidential client "
                                            "(client_secret_basic at the token endpoint); unset: a public client")
    public_base_url: PublicBase = Field(None, description="The URL browsers reach this service at (launch and "
                                        "redirect URIs are under it); default AXIOM_PUBLIC_BASE_URL")
    scope_version: Literal[1, 2] = Field(2, description="SMART scope syntax requested: 2 (`patient/Observation.rs`"
                                         ") or 1 (`patient/Observation.read`) for EHRs that know only v1")
    session_minutes: int = Field(30, ge=1, le=24 * 60, description="Longest a review session lasts after sign-in "
                                 "(never past the access token's expires_in)")
    launch_minutes: int = Field(10, ge=1, le=60, description="Time from the launch to the EHR's callback")
    http_timeout_s: float = Field(10.0, gt=0, le=60, description="Timeout of the smart-configuration and token "
                                  "requests")
    fhir_deadline_s: float = Field(20.0, gt=0, le=120, description="Budget for reading the chart for one page; "
                                   "the clinician waits for it")
    frame_ancestors: list[Annotated[str, AfterValidator(_origin_source)]] = Field(
        default_factory=list, description="Origins allowed to show the app in a frame (CSP frame-ancestors), "
        "e.g. the EHR's web origin; empty: no framing ('none'), the EHR opens it in a window or tab")
    cookie_samesite: Literal["lax", "strict", "none"] = Field("lax", description="SameSite of the session cookie. "
                                                              "'none' (https only) for an EHR that frames the app "
                                                              "from another site: browsers send no Lax cookie there")

    @property
    def configured(self) -> bool:
        """Whether the app can be launched at all (a link to it is put on the card only then)."""
        return bool(self.allowed_issuers and self.client_id)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return config_sources(settings_cls, init_settings, env_settings, "review")
