"""A compiled (numba) decoder for :class:`hdsim.fixed.FixedBCF`: same integers, ~100x less overhead, no torch.

:class:`FixedBCF` is the bit-accurate model: torch integer ops, batched, with
``observe`` / ``perturb`` hooks; per query and factor step it issues ~45 tensor
ops, so a single query costs about a millisecond of framework overhead. The
edge runner decodes with this module instead: one loop nest per query,
compiled by numba, computing exactly the model's integers (the same datapath
constants from :class:`hdsim.fixed.widths.Datapath`, the same rounding rules
as :mod:`hdsim.fixed.rounding`, the same first-maximum tie rule, the same
conditional sampling from :mod:`hdsim.lfsr`'s per-query registers). Like the
RTL, it is an implementation checked against the model: ``tests/test_fixed_compiled.py``
and ``tests/test_fixed.py`` compare every iteration's estimates, similarities and weights,
and the results, with :class:`FixedBCF` on exact, noisy, random and zero queries, with and
without sampling, and the query words of its in-kernel quantization
(:func:`hdsim.fixed.quantize_query`'s rule, whose integer block sums make it independent of
summation order).

Supported: every configuration (any ``F >= 1``, ``linf`` and ``dot``, conditional sampling
``A >= 0`` drawn as :class:`hdsim.lfsr.LFSRSampler` draws, the model's default sampler), and
on a PCM crossbar (``decode_arrays(..., crossbar=FixedPointCrossbar(...))``: the similarities
perturbed as ``FixedBCF`` with :class:`hdsim.imc.FixedPointPerturbation` perturbs them, bit for
bit; the kernel calls :func:`hdsim.imc._fixed_crossbar_kernel.crossbar_perturbation`). Built from numpy arrays (:meth:`CompiledFixedBCF.from_arrays`) this module
imports no torch (only numpy, numba and the torch-free :mod:`hdsim.fixed.widths`,
:mod:`hdsim.factorizers.config`, :mod:`hdsim.lfsr`); :meth:`CompiledFixedBCF.factorize` and
tensor queries use torch where the caller has it. :func:`compiled_decoder` builds one from a
:class:`FixedBCF` and returns ``None`` where it does not apply (numba not installed, or
``A > 0`` with a sampler other than :class:`~hdsim.lfsr.LFSRSampler`): the caller keeps the model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hdsim.errors import HdsimError
from hdsim.factorizers.config import BCFConfig
from hdsim.fixed.widths import QUERY_PRESCALE_BITS, Datapath, FixedWidths
from hdsim.lfsr import LFSR, LFSR_TAPS, LFSR_WIDTH, LFSRSampler, query_seeds
from hdsim.validation import check_offset_codebooks, check_threads, gsbc_shape, is_tensor

__all__ = ["CompiledFixedBCF", "compiled_decoder", "numba_available", "codevector_positions",
           "initial_estimates", "QUERY_PRESCALE_BITS"]


if LFSR_WIDTH > 62:  # the kernel holds a register in an int64
    raise ImportError(f"hdsim.fixed.compiled: a {LFSR_WIDTH}-bit LFSR does not fit the kernel's int64 state")


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel():
    """The numba kernels (compiled on first use, then cached on disk by numba)."""
    from hdsim.fixed._compiled_kernel import decode, decode_crossbar, quantize

    return decode, quantize, decode_crossbar


def codevector_positions(indices: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per factor, the distinct positions its codevectors occupy in each block (the model's
    :func:`hdsim.fixed.bcf.codevector_positions` wraps this one as tensors).

    Returns ``(pos, count)`` per factor: ``pos`` ``(B, P)`` int64, block ``b``'s distinct
    ``X[m, b]`` in ascending order in its first ``count[b]`` entries (zero-padded to the
    largest count ``P``), ``count`` ``(B,)`` int64.

    Example:
        >>> pos, count = codevector_positions([np.array([[3, 0], [1, 0], [3, 2]])])[0]
        >>> pos.tolist(), count.tolist()
        ([[1, 3], [0, 2]], [2, 2])
    """
    out = []
    for X in indices:
        cols = [np.unique(X[:, b]) for b in range(X.shape[1])]
        P = max(c.size for c in cols)
        pos = np.zeros((X.shape[1], P), np.int64)
        for b, c in enumerate(cols):
            pos[b, :c.size] = c
        out.append((pos, np.array([c.size for c in cols], np.int64)))
    return out


