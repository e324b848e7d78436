"""The app in a real browser: `streamlit run app.py` driven by Debian's Chromium through Playwright.

One test walks the main flow a person takes: train a short run on the Train page and watch its
curves, see it on Compare, then get the top-k of a cat photo on Predict from that run and from
its backbone's ImageNet head. It saves a screenshot of each page (`TLCORE_SCREENSHOTS=<folder>`
copies them there too). Chromium is found as `.ci/run` finds it: `$TLCORE_CHROMIUM`, else
`chromium` on the PATH. Without it or Playwright the test skips and says why, except under CI
(`$CI` set), where it fails: a green CI run has driven a real browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

try:  # CI installs Playwright; without it the test skips (see `browser_page`)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None
    PlaywrightTimeout = TimeoutError
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-quic", "--disable-sync"]
CATS = ("tabby", "tiger cat", "Egyptian cat")
TIMEOUT_MS = 60_000  # one page render or one prediction, on two busy cores
TRAIN_TIMEOUT_MS = 180_000  # the whole short run, backbone features included

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class AppServer:
    """A `streamlit run app.py` subprocess and where to reach it."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """What the server printed so far (stdout and stderr together)."""
        return self.log_path.read_text(errors="replace")


def find_chromium() -> str | None:
    """The browser `.ci/run` finds (and installs when missing): `$TLCORE_CHROMIUM`, else `chromium` on the PATH."""
    return os.environ.get("TLCORE_CHROMIUM") or shutil.which("chromium")


def _cannot_run(reason: str) -> None:
    """Skip locally; under CI fail, so that a green CI run means the browser test ran."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run there)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(server: AppServer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"streamlit exited with {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer /_stcore/health within {timeout:.0f} s:\n{server.log()}")


def _stop(process: subprocess.Popen) -> None:
    # The server's own process group: streamlit and anything it started, nothing else.
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def app_server(tl_env, tmp_path: Path) -> Iterator[AppServer]:
    """The app on a free local port, with this test's runs and cache folders."""
    port = _free_port()
    env = {**os.environ, "TLCORE_RUNS": str(tl_env.runs), "TLCORE_CACHE": str(tl_env.cache), "OMP_NUM_THREADS": "1"}
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],  # no watcher thread polling the repo on two cores
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = AppServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_healthy(server)
        yield server
    finally:
        _stop(process)


@pytest.fixture
def browser_page(tmp_path: Path):
    """A Chromium page (Debian's browser, headless); see `_cannot_run` for when it or Playwright is missing."""
    chromium = find_chromium()
    if chromium is None:
        _cannot_run("no chromium on the PATH and no $TLCORE_CHROMIUM: apt-get install -y chromium "
                    "(or bash .ci/run) to run the browser test")
    if sync_playwright is None:
        _cannot_run("playwright is not installed: pip install playwright to run the browser test")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            # Tall enough that each page fits without scrolling: Streamlit scrolls its main
            # block, not the document, so a "full page" screenshot is only the viewport.
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(TIMEOUT_MS)

            def remember(ws) -> None:  # the app's latest connection (see `_rerun`)
                _SOCKETS[page] = ws

            page.on("websocket", remember)
            yield page
        finally:
            _SOCKETS.clear()
            browser.close()


@pytest.fixture
def cat_jpeg(tmp_path: Path) -> Path:
    """scikit-image's sample cat photo (Chelsea) as a JPEG file."""
    path = tmp_path / "chelsea.jpg"
    Image.fromarray(skimage.data.chelsea()).save(path, format="JPEG", quality=90)
    return path


# ---- helpers on the page -----------------------------------------------------------------------


