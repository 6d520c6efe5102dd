"""The run report as a reader sees it: index.html opened from disk in headless chromium, offline.

Every figure must load (no broken image), every section must be there, and the page must need nothing
from the network: requests other than file:// are aborted and recorded, and fail the test.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright
from report_support import write_stages
from test_browser import CHROMIUM, CHROMIUM_ARGS
from test_report import SECTIONS

from pipeline.cost import read_cost, record_stage
from pipeline.report import build_report
from pipeline.workspace import RunWorkspace

# Each image: loaded, and decoded to a picture of its own size (a broken one is complete with naturalWidth 0).
IMAGES = "[...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete, w: i.naturalWidth, " \
         "h: i.naturalHeight}))"


def test_the_report_renders_offline_with_every_figure(tmp_path):
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: make setup installs it (Debian: apt-get install chromium)")
    ws = RunWorkspace(tmp_path, "manual__render").create()
    write_stages(ws.model, ws.eval, ws.gate, ws.validation)
    record_stage(ws.path, "train", 600.0, 1)
    index = build_report(ws.report, model_dir=ws.model, eval_dir=ws.eval, gate_dir=ws.gate,
                         validation_dir=ws.validation, cost=read_cost(ws.path), registry=[])
    remote: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else (remote.append(route.request.url), route.abort()))
            page.goto(index.as_uri(), wait_until="load")
            images = page.evaluate(IMAGES)
            sections = page.eval_on_selector_all("section", "s => s.map(e => [e.id, e.querySelector('h2').innerText])")
            validation = page.inner_text("#validation")
            links = page.eval_on_selector_all("a", "a => a.length")
        finally:
            browser.close()
    assert [s for s, _ in sections] == SECTIONS
    assert [i["src"] for i in images] == ["training.png", "accuracy.png", "per_class.png"]
    for image in images:
        assert image["complete"] and image["w"] > 100 and image["h"] > 100, image
    # GX's results are drawn on the page itself (its Data Docs load from CDNs and are not published).
    assert "Great Expectations" in validation and "Suite: pass" in validation and links == 0
    assert remote == []
