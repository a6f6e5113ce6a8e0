"""The review app's pieces on their own: scopes, PKCE, the token response, discovery's refusals (httpx, so
respx stands in for the EHR's authorization server), the id_token's verification, the drafts' requester
and identifier, the checklist table's upgrade, settings, the card's smart link."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from adapter.cds.settings import Settings
from adapter.cli import app as cli
from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle, fhir_wanted
from adapter.fhir.scopes import read_types
from adapter.report.card import card
from adapter.review.config import launch_url, read_app_context, review_config
from adapter.review.drafts import drafts
from adapter.review.errors import ReviewError
from adapter.review.identity import fhir_user_reference, identify, logged_user, requester, verify_id_token
from adapter.review.pages import security_headers
from adapter.review.sessions import ReviewStore
from adapter.review.settings import ReviewSettings
from adapter.review.smart import (
    MAX_ANSWER_BYTES,
    discover,
    exchange_code,
    grants,
    missing_read_scopes,
    parse_token_response,
    pkce_pair,
    requested_scopes,
)
from adapter.trials import load_trial
from tests.helpers import AS_OF

FIXTURES = Path(__file__).parent / "fixtures"
TYPES = read_types(fhir_wanted(load_trial("axiom")))
ISS = "https://ehr.example/fhir"


# --------------------------------------------------------------------------- scopes and PKCE


def test_requested_scopes_are_the_hooks_reads_plus_the_drafts() -> None:
    v2 = requested_scopes(TYPES, 2)
    assert v2[:3] == ["launch", "openid", "fhirUser"] and v2[-1] == "patient/ServiceRequest.crs"  # s: find one
    assert {f"patient/{t}.rs" for t in TYPES} <= set(v2) and "patient/Observation.rs" in v2
    v1 = requested_scopes(TYPES, 1)
    assert "patient/Observation.read" in v1 and v1[-2:] == ["patient/ServiceRequest.write",
                                                            "patient/ServiceRequest.read"]


@pytest.mark.parametrize(("scope", "rtype", "needed", "granted"), [
    ("patient/Observation.rs", "Observation", "rs", True),
    ("patient/Observation.r", "Observation", "rs", False),
    ("patient/Observation.read", "Observation", "rs", True),  # v1
    ("user/Observation.cruds", "Observation", "rs", True),
    ("patient/*.rs", "Condition", "rs", True),
    ("patient/*.read", "Condition", "rs", True),
    ("system/Observation.rs", "Observation", "rs", False),  # not a user's access
    ("patient/Observation.rs?category=laboratory", "Observation", "rs", False),  # only part of the type
    ("patient/Observation.sr", "Observation", "rs", False),  # not v2 order: not a scope
    ("patient/ServiceRequest.c", "ServiceRequest", "c", True),
    ("patient/ServiceRequest.write", "ServiceRequest", "c", True),
    ("patient/ServiceRequest.read", "ServiceRequest", "c", False),
    ("patient/Condition.rs", "Observation", "rs", False),
])
def test_grants(scope: str, rtype: str, needed: str, granted: bool) -> None:
    assert grants(frozenset({scope}), rtype, needed) is granted


def test_missing_read_scopes_are_named_as_asked() -> None:
    granted = frozenset(f"patient/{t}.rs" for t in TYPES if t != "Observation")
    assert missing_read_scopes(granted, TYPES, 2) == ["patient/Observation.rs"]
    assert missing_read_scopes(frozenset({"patient/*.read"}), TYPES, 1) == []


def test_pkce_pair_is_rfc7636_s256() -> None:
    verifier, challenge = pkce_pair()
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier)
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


# --------------------------------------------------------------------------- the token response


GOOD = {"access_token": "t", "token_type": "bearer", "scope": "launch patient/*.rs", "patient": "123",
        "expires_in": 300}


def test_token_response_fields() -> None:
    token = parse_token_response({**GOOD, "appContext": {"trial": "axiom"}})
    assert token.patient == "123" and token.scope == frozenset({"launch", "patient/*.rs"})
    assert token.expires_in == 300 and json.loads(token.app_context or "") == {"trial": "axiom"}
    assert token.id_token is None and parse_token_response({**GOOD, "id_token": "a.b.c"}).id_token == "a.b.c"


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"patient": None}, 502, "no patient in context"),
    ({"patient": "../Patient/1"}, 502, "no patient in context"),
    ({"scope": None}, 403, "no granted scope"),
    ({"token_type": "mac"}, 502, "no bearer token"),
    ({"access_token": ""}, 502, "no access token"),
])
def test_token_response_refusals(change: dict[str, object], status: int, words: str) -> None:
    data = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ReviewError) as caught:
        parse_token_response(data)
    assert caught.value.status == status and words in caught.value.detail


# --------------------------------------------------------------------------- the authorization server


CONFIG_URL = f"{ISS}/.well-known/smart-configuration"
SMART = {"authorization_endpoint": "https://ehr.example/auth", "token_endpoint": "https://ehr.example/token",
         "code_challenge_methods_supported": ["S256"]}


@pytest.mark.parametrize(("answer", "words"), [
    (httpx.Response(302, headers={"Location": "https://elsewhere.example/conf"}), "redirect, which is not followed"),
    (httpx.Response(404), "HTTP 404"),
    (httpx.Response(200, text="<html>"), "not JSON"),
    (httpx.Response(200, json=[1]), "not a JSON object"),
    (httpx.Response(200, content=b" " * (MAX_ANSWER_BYTES + 1)), "too large"),
    (httpx.Response(200, json={**SMART, "token_endpoint": "http://ehr.example/token"}), "not https"),
    (httpx.Response(200, json={**SMART, "authorization_endpoint": "/auth"}), "no usable authorization_endpoint"),
    (httpx.Response(200, json={**SMART, "code_challenge_methods_supported": ["plain"]}), "lists only: plain"),
])
async def test_discovery_refusals(answer: httpx.Response, words: str) -> None:
    with respx.mock:
        respx.get(CONFIG_URL).mock(return_value=answer)
        async with httpx.AsyncClient(follow_redirects=False) as http:
            with pytest.raises(ReviewError) as caught:
                await discover(http, ISS)
    assert caught.value.status == 502 and words in caught.value.detail


async def test_discovery_unreachable() -> None:
    with respx.mock:
        respx.get(CONFIG_URL).mock(side_effect=httpx.ConnectError("refused"))
        async with httpx.AsyncClient() as http:
            with pytest.raises(ReviewError) as caught:
                await discover(http, ISS)
    assert caught.value.status == 502 and "could not be reached" in caught.value.title


@pytest.mark.parametrize(("answer", "status", "words"), [
    (httpx.Response(400, json={"error": "invalid_grant"}), 400, "(invalid_grant)"),
    (httpx.Response(400, json={"error": "<script>"}), 400, "authorization code. A code"),  # odd error not shown
    (httpx.Response(500, json={}), 502, "HTTP 500"),
    (httpx.Response(307, headers={"Location": "https://x.example/"}), 502, "redirect"),
])
async def test_code_exchange_refusals(answer: httpx.Response, status: int, words: str) -> None:
    with respx.mock:
        respx.post(SMART["token_endpoint"]).mock(return_value=answer)
        async with httpx.AsyncClient(follow_redirects=False) as http:
            with pytest.raises(ReviewError) as caught:
                await exchange_code(http, SMART["token_endpoint"], code="c", verifier="v", redirect_uri="r",
                                    client_id="app", client_secret=None)
    assert caught.value.status == status and words in caught.value.detail


async def test_code_exchange_sends_the_verifier_and_the_client() -> None:
    with respx.mock:
        route = respx.post(SMART["token_endpoint"]).mock(return_value=httpx.Response(200, json=GOOD))
        async with httpx.AsyncClient() as http:
            await exchange_code(http, SMART["token_endpoint"], code="c", verifier="v", redirect_uri="https://r/cb",
                                client_id="app", client_secret="s")
    sent = route.calls.last.request
    form = dict(x.split("=") for x in sent.content.decode().split("&"))
    assert form == {"grant_type": "authorization_code", "code": "c", "redirect_uri": "https%3A%2F%2Fr%2Fcb",
                    "code_verifier": "v"}
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"app:s").decode()


# --------------------------------------------------------------------------- the id_token

CLIENT = "axiom-review"
OIDC_ISSUER = "https://ehr.example/oauth2"
RSA_KEY = rsa.generate_private_key(65537, 2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


KEYS = [jwk(RSA_KEY, "rsa-1", "RS256"), jwk(EC_KEY, "ec-1", "ES384")]


def id_token(alg: str = "RS256", key: Any = RSA_KEY, kid: str | None = "rsa-1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": OIDC_ISSUER, "aud": CLIENT, "sub": "u-1", "iat": now, "exp": now + 300,
            "fhirUser": f"{ISS}/Practitioner/p-7", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg,
                      headers={"kid": kid} if kid else None)


def tampered() -> str:
    """A valid token's header and signature around another payload (a fhirUser swapped)."""
    header, _, signature = id_token().split(".")
    return ".".join((header, id_token(fhirUser="Practitioner/admin").split(".")[1], signature))


