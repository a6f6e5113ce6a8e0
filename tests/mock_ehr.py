"""A test-only EHR on 127.0.0.1: a SMART authorization server and a token-checking FHIR proxy in front of the
real sekmet-fhir server (tests/fhir_server.py). Never shipped, never imported by the service.

What it is, as an EHR would be (SMART App Launch 2.x, EHR launch):
- `GET {fhir}/.well-known/smart-configuration` — endpoints, PKCE methods (S256, or what a test sets);
- `POST {fhir}/_services/smart/Launch` — the CDS Hooks sandbox's (non-standard) launch-context call:
  `{"launchUrl", "parameters": {"patient", "appContext"}}` → `{"launch_id"}`, so the unmodified sandbox
  can launch the app against this EHR;
- `GET /auth/authorize` — checks client, redirect URI, `aud`, the launch and the PKCE challenge, then
  approves at once for the launch's patient (the "user" is whoever the test is) and redirects back with
  a code; `POST /auth/token` — one use per code, redirect URI and PKCE verifier checked (S256), and with
  `openid` asked for, an id_token (RS256, `fhirUser` = the configured clinician, absolute on the FHIR
  base as Epic sends it) signed by a key of its own, published at `GET /auth/jwks` (the smart-configuration's
  `jwks_uri`; or, with `list_jwks` off, only in `{issuer}/.well-known/openid-configuration`);
- `{fhir}/…` — forwarded to sekmet only with a valid token whose scopes allow the interaction on that
  type (v2 `cruds` letters or v1 `read`/`write`), inside the token's patient compartment; the upstream
  base is rewritten to this one in answers (next links, Location).

Knobs (`MockEhrConfig`) make it misbehave for the negative paths: no or `plain` PKCE, scopes dropped from
the grant, no patient in the token response, a failing Patient read, an id_token with a bad signature, for
another audience, expired, or none; search parameters ignored, pages of a few entries (a server without
them); `open_reads` lets requests without a token through (the CDS Hooks sandbox reads an open FHIR server).

Run by hand for the sandbox check (docs/review-app.md):
    python -m tests.mock_ehr --upstream http://127.0.0.1:8090/fhir --port 8095 \\
        --redirect-uri http://127.0.0.1:8080/review/callback --open-reads
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import secrets
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

import httpx
import jwt
import orjson
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from adapter.engine import fhir_wanted
from adapter.fhir.scopes import read_types, smart_scopes
from adapter.fhir_sandbox import SekmetServer
from adapter.review.config import review_config
from adapter.review.settings import ReviewSettings
from adapter.trials import load_trial

if TYPE_CHECKING:
    from tests.service_server import ServiceServer

CLIENT_ID = "axiom-review"
CLINICIAN = "Practitioner/review-clinician"  # the signed-in user's fhirUser (a fixed reference)
CLINICIAN_NAME = "Dr. Rivka Test"
IdTokenMode = Literal["valid", "bad-signature", "wrong-aud", "expired", "none"]
READ_SCOPES = smart_scopes(read_types(fhir_wanted(load_trial("axiom"))))  # what a hook's token grants
START_TIMEOUT_S = 30.0
_FORWARDED = ("accept", "content-type", "prefer", "if-none-exist")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass
class MockEhrConfig:
    client_id: str = CLIENT_ID
    client_secret: str | None = None  # set: a confidential client (HTTP Basic at the token endpoint)
    redirect_uris: list[str] = field(default_factory=list)
    code_challenge_methods: list[str] | None = field(default_factory=lambda: ["S256"])  # None: not listed
    drop_scopes: set[str] = field(default_factory=set)  # requested but not granted
    omit_patient: bool = False  # token response without `patient`
    fail_patient_read: bool = False  # Patient reads answer 503
    open_reads: bool = False  # requests without a token are forwarded (the CDS Hooks sandbox)
    token_lifetime_s: int = 3600
    id_token: IdTokenMode = "valid"  # what the token response carries when `openid` was asked for
    fhir_user: str = CLINICIAN  # relative: sent absolute on the FHIR base, as Epic does
    list_jwks: bool = True  # False: jwks_uri only in the issuer's openid-configuration
    ignored_search_params: set[str] = field(default_factory=set)  # dropped from searches (a server without them)
    page_size: int | None = None  # set: searches are answered this many entries a page (`_count` replaced)


@dataclass
class Grant:
    patient: str
    scopes: frozenset[str]
    expires: float


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # without the query
    token: bool
    status: int


@dataclass
class MockEhr:
    upstream: str
    config: MockEhrConfig
    base_url: str = ""
    launches: dict[str, dict[str, Any]] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, Grant] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    signing_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    kid: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    def issue_token(self, patient: str, scopes: list[str]) -> str:
        """A token as the EHR would put in a hook's fhirAuthorization."""
        token = secrets.token_urlsafe(24)
        self.tokens[token] = Grant(patient, frozenset(scopes), time.time() + self.config.token_lifetime_s)
        return token

    def launch(self, patient: str, app_context: str | None = None) -> str:
        launch_id = secrets.token_urlsafe(12)
        self.launches[launch_id] = {"patient": patient, "appContext": app_context}
        return launch_id

    # ------------------------------------------------------------------ authorization server

    @property
    def issuer(self) -> str:
        """The OpenID issuer: not the FHIR base (as at Epic or Oracle Health), so the app must use the
        configuration's."""
        return f"{self.base_url}/auth"

    def smart_configuration(self, _: Request) -> Response:
        body: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.base_url}/auth/authorize",
            "token_endpoint": f"{self.base_url}/auth/token",
            "capabilities": ["launch-ehr", "client-public", "client-confidential-symmetric", "context-ehr-patient",
                             "permission-v1", "permission-v2", "permission-patient", "sso-openid-connect"],
            "grant_types_supported": ["authorization_code"],
            "response_types_supported": ["code"],
            "scopes_supported": ["launch", "openid", "fhirUser", "patient/*.rs", "patient/*.cruds"],
        }
        if self.config.code_challenge_methods is not None:
            body["code_challenge_methods_supported"] = self.config.code_challenge_methods
        if self.config.list_jwks:
            body["jwks_uri"] = f"{self.issuer}/jwks"
        return JSONResponse(body)

    def openid_configuration(self, _: Request) -> Response:
        return JSONResponse({"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks",
                             "authorization_endpoint": f"{self.base_url}/auth/authorize",
                             "token_endpoint": f"{self.base_url}/auth/token",
                             "id_token_signing_alg_values_supported": ["RS256"]})

    def jwks(self, _: Request) -> Response:
        key = {**jwt.algorithms.RSAAlgorithm.to_jwk(self.signing_key.public_key(), as_dict=True),
               "kid": self.kid, "alg": "RS256", "use": "sig"}
        return JSONResponse({"keys": [key]})

    def id_token(self, mode: IdTokenMode) -> str | None:
        """The id_token of a sign-in, or a broken one (the test knob)."""
        if mode == "none":
            return None
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "clinician-sub-1", "aud": self.config.client_id,
                  "iat": now, "exp": now + 300, "fhirUser": f"{self.fhir_base}/{self.config.fhir_user}",
                  "name": CLINICIAN_NAME}
        if mode == "wrong-aud":
            claims["aud"] = "another-app"
        if mode == "expired":
            claims.update(iat=now - 3600, exp=now - 1800)
        key = rsa.generate_private_key(65537, 2048) if mode == "bad-signature" else self.signing_key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    async def smart_launch(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "not JSON"}, status_code=400)
        params = body.get("parameters") if isinstance(body, dict) else None
        patient = params.get("patient") if isinstance(params, dict) else None
        if not isinstance(patient, str) or not patient:
            return JSONResponse({"error": "parameters.patient is required"}, status_code=400)
        context = params.get("appContext") if isinstance(params, dict) else None
        return JSONResponse({"launch_id": self.launch(patient, context if isinstance(context, str) else None)})

    def authorize(self, request: Request) -> Response:
        q = request.query_params
        cfg = self.config
        if q.get("client_id") != cfg.client_id or q.get("redirect_uri") not in cfg.redirect_uris:
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        redirect_uri = q["redirect_uri"]

        def back(**params: str) -> Response:
            state = q.get("state")
            return RedirectResponse(f"{redirect_uri}?{urlencode({**params, **({'state': state} if state else {})})}",
                                    status_code=302)

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if q.get("aud") != self.fhir_base or q.get("launch") not in self.launches:
            return back(error="invalid_request")
        method = q.get("code_challenge_method", "plain")
        if not q.get("code_challenge") or method not in (cfg.code_challenge_methods or ["S256"]):
            return back(error="invalid_request")
        requested = q.get("scope", "").split()
        if "launch" not in requested:
            return back(error="invalid_scope")
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"redirect_uri": redirect_uri, "challenge": q["code_challenge"], "method": method,
                            "launch": self.launches[q["launch"]], "used": False, "expires": time.time() + 60,
                            "scopes": [s for s in requested if s not in cfg.drop_scopes]}
        return back(code=code)

    async def token(self, request: Request) -> Response:
        form = await request.form()
        cfg = self.config

        def refuse(error: str, status: int = 400) -> Response:
            return JSONResponse({"error": error}, status_code=status)

        if form.get("grant_type") != "authorization_code":
            return refuse("unsupported_grant_type")
        if cfg.client_secret is not None:
            expected = base64.b64encode(f"{cfg.client_id}:{cfg.client_secret}".encode()).decode()
            if request.headers.get("authorization") != f"Basic {expected}":
                return refuse("invalid_client", 401)
        elif form.get("client_id") != cfg.client_id:
            return refuse("invalid_client", 401)
        entry = self.codes.get(str(form.get("code", "")))
        if entry is None or entry["used"] or entry["expires"] < time.time():
            return refuse("invalid_grant")
        entry["used"] = True  # single use, whatever happens next
        if form.get("redirect_uri") != entry["redirect_uri"]:
            return refuse("invalid_grant")
        verifier = str(form.get("code_verifier", ""))
        derived = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode() \
            if entry["method"] == "S256" else verifier
        if not verifier or not secrets.compare_digest(derived, entry["challenge"]):
            return refuse("invalid_grant")
        launch = entry["launch"]
        token = self.issue_token(launch["patient"], entry["scopes"])
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": cfg.token_lifetime_s,
                                "scope": " ".join(entry["scopes"]), "need_patient_banner": True}
        if not cfg.omit_patient:
            body["patient"] = launch["patient"]
        if launch.get("appContext"):
            body["appContext"] = launch["appContext"]
        if "openid" in entry["scopes"] and (id_token := self.id_token(cfg.id_token)) is not None:
            body["id_token"] = id_token
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ FHIR proxy

    def _allows(self, grant: Grant, resource_type: str, needed: str) -> bool:
        for scope in grant.scopes:
            context, _, rest = scope.partition("/")
            kind, _, permissions = rest.partition(".")
            if context in ("patient", "user") and kind in (resource_type, "*") and "?" not in permissions \
                    and set(needed) <= set(_V1.get(permissions, permissions)):
                return True
        return False

    def _in_compartment(self, grant: Grant, value: Any) -> bool:
        return isinstance(value, str) and value.split("/")[-1] == grant.patient and \
            (value == grant.patient or value.endswith(f"Patient/{grant.patient}"))

    async def fhir(self, request: Request) -> Response:
        path = request.path_params["path"]
        parts = [p for p in path.split("/") if p]
        if parts == ["metadata"]:
            return await self._forward(request, path, None)
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        grant = self.tokens.get(token) if token else None
        if token is None and self.config.open_reads and request.method == "GET":
            return await self._forward(request, path, None)
        if grant is None or grant.expires < time.time():
            return self._outcome(request, 401, "no valid access token", token is not None)
        body = await request.body()
        why = self._refusal(request, grant, parts, body)
        if why is not None:
            return self._outcome(request, 403, why, True)
        if self.config.fail_patient_read and parts[0] == "Patient":
            return self._outcome(request, 503, "Patient reads are failing (test knob)", True)
        response = await self._forward(request, path, body)
        if request.method == "GET" and len(parts) == 2 and parts[0] != "Patient" and response.status_code == 200:
            # a read by id: the resource must be in the token's compartment
            resource = orjson.loads(response.body)
            subject = (resource.get("subject") or resource.get("patient") or {}).get("reference")
            if subject is not None and not self._in_compartment(grant, subject):
                return self._outcome(request, 403, "outside the patient compartment", True)
        return response

    def _refusal(self, request: Request, grant: Grant, parts: list[str], body: bytes) -> str | None:
        if not parts or not parts[0].isalpha():
            return "not a resource path"
        kind = parts[0]
        if request.method == "GET" and len(parts) == 2:
            if not self._allows(grant, kind, "r"):
                return f"scope does not allow reading {kind}"
            if kind == "Patient" and parts[1] != grant.patient:
                return "another patient"
            return None
        if (request.method == "GET" and len(parts) == 1) or (request.method == "POST" and parts[1:] == ["_search"]):
            if not self._allows(grant, kind, "s"):
                return f"scope does not allow searching {kind}"
            who = request.query_params.get("patient") or request.query_params.get("subject")
            return None if self._in_compartment(grant, who) else "search outside the patient compartment"
        if request.method == "POST" and len(parts) == 1:
            if not self._allows(grant, kind, "c"):
                return f"scope does not allow creating {kind}"
            try:
                subject = (orjson.loads(body).get("subject") or {}).get("reference")
            except (orjson.JSONDecodeError, AttributeError):
                return "not a resource"
            return None if self._in_compartment(grant, subject) else "create outside the patient compartment"
        return "interaction not supported"

    def _outcome(self, request: Request, status: int, why: str, token: bool) -> Response:
        self.seen.append(Seen(request.method, request.url.path, token, status))
        return JSONResponse({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "forbidden" if status == 403 else "security", "diagnostics": why}]},
            status_code=status, media_type="application/fhir+json")

    async def _forward(self, request: Request, path: str, body: bytes | None) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        url = f"{self.upstream}/{path}"
        params = [(k, v) for k, v in request.query_params.multi_items()
                  if k not in self.config.ignored_search_params]
        if self.config.page_size is not None and request.method == "GET" and "/" not in path.strip("/"):
            params = [(k, v) for k, v in params if k != "_count"] + [("_count", str(self.config.page_size))]
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as http:
            upstream = await http.request(request.method, url, params=params, content=body, headers=headers)
        data = upstream.content.replace(self.upstream.encode(), self.fhir_base.encode())
        out = {"Content-Type": upstream.headers.get("content-type", "application/fhir+json")}
        if "location" in upstream.headers:
            out["Location"] = upstream.headers["location"].replace(self.upstream, self.fhir_base)
        self.seen.append(Seen(request.method, request.url.path, "authorization" in request.headers,
                              upstream.status_code))
        return Response(data, status_code=upstream.status_code, headers=out)

    def app(self) -> Starlette:
        routes = [
            Route("/fhir/.well-known/smart-configuration", self.smart_configuration),
            Route("/fhir/_services/smart/Launch", self.smart_launch, methods=["POST"]),
            Route("/auth/authorize", self.authorize),
            Route("/auth/token", self.token, methods=["POST"]),
            Route("/auth/jwks", self.jwks),
            Route("/auth/.well-known/openid-configuration", self.openid_configuration),
            Route("/fhir/{path:path}", self.fhir, methods=["GET", "POST"]),
        ]
        # the CDS Hooks sandbox calls the FHIR server and the launch endpoint from the browser
        cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                          allow_headers=["authorization", "content-type", "accept", "prefer"])
        return Starlette(routes=routes, middleware=[cors])


