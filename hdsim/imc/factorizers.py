"""PCM crossbars driving the factorizers' matrix-vector products — SPEC sections 4, 5 and 6.

Three adapters, one per consumer (``docs/imc.md``, "Factorizers on the crossbar"):

* :class:`CrossbarMVMs` — the stochastic in-memory factorizer
  (:class:`hdsim.factorizers.stochastic.StochasticFactorizer`, ``mvm=``): per
  factor one crossbar holds the bipolar codebook ``W_f = X_f^T`` (``(D, M_f)``,
  a differential device pair per ``±1``); the similarity ``a = X_f u / D`` is a
  forward read (column ADCs), the bundling ``X_f^T a'`` a backward read of the
  same devices (row ADCs).
* :class:`BlockCrossbarMVMs` — the float BCF with ``dot`` similarity
  (:class:`hdsim.factorizers.bcf.BlockCodeFactorizer`, ``mvm=``): the crossbar
  holds ``onehot(X_f)^T`` (``(D, M_f)``, unipolar ``{0, 1}``); similarity
  ``a = onehot(X_f) u`` forward, bundling ``onehot(X_f)^T w`` backward.
* :class:`FixedPointPerturbation` — the integer BCF
  (:meth:`hdsim.fixed.bcf.FixedBCF.factorize`, ``perturb=``): computes the
  crossbar's ``dot`` similarity of the model's integer ``u`` and returns its
  difference to the exact ``a`` in the ``a`` word's LSBs; it records every
  value it returned so that :class:`ReplayPerturbation` (or an RTL bench) can
  inject the same numbers again.

Common choices:

* **Device state.** ``t`` is the time since programming in seconds (one value
  per adapter: all MVMs of a decode happen at that age). ``noise_scale``
  multiplies the programming, read and output noise of the preset (not the
  drift). ``drift_compensation`` switches on the crossbar's global drift
  compensation.
* **Power-of-two input prescaling.** Each input vector is shifted by a power
  of two ``2^-e`` so that its largest ``|entry|`` lands in ``(1/2, 1]`` (the
  DAC range), and the output is shifted back by ``2^e`` digitally. A shift is
  exact in binary arithmetic, so with the ``ideal`` preset the crossbar path
  computes the same numbers as the digital one, and a DAC code carries the most
  resolution it can. (A zero vector is not shifted.)
* **Seeds.** Factor ``f``'s crossbar is programmed with
  ``derive_seed(seed, "factor<f>")``. The float adapters' read-noise streams
  restart at every :meth:`reset` (the factorizers call it at the start of
  every ``factorize``), so a decode is a function of the queries and ``seed``;
  :class:`FixedPointPerturbation`'s noise is counter-based (keyed by query id,
  iteration, factor and column), so each query's is also independent of its batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hdsim.codes import BlockCodebooks
from hdsim.errors import HdsimError
from hdsim.imc import pcm
from hdsim.imc.config import PCMNoiseConfig, imc_config
from hdsim.imc.crossbar import PCMCrossbar, derive_seed
from hdsim.imc.fixed_crossbar import PERTURBATION_HEADER, FixedPointCrossbar, PerturbationLog, onehot_weights

__all__ = [
    "imc_config",
    "pow2_prescale",
    "CrossbarMVMs",
    "BlockCrossbarMVMs",
    "FixedPointPerturbation",
    "ReplayPerturbation",
    "PERTURBATION_HEADER",
]


def _check_time(t) -> float:
    return pcm.check_time(t, "t")


def pow2_prescale(x: Tensor) -> tuple[Tensor, Tensor]:
    """Shift each row by ``2^-e`` so that its largest ``|entry|`` lies in ``(1/2, 1]``.

    ``e = ceil(log2(max|x|))`` per row (``e = 0`` for an all-zero row). Exact in
    binary floating point.

    Shapes:
        x: ``(N, n)`` float; returns the shifted ``(N, n)`` and ``e`` ``(N, 1)`` int32

    Example:
        >>> y, e = pow2_prescale(torch.tensor([[3.0, -1.0], [0.25, 0.0], [1.0, 0.5]]))
        >>> y.tolist(), e.squeeze(1).tolist()
        ([[0.75, -0.25], [1.0, 0.0], [1.0, 0.5]], [2, -2, 0])
    """
    m = x.abs().amax(dim=1, keepdim=True)
    mant, E = torch.frexp(m)  # m = mant * 2^E, mant in [1/2, 1) (0 -> 0, 0)
    e = torch.where(mant == 0.5, E - 1, E)  # exact powers of two go to 1, not 1/2
    return torch.ldexp(x, -e), e


def _bipolar_codebooks(codebooks):
    from hdsim.factorizers.resonator import BipolarCodebooks, check_bipolar_codebooks

    if not isinstance(codebooks, BipolarCodebooks):
        raise HdsimError(f"codebooks: expected BipolarCodebooks, got {type(codebooks).__name__}")
    check_bipolar_codebooks(codebooks)
    return codebooks


def _onehot_weights(X: Tensor, L: int) -> Tensor:
    """``onehot(X)^T``: ``(D, M)`` with ``W[b L + X[m, b], m] = 1`` (:func:`~hdsim.imc.fixed_crossbar.onehot_weights`)."""
    return torch.from_numpy(onehot_weights(X.cpu().numpy(), L))


class CrossbarMVMs:
    """The stochastic factorizer's two MVMs per factor on PCM crossbars.

    Pass as ``StochasticFactorizer(codebooks, config, mvm=CrossbarMVMs(codebooks, ...))``.

    * :meth:`similarity` ``(k, D) -> (k, M_f)``: ``a = X_f u / D`` through the
      column ADCs, returned in the **normalized units of the float reference**
      (a codevector's similarity with itself is 1 on an ideal crossbar), so the
      factorizer's ``T`` and ``detection`` keep their meaning.
    * :meth:`bundle` ``(k, M_f) -> (k, D)``: ``X_f^T a'`` through the row ADCs
      (the factorizer only takes its sign).

    Periphery per direction (a transposable array has converters on both sides):

    * similarity (column ADCs): the outputs span ``±D`` output units (``±D`` for
      ``u = ±X_f[m]``), far beyond the preset's ADC bound of 12. The column ADC
      range is set to ``sim_range * D`` output units (default ``sim_range = 1``:
      full scale = a perfect match, normalized similarity 1) by a gain change:
      ``adc_bound`` and ``out_noise`` are both multiplied by
      ``sim_range * D / preset.adc_bound``, so the ADC keeps its bits and its
      output noise in LSBs (1.275 LSB for the SPEC 6 periphery). At D=256 one
      ADC LSB is ``1/255`` of normalized similarity; the output noise has std
      ``0.06 / 12 = 0.005``.
    * bundling (row ADCs): the preset's periphery unchanged (``±12``);
      ``a'`` is prescaled by a power of two into ``(1/2, 1]`` (:func:`pow2_prescale`).

    Both directions read the same programmed devices (the same programming noise
    and drift exponents: two :class:`PCMCrossbar` views built from the same seed)
    with independent read-noise streams.

    Args:
        codebooks: the bipolar codebooks (:class:`~hdsim.factorizers.resonator.BipolarCodebooks`).
        preset: preset name or :class:`PCMNoiseConfig` (see :func:`imc_config`).
        t: time since programming, seconds (>= 0); default 20 s (= ``t0``: no drift yet).
        seed: seed of the devices and the read noise.
        drift_compensation: global drift compensation of the crossbar.
        noise_scale: multiplier of programming, read and output noise.
        sim_range: similarity ADC full scale in normalized similarity (> 0).
        device, dtype: of the crossbars.

    Example:
        >>> from hdsim.factorizers.stochastic import StochasticFactorizer, make_problem
        >>> cb, q, truth = make_problem(F=3, M=16, D=256, n=16, seed=0)
        >>> mvm = CrossbarMVMs(cb, "pcm-chip", t=3600.0, seed=1)
        >>> StochasticFactorizer(cb, mvm=mvm).factorize(q).accuracy(truth)
        1.0
    """

    def __init__(self, codebooks, preset: str | PCMNoiseConfig = "pcm-chip", *, t: float = 20.0,
                 seed: int = 0, drift_compensation: bool = False, noise_scale: float = 1.0,
                 sim_range: float = 1.0, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        cb = _bipolar_codebooks(codebooks)
        self.t = _check_time(t)
        if isinstance(sim_range, bool) or not isinstance(sim_range, (int, float)) \
                or not (math.isfinite(sim_range) and sim_range > 0):
            raise HdsimError(f"sim_range: must be a finite number > 0, got {sim_range!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise HdsimError(f"seed: expected an integer, got {seed!r}")
        base = imc_config(preset, noise_scale=noise_scale, drift_compensation=drift_compensation)
        self.config = base
        self.D = cb.D
        self.sizes = cb.sizes
        self.seed = seed
        self.noise_scale = float(noise_scale)
        self.drift_compensation = drift_compensation
        if math.isfinite(base.adc_bound):
            gain = sim_range * cb.D / base.adc_bound
            self.sim_config = base.replace(adc_bound=base.adc_bound * gain, out_noise=base.out_noise * gain)
        else:  # no ADC range to scale (preset "ideal"): the output noise stays in output units
            self.sim_config = base
        self.bundle_config = base
        self.sim_xbars: list[PCMCrossbar] = []
        self.bundle_xbars: list[PCMCrossbar] = []
        for f, X in enumerate(cb.vectors):
            s = derive_seed(seed, f"factor{f}")
            W = X.t().to("cpu", torch.float64)
            self.sim_xbars.append(PCMCrossbar(W, self.sim_config, seed=s, differential=True,
                                              device=device, dtype=dtype))
            self.bundle_xbars.append(PCMCrossbar(W, self.bundle_config, seed=s, differential=True,
                                                 device=device, dtype=dtype))
        self.reset()

    def reset(self) -> None:
        """Restart every read-noise stream (similarity: ``derive_seed(s_f, "read")``,
        bundling: ``derive_seed(derive_seed(s_f, "bundle"), "read")``)."""
        for xs, xb in zip(self.sim_xbars, self.bundle_xbars):
            xs.reset_read_noise()
            xb.reset_read_noise(derive_seed(xs.seed, "bundle"))

    def similarity(self, u: Tensor, factor: int) -> Tensor:
        """Noisy ``X_f u / D``, ``(k, D) -> (k, M_f)``, in the dtype/device of ``u``."""
        xs, e = pow2_prescale(u)
        y = self.sim_xbars[factor].forward(xs, self.t)
        return (torch.ldexp(y.to(u.dtype), e.to(u.device)) / self.D).to(u.device, u.dtype)

    def bundle(self, a: Tensor, factor: int) -> Tensor:
        """Noisy ``X_f^T a``, ``(k, M_f) -> (k, D)``, in the dtype/device of ``a``."""
        xs, e = pow2_prescale(a)
        y = self.bundle_xbars[factor].backward(xs, self.t)
        return torch.ldexp(y.to(a.dtype), e.to(a.device)).to(a.device, a.dtype)

    def output_scale(self) -> float:
        """Mean similarity of every codevector with itself through the crossbars (ideal: 1).

        The global gain after drift (and compensation): about ``(t / t0)^-nu``
        without compensation. Uses the read-noise stream (call after a decode,
        or :meth:`reset` before one).
        """
        vals = []
        for f, xb in enumerate(self.sim_xbars):
            Xt = xb.weights.t().to(xb.device, xb.dtype)  # (M, D) the codebook itself
            vals.append(torch.diagonal(self.similarity(Xt, f)).double().mean())
        return float(torch.stack(vals).mean())

    def describe(self) -> dict:
        return {"t": self.t, "seed": self.seed, "noise_scale": self.noise_scale,
                "drift_compensation": self.drift_compensation,
                "similarity_adc_bound": self.sim_config.adc_bound,
                "similarity_out_noise": self.sim_config.out_noise,
                "bundle_adc_bound": self.bundle_config.adc_bound}


class BlockCrossbarMVMs:
    """The float BCF's ``dot`` similarity and bundling on PCM crossbars.

    Pass as ``BlockCodeFactorizer(codebooks, BCFConfig(similarity="dot", ...), mvm=...)``.
    The crossbar of factor ``f`` holds ``onehot(X_f)^T`` (``(D, M_f)``, one device
    per ``{0, 1}`` weight). The preset's periphery is used in both directions:
    GSBC inputs are prescaled by a power of two into ``(1/2, 1]``; a ``dot``
    similarity is at most ``B`` and a bundle entry at most ``M_f`` times the
    largest weight, so the ADC bound 12 clips only when ``B > 12`` (similarity)
    or when more than 12 prescaled weights land on one position (bundling).

    * :meth:`similarity` ``(k, B, L) -> (k, M_f)``: ``a_m = sum_b u[b, X[m, b]]`` plus noise.
    * :meth:`bundle` ``(k, M_f) -> (k, B, L)``: ``s[b, l] = sum_{m: X[m,b]=l} w_m`` plus
      noise, before normalization (the factorizer clips it at 0 and l1-normalizes per block).

    Args: as :class:`CrossbarMVMs` (no ``sim_range``); ``codebooks`` a :class:`BlockCodebooks`.
    """

    def __init__(self, codebooks: BlockCodebooks, preset: str | PCMNoiseConfig = "pcm-default", *,
                 t: float = 20.0, seed: int = 0, drift_compensation: bool = False, noise_scale: float = 1.0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(codebooks, BlockCodebooks):
            raise HdsimError(f"codebooks: expected BlockCodebooks, got {type(codebooks).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise HdsimError(f"seed: expected an integer, got {seed!r}")
        self.t = _check_time(t)
        self.config = imc_config(preset, noise_scale=noise_scale, drift_compensation=drift_compensation)
        self.B, self.L = codebooks.B, codebooks.L
        self.seed = seed
        self.xbars = [PCMCrossbar(_onehot_weights(X, codebooks.L), self.config,
                                  seed=derive_seed(seed, f"factor{f}"), differential=False,
                                  device=device, dtype=dtype)
                      for f, X in enumerate(codebooks.indices)]
        self.reset()

    def reset(self) -> None:
        """Restart every read-noise stream."""
        for xb in self.xbars:
            xb.reset_read_noise()

    def similarity(self, u: Tensor, factor: int) -> Tensor:
        k = u.shape[0]
        xs, e = pow2_prescale(u.reshape(k, -1))
        y = self.xbars[factor].forward(xs, self.t)
        return torch.ldexp(y.to(u.dtype), e.to(u.device)).to(u.device, u.dtype)

    def bundle(self, w: Tensor, factor: int) -> Tensor:
        xs, e = pow2_prescale(w)
        y = self.xbars[factor].backward(xs, self.t)
        return torch.ldexp(y.to(w.dtype), e.to(w.device)).to(w.device, w.dtype).reshape(-1, self.B, self.L)


class FixedPointPerturbation:
    """IMC noise for the integer BCF's ``dot`` similarity, as integer perturbations of ``a``.

    The ``perturb`` callable of :meth:`hdsim.fixed.bcf.FixedBCF.factorize`:
    ``perturb(iteration, factor, query_ids (k,), u (k, B, L), a (k, M_f)) -> p (k, M_f)``,
    all int64. A thin torch adapter over the torch-free
    :class:`~hdsim.imc.fixed_crossbar.FixedPointCrossbar` (``self.crossbar``), which
    defines the computation (its module docstring has every step):

    1. ``u`` (``Q0.Wu``) is shifted left by ``e = Wu - bitlen(max u)`` bits and driven
       into factor ``f``'s crossbar (``onehot(X_f)^T``, unipolar) as ``x = u 2^e / 2^Wu``.
    2. The crossbar's column sums are exact integers on a fine grid (effective weights
       on ``2^-32``, read variances on ``2^-48``); read and output noise are Irwin-Hall
       Gaussians from counter-based hash words keyed by ``(seed, query id, iteration,
       factor, column)``; the ADC code (and with drift compensation the digitally
       rescaled code) is converted back to the ``a`` word::

           a_imc = floor(k * d_out * 2^(Wu - e) + 1/2)          (exact rational, half-up)
           p     = a_imc - a

       so the model's ``saturate(a + p, a_bits)`` is the crossbar's reading in the
       ``a`` word. Without an ADC (preset ``ideal``) ``p = 0``.

    A query's ``p`` depends only on ``(seed, query id, iteration, factor, u)``: not on the
    batch it is decoded in, nor on earlier calls; the compiled kernel
    :func:`hdsim.imc._fixed_crossbar_kernel.crossbar_perturbation` computes the same integers.

    Every returned ``p`` is recorded (iteration, factor, query ids);
    :meth:`records` / :meth:`save` export them as one int array and
    :class:`ReplayPerturbation` injects them again.

    Args:
        codebooks: the BCF's codebooks.
        widths: the model's :class:`~hdsim.fixed.widths.FixedWidths` (only ``unbound`` is used).
        preset, t, seed, drift_compensation, noise_scale: as :class:`BlockCrossbarMVMs`
            (factor ``f``'s devices are programmed from ``derive_seed(seed, "factor<f>")``).
        record: keep the returned perturbations (default ``True``).

    Raises:
        HdsimError: at a call whose ``a`` is not the ``dot`` similarity of ``u``
            (the model runs ``linf``), or on a bad option.
    """

    def __init__(self, codebooks: BlockCodebooks, widths=None, preset: str | PCMNoiseConfig = "pcm-default", *,
                 t: float = 20.0, seed: int = 0, drift_compensation: bool = False, noise_scale: float = 1.0,
                 record: bool = True) -> None:
        from hdsim.fixed.widths import FixedWidths

        if not isinstance(codebooks, BlockCodebooks):
            raise HdsimError(f"codebooks: expected BlockCodebooks, got {type(codebooks).__name__}")
        widths = FixedWidths() if widths is None else widths
        if not isinstance(widths, FixedWidths):
            raise HdsimError(f"widths: expected FixedWidths, got {type(widths).__name__}")
        widths.validate()
        self.codebooks = codebooks.to("cpu")
        self.crossbar = FixedPointCrossbar([X.numpy() for X in self.codebooks.indices], codebooks.L,
                                           widths.unbound, preset, t=t, seed=seed,
                                           drift_compensation=drift_compensation, noise_scale=noise_scale)
        self.t = self.crossbar.t
        self.config = self.crossbar.config
        self.Wu = widths.unbound
        self.seed = seed
        self.record = bool(record)
        self._log = PerturbationLog(self.codebooks.sizes)

    def reset(self) -> None:
        """Clear the record (the noise is keyed by query, iteration and factor: nothing to rewind)."""
        self._log.clear()

    def lsb_per_code(self, e: int = 0) -> float:
        """``a`` LSBs per ADC code for an input shifted by ``e`` bits: ``d_out 2^(Wu - e)``."""
        return self.crossbar.lsb_per_code(e)

    def imc_similarity(self, u: Tensor, factor: int, iteration: int = 1, query_ids: Tensor | None = None) -> Tensor:
        """The crossbar's ``dot`` similarity of integer ``u`` ``(k, B, L)`` in ``a`` LSBs, int64 ``(k, M_f)``
        (queries ``0..k-1`` unless ``query_ids`` are given)."""
        u = u.to("cpu", torch.long)
        ids = np.arange(u.shape[0]) if query_ids is None else query_ids.to("cpu", torch.long).numpy()
        return torch.from_numpy(self.crossbar.reading(iteration, factor, ids, u.numpy()))

    def __call__(self, iteration: int, factor: int, query_ids: Tensor, u: Tensor, a: Tensor) -> Tensor:
        ids = query_ids.to("cpu", torch.long).numpy()
        p = self.crossbar.perturbation(int(iteration), int(factor), ids, u.to("cpu", torch.long).numpy(),
                                       a.to("cpu", torch.long).numpy())
        if self.record:
            self._log.add(iteration, factor, ids, p)
        return torch.from_numpy(p).to(a.device)

    def records(self) -> np.ndarray:
        """Every perturbation returned so far, one row per (call, query), int64.

        Columns: ``iteration, factor, query_id, p_0, ..., p_{Mmax-1}`` (rows of a factor
        with ``M_f < Mmax`` are padded with 0), in call order
        (:meth:`~hdsim.imc.fixed_crossbar.PerturbationLog.records`).

        Shapes:
            returns: ``(rows, 3 + max_f M_f)``
        """
        return self._log.records()

    def table(self, n_queries: int, max_iter: int) -> np.ndarray:
        """The recorded perturbations as a dense ``(n_queries, max_iter, F, Mmax)`` int64 table
        (:meth:`~hdsim.imc.fixed_crossbar.PerturbationLog.table`: the RTL bench's layout).

        Raises:
            HdsimError: a recorded query id or iteration does not fit the table.
        """
        return self._log.table(n_queries, max_iter)

    def save(self, path: str | Path) -> Path:
        """:meth:`records` as an ``int32`` ``.npy`` file (``np.load`` reads it back)."""
        return self._log.save(path)


class ReplayPerturbation:
    """Inject recorded perturbations (:meth:`FixedPointPerturbation.records` format) again.

    ``perturb(iteration, factor, query_ids, u, a)`` returns the recorded row of each
    ``(iteration, factor, query_id)``, the first ``M_f`` values. This is what an RTL
    bench does with the exported array.

    Args:
        records: ``(rows, 3 + Mmax)`` integer array, or a path to the ``.npy`` file.

    Raises:
        HdsimError: malformed array; at a call, a key that was not recorded.
    """

    def __init__(self, records: np.ndarray | str | Path) -> None:
        arr = np.load(records) if isinstance(records, (str, Path)) else np.asarray(records)
        if arr.ndim != 2 or arr.shape[1] < 4 or not np.issubdtype(arr.dtype, np.integer):
            raise HdsimError(f"records: expected an integer (rows, 3 + M) array, got {arr.dtype} {arr.shape}")
        self.table = {(int(r[0]), int(r[1]), int(r[2])): r[3:].astype(np.int64) for r in arr}

    def __call__(self, iteration: int, factor: int, query_ids: Tensor, u: Tensor, a: Tensor) -> Tensor:
        M = a.shape[1]
        rows = []
        for q in query_ids.tolist():
            key = (int(iteration), int(factor), int(q))
            if key not in self.table:
                raise HdsimError(f"records: no perturbation recorded for iteration {iteration}, "
                                 f"factor {factor}, query {q}")
            rows.append(self.table[key][:M])
        return torch.from_numpy(np.stack(rows)).to(a.device) if rows else torch.zeros_like(a)