def verify(token: str, keys: list[dict[str, Any]] = KEYS) -> Any:
    return verify_id_token(token, keys, issuer=OIDC_ISSUER, client_id=CLIENT, fhir_base=ISS)


@pytest.mark.parametrize("alg", ["RS256", "RS384"])
def test_id_token_rsa(alg: str) -> None:
    keys = [{k: v for k, v in KEYS[0].items() if k != "alg"}]  # an RSA key not pinned to one algorithm
    who = verify(id_token(alg, name="Dr.  Ada\nLovelace"), keys)
    assert who.fhir_user == "Practitioner/p-7" and who.display == "Dr. Ada Lovelace"


def test_id_token_es384_and_a_token_without_kid() -> None:
    assert verify(id_token("ES384", EC_KEY, "ec-1")).fhir_user == "Practitioner/p-7"
    assert verify(id_token(kid=None), [KEYS[0]]).fhir_user == "Practitioner/p-7"  # the set's only RSA key
    assert verify(id_token(fhirUser=None)).fhir_user is None  # signed in, but not as a FHIR user


@pytest.mark.parametrize(("token", "words"), [
    (jwt.encode({"iss": OIDC_ISSUER, "aud": CLIENT, "sub": "u"}, None, algorithm="none"), "not signed with an"),
    # HMAC (e.g. the published key as its secret, algorithm confusion) is never accepted
    (jwt.encode({"iss": OIDC_ISSUER, "aud": CLIENT, "sub": "u"}, b"k" * 32, algorithm="HS256",
                headers={"kid": "rsa-1"}), "not signed with an"),
    (id_token(key=rsa.generate_private_key(65537, 2048)), "signature does not match"),
    (tampered(), "signature does not match"),
    (id_token(kid="unknown"), "names no key"),
    (id_token("ES384", EC_KEY, "rsa-1"), "names no key"),  # an RSA key named for an EC signature
    (id_token(aud="another-app"), "issued for another app"),
    (id_token(iss=ISS), "issued by another server"),
    (id_token(exp=int(time.time()) - 120), "has expired"),
    (id_token(iat=int(time.time()) + 600), "dated in the future"),
    (id_token(sub=None), "lacks a required claim"),
    (id_token(exp=None), "lacks a required claim"),
    ("not-a-jwt", "not signed with an"),
])
def test_id_token_refusals(token: str, words: str) -> None:
    with pytest.raises(ReviewError) as caught:
        verify(token)
    assert caught.value.status == 401 and words in caught.value.detail, caught.value.detail
    assert "eyJ" not in caught.value.detail  # the token is never repeated


