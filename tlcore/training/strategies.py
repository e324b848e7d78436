"""Freeze strategies: objects over a model's ordered parameter groups (stem ... head).

Each strategy has two hooks, as in fastai and Lightning's finetuning callbacks:
`optimizer_groups` before the optimizer is built (sets requires_grad, returns per-group
learning rates) and `on_epoch_start` (gradual unfreezing flips groups on). Frozen groups also
stay in eval mode, so their BatchNorm statistics and dropout are untouched by training.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tlcore.models.backbones import ParamGroup


def set_trainable(group: ParamGroup, trainable: bool) -> None:
    """Turn gradients on or off for every parameter of a group."""
    for p in group.parameters():
        p.requires_grad_(trainable)


def is_trainable(group: ParamGroup) -> bool:
    """Whether any parameter of the group trains."""
    return any(p.requires_grad for p in group.parameters())


def apply_train_mode(model: nn.Module, groups: list[ParamGroup]) -> None:
    """Train mode for trainable groups only; frozen groups and what only they feed stay in eval.

    Frozen groups keep eval mode, so their BatchNorm statistics and dropout are untouched.
    Parameterless modules outside every group (Lite0's `_dropout`, EfficientNet-B0's
    `classifier.0`, the dropouts between AlexNet's and VGG's frozen classifier layers) sit
    between the backbone and the head: they train exactly when the last backbone group does.
    So with the backbone frozen the model computes what the feature cache stores (head
    inputs in eval mode), and the cached and full-forward paths train the same model.
    """
    model.train()
    covered: set[int] = set()
    for group in groups:
        trainable = is_trainable(group)
        for module in group.modules:
            covered.update(id(m) for m in module.modules())
            if not trainable:
                module.eval()
    outside_trains = len(groups) > 1 and is_trainable(groups[-2])
    for module in model.modules():
        if id(module) not in covered:
            module.training = outside_trains  # this module alone: its children have their own say


@dataclass
class Strategy:
    """Base: train everything at one learning rate."""

    name = "finetune"
    summary = "trains every layer, starting from the pretrained weights"
    pretrained = True

    def optimizer_groups(self, groups: list[ParamGroup], lr: float) -> list[dict]:
        for g in groups:
            set_trainable(g, True)
        return [{"params": [p for g in groups for p in g.parameters()], "lr": lr, "name": "all"}]

    def on_epoch_start(self, epoch: int, groups: list[ParamGroup]) -> str | None:
        """Called before each epoch (0-based); returns a log line when something changed."""
        return None

    def backbone_frozen(self, epoch: int = 0) -> bool:
        """Whether only the head trains in this epoch (the feature cache applies)."""
        return False


class FineTune(Strategy):
    pass


@dataclass
class FeatureExtraction(Strategy):
    name = "feature_extraction"
    summary = "freezes the whole pretrained backbone and trains only the new head"

    def optimizer_groups(self, groups, lr):
        for g in groups[:-1]:
            set_trainable(g, False)
        set_trainable(groups[-1], True)
        return [{"params": groups[-1].parameters(), "lr": lr, "name": "head"}]

    def backbone_frozen(self, epoch=0):
        return True


@dataclass
class Partial(Strategy):
    """Train the last `n_groups` backbone groups and the head."""

    n_groups: int = 2
    name = "partial"
    summary = "freezes the early layers; trains the last N stages and the head"

    def optimizer_groups(self, groups, lr):
        cut = max(len(groups) - 1 - self.n_groups, 0)
        for i, g in enumerate(groups):
            set_trainable(g, i >= cut)
        return [{"params": [p for g in groups[cut:] for p in g.parameters()], "lr": lr, "name": "unfrozen"}]


def discriminative_lrs(n_groups: int, lr: float, factor: float) -> list[float]:
    """Learning rates for groups stem...head: the head gets lr, each earlier group lr*factor^k."""
    return [lr * factor ** (n_groups - 1 - i) for i in range(n_groups)]


@dataclass
class Discriminative(Strategy):
    """Train everything, the learning rate shrinking by `factor` per group from head to stem."""

    factor: float = 0.5
    name = "discriminative"
    summary = "trains every layer; earlier layers get smaller learning rates"

    def optimizer_groups(self, groups, lr):
        lrs = discriminative_lrs(len(groups), lr, self.factor)
        for g in groups:
            set_trainable(g, True)
        return [{"params": g.parameters(), "lr": r, "name": g.name} for g, r in zip(groups, lrs, strict=True)]


@dataclass
class Gradual(Discriminative):
    """fastai's fine_tune: the head alone for `head_epochs`, then all with discriminative rates."""

    head_epochs: int = 1
    name = "gradual"
    summary = "trains the head first, then unfreezes everything with layer-wise learning rates"

    def optimizer_groups(self, groups, lr):
        # Every group is in the optimizer from the start; frozen ones simply get no gradient,
        # so unfreezing later needs no new optimizer.
        param_groups = super().optimizer_groups(groups, lr)
        for g in groups[:-1]:
            set_trainable(g, False)
        return param_groups

    def on_epoch_start(self, epoch, groups):
        if epoch == self.head_epochs and not is_trainable(groups[0]):
            for g in groups:
                set_trainable(g, True)
            return f"epoch {epoch + 1}: unfroze all {len(groups)} groups with discriminative learning rates"
        return None

    def backbone_frozen(self, epoch=0):
        return epoch < self.head_epochs


@dataclass
class Scratch(Strategy):
    name = "scratch"
    summary = "random initial weights, every layer trained: the no-transfer baseline"
    pretrained = False


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FeatureExtraction, FineTune, Partial, Discriminative, Gradual, Scratch)
}


def make_strategy(name: str, *, unfreeze_groups: int = 2, lr_factor: float = 0.5, head_epochs: int = 1) -> Strategy:
    """Build a strategy by name; unknown names raise ValueError listing the known ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "partial":
        return Partial(n_groups=unfreeze_groups)
    if name == "discriminative":
        return Discriminative(factor=lr_factor)
    if name == "gradual":
        return Gradual(factor=lr_factor, head_epochs=head_epochs)
    return STRATEGIES[name]()
