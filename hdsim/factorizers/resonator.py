"""Dense bipolar resonator network (MAP), float reference — SPEC section 4.

Codes are dense bipolar vectors in ``{-1, +1}^D``; binding is the elementwise
product (self-inverse), so unbinding factor ``g`` from a product is another
elementwise product with ``x_g``. Per factor ``f`` the network iterates

``x_f <- sign(X_f^T X_f (q ⊙ prod_{g != f} x_g))``

with the outer-product weights ``X_f^T X_f`` applied as two matrix products
(``a = X_f u`` then ``X_f^T a``, ``2 M D`` work instead of ``D^2``).

Choices (SPEC is silent on these; also in ``docs/factorizers.md``):

* ``sign(0) = +1`` everywhere (update and init).
* Init: ``x_f = sign(sum_m X_f[m])`` (ties +1), the same for every query.
* Sequential updates: factor ``f`` uses the estimates of factors ``< f`` already
  updated in this iteration (as the BCF does).
* A query converges in the first iteration in which no estimate changes (a
  fixed point); otherwise it stops at ``max_iter`` (default 1000) unconverged.
* Readout (default ``readout="abs"``): ``idx_f = argmax_m |<X_f[m], x_f>|`` on
  the estimates of the last iteration (lowest index wins ties);
  ``max_similarity`` is that maximum divided by ``D`` (in ``[0, 1]``). Why the
  absolute value: bipolar binding has a sign symmetry — negating an even
  number of factors leaves the product unchanged — and the network does settle
  in such states, e.g. ``(a, -b, -c)`` for ``q = a ⊙ b ⊙ c``. They are correct
  factorizations, but the signed readout ``argmax_m <X_f[m], x_f>``
  (``readout="signed"``) scores them wrong: at F=3, M=50, D=1500 (500
  queries, seed 50) it reports 45.2% accuracy where ``"abs"`` reports 100%.
* The network itself is deterministic: no random draws on the decode path.
* Noisy queries (:func:`make_problem`): each entry of the exact product flips
  sign independently with probability ``p``.

Codebooks are :class:`BipolarCodebooks` (one ``(M_f, D)`` ``±1`` tensor per
factor), drawn i.i.d. uniform from a seeded CPU generator; the stochastic
factorizer (:mod:`hdsim.factorizers.stochastic`) uses the same codes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from hdsim.codes import codebook_sizes, seeded_generator
from hdsim.errors import HdsimError
from hdsim.factorizers.base import FactorizationResult

__all__ = [
    "BipolarCodebooks",
    "random_bipolar_codebooks",
    "make_bipolar_queries",
    "check_bipolar_queries",
    "check_bipolar_codebooks",
    "bipolar_sign",
    "unbind_others",
    "make_problem",
    "ResonatorConfig",
    "ResonatorNetwork",
]


def unbind_others(q: Tensor, x: Tensor, f: int) -> Tensor:
    """``q ⊙ prod_{g != f} x_g``: unbind every estimate except factor ``f``'s.

    Bipolar binding is the elementwise product and self-inverse, so unbinding is
    another product. (An explicit loop: ``Tensor.prod`` over the factor axis is
    far slower on CPU.)

    Shapes:
        q: ``(k, D)``; x: ``(k, F, D)``; returns ``(k, D)``

    Example:
        >>> x = torch.tensor([[[1.0, -1.0], [-1.0, -1.0]]])
        >>> unbind_others(torch.tensor([[1.0, 1.0]]), x, 0)
        tensor([[-1., -1.]])
    """
    u = q
    for g in range(x.shape[1]):
        if g != f:
            u = u * x[:, g]
    return u


def bipolar_sign(x: Tensor) -> Tensor:
    """``sign`` with ties to ``+1``: ``+1 if x >= 0 else -1`` (same dtype as ``x``).

    Example:
        >>> bipolar_sign(torch.tensor([-2.0, 0.0, 3.0]))
        tensor([-1.,  1.,  1.])
    """
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


@dataclass(frozen=True)
class BipolarCodebooks:
    """``F`` dense bipolar codebooks of dimension ``D``.

    Attributes:
        vectors: one ``(M_f, D)`` tensor of ``±1`` per factor (float).
    """

    vectors: tuple[Tensor, ...]

    @property
    def F(self) -> int:
        return len(self.vectors)

    @property
    def D(self) -> int:
        return int(self.vectors[0].shape[1])

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(x.shape[0]) for x in self.vectors)

    @property
    def problem_size(self) -> int:
        """Number of distinct products, ``prod_f M_f``."""
        return math.prod(self.sizes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "BipolarCodebooks":
        return BipolarCodebooks(tuple(x.to(device=device, dtype=dtype) for x in self.vectors))

    def product(self, factor_indices: Tensor) -> Tensor:
        """Bipolar product ``prod_f X_f[idx_f]`` (elementwise).

        Shapes:
            factor_indices: ``(N, F)`` int
            returns: ``(N, D)``
        """
        idx = factor_indices.to(self.vectors[0].device).long()
        out = self.vectors[0][idx[:, 0]]
        for f in range(1, self.F):
            out = out * self.vectors[f][idx[:, f]]
        return out


def _check_sizes(F: int, M: int | tuple[int, ...], D: int) -> tuple[int, ...]:
    sizes = codebook_sizes(F, M)
    if D < 1:
        raise HdsimError(f"D: dimension must be >= 1, got {D}")
    return sizes


def random_bipolar_codebooks(F: int, M: int | tuple[int, ...], D: int, seed: int | None = None, *,
                             generator: torch.Generator | None = None,
                             dtype: torch.dtype = torch.float32) -> BipolarCodebooks:
    """Draw ``F`` codebooks of i.i.d. uniform ``±1`` vectors.

    Args:
        F: number of factors (>= 1).
        M: codevectors per factor, one int or one per factor (each >= 1).
        D: dimension (>= 1).
        seed: seed of a fresh CPU generator (ignored when ``generator`` is given).
        generator: draw from this CPU generator instead (continues its stream).

    Shapes:
        returns: codebooks with ``vectors[f]`` of shape ``(M_f, D)``, on the CPU.

    Example:
        >>> cb = random_bipolar_codebooks(3, 10, 64, seed=0)
        >>> cb.sizes, cb.D, bool((cb.vectors[0].abs() == 1).all())
        ((10, 10, 10), 64, True)
    """
    sizes = _check_sizes(F, M, D)
    if generator is None:
        if seed is None:
            raise HdsimError("seed: give a seed or a generator")
        generator = seeded_generator(seed)
    return BipolarCodebooks(tuple(
        (torch.randint(0, 2, (m, D), generator=generator) * 2 - 1).to(dtype) for m in sizes))


def make_bipolar_queries(codebooks: BipolarCodebooks, n: int, seed: int | None = None, flip_p: float = 0.0, *,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random products of codevectors (index uniform per factor), optionally with sign flips.

    Noise model: each entry of the exact product flips sign independently with
    probability ``flip_p`` (``flip_p = 0``: exact products).

    Shapes:
        returns: ``(queries (n, D) float, truth (n, F) int64)``, on the CPU.

    Example:
        >>> cb = random_bipolar_codebooks(2, 5, 32, seed=0)
        >>> q, t = make_bipolar_queries(cb, 4, seed=1)
        >>> bool((q == cb.product(t)).all())
        True
    """
    if n < 1:
        raise HdsimError(f"n: expected at least 1 query, got {n}")
    if not (0.0 <= flip_p <= 1.0):  # also rejects NaN
        raise HdsimError(f"noise: bit-flip probability must be in [0, 1], got {flip_p}")
    if generator is None:
        if seed is None:
            raise HdsimError("seed: give a seed or a generator")
        generator = seeded_generator(seed)
    cb = codebooks.to("cpu")
    truth = torch.stack([torch.randint(0, m, (n,), generator=generator) for m in cb.sizes], dim=1)
    q = cb.product(truth)
    if flip_p > 0:
        flips = torch.rand(q.shape, generator=generator) < flip_p
        q = torch.where(flips, -q, q)
    return q, truth


