"""Pure functions of the run list computed once per list: kept while the same record objects come back.

The run index (run_index.py) hands out the same `RunRecord` objects until a run's folder changes,
and a changed run comes back as a new object. So a result over a list of records (the labels of
every run, the filters' values) stays right while every record in the list is the very object it
was computed from; any new, changed, added or removed run computes it again. This keeps the pages'
per-render work from growing with the number of old runs.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Iterable


def same_object(a, b) -> bool:
    return a is b


def per_record_list(fn: Callable | None = None, *, size: int = 4, same: Callable = same_object):
    """Decorate `fn(records, *args)`: the last `size` results, each kept with the records it was
    computed from (held, so their ids are never reused) and returned as a copy. `same(old, new)`
    says whether a record is unchanged for `fn` (default: the very same object)."""

    def wrap(fn: Callable) -> Callable:
        kept: list[tuple[list, tuple, object]] = []
        lock = threading.Lock()

        @functools.wraps(fn)
        def cached(records: Iterable, *args):
            records = list(records)
            with lock:
                for seen, seen_args, result in kept:
                    if seen_args == args and len(seen) == len(records) and all(
                            a is b or same(a, b) for a, b in zip(seen, records, strict=True)):
                        return copy.deepcopy(result)
            result = fn(records, *args)
            with lock:
                kept.insert(0, (records, args, result))
                del kept[size:]
            return copy.deepcopy(result)

        cached.cache_clear = kept.clear  # for tests
        return cached

    return wrap(fn) if fn is not None else wrap
