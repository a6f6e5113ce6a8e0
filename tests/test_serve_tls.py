"""`axiom-cds serve` over HTTPS, with the certificate and key settings (issue 10 item 4).

Certificates are made per test with `cryptography` (self-signed for 127.0.0.1, and a client CA for
mutual TLS); the client verifies the server against exactly that certificate. The service runs as a
real process, as deployed; a broken TLS setting must stop it before it starts, in one line, exit 2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import ECAlgorithm

from adapter.cds.routes.discovery import SERVICE_ID
from adapter.cds.settings import Settings
from adapter.cds.tls import TlsError, tls_options
from adapter.fhir_sandbox import free_port
from tests.serve_process import serve_environment, serve_process

ROOT = Path(__file__).resolve().parents[1]
ISS = "https://ehr.hospital.example"
JWT_KEY = ec.generate_private_key(ec.SECP384R1())
JWKS = {"keys": [{**json.loads(ECAlgorithm.to_jwk(JWT_KEY.public_key())), "kid": "k1", "alg": "ES384"}]}
GRACE_S = 20  # AXIOM_SHUTDOWN_GRACE_S (the default)
PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "not-the-password-7f3a"
TLS_SETTINGS = ("AXIOM_TLS_CERTFILE", "AXIOM_TLS_KEYFILE", "AXIOM_TLS_KEYFILE_PASSWORD", "AXIOM_TLS_CLIENT_CA")


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def make_cert(directory: Path, name: str, *, issuer: Pem | None = None, client: bool = False,
              password: str | None = None) -> Pem:
    """A certificate for 127.0.0.1 (self-signed, a CA of itself), or a client certificate `issuer` signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"axiom test {name}")])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.certificate.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if client:
        assert issuer is not None
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       issuer.private_key.public_key()), critical=False))
    else:
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False))
    certificate = builder.sign(issuer.private_key if issuer else key, hashes.SHA256())
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           encryption))
    return Pem(cert_path, key_path, key, certificate)


def trusting(pem: Pem) -> ssl.SSLContext:
    """A client context that trusts this one certificate, and checks the host name (127.0.0.1) against it."""
    return ssl.create_default_context(cafile=str(pem.cert))


