"""CDS Hooks JWT authentication: each check in the specification's order, and key-set handling.

The audience of a call is the configured public base URL plus the path (`verify(header, PATH)`), never
anything the request says about where it arrived."""

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

from adapter.cds.auth import Authenticator, AuthError, KeySets, TrustedIssuer, Verified
from adapter.cds.issuers import CDS_HOOKS_SANDBOX

ISS = "https://ehr.example.org"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
BASE = "https://cds.example.org"  # AXIOM_PUBLIC_BASE_URL
PATH = "/cds-services/axiom-eligibility"
AUD = BASE + PATH
ROTATING_JKU = "https://ehr.example.org/keys/rotating.json"

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


def lived(seconds: int) -> str:
    """A token whose exp is `seconds` after its iat."""
    now = int(time.time())
    return token({"iat": now, "exp": now + seconds})


class Seen:
    def __init__(self) -> None:
        self.jtis: set[tuple[str, str]] = set()

    async def __call__(self, iss: str, jti: str, expires: datetime) -> bool:
        if (iss, jti) in self.jtis:
            return False
        self.jtis.add((iss, jti))
        return True


def authenticator(max_lifetime_s: int = 3600, **issuer: Any) -> Authenticator:
    trusted = TrustedIssuer(iss=ISS, **({"jwks_url": JWKS_URL} | issuer))
    return Authenticator([trusted, CDS_HOOKS_SANDBOX], KeySets(httpx.AsyncClient(), min_refresh_s=60), Seen(),
                         BASE, max_lifetime_s=max_lifetime_s)


@pytest.fixture
def jwks_route() -> Any:
    with respx.mock(assert_all_called=False) as mock:
        yield mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=JWKS))


def claims_of(t: str) -> dict[str, Any]:
    body: dict[str, Any] = jwt.decode(t, options={"verify_signature": False})
    return body


async def test_a_valid_es384_token_is_accepted(jwks_route: Any) -> None:
    t = token()
    verified = await authenticator().verify(f"Bearer {t}", PATH)
    assert verified.issuer.iss == ISS and verified.claims == claims_of(t)


async def test_rs384_is_accepted(jwks_route: Any) -> None:
    """An RS384 token from the configured EHR is accepted as that EHR's, with exactly its claims."""
    t = token({"tenant": "ignored-without-a-configured-tenant"}, key=RSA_KEY, alg="RS384", kid="rsa1")
    verified = await authenticator().verify(f"Bearer {t}", PATH)
    assert isinstance(verified, Verified)
    assert verified.issuer.iss == ISS and verified.issuer.jwks_url == JWKS_URL
    assert verified.claims == claims_of(t)
    assert verified.claims["aud"] == AUD and verified.claims["jti"] == claims_of(t)["jti"]
    assert jwks_route.called  # the key came from the EHR's key set


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(jwks_route: Any, scheme: str) -> None:
    verified = await authenticator().verify(f"{scheme} {token()}", PATH)
    assert verified.issuer.iss == ISS


@pytest.mark.parametrize(("case", "make"), [
    ("no header", lambda: None),
    ("not bearer", lambda: f"Basic {token()}"),
    ("no separator", lambda: f"Bearer{token()}"),
    ("no credentials", lambda: "Bearer   "),
    ("garbage", lambda: "Bearer not.a.jwt"),
    ("untrusted issuer", lambda: f"Bearer {token({'iss': 'https://evil.example'})}"),
    ("audience of another URL", lambda: f"Bearer {token({'aud': 'https://cds.example.org/cds-services'})}"),
    ("audience of another service", lambda: f"Bearer {token({'aud': 'https://other-cds.example' + PATH})}"),
    ("expired", lambda: f"Bearer {token({'exp': int(time.time()) - 600})}"),
    ("no exp", lambda: f"Bearer {token(drop=('exp',))}"),
    ("exp past year 9999", lambda: f"Bearer {token({'exp': 253402300800})}"),
    ("exp a boolean", lambda: f"Bearer {token({'exp': True})}"),
    ("exp a string", lambda: f"Bearer {token({'exp': str(int(time.time()) + 60)})}"),
    ("no iat", lambda: f"Bearer {token(drop=('iat',))}"),
    ("issued in the future", lambda: f"Bearer {token({'iat': int(time.time()) + 600})}"),
    ("lifetime a century", lambda: f"Bearer {token({'exp': int(time.time()) + 100 * 365 * 86400})}"),
    ("lifetime a second over the maximum", lambda: f"Bearer {lived(3601)}"),
    ("no jti", lambda: f"Bearer {token(drop=('jti',))}"),
    ("signed by another key", lambda: f"Bearer {token(key=ec.generate_private_key(ec.SECP384R1()))}"),
    ("unknown kid", lambda: f"Bearer {token(kid='nope')}"),
    ("HMAC", lambda: f"Bearer {jwt.encode({'iss': ISS, 'aud': AUD}, 's' * 32, algorithm='HS256')}"),
    ("ES256 not configured", lambda: f"Bearer {token(key=EC256_KEY, alg='ES256', kid='ec256')}"),
    ("typ not JWT", lambda: f"Bearer {token(headers={'typ': 'at+jwt'})}"),
])
async def test_every_failed_check_is_rejected(jwks_route: Any, case: str, make: Any) -> None:
    with pytest.raises(AuthError):
        await authenticator().verify(make(), PATH)


