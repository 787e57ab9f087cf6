"""A compiled (numba) decoder for :class:`hdsim.fixed.FixedBCF`: same integers, ~100x less overhead.

:class:`FixedBCF` is the bit-accurate model: torch integer ops, batched, with
``observe`` / ``perturb`` hooks; per query and factor step it issues ~45 tensor
ops, so a single query costs about a millisecond of framework overhead. The
edge runner decodes with this module instead: one loop nest per query,
compiled by numba, computing exactly the model's integers (the same datapath
constants from :class:`hdsim.fixed.widths.Datapath`, the same rounding rules
as :mod:`hdsim.fixed.rounding`, the same first-maximum tie rule). Like the
RTL, it is an implementation checked against the model: ``tests/test_fixed.py``
compares every iteration's estimates, similarities and weights, and the
results, with :class:`FixedBCF` on exact, noisy, random and zero queries, and
the query words of its in-kernel quantization (:func:`hdsim.fixed.quantize_query`'s
rule, whose integer block sums make it independent of summation order).

Supported: every configuration with ``F >= 2`` factors, without conditional
sampling (``A = 0``, the published tuned table's choice for ``M <= 348``) and
without perturbations;
:func:`compiled_decoder` returns ``None`` otherwise (or when numba is not
installed), and the caller keeps :class:`FixedBCF`.
"""

from __future__ import annotations

import numpy as np
import torch

from hdsim.codes import gsbc_shape
from hdsim.errors import HdsimError
from hdsim.factorizers.base import FactorizationResult
from hdsim.fixed.bcf import QUERY_PRESCALE_BITS, codevector_positions

__all__ = ["CompiledFixedBCF", "compiled_decoder", "numba_available"]


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel():
    """The numba kernels (compiled on first use, then cached on disk by numba)."""
    from hdsim.fixed._compiled_kernel import decode, quantize

    return decode, quantize


