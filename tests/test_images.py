"""Tests for tlcore.data.images: every input is built here, in tmp_path."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tlcore.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, load_square, open_image

REPO_ROOT = Path(__file__).resolve().parents[1]
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _close(pixel, expected, tol: int = 40) -> bool:
    """True if every channel is within tol of the expected value (JPEG is lossy)."""
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def _noisy_jpeg(path: Path, size: tuple[int, int] = (256, 256)) -> Path:
    """A JPEG of random noise, so that its data is large and evenly spread over the file."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return _save(Image.fromarray(arr), path, quality=95)


def _png_bytes(width: int, height: int, idat: bytes, colour_type: int = 2) -> bytes:
    """A PNG file assembled by hand, so it can claim any size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _assert_one_line_error(exc_info: pytest.ExceptionInfo, name: str) -> str:
    message = str(exc_info.value)
    assert name in message
    assert "\n" not in message
    return message


# --- files that must be refused ------------------------------------------------------------


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as exc_info:
        open_image(path)
    assert "empty" in _assert_one_line_error(exc_info, "empty.jpg")


def test_zero_byte_upload_is_refused_as_upload() -> None:
    with pytest.raises(ImageError) as exc_info:
        load_square(b"", 8)
    _assert_one_line_error(exc_info, "upload")


def test_truncated_jpeg_raises_instead_of_returning_grey(tmp_path: Path) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = _noisy_jpeg(tmp_path / "full.jpg").read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as exc_info:
        load_square(path, 32)
    assert "truncated" in _assert_one_line_error(exc_info, "half.jpg")
    with pytest.raises(ImageError):
        open_image(path.read_bytes(), name="half.jpg")


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    data = io.BytesIO()
    Image.fromarray(arr).save(data, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageError) as exc_info:
        open_image(path)
    _assert_one_line_error(exc_info, "cut.png")


def test_html_page_named_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_text("<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n")
    with pytest.raises(ImageError) as exc_info:
        open_image(path)
    message = _assert_one_line_error(exc_info, "cat.jpg")
    assert "not an image" in message and "HTML" in message


def test_text_file_named_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("just some notes\nsecond line\n")
    with pytest.raises(ImageError) as exc_info:
        load_square(path, 16)
    assert "text file" in _assert_one_line_error(exc_info, "notes.jpg")


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    # PPM is a real image format Pillow can read, but it is not one we accept.
    path = tmp_path / "odd.jpg"
    _save(Image.new("RGB", (4, 4), RED), path, format="PPM")
    with pytest.raises(ImageError) as exc_info:
        open_image(path)
    assert "not an image" in _assert_one_line_error(exc_info, "odd.jpg")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as exc_info:
        open_image(tmp_path / "gone.png")
    assert "not found" in _assert_one_line_error(exc_info, "gone.png")


def test_newline_in_name_stays_one_line() -> None:
    with pytest.raises(ImageError) as exc_info:
        open_image(b"hello", name="bad\nname.jpg")
    assert "\n" not in str(exc_info.value)


def test_load_square_rejects_nonpositive_size(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (4, 4), RED), tmp_path / "a.png")
    with pytest.raises(ValueError):
        load_square(path, 0)


# --- decompression bombs -------------------------------------------------------------------


def test_png_claiming_30000_squared_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(30000, 30000, zlib.compress(b"\0" * (1 + 3 * 30000))))
    assert path.stat().st_size < 10_000
    start = time.perf_counter()
    with pytest.raises(ImageError) as exc_info:
        load_square(path, 64)
    assert time.perf_counter() - start < 1.0
    assert "too large" in _assert_one_line_error(exc_info, "bomb.png")


def test_image_over_max_pixels_but_under_pillow_limit_is_refused(tmp_path: Path) -> None:
    # 9000 x 9000 is above MAX_PIXELS but below Pillow's own bomb threshold, so only our
    # check stands between this 230 KB file and ~250 MB of decoded pixels.
    side = 9000
    assert side * side > MAX_PIXELS and side * side < Image.MAX_IMAGE_PIXELS
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    path = tmp_path / "bomb9000.png"
    path.write_bytes(_png_bytes(side, side, idat))
    assert path.stat().st_size < 1_000_000

    # Measured in a fresh process: ru_maxrss is a high-water mark, so earlier tests in
    # this process could otherwise hide the growth.
    script = textwrap.dedent(
        """
        import resource, sys
        from tlcore.data.images import ImageError, load_square
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_square(sys.argv[1], 64)
            print("DECODED")
        except ImageError as exc:
            print("REFUSED", exc)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("GROWTH_KB", after - before)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert "REFUSED bomb9000.png: image too large" in result.stdout, result.stdout
    growth_kb = int(result.stdout.split("GROWTH_KB")[1])
    assert growth_kb < 200 * 1024, f"peak RSS grew by {growth_kb / 1024:.0f} MB"


