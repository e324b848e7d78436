"""Tests for tlcore.data.archive: every zip, hostile or not, is built here."""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from tlcore.data.archive import ArchiveError, Extracted, extract_zip


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    # Two levels below tmp_path, so '../../x' would land inside tmp_path where we can see it.
    return tmp_path / "out" / "dest"


def _zip(tmp_path: Path, entries: dict[str, bytes], name: str = "data.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in entries.items():
            zf.writestr(member, data)
    return path


def _files_outside(tmp_path: Path, dest: Path, allowed: set[Path]) -> list[Path]:
    """Everything under tmp_path that is not dest, inside dest, on the way to it, or allowed."""
    stray = []
    for folder, dirs, files in os.walk(tmp_path):
        for name in files + dirs:
            path = Path(folder) / name
            if path in allowed or path == dest or dest in path.parents or path in dest.parents:
                continue
            stray.append(path)
    return stray


def _patch_both_headers(path: Path, local_offset: int, central_offset: int, value: bytes) -> None:
    """Overwrite a field in the (single) local header and central directory record."""
    data = bytearray(path.read_bytes())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + local_offset : local + local_offset + len(value)] = value
    data[central + central_offset : central + central_offset + len(value)] = value
    path.write_bytes(bytes(data))


# --- ordinary archives ---------------------------------------------------------------------


def test_extracts_nested_files_with_unicode_and_spaces(tmp_path: Path, dest: Path) -> None:
    entries = {
        "chats noirs/été 1.jpg": b"one",
        "chiens/子犬/2.png": b"two",
        "README.txt": b"three",
    }
    result = extract_zip(_zip(tmp_path, entries), dest)
    assert isinstance(result, Extracted)
    assert result.root == dest.resolve()
    assert result.skipped == 0 and result.files == 3
    for member, data in entries.items():
        assert (dest / member).read_bytes() == data


def test_single_wrapping_folder_becomes_root(tmp_path: Path, dest: Path) -> None:
    entries = {"mydata/": b"", "mydata/cats/1.jpg": b"c", "mydata/dogs/1.jpg": b"d"}
    result = extract_zip(_zip(tmp_path, entries), dest)
    assert result.root == dest.resolve() / "mydata"
    assert (result.root / "cats" / "1.jpg").read_bytes() == b"c"


def test_windows_backslash_names_become_folders(tmp_path: Path, dest: Path) -> None:
    result = extract_zip(_zip(tmp_path, {"cats\\1.jpg": b"c", "dogs\\a\\2.jpg": b"d"}), dest)
    assert (dest / "cats" / "1.jpg").read_bytes() == b"c"
    assert (dest / "dogs" / "a" / "2.jpg").read_bytes() == b"d"
    assert result.skipped == 0


def test_utf8_names_without_the_utf8_flag_are_recovered(tmp_path: Path, dest: Path) -> None:
    # macOS and many tools write UTF-8 names without setting flag 0x800. Write an ASCII
    # placeholder of the same byte length, then swap in the raw UTF-8 bytes.
    real = "chats/été.jpg".encode()
    placeholder = "chats/" + "x" * (len(real) - len("chats/.jpg")) + ".jpg"
    path = _zip(tmp_path, {placeholder: b"cat"})
    path.write_bytes(path.read_bytes().replace(placeholder.encode(), real))
    with zipfile.ZipFile(path) as zf:
        assert not zf.infolist()[0].flag_bits & 0x800
    extract_zip(path, dest)
    assert (dest / "chats" / "été.jpg").read_bytes() == b"cat"


def test_junk_is_dropped_silently(tmp_path: Path, dest: Path) -> None:
    entries = {
        "cats/1.jpg": b"c",
        "__MACOSX/cats/._1.jpg": b"junk",
        "cats/._1.jpg": b"junk",
        ".DS_Store": b"junk",
        "cats/.DS_Store": b"junk",
        "cats/Thumbs.db": b"junk",
    }
    result = extract_zip(_zip(tmp_path, entries), dest)
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert written == ["cats", "cats/1.jpg"]
    assert result.skipped == 0 and result.files == 1
    assert result.root == dest.resolve() / "cats"


# --- hostile archives: nothing may land outside dest ---------------------------------------


def test_path_traversal_and_absolute_entries_are_skipped(tmp_path: Path, dest: Path) -> None:
    hostile = [
        "../../evil1.jpg",
        "../evil2.jpg",
        "cats/../../../evil3.jpg",
        str(tmp_path / "evil4.jpg"),  # absolute, inside tmp_path so a bug would show
        "C:\\evil5.jpg",
        "C:/evil6.jpg",
        "..\\..\\evil7.jpg",
        "\\\\server\\share\\evil8.jpg",
        "cats/C:evil9.jpg",
    ]
    entries = {name: b"evil" for name in hostile}
    entries["cats/ok.jpg"] = b"ok"
    entries["dogs/ok.jpg"] = b"ok"
    zip_path = _zip(tmp_path, entries)
    with zipfile.ZipFile(zip_path) as zf:
        assert set(zf.namelist()) == set(entries)  # zipfile kept the hostile names

    result = extract_zip(zip_path, dest)
    assert result.skipped == len(hostile)
    assert result.files == 2
    assert _files_outside(tmp_path, dest, {zip_path}) == []
    assert not list(tmp_path.rglob("evil*")) and not Path("/evil5.jpg").exists()
    assert sorted(p.name for p in dest.rglob("*.jpg")) == ["ok.jpg", "ok.jpg"]


