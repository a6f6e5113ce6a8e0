"""The container image, built from this checkout with podman and run for real.

docker/Dockerfile is built once per run (`podman build`, the flags of ../shared/reference/containers.md) on
the base image `make podman` makes from Debian's packages — these machines reach no image registry. Then:
the service container runs the `command` and `environment` of docker/compose.yaml's `axiom-cds` service
(only its addresses changed: host, port, the allowed FHIR server; the evaluation date pinned) against
sekmet-fhir on the host network and must answer /healthz (also through the image's HEALTHCHECK),
discovery and a patient-view hook with the card `axiom-cds evaluate --format card` gives on the same
data, with every process non-root and the workers the environment asks for; `evaluate` in a container
on a mounted Bundle must print what the host CLI prints; compose's demo loader, run twice, must not
duplicate anything. Everything created here is named after this process and removed by name.

Without podman or the base image the tests skip and say why; in CI (`CI` set) that is a failure.
The build time and image size are printed and written to `image-build.txt` in the pytest tmp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from adapter.cli import app as cli_app
from adapter.fhir_sandbox import FhirSandboxError, free_port
from adapter.synth.generator import scenario_cases
from tests.card_validator import assert_valid_response, without_uuids
from tests.fhir_server import FhirTestServer

pytestmark = [pytest.mark.image, pytest.mark.fhir_server]

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DIR = ROOT / "tests" / "fixtures"
COMPOSE = ROOT / "docker" / "compose.yaml"
AS_OF = "2026-11-21"  # the fixtures' evaluation date (tests/fixtures/README.md)
HOOK = "axiom-eligibility"
# designed verdicts (tests/fixtures/README.md): one card that may refer, one that says why not
CARD_FIXTURES = ("asps-likely-eligible", "asps-low-platelets-not-eligible")
BASE_IMAGE = "localhost/debian-python:bookworm"  # `make podman` builds it (mmdebstrap + podman import)
APP_UID = "10001"  # docker/Dockerfile: USER 10001:10001
# what every podman call needs on these machines (../shared/reference/containers.md)
PODMAN = ["podman", "--runtime", "/usr/sbin/runc"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# The index these machines reach sends no cache headers, so pip's HTTP cache (the Dockerfile's cache mount)
# stays empty here: the build installs from a wheelhouse kept between runs instead (see `wheelhouse`).
WHEELHOUSE = Path(tempfile.gettempdir()) / f"axiom-cds-image-wheelhouse-{os.getuid()}"
BUILD_TIMEOUT_S = 1200
RUN_TIMEOUT_S = 180
START_TIMEOUT_S = 90
NAME = f"axiom-cds-test-{os.getpid()}"  # every container, volume and image tag of this run starts so
Json = dict[str, Any]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def podman(*args: str, timeout: float = RUN_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} failed ({done.returncode}):\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def compose_service(name: str) -> Json:
    service: Json = yaml.safe_load(COMPOSE.read_text())["services"][name]
    return service


def env_flags(env: dict[str, str]) -> list[str]:
    return [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]


def report(request: pytest.FixtureRequest, text: str) -> None:
    """Show `text` in the test run's output even when output is captured (the build numbers belong there)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{text}", flush=True)


# --------------------------------------------------------------------------- the image


@dataclass(frozen=True)
class Image:
    tag: str
    build_s: float
    size_bytes: int
    inspected: Json  # `podman image inspect`


