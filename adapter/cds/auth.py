"""CDS Hooks 2.0 authentication: the EHR's signed JWT on every call.

Checks run in the specification's order — `iss` on the allow-list, `aud` equal to the URL called
(the configured public base URL + the path: never the caller's Host header), `exp`, `iat` (small clock
skew), a lifetime `exp − iat` within the configured maximum, `tenant`, the signature by `kid` from the
issuer's key set (see `_key` for which one; asymmetric algorithms only), `jti` not replayed within an
hour — and any failure is a bare 401. The reason is logged (never the token); the caller learns nothing
from the response. Key sets are fetched with httpx, cached, and refetched on an unknown `kid` at most
once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from jwt import PyJWK

log = logging.getLogger("axiom_cds.auth")

DEFAULT_ALGORITHMS = ("ES384", "RS384")
OPTIONAL_ALGORITHMS = ("ES256", "RS256")
REPLAY_WINDOW = timedelta(hours=1)
LATEST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold


class AuthError(Exception):
    """Authentication failed; the message is for the log, never for the response."""


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None  # an inline key set, instead of or besides jwks_url
    allowed_jku: tuple[str, ...] = ()
    tenant: str | None = None
    client_id: str | None = None  # required `sub` (Epic: the client id the service is registered under)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    fhir_servers: tuple[str, ...] = ()  # the FHIR servers its hooks may name; () = the service-wide list
    testing_only: bool = False  # anyone can sign as this issuer (a published private key): warned at start

    def __post_init__(self) -> None:
        unsafe = [a for a in self.algorithms if a not in (*DEFAULT_ALGORITHMS, *OPTIONAL_ALGORITHMS)]
        if unsafe:
            raise ValueError(f"issuer {self.iss}: algorithms {unsafe} are not allowed (none and HMAC never are)")
        if not self.has_key_set and not self.allowed_jku:
            raise ValueError(f"issuer {self.iss}: give a jwks_url, an inline jwks, or allowed_jku")
        if self.has_key_set and self.allowed_jku:
            raise ValueError(f"issuer {self.iss}: allowed_jku is only for an issuer without a configured key set; "
                             "with a jwks_url or jwks the token's jku is ignored — remove one of them")

    @property
    def has_key_set(self) -> bool:
        """A configured key set (jwks_url or inline jwks) is authoritative: a token's jku is then ignored."""
        return self.jwks_url is not None or self.jwks is not None


@dataclass(frozen=True)
class Verified:
    """A caller whose token passed every check: the trusted issuer it came from, and its claims."""

    issuer: TrustedIssuer
    claims: dict[str, Any]


@dataclass
class _KeySet:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: float = 0.0


class KeySets:
    """JWKS by URL, cached; an unknown kid refetches, but not more often than `min_refresh_s`."""

    def __init__(self, http: httpx.AsyncClient, ttl_s: float = 3600, min_refresh_s: float = 60) -> None:
        self._http = http
        self._ttl = ttl_s
        self._min_refresh = min_refresh_s
        self._sets: dict[str, _KeySet] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _needs_fetch(self, entry: _KeySet | None, kid: str) -> bool:
        if entry is None:
            return True
        age = time.monotonic() - entry.fetched_at
        return age > self._ttl or (kid not in entry.keys and age > self._min_refresh)

    async def key(self, url: str, kid: str) -> dict[str, Any]:
        if self._needs_fetch(self._sets.get(url), kid):
            async with self._locks.setdefault(url, asyncio.Lock()):
                if self._needs_fetch(self._sets.get(url), kid):  # another request may have just fetched
                    await self._fetch(url)
        entry = self._sets.get(url)
        if entry is None or kid not in entry.keys:
            raise AuthError(f"unknown kid {kid!r} at {url}")
        return entry.keys[kid]

    async def _fetch(self, url: str) -> None:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AuthError(f"cannot fetch the key set {url} ({type(exc).__name__})") from None
        self._sets[url] = _KeySet(keys=keys_by_kid(body), fetched_at=time.monotonic())


