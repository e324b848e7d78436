"""Names the command line and the config accept, and a dataset's display name: all without importing torch.

`python -m tlcore runs` and `--help` start in well under 1.5 s only if they import no torch (1.5 s
by itself), no pandas or altair. The registries these names come from (backbones.py,
strategies.py) import torch; tests/test_startup.py checks that each tuple here equals its registry.
"""

from __future__ import annotations

from pathlib import Path

# backbones.list_backbones(), in registration order.
BACKBONES = ("alexnet", "vgg16", "resnet18", "resnet34", "resnet50", "densenet121", "squeezenet1_1",
             "googlenet", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_lite0", "simple_cnn")
# strategies.STRATEGIES, in its order.
STRATEGIES = ("feature_extraction", "finetune", "partial", "discriminative", "gradual", "scratch")
HEAD_KINDS = ("linear", "mlp")
BUILTIN = ("digits", "mnist", "fashion_mnist", "cifar10", "hymenoptera", "cats_dogs")
SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


def dataset_name(spec: str | None) -> str:
    """A dataset spec for display: built-in names as they are, uploads by the user's file name,
    datasets built on the Train page by the user's name, other paths by their last part (with its
    parent when that part is a split folder such as train/ or val/)."""
    if not spec:
        return "?"
    # Imported here: builder pulls numpy and PIL, which a plain name never needs.
    from tlcore.data.builder import built_name
    from tlcore.data.uploads import upload_name

    if spec in BUILTIN:
        return spec
    path = Path(spec)
    if not ("/" in spec or "\\" in spec):
        shown = spec
    elif path.name.lower() in SPLIT_NAMES and path.parent.name:  # "hymenoptera_data/train", not "train"
        shown = f"{path.parent.name}/{path.name}"
    else:
        shown = path.name
    return upload_name(spec) or built_name(spec) or shown


def count(n: int, noun: str) -> str:
    """`1 file`, `3 files`: a number and its noun, singular for one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
