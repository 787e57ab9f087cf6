"""The sparse-resonator head's decode on the edge: NumPy only (no torch import on this path).

The export's output ``query`` ``(N, D)`` holds the pooled features; each of the ``B``
segments is thinned to its argmax (lowest index on ties), giving a segment code in
offset form, which :func:`hdsim.sparse_resonator_numpy.sparse_resonator_decode` factorizes
with the manifest's settings (``a``, ``max_iter``, ``seed``, ``Tc``, ``restarts``), each query's
draws keyed by its content (:func:`hdsim.sparse_resonator_numpy.content_ids`: an image decodes
the same alone or in any batch), or brute force over every product (the most
agreeing segments, lowest product on ties). Confidence: the weakest factor's overlap
fraction (brute force: the best product's).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SparseDecoder"]


class SparseDecoder:
    """Decode pooled-feature queries of a sparse-resonator export.

    Args:
        codebooks: ``F`` offset-form codebooks ``(M_f, B)`` int.
        B, L: segments and segment length.
        settings: the manifest's decode settings (keyword arguments of ``sparse_resonator_decode``:
            ``a``, ``max_iter``, ``seed``, ``Tc``, ``restarts``).
        brute: brute force instead of the sparse resonator.
    """

    def __init__(self, codebooks: list[np.ndarray], B: int, L: int, settings: dict, brute: bool = False) -> None:
        self.X = [np.asarray(x, dtype=np.int64) for x in codebooks]
        self.B, self.L = int(B), int(L)
        self.settings, self.brute = dict(settings), bool(brute)

    def decode(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(N, D)`` float queries -> ``indices (N, F)``, ``iterations (N,)``, ``converged (N,)``, ``confidence (N,)``."""
        from hdsim.sparse_resonator_numpy import bruteforce_offsets, content_ids, sparse_resonator_decode, thin_queries

        offsets = thin_queries(queries, self.B, "query")
        if self.brute:
            digits, best = bruteforce_offsets(offsets, self.X, self.L)
            n = offsets.shape[0]
            return digits, np.ones(n, np.int64), np.ones(n, bool), best
        idx, iters, conv, sim = sparse_resonator_decode(offsets, self.X, self.L, ids=content_ids(offsets),
                                                        **self.settings)
        return idx, iters, conv, sim.min(axis=1)
