"""Issuer presets. The CDS Hooks sandbox signs with a key whose private half is public in its
repository, so trusting it is for testing against the sandbox only — never in production."""

from __future__ import annotations

from .auth import TrustedIssuer

CDS_HOOKS_SANDBOX = TrustedIssuer(
    iss="https://sandbox.cds-hooks.org",
    allowed_jku=("https://sandbox.cds-hooks.org/.well-known/jwks.json",),
    # the sandbox's public key set (ES384), as published at the jku above
    jwks={"keys": [{
        "kty": "EC", "crv": "P-384", "use": "sig", "alg": "ES384",
        "kid": "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
        "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
        "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
    }]},
)

PRESETS = {"cds-hooks-sandbox": CDS_HOOKS_SANDBOX}
