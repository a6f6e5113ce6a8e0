"""Who may call: the configured issuers and presets, and what authentication needs before the service
starts. The CDS Hooks sandbox preset signs with a key whose private half is public in its repository, so
trusting it is for testing against the sandbox only — never in production (warned loudly at start)."""

from __future__ import annotations

from dataclasses import dataclass

from .auth import TrustedIssuer, issuers_from_settings
from .settings import Settings

CDS_HOOKS_SANDBOX = TrustedIssuer(
    iss="https://sandbox.cds-hooks.org",
    # the sandbox's public key set (ES384), as published at https://sandbox.cds-hooks.org/.well-known/jwks.json
    # (the jku its tokens carry): configured inline, so it is authoritative and no network call is made
    jwks={"keys": [{
        "kty": "EC", "crv": "P-384", "use": "sig", "alg": "ES384",
        "kid": "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
        "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
        "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
    }]},
    testing_only=True,
)

PRESETS = {"cds-hooks-sandbox": CDS_HOOKS_SANDBOX}


@dataclass(frozen=True)
class AuthConfig:
    """Authentication as configured: the trusted issuers, and the base of every JWT audience."""

    issuers: tuple[TrustedIssuer, ...]
    audience_base: str  # AXIOM_PUBLIC_BASE_URL: from configuration, never from a request


def auth_config(settings: Settings) -> AuthConfig | None:
    """None with authentication off; else the configuration, or ValueError (one line) saying what is
    missing. Issuers are checked even with authentication off: a typo stops the service either way."""
    issuers = tuple(issuers_from_settings(settings.trusted_issuers, settings.trust_presets, PRESETS))
    if not settings.auth_required:
        return None
    if not issuers:
        raise ValueError("authentication is required but no trusted issuer is configured (AXIOM_TRUSTED_ISSUERS / "
                         "AXIOM_TRUST_PRESETS, see docs/security.md), or run a local sandbox with --no-auth")
    if not settings.public_base_url:
        raise ValueError("authentication is required but AXIOM_PUBLIC_BASE_URL is not set: it is the URL EHRs "
                         "call this service at, and every JWT's aud must be that URL plus the path called "
                         "(e.g. https://cds.hospital.example; see docs/security.md)")
    return AuthConfig(issuers, settings.public_base_url)


def testing_only_warning(issuer: TrustedIssuer) -> str:
    preset = next((name for name, p in PRESETS.items() if p == issuer), issuer.iss)
    return (f"trusting {preset} ({issuer.iss}), whose private key is public: anyone can sign tokens this service "
            "accepts. For testing against the CDS Hooks sandbox only — never with real patient data.")
