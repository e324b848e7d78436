"""Facts about each backbone for listings (the CLI's `backbones`, the Train page's picker)."""

from __future__ import annotations

from tlcore import backbones


def backbone_table() -> list[dict]:
    """One row per backbone: name, parameter count, input size, weights origin, offline or not."""
    rows = []
    for name in backbones.list_backbones():
        spec = backbones.get_backbone(name)
        params = spec.extra.get("num_params") or backbones.count_params(spec.build())
        rows.append({
            "name": name,
            "params": params,
            "input_size": spec.input_size,
            "weights": backbones.weights_source(spec),
            "available_offline": backbones.weights_available_offline(spec),
            "description": spec.description,
        })
    return rows
