"""Stochastic in-memory factorizer (bipolar), float reference — SPEC section 4.

A resonator network whose similarity step runs on an analog crossbar: the
intrinsic read noise of the devices and a threshold nonlinearity break the
limit cycles of the plain resonator (:mod:`hdsim.factorizers.resonator`). Per
factor ``f`` (sequentially, ``f = 0..F-1``):

1. ``u = q ⊙ prod_{g != f} x_g``                       (unbind the other estimates)
2. ``a = X_f u / D + n``, ``n = similarity_noise``      (normalized similarity in
   ``[-1, 1]`` plus noise; default ``n ~ N(0, sigma^2)`` i.i.d. per entry)
3. ``a' = a`` where ``a >= T``, else 0                  (threshold activation)
4. ``x_f = sign(X_f^T a')``, ``sign(0) = +1``;          if no entry reaches ``T``
   (``a'`` all zero) the estimate ``x_f`` is kept

Choices (SPEC is silent on these; also in ``docs/factorizers.md``):

* Noise scale: ``sigma = None`` (default) means ``0.0107 * sqrt(512 / D)``:
  the published 0.0107 at D=512, scaled like the sum of ``D`` independent
  per-device read-noise terms divided by ``D`` (0.0151 at D=256). Pass a float
  to fix it.
* Threshold: ``T = None`` (default) picks ``T_f = z_{1 - 3.5/M_f} / sqrt(D)``
  per factor (:func:`default_threshold`): on average 3.5 of the ``M_f``
  unrelated similarities (about ``N(0, 1/D)``) survive. That is 0.1379 at
  D=M=256 (the published runs used 0.136 there). A fixed 0.136 fails small
  codebooks: at D=256, F=3 it reached 66% / 31% / 59% / 91% accuracy for
  M=10 / 16 / 32 / 64 where the rule reaches 100% (32 queries each).
* All-zero ``a'`` (``silent="keep"``, default): ``X_f^T 0`` carries no
  information and ``sign(0)`` would collapse ``x_f`` to all ``+1``, so the
  estimate is kept and only the noise moves the next similarity. The
  alternative ``silent="unthresholded"`` (``a' = a``, the BCF's rule of SPEC
  3 step 2.3) makes a plain resonator step instead; at D=M=256, F=3 it drives
  the network into mixture states whose spurious similarities pass the 0.625
  detection threshold (55% accuracy at T=0.1379, all "converged").
* Init: ``x_f = sign(sum_m X_f[m])`` (ties +1), as the dense resonator.
* Detection (stopping rule): a query stops right after the factor update in
  which the *noisy* similarity ``max_m a_m`` (step 2, what the hardware sees)
  exceeds ``detection`` (default 0.625, strictly greater). That update is kept;
  the factors after it are not updated in that iteration.
* Readout: after a query stops (detection or ``max_iter``) one noise-free pass
  over the final estimates computes ``s_f = X_f (q ⊙ prod_{g != f} x_g) / D``
  for every factor and reads ``idx_f = argmax_m |s_f[m]|`` (lowest index wins
  ties); ``max_similarity`` is that ``|s_f|`` maximum. The absolute value
  resolves the sign symmetry of bipolar binding (negating two factors leaves
  the product unchanged), as in the dense resonator's default readout.
* Crossbar MVMs (``mvm=``, e.g. :class:`hdsim.imc.CrossbarMVMs`): the
  similarity ``X_f u / D`` (step 2), the bundling ``X_f^T a'`` (step 4) and the
  readout similarity run through ``mvm.similarity(u, f)`` / ``mvm.bundle(a', f)``
  instead of exact products; the crossbar is the noise source, so the default
  Gaussian is off (a ``similarity_noise`` given as well is applied on top).
  ``mvm.reset()`` is called at the start of every ``factorize``.
* Randomness: the default noise is drawn from a CPU generator seeded with
  ``seed`` at the start of every :meth:`StochasticFactorizer.factorize` call and
  moved to the device, so a call is a function of ``(queries, batch_size,
  seed)`` and CPU and CUDA draw the same numbers (results agree unless a float
  sum in ``X_f^T a'`` rounds across 0 differently). The draw shape follows the
  working set, so a different ``batch_size`` gives a different (equally valid) draw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable, Protocol

import torch
from torch import Tensor

from hdsim.codes import seeded_generator
from hdsim.errors import HdsimError
from hdsim.factorizers.base import FactorizationResult
from hdsim.factorizers.resonator import (
    BipolarCodebooks,
    bipolar_sign,
    check_bipolar_codebooks,
    check_bipolar_queries,
    resolve_dtype,
    unbind_others,
)
from hdsim.factorizers.resonator import make_problem as make_bipolar_problem

__all__ = [
    "SimilarityNoise",
    "FactorizerMVMs",
    "GaussianSimilarityNoise",
    "StochasticConfig",
    "StochasticFactorizer",
    "default_sigma",
    "default_threshold",
    "default_stochastic_max_iter",
    "make_problem",
]

SimilarityNoise = Callable[[Tensor, int], Tensor]
"""``similarity_noise(a, factor) -> perturbed a``: ``a`` is ``(k, M_f)`` normalized
similarities of the ``k`` queries still running; it returns a tensor of the same
shape, device and dtype."""



class FactorizerMVMs(Protocol):
    """The two matrix-vector products of the stochastic factorizer, on some substrate
    (an analog crossbar: :class:`hdsim.imc.CrossbarMVMs`).

    * ``similarity(u (k, D), factor) -> (k, M_f)``: ``X_f u / D`` (normalized: a
      codevector's similarity with itself is 1 when exact), noise included.
    * ``bundle(a (k, M_f), factor) -> (k, D)``: ``X_f^T a`` (only its sign is used).
    * ``reset()``: restart the substrate's random streams (called by every ``factorize``).

    Returned tensors have the input's shape convention, device and dtype.
    """

    def similarity(self, u: Tensor, factor: int) -> Tensor: ...

    def bundle(self, a: Tensor, factor: int) -> Tensor: ...

    def reset(self) -> None: ...


SIGMA_D512 = 0.0107


def default_sigma(D: int) -> float:
    """Default noise std: ``0.0107 * sqrt(512 / D)`` (0.0107 at D=512).

    Example:
        >>> round(default_sigma(256), 4)
        0.0151
    """
    return SIGMA_D512 * math.sqrt(512.0 / D)


ACTIVE_TARGET = 3.5


def default_threshold(M: int, D: int, active: float = ACTIVE_TARGET) -> float:
    """Default activation threshold ``T = max(0, z_{1 - active/M} / sqrt(D))``.

    ``z_p`` is the standard normal quantile. A codevector unrelated to ``u`` has
    a normalized similarity of about ``N(0, 1/D)``, so on average ``active``
    (3.5) of the ``M`` unrelated entries survive the threshold. One fixed T does
    not fit all M: at D=256, 0.136 suits M=256 but deadlocks M=10..32.

    Example:
        >>> round(default_threshold(256, 256), 4), default_threshold(3, 256)
        (0.1379, 0.0)
    """
    if M <= active:
        return 0.0
    return max(0.0, NormalDist().inv_cdf(1.0 - active / M) / math.sqrt(D))


def default_stochastic_max_iter(sizes: tuple[int, ...]) -> int:
    """``max(2000, ceil(prod_f M_f / 1000))`` — the sparse resonator's rule (seed 000
    eq. 3.7); SPEC gives no cap for this factorizer.

    Example:
        >>> default_stochastic_max_iter((256, 256, 256))
        16778
    """
    return max(2000, -(-math.prod(sizes) // 1000))


class GaussianSimilarityNoise:
    """Default similarity noise: ``a + n`` with ``n ~ N(0, sigma^2)`` i.i.d. per entry.

    Draws on a CPU generator (seeded), then moves to ``a``'s device and dtype, so
    the numbers do not depend on the compute device.

    Example:
        >>> noise = GaussianSimilarityNoise(0.0, seed=0)
        >>> noise(torch.zeros(2, 3), 0)
        tensor([[0., 0., 0.],
                [0., 0., 0.]])
    """

    def __init__(self, sigma: float, seed: int) -> None:
        self.sigma = float(sigma)
        self.generator = seeded_generator(seed)

    def __call__(self, a: Tensor, factor: int) -> Tensor:
        if self.sigma == 0.0:
            return a
        n = torch.randn(a.shape, generator=self.generator, dtype=a.dtype)
        return a + (self.sigma * n).to(device=a.device, dtype=a.dtype)


def _no_noise(a: Tensor, factor: int) -> Tensor:
    return a


def make_problem(F: int, M: int | tuple[int, ...], D: int, n: int, seed: int, *,
                 noise: float = 0.0) -> tuple[BipolarCodebooks, Tensor, Tensor]:
    """A factorization problem for the stochastic factorizer (bipolar codes).

    Same draw as :func:`hdsim.factorizers.resonator.make_problem`: one CPU
    generator seeded with ``seed`` draws the codebooks, then the query indices,
    then the sign flips (each query entry flips with probability ``noise``).

    Shapes:
        returns: ``(BipolarCodebooks with (M_f, D) tensors, queries (n, D), truth (n, F))``

    Example:
        >>> cb, q, truth = make_problem(F=2, M=16, D=256, n=20, seed=0)
        >>> StochasticFactorizer(cb).factorize(q).accuracy(truth)
        1.0
    """
    return make_bipolar_problem(F, M, D, n, seed, noise=noise)  # the resonator's bipolar problem


@dataclass(frozen=True)
class StochasticConfig:
    """Stochastic factorizer hyper-parameters.

    Attributes:
        T: activation threshold on the normalized noisy similarity ``a`` (entries
            ``a < T`` become 0); range ``[0, 1)``. ``None`` (default) means
            :func:`default_threshold` ``(M_f, D)`` per factor (0.1379 at
            D=M=256; measured best there: 0.136, see ``docs/factorizers.md``).
        sigma: std of the default Gaussian similarity noise (>= 0); ``None``
            means :func:`default_sigma` ``(D)``. Ignored when a custom
            ``similarity_noise`` is given.
        detection: stop when a factor's noisy max similarity exceeds this; range ``(0, 1]``.
        max_iter: iteration cap per query (>= 1); ``None`` means
            :func:`default_stochastic_max_iter` (16,778 at M=256, F=3).
        silent: what a factor does when no similarity reaches ``T``: ``"keep"``
            (default) keeps ``x_f``; ``"unthresholded"`` uses ``a' = a``.
    """

    T: float | None = None
    sigma: float | None = None
    detection: float = 0.625
    max_iter: int | None = None
    silent: str = "keep"

    def resolved_sigma(self, D: int) -> float:
        return float(self.sigma) if self.sigma is not None else default_sigma(D)

    def resolved_max_iter(self, sizes: tuple[int, ...]) -> int:
        return self.max_iter if self.max_iter is not None else default_stochastic_max_iter(sizes)

    def resolved_T(self, sizes: tuple[int, ...], D: int) -> tuple[float, ...]:
        """The threshold of each factor."""
        if self.T is not None:
            return (float(self.T),) * len(sizes)
        return tuple(default_threshold(m, D) for m in sizes)

    def validate(self) -> None:
        """Raise :class:`HdsimError` naming the first parameter out of range."""
        if self.T is not None and not (0.0 <= self.T < 1.0):  # also rejects NaN
            raise HdsimError(f"T: threshold must be in [0, 1), got {self.T}")
        if self.sigma is not None and not (self.sigma >= 0.0 and math.isfinite(self.sigma)):
            raise HdsimError(f"sigma: must be a finite number >= 0, got {self.sigma}")
        if not (0.0 < self.detection <= 1.0):
            raise HdsimError(f"detection: threshold must be in (0, 1], got {self.detection}")
        if self.silent not in ("keep", "unthresholded"):
            raise HdsimError(f"silent: expected 'keep' or 'unthresholded', got {self.silent!r}")
        if self.max_iter is not None and (isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int)
                                          or self.max_iter < 1):
            raise HdsimError(f"max_iter: must be an integer >= 1, got {self.max_iter!r}")

    def as_dict(self, D: int, sizes: tuple[int, ...]) -> dict:
        d = asdict(self)
        d["sigma"] = self.resolved_sigma(D)
        d["max_iter"] = self.resolved_max_iter(sizes)
        d["T"] = list(self.resolved_T(sizes, D))
        return d


class StochasticFactorizer:
    """Stochastic in-memory factorizer for dense bipolar product vectors.

    Per factor: ``a = X_f (q ⊙ prod_{g != f} x_g) / D + n``; ``a' = a`` where ``a >= T``
    else 0; ``x_f = sign(X_f^T a')`` (kept when ``a'`` is all zero); stop when
    ``max a > detection``; readout ``argmax_m |s_f[m]|`` (noise-free, see module doc).

    Shapes:
        codebooks: ``F`` tensors ``(M_f, D)`` of ``±1``
        queries: ``(N, D)`` real
        result: indices ``(N, F)``, iterations ``(N,)``, converged ``(N,)`` (detected
        before ``max_iter``), max_similarity ``(N, F)`` (readout ``|s_f|`` maximum; noise-free
        unless ``mvm`` is set)

    Args:
        codebooks: the ``F`` bipolar codebooks.
        config: hyper-parameters (validated here).
        similarity_noise: ``(a, factor) -> perturbed a``; replaces the default
            Gaussian noise. A custom callable keeps its own state across calls.
        mvm: run the similarity, bundling and readout products on a
            :class:`FactorizerMVMs` (e.g. ``hdsim.imc.CrossbarMVMs``, a PCM
            crossbar); then there is no default Gaussian noise (the crossbar's
            noise drives the search) and ``sigma`` is unused.
        seed: seed of the default Gaussian noise (re-seeded at every ``factorize``).
        device: torch device for the computation.
        dtype: ``torch.float32`` (default) or ``torch.float64``.

    Example:
        >>> cb, q, truth = make_problem(F=3, M=16, D=256, n=32, seed=0)
        >>> res = StochasticFactorizer(cb, seed=1).factorize(q)
        >>> res.accuracy(truth), bool(res.converged.all())
        (1.0, True)
    """

    def __init__(self, codebooks: BipolarCodebooks, config: StochasticConfig = StochasticConfig(), *,
                 similarity_noise: SimilarityNoise | None = None, mvm: FactorizerMVMs | None = None,
                 seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        config.validate()
        check_bipolar_codebooks(codebooks)
        if similarity_noise is not None and not callable(similarity_noise):
            raise HdsimError("similarity_noise: expected a callable (a, factor) -> Tensor")
        if mvm is not None and not all(callable(getattr(mvm, m, None)) for m in ("similarity", "bundle", "reset")):
            raise HdsimError("mvm: expected an object with similarity(u, f), bundle(a, f) and reset() "
                             "(e.g. hdsim.imc.CrossbarMVMs)")
        if mvm is not None and tuple(getattr(mvm, "sizes", codebooks.sizes)) != codebooks.sizes:
            raise HdsimError(f"mvm: built for codebook sizes {tuple(mvm.sizes)}, the factorizer has {codebooks.sizes}")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.codebooks = codebooks.to(self.device, self.dtype)
        self.config = config
        self.sigma = config.resolved_sigma(codebooks.D)
        self.max_iter = config.resolved_max_iter(codebooks.sizes)
        self.T = config.resolved_T(codebooks.sizes, codebooks.D)
        self.similarity_noise = similarity_noise
        self.mvm = mvm
        self.seed = int(seed)

    def initial_estimates(self, n: int) -> Tensor:
        """``x_f = sign(sum_m X_f[m])`` (ties +1) for every query, shape ``(n, F, D)``."""
        init = torch.stack([bipolar_sign(X.sum(dim=0)) for X in self.codebooks.vectors])
        return init.unsqueeze(0).expand(n, -1, -1).clone()

    def readout(self, q: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``argmax_m |X_f (q ⊙ prod_{g != f} x_g)|[m] / D`` per factor
        (lowest index on ties) and the maximum: noise-free, or one
        ``mvm.similarity`` read per factor when ``mvm`` is set.

        Shapes:
            q: ``(k, D)``; x: ``(k, F, D)``; returns ``(k, F)`` int64 and ``(k, F)`` float
        """
        idx, val = [], []
        for f, X in enumerate(self.codebooks.vectors):
            u = unbind_others(q, x, f)
            best = self._similarity(u, X, f).abs().max(dim=1)  # torch returns the first maximum
            idx.append(best.indices)
            val.append(best.values)
        return torch.stack(idx, dim=1), torch.stack(val, dim=1)

    def _similarity(self, u: Tensor, X: Tensor, f: int) -> Tensor:
        """``X_f u / D``: exact, or through ``mvm`` (shape-checked)."""
        if self.mvm is None:
            return (u @ X.t()) / self.codebooks.D
        a = self.mvm.similarity(u, f)
        if not isinstance(a, Tensor) or tuple(a.shape) != (u.shape[0], X.shape[0]):
            raise HdsimError(f"mvm: similarity must return a tensor of shape {(u.shape[0], X.shape[0])}, "
                             f"got {getattr(a, 'shape', type(a).__name__)}")
        return a.to(u.device, u.dtype)

    def _bundle(self, a: Tensor, X: Tensor, f: int) -> Tensor:
        """``X_f^T a``: exact, or through ``mvm`` (shape-checked)."""
        if self.mvm is None:
            return a @ X
        y = self.mvm.bundle(a, f)
        if not isinstance(y, Tensor) or tuple(y.shape) != (a.shape[0], X.shape[1]):
            raise HdsimError(f"mvm: bundle must return a tensor of shape {(a.shape[0], X.shape[1])}, "
                             f"got {getattr(y, 'shape', type(y).__name__)}")
        return y.to(a.device, a.dtype)

    def factorize(self, queries: Tensor, batch_size: int | None = None) -> FactorizationResult:
        """Decode a batch of queries.

        Shapes:
            queries: ``(N, D)`` (or one ``(D,)``) finite real
            returns: :class:`FactorizationResult` (on the CPU)

        Args:
            batch_size: queries decoded together; ``None`` for all at once.
        """
        q = check_bipolar_queries(queries, self.codebooks.D)
        N = q.shape[0]
        step = N if batch_size is None else batch_size
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise HdsimError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        if self.similarity_noise is not None:
            noise = self.similarity_noise
        elif self.mvm is not None:
            noise = _no_noise  # the crossbar is the noise source
        else:
            noise = GaussianSimilarityNoise(self.sigma, self.seed)  # fresh draw per call
        if self.mvm is not None:
            self.mvm.reset()
        parts = [self._factorize_batch(q[s:s + step], noise) for s in range(0, N, step)]
        return FactorizationResult.concat(parts)

    def _factorize_batch(self, queries: Tensor, noise: SimilarityNoise) -> FactorizationResult:
        cb, cfg = self.codebooks, self.config
        F = cb.F
        q = queries.to(self.device, self.dtype)
        n = q.shape[0]
        res = FactorizationResult.zeros(n, F, self.dtype)  # filled in place below
        indices, iterations, converged, max_sim = res.indices, res.iterations, res.converged, res.max_similarity

        active = torch.arange(n, device=self.device)  # batch positions still decoding
        x = self.initial_estimates(n)

        def finish(done: Tensor, detected: Tensor) -> None:
            # Write out the queries in `done`, then drop them from the working set.
            nonlocal active, q, x
            idx, val = self.readout(q[done], x[done])
            out = active[done].cpu()
            indices[out] = idx.cpu()
            max_sim[out] = val.cpu()
            converged[out] = detected[done].cpu()
            stay = ~done
            active, q, x = active[stay], q[stay], x[stay]

        for it in range(1, self.max_iter + 1):
            iterations[active.cpu()] = it
            for f, X in enumerate(cb.vectors):
                u = unbind_others(q, x, f)  # uses this iteration's update of factors < f
                clean = self._similarity(u, X, f)
                a = noise(clean, f)
                if not isinstance(a, Tensor) or a.shape != clean.shape:
                    raise HdsimError(f"similarity_noise: must return a tensor of shape {tuple(clean.shape)}, "
                                     f"got {getattr(a, 'shape', type(a).__name__)}")
                detected = a.amax(dim=1) > cfg.detection
                kept = a >= self.T[f]
                silent = ~kept.any(dim=1, keepdim=True)
                if self.config.silent == "keep":
                    x[:, f] = torch.where(silent, x[:, f], bipolar_sign(self._bundle(torch.where(kept, a, 0.0), X, f)))
                else:
                    x[:, f] = bipolar_sign(self._bundle(torch.where(kept | silent, a, 0.0), X, f))
                if bool(detected.any()):
                    finish(detected, detected)
                    if active.numel() == 0:
                        break
            if active.numel() == 0:
                break
        if active.numel() > 0:  # ran out of iterations
            finish(torch.ones_like(active, dtype=torch.bool), torch.zeros_like(active, dtype=torch.bool))
        return res
