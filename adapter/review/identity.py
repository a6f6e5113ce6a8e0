"""Who signed in: the OpenID Connect id_token of the SMART launch (scopes `openid fhirUser`), verified.

SMART App Launch 2.x ("Scopes for requesting identity data", `sso-openid-connect`): the token response
carries an id_token signed by the EHR. Its keys come from the `jwks_uri` of the smart-configuration (or,
when that lists none, of `{issuer}/.well-known/openid-configuration`), read like the configuration
itself (smart.get_json: no redirect followed, bounded, a timeout) and only from a host the launch already
trusts (the FHIR server's or the token endpoint's). Checked with pyjwt: the signature (RS256 — what SMART
requires of servers — RS384, ES384; never `none` or HMAC), `iss` = the configuration's issuer (else the
FHIR base), `aud` = our client id, `exp` and `iat` with a small leeway, a `sub`. The `fhirUser` claim names
the clinician as a FHIR resource: kept in the session, recorded with each checklist save and put on the
drafts as their requester. No nonce is sent: the code flow's token comes straight from the token
endpoint, bound to this browser by `state` and PKCE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from yarl import URL

from ..fhir.urls import has_userinfo
from .errors import ReviewError
from .smart import get_json

ALGORITHMS = ("RS256", "RS384", "ES384")
LEEWAY_S = 60
USER_TYPES = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson")
REQUESTER_TYPES = ("Practitioner", "PractitionerRole")  # who may be a ServiceRequest's requester here
_REFERENCE = re.compile(rf"({'|'.join(USER_TYPES)})/([A-Za-z0-9\-.]{{1,64}})")
_REFUSED = "The EHR's sign-in could not be verified"
# what the page says for each failed check (pyjwt's exception → the clinician's words; never the token)
_WHY: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "its signature does not match the EHR's published keys"),
    (jwt.InvalidAudienceError, "it was issued for another app"),
    (jwt.InvalidIssuerError, "it was issued by another server than the one that launched the review"),
    (jwt.ExpiredSignatureError, "it has expired (check the clocks of the EHR and this service)"),
    (jwt.ImmatureSignatureError, "it is dated in the future (check the clocks of the EHR and this service)"),
    (jwt.InvalidIssuedAtError, "its issue time is not a date"),
    (jwt.MissingRequiredClaimError, "it lacks a required claim (iss, aud, exp, iat or sub)"),
)


@dataclass(frozen=True)
class Identity:
    """The signed-in user as the EHR vouched for it: a FHIR reference (relative on the launch's server),
    and a name to show when the id_token carried one."""

    fhir_user: str | None
    display: str | None


def fhir_user_reference(claim: Any, fhir_base: str) -> str | None:
    """`fhirUser` as a reference: `Practitioner/123` stays; an absolute URL on the launch's FHIR server
    becomes relative, one on another server is kept absolute; anything else (another type, a query, a
    user name in the URL) is None."""
    if not isinstance(claim, str) or len(claim) > 2048:
        return None
    if _REFERENCE.fullmatch(claim):
        return claim
    try:
        url = URL(claim)
    except ValueError:
        return None
    if not url.is_absolute() or url.scheme not in ("http", "https") or has_userinfo(claim) or "?" in claim \
            or "#" in claim:
        return None
    parts = url.path.rstrip("/").split("/")
    key = "/".join(parts[-2:])
    if len(parts) < 3 or not _REFERENCE.fullmatch(key):
        return None
    base = URL(fhir_base)
    same = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port) and \
        "/".join(parts[:-2]) == base.path.rstrip("/")
    return key if same else claim


def _user_type(fhir_user: str | None) -> str | None:
    """The resource type of a `fhir_user_reference` (relative or absolute)."""
    kind = (fhir_user or "").rstrip("/").split("/")[-2:-1]
    return kind[0] if kind else None


def logged_user(fhir_user: str | None) -> str | None:
    """The signed-in user as the logs name them: a clinician's reference (an id, as the logs keep), but only
    the type for a Patient or RelatedPerson — a patient is logged by the service's keyed hash alone."""
    kind = _user_type(fhir_user)
    return fhir_user if kind in REQUESTER_TYPES else kind


def requester(fhir_user: str | None) -> dict[str, Any]:
    """ServiceRequest.requester for the signed-in clinician (a Practitioner or PractitionerRole)."""
    return {"requester": {"reference": fhir_user}} if fhir_user and _user_type(fhir_user) in REQUESTER_TYPES else {}


def _trusted_url(value: str | None, what: str, iss: str, token_endpoint: str) -> str:
    """A URL named by the EHR's configuration, on the FHIR server's host or the token endpoint's (the hosts
    the launch trusts already), https when the FHIR server is."""
    refused = ReviewError(502, "The EHR's sign-in service is not usable", f"Its {what} is missing or not usable.")
    if value is None or has_userinfo(value) or "#" in value:
        raise refused
    try:
        url = URL(value)
    except ValueError:
        raise refused from None
    if not url.is_absolute() or url.scheme not in ("http", "https"):
        raise refused
    if URL(iss).scheme == "https" and url.scheme != "https":
        raise ReviewError(502, "The EHR's sign-in service is not usable", f"Its {what} is not https.")
    hosts = {(u.host, u.port) for u in (URL(iss), URL(token_endpoint))}
    if (url.host, url.port) not in hosts:
        raise ReviewError(502, "The EHR's sign-in service is not usable",
                          f"Its {what} is on a host other than the FHIR server's or the token endpoint's.")
    return value


async def jwks_uri(http: httpx.AsyncClient, *, issuer: str, listed: str | None, iss: str,
                   token_endpoint: str) -> str:
    """The key set's URL: the smart-configuration's `jwks_uri`, else the issuer's OpenID configuration's
    (whose `issuer` must be the one expected, OpenID Connect Discovery 1.0 §4.3)."""
    if listed is not None:
        return _trusted_url(listed, "jwks_uri", iss, token_endpoint)
    where = _trusted_url(issuer, "OpenID issuer", iss, token_endpoint).rstrip("/")
    data = await get_json(http, f"{where}/.well-known/openid-configuration", "OpenID configuration")
    if str(data.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ReviewError(502, "The EHR's sign-in service is not usable",
                          "Its OpenID configuration names another issuer.")
    value = data.get("jwks_uri")
    return _trusted_url(value if isinstance(value, str) else None, "jwks_uri", iss, token_endpoint)


async def key_set(http: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """The JWKS's keys (as JSON objects; pyjwt reads the one a token names)."""
    keys = (await get_json(http, url, "key set (JWKS)")).get("keys")
    if not isinstance(keys, list) or not keys:
        raise ReviewError(502, "The EHR's sign-in service is not usable", "Its key set (JWKS) lists no key.")
    return [k for k in keys if isinstance(k, dict)]


def _key(keys: list[dict[str, Any]], header: dict[str, Any], alg: str) -> Any:
    """The signing key the header names by `kid` (without a kid: the set's only one for `alg`), as pyjwt's."""
    kty = "EC" if alg.startswith("ES") else "RSA"
    usable = [k for k in keys if k.get("use") in (None, "sig") and k.get("alg") in (None, alg) and k.get("kty") == kty]
    kid = header.get("kid")
    chosen = [k for k in usable if k.get("kid") == kid] if isinstance(kid, str) else usable
    if len(chosen) != 1:
        raise ReviewError(401, _REFUSED, "Its id_token names no key of the EHR's published key set. "
                          "Nothing was stored; try again, and tell the EHR's administrator if it persists.")
    try:
        return jwt.PyJWK(chosen[0], algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise ReviewError(502, "The EHR's sign-in service is not usable",
                          "Its key set (JWKS) holds a key that cannot be read.") from None


def verify_id_token(token: str, keys: list[dict[str, Any]], *, issuer: str, client_id: str,
                    fhir_base: str) -> Identity:
    """The Identity in a valid id_token; ReviewError (401) for any failed check, in words that name the check."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        header = {}
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise ReviewError(401, _REFUSED, "Its id_token is not signed with an algorithm this app accepts "
                          f"({', '.join(ALGORITHMS)}). Nothing was stored.")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, _key(keys, header, alg), algorithms=[alg], audience=client_id, issuer=issuer, leeway=LEEWAY_S,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]})
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:  # OverflowError: exp 1e999
        raise ReviewError(401, _REFUSED, f"Its id_token was refused: {_why(exc)}. Nothing was stored.") from None
    name = claims.get("name")
    display = " ".join(name.split())[:120] if isinstance(name, str) and name.strip() else None
    return Identity(fhir_user_reference(claims.get("fhirUser"), fhir_base), display)


def _why(exc: Exception) -> str:
    for kind, words in _WHY:
        if isinstance(exc, kind):
            return words
    return "it is not a valid signed token"


async def identify(http: httpx.AsyncClient, id_token: str, *, iss: str, token_endpoint: str,
                   issuer: str | None, listed_jwks: str | None, client_id: str) -> Identity:
    """Verify the token response's id_token against the EHR's keys: who signed in."""
    expected = issuer or iss
    url = await jwks_uri(http, issuer=expected, listed=listed_jwks, iss=iss, token_endpoint=token_endpoint)
    return verify_id_token(id_token, await key_set(http, url), issuer=expected, client_id=client_id,
                           fhir_base=iss)
