"""Safe decoding of one image file or upload into an upright RGB picture.

Everything a user can hand us goes through here: broken downloads, HTML pages saved as
``.jpg``, 16-bit scans, transparent PNGs, phone photos with EXIF rotation, and files built to
exhaust memory. Each failure becomes one :class:`ImageError` line naming the file.
"""

from __future__ import annotations

import codecs
import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
)
MAX_PIXELS: int = 40_000_000

# Only the decoders behind IMAGE_EXTENSIONS may run. Pillow would otherwise sniff dozens of
# formats, some of which (EPS) shell out to external programs on load. Phone photos that
# Pillow reports as "MPO" are opened by the JPEG entry.
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SNIFF_BYTES = 512


class ImageError(ValueError):
    """A file could not be used as an image.

    The message is ONE line naming the file and the reason, e.g.
    ``cat.jpg: not an image (HTML file?)``.
    """

    def __init__(self, name: str, reason: str) -> None:
        # Names and library messages may hold newlines; the UI shows this as a single line.
        line = f"{name}: {reason}".replace("\r", " ").replace("\n", " ")
        super().__init__(line)


def open_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Open, verify and return an RGB image, EXIF orientation applied (ImageOps.exif_transpose).

    All pixels are decoded here, so a truncated or corrupt file fails now rather than later
    inside a training batch. Transparency is composited on white, 16-bit images are scaled to
    8 bits, and animated images give their first frame.

    Args:
        source: A file path, or the raw bytes of an upload.
        name: Name used in error messages; defaults to the path's file name or ``"upload"``.

    Returns:
        A fully loaded ``RGB`` image that does not depend on the source file staying open.

    Raises:
        ImageError: The file is missing, empty, not a supported image, corrupt or truncated,
            or larger than ``MAX_PIXELS``.
    """
    return _decode(source, _label(source, name), draft_size=None)


def load_square(
    source: str | os.PathLike | bytes, size: int, name: str | None = None
) -> np.ndarray:
    """Decode an image into a (size, size, 3) uint8 array of its centred square.

    The centred square crop of the image is resized to ``size`` x ``size``, which is
    equivalent to resize-shorter-side followed by a centre crop.

    Args:
        source: A file path, or the raw bytes of an upload.
        size: Side of the output square in pixels.
        name: Name used in error messages; defaults to the path's file name or ``"upload"``.

    Returns:
        An array of shape ``(size, size, 3)`` and dtype ``uint8``.

    Raises:
        ImageError: As for :func:`open_image`.
        ValueError: ``size`` is not positive.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    img = _decode(source, _label(source, name), draft_size=(size, size))
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    # Cropping in source coordinates inside resize() never materialises the scaled-up
    # panorama that resize-shorter-side-first would (10000x10 -> 224000x224).
    square = img.resize(
        (size, size),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
        reducing_gap=3.0,
    )
    return np.asarray(square, dtype=np.uint8).copy()


def _label(source: str | os.PathLike | bytes, name: str | None) -> str:
    """Name to show in messages for this source."""
    if name:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "upload"
    return Path(source).name or str(source)


def _open_source(source: str | os.PathLike | bytes, label: str) -> BinaryIO:
    """Return a readable binary stream over the source, refusing missing and empty files."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(label, "empty file (0 bytes): the upload did not complete")
        return io.BytesIO(source)
    path = Path(source)
    if path.is_dir():
        raise ImageError(label, "is a folder, not an image file")
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed by the caller's ``with``
    except FileNotFoundError:
        raise ImageError(label, "file not found") from None
    except OSError as exc:
        raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    if os.fstat(fp.fileno()).st_size == 0:
        fp.close()
        raise ImageError(label, "empty file (0 bytes): re-download or re-copy it")
    return fp


def _decode(
    source: str | os.PathLike | bytes, label: str, draft_size: tuple[int, int] | None
) -> Image.Image:
    """Open, size-check, fully load and convert one image to upright RGB."""
    with _open_source(source, label) as fp:
        try:
            img = Image.open(fp, formats=_FORMATS)
        except UnidentifiedImageError:
            fp.seek(0)
            raise ImageError(label, _not_an_image_reason(fp.read(_SNIFF_BYTES))) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            # Pillow's own guard fires inside open() for sizes far above ours.
            raise ImageError(label, _too_large_reason()) from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
            raise ImageError(label, f"cannot read image header ({_short(exc)})") from None

        with img:
            # open() only parsed the header; refuse before a single pixel is allocated.
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(label, _too_large_reason(w, h))
            if draft_size is not None and img.format in ("JPEG", "MPO"):
                # Lets libjpeg decode at 1/2, 1/4 or 1/8 scale while staying >= draft_size.
                img.draft("RGB", draft_size)
            try:
                # load() reads every pixel: truncated files raise here (Pillow's
                # LOAD_TRUNCATED_IMAGES is off by default and this module never turns it on).
                img.load()
                upright = _upright(img)
                return _to_rgb(upright)
            except ImageError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageError(label, _too_large_reason(w, h)) from None
            except Exception as exc:  # noqa: BLE001 - decoders raise many types on bad data
                raise ImageError(label, f"corrupt or truncated image ({_short(exc)})") from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, ignoring EXIF blocks too broken to read."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        # A photo with mangled metadata still has good pixels; losing the rotation is the
        # lesser harm than refusing the image.
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any supported mode to 8-bit RGB, compositing transparency on white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _to_8bit_grey(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        # White, not black: the usual background of product shots and icons, and what
        # people see in a viewer.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float grey image into an 8-bit 'L' image."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64))
        # Float images are either normalised to [0, 1] or already on a 0-255 scale.
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        out = np.clip(arr * scale, 0, 255)
    else:
        # Pillow's own conversion clips everything above 255 to white; 16-bit data must be
        # scaled down instead (65535 / 257 = 255).
        out = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    return Image.fromarray(np.rint(out).astype(np.uint8), mode="L")


def _not_an_image_reason(head: bytes) -> str:
    """Guess what a non-image file is, from its first bytes."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text:
        return "not an image (HTML file? the download may have saved a web page)"
    try:
        # Incremental so that a multi-byte character cut at the sniff limit is not an error.
        decoded = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and all(c.isprintable() or c in "\t\r\n\f" for c in decoded):
        return "not an image (text file?)"
    return "not an image (unknown or unsupported format)"


def _too_large_reason(w: int | None = None, h: int | None = None) -> str:
    """Message for images over MAX_PIXELS."""
    dims = f"{w}x{h} = {w * h:,} pixels, " if w is not None and h is not None else ""
    return f"image too large ({dims}limit {MAX_PIXELS:,}): downscale it before uploading"


def _short(exc: BaseException) -> str:
    """One-line, length-capped description of a library exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
