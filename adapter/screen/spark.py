"""`--engine spark`: the same screen on PySpark, for populations one machine should not hold.

Spark SQL does what DuckDB does in the local engine, with the same rules: each line of every NDJSON file
(`.ndjson.gz` decompressed by name) is read as text and `json_tuple` takes its resourceType, id, subject,
patient, code, extension and meta (nested values as their JSON text, so odd shapes are values SQL finds
nothing in, as with DuckDB's JSON columns). The narrowing reads the files an export leads with Patients
or Conditions; every distinct (system, code) of their Conditions — in Condition.code and the histology
extension — is matched on the driver by narrow.py's `cohort_codes` (the engine's `CodeSet.match`), and
the subject references found are attributed by narrow.py's `coded_patients`. The gathering pass reads
every file and keeps gather.py's lines: a candidate's Patient, the resources of the engine's types whose
reference is a candidate's (`reference_key`, on the driver, over the few distinct references that name a
candidate id), the subject-less results and Medications (a candidate's report, panel or order may point
at them: gather.py's `pointed_keys`, followed on the driver by resource keys only), and the Patients and
Conditions of the other files (narrowed then; new candidates are gathered in one more pass). Each
candidate's lines are then grouped by patient and `applyInPandas` runs decide.py's `decide_one` — the one
engine — on the chart gather.py's `Chart` builds: the same Bundle bytes, the same verdict.

The gathering parses only the lines whose text may concern a candidate (`_first_look`: JSON parsing is
most of Spark's time); every line of the narrowed Patient and Condition files was parsed by the narrowing.

Differences from the local engine, in what is refused (never in a verdict): a line of a Patient or
Condition file that repeats a key is not detected (Spark's JSON reader keeps one value), nor text after a
JSON object on its line; in the other files, a line that is not JSON but is shaped as one object (`{`…`}`)
and names no candidate is not parsed, so not noticed. A line that is not JSON stops the screen as
locally, named by file and line, wherever the passes parse it — a line cut short always.

A session made here (none active yet) is Spark's own business: the web UI off; on a `local` master every
socket on 127.0.0.1 (SPARK_LOCAL_IP, driver host and bind address) and the Python workers this
interpreter; Spark's log4j at WARN (its shuffle and spill files, patient data, in a private temporary
folder removed afterwards). An active session (a test's, a notebook's) is used as it is. On a cluster the
files' paths must be readable by the executors, and the executors need axiom-cds installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Any

import orjson

try:  # the extra `spark`: without it this module still imports (the wheel's test), and run_spark says so
    import pandas as pd  # type: ignore[import-untyped]  # no stubs: only DataFrame() is used
    import pyarrow  # type: ignore[import-untyped]  # noqa: F401  # applyInPandas needs it
    from py4j.protocol import Py4JError  # type: ignore[import-untyped]  # no stubs; PySpark depends on py4j
    from pyspark import StorageLevel
    from pyspark.errors import PySparkException
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F  # noqa: N812 (Spark's own convention)
except ImportError as missing:
    MISSING: str | None = missing.name or "pyspark"
else:
    MISSING = None

from ..fhir.record import KEPT_TYPES
from ..fhir.wire import reference_key
from ..trials import load_trial
from .db import first_bad_line, threads
from .decide import PatientResult, decide_one
from .engines import EngineRun, source_notes, without_patient
from .gather import ORPHAN_TYPES, Chart, pointed_keys
from .narrow import CohortCodes, Narrowed, coded_patients, cohort_codes
from .progress import Steps
from .sources import SourceError, Sources

log = logging.getLogger("axiom_cds.screen")

DEFAULT_MASTER = "local[*]"
MASTER_ENV = "AXIOM_SPARK_MASTER"
FIELDS = ("resourceType", "id", "subject", "patient", "code", "extension", "meta")
NARROWED = ("type", "id", "ref", "code", "extension", "meta")
RESULT_SCHEMA = "patient string, report string, name string, problem string"
PARTS = 3  # a chart's lines: its Patient(s), its own resources, the subject-less ones they point at
LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
logger.conf.name = org.apache.spark.SparkConf
logger.conf.level = error
"""


def master_url() -> str:
    return os.environ.get(MASTER_ENV) or DEFAULT_MASTER


