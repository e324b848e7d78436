"""What the Train page's form needs besides widgets: defaults, advanced settings, checks before queueing.

Everything a run would fail on within seconds of starting (a folder without class folders, a
backbone whose weights are missing offline) is checked here, when the user presses Start, and
said in one line with the user's own names: never an internal storage path.
"""

from __future__ import annotations

import re

from tlcore import paths
from tlcore.data.sources import BUILTIN, check_builtin, resolve_data
from tlcore.data.uploads import upload_name, uploads_dir
from tlcore.models import backbones
from tlcore.models.weights import file_name, host_reachable, hub_checkpoint_dir
from tlcore.training.config import SettingError, TrainConfig
from tlcore.training.device import CPU_BF16, CUDA_FP32
from tlcore.training.strategies import make_strategy
from tlcore.views.charts import dataset_name

# Built-in datasets that come with their own validation split (a test set or a val/ folder):
# the validation fraction does not apply to them.
OWN_VAL_SPLIT = ("mnist", "fashion_mnist", "cifar10", "hymenoptera", "cats_dogs")
PRECISION_HELP = ("the arithmetic. auto: bf16 autocast on a GPU (fp16 where it has no bf16; fp32 for "
                  f"{', '.join(sorted(CUDA_FP32))}, measured slower in bf16) and on a CPU with "
                  f"native bf16 for the backbones it speeds up ({', '.join(sorted(CPU_BF16))}); fp32: no autocast; "
                  "bf16: always (refused where the device has none)")
ADVANCED = ("unfreeze_groups", "hidden", "lr_factor", "head_epochs", "val_fraction", "weight_decay", "precision")


# The form's label of each setting it shows: a refusal names the field the user sees.
LABELS = {"epochs": "Epochs", "batch_size": "Batch size", "lr": "Learning rate", "seed": "Seed",
          "subset": "Images per class", "image_size": "Image size", "unfreeze_groups": "Stages to train",
          "hidden": "MLP hidden", "lr_factor": "LR factor between layer groups",
          "head_epochs": "Head-only epochs", "val_fraction": "Validation fraction", "weight_decay": "Weight decay"}


def error_line(exc: Exception) -> str:
    """A refusal in the form's words: a setting out of range by its label ("Epochs must be ...")."""
    if isinstance(exc, SettingError):
        return f"{LABELS.get(exc.name, exc.name)} {exc.rule}"
    return str(exc)


def advanced_fields(strategy: str, head: str, builtin: str | None = None) -> list[str]:
    """The advanced settings (TrainConfig names, in ADVANCED order) that apply to these choices.

    Args:
        strategy, head: the chosen strategy and head.
        builtin: the built-in dataset when one is chosen, None for a folder or a zip.
    """
    applies = {
        "unfreeze_groups": strategy == "partial",
        "hidden": head == "mlp",
        "lr_factor": strategy in ("discriminative", "gradual"),
        "head_epochs": strategy == "gradual",
        "val_fraction": builtin not in OWN_VAL_SPLIT,
        "weight_decay": True,
        "precision": True,
    }
    return [name for name in ADVANCED if applies[name]]


def parse_hidden(text: str | None) -> tuple[int, ...]:
    """MLP hidden sizes from `512-256` or `512, 256`; "" means the default (1024-1024-512)."""
    parts = [p for p in re.split(r"[\s,x×-]+", (text or "").strip()) if p]
    if not all(p.isdigit() and 0 < int(p) <= 65536 for p in parts):
        raise ValueError(f"hidden sizes {text!r}: give whole numbers from 1 to 65536 separated by '-', e.g. 512-256")
    return tuple(int(p) for p in parts)


def advanced_defaults(defaults: TrainConfig) -> dict:
    """The Advanced fields' starting values, from TrainConfig's defaults (the MLP sizes as the
    empty text that stands for them)."""
    return {name: "" if name == "hidden" else getattr(defaults, name) for name in ADVANCED}


def advanced_values(fields: list[str], values: dict) -> dict:
    """TrainConfig keyword values of the shown advanced settings (the others keep defaults)."""
    out = {name: values[name] for name in fields if name in values}
    if "hidden" in out:
        out["hidden"] = parse_hidden(out["hidden"])
    return out


