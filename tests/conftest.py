"""Shared fixtures: isolated folders, tiny real-image datasets, and a short training run.

Every test runs with TLCORE_CACHE, TLCORE_DATA, TLCORE_RUNS and TORCH_HOME pointing at fresh
temporary folders, so no test reads or writes the real caches and no cached torchvision
weights are seen. Images are crops of scikit-image's sample photos, made at test time.
"""

from __future__ import annotations

import os
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Two cores are shared with other people: OpenMP's spinning threads then run 10-100x slower
# than one thread. Tests measure behaviour, not speed, so one thread it is (subprocesses get
# OMP_NUM_THREADS=1 from the environment fixture below).
torch.set_num_threads(1)

# Class name -> scikit-image sample photo.
PHOTOS = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}
_ENV_NAMES = ("TLCORE_CACHE", "TLCORE_DATA", "TLCORE_RUNS", "TORCH_HOME")


@dataclass
class TlEnv:
    """The temporary folders a test runs with."""

    cache: Path
    data: Path
    runs: Path
    torch_home: Path

    @property
    def checkpoints(self) -> Path:
        """Where torchvision looks for cached weights."""
        return self.torch_home / "hub" / "checkpoints"


def _make_env(base: Path) -> TlEnv:
    env = TlEnv(base / "cache", base / "data", base / "runs", base / "torch_home")
    for p in (env.cache, env.data, env.runs, env.torch_home):
        p.mkdir(parents=True, exist_ok=True)
    return env


def _set_env(mp: pytest.MonkeyPatch, env: TlEnv) -> None:
    for name, value in zip(_ENV_NAMES, (env.cache, env.data, env.runs, env.torch_home), strict=True):
        mp.setenv(name, str(value))
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("TLCORE_OFFLINE", "1")  # no test downloads anything, in this process or a subprocess
    mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


# ---- order and leftovers ----------------------------------------------------------------------