def _java() -> None:
    """SourceError (one line) when there is no Java for Spark to start (spark-submit looks there too)."""
    home = os.environ.get("JAVA_HOME")
    if (home and Path(home, "bin", "java").is_file()) or shutil.which("java"):
        return
    raise SourceError("--engine spark needs Java 17 or later: no `java` on PATH and no JAVA_HOME (`make java`, or "
                      "apt-get install openjdk-17-jre-headless)")


@contextmanager
def spark_session(master: str | None = None) -> Iterator[tuple[SparkSession, float]]:
    """The active SparkSession (kept), else a new one for `master` (stopped afterwards); with the seconds
    its start took (0 for one already active)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active, 0.0
        return
    _java()
    master = master or master_url()
    private = tempfile.mkdtemp(prefix="axiom-spark-")  # mode 0700: shuffles and spills hold patient data
    Path(private, "log4j2.properties").write_text(LOG4J)
    builder = (SparkSession.builder.master(master).appName("axiom-cds screen")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.local.dir", private)
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={private}/log4j2.properties")
               .config("spark.sql.shuffle.partitions", str(2 * threads())))
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers import this interpreter's axiom-cds
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    started = time.perf_counter()
    try:
        spark = builder.getOrCreate()
    except (PySparkException, Py4JError, OSError) as exc:
        shutil.rmtree(private, ignore_errors=True)
        raise SourceError(f"--engine spark: Spark did not start on {master} ({_why(exc)}; Spark 4 needs Java 17 "
                          "or later)") from None
    seconds = time.perf_counter() - started
    try:
        yield spark, seconds
    finally:
        spark.stop()
        shutil.rmtree(private, ignore_errors=True)


def _why(exc: BaseException) -> str:
    """What failed, never Spark's message (it may quote a resource)."""
    condition = exc.getCondition() if isinstance(exc, PySparkException) else None
    return condition or type(exc).__name__


# --------------------------------------------------------------------------- reading


def _hadoop_path(path: Path) -> str:
    """An absolute path Spark reads as it is, not as a glob."""
    text = str(path.resolve())
    for char in "\\[]{}*?":
        text = text.replace(char, "\\" + char)
    return text


def _read(spark: SparkSession, files: Sequence[Path], look: Column | None = None) -> DataFrame:
    """Every non-blank line of `files` (that passes `look`, a test of its text): its text and the top-level
    fields the passes read."""
    lines = spark.read.text([_hadoop_path(f) for f in files]).where(F.col("value").rlike(r"\S"))
    if look is not None:
        lines = lines.where(look)
    parsed = lines.select(F.col("value").alias("json"), F.json_tuple("value", *FIELDS).alias(
        "type", "id", "subject", "patient", "code", "extension", "meta"))
    ref = F.coalesce(F.get_json_object("subject", "$.reference"), F.get_json_object("patient", "$.reference"))
    return parsed.select("json", "type", "id", ref.alias("ref"), "code", "extension", "meta")


def _array(column: Column) -> Column:
    """The elements of a JSON array (each as its text), none for anything else — DuckDB's `[*]`."""
    return F.when(F.ltrim(column).startswith("["), F.from_json(column, "array<string>"))


def _check_lines(rows: DataFrame, sources: Sources) -> None:
    """A line without a resourceType may be one that is not JSON: stop the screen as the local engine does,
    naming the file and the line (found with Python's reader), never quoting it."""
    for row in rows.where(F.col("type").isNull()).select("json").collect():
        try:
            orjson.loads(row["json"])
        except orjson.JSONDecodeError:
            raise _bad_line(sources) from None


def _bad_line(sources: Sources) -> SourceError:
    for path in sources.files:
        found = first_bad_line(path)
        if found is not None and found[0] == 0:
            return SourceError(f"{path}: {found[1]}; nothing was screened")
        if found is not None:
            return SourceError(f"{path}: line {found[0]} {found[1]}; nothing was screened (fix or remove the line)")
    return SourceError(f"{sources.folder}: a line is not valid JSON; nothing was screened")


# --------------------------------------------------------------------------- narrowing (narrow.py's rules)


def _literal_map(entries: dict[str, Column]) -> Column:
    """A map literal of the driver's few values (no table to ship, no join)."""
    return F.create_map(*[c for key, value in sorted(entries.items()) for c in (F.lit(key), value)])