def _pip_download(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELHOUSE), *args],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """Wheels of every runtime and build dependency, for the interpreter in the image (the host's CPython
    3.11 on Debian bookworm, like the base image's): downloaded once, then the build needs no network."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        build_requires: list[str] = tomllib.load(fh)["build-system"]["requires"]
    wanted = [*build_requires, str(ROOT)]
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    if _pip_download("--no-index", "--find-links", str(WHEELHOUSE), *wanted).returncode != 0:
        got = _pip_download(*wanted)
        if got.returncode != 0:
            _unavailable(f"cannot download the image's dependencies into {WHEELHOUSE} (PyPI is needed once):\n"
                         f"{got.stderr[-1500:]}")
    for ours in WHEELHOUSE.glob("axiom_cds-*"):  # the product itself is always built from the checkout
        ours.unlink()
    return WHEELHOUSE


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Image]:
    """docker/Dockerfile built from the checkout with podman, tagged after this process, removed after."""
    if shutil.which("podman") is None:
        _unavailable("podman is not installed: `make podman` installs it (Debian packages, root or sudo)")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        _unavailable(f"the base image {BASE_IMAGE} is missing: `make podman` builds it (mmdebstrap)")
    workdir = tmp_path_factory.mktemp("image")
    pip_conf = workdir / "pip.conf"  # for the build only: pip installs from the wheelhouse, offline
    pip_conf.write_text("[global]\nno-index = true\nfind-links = /wheels\n")
    tag = f"localhost/axiom-cds:test-{os.getpid()}"
    started = time.monotonic()
    # --layers=false: no intermediate images left behind; --format docker: OCI images drop HEALTHCHECK
    docker = ROOT / "docker"
    build = podman("build", "--format", "docker", "--layers=false", "--network=host", *ULIMITS,
                   "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "-v", f"{wheelhouse}:/wheels:ro",
                   "-v", f"{pip_conf}:/etc/pip.conf:ro", "--ignorefile", str(docker / "Dockerfile.dockerignore"),
                   "--build-arg", f"BASE={BASE_IMAGE}", "-f", str(docker / "Dockerfile"), "-t", tag, str(ROOT),
                   timeout=BUILD_TIMEOUT_S, check=False)
    build_s = time.monotonic() - started
    (workdir / "build.log").write_text(build.stdout + build.stderr)
    try:
        assert build.returncode == 0, f"podman build failed:\n{build.stdout[-4000:]}\n{build.stderr[-2000:]}"
        (inspected,) = json.loads(podman("image", "inspect", tag).stdout)
        base_size = json.loads(podman("image", "inspect", BASE_IMAGE).stdout)[0]["Size"]
        built = Image(tag, build_s, int(inspected["Size"]), inspected)
        numbers = (f"image {tag}: {built.size_bytes / 1e6:.0f} MB ({(built.size_bytes - base_size) / 1e6:.0f} MB "
                   f"on the base {BASE_IMAGE}, {base_size / 1e6:.0f} MB), built in {build_s:.0f} s")
        (workdir / "image-build.txt").write_text(numbers + "\n")
        report(request, numbers)
        yield built
    finally:
        podman("rmi", tag, check=False)


def test_the_image_is_configured_to_run_the_service_as_a_non_root_user(image: Image) -> None:
    """What a runtime reads before starting it: numeric non-root user, healthcheck, the CLI as entrypoint."""
    config = image.inspected["Config"]
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert config["Entrypoint"] == ["axiom-cds"] and config["Cmd"] == ["serve"]
    healthcheck = image.inspected.get("Healthcheck") or config["Healthcheck"]  # podman: top level; docker: Config
    assert "/healthz" in " ".join(healthcheck["Test"])
    assert "/var/lib/axiom-cds" in config["Volumes"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["AXIOM_DATABASE_URL"] == "sqlite:////var/lib/axiom-cds/axiom-cds.db"
    assert env["PATH"].startswith("/opt/venv/bin:")


# --------------------------------------------------------------------------- the service container


@dataclass(frozen=True)
class Running:
    name: str
    base_url: str
    env: dict[str, str]

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command).stdout


def _wait_until_healthy(name: str, base_url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2, trust_env=False) as http:
        while time.monotonic() < deadline:
            state = podman("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
            if state != "true":
                break
            try:
                if http.get(f"{base_url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
    logs = podman("logs", name, check=False)
    raise AssertionError(f"the container did not answer /healthz:\n{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}")


@pytest.fixture(scope="module")
def service(image: Image, fhir_server: FhirTestServer) -> Iterator[Running]:
    """docker/compose.yaml's `axiom-cds`: its command and environment, its volume, on the host network."""
    compose = compose_service("axiom-cds")
    port = free_port()
    # only the addresses differ from compose: the host network (listen on 127.0.0.1, a free port), the
    # FHIR server of this test; the date is pinned, as compose's comment says to pin verdicts
    env = {**{k: str(v) for k, v in compose["environment"].items()},
           "AXIOM_HOST": "127.0.0.1", "AXIOM_PORT": str(port),
           "AXIOM_FHIR_SERVERS": json.dumps([fhir_server.base_url]), "AXIOM_AS_OF": AS_OF}
    (mount,) = compose["volumes"]
    target = mount.split(":", 1)[1]
    podman("volume", "create", NAME)
    try:
        podman("run", "-d", "--name", NAME, "--network=host", *ULIMITS, "-v", f"{NAME}:{target}", *env_flags(env),
               image.tag, *compose["command"])
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(NAME, base_url)
        yield Running(NAME, base_url, env)
    finally:
        podman("rm", "-f", "-v", NAME, check=False)
        podman("volume", "rm", NAME, check=False)


