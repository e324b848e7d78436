"""The trainer on tiny real data: events, metrics, strategies, the feature cache, errors, cancel."""

from __future__ import annotations

import math
import re
import threading
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tlcore.data.batches import BatchMaker
from tlcore.data.sources import resolve_data
from tlcore.models import backbones
from tlcore.training import train as tltrain
from tlcore.training.train import Cancelled, TrainingError

METRIC_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
LITE0_HEAD = 1280 * 10 + 10  # Lite0's linear head for the 10 digit classes


def _kinds(events, skip=("log",)) -> list[str]:
    return [k for k, _ in events if k not in skip]


def _rows(events) -> list[dict]:
    return [d for k, d in events if k == "epoch"]


def _logs(events) -> str:
    return "\n".join(d["message"] for k, d in events if k == "log")


def _started(events) -> dict:
    return next(d for k, d in events if k == "started")


def _without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _val_accuracy(cfg, state: dict) -> float:
    """Accuracy of a fresh model loaded with `state` on the run's validation split."""
    spec = backbones.get_backbone(cfg.backbone)
    source = resolve_data(cfg.data, val_fraction=cfg.val_fraction, subset=cfg.subset, seed=cfg.seed)
    model = backbones.build_model(cfg.backbone, len(source.class_names), pretrained=False,
                                  head=cfg.head, hidden=cfg.hidden)
    model.load_state_dict(state)
    resize, crop = spec.preprocessing(cfg.image_size)
    val = source.decode(resize).val
    make_batch = BatchMaker(crop, spec.mean, spec.std, torch.device("cpu"))
    with torch.inference_mode():
        logits = model.eval()(make_batch(val.images))
    return (logits.argmax(1) == val.labels).float().mean().item()


# ---- events and metrics -------------------------------------------------------------------


def test_events_come_in_order_with_named_metrics(run_training) -> None:
    result, events = run_training(epochs=2)
    kinds = _kinds(events)
    assert kinds[0] == "started" and kinds[-1] == "epoch" and kinds.count("epoch") == 2
    assert set(kinds) == {"started", "batch", "epoch"}

    started = _started(events)
    assert started["class_names"] == [str(i) for i in range(10)]
    # 5 training images per class; validation keeps all of digits' 20% (359 images).
    assert (started["num_train"], started["num_val"]) == (50, 359)
    assert started["device"] == "cpu" and started["path"] == "full forward"
    assert started["trainable_params"] == started["total_params"] > 0

    # Each epoch: its train batches 1..n, then its validation batches, then the epoch row.
    for epoch in (1, 2):
        i_end = [i for i, (k, d) in enumerate(events) if k == "epoch" and d["epoch"] == epoch][0]
        batches = [d for k, d in events[:i_end] if k == "batch" and d["epoch"] == epoch]
        phases = [d["phase"] for d in batches]
        assert phases == sorted(phases, key=["train", "val"].index) and set(phases) == {"train", "val"}
        train_batches = [d for d in batches if d["phase"] == "train"]
        assert [d["batch"] for d in train_batches] == list(range(1, 5))  # 50 images, batch 16
        assert all(math.isfinite(d["loss"]) for d in train_batches)

    rows = _rows(events)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert METRIC_KEYS <= set(r)
        assert all(math.isfinite(r[k]) for k in METRIC_KEYS)
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1 and r["lr"] == 1e-2
    s = result.summary
    assert s["epochs"] == 2 and s["final_val_acc"] == rows[-1]["val_acc"]
    assert s["best_val_acc"] == max(r["val_acc"] for r in rows)
    assert rows[s["best_epoch"] - 1]["val_acc"] == s["best_val_acc"]
    assert s["trainable_params"] == started["trainable_params"] and s["seconds"] > 0


def test_top5_accuracy_with_more_than_five_classes(run_training) -> None:
    _, events = run_training(epochs=1)
    row = _rows(events)[0]
    assert "val_top5" in row and row["val_acc"] <= row["val_top5"] <= 1