def _pick_option(page, key: str, option: str, tries: int = 3) -> None:
    """Add `option` to a multiselect and wait for the run that follows.

    A script run still drawing (the expander that holds the picker, a number typed just
    before) can redraw the picker and close its list while it opens; then it is opened again,
    rather than waiting a minute for an option that will not appear.
    """
    chosen = _widget(page, key).get_by_role("button", name=f"Remove {option}", exact=True)
    for _ in range(tries):
        _wait_idle(page)
        if chosen.count():
            break
        _widget(page, key).get_by_role("combobox").click()
        item = page.get_by_role("option", name=option, exact=True)
        try:
            item.wait_for(timeout=10_000)
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            continue
        item.click()
        page.keyboard.press("Escape")
        # A late script run can also redraw the picker just after the click and drop it: check
        # that the choice holds, and pick again if it did not.
        try:
            chosen.wait_for(timeout=5_000)
        except PlaywrightTimeout:
            continue
    expect(chosen).to_have_count(1)
    _wait_idle(page)


@contextlib.contextmanager
def _dump_on_failure(page, app_server, tmp_path: Path) -> Iterator[None]:
    """On any failure inside: print the server's output, keep the page's HTML and a screenshot."""
    try:
        yield
    except BaseException:
        print(f"---- streamlit output ----\n{app_server.log()}")
        (tmp_path / "failure.html").write_text(page.content())
        page.screenshot(path=tmp_path / "failure.png")
        print(f"the page when it failed: {tmp_path / 'failure.png'}, {tmp_path / 'failure.html'}")
        raise


def _widget(page, key: str):
    """The element Streamlit made for the widget with this `key=` (it carries class st-key-<key>)."""
    return page.locator(f".st-key-{key}")


_SOCKETS: dict = {}  # page -> the websocket Streamlit talks to it over


def _full_run_finished(payload: str | bytes) -> bool:
    """Whether a message from the server says a whole script run (not a fragment's) ended."""
    if isinstance(payload, str):
        return False
    msg = ForwardMsg.FromString(payload)
    return msg.WhichOneof("type") == "script_finished" and msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY


@contextlib.contextmanager
def _rerun(page):
    """Around an interaction: wait until the script run it starts has finished (the server says so)."""
    with _SOCKETS[page].expect_event("framereceived", predicate=_full_run_finished):
        yield
    _wait_idle(page)


def _wait_idle(page) -> None:
    """Until no script run is going on (call it once the page shows what the last run draws)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")


def _combobox(page, key: str):
    """A selectbox's text field: its value is the chosen option's label."""
    return _widget(page, key).get_by_role("combobox")


def _select(page, key: str, option: str) -> None:
    _combobox(page, key).click()
    with _rerun(page):
        page.get_by_role("option", name=option, exact=True).click()


def _type_number(page, key: str, value: int) -> None:
    field = _widget(page, key).locator("input")
    field.fill(str(value))
    with _rerun(page):
        field.press("Enter")  # Streamlit sends a number input's value on Enter or blur


def _charts(page, within=None):
    """Vega-Lite charts that finished drawing (their SVG has at least one mark)."""
    return (within or page).locator('[data-testid="stVegaLiteChart"]').filter(has=page.locator("svg.marks .role-mark"))


def _assert_clean(page, where: str) -> None:
    """No exception box and no "Page not found" dialog on the page."""
    errors = page.get_by_test_id("stException")
    assert errors.count() == 0, f"{where} shows an exception:\n" + "\n".join(errors.all_inner_texts())
    assert page.get_by_text("Page not found").count() == 0, f"{where} shows a 'Page not found' dialog"


def _screenshot(page, path: Path) -> Path:
    page.wait_for_timeout(500)  # charts animate in
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")
    if os.environ.get("TLCORE_SCREENSHOTS"):
        folder = Path(os.environ["TLCORE_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        print(f"screenshot: {shutil.copy(path, folder / path.name)}")
    return path


def _open_page(page, title: str) -> None:
    """Follow the sidebar's link to a page and wait for its run to finish."""
    with _rerun(page):
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()


# ---- the tests ---------------------------------------------------------------------------------


