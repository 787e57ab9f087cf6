"""Stochastic scalar products (seed 004, SPEC section 8): a weight vector replaced by ``n`` samples.

A scalar product ``w . x`` over ``m`` inputs is estimated by drawing ``n`` input indices with
probability ``|w_i| / ||w||_1`` and summing ``sign(w_i) x_i`` over the draws, scaled by
``||w||_1 / n``. The draws use the seed's *jittered equidistant* points: with the cumulative
sums ``P_k = sum_{j<=k} |w_j| / ||w||_1`` (``0 = P_0 < ... < P_m = 1``), sample ``j`` is

    ``xi_j = (j + u_j) / n``, ``u_j ~ U[0, 1)`` independent, ``j = 0 .. n-1``,
    index ``i(j)`` with ``P_{i-1} <= xi_j < P_i``.

Each stratum ``[j/n, (j+1)/n)`` holds exactly one point, so an input is drawn
``k_i = #{j : i(j) = i}`` times, and the product becomes

    ``w . x  ~=  sum_i (sign(w_i) k_i) * (||w||_1 / n) * x_i``

— integer weights ``q_i = sign(w_i) k_i`` times one scale per output (ternary ``{-1, 0, 1}``
where no input is drawn twice, as when ``n`` is below the fan-in). Unbiased:
``P(i(j) = i) `` summed over the strata is ``n |w_i| / ||w||_1``, so ``E[k_i] = n |w_i| / ||w||_1``
and ``E[q_i ||w||_1 / n] = w_i``; stratification makes ``k_i`` differ from its mean by less than
2 (the variance falls as ``n`` grows, faster than independent draws'). A zero row stays zero.

Example:
    >>> w = np.array([[0.5, -0.25, 0.25, 0.0]])
    >>> q, scale = sample_weights(w, 4, np.random.default_rng(0))
    >>> q.tolist(), scale.tolist()   # 2 of 4 draws land on the 0.5 weight, 1 each on the others
    ([[2, -1, 1, 0]], [0.25])
"""

from __future__ import annotations

import math

import numpy as np

from hdsim.errors import HdsimError

__all__ = ["sample_weights", "samples_for_fraction", "check_fraction"]


def check_fraction(f) -> float:
    """A sampled fraction must be a number in ``(0, 1]``."""
    try:
        v = float(f)
    except (TypeError, ValueError):
        raise HdsimError(f"stochastic_fraction: expected a number in (0, 1], got {f!r}") from None
    if not (0.0 < v <= 1.0):
        raise HdsimError(f"stochastic_fraction: must be in (0, 1], got {f!r}")
    return v


def samples_for_fraction(fan_in: int, fraction: float) -> int:
    """``n = max(1, ceil(fraction * fan_in))`` samples for a row of ``fan_in`` weights."""
    return max(1, math.ceil(check_fraction(fraction) * int(fan_in) - 1e-9))


def sample_weights(w: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample every row of ``w`` ``(rows, m)`` with ``n`` jittered equidistant draws (module docstring).

    Shapes:
        w: ``(rows, m)`` real, finite; returns ``q`` ``(rows, m)`` int64 (``sign(w) * counts``, each row's
        ``|q|`` summing to ``n``, or 0 for a zero row) and ``scale`` ``(rows,)`` float64 (``||w_row||_1 / n``),
        so that ``q * scale[:, None]`` estimates ``w`` without bias.

    Raises:
        HdsimError: ``w`` not 2-D or not finite, ``n < 1``.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] < 1:
        raise HdsimError(f"weights: expected a 2-D (rows, fan_in) array, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise HdsimError("weights: contain NaN or infinite values")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise HdsimError(f"n: samples per row must be an integer >= 1, got {n!r}")
    a = np.abs(w)
    norm = a.sum(axis=1)
    rows = w.shape[0]
    xi = (np.arange(n)[None, :] + rng.random((rows, n))) / n  # one point per stratum
    cdf = np.cumsum(a, axis=1) / np.where(norm > 0, norm, 1.0)[:, None]
    cdf[:, -1] = 1.0  # the last boundary is 1 exactly: no point falls past it by round-off
    q = np.zeros(w.shape, np.int64)
    for r in np.flatnonzero(norm > 0):
        # P_{i-1} <= xi < P_i; a zero weight has an empty interval and is never drawn
        idx = np.searchsorted(cdf[r], xi[r], side="right")
        # (j + u) / n can round up to 1.0 itself: that point belongs to the last nonzero weight
        idx = np.minimum(idx, np.flatnonzero(a[r])[-1])
        q[r] = np.bincount(idx, minlength=w.shape[1])
    q *= np.sign(w).astype(np.int64)
    return q, norm / n
