"""End to end in a real browser: `vidlm serve` on loopback, driven by Debian chromium via playwright.

Screenshots go to ``artifacts/ui/`` (or ``$VIDLM_TEST_ARTIFACTS``). Skips only where chromium
(or the playwright package) is absent.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from index import parse_spans

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[3]
HEALTH_TIMEOUT_S = 90
UI_TIMEOUT_MS = 30_000

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed")


def artifacts_dir(name: str) -> Path:
    root = Path(os.environ.get("VIDLM_TEST_ARTIFACTS", REPO / "artifacts" / "ui"))
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no health after {HEALTH_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@contextmanager
def vidlm_serve(args: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    """`vidlm serve` on a free loopback port; yields its URL; kills its process group after."""
    port = free_port()
    cmd = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port), *args]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO, start_new_session=True)
    try:
        wait_healthy(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@contextmanager
def browser_page(tmp_path: Path):
    """Debian chromium with the flags that work here and a fresh user-data-dir."""
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=FLAGS,
            headless=True, viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def open_page(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="stAppViewContainer"]')
    wait_idle(page)


def wait_idle(page, timeout_ms: int = UI_TIMEOUT_MS) -> None:
    """Until the app's script run has finished."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


def assert_no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def ask(page, question: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")
    page.get_by_test_id("stChatMessage").nth(1).wait_for()


def player_time(page) -> float:
    return float(page.evaluate("() => document.querySelector('video').currentTime"))


def wait_player_at(page, seconds: float) -> None:
    page.wait_for_function(
        "t => { const v = document.querySelector('video'); return v && v.readyState >= 1 && Math.abs(v.currentTime - t) <= 1 }",
        arg=seconds, timeout=UI_TIMEOUT_MS,
    )


def search(page, url: str, query: str) -> None:
    open_page(page, f"{url}/search")
    page.get_by_label("Find an event across the library").fill(query)
    page.get_by_role("button", name="Search").click()
    page.get_by_text("best first").or_(page.get_by_text("No clips match")).first.wait_for()
    wait_idle(page)


def test_ask_click_a_time_chip_and_search_fake_backend(tmp_path, video_dir):
    shots = artifacts_dir("fake")
    env = {"VIDLM_UI_BACKEND": "fake", "VIDLM_UI_FAKE_DIR": str(video_dir)}
    with vidlm_serve([], env, tmp_path / "server.log") as url, browser_page(tmp_path) as page:
        open_page(page, url)
        page.get_by_test_id("stDataFrame").first.wait_for()
        page.wait_for_timeout(1500)  # thumbnails
        page.screenshot(path=shots / "library.png", full_page=True)
        open_page(page, f"{url}/watch")
        page.locator("video").wait_for()
        assert player_time(page) < 1
        ask(page, "When does the red circle enter?")
        chip = page.get_by_role("button", name="0:12.0–0:15.5")
        chip.wait_for()
        wait_idle(page)
        chip.click()
        wait_player_at(page, 12.0)
        wait_idle(page)  # the rerun moves the chips into the history; stale copies linger until it ends
        page.get_by_role("button", name="0:17.0").click()
        wait_player_at(page, 17.0)
        page.screenshot(path=shots / "watch.png", full_page=True)
        assert_no_traceback(page)
        search(page, url, "the red circle enters")
        assert page.get_by_text("#1 · blue.mp4").count() == 1
        page.locator("video").nth(1).wait_for()
        page.screenshot(path=shots / "search.png", full_page=True)
        open_page(page, f"{url}/export")
        page.get_by_role("button", name="Download library.jsonl").wait_for()
        page.screenshot(path=shots / "export.png", full_page=True)
        assert_no_traceback(page)


@pytest.fixture(scope="module")
def real_library(tmp_path_factory) -> Path:
    """One synthetic video ingested by the real pipeline with the built-in model."""
    torch = pytest.importorskip("torch")
    from app.pipeline import Pipeline, PipelineOptions
    from recipe.scene import WorldParams
    from recipe.synth import write_dataset

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("real")
    write_dataset(root / "videos", videos=1, seed=3,
                  params=WorldParams(size_px=128, min_seconds=8, max_seconds=10))
    options = PipelineOptions(caption_max_new_tokens=96, answer_max_new_tokens=24)
    report = Pipeline(library=root / "library", options=options).ingest_folder(root / "videos")
    assert not report.failures, report.to_json()
    return root / "library"


def test_real_pipeline_library_ask_and_search(tmp_path, real_library):
    library = real_library
    shots = artifacts_dir("real")
    args = ["--library", str(library)]  # the built-in model
    with vidlm_serve(args, {"VIDLM_UI_BACKEND": "pipeline"}, tmp_path / "server.log") as url, \
            browser_page(tmp_path) as page:
        open_page(page, url)
        page.get_by_test_id("stDataFrame").first.wait_for()
        assert page.get_by_test_id("stMetricValue").first.inner_text() == "1"
        page.screenshot(path=shots / "library.png", full_page=True)
        open_page(page, f"{url}/watch")
        page.locator("video").wait_for()
        ask(page, "When does the red circle enter from the left?")
        wait_idle(page, timeout_ms=150_000)
        assert page.get_by_test_id("stChatMessage").count() == 2
        answer = page.get_by_test_id("stChatMessage").nth(1).inner_text()
        spans = parse_spans(answer)
        assert spans, f"the built-in model answered a grounding question without a time: {answer!r}"
        assert re.search(r"\b\d{1,3}% sure\b", answer), f"no confidence under the answer: {answer!r}"
        # Park the player away from the answer, then the chip must bring it back.
        page.evaluate("() => { const v = document.querySelector('video'); v.currentTime = v.duration; }")
        page.wait_for_function("() => document.querySelector('video').currentTime > 0", timeout=UI_TIMEOUT_MS)
        page.get_by_test_id("stChatMessage").nth(1).get_by_role("button").first.click()
        wait_player_at(page, spans[0].start_seconds)
        page.screenshot(path=shots / "watch.png", full_page=True)
        assert_no_traceback(page)
        search(page, url, "a circle enters")
        page.screenshot(path=shots / "search.png", full_page=True)
        assert_no_traceback(page)