def test_chromium_is_found_as_ci_finds_it_and_ci_fails_instead_of_skipping(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("TLCORE_CHROMIUM", raising=False)
    assert find_chromium() == str(fake)
    monkeypatch.setenv("TLCORE_CHROMIUM", "/opt/browsers/chromium")
    assert find_chromium() == "/opt/browsers/chromium"
    ci_script = (REPO / ".ci" / "run").read_text()
    assert '"${TLCORE_CHROMIUM:-}"' in ci_script and "command -v chromium" in ci_script
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        _cannot_run("no chromium here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _cannot_run("no chromium here")



def test_train_compare_predict_in_chromium(app_server: AppServer, browser_page, cat_jpeg: Path,
                                           tmp_path: Path) -> None:
    page = browser_page
    with _dump_on_failure(page, app_server, tmp_path):
        # A direct link to Train as the server's very first request (a custom URL path once
        # showed a "Page not found" dialog there), then Home and back through the sidebar.
        page.goto(f"{app_server.url}/Train")
        page.get_by_role("heading", name="Train").wait_for()
        _wait_idle(page)
        _assert_clean(page, "Train (direct link)")
        page.goto(app_server.url)
        page.get_by_role("heading", name="Transfer learning on images").wait_for()
        _open_page(page, "Train")
        page.get_by_role("heading", name="Train").wait_for()

        # efficientnet_lite0 + feature_extraction on digits are the defaults; make the run tiny.
        expect(_combobox(page, "backbone")).to_have_value(re.compile(r"^efficientnet_lite0 "))
        expect(_combobox(page, "dataset")).to_have_value("digits")
        expect(_combobox(page, "strategy")).to_have_value("feature_extraction")
        _select(page, "image_size", "64 px")
        _type_number(page, "epochs", 2)
        _type_number(page, "subset", 5)
        expect(_combobox(page, "image_size")).to_have_value("64 px")
        expect(_widget(page, "epochs").locator("input")).to_have_value("2")
        expect(_widget(page, "subset").locator("input")).to_have_value("5")
        _assert_clean(page, "Train")
        _widget(page, "start").get_by_role("button", name="Start training").click()
        expect(page.get_by_test_id("stAlert").filter(has_text="Queued run")).to_be_visible()

        # The run's card turns "finished", with its curves and a line of results (the panel polls).
        page.get_by_text("finished", exact=True).wait_for(timeout=TRAIN_TIMEOUT_MS)
        _charts(page).first.wait_for()
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="best val acc")).to_contain_text("epoch 2/2")
        _wait_idle(page)
        _assert_clean(page, "Train")
        _screenshot(page, tmp_path / "train.png")

        # Compare (the Train page's link): the finished run is picked, with two charts and two tables.
        page.get_by_role("link", name="Compare all runs").click()
        page.get_by_role("heading", name="Compare runs").wait_for()
        expect(_widget(page, "runs").get_by_test_id("stMultiSelectTagsContainer").first).to_contain_text(
            "efficientnet_lite0 + feature_extraction")
        _charts(page, _widget(page, "acc_chart")).wait_for()
        _charts(page, _widget(page, "loss_chart")).wait_for()
        tables = page.get_by_test_id("stDataFrame")  # summary, epoch by run: canvases with an ARIA grid
        expect(tables).to_have_count(2)
        expect(tables.nth(0).locator('[role="row"]').nth(1)).to_contain_text("finished")  # hidden from a11y roles
        expect(tables.nth(1).locator('[role="row"]')).to_have_count(3)  # header + 2 epochs
        _wait_idle(page)
        _assert_clean(page, "Compare")
        _screenshot(page, tmp_path / "compare.png")

        # Predict: the cat's top-k from the run and, beside it, from efficientnet_lite0's ImageNet head.
        _open_page(page, "Predict")
        page.get_by_role("heading", name="Predict").wait_for()
        _widget(page, "model_kind").get_by_text("a finished run").click()
        expect(_combobox(page, "run")).to_have_value(re.compile(r"^efficientnet_lite0 \+ feature_extraction"))
        _wait_idle(page)
        _widget(page, "images").locator('input[type="file"]').set_input_files(cat_jpeg)
        _charts(page, _widget(page, "top_0")).wait_for()
        imagenet = _charts(page, _widget(page, "base_0"))
        imagenet.wait_for()
        expect(page.get_by_test_id("stImage").first).to_contain_text("chelsea.jpg")  # the caption
        _wait_idle(page)
        labels = imagenet.locator("g.role-axis-label text").all_text_contents()  # SVG text has no innerText
        assert any(cat in label for label in labels for cat in CATS), f"no cat in the ImageNet top-k: {labels}"
        _assert_clean(page, "Predict")
        _screenshot(page, tmp_path / "predict.png")