def make_problem(F: int, M: int | tuple[int, ...], D: int, n: int, seed: int, *,
                 noise: float = 0.0) -> tuple[BipolarCodebooks, Tensor, Tensor]:
    """A factorization problem for the dense resonator: codebooks, queries, truth.

    One CPU generator seeded with ``seed`` draws the codebooks first, then the
    query indices, then the flips, so the codebooks do not depend on ``n`` or ``noise``.

    Args:
        noise: bit-flip probability ``p`` per query entry (0: exact products).

    Shapes:
        returns: ``(BipolarCodebooks with (M_f, D) tensors, queries (n, D), truth (n, F))``

    Example:
        >>> cb, q, truth = make_problem(F=3, M=10, D=500, n=20, seed=0)
        >>> ResonatorNetwork(cb).factorize(q).accuracy(truth)
        1.0
    """
    g = seeded_generator(seed)
    cb = random_bipolar_codebooks(F, M, D, generator=g)
    q, truth = make_bipolar_queries(cb, n, flip_p=noise, generator=g)
    return cb, q, truth


def check_bipolar_queries(q: Tensor, D: int, name: str = "queries") -> Tensor:
    """Validate a batch of real-valued queries and return it as ``(N, D)`` float.

    Accepts ``(N, D)`` or a single ``(D,)`` query; entries must be finite (they
    need not be exactly ``±1``: noisy real queries are fine).

    Raises:
        HdsimError: not a tensor, wrong shape, empty batch, NaN/inf.
    """
    if not isinstance(q, Tensor):
        raise HdsimError(f"{name}: expected a torch.Tensor, got {type(q).__name__}")
    if q.dim() == 1:
        q = q.unsqueeze(0)
    if q.dim() != 2 or q.shape[1] != D:
        raise HdsimError(f"{name}: expected shape (N, {D}), got {tuple(q.shape)}")
    if q.shape[0] == 0:
        raise HdsimError(f"{name}: expected at least 1 query, got 0")
    if not q.is_floating_point():
        q = q.float()
    if not torch.isfinite(q).all():
        raise HdsimError(f"{name}: contains NaN or infinite values")
    return q