@pytest.mark.parametrize("exp", ["1e999", "-1e999", "NaN", "253402300800", "1" + "0" * 40])
async def test_an_exp_no_calendar_holds_is_an_auth_error_not_an_overflow(jwks_route: Any, exp: str) -> None:
    """The payload as raw JSON: Python reads 1e999 as infinity and NaN as not-a-number."""
    now = int(time.time())
    payload = f'{{"iss": "{ISS}", "aud": "{AUD}", "iat": {now}, "exp": {exp}, "jti": "{uuid.uuid4()}"}}'
    raw = jwt.api_jws.encode(payload.encode(), EC_KEY, algorithm="ES384", headers={"kid": "ec1", "typ": "JWT"})
    with pytest.raises(AuthError, match="exp"):
        await authenticator().verify(f"Bearer {raw}", PATH)


async def test_an_infinite_nbf_is_an_auth_error(jwks_route: Any) -> None:
    now = int(time.time())
    payload = (f'{{"iss": "{ISS}", "aud": "{AUD}", "iat": {now}, "exp": {now + 60}, "nbf": 1e999, '
               f'"jti": "{uuid.uuid4()}"}}')
    raw = jwt.api_jws.encode(payload.encode(), EC_KEY, algorithm="ES384", headers={"kid": "ec1", "typ": "JWT"})
    with pytest.raises(AuthError):
        await authenticator().verify(f"Bearer {raw}", PATH)


async def test_the_lifetime_is_exp_minus_iat_up_to_the_configured_maximum(jwks_route: Any) -> None:
    now = int(time.time())
    auth = authenticator(max_lifetime_s=300)
    await auth.verify(f"Bearer {token({'iat': now, 'exp': now + 300})}", PATH)  # the spec's 5 minutes
    with pytest.raises(AuthError, match="lifetime"):
        await auth.verify(f"Bearer {token({'iat': now, 'exp': now + 301})}", PATH)
    with pytest.raises(AuthError, match="lifetime"):  # backdating iat does not shorten a long token
        await auth.verify(f"Bearer {token({'iat': now - 250, 'exp': now + 100})}", PATH)


async def test_alg_none_is_rejected(jwks_route: Any) -> None:
    unsigned = jwt.encode({"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60, "iat": int(time.time()),
                           "jti": "x"}, "", algorithm="none", headers={"kid": "ec1"})
    with pytest.raises(AuthError):
        await authenticator().verify(f"Bearer {unsigned}", PATH)


async def test_es256_is_accepted_only_when_configured(jwks_route: Any) -> None:
    es256 = f"Bearer {token(key=EC256_KEY, alg='ES256', kid='ec256')}"
    verified = await authenticator(algorithms=("ES384", "RS384", "ES256")).verify(es256, PATH)
    assert verified.issuer.iss == ISS and verified.issuer.algorithms == ("ES384", "RS384", "ES256")
    other = f"Bearer {token(key=EC256_KEY, alg='ES256', kid='ec256')}"  # a fresh jti: only the algorithm differs
    with pytest.raises(AuthError, match="algorithm 'ES256' not allowed"):
        await authenticator().verify(other, PATH)  # the default issuer: ES384 and RS384 only


def test_none_or_hmac_cannot_be_configured() -> None:
    for alg in ("none", "HS256"):
        with pytest.raises(ValueError):
            TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, algorithms=(alg,))


async def test_a_replayed_jti_is_rejected(jwks_route: Any) -> None:
    auth = authenticator()
    same = token()
    await auth.verify(f"Bearer {same}", PATH)
    with pytest.raises(AuthError, match="replayed"):
        await auth.verify(f"Bearer {same}", PATH)


async def test_tenant_must_match_when_configured(jwks_route: Any) -> None:
    auth = authenticator(tenant="hospital-a")
    await auth.verify(f"Bearer {token({'tenant': 'hospital-a'})}", PATH)
    with pytest.raises(AuthError, match="tenant"):
        await auth.verify(f"Bearer {token({'tenant': 'hospital-b'})}", PATH)
    with pytest.raises(AuthError, match="tenant"):
        await auth.verify(f"Bearer {token()}", PATH)


