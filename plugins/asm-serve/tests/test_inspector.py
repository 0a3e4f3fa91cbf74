"""The session inspector in a real headless browser: Debian's chromium driven by Playwright.

Playwright's own browser download does not work here, so the system chromium is launched by
path (``ASM_CHROMIUM``, default /usr/bin/chromium); without it the test is skipped locally and
fails in CI (``.ci/run`` installs chromium first, and sets ``CI``). A screenshot of the page
with a live run is saved as an artifact (``ASM_SERVE_ARTIFACTS``, which tox sets).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_helpers import TOKEN_A, TOKEN_B, ServerThread, auth

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("ASM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium before the tests")
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_the_inspector_lists_sessions_streams_a_run_live_and_cancels_it(
    browser: Any, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ServerThread() as srv, httpx.Client(base_url=srv.url, timeout=20) as client:
        first = client.post("/v1/sessions", json={"agent_id": "support", "tags": ["vip"]}).json()["id"]
        run = client.post(f"/v1/sessions/{first}/runs", json={"input": "an earlier question"}).json()
        client.get(f"/v1/runs/{run['id']}/await", params={"timeout": 10})
        other = client.post("/v1/sessions", json={"agent_id": "research"}).json()["id"]

        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(srv.url + "/")
        rows = page.locator("#sessions tbody tr")
        rows.first.wait_for()
        assert rows.count() == 2
        assert page.locator(f'#sessions tbody tr[data-id="{first}"] td').nth(3).inner_text() == "echo / echo-1"
        page.fill("#search", "research")
        assert rows.count() == 1 and rows.first.get_attribute("data-id") == other
        page.fill("#search", "")

        page.click(f'#sessions tbody tr[data-id="{first}"]')
        page.locator("#transcript .msg.assistant").first.wait_for()
        page.locator("#live.live-on").wait_for()
        seen = page.locator("#events tbody tr").count()
        assert seen == client.get(f"/v1/sessions/{first}").json()["summary"]["last_seq"]

        # A long run: its streamed text arrives live in the open page.
        long_run = client.post(f"/v1/sessions/{first}/runs", json={"input": " ".join(["live"] * 2000)}).json()
        page.locator('#events tbody tr[data-type="message_streamed"]').nth(3).wait_for()
        page.locator(f'#runs tbody tr[data-run="{long_run["id"]}"] button').wait_for()
        page.locator("#decisions li").first.wait_for()  # routing_decided
        shot = artifacts / "inspector.png"
        page.screenshot(path=str(shot), full_page=True)
        with capsys.disabled():
            print(f"\ninspector screenshot: {shot}")

        page.click(f'#runs tbody tr[data-run="{long_run["id"]}"] button')
        page.locator('#events tbody tr[data-type="run_cancelled"]').wait_for()
        page.locator(f'#runs tbody tr[data-run="{long_run["id"]}"] td.status-cancelled').wait_for()
        assert client.get(f"/v1/runs/{long_run['id']}").json()["status"] == "cancelled"
        seqs = [int(s) for s in page.locator("#events tbody tr").evaluate_all("rows => rows.map(r => r.dataset.seq)")]
        assert seqs == list(range(1, len(seqs) + 1))  # the live log has no gap and no duplicate
        assert errors == []
        page.close()
    assert shot.stat().st_size > 10_000


def test_with_keys_the_page_asks_for_one_and_shows_only_the_tenants_sessions(browser: Any) -> None:
    keys = [{"name": "tenant-a", "token": TOKEN_A, "agent_ids": ["agent-a"]},
            {"name": "tenant-b", "token": TOKEN_B, "agent_ids": ["agent-b"]}]
    with ServerThread(serve={"keys": keys}) as srv, httpx.Client(base_url=srv.url, timeout=20) as client:
        mine = client.post("/v1/sessions", headers=auth(TOKEN_A), json={}).json()["id"]
        client.post("/v1/sessions", headers=auth(TOKEN_B), json={})
        page = browser.new_page()
        page.goto(srv.url + "/")
        page.locator("#key-form:not([hidden])").wait_for()
        page.fill("#key-input", TOKEN_A)
        page.click("#key-form button")
        page.locator("#sessions tbody tr").first.wait_for()
        ids = page.locator("#sessions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert ids == [mine]
        assert "tenant-a" in page.inner_text("#server-info")
        page.close()
