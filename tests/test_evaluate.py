"""`evaluate` on logits whose answers are known: loss, top-1 and top-5 exactly, batch by batch."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from tlcore.models.backbones import get_backbone
from tlcore.training.train import _Run, evaluate


def _run(tiny_config, batch_size: int, events: list) -> _Run:
    return _Run(cfg=tiny_config(batch_size=batch_size), spec=get_backbone("simple_cnn"), device=torch.device("cpu"),
                emit=lambda kind, data: events.append((kind, data)), stop=threading.Event(),
                generator=torch.Generator().manual_seed(0))


def _logits_ranking(rankings: list[list[int]], classes: int) -> torch.Tensor:
    """One row per sample whose classes, best first, are `ranking` (the rest below them)."""
    rows = torch.zeros(len(rankings), classes)
    for i, ranking in enumerate(rankings):
        for place, c in enumerate(ranking):
            rows[i, c] = 10.0 - place
    return rows


def _evaluate(tiny_config, logits: torch.Tensor, labels: torch.Tensor, batch_size: int = 3):
    events: list = []

    def forward(x, train_mode):
        assert train_mode is False
        return logits[x]  # the "inputs" are sample indices

    out = evaluate(_run(tiny_config, batch_size, events), forward, torch.arange(len(labels)), labels, epoch=0)
    return out, events


def test_top1_and_top5_on_known_logits(tiny_config) -> None:
    # 7 classes. Where the true class (label) sits in each sample's ranking:
    #   1st (top-1 and top-5): samples 0, 1;   2nd-5th (top-5 only): samples 2, 3, 4, 5;
    #   6th or 7th (neither): samples 6, 7, 8.
    order = [0, 1, 2, 3, 4, 5, 6]
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 5])
    logits = _logits_ranking([order] * 9, 7)
    out, events = _evaluate(tiny_config, logits, labels, batch_size=4)  # batches of 4, 4, 1
    assert out["val_acc"] == pytest.approx(2 / 9)
    assert out["val_top5"] == pytest.approx(6 / 9)
    assert out["val_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    batches = [data for kind, data in events if kind == "batch"]
    assert [(b["phase"], b["batch"], b["batches"]) for b in batches] == [("val", 1, 3), ("val", 2, 3), ("val", 3, 3)]


def test_top5_is_exact_when_every_answer_is_outside_it(tiny_config) -> None:
    labels = torch.tensor([5, 6, 6])
    out, _ = _evaluate(tiny_config, _logits_ranking([[0, 1, 2, 3, 4, 5, 6]] * 3, 7), labels)
    assert out["val_acc"] == 0 and out["val_top5"] == 0


@pytest.mark.parametrize(("classes", "has_top5"), [(2, False), (5, False), (6, True), (10, True)])
def test_no_top5_with_five_classes_or_fewer(tiny_config, classes: int, has_top5: bool) -> None:
    labels = torch.tensor([0, classes - 1, 1])
    out, _ = _evaluate(tiny_config, _logits_ranking([list(range(classes))] * 3, classes), labels)
    assert ("val_top5" in out) is has_top5
    assert out["val_acc"] == pytest.approx(1 / 3)
    if has_top5:  # class classes-1 is last in the ranking: outside the top 5 once there are 6+
        assert out["val_top5"] == pytest.approx(2 / 3)
