"""Export a run as a bundle that runs anywhere: weights, an ONNX graph checked against PyTorch, tlcore.json, README.

The ONNX file comes from PyTorch's dynamo-based exporter with a dynamic batch dimension, and
is run through onnxruntime on a few of the run's own validation images (random ones when the
dataset is not at hand) before anything is written: an export that disagrees with PyTorch
raises ExportError instead of leaving a silently wrong file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlcore.data.batches import BatchMaker
from tlcore.export.bundle import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAME,
    META_FILE,
    MODEL_FILES,
    ONNX_FILE,
    OUTPUT_NAME,
    README_FILE,
    WEIGHTS_FILE,
    file_digest,
    normalise,
)
from tlcore.models import backbones
from tlcore.runs import ACTIVE, RunStore
from tlcore.training.config import TrainConfig

FORMATS = ("onnx", "safetensors")
CHECK_IMAGES = 8
ZIP_NAME = "model-bundle.zip"  # the cached download, inside the run's folder


class ExportError(RuntimeError):
    """The exported model does not behave like the trained one; nothing was written."""


@dataclass
class ExportResult:
    """Where the bundle went and how the ONNX check went (None/0 when no ONNX was written)."""

    bundle: Path
    files: list[str]
    max_abs_diff: float | None
    checked_images: int
    check_inputs: str  # "validation images", "random inputs" or "none"
    top1_agree: float | None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "bundle": str(self.bundle)}


def tlcore_version() -> str:
    """The installed tlcore version, or the source tree's pyproject version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlcore")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "unknown"


def parse_formats(text: str) -> tuple[str, ...]:
    """`onnx,safetensors` -> ("onnx", "safetensors"); raises ValueError naming the valid ones."""
    chosen = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in chosen if p not in FORMATS]
    if bad or not chosen:
        raise ValueError(f"unknown format {', '.join(bad) or repr(text)}: choose one or both of {','.join(FORMATS)}")
    return chosen


# ---- what the bundle says about itself ---------------------------------------------------------


def describe(run_id: str, record, cfg: TrainConfig) -> dict:
    """tlcore.json's facts (without files and check): also written as the ONNX metadata_props."""
    spec = backbones.get_backbone(cfg.backbone)
    resize, crop = spec.preprocessing(cfg.image_size)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "backbone": cfg.backbone,
        "head": {"kind": cfg.head, "hidden": list(cfg.hidden)},
        "class_names": list(record.class_names),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, crop, crop], "dtype": "float32", "channels": "RGB"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(record.class_names)], "kind": "logits (softmax them)"},
        "preprocessing": {"resize": resize, "crop": crop, "mean": list(spec.mean), "std": list(spec.std),
                          "steps": "upright RGB (EXIF), centred square resized to resize x resize (bicubic), "
                                   "centre crop to crop x crop, (pixel - 255 mean) / (255 std), NCHW"},
        "run": {"run_id": run_id, "status": record.state, "best_val_acc": record.status.get("best_val_acc"),
                "best_epoch": record.status.get("best_epoch"), "config": cfg.to_dict()},
        "versions": {"tlcore": tlcore_version(), "torch": torch.__version__},
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def metadata_props(facts: dict) -> dict[str, str]:
    """One ONNX metadata entry per tlcore.json key: strings as they are, everything else as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in facts.items()}


README = """# {title}

A {backbone} image classifier for {n} classes ({classes}), exported by tlcore {version}
from run `{run_id}` (best validation accuracy {acc}).

| file | what |
|---|---|
{rows}| `tlcore.json` | classes, preprocessing, the run's settings and versions (also in the ONNX metadata) |

## Run it with onnxruntime, numpy and Pillow

```python
import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

meta = json.load(open("tlcore.json"))
p = meta["preprocessing"]
r, c = p["resize"], p["crop"]
img = Image.open("photo.jpg")
img.draft("RGB", (r, r))  # JPEG: decode at reduced scale, as tlcore does
img = ImageOps.exif_transpose(img).convert("RGB")  # tlcore also puts transparency on white
w, h = img.size
s = min(w, h)
img = img.resize((r, r), Image.Resampling.BICUBIC, box=((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2),
                 reducing_gap=3.0)
x = np.asarray(img, np.float32)[(r - c) // 2 : (r - c) // 2 + c, (r - c) // 2 : (r - c) // 2 + c]
x = (x - np.float32(255) * np.float32(p["mean"])) / (np.float32(255) * np.float32(p["std"]))
x = x.transpose(2, 0, 1)[None]  # (1, 3, crop, crop): stack several images for a batch
logits = ort.InferenceSession("model.onnx").run(None, {{"input": x}})[0]
probs = np.exp(logits - logits.max(1, keepdims=True))
probs /= probs.sum(1, keepdims=True)
print(meta["class_names"][int(probs[0].argmax())], float(probs[0].max()))
```

## Load it with tlcore

```bash
python -m tlcore predict photo.jpg --model path/to/this/folder   # or the .zip
```

