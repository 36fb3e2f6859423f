"""Summary statistics of per-image benchmark values: mean and a Student-t 95 % confidence interval.

The interval is ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` with ``sd`` the sample standard
deviation (``ddof = 1``). It is computed in closed form from the per-image values, with no
random resampling, so anyone can recompute it from ``results.json``. The t quantile is
found by bisection on the t distribution's CDF, integrated numerically (Simpson's rule);
it agrees with ``scipy.stats.t.ppf`` to about 1e-9 (no SciPy dependency).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

CONFIDENCE = 0.95


def _t_density(x: float, dof: int) -> float:
    """Density of Student's t with ``dof`` degrees of freedom at ``x``."""
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    return math.exp(log_norm - (dof + 1) / 2 * math.log1p(x * x / dof))


def _t_cdf(x: float, dof: int, intervals: int = 1000) -> float:
    """``P(T <= x)`` for ``x >= 0``: 1/2 plus Simpson's rule of the density over ``[0, x]``."""
    h = x / intervals
    total = _t_density(0.0, dof) + _t_density(x, dof)
    total += sum((4 if i % 2 else 2) * _t_density(i * h, dof) for i in range(1, intervals))
    return 0.5 + total * h / 3


@functools.cache
def t_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile (``> 0.5``) of Student's t with ``dof >= 1`` degrees of freedom."""
    if not 0.5 < probability < 1 or dof < 1:
        raise ValueError(f"need 0.5 < probability < 1 and dof >= 1, got {probability}, {dof}")
    low, high = 0.0, 1.0
    while _t_cdf(high, dof) < probability:
        low, high = high, high * 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_cdf(middle, dof) < probability else (low, middle)
    return (low + high) / 2


def summarise(values: Sequence[float | None], confidence: float = CONFIDENCE) -> dict[str, float | int | None]:
    """``{"mean", "sd", "n", "ci_low", "ci_high", "half_width"}`` of ``values`` (t-interval; ``None`` when n < 2).

    ``None`` entries (a metric undefined on that input, e.g. SIC when the blurred image already scores
    as high as the original) are left out, and ``n`` counts the others.
    """
    defined = [v for v in values if v is not None]
    n = len(defined)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci_low": None, "ci_high": None, "half_width": None}
    mean = math.fsum(defined) / n
    if n < 2:
        return {"mean": mean, "sd": None, "n": n, "ci_low": None, "ci_high": None, "half_width": None}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in defined) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half, "half_width": half}
