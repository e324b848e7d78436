"""Safe extraction of an uploaded dataset zip.

An uploaded zip is untrusted: entries may point outside the target folder (``../../x``,
``/etc/x``, ``C:\\x``), be symlinks, lie about their size, or expand a few kilobytes into
gigabytes. All limits are checked from the central directory before anything is written, and
the real byte counts are checked again while writing.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

_CHUNK = 1 << 20
# Compression ratios of tiny archives say nothing (a 1 KiB text file can compress 300:1) and
# expanding them is harmless, so the ratio limit only applies above this total size.
_RATIO_MIN_BYTES = 1 << 20
_JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_SUPPORTED_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1


class ArchiveError(ValueError):
    """One line: what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        # File names inside a zip are attacker-chosen; keep the message on one line.
        super().__init__(message.replace("\r", " ").replace("\n", " "))


class _Entry(NamedTuple):
    """One member to extract, with its cleaned path components."""

    info: zipfile.ZipInfo
    parts: list[str]
    is_dir: bool


@dataclass(frozen=True)
class Extracted:
    """Result of :func:`extract_zip`.

    Attributes:
        root: The dataset root: the single top folder when the zip wraps everything in one
            (``mydata/``), otherwise ``dest`` itself.
        skipped: Unsafe entries that were refused (path traversal, absolute paths, symlinks,
            special files). Junk such as ``__MACOSX/`` is dropped silently and not counted.
        files: Number of files written.
    """

    root: Path
    skipped: int
    files: int


def extract_zip(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_total_bytes: int = 4 * 2**30,
    max_ratio: float = 200.0,
    max_members: int = 200_000,
) -> Extracted:
    """Extract a zip into ``dest``, refusing hostile or oversized archives.

    Nothing is written unless the whole central directory passes the checks. If extraction
    still fails midway (a header that lies about its size, a CRC error, a full disk), the
    half-written file is removed but earlier files stay: extract into a fresh folder and
    delete it on error.

    Args:
        zip_path: The uploaded zip file.
        dest: Folder to extract into; created if missing.
        max_total_bytes: Refuse archives whose files add up to more than this, uncompressed.
        max_ratio: Refuse archives whose total uncompressed/compressed ratio is higher
            (zip bombs), once they exceed 1 MiB uncompressed.
        max_members: Refuse archives with more entries than this.

    Returns:
        The dataset root inside ``dest`` and the counts of skipped and written entries.

    Raises:
        ArchiveError: With one line saying what is wrong and what to do.
    """
    zip_path = Path(zip_path)
    label = zip_path.name or str(zip_path)
    dest_dir = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise ArchiveError(f"{label}: file not found: upload the zip again") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ArchiveError(
            f"{label}: not a zip file (or a damaged one): re-create it with a zip tool "
            "('Compress' / 'Send to > Compressed folder')"
        ) from None

    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise ArchiveError(
                f"{label}: {len(infos):,} entries is more than the limit of {max_members:,}: "
                "split the dataset or remove unneeded files"
            )
        plan, skipped = _plan(infos)
        _check_plan(label, plan, skipped, dest_dir, max_total_bytes, max_ratio)

        dest_dir.mkdir(parents=True, exist_ok=True)
        root = dest_dir.resolve()
        budget = [max_total_bytes]
        files = 0
        for info, parts, is_dir in plan:
            target = root.joinpath(*parts)
            # Defence in depth: parts are already clean, but a symlink already sitting in
            # dest could still redirect a write outside it.
            if not target.resolve().is_relative_to(root):
                skipped += 1
                continue
            if is_dir:
                _make_dir(label, target)
                continue
            _make_dir(label, target.parent)
            _extract_member(label, zf, info, target, budget)
            files += 1

    return Extracted(root=_dataset_root(root), skipped=skipped, files=files)


def _plan(infos: list[zipfile.ZipInfo]) -> tuple[list[_Entry], int]:
    """Split entries into those to extract and a count of unsafe ones; junk is dropped."""
    plan: list[_Entry] = []
    skipped = 0
    for info in infos:
        name = _member_name(info)
        parts = _safe_parts(name)
        if parts is not None and any(_is_junk(p) for p in parts):
            continue
        if parts is None or not _is_plain_entry(info):
            skipped += 1
            continue
        if parts:
            is_dir = info.is_dir() or name.replace("\\", "/").endswith("/")
            plan.append(_Entry(info, parts, is_dir))
    return plan, skipped