def test_the_image_healthcheck_reports_healthy(service: Running) -> None:
    """The image's HEALTHCHECK itself (run by podman as a runtime would): it follows AXIOM_PORT."""
    done = podman("healthcheck", "run", service.name, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert podman("inspect", "--format", "{{.State.Health.Status}}", service.name).stdout.strip() == "healthy"


def test_every_process_runs_as_the_image_user_with_the_workers_asked_for(service: Running) -> None:
    """Not root, in any process: the server (PID 1) and its AXIOM_WORKERS worker processes."""
    listing = service.exec("python", "-c", (
        "import json, pathlib\n"
        "out = []\n"
        "for p in pathlib.Path('/proc').iterdir():\n"
        "    if p.name.isdigit():\n"
        "        uid = next(l.split()[1] for l in (p / 'status').read_text().splitlines() if l.startswith('Uid:'))\n"
        "        out.append([int(p.name), uid, (p / 'cmdline').read_bytes().replace(b'\\0', b' ').decode()])\n"
        "print(json.dumps(out))"))
    processes = json.loads(listing)
    assert {uid for _, uid, _ in processes} == {APP_UID}, processes
    server = [cmd for pid, _, cmd in processes if pid == 1]
    assert server and "axiom-cds serve" in server[0], processes
    workers = [cmd for _, _, cmd in processes if "multiprocessing" in cmd and "spawn_main" in cmd]
    asked = int(service.env["AXIOM_WORKERS"])
    assert len(workers) == (asked if asked > 1 else 0), processes  # one worker: served by PID 1 itself


def test_discovery_lists_the_service(service: Running) -> None:
    discovery = httpx.get(f"{service.base_url}/cds-services", timeout=30, trust_env=False)
    assert discovery.status_code == 200
    (listed,) = [s for s in discovery.json()["services"] if s["id"] == HOOK]
    assert listed["hook"] == "patient-view" and listed["prefetch"]


@pytest.mark.parametrize("fixture", CARD_FIXTURES)
def test_a_hook_reading_the_fhir_server_gives_the_clis_card(
        service: Running, fhir_server: FhirTestServer, fixture: str) -> None:
    """patient-view with `fhirServer` and no prefetch, as compose's demo does: the container fetches the
    chart from the FHIR server and answers with the card `axiom-cds evaluate --format card` prints."""
    path = FIXTURE_DIR / f"{fixture}.json"
    bundle: Json = json.loads(path.read_text())
    (pid,) = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server.base_url,
            "context": {"patientId": pid, "userId": "Practitioner/image-test"}}
    with fhir_server.loaded(bundle):
        hook = httpx.post(f"{service.base_url}/cds-services/{HOOK}", json=body, timeout=60, trust_env=False)
    assert hook.status_code == 200, hook.text[:1000]
    cards: Json = hook.json()
    assert_valid_response(cards)
    cli = CliRunner().invoke(cli_app, ["evaluate", str(path), "--as-of", AS_OF, "--format", "card"])
    assert cli.exit_code == 0, cli.stderr
    assert len(cards["cards"]) == 1
    assert without_uuids(cards) == without_uuids(json.loads(cli.stdout))


