"""Decoded images kept on disk instead of in memory: a split larger than the memory budget.

The rows live in a private file that is unlinked as soon as it is created: two runs on the same
dataset never share (or truncate) one file, and nothing is left on disk when the run ends, even
if the process is killed. Indexing reads the rows asked for with `os.preadv` into a fresh
tensor. A memory map would be simpler, but every page of it a run touched counts in the
process's resident memory until the end: a 20,000-image split (3.9 GB at 256 px) read once per
epoch would be resident in full. Read this way, the file's pages sit in the kernel's page cache,
which keeps what fits, gives it back under pressure and is not the process's memory.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch


class _File:
    """An open, already-unlinked file, closed when the last view of it is gone."""

    def __init__(self, folder: Path, prefix: str, size: int):
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".u8", dir=folder)
        try:
            os.unlink(path)
            os.ftruncate(fd, max(1, size))
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        weakref.finalize(self, os.close, fd)


class SpilledImages:
    """uint8 images (N, C, H, W) in an unlinked file; `images[idx]` reads those rows into a tensor.

    Supports what the trainer does with a split's images: `len`, `shape`, `dtype`, indexing by
    an int, a slice or an index tensor/list (a copy, in the order asked), and `images[i] = row`.
    """

    dtype = torch.uint8

    def __init__(self, shape: tuple[int, ...], folder: Path, prefix: str, *, _file: _File | None = None):
        self.shape = torch.Size(shape)
        self._row = int(np.prod(shape[1:]))
        self._file = _file or _File(folder, prefix, shape[0] * self._row)

    def __len__(self) -> int:
        return self.shape[0]

    def head(self, n: int) -> SpilledImages:
        """The first n rows, same file (no copy)."""
        return SpilledImages((n, *self.shape[1:]), Path(), "", _file=self._file)

    def __setitem__(self, key: int | slice, value: torch.Tensor) -> None:
        """Write one row (`images[i] = row`) or a run of rows (`images[a:b] = rows`)."""
        if isinstance(key, slice):
            rows = range(*key.indices(len(self)))
            if key.step not in (None, 1):
                raise ValueError("only a run of consecutive rows can be written at once")
            start, count = (rows.start, len(rows)) if rows else (0, 0)
        else:
            start, count = key, 1
        data = value.detach().to(torch.uint8).contiguous().numpy()
        if data.size != count * self._row:
            raise ValueError(f"{count} rows of {tuple(self.shape[1:])} expected, got {tuple(value.shape)}")
        view, offset = memoryview(data).cast("B"), self._offset(start) if count else 0
        while len(view):  # pwrite may write less than asked (huge writes, signals)
            done = os.pwrite(self._file.fd, view, offset)
            view, offset = view[done:], offset + done

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            return self._read([self._offset(key)], (1, *self.shape[1:]))[0]
        if isinstance(key, slice):
            rows = range(*key.indices(len(self)))
            if key.step in (None, 1):  # one read for a run of rows
                out = self._read([self._offset(rows.start)] if rows else [], (len(rows), *self.shape[1:]), whole=True)
                return out
            key = list(rows)
        idx = key.tolist() if isinstance(key, (torch.Tensor, np.ndarray)) else key
        if isinstance(idx, int):  # a 0-d tensor: one row, like a tensor's indexing
            return self[idx]
        idx = list(idx)
        return self._read([self._offset(int(i)) for i in idx], (len(idx), *self.shape[1:]))

    def _offset(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for {n} images")
        return (i % n) * self._row

    def _read(self, offsets: list[int], shape: tuple[int, ...], whole: bool = False) -> torch.Tensor:
        out = torch.empty(shape, dtype=torch.uint8)
        buf = out.numpy().reshape(-1)
        size = buf.size if whole else self._row
        for j, offset in enumerate(offsets):
            view = memoryview(buf[j * size : (j + 1) * size])
            done = 0
            while done < size:  # preadv may return short on a signal or a huge read
                got = os.preadv(self._file.fd, [view[done:]], offset + done)
                if got <= 0:
                    raise OSError(f"spill file ended early at row offset {offset + done}")
                done += got
        return out