def test_same_seed_same_metrics(run_training) -> None:
    _, first = run_training(epochs=2, seed=3)
    _, again = run_training(epochs=2, seed=3)
    _, other = run_training(epochs=2, seed=4)
    assert _without_seconds(_rows(first)) == _without_seconds(_rows(again))
    assert _without_seconds(_rows(first)) != _without_seconds(_rows(other))


# ---- strategies ---------------------------------------------------------------------------


def _lite0_params_of(prefixes) -> int:
    model = backbones.build_model("efficientnet_lite0", 10, pretrained=False)
    return sum(p.numel() for prefix in prefixes for p in model.get_submodule(prefix).parameters())


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        ("feature_extraction", {}),
        ("finetune", {}),
        ("partial", {"unfreeze_groups": 2}),
        ("discriminative", {"lr_factor": 0.3}),
        ("gradual", {"head_epochs": 1}),
        ("scratch", {}),
        ("feature_extraction", {"head": "mlp", "hidden": (32,)}),
    ],
    ids=["feature_extraction", "finetune", "partial", "discriminative", "gradual", "scratch", "mlp_head"],
)
def test_each_strategy_trains_lite0(run_training, strategy: str, extra: dict) -> None:
    result, events = run_training(backbone="efficientnet_lite0", strategy=strategy, epochs=2, **extra)
    started, rows = _started(events), _rows(events)
    assert len(rows) == 2 and all(math.isfinite(r["train_loss"]) for r in rows)
    assert result.best_state is not None

    total = started["total_params"]
    spec = backbones.get_backbone("efficientnet_lite0")
    expected_trainable = {
        "feature_extraction": LITE0_HEAD,
        "partial": _lite0_params_of([p for g in spec.groups[-2:] for p in g]) + LITE0_HEAD,
        "gradual": LITE0_HEAD,  # head only at the start; everything from epoch 2
        "mlp_head": 1280 * 32 + 32 + 32 * 10 + 10,
    }
    key = "mlp_head" if extra.get("head") == "mlp" else strategy
    assert started["trainable_params"] == expected_trainable.get(key, total)
    paths = {"feature_extraction": "feature cache", "gradual": "feature cache, then full forward"}
    assert started["path"] == paths.get(strategy, "full forward")
    if strategy == "gradual":
        assert "epoch 2: unfroze all" in _logs(events)