# --------------------------------------------------------------------------- what the review tests share

FIXTURES = Path(__file__).parent / "fixtures"


def renamed(name: str) -> tuple[str, dict[str, Any]]:
    """A fixture under ids of its own (every id in it starts with the patient's): no other test's data."""
    text = (FIXTURES / f"{name}.json").read_text().replace(f"scn-{name}", f"review-{name}")
    return f"review-{name}", json.loads(text)


@contextlib.contextmanager
def loaded_patients(fhir_server: SekmetServer, names: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The fixtures on the server under ids of their own (name → patient id); afterwards they and the
    drafts the tests wrote for them (which reference them) are deleted."""
    loaded = {name: renamed(name) for name in names}
    for _, bundle in loaded.values():
        fhir_server.load(bundle)
    try:
        yield {name: pid for name, (pid, _) in loaded.items()}
    finally:
        for pid, bundle in loaded.values():
            delete_drafts(fhir_server, pid)
            fhir_server.unload(bundle)


def delete_drafts(fhir_server: SekmetServer, pid: str) -> None:
    """The ServiceRequests the tests wrote for this patient, deleted (a test that needs none open)."""
    with httpx.Client(timeout=30.0, trust_env=False) as http:
        found = fhir_server.get("ServiceRequest", params={"subject": f"Patient/{pid}", "_count": "100"}).json()
        for entry in found.get("entry") or ():
            http.delete(f"{fhir_server.base_url}/ServiceRequest/{entry['resource']['id']}")


def with_review(server: ServiceServer, ehr: MockEhr) -> ServiceServer:
    """The service's review app set up for this EHR, as AXIOM_REVIEW_* would (the port is known only once
    the service listens), and the EHR's registration of its callback."""
    server.app.state.review = review_config(ReviewSettings(
        allowed_issuers=[ehr.fhir_base], client_id=ehr.config.client_id, public_base_url=server.base_url),
        server.settings)
    ehr.config.redirect_uris = [f"{server.base_url}/review/callback"]
    return server


