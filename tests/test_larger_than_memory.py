"""Datasets larger than memory (issue 12): spill files read a batch at a time, feature extraction
streamed from the files, batches gathered ahead of the model, nothing left behind."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tlcore.bench import scaling
from tlcore.data import sources as tldata
from tlcore.data.batches import BatchMaker
from tlcore.data.sources import resolve_data
from tlcore.data.spill import SpilledImages
from tlcore.data.stream import decoded_batches, ordered_map, prefetch
from tlcore.models import backbones
from tlcore.runs import RunStore
from tlcore.training import train as tltrain

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def _rss_file_kb() -> int:
    """Resident pages of this process that are mapped from files (a memory-mapped spill counts here)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def _spill_fds(spill: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(spill)):
                out.append(fd)
        except OSError:
            continue
    return out


# ---- the spill file -------------------------------------------------------------------------


def test_spilled_images_index_like_a_tensor(tl_env) -> None:
    ref = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    spilled = SpilledImages(ref.shape, tl_env.cache / "spill", "t-")
    spilled[0:5] = ref[:5]
    spilled[5], spilled[6] = ref[5], ref[6]
    assert len(spilled) == 7 and spilled.shape == ref.shape
    assert torch.equal(spilled[:], ref) and torch.equal(spilled[2:6], ref[2:6]) and torch.equal(spilled[::3], ref[::3])
    assert torch.equal(spilled[-1], ref[-1]) and torch.equal(spilled[torch.tensor(4)], ref[4])
    idx = torch.tensor([6, 0, 6, 3])
    assert torch.equal(spilled[idx], ref[idx]) and torch.equal(spilled[[1, 2]], ref[[1, 2]])
    assert torch.equal(spilled.head(3)[:], ref[:3])
    with pytest.raises(IndexError):
        spilled[7]
    with pytest.raises(ValueError, match="rows of"):
        spilled[0] = ref[:2]
    assert list((tl_env.cache / "spill").iterdir()) == []  # unlinked from the start


@linux_only
def test_reading_a_spilled_split_does_not_make_it_resident(image_folder: Path, tl_env) -> None:
    src = resolve_data(str(image_folder))
    src.decode(384)  # once in RAM first: the code paths' own file pages are resident before we measure
    before = _rss_file_kb()
    spilled = src.decode(384, memory_budget=1)
    for idx in torch.arange(len(spilled.train)).split(4):
        spilled.train.images[idx]
    grown = _rss_file_kb() - before
    size_kb = len(spilled.train) * 3 * 384 * 384 // 1024
    # A memory map made every page written and read resident: the whole split (6.6 MB here).
    assert grown < size_kb / 4, f"RssFile grew {grown} kB reading a {size_kb} kB spilled split"


# ---- working ahead ---------------------------------------------------------------------------


def test_ordered_map_keeps_order_and_stays_bounded() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.001 * (i % 3))  # finishing out of order
        return i * i

    results = ordered_map(work, range(50), workers=4, ahead=5)
    first = [next(results) for _ in range(3)]
    time.sleep(0.05)
    assert first == [0, 1, 4]
    assert len(started) <= 3 + 5, "ran far ahead of the consumer"
    assert [*first, *results] == [i * i for i in range(50)]


def test_decoded_batches_drop_unreadable_files_and_report_them(image_folder: Path) -> None:
    (image_folder / "cat" / "broken.jpg").write_bytes(b"<html>not an image</html>")
    items = sorted(p for p in image_folder.rglob("*") if p.is_file())
    broken = items.index(image_folder / "cat" / "broken.jpg")
    errors: list = []
    batches = list(decoded_batches(items, 24, 4, errors, workers=2))
    positions = torch.cat([p for p, _ in batches]).tolist()
    assert positions == [i for i in range(len(items)) if i != broken]
    assert [e[0] for e in errors] == [broken] and "broken.jpg" in errors[0][1]
    src = resolve_data(str(image_folder))
    assert all(x.shape[1:] == (3, 24, 24) and x.dtype == torch.uint8 for _, x in batches)
    first = [items[i] for i in batches[0][0].tolist()]
    once = tldata.DataSource("x", src.class_names, first, [0] * len(first), first, [0] * len(first), "fp").decode(24)
    assert torch.equal(batches[0][1], once.train.images)  # the same pixels as decoding once


def test_prefetch_gives_the_same_items_and_raises_where_the_thread_failed() -> None:
    assert list(prefetch(iter(range(20)), 2)) == list(range(20))

    def failing():
        yield 1
        raise ValueError("boom at 2")

    got = []
    with pytest.raises(ValueError, match="boom at 2"):
        for x in prefetch(failing(), 2):
            got.append(x)
    assert got == [1]


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = prefetch(endless(), 2)
    assert next(gen) == 0
    gen.close()
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count <= 4
    assert not [t for t in threading.enumerate() if t.name == "tlcore-prefetch"]


# ---- runs ------------------------------------------------------------------------------------


def test_prefetch_trains_the_very_same_batches(run_training, monkeypatch) -> None:
    overrides = {"augment": "flip-crop", "epochs": 2}  # augmentation draws from the run's generator too
    with_prefetch, _ = run_training(**overrides)
    monkeypatch.setattr(tltrain, "PREFETCH", 0)
    without, _ = run_training(**overrides)
    for name, tensor in with_prefetch.best_state.items():
        assert torch.equal(tensor, without.best_state[name]), name
    assert with_prefetch.summary["best_val_acc"] == without.summary["best_val_acc"]


