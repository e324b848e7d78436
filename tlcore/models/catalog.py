"""Facts about each backbone for listings (the CLI's `backbones`, the Train page's picker)."""

from __future__ import annotations

import torch

from tlcore.models import backbones


def _count_params(spec: backbones.BackboneSpec) -> int:
    """Parameters of the ImageNet architecture, built on the meta device (shapes, no storage)."""
    with torch.device("meta"):
        return backbones.count_params(spec.build())


def backbone_table() -> list[dict]:
    """One row per backbone: name, parameter count, input size, weights origin, offline or not."""
    rows = []
    for name in backbones.list_backbones():
        spec = backbones.get_backbone(name)
        params = spec.extra.get("num_params") or _count_params(spec)
        rows.append({
            "name": name,
            "params": params,
            "input_size": spec.input_size,
            "weights": backbones.weights_source(spec),
            "available_offline": backbones.weights_available_offline(spec),
            "description": spec.description,
        })
    return rows
