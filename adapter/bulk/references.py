"""Medications an export names but does not carry: read by id, so the folder is as complete as a fetch.

A Group or Patient-level export holds the patients' compartments, and a Medication is in none: a
MedicationRequest whose drug is `medicationReference: Medication/x` then points at nothing in the
folder, and a checkpoint inhibitor known only by that Medication's RxNorm code would be missed (the
FHIR layer reads such Medications by id, fhir/gather.py). So after the downloads the medication files
are read, every `Medication/{id}` they reference on this server and no Medication file holds is read
with `Medication?_id=…` (on the allowed server, with the token), and the result is written as one more
file. A system-level export normally has them already: then nothing is requested.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
from yarl import URL

from ..fhir.client import same_server
from ..fhir.queries import MEDICATION_SEARCHES
from ..fhir.urls import names
from ..fhir.wire import FHIR_ID, reference_key
from .errors import ExportFailedError, UnsafeUrlError
from .http import SafeHttp
from .state import FileRecord, create_private

MEDICATION_TYPES = frozenset(t for _, t in MEDICATION_SEARCHES)
IDS_PER_REQUEST = 100
MAX_MISSING = 100_000
MAX_PAGES = 10  # of one request for 100 ids
NAME = "Medication-referenced.ndjson"


def _lines(path: Path) -> Any:
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")) as fh:
        yield from (line for line in fh if line.strip())


def missing_medications(dest: Path, files: list[FileRecord], base_url: str) -> list[str]:
    """Ids of the Medications the medication files reference on this server and no file holds, sorted."""
    have: set[str] = set()
    named: set[str] = set()
    for record in files:
        if record.error or record.type not in MEDICATION_TYPES | {"Medication"}:
            continue
        for line in _lines(dest / record.name):
            resource = orjson.loads(line)
            if not isinstance(resource, dict):
                continue
            if resource.get("resourceType") == "Medication" and isinstance(resource.get("id"), str):
                have.add(resource["id"])
                continue
            ref = resource.get("medicationReference")
            target = ref.get("reference") if isinstance(ref, dict) else None
            if not isinstance(target, str) or target.startswith(("#", "urn:")):
                continue
            key = reference_key(target)
            if "://" in target and not names(target, base_url, key):
                continue  # another server's Medication: the token does not go there
            kind, _, mid = key.partition("/")
            if kind == "Medication" and FHIR_ID.fullmatch(mid):
                named.add(mid)
    missing = sorted(named - have)
    if len(missing) > MAX_MISSING:
        raise ExportFailedError(f"the export references more than {MAX_MISSING} Medications it does not hold")
    return missing


async def fetch_medications(http: SafeHttp, base_url: str, dest: Path, ids: list[str]) -> FileRecord:
    """Read the Medications `ids` (`Medication?_id=…`, paged on the server) into one NDJSON file."""
    part = dest / (NAME + ".part")
    count = 0
    with create_private(part) as out:
        for start in range(0, len(ids), IDS_PER_REQUEST):
            url: str | None = f"{base_url}/Medication"
            params: dict[str, str] | None = {"_id": ",".join(ids[start:start + IDS_PER_REQUEST]),
                                             "_count": str(IDS_PER_REQUEST)}
            for _ in range(MAX_PAGES):
                if url is None:
                    break
                answer = await http.json("GET", url, "the referenced Medications", params=params,
                                         headers={"Accept": "application/fhir+json"})
                if answer.status != 200:
                    raise ExportFailedError(f"the server answered {answer.status} for the referenced Medications; "
                                            "rerun the same command to try again")
                bundle = answer.json("Medication search")
                for entry in bundle.get("entry") or () if isinstance(bundle, dict) else ():
                    resource = entry.get("resource") if isinstance(entry, dict) else None
                    if isinstance(resource, dict) and resource.get("resourceType") == "Medication":
                        out.write(orjson.dumps(resource) + b"\n")
                        count += 1
                url, params = _next(bundle, base_url), None
    final = dest / NAME
    part.replace(final)
    return FileRecord(NAME, "Medication", final.stat().st_size, count)


def _next(bundle: Any, base_url: str) -> str | None:
    for link in (bundle.get("link") or ()) if isinstance(bundle, dict) else ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            nxt = str(URL(base_url.rstrip("/") + "/").join(URL(link["url"])))
            if not same_server(nxt, base_url):
                raise UnsafeUrlError("the next link of the Medication search leaves the FHIR server; not followed")
            return nxt
    return None
