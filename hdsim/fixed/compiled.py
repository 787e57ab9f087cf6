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
results, with :class:`FixedBCF` on exact, noisy, random and zero queries.

Supported: every configuration with ``F >= 2`` factors, without conditional
sampling (``A = 0``, the published tuned table's choice for ``M <= 348``) and
without perturbations;
:func:`compiled_decoder` returns ``None`` otherwise (or when numba is not
installed), and the caller keeps :class:`FixedBCF`.
"""

from __future__ import annotations

import numpy as np
import torch

from hdsim.factorizers.base import FactorizationResult
from hdsim.fixed.bcf import codevector_positions

__all__ = ["CompiledFixedBCF", "compiled_decoder", "numba_available"]


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel():
    """The numba kernel (compiled on first use, then cached on disk by numba)."""
    from hdsim.fixed._compiled_kernel import decode

    return decode


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
        self.args = (int(w.query), int(w.estimate), int(w.unbound), int(w.recip_guard), int(dp.T_int),
                     int(dp.Tc_int), int(model.max_iter), bool(model.config.similarity == "dot"))
        self.kernel = _kernel()

    def factorize(self, queries: torch.Tensor, trace: bool = False):
        """Decode ``queries`` (float GSBCs or ``Q0.Wq`` integers, as :meth:`FixedBCF.factorize`).

        Returns:
            :class:`FactorizationResult` (identical to :class:`FixedBCF`'s), and with
            ``trace=True`` also ``(x, a, w)`` per iteration: ``(N, max_iter, F, B, L)``,
            ``(N, max_iter, F, max M)`` twice (valid up to each query's ``iterations``).
        """
        q = np.ascontiguousarray(self.model.prepare_queries(queries).cpu().numpy().astype(self.dtype))
        N = q.shape[0]
        F, Mmax = self.F, self.X.shape[1]
        indices = np.zeros((N, F), np.int64)
        iterations = np.zeros(N, np.int64)
        converged = np.zeros(N, np.bool_)
        amax = np.zeros((N, F), np.int64)
        it_cap = self.args[6]
        shape = (N, it_cap) if trace else (0, 0)
        x_tr = np.zeros(shape + (F, self.B, self.L), np.int64)
        a_tr = np.zeros(shape + (F, Mmax), np.int64)
        w_tr = np.zeros(shape + (F, Mmax), np.int64)
        self.kernel(q, self.X, self.M, self.pos, self.npos, self.x0, *self.args, trace, indices, iterations, converged, amax,
                    x_tr, a_tr, w_tr)
        scale = float(1 << self.model.widths.unbound)
        res = FactorizationResult(torch.from_numpy(indices), torch.from_numpy(iterations),
                                  torch.from_numpy(converged), torch.from_numpy(amax).double() / scale)
        return (res, (x_tr, a_tr, w_tr)) if trace else res


def compiled_decoder(model) -> CompiledFixedBCF | None:
    """A :class:`CompiledFixedBCF` for ``model`` when it applies (numba installed, ``A = 0``, ``F >= 2``),
    else ``None``."""
    if model.config.A != 0 or model.codebooks.F < 2 or not numba_available():
        return None
    return CompiledFixedBCF(model)