_MADE_MANAGERS: list = []  # every JobManager made in this session, in order
WORKER_PREFIX = "tlcore-worker"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `after_suite` run last, whatever their file is called and however tests are ordered."""
    last = [item for item in items if item.get_closest_marker("after_suite")]
    items[:] = [item for item in items if item not in last] + last


def worker_threads() -> list[str]:
    """Names of the JobManager worker threads alive in this process."""
    return [t.name for t in threading.enumerate() if t.name.startswith(WORKER_PREFIX) and t.is_alive()]


@pytest.fixture(scope="session", autouse=True)
def _no_workers_left() -> Iterator[None]:
    """Record every JobManager made; at the end of the session, none of their threads may be left."""
    from tlcore.training import jobs

    real_init = jobs.JobManager.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        _MADE_MANAGERS.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs.JobManager, "__init__", recording_init)
        yield
    _close_managers(0)
    assert not worker_threads(), f"JobManager worker threads outlived the tests: {worker_threads()}"


def _close_managers(first: int) -> None:
    """Close the managers made since `_MADE_MANAGERS[first]`; fail if a worker does not end."""
    made = _MADE_MANAGERS[first:]
    del _MADE_MANAGERS[first:]
    stuck = [m.store.root for m in made if not m.close(timeout=60)]
    assert not stuck, f"JobManager workers did not end within 60 s for {stuck}"


@pytest.fixture(scope="module", autouse=True)
def _close_module_managers() -> Iterator[None]:
    """Managers made by module-scoped fixtures are closed when their module is done."""
    first = len(_MADE_MANAGERS)
    yield
    _close_managers(first)


@pytest.fixture(autouse=True)
def _close_test_managers() -> Iterator[None]:
    """Managers a test made are closed (their runs cancelled, their threads ended) after it."""
    first = len(_MADE_MANAGERS)
    yield
    _close_managers(first)


@pytest.fixture(scope="session", autouse=True)
def _scan_streamlit_components_once() -> Iterator[None]:
    """AppTest looks for Streamlit components in every installed package, again for each new AppTest.

    That scan reads all ~170 packages' metadata (0.45 s a time here) and its answer cannot change
    while the tests run, so the session scans once. The server scans once per process anyway.
    """
    import functools

    from streamlit.components.v2 import manifest_scanner

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(manifest_scanner, "scan_component_manifests",
                   functools.cache(manifest_scanner.scan_component_manifests))
        yield


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlEnv]:
    """Isolated folders for module- and session-scoped fixtures (tests get their own below)."""
    with pytest.MonkeyPatch.context() as mp:
        env = _make_env(tmp_path_factory.mktemp("tlcore-session"))
        _set_env(mp, env)
        yield env


@pytest.fixture(autouse=True)
def tl_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[TlEnv]:
    """Fresh, empty TLCORE_* folders and TORCH_HOME for each test."""
    env = _make_env(tmp_path_factory.mktemp("tlcore-env"))
    _set_env(monkeypatch, env)
    yield env
    # Warm predictors are process-wide; one built under this test's TORCH_HOME must not leak.
    predict = sys.modules.get("tlcore.predict")
    if predict is not None:
        with predict._CACHE_LOCK:
            predict._CACHE.clear()


# ---- tiny real-image datasets ---------------------------------------------------------------


def photo_patches(photo: str, n: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    """`n` random square crops (60-100% of the short side) of a scikit-image photo, resized."""
    pixels = getattr(skimage.data, photo)()
    rng = np.random.default_rng(seed)
    h, w = pixels.shape[:2]
    patches = []
    for _ in range(n):
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(pixels[top : top + side, left : left + side])
        patches.append(crop.resize((size, size), Image.Resampling.BICUBIC))
    return patches


def write_class_folders(
    root: Path,
    per_class: int = 6,
    classes: tuple[str, ...] = tuple(PHOTOS),
    size: int = 64,
    seed: int = 0,
    grayscale: bool = False,
) -> Path:
    """Write `root/<class>/<i>.png|jpg` (alternating formats) and return `root`."""
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(photo_patches(PHOTOS[name], per_class, size, seed + 100 * c)):
            if grayscale:
                img = img.convert("L")
            img.save(folder / f"{name}_{i}.{'png' if i % 2 == 0 else 'jpg'}")
    return root


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip `folder` with its own name as the single top-level entry."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return zip_path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """`photos/{cat,coffee,rocket}/` with 6 real-photo images each (PNG and JPEG)."""
    return write_class_folders(tmp_path / "photos")


@pytest.fixture
def image_zip(image_folder: Path, tmp_path: Path) -> Path:
    """`photos.zip` holding the `image_folder` dataset."""
    return zip_folder(image_folder, tmp_path / "photos.zip")


@pytest.fixture(scope="session")
def make_class_folders() -> Callable[..., Path]:
    """The `write_class_folders` helper, for tests that need their own layout."""
    return write_class_folders


@pytest.fixture(scope="session")
def make_zip() -> Callable[[Path, Path], Path]:
    """The `zip_folder` helper."""
    return zip_folder


@pytest.fixture(scope="session")
def png_bytes() -> Callable[[str], bytes]:
    """PNG bytes of a whole scikit-image photo, by its `skimage.data` name."""
    import io

    def make(photo: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, photo)()).save(buf, format="PNG")
        return buf.getvalue()

    return make


# ---- saved runs without training -------------------------------------------------------------


def write_finished_run(runs: Path, backbone: str = "simple_cnn", classes: tuple[str, ...] = ("ant", "bee"),
                       **config) -> str:
    """A finished run on disk with freshly initialised weights, made in well under a second.

    What JobManager leaves behind (config, classes, one epoch of metrics, a finished status,
    model.safetensors) for tests of what reads runs: prediction, listing, pages.
    """
    from tlcore.models import backbones
    from tlcore.runs import RunStore
    from tlcore.training.config import TrainConfig

    cfg = TrainConfig(**{"backbone": backbone, "strategy": "scratch", "image_size": 32, "device": "cpu", **config})
    store = RunStore(runs)
    run_id = store.new_run_id(cfg.backbone, cfg.strategy)
    store.create(run_id, cfg.to_dict())
    store.write_classes(run_id, list(classes))
    model = backbones.build_model(cfg.backbone, len(classes), pretrained=False, head=cfg.head, hidden=cfg.hidden)
    store.save_weights(run_id, model.state_dict())
    row = {"epoch": 1, "train_loss": 0.7, "train_acc": 0.5, "val_loss": 0.7, "val_acc": 0.5, "lr": cfg.lr, "seconds": 0.1}
    store.write_metrics(run_id, [row])
    status = store.load(run_id).status
    store.write_status(run_id, {**status, "status": "finished", "best_val_acc": 0.5, "best_epoch": 1,
                                "final_val_acc": 0.5, "epochs": 1, "seconds": 0.1, "class_names": list(classes)})
    return run_id


@pytest.fixture(scope="session")
def make_finished_run() -> Callable[..., str]:
    """The `write_finished_run(runs, backbone, classes, **config)` helper."""
    return write_finished_run


# ---- short training runs --------------------------------------------------------------------

TINY = {
    "backbone": "simple_cnn", "data": "digits", "strategy": "scratch", "epochs": 2, "batch_size": 16,
    "lr": 1e-2, "image_size": 32, "subset": 5, "device": "cpu", "seed": 0,
}


def tiny_config(**overrides):
    """A TrainConfig that trains in about a second: digits, 5 images per class, 32 px."""
    from tlcore.training.config import TrainConfig

    return TrainConfig(**{**TINY, **overrides})


@pytest.fixture(scope="session", name="tiny_config")
def tiny_config_fixture():
    """The `tiny_config(**overrides)` helper."""
    return tiny_config


@pytest.fixture
def run_training():
    """Train a tiny config; returns (TrainResult, [(kind, data), ...] events in order).

    Pass `events=[]` to keep the events of a run that raises, `stop=` a threading.Event, and
    `on_event(kind, data)` to act on events as they come (e.g. set the stop flag).
    """
    from tlcore.training.train import train

    def run(stop=None, on_event=None, events=None, **overrides):
        events = [] if events is None else events

        def emit(kind: str, data: dict) -> None:
            events.append((kind, data))
            if on_event is not None:
                on_event(kind, data)

        result = train(tiny_config(**overrides), emit, stop)
        return result, events

    return run