async def test_epic_style_token_sub_is_the_registered_client_id_and_nbf_is_honoured(jwks_route: Any) -> None:
    """Epic signs RS384 with sub = the client id the service is registered under, and sends nbf."""
    auth = authenticator(client_id="epic-client-123")
    now = int(time.time())
    epic = {"sub": "epic-client-123", "nbf": now}
    await auth.verify(f"Bearer {token(epic, key=RSA_KEY, alg='RS384', kid='rsa1')}", PATH)
    with pytest.raises(AuthError, match="client id"):
        await auth.verify(f"Bearer {token({'sub': 'another-app'}, key=RSA_KEY, alg='RS384', kid='rsa1')}", PATH)
    with pytest.raises(AuthError, match="client id"):
        await auth.verify(f"Bearer {token(key=RSA_KEY, alg='RS384', kid='rsa1')}", PATH)
    with pytest.raises(AuthError, match="signature or claims"):  # not valid before an hour from now
        await auth.verify(f"Bearer {token({**epic, 'nbf': now + 3600}, key=RSA_KEY, alg='RS384', kid='rsa1')}",
                          PATH)


async def test_key_set_is_cached_and_refetched_for_a_new_kid_at_a_bounded_rate() -> None:
    new_key = ec.generate_private_key(ec.SECP384R1())
    rotated = {"keys": [*JWKS["keys"], jwk(new_key, "ec2", "ES384")]}
    with respx.mock() as mock:
        route = mock.get(JWKS_URL).mock(side_effect=[httpx.Response(200, json=JWKS),
                                                     httpx.Response(200, json=rotated)])
        keys = KeySets(httpx.AsyncClient(), min_refresh_s=0)
        auth = Authenticator([TrustedIssuer(iss=ISS, jwks_url=JWKS_URL)], keys, Seen(), BASE)
        await auth.verify(f"Bearer {token()}", PATH)
        await auth.verify(f"Bearer {token()}", PATH)
        assert route.call_count == 1  # cached
        await auth.verify(f"Bearer {token(key=new_key, kid='ec2')}", PATH)  # rotation: refetch finds it
        assert route.call_count == 2
    with respx.mock() as mock:
        route = mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=JWKS))
        keys = KeySets(httpx.AsyncClient(), min_refresh_s=3600)
        auth = Authenticator([TrustedIssuer(iss=ISS, jwks_url=JWKS_URL)], keys, Seen(), BASE)
        for _ in range(5):  # a flood of unknown kids does not become a flood of fetches
            with pytest.raises(AuthError):
                await auth.verify(f"Bearer {token(kid='unknown')}", PATH)
        assert route.call_count == 1


async def test_unreachable_key_set_fails_closed() -> None:
    with respx.mock() as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(503))
        with pytest.raises(AuthError, match="key set"):
            await authenticator().verify(f"Bearer {token()}", PATH)


async def test_with_a_jwks_url_the_tokens_jku_is_ignored_never_fetched() -> None:
    """The one rule: a configured key set is authoritative. A jku (the CDS Hooks sandbox always sends
    one) neither makes the token fail nor makes the service fetch it."""
    with respx.mock(assert_all_called=False) as mock:
        configured = mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=JWKS))
        named = mock.get("https://evil.example/jwks.json").mock(return_value=httpx.Response(200, json=JWKS))
        verified = await authenticator().verify(f"Bearer {token(headers={'jku': 'https://evil.example/jwks.json'})}",
                                                PATH)
        assert verified.issuer.iss == ISS
        assert configured.called and not named.called


async def test_without_a_key_set_only_an_allow_listed_jku_is_fetched() -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(ROTATING_JKU).mock(return_value=httpx.Response(200, json=JWKS))
        evil = mock.get("https://evil.example/jwks.json").mock(return_value=httpx.Response(200, json=JWKS))
        auth = authenticator(jwks_url=None, allowed_jku=(ROTATING_JKU,))
        verified = await auth.verify(f"Bearer {token(headers={'jku': ROTATING_JKU})}", PATH)
        assert verified.issuer.iss == ISS and route.called
        with pytest.raises(AuthError, match="jku"):
            await auth.verify(f"Bearer {token(headers={'jku': 'https://evil.example/jwks.json'})}", PATH)
        with pytest.raises(AuthError, match="jku"):
            await auth.verify(f"Bearer {token()}", PATH)  # no jku and no key set: nowhere to look
        assert not evil.called


def test_a_key_set_and_a_jku_allow_list_together_are_refused() -> None:
    with pytest.raises(ValueError, match="allowed_jku"):
        TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, allowed_jku=(ROTATING_JKU,))
    with pytest.raises(ValueError, match="allowed_jku"):
        TrustedIssuer(iss=ISS, jwks=JWKS, allowed_jku=(ROTATING_JKU,))
    TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, allowed_jku=())  # the docs' example: an empty list is no list


async def test_sandbox_preset_trusts_the_published_key_without_a_network_call() -> None:
    assert CDS_HOOKS_SANDBOX.testing_only and not CDS_HOOKS_SANDBOX.allowed_jku
    with respx.mock() as mock:  # no route: any HTTP call would fail the test
        auth = Authenticator([CDS_HOOKS_SANDBOX], KeySets(httpx.AsyncClient()), Seen(), BASE)
        forged = token({"iss": CDS_HOOKS_SANDBOX.iss}, kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
                       headers={"jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"})
        with pytest.raises(AuthError, match="signature"):  # right kid, but signed by our key, not the sandbox's
            await auth.verify(f"Bearer {forged}", PATH)
        assert not mock.calls
