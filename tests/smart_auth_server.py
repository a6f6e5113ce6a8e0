"""A test-only SMART Backend Services authorization server on 127.0.0.1 (stdlib http.server + pyjwt).

It checks a token request the way the SMART App Launch 2.x "Backend Services" spec says an EHR must,
and strictly: `grant_type=client_credentials`, the jwt-bearer `client_assertion_type`, a `kid` header
naming a registered public key, an alg among those it lists, the signature, `iss` = `sub` = a known
client id, `aud` = its token URL, `exp` no more than 5 minutes ahead, a `jti` never seen before, and a
`scope` it grants. It then issues a random access token with `expires_in` as configured. Every request
is recorded (the decoded header and claims, the form) so that the tests assert what the client sent.

It also serves `/fhir/.well-known/smart-configuration` (the document is configurable), which is where
the client discovers the token endpoint. It is no FHIR server.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 300


@dataclass
class TokenRequest:
    form: dict[str, str]
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class SmartAuthServer:
    """`clients`: client id → public JWKS. `scopes`: what is granted (a v2-only server: no `.read`)."""

    clients: dict[str, dict[str, Any]]
    algs: tuple[str, ...] = ("RS384", "ES384")
    expires_in: int = 300
    granted: tuple[str, ...] = ("system/*.rs", "system/*.read")
    capabilities: tuple[str, ...] = ("client-confidential-asymmetric", "permission-v1", "permission-v2")
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    _jti: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """Where a client looks for `.well-known/smart-configuration` (a FHIR base's place)."""
        return f"{self.origin}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/auth/token"

    def configuration(self) -> dict[str, Any]:
        return {"token_endpoint": self.token_url, "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": list(self.algs),
                "scopes_supported": list(self.granted), "capabilities": list(self.capabilities)}

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The answer to one token request (status, JSON body), recorded."""
        request = TokenRequest(form)
        self.requests.append(request)

        def refuse(error: str, why: str, status: int = 400) -> tuple[int, dict[str, Any]]:
            request.error = error
            return status, {"error": error, "error_description": why}

        if form.get("grant_type") != "client_credentials":
            return refuse("unsupported_grant_type", "client_credentials only")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return refuse("invalid_request", "client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion", "")
        try:
            request.header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return refuse("invalid_request", "client_assertion is not a JWT")
        jwks = self.clients.get(str(unverified.get("iss")))
        if jwks is None:
            return refuse("invalid_client", "unknown client", 401)
        alg, kid = request.header.get("alg"), request.header.get("kid")
        if alg not in self.algs:
            return refuse("invalid_client", f"alg {alg} not accepted", 401)
        jwk = next((k for k in jwks["keys"] if k.get("kid") == kid), None)
        if jwk is None:
            return refuse("invalid_client", "no registered key has this kid", 401)
        try:
            claims = jwt.decode(assertion, jwt.PyJWK(jwk, algorithm=alg).key, algorithms=[alg], audience=self.token_url,
                                options={"require": ["iss", "sub", "aud", "exp", "jti"]})
        except jwt.PyJWTError as exc:
            return refuse("invalid_client", f"assertion rejected: {exc}", 401)
        request.claims = claims
        if claims["iss"] != claims["sub"]:
            return refuse("invalid_client", "iss and sub must both be the client id", 401)
        if claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME_S:
            return refuse("invalid_client", "exp more than 5 minutes ahead", 401)
        if claims["jti"] in self._jti:
            return refuse("invalid_client", "jti replayed", 401)
        self._jti.add(claims["jti"])
        scope = form.get("scope", "")
        if not scope or any(s not in self.granted for s in scope.split()):
            return refuse("invalid_scope", f"not granted: {scope}")
        token = secrets.token_urlsafe(32)
        self.issued.append(token)
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.expires_in, "scope": scope}

    @contextlib.contextmanager
    def running(self) -> Iterator[SmartAuthServer]:
        auth = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, status: int, body: Any) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/fhir/.well-known/smart-configuration":
                    self.answer(200, auth.configuration())
                else:
                    self.answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1024 * 1024)).decode()
                if self.path != "/auth/token":
                    self.answer(404, {"error": "not found"})
                    return
                form = {k: v[0] for k, v in parse_qs(body).items()}
                self.answer(*auth.token(form))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                  name="smart-auth")
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
