"""The runner's decoders: an export's factorizer head -> ``decode(queries) -> (indices, iterations,
converged, confidence)``, NumPy in and out.

Torch-free on every path the runner offers by default:

* BCF ``fixed``: :class:`hdsim.fixed.compiled.CompiledFixedBCF` (numba), the integers of
  :class:`hdsim.fixed.FixedBCF` bit for bit (LFSR sampling included) with the manifest's
  widths, ``(T, A, Tc, max_iter)`` and LFSR seed; ``reference=True`` runs the torch model
  itself (needs torch);
* BCF ``fixed`` on a crossbar (``imc``): the same compiled decode with the PCM crossbar's
  integer perturbations of the ``dot`` similarity (:class:`hdsim.imc.fixed_crossbar.FixedPointCrossbar`,
  bit for bit :class:`hdsim.imc.FixedPointPerturbation` on the torch model);
* BCF ``float``: :func:`hdsim.bcf_numpy.bcf_decode` (float64, LFSR sampling);
* ``bruteforce``: the best product by exhaustive search (:func:`hdsim.bcf_numpy.bruteforce_decode`,
  :func:`hdsim.sparse_resonator_numpy.bruteforce_offsets` for the sparse-resonator head);
* sparse resonator: per-segment argmax, then :func:`hdsim.sparse_resonator_numpy.sparse_resonator_decode`
  with the manifest's settings, each query's draws keyed by its content
  (:func:`~hdsim.sparse_resonator_numpy.content_ids`: an image decodes the same alone or in any batch).

Confidence: the weakest factor's final similarity (``linf``: in ``[0, 1]``; on a crossbar the
``dot`` similarity over ``B``); brute force: the best product's similarity (iterations 1,
always converged); sparse resonator: the weakest factor's overlap fraction.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Protocol

import numpy as np

from hdsim.errors import HdsimError
from hdsim.export_folder import CodebookArrays, ExportFolder
from hdsim.extras import require

__all__ = ["Decoder", "build_decoder", "DECODES"]

DECODES = ("fixed", "float", "bruteforce")

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Decoder(Protocol):
    """A head's decode. ``name`` says which implementation runs (the bench and the run summary report it)."""

    name: str

    def decode(self, queries: np.ndarray) -> Decoded:
        """``(N, D)`` float queries -> ``indices (N, F)`` int64, ``iterations (N,)`` int64, ``converged (N,)``
        bool, ``confidence (N,)`` float."""
        ...


class CompiledFixed:
    """The compiled fixed-point decode, optionally on a PCM crossbar (``imc``: a preset name)."""

    name = "CompiledFixedBCF"

    def __init__(self, cb: CodebookArrays, cfg, widths, seed: int, imc: str | None = None, imc_t: float = 20.0
                 ) -> None:
        require("numba", purpose="the fixed-point decode")
        from hdsim.fixed.compiled import CompiledFixedBCF

        self.model = CompiledFixedBCF.from_arrays(cb.indices, cb.L, cfg, widths, seed)
        self.crossbar, self.B = None, cb.B
        if imc:
            from hdsim.imc.fixed_crossbar import FixedPointCrossbar

            # seed 0: FixedPointPerturbation's default, so --no-compiled decodes on the same devices
            self.crossbar = FixedPointCrossbar(cb.indices, cb.L, widths.unbound, imc, t=imc_t, seed=0)
            self.name = "CompiledFixedBCF+crossbar"
        # load (or compile) the kernel now, on the path decode() takes (float32 ONNX output),
        # not inside the first image's latency
        self.model.decode_arrays(np.zeros((1, cb.D), np.float32), crossbar=self.crossbar)

    def decode(self, queries: np.ndarray) -> Decoded:
        idx, iters, conv, amax = self.model.decode_arrays(queries, crossbar=self.crossbar)
        conf = amax.min(axis=1)
        return idx, iters, conv, conf / self.B if self.crossbar is not None else conf  # dot: in units of B


