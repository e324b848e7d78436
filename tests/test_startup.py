"""Start-up: `python -m tlcore runs` and `--help` import no torch, numpy or pandas; the names they use match the registries."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fake_runs import fake_run

from tlcore import names
from tlcore.data import sources as data
from tlcore.models import backbones, heads
from tlcore.runs import RunStore
from tlcore.training import strategies

HEAVY = ("torch", "torchvision", "numpy", "pandas", "altair", "plotly", "PIL", "sklearn", "safetensors")


def imported_modules(args: list[str], env: dict) -> set[str]:
    """Every module `python -m tlcore <args>` imports (from `-X importtime`, which lists each one)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tlcore", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.fixture
def env(tmp_path) -> dict:
    return {**os.environ, "TLCORE_RUNS": str(tmp_path / "runs"), "TLCORE_DATA": str(tmp_path / "data"),
            "TLCORE_CACHE": str(tmp_path / "cache")}


def test_runs_imports_nothing_heavy(env, tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    fake_run(store, 1)  # digits
    fake_run(store, 2, data=str(tmp_path / "photos" / "ants_bees"))  # a folder: its name via builder/uploads
    modules = imported_modules(["runs", "--data", "digits,ants_bees", "--backbone", "simple_cnn"], env)
    assert "tlcore.run_filters" in modules and "tlcore.data.builder" in modules  # the listing really ran
    assert heavy(modules) == []
    modules = imported_modules(["runs", "--json"], env)
    assert heavy(modules) == []


def test_help_imports_nothing_heavy(env) -> None:
    for args in (["--help"], ["train", "--help"], ["sweep", "--help"]):
        modules = imported_modules(args, env)
        assert "tlcore.cli" in modules
        assert heavy(modules) == [], args


def test_the_names_match_their_registries() -> None:
    assert names.BACKBONES == tuple(backbones.list_backbones())
    assert names.STRATEGIES == tuple(strategies.STRATEGIES)
    assert heads.HEAD_KINDS is names.HEAD_KINDS and data.BUILTIN is names.BUILTIN
