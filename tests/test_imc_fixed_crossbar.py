"""The fixed-point PCM crossbar (hdsim.imc.fixed_crossbar): NumPy == torch adapter == numba bit for bit,
batch independence, the counter-based Gaussian, the integer grid's bounds, and decodes on it."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from hdsim.codes import random_codebooks
from hdsim.errors import HdsimError
from hdsim.factorizers.bcf import BCFConfig
from hdsim.fixed import FixedBCF, FixedWidths
from hdsim.hashing import counter_bits, mix32, seed_key
from hdsim.imc import (
    FixedPointCrossbar,
    FixedPointPerturbation,
    PCMCrossbar,
    ReplayPerturbation,
    derive_seed,
    get_preset,
    preset_names,
)
from hdsim.imc import fixed_crossbar as fx
from hdsim.queries import make_queries

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")

try:
    from hdsim.imc import _fixed_crossbar_kernel as kernel
except ImportError:  # numba is an optional dependency (the export extra)
    kernel = None
needs_numba = pytest.mark.skipif(kernel is None, reason="numba not installed")

NOISY_ANALOG = get_preset("pcm-default").replace(adc_bits=None, adc_bound=math.inf)  # DAC, no ADC
NO_DAC = get_preset("pcm-chip").replace(dac_bits=None, dac_bound=math.inf)  # ADC, inputs on the 2^-Wu grid
CONFIGS = [*preset_names(), "analog", "no-dac"]


def _config(name):
    return {"analog": NOISY_ANALOG, "no-dac": NO_DAC}.get(name, name)


def _problem(F=2, M=(10, 13, 7), B=4, L=16, seed=0):
    cb = random_codebooks(F=F, M=M[:F], D=B * L, B=B, seed=seed)
    return cb, [X.numpy() for X in cb.indices]


def _words(rng, k, B, L, Wu):
    """Random u words of every magnitude: full scale, shifted down, sparse, all zero, one-hot."""
    u = rng.integers(0, 1 << Wu, (k, B, L))
    u >>= rng.integers(0, Wu, (k, 1, 1))  # exercise the power-of-two shift e
    u[rng.random((k, B, L)) < 0.3] = 0
    u[0] = 0
    u[1] = 0
    u[1, :, 0] = (1 << Wu) - 1
    return u.astype(np.int64)


def _oracle_reading(xb: FixedPointCrossbar, iteration: int, f: int, qid: int, u: np.ndarray) -> list[int]:
    """The module docstring's steps 1-6, written again with Python ints, Fractions and floats
    (IEEE doubles, ``math.sqrt`` correctly rounded) from the grid arrays: an independent oracle."""
    W, R2, M, keys, alpha, ip, fp = xb.kernel_args()
    cfg, Wu = xb.config, xb.Wu
    flat = [int(v) for v in u.reshape(-1)]
    top = max(flat)
    e = Wu - top.bit_length() if top > 0 else 0
    if cfg.dac_bits is not None:
        C_in = (1 << (cfg.dac_bits - 1)) - 1
        c = [min(math.floor(float(Fraction(v << e, 1 << Wu)) * (C_in / cfg.dac_bound) + 0.5), C_in) for v in flat]
        s_scale, r_scale = 2.0 ** -xb.Kw, 2.0 ** -xb.Kr
        unit = cfg.dac_bound / C_in
    else:
        c = [min(v << e, math.floor(min(cfg.dac_bound, 1.0) * 2 ** Wu)) for v in flat]
        s_scale, r_scale = 2.0 ** -(xb.Kw + Wu), 2.0 ** -(xb.Kr + 2 * Wu)
        unit = 1.0
    h = mix32(mix32(int(keys[f]) ^ qid) ^ iteration)
    out = []
    for m in range(int(M[f])):
        S_int = sum(ci * int(w) for ci, w in zip(c, W[f, :, m]))
        R_int = sum(ci * ci * int(r) for ci, r in zip(c, R2[f, :, m]))
        assert S_int < 2 ** 53 and R_int < 2 ** 53
        noisy = cfg.read_scale > 0 or cfg.out_noise > 0
        words = [mix32(h ^ (24 * m + j)) >> 8 for j in range(24)] if noisy else None
        z = [float(Fraction(sum(words[i:i + 12]) * 2 + 12 - 12 * 2 ** 24, 2 ** 25)) if noisy else 0.0
             for i in (0, 12)]
        S = S_int * s_scale + math.sqrt(R_int * r_scale) * z[0] + (cfg.out_noise / unit) * z[1]
        if cfg.adc_bits is not None:
            C = (1 << (cfg.adc_bits - 1)) - 1
            d_in = Fraction(1) if cfg.dac_bits is None else Fraction(cfg.dac_bound).limit_denominator(1 << 20) / C_in
            d_out = Fraction(cfg.adc_bound).limit_denominator(1 << 20) / C
            P, Q = (d_in / d_out).numerator, (d_in / d_out).denominator  # ADC codes per unit of S
            k = min(max(math.floor((2.0 * P * S + Q) / (2.0 * Q)), -C), C)
            kc = math.floor(float(alpha[f]) * k + 0.5)
            out.append(math.floor(kc * d_out * 2 ** (Wu - e) + Fraction(1, 2)))
        else:
            y = min(max(S * unit, -cfg.adc_bound), cfg.adc_bound) * float(alpha[f])
            out.append(math.floor(y * 2.0 ** (Wu - e) + 0.5))
    return out


# ---------------------------------------------------------------- one definition, three callers

@pytest.mark.parametrize("comp", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_numpy_torch_numba_and_oracle_agree_bit_for_bit(name, comp):
    cb, X = _problem(F=3)
    rng = np.random.default_rng(2 * CONFIGS.index(name) + comp)
    for Wu, t in ((8, 3600.0), (12, 20.0)):
        xb = FixedPointCrossbar(X, cb.L, Wu, _config(name), t=t, seed=5, drift_compensation=comp)
        adapter = FixedPointPerturbation(cb, FixedWidths(unbound=Wu, recip_guard=max(10, Wu)), _config(name),
                                         t=t, seed=5, drift_compensation=comp)
        for f in range(cb.F):
            k = 120
            u = _words(rng, k, cb.B, cb.L, Wu)
            ids = rng.integers(0, 2**32, k)
            it = int(rng.integers(1, 200))
            a = xb.exact_similarity(f, u)
            p = xb.perturbation(it, f, ids, u, a)
            assert p.dtype == np.int64 and p.shape == (k, cb.sizes[f])
            p_torch = adapter(it, f, torch.from_numpy(ids), torch.from_numpy(u), torch.from_numpy(a))
            assert p_torch.dtype == torch.long and np.array_equal(p_torch.numpy(), p)
            for q in (0, 1, 2, k - 1):  # the independent oracle, a few queries
                assert _oracle_reading(xb, it, f, int(ids[q]), u[q]) == (p[q] + a[q]).tolist(), (q, Wu)
            if kernel is not None:
                args = xb.kernel_args()
                # the pre-ADC floats first: a last-bit difference there rarely moves an ADC code
                S, e = xb.pre_adc(it, f, ids, u)
                S_k, e_k = kernel.pre_adc_batch(u, f, ids, it, *args)
                assert np.array_equal(S_k.view(np.int64), S.view(np.int64)) and np.array_equal(e_k, e)
                assert np.array_equal(kernel.perturbation_batch(u, a, f, ids, it, *args), p)
                u32, a32 = u.astype(np.int32), a.astype(np.int32)  # the compiled decoder's int32 words
                assert np.array_equal(kernel.perturbation_batch(u32, a32, f, ids, it, *args), p)
        if name not in ("ideal", "ideal-periphery"):
            assert (p != 0).mean() > 0.5  # real noise


@needs_numba
def test_kernel_single_query_call_and_mix32():
    cb, X = _problem()
    xb = FixedPointCrossbar(X, cb.L, 8, "pcm-chip", t=1e5, seed=1, drift_compensation=True)
    u = _words(np.random.default_rng(0), 6, cb.B, cb.L, 8)
    a = xb.exact_similarity(1, u)
    want = xb.perturbation(4, 1, np.arange(6) + 10, u, a)
    p = np.full(cb.sizes[1] + 3, -7, np.int64)  # longer than M_f: the tail is untouched
    for n in range(6):
        kernel.crossbar_perturbation(u[n], a[n], 1, n + 10, 4, *xb.kernel_args(), p)
        assert np.array_equal(p[:cb.sizes[1]], want[n]) and (p[cb.sizes[1]:] == -7).all()
    h = np.random.default_rng(1).integers(0, 2**32, 2000)
    assert [kernel.mix32(int(v)) for v in h] == [mix32(int(v)) for v in h]


# ---------------------------------------------------------------- batch independence, the ideal crossbar

@pytest.mark.parametrize("name", ["pcm-chip", "pcm-default"])
def test_a_querys_perturbation_does_not_depend_on_its_batch(name):
    cb, X = _problem()
    xb = FixedPointCrossbar(X, cb.L, 8, name, t=3600.0, seed=3)
    rng = np.random.default_rng(2)
    u = _words(rng, 40, cb.B, cb.L, 8)
    ids = rng.permutation(1000)[:40]
    full = xb.perturbation(6, 0, ids, u)
    alone = np.concatenate([xb.perturbation(6, 0, ids[i:i + 1], u[i:i + 1]) for i in range(40)])
    assert np.array_equal(full, alone)
    perm = rng.permutation(40)
    assert np.array_equal(xb.perturbation(6, 0, ids[perm], u[perm]), full[perm])
    both = np.concatenate([ids[:5], ids[:5]])  # the same query twice in one batch: the same numbers
    assert np.array_equal(xb.perturbation(6, 0, both, np.concatenate([u[:5], u[:5]])), np.tile(full[:5], (2, 1)))
    # other keys give other noise: the query id, the iteration, the factor's key and the seed all matter
    assert not np.array_equal(xb.perturbation(6, 0, ids + 1, u), full)
    assert not np.array_equal(xb.perturbation(7, 0, ids, u), full)
    other = FixedPointCrossbar(X, cb.L, 8, name, t=3600.0, seed=4)
    assert not np.array_equal(other.perturbation(6, 0, ids, u), full)
    # a rebuilt crossbar gives the same numbers (nothing sequential in it)
    assert np.array_equal(FixedPointCrossbar(X, cb.L, 8, name, t=3600.0, seed=3).perturbation(6, 0, ids, u), full)


@pytest.mark.parametrize("Wu", [2, 8, 19, 30])
def test_the_ideal_crossbar_returns_zero_at_every_width(Wu):
    cb, X = _problem()
    xb = FixedPointCrossbar(X, cb.L, Wu, "ideal", t=1e6, seed=0, drift_compensation=True)
    u = _words(np.random.default_rng(Wu), 50, cb.B, cb.L, Wu)
    for f in range(cb.F):
        assert not xb.perturbation(3, f, np.arange(50), u).any()
    if kernel is not None:
        a = xb.exact_similarity(0, u)
        assert not kernel.perturbation_batch(u, a, 0, np.arange(50), 3, *xb.kernel_args()).any()


# ---------------------------------------------------------------- the Gaussian and the noise it makes

def test_irwin_hall_gaussian_moments_support_and_exact_value():
    words = counter_bits(seed_key(11), np.arange(20_000, dtype=np.int64), 3, 24) >> 8
    z = np.concatenate([fx.gaussian(words[:, :12].sum(1)), fx.gaussian(words[:, 12:].sum(1))])
    n = z.size
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert z.std() == pytest.approx(1.0, abs=0.015)
    assert ((z - z.mean()) ** 4).mean() / z.var() ** 2 == pytest.approx(2.9, abs=0.07)  # Irwin-Hall(12): 3 - 1/10
    assert np.abs(z).max() < 6.0 and np.abs(z).max() > 3.5
    # exact: (sum_j (U_j + 1/2) - 6 2^24) / 2^24, reproducible
    for row in words[:50]:
        want = Fraction(sum(int(w) for w in row[:12]) * 2 + 12, 2) - 6 * 2**24
        assert fx.gaussian(row[:12].sum()) == want / 2**24
    assert np.array_equal(counter_bits(seed_key(11), np.arange(20_000, dtype=np.int64), 3, 24) >> 8, words)
    assert (fx.gaussian(0), fx.gaussian(12 * (2**24 - 1))) == (-6 + 2.0**-24 * 0.5 * 12, 6 - 2.0**-24 * 0.5 * 12)


def test_noise_of_a_reading_matches_the_device_model():
    """Mean and std of a noisy analog reading over many query ids against PCMCrossbar's float64
    device state (the same programming draws: an independent route to w(t) and r(t))."""
    cb, X = _problem(F=1, M=(6,), L=32)
    t, Wu = 3600.0, 10
    xb = FixedPointCrossbar(X, cb.L, Wu, NOISY_ANALOG, t=t, seed=9)
    ref = PCMCrossbar(torch.from_numpy(fx.onehot_weights(X[0], cb.L)), NOISY_ANALOG,
                      seed=derive_seed(9, "factor0"), dtype=torch.float64)
    w = ref.effective_weights(t).numpy()
    r2 = ((ref.read_noise_std(t) / NOISY_ANALOG.g_max) ** 2).sum(0).numpy()
    W, R2 = xb.kernel_args()[:2]
    assert np.abs(W[0] * 2.0 ** -xb.Kw - w).max() <= 2.0 ** -(xb.Kw + 1)  # the grid: half a step
    assert np.abs(R2[0] * 2.0 ** -xb.Kr - r2).max() <= 2.0 ** -(xb.Kr + 1)
    assert xb.Kw == fx.WEIGHT_GRID_BITS
    n = 6000
    row = np.random.default_rng(3).integers(0, 1 << (Wu - 2), (cb.B, cb.L))  # top < 2^(Wu-2): e = 2
    row[0, 0] = (1 << (Wu - 2)) - 1
    u = np.tile(row, (n, 1, 1))
    reading = xb.reading(1, 0, np.arange(n), u).astype(np.float64)
    top = int(u[0].max())
    e = Wu - top.bit_length()
    c = np.minimum(np.floor((u[0].reshape(-1) << e) * 2.0 ** -Wu * 63 + 0.5), 63)
    lsb = 2.0 ** (Wu - e) / 63  # one DAC-LSB of column sum in a LSBs
    mean = c @ w * lsb
    std = np.sqrt(((c * c) @ r2 + (NOISY_ANALOG.out_noise * 63) ** 2) * lsb**2 + 1 / 12)  # + final rounding
    assert e == 2 and std.min() > 10  # far above the rounding
    assert np.abs(reading.mean(0) - mean).max() < 5 * std.max() / math.sqrt(n) + 0.5
    assert reading.std(0) == pytest.approx(std, rel=0.05)


def test_drift_compensation_factor():
    cb, X = _problem()
    at_t0 = FixedPointCrossbar(X, cb.L, 8, "pcm-chip", t=20.0, seed=2, drift_compensation=True)
    assert at_t0.alpha.tolist() == [1.0, 1.0]  # the same reference read twice
    late = FixedPointCrossbar(X, cb.L, 8, "pcm-chip", t=3e7, seed=2, drift_compensation=True)
    # nu ~ |N(0.043, 0.009)|: the gain after a year is about (1.5e6)^-0.043 = 0.54
    assert late.alpha == pytest.approx(np.full(2, (3e7 / 20.0) ** 0.043), rel=0.08)
    again = FixedPointCrossbar(X, cb.L, 8, "pcm-chip", t=3e7, seed=2, drift_compensation=True)
    assert np.array_equal(again.alpha, late.alpha)
    plain = FixedPointCrossbar(X, cb.L, 8, "pcm-chip", t=3e7, seed=2)
    assert plain.alpha.tolist() == [1.0, 1.0]
    # a matching codevector reads ~0.54 of its exact similarity without, ~1 with compensation
    # (query n matches codevector n mod M: the mean is over every column's devices)
    n, M = 400, cb.sizes[0]
    match = np.arange(n) % M
    u = np.zeros((n, cb.B, cb.L), np.int64)
    u[np.arange(n)[:, None], np.arange(cb.B)[None, :], X[0][match]] = 200
    a = late.exact_similarity(0, u)[np.arange(n), match]
    assert (plain.reading(1, 0, np.arange(n), u)[np.arange(n), match] / a).mean() == pytest.approx(0.54, abs=0.08)
    assert (late.reading(1, 0, np.arange(n), u)[np.arange(n), match] / a).mean() == pytest.approx(1.0, abs=0.1)


# ---------------------------------------------------------------- the integer grid: bounds and errors

@pytest.mark.parametrize("name", CONFIGS)
def test_grid_sums_stay_exact_at_the_widest_unbound(name):
    cb, X = _problem(B=8, L=64, M=(40, 40))
    Wu = fx.MAX_UNBOUND
    if name == "no-dac":  # no DAC with read noise: c^2 up to 2^60 leaves no read-variance grid at Wu = 30
        with pytest.raises(HdsimError, match="^widths.unbound:.*variance grid"):
            FixedPointCrossbar(X, cb.L, Wu, NO_DAC, t=1e5)
        Wu = 12
    xb = FixedPointCrossbar(X, cb.L, Wu, _config(name), t=1e5, seed=1, drift_compensation=True,
                            noise_scale=1.0 if name == "no-dac" else 3.0)
    W, R2, M, keys, alpha, ip, fp = xb.kernel_args()
    cmax = int(ip[fx.I_CMAX])
    assert cmax * int(W.sum(axis=1).max()) < 2**53 and cmax**2 * int(R2.sum(axis=1).max()) < 2**53
    assert fx.MIN_GRID_BITS <= xb.Kw <= fx.WEIGHT_GRID_BITS and fx.MIN_GRID_BITS <= xb.Kr <= fx.VARIANCE_GRID_BITS
    assert not any(arr.flags.writeable for arr in (W, R2, M, keys, alpha, ip, fp))
    u = np.full((3, cb.B, cb.L), (1 << Wu) - 1, np.int64)  # full scale everywhere
    p = xb.perturbation(1, 0, np.arange(3), u)
    if kernel is not None:
        assert np.array_equal(kernel.perturbation_batch(u, xb.exact_similarity(0, u), 0, np.arange(3), 1, *xb.kernel_args()), p)


def test_configurations_that_would_overflow_are_refused():
    cb, X = _problem()
    with pytest.raises(HdsimError, match="^preset:.*variance grid"):
        FixedPointCrossbar(X, cb.L, 8, "pcm-default", noise_scale=1e6)
    wide_adc = get_preset("pcm-default").replace(adc_bits=24, adc_bound=1e6 + 1 / 3)
    with pytest.raises(HdsimError, match="^widths.unbound:.*overflow int64"):
        FixedPointCrossbar(X, cb.L, 30, wide_adc)
    FixedPointCrossbar(X, cb.L, 8, wide_adc)  # fine at a narrow unbound
    with pytest.raises(HdsimError, match="^input_scaling:"):
        FixedPointCrossbar(X, cb.L, 8, get_preset("pcm-default").replace(input_scaling="abs_max"))
    for bad, name in ((dict(Wu=31), "widths.unbound"), (dict(Wu=1), "widths.unbound"), (dict(t=-1.0), "t"),
                      (dict(seed=1.5), "seed"), (dict(preset="nope"), "preset"), (dict(noise_scale=-1), "noise_scale")):
        kw = dict(Wu=8) | bad
        with pytest.raises(HdsimError, match=f"^{name}:"):
            FixedPointCrossbar(X, cb.L, **kw)
    for indices in ([], X[0], [X[0], X[1][:, :2]], [X[0] + cb.L]):
        with pytest.raises(HdsimError, match="^codebooks:"):
            FixedPointCrossbar(indices, cb.L, 8)
    xb = FixedPointCrossbar(X, cb.L, 8)
    u = np.zeros((2, cb.B, cb.L), np.int64)
    with pytest.raises(HdsimError, match="^u:"):
        xb.perturbation(1, 0, np.arange(2), u + 256)
    with pytest.raises(HdsimError, match="^u:"):
        xb.perturbation(1, 0, np.arange(2), u[:, :, :3])
    with pytest.raises(HdsimError, match="^query_ids:"):
        xb.perturbation(1, 0, np.arange(3), u)
    with pytest.raises(HdsimError, match="^factor:"):
        xb.perturbation(1, 2, np.arange(2), u)
    with pytest.raises(HdsimError, match="^perturb:"):
        xb.perturbation(1, 0, np.arange(2), u, np.ones((2, cb.sizes[0]), np.int64))


# ---------------------------------------------------------------- decodes on the crossbar

def test_fixed_bcf_decode_on_the_crossbar_converges_and_is_batch_independent(tmp_path):
    cb = random_codebooks(F=2, M=64, D=512, B=4, seed=0)
    qs = make_queries(cb, 48, seed=1)
    model = FixedBCF(cb, BCFConfig(similarity="dot", T=0.4, Tc=0.75 * cb.B, max_iter=40), FixedWidths())
    plain = model.factorize(qs.queries)
    pert = FixedPointPerturbation(cb, FixedWidths(), "pcm-default", t=20.0, seed=2)
    res = model.factorize(qs.queries, perturb=pert)
    # measured: 100% (pcm-default, t = 20 s; pcm-chip: ~95%, docs/imc.md)
    assert res.converged.float().mean() >= 0.9 and res.accuracy(qs.factors) >= 0.9
    assert not torch.equal(res.iterations, plain.iterations) or (pert.records()[:, 3:] != 0).any()
    # decoded in batches of 5 (other batch compositions at every iteration): the same decode
    small = model.factorize(qs.queries, batch_size=5, perturb=FixedPointPerturbation(
        cb, FixedWidths(), "pcm-default", t=20.0, seed=2))
    for name in ("indices", "iterations", "converged", "max_similarity"):
        assert torch.equal(getattr(res, name), getattr(small, name)), name
    # and the records replay it
    replay = model.factorize(qs.queries, perturb=ReplayPerturbation(pert.save(tmp_path / "p")))
    assert torch.equal(replay.indices, res.indices) and torch.equal(replay.iterations, res.iterations)
    pert.reset()
    assert len(pert.records()) == 0
    again = model.factorize(qs.queries, perturb=pert)
    assert torch.equal(again.iterations, res.iterations)


def test_torch_free_import_and_perturbation():
    code = (
        "import sys, numpy as np\n"
        "import hdsim.imc\n"
        "from hdsim.imc import FixedPointCrossbar, PerturbationLog, preset_names, imc_config, adc_format\n"
        "X = [np.array([[0, 1, 2], [3, 0, 1]]), np.array([[1, 1, 1], [2, 2, 2], [0, 3, 1]])]\n"
        "xb = FixedPointCrossbar(X, 4, 8, 'pcm-chip', t=3600.0, seed=1, drift_compensation=True)\n"
        "u = np.random.default_rng(0).integers(0, 256, (5, 3, 4))\n"
        "p = xb.perturbation(2, 1, np.arange(5), u)\n"
        "log = PerturbationLog(xb.sizes); log.add(2, 1, np.arange(5), p)\n"
        "assert log.table(5, 3).shape == (5, 3, 2, 3) and len(preset_names()) >= 4\n"
        "try:\n"
        "    from hdsim.imc._fixed_crossbar_kernel import perturbation_batch\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    a = xb.exact_similarity(1, u)\n"
        "    assert (perturbation_batch(u, a, 1, np.arange(5), 2, *xb.kernel_args()) == p).all()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