def _coded_refs(scan: DataFrame, codes: CohortCodes) -> list[str]:
    """Subject references of the Conditions with a cohort code (in code or histology) or profile, as
    narrow.py's `_coded_refs` lists them (found by code, by a code that cannot be read, by profile)."""
    cond = scan.where((F.col("type") == "Condition") & F.col("ref").isNotNull())
    in_code = cond.select("ref", F.explode(_array(F.get_json_object("code", "$.coding"))).alias("c"))
    extensions = cond.select("ref", F.explode(_array(F.col("extension"))).alias("e"))
    in_histology = (extensions.where(F.get_json_object("e", "$.url") == codes.histology_extension)
                    .select("ref", F.explode(_array(F.get_json_object("e", "$.valueCodeableConcept.coding")))
                            .alias("c")))
    codings = in_code.unionByName(in_histology).select(
        "ref", F.get_json_object("c", "$.system").alias("system"), F.get_json_object("c", "$.code").alias("code"))
    distinct = codings.where(F.col("system").isNotNull() & F.col("code").isNotNull()).select(
        "system", "code").distinct().collect()
    matched = [(r["system"], r["code"]) for r in distinct if codes.matches(r["system"], r["code"])]
    found = []
    if matched:
        by_system: dict[str, list[str]] = {}
        for system, code in sorted(matched):
            by_system.setdefault(system, []).append(code)
        codes_of = _literal_map({k: F.array(*map(F.lit, v)) for k, v in by_system.items()})
        found.append(codings.where(F.array_contains(F.try_element_at(codes_of, F.col("system")), F.col("code")))
                     .select("ref").distinct().withColumn("by", F.lit(0)))
    # a code that is no CodeableConcept (narrow.py's `unreadable`): the engine's diagnosis is then unknown
    coding = F.get_json_object("code", "$.coding")
    unreadable = F.col("code").isNotNull() & (~F.ltrim("code").startswith("{") | (
        coding.isNotNull() & ~F.ltrim(coding).startswith("[")))
    found.append(cond.where(unreadable).select("ref").distinct().withColumn("by", F.lit(1)))
    if codes.profiles:
        profiles = cond.select("ref", F.explode(_array(F.get_json_object("meta", "$.profile"))).alias("p"))
        found.append(profiles.where(F.substring_index("p", "|", 1).isin(sorted(codes.profiles)))
                     .select("ref").distinct().withColumn("by", F.lit(2)))
    both = found[0]
    for more in found[1:]:
        both = both.unionByName(more)
    return [r["ref"] for r in sorted(both.collect(), key=lambda r: (r["by"], r["ref"]))]


def _narrow(scan: DataFrame, codes: CohortCodes, sources: Sources) -> Narrowed:
    """narrow.py's `narrow` over the Patients and Conditions of `scan` (lines without a type checked)."""
    typ = F.col("type")
    counts = scan.agg(
        F.countDistinct(F.when(typ == "Patient", F.col("id"))).alias("ids"),
        F.count(F.when((typ == "Patient") & F.col("id").isNull(), 1)).alias("no_id"),
        F.count(F.when(typ == "Condition", 1)).alias("conditions"),
        F.count(F.when(typ.isNull(), 1)).alias("untyped")).first()
    assert counts is not None  # an aggregate without grouping has one row
    if counts["untyped"]:
        _check_lines(scan, sources)
    coded, not_relative = coded_patients(_coded_refs(scan, codes))
    present: set[str] = set()
    if coded:
        present = {r["id"] for r in scan.where((typ == "Patient") & F.col("id").isin(sorted(coded)))
                   .select("id").distinct().collect()}
    return Narrowed(
        screened=int(counts["ids"] + counts["no_id"]),
        candidates=tuple(sorted(present)),
        without_patient=tuple(f"Patient/{i}" for i in sorted(coded - present)),
        not_relative=not_relative,
        conditions=int(counts["conditions"]))


# --------------------------------------------------------------------------- gathering (gather.py's rules)