@pytest.mark.parametrize(("claim", "expected"), [
    ("Practitioner/p-7", "Practitioner/p-7"),
    (f"{ISS}/PractitionerRole/r.1", "PractitionerRole/r.1"),
    (f"{ISS}/Patient/123/", "Patient/123"),
    ("https://other.example/fhir/RelatedPerson/9", "https://other.example/fhir/RelatedPerson/9"),
    ("https://ehr.example/fhirx/Practitioner/9", "https://ehr.example/fhirx/Practitioner/9"),  # another base
    ("Organization/1", None),
    (f"{ISS}/Practitioner/1?x=y", None),
    ("https://u:p@ehr.example/fhir/Practitioner/1", None),
    ("javascript:alert(1)//Practitioner/1", None),
    ("Practitioner/" + "x" * 65, None),
    (42, None),
])
def test_fhir_user_reference(claim: Any, expected: str | None) -> None:
    assert fhir_user_reference(claim, ISS) == expected


def test_requester_is_a_practitioner_or_role() -> None:
    assert requester("Practitioner/1") == {"requester": {"reference": "Practitioner/1"}}
    assert requester("https://x.example/fhir/PractitionerRole/2") == {
        "requester": {"reference": "https://x.example/fhir/PractitionerRole/2"}}
    assert requester("Patient/3") == {} and requester(None) == {}


