"""Classification heads put on a backbone: a linear layer or a Keras-style MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

from tlcore.names import HEAD_KINDS

DEFAULT_MLP_HIDDEN = (1024, 1024, 512)  # the Dense stack of the Keras examples users come from


def make_head(
    kind: str,
    in_features: int,
    num_classes: int,
    hidden: tuple[int, ...] = (),
    *,
    spatial: bool = False,
    dropout: float = 0.2,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Build a head mapping `in_features` to `num_classes` logits.

    Args:
        kind: "linear" or "mlp".
        in_features: width of the backbone's features.
        num_classes: number of output classes.
        hidden: hidden widths for "mlp" (default DEFAULT_MLP_HIDDEN).
        spatial: the input is a feature map; pool it to a vector first.
        dropout: dropout between MLP layers.
        generator: draws the initial weights (default: torch's process-wide generator).
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head {kind!r}: choose one of {', '.join(HEAD_KINDS)}")
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if spatial else []
    width = in_features
    if kind == "mlp":
        for h in hidden or DEFAULT_MLP_HIDDEN:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
    layers.append(nn.Linear(width, num_classes))
    if generator is not None:
        for layer in layers:
            if isinstance(layer, nn.Linear):
                _init_linear(layer, generator)
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """nn.Linear's own initialisation (`reset_parameters`), drawn from `generator`.

    A run's head must not depend on what other threads drew from the process-wide generator
    (see rng.py); `reset_parameters` offers no generator argument.
    """
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
