"""Brute-force decoding: similarity of the query with every product vector.

The accuracy upper bound of any factorizer (SPEC section 7, "Brute force"),
and the oracle the tests compare small problems against. Cost
``N * prod_f M_f * B`` gathers, so only for small problem sizes.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from hdsim.codes import BlockCodebooks, check_gsbc
from hdsim.functional import SimilarityMode, block_normalize, similarity

__all__ = ["all_products", "bruteforce_decode"]


def all_products(codebooks: BlockCodebooks) -> tuple[Tensor, Tensor]:
    """Every product SBC and its factor indices, in mixed-radix order (last factor fastest).

    Shapes:
        returns: products ``(P, B)`` int64 and factors ``(P, F)`` int64, ``P = prod_f M_f``
    """
    factors = torch.tensor(list(itertools.product(*(range(m) for m in codebooks.sizes))),
                           dtype=torch.long, device=codebooks.indices[0].device)
    return codebooks.product(factors), factors


def bruteforce_decode(queries: Tensor, codebooks: BlockCodebooks, mode: SimilarityMode = "linf",
                      chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Best product for each query by exhaustive search (lowest product index wins ties).

    Shapes:
        queries: ``(N, D)`` or ``(N, B, L)``
        returns: factor indices ``(N, F)`` int64 and best similarity ``(N,)``
    """
    q = block_normalize(check_gsbc(queries, codebooks.B, codebooks.L))
    products, factors = all_products(codebooks)
    q = q.to(products.device)
    best = torch.full((q.shape[0],), -float("inf"), dtype=q.dtype, device=q.device)
    arg = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    for s in range(0, products.shape[0], chunk):
        sim = similarity(q, products[s:s + chunk], mode)
        v, i = sim.max(dim=1)
        better = v > best  # strict: an earlier chunk keeps ties
        best = torch.where(better, v, best)
        arg = torch.where(better, i + s, arg)
    return factors[arg].cpu(), best.cpu()