class TorchFixed:
    """The torch model :class:`hdsim.fixed.FixedBCF` itself (``--no-compiled``), optionally on a crossbar
    (:class:`hdsim.imc.FixedPointPerturbation`, seed 0: the devices the compiled crossbar decode reads)."""

    name = "FixedBCF"

    def __init__(self, cb: CodebookArrays, cfg, widths, seed: int, imc: str | None = None, imc_t: float = 20.0
                 ) -> None:
        what = "the reference fixed-point model (--no-compiled)"
        self.torch = require("torch", purpose=what)
        from hdsim.codes import BlockCodebooks
        from hdsim.fixed import FixedBCF

        self.codebooks = BlockCodebooks.from_arrays(cb)
        self.model = FixedBCF(self.codebooks, cfg, widths, seed=seed)
        self.widths, self.imc, self.imc_t, self.B = widths, imc, imc_t, cb.B
        if imc:
            self.name = "FixedBCF+crossbar"

    def decode(self, queries: np.ndarray) -> Decoded:
        from hdsim.threads import torch_threads

        torch = self.torch
        q = torch.from_numpy(np.ascontiguousarray(queries)).float()
        with torch_threads(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.imc:
                from hdsim.imc import FixedPointPerturbation

                perturb = FixedPointPerturbation(self.codebooks, self.widths, self.imc, t=self.imc_t, seed=0,
                                                 record=False)
                res = self.model.factorize(q, perturb=perturb)
            else:
                res = self.model.factorize(q)
        conf = res.max_similarity.double().min(dim=1).values.numpy()
        if self.imc:
            conf = conf / self.B  # dot similarity: in units of B blocks
        return res.indices.numpy(), res.iterations.numpy(), res.converged.numpy(), conf


class FloatBCF:
    name = "bcf_numpy"

    def __init__(self, cb: CodebookArrays, cfg, seed: int) -> None:
        self.cb, self.cfg, self.seed = cb, cfg, seed

    def decode(self, queries: np.ndarray) -> Decoded:
        from hdsim.bcf_numpy import bcf_decode

        idx, iters, conv, amax = bcf_decode(queries, self.cb.indices, self.cb.L, self.cfg, self.seed)
        return idx, iters, conv, amax.min(axis=1)


class Bruteforce:
    name = "bruteforce"

    def __init__(self, cb: CodebookArrays, similarity: str) -> None:
        self.cb, self.similarity = cb, similarity

    def decode(self, queries: np.ndarray) -> Decoded:
        from hdsim.bcf_numpy import bruteforce_decode

        idx, best = bruteforce_decode(queries, self.cb.indices, self.cb.L, self.similarity)
        n = idx.shape[0]
        return idx, np.ones(n, np.int64), np.ones(n, bool), best


class SparseResonator:
    name = "SparseResonator"

    def __init__(self, cb: CodebookArrays, settings: dict, brute: bool = False) -> None:
        self.cb, self.settings, self.brute = cb, dict(settings), bool(brute)
        if brute:
            self.name = "bruteforce"

    def decode(self, queries: np.ndarray) -> Decoded:
        from hdsim.sparse_resonator_numpy import bruteforce_offsets, content_ids, sparse_resonator_decode, thin_queries

        cb = self.cb
        offsets = thin_queries(queries, cb.B, "query")
        if self.brute:
            digits, best = bruteforce_offsets(offsets, list(cb.indices), cb.L)
            n = offsets.shape[0]
            return digits, np.ones(n, np.int64), np.ones(n, bool), best
        idx, iters, conv, sim = sparse_resonator_decode(offsets, list(cb.indices), cb.L, ids=content_ids(offsets),
                                                        **self.settings)
        return idx, iters, conv, sim.min(axis=1)


def build_decoder(export: ExportFolder, decode: str = "fixed", *, imc: str | None = None, imc_t: float = 20.0,
                  imc_tc: float = 0.75, compiled: bool = True) -> Decoder | None:
    """The decoder of ``export``'s head (``None`` for an FC head: argmax), per the options of
    :class:`deploy.runner.RunnerConfig` (validated there)."""
    cb = export.codebooks
    if export.head == "fc":
        return None
    if export.head == "sparse-resonator":
        if imc or decode == "float":
            raise HdsimError(f"decode: the sparse-resonator head decodes with its sparse resonator ('fixed', the "
                             f"default) or by brute force, not {'on a crossbar' if imc else 'float'}")
        return SparseResonator(cb, export.sparse_settings(), brute=decode == "bruteforce")
    cfg, widths, seed = export.bcf_settings()
    if decode == "bruteforce":
        return Bruteforce(cb, cfg.similarity)
    if decode == "float":
        return FloatBCF(cb, cfg, seed)
    if imc:  # the crossbar computes the dot similarity; Tc in its units (docs/deploy.md)
        cfg = replace(cfg, similarity="dot", Tc=imc_tc * cb.B)
    if not compiled:
        return TorchFixed(cb, cfg, widths, seed, imc, imc_t)
    return CompiledFixed(cb, cfg, widths, seed, imc, imc_t)