def test_logs_name_a_clinician_but_never_a_patient_who_signed_in() -> None:
    """A clinician is logged by reference (an id); a patient or relative signed in (a patient-facing launch)
    only by the type: the logs identify patients by the service's keyed hash alone."""
    assert logged_user("Practitioner/1") == "Practitioner/1"
    assert logged_user("https://x.example/fhir/PractitionerRole/2") == "https://x.example/fhir/PractitionerRole/2"
    assert logged_user("Patient/3") == "Patient" and logged_user("RelatedPerson/4") == "RelatedPerson"
    assert logged_user(None) is None


TOKEN_ENDPOINT = "https://ehr.example/oauth2/token"


async def who_signed_in(token: str, listed_jwks: str | None, issuer: str | None = OIDC_ISSUER) -> Any:
    async with httpx.AsyncClient(follow_redirects=False) as http:
        return await identify(http, token, iss=ISS, token_endpoint=TOKEN_ENDPOINT, issuer=issuer,
                              listed_jwks=listed_jwks, client_id=CLIENT)


async def test_identify_reads_the_listed_key_set() -> None:
    with respx.mock:
        route = respx.get("https://ehr.example/oauth2/jwks").mock(return_value=httpx.Response(200,
                                                                                              json={"keys": KEYS}))
        who = await who_signed_in(id_token(), "https://ehr.example/oauth2/jwks")
    assert who.fhir_user == "Practitioner/p-7" and route.called


async def test_identify_falls_back_to_the_issuers_openid_configuration() -> None:
    with respx.mock:
        respx.get(f"{OIDC_ISSUER}/.well-known/openid-configuration").mock(return_value=httpx.Response(
            200, json={"issuer": OIDC_ISSUER, "jwks_uri": f"{OIDC_ISSUER}/keys"}))
        respx.get(f"{OIDC_ISSUER}/keys").mock(return_value=httpx.Response(200, json={"keys": KEYS}))
        assert (await who_signed_in(id_token(), None)).fhir_user == "Practitioner/p-7"
        # no issuer listed either: the FHIR base is the issuer (the SMART reference servers)
        respx.get(f"{ISS}/.well-known/openid-configuration").mock(return_value=httpx.Response(
            200, json={"issuer": ISS, "jwks_uri": f"{ISS}/keys"}))
        respx.get(f"{ISS}/keys").mock(return_value=httpx.Response(200, json={"keys": KEYS}))
        assert (await who_signed_in(id_token(iss=ISS), None, None)).fhir_user == "Practitioner/p-7"