def weak_clients(pem: Pem) -> list[ssl.SSLContext]:
    """Clients trusting `pem` that the service refuses: TLS 1.1; TLS 1.2 offering only unencrypted or
    unauthenticated suites; TLS 1.2 offering only CBC suites with SHA-1 MACs (uvicorn's default allows them)."""
    clients = []
    for version, ciphers in ((ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0"), (ssl.TLSVersion.TLSv1_2, "aNULL:eNULL"),
                             (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")):
        client = trusting(pem)
        client.minimum_version = min(version, client.minimum_version)
        client.maximum_version = version
        client.set_ciphers(ciphers)
        clients.append(client)
    return clients


# --------------------------------------------------------------------------- `serve`


def serve_env(port: int, **extra: str) -> dict[str, str]:
    return serve_environment(port, AXIOM_PUBLIC_BASE_URL=f"https://127.0.0.1:{port}",
                             AXIOM_TRUSTED_ISSUERS=json.dumps([{"iss": ISS, "jwks": JWKS}]),
                             AXIOM_FHIR_SERVERS=json.dumps(["https://fhir.hospital.example/r4"]), **extra)


@dataclass
class Served:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serving_tls(workdir: Path, server: Pem, client: httpx.Client, **extra: str) -> Iterator[Served]:
    """`axiom-cds serve` with this certificate; yields once `client` gets /healthz over HTTPS."""
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    env = serve_env(port, AXIOM_DATABASE_URL=f"sqlite:///{workdir / 'cds.db'}",
                    AXIOM_TLS_CERTFILE=str(server.cert), AXIOM_TLS_KEYFILE=str(server.key), **extra)

    def ready() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return client.get(base_url + "/healthz").status_code == 200
        return False

    with serve_process([], env, workdir / "serve.log", ready) as process:
        yield Served(base_url, workdir / "serve.log", process)


def token(audience: str) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": audience, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, JWT_KEY, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


# --------------------------------------------------------------------------- tests


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain-key", "encrypted-key"])
def test_https_serves_health_and_discovery_and_plain_http_gets_nothing(tmp_path: Path, encrypted: bool) -> None:
    server = make_cert(tmp_path, "server", password=PASSWORD if encrypted else None)
    extra = {"AXIOM_TLS_KEYFILE_PASSWORD": PASSWORD} if encrypted else {}
    with httpx.Client(verify=trusting(server), timeout=10.0) as client, \
            serving_tls(tmp_path, server, client, **extra) as served:
        health = client.get(served.base_url + "/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        # the JWT audience is AXIOM_PUBLIC_BASE_URL as configured (https), plus the path
        discovery = client.get(served.base_url + "/cds-services",
                               headers={"Authorization": f"Bearer {token(served.base_url + '/cds-services')}"})
        assert discovery.status_code == 200, discovery.text[:300]
        assert [s["id"] for s in discovery.json()["services"]] == [SERVICE_ID]

        for weak in weak_clients(server):  # no TLS 1.1, no unencrypted or unauthenticated cipher suite
            with pytest.raises(httpx.TransportError):
                httpx.get(served.base_url + "/healthz", verify=weak, timeout=10.0)

        plain = served.base_url.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):  # the TLS port answers no plain HTTP request
            httpx.get(plain + "/healthz", timeout=10.0)
        assert client.get(served.base_url + "/healthz").status_code == 200, "still serving after the plain call"

        # the client keeps its connection open: over TLS the shutdown must not wait for it to close
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(GRACE_S + 15) == 0
    log = served.log_text()
    assert "graceful shutdown exceeded" not in log, "an idle kept-alive TLS connection held the shutdown"
    assert "WARNING: " not in log, "a sound TLS set-up starts without a warning"


def test_with_a_client_ca_only_clients_with_its_certificates_get_in(tmp_path: Path) -> None:
    server = make_cert(tmp_path, "server")
    ca = make_cert(tmp_path, "client-ca")
    client_pem = make_cert(tmp_path, "client", issuer=ca, client=True)
    with_cert = trusting(server)
    with_cert.load_cert_chain(str(client_pem.cert), str(client_pem.key))
    with httpx.Client(verify=with_cert, timeout=10.0) as client, \
            serving_tls(tmp_path, server, client, AXIOM_TLS_CLIENT_CA=str(ca.cert)) as served:
        assert client.get(served.base_url + "/healthz").status_code == 200
        with pytest.raises(httpx.TransportError):  # no client certificate: the handshake fails
            httpx.get(served.base_url + "/healthz", verify=trusting(server), timeout=10.0)


def broken_settings(tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    """Each broken TLS set-up: its settings, and the start of the one-line error it must give."""
    good = make_cert(tmp_path, "good")
    other = make_cert(tmp_path, "other")
    locked = make_cert(tmp_path, "locked", password=PASSWORD)
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("hello\n")
    missing = str(tmp_path / "missing.key")
    pair = {"AXIOM_TLS_CERTFILE": str(good.cert), "AXIOM_TLS_KEYFILE": str(good.key)}
    locked_pair = {"AXIOM_TLS_CERTFILE": str(locked.cert), "AXIOM_TLS_KEYFILE": str(locked.key)}
    return {
        "missing key file": ({**pair, "AXIOM_TLS_KEYFILE": missing}, f"AXIOM_TLS_KEYFILE {missing}: No such file"),
        "certificate without key": ({"AXIOM_TLS_CERTFILE": str(good.cert)},
                                    "AXIOM_TLS_CERTFILE and AXIOM_TLS_KEYFILE go together"),
        "key of another certificate": ({**pair, "AXIOM_TLS_KEYFILE": str(other.key)},
                                       f"AXIOM_TLS_KEYFILE {other.key} is not the key of the certificate"),
        "encrypted key, no password": (locked_pair, f"AXIOM_TLS_KEYFILE {locked.key} is encrypted"),
        "wrong password": ({**locked_pair, "AXIOM_TLS_KEYFILE_PASSWORD": WRONG_PASSWORD},
                           f"AXIOM_TLS_KEYFILE {locked.key} cannot be decrypted"),
        "not a certificate": ({**pair, "AXIOM_TLS_CERTFILE": str(not_pem)},
                              f"AXIOM_TLS_CERTFILE {not_pem} holds no PEM certificate"),
        "a directory as key": ({**pair, "AXIOM_TLS_KEYFILE": str(tmp_path)}, f"AXIOM_TLS_KEYFILE {tmp_path}: Is a"),
        "client CA without TLS": ({"AXIOM_TLS_CLIENT_CA": str(good.cert)}, "AXIOM_TLS_CLIENT_CA needs"),
        "unreadable client CA": ({**pair, "AXIOM_TLS_CLIENT_CA": missing}, f"AXIOM_TLS_CLIENT_CA {missing}:"),
    }


def test_a_missing_key_file_stops_serve_with_one_line_and_exit_2(tmp_path: Path) -> None:
    settings, expected = broken_settings(tmp_path)["missing key file"]
    env = serve_env(free_port(), AXIOM_DATABASE_URL=f"sqlite:///{tmp_path / 'cds.db'}", **settings)
    result = subprocess.run([sys.executable, "-m", "adapter.cli", "serve"], check=False, cwd=ROOT,
                            capture_output=True, env=env, timeout=120)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2, lines
    assert lines == [f"axiom-cds: error: {expected} or directory"]
    assert not (tmp_path / "cds.db").exists(), "stopped before anything started"


def test_every_broken_tls_setting_is_one_line_naming_the_setting_and_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks `serve` runs before it starts (the exit 2 above), for each kind of mistake."""
    for case, (settings, expected) in broken_settings(tmp_path).items():
        with monkeypatch.context() as env:
            for name in TLS_SETTINGS:
                env.delenv(name, raising=False)
            for name, value in settings.items():
                env.setenv(name, value)
            with pytest.raises(TlsError) as raised:
                tls_options(Settings())
        message = str(raised.value)
        assert message.startswith(expected) and "\n" not in message, (case, message)
        assert PASSWORD not in message and WRONG_PASSWORD not in message, "no password echoed"


def test_tls_with_an_http_public_url_is_warned_about(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Served over HTTPS, EHRs sign tokens for an https:// audience: an http:// AXIOM_PUBLIC_BASE_URL is
    kept as configured (never rewritten), and said at start."""
    pem = make_cert(tmp_path, "server")
    monkeypatch.setenv("AXIOM_TLS_CERTFILE", str(pem.cert))
    monkeypatch.setenv("AXIOM_TLS_KEYFILE", str(pem.key))
    monkeypatch.setenv("AXIOM_PUBLIC_BASE_URL", "http://127.0.0.1:8080")
    settings = Settings()
    tls = tls_options(settings)
    assert tls.options["ssl_certfile"] == str(pem.cert) and tls.options["ssl_keyfile"] == str(pem.key)
    assert settings.public_base_url == "http://127.0.0.1:8080"
    assert [w for w in tls.warnings if "AXIOM_PUBLIC_BASE_URL is http://127.0.0.1:8080" in w]
