"""Benchmark: a Bulk Data `$export` of a generated population from sekmet-fhir, end to end.

Starts sekmet-fhir on 127.0.0.1 (adapter/fhir_sandbox.py), loads `--patients` seeded synthetic patients
(adapter/synth, a few per transaction; the load is timed apart), then times `fetch_population` from
the kick-off until every file is on disk, split into the server's job (kick-off → manifest) and the
downloads, and prints the folder's sizes per resource type. With `--search` it also times the FHIR
search fallback on the same server (the path for servers without `$export`), for comparison.
The screening step is measured by bench/bench_screen.py. Nothing is asserted.

    .venv/bin/python bench/bench_export.py [--patients 1000] [--seed 7] [--search]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import orjson

from adapter.bulk import Progress, fetch_population
from adapter.bulk.search import search_population
from adapter.engine import fhir_wanted
from adapter.fhir_sandbox import running_server, to_transaction
from adapter.synth.generator import generate
from adapter.trials import load_trial

AS_OF = date(2026, 11, 21)
PER_TRANSACTION = 25


def load(base_url: str, bundles: list[dict[str, object]]) -> None:
    with httpx.Client(timeout=300.0, trust_env=False) as http:
        for start in range(0, len(bundles), PER_TRANSACTION):
            entries = [e for b in bundles[start:start + PER_TRANSACTION] for e in to_transaction(b)["entry"]]
            response = http.post(base_url, content=orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                                                                  "entry": entries}),
                                 headers={"Content-Type": "application/fhir+json"})
            response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--search", action="store_true", help="also time the search fallback")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        root = Path(work)
        with running_server(root / "sekmet") as server:
            cases = generate(args.seed, args.patients, AS_OF)
            resources = sum(len(c.bundle["entry"]) for c in cases)
            started = time.perf_counter()
            load(server.base_url, [c.bundle for c in cases])
            print(f"loaded {args.patients} patients ({resources} resources) into sekmet-fhir in "
                  f"{time.perf_counter() - started:.1f} s (not part of the export)")

            marks: dict[str, float] = {}

            def progress(event: Progress) -> None:
                marks.setdefault(event.phase, time.perf_counter())

            started = time.perf_counter()
            download = fetch_population(server.base_url, root / "export", progress=progress)
            total = marks["done"] - marks["kickoff"]
            job = marks["downloading"] - marks["kickoff"]
            print(f"\n$export of {download.patients} patients: {total:.2f} s from kick-off to every file on disk "
                  f"({download.patients / total:.0f} patients/s)")
            print(f"  server job (kick-off → manifest, polled at its Retry-After): {job:.2f} s; downloads (manifest → "
                  f"every file on disk): {total - job:.2f} s; before the kick-off (trial and code tables loaded): "
                  f"{marks['kickoff'] - started:.2f} s")
            size = 0
            for record in download.files:
                size += record.bytes
                print(f"  {record.name:40s} {record.resources:8d} resources {record.bytes / 1e6:9.2f} MB")
            print(f"  total {sum(download.resources.values())} resources, {size / 1e6:.2f} MB, "
                  f"{size / max(1, download.patients) / 1e3:.1f} kB per patient")

            if args.search:
                definition = load_trial("axiom")
                (root / "search").mkdir(mode=0o700)
                started = time.perf_counter()
                found = asyncio.run(search_population(server.base_url, root / "search", definition,
                                                      fhir_wanted(definition)))
                took = time.perf_counter() - started
                size = sum(f.bytes for f in found.files)
                print(f"\nsearch fallback: {found.patients} patients with a cohort diagnosis code found and fetched "
                      f"in {took:.2f} s ({found.patients / took:.0f} patients/s), {size / 1e6:.2f} MB: "
                      f"{took / total:.2f}x the export's time")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process (client side; the server is a separate process): {peak:.0f} MB")


if __name__ == "__main__":
    main()