def card_for(service: ServiceServer, ehr: MockEhr, pid: str) -> dict[str, Any]:
    """The hook as the EHR calls it (with a token for the chart): the card, with the hookInstance sent."""
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": ehr.fhir_base,
            "fhirAuthorization": {"access_token": ehr.issue_token(pid, READ_SCOPES), "token_type": "Bearer",
                                  "expires_in": 300, "scope": " ".join(READ_SCOPES), "subject": "axiom-cds"},
            "context": {"patientId": pid, "userId": "Practitioner/clinician-1"}}
    response = httpx.post(service.hook_url, json=body, trust_env=False, timeout=30.0)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    assert len(cards) == 1
    return {**cards[0], "hookInstance": body["hookInstance"]}


def smart_link(card: dict[str, Any]) -> dict[str, Any]:
    return next(link for link in card["links"] if link["type"] == "smart")


def launch_url(ehr: MockEhr, link: dict[str, Any], pid: str) -> str:
    """What the CDS Hooks sandbox does with a smart link: the launch-context call, then the app's URL."""
    body = {"launchUrl": link["url"], "parameters": {"patient": pid, "appContext": link["appContext"]}}
    answer = httpx.post(f"{ehr.fhir_base}/_services/smart/Launch", json=body, trust_env=False)
    assert answer.status_code == 200
    return f"{link['url']}?launch={answer.json()['launch_id']}&iss={ehr.fhir_base}"