@pytest.mark.parametrize(("listed", "answers", "words"), [
    ("https://keys.elsewhere.example/jwks", {}, "on a host other than"),
    ("http://ehr.example/oauth2/jwks", {}, "not https"),
    ("https://user:pw@ehr.example/jwks", {}, "not usable"),
    ("https://ehr.example/oauth2/jwks", {"https://ehr.example/oauth2/jwks": httpx.Response(
        302, headers={"Location": "https://keys.elsewhere.example/jwks"})}, "redirect, which is not followed"),
    ("https://ehr.example/oauth2/jwks", {"https://ehr.example/oauth2/jwks": httpx.Response(
        200, json={"keys": []})}, "lists no key"),
    ("https://ehr.example/oauth2/jwks", {"https://ehr.example/oauth2/jwks": httpx.Response(
        200, content=b" " * (MAX_ANSWER_BYTES + 1))}, "too large"),
    (None, {f"{OIDC_ISSUER}/.well-known/openid-configuration": httpx.Response(
        200, json={"issuer": "https://evil.example", "jwks_uri": f"{OIDC_ISSUER}/keys"})}, "names another issuer"),
])
async def test_identify_refusals(listed: str | None, answers: dict[str, httpx.Response], words: str) -> None:
    with respx.mock:
        for url, answer in answers.items():
            respx.get(url).mock(return_value=answer)
        with pytest.raises(ReviewError) as caught:
            await who_signed_in(id_token(), listed)
    assert caught.value.status == 502 and words in caught.value.detail, caught.value.detail


# --------------------------------------------------------------------------- the drafts and the checklist


def test_drafts_carry_the_clinician_and_the_referral_identifier() -> None:
    report = report_of("asps-missing-labs-needs-review")
    referral, labs = drafts(report, None, "Practitioner/p-7")
    assert referral is not None and labs
    system = report.trial.card["referral"]["identifier_system"]
    assert system and referral.resource["identifier"] == [
        {"system": system, "value": f"axiom-{report.patient.split('/')[-1]}"}]
    assert all(d.resource["requester"] == {"reference": "Practitioner/p-7"} for d in (referral, *labs))
    assert "identifier" not in labs[0].resource  # lab orders are not deduplicated across sessions
    referral, labs = drafts(report, None, "Patient/1")
    assert referral is not None and "requester" not in referral.resource
    # the card's own draft is the app's minus what only the app knows
    shown = card(report)
    assert shown is not None
    resource = shown["suggestions"][0]["actions"][0]["resource"]
    assert {k: v for k, v in referral.resource.items() if k not in ("identifier", "requester")} == \
        {k: v for k, v in resource.items() if k not in ("identifier", "requester")}