def keys_by_kid(jwks: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise AuthError("key set is not a JWKS")
    return {str(k["kid"]): k for k in jwks["keys"] if isinstance(k, dict) and "kid" in k}


ReplayCheck = Callable[[str, str, datetime], Awaitable[bool]]  # (iss, jti, expires) → True when new


def issuers_from_settings(configured: list[Any], presets: list[str],
                          known_presets: dict[str, TrustedIssuer]) -> list[TrustedIssuer]:
    """TrustedIssuers from configuration entries (objects with the TrustedIssuer fields) and preset names."""
    unknown = [p for p in presets if p not in known_presets]
    if unknown:
        raise ValueError(f"unknown issuer presets {unknown}; known: {sorted(known_presets)}")
    return [*(TrustedIssuer(iss=c.iss, jwks_url=c.jwks_url, jwks=c.jwks, allowed_jku=tuple(c.allowed_jku),
                            tenant=c.tenant, client_id=c.client_id,
                            algorithms=tuple(c.algorithms), fhir_servers=tuple(c.fhir_servers))
              for c in configured),
            *(known_presets[p] for p in presets)]


def bearer_token(authorization: str | None) -> str:
    """The credentials of an `Authorization: Bearer …` header; the scheme is case-insensitive (RFC 7235)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthError("no bearer token")
    return credentials.strip()


def timestamp(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim, or None: not a number (a bool is not one), not finite, or past year 9999 —
    such a value cannot be compared, stored or turned into a date without an overflow."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value) if -LATEST_TIMESTAMP <= value <= LATEST_TIMESTAMP else None


class Authenticator:
    """Verifies CDS Hooks JWTs. `audience_base` is the service's configured public base URL: the audience
    of a call is that plus the path called — the caller's Host header never takes part."""

    def __init__(self, issuers: list[TrustedIssuer], key_sets: KeySets, is_new_jti: ReplayCheck,
                 audience_base: str, clock_skew_s: int = 60, max_lifetime_s: int = 3600) -> None:
        self._issuers = {i.iss: i for i in issuers}
        self._key_sets = key_sets
        self._is_new_jti = is_new_jti
        self._audience_base = audience_base.rstrip("/")
        self._skew = clock_skew_s
        self._max_lifetime = max_lifetime_s

    async def verify(self, authorization: str | None, path: str) -> Verified:
        """The verified caller for a call of `path`, or AuthError."""
        token = bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"not a JWT ({type(exc).__name__})") from None
        now = time.time()
        issuer = self._issuers.get(str(claims.get("iss")))
        if issuer is None:
            raise AuthError("issuer not trusted")
        aud = claims.get("aud")
        audience = (self._audience_base + path).rstrip("/")
        if audience not in [str(a).rstrip("/") for a in (aud if isinstance(aud, list) else [aud])]:
            raise AuthError("aud is not the URL called")
        exp, iat = timestamp(claims, "exp"), timestamp(claims, "iat")
        if exp is None or exp < now - self._skew:
            raise AuthError("expired or no exp")
        if iat is None or iat > now + self._skew:
            raise AuthError("iat missing or in the future")
        if exp - iat > self._max_lifetime:  # iat is required (CDS Hooks 2.0), so this is the whole lifetime
            raise AuthError(f"token lifetime over {self._max_lifetime} s")
        if issuer.tenant is not None and claims.get("tenant") != issuer.tenant:
            raise AuthError("tenant does not match")
        if issuer.client_id is not None and claims.get("sub") != issuer.client_id:
            raise AuthError("sub is not the registered client id")
        key = await self._key(issuer, header)
        alg = str(header.get("alg"))
        try:
            verified: dict[str, Any] = jwt.decode(
                token, PyJWK(key, algorithm=alg).key, algorithms=[alg], audience=aud, issuer=issuer.iss,
                leeway=self._skew, options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:  # OverflowError: nbf 1e999
            raise AuthError(f"signature or claims invalid ({type(exc).__name__})") from None
        jti = verified.get("jti")
        if not isinstance(jti, str) or not jti:
            raise AuthError("no jti")
        expires = datetime.fromtimestamp(max(exp, now), UTC) + REPLAY_WINDOW  # exp is bounded: no overflow
        try:
            new = await self._is_new_jti(issuer.iss, jti, expires)
        except Exception as exc:  # no replay store, no trust: fail closed
            raise AuthError(f"replay check unavailable ({type(exc).__name__})") from None
        if not new:
            raise AuthError("jti replayed")
        return Verified(issuer, verified)

    async def _key(self, issuer: TrustedIssuer, header: dict[str, Any]) -> dict[str, Any]:
        """The key named by `kid`. One rule: a configured key set (inline `jwks`, then `jwks_url`) is
        authoritative and the token's `jku` is ignored — the header cannot steer where keys come from.
        Only an issuer without one uses `jku`, and only a value exactly on its `allowed_jku`."""
        alg = header.get("alg")
        if alg not in issuer.algorithms:
            raise AuthError(f"algorithm {alg!r} not allowed for this issuer")
        if header.get("typ") not in (None, "JWT"):
            raise AuthError("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("no kid")
        inline = keys_by_kid(issuer.jwks) if issuer.jwks is not None else {}
        if kid in inline:  # a configured copy of the key set: no network call
            key = inline[kid]
        elif issuer.jwks_url is not None:
            key = await self._key_sets.key(issuer.jwks_url, kid)
        elif issuer.has_key_set:
            raise AuthError(f"unknown kid {kid!r}")
        else:
            jku = header.get("jku")
            if not isinstance(jku, str) or jku not in issuer.allowed_jku:
                raise AuthError("jku missing or not allow-listed")
            key = await self._key_sets.key(jku, kid)
        if key.get("alg") not in (None, alg):
            raise AuthError("key is for another algorithm")
        return key
