"""Benchmark: a Bulk Data `$export` of a generated population from sekmet-fhir, then its screen, end to end.

Starts sekmet-fhir on 127.0.0.1 (adapter/fhir_sandbox.py) and loads `--patients` seeded synthetic patients
(adapter/synth, a few per transaction; the load is timed apart, it is not part of the run). Then, as
`axiom-cds screen --fhir-server URL --out DIR` does it (cli/screen.py `_download_population`, then
`adapter.screen.screen`), in this process:

- export: `fetch_population` from the call until every file is on disk, split into the server's job
  (kick-off → manifest) and the downloads, with the folder's sizes per resource type;
- screening: the engine's start-up (trial, code tables, unit registry: once per process, whatever the
  data) and `screen` on the exported folder (read, narrow, gather, decide, write);

and prints each time, the split between export and screening (percentages) and patients/s. Unless
`--no-cli`, the same run is repeated as one `axiom-cds screen --fhir-server` process into a fresh folder
(interpreter start-up and imports included), and its worklist.json is compared with the in-process one.
With `--search` it also times the FHIR search fallback on the same server (the path for servers without
`$export`), for comparison. Nothing is asserted; the screen of large NDJSON populations is measured by
bench/bench_screen.py.

    .venv/bin/python bench/bench_export.py [--patients 1000] [--seed 7] [--search] [--no-cli]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import orjson

from adapter.bulk import PopulationDownload, Progress, fetch_population
from adapter.bulk.search import search_population
from adapter.engine import fhir_wanted, warm_up
from adapter.fhir_sandbox import running_server, to_transaction
from adapter.screen import ScreenSummary, screen
from adapter.synth.generator import generate
from adapter.trials import load_trial

AS_OF = date(2026, 11, 21)
PER_TRANSACTION = 25
TRIAL = "axiom"


def load(base_url: str, bundles: list[dict[str, object]]) -> None:
    with httpx.Client(timeout=300.0, trust_env=False) as http:
        for start in range(0, len(bundles), PER_TRANSACTION):
            entries = [e for b in bundles[start:start + PER_TRANSACTION] for e in to_transaction(b)["entry"]]
            response = http.post(base_url, content=orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                                                                  "entry": entries}),
                                 headers={"Content-Type": "application/fhir+json"})
            response.raise_for_status()


def export(base_url: str, dest: Path) -> tuple[PopulationDownload, float, dict[str, float]]:
    """The download `screen --fhir-server` makes, timed from the call; the time of each progress phase."""
    marks: dict[str, float] = {}

    def progress(event: Progress) -> None:
        marks.setdefault(event.phase, time.perf_counter())

    started = time.perf_counter()
    download = fetch_population(base_url, dest, trial=TRIAL, as_of=AS_OF, progress=progress)
    took = time.perf_counter() - started
    return download, took, {phase: at - started for phase, at in marks.items()}


def report_export(download: PopulationDownload, took: float, marks: dict[str, float]) -> None:
    print(f"\nexport ($export, {download.method}) of {download.patients} patients: {took:.2f} s from the call to "
          f"every file on disk ({download.patients / took:.0f} patients/s)")
    if {"kickoff", "downloading", "done"} <= marks.keys():
        job = marks["downloading"] - marks["kickoff"]
        print(f"  before the kick-off (trial and code tables loaded) {marks['kickoff']:.2f} s; server job "
              f"(kick-off → manifest, polled at its Retry-After) {job:.2f} s; downloads (manifest → every file "
              f"on disk) {marks['done'] - marks['downloading']:.2f} s")
    size = 0
    for record in download.files:
        size += record.bytes
        print(f"  {record.name:40s} {record.resources:8d} resources {record.bytes / 1e6:9.2f} MB")
    print(f"  total {sum(download.resources.values())} resources, {size / 1e6:.2f} MB, "
          f"{size / max(1, download.patients) / 1e3:.1f} kB per patient")


def screen_exported(folder: Path, out: Path) -> tuple[ScreenSummary, float, float]:
    """The screen of the exported folder: engine start-up (timed apart), then `screen`."""
    started = time.perf_counter()
    warm_up(TRIAL)
    start_up = time.perf_counter() - started
    started = time.perf_counter()
    summary = screen(folder, out, AS_OF, TRIAL, "local", progress=False)
    return summary, start_up, time.perf_counter() - started


def report_split(patients: int, export_s: float, start_up: float, screen_s: float, summary: ScreenSummary) -> None:
    screening = start_up + screen_s
    total = export_s + screening
    print(f"\nscreen of the exported folder: {summary.screened} patients screened, {summary.candidates} with a "
          f"cohort diagnosis code, {summary.in_cohort} in a cohort, {summary.likely_eligible} likely eligible")
    print(f"  engine start-up (trial, code tables, unit registry; once per process) {start_up:6.2f} s")
    print(f"  screen (read, narrow, gather, decide, write)                       {screen_s:6.2f} s  "
          f"({summary.screened / screen_s:,.0f} patients/s)")
    print(f"\nend to end, in this process: {total:.2f} s for {patients} patients ({patients / total:.0f} patients/s)")
    print(f"  export    {export_s:6.2f} s  {100 * export_s / total:5.1f} %")
    print(f"  screening {screening:6.2f} s  {100 * screening / total:5.1f} %  (start-up {start_up:.2f} s + "
          f"screen {screen_s:.2f} s)")


def run_cli(base_url: str, out: Path, reference: Path) -> None:
    """`axiom-cds screen --fhir-server` as one process into a fresh folder; its worklist vs the in-process one."""
    command = [str(Path(sys.executable).with_name("axiom-cds")), "screen", "--fhir-server", base_url, "--out",
               str(out), "--as-of", AS_OF.isoformat(), "--trial", TRIAL, "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        print(f"\n`axiom-cds screen --fhir-server` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return
    same = (out / "worklist.json").read_bytes() == (reference / "worklist.json").read_bytes()
    print(f"\n`axiom-cds screen --fhir-server URL --out DIR` as one process (a fresh export, interpreter and imports "
          f"included): {took:.2f} s; {done.stdout.splitlines()[0] if done.stdout else ''}")
    print(f"  worklist.json {'identical to' if same else 'DIFFERENT from'} the in-process run's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--search", action="store_true", help="also time the search fallback")
    parser.add_argument("--no-cli", action="store_true", help="skip the `axiom-cds screen --fhir-server` process")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        root = Path(work)
        with running_server(root / "sekmet") as server:
            cases = generate(args.seed, args.patients, AS_OF)
            resources = sum(len(c.bundle["entry"]) for c in cases)
            started = time.perf_counter()
            load(server.base_url, [c.bundle for c in cases])
            print(f"loaded {args.patients} patients ({resources} resources) into sekmet-fhir in "
                  f"{time.perf_counter() - started:.1f} s (not part of the run)")

            out = root / "screen"
            download, export_s, marks = export(server.base_url, out / "export")
            report_export(download, export_s, marks)
            summary, start_up, screen_s = screen_exported(download.directory, out)
            report_split(download.patients, export_s, start_up, screen_s, summary)

            if not args.no_cli:
                run_cli(server.base_url, root / "screen-cli", out)

            if args.search:
                definition = load_trial(TRIAL)
                (root / "search").mkdir(mode=0o700)
                started = time.perf_counter()
                found = asyncio.run(search_population(server.base_url, root / "search", definition,
                                                      fhir_wanted(definition)))
                took = time.perf_counter() - started
                size = sum(f.bytes for f in found.files)
                print(f"\nsearch fallback: {found.patients} patients with a cohort diagnosis code found and fetched "
                      f"in {took:.2f} s ({found.patients / took:.0f} patients/s), {size / 1e6:.2f} MB: "
                      f"{took / export_s:.2f}x the export's time")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process (client side; the server is a separate process): {peak:.0f} MB")


if __name__ == "__main__":
    main()
