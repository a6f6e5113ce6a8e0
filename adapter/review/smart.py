"""SMART App Launch 2.x, EHR launch, as the client: discovery, PKCE S256, scopes, the code exchange.

httpx for the EHR's authorization server (never a redirect followed, bounded answers, a timeout); the
FHIR reads go through the service's own FHIR layer (chart.py). Nothing here logs or shows a token, a
code or a verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from yarl import URL

from ..fhir.scopes import smart_scopes
from ..fhir.wire import FHIR_ID
from .errors import ReviewError

MAX_ANSWER_BYTES = 256 * 1024  # a smart-configuration or a token response is a few KB
LAUNCH_SCOPES = ("launch", "openid", "fhirUser")
# SMART v1 `read`/`write`/`*`, v2 `c r u d s` in this order (SMART App Launch 2.x, "Scopes for requesting FHIR
# resources"); a v2 scope with a query (`?category=…`) grants only part of a type: not counted as granting it
_SCOPE = re.compile(r"(patient|user|system)/(\*|[A-Z][A-Za-z]{0,63})\.(read|write|\*|(?=[cruds])c?r?u?d?s?)")
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True)
class SmartConfig:
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None  # OpenID Connect (SMART 2.x `sso-openid-connect`), as listed: checked when used
    jwks_uri: str | None = None


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    scope: frozenset[str]
    patient: str
    expires_in: int | None
    app_context: str | None
    id_token: str | None = None


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636: 86 characters from the unreserved set."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def write_scopes(version: int) -> list[str]:
    """The referral and lab-order drafts: searched for (an existing referral is not made twice), created,
    then read back (v1 has no create-only scope)."""
    return ["patient/ServiceRequest.crs"] if version == 2 else ["patient/ServiceRequest.write",
                                                               "patient/ServiceRequest.read"]


def requested_scopes(read_types: tuple[str, ...], version: int) -> list[str]:
    """What the authorize request asks for: launch context, the chart reads the hook makes, the drafts."""
    return [*LAUNCH_SCOPES, *smart_scopes(read_types, version), *write_scopes(version)]


def grants(granted: frozenset[str], resource_type: str, needed: str) -> bool:
    """Whether the granted scopes allow the interactions `needed` (v2 letters: 'rs', 'c') on a type, in the
    patient's or the user's context, with either scope syntax."""
    for scope in granted:
        match = _SCOPE.fullmatch(scope)
        if match is None or match[1] == "system" or match[2] not in (resource_type, "*"):
            continue
        if set(needed) <= set(_V1_PERMISSIONS.get(match[3], match[3])):
            return True
    return False


def missing_read_scopes(granted: frozenset[str], read_types: tuple[str, ...], version: int) -> list[str]:
    """The read scopes the app asked for and the EHR did not grant, as asked (what the page names)."""
    asked = smart_scopes(read_types, version)
    return [scope for scope, rtype in zip(asked, read_types, strict=True) if not grants(granted, rtype, "rs")]


def _endpoint(data: dict[str, Any], name: str, iss: str) -> str:
    """An absolute http(s) URL of the configuration, https when the FHIR server is (ReviewError otherwise)."""
    value = data.get(name)
    try:
        url = URL(value) if isinstance(value, str) else None
    except ValueError:
        url = None
    if url is None or not url.is_absolute() or url.scheme not in ("http", "https") or url.user or url.fragment:
        raise ReviewError(502, "The EHR's sign-in service is not usable",
                          f"Its SMART configuration has no usable {name}.")
    if URL(iss).scheme == "https" and url.scheme != "https":  # a token must not travel in the clear
        raise ReviewError(502, "The EHR's sign-in service is not usable",
                          f"Its SMART configuration names an {name} that is not https.")
    return str(value)


async def _read_json(response: httpx.Response, what: str) -> Any:
    """The JSON body, refused past MAX_ANSWER_BYTES (declared or while streaming)."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise ReviewError(502, "The EHR's sign-in service answered unexpectedly", f"Its {what} is too large.")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise ReviewError(502, "The EHR's sign-in service answered unexpectedly", f"Its {what} is too large.")
    try:
        return json.loads(body)
    except ValueError:
        raise ReviewError(502, "The EHR's sign-in service answered unexpectedly",
                          f"Its {what} is not JSON.") from None


async def get_json(http: httpx.AsyncClient, url: str, what: str) -> dict[str, Any]:
    """GET a JSON object from the EHR's authorization side: no redirect followed, bounded, a timeout."""
    try:
        async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.is_redirect:
                raise ReviewError(502, "The EHR's sign-in service could not be reached",
                                  f"Its {what} answered with a redirect, which is not followed.")
            if response.status_code != 200:
                raise ReviewError(502, "The EHR's sign-in service could not be reached",
                                  f"Its {what} answered HTTP {response.status_code}.")
            data = await _read_json(response, what)
    except httpx.HTTPError:
        raise ReviewError(502, "The EHR's sign-in service could not be reached",
                          f"Its {what} could not be read. Try again in a moment.") from None
    if not isinstance(data, dict):
        raise ReviewError(502, "The EHR's sign-in service answered unexpectedly", f"Its {what} is not a JSON object.")
    return data


