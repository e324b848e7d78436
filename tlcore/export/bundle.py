"""Exported model bundles: check one (folder or zip) and predict from it, with no runs folder.

A bundle holds `tlcore.json` (what the model is and how to feed it), `model.onnx` and/or
`model.safetensors`, and a README. Nothing in it is ever unpickled: tlcore.json is plain JSON
checked field by field, the ONNX file is a graph run by onnxruntime, safetensors holds tensors
only, and each model file must match the SHA-256 that tlcore.json records for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlcore import paths
from tlcore.data.archive import extract_zip
from tlcore.models import backbones
from tlcore.predict import ImagePrediction, Predictor, top_k

FORMAT, FORMAT_VERSION = "tlcore-bundle", 1
META_FILE, ONNX_FILE, WEIGHTS_FILE, README_FILE = "tlcore.json", "model.onnx", "model.safetensors", "README.md"
MODEL_FILES = (ONNX_FILE, WEIGHTS_FILE)
INPUT_NAME, OUTPUT_NAME = "input", "logits"
ENGINES = ("auto", "onnxruntime", "pytorch")
MAX_BUNDLE_BYTES = 2 * 2**30  # an unzipped bundle: VGG16's 528 MB twice (ONNX + safetensors) fits
_AGAIN = "export the run again (Download model, or python -m tlcore export RUN_ID --out DIR)"


class BundleError(ValueError):
    """A bundle cannot be used; one line naming the problem and the fix."""


@dataclass(frozen=True)
class Bundle:
    """A checked bundle folder and the facts of its tlcore.json."""

    folder: Path
    meta: dict
    files: tuple[str, ...]  # model files present and matching their checksums

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def preprocessing(self) -> dict:
        """{"resize", "crop", "mean", "std"}: load_square(resize), centre crop, (x - 255 mean) / (255 std)."""
        return self.meta["preprocessing"]


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def normalise(batch: np.ndarray, crop: int, mean, std) -> np.ndarray:
    """(N, 3, R, R) uint8 -> centre-cropped, normalised (N, 3, crop, crop) float32, as tlcore.data.batches does."""
    top = (batch.shape[-2] - crop) // 2
    left = (batch.shape[-1] - crop) // 2
    x = batch[..., top : top + crop, left : left + crop].astype(np.float32)
    mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * np.float32(255)
    std = np.asarray(std, np.float32).reshape(1, 3, 1, 1) * np.float32(255)
    return np.ascontiguousarray((x - mean) / std)


# ---- reading and checking ---------------------------------------------------------------------


def _bad(where: str, what: str) -> BundleError:
    return BundleError(f"{where}: tlcore.json has a missing or invalid {what}: {_AGAIN}")


def check_meta(meta, where: str) -> dict:
    """Return `meta` if it describes a bundle this tlcore can run, else raise BundleError."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{where}: tlcore.json does not describe a tlcore model bundle "
                          f"(no \"format\": \"{FORMAT}\"): {_AGAIN}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format version {meta.get('format_version')!r} is not "
                          f"{FORMAT_VERSION}, the one this tlcore reads: update tlcore or {_AGAIN}")
    names = meta.get("class_names")
    if not (isinstance(names, list) and len(names) >= 2 and len(set(names)) == len(names)
            and all(isinstance(n, str) and n for n in names)):
        raise _bad(where, "class_names (two or more distinct names)")
    if meta.get("backbone") not in backbones.list_backbones():
        raise _bad(where, f"backbone {meta.get('backbone')!r}")
    head = meta.get("head")
    if not (isinstance(head, dict) and head.get("kind") in ("linear", "mlp") and isinstance(head.get("hidden"), list)
            and all(isinstance(h, int) and h > 0 for h in head["hidden"])):
        raise _bad(where, "head")
    pre = meta.get("preprocessing")
    ok = isinstance(pre, dict) and all(isinstance(pre.get(k), int) and 8 <= pre[k] <= 4096 for k in ("resize", "crop"))
    ok = ok and pre["crop"] <= pre["resize"]
    for key in ("mean", "std"):
        ok = ok and isinstance(pre.get(key), list) and len(pre[key]) == 3 and all(
            isinstance(v, (int, float)) and 0 <= v <= 1 for v in pre[key])
    if not ok or min(pre["std"]) <= 0:
        raise _bad(where, "preprocessing (resize, crop, mean, std)")
    if not isinstance(meta.get("files"), dict) or not set(meta["files"]) & set(MODEL_FILES):
        raise _bad(where, f"files list (none of {', '.join(MODEL_FILES)})")
    return meta