def test_scratch_does_not_start_from_pretrained_weights(run_training, monkeypatch) -> None:
    calls = []
    real = backbones.build_model

    def spy(*args, **kwargs):
        calls.append(kwargs.get("pretrained", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(backbones, "build_model", spy)
    run_training(backbone="efficientnet_lite0", strategy="scratch", epochs=1)
    run_training(backbone="efficientnet_lite0", strategy="finetune", epochs=1)
    assert calls == [False, True]


def test_transfer_beats_chance_on_tiny_real_photos(run_training, image_folder) -> None:
    """Lite0's ImageNet features separate cat, coffee and rocket from 3 photos each."""
    result, _ = run_training(backbone="efficientnet_lite0", strategy="feature_extraction", data=str(image_folder),
                             image_size=64, val_fraction=0.5, epochs=3)
    assert result.summary["best_val_acc"] >= 0.8


# ---- the feature cache --------------------------------------------------------------------


def test_second_feature_extraction_run_hits_the_cache(run_training, tl_env) -> None:
    cfg = {"backbone": "efficientnet_lite0", "strategy": "feature_extraction", "epochs": 2}
    _, first = run_training(**cfg)
    assert "computing features once" in _logs(first)
    assert any(k == "batch" and d["phase"].startswith("features") for k, d in first)
    assert list((tl_env.cache / "features").glob("*.safetensors"))

    _, second = run_training(**cfg)
    assert "feature cache hit" in _logs(second)
    assert not any(k == "batch" and d["phase"].startswith("features") for k, d in second)
    assert _without_seconds(_rows(first)) == _without_seconds(_rows(second))


def test_damaged_feature_cache_is_recomputed(run_training, tl_env) -> None:
    cfg = {"backbone": "efficientnet_lite0", "strategy": "feature_extraction", "epochs": 1}
    _, first = run_training(**cfg)
    [cached] = (tl_env.cache / "features").glob("*.safetensors")
    cached.write_bytes(cached.read_bytes()[:100])  # a truncated file, as after a crash or full disk
    _, second = run_training(**cfg)
    assert "computing features once" in _logs(second)
    assert _without_seconds(_rows(first)) == _without_seconds(_rows(second))


def test_feature_cache_key_follows_the_data(run_training) -> None:
    run_training(backbone="efficientnet_lite0", strategy="feature_extraction", epochs=1)
    _, other = run_training(backbone="efficientnet_lite0", strategy="feature_extraction", epochs=1, seed=1)
    assert "feature cache hit" not in _logs(other)


def test_augmentation_turns_the_feature_cache_off(run_training) -> None:
    _, events = run_training(backbone="efficientnet_lite0", strategy="feature_extraction", augment="flip-crop",
                             epochs=1)
    assert "augmentation is on: no feature cache" in _logs(events)
    assert _started(events)["path"] == "full forward"
    assert "feature cache hit" not in _logs(events) and "computing features" not in _logs(events)


# ---- best weights, schedules, optimizers --------------------------------------------------


@pytest.mark.parametrize(("strategy", "feature_cache", "path"), [
    ("feature_extraction", True, "feature cache"),
    ("feature_extraction", False, "full forward"),
    # The best epoch is a head epoch on the cache; the weights kept are the whole model's.
    ("gradual", True, "feature cache, then full forward"),
], ids=["feature_cache", "full_forward", "gradual_cached_head_epochs"])
def test_best_epoch_weights_are_kept(run_training, tiny_config, monkeypatch, strategy: str, feature_cache: bool,
                                     path: str) -> None:
    built, optimizers = [], []
    real_build, real_optimizer = backbones.build_model, tltrain._optimizer
    monkeypatch.setattr(backbones, "build_model", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    monkeypatch.setattr(tltrain, "_optimizer", lambda *a: optimizers.append(real_optimizer(*a)) or optimizers[-1])

    def spoil_after_epoch_1(kind: str, data: dict) -> None:
        # Make every later epoch worse for sure: no more learning, and a head that says "0".
        if kind == "epoch" and data["epoch"] == 1:
            for group in optimizers[0].param_groups:
                group["lr"] = 0.0
            with torch.no_grad():
                for p in built[0].get_submodule("_fc").parameters():
                    p.zero_()

    overrides = {"backbone": "efficientnet_lite0", "strategy": strategy, "feature_cache": feature_cache,
                 "subset": 10, "val_fraction": 0.5, "lr": 0.05, "epochs": 3, "head_epochs": 2}
    result, events = run_training(on_event=spoil_after_epoch_1, **overrides)
    rows = _rows(events)
    assert _started(events)["path"] == path
    # The head says "0" for everything: accuracy is class 0's share of the (whole) validation split.
    assert [r["val_acc"] for r in rows[1:]] == pytest.approx([0.1, 0.1], abs=0.01)
    assert rows[0]["val_acc"] > 0.1
    assert (result.summary["best_epoch"], result.summary["best_val_acc"]) == (1, rows[0]["val_acc"])
    assert _val_accuracy(tiny_config(**overrides), result.best_state) == pytest.approx(rows[0]["val_acc"])


@pytest.mark.parametrize(("schedule", "lrs"), [("none", [1e-2, 1e-2]), ("step", [1e-2, 1e-3]),
                                               ("cosine", [1e-2, 5e-3])])
def test_schedules_change_the_learning_rate(run_training, schedule: str, lrs: list[float]) -> None:
    _, events = run_training(schedule=schedule, epochs=2)
    assert [r["lr"] for r in _rows(events)] == pytest.approx(lrs)


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.05), ("adam", 0.01)])
def test_sgd_and_adam_lower_the_training_loss(run_training, optimizer: str, lr: float) -> None:
    _, events = run_training(backbone="efficientnet_lite0", strategy="feature_extraction", optimizer=optimizer,
                             lr=lr, epochs=3)
    losses = [r["train_loss"] for r in _rows(events)]
    assert losses[-1] < losses[0], losses


# ---- errors -------------------------------------------------------------------------------


