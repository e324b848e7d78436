"""`python -m tlcore.bench.runs_scale`: the app and the run list with thousands of runs in the folder.

It trains one real tiny run (simple_cnn on digits, 32 px, 5 images per class, 1 epoch) with the
CLI, copies it into N run folders (2,000 by default; weights and per-image results hard-linked)
in a temporary runs folder, marks the newest copy `running` (owned by this process, so every
reader sees it alive) and measures:

- `RunStore.list()`: the first call in this process and the median of the next calls;
- the Train page's poll (what its fragment reads every second while a run trains), at N and at
  N / 10 runs: a poll whose cost does not grow with the finished runs costs the same at both;
- each page's first render in Chromium (`streamlit run app.py` on the temporary folder, a new
  browser session per page after one warm-up visit of Home): from the request until the script
  ended and every chart is drawn. Round 1 is the server's first visit of each page (its modules
  imported then: torch, altair..., unless app.py's background warm-up, started by the warm-up
  visit, got there first); round 2 the same pages again in new sessions. Each of these visits is
  a new browser context with nothing cached; a last round ("returning") opens each page in a new
  tab of one browser that visited them all once before, with its caches, as a returning user.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tlcore.run_index import RACY_NS
from tlcore.runs import RunStore, owner, read_json, write_json
from tlcore.views import ui

REPO = Path(__file__).resolve().parents[2]
# (name, URL path, heading, the page's last element: its script has run to the end once it shows, or None:
# wait until Streamlit says no script is running. Train polls every second while a run trains, so
# it is never idle for long.)
PAGES = (("Home", "", "Transfer learning on images", None), ("Train", "Train", "Train", "Compare all runs"),
         ("Compare", "Compare", "Compare runs", None), ("Predict", "Predict", "Predict", None),
         ("Report", "Report", "Report", None))
LINKED = ("model.safetensors", "val_results.json")  # large and never rewritten: hard links keep the copies cheap


def train_template(folder: Path) -> Path:
    """One real finished run, trained by the CLI; returns its folder."""
    env = {**os.environ, "TLCORE_THREADS": "1", "TLCORE_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "tlcore", "train", "--backbone", "simple_cnn", "--strategy", "scratch",
                    "--data", "digits", "--image-size", "32", "--subset", "5", "--epochs", "1",
                    "--runs-dir", str(folder)], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return next(p for p in folder.iterdir() if (p / "model.safetensors").is_file())


def populate(root: Path, template: Path, count: int, running: int = 1) -> list[str]:
    """`count` copies of `template` in `root`, one minute apart (newest last); the newest `running` read as running."""
    root.mkdir(parents=True, exist_ok=True)
    status = read_json(template / "status.json")
    start = time.time() - count * 60
    ids = []
    for i in range(count):
        created = start + i * 60
        run_id = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(created))}-simple_cnn-scratch-{i:06x}"
        folder = root / run_id
        folder.mkdir()
        for f in template.iterdir():
            if f.name in LINKED:
                os.link(f, folder / f.name)
            elif f.name != "status.json":
                shutil.copy2(f, folder / f.name)
        copy = {**status, "created": created, "started": created + 1, "ended": created + 11}
        if i >= count - running:
            copy = {**copy, **owner(), "status": "running", "ended": None}
        write_json(folder / "status.json", copy)
        ids.append(run_id)
    return ids


def timed(fn, repeat: int) -> tuple[float, float]:
    """(first call's seconds, median seconds of the next `repeat` calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times) if times else first


def train_poll(store: RunStore) -> None:
    """What the Train page's runs panel reads on each poll (pages/1_Train.py, `runs_panel`): the
    active runs only (before issue 13 it listed and labelled every run: `store.list()`,
    `ui.run_labels(records)`, `ui.runs_to_show(records, [])`)."""
    ui.runs_to_show(store.active(), [], show_all=True)


def measure_library(root: Path, repeat: int) -> dict:
    """RunStore.list() and the Train page's poll on the runs in `root`, in this process."""
    first, warm = timed(lambda: RunStore(root).list(), repeat)
    # The poll rescans the folder while its mtime is under 2 s old (a run added in the same clock
    # tick would not move it; see run_index.RACY_NS): measure it as it is between run starts.
    time.sleep(RACY_NS / 1e9 + 0.1)
    poll_first, poll = timed(lambda: train_poll(RunStore(root)), repeat)
    return {"runs": len(RunStore(root).list()), "list_first": first, "list": warm, "poll": poll}


def measure_pages(root: Path, cache: Path, chromium: str, port: int = 8771,
                  limit: float = 120, rounds: int = 2) -> dict[str, float | None]:
    """Seconds from request to a finished script with every chart drawn, per page, in Chromium
    (None: not done within `limit` seconds). Rounds 1..`rounds`: each visit in a new browser
    context (nothing cached: Streamlit's scripts and the chart bundle (Vega-Lite) downloaded and
    compiled each time); then "returning": new tabs of one browser that visited every page once
    before (its HTTP and compiled-code caches kept), as a user who comes back sees them."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "TLCORE_RUNS": str(root), "TLCORE_CACHE": str(cache), "TLCORE_THREADS": "1",
           "TLCORE_OFFLINE": "1"}
    log = open(cache / "streamlit.log", "wb")  # noqa: SIM115 - closed below, after the server
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true", "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, seconds = f"http://127.0.0.1:{port}", {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
            returning = browser.new_context(viewport={"width": 1400, "height": 1200})
            again = max(1, rounds - 1)  # the returning browser's rounds
            visits = ([("warm-up", *PAGES[0][1:], None)]
                      + [(f"{name} ({r + 1})", *rest, None) for r in range(rounds) for name, *rest in PAGES]
                      + [(None, *rest, returning) for _, *rest in PAGES]  # the returning browser's first visits
                      + [(f"{name} (returning{f' {r + 1}' if again > 1 else ''})", *rest, returning)
                         for r in range(again) for name, *rest in PAGES])
            for i, (name, path, heading, last, context) in enumerate(visits):
                page = context.new_page() if context else browser.new_page(viewport={"width": 1400, "height": 1200})
                page.set_default_timeout(limit * 1000)
                if i == 0:
                    _wait_for_server(page, url)
                t0 = time.perf_counter()
                try:
                    page.goto(f"{url}/{path}")
                    page.get_by_role("heading", name=heading).first.wait_for()
                    if last:
                        page.get_by_text(last).first.wait_for()
                    else:
                        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()
                        page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
                    # A chart's element is there when the script ends, its drawing (Vega-Lite's
                    # svg.marks; plotly's .main-svg before issue 13 moved the charts) only once the
                    # lazily loaded chart bundle has run: wait for every one. (Until 2026-11-27 this
                    # looked for data-testid="stPlotlyChart", which appears only with the drawing,
                    # so it often passed before any chart was drawn.)
                    page.wait_for_function("""() => [...document.querySelectorAll('.stPrintGraphic')]
                                                 .every(c => c.querySelector('svg.marks, .main-svg, img, canvas'))""")
                    took = time.perf_counter() - t0
                except PlaywrightTimeout:
                    took = None
                if i and name:
                    seconds[name] = took
                    print(f"  {name}: {_seconds(took, limit)}", flush=True)
                    page.screenshot(path=str(cache / f"{name.lower().replace(' ', '').replace('(', '-').strip(')')}.png"),
                                    full_page=True)
                page.close()
            browser.close()
    finally:
        os.killpg(server.pid, 15)
        server.wait(20)
        log.close()
    return seconds


def summary(seconds: dict[str, float | None]) -> dict[str, tuple[float | None, ...]]:
    """Per page: (the server's first visit, the median of the other new-browser visits, the
    median of the returning browser's), None where a visit timed out or none was made."""
    def median(pattern: str, first: str) -> float | None:
        found = [t for key, t in seconds.items() if re.fullmatch(pattern, key) and key != first]
        return None if not found or None in found else statistics.median(found)

    return {name: (seconds.get(f"{name} (1)"), median(rf"{name} \(\d+\)", f"{name} (1)"),
                   median(rf"{name} \(returning( \d+)?\)", "")) for name, *_ in PAGES}


def _seconds(took: float | None, limit: float) -> str:
    return f"> {limit:.0f} s" if took is None else f"{took:.1f} s"


def _wait_for_server(page, url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            page.goto(f"{url}/_stcore/health")
            return
        except Exception:  # noqa: BLE001 - not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tlcore.bench.runs_scale", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2000, help="run folders to make (default 2000)")
    p.add_argument("--repeat", type=int, default=5, help="timed calls after the first (median)")
    p.add_argument("--template", type=Path, default=None, help="a finished run folder to copy (default: train one)")
    p.add_argument("--no-browser", action="store_true", help="skip the page timings in Chromium")
    p.add_argument("--keep", type=Path, default=None, help="make the runs folder here and keep it (default: temporary)")
    p.add_argument("--page-limit", type=float, default=120, help="seconds to wait for one page (default 120)")
    p.add_argument("--no-library", action="store_true", help="skip RunStore.list and the poll (pages only)")
    p.add_argument("--rounds", type=int, default=2,
                   help="visits of each page in a new browser (the first: the server's first visit); the "
                        "returning browser visits each page one time less (default 2; more for medians)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tlcore-runs-scale-") as tmp:
        work = Path(tmp)
        template = args.template or train_template(work / "template")
        small, big = work / "small", args.keep or work / "runs"
        populate(small, template, max(1, args.runs // 10))
        populate(big, template, args.runs)
        print("| runs | RunStore.list() first | RunStore.list() next (median) | Train poll (median) |", flush=True)
        print("|---:|---:|---:|---:|", flush=True)
        for folder in () if args.no_library else (small, big):
            r = measure_library(folder, args.repeat)
            print(f"| {r['runs']} | {r['list_first'] * 1000:.0f} ms | {r['list'] * 1000:.0f} ms "
                  f"| {r['poll'] * 1000:.1f} ms |", flush=True)
        chromium = os.environ.get("TLCORE_CHROMIUM") or shutil.which("chromium")
        if not args.no_browser and chromium:
            (work / "cache").mkdir()
            print(f"\nfirst render in Chromium, {args.runs} runs:", flush=True)
            pages = measure_pages(big, work / "cache", chromium, limit=args.page_limit, rounds=args.rounds)
            print("\n| page | server's first visit | new browser (median) | returning browser (median) |")
            print("|---|---:|---:|---:|")
            for name, times in summary(pages).items():
                print(f"| {name} | " + " | ".join("-" if t is None else f"{t:.2f} s" for t in times) + " |")
            if args.keep:
                for png in (work / "cache").glob("*.png"):
                    shutil.copy(png, args.keep.parent / png.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