def test_the_database_is_in_the_volume(service: Running) -> None:
    """The feedback / audit database lands in the data volume (AXIOM_DATABASE_URL of the image), and the
    image holds the venv only: no sources, no pip."""
    found = json.loads(service.exec("python", "-c", (
        "import json, os; print(json.dumps({'data': os.listdir('/var/lib/axiom-cds'), "
        "'src': os.path.exists('/src'), 'pip': os.path.exists('/opt/venv/bin/pip')}))")))
    assert "axiom-cds.db" in found["data"], found
    assert found["src"] is False and found["pip"] is False, found


# --------------------------------------------------------------------------- one-shot commands


def test_evaluate_in_a_container_prints_what_the_host_cli_prints(image: Image) -> None:
    """`evaluate` on a Bundle mounted read-only, without any network: the report equals the host CLI's."""
    name = f"{NAME}-evaluate"
    fixture = "asps-low-platelets-not-eligible"
    try:
        done = podman("run", "--rm", "--name", name, "--network=none", *ULIMITS, "-v", f"{FIXTURE_DIR}:/data:ro",
                      image.tag, "evaluate", f"/data/{fixture}.json", "--as-of", AS_OF, "--format", "json")
    finally:
        podman("rm", "-f", "-v", "--ignore", name, check=False)
    host = CliRunner().invoke(cli_app, ["evaluate", str(FIXTURE_DIR / f"{fixture}.json"), "--as-of", AS_OF,
                                        "--format", "json"])
    assert host.exit_code == 0, host.stderr
    report = json.loads(done.stdout)
    assert report["overall"] == "not-eligible"
    assert report == json.loads(host.stdout)


def _counts(fhir_server: FhirTestServer, types: set[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for rtype in sorted(types):
        response = fhir_server.get(rtype, params={"_summary": "count"})
        assert response.status_code == 200, response.text[:300]
        counts[rtype] = int(response.json()["total"])
    return counts


def test_the_compose_demo_loader_is_idempotent(image: Image, fhir_server: FhirTestServer) -> None:
    """docker/compose.yaml's `demo-data` (its entrypoint and environment, the FHIR URL changed), run twice:
    the first run adds every demo resource, the second adds nothing — it updates the same ids."""
    compose = compose_service("demo-data")
    entrypoint, *args = compose["entrypoint"]
    env = {**{k: str(v) for k, v in compose["environment"].items()}, "FHIR_URL": fhir_server.base_url}
    cases = scenario_cases(date.today())  # the same ids as the loader's, whatever the date
    demo = Counter(e["resource"]["resourceType"] for case in cases for e in case.bundle["entry"])
    name = f"{NAME}-demo-data"
    before = _counts(fhir_server, set(demo))
    try:
        outputs = []
        for _ in range(2):
            done = podman("run", "--rm", "--name", name, "--network=host", *ULIMITS, "--entrypoint", entrypoint,
                          *env_flags(env), image.tag, *args)
            outputs.append(done.stdout)
            if len(outputs) == 1:
                assert _counts(fhir_server, set(demo)) == before + demo
        after = _counts(fhir_server, set(demo))
        patient = fhir_server.get(f"Patient/scn-{cases[0].name}")
    finally:
        podman("rm", "-f", "-v", "--ignore", name, check=False)
        for case in cases:
            with contextlib.suppress(FhirSandboxError):  # a failed load must not hide its own error
                fhir_server.unload(case.bundle)
    assert after == before + demo, "the second run duplicated resources"
    assert all(f"loaded {len(cases)} demo patients" in out for out in outputs), outputs
    assert patient.status_code == 200
