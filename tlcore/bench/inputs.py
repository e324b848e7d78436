"""The benchmark's data and environment: the dataset or a stand-in, the allocator, the version."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import datasets, transforms

from tlcore import paths
from tlcore.bench.common import HYMENOPTERA
from tlcore.training import device as tl_device

# ---- data ---------------------------------------------------------------------------------


def find_hymenoptera() -> Path | None:
    """../shared/data/hymenoptera_data beside the repository or the working folder, if there."""
    for base in paths.shared_data_dirs():
        if (base / HYMENOPTERA / "train").is_dir():
            return base / HYMENOPTERA
    return None


def make_standin(root: Path, train_per_class: int, val_per_class: int, size: tuple[int, int],
                 seed: int = 0) -> Path:
    """Write a 2-class train/val folder of JPEGs a pretrained backbone can tell apart.

    Class `across` has stripes running left-right, `along` top-bottom, each image with its own
    colours, stripe width, slight tilt and noise, so the task is learnable but not trivial.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(("across", "along")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                tilt = rng.uniform(-0.25, 0.25)
                coord = (yy + tilt * xx) if c == 0 else (xx + tilt * yy)
                period = rng.uniform(0.03, 0.15) * min(w, h)
                wave = 0.5 + 0.5 * np.sin(2 * np.pi * coord / period + rng.uniform(0, 2 * np.pi))
                a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
                img = wave[..., None] * a + (1 - wave[..., None]) * b + rng.normal(0, 16, (h, w, 3))
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def folder_datasets(root: Path, resize: int, crop: int, mean, std) -> dict[str, datasets.ImageFolder]:
    """ImageFolder train/val with the tutorial's deterministic val transform for both splits."""
    tf = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    return {split: datasets.ImageFolder(str(root / split), tf) for split in ("train", "val")}


def pick_photo(root: Path, folder: Path) -> Path:
    """A 500x375 JPEG from the data, or a generated one written into `folder`."""
    for path in sorted(root.glob("*/*/*.jpg")):
        with Image.open(path) as img:
            if img.size == (500, 375):
                return path
    photo = folder / "photo.jpg"
    make_standin(folder / "photo", 1, 0, (500, 375))
    (folder / "photo" / "train" / "across" / "000.jpg").rename(photo)
    return photo


def set_allocator(mode: str) -> str:
    """Put the process's memory allocator in `mode` before any row runs; a line for the report.

    tlcore's `train` and `Predictor` raise glibc's mmap threshold (`tune_allocator`) so that
    activations are reused instead of page-faulted fresh each layer. That is a process-wide
    setting that cannot be undone, so it is either on for every row ("tuned") or off until
    tlcore's first run, with the baseline rows run before it ("default").
    """
    tune = getattr(tl_device, "tune_allocator", None)
    if tune is None:
        return "glibc defaults for every row (this tlcore does not tune the allocator)"
    if mode == "tuned":
        tune()
        return ("tuned for every row, baseline included (`tlcore.training.device.tune_allocator`: glibc mmap and "
                "trim thresholds raised, as tlcore's train and predict do), so rows compare loops, not allocators")
    return ("glibc defaults for the baseline rows and the floor, which run first; tlcore's train and predict "
            "tune it (`tlcore.training.device.tune_allocator`)")


def engine_version() -> str:
    """The commit of the code under test, and which engine files differ from it."""
    repo = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True, timeout=10,
                              check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no", "--", "tlcore").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


