"""docker/ checked without a container engine: what tests/test_image.py cannot see, or needs podman for.

tests/test_image.py builds and runs the image (with podman, on a Debian base). Here, in every run: the
images compose pulls are pinned to released tags (HAPI cannot be pulled on these machines, so nothing
else would notice a `latest`), the build context holds exactly what the Dockerfile copies, compose names
one FHIR URL everywhere, and compose's service command and environment start a working service on the host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from yarl import URL

from adapter.fhir_sandbox import free_port
from tests.helpers import stop

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
IGNORE = (ROOT / "docker" / "Dockerfile.dockerignore").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
RELEASE_TAG = re.compile(r"^v?\d+(\.\d+)+$")  # 7.4.0, v7.4.0: a release, not a moving name


def instructions(name: str) -> list[str]:
    """The arguments of every `NAME` instruction of the Dockerfile (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def test_compose_pulls_only_images_pinned_to_a_release() -> None:
    for name, service in SERVICES.items():
        if "build" in service:  # this project's image, built from docker/Dockerfile
            assert service["image"] == "axiom-cds:local", name
            continue
        repository, _, tag = service["image"].rpartition(":")
        assert repository and RELEASE_TAG.match(tag), f"{name}: {service['image']} is not pinned to a release"


def test_the_base_image_default_is_a_pinned_slim_python() -> None:
    (base,) = [arg for arg in instructions("ARG") if arg.startswith("BASE=")]
    assert re.fullmatch(r"BASE=python:3\.\d+\.\d+-slim-\w+", base), base
    assert instructions("FROM") and all(f.startswith("${BASE}") for f in instructions("FROM"))


def test_the_image_runs_the_cli_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    (user,) = instructions("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck and "AXIOM_PORT" in healthcheck
    assert "AXIOM_TLS_CERTFILE" in healthcheck and "https" in healthcheck, "with TLS on, the probe speaks https"
    assert instructions("ENTRYPOINT") == ['["axiom-cds"]'] and instructions("CMD") == ['["serve"]']


def test_the_data_volume_is_where_the_database_is() -> None:
    (volume,) = instructions("VOLUME")
    env = " ".join(instructions("ENV"))
    assert f"AXIOM_DATABASE_URL=sqlite:///{volume}/" in env
    (mount,) = SERVICES["axiom-cds"]["volumes"]
    assert mount.split(":", 1)[1] == volume


def test_the_build_context_is_exactly_what_the_dockerfile_copies() -> None:
    """Everything excluded, the COPY sources let back in: no .git, .venv, .sandbox or local database."""
    patterns = [line.strip() for line in IGNORE.splitlines() if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {src for copy in instructions("COPY") if not copy.startswith("--from")
              for src in copy.split()[:-1]}
    assert included == copied
    assert all((ROOT / path).exists() for path in copied)


def test_compose_names_one_fhir_url_everywhere() -> None:
    """The browser, the service, the loader and HAPI's own links all use the same URL (compose's header)."""
    fhir, service, loader = SERVICES["fhir"], SERVICES["axiom-cds"], SERVICES["demo-data"]
    url = URL(fhir["environment"]["hapi.fhir.server_address"].rstrip("/"))
    assert json.loads(service["environment"]["AXIOM_FHIR_SERVERS"]) == [str(url)]
    assert loader["environment"]["FHIR_URL"] == str(url)
    assert service["network_mode"] == loader["network_mode"] == "service:fhir"
    assert str(url.port) == fhir["environment"]["server.port"]
    assert f"127.0.0.1:{url.port}:{url.port}" in fhir["ports"]


def test_the_compose_service_command_and_environment_start_a_service(tmp_path: Path) -> None:
    """Compose's command and environment, with the image's host and port replaced, as the image test does."""
    service = SERVICES["axiom-cds"]
    port = free_port()
    env = {**os.environ, **{k: str(v) for k, v in service["environment"].items()},
           "AXIOM_HOST": "127.0.0.1", "AXIOM_PORT": str(port), "AXIOM_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.db'}"}
    process = subprocess.Popen([sys.executable, "-m", "adapter.cli", *service["command"]], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                discovery = httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"the service did not start: {process.communicate()[0].decode()[-2000:]}")
        assert discovery.status_code == 200
        assert discovery.json()["services"][0]["id"] == "axiom-eligibility"
    finally:
        stop(process)
