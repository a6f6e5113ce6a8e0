"""The review app in headless Chromium, used as a clinician would: the card's link → the EHR's sign-in → the
page → the checklist with the keyboard only → "Create referral" → the draft on the FHIR server.

Chromium is Debian's (`make chromium` installs it; Playwright never downloads a browser here). Without
it the test skips and says why — except in CI (CI=true), where a missing browser fails. Screenshots of
the app and of the rendered cards are written to test-artifacts/review/ (gitignored), with the cards'
heights at 900 px wide in test-artifacts/review/card-heights.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.trials import load_trial
from tests.fhir_server import FhirTestServer
from tests.mock_ehr import (
    CLINICIAN_NAME,
    MockEhr,
    card_for,
    launch_url,
    loaded_patients,
    running_mock_ehr,
    smart_link,
    with_review,
)
from tests.service_server import ServiceServer

pytestmark = pytest.mark.fhir_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "review"
ELIGIBLE, MISSING_LABS, NOT_ELIGIBLE = "asps-likely-eligible", "asps-missing-labs-needs-review", \
    "asps-low-platelets-not-eligible"
TRIAL = load_trial("axiom")
MAX_TABS = 200  # Tab presses allowed to reach a control: the page has a few dozen links

# WCAG 2.1 contrast of every visible text node against the first opaque background behind it
CONTRAST_JS = """() => {
  const lin = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const lum = c => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const rgba = s => { const m = s.match(/rgba?\\(([^)]+)\\)/); return m ? m[1].split(',').map(parseFloat) : null; };
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgba(getComputedStyle(el).backgroundColor);
      if (c && (c.length < 4 || c[3] > 0)) return c;
    }
    return [255, 255, 255];
  };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let checked = 0;
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!node.textContent.trim()) continue;
    const style = getComputedStyle(el), box = el.getBoundingClientRect();
    if (style.visibility === 'hidden' || box.width === 0 || box.right < 0) continue;
    const fg = rgba(style.color), bg = background(el);
    const ratio = (Math.max(lum(fg), lum(bg)) + 0.05) / (Math.min(lum(fg), lum(bg)) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    checked += 1;
    if (ratio < (large ? 3 : 4.5)) bad.push(node.textContent.trim().slice(0, 40) + ' ' + ratio.toFixed(2));
  }
  return {checked, bad};
}"""

FOCUS_JS = """() => {
  const el = document.activeElement, style = getComputedStyle(el);
  return {id: el.id, tag: el.tagName, text: (el.textContent || '').trim().slice(0, 40),
          outline: style.outlineStyle, width: parseFloat(style.outlineWidth)};
}"""


def _playwright() -> Any:
    in_ci = os.environ.get("CI") == "true"
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium for this test"
        if in_ci:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("playwright is not installed (pip install -e '.[dev]')", pytrace=False)
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    sync_playwright = _playwright()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def patients(fhir_server: FhirTestServer) -> Iterator[dict[str, str]]:
    with loaded_patients(fhir_server, (ELIGIBLE, MISSING_LABS, NOT_ELIGIBLE)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def ehr(fhir_server: FhirTestServer) -> Iterator[MockEhr]:
    with running_mock_ehr(fhir_server.base_url) as running:
        yield running


@pytest.fixture(scope="module")
def service(cds_service_factory: Callable[..., ServiceServer], ehr: MockEhr) -> ServiceServer:
    return with_review(cds_service_factory(), ehr)


def open_page(chromium: Any, errors: list[str], width: int = 1280) -> Any:
    page = chromium.new_page(viewport={"width": width, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def tab_to(page: Any, element_id: str) -> dict[str, Any]:
    """Press Tab until the element has focus (keyboard only); what has focus then."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        focused: dict[str, Any] = page.evaluate(FOCUS_JS)
        if focused["id"] == element_id:
            return focused
    raise AssertionError(f"#{element_id} was not reached with {MAX_TABS} Tab presses")


def assert_visible_focus(focused: dict[str, Any]) -> None:
    assert focused["outline"] != "none" and focused["width"] >= 2, focused


