"""SMART Backend Services: a bearer token for Bulk Data, from a private key registered at the EHR.

SMART App Launch 2.x "Backend Services": the token endpoint comes from
`[base]/.well-known/smart-configuration`; the client proves who it is with a JWT it signs with its
private key (RS384 or ES384; header `kid`; claims `iss` = `sub` = client id, `aud` = token endpoint,
`exp` at most 5 minutes ahead, a unique `jti`), posted as a `client_credentials` grant with
`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`. Scopes are SMART v2
(`system/*.rs`) unless the server only offers v1 (`system/*.read`), or refuses v2 with invalid_scope.

The token is cached until shortly before it expires (a long download refreshes it), and dropped after
a 401 (`invalidate`). It is never logged, nor put in any message; neither is the assertion.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from yarl import URL

from ..fhir.urls import base_url_problem, shown
from .errors import AuthError, bounded

log = logging.getLogger("axiom_cds.bulk")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 240  # the spec's limit is 300 s: a margin for the server's clock
REFRESH_MARGIN_S = 60.0  # a token this close to its expiry is replaced before use
DEFAULT_TOKEN_LIFETIME_S = 300  # when the answer has no expires_in
MIN_RSA_BITS = 2048
MAX_CONFIG_BYTES = 1024 * 1024
MAX_TOKEN_ANSWER_BYTES = 256 * 1024
SCOPES = {2: "system/*.rs", 1: "system/*.read"}
Alg = Literal["RS384", "ES384"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class BackendServicesConfig:
    """How this client is registered at the EHR.

    `kid`: the key id registered with the public key (default: its RFC 7638 thumbprint, as `public_jwks`
    publishes it). `alg`: default from the key (RSA → RS384, EC P-384 → ES384). `scope`: default
    `system/*.rs`, or `system/*.read` with `scope_version=1` or when the server offers only v1.
    `token_url`: skips discovery. `key_password`: for an encrypted PEM.
    """

    client_id: str
    private_key: Path
    kid: str | None = None
    alg: Alg | None = None
    scope: str | None = None
    scope_version: Literal[1, 2] | None = None  # None: v2, unless the server offers only v1
    token_url: str | None = None
    key_password: bytes | None = None


def load_key(path: Path, password: bytes | None = None) -> PrivateKey:
    """The PEM private key at `path`, RSA (≥ 2048 bits) or EC P-384; AuthError otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuthError(f"cannot read the private key {path} ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError):
        raise AuthError(f"{path} is not a PEM private key (or its password is wrong)") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise AuthError(f"the RSA key in {path} has {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise AuthError(f"the EC key in {path} is on {key.curve.name}; ES384 needs P-384 (secp384r1)")
        return key
    raise AuthError(f"the key in {path} is neither RSA nor EC: SMART Backend Services signs with RS384 or ES384")


def key_alg(key: PrivateKey, wanted: Alg | None = None) -> Alg:
    alg: Alg = "RS384" if isinstance(key, rsa.RSAPrivateKey) else "ES384"
    if wanted is not None and wanted != alg:
        raise AuthError(f"alg {wanted} does not fit the key ({'RSA' if alg == 'RS384' else 'EC P-384'} signs {alg})")
    return alg


def public_jwk(key: PrivateKey, kid: str | None = None) -> dict[str, Any]:
    """The public half as a JWK (`kid`: default the RFC 7638 thumbprint), to register at the EHR."""
    public = key.public_key()
    jwk: dict[str, Any] = dict(RSAAlgorithm.to_jwk(public, as_dict=True) if isinstance(public, rsa.RSAPublicKey)
                               else ECAlgorithm.to_jwk(public, as_dict=True))
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = orjson.dumps({k: jwk[k] for k in required}, option=orjson.OPT_SORT_KEYS)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**{k: jwk[k] for k in required}, "alg": key_alg(key), "use": "sig", "key_ops": ["verify"],
            "kid": kid or thumbprint}


def public_jwks(private_key: Path, kid: str | None = None, password: bytes | None = None) -> dict[str, Any]:
    """`{"keys": [public JWK]}` for the key file: what the EHR's app registration takes (or the JWKS URL serves)."""
    return {"keys": [public_jwk(load_key(private_key, password), kid)]}


def _token_url_problem(url: str) -> str | None:
    """Why a token endpoint is unusable: not absolute http(s), a secret in it, or plain http off loopback."""
    if (problem := base_url_problem(url)) is not None:
        return problem
    parsed = URL(url)
    if parsed.scheme == "http":
        host = parsed.host or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return "must be https (plain http only on this machine's loopback)"
    return None


class BackendServicesAuth:
    """Bearer tokens for one FHIR server (implements adapter/bulk/http.py TokenSource)."""

    def __init__(self, config: BackendServicesConfig, base_url: str, client: httpx.AsyncClient,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.clock = clock
        self.key = load_key(config.private_key, config.key_password)
        self.alg = key_alg(self.key, config.alg)
        self.kid = config.kid or str(public_jwk(self.key)["kid"])
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self._token_url: str | None = config.token_url
        self._version: int | None = config.scope_version
        self.requests = 0  # tokens asked for (the tests count them)
        if config.token_url is not None and (problem := _token_url_problem(config.token_url)) is not None:
            raise AuthError(f"the token URL {problem}")

    def invalidate(self) -> None:
        self._token, self._expires = None, 0.0

    async def token(self) -> str:
        """A valid access token: the cached one, or a new one when it is missing or about to expire."""
        async with self._lock:
            if self._token is None or self.clock() >= self._expires - REFRESH_MARGIN_S:
                self._token, lifetime = await self._fetch()
                self._expires = self.clock() + lifetime
            return self._token

    def assertion(self, token_url: str) -> str:
        """The signed client assertion for one token request (single use: a fresh jti each time)."""
        now = int(time.time())  # the token endpoint's clock, not the cache's (self.clock, which tests move)
        claims = {"iss": self.config.client_id, "sub": self.config.client_id, "aud": token_url,
                  "exp": now + ASSERTION_LIFETIME_S, "iat": now, "jti": secrets.token_urlsafe(24)}
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})

    async def _fetch(self) -> tuple[str, float]:
        token_url = self._token_url or await self._discover()
        self._token_url = token_url
        version = self._version or 2
        try:
            return await self._request(token_url, version)
        except _InvalidScopeError as exc:
            if self.config.scope is not None or self._version is not None or version == 1:
                raise AuthError(str(exc)) from None
            log.info("SMART v2 scope refused; asking with v1", extra={"fhir_server": shown(self.base_url)})
            self._version = 1
            try:
                return await self._request(token_url, 1)
            except _InvalidScopeError as again:
                raise AuthError(str(again)) from None

    async def _get_json(self, url: str, what: str, limit: int) -> Any:
        try:
            response = await self.client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise AuthError(f"cannot read {what} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise AuthError(f"{what} answered {response.status_code}: the server may not offer SMART Backend "
                            "Services (give the token URL explicitly if it has one)")
        if len(response.content) > limit:
            raise AuthError(f"{what} is larger than {limit // 1024} KiB; refused")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise AuthError(f"{what} is not JSON") from None

    async def _discover(self) -> str:
        """The token endpoint from `[base]/.well-known/smart-configuration`, checked against what we need."""
        what = f"{shown(self.base_url)}/.well-known/smart-configuration"
        doc = await self._get_json(f"{self.base_url}/.well-known/smart-configuration", what, MAX_CONFIG_BYTES)
        if not isinstance(doc, dict) or not isinstance(doc.get("token_endpoint"), str):
            raise AuthError(f"{what} names no token_endpoint")
        url = str(doc["token_endpoint"])
        if (problem := _token_url_problem(url)) is not None:
            raise AuthError(f"the token_endpoint in {what} {problem}")
        methods = doc.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and methods and "private_key_jwt" not in methods:
            raise AuthError(f"the server does not accept private_key_jwt client assertions ({what})")
        algs = doc.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algs, list) and algs and self.alg not in algs:
            raise AuthError(f"the server does not accept {self.alg} assertions (it lists "
                            f"{bounded(', '.join(str(a) for a in algs), 80)}); use a key it accepts")
        grants = doc.get("grant_types_supported")
        if isinstance(grants, list) and grants and "client_credentials" not in grants:
            raise AuthError(f"the server does not offer the client_credentials grant ({what})")
        capabilities = doc.get("capabilities")
        if self._version is None and isinstance(capabilities, list) and "permission-v1" in capabilities \
                and "permission-v2" not in capabilities:
            self._version = 1
        return url

    async def _request(self, token_url: str, version: int) -> tuple[str, float]:
        scope = self.config.scope or SCOPES[version]
        form = {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(token_url)}
        self.requests += 1
        try:
            response = await self.client.post(token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise AuthError(f"cannot reach the token endpoint ({type(exc).__name__}, {shown(token_url)})") from None
        if len(response.content) > MAX_TOKEN_ANSWER_BYTES:
            raise AuthError("the token endpoint's answer is too large; refused")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if response.status_code != 200:
            error = body.get("error") if isinstance(body, dict) else None
            said = body.get("error_description") if isinstance(body, dict) else None
            message = (f"the token endpoint refused the client ({response.status_code}"
                       f"{', ' + bounded(str(error), 60) if error else ''})"
                       f"{': ' + bounded(str(said), 200) if said else ''}")
            if error == "invalid_scope":
                raise _InvalidScopeError(message)
            raise AuthError(message)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise AuthError("the token endpoint's answer has no access_token")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise AuthError("the token endpoint's answer is not a bearer token")
        lifetime = body.get("expires_in", DEFAULT_TOKEN_LIFETIME_S)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME_S
        log.info("access token obtained", extra={"fhir_server": shown(self.base_url), "expires_in_s": lifetime,
                                                 "scope": bounded(str(body.get("scope", scope)), 200)})
        return str(body["access_token"]), float(lifetime)


class _InvalidScopeError(Exception):
    pass