@linux_only
def test_a_spilled_split_trains_the_same_and_leaves_nothing(run_training, image_folder: Path, tl_env, monkeypatch) -> None:
    overrides = {"data": str(image_folder), "epochs": 2, "batch_size": 4}
    in_ram, _ = run_training(**overrides)
    monkeypatch.setattr(tldata, "DEFAULT_MEMORY_BUDGET", 1)
    spilled, events = run_training(**overrides)
    for name, tensor in in_ram.best_state.items():
        assert torch.equal(tensor, spilled.best_state[name]), name
    spill = tl_env.cache / "spill"
    assert spill.is_dir() and list(spill.iterdir()) == []
    del events
    gc.collect()
    assert _spill_fds(spill) == [], "a spill file is still open after the run"


def test_streamed_feature_extraction_matches_decoding_first(image_folder: Path, tiny_config, tl_env) -> None:
    for name in ("cat", "coffee", "rocket"):  # unreadable files in both splits
        (image_folder / name / "zz_broken.jpg").write_bytes(b"not an image")
    cfg = tiny_config(data=str(image_folder), strategy="feature_extraction", val_fraction=0.3)
    source = resolve_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
    spec = backbones.get_backbone(cfg.backbone)
    resize, crop = spec.preprocessing(cfg.image_size)
    model = backbones.build_model(cfg.backbone, 3, pretrained=False, seed=0)
    make_batch = BatchMaker(crop, spec.mean, spec.std, torch.device("cpu"))
    events: list = []
    run = tltrain._Run(cfg, spec, torch.device("cpu"), lambda k, d: events.append((k, d)), threading.Event(),
                       torch.Generator())
    streamed, skipped, val_index = tltrain._features(run, model, source, resize, crop, make_batch)
    assert "never all decoded at once" in "\n".join(d["message"] for k, d in events if k == "log")
    for entry in (tl_env.cache / "features").glob("*.safetensors"):
        entry.unlink()  # the next call computes again, from the split decoded first
    decoded = source.decode(resize)
    again, skipped2, val_index2 = tltrain._features(run, model, source, resize, crop, make_batch, decoded)
    for name in ("train_x", "val_x"):
        assert torch.allclose(streamed[name], again[name], atol=1e-5), name
    for name in ("train_y", "val_y"):
        assert torch.equal(streamed[name], again[name]), name
    assert skipped == skipped2 and len(skipped) == 3
    assert val_index == val_index2
    assert len(streamed["val_y"]) + len(streamed["train_y"]) == 18


# ---- the benchmark's data ---------------------------------------------------------------------


def test_scaling_folders_are_made_once_with_class_dependent_content(tmp_path: Path) -> None:
    folders = scaling.make_folders(tmp_path, sizes=(7, 12))
    counts = {n: len(list(folders[n].rglob("*.jpg"))) for n in (7, 12)}
    assert counts == {7: 7, 12: 12}
    small = folders[7] / "horizontal" / "00000.jpg"
    assert small.stat().st_ino == (folders[12] / "horizontal" / "00000.jpg").stat().st_ino  # a hard link
    h, v = (scaling.stripe_image(c, 0).astype(float).mean(2) for c in (0, 1))
    # Horizontal stripes: the rows' means vary, the columns' do not; vertical ones the other way.
    assert h.mean(1).std() > 3 * h.mean(0).std() and v.mean(0).std() > 3 * v.mean(1).std()
    mtime = small.stat().st_mtime_ns
    scaling.make_folders(tmp_path, sizes=(7, 12))
    assert small.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_two_processes_stream_the_same_features_as_one(image_folder: Path, tmp_path: Path) -> None:
    """Under torchrun each rank decodes and extracts its own files; unreadable ones are dropped once."""
    from test_distributed import _result, _tlcore

    for name in ("cat", "rocket"):
        (image_folder / name / "zz_broken.jpg").write_bytes(b"not an image")
    args = ("--data", str(image_folder), "--backbone", "simple_cnn", "--strategy", "feature_extraction",
            "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.3")
    one = _tlcore(1, tmp_path / "one", *args, env={"TLCORE_CACHE": str(tmp_path / "c1")})
    two = _tlcore(2, tmp_path / "two", *args, env={"TLCORE_CACHE": str(tmp_path / "c2")})
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    r1, r2 = _result(one), _result(two)
    assert r1["skipped"] == r2["skipped"] == 2
    t1, t2 = (load_file(next((tmp_path / c / "features").glob("*.safetensors"))) for c in ("c1", "c2"))
    for k in ("train_x", "val_x"):
        assert torch.allclose(t1[k], t2[k], atol=1e-5), k
    for k in ("train_y", "val_y"):
        assert torch.equal(t1[k], t2[k]), k
    v1 = RunStore(tmp_path / "one").load_val_results(r1["run_id"])
    v2 = RunStore(tmp_path / "two").load_val_results(r2["run_id"])
    assert v1["items"] == v2["items"] and not any("zz_broken" in item for item in v1["items"])