def test_symlink_entries_are_never_written(tmp_path: Path, dest: Path) -> None:
    zip_path = tmp_path / "links.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, target in [("cats/passwd.jpg", "/etc/passwd"), ("escape", "../../..")]:
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr carries a file mode
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        # Would write through the link if 'escape' had been created as one.
        zf.writestr("escape/evil.jpg", b"evil")
        zf.writestr("cats/1.jpg", b"c")
        zf.writestr("dogs/1.jpg", b"d")

    result = extract_zip(zip_path, dest)
    assert result.skipped == 2
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert not (dest / "cats" / "passwd.jpg").exists()
    assert _files_outside(tmp_path, dest, {zip_path}) == []
    assert (dest / "escape" / "evil.jpg").is_file()  # a plain file inside dest, harmless


def test_preexisting_symlink_in_dest_is_not_written_through(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest.mkdir(parents=True)
    (dest / "cats").symlink_to(outside, target_is_directory=True)
    zip_path = _zip(tmp_path, {"cats/1.jpg": b"c", "dogs/1.jpg": b"d"})
    result = extract_zip(zip_path, dest)
    assert list(outside.iterdir()) == []
    assert result.skipped == 1


def test_not_a_zip_is_refused(tmp_path: Path, dest: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_text("this is not a zip\n")
    with pytest.raises(ArchiveError) as exc_info:
        extract_zip(path, dest)
    message = str(exc_info.value)
    assert message.startswith("x.zip: not a zip file") and "\n" not in message
    assert not dest.exists()


def test_missing_zip_is_refused(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(ArchiveError, match="nothere.zip: file not found"):
        extract_zip(tmp_path / "nothere.zip", dest)


def test_zip_bomb_ratio_is_refused_before_writing(tmp_path: Path, dest: Path) -> None:
    zip_path = _zip(tmp_path, {"cats/1.jpg": b"\0" * (8 << 20), "dogs/1.jpg": b"d"})
    assert zip_path.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match="zip bomb"):
        extract_zip(zip_path, dest)
    assert not dest.exists()


def test_small_compressible_zip_is_not_a_bomb(tmp_path: Path, dest: Path) -> None:
    # 64 KiB of zeros compresses ~500:1 but is far too small to matter.
    result = extract_zip(_zip(tmp_path, {"a/1.bmp": b"\0" * 65536, "b/1.bmp": b"x"}), dest)
    assert result.files == 2


def test_total_size_limit_is_checked_before_writing(tmp_path: Path, dest: Path) -> None:
    entries = {f"c{i}/1.jpg": os.urandom(1000) for i in range(3)}
    with pytest.raises(ArchiveError, match="more than the limit"):
        extract_zip(_zip(tmp_path, entries), dest, max_total_bytes=2500)
    assert not dest.exists()
    assert extract_zip(_zip(tmp_path, entries), dest, max_total_bytes=3000).files == 3


def test_too_many_members_is_refused(tmp_path: Path, dest: Path) -> None:
    entries = {f"c/{i}.jpg": b"x" for i in range(6)}
    with pytest.raises(ArchiveError, match="6 entries"):
        extract_zip(_zip(tmp_path, entries), dest, max_members=5)
    assert not dest.exists()


def test_header_that_understates_size_is_caught(tmp_path: Path, dest: Path) -> None:
    zip_path = _zip(tmp_path, {"cats/1.jpg": os.urandom(100_000)})
    # Declare 10 bytes uncompressed (offset 22 in the local header, 24 in the central one).
    _patch_both_headers(zip_path, 22, 24, struct.pack("<I", 10))
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.infolist()[0].file_size == 10
    with pytest.raises(ArchiveError) as exc_info:
        extract_zip(zip_path, dest)
    assert "cats/1.jpg" in str(exc_info.value)
    assert not (dest / "cats" / "1.jpg").exists()


def test_password_protected_zip_is_refused(tmp_path: Path, dest: Path) -> None:
    zip_path = _zip(tmp_path, {"cats/1.jpg": b"secret"})
    _patch_both_headers(zip_path, 6, 8, struct.pack("<H", 0x1))
    with pytest.raises(ArchiveError, match="password"):
        extract_zip(zip_path, dest)
    assert not dest.exists()


def test_zip_with_only_unsafe_entries_is_refused(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(ArchiveError, match=r"no files to extract \(1 unsafe"):
        extract_zip(_zip(tmp_path, {"../evil.jpg": b"x", "__MACOSX/._a": b"j"}), dest)
    assert _files_outside(tmp_path, dest, {tmp_path / "data.zip"}) == []
