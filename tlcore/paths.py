"""Default folders: runs, downloaded data and caches, each overridable by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Root of tlcore's caches (`$TLCORE_CACHE`, default ~/.cache/tlcore)."""
    return Path(os.environ.get("TLCORE_CACHE") or Path.home() / ".cache" / "tlcore")


def data_root() -> Path:
    """Where datasets are downloaded and zips extracted (`$TLCORE_DATA`, default <cache>/data)."""
    return Path(os.environ.get("TLCORE_DATA") or cache_root() / "data")


def runs_root() -> Path:
    """Where runs are saved (`$TLCORE_RUNS`, default ./runs)."""
    return Path(os.environ.get("TLCORE_RUNS") or "runs")


def shared_data_dirs() -> list[Path]:
    """Development copies of datasets: ../shared/data beside the checkout or the working folder."""
    repo = Path(__file__).resolve().parent.parent
    return [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