def test_nan_loss_stops_the_run_with_where_and_what_to_do(run_training, monkeypatch) -> None:
    def nan_loss(logits, y, **kwargs):
        return F.cross_entropy(logits, y, **kwargs) * float("nan")

    monkeypatch.setattr(tltrain, "F", SimpleNamespace(cross_entropy=nan_loss))
    with pytest.raises(TrainingError) as exc:
        run_training(epochs=2)
    assert "loss became NaN at epoch 1, batch 1" in str(exc.value)
    assert "lower the learning rate" in str(exc.value)


def test_huge_learning_rate_diverges_into_a_nan_error(run_training) -> None:
    events = []
    with pytest.raises(TrainingError) as exc:
        run_training(backbone="efficientnet_lite0", strategy="finetune", optimizer="sgd", lr=10, epochs=3,
                     events=events)
    # The divergence guard usually trips on the runaway loss before it turns NaN (inf - inf).
    assert re.search(r"(loss became (NaN|infinite)|the loss diverged) at epoch \d+, batch \d+", str(exc.value))
    assert "lower the learning rate (it was 10)" in str(exc.value)


def test_batch_that_cannot_fit_is_refused_before_anything_runs(run_training) -> None:
    events = []
    t0 = time.perf_counter()
    with pytest.raises(TrainingError, match="smaller batch size"):
        run_training(batch_size=4096, image_size=1024, events=events)
    assert time.perf_counter() - t0 < 5
    assert "started" not in _kinds(events)


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("optimizer", "rmsprop"), ("image_size", 16),
                                              ("backbone", "resnet7"), ("lr", -1.0)])
def test_invalid_config_is_refused(run_training, field: str, value) -> None:
    with pytest.raises(ValueError, match=field.replace("_", "[_ ]")):
        run_training(**{field: value})


# ---- cancel -------------------------------------------------------------------------------


def _cancel_when(predicate):
    """(stop event, on_event that sets it at the first event matching predicate, counter)."""
    stop = threading.Event()
    after = {"batches": 0, "epochs": 0}

    def on_event(kind: str, data: dict) -> None:
        if stop.is_set():
            if kind == "batch":
                after["batches"] += 1
            if kind == "epoch":
                after["epochs"] += 1
        elif predicate(kind, data):
            stop.set()

    return stop, on_event, after


def test_cancel_before_start(run_training) -> None:
    stop = threading.Event()
    stop.set()
    events = []
    with pytest.raises(Cancelled) as exc:
        run_training(stop=stop, events=events, epochs=3)
    assert sum(k == "batch" for k, _ in events) <= 1 and "epoch" not in _kinds(events)
    assert exc.value.result.summary["epochs"] == 0 and exc.value.result.best_state is None


def test_cancel_mid_epoch_from_the_emit_callback(run_training) -> None:
    stop, on_event, after = _cancel_when(
        lambda k, d: k == "batch" and d["phase"] == "train" and d["epoch"] == 2 and d["batch"] == 2)
    with pytest.raises(Cancelled) as exc:
        run_training(stop=stop, on_event=on_event, epochs=5)
    assert after["batches"] <= 1 and after["epochs"] == 0
    result = exc.value.result
    assert result.summary["epochs"] == 1 and result.best_state is not None


def test_cancel_during_validation(run_training) -> None:
    # 70 validation images: several validation batches, so the stop lands mid-validation.
    stop, on_event, after = _cancel_when(lambda k, d: k == "batch" and d["phase"] == "val")
    events = []
    with pytest.raises(Cancelled):
        run_training(stop=stop, on_event=on_event, events=events, subset=7, val_fraction=0.5, epochs=2)
    assert [d["batches"] for k, d in events if k == "batch" and d["phase"] == "val"][0] >= 2
    assert after["batches"] <= 1 and after["epochs"] == 0, "validation ran on after the stop"


def test_cancel_during_feature_extraction(run_training) -> None:
    stop, on_event, after = _cancel_when(lambda k, d: k == "batch" and d["phase"].startswith("features"))
    with pytest.raises(Cancelled) as exc:
        run_training(stop=stop, on_event=on_event, backbone="efficientnet_lite0", strategy="feature_extraction")
    assert after["batches"] <= 1 and after["epochs"] == 0
    assert exc.value.result.summary["epochs"] == 0
