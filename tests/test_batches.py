"""Augmentation (random resized crop + horizontal flip) and the batches it runs on.

The images are coordinate maps: channel 0 holds each pixel's column, channel 1 its row. After a
crop and a bilinear resize the output's values still name the source columns and rows it came
from, so each output says where it was cropped from, how big the crop was, and whether it was
flipped.
"""

from __future__ import annotations

import pytest
import torch

from tlcore.data.batches import BatchMaker, center_crop, flip_crop
from tlcore.training import train as train_module

H, W, SIZE = 60, 80, 32


def coordinate_images(n: int, h: int = H, w: int = W) -> torch.Tensor:
    """(n, 3, h, w) float: channel 0 = column index, 1 = row index, 2 = zeros."""
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    return torch.stack([cols, rows, torch.zeros(h, w)]).expand(n, 3, h, w).contiguous()


def crop_boxes(out: torch.Tensor) -> list[dict]:
    """Per output image: the source window it shows and whether it is mirrored."""
    boxes = []
    for img in out:
        cols, rows = img[0], img[1]
        boxes.append({
            "flipped": bool(cols[:, 0].mean() > cols[:, -1].mean()),
            "left": cols.min().item(), "right": cols.max().item(),
            "top": rows.min().item(), "bottom": rows.max().item(),
        })
    return boxes


def test_shapes_and_dtype() -> None:
    out = flip_crop(coordinate_images(5), SIZE, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, SIZE, SIZE) and out.dtype == torch.float32
    maker = BatchMaker(SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    images = torch.randint(0, 256, (4, 3, 40, 48), dtype=torch.uint8)
    for augment in (False, True):
        batch = maker(images, augment=augment, generator=torch.Generator().manual_seed(0))
        assert batch.shape == (4, 3, SIZE, SIZE) and batch.dtype == torch.float32


def test_same_generator_state_same_output_different_state_different_output() -> None:
    x = coordinate_images(8)
    a = flip_crop(x, SIZE, torch.Generator().manual_seed(7))
    b = flip_crop(x, SIZE, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(7)
    flip_crop(x, SIZE, gen)  # advances the state
    c = flip_crop(x, SIZE, gen)
    d = flip_crop(x, SIZE, torch.Generator().manual_seed(8))
    for other in (c, d):
        differs = [not torch.equal(a[i], other[i]) for i in range(len(x))]
        assert all(differs), differs


def test_it_really_flips_about_half_the_images() -> None:
    boxes = crop_boxes(flip_crop(coordinate_images(200), SIZE, torch.Generator().manual_seed(0)))
    flipped = sum(b["flipped"] for b in boxes)
    assert 70 <= flipped <= 130, f"{flipped} of 200 images flipped"
    # A mirrored image runs right to left along every row; an unflipped one left to right.
    out = flip_crop(coordinate_images(20), SIZE, torch.Generator().manual_seed(1))
    for img, box in zip(out, crop_boxes(out), strict=True):
        steps = img[0].diff(dim=1)
        assert bool((steps <= 0).all() if box["flipped"] else (steps >= 0).all())


def test_it_really_crops_windows_of_varying_place_size_and_shape() -> None:
    boxes = crop_boxes(flip_crop(coordinate_images(200), SIZE, torch.Generator().manual_seed(0)))
    # The window (up to the resize's half-pixel blur) lies inside the image, covers 35-100% of it
    # and keeps an aspect ratio within 3/4..4/3 (unless the image edge clips it).
    areas, lefts, tops = [], [], []
    for b in boxes:
        assert -0.5 <= b["left"] < b["right"] <= W - 0.5 and -0.5 <= b["top"] < b["bottom"] <= H - 0.5
        width, height = b["right"] - b["left"] + 1, b["bottom"] - b["top"] + 1
        areas.append(width * height / (H * W))
        lefts.append(b["left"])
        tops.append(b["top"])
        assert 0.25 <= areas[-1] <= 1.05, b
        if width < W - 3 and height < H - 3:  # not clipped by the image edge
            assert 0.6 <= width / height <= 1.6, b
    assert min(areas) < 0.5 and max(areas) > 0.8, "crop sizes do not vary over the 35-100% range"
    assert max(lefts) - min(lefts) > W / 4 and max(tops) - min(tops) > H / 4, "crops do not move around"
    centre = crop_boxes(center_crop(coordinate_images(1), SIZE))[0]
    assert sum(b == centre for b in boxes) == 0, "some crops are the plain centre crop"


def test_batch_maker_augments_only_when_asked() -> None:
    maker = BatchMaker(SIZE, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), torch.device("cpu"))
    images = coordinate_images(6).round().to(torch.uint8)  # mean 0, std 1/255: values pass through
    plain = maker(images)
    assert torch.equal(plain, center_crop(images, SIZE).float())
    assert torch.equal(maker(images, augment=False, generator=torch.Generator().manual_seed(0)), plain)
    augmented = maker(images, augment=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(augmented, flip_crop(images.float(), SIZE, torch.Generator().manual_seed(0)))
    assert not torch.equal(augmented, plain)


@pytest.mark.parametrize("augment", ["flip-crop", "none"])
def test_training_batches_are_augmented_and_validation_batches_never(augment: str, run_training,
                                                                     monkeypatch) -> None:
    """Through the real training loop: flip_crop runs for training batches only, and only when asked."""
    import tlcore.data.batches

    phase = {"now": "train"}
    calls = {"train": 0, "val": 0}
    real_flip_crop, real_evaluate = tlcore.data.batches.flip_crop, train_module.evaluate

    def counting_flip_crop(*args, **kwargs):
        calls[phase["now"]] += 1
        return real_flip_crop(*args, **kwargs)

    def evaluate_marked(*args, **kwargs):
        phase["now"] = "val"
        try:
            return real_evaluate(*args, **kwargs)
        finally:
            phase["now"] = "train"

    monkeypatch.setattr(tlcore.data.batches, "flip_crop", counting_flip_crop)
    monkeypatch.setattr(train_module, "evaluate", evaluate_marked)
    result, events = run_training(augment=augment, epochs=2)
    epochs = [data for kind, data in events if kind == "epoch"]
    assert len(epochs) == 2 and all("val_acc" in row for row in epochs)
    train_batches = sum(1 for kind, data in events if kind == "batch" and data["phase"] == "train")
    assert calls["val"] == 0, "validation batches were augmented"
    assert calls["train"] == (train_batches if augment != "none" else 0)
