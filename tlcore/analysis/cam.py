"""Grad-CAM: where in a photo a model looked for its top class, with the `grad-cam` package.

The target layer is each backbone's `BackboneSpec.cam_layer`. Three things make Grad-CAM fail
quietly on models like ours, and are handled here: a frozen layer has no gradient (its output
is made to require one for the duration), an in-place activation after the target layer
overwrites the saved activations (the layer's output is cloned for the layers after it), and
prediction runs under `torch.inference_mode` (turned off here). A fourth is not a fault but
looks like one: Grad-CAM keeps only regions that raised the class, so where none did (a photo
unlike any of a run's classes, scored below zero everywhere) its map is blank; that map is then
replaced by the same weighted sum unrectified and scaled, and `CamResult.raised` says so.
`grad-cam` is imported only when a CAM is asked for, so plain prediction stays as fast as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tlcore.data.images import load_square, open_image
from tlcore.models.backbones import get_module
from tlcore.predict import Predictor

OVERLAY_SIZE = 448  # px, longest side of the overlay picture
# Hooks go on a model shared by every session (the predictor cache): one CAM at a time.
_LOCK = threading.Lock()


@dataclass
class CamResult:
    """A Grad-CAM heatmap for one image and one class."""

    label: str
    prob: float
    heatmap: np.ndarray  # (crop, crop) float in [0, 1], over the square the model saw
    box: tuple[float, float, float, float]  # that square in original pixels: left, top, right, bottom
    overlay: Image.Image  # the square of the photo with the heatmap blended in
    peak: tuple[int, int]  # (x, y) of the heatmap's maximum, in original image pixels
    raised: bool = True  # False: no region raised the class; the heatmap shows where it was lowered least


def _model_view_box(size: tuple[int, int], resize: int, crop: int) -> tuple[float, float, float, float]:
    """The part of the original image (w, h) the model sees: load_square's centred square, then
    BatchMaker's centre crop of `crop` out of `resize`."""
    w, h = size
    side = min(w, h)
    scale = side / resize
    offset = (resize - crop) // 2
    left, top = (w - side) / 2 + offset * scale, (h - side) / 2 + offset * scale
    return left, top, left + crop * scale, top + crop * scale


def _blend(photo: Image.Image, heatmap: np.ndarray, weight: float = 0.5) -> Image.Image:
    import matplotlib

    colours = matplotlib.colormaps["jet"](heatmap)[..., :3]
    heat = Image.fromarray((colours * 255).astype(np.uint8)).resize(photo.size, Image.Resampling.BILINEAR)
    return Image.blend(photo.convert("RGB"), heat, 1 - weight)


class _GradientFriendly:
    """Hooks on the target layer: its output requires grad, and later layers get a copy."""

    def __init__(self, layer: torch.nn.Module):
        self.layer = layer
        self.handles = []

    def before(self):
        # Runs before grad-cam's own hooks, which only record gradients of outputs that need one.
        def need_grad(_m, _args, out):
            if not out.requires_grad:
                out.requires_grad_(True)  # a frozen stem: the output is a leaf, so this is allowed
        self.handles.append(self.layer.register_forward_hook(need_grad, prepend=True))

    def after(self):
        # Runs after grad-cam's hooks: an in-place ReLU downstream (DenseNet, Lite0) then
        # changes the copy, not the activations grad-cam keeps.
        self.handles.append(self.layer.register_forward_hook(lambda _m, _a, out: out.clone()))

    def remove(self):
        for h in self.handles:
            h.remove()


def grad_cam(predictor: Predictor, image, name: str = "upload", class_index: int | None = None) -> CamResult:
    """Grad-CAM of one image (a path or bytes) for `class_index` (default: the top class).

    Raises:
        ImageError: the image cannot be read.
        ValueError: the backbone names no CAM layer, or its map there is 1 x 1 (images too small).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    spec = predictor.spec
    if not spec.cam_layer:
        raise ValueError(f"{spec.name} names no Grad-CAM layer: set cam_layer in its BackboneSpec")
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else image
    photo = open_image(data, name)
    pixels = torch.from_numpy(load_square(data, predictor.resize, name=name)).permute(2, 0, 1)[None]
    x = predictor.make_batch(pixels).float()
    model = predictor.model
    layer = get_module(model, spec.cam_layer)
    hooks = _GradientFriendly(layer)
    with _LOCK, torch.inference_mode(False), torch.enable_grad():
        x = x.clone()  # a tensor made in inference mode cannot enter autograd
        hooks.before()
        try:
            with GradCAM(model=model, target_layers=[layer]) as cam:
                hooks.after()
                # No target: grad-cam follows the top class, in the same forward pass.
                targets = None if class_index is None else [ClassifierOutputTarget(class_index)]
                heatmap = cam(input_tensor=x, targets=targets)[0]
                if cam.activations_and_grads.activations[0].shape[-2:] == (1, 1):
                    raise ValueError(f"{spec.name} at {x.shape[-1]} px has a 1 x 1 map at {spec.cam_layer}: no places "
                                     f"to compare; use a run trained on larger images ({2 * x.shape[-1]} px or more)")
                raised = bool(heatmap.any())
                if not raised:
                    heatmap = _unrectified(cam, layer, x)
                probs = cam.outputs.detach().float().softmax(1)[0]
                class_index = int(probs.argmax()) if class_index is None else class_index
                prob = float(probs[class_index])
        finally:
            hooks.remove()
            model.zero_grad(set_to_none=True)
    box = _model_view_box(photo.size, predictor.resize, x.shape[-1])
    view = photo.convert("RGB").crop(tuple(round(v) for v in box))
    view.thumbnail((OVERLAY_SIZE, OVERLAY_SIZE))
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    scale = (box[2] - box[0]) / heatmap.shape[1]
    peak = (int(box[0] + (col + 0.5) * scale), int(box[1] + (row + 0.5) * scale))
    return CamResult(predictor.class_names[class_index], prob, heatmap, box, _blend(view, heatmap), peak, raised)


def _unrectified(cam, layer: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """grad-cam's last map without its ReLU, scaled to [0, 1] (all zero if the layer is 1 x 1)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    saved = cam.activations_and_grads
    acts, grads = saved.activations[0].numpy(), saved.gradients[0].numpy()
    raw = cam.get_cam_image(x, layer, None, acts, grads, False)
    return scale_cam_image(raw, cam.get_target_width_height(x))[0]
