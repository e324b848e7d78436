"""Classification heads put on a backbone: a linear layer or a Keras-style MLP."""

from __future__ import annotations

from torch import nn

HEAD_KINDS = ("linear", "mlp")
DEFAULT_MLP_HIDDEN = (1024, 1024, 512)  # the Dense stack of the Keras examples users come from


def make_head(
    kind: str,
    in_features: int,
    num_classes: int,
    hidden: tuple[int, ...] = (),
    *,
    spatial: bool = False,
    dropout: float = 0.2,
) -> nn.Module:
    """Build a head mapping `in_features` to `num_classes` logits.

    Args:
        kind: "linear" or "mlp".
        in_features: width of the backbone's features.
        num_classes: number of output classes.
        hidden: hidden widths for "mlp" (default DEFAULT_MLP_HIDDEN).
        spatial: the input is a feature map; pool it to a vector first.
        dropout: dropout between MLP layers.
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
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)