def test_build_a_dataset_train_it_and_download_the_model(app_server: AppServer, browser_page, tmp_path: Path) -> None:
    """Issue 11: two classes made in the page from image files, trained, and taken away as a model zip."""
    import zipfile

    from conftest import photo_patches

    from tlcore.export.bundle import load_predictor

    page = browser_page
    pictures = {}
    for name, photo in (("cat", "chelsea"), ("coffee", "coffee")):
        pictures[name] = [tmp_path / f"{name} {i}.jpg" for i in range(4)]
        for path, img in zip(pictures[name], photo_patches(photo, 4, 96, seed=7), strict=True):
            img.save(path, quality=90)
    with _dump_on_failure(page, app_server, tmp_path):
        page.goto(f"{app_server.url}/Train")
        page.get_by_role("heading", name="Train").wait_for()
        _wait_idle(page)
        with _rerun(page):
            _widget(page, "data_source").get_by_text("build it here").click()
        _widget(page, "built_new").locator("input").fill("Cats and coffee")
        with _rerun(page):
            _widget(page, "built_create").get_by_role("button").click()
        expect(_combobox(page, "built_id")).to_have_value(re.compile(r"^Cats and coffee"))
        for name in pictures:
            _widget(page, "built_class").locator("input").fill(name)
            with _rerun(page):
                _widget(page, "built_add").get_by_role("button").click()
            page.get_by_text(f"{name} · 0 images").wait_for()
        for name, files in pictures.items():
            uploader = page.get_by_test_id("stFileUploader").filter(has_text=f"Add images to {name}")
            uploader.locator('input[type="file"]').set_input_files(files)
            page.get_by_text(f"{name} · 4 images").wait_for()
            _wait_idle(page)
        expect(page.get_by_test_id("stImage")).to_have_count(8)  # the thumbnail strips
        expect(page.get_by_text("Ready to train: 2 classes, 8 images")).to_be_visible()
        _assert_clean(page, "Train (build it here)")
        _screenshot(page, tmp_path / "build.png")

        _select(page, "image_size", "64 px")
        _type_number(page, "epochs", 1)
        _widget(page, "start").get_by_role("button", name="Start training").click()
        expect(page.get_by_test_id("stAlert").filter(has_text="Queued run")).to_be_visible()
        page.get_by_text("finished", exact=True).wait_for(timeout=TRAIN_TIMEOUT_MS)
        _wait_idle(page)
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="Cats and coffee").first).to_be_visible()
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="6 train / 2 val images").first).to_be_visible()
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="unreadable")).to_have_count(0)
        # Never exported: one click builds the bundle (export + ONNX check) and downloads it.
        with page.expect_download(timeout=TRAIN_TIMEOUT_MS) as info:
            page.get_by_role("button", name="Download model").first.click()
        zip_path = tmp_path / info.value.suggested_filename
        info.value.save_as(zip_path)
        assert re.fullmatch(r"tlcore-.+\.zip", zip_path.name), zip_path.name
        names = {n.split("/", 1)[1] for n in zipfile.ZipFile(zip_path).namelist()}
        assert names == {"model.onnx", "model.safetensors", "tlcore.json", "README.md"}
        model = load_predictor(zip_path)
        assert model.class_names == ["cat", "coffee"] and model.engine == "onnxruntime"
        _wait_idle(page)
        _assert_clean(page, "Train (finished, downloaded)")
        _screenshot(page, tmp_path / "download.png")


