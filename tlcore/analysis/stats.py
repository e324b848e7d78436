"""Statistics for comparing runs: Wilson intervals, seed spreads, paired tests, a verdict.

Every test here is paired: both sides were scored on the same validation images (an
experiment fixes the data seed), so the question is how often they disagree on the same
image, not how far apart two independent samples are. The numbers come from scipy and
statsmodels; only the bootstrap resampling (a few numpy lines) is ours.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# scipy.stats and statsmodels are imported where they are used: together 0.8-1 s, which the
# Train page (it imports this module through its experiment panel) no longer waits for on a
# fresh server's first visit (issue 13).

CONFIDENCE = 0.95
RESAMPLES = 10_000
# Resamples per numpy batch: bounds the (batch, images) index array at about 40 MB.
_CHUNK_CELLS = 5_000_000


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for an accuracy of `correct` out of `total` images."""
    if total <= 0:
        return (math.nan, math.nan)
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN with fewer than two values)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return (math.nan, math.nan)
    return (float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan)


def correctness(results: dict) -> dict:
    """{item: 1 if the run's top class was the true label else 0} from a val_results dict."""
    probs = np.asarray(results["probs"], dtype=float)
    right = probs.argmax(1) == np.asarray(results["labels"])
    return {_key(item): int(ok) for item, ok in zip(results["items"], right.tolist(), strict=True)}


def _key(item):
    return item if isinstance(item, int) else str(item)


def paired_matrices(side_a: list[dict], side_b: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed correctness of two cells on the images every run of both scored.

    Args:
        side_a, side_b: `correctness` dicts, one per seed.

    Returns:
        (seeds_a, images) and (seeds_b, images) 0/1 arrays over the shared images, same order.
    """
    shared = set(side_a[0])
    for c in side_a[1:] + side_b:
        shared &= set(c)
    images = [item for item in side_a[0] if item in shared]
    return (np.array([[c[i] for i in images] for c in side_a], dtype=float).reshape(len(side_a), len(images)),
            np.array([[c[i] for i in images] for c in side_b], dtype=float).reshape(len(side_b), len(images)))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on two runs' per-image correctness (0/1 arrays, same images).

    Returns the discordant counts (`a_only`: A right and B wrong, `b_only`) and the p value.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    from statsmodels.stats.contingency_tables import mcnemar

    result = mcnemar(table, exact=True)
    return {"a_only": table[0][1], "b_only": table[1][0], "p_value": float(result.pvalue)}


def paired_bootstrap(seeds_a: np.ndarray, seeds_b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                     confidence: float = CONFIDENCE) -> dict:
    """Bootstrap interval of mean accuracy(A) - accuracy(B) over the same validation images.

    Each resample draws the images (the same draw for both sides, which is what makes it
    paired) and, within each side, its seeds, so the interval covers both the image sample
    and the seed-to-seed spread.

    Args:
        seeds_a, seeds_b: (seeds, images) 0/1 correctness on the same images, same order.

    Returns:
        diff (observed), ci_low, ci_high and a two-sided bootstrap p value (at least 1/resamples).
    """
    n = seeds_a.shape[1]
    if n == 0:
        raise ValueError("no validation images in common: the runs were not scored on the same images")
    rng = np.random.default_rng(seed)
    diff = float(seeds_a.mean() - seeds_b.mean())
    stats = []
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        per_image = _resample_seeds(rng, seeds_a, r) - _resample_seeds(rng, seeds_b, r)  # (r, images)
        images = rng.integers(0, n, size=(r, n))
        stats.append(np.take_along_axis(per_image, images, axis=1).mean(1))
    boot = np.concatenate(stats)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    p = min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0)))
    return {"diff": diff, "ci_low": float(low), "ci_high": float(high), "p_value": max(float(p), 1 / resamples)}


def _resample_seeds(rng: np.random.Generator, seeds: np.ndarray, r: int) -> np.ndarray:
    """(r, images): each image's accuracy averaged over a with-replacement draw of the seeds."""
    s = seeds.shape[0]
    if s == 1:
        return np.broadcast_to(seeds[0], (r, seeds.shape[1]))
    draws = rng.integers(0, s, size=(r, s))
    weights = (draws[:, :, None] == np.arange(s)).sum(1) / s  # (r, seeds): how often each seed was drawn
    return weights @ seeds


@dataclass
class Comparison:
    """Cell A against cell B on the same validation images."""

    a: str
    b: str
    diff: float  # accuracy(A) - accuracy(B), as a fraction
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "McNemar exact" (one run each) or "paired bootstrap"
    images: int
    seeds: tuple[int, int]
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def compare(name_a: str, side_a: list[dict], name_b: str, side_b: list[dict], resamples: int = RESAMPLES,
            seed: int = 0) -> Comparison:
    """Compare two cells from their runs' `correctness` dicts (one per seed).

    One run a side: McNemar's exact test gives the p value. Several seeds: the paired
    bootstrap does. The interval is the paired bootstrap's either way.
    """
    mat_a, mat_b = paired_matrices(side_a, side_b)
    boot = paired_bootstrap(mat_a, mat_b, resamples, seed)
    if len(side_a) == 1 and len(side_b) == 1:
        p, test = mcnemar_exact(mat_a[0], mat_b[0])["p_value"], "McNemar exact"
    else:
        p, test = boot["p_value"], "paired bootstrap"
    seeds = (len(side_a), len(side_b))
    images = mat_a.shape[1]
    return Comparison(name_a, name_b, boot["diff"], boot["ci_low"], boot["ci_high"], p, test, images, seeds,
                      verdict(name_a, name_b, boot["diff"], boot["ci_low"], boot["ci_high"], p, images, seeds))


def verdict(name_a: str, name_b: str, diff: float, low: float, high: float, p: float, images: int,
            seeds: tuple[int, int], alpha: float = 1 - CONFIDENCE) -> str:
    """One plain sentence: who wins by how much and how sure that is, or that nobody does."""
    if diff < 0:
        name_a, name_b, diff, low, high = name_b, name_a, -diff, -high, -low
    on = f"{images} validation images" + (f", {seeds[0]} vs {seeds[1]} seeds" if max(seeds) > 1 else "")
    numbers = f"95% CI {100 * low:.1f} to {100 * high:.1f}, {_p_text(p)}"
    if p < alpha:
        return f"{name_a} beats {name_b} by {100 * diff:.1f} points ({numbers}) on {on}."
    more = "run more seeds or get more data" if images < 1000 or max(seeds) < 3 else "the two are about equal here"
    return (f"no significant difference between {name_a} and {name_b} on {on} "
            f"({name_a} ahead by {100 * diff:.1f} points, {numbers}): {more}.")


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"
