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
* :class:`FCHead`: the usual ``Linear(features, classes)`` with cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F_

from hdsim.codes import BlockCodebooks, random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers.bruteforce import bruteforce_decode
from export.data import ProductMap

__all__ = ["HeadConfig", "BCFHead", "FCHead", "make_head", "blockwise_softmax", "blockwise_cross_entropy"]


@dataclass(frozen=True)
class HeadConfig:
    """Head choice and its parameters (recorded in checkpoints and the manifest).

    Attributes:
        kind: ``"bcf"`` or ``"fc"``.
        D, B: BCF dimension and blocks (``L = D / B``).
        codebook_seed: seed of :func:`hdsim.codes.random_codebooks`.
        beta: inverse softmax temperature of the per-block softmax.
    """

    kind: str = "bcf"
    D: int = 512
    B: int = 4
    codebook_seed: int = 0
    beta: float = 1.0

    def validate(self) -> None:
        if self.kind not in ("bcf", "fc"):
            raise HdsimError(f"head: expected 'bcf' or 'fc', got {self.kind!r}")
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


class BCFHead:
    """Targets, loss and brute-force decoding of a BCF head (the projection lives in the network)."""

    kind = "bcf"

    def __init__(self, cfg: HeadConfig, product_map: ProductMap) -> None:
        cfg.validate()
        self.cfg = cfg
        self.product_map = product_map
        self.codebooks: BlockCodebooks = random_codebooks(product_map.F, product_map.sizes, cfg.D, cfg.B,
                                                          cfg.codebook_seed)
        # Target SBC (offset form) of every class, (K, B).
        self.class_targets = self.codebooks.product(product_map.digits(torch.arange(product_map.num_classes)))
        distinct = torch.unique(self.class_targets, dim=0).shape[0]
        if distinct < product_map.num_classes:
            raise HdsimError(f"D: the codebooks (D={cfg.D}, B={cfg.B}, seed={cfg.codebook_seed}) give only "
                             f"{distinct} distinct targets for {product_map.num_classes} classes; raise D or B")

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
        return features * self.cfg.D + self.cfg.D


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


def make_head(cfg: HeadConfig, product_map: ProductMap) -> BCFHead | FCHead:
    cfg.validate()
    return BCFHead(cfg, product_map) if cfg.kind == "bcf" else FCHead(cfg, product_map)
