"""The PCM device model as torch-free NumPy functions — SPEC section 6, the one definition of its formulas.

:class:`~hdsim.imc.crossbar.PCMCrossbar` (torch MVMs) and
:class:`~hdsim.imc.fixed_crossbar.FixedPointCrossbar` (the fixed-point model's
counter-based crossbar) both program and age their devices with these
functions; the formulas are in :class:`~hdsim.imc.config.PCMNoiseConfig`'s
docstring and ``docs/imc.md``. Everything here is float64 NumPy, evaluated once
per crossbar (programming) or once per inference time (drift, read-noise std):
libm functions (``log``, ``pow``) appear only here, never on a per-MVM path.

Shapes: conductance arrays are ``(P, rows, cols)`` with ``P = 1`` (unipolar) or
``P = 2`` (differential pair ``g+``, ``g-``).

Randomness: :func:`program` draws the programming-noise normals, then the
drift normals, from ``np.random.Generator(np.random.PCG64(seed))`` (fixed order,
whatever the configuration, so switching one noise source off leaves the
other draws unchanged).
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from hdsim.errors import HdsimError
from hdsim.imc.config import PCMNoiseConfig, get_preset
from hdsim.validation import check_seed

__all__ = [
    "derive_seed",
    "code_max",
    "rational",
    "adc_ratio",
    "output_lsb",
    "adc_format",
    "save_adc_perturbations",
    "check_time",
    "resolve_config",
    "target_conductances",
    "sigma_prog",
    "drift_params",
    "read_q",
    "read_time_factor",
    "program",
    "conductances",
    "read_noise_std",
    "effective_state",
]

LN_CLIP = 1e-7  # floor of g' inside ln() of the drift fit (public PCM model)


def derive_seed(seed: int, tag: str) -> int:
    """A 63-bit seed for an independent stream: the first 8 bytes of ``sha256("hdsim.imc:{seed}:{tag}")``.

    Example:
        >>> derive_seed(0, "factor0") == derive_seed(0, "factor0") != derive_seed(0, "factor1")
        True
    """
    digest = hashlib.sha256(f"hdsim.imc:{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def code_max(bits: int) -> int:
    """Largest code of a symmetric ``bits``-bit quantizer: ``C = 2^(bits-1) - 1``."""
    return (1 << (bits - 1)) - 1


def rational(v: float) -> Fraction:
    """A converter bound as a rational with a small denominator (``limit_denominator(2^20)``), so that
    the ADC of an integer DAC-code sum is exact (``floor((2 S P + Q) / (2 Q))`` on integer-valued floats)."""
    return Fraction(v).limit_denominator(1 << 20)


def adc_ratio(cfg: PCMNoiseConfig) -> Fraction:
    """``P/Q = d_in / d_out``: ADC codes per unit of the pre-ADC sum (unit: one DAC LSB, or 1 without a DAC).

    Example:
        >>> adc_ratio(get_preset("pcm-default"))  # (1/63) / (12/255)
        Fraction(85, 252)
    """
    C_out = code_max(cfg.adc_bits)  # type: ignore[arg-type]
    unit_in = rational(cfg.dac_bound) / code_max(cfg.dac_bits) if cfg.dac_bits is not None else Fraction(1)
    return unit_in * C_out / rational(cfg.adc_bound)


def output_lsb(cfg: PCMNoiseConfig) -> Fraction:
    """``d_out = adc_bound / C_out`` as an exact rational: output units per ADC code (``12/255 = 4/85``)."""
    return rational(cfg.adc_bound) / code_max(cfg.adc_bits)  # type: ignore[arg-type]


def resolve_config(config: PCMNoiseConfig | str) -> PCMNoiseConfig:
    """A preset name or a :class:`PCMNoiseConfig`, validated.

    Raises:
        HdsimError: unknown preset (``preset: ...``) or not a config (``config: ...``).
    """
    cfg = get_preset(config) if isinstance(config, str) else config
    if not isinstance(cfg, PCMNoiseConfig):
        raise HdsimError(f"config: expected a PCMNoiseConfig or a preset name, got {type(config).__name__}")
    return cfg.validate()


def adc_format(config: PCMNoiseConfig | str) -> dict:
    """How ADC codes (and the exported perturbations) are encoded.

    Returns a dict: ``bits``, ``bound``, ``code_min``/``code_max`` (``∓(2^(bits-1) - 1)``),
    ``lsb`` (output units per code, ``bound / code_max``), ``lsb_input_ratio``
    (``[P, Q]``: one DAC-code unit of column sum is ``P/Q`` ADC codes), ``rounding``,
    ``out_noise_lsb`` and ``dtype`` of the exported arrays.
    """
    cfg = resolve_config(config)
    if cfg.adc_bits is None:
        raise HdsimError("adc_bits: the configuration has no ADC (adc_bits=None): no ADC code format")
    C = code_max(cfg.adc_bits)
    ratio = adc_ratio(cfg)
    return {
        "bits": cfg.adc_bits,
        "bound": cfg.adc_bound,
        "code_min": -C,
        "code_max": C,
        "lsb": cfg.adc_bound / C,
        "lsb_input_ratio": [ratio.numerator, ratio.denominator],
        "rounding": "half-up: floor(v + 1/2)",
        "out_noise_lsb": cfg.out_noise * C / cfg.adc_bound,
        "dtype": "int32",
    }


def save_adc_perturbations(path: str | Path, perturbations) -> Path:
    """Save integer ADC perturbations as an ``int32`` ``.npy`` file (``np.load`` reads it back).

    Shapes:
        perturbations: ``(N, cols)`` (or any shape) integer, a NumPy array or a torch tensor
    """
    if hasattr(perturbations, "detach"):  # a torch tensor: the caller has torch, this module need not import it
        perturbations = perturbations.detach().cpu().numpy()
    arr = np.asarray(perturbations)
    if not np.issubdtype(arr.dtype, np.integer):
        raise HdsimError(f"perturbations: expected an integer array, got dtype {arr.dtype}")
    info = np.iinfo(np.int32)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise HdsimError("perturbations: values do not fit int32")
    path = Path(path)
    np.save(path, arr.astype(np.int32))
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def check_time(t, name: str = "t_inference") -> float:
    """A time since programming: a finite number of seconds ``>= 0``."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise HdsimError(f"{name}: must be a finite time >= 0 s (since programming), got {t!r}")
    return float(t)