def _check_plan(
    label: str,
    plan: list[_Entry],
    skipped: int,
    dest: Path,
    max_total_bytes: int,
    max_ratio: float,
) -> None:
    """Refuse the archive from its declared sizes and flags, before anything is written."""
    files = [entry.info for entry in plan if not entry.is_dir]
    if not files:
        extra = f" ({skipped} unsafe entries skipped)" if skipped else ""
        raise ArchiveError(
            f"{label}: contains no files to extract{extra}: zip the folder that holds your images"
        )
    for info in files:
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise ArchiveError(
                f"{label}: '{info.filename}' is password-protected: re-create the zip "
                "without a password"
            )
        if info.compress_type not in _SUPPORTED_METHODS:
            raise ArchiveError(
                f"{label}: '{info.filename}' uses an unsupported compression method "
                f"({info.compress_type}): re-create the zip with standard (deflate) compression"
            )
    total = sum(info.file_size for info in files)
    packed = sum(info.compress_size for info in files)
    if total > max_total_bytes:
        raise ArchiveError(
            f"{label}: expands to {_size(total)}, more than the limit of "
            f"{_size(max_total_bytes)}: use fewer or smaller images"
        )
    if total > _RATIO_MIN_BYTES and total > max_ratio * max(packed, 1):
        raise ArchiveError(
            f"{label}: expands {total / max(packed, 1):,.0f}x ({_size(packed)} to "
            f"{_size(total)}), more than {max_ratio:g}x: this looks like a zip bomb, "
            "not a set of images"
        )
    probe = dest if dest.exists() else _existing_parent(dest)
    free = shutil.disk_usage(probe).free
    if total > free:
        raise ArchiveError(
            f"{label}: needs {_size(total)} but only {_size(free)} is free: free some disk space"
        )


def _extract_member(
    label: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: list[int]
) -> None:
    """Stream one entry to disk, counting real bytes against its header and the budget."""
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                budget[0] -= len(chunk)
                # The header may lie; the bytes actually produced are what count.
                if written > info.file_size or budget[0] < 0:
                    raise ArchiveError(
                        f"{label}: '{info.filename}' expands beyond its declared size: the "
                        "archive is damaged or hostile; re-create it"
                    )
                out.write(chunk)
    except ArchiveError:
        target.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        target.unlink(missing_ok=True)
        raise ArchiveError(
            f"{label}: '{info.filename}' is damaged ({_one_line(exc)}): re-create the zip"
        ) from None
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise ArchiveError(
            f"{label}: cannot write '{info.filename}' ({exc.strerror or _one_line(exc)}): "
            "check free disk space and file names"
        ) from None


def _member_name(info: zipfile.ZipInfo) -> str:
    """Entry name, recovering UTF-8 names from zips that did not set the UTF-8 flag."""
    name = info.filename
    if info.flag_bits & _UTF8_FLAG:
        return name
    # Without the flag zipfile decodes as cp437, but macOS and most modern tools write
    # UTF-8 anyway; if the raw bytes are valid UTF-8 that is almost surely what was meant.
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _safe_parts(name: str) -> list[str] | None:
    """Path components of a member name, or None if the name could escape the folder."""
    # Windows tools write backslash separators; treating them as separators both keeps
    # those zips working and exposes '..\\..\\x' as the traversal it is.
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        return None
    if any(ord(c) < 32 for c in normal):
        return None
    parts = [p for p in normal.split("/") if p not in ("", ".")]
    if any(p == ".." or _DRIVE.match(p) for p in parts):
        return None
    return parts


def _is_plain_entry(info: zipfile.ZipInfo) -> bool:
    """True for regular files and folders; False for symlinks, devices, FIFOs."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    # Zips from Windows carry no unix mode at all (kind 0): those are plain entries.
    return kind in (0, stat.S_IFREG, stat.S_IFDIR)


def _is_junk(part: str) -> bool:
    """OS metadata that never belongs in a dataset."""
    return part in _JUNK_NAMES or part.startswith("._")


def _make_dir(label: str, path: Path) -> None:
    """Create a folder, turning clashes with existing files into ArchiveError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(
            f"{label}: cannot create folder '{path.name}' ({exc.strerror or _one_line(exc)}): "
            "the zip may hold a file and a folder with the same name"
        ) from None


def _dataset_root(dest: Path) -> Path:
    """The single wrapping folder when dest holds exactly one folder and no files, else dest."""
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest


def _existing_parent(path: Path) -> Path:
    """Nearest existing ancestor, for asking the disk how much space is free."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path.cwd()


def _size(n: float) -> str:
    """Human-readable byte count."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def _one_line(exc: BaseException) -> str:
    """Exception text squeezed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