```python
from tlcore.export.bundle import load_predictor

model = load_predictor("path/to/this/folder")  # onnxruntime; engine="pytorch" uses model.safetensors
print(model.predict(["photo.jpg"], k=3))
```

`model.safetensors` holds the full fine-tuned weights (tensors only): tlcore builds `{backbone}`
with a `{head}` head for {n} classes and loads them, strictly. At export the ONNX model was
checked against PyTorch on {checked} {inputs}: max |logit difference| {diff}, top-1 agreement {agree}.
"""


def readme(facts: dict, result: ExportResult) -> str:
    """The bundle's README.md: what is in it and how to run it, in a few lines."""
    names = facts["class_names"]
    rows = "".join(f"| `{name}` | {what} |\n" for name, what in (
        (ONNX_FILE, "the model as an ONNX graph, dynamic batch size"),
        (WEIGHTS_FILE, "the fine-tuned PyTorch weights (safetensors)")) if name in result.files)
    acc = facts["run"]["best_val_acc"]
    return README.format(
        title=f"{facts['backbone']} on {len(names)} classes", backbone=facts["backbone"], n=len(names),
        classes=", ".join(names[:8]) + (", ..." if len(names) > 8 else ""), version=facts["versions"]["tlcore"],
        run_id=facts["run"]["run_id"], acc=f"{acc:.1%}" if isinstance(acc, (int, float)) else "unknown",
        rows=rows, head=facts["head"]["kind"], checked=result.checked_images, inputs=result.check_inputs,
        diff=f"{result.max_abs_diff:.2g}" if result.max_abs_diff is not None else "-",
        agree=f"{result.top1_agree:.0%}" if result.top1_agree is not None else "-",
    )


# ---- ONNX: write and check ---------------------------------------------------------------------


def write_onnx(model: torch.nn.Module, crop: int, path: Path, facts: dict) -> None:
    """Export with the dynamo-based exporter, batch dimension dynamic, facts in metadata_props."""
    import onnx

    example = torch.zeros(2, 3, crop, crop)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter reports progress with print(); keep stdout for the CLI's --json line.
    with contextlib.redirect_stdout(sys.stderr):
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), verbose=False)
    proto = program.model_proto
    for key, value in metadata_props(facts).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"tlcore {facts['backbone']} classifier; see metadata_props or tlcore.json"
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def check_inputs(cfg: TrainConfig, resize: int, n: int = CHECK_IMAGES) -> tuple[torch.Tensor, str]:
    """(N, 3, resize, resize) uint8 from the run's validation split, or seeded random ones without the data."""
    from tlcore.data.sources import resolve_data

    try:
        seed = cfg.seed if getattr(cfg, "data_seed", None) is None else cfg.data_seed
        source = resolve_data(cfg.data, val_fraction=cfg.val_fraction, subset=cfg.subset, seed=seed)
        # Every class's first images, not the first class's only: a top-1 check needs varied answers.
        picked = _spread(source.val_labels, n)
        few = dataclasses.replace(source, train_items=[source.val_items[i] for i in picked[:1]],
                                  train_labels=[source.val_labels[i] for i in picked[:1]],
                                  val_items=[source.val_items[i] for i in picked],
                                  val_labels=[source.val_labels[i] for i in picked])
        return few.decode(resize, workers=1).val.images, "validation images"
    except (ValueError, OSError, RuntimeError):  # DataError, FolderError, ArchiveError: the data is gone or offline
        generator = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, 3, resize, resize), dtype=torch.uint8, generator=generator), "random inputs"


