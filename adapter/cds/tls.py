"""HTTPS served directly: the certificate and key settings, checked before the service starts.

uvicorn loads them only inside each worker, and a missing file, a wrong password or a key that is not
the certificate's stops it with a traceback (`[X509: KEY_VALUES_MISMATCH]`, `PEM lib`). Here each
problem is one line naming the setting and the file, and `serve` exits 2. The check ends with the same
load uvicorn does (ssl.SSLContext), so what passes here starts there.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from .settings import Settings

__all__ = ["Tls", "TlsError", "tls_options"]


# TLS 1.2 cipher suites (TLS 1.3 has only good ones): Mozilla's "intermediate" configuration, v5.7
# (https://ssl-config.mozilla.org/#config=intermediate): forward-secret AEAD suites only. uvicorn's
# default, "TLSv1", also lets a client choose CBC suites with SHA-1 MACs (and lists NULL and anonymous
# ones, which only OpenSSL's security level keeps out).
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
           "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
           "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")


class TlsError(ValueError):
    """A TLS setting that cannot work; the message is one line."""


@dataclass(frozen=True)
class Tls:
    """uvicorn's `ssl_*` options (empty: plain HTTP), and what deserves a warning at start."""

    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def tls_options(settings: Settings) -> Tls:
    """The TLS set-up of `settings`. TlsError: the first problem found."""
    cert_path, key_path, ca_path = settings.tls_certfile, settings.tls_keyfile, settings.tls_client_ca
    if cert_path is None and key_path is None:
        if ca_path is not None:
            raise TlsError("AXIOM_TLS_CLIENT_CA needs AXIOM_TLS_CERTFILE and AXIOM_TLS_KEYFILE (the service's own "
                           "certificate)")
        return Tls()
    if cert_path is None or key_path is None:
        raise TlsError("AXIOM_TLS_CERTFILE and AXIOM_TLS_KEYFILE go together: set both, or neither")
    password = settings.tls_keyfile_password.get_secret_value() if settings.tls_keyfile_password else None
    certificate = _certificate(cert_path)
    if _public(certificate.public_key()) != _public(_private_key(key_path, password).public_key()):
        raise TlsError(f"AXIOM_TLS_KEYFILE {key_path} is not the key of the certificate in AXIOM_TLS_CERTFILE "
                       f"{cert_path}")
    options: dict[str, Any] = {"ssl_certfile": str(cert_path), "ssl_keyfile": str(key_path),
                               "ssl_keyfile_password": password, "ssl_ciphers": CIPHERS}
    if ca_path is not None:
        _read("AXIOM_TLS_CLIENT_CA", ca_path)
        options |= {"ssl_ca_certs": str(ca_path), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    _load_as_uvicorn_does(options)
    return Tls(options, _warnings(settings, certificate, cert_path))


def _read(name: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{name} {path}: {exc.strerror or exc}") from None


def _certificate(path: Path) -> x509.Certificate:
    """The first certificate of the file: the server's own (intermediates follow it)."""
    try:
        return x509.load_pem_x509_certificates(_read("AXIOM_TLS_CERTFILE", path))[0]
    except ValueError:
        raise TlsError(f"AXIOM_TLS_CERTFILE {path} holds no PEM certificate") from None


def _private_key(path: Path, password: str | None) -> Any:
    data = _read("AXIOM_TLS_KEYFILE", path)
    secret = password.encode() if password is not None else None
    try:
        return load_pem_private_key(data, secret)
    except TypeError:  # encrypted without a password given, or a password for a key that has none
        if secret is None:
            raise TlsError(f"AXIOM_TLS_KEYFILE {path} is encrypted: set AXIOM_TLS_KEYFILE_PASSWORD") from None
        return load_pem_private_key(data, None)  # not encrypted: the password is not needed (as for OpenSSL)
    except ValueError:
        why = "cannot be decrypted with AXIOM_TLS_KEYFILE_PASSWORD, or holds" if secret else "holds"
        raise TlsError(f"AXIOM_TLS_KEYFILE {path} {why} no PEM private key") from None


def _public(key: Any) -> bytes:
    encoded: bytes = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return encoded


def _load_as_uvicorn_does(options: dict[str, Any]) -> None:
    """What OpenSSL refuses although cryptography read it (an unsupported key type, a CA file with no
    certificate) stops here too."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # uvicorn's protocol: TLS 1.2 at least (Python's default)
    try:
        context.set_ciphers(options["ssl_ciphers"])
        context.load_cert_chain(options["ssl_certfile"], options["ssl_keyfile"], options["ssl_keyfile_password"])
        if "ssl_ca_certs" in options:
            context.load_verify_locations(options["ssl_ca_certs"])
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise TlsError(f"TLS certificate, key or client CA refused by OpenSSL: {reason}") from None


def _warnings(settings: Settings, certificate: x509.Certificate, path: Path) -> list[str]:
    """Set-ups that start but that EHRs will refuse."""
    out = []
    now = datetime.now(UTC)
    if certificate.not_valid_after_utc < now:
        out.append(f"the certificate in AXIOM_TLS_CERTFILE {path} expired on "
                   f"{certificate.not_valid_after_utc:%Y-%m-%d}: clients will refuse it")
    elif certificate.not_valid_before_utc > now:
        out.append(f"the certificate in AXIOM_TLS_CERTFILE {path} is valid only from "
                   f"{certificate.not_valid_before_utc:%Y-%m-%d}: clients will refuse it until then")
    if settings.public_base_url and settings.public_base_url.startswith("http://"):
        out.append(f"TLS is on but AXIOM_PUBLIC_BASE_URL is {settings.public_base_url}: EHRs calling https:// "
                   "sign tokens for an https audience, which will not match")
    return out
