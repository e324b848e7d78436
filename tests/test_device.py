"""Device and CPU settings."""

from __future__ import annotations

import pytest
import torch

from tlcore.training.device import configure_threads, pick_device


def test_tlcore_threads_sets_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("TLCORE_THREADS", "2")
        configure_threads()
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("TLCORE_THREADS", "1")
        configure_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bad_tlcore_threads_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_THREADS", "many")
    with pytest.raises(ValueError, match="TLCORE_THREADS must be a whole number"):
        configure_threads()


def test_cpu_is_always_there_and_a_missing_cuda_says_so() -> None:
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda is not available"):
            pick_device("cuda")
