"""A float BCF decode engine with no batch tail: per-query loops compiled by numba, parallel over queries.

The float reference (:class:`hdsim.factorizers.BlockCodeFactorizer`) decodes a batch with tensor
ops: every iteration issues a few dozen ops over the queries still running, so the last slow
queries of a batch run at tiny batch sizes where per-call overhead dominates. This engine runs
SPEC section 3 as one compiled loop nest per query (:mod:`hdsim.engine_kernel`), the queries
spread over threads (numba ``prange``), each query stopping at its own convergence. Its cost is
the work itself, which :data:`OP_NAMES` counts per step:

* ``unbind_madds``: the unbinding's multiply-adds. Sparse-aware: correlating by an operand with
  ``nnz`` non-zeros in a block costs ``L * nnz`` (loop over the sparser of query and estimate; an
  exact query has one per block), and ``nnz_q * nnz_x`` when both are sparse;
* ``similarity_gathers``: up to ``M * B`` gathers (``linf``: and a minimum; ``dot``: and an add). With
  ``linf`` and ``T > 0`` a codevector reads its next block only while its partial minimum is still
  ``>= T`` (a minimum only falls: the others can be neither kept nor the maximum of the kept ones);
* ``activation_compares``: the similarities scanned for the threshold and the first maximum;
* ``sampling_lfsr_words``: the LFSR words drawn by conditional sampling (``k`` register steps each);
* ``bundle_adds``: ``B`` scatter-adds per non-zero weight (``B`` for a pulled-up winner);
* ``normalize_ops``: ``2 B L`` (block sums and divisions) per step that is not pulled up.

Decisions: float64, conditional sampling drawn as :class:`hdsim.lfsr.LFSRSampler` draws it (query
``first_id + n`` owns register ``query_seed(seed, first_id + n)``), first maximum on ties,
convergence when every factor is pulled up in the same iteration: the decisions of
``BlockCodeFactorizer(..., sampler=LFSRSampler(seed), dtype=torch.float64)`` and of
:func:`hdsim.bcf_numpy.bcf_decode` (``tests/test_engine.py``). The sums run in another order (direct
sums, not FFTs), so similarities agree to rounding; a decision taken on an exact tie of two
different sums could differ (none in the tests).

Torch-free (numpy, numba). Example:
    >>> from hdsim.factorizers.config import BCFConfig
    >>> X = [np.array([[0, 1], [2, 3], [1, 1]]), np.array([[3, 0], [1, 3]])]
    >>> q = np.zeros((1, 2, 4)); q[0, 0, (2 + 1) % 4] = 1; q[0, 1, (3 + 3) % 4] = 1  # product (1, 1)
    >>> NumbaBCF(X, 4, BCFConfig()).decode_arrays(q)[0].tolist()
    [[1, 1]]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hdsim.errors import HdsimError
from hdsim.factorizers.config import BCFConfig
from hdsim.lfsr import LFSR, LFSR_TAPS, query_seeds
from hdsim.validation import check_int, check_offset_codebooks, check_threads, gsbc_shape, is_tensor

__all__ = ["ENGINES", "OP_NAMES", "NumbaBCF", "bcf_decoder", "check_engine", "default_engine", "numba_available",
           "ops_summary"]

ENGINES = ("numba", "torch", "reference")
OP_NAMES = ("unbind_madds", "similarity_gathers", "activation_compares", "sampling_lfsr_words",
            "bundle_adds", "normalize_ops")


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def default_engine(device: str = "cpu") -> str:
    """The fastest engine available: ``numba`` on the CPU when installed, ``torch`` (continuous
    batching, :mod:`hdsim.engine_torch`) on CUDA or without numba."""
    return "numba" if device == "cpu" and numba_available() else "torch"


def ops_summary(ops: np.ndarray, iterations: np.ndarray, F: int, seconds: float) -> dict:
    """The work counted by the engine: per query, per iteration and factor, and the attained rate.

    Shapes:
        ops: ``(N, len(OP_NAMES))`` counts per query (summed over the iterations it ran).

    Returns ``{"ops_per_query": {name: mean}, "ops_per_factor_step": {name: mean per iteration and
    factor}, "total_ops", "ops_per_s"}``, the total being every counted operation (one gather, one
    multiply-add, one compare ... each count 1).
    """
    ops = np.asarray(ops, dtype=np.float64)
    steps = float(np.asarray(iterations).sum()) * F
    total = float(ops.sum())
    return {
        "ops_per_query": {k: float(v) for k, v in zip(OP_NAMES, ops.mean(axis=0))},
        "ops_per_factor_step": {k: float(v) / steps for k, v in zip(OP_NAMES, ops.sum(axis=0))},
        "total_ops": total,
        "ops_per_s": total / seconds if seconds > 0 else float("inf"),
    }


class NumbaBCF:
    """The BCF decode (float64, LFSR sampling) compiled by numba, parallel over queries.

    Args:
        indices: per factor ``f``, the ``(M_f, B)`` integer offsets in ``[0, L)`` of its SBC codebook.
        L: block length.
        config: the BCF hyper-parameters (validated here).
        seed: the conditional sampling's global LFSR seed (:class:`~hdsim.lfsr.LFSRSampler`'s).

    Raises:
        HdsimError: numba not installed, or a bad codebook, configuration or seed (one line naming it).
    """

    def __init__(self, indices: Sequence[np.ndarray], L: int, config: BCFConfig, seed: int = 1) -> None:
        if not numba_available():
            raise HdsimError("engine: the numba engine needs numba (pip install numba); use engine='torch'")
        indices, L = check_offset_codebooks(indices, L)
        if not isinstance(config, BCFConfig):
            raise HdsimError(f"config: expected a BCFConfig, got {type(config).__name__}")
        B = int(indices[0].shape[1])
        config.validate(B)
        self.seed = LFSR(seed).state  # checked as LFSRSampler checks it (non-zero, 32-bit)
        self.config, self.F, self.B, self.L = config, len(indices), B, L
        sizes = tuple(int(X.shape[0]) for X in indices)
        self.sizes = sizes
        self.Tc = config.resolved_Tc(B)
        self.max_iter = config.resolved_max_iter(sizes)
        Mmax = max(sizes)
        self.X = np.zeros((self.F, Mmax, B), np.int64)
        for f, Xf in enumerate(indices):
            self.X[f, :Xf.shape[0]] = Xf
        self.XT = np.ascontiguousarray(self.X.transpose(0, 2, 1))  # per block, contiguous over m: the gather loop
        self.M = np.array(sizes, np.int64)
        # init: every codevector with weight 1, block-normalized: count of codevectors at (b, l) / M
        self.x0 = np.stack([np.stack([np.bincount(X[:, b], minlength=L) for b in range(B)]) / X.shape[0]
                            for X in indices]).astype(np.float64)
        self.params = np.array([config.T, self.Tc, config.A, self.max_iter,
                                1.0 if config.similarity == "dot" else 0.0, LFSR_TAPS], np.float64)
        from hdsim.engine_kernel import N_PARAMS, decode

        assert self.params.shape[0] == N_PARAMS
        self._kernel = decode

    @classmethod
    def from_codebooks(cls, codebooks, config: BCFConfig, seed: int = 1) -> "NumbaBCF":
        """From a :class:`hdsim.codes.BlockCodebooks` (tensors; imports nothing itself)."""
        return cls([X.detach().cpu().numpy() for X in codebooks.indices], codebooks.L, config, seed)

    def _queries(self, queries) -> np.ndarray:
        q = gsbc_shape(queries, self.B, self.L)
        if is_tensor(q):
            q = q.detach().cpu().double().numpy()
        q = np.asarray(q, dtype=np.float64)
        if not np.isfinite(q).all():
            raise HdsimError("query: contains NaN or infinite values")
        if (q < 0).any():
            raise HdsimError(f"query: GSBC entries must be non-negative, found {float(q.min()):.4g}")
        s = q.sum(axis=-1, keepdims=True)
        return np.ascontiguousarray(np.divide(q, s, out=np.zeros_like(q), where=s > 0))

    def decode_arrays(self, queries, first_id: int = 0, threads: int | None = None) -> tuple:
        """Decode ``(N, D)`` or ``(N, B, L)`` non-negative queries (numpy or torch; blocks l1-normalized here).

        Args:
            first_id: the LFSR query id of ``queries[0]`` (query ``n`` draws from register
                ``query_seed(seed, first_id + n)``), as ``BlockCodeFactorizer.factorize(first_id=...)``.
            threads: numba threads for this call (``None``: numba's default, one per core).

        Returns:
            ``indices (N, F)`` int64, ``iterations (N,)`` int64, ``converged (N,)`` bool,
            ``max_similarity (N, F)`` float64, ``ops (N, len(OP_NAMES))`` int64.
        """
        import numba

        check_int("first_id", first_id, minimum=0)
        check_threads("threads", threads, optional=True)
        q = self._queries(queries)
        N = q.shape[0]
        seeds = (query_seeds(self.seed, np.arange(first_id, first_id + N)).astype(np.int64)
                 if self.config.A > 0 and N else np.zeros(0, np.int64))
        before = numba.get_num_threads()
        if threads is not None:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            return self._kernel(q, self.XT, self.X, self.M, self.x0, seeds, self.params)
        finally:
            numba.set_num_threads(before)

    def factorize(self, queries, first_id: int = 0, threads: int | None = None):
        """:meth:`decode_arrays` as a :class:`~hdsim.factorizers.base.FactorizationResult` (imports torch)."""
        import torch

        from hdsim.factorizers.base import FactorizationResult

        out = self.decode_arrays(queries, first_id, threads)
        return FactorizationResult(*(torch.from_numpy(a) for a in out[:4]))


def check_engine(engine: str | None, device: str = "cpu") -> str:
    """An ``engine`` option validated against ``device``; ``None`` becomes :func:`default_engine`.

    Raises:
        HdsimError: an unknown engine, or ``numba`` on a device other than the CPU.
    """
    if engine is None:
        return default_engine(device)
    if engine not in ENGINES:
        raise HdsimError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "numba" and device != "cpu":
        raise HdsimError(f"engine: the numba engine runs on the CPU, got device {device!r}")
    return engine


def bcf_decoder(engine: str, codebooks, config: BCFConfig, seed: int, *, device: str = "cpu",
                threads: int | None = 1, batch: int = 1024, load_kernel: bool = False):
    """``decode(queries) -> FactorizationResult``: the float64 BCF with :class:`hdsim.lfsr.LFSRSampler`
    ``(seed)`` on ``engine`` (:data:`ENGINES`), the same decisions on each (``tests/test_engine.py``).

    ``numba``: :class:`NumbaBCF` on ``threads`` threads (with ``load_kernel``, its kernel loaded, or
    compiled, here by decoding one query, so that a timed call does not include it); ``torch``: :class:`hdsim.engine_torch.ContinuousBCF` with
    ``batch`` slots on ``device``; ``reference``: :class:`hdsim.factorizers.BlockCodeFactorizer` in
    batches of ``batch``. What the sweeps and ``hdsim tune`` decode with (imports torch).
    """
    import torch

    if engine == "numba":
        eng = NumbaBCF.from_codebooks(codebooks, config, seed=seed)
        if load_kernel:
            eng.decode_arrays(np.zeros((1, codebooks.B, codebooks.L)), threads=1)
        return lambda q: eng.factorize(q, threads=threads)
    if engine == "torch":
        from hdsim.engine_torch import ContinuousBCF

        eng = ContinuousBCF(codebooks, config, seed=seed, slots=batch, device=device)
        return lambda q: eng.factorize(q)
    if engine == "reference":
        from hdsim.factorizers.bcf import BlockCodeFactorizer
        from hdsim.lfsr import LFSRSampler

        fz = BlockCodeFactorizer(codebooks, config, sampler=LFSRSampler(seed), device=device, dtype=torch.float64)
        return lambda q: fz.factorize(q, batch_size=batch)
    raise HdsimError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