def check_bipolar_codebooks(codebooks: BipolarCodebooks) -> None:
    """Raise :class:`HdsimError` unless every codebook is a non-empty ``(M_f, D)`` ``±1`` tensor."""
    if not isinstance(codebooks, BipolarCodebooks) or codebooks.F < 1:
        raise HdsimError("codebooks: expected BipolarCodebooks with at least 1 factor")
    D = codebooks.D
    for f, X in enumerate(codebooks.vectors):
        if X.dim() != 2 or X.shape[0] < 1 or X.shape[1] != D:
            raise HdsimError(f"codebooks: factor {f} must have shape (M >= 1, {D}), got {tuple(X.shape)}")
        if not bool((X.abs() == 1).all()):
            raise HdsimError(f"codebooks: factor {f} has entries other than -1/+1")


def resolve_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise HdsimError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


@dataclass(frozen=True)
class ResonatorConfig:
    """Dense resonator hyper-parameters.

    Attributes:
        max_iter: iteration cap per query (>= 1). 1000 by default: near the
            published capacity (F=3, D=1500, M~79) the queries that converge do
            so within a few hundred iterations; the rest sit in limit cycles.
        readout: ``"abs"`` (default): ``argmax_m |<X_f[m], x_f>|``, correct up to
            the sign symmetry of bipolar binding; ``"signed"``: ``argmax_m <X_f[m], x_f>``.
    """

    max_iter: int = 1000
    readout: str = "abs"

    def validate(self) -> None:
        """Raise :class:`HdsimError` naming the first parameter out of range."""
        if self.readout not in ("abs", "signed"):
            raise HdsimError(f"readout: expected 'abs' or 'signed', got {self.readout!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise HdsimError(f"max_iter: must be an integer >= 1, got {self.max_iter!r}")

    def as_dict(self) -> dict:
        return asdict(self)


class ResonatorNetwork:
    """Dense bipolar resonator network with outer-product weights.

    ``x_f <- sign(X_f^T X_f (q ⊙ prod_{g != f} x_g))``, ``sign(0) = +1``,
    sequential over ``f``, until no estimate changes or ``max_iter``; readout
    ``idx_f = argmax_m |<X_f[m], x_f>|`` (see the module docstring for why ``|.|``).

    Shapes:
        codebooks: ``F`` tensors ``(M_f, D)`` of ``±1``
        queries: ``(N, D)`` real (exact products are ``±1``)
        result: indices ``(N, F)``, iterations ``(N,)``, converged ``(N,)``,
        max_similarity ``(N, F)`` (``max_m |<X_f[m], x_f>| / D``)

    Args:
        codebooks: the ``F`` bipolar codebooks.
        config: hyper-parameters (validated here).
        device: torch device for the computation.
        dtype: ``torch.float32`` (default) or ``torch.float64``. In float32 all
            sums stay exact integers while ``D * max(M) < 2^24``.

    Example:
        >>> cb, q, truth = make_problem(F=3, M=20, D=1000, n=16, seed=0)
        >>> res = ResonatorNetwork(cb).factorize(q)
        >>> res.accuracy(truth), bool(res.converged.all())
        (1.0, True)
    """

    def __init__(self, codebooks: BipolarCodebooks, config: ResonatorConfig = ResonatorConfig(), *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        config.validate()
        check_bipolar_codebooks(codebooks)
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.codebooks = codebooks.to(self.device, self.dtype)
        self.config = config

    def initial_estimates(self, n: int) -> Tensor:
        """``x_f = sign(sum_m X_f[m])`` (ties +1) for every query, shape ``(n, F, D)``."""
        init = torch.stack([bipolar_sign(X.sum(dim=0)) for X in self.codebooks.vectors])
        return init.unsqueeze(0).expand(n, -1, -1).clone()

    def readout(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``argmax_m |<X_f[m], x_f>|`` (or the signed form, per ``config.readout``;
        lowest index on ties) and its value / D, per factor.

        Shapes:
            x: ``(k, F, D)``; returns ``(k, F)`` int64 and ``(k, F)`` float
        """
        sims = [x[:, f] @ X.t() for f, X in enumerate(self.codebooks.vectors)]
        if self.config.readout == "abs":
            sims = [s.abs() for s in sims]
        best = [s.max(dim=1) for s in sims]  # torch returns the first maximum
        idx = torch.stack([b.indices for b in best], dim=1)
        val = torch.stack([b.values for b in best], dim=1) / self.codebooks.D
        return idx, val

    def factorize(self, queries: Tensor, batch_size: int | None = None) -> FactorizationResult:
        """Decode a batch of queries.

        Shapes:
            queries: ``(N, D)`` (or one ``(D,)``) finite real
            returns: :class:`FactorizationResult` (on the CPU)

        Args:
            batch_size: queries decoded together; ``None`` for all at once. The
                network is deterministic, so the result does not depend on it.
        """
        q = check_bipolar_queries(queries, self.codebooks.D)
        N = q.shape[0]
        step = N if batch_size is None else batch_size
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise HdsimError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        parts = [self._factorize_batch(q[s:s + step]) for s in range(0, N, step)]
        return FactorizationResult.concat(parts)

    def _factorize_batch(self, queries: Tensor) -> FactorizationResult:
        cb = self.codebooks
        F = cb.F
        q = queries.to(self.device, self.dtype)
        n = q.shape[0]
        res = FactorizationResult.zeros(n, F, self.dtype)  # filled in place below
        indices, iterations, converged, max_sim = res.indices, res.iterations, res.converged, res.max_similarity

        active = torch.arange(n, device=self.device)  # batch positions still decoding
        x = self.initial_estimates(n)
        for it in range(1, self.config.max_iter + 1):
            changed = torch.zeros(active.numel(), dtype=torch.bool, device=self.device)
            for f, X in enumerate(cb.vectors):
                # Recomputed per f: sequential updates change x within the iteration.
                u = unbind_others(q, x, f)
                new = bipolar_sign((u @ X.t()) @ X)
                changed |= (new != x[:, f]).any(dim=1)
                x[:, f] = new
            rows = active.cpu()
            iterations[rows] = it
            done = ~changed
            if it == self.config.max_iter:
                done = torch.ones_like(done)
            if bool(done.any()):
                idx, val = self.readout(x[done])
                out = rows[done.cpu()]
                indices[out] = idx.cpu()
                max_sim[out] = val.cpu()
                converged[out] = ~changed[done].cpu()
                stay = ~done
                active, q, x = active[stay], q[stay], x[stay]
                if active.numel() == 0:
                    break
        return res
