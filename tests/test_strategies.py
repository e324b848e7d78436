"""Freeze strategies on a three-layer stand-in model registered as a test-only backbone."""

from __future__ import annotations

import uuid

import pytest
import torch
from torch import nn

from tlcore.models import backbones
from tlcore.models.heads import DEFAULT_MLP_HIDDEN, make_head
from tlcore.training.strategies import (
    STRATEGIES,
    Discriminative,
    FeatureExtraction,
    FineTune,
    Gradual,
    Partial,
    Scratch,
    apply_train_mode,
    discriminative_lrs,
    make_strategy,
)

LR = 0.1


class Tiny(nn.Module):
    """stem (conv + BN), body (conv + BN), fc: three groups once the head is counted."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.body(self.stem(x))), 1))


@pytest.fixture
def tiny():
    """(model with a 3-class head, its groups [stem, body, head]); the spec is removed after."""
    name = f"_test_tiny_{uuid.uuid4().hex[:8]}"
    backbones.register_backbone(
        backbones.BackboneSpec(name=name, build=Tiny, head="fc", groups=(("stem",), ("body",)),
                               input_size=16, resize_size=16, imagenet_labels=False)
    )
    try:
        torch.manual_seed(0)
        model = backbones.build_model(name, 3, pretrained=False)
        yield model, backbones.param_groups(model, name)
    finally:
        backbones._REGISTRY.pop(name)


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 3 + 1
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def _trainable(groups) -> list[bool]:
    flags = []
    for g in groups:
        req = {p.requires_grad for p in g.parameters()}
        assert len(req) == 1, f"group {g.name} is half frozen"
        flags.append(req.pop())
    return flags


def test_feature_extraction_trains_only_the_head_and_keeps_bn_stats(tiny) -> None:
    model, groups = tiny
    opt_groups = FeatureExtraction().optimizer_groups(groups, LR)
    assert _trainable(groups) == [False, False, True]
    assert [id(p) for g in opt_groups for p in g["params"]] == [id(p) for p in model.fc.parameters()]

    apply_train_mode(model, groups)
    assert not model.stem[1].training and not model.body[1].training and model.fc.training
    stem_before, body_before, head_before = _snapshot(model.stem), _snapshot(model.body), _snapshot(model.fc)
    _step(model, torch.optim.SGD(opt_groups, lr=LR))
    assert not _changed(stem_before, model.stem) and not _changed(body_before, model.body)
    assert _changed(head_before, model.fc) == {"weight", "bias"}


def test_finetune_trains_everything_and_updates_bn_stats(tiny) -> None:
    model, groups = tiny
    opt_groups = FineTune().optimizer_groups(groups, LR)
    assert _trainable(groups) == [True, True, True]
    assert len(opt_groups) == 1 and opt_groups[0]["lr"] == LR
    assert len(opt_groups[0]["params"]) == len(list(model.parameters()))
    apply_train_mode(model, groups)
    assert all(m.training for m in model.modules())
    before = _snapshot(model.stem)
    _step(model, torch.optim.SGD(opt_groups, lr=LR))
    assert {"0.weight", "1.running_mean", "1.running_var", "1.num_batches_tracked"} <= _changed(before, model.stem)


@pytest.mark.parametrize(("n", "expected"), [(0, [False, False, True]), (1, [False, True, True]),
                                             (2, [True, True, True]), (9, [True, True, True])])
def test_partial_trains_the_last_n_groups_and_the_head(tiny, n: int, expected: list[bool]) -> None:
    model, groups = tiny
    opt_groups = Partial(n_groups=n).optimizer_groups(groups, LR)
    assert _trainable(groups) == expected
    trainable_ids = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt_groups for p in g["params"]} == trainable_ids
    apply_train_mode(model, groups)
    assert model.stem[1].training == expected[0] and model.body[1].training == expected[1]


def test_discriminative_learning_rates_shrink_from_head_to_stem(tiny) -> None:
    model, groups = tiny
    opt_groups = Discriminative(factor=0.5).optimizer_groups(groups, LR)
    assert _trainable(groups) == [True, True, True]
    assert [g["lr"] for g in opt_groups] == pytest.approx([LR / 4, LR / 2, LR])
    assert [g["name"] for g in opt_groups] == ["group0", "group1", "head"]
    assert discriminative_lrs(4, 1.0, 0.1) == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])


def test_gradual_unfreezes_everything_after_head_epochs(tiny) -> None:
    model, groups = tiny
    strategy = Gradual(factor=0.5, head_epochs=2)
    opt = torch.optim.Adam(strategy.optimizer_groups(groups, LR))
    assert _trainable(groups) == [False, False, True]
    assert [strategy.backbone_frozen(e) for e in range(4)] == [True, True, False, False]

    for epoch in range(2):
        assert strategy.on_epoch_start(epoch, groups) is None
        apply_train_mode(model, groups)
        stem_before = _snapshot(model.stem)
        _step(model, opt)
        assert not _changed(stem_before, model.stem), f"stem trained in head-only epoch {epoch}"

    message = strategy.on_epoch_start(2, groups)
    assert message and "unfroze" in message
    assert _trainable(groups) == [True, True, True]
    apply_train_mode(model, groups)
    stem_before = _snapshot(model.stem)
    _step(model, opt)  # the same optimizer: the earlier groups were in it all along
    assert {"0.weight", "0.bias"} <= _changed(stem_before, model.stem)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([LR / 4, LR / 2, LR])
    assert strategy.on_epoch_start(3, groups) is None


def test_scratch_uses_random_weights_and_trains_everything(tiny) -> None:
    model, groups = tiny
    assert Scratch().pretrained is False
    assert all(cls.pretrained for name, cls in STRATEGIES.items() if name != "scratch")
    Scratch().optimizer_groups(groups, LR)
    assert _trainable(groups) == [True, True, True]


def test_make_strategy_passes_its_settings() -> None:
    assert make_strategy("partial", unfreeze_groups=3).n_groups == 3
    assert make_strategy("discriminative", lr_factor=0.1).factor == 0.1
    gradual = make_strategy("gradual", lr_factor=0.3, head_epochs=4)
    assert (gradual.factor, gradual.head_epochs) == (0.3, 4)
    assert set(STRATEGIES) == {"feature_extraction", "finetune", "partial", "discriminative", "gradual", "scratch"}
    for name in STRATEGIES:
        assert make_strategy(name).name == name


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as exc:
        make_strategy("freeze_some")
    assert "'freeze_some'" in str(exc.value)
    for name in STRATEGIES:
        assert name in str(exc.value)


def _linear_shapes(head: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, nn.Linear)]


def test_linear_head() -> None:
    head = make_head("linear", 64, 5)
    assert isinstance(head, nn.Linear) and _linear_shapes(head) == [(64, 5)]


def test_mlp_head_shapes_and_hidden_sizes() -> None:
    head = make_head("mlp", 64, 5, (32, 16))
    assert _linear_shapes(head) == [(64, 32), (32, 16), (16, 5)]
    assert sum(isinstance(m, nn.Dropout) for m in head.modules()) == 2
    assert head(torch.randn(3, 64)).shape == (3, 5)
    default = make_head("mlp", 64, 5)
    assert [s[1] for s in _linear_shapes(default)] == [*DEFAULT_MLP_HIDDEN, 5]


def test_spatial_head_pools_a_feature_map() -> None:
    head = make_head("mlp", 8, 2, (4,), spatial=True)
    assert head(torch.randn(3, 8, 5, 5)).shape == (3, 2)


def test_unknown_head_kind() -> None:
    with pytest.raises(ValueError, match="linear, mlp"):
        make_head("conv", 8, 2)