def _spread(labels: list[int], n: int) -> list[int]:
    """Up to n indices taking classes in turn (first of each class, then second of each...)."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    picked, rank = [], 0
    while len(picked) < n and any(rank < len(v) for v in by_class.values()):
        picked += [v[rank] for v in by_class.values() if rank < len(v)]
        rank += 1
    return sorted(picked[:n])


@torch.inference_mode()
def check_onnx(model: torch.nn.Module, path: Path, images: torch.Tensor, facts: dict) -> tuple[float, float]:
    """(max |logit diff|, top-1 agreement) of onnxruntime vs PyTorch; ExportError beyond tolerance."""
    import onnxruntime as ort

    pre = facts["preprocessing"]
    expected = model(BatchMaker(pre["crop"], pre["mean"], pre["std"], torch.device("cpu"))(images)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # Through the bundle's own numpy preprocessing: what `predict --model` and the README do.
    got = session.run(None, {INPUT_NAME: normalise(images.numpy(), pre["crop"], pre["mean"], pre["std"])})[0]
    diff = float(np.abs(got - expected).max())
    tolerance = 1e-3 * max(1.0, float(np.abs(expected).max()))
    ranked = np.sort(expected, 1)
    # A disagreement only counts where PyTorch's own top two are further apart than the tolerance.
    clear = (ranked[:, -1] - ranked[:, -2]) > 2 * tolerance
    same = got.argmax(1) == expected.argmax(1)
    if diff > tolerance or not same[clear].all():
        raise ExportError(
            f"the ONNX model disagrees with PyTorch (max |logit diff| {diff:.3g}, tolerance {tolerance:.3g}; "
            f"top-1 differs on {int((~same).sum())} of {len(same)} inputs): nothing was written; export "
            f"--format safetensors instead, and report this with the backbone ({facts['backbone']}) and "
            f"torch {torch.__version__}")
    return diff, float(same.mean())


# ---- the whole export --------------------------------------------------------------------------


def export_run(run_id: str, runs_dir: str | os.PathLike, out: str | os.PathLike,
               formats: tuple[str, ...] = FORMATS, check_count: int = CHECK_IMAGES) -> ExportResult:
    """Write a run's bundle into `out` (created; other files there are left alone).

    Raises:
        RunNotFound, RunDamaged: no such run, or its weights are unreadable.
        ValueError: the run is still training or never saved weights; a bad format name.
        ExportError: the ONNX model does not match PyTorch (nothing written).
    """
    store = RunStore(runs_dir)
    record = store.load(run_id)
    if record.state in ACTIVE:
        raise ValueError(f"run {run_id} is still {record.state}: export it when it has ended")
    if not record.class_names:
        raise ValueError(f"run {run_id} has no class names: it never started training, so there is nothing to export")
    formats = parse_formats(",".join(formats))
    state = store.load_weights(run_id)
    cfg = TrainConfig.from_dict(record.config)
    model = backbones.build_model(cfg.backbone, len(record.class_names), pretrained=False, head=cfg.head,
                                  hidden=cfg.hidden)
    model.load_state_dict(state)
    model.eval()
    facts = describe(run_id, record, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        files, result = [], ExportResult(out, [], None, 0, "none", None)
        if "onnx" in formats:
            write_onnx(model, facts["preprocessing"]["crop"], tmp / ONNX_FILE, facts)
            images, kind = check_inputs(cfg, facts["preprocessing"]["resize"], check_count)
            result.max_abs_diff, result.top1_agree = check_onnx(model, tmp / ONNX_FILE, images, facts)
            result.checked_images, result.check_inputs = len(images), kind
            files.append(ONNX_FILE)
        if "safetensors" in formats:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS_FILE),
                      metadata={"format": "pt", "tlcore": json.dumps(facts)})
            files.append(WEIGHTS_FILE)
        result.files = [*files, META_FILE, README_FILE]
        meta = {**facts, "files": {name: {"sha256": file_digest(tmp / name), "bytes": (tmp / name).stat().st_size}
                                   for name in files},
                "check": {k: getattr(result, k) for k in ("max_abs_diff", "checked_images", "check_inputs",
                                                          "top1_agree")}}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        (tmp / README_FILE).write_text(readme(facts, result), encoding="utf-8")
        # Model files last-but-one, tlcore.json last: a reader never pairs new checksums with old files
        # for long, and a stale model file of a format not exported this time does not linger.
        for name in MODEL_FILES:
            if name not in files:
                (out / name).unlink(missing_ok=True)
        for name in [*files, README_FILE, META_FILE]:
            os.chmod(tmp / name, 0o644)  # safetensors writes 0600; a bundle is meant to be shared
            os.replace(tmp / name, out / name)
    return result


_ZIP_LOCK = threading.Lock()


def download_name(run_id: str) -> str:
    """The file name a downloaded bundle zip gets (and its one top folder, without `.zip`)."""
    return f"tlcore-{run_id}.zip"


def ready_zip(run_id: str, runs_dir: str | os.PathLike) -> Path | None:
    """The run's bundle zip when it is built and not older than the run's weights, else None."""
    folder = RunStore(runs_dir).path(run_id)
    target, weights = folder / ZIP_NAME, folder / WEIGHTS_FILE
    if target.is_file() and weights.is_file() and target.stat().st_mtime_ns >= weights.stat().st_mtime_ns:
        return target
    return None


def bundle_zip(run_id: str, runs_dir: str | os.PathLike) -> Path:
    """The run's bundle as one zip (`<run>/model-bundle.zip`), built on first use and then reused.

    The zip holds one folder, `tlcore-<run id>/`; it is rebuilt when the run's weights are newer.
    """
    folder = RunStore(runs_dir).path(run_id)
    target = folder / ZIP_NAME
    with _ZIP_LOCK:  # two clicks in two tabs build once
        if ready_zip(run_id, runs_dir):
            return target
        with tempfile.TemporaryDirectory(dir=folder, prefix=".bundle-") as tmp_name:
            tmp = Path(tmp_name)
            top = download_name(run_id).removesuffix(".zip")
            export_run(run_id, runs_dir, tmp / top)
            packed = tmp / "bundle.zip"
            # Stored, not deflated: float weights barely compress and the zip builds in a blink.
            with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as zf:
                for path in sorted((tmp / top).iterdir()):
                    if path.is_file():
                        zf.write(path, f"{top}/{path.name}")
            os.replace(packed, target)
    return target