# --- formats and modes that must work ------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        (".jpg", {"quality": 95}),
        (".jpeg", {"quality": 95}),
        (".png", {}),
        (".gif", {}),
        (".webp", {"lossless": True}),
        (".bmp", {}),
        (".tif", {}),
        (".tiff", {"compression": "tiff_lzw"}),
    ],
)
def test_each_supported_extension_decodes(tmp_path: Path, suffix: str, options: dict) -> None:
    assert suffix in IMAGE_EXTENSIONS
    path = _save(Image.new("RGB", (40, 30), RED), tmp_path / f"red{suffix}", **options)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (40, 30)
    arr = load_square(path, 16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    assert _close(arr[8, 8], RED)


def test_bytes_upload_matches_path(tmp_path: Path) -> None:
    path = _noisy_jpeg(tmp_path / "photo.jpg", (120, 80))
    from_path = load_square(path, 32)
    from_bytes = load_square(path.read_bytes(), 32)
    np.testing.assert_array_equal(from_path, from_bytes)
    with pytest.raises(ImageError) as exc_info:
        open_image(b"not an image at all")
    assert str(exc_info.value).startswith("upload: ")
    with pytest.raises(ImageError) as exc_info:
        open_image(b"not an image at all", name="mine.png")
    assert str(exc_info.value).startswith("mine.png: ")


def test_content_decides_not_extension(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (8, 8), BLUE), tmp_path / "really_jpeg.png", format="JPEG")
    assert _close(load_square(path, 4)[2, 2], BLUE)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), RED), Image.new("RGB", (20, 20), BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    img = open_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((10, 10)) == RED


def test_palette_png_transparency_becomes_white(tmp_path: Path) -> None:
    img = Image.new("P", (20, 10), 0)
    img.putpalette([0, 0, 0] + list(RED) + [0, 0, 0] * 254)
    img.paste(1, (10, 0, 20, 10))  # right half: palette index 1 (red)
    path = _save(img, tmp_path / "pal.png", transparency=0)  # index 0 (black) transparent
    assert Image.open(path).mode == "P"
    out = open_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((2, 5)) == WHITE  # transparent black must not stay black
    assert out.getpixel((15, 5)) == RED


def test_rgba_composites_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (5, 0, 10, 10))
    path = _save(img, tmp_path / "rgba.png")
    out = open_image(path)
    assert out.getpixel((1, 1)) == WHITE
    assert out.getpixel((8, 1)) == RED
    half = _save(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), tmp_path / "half.png")
    assert _close(open_image(half).getpixel((0, 0)), (127, 127, 127), tol=2)


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    assert Image.open(path).mode == "CMYK"
    arr = load_square(path, 8)
    assert arr.shape == (8, 8, 3)
    assert _close(arr[4, 4], RED)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(open_image(path))
    assert out.shape == (4, 3, 3)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert all(abs(int(v) - 128) <= 2 for v in out[0, 1])
    assert out[0, 2].tolist() == [255, 255, 255]
    mid = _save(Image.fromarray(np.full((6, 6), 32768, np.uint16)), tmp_path / "mid.png")
    assert abs(int(load_square(mid, 4).mean()) - 128) <= 2