def _java_literal(text: str) -> str:
    """`text` matched literally by a Java regular expression (letters and digits as they are)."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


def _first_look(ids: Sequence[str], narrowed: bool) -> Column:
    """What a line's text must have to be parsed at all (gather.py's first look, type-blind): a candidate's
    reference `Patient/<id>`, a Patient naming a candidate id, any backslash (an escape can spell
    anything), a result or Medication that may have no subject, a Patient or Condition of a file
    not narrowed, or not the shape of one JSON object (`{` … `}`: a cut line is parsed, and refused).
    Parsing is most of Spark's time; every line of the narrowed files was parsed by the narrowing."""
    value = F.col("value")
    # a result or Medication may have no subject, unless its text shows one at the top level: a subject or
    # patient reference as an export writes it, in a line with nothing contained (only a contained resource
    # holds a nested `subject`). Its text may name some patient elsewhere (a performer): parsed all the same,
    # since a candidate's report may point at it
    referenced = reduce(or_, [value.contains(f'"{key}":{{"reference":"') for key in ("subject", "patient")])
    attributed = referenced & ~value.contains('"contained"')
    orphan = ~attributed & reduce(or_, [value.contains(f'"{t}"') for t in ORPHAN_TYPES])
    look = value.contains("\\") | orphan | ~value.startswith("{") | ~value.endswith("}")
    if ids:
        alternation = "|".join(_java_literal(i) for i in ids)
        look = look | value.rlike(f'Patient/(?:{alternation})["/]') | (
            value.contains('Patient"') & value.rlike(f'"(?:{alternation})"'))
    if not narrowed:
        look = look | value.contains('"Patient"') | value.contains('"Condition"')
    return look


def _hits(spark: SparkSession, sources: Sources, narrowed: Sequence[Path], ids: Sequence[str]) -> DataFrame:
    """The lines that are the candidates' or may be pointed at (`mine`), the Patients and Conditions of the
    files not in `narrowed` (`stray`), and the lines without a resourceType (checked as JSON)."""
    done = set(narrowed)
    parts = []
    if done:
        parts.append(_read(spark, [f for f in sources.files if f in done], _first_look(ids, narrowed=True))
                     .withColumn("stray", F.lit(False)))
    others = [f for f in sources.files if f not in done]
    if others:
        parts.append(_read(spark, others, _first_look(ids, narrowed=False))
                     .withColumn("stray", F.col("type").isin("Patient", "Condition")))
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    wanted = sorted(ids)
    typ, ref = F.col("type"), F.col("ref")
    if wanted:  # a superset of reference_key's candidates: a path segment of the reference is a candidate id
        named = F.exists(F.split(ref, "/"), lambda segment: segment.isin(wanted))
        mine = ((typ == "Patient") & ref.isNull() & F.col("id").isin(wanted)) | (ref.isNotNull() & typ.isin(
            *KEPT_TYPES) & named) | (ref.isNull() & typ.isin(*ORPHAN_TYPES))
    else:
        mine = ref.isNull() & typ.isin(*ORPHAN_TYPES)
    return (rows.withColumn("mine", mine).where(F.col("mine") | F.col("stray") | typ.isNull())
            .persist(StorageLevel.MEMORY_AND_DISK))


