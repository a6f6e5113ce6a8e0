"""The wheel is the product: built from this checkout, installed into a fresh venv WITHOUT the dev extras,
and run from a directory that is not the checkout, so nothing can resolve against the repository.

Why: the editable dev install hides what a user's `pip install` lacks. PyJWT once arrived only through the
dev dependency sekmet-fhir (so `serve` could not start), and mappings/ was read from beside the package
(so `evaluate` ended in a FileNotFoundError). Here the installed `axiom-cds` must import every module,
read the mappings shipped inside the wheel, report what the dev install reports, serve discovery and a
hook, and show `--help` for every command.

Installing the runtime dependencies takes about a minute and needs PyPI, a warm pip cache, or the test's
wheelhouse from an earlier run (WHEELHOUSE). Without any, the tests skip and say so; in CI (`CI` set) that
is a failure, since CI has PyPI.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from adapter.cli import app as cli_app
from adapter.fhir_sandbox import free_port
from tests.card_validator import assert_valid_response, without_uuids
from tests.fhir_server import FhirTestServer
from tests.helpers import stop

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "asps-likely-eligible.json"  # designed: likely eligible (fixtures/README)
AS_OF = "2026-11-21"  # the fixtures' evaluation date
HOOK = "axiom-eligibility"
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 120
START_TIMEOUT_S = 60
# Runtime and build dependencies as wheels, kept between runs: a second run installs without the network.
# pip's own cache would do, but not every index allows caching; CI starts empty and so gets today's releases.
WHEELHOUSE = Path(tempfile.gettempdir()) / f"axiom-cds-test-wheelhouse-{os.getuid()}"
COMMANDS = [[], ["evaluate"], ["serve"], ["sandbox"], ["demo"], ["synth"], ["audit"], ["audit", "export"],
            ["reference"], ["screen"]]
Json = dict[str, Any]


# --------------------------------------------------------------------------- can we install at all?


def _index_url() -> str:
    """The index pip would use: PIP_INDEX_URL, else pip's configured index-url, else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    got = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                         capture_output=True, text=True, check=False)
    return got.stdout.strip() if got.returncode == 0 and got.stdout.strip() else "https://pypi.org/simple/"


def _index_reachable(url: str) -> bool:
    try:
        return httpx.head(url, timeout=10, follow_redirects=True).status_code < 500
    except httpx.HTTPError:
        return False


def _pip_cache_has_files() -> bool:
    got = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, check=False)
    cache = Path(got.stdout.strip()) if got.returncode == 0 and got.stdout.strip() else None
    return cache is not None and cache.is_dir() and any(p.is_file() for p in cache.rglob("*"))


def _require_an_index() -> None:
    url = _index_url()
    if _index_reachable(url) or _pip_cache_has_files():
        return
    reason = (f"cannot build and install the wheel: {url} is unreachable, the pip cache is empty and {WHEELHOUSE} "
              "lacks what is needed (PyPI is needed once)")
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- build and install


def _clean_env(venv_bin: Path | None = None) -> dict[str, str]:
    """The environment without anything that points into the checkout or configures the service."""
    dev_bin = str(Path(sys.executable).parent)
    # PYTHONDONTWRITEBYTECODE too: with pip's --no-compile, the first command compiles what it imports for the rest
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXIOM_")
           and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != dev_bin]
    env["PATH"] = os.pathsep.join([str(venv_bin), *path] if venv_bin else path)
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = RUN_TIMEOUT_S,
         what: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@dataclass(frozen=True)
class Installed:
    """The product installed from its wheel: a venv, and a working directory outside the checkout."""

    wheel: Path
    venv: Path
    cwd: Path
    env: dict[str, str]

    @property
    def cli(self) -> str:
        return str(self.venv / "bin" / "axiom-cds")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.cli, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, check=False)


def _pip(python: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT_S, check=False)


def _build_requires() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        requires: list[str] = tomllib.load(fh)["build-system"]["requires"]
    return requires