def test_checklist_table_of_an_earlier_version_gains_the_clinician(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    with old.begin() as conn:
        conn.execute(text("CREATE TABLE review_attestations (patient_key VARCHAR(64) NOT NULL, trial_version "
                          "VARCHAR(255) NOT NULL, attestation_id VARCHAR(64) NOT NULL, confirmed BOOLEAN NOT NULL, "
                          "hook_instance VARCHAR(64), recorded_at DATETIME NOT NULL, "
                          "PRIMARY KEY (patient_key, trial_version, attestation_id))"))
        conn.execute(text("INSERT INTO review_attestations VALUES ('k', 'v1', 'a', 1, NULL, '2026-01-01 00:00:00')"))
    old.dispose()
    store = ReviewStore(url)
    try:
        assert store.attestations("k", "v1")["a"].fhir_user is None  # saved before identities were recorded
        store.record_attestations("k", "v1", {"a": True, "b": False}, "hook-1", "Practitioner/p-7")
        assert {a.fhir_user for a in store.attestations("k", "v1").values()} == {"Practitioner/p-7"}
    finally:
        store.close()
    ReviewStore(url).close()  # opened again: nothing more to add


# --------------------------------------------------------------------------- settings and headers


def test_settings_resolve_against_the_service() -> None:
    review = ReviewSettings(allowed_issuers=[ISS + "/"], client_id="app")
    assert review.allowed_issuers == [ISS]
    config = review_config(review, Settings(public_base_url="https://cds.example/axiom", auth_required=False))
    assert config.enabled and config.launch_url == "https://cds.example/axiom/review/launch"
    assert config.redirect_uri == "https://cds.example/axiom/review/callback" and config.secure_cookie
    assert not review_config(review, Settings(auth_required=False)).enabled  # nowhere to send the browser back
    assert not review_config(ReviewSettings(client_id="app"), Settings(public_base_url="https://c.example")).enabled


def test_settings_refused() -> None:
    with pytest.raises(ValueError, match="SameSite=None"):
        review_config(ReviewSettings(cookie_samesite="none"), Settings(public_base_url="http://c.example"))
    with pytest.raises(ValueError, match="not an origin"):
        ReviewSettings(frame_ancestors=["https://ehr.example; script-src *"])
    with pytest.raises(ValueError, match="user name or password"):
        ReviewSettings(public_base_url="https://user:pw@c.example")


def test_csp_frames_only_the_configured_origins() -> None:
    assert "frame-ancestors 'none'" in security_headers(())["Content-Security-Policy"]
    framed = security_headers(("https://ehr.example",))
    assert "frame-ancestors https://ehr.example;" in framed["Content-Security-Policy"]
    assert "X-Frame-Options" not in framed


# --------------------------------------------------------------------------- the card's link


def report_of(name: str) -> EligibilityReport:
    return evaluate_bundle((FIXTURES / f"{name}.json").read_bytes(), AS_OF)


def test_card_links_to_the_review_app_with_an_opaque_app_context() -> None:
    report = report_of("asps-low-platelets-not-eligible")
    shown = card(report, review_url="https://cds.example/review/launch", hook_instance="d5c9f0e2-1")
    assert shown is not None
    link = shown["links"][0]
    assert link == {"label": "Review eligibility", "url": "https://cds.example/review/launch", "type": "smart",
                    "appContext": '{"trial":"axiom","hookInstance":"d5c9f0e2-1"}'}
    assert read_app_context(link["appContext"]) == ("axiom", "d5c9f0e2-1")
    assert "scn-" not in link["appContext"]  # nothing about the patient
    plain = card(report)
    assert plain is not None and [x["type"] for x in plain["links"]] == ["absolute"]


def test_cli_card_has_no_review_link() -> None:
    result = CliRunner().invoke(cli, ["evaluate", str(FIXTURES / "asps-likely-eligible.json"), "--as-of",
                                      AS_OF.isoformat(), "--format", "card"])
    assert result.exit_code == 0
    assert '"smart"' not in result.stdout


def test_launch_url_only_when_set_up() -> None:
    class State:
        pass

    state = State()
    assert launch_url(state) is None
    state.review = review_config(ReviewSettings(allowed_issuers=[ISS], client_id="app"),  # type: ignore[attr-defined]
                                 Settings(public_base_url="https://c.example", auth_required=False))
    assert launch_url(state) == "https://c.example/review/launch"
    assert read_app_context("not json") == (None, None)
    assert read_app_context('{"trial": "axiom", "hookInstance": "<b>"}') == ("axiom", None)


def test_docs_name_the_scopes_and_every_setting() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "review-app.md").read_text()
    for version in (1, 2):
        assert " ".join(requested_scopes(TYPES, version)) in doc
    for name in ReviewSettings.model_fields:
        assert f"`AXIOM_REVIEW_{name.upper()}`" in doc, name
