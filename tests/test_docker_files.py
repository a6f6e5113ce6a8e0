"""The Docker files cannot be run here (no Docker engine): what can be checked is that the processes they
start are the ones tested — the compose service's command and environment start a working service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from adapter.fhir_sandbox import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_compose_service_command_and_environment_start_a_service(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    service = compose["services"]["axiom-cds"]
    args = list(service["command"])
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"  # in the container: 0.0.0.0, published on 127.0.0.1
    args[args.index("--port") + 1] = str(port)
    env = {**os.environ, **{k: str(v) for k, v in service["environment"].items()},
           "AXIOM_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.db'}"}
    process = subprocess.Popen([sys.executable, "-m", "adapter.cli", *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                discovery = httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"the service did not start: {process.communicate()[0].decode()[-2000:]}")
        assert discovery.status_code == 200
        assert discovery.json()["services"][0]["id"] == "axiom-eligibility"
    finally:
        process.terminate()
        process.wait(10)
