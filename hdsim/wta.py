"""Blockwise winner-take-all (WTA) activations — SPEC section 8, seed ``001_*`` (DecisiveNets).

The channels of a tensor are split into consecutive groups of ``l``; inside each group,
at every other index (each pixel of a feature map), only the largest activation survives.

* :func:`hard_wta` — inference: ``y = [i wins its group] * relu(z_i)``, one winner per
  group; **ties go to the lowest channel index** (the seed's ``max(relu(z)) == relu(z)``
  keeps every tied maximum; one winner makes the output exactly ``1/l`` dense or sparser
  and matches ONNX ``ArgMax`` with ``select_last_index=0``).
* :func:`soft_wta` — training: ``s_t(z) = softmax(t relu(z)) / max(softmax(t relu(z))) * relu(z)``,
  which tends to :func:`hard_wta` as the temperature ``t`` grows (except at exact ties).
* :func:`wta_temperature` — the exponential schedule of ``t`` from ``t_init`` to ``t_final``.

A group of one (``l = 1``) keeps itself: both activations are then ``relu``.

``signed=True`` is the WTA of a *linear* layer (the seed's formula with ``sigma`` the identity,
the winner chosen by magnitude): ``y = [i = argmax_j |z_j|] * z_i``, soft form
``exp(t (|z_i| - max_j |z_j|)) * z_i``. It keeps each group's strongest signal with its sign; the
network uses it on MobileNetV2's linear bottleneck (``--wta-layers stream``), where a ReLU would
discard the negative half of a low-dimensional stream.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hdsim.errors import HdsimError

__all__ = ["hard_wta", "soft_wta", "wta_temperature", "check_group"]


def check_group(l: int, channels: int | None = None, name: str = "l") -> None:
    """``l`` must be an integer >= 1 dividing ``channels`` (when given).

    Raises:
        HdsimError: one line naming ``name``.
    """
    if isinstance(l, bool) or not isinstance(l, int) or l < 1:
        raise HdsimError(f"{name}: WTA group size must be an integer >= 1, got {l!r}")
    if channels is not None and channels % l:
        raise HdsimError(f"{name}: WTA groups of {l} do not divide {channels} channels")


def _check_temperature(t: float, name: str = "t") -> None:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t > 0 and math.isfinite(t)):
        raise HdsimError(f"{name}: temperature must be a finite number > 0, got {t!r}")


def _grouped(z: Tensor, l: int, dim: int, signed: bool = False) -> tuple[Tensor, int, list[int]]:
    """``relu(z)`` (``signed``: ``z``) with ``dim`` split into ``(C / l, l)``; returns it, the group axis and
    the shape to restore.

    The shapes are Python integers with the leading one written ``-1``: an ONNX trace then
    has two ``Reshape`` nodes with constant shapes and a dynamic batch (taking the shape
    from the tensor adds ``Shape``/``Gather``/``Concat`` nodes per activation).
    """
    if z.dim() == 0:
        raise HdsimError("z: a WTA needs at least one dimension (the channels)")
    dim = dim % z.dim()
    shape = [int(s) for s in z.shape]
    check_group(l, shape[dim])
    grouped = shape[:dim] + [shape[dim] // l, l] + shape[dim + 1:]
    if dim > 0:
        grouped[0] = shape[0] = -1
    return (z if signed else torch.relu(z)).reshape(grouped), dim + 1, shape


def hard_wta(z: Tensor, l: int, dim: int = 1, *, signed: bool = False) -> Tensor:
    """Hard blockwise WTA: in each group of ``l`` consecutive channels keep only the winner.

    ``y_i = relu(z_i) if i == argmax_{j in group(i)} relu(z_j) else 0``, the argmax taking the
    **lowest index on ties** (so a group of zeros or of equal values has exactly one winner;
    it outputs ``relu`` of that winner, and ``0`` elsewhere). ``l = 1`` gives ``relu(z)``.
    ``signed``: ``y_i = z_i if i == argmax_j |z_j| else 0`` (lowest index on ties; ``l = 1`` gives ``z``).

    Shapes:
        z: ``(..., C, ...)`` with ``C = z.shape[dim]`` a multiple of ``l``
        returns: the shape of ``z``

    Raises:
        HdsimError: ``l`` not an integer >= 1, or not dividing ``C``.

    Example:
        >>> hard_wta(torch.tensor([[1.0, 3.0, -2.0, 0.5, 2.0, 2.0]]), 2)
        tensor([[0.0000, 3.0000, 0.0000, 0.5000, 2.0000, 0.0000]])
        >>> hard_wta(torch.tensor([[-1.0, 2.0]]), 1)
        tensor([[0., 2.]])
        >>> hard_wta(torch.tensor([[1.0, -3.0, 2.0, 1.5]]), 2, signed=True)
        tensor([[ 0., -3.,  2.,  0.]])
    """
    g, axis, shape = _grouped(z, l, dim, signed)
    # torch.argmax returns the first maximal index: the lowest-index tie rule
    winner = (g.abs() if signed else g).argmax(dim=axis, keepdim=True)
    positions = [1] * g.dim()
    positions[axis] = l
    mask = winner == torch.arange(l, device=z.device).view(positions)
    return (g * mask.to(g.dtype)).reshape(shape)


def soft_wta(z: Tensor, l: int, t: float, dim: int = 1, *, detach_softmax: bool = True,
             signed: bool = False) -> Tensor:
    """Soft blockwise WTA of temperature ``t`` (the training activation).

    Per group ``g`` of ``l`` channels, with ``r = relu(z_g)``:
    ``s_t(z)_i = softmax(t r)_i / max_j softmax(t r)_j * r_i = exp(t (r_i - max_j r_j)) * r_i``
    (the second form is the first with the softmax's normalizer cancelled, and does not
    overflow). The winner keeps ``r_i``; a loser with gap ``g_i = max r - r_i`` keeps
    ``r_i exp(-t g_i)``, so ``|s_t(z) - hard_wta(z)| <= max(r) exp(-t g_min)`` away from ties
    (``g_min`` the smallest nonzero gap), and at ``t -> 0`` it is ``relu``. Tied maxima all
    keep their value (the hard WTA keeps the lowest index only).

    ``detach_softmax`` (default, as the seed found best): the factor ``exp(t (r - max r))``
    is a constant for backpropagation; the gradient flows through ``r`` only.
    ``signed``: ``exp(t (|z_i| - max_j |z_j|)) * z_i`` (the same bound with gaps of ``|z|``).

    Shapes:
        z: ``(..., C, ...)`` with ``C = z.shape[dim]`` a multiple of ``l``
        returns: the shape of ``z``

    Raises:
        HdsimError: ``l`` not an integer >= 1 or not dividing ``C``; ``t`` not finite and > 0.

    Example:
        >>> soft_wta(torch.tensor([[1.0, 3.0]]), 2, t=1.0)
        tensor([[0.1353, 3.0000]])
        >>> soft_wta(torch.tensor([[1.0, 3.0]]), 2, t=100.0)
        tensor([[0., 3.]])
        >>> soft_wta(torch.tensor([[1.0, -3.0]]), 2, t=1.0, signed=True)
        tensor([[ 0.1353, -3.0000]])
    """
    _check_temperature(t)
    g, axis, shape = _grouped(z, l, dim, signed)
    m = g.abs() if signed else g
    weight = torch.exp(t * (m - m.amax(dim=axis, keepdim=True)))
    if detach_softmax:
        weight = weight.detach()
    return (g * weight).reshape(shape)


def wta_temperature(step: int, total_steps: int, t_init: float, t_final: float) -> float:
    """Temperature of training step ``step`` (0-based) of ``total_steps``: exponential from ``t_init`` to ``t_final``.

    ``t(s) = t_init * (t_final / t_init) ** (s / (total_steps - 1))``: the first step trains
    at ``t_init``, the last at ``t_final``, and ``log t`` grows linearly in between (the
    seed's "scaled exponentially at each step"). A single step (``total_steps = 1``) trains
    at ``t_final``; steps past the end stay at ``t_final``.

    Raises:
        HdsimError: ``step`` < 0, ``total_steps`` < 1, a temperature not finite and > 0.

    Example:
        >>> [round(wta_temperature(s, 3, 1.0, 100.0), 6) for s in range(3)]
        [1.0, 10.0, 100.0]
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise HdsimError(f"total_steps: must be an integer >= 1, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise HdsimError(f"step: must be an integer >= 0, got {step!r}")
    _check_temperature(t_init, "t_init")
    _check_temperature(t_final, "t_final")
    if total_steps == 1 or step >= total_steps - 1:
        return float(t_final)
    return float(t_init * (t_final / t_init) ** (step / (total_steps - 1)))
