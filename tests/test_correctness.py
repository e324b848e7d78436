"""The engine defects of the correctness review (issue 14), one test (or more) each.

Each test failed on the code before its fix: reproducibility (seeds, threads, the two training
paths), the feature cache's key and writes, spill files, the step schedule, batches of one,
tiny subsets, zips extracted twice at once, and split folders named training/validation.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from tlcore.data.batches import BatchMaker, training_batches
from tlcore.data.folders import scan_folder
from tlcore.data.sources import resolve_data
from tlcore.data.spill import SpilledImages
from tlcore.models import backbones
from tlcore.training import features
from tlcore.training.config import TrainConfig
from tlcore.training.jobs import JobManager
from tlcore.training.strategies import apply_train_mode, make_strategy
from tlcore.training.train import step_milestones, train

REPO = Path(__file__).resolve().parents[1]


def _train(cfg: TrainConfig, on_event=None):
    events = []

    def emit(kind, data):
        events.append((kind, data))
        if on_event is not None:
            on_event(kind, data)

    return train(cfg, emit), events


def _logs(events) -> str:
    return "\n".join(d["message"] for k, d in events if k == "log")


def _rows(events) -> list[dict]:
    return [d for k, d in events if k == "epoch"]


def _split_folder(root: Path, make_class_folders) -> Path:
    """root/train/<class> and root/val/<class>: a split that no seed changes."""
    make_class_folders(root / "train", per_class=6, size=48)
    make_class_folders(root / "val", per_class=3, size=48, seed=7)
    return root


def _val_accuracy(cfg: TrainConfig, state: dict) -> float:
    """Accuracy of saved weights on the run's validation split, computed from scratch."""
    spec = backbones.get_backbone(cfg.backbone)
    source = resolve_data(cfg.data, subset=cfg.subset, seed=cfg.seed)
    model = backbones.build_model(cfg.backbone, len(source.class_names), pretrained=False,
                                  head=cfg.head, hidden=cfg.hidden)
    model.load_state_dict(state)
    model.eval()
    resize, crop = spec.preprocessing(cfg.image_size)
    data = source.decode(resize)
    make_batch = BatchMaker(crop, spec.mean, spec.std, torch.device("cpu"))
    with torch.inference_mode():
        pred = model(make_batch(data.val.images)).argmax(1)
    return (pred == data.val.labels).float().mean().item()


# ---- 1. the feature cache and random backbones ----------------------------------------------


def test_a_random_backbone_never_reuses_another_seeds_features(tmp_path, make_class_folders) -> None:
    folder = _split_folder(tmp_path / "split", make_class_folders)
    base = dict(backbone="simple_cnn", data=str(folder), strategy="feature_extraction", epochs=2,
                image_size=32, lr=1e-2, device="cpu")
    _train(TrainConfig(**base, seed=0))
    cfg1 = TrainConfig(**base, seed=1)
    result, events = _train(cfg1)
    # Seed 1's random backbone is another network: seed 0's features are not its features.
    assert "feature cache hit" not in _logs(events)
    assert result.summary["best_val_acc"] == pytest.approx(_val_accuracy(cfg1, result.best_state))
    # The same seed again is the same backbone: a hit, and the same numbers.
    again, events = _train(cfg1)
    assert "feature cache hit" in _logs(events)
    assert again.summary["best_val_acc"] == result.summary["best_val_acc"]


def test_backbone_digest_follows_the_weights_not_the_head() -> None:
    spec = backbones.get_backbone("efficientnet_lite0")
    model = backbones.build_model("efficientnet_lite0", 3, pretrained=False, seed=0)
    before = features.backbone_digest(model, spec)
    with torch.no_grad():
        model._fc.weight.add_(1.0)
    assert features.backbone_digest(model, spec) == before, "the head is not part of the features"
    with torch.no_grad():
        model._conv_stem.weight[0, 0, 0, 0] += 1e-3
    assert features.backbone_digest(model, spec) != before


def test_features_are_not_shared_across_precisions(monkeypatch, tiny_config) -> None:
    cfg = tiny_config(backbone="efficientnet_lite0", strategy="feature_extraction", epochs=1)
    _train(cfg)
    import tlcore.training.device as device
    import tlcore.training.train as tltrain

    # bf16 autocast runs on CPU too: stand in for a CUDA machine's mixed precision.
    monkeypatch.setattr(device, "amp_dtype", lambda d, *_: torch.bfloat16)
    monkeypatch.setattr(tltrain, "amp_dtype", lambda d, *_: torch.bfloat16)
    _, events = _train(cfg)
    assert "feature cache hit" not in _logs(events)


# ---- 2. a failure outside train() -------------------------------------------------------------