class CompiledFixedBCF:
    """:class:`FixedBCF`'s decode (no sampling, no hooks) as one compiled loop nest per query.

    Args:
        model: the :class:`FixedBCF` whose datapath (codebooks, widths, ``T``, ``Tc``,
            ``max_iter``, similarity) is compiled. Use :func:`compiled_decoder` to get one
            only where it applies.
    """

    def __init__(self, model) -> None:
        cb = model.codebooks
        self.model = model
        self.F, self.B, self.L = cb.F, cb.B, cb.L
        self.M = np.array(cb.sizes, dtype=np.int64)
        X = np.zeros((cb.F, max(cb.sizes), cb.B), dtype=np.int64)
        for f, Xf in enumerate(cb.indices):
            X[f, :Xf.shape[0]] = Xf.cpu().numpy()
        self.X = X
        w, dp = model.widths, model.dp
        # int32 words (twice the SIMD lanes) when every signal fits; s * R is formed in int64
        self.dtype = np.int32 if max(dp.acc_bits, dp.s_bits, dp.a_bits) + 2 <= 31 else np.int64
        self.x0 = model.initial_estimates(1)[0].cpu().numpy().astype(self.dtype)
        # per factor and block, the positions its codevectors occupy (an estimate is zero elsewhere)
        positions = codevector_positions(cb)
        P = max(pos.shape[1] for pos, _ in positions)
        self.pos = np.zeros((cb.F, cb.B, P), np.int64)
        self.npos = np.zeros((cb.F, cb.B), np.int64)
        for f, (pos, count) in enumerate(positions):
            self.pos[f, :, :pos.shape[1]] = pos.numpy()
            self.npos[f] = count.numpy()
        from hdsim.fixed import _compiled_kernel as k

        base = np.zeros(k.N_PARAMS, np.int64)  # the kernel's scalar arguments, one array
        for i, v in ((k.P_WQ, w.query), (k.P_WX, w.estimate), (k.P_WU, w.unbound), (k.P_G, w.recip_guard),
                     (k.P_T, dp.T_int), (k.P_TC, dp.Tc_int), (k.P_MAX_ITER, model.max_iter),
                     (k.P_DOT, model.config.similarity == "dot"), (k.P_K, QUERY_PRESCALE_BITS)):
            base[i] = int(v)
        self._params: dict[tuple[int, int], np.ndarray] = {}  # by (trace, quantize)
        for trace in (0, 1):
            for quantize in (0, 1):
                self._params[trace, quantize] = base.copy()
                self._params[trace, quantize][[k.P_TRACE, k.P_QUANTIZE]] = trace, quantize
        self.kernel, self._quantize = _kernel()
        self._similarity_unit = 1.0 / (1 << int(w.unbound))  # a power of two: exact scaling
        self._no_floats = np.zeros((0, cb.B, cb.L), np.float32)
        self._no_words = np.zeros((0, cb.B, cb.L), self.dtype)

    def _float_queries(self, queries) -> np.ndarray | None:
        """Float queries (tensor or array) as a float32/float64 ``(N, B, L)`` array (shape checked);
        ``None`` for integer ones."""
        if isinstance(queries, np.ndarray) and queries.dtype.kind == "f":
            q = gsbc_shape(queries, self.B, self.L)
            return np.ascontiguousarray(q if q.dtype in (np.float32, np.float64) else q.astype(np.float64))
        if not (isinstance(queries, torch.Tensor) and queries.is_floating_point()):
            return None
        q = gsbc_shape(queries, self.B, self.L).detach()
        if q.dtype not in (torch.float32, torch.float64):
            q = q.double()  # exact
        return np.ascontiguousarray(q.cpu().numpy())

    @staticmethod
    def _raise_bad(qf: np.ndarray, code: int) -> None:
        n = code // 2
        if code % 2 == 0:
            raise HdsimError(f"query: contains NaN or infinite values (query {n})")
        raise HdsimError(f"query: GSBC entries must be non-negative, found {float(qf[n].min()):.4g} (query {n})")

    def prepare_queries(self, queries: torch.Tensor | np.ndarray) -> np.ndarray:
        """:meth:`FixedBCF.prepare_queries` (same checks, same words), float queries quantized compiled.

        Returns ``(N, B, L)`` in the kernel's word type.
        """
        qf = self._float_queries(queries)
        if qf is None:
            if isinstance(queries, np.ndarray):
                queries = torch.from_numpy(queries)
            return np.ascontiguousarray(self.model.prepare_queries(queries).cpu().numpy().astype(self.dtype))
        out = np.empty(qf.shape, self.dtype)
        bad = self._quantize(qf, int(self.model.widths.query), QUERY_PRESCALE_BITS, out)
        if bad >= 0:
            self._raise_bad(qf, bad)
        return out

    def decode_arrays(self, queries: torch.Tensor | np.ndarray, trace: bool = False) -> tuple:
        """:meth:`factorize` as numpy arrays, without the tensor wrapping (the runner's hot path).

        Float queries are quantized inside the kernel, query by query.

        Returns:
            ``indices`` ``(N, F)`` int64, ``iterations`` ``(N,)`` int64, ``converged`` ``(N,)``
            bool, ``max_similarity`` ``(N, F)`` float64 (units of 1), and with ``trace=True``
            also ``(x, a, w)`` per iteration: ``(N, max_iter, F, B, L)``, ``(N, max_iter, F, max M)``
            twice (valid up to each query's ``iterations``).
        """
        qf = self._float_queries(queries)
        if qf is None:
            q, qf = self.prepare_queries(queries), self._no_floats
        else:
            q = self._no_words
        status, indices, iterations, converged, amax, *tr = self.kernel(
            q, qf, self.X, self.M, self.pos, self.npos, self.x0, self._params[int(trace), int(qf.shape[0] > 0)])
        if status >= 0:
            self._raise_bad(qf, status)
        out = (indices, iterations, converged, amax * self._similarity_unit)
        return out + (tuple(tr),) if trace else out

    def factorize(self, queries: torch.Tensor, trace: bool = False):
        """Decode ``queries`` (float GSBCs or ``Q0.Wq`` integers, as :meth:`FixedBCF.factorize`).

        Returns:
            :class:`FactorizationResult` (identical to :class:`FixedBCF`'s), and with
            ``trace=True`` also the ``(x, a, w)`` of :meth:`decode_arrays`.
        """
        out = self.decode_arrays(queries, trace)
        res = FactorizationResult(*(torch.from_numpy(a) for a in out[:4]))
        return (res, out[4]) if trace else res


def compiled_decoder(model) -> CompiledFixedBCF | None:
    """A :class:`CompiledFixedBCF` for ``model`` when it applies (numba installed, ``A = 0``, ``F >= 2``),
    else ``None``."""
    if model.config.A != 0 or model.codebooks.F < 2 or not numba_available():
        return None
    return CompiledFixedBCF(model)