def read_bundle(folder: str | os.PathLike, where: str | None = None) -> Bundle:
    """Check a bundle folder: tlcore.json valid, each model file it lists present and unchanged."""
    folder = Path(folder)
    where = where or folder.name
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{where}: no {META_FILE}, so this is not a tlcore model bundle: {_AGAIN}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: {META_FILE} is not valid JSON ({exc}): {_AGAIN}") from None
    except OSError as exc:
        raise BundleError(f"{where}: cannot read {META_FILE} ({exc.strerror or exc}): {_AGAIN}") from None
    check_meta(meta, where)
    present = []
    for name in MODEL_FILES:
        expected = meta["files"].get(name)
        if expected is None:
            continue
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{where}: {name} is listed in {META_FILE} but missing: copy the whole bundle folder")
        if not isinstance(expected, dict) or file_digest(path) != expected.get("sha256"):
            raise BundleError(f"{where}: {name} does not match the checksum in {META_FILE} "
                              f"(changed or damaged after export): {_AGAIN}")
        present.append(name)
    return Bundle(folder, meta, tuple(present))


_UNZIP_LOCK = threading.Lock()


def open_bundle(source: str | os.PathLike, label: str | None = None) -> Bundle:
    """Read a bundle folder, or a bundle zip (extracted safely once, under the cache, by content hash).

    `label` names the bundle in messages (default: the file or folder name).
    """
    path = Path(source).expanduser()
    where = label or path.name
    if path.is_dir():
        return read_bundle(path, where)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle folder or zip: check the path")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{where}: not a bundle folder or a zip of one: give the folder that "
                          f"`python -m tlcore export` wrote, or the zip from Download model")
    dest = paths.cache_root() / "bundles" / file_digest(path)[:24]
    with _UNZIP_LOCK:
        if not (dest / ".complete").is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unzip-"))
            try:
                root = extract_zip(path, tmp, max_total_bytes=MAX_BUNDLE_BYTES).root
                (tmp / ".complete").write_text(root.relative_to(tmp.resolve()).as_posix())
                shutil.rmtree(dest, ignore_errors=True)
                os.replace(tmp, dest)
            except ValueError as exc:  # ArchiveError: one line already, naming the zip
                raise BundleError(str(exc).replace(path.name, where, 1)) from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    root = dest / (dest / ".complete").read_text()
    return read_bundle(root, where)


# ---- predicting -------------------------------------------------------------------------------