def test_a_full_disk_while_saving_fails_that_run_and_the_worker_goes_on(tl_env, tiny_config, monkeypatch) -> None:
    manager = JobManager(tl_env.runs)
    real_save = manager.store.save_weights
    calls = []

    def full_disk(run_id, state):
        calls.append(run_id)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_save(run_id, state)

    monkeypatch.setattr(manager.store, "save_weights", full_disk)
    first = manager.submit(tiny_config(epochs=1))
    second = manager.submit(tiny_config(epochs=1, seed=1))
    try:
        assert manager.wait(first, 120) and manager.wait(second, 120)
        failed = manager.snapshot(first)
        assert failed["status"] == "failed"
        assert "No space left on device" in failed["message"] and "free space" in failed["message"]
        assert manager.store.load(first).status["status"] == "failed"
        assert manager.snapshot(second)["status"] == "finished"
    finally:
        manager.close()


def test_cancel_of_a_queued_run_takes_effect_at_once(tl_env, tiny_config) -> None:
    manager = JobManager(tl_env.runs)
    gate = threading.Event()
    first = manager.submit(tiny_config(epochs=3), listener=lambda kind, data: gate.wait(60) if kind == "started" else None)
    queued = manager.submit(tiny_config(epochs=1))
    try:
        assert manager.cancel(queued)
        # The run ahead of it is still held at its start: the cancel did not wait for it.
        assert manager.snapshot(queued)["status"] == "cancelled"
        assert manager.store.load(queued).status["status"] == "cancelled"
        assert manager.snapshot(first)["status"] in ("queued", "running")
    finally:
        gate.set()
        manager.close()


# ---- 3. a run's randomness is its own ---------------------------------------------------------


def test_same_seed_same_metrics_whatever_other_threads_draw(tiny_config) -> None:
    # Lite0 fine-tuning with an MLP head: a random head init and dropout in two places.
    cfg = tiny_config(backbone="efficientnet_lite0", strategy="finetune", head="mlp", hidden=(32,),
                      epochs=2, lr=1e-3)
    alone, events_alone = _train(cfg)

    stop = threading.Event()

    def draw_forever():
        while not stop.is_set():
            torch.rand(64)

    other = threading.Thread(target=draw_forever, daemon=True)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so the draws interleave with the run's
    other.start()
    try:
        # As the Predict page does between batches: build a model (draws its initial weights).
        busy, events_busy = _train(cfg, on_event=lambda k, d: torch.randn(100) if k == "batch" else None)
    finally:
        stop.set()
        other.join()
        sys.setswitchinterval(old)
    assert [r["train_loss"] for r in _rows(events_busy)] == [r["train_loss"] for r in _rows(events_alone)]
    assert [r["val_loss"] for r in _rows(events_busy)] == [r["val_loss"] for r in _rows(events_alone)]


def test_a_scratch_run_is_reproducible_while_another_thread_builds_models(tiny_config) -> None:
    # A random backbone draws from the global generator; builds take turns (rng.BUILD_LOCK).
    cfg = tiny_config(strategy="scratch", head="mlp", hidden=(16,), epochs=1)
    alone, _ = _train(cfg)
    stop = threading.Event()

    def predict_page():
        while not stop.is_set():
            backbones.build_model("simple_cnn", 3, pretrained=False)

    other = threading.Thread(target=predict_page, daemon=True)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    other.start()
    try:
        busy, _ = _train(cfg)
    finally:
        stop.set()
        other.join()
        sys.setswitchinterval(old)
    assert busy.summary["best_val_acc"] == alone.summary["best_val_acc"]
    assert all(torch.equal(a, b) for a, b in zip(alone.best_state.values(), busy.best_state.values(), strict=True))


def test_a_seeded_build_waits_for_no_other_build(monkeypatch) -> None:
    # Deterministic: in the middle of a seeded build, another thread tries a build of its own.
    spec = backbones.get_backbone("simple_cnn")
    main = threading.get_ident()
    neighbour = {"on": False}
    others = []

    def build():
        if threading.get_ident() != main:
            return spec.build()
        spec.build()  # draws, then gives another thread's build a chance to draw too
        if neighbour["on"]:
            t = threading.Thread(target=backbones.build_model, args=("simple_cnn", 3), kwargs={"pretrained": False})
            others.append(t)
            t.start()
            t.join(1.0)  # under the build lock it waits for this build: the join times out
        return spec.build()

    patched = dataclasses.replace(spec, build=build)
    monkeypatch.setattr(backbones, "get_backbone", lambda name: patched if name == "simple_cnn" else spec)
    alone = backbones.build_model("simple_cnn", 3, pretrained=False, seed=7)
    neighbour["on"] = True
    busy = backbones.build_model("simple_cnn", 3, pretrained=False, seed=7)
    for t in others:
        t.join()
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), busy.state_dict().values(), strict=True))