def test_launch_keyboard_checklist_and_referral(chromium: Any, service: ServiceServer, ehr: MockEhr,
                                                fhir_server: FhirTestServer, patients: dict[str, str]) -> None:
    pid = patients[ELIGIBLE]
    errors: list[str] = []
    page = open_page(chromium, errors)
    page.goto(launch_url(ehr, smart_link(card_for(service, ehr, pid)), pid))
    page.wait_for_url(f"{service.base_url}/review/app")
    assert page.locator("[data-overall]").get_attribute("data-overall") == "likely-eligible"
    assert page.locator("article[data-criterion]").count() == 17
    assert page.locator("#signed-in").inner_text() == f"Signed in as {CLINICIAN_NAME}"  # the verified id_token
    # the stylesheet came through the CSP ('self'), and nothing was refused
    assert page.evaluate("getComputedStyle(document.querySelector('.banner')).backgroundColor") == "rgb(11, 58, 91)"
    page.screenshot(path=str(ARTIFACTS / "app-likely-eligible.png"), full_page=True)

    contrast = page.evaluate(CONTRAST_JS)
    assert contrast["checked"] > 100 and contrast["bad"] == [], contrast["bad"]
    assert page.locator("main#main").count() == 1 and page.locator("header.banner").count() == 1
    assert page.locator("footer").count() == 1 and page.locator("nav[aria-label]").count() == 1

    # keyboard only: the skip link first, then every checkbox of the checklist, then its button
    page.keyboard.press("Tab")
    skip = page.evaluate(FOCUS_JS)
    assert skip["text"] == "Skip to the content"
    assert_visible_focus(skip)
    for attestation in TRIAL.attestations:
        focused = tab_to(page, f"att-{attestation.id}")
        assert_visible_focus(focused)
        page.keyboard.press("Space")
        assert page.is_checked(f"#att-{attestation.id}")
        label = page.locator(f"label[for='att-{attestation.id}']").inner_text()
        assert label == attestation.text
    page.keyboard.press("Shift+Tab")  # back to the previous one and untick it: a person changes their mind
    page.keyboard.press("Space")
    last = TRIAL.attestations[-2].id
    assert not page.is_checked(f"#att-{last}")
    page.keyboard.press("Tab")
    focused = page.evaluate(FOCUS_JS)
    while focused["tag"] != "BUTTON":
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUS_JS)
    assert focused["text"] == "Save checklist"
    assert_visible_focus(focused)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_role("status").inner_text() == "Checklist saved: 3 of 4 confirmed."
    for attestation in TRIAL.attestations:
        assert page.is_checked(f"#att-{attestation.id}") == (attestation.id != last)
    page.screenshot(path=str(ARTIFACTS / "app-checklist-saved.png"), full_page=True)

    # the referral, by keyboard
    focused = tab_to(page, "create-referral")
    assert_visible_focus(focused)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    row = page.locator("tr[data-kind='referral']")
    rid = row.get_attribute("data-service-request")
    assert rid and f"ServiceRequest/{rid}" in page.get_by_role("status").inner_text()
    stored = fhir_server.get(f"ServiceRequest/{rid}").json()
    assert stored["subject"]["reference"] == f"Patient/{pid}" and stored["status"] == "draft"
    assert TRIAL.card["referral"]["code"] in stored["code"]["coding"]
    row.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "app-referral-created.png"), full_page=True)
    assert errors == []  # no CSP refusal, no script error (there is no script)
    page.close()


@pytest.mark.parametrize("name", [MISSING_LABS, NOT_ELIGIBLE])
def test_other_verdicts_render(chromium: Any, service: ServiceServer, ehr: MockEhr, patients: dict[str, str],
                               name: str) -> None:
    pid = patients[name]
    errors: list[str] = []
    page = open_page(chromium, errors)
    page.goto(launch_url(ehr, smart_link(card_for(service, ehr, pid)), pid))
    page.wait_for_url(f"{service.base_url}/review/app")
    overall = page.locator("[data-overall]").get_attribute("data-overall")
    assert overall == {MISSING_LABS: "needs-review", NOT_ELIGIBLE: "not-eligible"}[name]
    first = page.locator("article[data-criterion]").first.get_attribute("data-status")
    assert first == ("unknown" if overall == "needs-review" else "not-met")  # the decisive rows lead
    assert page.evaluate(CONTRAST_JS)["bad"] == []
    page.screenshot(path=str(ARTIFACTS / f"app-{overall}.png"), full_page=True)
    assert errors == []
    page.close()


CARD_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:8px;width:884px;color:#222}
.card{border:1px solid #ccc;border-left:6px solid #1f6fb2;border-radius:4px;padding:8px 12px}
.summary{font-weight:700;font-size:16px}.source{color:#555;font-size:12px}
button{margin:4px 4px 0 0}a{color:#0a4a9e}"""


def test_rendered_cards(chromium: Any, service: ServiceServer, ehr: MockEhr, patients: dict[str, str]) -> None:
    """Each verdict's card as an EHR shows it (Markdown rendered, buttons, links): a screenshot and its height
    at 900 px wide — a stand-in for the sandbox's renderer, recorded, not asserted."""
    from markdown_it import MarkdownIt

    from adapter.review.pages import environment

    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    heights = {}
    for name in (ELIGIBLE, MISSING_LABS, NOT_ELIGIBLE):
        card = card_for(service, ehr, patients[name])
        escape = environment().from_string("{{ text }}")
        buttons = "".join(f"<button>{escape.render(text=s['label'])}</button>" for s in card.get("suggestions", ()))
        links = " · ".join(f"<a href='#'>{escape.render(text=link['label'])}</a>" for link in card["links"])
        html = (f"<!doctype html><html><head><style>{CARD_CSS}</style></head><body><div class='card'>"
                f"<div class='summary'>{escape.render(text=card['summary'])}</div>"
                f"<div class='source'>{escape.render(text=card['source']['label'])}</div>"
                f"{markdown.render(card['detail'])}<div>{buttons}</div><p>{links}</p></div></body></html>")
        page = chromium.new_page(viewport={"width": 900, "height": 600})
        page.set_content(html)
        heights[name] = page.evaluate("document.querySelector('.card').getBoundingClientRect().height")
        page.screenshot(path=str(ARTIFACTS / f"card-{name}.png"), full_page=True)
        page.close()
        assert "Review eligibility" in links
    (ARTIFACTS / "card-heights.json").write_text(json.dumps({k: round(v) for k, v in heights.items()}, indent=2))
    assert all(h > 0 for h in heights.values())