class OnnxPredictor:
    """A bundle's model.onnx on onnxruntime; `predict` as `tlcore.predict.Predictor.predict`."""

    engine = "onnxruntime"

    def __init__(self, bundle: Bundle, where: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The same thread count as PyTorch here (TLCORE_THREADS), not one per core.
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(bundle.folder / ONNX_FILE), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad graphs
            raise BundleError(f"{where}: onnxruntime cannot load {ONNX_FILE} ({' '.join(str(exc).split())[:200]}): "
                              f"{_AGAIN}") from None
        pre, n = bundle.preprocessing, len(bundle.class_names)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if (len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, pre["crop"], pre["crop"]]
                or len(outputs) != 1 or outputs[0].shape[-1] != n):
            raise BundleError(f"{where}: {ONNX_FILE} does not take (N, 3, {pre['crop']}, {pre['crop']}) images "
                              f"to {n} class scores as {META_FILE} says: {_AGAIN}")
        self.input_name = inputs[0].name
        self.class_names, self.resize = bundle.class_names, pre["resize"]
        self.crop, self.mean, self.std = pre["crop"], pre["mean"], pre["std"]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, R, R) uint8 -> (N, classes) float32 logits."""
        x = normalise(batch, self.crop, self.mean, self.std)
        return self.session.run(None, {self.input_name: x})[0]

    def predict(self, images: list, k: int = 5, names: list[str] | None = None) -> list[ImagePrediction]:
        def probabilities(batch: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.logits(batch.numpy())).float().softmax(1)

        return top_k(images, k, names, self.resize, self.class_names, probabilities)


def pytorch_predictor(bundle: Bundle, where: str, device: torch.device) -> Predictor:
    """A bundle's model.safetensors loaded into its backbone and head, strictly (shapes must match)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta, pre = bundle.meta, bundle.preprocessing
    spec = backbones.get_backbone(meta["backbone"])
    if spec.preprocessing(pre["crop"]) != (pre["resize"], pre["crop"]) or [*spec.mean, *spec.std] != [*pre["mean"], *pre["std"]]:
        raise BundleError(f"{where}: {META_FILE}'s preprocessing is not {spec.name}'s: {_AGAIN}")
    try:
        state = load_file(str(bundle.folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{where}: {WEIGHTS_FILE} is not a readable safetensors file ({exc}): {_AGAIN}") from None
    model = backbones.build_model(spec.name, len(bundle.class_names), pretrained=False,
                                  head=meta["head"]["kind"], hidden=tuple(meta["head"]["hidden"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise BundleError(f"{where}: {WEIGHTS_FILE} does not fit {spec.name} with a {meta['head']['kind']} head "
                          f"for {len(bundle.class_names)} classes ({first[:160]}): {_AGAIN}") from None
    return Predictor(f"{spec.name} bundle", model, spec, bundle.class_names, pre["crop"], device)


def load_predictor(source: str | os.PathLike, engine: str = "auto", device: str = "cpu", label: str | None = None):
    """A predictor for a bundle folder or zip: onnxruntime when it has model.onnx ("auto"), else PyTorch.

    Raises:
        BundleError: the bundle is missing, damaged, tampered with, or lacks the asked engine's file.
    """
    from tlcore.training.device import pick_device

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    where = label or Path(source).name
    bundle = open_bundle(source, where)
    if engine == "auto":
        engine = "onnxruntime" if ONNX_FILE in bundle.files else "pytorch"
    need = ONNX_FILE if engine == "onnxruntime" else WEIGHTS_FILE
    if need not in bundle.files:
        raise BundleError(f"{where}: has no {need} for {engine}: export with --format onnx,safetensors")
    predictor = OnnxPredictor(bundle, where) if engine == "onnxruntime" else pytorch_predictor(bundle, where, pick_device(device))
    predictor.name = f"{bundle.meta['backbone']} bundle {where}"
    predictor.model_file = need
    predictor.bundle = bundle
    return predictor


_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def cached_predictor(source: str | os.PathLike, engine: str = "auto", device: str = "cpu", label: str | None = None):
    """`load_predictor`, kept warm for the last few bundles (keyed by path and modification time)."""
    path = Path(source).expanduser().resolve()
    try:
        key = (str(path), path.stat().st_mtime_ns, engine, device, label)
    except OSError:
        return load_predictor(path, engine, device, label)  # raises the one-line BundleError
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    predictor = load_predictor(path, engine, device, label)
    with _CACHE_LOCK:
        _CACHE[key] = predictor
        while len(_CACHE) > 3:
            del _CACHE[next(iter(_CACHE))]
    return predictor


def store_upload(data: bytes, filename: str) -> Path:
    """Keep an uploaded bundle zip under the cache, named by its content hash (never by `filename`).

    Raises:
        BundleError: empty, too large or not a zip; `filename` only appears in the message.
    """
    label = Path(str(filename).replace("\\", "/")).name[:100] or "upload"
    if not data:
        raise BundleError(f"{label}: the file is empty (0 bytes): upload it again")
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{label}: over the {MAX_BUNDLE_BYTES / 2**30:.0f} GiB limit of a model bundle")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise BundleError(f"{label}: not a zip file: upload the zip that Download model gave you")
    folder = paths.cache_root() / "bundles"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.sha256(data).hexdigest()}.zip"
    if not target.is_file():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return target