def test_a_seeded_build_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = backbones.build_model("simple_cnn", 4, pretrained=False, seed=5)
    assert torch.equal(torch.rand(3), expected)
    b = backbones.build_model("simple_cnn", 4, pretrained=False, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


# ---- 4. frozen means frozen: both training paths train the same model -------------------------


@pytest.mark.parametrize("name", backbones.list_backbones())
def test_feature_extraction_leaves_nothing_but_the_head_in_train_mode(name: str) -> None:
    model = backbones.build_model(name, 3, pretrained=False)
    groups = backbones.param_groups(model, name)
    make_strategy("feature_extraction").optimizer_groups(groups, 1e-3)
    apply_train_mode(model, groups)
    head = backbones.get_module(model, backbones.get_backbone(name).head)
    in_head = {id(m) for m in head.modules()}
    training = [n for n, m in model.named_modules() if m.training and id(m) not in in_head and n]
    assert training == [], f"{name}: modules outside the head train with a frozen backbone: {training}"
    # With the last backbone group trainable, what sits between it and the head trains too.
    make_strategy("partial", unfreeze_groups=1).optimizer_groups(groups, 1e-3)
    apply_train_mode(model, groups)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout) and id(m) not in in_head]
    assert all(m.training for m in dropouts)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_cached_and_full_forward_paths_train_the_same_model(tiny_config, head: str) -> None:
    cfg = dict(backbone="efficientnet_lite0", strategy="feature_extraction", head=head, hidden=(32,), epochs=2,
               lr=1e-2)
    cached, ev_cached = _train(tiny_config(**cfg))
    full, ev_full = _train(tiny_config(**cfg, feature_cache=False))
    assert next(d for k, d in ev_cached if k == "started")["path"] == "feature cache"
    assert next(d for k, d in ev_full if k == "started")["path"] == "full forward"
    for a, b in zip(_rows(ev_cached), _rows(ev_full), strict=True):
        # The backbone runs in batches of 16 in one path and of the training batch in the
        # other: the same arithmetic up to float rounding.
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_acc"] == b["val_acc"]


# ---- 5. and 6. spill files ---------------------------------------------------------------------


