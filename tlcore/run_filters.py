"""Finding runs among hundreds: filters, a text search, Compare's default pick and pages of cards.

The pages (Compare, Predict, Train) and `python -m tlcore runs` share these, so a filter means
the same everywhere. No streamlit here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tlcore.memo import per_record_list
from tlcore.names import dataset_name
from tlcore.runs import ACTIVE, RunRecord

MAX_COMPARE = 12  # runs drawn at once on Compare: beyond this the legend and the curves stop being readable
DEFAULT_RECENT = 5  # runs Compare opens on when there is no newer experiment
MAX_OPTIONS = 200  # a picker lists at most this many matches; the filters narrow it down
CARDS_PER_PAGE = 10  # ended runs per page on Train (Show all runs)
RECENT_CARDS = 6  # ended runs on Train otherwise
FIELDS = {  # filter name -> what it reads from a run
    "data": lambda r: dataset_name(r.config.get("data")),
    "backbone": lambda r: r.config.get("backbone") or "?",
    "strategy": lambda r: r.config.get("strategy") or "?",
    "status": lambda r: r.state,
    "experiment": lambda r: r.config.get("experiment_id") or "",
    "name": lambda r: r.name,
}


@dataclass
class RunFilter:
    """Which runs to show: each field keeps runs whose value is one of those given (none given: all),
    and `text` keeps runs whose label, id, name, dataset, backbone, strategy or experiment contain
    every word of it (any case)."""

    data: list[str] = field(default_factory=list)
    backbone: list[str] = field(default_factory=list)
    strategy: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    experiment: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    text: str = ""

    def matches(self, record: RunRecord, label: str = "") -> bool:
        for key, read in FIELDS.items():
            wanted = getattr(self, key)
            if wanted and read(record) not in wanted:
                return False
        words = self.text.lower().split()
        if not words:
            return True
        haystack = " ".join([label, record.run_id, record.name, str(record.config.get("data") or ""),
                             *(read(record) for read in FIELDS.values())]).lower()
        return all(w in haystack for w in words)

    @property
    def active(self) -> bool:
        """Whether it leaves any run out."""
        return bool(self.text.strip()) or any(getattr(self, key) for key in FIELDS)


@per_record_list
def choices(records: Iterable[RunRecord]) -> dict[str, list[str]]:
    """{filter name: the values the runs have, most common first} (empty values left out; none
    for a field whose one value every run has: picking it would keep them all, so the page shows
    no such filter); computed once per run list (memo.py)."""
    counts: dict[str, dict[str, int]] = {key: {} for key in FIELDS}
    total = 0
    for record in records:
        total += 1
        for key, read in FIELDS.items():
            value = read(record)
            if value:
                counts[key][value] = counts[key].get(value, 0) + 1
    return {key: [] if list(c.values()) == [total] else sorted(c, key=lambda v: (-c[v], v))
            for key, c in counts.items()}


def apply(records: Iterable[RunRecord], flt: RunFilter, labels: dict[str, str] | None = None) -> list[RunRecord]:
    """The runs `flt` keeps, in their order."""
    labels = labels or {}
    return [r for r in records if flt.matches(r, labels.get(r.run_id, ""))]


def options(matches: Sequence[RunRecord], chosen: Sequence[str], most: int = MAX_OPTIONS) -> list[str]:
    """A picker's run ids: the chosen ones (always, so a filter never drops a pick), then the
    first `most` matches."""
    ids = [r.run_id for r in matches[:most]]
    return [*chosen, *(rid for rid in ids if rid not in set(chosen))]


def default_compare(records: Sequence[RunRecord], experiments: Sequence[dict] = (),
                    most: int = MAX_COMPARE, recent: int = DEFAULT_RECENT) -> tuple[list[str], str]:
    """(run ids, why) for Compare to open on: the latest experiment's runs when no run outside it
    is newer, else the `recent` newest runs with curves on the newest one's dataset; never more than `most`.

    `records` newest first (as RunStore.list gives them); `experiments` as ExperimentStore.list.
    """
    with_curves = [r for r in records if r.metrics and r.state not in ACTIVE] or [r for r in records if r.metrics]
    if experiments:
        latest = experiments[0]
        members = {run["run_id"] for run in latest.get("runs", [])}
        ids = [r.run_id for r in records if r.run_id in members and r.metrics]
        newest_other = next((r for r in with_curves if r.run_id not in members), None)
        if ids and (newest_other is None or newest_other.status.get("created", 0) <= latest.get("created", 0)):
            return ids[:most], f"the runs of the latest experiment, {latest['experiment_id']}"
    # One dataset: accuracies on 10-class digits and 2-class ants/bees on one axis compare nothing.
    data = with_curves[0].config.get("data") if with_curves else None
    ids = [r.run_id for r in with_curves if r.config.get("data") == data][:min(recent, most)]
    many = f"{len(ids)} newest {dataset_name(data)} runs" if len(ids) > 1 else f"newest {dataset_name(data)} run"
    return ids, f"the {many} with curves"


def picker_note(matching: int, total: int, chosen: int = 0, opened_on: str | None = None,
                most: int = MAX_COMPARE, outside: int = 0) -> str:
    """One line under a run picker: how many runs match, whether the list is cut, why these are
    picked, picks the filters do not match (kept: a filter finds runs to add, it never drops a
    pick), and when the most that can be picked is reached."""
    parts = [f"{matching} of {total} runs match" if matching < total else f"{total} run{'' if total == 1 else 's'}"]
    if outside:
        parts.append(f"{outside} of the picked runs {'does' if outside == 1 else 'do'} not match the filters "
                     "(still drawn: remove with ×)")
    if matching > MAX_OPTIONS:
        parts.append(f"the newest {MAX_OPTIONS} are listed: search or filter to find older ones")
    if opened_on:
        parts.append(f"opened on {opened_on}")
    if chosen >= most:
        parts.append(f"at most {most} runs at once, so the charts stay readable: remove one to add another")
    return " · ".join(parts)


def ended_runs(records: Iterable[RunRecord], hide_failed: bool = False) -> list[RunRecord]:
    """The runs that are not queued or running (failed ones left out if asked), in their order."""
    return [r for r in records if r.state not in ACTIVE and not (hide_failed and r.state == "failed")]


def page_count(items: int, size: int = CARDS_PER_PAGE) -> int:
    """Pages of `size` items needed for `items` (at least one)."""
    return max(1, -(-items // size))


def page_of(items: Sequence, number: int, size: int = CARDS_PER_PAGE) -> tuple[list, int]:
    """(the items on page `number` (1-based, clamped), how many pages there are)."""
    pages = page_count(len(items), size)
    number = min(max(1, int(number)), pages)
    return list(items[(number - 1) * size: number * size]), pages
