"""The training configuration: one dataclass with defaults, validated at the boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from tlcore.names import BACKBONES, HEAD_KINDS, STRATEGIES

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "step", "cosine")
AUGMENTS = ("none", "flip-crop")
DEVICES = ("auto", "cpu", "cuda", "mps")
# The arithmetic: "auto" is bf16 (else fp16) autocast on CUDA and, on a CPU with native bf16, for
# the backbones it speeds up (device.amp_dtype); "fp32" turns autocast off; "bf16" forces it.
PRECISIONS = ("auto", "fp32", "bf16")


class SettingError(ValueError):
    """A setting outside its valid values: `name` is its TrainConfig field, `rule` the rest of the line.

    The CLI says "NAME RULE" (its flags are the field names); the app's form puts its own label
    for the field in front of the rule instead.
    """

    def __init__(self, name: str, rule: str):
        self.name, self.rule = name, rule
        super().__init__(f"{name} {rule}")


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults work offline out of the box."""

    backbone: str = "efficientnet_lite0"
    data: str = "digits"
    strategy: str = "feature_extraction"
    epochs: int = 5
    # 16, not 32: on CPU, Lite0 fine-tuning at 224 px peaks at 2.5 GB RSS with 16 and 4.1 GB with 32,
    # and 32 was no faster per image on 2 cores.
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    schedule: str = "none"
    head: str = "linear"
    hidden: tuple[int, ...] = ()  # MLP head widths; () = the Keras-style 1024-1024-512
    augment: str = "none"
    image_size: int | None = None  # None: the backbone's own input size
    seed: int = 0
    device: str = "auto"
    subset: int | None = None  # at most this many training images per class
    val_fraction: float = 0.2
    unfreeze_groups: int = 2  # partial: last N groups train
    lr_factor: float = 0.5  # discriminative/gradual: LR ratio between neighbouring groups
    head_epochs: int = 1  # gradual: head-only epochs
    feature_cache: bool = True  # reuse backbone features when the backbone is frozen
    precision: str = "auto"  # one of PRECISIONS; the feature cache is keyed by the dtype it resolves to
    # Seeds the train/val split and the subset; None: `seed`. An experiment fixes it so all its
    # runs see the same validation images while `seed` varies init, shuffling and augmentation.
    data_seed: int | None = None
    experiment_id: str | None = None  # the experiment this run belongs to (experiments.py)
    cell: dict | None = None  # its cell of the experiment's grid: backbone, strategy, lr, seed
    # Under torchrun: world_size, global_batch_size (= batch_size, split over the processes),
    # batch_size_per_process, backend (distributed.World.describe); None for one process.
    distributed: dict | None = None
    # Under torchrun on GPUs: BatchNorm layers that train use SyncBatchNorm (statistics over every
    # process's slice of the batch); refused elsewhere (distributed.check_sync_bn).
    sync_bn: bool = False

    def validate(self) -> TrainConfig:
        """Raise ValueError with one line naming the bad value and the valid ones."""
        choices = {
            "backbone": BACKBONES, "strategy": STRATEGIES, "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES, "head": HEAD_KINDS, "augment": AUGMENTS, "device": DEVICES,
            "precision": PRECISIONS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}: choose one of {', '.join(valid)}")
        ranges = {"epochs": (1, 1000), "batch_size": (1, 4096), "unfreeze_groups": (0, 100),
                  "head_epochs": (0, 1000), "seed": (0, 2**31 - 1)}
        for name, (lo, hi) in ranges.items():
            if not lo <= getattr(self, name) <= hi:
                raise SettingError(name, f"must be between {lo} and {hi}, got {getattr(self, name)}")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise SettingError("image_size", f"must be between 32 and 1024 pixels, got {self.image_size}")
        # Every refusal names the valid range. Learning rates above 10 only ever diverge.
        if not 0 < self.lr <= 10:
            raise SettingError("lr", f"must be greater than 0 and at most 10 (typical: 1e-4 to 1e-2), got {self.lr:g}")
        if not 0 < self.lr_factor <= 1:
            raise SettingError("lr_factor", f"must be greater than 0 and at most 1, got {self.lr_factor:g}")
        if not 0 <= self.weight_decay <= 1:
            raise SettingError("weight_decay", f"must be between 0 and 1, got {self.weight_decay:g}")
        if not 0 <= self.momentum < 1:
            raise SettingError("momentum", f"must be at least 0 and below 1, got {self.momentum:g}")
        if not 0 < self.val_fraction < 1:
            raise SettingError("val_fraction", f"must be between 0 and 1 (exclusive), got {self.val_fraction:g}")
        if self.subset is not None and not 1 <= self.subset <= 1_000_000:
            raise SettingError("subset", f"must be between 1 and 1000000, got {self.subset}")
        if any(not 1 <= h <= 65536 for h in self.hidden):
            raise SettingError("hidden", f"sizes must be between 1 and 65536, got {', '.join(map(str, self.hidden))}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a dict (e.g. a saved config.json), ignoring unknown keys."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(kwargs["hidden"] or ())
        return cls(**kwargs)


# Learning rates that suit each strategy with Adam. A new head on frozen features (and a
# network from random weights) learns well at 1e-3; updating pretrained layers at 1e-3 with
# Adam wrecks them in an epoch (val accuracy 100% at epoch 1, then 85% with rising loss, on
# cats vs dogs), so every strategy that trains the backbone starts 10x lower, as the README's
# finetune example and the usual transfer-learning recipes (fastai, Keras) do.
_ADAM_LR = {"feature_extraction": 1e-3, "scratch": 1e-3, "finetune": 1e-4, "partial": 1e-4,
            "discriminative": 1e-4, "gradual": 1e-4}
# Plain SGD (momentum 0.9) takes steps of lr x gradient, not Adam's normalised ones: the usual
# rates are 10x Adam's (torchvision's transfer-learning tutorial fine-tunes at 1e-3, its
# classification recipes train heads and from scratch at 1e-2 to 1e-1).
_SGD_SCALE = 10.0


def default_lr(strategy: str, optimizer: str = "adam") -> float:
    """The learning rate a run of `strategy` with `optimizer` starts from when none is given."""
    lr = _ADAM_LR.get(strategy, TrainConfig.lr)
    return lr * _SGD_SCALE if optimizer == "sgd" else lr
