"""CDS Hooks JWT authentication: each check in the specification's order, and key-set handling."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from adapter.cds.auth import Authenticator, AuthError, KeySets, TrustedIssuer
from adapter.cds.issuers import CDS_HOOKS_SANDBOX

ISS = "https://ehr.example.org"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
AUD = "https://cds.example.org/cds-services/axiom-eligibility"

EC_KEY = ec.generate_private_key(ec.SECP384R1())
EC256_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    key = json.loads(algo.to_jwk(private.public_key()))
    return {**key, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [jwk(EC_KEY, "ec1", "ES384"), jwk(RSA_KEY, "rsa1", "RS384"), jwk(EC256_KEY, "ec256", "ES256")]}


def token(claims: dict[str, Any] | None = None, *, key: Any = EC_KEY, alg: str = "ES384", kid: str = "ec1",
          headers: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **(claims or {})}
    for name in drop:
        body.pop(name, None)
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **(headers or {})})


class Seen:
    def __init__(self) -> None:
        self.jtis: set[tuple[str, str]] = set()

    async def __call__(self, iss: str, jti: str, expires: datetime) -> bool:
        if (iss, jti) in self.jtis:
            return False
        self.jtis.add((iss, jti))
        return True


def authenticator(**issuer: Any) -> Authenticator:
    trusted = TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, **issuer)
    return Authenticator([trusted, CDS_HOOKS_SANDBOX], KeySets(httpx.AsyncClient(), min_refresh_s=60), Seen())


@pytest.fixture
def jwks_route() -> Any:
    with respx.mock(assert_all_called=False) as mock:
        yield mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=JWKS))


async def test_a_valid_es384_token_is_accepted(jwks_route: Any) -> None:
    claims = await authenticator().verify(f"Bearer {token()}", AUD)
    assert claims["iss"] == ISS


async def test_rs384_is_accepted(jwks_route: Any) -> None:
    await authenticator().verify(f"Bearer {token(key=RSA_KEY, alg='RS384', kid='rsa1')}", AUD)


@pytest.mark.parametrize(("case", "make"), [
    ("no header", lambda: None),
    ("not bearer", lambda: f"Basic {token()}"),
    ("garbage", lambda: "Bearer not.a.jwt"),
    ("untrusted issuer", lambda: f"Bearer {token({'iss': 'https://evil.example'})}"),
    ("audience of another URL", lambda: f"Bearer {token({'aud': 'https://cds.example.org/cds-services'})}"),
    ("expired", lambda: f"Bearer {token({'exp': int(time.time()) - 600})}"),
    ("no exp", lambda: f"Bearer {token(drop=('exp',))}"),
    ("issued in the future", lambda: f"Bearer {token({'iat': int(time.time()) + 600})}"),
    ("no jti", lambda: f"Bearer {token(drop=('jti',))}"),
    ("signed by another key", lambda: f"Bearer {token(key=ec.generate_private_key(ec.SECP384R1()))}"),
    ("unknown kid", lambda: f"Bearer {token(kid='nope')}"),
    ("HMAC", lambda: f"Bearer {jwt.encode({'iss': ISS, 'aud': AUD}, 's' * 32, algorithm='HS256')}"),
    ("ES256 not configured", lambda: f"Bearer {token(key=EC256_KEY, alg='ES256', kid='ec256')}"),
    ("jku not allow-listed", lambda: f"Bearer {token(headers={'jku': 'https://evil.example/jwks.json'})}"),
    ("typ not JWT", lambda: f"Bearer {token(headers={'typ': 'at+jwt'})}"),
])
async def test_every_failed_check_is_rejected(jwks_route: Any, case: str, make: Any) -> None:
    with pytest.raises(AuthError):
        await authenticator().verify(make(), AUD)


async def test_alg_none_is_rejected(jwks_route: Any) -> None:
    unsigned = jwt.encode({"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60, "iat": int(time.time()),
                           "jti": "x"}, None, algorithm="none", headers={"kid": "ec1"})
    with pytest.raises(AuthError):
        await authenticator().verify(f"Bearer {unsigned}", AUD)


async def test_es256_is_accepted_only_when_configured(jwks_route: Any) -> None:
    auth = authenticator(algorithms=("ES384", "RS384", "ES256"))
    await auth.verify(f"Bearer {token(key=EC256_KEY, alg='ES256', kid='ec256')}", AUD)


def test_none_or_hmac_cannot_be_configured() -> None:
    for alg in ("none", "HS256"):
        with pytest.raises(ValueError):
            TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, algorithms=(alg,))


async def test_a_replayed_jti_is_rejected(jwks_route: Any) -> None:
    auth = authenticator()
    same = token()
    await auth.verify(f"Bearer {same}", AUD)
    with pytest.raises(AuthError, match="replayed"):
        await auth.verify(f"Bearer {same}", AUD)


async def test_tenant_must_match_when_configured(jwks_route: Any) -> None:
    auth = authenticator(tenant="hospital-a")
    await auth.verify(f"Bearer {token({'tenant': 'hospital-a'})}", AUD)
    with pytest.raises(AuthError, match="tenant"):
        await auth.verify(f"Bearer {token({'tenant': 'hospital-b'})}", AUD)
    with pytest.raises(AuthError, match="tenant"):
        await auth.verify(f"Bearer {token()}", AUD)


async def test_key_set_is_cached_and_refetched_for_a_new_kid_at_a_bounded_rate() -> None:
    new_key = ec.generate_private_key(ec.SECP384R1())
    rotated = {"keys": [*JWKS["keys"], jwk(new_key, "ec2", "ES384")]}
    with respx.mock() as mock:
        route = mock.get(JWKS_URL).mock(side_effect=[httpx.Response(200, json=JWKS),
                                                     httpx.Response(200, json=rotated)])
        keys = KeySets(httpx.AsyncClient(), min_refresh_s=0)
        auth = Authenticator([TrustedIssuer(iss=ISS, jwks_url=JWKS_URL)], keys, Seen())
        await auth.verify(f"Bearer {token()}", AUD)
        await auth.verify(f"Bearer {token()}", AUD)
        assert route.call_count == 1  # cached
        await auth.verify(f"Bearer {token(key=new_key, kid='ec2')}", AUD)  # rotation: refetch finds it
        assert route.call_count == 2
    with respx.mock() as mock:
        route = mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=JWKS))
        keys = KeySets(httpx.AsyncClient(), min_refresh_s=3600)
        auth = Authenticator([TrustedIssuer(iss=ISS, jwks_url=JWKS_URL)], keys, Seen())
        for _ in range(5):  # a flood of unknown kids does not become a flood of fetches
            with pytest.raises(AuthError):
                await auth.verify(f"Bearer {token(kid='unknown')}", AUD)
        assert route.call_count == 1


async def test_unreachable_key_set_fails_closed() -> None:
    with respx.mock() as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(503))
        with pytest.raises(AuthError, match="key set"):
            await authenticator().verify(f"Bearer {token()}", AUD)


async def test_allow_listed_jku_is_fetched() -> None:
    other = "https://ehr.example.org/keys/rotating.json"
    with respx.mock() as mock:
        route = mock.get(other).mock(return_value=httpx.Response(200, json=JWKS))
        auth = authenticator(allowed_jku=(other,))
        await auth.verify(f"Bearer {token(headers={'jku': other})}", AUD)
        assert route.called


async def test_sandbox_preset_trusts_the_published_key_without_a_network_call() -> None:
    with respx.mock() as mock:  # no route: any HTTP call would fail the test
        auth = Authenticator([CDS_HOOKS_SANDBOX], KeySets(httpx.AsyncClient()), Seen())
        forged = token({"iss": CDS_HOOKS_SANDBOX.iss}, kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
                       headers={"jku": CDS_HOOKS_SANDBOX.allowed_jku[0]})
        with pytest.raises(AuthError, match="signature"):  # right kid, but signed by our key, not the sandbox's
            await auth.verify(f"Bearer {forged}", AUD)
        assert not mock.calls