# ---- checks before a run is queued ---------------------------------------------------------


def public_message(text: str) -> str:
    """`text` with internal storage paths of uploads replaced by the user's file names.

    An uploaded zip is stored as `<data>/uploads/<sha256>.zip` and extracted to
    `<data>/extracted/<first 16 hex digits>/`; messages from the engine name those paths,
    which mean nothing to the user: `cats.zip/photos` does.
    """
    stored = {p.stem: upload_name(p) or "your zip" for p in uploads_dir().glob("*.zip")}

    def by_digest(match: re.Match) -> str:
        digest = match.group(1)
        return next((name for sha, name in stored.items() if sha.startswith(digest)), "your zip")

    roots = {str(paths.data_root()), str(paths.data_root().resolve())}
    for root in sorted(roots, key=len, reverse=True):
        text = re.sub(re.escape(root) + r"/uploads/([0-9a-f]{64})\.zip", by_digest, text)
        text = re.sub(re.escape(root) + r"/extracted/([0-9a-f]{16})", by_digest, text)
    return text


def check_dataset(spec: str, val_fraction: float = TrainConfig.val_fraction, subset: int | None = None,
                  seed: int = 0) -> str:
    """Check that a folder or zip holds a usable dataset; returns one line saying what it holds.

    A built-in dataset is only checked to be here or downloadable (some download when their first
    run starts).

    Raises:
        ValueError: no class folders, one class only, no images, a bad zip...; the message
            names the user's folder or file and the fix.
    """
    if spec in BUILTIN:
        check_builtin(spec)
        return ""
    try:
        source = resolve_data(spec, val_fraction=val_fraction, subset=subset, seed=seed)
    except ValueError as exc:
        raise ValueError(public_message(str(exc))) from None
    names = source.class_names
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (f"{dataset_name(spec)}: {len(names)} classes ({shown}), {len(source.train_items)} training and "
            f"{len(source.val_items)} validation images")


def _needs_weights(backbone: str, strategy: str) -> bool:
    """Whether this run loads pretrained weights that are not on this machine."""
    spec = backbones.get_backbone(backbone)
    return (spec.weights is not None and make_strategy(strategy).pretrained
            and not backbones.weights_available_offline(spec))


def weights_note(backbone: str, strategy: str) -> str | None:
    """A warning for the form when the run would need weights that are not on this machine."""
    if not _needs_weights(backbone, strategy):
        return None
    file = file_name(backbones.weights_source(backbones.get_backbone(backbone)))
    return (f"{backbone}'s pretrained weights are not on this machine: a run downloads them when it starts "
            f"(online only). Offline, put {file} in {hub_checkpoint_dir()}/, or pick efficientnet_lite0 "
            "(weights included) or the scratch strategy.")


def random_backbone_note(backbone: str, strategy: str) -> str | None:
    """A warning for the form when a strategy would freeze layers that have no pretrained weights.

    Frozen random layers are a fixed random projection: a feature_extraction run of simple_cnn on
    digits stays at chance (9.7%, seen in the app). Allowed (it is a baseline some want to see),
    but said before the run, not after.
    """
    if backbones.get_backbone(backbone).weights is not None or strategy not in ("feature_extraction", "partial"):
        return None
    return (f"{backbone} has no pretrained weights: {strategy} would freeze random layers and train little "
            "more than the head (near chance). Pick the scratch strategy to train it, or a pretrained backbone.")


def check_weights(backbone: str, strategy: str) -> None:
    """Raise ValueError before queueing a run whose weights are missing and cannot be downloaded."""
    if not _needs_weights(backbone, strategy):
        return
    url = backbones.weights_source(backbones.get_backbone(backbone))
    if not host_reachable(url):
        raise ValueError(f"{backbone}'s pretrained weights are not on this machine and there is no network: "
                         f"put {file_name(url)} in {hub_checkpoint_dir()}/, or pick efficientnet_lite0 "
                         "(weights included) or the scratch strategy")