# ---------------------------------------------------------------------------------- programming

def target_conductances(W: np.ndarray, g_max: float, differential: bool) -> np.ndarray:
    """Target conductances in µS: ``max(W, 0) g_max`` (and ``max(-W, 0) g_max`` for the ``g-`` device).

    Shapes:
        W: ``(rows, cols)`` float64 in ``[-1, 1]``; returns ``(P, rows, cols)``
    """
    W = np.asarray(W, dtype=np.float64)
    targets = [np.maximum(W, 0.0) * g_max] + ([np.maximum(-W, 0.0) * g_max] if differential else [])
    return np.stack(targets)


def sigma_prog(cfg: PCMNoiseConfig, g_t: np.ndarray) -> np.ndarray:
    """Programming-noise std in µS for targets ``g_t`` (µS)."""
    if cfg.prog_model == "relative":
        return cfg.prog_rel_std * g_t
    gp = g_t / cfg.g_max
    c0, c1, c2 = cfg.prog_coeffs
    return (c0 + c1 * gp + c2 * gp * gp) * (cfg.g_max / cfg.prog_g_ref)


def drift_params(cfg: PCMNoiseConfig, g_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the drift exponent for targets ``g_t`` (µS)."""
    if cfg.drift_model == "gaussian":
        return np.full_like(g_t, cfg.drift_nu_mean), np.full_like(g_t, cfg.drift_nu_std)
    # ln of the relative target conductance, as in the public PCM model's fit.
    ln_g = np.log(np.maximum(np.abs(g_t / cfg.g_max), LN_CLIP))
    a_mu, b_mu = cfg.drift_mean_coeffs
    a_sd, b_sd = cfg.drift_std_coeffs
    mu = np.clip(a_mu * ln_g + b_mu, *cfg.drift_mean_clip)
    sd = np.clip(a_sd * ln_g + b_sd, *cfg.drift_std_clip)
    return mu, sd


def read_q(cfg: PCMNoiseConfig, g_prog: np.ndarray) -> np.ndarray:
    """``Q`` of the 1/f read noise (depends on the programmed state only), or the relative read std."""
    if cfg.read_model == "relative":
        return np.full_like(g_prog, cfg.read_rel_std)
    gp = np.abs(g_prog / cfg.g_max)
    return np.minimum(cfg.read_q_coeff / np.maximum(gp ** cfg.read_q_exponent, cfg.read_q_floor), cfg.read_q_max)


def read_time_factor(cfg: PCMNoiseConfig, t: float) -> float:
    """``sqrt(max(0, ln((t + t_read) / (2 t_read))))`` for 1/f read noise, ``1`` for ``relative``."""
    if cfg.read_model == "relative":
        return 1.0  # measured per-read std: no 1/f growth with time
    # Below t = t_read the log is negative: no accumulated 1/f noise yet.
    return math.sqrt(max(0.0, math.log((t + cfg.t_read) / (2.0 * cfg.t_read))))


def program(cfg: PCMNoiseConfig, g_t: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Program targets ``g_t``: ``(g_prog, nu, q)``, each shaped like ``g_t``.

    ``g_prog = max(0, g_t + prog_scale * sigma_prog * z)``, ``nu = drift_scale * |mu + sd * z'|``,
    ``q = read_q(g_prog)``; ``z`` then ``z'`` standard normals from
    ``np.random.Generator(np.random.PCG64(seed))`` (both always drawn).

    Raises:
        HdsimError: ``seed`` not an integer in ``[0, 2^64)``.

    Example:
        >>> g_t = target_conductances(np.ones((2, 3)), 25.0, False)
        >>> g, nu, q = program(get_preset("pcm-default"), g_t, seed=1)
        >>> g.shape, bool((g >= 0).all() and (nu > 0).all())
        ((1, 2, 3), True)
        >>> bool((program(get_preset("pcm-default"), g_t, seed=1)[0] == g).all())
        True
    """
    check_seed("seed", seed, bits=64)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    z_prog = rng.standard_normal(g_t.shape)
    z_nu = rng.standard_normal(g_t.shape)
    g_prog = np.maximum(g_t + cfg.prog_scale * sigma_prog(cfg, g_t) * z_prog, 0.0)
    mu, sd = drift_params(cfg, g_t)
    nu = cfg.drift_scale * np.abs(mu + sd * z_nu)
    return g_prog, nu, read_q(cfg, g_prog)


# ---------------------------------------------------------------------------------- state at time t

def conductances(cfg: PCMNoiseConfig, g_prog: np.ndarray, nu: np.ndarray, t: float) -> np.ndarray:
    """Drifted conductances ``g(t) = g_prog * (max(t, t0) / t0)^(-nu)`` in µS (no read noise)."""
    ratio = max(t, cfg.t0) / cfg.t0
    if ratio == 1.0:
        return g_prog.copy()
    return g_prog * np.power(ratio, -nu)


def read_noise_std(cfg: PCMNoiseConfig, g_prog: np.ndarray, nu: np.ndarray, q: np.ndarray, t: float) -> np.ndarray:
    """Per-device read-noise std at ``t`` in µS: ``read_scale * |g(t)| * q * read_time_factor(t)``."""
    return _read_std(cfg, conductances(cfg, g_prog, nu, t), q, t)


def _read_std(cfg: PCMNoiseConfig, g: np.ndarray, q: np.ndarray, t: float) -> np.ndarray:
    return cfg.read_scale * np.abs(g) * q * read_time_factor(cfg, t)


def effective_state(cfg: PCMNoiseConfig, g_prog: np.ndarray, nu: np.ndarray, q: np.ndarray,
                    t: float) -> tuple[np.ndarray, np.ndarray]:
    """What an MVM at ``t`` sees, in weight units: ``w(t)`` and the read variance ``r(t)^2``.

    ``w = (g+(t) - g-(t)) / g_max`` (or ``g(t) / g_max``); ``r^2 = sum over the pair of
    (sigma_read / g_max)^2`` (both devices add their variances).

    Shapes:
        g_prog, nu, q: ``(P, rows, cols)``; returns two ``(rows, cols)`` float64 arrays
    """
    g = conductances(cfg, g_prog, nu, t)
    w = g[0] - g[1] if g.shape[0] == 2 else g[0]
    r = _read_std(cfg, g, q, t) / cfg.g_max
    return w / cfg.g_max, (r * r).sum(axis=0)