def _from_wheelhouse_or_index(python: str, args: list[str], download: list[str], *, env: dict[str, str],
                              cwd: Path, what: str) -> None:
    """`pip <args>` from the wheelhouse alone; when it lacks something, fill it from the index, then again."""
    offline = ["--no-index", "--find-links", str(WHEELHOUSE)]
    if _pip(python, *args, *offline, env=env, cwd=cwd).returncode == 0:
        return
    _require_an_index()
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    got = _pip(sys.executable, "download", "-q", "-d", str(WHEELHOUSE), *download, env=env, cwd=cwd)
    assert got.returncode == 0, f"downloading for {what} failed:\n{got.stdout[-3000:]}\n{got.stderr[-3000:]}"
    for ours in WHEELHOUSE.glob("axiom_cds-*"):  # the wheel under test is always the one just built
        ours.unlink()
    done = _pip(python, *args, *offline, env=env, cwd=cwd)
    assert done.returncode == 0, f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    dist, venv, cwd = root / "dist", root / "venv", root / "elsewhere"
    cwd.mkdir()
    env = _clean_env()
    # pip's own build isolation, with [build-system] requires (hatchling) from the wheelhouse
    _from_wheelhouse_or_index(sys.executable, ["wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                              _build_requires(), env=env, cwd=root, what="building the wheel")
    (wheel,) = dist.glob("axiom_cds-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=env, what="creating the venv")
    # --no-compile: only the modules a command imports get compiled, on first use
    _from_wheelhouse_or_index(str(venv / "bin" / "python"), ["install", "-q", "--no-compile", str(wheel)],
                              [str(wheel)], env=env, cwd=root, what="installing the wheel (runtime dependencies only)")
    return Installed(wheel, venv, cwd, _clean_env(venv / "bin"))


# --------------------------------------------------------------------------- what it contains

IMPORT_ALL = """
import importlib, json, os, pkgutil, sys
import adapter
from adapter import tables
failed = {}
names = [m.name for m in pkgutil.walk_packages(adapter.__path__, "adapter.")]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
packaged = str(tables.mappings_dir())
os.environ["AXIOM_MAPPINGS"] = sys.argv[1]
print(json.dumps({"package": adapter.__file__, "modules": len(names), "failed": failed, "mappings": packaged,
                  "overridden": str(tables.mappings_dir())}))
"""


def test_every_module_imports_with_only_the_runtime_dependencies(installed: Installed, tmp_path: Path) -> None:
    """A module that needs a package only the dev extras bring (PyJWT via sekmet-fhir) fails to import here."""
    done = _run([installed.python, "-c", IMPORT_ALL, str(tmp_path)], cwd=installed.cwd, env=installed.env,
                what="importing every module")
    found = json.loads(done.stdout)
    assert found["failed"] == {}, "these modules need a dependency pyproject.toml does not declare"
    assert found["modules"] == sum(1 for _ in (ROOT / "adapter").rglob("*.py")) - 1  # minus adapter/__init__
    package = Path(found["package"]).parent
    assert package.is_relative_to(installed.venv), f"adapter was imported from {package}, not the installed wheel"
    # the mappings come from inside the installed package; AXIOM_MAPPINGS still overrides them
    assert Path(found["mappings"]) == package / "mappings"
    assert found["overridden"] == str(tmp_path)


def test_the_wheel_carries_the_repository_mappings_unchanged(installed: Installed) -> None:
    """mappings/ is the one source of truth: the wheel's copy is every file of it, byte for byte."""
    (site,) = installed.venv.glob("lib/python*/site-packages")
    shipped = site / "adapter" / "mappings"
    source = {p.relative_to(ROOT / "mappings"): p.read_bytes() for p in (ROOT / "mappings").rglob("*.yaml")}
    assert source, "no mappings in the checkout?"
    assert {p.relative_to(shipped): p.read_bytes() for p in shipped.rglob("*") if p.is_file()} == source


# --------------------------------------------------------------------------- what it does


def test_evaluate_reports_what_the_dev_install_reports(installed: Installed) -> None:
    """The designed likely-eligible ASPS patient is likely eligible from the wheel too, criterion by criterion."""
    bundle = installed.cwd / FIXTURE.name
    shutil.copyfile(FIXTURE, bundle)
    product = installed.run("evaluate", bundle.name, "--as-of", AS_OF)
    assert product.returncode == 0, product.stderr
    dev = CliRunner().invoke(cli_app, ["evaluate", str(FIXTURE), "--as-of", AS_OF])  # this checkout, in process
    assert dev.exit_code == 0, dev.stderr
    report = json.loads(product.stdout)
    assert report["overall"] == "likely-eligible"
    assert report == json.loads(dev.stdout)


HELP_ALL = """
import json, sys
from typer.testing import CliRunner
from adapter.cli import app
out = {}
for command in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, [*command, "--help"])
    out[" ".join(command)] = [result.exit_code, "Usage:" in result.stdout, result.stdout[-300:]]
print(json.dumps(out))
"""


def test_every_command_shows_its_help(installed: Installed) -> None:
    """`--help` of each command works without the dev extras (sandbox's FHIR server loads only when run).

    The console script itself once; then every command in one process, since each start imports it all."""
    script = installed.run("--help")
    assert script.returncode == 0, script.stderr
    assert "Usage: axiom-cds" in script.stdout
    done = _run([installed.python, "-c", HELP_ALL, json.dumps(COMMANDS)], cwd=installed.cwd, env=installed.env,
                what="--help of every command")
    helps = json.loads(done.stdout)
    assert {name: (code, usage) for name, (code, usage, _) in helps.items()} == {
        " ".join(c): (0, True) for c in COMMANDS}, helps


@contextlib.contextmanager
def serving(installed: Installed, workdir: Path) -> Iterator[str]:
    """`axiom-cds serve --no-auth` from the wheel on a free port; its base URL once it answers /healthz."""
    port = free_port()
    env = {**installed.env, "AXIOM_DATABASE_URL": f"sqlite:///{workdir / 'cds.db'}", "AXIOM_AS_OF": AS_OF}
    log = (workdir / "serve.log").open("w+b")
    process = subprocess.Popen([installed.cli, "serve", "--no-auth", "--port", str(port)], cwd=installed.cwd,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/healthz", timeout=2, trust_env=False)  # no proxy for 127.0.0.1
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            log.seek(0)
            raise AssertionError(f"serve did not start:\n{log.read().decode(errors='replace')[-3000:]}")
        yield base
    finally:
        stop(process)
        log.close()


def ehr_prefetch(fhir_server: FhirTestServer, templates: dict[str, str], pid: str) -> Json:
    """What an EHR sends: each discovery template, filled in and run against its FHIR server, as is."""
    out: Json = {}
    for key, template in templates.items():
        response = fhir_server.get(template.replace("{{context.patientId}}", pid))
        assert response.status_code == 200, (key, response.text[:300])
        out[key] = response.json()
    return out


@pytest.mark.fhir_server
def test_serve_answers_discovery_and_a_hook_with_the_clis_card(
        installed: Installed, fhir_server: FhirTestServer, tmp_path: Path) -> None:
    """The installed service starts, lists itself, and turns an EHR's prefetch into the card `evaluate` shows."""
    bundle: Json = json.loads(FIXTURE.read_text())
    (pid,) = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    with serving(installed, tmp_path) as base, fhir_server.loaded(bundle), \
            httpx.Client(timeout=60, trust_env=False) as http:
        discovery = http.get(f"{base}/cds-services")
        assert discovery.status_code == 200
        (service,) = [s for s in discovery.json()["services"] if s["id"] == HOOK]
        assert service["hook"] == "patient-view"
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                "context": {"patientId": pid, "userId": "Practitioner/wheel-test"},
                "prefetch": ehr_prefetch(fhir_server, service["prefetch"], pid)}
        hook = http.post(f"{base}/cds-services/{HOOK}", json=body)
        # the review app's templates and stylesheet are package data too: a page, not a traceback
        review = http.get(f"{base}/review/launch")
        stylesheet = http.get(f"{base}/review/static/review.css")
    assert hook.status_code == 200, hook.text[:1000]
    assert review.status_code == 503 and "review app is not set up" in review.text, review.text[:500]
    assert stylesheet.status_code == 200 and stylesheet.headers["content-type"].startswith("text/css")
    cards: Json = hook.json()
    assert_valid_response(cards)
    assert len(cards["cards"]) == 1 and "likely eligible" in cards["cards"][0]["summary"]
    shutil.copyfile(FIXTURE, installed.cwd / FIXTURE.name)
    cli = installed.run("evaluate", FIXTURE.name, "--as-of", AS_OF, "--format", "card")
    assert cli.returncode == 0, cli.stderr
    assert without_uuids(cards) == without_uuids(json.loads(cli.stdout))
