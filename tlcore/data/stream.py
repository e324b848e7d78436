"""Work done ahead of the model, in order and bounded: decoding while the backbone computes.

`decoded_batches` decodes image files in a few threads a little ahead of the consumer and hands
out batches of uint8 images in file order, so a feature-extraction run never holds more than a
few batches of decoded images, whatever the dataset's size, and the decoder works while the
model does. `prefetch` runs any iterator one or two items ahead in a background thread (the
training loop gathers its next batch while the current one trains).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from tlcore.data.images import ImageError, load_square

T = TypeVar("T")
R = TypeVar("R")


def decode_workers(workers: int | None = None) -> int:
    """Decode threads: PIL releases the GIL while decoding, so threads overlap several images."""
    return workers or min(8, os.cpu_count() or 1)


def load_row(path, resize: int) -> tuple[torch.Tensor | None, str | None]:
    """(3, resize, resize) uint8 of one file, or (None, the reason it is unreadable)."""
    try:
        return torch.from_numpy(load_square(path, resize)).permute(2, 0, 1), None
    except ImageError as exc:
        return None, str(exc)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[R]:
    """`fn` over `items` in `workers` threads, results in order, at most `ahead` computed early.

    `pool.map` would submit every item at once and keep every result until it is read: a fast
    decoder in front of a slow model would hold the whole dataset decoded.
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: collections.deque = collections.deque()
    source = iter(items)
    try:
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            done = pending.popleft()
            for item in source:  # keep `ahead` in flight: one in for each one out
                pending.append(pool.submit(fn, item))
                break
            yield done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a consumer that stops early (cancel) leaves nothing running


def decoded_batches(items: list, resize: int, batch_size: int, errors: list[tuple[int, str]],
                    workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(positions, uint8 images (k, 3, resize, resize)) for each run of `batch_size` items, in order.

    Unreadable files are left out of their batch and appended to `errors` as (position, reason);
    a run of unreadable files yields nothing.
    """
    threads = decode_workers(workers)
    rows = ordered_map(lambda path: load_row(path, resize), items, threads, ahead=2 * batch_size + threads)
    for start in range(0, len(items), batch_size):
        kept, images = [], []
        for i in range(start, min(start + batch_size, len(items))):
            image, error = next(rows)
            if error is None:
                kept.append(i)
                images.append(image)
            else:
                errors.append((i, error))
        if kept:
            yield torch.tensor(kept), torch.stack(images)


_END = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of `items`, computed up to `depth` ahead in a background thread, in order.

    An exception in the thread is raised here, at the item it stopped at; a consumer that stops
    early (cancel, error) stops the thread before this generator is done.
    """
    if depth < 1:
        yield from items
        return
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, exc))
            return
        put((_END, None))

    thread = threading.Thread(target=work, name="tlcore-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = out.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