@contextlib.contextmanager
def running_mock_ehr(upstream: str, config: MockEhrConfig | None = None, port: int = 0) -> Iterator[MockEhr]:
    """Serve a MockEhr on 127.0.0.1 (a free port unless given) in a thread; stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    ehr = MockEhr(upstream.rstrip("/"), config or MockEhrConfig())
    ehr.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(ehr.app(), log_config=None, access_log=False, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mock-ehr", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the mock EHR did not start")
            time.sleep(0.02)
        yield ehr
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Test-only SMART EHR in front of a FHIR server (127.0.0.1)")
    parser.add_argument("--upstream", required=True, help="the FHIR base to proxy, e.g. http://127.0.0.1:8090/fhir")
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--client-id", default=CLIENT_ID)
    parser.add_argument("--redirect-uri", action="append", required=True, help="the review app's callback URL")
    parser.add_argument("--open-reads", action="store_true", help="forward reads without a token (the sandbox)")
    args = parser.parse_args()
    config = MockEhrConfig(client_id=args.client_id, redirect_uris=args.redirect_uri, open_reads=args.open_reads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running_mock_ehr(args.upstream, config, args.port) as ehr:
        print(f"mock EHR: FHIR base (iss) {ehr.fhir_base}; Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass


if __name__ == "__main__":
    main()