def test_grayscale_l_and_la(tmp_path: Path) -> None:
    grey = _save(Image.new("L", (6, 6), 100), tmp_path / "grey.png")
    assert open_image(grey).getpixel((0, 0)) == (100, 100, 100)
    la = Image.new("LA", (6, 6), (100, 255))
    la.paste((0, 0), (0, 0, 3, 6))  # left half fully transparent black
    path = _save(la, tmp_path / "la.png")
    assert Image.open(path).mode == "LA"
    out = open_image(path)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((5, 0)) == (100, 100, 100)


def test_one_pixel_image(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (1, 1), (10, 200, 30)), tmp_path / "dot.png")
    arr = load_square(path, 8)
    assert arr.shape == (8, 8, 3)
    assert (arr == np.array([10, 200, 30], np.uint8)).all()


@pytest.mark.parametrize("wide", [True, False])
def test_panorama_takes_centre_square_quickly(tmp_path: Path, wide: bool) -> None:
    # Red | blue | green thirds along the long side: only blue may survive a centre crop.
    long, short = 10000, 10
    arr = np.zeros((short, long, 3), np.uint8)
    arr[:, : long // 3] = RED
    arr[:, long // 3 : 2 * long // 3] = BLUE
    arr[:, 2 * long // 3 :] = (0, 255, 0)
    if not wide:
        arr = arr.transpose(1, 0, 2).copy()
    path = _save(Image.fromarray(arr), tmp_path / "pano.png")
    start = time.perf_counter()
    out = load_square(path, 224)
    assert time.perf_counter() - start < 1.0
    assert out.shape == (224, 224, 3)
    assert (out == np.array(BLUE, np.uint8)).all()


def test_centre_crop_of_landscape_photo(tmp_path: Path) -> None:
    # 300x100: a red 100x100 centre between white borders; the crop must be red.
    img = Image.new("RGB", (300, 100), WHITE)
    img.paste(RED, (100, 0, 200, 100))
    path = _save(img, tmp_path / "land.png")
    out = load_square(path, 50)
    # The resampling filter reaches one pixel past the crop edge, as it would after a
    # resize-then-crop; the interior is exactly red.
    assert (out[:, 2:-2] == np.array(RED, np.uint8)).all()
    reference = np.asarray(img.resize((150, 50), Image.Resampling.BICUBIC))[:, 50:100]
    assert np.abs(out.astype(int) - reference.astype(int)).mean() < 2


@pytest.mark.parametrize(("orientation", "top", "bottom"), [(6, RED, BLUE), (8, BLUE, RED)])
def test_exif_rotated_photo_comes_out_upright(
    tmp_path: Path, orientation: int, top: tuple, bottom: tuple
) -> None:
    # Raw sensor pixels: landscape, left half red, right half blue. Orientation 6 means
    # "rotate 90 degrees clockwise to view", which puts the red half on top; 8 the reverse.
    raw = Image.new("RGB", (80, 40), RED)
    raw.paste(BLUE, (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(raw, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    assert Image.open(path).getexif()[0x0112] == orientation

    assert open_image(path).size == (40, 80)
    out = load_square(path, 32)
    assert _close(out[4, 16], top)
    assert _close(out[27, 16], bottom)
    # Left and right columns agree: the split is horizontal, as seen upright.
    assert _close(out[4, 2], top) and _close(out[4, 29], top)


def test_large_jpeg_uses_draft_without_changing_result(tmp_path: Path) -> None:
    # Smooth gradient: a scaled-down decode must give nearly the same picture.
    x = np.linspace(0, 255, 2000)
    y = np.linspace(0, 255, 1600)
    arr = np.stack(
        [np.add.outer(y * 0, x), np.add.outer(y, x * 0), np.full((1600, 2000), 80.0)], axis=-1
    ).astype(np.uint8)
    path = _save(Image.fromarray(arr), tmp_path / "big.jpg", quality=95)
    fast = load_square(path, 64).astype(int)
    full = open_image(path)
    side = min(full.size)
    left = (full.size[0] - side) / 2
    box = (left, 0, left + side, side)
    reference = np.asarray(full.resize((64, 64), Image.Resampling.BICUBIC, box=box)).astype(int)
    assert fast.shape == (64, 64, 3)
    assert np.abs(fast - reference).mean() < 3
