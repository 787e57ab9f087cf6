"""RTL of the fixed-point BCF: configuration, memory files, stimulus, cycle bound and runners.

The Verilog lives in ``rtl_models/`` (``hdsim_bcf.v``, docs in ``docs/rtl.md``); it
is bit-exact against :class:`hdsim.fixed.FixedBCF`. This module holds what both
the cocotb bench (``rtl_models/cocotb_bcf.py``, run inside the simulator) and the
``hdsim cosim`` command need:

* :class:`RtlConfig`: one hardware configuration (sizes, widths, lanes,
  thresholds, seeds) and the Verilog parameters it maps to;
* memory files: :func:`write_codebook_hex` (the codebook ROM, ``$readmemh``)
  and :func:`write_perturbation_hex` (the bench's IMC perturbation table);
* stimulus: :func:`make_cosim_queries` (exact, noisy, random and zero queries,
  as the model's integers) and :func:`make_perturbations`;
* :func:`lower_bound`: the ideal cycles per iteration of the architecture;
* runners: :func:`run_cosim` (Icarus through ``cocotb_tools.runner``),
  :func:`run_lint` (``verilator --lint-only -Wall``), :func:`run_synth`
  (yosys ``synth; stat``).

cocotb is imported only inside functions (:func:`run_cosim`, :func:`simulator_status`);
importing this module needs neither cocotb nor a simulator.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hdsim.codes import BlockCodebooks, random_codebooks, seeded_generator
from hdsim.errors import HdsimError
from hdsim.factorizers.bcf import BCFConfig
from hdsim.fixed.widths import Datapath, FixedWidths
from hdsim.lfsr import LFSR_DEFAULT_SEED, VERILOG_HEADER
from hdsim.validation import check_seed, output_dir

__all__ = ["RtlConfig", "CI_CONFIGS", "rtl_dir", "codebook_word_bits", "write_codebook_hex",
           "read_codebook_hex", "write_perturbation_hex", "read_perturbation_hex", "make_cosim_queries",
           "make_perturbations", "imc_perturbation_table", "lower_bound", "factor_step_cycles", "QUERY_KINDS", "run_cosim",
           "run_lint", "run_synth",
           "simulator_status", "RESET_TARGETS", "reset_targets", "reset_schedule", "coverage_minimums",
           "COSIM_MUTANTS"]

QUERY_KINDS = ("exact", "noisy", "random", "zero")


def _clog2(n: int) -> int:
    """Bits to index ``n`` items, at least 1 (the RTL's ``(n > 1) ? $clog2(n) : 1``)."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def rtl_dir() -> Path:
    """The ``rtl_models/`` folder (``$HDSIM_RTL_DIR`` overrides; default: next to the package)."""
    env = os.environ.get("HDSIM_RTL_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "rtl_models"
    if not (path / "hdsim_bcf.v").is_file():
        raise HdsimError(f"rtl: hdsim_bcf.v not found in {path} (set HDSIM_RTL_DIR to the rtl_models folder)")
    return path


@dataclass(frozen=True)
class RtlConfig:
    """One hardware configuration of ``hdsim_bcf``.

    Attributes:
        name: label (build folder, reports).
        B, L, M, F: blocks, block length, codevectors per factor (all factors), factors (>= 2).
        widths: the fixed-point word widths (query, estimate, unbound, recip_guard).
        lanes: ``P``, parallel lanes of every phase; must divide ``L`` and be <= ``M``.
        T, A, Tc, max_iter, similarity: the BCF's hyper-parameters (as :class:`BCFConfig`).
        lfsr_seed: global seed of the per-query LFSRs.
        codebook_seed: seed of :func:`hdsim.codes.random_codebooks`.
        div_steps: quotient bits per cycle of the reciprocal divider.
        unbind_entries: ``UJ``, non-zero estimate entries the unbinding takes per cycle, 1 to 4
            (``UJ P`` multipliers; more than 4 would lengthen the logic that picks the positions),
            at most ``L/2``.
        qid_bits: width of the query id port.
    """

    name: str = "custom"
    B: int = 4
    L: int = 16
    M: int = 16
    F: int = 2
    widths: FixedWidths = field(default_factory=lambda: FixedWidths.uniform(8))
    lanes: int = 4
    T: float = 0.05
    A: int = 4
    Tc: float | None = None
    max_iter: int | None = None
    similarity: str = "linf"
    lfsr_seed: int = LFSR_DEFAULT_SEED
    codebook_seed: int = 0
    div_steps: int = 2
    qid_bits: int = 16
    unbind_entries: int = 1

    # ---- derived -------------------------------------------------------------------------------
    @property
    def D(self) -> int:
        return self.B * self.L

    def bcf_config(self) -> BCFConfig:
        return BCFConfig(T=self.T, A=self.A, Tc=self.Tc, max_iter=self.max_iter, similarity=self.similarity)

    def datapath(self) -> Datapath:
        cfg = self.bcf_config()
        return Datapath.build(self.widths, self.B, self.L, (self.M,) * self.F, self.similarity, cfg.T,
                              cfg.resolved_Tc(self.B), cfg.A)

    def iterations_cap(self) -> int:
        return self.bcf_config().resolved_max_iter((self.M,) * self.F)

    def codebooks(self) -> BlockCodebooks:
        return random_codebooks(self.F, self.M, self.D, self.B, seed=self.codebook_seed)

    @property
    def perturb_bits(self) -> int:
        """Width of one perturbation word: holds ``[-2^a_bits, 2^a_bits]`` (full-scale swings)."""
        return self.datapath().a_bits + 2

    def validate(self) -> None:
        """Raise :class:`HdsimError` for a configuration the RTL does not support."""
        for name in ("B", "L", "M", "F", "lanes", "div_steps", "qid_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise HdsimError(f"rtl.{name}: expected a positive integer, got {v!r}")
        if self.F < 2:
            raise HdsimError(f"rtl.F: the RTL needs at least 2 factors, got {self.F}")
        if self.L < 2:
            raise HdsimError(f"rtl.L: block length must be >= 2, got {self.L}")
        if self.L % self.lanes:
            raise HdsimError(f"rtl.lanes: must divide L={self.L}, got {self.lanes}")
        if self.lanes > self.M:
            raise HdsimError(f"rtl.lanes: must be <= M={self.M}, got {self.lanes}")
        if self.unbind_entries not in (1, 2, 3, 4) or isinstance(self.unbind_entries, bool):
            raise HdsimError(f"rtl.unbind_entries: 1 to 4, got {self.unbind_entries!r}")
        uj_max = max(1, self.L // 2)  # the RTL's position counters hold 2 UJ in clog2(L + 1) bits
        if self.unbind_entries > uj_max:
            raise HdsimError(f"rtl.unbind_entries: at most L/2 = {uj_max} at L={self.L}, got {self.unbind_entries}")
        if self.qid_bits > 31:
            raise HdsimError(f"rtl.qid_bits: at most 31, got {self.qid_bits}")
        w = self.widths
        if w.unbound > w.query + w.estimate:
            raise HdsimError(f"rtl.widths: unbound ({w.unbound}) must be <= query + estimate "
                             f"({w.query + w.estimate}) (non-negative requantization shift)")
        dp = self.datapath()  # validates widths, T, Tc
        if dp.s_bits < 3:
            raise HdsimError("rtl.widths: bundle accumulator narrower than 3 bits")
        if self.A >= 1 << 16:
            raise HdsimError(f"rtl.A: at most 65535, got {self.A}")
        if self.iterations_cap() < 1:
            raise HdsimError("rtl.max_iter: must be >= 1")

    def verilog_parameters(self, cb_file: str | Path) -> dict[str, object]:
        """Parameters of ``hdsim_bcf`` (``CB_FILE`` quoted as a Verilog string)."""
        dp = self.datapath()
        w = self.widths
        return {
            "B": self.B, "L": self.L, "M": self.M, "F": self.F,
            "WQ": w.query, "WX": w.estimate, "WU": w.unbound, "G": w.recip_guard,
            "P": self.lanes, "MAX_ITER": self.iterations_cap(),
            "T_INT": dp.T_int, "TC_INT": dp.Tc_int, "A": self.A,
            "DOT": int(self.similarity == "dot"), "SEED": self.lfsr_seed,
            "QW": self.qid_bits, "PERTURB": 1, "PW": self.perturb_bits, "DIV_STEPS": self.div_steps,
            "UJ": self.unbind_entries,
            "CB_FILE": f'"{Path(cb_file).as_posix()}"',
        }

    def as_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = self.widths.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RtlConfig:
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise HdsimError(f"rtl config: unknown field(s) {sorted(unknown)}")
        if "widths" in d and isinstance(d["widths"], dict):
            d["widths"] = FixedWidths(**d["widths"])
        return cls(**d)

    def key(self) -> str:
        """Short hash of the configuration (names build folders)."""
        return hashlib.sha1(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:10]


# The CI configurations: small, but every path (F = 2 and 3, linf and dot, narrow words that
# saturate, 1..8 lanes, L not a power of two, sampling with A < M, 1 and 4 unbinding entries per
# cycle; 2 and 3 in tests/test_rtl.py's test of their own).
CI_CONFIGS: dict[str, RtlConfig] = {
    "f2-l16-m16-p4": RtlConfig(name="f2-l16-m16-p4", B=4, L=16, M=16, F=2, lanes=4,
                               widths=FixedWidths.uniform(8), T=0.05, A=4, unbind_entries=4),
    "f3-l8-m8-p4": RtlConfig(name="f3-l8-m8-p4", B=4, L=8, M=8, F=3, lanes=4,
                             widths=FixedWidths(8, 7, 8, 9), T=0.06, A=3, max_iter=10),
    "f2-dot-b3-l12-m20-p3": RtlConfig(name="f2-dot-b3-l12-m20-p3", B=3, L=12, M=20, F=2, lanes=3,
                                      widths=FixedWidths(6, 6, 6, 7), similarity="dot", T=0.3, Tc=1.5, A=5,
                                      max_iter=8, unbind_entries=4),
    "f3-l16-m10-p8": RtlConfig(name="f3-l16-m10-p8", B=2, L=16, M=10, F=3, lanes=8,
                               widths=FixedWidths.uniform(6), T=0.08, A=2, max_iter=10),
}


# ---- memory files ------------------------------------------------------------------------------
def codebook_word_bits(B: int, L: int, lanes: int = 1) -> int:
    """Bits of one codebook ROM word: ``lanes`` codevectors of ``B`` indices of ``clog2(L)`` bits."""
    return lanes * B * _clog2(L)


def write_codebook_hex(codebooks: BlockCodebooks, path: str | Path, lanes: int = 1) -> Path:
    """Write the codebook ROM for ``$readmemh``, one chunk of ``lanes`` codevectors per word.

    With ``NCH = ceil(M / lanes)``, word ``f * NCH + c`` holds codevector ``c * lanes + p`` at
    bits ``[p*B*LW +: B*LW]`` (zero past ``M``), its block ``b`` at ``[b*LW +: LW]`` within
    (``LW = clog2(L)``): the RTL reads one word per cycle for its ``P = lanes`` lanes.
    ``lanes = 1`` is one codevector per word. All factors must have the same ``M`` (the RTL's
    layout). One hex word per line.
    """
    sizes = set(codebooks.sizes)
    if len(sizes) != 1:
        raise HdsimError(f"codebooks: the RTL needs equal codebook sizes, got {codebooks.sizes}")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise HdsimError(f"lanes: expected a positive integer, got {lanes!r}")
    lw = _clog2(codebooks.L)
    cw = codebooks.B * lw
    digits = (codebook_word_bits(codebooks.B, codebooks.L, lanes) + 3) // 4
    lines = []
    for X in codebooks.as_numpy():
        for c0 in range(0, X.shape[0], lanes):
            word = 0
            for p, row in enumerate(X[c0:c0 + lanes]):
                for b, idx in enumerate(row):
                    word |= int(idx) << (p * cw + b * lw)
            lines.append(f"{word:0{digits}x}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def read_codebook_hex(path: str | Path, F: int, M: int, B: int, L: int, lanes: int = 1) -> BlockCodebooks:
    """Inverse of :func:`write_codebook_hex`."""
    lw = _clog2(L)
    nch = -(-M // lanes)
    words = [int(t, 16) for t in Path(path).read_text().split()]
    if len(words) != F * nch:
        raise HdsimError(f"codebook file {path}: expected {F * nch} words, got {len(words)}")
    rows = [[(words[f * nch + m // lanes] >> ((m % lanes) * B * lw + b * lw)) & ((1 << lw) - 1) for b in range(B)]
            for f in range(F) for m in range(M)]
    idx = np.array(rows, dtype=np.int64)
    return BlockCodebooks(tuple(torch.from_numpy(idx[f * M:(f + 1) * M].copy()) for f in range(F)), L)


def write_perturbation_hex(table: np.ndarray, bits: int, path: str | Path) -> Path:
    """Write a perturbation table ``(N, max_iter, F, M)`` as two's complement ``bits``-bit hex words.

    Entry order is C order: ``((q * max_iter + it - 1) * F + f) * M + m`` (the testbench's address).
    """
    t = np.asarray(table, dtype=np.int64).ravel()
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if t.size and (t.min() < lo or t.max() > hi):
        raise HdsimError(f"perturbations: values must fit {bits}-bit two's complement [{lo}, {hi}]")
    digits = (bits + 3) // 4
    u = t & ((1 << bits) - 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(f"{int(v):0{digits}x}" for v in u) + "\n", encoding="ascii")
    return path


def read_perturbation_hex(path: str | Path, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`write_perturbation_hex`."""
    u = np.array([int(t, 16) for t in Path(path).read_text().split()], dtype=np.int64)
    v = np.where(u >= 1 << (bits - 1), u - (1 << bits), u)
    return v.reshape(shape)


# ---- stimulus ----------------------------------------------------------------------------------
def make_cosim_queries(cfg: RtlConfig, n: int, seed: int, noise_sigma: float = 0.02,
                       mix: tuple[float, float, float, float] = (0.35, 0.4, 0.15, 0.1)) -> dict:
    """``n`` integer queries (``Q0.Wq``, exactly what the model and the RTL receive).

    Kinds (``QUERY_KINDS``), drawn with probabilities ``mix``:
    ``exact`` (a product of codevectors), ``noisy`` (the same plus Gaussian noise,
    :class:`hdsim.queries.QueryNoise` ``gaussian`` with ``noise_sigma``, renormalized),
    ``random`` (uniform random words over the full query range: saturation paths,
    rarely converges) and ``zero`` (all zero: every factor samples every iteration).
    Float queries are quantized by :meth:`FixedBCF.prepare_queries` (per-block
    normalization, round half up).

    Returns:
        dict with ``queries`` ``(n, B, L)`` int64 tensor, ``kinds`` list of str,
        ``factors`` ``(n, F)`` int64 (ground truth; -1 for random / zero).
    """
    from hdsim.fixed.bcf import FixedBCF
    from hdsim.queries import QueryNoise, make_queries

    if n < 1:
        raise HdsimError(f"queries: expected at least 1 query, got {n}")
    cb = cfg.codebooks()
    model = FixedBCF(cb, cfg.bcf_config(), cfg.widths, seed=cfg.lfsr_seed)
    g = seeded_generator(seed)
    p = torch.tensor(mix, dtype=torch.double)
    kind_idx = torch.multinomial(p / p.sum(), n, replacement=True, generator=g)
    exact = make_queries(cb, n, seed=seed + 1)
    noisy = make_queries(cb, n, seed=seed + 2, noise=QueryNoise("gaussian", noise_sigma))
    q = torch.zeros(n, cfg.B, cfg.L, dtype=torch.long)
    factors = torch.full((n, cfg.F), -1, dtype=torch.long)
    sel = kind_idx == 0
    q[sel] = model.prepare_queries(exact.queries[sel]) if sel.any() else q[sel]
    factors[sel] = exact.factors[sel]
    sel = kind_idx == 1
    q[sel] = model.prepare_queries(noisy.queries[sel]) if sel.any() else q[sel]
    factors[sel] = noisy.factors[sel]
    sel = kind_idx == 2
    hi = 1 << cfg.widths.query
    q[sel] = torch.randint(0, hi, (int(sel.sum()), cfg.B, cfg.L), generator=g)
    return {"queries": q, "kinds": [QUERY_KINDS[int(k)] for k in kind_idx], "factors": factors}


def make_perturbations(cfg: RtlConfig, n: int, seed: int, fraction: float = 0.3,
                       density: float = 0.5, spread: int = 4) -> np.ndarray:
    """An integer IMC perturbation table ``(n, max_iter, F, M)`` for the bench.

    A ``fraction`` of the queries is perturbed; in those, each similarity gets a
    nonzero value with probability ``density``: uniform in ``[-spread, spread]``,
    and 1 in 50 a full-scale swing ``+-2^a_bits`` (exercises both saturations).
    The same table feeds FixedBCF's ``perturb`` hook and the testbench.
    """
    dp = cfg.datapath()
    rng = np.random.default_rng(seed)
    shape = (n, cfg.iterations_cap(), cfg.F, cfg.M)
    t = rng.integers(-spread, spread + 1, size=shape)
    t[rng.random(shape) >= density] = 0
    big = rng.random(shape) < 0.02
    t[big] = rng.choice([-1, 1], size=int(big.sum())) * (1 << dp.a_bits)
    t[rng.random(n) >= fraction] = 0
    return t.astype(np.int64)


def imc_perturbation_table(cfg: RtlConfig, n: int, seed: int = 0, preset: str = "pcm-chip", t: float = 20.0,
                           imc_seed: int = 0, noise_sigma: float = 0.02,
                           mix: tuple[float, float, float, float] = (0.35, 0.4, 0.15, 0.1)) -> np.ndarray:
    """PCM-crossbar noise for the bench: :class:`hdsim.imc.FixedPointPerturbation` as a table.

    Decodes the bench's queries (:func:`make_cosim_queries` with the same ``seed``,
    ``noise_sigma``, ``mix``) with FixedBCF and the crossbar's ADC perturbations, and
    returns them as the ``(n, max_iter, F, M)`` table :func:`run_cosim` takes
    (``perturbations=``); the RTL then reproduces that noisy decode bit for bit.
    Needs ``similarity="dot"`` (the crossbar computes the dot similarity).
    """
    from hdsim.fixed.bcf import FixedBCF
    from hdsim.imc import FixedPointPerturbation

    if cfg.similarity != "dot":
        raise HdsimError(f"imc: crossbar perturbations model the dot similarity; config {cfg.name} is {cfg.similarity}")
    stim = make_cosim_queries(cfg, n, seed, noise_sigma=noise_sigma, mix=mix)
    cb = cfg.codebooks()
    pert = FixedPointPerturbation(cb, cfg.widths, preset, t=t, seed=imc_seed)
    FixedBCF(cb, cfg.bcf_config(), cfg.widths, seed=cfg.lfsr_seed).factorize(stim["queries"], perturb=pert)
    return pert.table(n, cfg.iterations_cap())


# ---- cycle model -------------------------------------------------------------------------------
def factor_step_cycles(cfg: RtlConfig, others: list[np.ndarray], draws: int) -> int:
    """Cycles of one factor step as the RTL schedules it (docs/rtl.md, Architecture).

    ``others`` are the estimates the step's unbindings read (``x_g`` for every ``g != f``,
    each ``(B, L)``: this iteration's for ``g < f``, the previous one's for ``g > f``) and
    ``draws`` the LFSR words its activation drew. Per correlation: one load cycle, then per
    group of ``P`` outputs of block ``b`` one cycle per ``UJ`` non-zero entries of ``x_g``'s
    block (at least one); then the fill and drain of the phases, the similarity and bundling
    chunks, the normalization groups, the draws and any wait for the divider:

        sum_{g != f} (1 + (L/P) sum_b max(1, ceil(nnz_b(x_g) / UJ))) + (2 + E)(F - 2)
        + 2 ceil(M/P) + D/P + 13 + E + H + W + max(0, NDIV - 1 - W - ceil(M/P) - 2)

    with ``E = [UJ > 1]`` (the stage that adds a lane's ``UJ`` products), ``H = [P >= 8]`` (the
    similarity's first reduction level in a stage of its own), ``W = draws`` and
    ``NDIV = ceil((G + 2) / DIV_STEPS)``. An independent account of the schedule: the
    co-simulation's measured cycles per iteration are the sum of this over the factors.

    Example:
        >>> cfg = RtlConfig(B=2, L=4, M=4, F=2, lanes=2, unbind_entries=2)
        >>> x = np.array([[3, 0, 1, 2], [0, 0, 0, 0]])   # 3 and 0 non-zeros: 2 and 1 cycles per group
        >>> factor_step_cycles(cfg, [x], draws=0)   # 1 + 2 (2 + 1) + 2*2 + 4 + 14 + (6 - 1 - 2 - 2)
        30
    """
    P, F, L, UJ = cfg.lanes, cfg.F, cfg.L, cfg.unbind_entries
    nch = -(-cfg.M // P)
    e = int(UJ > 1)
    ndiv = -(-(cfg.widths.recip_guard + 2) // cfg.div_steps)
    unbind = 0
    for x in others:
        nnz = np.count_nonzero(np.asarray(x).reshape(cfg.B, L), axis=1)
        unbind += 1 + (L // P) * int(np.maximum(1, -(-nnz // UJ)).sum())
    h = int(P >= 8)
    return (unbind + (2 + e) * (F - 2) + 2 * nch + cfg.D // P + 13 + e + h + draws
            + max(0, ndiv - 1 - draws - nch - 2))


def lower_bound(cfg: RtlConfig, draws: float = 0.0, unbind_macs: float | None = None) -> dict:
    """Ideal cycles of one iteration: per phase, the work divided by the units doing it, summed.

    Units (``P`` = lanes): unbinding ``P * unbind_entries`` multipliers; similarity ``P``
    gather-min lanes, one codevector each per cycle (``F M``); activation one LFSR word
    per cycle (``draws``: words drawn in the iteration, 0 without sampling); bundling
    ``P`` scatter lanes (``F M`` codevectors); normalization ``P`` multipliers (``F D``
    entries). No ceilings, no fill, no divider: a bound, not a schedule.

    The unbinding's work is ``unbind_macs`` when given: the multiply-adds with a non-zero
    estimate entry, ``sum_f sum_{g != f} L * nnz(x_g)`` (what a sparse-aware unbinding
    must do; the bench counts it from the model's estimates); else the dense
    ``F (F-1) D L`` (every estimate entry non-zero: the most work).

    Example:
        >>> lower_bound(RtlConfig(B=4, L=16, M=16, F=2, lanes=4))["unbinding"]   # 2 * 64 * 16 / 4
        512.0
    """
    P, F, D, L, M = cfg.lanes, cfg.F, cfg.D, cfg.L, cfg.M
    macs = F * (F - 1) * D * L if unbind_macs is None else unbind_macs
    phases = {
        "unbinding": macs / (P * cfg.unbind_entries),
        "similarity": F * M / P,
        "activation": float(draws),
        "bundling": F * M / P,
        "normalization": F * D / P,
    }
    phases["total"] = sum(phases.values())
    return phases


# ---- verification plan ---------------------------------------------------------------------------
# What the bench's ResetController aims a reset at, named by the DUT state at the reset edge:
# "wait" idle with the initial estimates ready; "load" between two beats of a query (the loader
# holds part of it); "init" the init pass; "unbind" ULD/UNB; "similarity", "decide", "draw",
# "bundle", "normalize", "step" the decode phases; "done" a finished decode waiting in DONE while
# the output register holds an untaken result (needs a stall).
RESET_TARGETS = ("wait", "load", "init", "unbind", "similarity", "decide", "draw", "bundle", "normalize", "step",
                 "done")
# deliberately wrong golden models of the bench (rtl_models/cocotb_bcf.py MUTANTS): test the bench itself
COSIM_MUTANTS = ("unbind_floor", "recip_plus_one")
# the targets every query passes through (a short run picks its resets among these)
_EVERY_QUERY = ("load", "init", "unbind", "similarity", "decide", "bundle", "normalize", "step")


def reset_targets(cfg: RtlConfig) -> tuple[str, ...]:
    """The :data:`RESET_TARGETS` ``cfg`` can reach: ``load`` needs ``B >= 2``, ``draw`` ``0 < A < M``."""
    return tuple(t for t in RESET_TARGETS
                 if not (t == "load" and cfg.B < 2) and not (t == "draw" and not 0 < cfg.A < cfg.M))


def reset_schedule(cfg: RtlConfig, resets: int, rng) -> list[str]:
    """The reset targets of one run, in order (``rng``: a ``random.Random``).

    With ``resets >= len(reset_targets(cfg))`` every target once (``wait`` first: it is
    reached only before the traffic starts), then random extra ones; fewer resets are
    drawn among the states every query passes through.
    """
    targets = reset_targets(cfg)
    common = [t for t in _EVERY_QUERY if t in targets]
    if resets >= len(targets):
        rest = [t for t in targets if t != "wait"]
        rng.shuffle(rest)
        return ["wait"] + rest + [rng.choice(common) for _ in range(resets - len(targets))]
    return rng.sample(common, resets) if resets <= len(common) else \
        common + [rng.choice(common) for _ in range(resets - len(common))]


def coverage_minimums(cfg: RtlConfig, queries: int, resets: int, backpressure: bool, *, given_queries: bool = False,
                      external_perturbations: bool = False, perturb_fraction: float = 0.3,
                      mix: tuple[float, ...] = (0.35, 0.4, 0.15, 0.1)) -> dict[str, int]:
    """Functional coverage the bench must reach in one run (it fails the run otherwise).

    * every scheduled reset happened (``resets``); with a full schedule
      (``resets >= len(reset_targets(cfg))``) one in each state (``resets_in_<target>``;
      ``load`` is ``resets_mid_load``, the loader holding part of a query) and one with a
      result pending;
    * with back-pressure, ``stalls >= queries // 10`` (a finished decode waited in DONE);
    * from 100 generated queries (the default mix): sampled and pulled-up steps,
      steps whose normalization saturates an estimate word, LFSR words (``0 < A < M``), both exits (converged and
      max-iteration results), each query kind with a non-zero share; with synthetic
      perturbations, perturbed steps and saturated similarities.
    """
    req: dict[str, int] = {"steps": 1, "resets": resets}
    targets = reset_targets(cfg)
    if resets >= len(targets):
        for t in targets:
            req["resets_mid_load" if t == "load" else f"resets_in_{t}"] = 1
        req["resets_result_pending"] = 1
    if backpressure:
        req["stalls"] = max(1, queries // 10)
    if queries >= 100 and not given_queries:
        req.update(pulled_steps=1, saturated_x_steps=1, results_converged=1, results_max_iter=1)
        if cfg.A > 0:
            req["sampled_steps"] = 1
        if 0 < cfg.A < cfg.M:
            req["lfsr_words"] = 1
        for kind, share in zip(QUERY_KINDS, mix):
            if share > 0:
                req[f"results_{kind}"] = 1
        if perturb_fraction > 0 and not external_perturbations:
            req.update(perturbed_steps=1, saturated_a_steps=1)
    return req


# ---- tools -------------------------------------------------------------------------------------
def simulator_status() -> dict:
    """Which of the RTL tools are available (for skips and error messages)."""
    try:
        import cocotb

        cocotb_version = cocotb.__version__
    except ImportError:
        cocotb_version = None
    return {"iverilog": shutil.which("iverilog"), "vvp": shutil.which("vvp"), "verilator": shutil.which("verilator"),
            "yosys": shutil.which("yosys"), "cocotb": cocotb_version}


def _sources() -> list[Path]:
    d = rtl_dir()
    return [d / "hdsim_bcf.v"]


def run_lint(cfg: RtlConfig, workdir: str | Path, debug: bool = True) -> dict:
    """``verilator --lint-only -Wall`` of ``hdsim_bcf`` with ``cfg``'s parameters (and ``DEBUG``).

    Returns ``{"clean": bool, "warnings": [...], "command": str}``.
    """
    if shutil.which("verilator") is None:
        raise HdsimError("lint: verilator not found on PATH (apt-get install verilator)")
    cfg.validate()
    workdir = Path(workdir)
    cb_file = write_codebook_hex(cfg.codebooks(), workdir / "codebooks.hex", cfg.lanes)
    cmd = ["verilator", "--lint-only", "-Wall", f"-I{VERILOG_HEADER.parent}", "--top-module", "hdsim_bcf"]
    params = cfg.verilog_parameters(cb_file)
    params["DEBUG"] = int(debug)
    for k, v in params.items():
        cmd.append(f"-G{k}={v}")
    cmd += [str(p) for p in _sources()]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=False)
    warnings = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("%")]
    return {"clean": r.returncode == 0 and not warnings, "warnings": warnings, "command": " ".join(cmd)}


def run_synth(cfg: RtlConfig, workdir: str | Path, debug: bool = False, timeout: float = 900) -> dict:
    """yosys ``synth -top hdsim_bcf; stat`` (generic cells) for ``cfg``.

    ``debug=False`` synthesizes with ``DEBUG=0`` (no debug port logic). Returns the
    total cell count, flip-flop bits (``$_DFF*`` / ``$_SDFF*`` cells), the count by cell
    type and the script (``rtl_models/synth.ys`` is the template).
    """
    if shutil.which("yosys") is None:
        raise HdsimError("synth: yosys not found on PATH (apt-get install yosys)")
    cfg.validate()
    workdir = output_dir("workdir", workdir)
    cb_file = write_codebook_hex(cfg.codebooks(), workdir / "codebooks.hex", cfg.lanes)
    params = cfg.verilog_parameters(cb_file)
    params.pop("CB_FILE")  # the default "codebooks.hex", in workdir
    params["DEBUG"] = int(debug)
    params["SEED"] = f"32'h{cfg.lfsr_seed:08X}"
    template = (rtl_dir() / "synth.ys").read_text()
    chparams = " ".join(f"-chparam {k} {v}" for k, v in params.items())
    script = template.format(include=VERILOG_HEADER.parent, source=_sources()[0], chparams=chparams)
    (workdir / "synth.ys").write_text(script)
    r = subprocess.run(["yosys", "-q", "-s", "synth.ys"], capture_output=True, text=True, cwd=workdir,
                       timeout=timeout, check=False)
    if r.returncode != 0:
        raise HdsimError(f"synth: yosys failed:\n{(r.stdout + r.stderr)[-2000:]}")
    stat = (workdir / "stat.txt").read_text()
    cells: dict[str, int] = {}
    total = None
    for ln in stat.splitlines():
        m = re.match(r"\s+Number of cells:\s+(\d+)", ln)
        if m:
            total = int(m.group(1))
        m = re.match(r"\s+(\$\S+)\s+(\d+)", ln)
        if m:
            cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
    ffs = sum(v for k, v in cells.items() if re.match(r"\$_(S?DFFE?|DFF|SDFFC?E?|ALDFFE?|DFFSRE?)_", k))
    return {"config": cfg.name, "lanes": cfg.lanes, "cells": total, "flip_flops": ffs, "by_type": cells,
            "debug_port": debug}


def _sim_cycle_limit(cfg: RtlConfig, queries: int, resets: int) -> int:
    """A generous bound on a run's simulated cycles (the cocotb test's time limit): every query
    and every re-sent or re-run one at ``4x`` a worst-case decode (all iterations, every
    draw, padding), plus the stalls."""
    per_query = cfg.iterations_cap() * (lower_bound(cfg, 4 * cfg.A * cfg.M)["total"] + 200) * 2 + 2_000
    return int((2 * queries + 8 * resets + 100) * per_query * 2)


def run_cosim(cfg: RtlConfig, queries: int, seed: int = 0, workdir: str | Path | None = None,
              gaps: bool = True, backpressure: bool = True, resets: int = 2, perturb_fraction: float = 0.3,
              noise_sigma: float = 0.02, mix: tuple[float, float, float, float] = (0.35, 0.4, 0.15, 0.1),
              timeout_cycles: int | None = None, model_override: dict | None = None,
              perturbations: np.ndarray | None = None, query_words: np.ndarray | None = None,
              mutant: str | None = None, timeout_s: float | None = None) -> dict:
    """Run ``queries`` random queries through the RTL under Icarus (cocotb runner) against FixedBCF.

    The bench (``rtl_models/cocotb_bcf.py``) regenerates codebooks, queries and perturbations
    from the plan written here, runs the fixed-point model with ``observe``/``perturb``,
    drives the DUT and compares every iteration's state and every result bit for bit.

    ``perturbations``: an external integer table ``(queries, max_iter, F, M)``, entry
    ``[q, it-1, f, m]`` (e.g. ``hdsim.imc.FixedPointPerturbation.table``), instead of the
    synthetic :func:`make_perturbations`; values are clipped to ``[-2^a_bits, 2^a_bits]``,
    which never changes a decode (the model saturates ``a + p`` to the ``a`` word).

    ``query_words``: given queries ``(queries, B, L)`` of ``Q0.Wq`` integers (e.g. a CNN's
    outputs through :meth:`hdsim.fixed.FixedBCF.prepare_queries`) instead of random ones.

    ``model_override`` changes fields of the configuration the *model* runs with (not the
    RTL's), ``mutant`` swaps the model for a deliberately wrong one (``"unbind_floor"``,
    ``"recip_plus_one"``; ``rtl_models/cocotb_bcf.py``): only for testing that the bench
    catches a difference.

    Coverage: the run fails unless :func:`coverage_minimums` of its settings are met
    (``coverage_required``, ``coverage_unmet`` in the report). Time limits: the bench's
    ``s_ready`` wait and its no-result watchdog (cycles), a simulated-time limit on the
    cocotb test, and ``timeout_s`` of wall-clock time for the simulator process (default
    ``300 + 5 * queries``), after which it is killed and :class:`HdsimError` raised.

    Returns the bench's report: ``passed``, ``failed``, ``mismatches`` (first differing
    signal, query, iteration and factor; at most 20), coverage counts, ``cycles_per_query``,
    ``cycles_per_iteration``, ``lower_bound`` (per phase) and their ratio.
    """
    status = simulator_status()
    if status["cocotb"] is None:
        raise HdsimError("cosim: cocotb is not installed (pip install 'hdsim[rtl]')")
    if status["iverilog"] is None or status["vvp"] is None:
        raise HdsimError("cosim: Icarus Verilog (iverilog, vvp) not found on PATH (apt-get install iverilog)")
    if queries < 1:
        raise HdsimError(f"queries: must be >= 1, got {queries}")
    check_seed("seed", seed)
    if not (math.isfinite(noise_sigma) and noise_sigma >= 0):
        raise HdsimError(f"noise_sigma: must be a finite number >= 0, got {noise_sigma}")
    if not 0.0 <= perturb_fraction <= 1.0:
        raise HdsimError(f"perturb_fraction: must be in [0, 1], got {perturb_fraction}")
    if mutant is not None and mutant not in COSIM_MUTANTS:
        raise HdsimError(f"mutant: one of {', '.join(COSIM_MUTANTS)}, got {mutant!r}")
    cfg.validate()
    if queries > (1 << cfg.qid_bits) - 1:
        raise HdsimError(f"queries: at most {(1 << cfg.qid_bits) - 1} for {cfg.qid_bits}-bit query ids")

    base = Path(workdir) if workdir is not None else Path("out") / "cosim"
    work = output_dir("workdir", (base / f"{cfg.name}-{cfg.key()}").resolve())
    cb_file = write_codebook_hex(cfg.codebooks(), work / "codebooks.hex", cfg.lanes)
    if perturbations is None:
        pert = make_perturbations(cfg, queries, seed + 7, fraction=perturb_fraction)
    else:
        raw = np.asarray(perturbations)
        if raw.dtype.kind not in "iub" and not (raw.dtype.kind == "f" and np.isfinite(raw).all()
                                                and (raw == np.round(raw)).all()):
            raise HdsimError(f"perturbations: expected integer values, got dtype {raw.dtype} with non-integer or "
                             "non-finite entries")
        pert = raw.astype(np.int64)
        shape = (queries, cfg.iterations_cap(), cfg.F, cfg.M)
        if pert.shape != shape:
            raise HdsimError(f"perturbations: expected shape {shape} (queries, max_iter, F, M), got {pert.shape}")
        big = 1 << cfg.datapath().a_bits
        pert = np.clip(pert, -big, big)
    pert_file = write_perturbation_hex(pert, cfg.perturb_bits, work / "pert.hex")
    query_file = None
    if query_words is not None:
        qw = np.asarray(query_words)
        if qw.shape != (queries, cfg.B, cfg.L) or not np.issubdtype(qw.dtype, np.integer):
            raise HdsimError(f"query_words: expected integers of shape {(queries, cfg.B, cfg.L)}, got {qw.dtype} "
                             f"{qw.shape}")
        if qw.min() < 0 or qw.max() >= 1 << cfg.widths.query:
            raise HdsimError(f"query_words: entries must be in [0, {(1 << cfg.widths.query) - 1}]")
        query_file = work / f"queries-{seed}.npy"
        np.save(query_file, qw.astype(np.int64))
    result_path = work / f"result-{seed}.json"
    if result_path.exists():
        result_path.unlink()
    plan = {"config": cfg.as_dict(), "queries": queries, "seed": seed, "gaps": gaps, "backpressure": backpressure,
            "resets": resets, "perturb_fraction": perturb_fraction, "noise_sigma": noise_sigma, "mix": list(mix),
            "pert_file": str(pert_file), "result_path": str(result_path), "timeout_cycles": timeout_cycles,
            "model_override": dict(model_override or {}), "external_perturbations": perturbations is not None,
            "query_file": None if query_file is None else str(query_file), "mutant": mutant,
            "coverage_min": coverage_minimums(cfg, queries, resets, backpressure, given_queries=query_file is not None,
                                              external_perturbations=perturbations is not None,
                                              perturb_fraction=perturb_fraction, mix=tuple(mix)),
            "sim_timeout_ns": 10 * _sim_cycle_limit(cfg, queries, resets)}
    plan_path = work / f"plan-{seed}.json"
    plan_path.write_text(json.dumps(plan, indent=1))

    params = cfg.verilog_parameters(cb_file)
    params["NQ"] = queries
    params["PERT_FILE"] = f'"{pert_file.as_posix()}"'
    d = rtl_dir()
    build_log = work / "build.log"
    sim_log = work / f"sim-{seed}.log"
    spec = {"rtl_dir": str(d), "sources": [str(d / "hdsim_bcf.v"), str(d / "tb" / "tb_hdsim_bcf.v")],
            "includes": [str(VERILOG_HEADER.parent)], "parameters": {k: str(v) for k, v in params.items()},
            "build_dir": str(work / "sim_build"), "build_log": str(build_log), "test_dir": str(work),
            "env": {"HDSIM_COSIM_PLAN": str(plan_path)},
            "sim_log": str(sim_log), "results_xml": str(work / f"results-{seed}.xml")}
    spec_path = work / f"runner-{seed}.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    limit = 300 + 5 * queries if timeout_s is None else timeout_s
    # own session: on timeout the whole group (python, vvp) is killed by its id
    proc = subprocess.Popen([sys.executable, str(d / "run_sim.py"), str(spec_path)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise HdsimError(f"cosim: the simulation ran past its {limit:.0f} s wall-clock limit and was killed "
                         f"(log: {sim_log})") from None
    if not result_path.exists():
        tail = sim_log.read_text()[-3000:] if sim_log.exists() else (
            build_log.read_text()[-3000:] if build_log.exists() else out[-3000:])
        raise HdsimError(f"cosim: simulation failed (exit {proc.returncode}); log tail:\n{tail}")
    if not result_path.exists():
        raise HdsimError(f"cosim: the bench wrote no report; see {sim_log}")
    report = json.loads(result_path.read_text())
    report["log"] = str(sim_log)
    return report