def _open_spill_files(spill: Path) -> list[int]:
    """File descriptors of this process open on unlinked files in the spill folder."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(spill)) and target.endswith("(deleted)"):
            fds.append(int(fd))
    return fds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_two_runs_spilling_the_same_dataset_do_not_share_a_file(image_folder: Path, tl_env) -> None:
    src = resolve_data(str(image_folder))
    in_ram = src.decode(24)
    first = src.decode(24, memory_budget=1)
    second = src.decode(24, memory_budget=1)
    n = len(second.train)
    second.train.images[0:n] = torch.zeros((n, 3, 24, 24), dtype=torch.uint8)  # what a shared file would suffer
    assert torch.equal(first.train.images[:], in_ram.train.images)
    # Private files, unlinked once created: nothing is left on disk, even if the process dies.
    spill = tl_env.cache / "spill"
    assert list(spill.iterdir()) == []
    assert len(_open_spill_files(spill)) >= 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_an_unreadable_file_does_not_copy_a_spilled_split_into_ram(image_folder: Path, tl_env) -> None:
    (image_folder / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    src = resolve_data(str(image_folder), val_fraction=0.2)
    in_ram = src.decode(24)
    spilled = src.decode(24, memory_budget=1)
    assert isinstance(spilled.train.images, SpilledImages), "the split was copied out of its spill file"
    assert spilled.train.index is not None and len(spilled.train) == len(in_ram.train)
    assert torch.equal(spilled.train.images[:], in_ram.train.images)
    assert torch.equal(spilled.train.labels, in_ram.train.labels)
    assert spilled.train.images._file.fd in _open_spill_files(tl_env.cache / "spill")


# ---- 7. the step schedule -----------------------------------------------------------------------


def test_step_schedule_decays_at_one_and_two_thirds(tiny_config) -> None:
    assert step_milestones(5) == [2, 3]
    assert step_milestones(9) == [3, 6]
    assert step_milestones(1) == []
    _, events = _train(tiny_config(schedule="step", epochs=5, lr=1e-3))
    lrs = [r["lr"] for r in _rows(events)]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5, 1e-5])


# ---- 8. a last batch of one image ---------------------------------------------------------------


def test_training_batches_never_end_on_a_lone_image() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = training_batches(40, 3, gen)
    assert [len(b) for b in batches] == [3] * 12 + [4]
    assert sorted(torch.cat(batches).tolist()) == list(range(40))
    assert [len(b) for b in training_batches(1, 3, gen)] == [1]


def test_a_training_set_ending_in_a_batch_of_one_trains(tiny_config) -> None:
    # 4 per class: 40 images, batch 3 leaves one image over (the review's reproduction).
    result, _ = _train(tiny_config(backbone="efficientnet_lite0", strategy="finetune", subset=4,
                                   batch_size=3, epochs=1, lr=1e-4))
    assert result.summary["epochs"] == 1


# ---- 9. two writers of one cache entry ----------------------------------------------------------


def test_threads_saving_the_same_cache_entry_do_not_collide() -> None:
    tensors = {"train_x": torch.randn(64, 32), "train_y": torch.arange(64)}
    errors = []

    def save():
        try:
            for _ in range(10):
                features.save_cached("same-key", tensors, {"skipped": []})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=save) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    loaded, meta = features.load_cached("same-key")
    assert torch.equal(loaded["train_x"], tensors["train_x"])
    assert [p.name for p in features.cache_path("same-key").parent.iterdir()] == ["same-key.safetensors"]


# ---- 10. the smallest subset --------------------------------------------------------------------


def test_one_image_per_class_trains_and_validates_on_the_whole_split(tiny_config) -> None:
    src = resolve_data("digits", subset=1)
    assert len(src.train_items) == 10
    assert len(src.val_items) == 359  # the validation split is not cut by the subset
    result, _ = _train(tiny_config(subset=1, epochs=1))
    assert result.summary["epochs"] == 1


def test_a_subset_keeps_the_folder_validation_split_whole(tmp_path, make_class_folders) -> None:
    folder = _split_folder(tmp_path / "split", make_class_folders)
    src = resolve_data(str(folder), subset=2)
    assert len(src.train_items) == 6
    assert len(src.val_items) == 9


# ---- also looked into ---------------------------------------------------------------------------


def test_training_and_validation_folders_are_a_split_not_two_classes(tmp_path, make_class_folders) -> None:
    root = tmp_path / "kaggle"
    make_class_folders(root / "training", per_class=3, size=32)
    make_class_folders(root / "validation", per_class=2, size=32, seed=3)
    scan = scan_folder(root)
    assert scan.class_names == ["cat", "coffee", "rocket"]
    assert scan.val is not None and len(scan.val) == 6


_EXTRACT = """
import sys, time
from pathlib import Path
from tlcore.data.sources import resolve_data
print("ready", flush=True)
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
src = resolve_data(sys.argv[1])
print(src.class_names, len(src.train_items) + len(src.val_items))
"""


def test_two_processes_extracting_the_same_zip_at_once(tmp_path, make_class_folders, make_zip) -> None:
    folder = make_class_folders(tmp_path / "many", per_class=60, size=32)
    zip_path = make_zip(folder, tmp_path / "many.zip")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _EXTRACT, str(zip_path), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy(), cwd=REPO)
             for _ in range(2)]
    for p in procs:  # both have imported torch: start their extractions together
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "['cat', 'coffee', 'rocket'] 180"
    extracted = Path(os.environ["TLCORE_DATA"]) / "extracted"
    assert len([p for p in extracted.iterdir() if not p.name.startswith(".")]) == 1
    assert [p for p in extracted.iterdir() if p.name.startswith(".")] == []


# ---- divergence and ranges (issue 9's engine points) --------------------------------------------


def test_a_diverging_run_fails_with_where_and_what_to_do(tiny_config) -> None:
    from tlcore.training.train import TrainingError

    with pytest.raises(TrainingError, match=r"the loss diverged at epoch 1, batch \d+ .*lower the learning rate \(it was 10\)"):
        _train(tiny_config(backbone="efficientnet_lite0", strategy="finetune", optimizer="sgd", lr=10, epochs=2))


def test_a_normal_run_is_not_taken_for_a_diverging_one(tiny_config) -> None:
    result, _ = _train(tiny_config(backbone="efficientnet_lite0", strategy="finetune", lr=1e-3, epochs=2))
    assert result.summary["epochs"] == 2


@pytest.mark.parametrize(("field", "value", "says"), [
    ("lr", 1e6, "lr must be greater than 0 and at most 10"),
    ("lr", 0.0, "lr must be greater than 0 and at most 10"),
    ("lr_factor", 2.0, "lr_factor must be greater than 0 and at most 1"),
    ("weight_decay", -1.0, "weight_decay must be between 0 and 1"),
    ("momentum", 1.0, "momentum must be at least 0 and below 1"),
    ("subset", 0, "subset must be between 1 and 1000000"),
    ("hidden", (0,), "hidden sizes must be between 1 and 65536"),
    ("epochs", 0, "epochs must be between 1 and 1000"),
])
def test_every_refusal_names_the_valid_range(field: str, value, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        TrainConfig(**{field: value}).validate()