def test_experiment_from_train_to_bands_and_verdict_on_compare(app_server: AppServer, browser_page,
                                                              tmp_path: Path) -> None:
    """Issue 8: a 2-strategy x 2-seed experiment started on Train, then its bands and verdict on Compare."""
    page = browser_page
    with _dump_on_failure(page, app_server, tmp_path):
        page.goto(f"{app_server.url}/Train")
        page.get_by_role("heading", name="Train").wait_for()
        _wait_idle(page)
        # simple_cnn: seconds per run on two busy cores; its feature_extraction trains a head on
        # frozen random features, scratch trains it all, so the two cells differ.
        _combobox(page, "backbone").click()
        with _rerun(page):
            page.get_by_role("option", name=re.compile(r"^simple_cnn")).click()
        _select(page, "image_size", "32 px")
        _type_number(page, "epochs", 2)
        _type_number(page, "subset", 5)
        page.get_by_text("Experiment: several strategies and backbones, over seeds").click()
        _pick_option(page, "exp_strategies", "scratch")
        expect(_widget(page, "exp_backbones")).to_contain_text("simple_cnn")
        _type_number(page, "exp_seeds", 2)
        with _rerun(page):
            _widget(page, "exp_plan").get_by_role("button").click()
        expect(page.get_by_test_id("stAlert").filter(has_text="This queues 4 runs, about")).to_be_visible()
        _assert_clean(page, "Train (experiment planned)")
        _screenshot(page, tmp_path / "experiment_plan.png")
        _widget(page, "exp_start").get_by_role("button", name="Start 4 runs").click()
        expect(page.get_by_test_id("stAlert").filter(has_text="Queued experiment exp-")).to_be_visible()

        # Progress names the run now training ("run k of 4"), then the panel goes once all four end.
        # Four tiny runs can all end between two polls of a quiet machine (seen in CI: the panel
        # went straight to "4 of 4 runs done"), so either line will do here.
        running = page.get_by_text(re.compile(r"run [1-4] of 4: simple_cnn/|4 of 4 runs done")).first
        running.wait_for(timeout=TRAIN_TIMEOUT_MS)
        running.scroll_into_view_if_needed()
        _screenshot(page, tmp_path / "experiment_progress.png")
        page.get_by_text("4 of 4 runs done").wait_for(timeout=2 * TRAIN_TIMEOUT_MS)
        expect(page.get_by_role("button", name="Cancel experiment")).to_have_count(0)
        _wait_idle(page)
        _assert_clean(page, "Train (experiment done)")

        _open_page(page, "Compare")
        page.get_by_role("heading", name="Compare runs").wait_for()
        with _rerun(page):
            _widget(page, "compare_what").get_by_text("An experiment").click()
        for key in ("band_acc", "band_loss"):
            _charts(page, _widget(page, key)).wait_for()
        _wait_idle(page)
        _screenshot(page, tmp_path / "experiment_compare.png")
        # Each cell: a mean line with a shaded band (a filled path), its two seeds faint behind.
        acc = _widget(page, "band_acc")
        expect(acc.locator("g.role-legend-label text")).to_have_count(2)
        expect(acc.locator("g.role-legend-label text").first).to_contain_text("(mean of 2)")
        assert acc.locator("g.mark-area path").count() >= 2, "no ± std bands drawn"
        verdict = page.get_by_test_id("stMarkdownContainer").filter(has_text="Verdict:")
        expect(verdict).to_contain_text(re.compile(r"(beats .+ by [0-9.]+ points|no significant difference).+ "
                                                   r"on 359 validation images, 2 vs 2 seeds"))
        expect(page.get_by_test_id("stDataFrame")).to_have_count(2)  # cells, runs
        _wait_idle(page)
        _assert_clean(page, "Compare (experiment)")
        page.get_by_test_id("stDataFrame").last.scroll_into_view_if_needed()
        _screenshot(page, tmp_path / "experiment_tables.png")


# ---- issue 9: what a new user trips over ------------------------------------------------------------