def initial_estimates(indices: Sequence[np.ndarray], L: int, widths: FixedWidths) -> np.ndarray:
    """Every codevector with weight 1, bundled and normalized: ``(F, B, L)`` int64 (numpy twin
    of :meth:`FixedBCF.initial_estimates`: ``s[b, l]`` = how many codevectors have offset ``l``
    in block ``b``, ``S = M``, ``x = saturate((s R) >> (p + G - Wx), Wx)``, ``R = floor(2^(p+G) / S)``,
    ``p = bit_length(S)``).

    Example:
        >>> initial_estimates([np.array([[0], [0], [1]])], 2, FixedWidths(8, 8, 8, 10)).tolist()  # 2/3, 1/3
        [[[170, 85]]]
    """
    G, Wx = widths.recip_guard, widths.estimate
    out = []
    for X in indices:
        M, B = X.shape
        s = np.stack([np.bincount(X[:, b], minlength=L) for b in range(B)]).astype(np.int64)
        p = M.bit_length()
        R = (1 << (p + G)) // M
        out.append(np.minimum((s * R) >> (p + G - Wx), (1 << Wx) - 1))
    return np.stack(out)


class CompiledFixedBCF:
    """:class:`FixedBCF`'s decode (default LFSR sampler, no hooks) as one compiled loop nest per query.

    Build it from numpy arrays with :meth:`from_arrays` (no torch), or from a :class:`FixedBCF`
    (``CompiledFixedBCF(model)``; :func:`compiled_decoder` gives one only where it applies).

    Args:
        model: the :class:`FixedBCF` whose datapath (codebooks, config, widths, LFSR seed) is
            compiled. Its sampler must be an :class:`~hdsim.lfsr.LFSRSampler` when ``A > 0``
            (with ``A = 0`` no sampler is called).

    Raises:
        HdsimError: ``A > 0`` with another sampler.
    """

    def __init__(self, model) -> None:
        sampler = getattr(model, "sampler", None)
        lfsr = type(sampler) is LFSRSampler  # a subclass may draw differently
        if model.config.A > 0 and not lfsr:
            raise HdsimError(f"model: conditional sampling (A={model.config.A}) compiles only with the default "
                             f"hdsim.lfsr.LFSRSampler, got {type(sampler).__name__}")
        cb = model.codebooks
        self._setup([X.detach().cpu().numpy() for X in cb.indices], cb.L, model.config, model.widths,
                    sampler.seed if lfsr else 1)
        self.model = model

    @classmethod
    def from_arrays(cls, indices: Sequence[np.ndarray], L: int, config: BCFConfig, widths: FixedWidths,
                    seed: int = 1) -> "CompiledFixedBCF":
        """The decoder of ``FixedBCF(codebooks, config, widths, seed=seed)``, from numpy arrays (no torch).

        Args:
            indices: per factor ``f``, the ``(M_f, B)`` integer offsets in ``[0, L)`` of its SBC
                codebook (codevector ``m`` has a 1 at offset ``indices[f][m, b]`` of block ``b``).
            L: block length.
            config: the BCF hyper-parameters (``T``, ``A``, ``Tc``, ``max_iter``, similarity).
            widths: the datapath's word widths.
            seed: the global seed of the conditional sampling's LFSRs (:class:`~hdsim.lfsr.LFSRSampler`'s).

        Raises:
            HdsimError: a bad shape, offset, configuration, width or seed (one line naming it).
        """
        obj = cls.__new__(cls)
        obj._setup(indices, L, config, widths, seed)
        obj.model = None
        return obj

    def _setup(self, indices, L, config, widths, seed) -> None:
        indices, L = check_offset_codebooks(indices, L)
        if not isinstance(config, BCFConfig):
            raise HdsimError(f"config: expected a BCFConfig, got {type(config).__name__}")
        if not isinstance(widths, FixedWidths):
            raise HdsimError(f"widths: expected a FixedWidths, got {type(widths).__name__}")
        B = indices[0].shape[1]
        config.validate(B)
        sizes = tuple(int(X.shape[0]) for X in indices)
        dp = Datapath.build(widths, B, L, sizes, config.similarity, config.T, config.resolved_Tc(B), config.A)
        self.seed = LFSR(seed).state  # checked as LFSRSampler checks it (nonzero, 32-bit)
        self.indices, self.config, self.widths, self.dp = indices, config, widths, dp
        self.max_iter = config.resolved_max_iter(sizes)
        self.F, self.B, self.L = len(indices), B, L
        self.M = np.array(sizes, dtype=np.int64)
        X = np.zeros((self.F, max(sizes), B), dtype=np.int64)
        for f, Xf in enumerate(indices):
            X[f, :Xf.shape[0]] = Xf
        self.X = X
        # int32 words (twice the SIMD lanes) when every signal fits with two bits to spare (the sign and
        # one bit of margin; the sums the kernel forms beyond a signal, the requantization's acc + half
        # and s * R, take an int64 operand and are formed in int64)
        self.dtype = np.int32 if max(dp.acc_bits, dp.s_bits, dp.a_bits) + 2 <= 31 else np.int64
        self.x0 = initial_estimates(indices, L, widths).astype(self.dtype)
        # per factor and block, the positions its codevectors occupy (an estimate is zero elsewhere)
        positions = codevector_positions(indices)
        P = max(pos.shape[1] for pos, _ in positions)
        self.pos = np.zeros((self.F, B, P), np.int64)
        self.npos = np.zeros((self.F, B), np.int64)
        for f, (pos, count) in enumerate(positions):
            self.pos[f, :, :pos.shape[1]] = pos
            self.npos[f] = count
        from hdsim.fixed import _compiled_kernel as k

        base = np.zeros(k.N_PARAMS, np.int64)  # the kernel's scalar arguments, one array
        for i, v in ((k.P_WQ, widths.query), (k.P_WX, widths.estimate), (k.P_WU, widths.unbound),
                     (k.P_G, widths.recip_guard), (k.P_T, dp.T_int), (k.P_TC, dp.Tc_int),
                     (k.P_MAX_ITER, self.max_iter), (k.P_DOT, config.similarity == "dot"),
                     (k.P_K, QUERY_PRESCALE_BITS), (k.P_A, config.A), (k.P_TAPS, LFSR_TAPS),
                     (k.P_ABITS, dp.a_bits)):
            base[i] = int(v)
        self._params: dict[tuple[int, int], np.ndarray] = {}  # by (trace, quantize)
        for trace in (0, 1):
            for quantize in (0, 1):
                self._params[trace, quantize] = base.copy()
                self._params[trace, quantize][[k.P_TRACE, k.P_QUANTIZE]] = trace, quantize
        self.kernel, self._quantize, self._crossbar_kernel = _kernel()
        self._similarity_unit = 1.0 / (1 << int(widths.unbound))  # a power of two: exact scaling
        self._no_floats = np.zeros((0, B, L), np.float64)  # float64: the float queries' signature, one compile
        self._no_words = np.zeros((0, B, L), self.dtype)
        self._no_seeds = np.zeros(0, np.int64)

    def _float_queries(self, queries) -> np.ndarray | None:
        """Float queries (tensor or array) as a float64 ``(N, B, L)`` array (shape checked; every
        float format converts to float64 exactly, and the kernel reads each entry as float64 anyway:
        one kernel signature instead of one per input format, each a cold compile of ~20 s);
        ``None`` for integer ones."""
        if isinstance(queries, np.ndarray) and queries.dtype.kind == "f":
            return np.ascontiguousarray(gsbc_shape(queries, self.B, self.L), dtype=np.float64)
        if not (is_tensor(queries) and queries.is_floating_point()):
            return None
        q = gsbc_shape(queries, self.B, self.L).detach()
        return np.ascontiguousarray(q.cpu().double().numpy())

    @staticmethod
    def _raise_bad(qf: np.ndarray, code: int) -> None:
        n = code // 2
        if code % 2 == 0:
            raise HdsimError(f"query: contains NaN or infinite values (query {n})")
        raise HdsimError(f"query: GSBC entries must be non-negative, found {float(qf[n].min()):.4g} (query {n})")

    def _integer_queries(self, queries) -> np.ndarray:
        """Integer queries as ``(N, B, L)`` words, checked against the query width as
        :meth:`FixedBCF.prepare_queries` checks them (same message)."""
        q = gsbc_shape(queries, self.B, self.L)
        if is_tensor(q):
            if q.is_complex():
                raise HdsimError(f"query: expected float or integer entries, got dtype {q.dtype}")
            q = q.detach().cpu().numpy()
        if q.dtype.kind not in "biu":
            raise HdsimError(f"query: expected float or integer entries, got dtype {q.dtype}")
        Wq = self.widths.query
        hi = (1 << Wq) - 1
        if q.min() < 0 or q.max() > hi:
            raise HdsimError(f"query: integer entries must be in [0, {hi}] for {Wq}-bit words")
        return np.ascontiguousarray(q, dtype=self.dtype)

    def prepare_queries(self, queries) -> np.ndarray:
        """:meth:`FixedBCF.prepare_queries` (same checks, same words), float queries quantized compiled.

        Args:
            queries: ``(N, D)`` or ``(N, B, L)`` numpy array or torch tensor: float GSBCs, or
                ``Q0.Wq`` integer words.

        Returns ``(N, B, L)`` in the kernel's word type.
        """
        qf = self._float_queries(queries)
        if qf is None:
            return self._integer_queries(queries)
        out = np.empty(qf.shape, self.dtype)
        bad = self._quantize(qf, int(self.widths.query), QUERY_PRESCALE_BITS, out)
        if bad >= 0:
            self._raise_bad(qf, bad)
        return out

    def _check_crossbar(self, crossbar) -> tuple:
        from hdsim.imc.fixed_crossbar import FixedPointCrossbar

        if not isinstance(crossbar, FixedPointCrossbar):
            raise HdsimError(f"crossbar: expected a hdsim.imc.fixed_crossbar.FixedPointCrossbar, got "
                             f"{type(crossbar).__name__}")
        if self.config.similarity != "dot":
            raise HdsimError("crossbar: a crossbar computes the dot similarity; the decoder runs "
                             f"{self.config.similarity!r}")
        if tuple(crossbar.sizes) != tuple(self.M.tolist()) or crossbar.Wu != self.widths.unbound:
            raise HdsimError(f"crossbar: built for M={list(crossbar.sizes)}, Wu={crossbar.Wu}; the decoder has "
                             f"M={self.M.tolist()}, Wu={self.widths.unbound}")
        return crossbar.kernel_args()

    def decode_arrays(self, queries, trace: bool = False, crossbar=None, threads: int | None = 1) -> tuple:
        """:meth:`factorize` as numpy arrays, without the tensor wrapping (the runner's hot path).

        Float queries are quantized inside the kernel, query by query. Query ``n`` (its row in
        ``queries``) draws from the LFSR started at ``hdsim.lfsr.query_seed(seed, n)``, as
        :meth:`FixedBCF.factorize` draws (every call starts from the seeds).

        Returns:
            ``indices`` ``(N, F)`` int64, ``iterations`` ``(N,)`` int64, ``converged`` ``(N,)``
            bool, ``max_similarity`` ``(N, F)`` float64 (units of 1), and with ``trace=True``
            also ``(x, a, w)`` per iteration: ``(N, max_iter, F, B, L)``, ``(N, max_iter, F, max M)``
            twice (valid up to each query's ``iterations``).

        ``crossbar``: a :class:`hdsim.imc.fixed_crossbar.FixedPointCrossbar` of these codebooks and
        ``Wu``: every similarity is the crossbar's reading, as ``FixedBCF.factorize(q,
        perturb=FixedPointPerturbation(...))`` computes it (``dot`` similarity only).

        ``threads``: numba threads over the queries (default 1: the edge runner shares a small
        machine with onnxruntime's pool; ``None``: numba's default, one per core). Each query is
        decoded alone, so the results do not depend on it.
        """
        check_threads("threads", threads, optional=True)
        xargs = self._check_crossbar(crossbar) if crossbar is not None else None
        qf = self._float_queries(queries)
        if qf is None:
            q, qf = self._integer_queries(queries), self._no_floats
        else:
            q = self._no_words
        N = max(q.shape[0], qf.shape[0])
        seeds = query_seeds(self.seed, np.arange(N)).astype(np.int64) if self.config.A > 0 else self._no_seeds
        args = (q, qf, self.X, self.M, self.pos, self.npos, self.x0, seeds, self._params[int(trace), int(qf.shape[0] > 0)])
        import numba

        before = numba.get_num_threads()
        if threads is not None:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            status, indices, iterations, converged, amax, *tr = (self.kernel(*args) if xargs is None
                                                                 else self._crossbar_kernel(*args, *xargs))
        finally:
            numba.set_num_threads(before)
        if status >= 0:
            self._raise_bad(qf, status)
        out = (indices, iterations, converged, amax * self._similarity_unit)
        return out + (tuple(tr),) if trace else out

    def factorize(self, queries, trace: bool = False, threads: int | None = 1):
        """Decode ``queries`` (float GSBCs or ``Q0.Wq`` integers, as :meth:`FixedBCF.factorize`).

        Imports torch (the result holds tensors); :meth:`decode_arrays` does not.

        Returns:
            :class:`~hdsim.factorizers.base.FactorizationResult` (identical to :class:`FixedBCF`'s),
            and with ``trace=True`` also the ``(x, a, w)`` of :meth:`decode_arrays` (``threads``: as there).
        """
        import torch

        from hdsim.factorizers.base import FactorizationResult

        out = self.decode_arrays(queries, trace, threads=threads)
        res = FactorizationResult(*(torch.from_numpy(a) for a in out[:4]))
        return (res, out[4]) if trace else res


def compiled_decoder(model) -> CompiledFixedBCF | None:
    """A :class:`CompiledFixedBCF` for the :class:`FixedBCF` ``model`` where it applies (numba
    installed; ``A = 0`` or the model's sampler an :class:`~hdsim.lfsr.LFSRSampler`), else ``None``."""
    if not numba_available():
        return None
    if model.config.A > 0 and type(getattr(model, "sampler", None)) is not LFSRSampler:
        return None
    return CompiledFixedBCF(model)
