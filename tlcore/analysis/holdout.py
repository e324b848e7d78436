"""Evaluate a finished run on another labelled folder or zip: the same report, on new images.

The test set's class folders are matched to the run's class names by name. Folders whose
names are not among them are reported with their image counts, never silently dropped, and a
test set that shares no class with the run is refused with what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tlcore.analysis.report import Interpretation
from tlcore.data.images import ImageError, load_square
from tlcore.data.sources import BUILTIN, resolve_data
from tlcore.predict import get_predictor
from tlcore.training.device import autocast

BATCH = 16


class HoldoutError(ValueError):
    """The test set cannot be evaluated with this run; the message says what to do."""


def _labelled_files(spec: str, run_classes: list[str]) -> tuple[list[str], list[int], dict[str, int], list]:
    """(paths, run class indices, {unknown folder: images}, skipped) of a folder or zip of class folders."""
    if spec in BUILTIN:
        raise HoldoutError(f"{spec} is a built-in dataset: evaluate on a folder or .zip of class folders "
                           "(the run's own validation report covers its built-in data)")
    # Every image counts: split in halves only so that each class keeps at least one image either side.
    source = resolve_data(spec, val_fraction=0.5, seed=0)
    index = {name: i for i, name in enumerate(run_classes)}
    paths, labels, unknown = [], [], {}
    for item, label in zip(source.train_items + source.val_items, source.train_labels + source.val_labels,
                           strict=True):
        name = source.class_names[label]
        if name in index:
            paths.append(str(item))
            labels.append(index[name])
        else:
            unknown[name] = unknown.get(name, 0) + 1
    if not paths:
        raise HoldoutError(f"{Path(spec).name} has none of the run's classes ({', '.join(run_classes[:10])}): "
                           "point at a folder with one sub-folder per class, named like the run's classes")
    order = np.argsort(paths, kind="stable")
    return [paths[i] for i in order], [labels[i] for i in order], unknown, list(source.skipped)


def in_training_folder(items: list[str], data_spec: str | None) -> int:
    """How many of `items` lie in the folder the run was trained on (its train or validation images).

    Accuracy on them is no test on new images: a folder that holds the run's own data (say the
    whole dataset, train/ included) flatters it. A run on a zip or built-in data counts 0.
    """
    root = Path(data_spec).expanduser() if data_spec and data_spec not in BUILTIN else None
    if root is None or not root.is_dir():
        return 0
    root = root.resolve()
    return sum(Path(item).resolve().is_relative_to(root) for item in items)


@torch.inference_mode()
def evaluate_on(run_id: str, spec: str, runs_dir: str | Path, device: str = "auto") -> Interpretation:
    """Run a finished run's model over a labelled folder or zip and return its report.

    Raises:
        HoldoutError: a built-in dataset name, or no class in common with the run.
        tlcore.data.sources.DataError: the path is missing or is not a folder of class folders.
        tlcore.runs.RunNotFound: no such run, or it has no saved weights.
    """
    predictor = get_predictor(run_id=run_id, runs_dir=runs_dir, device=device)
    paths, labels, unknown, skipped = _labelled_files(spec, predictor.class_names)
    kept, kept_labels, pixels = [], [], []
    for path, label in zip(paths, labels, strict=True):
        try:
            pixels.append(torch.from_numpy(load_square(path, predictor.resize)).permute(2, 0, 1))
        except ImageError as exc:
            skipped.append((Path(path).name, str(exc)))
            continue
        kept.append(path)
        kept_labels.append(label)
    if not kept:
        raise HoldoutError(f"no readable images in {Path(spec).name}: add JPEG or PNG images to its class folders")
    probs = []
    for start in range(0, len(pixels), BATCH):
        batch = torch.stack(pixels[start : start + BATCH])
        with autocast(predictor.device):
            probs.append(predictor.model(predictor.make_batch(batch)).float().softmax(1).cpu())
    return Interpretation(list(predictor.class_names), kept, np.asarray(kept_labels, dtype=np.int64),
                          torch.cat(probs).double().numpy(), Path(spec).name,
                          unknown, skipped)