def _made_runs(runs_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Runs on disk before the browser opens: three tiny ones differing in lr, one on an uploaded zip
    (named by the user's file name), one the user named, and one that failed."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import write_class_folders, zip_folder

    from tlcore.data.uploads import save_upload
    from tlcore.training.config import TrainConfig
    from tlcore.training.jobs import get_manager

    manager = get_manager(runs_dir)
    photos = write_class_folders(tmp_path / "src" / "photos", per_class=6, classes=("cat", "coffee"))
    upload = save_upload(zip_folder(photos, tmp_path / "src" / "photos.zip").read_bytes(), "cats vs dogs.zip")
    tiny = {"backbone": "simple_cnn", "data": "digits", "strategy": "scratch", "subset": 5, "image_size": 32,
            "epochs": 3, "device": "cpu"}
    ids = {f"lr {lr:g}": manager.submit(TrainConfig(**tiny, lr=lr)) for lr in (1e-2, 3e-3, 1e-3)}
    ids["zip"] = manager.submit(TrainConfig(data=str(upload), epochs=2, image_size=64, device="cpu"))
    ids["failed"] = manager.submit(TrainConfig(**{**tiny, "data": str(tmp_path / "gone")}))
    for run_id in ids.values():
        assert manager.wait(run_id, timeout=180)
    manager.store.set_name(ids["lr 0.001"], "my slow baseline")
    return ids


def _no_overlap(page, chart, upper: str, lower: str) -> None:
    """`lower`'s box starts below `upper`'s in a chart (e.g. the legend under the axis title)."""
    a, b = chart.locator(upper).first.bounding_box(), chart.locator(lower).first.bounding_box()
    assert a and b and b["y"] >= a["y"] + a["height"] - 1, f"{lower} {b} overlaps {upper} {a}"


def test_runs_named_compare_legible_and_train_form_in_chromium(app_server: AppServer, browser_page, tl_env,
                                                                tmp_path: Path) -> None:
    ids = _made_runs(tl_env.runs, tmp_path)
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 2600})  # tall: every card and table in one picture
    with _dump_on_failure(page, app_server, tmp_path):
        page.goto(app_server.url)
        page.get_by_role("heading", name="Transfer learning on images").wait_for()
        _wait_idle(page)
        _open_page(page, "Train")
        body = page.locator('[data-testid="stMain"]')
        # The upload is named by its file name, never by its content hash; one label per run.
        expect(body).to_contain_text("efficientnet_lite0 + feature_extraction · cats vs dogs.zip")
        expect(body).to_contain_text("my slow baseline")
        assert not re.search(r"[0-9a-f]{64}", body.inner_text()), "a content hash is shown"
        _assert_clean(page, "Train")
        _screenshot(page, tmp_path / "issue9_train_runs.png")
        with _rerun(page):
            _widget(page, "hide_failed").get_by_text("Hide failed runs").click()
        expect(page.get_by_text("failed", exact=True)).to_have_count(0)
        # The learning rate follows the strategy; the Advanced settings that apply; an earlier upload.
        _select(page, "strategy", "partial")
        expect(_widget(page, "lr").locator("input")).to_have_value("0.0001")
        page.get_by_text("Advanced").click()
        expect(_widget(page, "unfreeze_groups")).to_be_visible()
        with _rerun(page):
            _widget(page, "data_source").get_by_text("upload a .zip").click()
        expect(_combobox(page, "earlier_zip")).to_have_value("cats vs dogs.zip")
        expect(_combobox(page, "image_size")).to_have_value("224 (auto)")
        _assert_clean(page, "Train form")
        _screenshot(page, tmp_path / "issue9_train_form.png")

        # Compare with the train curves: one legend entry per run, below the "epoch" title.
        _open_page(page, "Compare")
        with _rerun(page):
            _widget(page, "show_train").get_by_text("Show train curves too").click()
        acc = _charts(page, _widget(page, "acc_chart"))
        acc.wait_for()
        _no_overlap(page, acc, 'g.role-axis-title:has-text("epoch")', "g.role-legend")
        legend = acc.locator("g.role-legend-label text").all_text_contents()
        assert sum("cats vs dogs.zip" in t for t in legend) == 1, legend
        expect(acc.locator("g.role-title-subtitle")).to_contain_text("best epoch")
        # The summary's key figures fit at 1400 px: its header has them before any id or hash.
        summary = page.get_by_test_id("stDataFrame").first
        header = summary.locator('[role="columnheader"]')
        expect(header.nth(4)).to_have_text("final val acc", timeout=TIMEOUT_MS)  # the grid draws it late
        assert header.all_text_contents()[:5] == ["run", "status", "best val acc", "best epoch", "final val acc"]
        _assert_clean(page, "Compare")
        _screenshot(page, tmp_path / "issue9_compare.png")

        # Predict: the run's whole label under its picker, and Top k up to its 2 classes.
        _open_page(page, "Predict")
        with _rerun(page):
            _widget(page, "model_kind").get_by_text("a finished run").click()
        if "cats vs dogs.zip" not in _combobox(page, "run").input_value():  # the newest predictable run
            _combobox(page, "run").click()
            with _rerun(page):
                page.get_by_role("option").filter(has_text="cats vs dogs.zip").click()
        expect(_widget(page, "k").get_by_role("slider")).to_have_attribute("max", "2")
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="cats vs dogs.zip").first).to_be_visible()
        _assert_clean(page, "Predict")
        _screenshot(page, tmp_path / "issue9_predict.png")
    assert ids


