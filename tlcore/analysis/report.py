"""A run's report from its saved per-image predictions (fastai's `ClassificationInterpretation`).

Computed once from the probabilities in `val_results.json` (or from an evaluation on another
labelled set, see holdout.py); every view here is cheap and never runs the model again:
the confusion matrix, precision/recall/F1 per class, the most-confused pairs, and the
images with the highest loss.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.metrics import classification_report, confusion_matrix

from tlcore.data.images import ImageError, open_image
from tlcore.runs import RunStore
from tlcore.training.config import TrainConfig

NO_RESULTS = "no per-image results for this run: retrain it"


class NoResults(LookupError):
    """The run has no saved per-image results (made before they were saved, or never trained)."""


@dataclass
class Interpretation:
    """Per-image predictions of one model on one labelled set, and views of them."""

    classes: list[str]
    items: list  # image paths (folders, zips) or indices into the validation split (arrays)
    labels: np.ndarray  # (N,) true class indices
    probs: np.ndarray  # (N, C) predicted probabilities
    source: str = "validation"  # what the images are, for titles
    unknown_folders: dict[str, int] = field(default_factory=dict)  # test folders not among the classes
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unreadable files and why

    @classmethod
    def from_results(cls, results: dict, source: str = "validation") -> Interpretation:
        """From the val_results.json contract (see runs.py)."""
        probs = np.asarray(results["probs"], dtype=np.float64).reshape(len(results["labels"]), len(results["classes"]))
        return cls(list(results["classes"]), list(results["items"]), np.asarray(results["labels"], dtype=np.int64),
                   probs, source)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def losses(self) -> np.ndarray:
        """Cross-entropy per image: -log p(true class)."""
        p_true = self.probs[np.arange(len(self.labels)), self.labels]
        return 0.0 - np.log(np.clip(p_true, 1e-12, 1.0))  # 0.0 - : a sure right answer shows loss 0, not -0

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean()) if len(self.labels) else 0.0

    def confusion(self, normalize: bool = False) -> np.ndarray:
        """Actual (rows) x predicted (columns): counts, or each row as fractions of its class."""
        return confusion_matrix(self.labels, self.preds, labels=list(range(len(self.classes))),
                                normalize="true" if normalize else None)

    def per_class(self) -> list[dict]:
        """Precision, recall, F1 and support of each class (scikit-learn's classification_report)."""
        rep = classification_report(self.labels, self.preds, labels=list(range(len(self.classes))),
                                    target_names=self.classes, output_dict=True, zero_division=0)
        return [{"class": c, "precision": rep[c]["precision"], "recall": rep[c]["recall"],
                 "f1": rep[c]["f1-score"], "support": int(rep[c]["support"])} for c in self.classes]

    def most_confused(self, min_count: int = 1) -> list[dict]:
        """Off-diagonal cells of the confusion matrix, largest first: actual -> predicted, count."""
        cm = self.confusion()
        pairs = [{"actual": self.classes[a], "predicted": self.classes[p], "count": int(cm[a, p])}
                 for a in range(len(self.classes)) for p in range(len(self.classes))
                 if a != p and cm[a, p] >= min_count]
        return sorted(pairs, key=lambda r: (-r["count"], r["actual"], r["predicted"]))

    def top_losses(self, k: int | None = None, actual: str | None = None, predicted: str | None = None) -> list[dict]:
        """Images by loss, highest first, optionally only one confusion cell (actual, predicted)."""
        preds, losses = self.preds, self.losses
        rows = []
        for i in np.argsort(-losses, kind="stable"):
            true, pred = self.classes[self.labels[i]], self.classes[preds[i]]
            if (actual is not None and true != actual) or (predicted is not None and pred != predicted):
                continue
            rows.append({"index": int(i), "item": self.items[i], "true": true, "predicted": pred,
                         "prob": float(self.probs[i, preds[i]]), "loss": float(losses[i])})
            if k is not None and len(rows) >= k:
                break
        return rows

    def to_dict(self, top: int = 20) -> dict:
        """Everything as one JSON-ready dict (`report --json`)."""
        return {"source": self.source, "classes": self.classes, "count": len(self.labels), "accuracy": self.accuracy,
                "confusion": self.confusion().tolist(), "per_class": self.per_class(),
                "most_confused": self.most_confused(), "top_losses": self.top_losses(top),
                "unknown_folders": self.unknown_folders, "skipped": [list(s) for s in self.skipped]}


def run_report(store: RunStore, run_id: str) -> Interpretation:
    """The report of a run's saved validation results.

    Raises:
        tlcore.runs.RunNotFound: no such run.
        NoResults: the run saved no per-image results (message: retrain it).
    """
    store.load(run_id)  # RunNotFound for an unknown id
    results = store.load_val_results(run_id)
    if not results:
        raise NoResults(f"{NO_RESULTS} ({run_id})")
    return Interpretation.from_results(results, f"validation images, epoch {results.get('epoch')}")


# ---- pictures of the items ------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _val_items(data: str, val_fraction: float, subset: int | None, seed: int) -> list:
    from tlcore.data.sources import resolve_data

    return resolve_data(data, val_fraction=val_fraction, subset=subset, seed=seed).val_items


def item_picture(item, config: dict, size: int = 160) -> Image.Image | None:
    """A thumbnail of one item: an image file, or a row of a built-in dataset's validation split.

    Returns None when the file is gone or unreadable.
    """
    if isinstance(item, str):
        try:
            picture = open_image(Path(item).read_bytes(), Path(item).name)
        except (OSError, ImageError):
            return None
        # Up or down to `size`: a 32 px test image is as visible in the gallery as a photo.
        return ImageOps.contain(picture.convert("RGB"), (size, size))
    cfg = TrainConfig.from_dict(config)
    seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    pixels = np.asarray(_val_items(cfg.data, cfg.val_fraction, cfg.subset, seed)[int(item)])
    picture = Image.fromarray(pixels.astype(np.uint8))
    # Digits are 8 px: scale up without blurring, so each pixel stays visible.
    return picture.convert("RGB").resize((size, size), Image.Resampling.NEAREST)
