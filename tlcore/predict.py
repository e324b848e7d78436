"""Top-k prediction with a backbone's ImageNet head or a finished run's fine-tuned head.

Models stay loaded in a small process-wide cache, so a warm prediction is decode +
preprocess + one forward pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tlcore.data.batches import BatchMaker
from tlcore.data.images import ImageError, load_square
from tlcore.models import backbones
from tlcore.runs import RunStore
from tlcore.training.config import TrainConfig
from tlcore.training.device import autocast, memory_format, pick_device, tune_allocator

CACHE_SIZE = 3


@dataclass
class Prediction:
    label: str
    prob: float


@dataclass
class ImagePrediction:
    """Top-k for one image, or the one-line reason it could not be read."""

    image: str
    predictions: list[Prediction]
    error: str | None = None

    def to_dict(self) -> dict:
        out = {"image": self.image, "predictions": [p.__dict__ for p in self.predictions]}
        if self.error:
            out["error"] = self.error
        return out


class Predictor:
    """A loaded model in eval mode with its labels and preprocessing."""

    engine = "pytorch"  # what runs the forward pass (a bundle's model.onnx runs on onnxruntime)

    def __init__(self, name: str, model: torch.nn.Module, spec: backbones.BackboneSpec,
                 class_names: list[str], image_size: int | None, device: torch.device):
        tune_allocator()
        self.name = name
        self.spec = spec
        self.class_names = class_names
        self.device = device
        self.resize, crop = spec.preprocessing(image_size)
        # channels_last where it was measured faster (CUDA; on CPU per backbone): the same arithmetic
        self.model = model.to(device, memory_format=memory_format(device, spec.name)).eval()
        self.make_batch = BatchMaker(crop, spec.mean, spec.std, device, memory_format(device, spec.name))

    @torch.inference_mode()
    def predict(self, images: list, k: int = 5, names: list[str] | None = None) -> list[ImagePrediction]:
        """Top-k for each image (a path, bytes or file-like); probabilities sum to 1 over classes.

        Unreadable images get `error` set instead of failing the whole batch.
        """

        def probabilities(batch: torch.Tensor) -> torch.Tensor:
            with autocast(self.device):
                return self.model(self.make_batch(batch)).float().softmax(1).cpu()

        return top_k(images, k, names, self.resize, self.class_names, probabilities)


def top_k(images: list, k: int, names: list[str] | None, resize: int, class_names: list[str],
          probabilities: Callable[[torch.Tensor], torch.Tensor]) -> list[ImagePrediction]:
    """Decode images to (3, resize, resize) uint8, run `probabilities` per batch of 32, keep the top k.

    Shared by every engine, so that decoding, error reporting and ranking are the same whichever
    runs the model. Unreadable images get `error` set instead of failing the whole batch.
    """
    k = max(1, min(k, len(class_names)))
    names = names or [getattr(s, "name", None) or str(s) if not isinstance(s, bytes) else "upload" for s in images]
    results: list[ImagePrediction | None] = [None] * len(images)
    arrays, where = [], []
    for i, (src, name) in enumerate(zip(images, names, strict=True)):
        try:
            data = src.read() if hasattr(src, "read") else src
            arrays.append(torch.from_numpy(load_square(data, resize, name=Path(name).name)).permute(2, 0, 1))
            where.append(i)
        except ImageError as exc:
            results[i] = ImagePrediction(name, [], str(exc))
    for start in range(0, len(arrays), 32):
        probs = probabilities(torch.stack(arrays[start : start + 32]))
        top = probs.topk(k, 1)
        for row, (values, indices) in enumerate(zip(top.values, top.indices, strict=True)):
            i = where[start + row]
            results[i] = ImagePrediction(
                names[i], [Prediction(class_names[j], float(v)) for v, j in zip(values, indices, strict=True)]
            )
    return results


def imagenet_predictor(backbone: str, device: str = "auto") -> Predictor:
    """A backbone with its pretrained ImageNet head (downloads or fails with what to do)."""
    spec = backbones.get_backbone(backbone)
    labels = backbones.class_names(spec)
    if labels is None:
        raise ValueError(f"{backbone} has no pretrained ImageNet head: pick another backbone or a finished run")
    model = backbones.build_model(backbone)
    return Predictor(f"{backbone} (ImageNet)", model, spec, labels, None, pick_device(device))


def run_predictor(run_id: str, runs_dir: str | Path, device: str = "auto") -> Predictor:
    """A finished run's fine-tuned model with its own class names."""
    store = RunStore(runs_dir)
    record = store.load(run_id)
    cfg = TrainConfig.from_dict(record.config)
    if not record.class_names:
        raise ValueError(f"run {run_id} has no class names yet: it has not started training")
    model = backbones.build_model(cfg.backbone, len(record.class_names), pretrained=False,
                                  head=cfg.head, hidden=cfg.hidden)
    model.load_state_dict(store.load_weights(run_id))
    spec = backbones.get_backbone(cfg.backbone)
    return Predictor(f"{cfg.backbone} + {cfg.strategy} ({run_id})", model, spec, record.class_names,
                     cfg.image_size, pick_device(device))


_CACHE: OrderedDict[tuple, Predictor] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def get_predictor(*, backbone: str | None = None, run_id: str | None = None,
                  runs_dir: str | Path = "runs", device: str = "auto") -> Predictor:
    """A warm predictor from the process-wide cache (loads on a miss, keeps the last few)."""
    if (backbone is None) == (run_id is None):
        raise ValueError("give exactly one of backbone or run_id")
    if run_id is not None:
        weights = RunStore(runs_dir).path(run_id) / "model.safetensors"
        mtime = weights.stat().st_mtime if weights.exists() else None
        key = ("run", str(Path(runs_dir).resolve()), run_id, mtime, device)
    else:
        key = ("backbone", backbone, device)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    predictor = imagenet_predictor(backbone, device) if backbone else run_predictor(run_id, runs_dir, device)
    with _CACHE_LOCK:
        _CACHE[key] = predictor
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return predictor
