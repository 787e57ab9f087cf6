"""Classifier heads on the MobileNetV2 features — SPEC section 7.

* :class:`BCFHead`: the network's last layer projects the features to ``D``
  (the classifier ``Linear``); a per-block softmax turns the ``B`` blocks of
  length ``L`` into a GSBC query. Class ``c`` maps to mixed-radix digits
  ``(c_1..c_F)`` (:class:`~export.data.ProductMap`) and its target is the
  product ``X_1[c_1] ⊛ ... ⊛ X_F[c_F]`` of seeded SBC codebooks
  (:func:`hdsim.codes.random_codebooks`). Loss: blockwise cross-entropy
  ``sum_b CE(softmax(beta * z_b), target_b)`` (mean over the batch). Inference
  factorizes the query with the BCF (float or fixed point); brute force over
  every product is the upper bound.
* :class:`SparseResonatorHead` (seed ``000_*``): no projection; the network's
  features, pooled by a weighted pooling with one weight per position shared by
  every channel, are the query (``D`` = the backbone's features, ``B`` segments
  of ``L = D / B``). Class ``c``'s target is the segment code
  ``X_1[c_1] ⊛ ... ⊛ X_F[c_F]`` in offset form. Loss: segment-wise cosine
  (the seed's "cosine embedding" per segment): ``sum_b CE(s * z_b / ||z_b||,
  target_b)`` with a fixed scale ``s`` (``cosine_scale``; the cosine of ``z_b``
  with the one-hot ``e_j`` is ``z_{b,j} / ||z_b||``). Inference thins each segment
  to its argmax and decodes with the sparse resonator network.
* :class:`FCHead`: the usual ``Linear(features, classes)`` with cross-entropy.

Head parameters (``parameters_count``) are what a deployment stores for the head:
trained weights plus codebook entries in offset form (``sum_f M_f * B``), as the
seed counts its 2,609 (``49 + 40 * 64``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F_

from hdsim.codes import BlockCodebooks, random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers.bruteforce import bruteforce_decode
from hdsim.functional import sbc_to_dense
from export.data import ProductMap

__all__ = ["HeadConfig", "BCFHead", "FCHead", "SparseResonatorHead", "make_head", "blockwise_softmax",
           "blockwise_cross_entropy", "segment_cosine_loss", "HEAD_KINDS"]

HEAD_KINDS = ("bcf", "fc", "sparse-resonator")


@dataclass(frozen=True)
class HeadConfig:
    """Head choice and its parameters (recorded in checkpoints and the manifest).

    Attributes:
        kind: ``"bcf"``, ``"fc"`` or ``"sparse-resonator"``.
        D, B: code dimension and blocks (segments), ``L = D / B``; for the sparse-resonator
            head ``D`` is the backbone's feature count.
        codebook_seed: seed of :func:`hdsim.codes.random_codebooks`.
        beta: inverse softmax temperature of the BCF head's per-block softmax.
        cosine_scale: ``s`` of the sparse-resonator head's segment-wise cosine loss.
        pool_size: positions of the last feature map (the sparse-resonator head's pooling weights).
    """

    kind: str = "bcf"
    D: int = 512
    B: int = 4
    codebook_seed: int = 0
    beta: float = 1.0
    cosine_scale: float = 16.0
    pool_size: int = 0

    def validate(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise HdsimError(f"head: expected one of {list(HEAD_KINDS)}, got {self.kind!r}")
        if self.kind == "sparse-resonator":
            if self.B < 1 or self.D % self.B != 0 or self.D // self.B < 2:
                raise HdsimError(f"B: the sparse-resonator head's D={self.D} features must split into B={self.B} "
                                 "segments of length >= 2")
            if not (self.cosine_scale > 0 and self.cosine_scale < float("inf")):
                raise HdsimError(f"cosine_scale: must be finite and > 0, got {self.cosine_scale}")
            if self.pool_size < 1:
                raise HdsimError(f"pool_size: the weighted pooling needs >= 1 position, got {self.pool_size}")
        if self.kind == "bcf":
            if self.B < 1 or self.D < 2 or self.D % self.B != 0:
                raise HdsimError(f"D: dimension {self.D} must be a multiple of B={self.B} with blocks of length >= 2")
            if self.D // self.B < 2:
                raise HdsimError(f"B: blocks of length {self.D // self.B} are too short (need >= 2)")
            if not self.beta > 0:
                raise HdsimError(f"beta: inverse softmax temperature must be > 0, got {self.beta}")


def blockwise_softmax(z: Tensor, B: int, beta: float = 1.0) -> Tensor:
    """``(N, D)`` logits -> ``(N, D)`` GSBC: softmax over each of the ``B`` blocks."""
    N, D = z.shape
    return torch.softmax(beta * z.reshape(N, B, D // B), dim=-1).reshape(N, D)


def blockwise_cross_entropy(z: Tensor, targets: Tensor, B: int, beta: float = 1.0) -> Tensor:
    """``sum_b CE(softmax(beta * z_b), target_b)``, averaged over the batch.

    Shapes:
        z: ``(N, D)`` logits; targets: ``(N, B)`` int64 positions in ``[0, L)``.
    """
    N, D = z.shape
    logits = beta * z.reshape(N * B, D // B)
    return F_.cross_entropy(logits, targets.reshape(N * B), reduction="sum") / N


def segment_cosine_loss(z: Tensor, targets: Tensor, B: int, scale: float) -> Tensor:
    """Segment-wise cosine loss: ``sum_b CE(s * z_b / ||z_b||, target_b)``, averaged over the batch.

    ``z_{b,j} / ||z_b||`` is the cosine of segment ``b`` with the one-hot ``e_j``, so this is the
    seed's cosine-embedding softmax per segment with the one-hot targets as the class vectors.

    Shapes:
        z: ``(N, D)``; targets: ``(N, B)`` int64 positions in ``[0, L)``.

    Example:
        >>> z = torch.tensor([[0.0, 3.0, 4.0, 0.0]])  # B=2 segments of L=2, each one-hot on its target
        >>> round(float(segment_cosine_loss(z, torch.tensor([[1, 0]]), 2, 1.0)), 4)  # 2 log(1 + e^-1)
        0.6265
    """
    N, D = z.shape
    seg = z.reshape(N * B, D // B)
    cos = seg / seg.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return F_.cross_entropy(scale * cos, targets.reshape(N * B), reduction="sum") / N


def class_codes(cfg: HeadConfig, product_map: ProductMap, field: str, remedy: str
                ) -> tuple[BlockCodebooks, Tensor]:
    """The head's seeded codebooks and every class's target code (offset form, ``(K, B)``).

    Raises:
        HdsimError: (naming ``field``) two classes share a target.
    """
    codebooks = random_codebooks(product_map.F, product_map.sizes, cfg.D, cfg.B, cfg.codebook_seed)
    targets = codebooks.product(product_map.digits(torch.arange(product_map.num_classes)))
    distinct = torch.unique(targets, dim=0).shape[0]
    if distinct < product_map.num_classes:
        raise HdsimError(f"{field}: the codebooks (D={cfg.D}, B={cfg.B}, seed={cfg.codebook_seed}) give only "
                         f"{distinct} distinct targets for {product_map.num_classes} classes; {remedy}")
    return codebooks, targets


class BCFHead:
    """Targets, loss and brute-force decoding of a BCF head (the projection lives in the network)."""

    kind = "bcf"

    def __init__(self, cfg: HeadConfig, product_map: ProductMap) -> None:
        cfg.validate()
        self.cfg = cfg
        self.product_map = product_map
        self.codebooks, self.class_targets = class_codes(cfg, product_map, "D", "raise D or B")

    @property
    def outputs(self) -> int:
        return self.cfg.D

    def loss(self, z: Tensor, classes: Tensor) -> Tensor:
        return blockwise_cross_entropy(z, self.class_targets.to(z.device)[classes], self.cfg.B, self.cfg.beta)

    def query(self, z: Tensor) -> Tensor:
        return blockwise_softmax(z, self.cfg.B, self.cfg.beta)

    def predict(self, z: Tensor) -> Tensor:
        """Brute force (``linf`` similarity with every product); ``-1`` for a null product."""
        digits, _ = bruteforce_decode(self.query(z.detach().float().cpu()), self.codebooks)
        return self.product_map.classes(digits)

    def parameters_count(self, features: int) -> int:
        """Projection weights and biases plus the codebook entries (offset form)."""
        return features * self.cfg.D + self.cfg.D + sum(self.codebooks.sizes) * self.cfg.B


class FCHead:
    """The usual fully connected classifier head (baseline)."""

    kind = "fc"

    def __init__(self, cfg: HeadConfig, product_map: ProductMap) -> None:
        self.cfg = cfg
        self.product_map = product_map

    @property
    def outputs(self) -> int:
        return self.product_map.num_classes

    def loss(self, z: Tensor, classes: Tensor) -> Tensor:
        return F_.cross_entropy(z, classes)

    def query(self, z: Tensor) -> Tensor:
        return z

    def predict(self, z: Tensor) -> Tensor:
        return z.detach().argmax(dim=1).cpu()

    def parameters_count(self, features: int) -> int:
        return features * self.product_map.num_classes + self.product_map.num_classes


class SparseResonatorHead:
    """Targets, loss and brute-force decoding of the sparse-resonator head (seed ``000_*``).

    The network outputs its ``D`` pooled features (no projection); the query is their
    per-segment argmax (a segment code). ``predict`` is brute force: the class whose
    target shares the most segments with the query (lowest class on ties).
    """

    kind = "sparse-resonator"

    def __init__(self, cfg: HeadConfig, product_map: ProductMap) -> None:
        cfg.validate()
        self.cfg = cfg
        self.product_map = product_map
        self.codebooks, self.class_targets = class_codes(cfg, product_map, "B", "raise B")

    @property
    def outputs(self) -> int:
        return self.cfg.D

    def loss(self, z: Tensor, classes: Tensor) -> Tensor:
        return segment_cosine_loss(z, self.class_targets.to(z.device)[classes], self.cfg.B, self.cfg.cosine_scale)

    def query(self, z: Tensor) -> Tensor:
        return z

    def predict(self, z: Tensor) -> Tensor:
        """Brute force on the thinned query: the most agreeing segments over every product."""
        N, D = z.shape
        seg = z.detach().float().cpu().reshape(N, self.cfg.B, D // self.cfg.B).argmax(dim=-1)  # (N, B)
        digits, _ = bruteforce_decode(sbc_to_dense(seg, self.codebooks.L), self.codebooks, "dot")
        return self.product_map.classes(digits)

    def parameters_count(self, features: int) -> int:
        return self.cfg.pool_size + sum(self.codebooks.sizes) * self.cfg.B


def make_head(cfg: HeadConfig, product_map: ProductMap) -> BCFHead | FCHead | SparseResonatorHead:
    cfg.validate()
    if cfg.kind == "sparse-resonator":
        return SparseResonatorHead(cfg, product_map)
    return BCFHead(cfg, product_map) if cfg.kind == "bcf" else FCHead(cfg, product_map)