async def discover(http: httpx.AsyncClient, iss: str) -> SmartConfig:
    """`{iss}/.well-known/smart-configuration`: the endpoints, S256 among the PKCE methods, and the OpenID
    `issuer` and `jwks_uri` when listed (checked only when an id_token comes: identity.py)."""
    data = await get_json(http, f"{iss}/.well-known/smart-configuration", "SMART configuration")
    methods = data.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        listed = ", ".join(m for m in methods if isinstance(m, str))[:80] if isinstance(methods, list) else ""
        raise ReviewError(502, "The EHR's sign-in service is not safe to use",
                          "It does not support PKCE with S256 (SMART App Launch 2.x requires it)"
                          + (f"; it lists only: {listed}." if listed else "; it lists no PKCE method."),
                          relaunch=False)
    return SmartConfig(_endpoint(data, "authorization_endpoint", iss), _endpoint(data, "token_endpoint", iss),
                       _short(data.get("issuer")), _short(data.get("jwks_uri")))


def _short(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 2048 else None


def authorize_url(config: SmartConfig, *, client_id: str, redirect_uri: str, launch: str, scopes: list[str],
                  state: str, iss: str, challenge: str) -> str:
    """Where the browser goes to sign in: the EHR's authorize endpoint with the SMART parameters."""
    return str(URL(config.authorization_endpoint).update_query({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "launch": launch,
        "scope": " ".join(scopes), "state": state, "aud": iss,
        "code_challenge": challenge, "code_challenge_method": "S256"}))


async def exchange_code(http: httpx.AsyncClient, token_endpoint: str, *, code: str, verifier: str,
                        redirect_uri: str, client_id: str, client_secret: str | None) -> TokenResponse:
    """The authorization code for a token (public client: client_id in the form; confidential: Basic)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier}
    auth = None
    if client_secret is None:
        form["client_id"] = client_id
    else:
        auth = httpx.BasicAuth(client_id, client_secret)
    try:
        async with http.stream("POST", token_endpoint, data=form, auth=auth,
                               headers={"Accept": "application/json"}) as response:
            if response.is_redirect:
                raise ReviewError(502, "The EHR's sign-in service answered unexpectedly",
                                  "Its token endpoint answered with a redirect, which is not followed.")
            data = await _read_json(response, "token response")
            status = response.status_code
    except httpx.HTTPError:
        raise ReviewError(502, "The EHR's sign-in service could not be reached",
                          "The sign-in could not be completed. Try again in a moment.") from None
    if status != 200:
        error = data.get("error") if isinstance(data, dict) else None
        shown = f" ({error})" if isinstance(error, str) and _OAUTH_ERROR.fullmatch(error) else ""
        if status in (400, 401):
            raise ReviewError(400, "The EHR did not accept the sign-in",
                              f"The EHR refused the authorization code{shown}. A code can be used once and "
                              "only for a few minutes: it may have been used already.")
        raise ReviewError(502, "The EHR's sign-in service answered unexpectedly",
                          f"Its token endpoint answered HTTP {status}{shown}.")
    return parse_token_response(data)


def parse_token_response(data: Any) -> TokenResponse:
    """The fields the app needs; a response without a bearer token, its scope or the patient is refused."""
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str) or not data["access_token"]:
        raise ReviewError(502, "The EHR's sign-in service answered unexpectedly", "It sent no access token.")
    if not isinstance(data.get("token_type"), str) or data["token_type"].lower() != "bearer":
        raise ReviewError(502, "The EHR's sign-in service answered unexpectedly", "It sent no bearer token.")
    scope = data.get("scope")
    if not isinstance(scope, str) or not scope.strip():
        raise ReviewError(403, "The EHR granted no access to the chart",
                          "Its token response lists no granted scope.")
    patient = data.get("patient")
    if not isinstance(patient, str) or not FHIR_ID.fullmatch(patient):
        raise ReviewError(502, "The EHR did not say which patient to review",
                          "Its token response has no patient in context; the review needs one.")
    expires = data.get("expires_in")
    expires_in = int(expires) if isinstance(expires, int | float) and not isinstance(expires, bool) \
        and 0 < expires < 10**7 else None
    context = data.get("appContext")
    app_context = context if isinstance(context, str) else json.dumps(context) if context is not None else None
    id_token = data.get("id_token")
    return TokenResponse(data["access_token"], frozenset(scope.split()), patient, expires_in, app_context,
                         id_token if isinstance(id_token, str) and id_token else None)