# ---- issue 10: model insight -----------------------------------------------------------------------


def test_report_of_a_finished_run_and_grad_cam_on_predict(app_server: AppServer, browser_page, tl_env,
                                                          cat_jpeg: Path, tmp_path: Path) -> None:
    """The Report page of a run (matrix, tables, gallery, a cell picked), then Grad-CAM on Predict."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import write_class_folders

    from tlcore.training.config import TrainConfig
    from tlcore.training.jobs import get_manager

    manager = get_manager(tl_env.runs)
    photos = write_class_folders(tmp_path / "photos", per_class=6)
    run_id = manager.submit(TrainConfig(data=str(photos), epochs=2, image_size=64, val_fraction=0.5, device="cpu"))
    assert manager.wait(run_id, timeout=180) and manager.snapshot(run_id)["status"] == "finished"
    page = browser_page
    with _dump_on_failure(page, app_server, tmp_path):
        page.goto(app_server.url)
        page.get_by_role("heading", name="Transfer learning on images").wait_for()
        _wait_idle(page)
        _open_page(page, "Report")
        page.get_by_role("heading", name="Report").wait_for()
        matrix = _charts(page, _widget(page, "confusion"))
        matrix.wait_for()
        assert {"cat", "coffee", "rocket"} <= set(matrix.locator("g.role-axis-label text").all_text_contents())
        tables = page.get_by_test_id("stDataFrame")  # per class, most confused
        expect(tables).to_have_count(2)
        expect(tables.first.locator('[role="row"]')).to_have_count(4)  # header + 3 classes
        thumbnails = page.get_by_test_id("stImageContainer")  # the gallery: one element, a thumbnail each
        expect(thumbnails).to_have_count(9)  # every validation image, highest loss first
        _wait_idle(page)
        _assert_clean(page, "Report")
        _screenshot(page, tmp_path / "report.png")
        # A click on a cell of the matrix picks the gallery's cell (Vega-Lite's point selection).
        cell = matrix.locator('g.mark-rect path[aria-label^="predicted: cat; actual: cat;"]')
        with _rerun(page):
            cell.click()
        expect(page.get_by_role("heading", name="Highest loss: cat predicted as cat")).to_be_visible()
        expect(_combobox(page, "report_cell")).to_have_value(re.compile(r"^cat → cat \(3\)"))
        expect(thumbnails).to_have_count(3)
        _select(page, "report_cell", "all images")
        expect(thumbnails).to_have_count(9)
        _select(page, "report_cell", next(o for o in _cell_options(page) if o.startswith("cat → cat")))
        expect(page.get_by_role("heading", name="Highest loss: cat predicted as cat")).to_be_visible()
        expect(thumbnails).to_have_count(3)
        _assert_clean(page, "Report (one cell)")
        _screenshot(page, tmp_path / "report_cell.png")

        _open_page(page, "Predict")
        with _rerun(page):
            _widget(page, "model_kind").get_by_text("a finished run").click()
        with _rerun(page):
            _widget(page, "cam").get_by_text("Grad-CAM: where the model looked").click()
        _widget(page, "images").locator('input[type="file"]').set_input_files(cat_jpeg)
        overlays = page.get_by_test_id("stImage")
        overlays.filter(has_text="(ImageNet):").wait_for(timeout=TIMEOUT_MS)
        expect(overlays.filter(has_text="your run:")).to_have_count(1)
        expect(overlays.filter(has_text=re.compile("ImageNet\\): (tabby|tiger cat|Egyptian cat)"))).to_have_count(1)
        _wait_idle(page)
        page.wait_for_function("Array.from(document.querySelectorAll('[data-testid=stImage] img'))"
                               ".every(img => img.complete && img.naturalWidth > 100)")  # the overlays arrived
        _assert_clean(page, "Predict (Grad-CAM)")
        overlays.last.scroll_into_view_if_needed()
        _screenshot(page, tmp_path / "predict_cam.png")


def _cell_options(page) -> list[str]:
    """The gallery picker's options (opens and closes its list)."""
    _combobox(page, "report_cell").click()
    options = page.get_by_role("option").all_text_contents()
    page.keyboard.press("Escape")
    return options


