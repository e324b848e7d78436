"""Dataset zips uploaded through the browser: checked, then stored under a content-hash name.

The user's file name is only ever used for display: the stored file is `<sha256>.zip` in a
folder we choose, so no uploaded string can steer a path; the name goes, as data, into
`<sha256>.json` beside it, so pages show "cats.zip" rather than the hash. Extraction is not done here; the
engine (`tlcore.data.sources` via `tlcore.data.archive`) extracts zips safely when a run starts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

from tlcore import paths
from tlcore.runs import write_json

# Kept equal to `server.maxUploadSize` in .streamlit/config.toml (1024 MB); checked here too,
# because the browser's limit is a client setting, not a guarantee.
MAX_UPLOAD_BYTES = 1024 * 2**20
# Every zip starts with a local file header (or is an empty archive: end-of-central-directory).
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class UploadError(ValueError):
    """An upload cannot be used as a dataset; the message says why and what to do."""


def uploads_dir() -> Path:
    """Where uploaded dataset zips are kept (`<data root>/uploads`)."""
    return paths.data_root() / "uploads"


def _display_name(filename: str) -> str:
    """The user's file name made safe to print on one line (never used as a path)."""
    name = os.path.basename(str(filename).replace("\\", "/")).replace("\n", " ").replace("\r", " ")
    return name[:100] or "upload"


def check_upload(data: bytes, filename: str, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """Raise UploadError unless `data` looks like a dataset zip within the size limit."""
    name = _display_name(filename)
    if not name.lower().endswith(".zip"):
        raise UploadError(f"{name}: a dataset upload must be a .zip of class folders (one folder per class)")
    if len(data) == 0:
        raise UploadError(f"{name}: the file is empty (0 bytes): upload it again")
    if len(data) > max_bytes:
        raise UploadError(
            f"{name}: {len(data) / 2**20:.0f} MiB is over the {max_bytes / 2**20:.0f} MiB upload limit: "
            "use a subset of the images, or put the folder on this machine and give its path"
        )
    if not data.startswith(_ZIP_MAGIC):
        raise UploadError(f"{name}: not a zip archive (it does not start like one): zip the class folders and retry")


def save_upload(data: bytes, filename: str, dest_dir: str | os.PathLike | None = None,
                max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Validate an uploaded dataset zip and store it under a content-hash file name.

    Args:
        data: the uploaded bytes.
        filename: the name the browser sent; only its extension is checked and it only appears
            in messages.
        dest_dir: folder to store into (default: `uploads_dir()`), created if missing.
        max_bytes: size limit, 1 GiB by default.

    Returns:
        The stored `<dest_dir>/<sha256>.zip`, usable as a dataset spec. Uploading the same
        content twice returns the same path without writing again.

    Raises:
        UploadError: not a `.zip`, empty, too large, or not a zip archive; the message says what to do.
    """
    data = bytes(data)
    check_upload(data, filename, max_bytes)
    # io.BytesIO over bytes shares the buffer (no copy of a 1 GiB upload).
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise UploadError(f"{_display_name(filename)}: the zip is damaged (no central directory): zip it again")
    dest = Path(dest_dir) if dest_dir is not None else uploads_dir()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{hashlib.sha256(data).hexdigest()}.zip"
    if target.is_file() and target.stat().st_size == len(data):
        _write_info(target, _display_name(filename))  # the latest name and time: it sorts first
        return target
    # Write beside the target and rename: a reader never sees a half-written zip.
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _write_info(target, _display_name(filename))
    return target


def _info_path(stored: Path) -> Path:
    return stored.with_suffix(".json")


def _write_info(stored: Path, name: str) -> None:
    """Record the user's file name and the upload time beside the stored zip, atomically."""
    write_json(_info_path(stored), {"name": name, "uploaded": time.time()})


def upload_name(spec: str | os.PathLike) -> str | None:
    """The user's file name of a stored upload (a dataset spec), or None if `spec` is not one."""
    path = Path(spec)
    if path.suffix.lower() != ".zip":
        return None
    try:
        with open(_info_path(path), encoding="utf-8") as f:
            name = json.load(f).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return _display_name(name) if isinstance(name, str) and name else None


def recent_uploads(dest_dir: str | os.PathLike | None = None, limit: int = 10) -> list[tuple[Path, str]]:
    """(stored zip, user's file name) of the last `limit` uploads still on disk, newest first."""
    dest = Path(dest_dir) if dest_dir is not None else uploads_dir()
    found = []
    for info in dest.glob("*.json") if dest.is_dir() else ():
        stored = info.with_suffix(".zip")
        name = upload_name(stored)
        if name and stored.is_file():
            found.append((info.stat().st_mtime, stored, name))
    found.sort(key=lambda row: row[0], reverse=True)
    return [(stored, name) for _, stored, name in found[:limit]]
