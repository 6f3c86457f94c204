"""How well a feature sets a set of samples apart from the rest: AUROC and its permutation p-value,
and the Benjamini-Hochberg correction over many such tests.

Numeric features: the AUROC is the Mann-Whitney U of the set against the rest over their sizes;
its p-value is that of the rank sum under random relabelling of set and rest (a permutation test),
from the permutation distribution's mean and tie-corrected variance (its normal limit; for a small
set this overstates the far tail, so the p-value errs on the side of "chance"). Yes/no features:
the number of the set's samples with it follows the hypergeometric law under relabelling, so the
permutation p-value is exact. Both two-sided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Ranked:
    """A numeric feature ranked once (average ranks of its finite values), for many sets."""

    ranks: np.ndarray  # (N,) average rank among the finite values; NaN where the value is not finite
    finite: np.ndarray  # (N,) bool
    n: int  # finite values
    ties: float  # sum of t^3 - t over groups of tied values

    @classmethod
    def of(cls, values: np.ndarray) -> Ranked:
        from scipy.stats import rankdata

        v = np.asarray(values, np.float64)
        finite = np.isfinite(v)
        ranks = np.full(len(v), np.nan)
        ranks[finite] = rankdata(v[finite])
        _, counts = np.unique(v[finite], return_counts=True)
        t = counts.astype(np.float64)
        return cls(ranks, finite, int(finite.sum()), float((t**3 - t).sum()))

    @property
    def constant(self) -> bool:
        return self.n < 2 or self.ties >= float(self.n) ** 3 - self.n - 1e-9


def rank_test(r: Ranked, rows: np.ndarray) -> tuple[float, float, int]:
    """(AUROC of the set ``rows`` against the rest, two-sided p-value, set size used); (0.5, 1, n)
    when either side has fewer than two finite values or every value is tied."""
    rows = rows[r.finite[rows]]
    n1 = len(rows)
    n2 = r.n - n1
    if n1 < 2 or n2 < 2 or r.constant:
        return 0.5, 1.0, n1
    from scipy.stats import norm

    u = float(r.ranks[rows].sum()) - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((r.n + 1) - r.ties / (r.n * (r.n - 1)))
    if var <= 0:
        return 0.5, 1.0, n1
    z = (abs(u - mean) - 0.5) / np.sqrt(var)  # continuity correction
    p = float(min(1.0, 2 * norm.sf(max(z, 0.0))))
    return u / (n1 * n2), p, n1


def indicator_test(has: np.ndarray, rows: np.ndarray) -> tuple[float, float, float, float]:
    """For a yes/no feature ``has`` (N,) bool: (AUROC, exact two-sided p-value, share of the set
    with it, share of the rest with it)."""
    from scipy.stats import hypergeom

    n = len(has)
    n1 = len(rows)
    total = int(has.sum())
    k = int(has[rows].sum())
    n2 = n - n1
    if n1 == 0 or n2 == 0 or total in (0, n):
        return 0.5, 1.0, k / max(n1, 1), (total - k) / max(n2, 1)
    share, rest = k / n1, (total - k) / n2
    upper = float(hypergeom.sf(k - 1, n, total, n1))
    lower = float(hypergeom.cdf(k, n, total, n1))
    p = min(1.0, 2 * min(upper, lower))
    return 0.5 + (share - rest) / 2, p, share, rest


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """q-values (Benjamini-Hochberg step-up) of ``p``, in its order."""
    p = np.asarray(p, np.float64)
    m = len(p)
    if not m:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def stratified_test(values: np.ndarray, strata: np.ndarray, rows: np.ndarray, *, binary: bool) -> tuple[float, float]:
    """The set ``rows`` against the rest *within* each stratum (each class): (AUROC pooled over the
    strata, two-sided p-value of relabelling within strata). Numeric: the stratified Mann-Whitney
    sum (van Elteren without weights); yes/no: Cochran-Mantel-Haenszel. A description that holds
    within classes is not the class in other words."""
    from scipy.stats import norm, rankdata

    v = np.asarray(values, np.float64)
    inside = np.zeros(len(v), bool)
    inside[rows] = True
    ok = np.isfinite(v)
    u_sum = mean_sum = var_sum = pairs = 0.0
    for g in np.unique(strata[ok]):
        m = ok & (strata == g)
        x, s = v[m], inside[m]
        n1, n = int(s.sum()), len(x)
        n2 = n - n1
        if n1 == 0 or n2 == 0:
            continue
        if binary:
            total, k = float(x.sum()), float(x[s].sum())
            u_sum += k * n2 - (total - k) * n1  # n1 n2 (share_in - share_out)
            pairs += n1 * n2
            if n > 1:
                var_sum += (n1 * n2 * total * (n - total) / (n * n * (n - 1))) * n * n  # var of the scaled count
            continue
        r = rankdata(x)
        _, t = np.unique(x, return_counts=True)
        ties = float((t.astype(np.float64) ** 3 - t).sum())
        u_sum += float(r[s].sum()) - n1 * (n1 + 1) / 2
        mean_sum += n1 * n2 / 2
        if n > 1:
            var_sum += n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
        pairs += n1 * n2
    if pairs == 0 or var_sum <= 0:
        return 0.5, 1.0
    if binary:
        auroc = 0.5 + u_sum / (2 * pairs)
        z = abs(u_sum) / np.sqrt(var_sum)
    else:
        auroc = u_sum / pairs
        z = max(abs(u_sum - mean_sum) - 0.5, 0.0) / np.sqrt(var_sum)
    return float(auroc), float(min(1.0, 2 * norm.sf(z)))