def test_hundreds_of_runs_each_page_opens_and_compare_picks_a_few(app_server: AppServer, browser_page, tl_env,
                                                                  tmp_path: Path) -> None:
    """Issue 13: 300 runs in the folder; a direct first visit gets the app's own navigation, Compare
    opens on the 5 newest runs, and every page opens without an error."""
    import torch
    from fake_runs import fake_run

    from tlcore.runs import RunStore

    store = RunStore(tl_env.runs)
    ids = [fake_run(store, i, strategy=("scratch", "finetune", "partial")[i % 3]) for i in range(300)]
    for rid in ids[-20:]:  # the newest have weights, so Predict lists them
        store.write_classes(rid, [str(d) for d in range(10)])
        store.save_weights(rid, {"w": torch.zeros(1)})
    page = browser_page
    with _dump_on_failure(page, app_server, tmp_path):
        page.goto(f"{app_server.url}/Compare")  # the server's first request, straight to a page
        page.get_by_role("heading", name="Compare runs").wait_for()
        _wait_idle(page)
        nav = page.locator('[data-testid="stSidebarNav"]')
        expect(nav.get_by_role("link", name="Home")).to_be_visible()  # the app's navigation,
        expect(nav.get_by_role("link", name="app", exact=True)).to_have_count(0)  # not pages/'s
        expect(_widget(page, "runs").locator("[data-tag]")).to_have_count(5)  # the 5 newest, not 300
        _charts(page, _widget(page, "acc_chart")).wait_for()
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="300 runs")).to_contain_text("opened on")
        _assert_clean(page, "Compare (300 runs)")
        _screenshot(page, tmp_path / "compare-300.png")
        for title, heading in (("Train", "Train"), ("Predict", "Predict"), ("Report", "Report"),
                               ("Home", "Transfer learning on images")):
            _open_page(page, title)
            page.get_by_role("heading", name=heading).wait_for()
            _wait_idle(page)
            if title == "Predict":
                with _rerun(page):
                    _widget(page, "model_kind").get_by_text("a finished run").click()
                expect(page.get_by_test_id("stCaptionContainer").filter(has_text="20 runs")).to_be_visible()
            _assert_clean(page, f"{title} (300 runs)")
            _screenshot(page, tmp_path / f"{title.lower()}-300.png")
