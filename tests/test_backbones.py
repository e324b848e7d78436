"""The backbone registry's contract, checked over every entry with random weights (no download)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlcore.models import backbones
from tlcore.models.backbones import get_backbone, list_backbones
from tlcore.training.strategies import FineTune

ALL = list_backbones()
SMALL = 64  # every backbone accepts 64 px (adaptive pooling); much cheaper than 224


def _batch(n: int = 2, size: int = SMALL) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_registry_has_the_twelve_backbones() -> None:
    assert len(ALL) == 12
    assert {"efficientnet_lite0", "simple_cnn", "resnet18", "vgg16", "alexnet"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_new_head_groups_and_gradients(name: str) -> None:
    """Head replaced for 3 classes; groups cover each parameter once; finetune reaches them all."""
    spec = get_backbone(name)
    model = backbones.build_model(name, 3, pretrained=False)

    head = backbones.get_module(model, spec.head)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert linears and linears[-1].out_features == 3

    groups = backbones.param_groups(model, name)
    assert groups[-1].name == "head" and len(groups) == len(spec.groups) + 1
    seen = [id(p) for g in groups for p in g.parameters()]
    assert len(seen) == len(set(seen)), "a parameter is in two groups"
    assert set(seen) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    assert all(g.parameters() for g in groups), "an empty group"
    assert {id(p) for p in head.parameters()} == {id(p) for p in groups[-1].parameters()}

    FineTune().optimizer_groups(groups, 0.01)
    model.train()
    out = model(_batch())
    assert out.shape == (2, 3)
    nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_mlp_head_with_hidden_sizes(name: str) -> None:
    spec = get_backbone(name)
    model = backbones.build_model(name, 4, pretrained=False, head="mlp", hidden=(32, 16))
    head = backbones.get_module(model, spec.head)
    widths = [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, nn.Linear)]
    assert [w[1] for w in widths] == [32, 16, 4]
    assert widths[1][0] == 32 and widths[2][0] == 16
    with torch.inference_mode():
        assert model.eval()(_batch(1)).shape == (1, 4)


@pytest.mark.parametrize("name", ALL)
def test_spec_preprocessing_is_sane(name: str) -> None:
    spec = get_backbone(name)
    resize, crop = spec.preprocessing()
    assert crop == spec.input_size and resize >= crop
    resize64, crop64 = spec.preprocessing(64)
    assert crop64 == 64 and resize64 >= 64
    assert resize64 == round(64 * spec.resize_size / spec.input_size)
    for stats in (spec.mean, spec.std):
        assert len(stats) == 3 and all(0 < v < 1 for v in stats)
    assert spec.description
    labels = backbones.class_names(spec)
    if spec.weights is None:
        assert labels is None
    else:
        assert len(labels) == 1000 and labels[0] == "tench"


@pytest.mark.parametrize("name", [n for n in ALL if get_backbone(n).weights not in (None, "package")])
def test_written_out_preprocessing_matches_torchvision_weights(name: str) -> None:
    """The registry spells out what torchvision's weights entry says, so it need not import torchvision."""
    import torchvision.models

    spec = get_backbone(name)
    weights = torchvision.models.get_weight(spec.weights)
    t = weights.transforms()
    assert (spec.input_size, spec.resize_size) == (t.crop_size[0], t.resize_size[0])
    assert (spec.mean, spec.std) == (tuple(t.mean), tuple(t.std))
    assert spec.extra["num_params"] == weights.meta["num_params"]
    assert backbones.weights_source(spec) == weights.url


def test_cli_import_leaves_torchvision_unimported() -> None:
    """torchvision.models and .ops cost over a second at start-up: only a build or a weights lookup pays it."""
    import subprocess
    import sys

    code = "import sys, tlcore.cli, tlcore.training.rng; print(sorted(m for m in sys.modules if m.startswith('torchvision')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as exc:
        get_backbone("nope")
    assert "'nope'" in str(exc.value)
    for name in ALL:
        assert name in str(exc.value)


def test_duplicate_registration_is_refused() -> None:
    before = dict(backbones._REGISTRY)
    with pytest.raises(ValueError, match="resnet18"):
        backbones.register_backbone(get_backbone("resnet18"))
    assert backbones._REGISTRY == before


def test_imagenet_head_is_kept_without_num_classes() -> None:
    model = backbones.build_model("simple_cnn", pretrained=False)
    assert model.fc.out_features == 10  # SimpleCNN's own default head


def test_weights_available_offline() -> None:
    assert backbones.weights_available_offline(get_backbone("efficientnet_lite0"))
    assert backbones.weights_available_offline(get_backbone("simple_cnn"))
    # TORCH_HOME is an empty folder in every test.
    assert not backbones.weights_available_offline(get_backbone("resnet18"))


@pytest.mark.parametrize(
    ("photo", "expected"),
    [("chelsea", {"tabby", "tiger cat", "Egyptian cat"}), ("coffee", {"espresso", "cup"})],
)
def test_lite0_packaged_weights_recognise_real_photos(photo: str, expected: set[str], png_bytes) -> None:
    from tlcore.predict import get_predictor

    predictor = get_predictor(backbone="efficientnet_lite0", device="cpu")
    [result] = predictor.predict([png_bytes(photo)], k=5, names=[f"{photo}.png"])
    top5 = [p.label for p in result.predictions]
    assert result.error is None and len(top5) == 5
    assert expected & set(top5), f"{photo}: top-5 was {top5}"


def test_bind_generator_swaps_torchvision_stochastic_depth() -> None:
    """rng looks StochasticDepth up lazily: a torchvision model built later still gets its modules swapped."""
    from tlcore.training.rng import GeneratorStochasticDepth, bind_generator

    model = backbones.build_model("efficientnet_b0", 3, pretrained=False)
    swapped = bind_generator(model, torch.Generator().manual_seed(0))
    assert sum(isinstance(m, GeneratorStochasticDepth) for m in model.modules()) == 16
    assert swapped == 17  # 16 stochastic depths and the classifier's dropout
