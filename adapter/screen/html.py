"""report.html: one self-contained page for a research coordinator.

No network at all: the style and the script are inline, allowed by a Content-Security-Policy that names
their hashes (nothing else may load or run — not even a script in a patient's chart text, which Jinja2's
autoescape writes as text anyway). The attrition chart is inline SVG; the worklist sorts by any column
(a few lines of script); each patient's criteria, with the evidence and notes, follow the table.
"""

from __future__ import annotations

import base64
import hashlib
import math
from functools import cache
from typing import Any

import jinja2

from ..trials import Trial
from .decide import PatientResult
from .worklist import in_worklist

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;color:#1b1b1b;
padding:0 1rem}h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}.muted{color:#555}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f3f3f3}th button{all:unset;cursor:pointer;font-weight:600}
th button::after{content:" \\2195";color:#999}.likely-eligible{color:#0a6b2d;font-weight:600}
.needs-review{color:#8a5a00;font-weight:600}.not-eligible{color:#a11;font-weight:600}.met{color:#0a6b2d}
.not-met{color:#a11}.unknown{color:#8a5a00}.not-applicable{color:#777}details{margin:.4rem 0;border:1px solid #ddd;
border-radius:4px;padding:.3rem .6rem}summary{cursor:pointer}code{font-size:.9em}
svg text{font:13px system-ui,sans-serif}
""".strip()

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th button").forEach(function (button, column) {
    button.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = button.getAttribute("data-order") !== "up";
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute("data-sort") || a.cells[column].textContent;
        var y = b.cells[column].getAttribute("data-sort") || b.cells[column].textContent;
        var n = x - y;
        var c = isNaN(n) ? x.localeCompare(y) : n;
        return up ? c : -c;
      });
      button.setAttribute("data-order", up ? "up" : "down");
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
""".strip()


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CSP = (f"default-src 'none'; style-src '{_sha256(STYLE)}'; script-src '{_sha256(SCRIPT)}'; img-src 'none'; "
       "base-uri 'none'; form-action 'none'")


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("adapter.screen", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2")


BAR_WIDTH = 560


def attrition_bars(attrition: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each step's bar, on a log scale (10^5 patients and 3 candidates on one chart)."""
    top = max((a["remaining"] for a in attrition), default=0)
    scale = math.log10(top + 1) or 1.0
    return [{"step": a["step"], "remaining": a["remaining"], "y": 8 + 30 * i,
             "width": max(2, round(BAR_WIDTH * math.log10(a["remaining"] + 1) / scale)) if a["remaining"] else 0}
            for i, a in enumerate(attrition)]


RANK_TEXT = {"likely-eligible": "1", "needs-review": "2", "not-eligible": "3"}


def render(doc: dict[str, Any], trial: Trial, results: list[PatientResult]) -> str:
    patients = [{"n": i, "row": row, "name": result.name or "", "report": result.report,
                 "rank": RANK_TEXT[row["overall"]]}
                for i, (row, result) in enumerate(zip(doc["patients"], in_worklist(results), strict=True), 1)]
    bars = attrition_bars(doc["attrition"])
    return _template().render(doc=doc, trial=trial, patients=patients, bars=bars, style=STYLE, script=SCRIPT,
                              csp=CSP, chart_height=16 + 30 * len(bars), bar_x=230, bar_width=BAR_WIDTH)
