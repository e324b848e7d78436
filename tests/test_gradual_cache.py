"""`gradual`'s head epochs on the feature cache (issue 12): the run the full forward trains, without the backbone.

The head epochs train the head alone on cached backbone outputs (a frozen backbone in eval mode
computes the same ones every epoch); the unfreezing epochs run the whole model with the head's
trained weights. Lite0 with an MLP head: dropout in the head and between backbone and head.
"""

from __future__ import annotations

import pytest

from tlcore.models import backbones

GRADUAL = {"backbone": "efficientnet_lite0", "strategy": "gradual", "head": "mlp", "hidden": (32,), "lr": 1e-2,
           "val_fraction": 0.05}  # 50 training and 90 validation images


class BackboneCalls:
    """Counts forward calls of the stem (the first backbone group) of every model the run builds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls = 0
        real_build = backbones.build_model

        def build_and_count(*args, **kwargs):
            model = real_build(*args, **kwargs)
            stem = backbones.param_groups(model, args[0])[0].modules[0]
            stem.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))
            return model

        monkeypatch.setattr(backbones, "build_model", build_and_count)

    def run(self, run_training, **overrides) -> tuple[list[tuple[str, dict, int]], object]:
        """Train; each event comes with the stem's call count when it was emitted."""
        timeline = []
        result, _ = run_training(on_event=lambda kind, data: timeline.append((kind, data, self.calls)), **overrides)
        return timeline, result


def _at(timeline, kind: str, **match) -> int:
    """The stem's call count at the last event of `kind` whose data has `match`."""
    return [n for k, d, n in timeline if k == kind and all(d.get(f) == v for f, v in match.items())][-1]


def _rows(timeline) -> list[dict]:
    return [d for k, d, _ in timeline if k == "epoch"]


def _logs(timeline) -> str:
    return "\n".join(d["message"] for k, d, _ in timeline if k == "log")


def _progress(timeline) -> list[tuple]:
    """What the live curves and progress bars read: training and validation batches, epoch rows."""
    return [(d["phase"], d["epoch"], d["epochs"], d["batch"], d["batches"]) if k == "batch" else sorted(d)
            for k, d, _ in timeline if (k == "batch" and d["phase"] in ("train", "val")) or k == "epoch"]


def test_head_epochs_on_the_cache_match_the_full_forward(run_training, monkeypatch) -> None:
    spy = BackboneCalls(monkeypatch)
    cached, _ = spy.run(run_training, **GRADUAL, head_epochs=2, epochs=3)
    full, _ = spy.run(run_training, **GRADUAL, head_epochs=2, epochs=3, feature_cache=False)
    assert [d["path"] for k, d, _ in cached if k == "started"] == ["feature cache, then full forward"]
    assert [d["path"] for k, d, _ in full if k == "started"] == ["full forward"]
    for a, b in zip(_rows(cached)[:2], _rows(full)[:2], strict=True):
        # The backbone runs in batches of 16 in one path and of the training batch in the
        # other: the same arithmetic up to float rounding (as for feature_extraction).
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_acc"] == b["val_acc"]
    # The first full batch is computed before any full step: the same model on both paths, so the
    # head carried its trained weights over the switch. (Later batches are not compared: a 1e-7
    # change at the switch moves this tiny run's third-epoch validation loss by several percent.)
    first = [[d["loss"] for k, d, _ in t if k == "batch" and d["phase"] == "train" and d["epoch"] == 3][0]
             for t in (cached, full)]
    assert first[0] == pytest.approx(first[1], rel=1e-4)
    assert "epoch 3: the backbone trains from here" in _logs(cached)
    assert _progress(cached) == _progress(full)
    # The backbone ran for the features, then not once in the head epochs, then every batch again.
    extracted = _at(cached, "batch", phase="features (val)")
    assert extracted > 0 and _at(cached, "epoch", epoch=2) == extracted
    assert _at(cached, "epoch", epoch=3) > extracted
    assert _at(full, "epoch", epoch=1) > 0  # the counter counts


def test_head_epochs_read_the_cache_a_feature_extraction_run_wrote(run_training, monkeypatch) -> None:
    run_training(**GRADUAL | {"strategy": "feature_extraction"}, epochs=1)
    spy = BackboneCalls(monkeypatch)
    timeline, result = spy.run(run_training, **GRADUAL, head_epochs=1, epochs=2)
    assert "feature cache hit" in _logs(timeline) and "computing features" not in _logs(timeline)
    assert _at(timeline, "epoch", epoch=1) == 0  # no backbone at all before the unfreezing epoch
    assert _at(timeline, "epoch", epoch=2) > 0
    assert result.best_state.keys() == backbones.build_model("efficientnet_lite0", 10, pretrained=False,
                                                             head="mlp", hidden=(32,)).state_dict().keys()


def test_augmentation_keeps_the_head_epochs_on_the_full_forward(run_training, monkeypatch) -> None:
    spy = BackboneCalls(monkeypatch)
    timeline, _ = spy.run(run_training, **GRADUAL, head_epochs=1, epochs=1, augment="flip-crop")
    assert [d["path"] for k, d, _ in timeline if k == "started"] == ["full forward"]
    assert "augmentation is on: no feature cache" in _logs(timeline)
    assert "computing features" not in _logs(timeline) and _at(timeline, "epoch", epoch=1) > 0
