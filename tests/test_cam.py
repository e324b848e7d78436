"""Grad-CAM: the heatmap's peak lands on the cat, for Lite0's ImageNet head and for a trained run."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from tlcore.analysis.cam import grad_cam
from tlcore.models import backbones
from tlcore.predict import Predictor, get_predictor
from tlcore.views import ui

TABBY = 281  # ImageNet's "tabby" class


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _cat_and_coffee(cat_at: tuple[int, int]) -> bytes:
    """A 448 px square: the cat's face in the quadrant at `cat_at`, coffee in the opposite one."""
    cat = Image.fromarray(skimage.data.chelsea()).crop((60, 0, 360, 300)).resize((224, 224))
    coffee = Image.fromarray(skimage.data.coffee()).resize((224, 224))
    canvas = Image.new("RGB", (448, 448), (128, 128, 128))
    canvas.paste(cat, cat_at)
    canvas.paste(coffee, (224 - cat_at[0], 224 - cat_at[1]))
    return _png(canvas)


def _in_quadrant(peak, corner) -> bool:
    return all(c <= p < c + 224 for p, c in zip(peak, corner, strict=True))


def test_lite0_looks_at_the_cat() -> None:
    predictor = get_predictor(backbone="efficientnet_lite0", device="cpu")
    result = grad_cam(predictor, _png(Image.fromarray(skimage.data.chelsea())), "chelsea.png")
    assert result.label in ("tabby", "tiger cat", "Egyptian cat")
    assert result.heatmap.shape == (224, 224) and 0 <= result.heatmap.min() and result.heatmap.max() <= 1
    # chelsea is 451 x 300: the cat's head fills x 30-390; the right edge is background.
    assert 30 <= result.peak[0] <= 390 and 0 <= result.peak[1] < 300
    assert result.overlay.size[0] > 100
    for corner in ((0, 0), (224, 224), (224, 0), (0, 224)):
        peak = grad_cam(predictor, _cat_and_coffee(corner), "grid.png", class_index=TABBY).peak
        assert _in_quadrant(peak, corner), f"cat at {corner}, heatmap peak at {peak}"


def test_a_trained_run_looks_at_the_cat(image_folder, tl_env, tiny_config) -> None:
    from tlcore.training.jobs import get_manager

    cfg = tiny_config(backbone="efficientnet_lite0", data=str(image_folder), strategy="feature_extraction",
                      epochs=3, lr=3e-3, image_size=128, subset=None, val_fraction=0.34)
    manager = get_manager(tl_env.runs)
    run_id = manager.submit(cfg)
    manager.wait(run_id)
    assert manager.snapshot(run_id)["status"] == "finished"
    predictor = get_predictor(run_id=run_id, runs_dir=tl_env.runs, device="cpu")
    cat = predictor.class_names.index("cat")
    for corner in ((0, 0), (224, 224)):
        result = grad_cam(predictor, _cat_and_coffee(corner), "grid.png", class_index=cat)
        assert result.label == "cat" and result.heatmap.shape == (128, 128)
        assert _in_quadrant(result.peak, corner), f"cat at {corner}, heatmap peak at {result.peak}"


@pytest.mark.parametrize("name", ["densenet121", "efficientnet_lite0", "resnet18", "vgg16", "simple_cnn"])
def test_frozen_models_with_in_place_activations_give_a_map(name: str) -> None:
    """Random weights, every parameter frozen: the CAM layer still gets a gradient.

    (Grad-CAM keeps only positive evidence, so a random model's map for one class may be all
    zero; not for every class.)
    """
    spec = backbones.get_backbone(name)
    torch.manual_seed(0)
    model = backbones.build_model(name, 3, pretrained=False)
    for p in model.parameters():
        p.requires_grad_(False)
    predictor = Predictor(name, model, spec, ["a", "b", "c"], 64, torch.device("cpu"))
    maps = [grad_cam(predictor, _cat_and_coffee((0, 0)), "grid.png", class_index=k).heatmap for k in range(3)]
    assert all(m.shape == (64, 64) and np.isfinite(m).all() for m in maps)
    assert max(m.max() for m in maps) > 0, "all-zero maps: the gradient or the activations were lost"
    assert not any(p.requires_grad for p in model.parameters()), "CAM left parameters unfrozen"
    assert all(p.grad is None for p in model.parameters())


def _feature_extraction_lite0(image_size: int) -> tuple[Predictor, torch.nn.Module]:
    """Pretrained Lite0, frozen by the feature_extraction strategy, with a 3-class head in which
    every feature lowers class "a" and only its bias makes it the top class: a run's head shown
    a photo unlike its classes (a digits run and a photo of bees, as QA found)."""
    from tlcore.training.strategies import make_strategy

    model = backbones.build_model("efficientnet_lite0", 3, seed=0)
    make_strategy("feature_extraction").optimizer_groups(backbones.param_groups(model, "efficientnet_lite0"), 1e-3)
    with torch.no_grad():
        model._fc.weight.copy_(-model._fc.weight.abs())
        model._fc.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    spec = backbones.get_backbone("efficientnet_lite0")
    return Predictor("fe", model, spec, ["a", "b", "c"], image_size, torch.device("cpu")), model


def test_a_class_no_region_raised_still_gets_a_real_map_and_predictions_stay() -> None:
    predictor, model = _feature_extraction_lite0(64)
    photo = _cat_and_coffee((0, 0))
    before = predictor.predict([photo], k=3)[0].predictions
    flags = [p.requires_grad for p in model.parameters()]
    assert any(flags) and not all(flags), "the backbone should be frozen and the head trainable"
    result = grad_cam(predictor, photo, "grid.png")
    assert result.label == "a" and result.heatmap.shape == (64, 64)
    # Grad-CAM's map here is all zero (a flat dark-blue overlay); the fallback spreads over [0, 1].
    assert np.ptp(result.heatmap) > 0.5, f"a blank map: spread {np.ptp(result.heatmap)}"
    assert not result.raised
    assert "no region raised it" in ui.cam_caption("your run", result)  # the Predict page's caption
    assert predictor.predict([photo], k=3)[0].predictions == before
    assert [p.requires_grad for p in model.parameters()] == flags and all(p.grad is None for p in model.parameters())


def test_a_one_by_one_map_is_refused_with_the_fix() -> None:
    predictor, _ = _feature_extraction_lite0(32)  # Lite0 divides by 32: one place left
    with pytest.raises(ValueError, match="1 x 1 map.*64 px or more"):
        grad_cam(predictor, _cat_and_coffee((0, 0)), "grid.png")


def test_every_backbone_names_a_cam_layer() -> None:
    for name in backbones.list_backbones():
        spec = backbones.get_backbone(name)
        model = spec.build()
        layer = backbones.get_module(model, spec.cam_layer)
        assert layer is not model and spec.cam_layer, name
