"""The review app's pieces on their own: scopes, PKCE, the token response, discovery's refusals (httpx, so
respx stands in for the EHR's authorization server), settings, the card's smart link."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from adapter.cds.settings import Settings
from adapter.cli import app as cli
from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle, fhir_wanted
from adapter.fhir.scopes import read_types
from adapter.report.card import card
from adapter.review.config import launch_url, read_app_context, review_config
from adapter.review.errors import ReviewError
from adapter.review.pages import security_headers
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
    assert v2[:3] == ["launch", "openid", "fhirUser"] and v2[-1] == "patient/ServiceRequest.cr"
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
