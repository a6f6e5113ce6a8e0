"""Benchmark: evaluating a realistic record from raw JSON bytes vs json.loads of the same bytes.

Issue 2 targets: evaluation (parse included) within 3× `json.loads`, and under 50 MB of added memory.
Everything is measured in this one run, on this machine, and printed as ratios. Then the start-up of one
`axiom-cds evaluate` process on a test fixture (issue 12: most of a one-patient evaluation): the whole
process, and in a fresh interpreter the parts — imports, the unit registry, the trial, the first
evaluation, a second one.

    .venv/bin/python bench/bench_evaluate.py [--repeat 15] [--fixture tests/fixtures/asps-likely-eligible.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import date
from pathlib import Path

import orjson

from adapter.engine import evaluate_bundle
from adapter.synth.realistic import realistic_bundle

AS_OF = date(2026, 11, 21)
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "asps-likely-eligible.json"


def median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


def peak_rss_added(path: str) -> None:
    """Child process: peak RSS added by one evaluation of the record in `path`, after a warm-up on a
    tiny record (code tables, unit registry and models loaded, nothing else in memory)."""
    small = orjson.dumps({"resourceType": "Bundle", "type": "collection",
                          "entry": [{"resource": {"resourceType": "Patient", "id": "w"}}]})
    evaluate_bundle(small, AS_OF)
    with open(path, "rb") as fh:
        data = fh.read()
    gc.collect()
    before = current_rss_mib()
    report = evaluate_bundle(data, AS_OF)
    # freed objects stay in CPython's arenas, so RSS right after the call is close to its peak
    print(current_rss_mib() - before, report.overall)


def start_up_child(path: str) -> None:
    """Child process: wall-clock seconds of each start-up step of `axiom-cds evaluate`, in its order."""
    times = {}
    started = time.perf_counter()
    import adapter.cli  # noqa: F401  (what the console script imports first)
    times["imports (adapter.cli)"] = time.perf_counter() - started
    from adapter.trials import load_trial
    from adapter.units import _registry

    for name, step in (("unit registry (pint + UCUM)", _registry), ("trial definition", lambda: load_trial("axiom"))):
        mark = time.perf_counter()
        step()
        times[name] = time.perf_counter() - mark
    with open(path, "rb") as fh:
        data = fh.read()
    for name in ("first evaluation", "second evaluation"):
        mark = time.perf_counter()
        evaluate_bundle(data, AS_OF)
        times[name] = time.perf_counter() - mark
    print(json.dumps(times))


def start_up(fixture: Path, repeat: int) -> None:
    script = Path(sys.executable).with_name("axiom-cds")
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([str(script), "evaluate", str(fixture), "--as-of", AS_OF.isoformat()], check=True,
                       capture_output=True)
        walls.append(time.perf_counter() - t0)
    print(f"\n`axiom-cds evaluate {fixture.name}` as a process: median {statistics.median(walls):.2f} s, "
          f"min {min(walls):.2f} s ({repeat} runs)")
    runs = [json.loads(subprocess.run([sys.executable, __file__, "--start-up-child", str(fixture)], check=True,
                                      capture_output=True, text=True).stdout) for _ in range(repeat)]
    print("  its parts, in a fresh interpreter (median):")
    for name in runs[0]:
        print(f"    {name:30s} {statistics.median(r[name] for r in runs):6.3f} s")


def current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--fixture", type=Path, default=FIXTURE, help="Bundle for the start-up measurement")
    parser.add_argument("--start-up-runs", type=int, default=3)
    parser.add_argument("--memory-child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--start-up-child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_rss_added(args.memory_child)
        return
    if args.start_up_child:
        start_up_child(args.start_up_child)
        return

    bundle = realistic_bundle(seed=1, as_of=AS_OF)
    data = orjson.dumps(bundle)
    counts: dict[str, int] = {}
    for e in bundle["entry"]:
        counts[e["resource"]["resourceType"]] = counts.get(e["resource"]["resourceType"], 0) + 1
    print(f"record: {len(data) / 1e6:.2f} MB JSON, " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())))

    report = evaluate_bundle(data, AS_OF)  # warm-up: unit registry, code tables, model classes
    print(f"verdict: {report.overall} ({sum(c.status == 'met' for c in report.criteria)} met)")

    gc.collect()
    loads_med, loads_min = median_ms(lambda: json.loads(data), args.repeat)
    eval_med, eval_min = median_ms(lambda: evaluate_bundle(data, AS_OF), args.repeat)
    print(f"json.loads           median {loads_med:7.1f} ms   min {loads_min:7.1f} ms")
    print(f"evaluate (from bytes) median {eval_med:7.1f} ms   min {eval_min:7.1f} ms")
    print(f"ratio evaluate / json.loads: median {eval_med / loads_med:.2f}x, min {eval_min / loads_min:.2f}x "
          f"(target <= 3x)")

    gc.collect()
    tracemalloc.start()
    evaluate_bundle(data, AS_OF)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    json.loads(data)
    _, loads_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        fh.write(data)
        fh.flush()
        child = subprocess.run([sys.executable, __file__, "--memory-child", fh.name], capture_output=True,
                               text=True, check=True)
    print(f"memory added by one evaluation, fresh process: RSS +{float(child.stdout.split()[0]):.1f} MiB "
          f"(target < 50 MB)")
    print(f"  tracemalloc peak {peak / 1e6:.1f} MB (json.loads alone {loads_peak / 1e6:.1f} MB: the Bundle's "
          "entries stay raw JSON until read, see adapter/fhir/wire.py)")
    start_up(args.fixture, args.start_up_runs)


if __name__ == "__main__":
    main()