def _graph_rows(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Each pointing line's pointers, keyed as gather.py's `_point` keys them (`pointed_keys`)."""
    for batch in batches:
        pointers = [[] if line is None else pointed_keys(line.encode()) for line in batch["json"]]
        yield pd.DataFrame({"pid": batch["pid"], "key": batch["key"], "pointers": pointers})


def _pointed(keys: dict[str, set[str]], starts: dict[str, list[str]], pool: dict[str, list[str]]
             ) -> set[tuple[str, str]]:
    """gather.py's `_point` on keys: per chart, what its resources point at, transitively through the pool's
    resources, never through one of its own. A key the pool lacks points at nothing and joins no line."""
    out: set[tuple[str, str]] = set()
    for pid, start in starts.items():
        queue = list(start)
        own = keys.get(pid, set())
        seen: set[str] = set()
        while queue:
            key = queue.pop()
            if key in seen or key in own:
                continue
            seen.add(key)
            out.add((pid, key))
            queue.extend(pool.get(key, ()))
    return out


POINTING = ('"result"', '"hasMember"', '"medicationReference"')  # gather.py's POINTERS, as text


def _charts(hits: DataFrame, ids: Sequence[str]) -> DataFrame:
    """gather.py's charts of the candidates `ids`, as rows (pid, part, json) of `hits`."""
    wanted = set(ids)
    typ, ref, json = F.col("type"), F.col("ref"), F.col("json")
    mine = hits.where("mine")
    owned = mine.where(ref.isNotNull() & typ.isin(*KEPT_TYPES))
    owners = {}
    for row in owned.select("ref").distinct().collect():
        key = reference_key(row["ref"])
        if key.startswith("Patient/") and key.removeprefix("Patient/") in wanted:
            owners[row["ref"]] = key.removeprefix("Patient/")
    owner = F.try_element_at(_literal_map({r: F.lit(p) for r, p in owners.items()}), ref) if owners else F.lit(None)
    own = owned.withColumn("pid", owner).where(F.col("pid").isNotNull()) \
        .withColumn("key", F.concat(typ, F.lit("/"), F.coalesce(F.col("id"), F.lit("None"))))  # f"{type}/{id}"
    patients = mine.where((typ == "Patient") & ref.isNull() & F.col("id").isin(sorted(wanted))) \
        .select(F.col("id").alias("pid"), F.lit(0).alias("part"), "json")
    pool = mine.where(ref.isNull() & typ.isin(*ORPHAN_TYPES) & F.col("id").isNotNull()) \
        .groupBy(F.concat(typ, F.lit("/"), F.col("id")).alias("key")).agg(F.min("json").alias("json"))  # one each
    pointing = F.lit(False)
    for text in POINTING:
        pointing = pointing | json.contains(text)
    graph = own.select("pid", "key", F.when(pointing, json).alias("json")).unionByName(
        pool.where(pointing).select(F.lit(None).cast("string").alias("pid"), "key", "json"))
    keys: dict[str, set[str]] = {}
    starts: dict[str, list[str]] = {}
    links: dict[str, list[str]] = {}
    for row in graph.mapInPandas(_graph_rows, "pid string, key string, pointers array<string>").collect():
        if row["pid"] is None:
            links[row["key"]] = list(row["pointers"])
        else:
            keys.setdefault(row["pid"], set()).add(row["key"])
            starts.setdefault(row["pid"], []).extend(row["pointers"])
    pointers_to: dict[str, list[str]] = {}
    for pid, key in sorted(_pointed(keys, starts, links)):
        pointers_to.setdefault(key, []).append(pid)
    pids = (F.try_element_at(_literal_map({k: F.array(*map(F.lit, v)) for k, v in pointers_to.items()}), F.col("key"))
            if pointers_to else F.array().cast("array<string>"))
    pointed = pool.select(F.explode(pids).alias("pid"), F.lit(2).alias("part"), "json")
    return patients.unionByName(own.select("pid", F.lit(1).alias("part"), "json")).unionByName(pointed)


# --------------------------------------------------------------------------- deciding (decide.py, in the workers)


def _decide_chart(as_of: str, trial: str, rows: pd.DataFrame) -> pd.DataFrame:
    """One candidate's lines into gather.py's Chart, decided by decide.py's `decide_one`."""
    chart = Chart(str(rows["pid"].iloc[0]))
    parts = (chart.patients, chart.own, chart.pointed)
    for part, line in zip(rows["part"], rows["json"], strict=True):
        parts[int(part)].append(line.encode().strip())
    result = decide_one((chart.patient, chart.lines(), as_of, trial))
    report = orjson.dumps(result.report).decode() if result.report is not None else None
    return pd.DataFrame([{"patient": result.patient, "report": report, "name": result.name,
                          "problem": result.problem}])


def _result(row: dict[str, Any]) -> PatientResult:
    report = orjson.loads(row["report"]) if row["report"] is not None else None
    return PatientResult(row["patient"], report, row["name"], row["problem"])


# --------------------------------------------------------------------------- the engine


def run_spark(sources: Sources, trial: str, as_of: date, steps: Steps, master: str | None = None) -> EngineRun:
    """The screen on Spark (`master`, else AXIOM_SPARK_MASTER, else local[*]): the local engine's EngineRun."""
    if MISSING is not None:
        raise SourceError(f"--engine spark needs PySpark, pandas and pyarrow ({MISSING} is not installed): "
                          "pip install 'axiom-cds[spark]'")
    steps.step("starting Spark")
    with spark_session(master) as (spark, start_seconds):
        log.info("spark started", extra={"seconds": round(start_seconds, 3), "reused": start_seconds == 0.0,
                                          "parallelism": spark.sparkContext.defaultParallelism})
        try:
            return _screen(spark, sources, trial, as_of, steps)
        except (PySparkException, Py4JError) as exc:
            raise SourceError(f"{sources.folder}: the Spark job failed ({_why(exc)}); nothing was screened") from None


def _screen(spark: SparkSession, sources: Sources, trial: str, as_of: date, steps: Steps) -> EngineRun:
    """engines.py's `_narrow_and_gather` on Spark, then the decisions."""
    codes = cohort_codes(load_trial(trial))
    started = time.perf_counter()
    led = sources.led_by("Patient", "Condition")
    steps.step("narrowing: cohort diagnosis codes")
    cached: list[DataFrame] = []
    try:
        narrowed = Narrowed(0, (), (), 0, 0)
        scan = None
        if led:
            scan = (_read(spark, led).where(F.col("type").isin("Patient", "Condition") | F.col("type").isNull())
                    .select(*NARROWED, "json").persist(StorageLevel.MEMORY_AND_DISK))
            cached.append(scan)
            narrowed = _narrow(scan, codes, sources)
        charts: list[DataFrame] = []
        if narrowed.candidates or len(led) != len(sources.files):
            steps.step("gathering the candidates' resources")
            hits = _hits(spark, sources, led, narrowed.candidates)
            cached.append(hits)
            counts = hits.agg(F.count(F.when(F.col("type").isNull(), 1)).alias("untyped"),
                              F.count(F.when(F.col("stray"), 1)).alias("strays")).first()
            assert counts is not None
            if counts["untyped"]:
                _check_lines(hits, sources)
            if narrowed.candidates:
                charts.append(_charts(hits, narrowed.candidates))
            if counts["strays"]:
                strays = hits.where("stray").select(*NARROWED, "json")
                again = _narrow(strays if scan is None else scan.unionByName(strays), codes, sources)
                new = sorted(set(again.candidates) - set(narrowed.candidates))
                if new:
                    steps.step("gathering the candidates found outside the Patient and Condition files")
                    more = _hits(spark, sources, sources.files, new)
                    cached.append(more)
                    charts.append(_charts(more, new))
                narrowed = again
        log.info("screen gathered", extra={"files": len(sources.files), "patients": narrowed.screened,
                                            "conditions": narrowed.conditions, "candidates": len(narrowed.candidates),
                                            "seconds": round(time.perf_counter() - started, 3), "engine": "spark"})
        decided_at = time.perf_counter()
        results = _decide(charts, narrowed, as_of, trial, steps)
    finally:
        for frame in cached:
            frame.unpersist()
    log.info("screen decided", extra={"candidates": len(narrowed.candidates), "engine": "spark",
                                      "unreadable": sum(r.report is None for r in results),
                                      "seconds": round(time.perf_counter() - decided_at, 3)})
    return EngineRun(narrowed.screened, len(narrowed.candidates), results, source_notes(narrowed))


def _decide(charts: list[DataFrame], narrowed: Narrowed, as_of: date, trial: str, steps: Steps
            ) -> list[PatientResult]:
    """Each candidate decided in the Python workers, grouped by patient; in the order of the candidates, then
    the references without a Patient resource."""
    candidates = narrowed.candidates
    steps.step("deciding each candidate", total=len(candidates))
    by_patient: dict[str, PatientResult] = {}
    when = as_of.isoformat()

    def decide_chart(chart: pd.DataFrame) -> pd.DataFrame:
        return _decide_chart(when, trial, chart)

    if charts and candidates:
        rows = charts[0]
        for more in charts[1:]:
            rows = rows.unionByName(more)
        for row in rows.groupBy("pid").applyInPandas(decide_chart, RESULT_SCHEMA).toLocalIterator():
            result = _result(row.asDict())
            by_patient[result.patient] = result
            steps.advance()
    results = []
    for pid in candidates:  # a candidate without a line (its Patient has a subject): an empty chart, as locally
        result = by_patient.get(f"Patient/{pid}") or decide_one((f"Patient/{pid}", [], when, trial))
        results.append(result)
    return results + without_patient(narrowed)
