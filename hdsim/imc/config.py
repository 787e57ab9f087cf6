"""PCM crossbar noise configuration and named presets — SPEC section 6.

Every constant names its source. "Public PCM model" is the statistical model
of phase-change-memory devices fitted on about one million IBM PCM devices
(Nandakumar et al., IEDM 2019; Joshi et al., Nature Communications 11, 2473,
2020), the one aihwkit ships as ``PCMLikeNoiseModel``; SPEC section 6 restates
its formulas. Units: conductances in µS, times in seconds, MVM inputs and
outputs in normalized units where one fully-on device (``g_max``) driven by a
full-scale input (``1``) contributes ``1`` to the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

from hdsim.errors import HdsimError

__all__ = ["PCMNoiseConfig", "PRESETS", "get_preset", "preset_names", "imc_config"]

ProgModel = Literal["polynomial", "relative"]
DriftModel = Literal["pcm", "gaussian"]
ReadModel = Literal["1/f", "relative"]
InputScaling = Literal["none", "abs_max"]


@dataclass(frozen=True)
class PCMNoiseConfig:
    """Noise and periphery constants of a PCM crossbar (formulas in ``docs/imc.md``).

    Programming (once, at programming time; ``g_t`` the target, ``g' = g_t / g_max``)::

        polynomial: sigma_prog = (c0 + c1 g' + c2 g'^2) * g_max / prog_g_ref    [µS]
        relative:   sigma_prog = prog_rel_std * g_t                              [µS]
        g_prog = max(0, g_t + prog_scale * sigma_prog * z)

    Drift (exponent ``nu`` per device, once at programming)::

        pcm:      mu = clip(a_mu ln g'' + b_mu, *drift_mean_clip),  g'' = max(g', 1e-7)
                  sd = clip(a_sd ln g'' + b_sd, *drift_std_clip)
        gaussian: mu = drift_nu_mean, sd = drift_nu_std
        nu = drift_scale * |mu + sd * z|
        g(t) = g_prog * (max(t, t0) / t0)^(-nu)        (t: seconds since programming)

    Read noise (fresh per MVM, per device)::

        1/f:      sigma_read = |g(t)| * Q * sqrt(max(0, ln((t + t_read) / (2 t_read)))),
                  Q = min(q_coeff / max((g_prog / g_max)^q_exponent, q_floor), q_max)
        relative: sigma_read = read_rel_std * |g(t)|
        both multiplied by read_scale.

    Periphery: inputs through a ``dac_bits`` DAC with range ``[-dac_bound,
    dac_bound]``, outputs plus Gaussian ``out_noise`` through an ``adc_bits`` ADC
    with range ``[-adc_bound, adc_bound]``; ``None`` bits = no quantization
    (values still clipped to the bound, which may then be ``inf``).

    Attributes:
        g_max: conductance of a programmed 1, µS. 25 µS: SPEC 6 / public PCM model.
        prog_model: ``"polynomial"`` (public PCM model) or ``"relative"`` (measured chip).
        prog_coeffs: ``(c0, c1, c2)`` in µS: ``(0.26348, 1.9650, -1.1731)``, SPEC 6 / public PCM model.
        prog_g_ref: g_max the polynomial was fitted at, µS (25; SPEC 6 divides by 25).
        prog_rel_std: relative programming std for ``"relative"`` (0.23: SPEC 6 measured chip).
        prog_scale: multiplier of the programming noise (1; 0 disables it).
        t0: drift reference time, s (20 s: SPEC 6 / public PCM model).
        drift_model: ``"pcm"`` (conductance-dependent, public PCM model) or ``"gaussian"`` (chip).
        drift_mean_coeffs: ``(a_mu, b_mu) = (-0.0155, 0.0244)``: SPEC 6 / public PCM model.
        drift_mean_clip: ``(0.049, 0.1)``: SPEC 6 / public PCM model.
        drift_std_coeffs: ``(a_sd, b_sd) = (-0.0125, -0.0059)``: SPEC 6 / public PCM model.
        drift_std_clip: ``(0.008, 0.045)``: SPEC 6 / public PCM model.
        drift_nu_mean: mean ``nu`` for ``"gaussian"`` (0.043: SPEC 6 measured chip).
        drift_nu_std: std of ``nu`` for ``"gaussian"`` (0.009: SPEC 6 measured chip).
        drift_scale: multiplier of ``nu`` (1; 0 disables drift).
        drift_compensation: rescale outputs by ``reference(t0) / reference(t)``, the
            mean absolute output of an all-ones input (global drift compensation;
            SPEC 6 "optional"; off in every preset).
        read_model: ``"1/f"`` (public PCM model) or ``"relative"`` (chip).
        read_q_coeff: 0.0088 (SPEC 6 / public PCM model).
        read_q_exponent: 0.65 (SPEC 6 / public PCM model).
        read_q_floor: 1e-3, lower clip of ``g'^0.65`` (SPEC 6 / public PCM model).
        read_q_max: 0.2, upper clip of ``Q`` (SPEC 6 / public PCM model).
        t_read: 250 ns, duration of one read (SPEC 6 / public PCM model).
        read_rel_std: relative read std for ``"relative"``: 2.04 µS / 25.87 µS (SPEC 6 measured chip).
        read_scale: multiplier of the read noise (1; 0 disables it).
        dac_bits: DAC resolution, 7 bits (SPEC 6); ``None`` for no input quantization.
        dac_bound: DAC full scale, 1 (SPEC 6).
        adc_bits: ADC resolution, 9 bits (SPEC 6); ``None`` for no output quantization.
        adc_bound: ADC full scale, 12 output units (SPEC 6).
        out_noise: std of the additive Gaussian output noise, in output units
            (the unit of ``adc_bound``: one fully-on device at full-scale input):
            0.06 (SPEC 6), i.e. ``0.06 / (12 / 255) = 1.275`` ADC LSB at 9 bits.
        input_scaling: ``"none"`` (inputs clipped to the DAC range) or ``"abs_max"``
            (each input vector divided by its max ``|x|`` before the DAC and the
            output multiplied back: aihwkit's "noise management").
    """

    g_max: float = 25.0
    prog_model: ProgModel = "polynomial"
    prog_coeffs: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
    prog_g_ref: float = 25.0
    prog_rel_std: float = 0.23
    prog_scale: float = 1.0
    t0: float = 20.0
    drift_model: DriftModel = "pcm"
    drift_mean_coeffs: tuple[float, float] = (-0.0155, 0.0244)
    drift_mean_clip: tuple[float, float] = (0.049, 0.1)
    drift_std_coeffs: tuple[float, float] = (-0.0125, -0.0059)
    drift_std_clip: tuple[float, float] = (0.008, 0.045)
    drift_nu_mean: float = 0.043
    drift_nu_std: float = 0.009
    drift_scale: float = 1.0
    drift_compensation: bool = False
    read_model: ReadModel = "1/f"
    read_q_coeff: float = 0.0088
    read_q_exponent: float = 0.65
    read_q_floor: float = 1e-3
    read_q_max: float = 0.2
    t_read: float = 250e-9
    read_rel_std: float = 2.04 / 25.87
    read_scale: float = 1.0
    dac_bits: int | None = 7
    dac_bound: float = 1.0
    adc_bits: int | None = 9
    adc_bound: float = 12.0
    out_noise: float = 0.06
    input_scaling: InputScaling = "none"

    def validate(self) -> "PCMNoiseConfig":
        """Raise :class:`HdsimError` naming the first field out of range; return ``self``."""
        def finite_pos(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (math.isfinite(v) and v > 0):
                raise HdsimError(f"{name}: must be a finite number > 0, got {v!r}")

        def finite_nonneg(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (math.isfinite(v) and v >= 0):
                raise HdsimError(f"{name}: must be a finite number >= 0, got {v!r}")

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in allowed:
                raise HdsimError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {v!r}")

        def finite_tuple(name: str, n: int) -> None:
            v = getattr(self, name)
            if not isinstance(v, tuple) or len(v) != n or not all(
                    isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in v):
                raise HdsimError(f"{name}: expected a tuple of {n} finite numbers, got {v!r}")

        def clip(name: str) -> None:
            finite_tuple(name, 2)
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi):
                raise HdsimError(f"{name}: expected 0 <= low <= high, got {getattr(self, name)!r}")

        for name in ("g_max", "prog_g_ref", "t0", "t_read", "read_q_floor", "read_q_max"):
            finite_pos(name)
        for name in ("prog_rel_std", "prog_scale", "drift_nu_mean", "drift_nu_std", "drift_scale",
                     "read_q_coeff", "read_q_exponent", "read_rel_std", "read_scale", "out_noise"):
            finite_nonneg(name)
        choice("prog_model", ("polynomial", "relative"))
        choice("drift_model", ("pcm", "gaussian"))
        choice("read_model", ("1/f", "relative"))
        choice("input_scaling", ("none", "abs_max"))
        finite_tuple("prog_coeffs", 3)
        finite_tuple("drift_mean_coeffs", 2)
        finite_tuple("drift_std_coeffs", 2)
        clip("drift_mean_clip")
        clip("drift_std_clip")
        if not isinstance(self.drift_compensation, bool):
            raise HdsimError(f"drift_compensation: expected a bool, got {self.drift_compensation!r}")
        for side in ("dac", "adc"):
            bits, bound = getattr(self, f"{side}_bits"), getattr(self, f"{side}_bound")
            if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 24):
                raise HdsimError(f"{side}_bits: expected an integer in [2, 24] or None, got {bits!r}")
            if not isinstance(bound, (int, float)) or isinstance(bound, bool) or not bound > 0 \
                    or (bits is not None and not math.isfinite(bound)):
                raise HdsimError(f"{side}_bound: must be > 0 (finite when {side}_bits is set), got {bound!r}")
        return self

    def replace(self, **changes) -> "PCMNoiseConfig":
        """A validated copy with some fields changed (``dataclasses.replace`` + :meth:`validate`)."""
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise HdsimError(f"{key}: not a PCMNoiseConfig field")
        return replace(self, **changes).validate()


_NO_NOISE = dict(prog_scale=0.0, drift_scale=0.0, read_scale=0.0, out_noise=0.0)

PRESETS: dict[str, PCMNoiseConfig] = {
    # SPEC 6 defaults: public PCM model + 7-bit DAC (bound 1), 9-bit ADC (bound 12), out noise 0.06.
    "pcm-default": PCMNoiseConfig(),
    # SPEC 6 measured 256x256 PCM core: on-state 25.87 µS, programming relative std 0.23,
    # read std 2.04 µS (taken relative to the conductance: 2.04 / 25.87), nu = 0.043 ± 0.009.
    "pcm-chip": PCMNoiseConfig(
        g_max=25.87, prog_model="relative", prog_rel_std=0.23,
        drift_model="gaussian", drift_nu_mean=0.043, drift_nu_std=0.009,
        read_model="relative", read_rel_std=2.04 / 25.87),
    # Exact matrix-vector products: no device noise, no quantization, no clipping.
    "ideal": PCMNoiseConfig(**_NO_NOISE, dac_bits=None, dac_bound=math.inf,
                            adc_bits=None, adc_bound=math.inf),
    # Noise-free devices behind the SPEC 6 periphery: quantization only (ADC perturbations all 0).
    "ideal-periphery": PCMNoiseConfig(**_NO_NOISE),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> PCMNoiseConfig:
    """The preset called ``name``.

    Raises:
        HdsimError: unknown name (the message lists the valid ones).
    """
    if name not in PRESETS:
        raise HdsimError(f"preset: unknown IMC noise preset {name!r}; valid: {', '.join(preset_names())}")
    return PRESETS[name]


def imc_config(preset: str | PCMNoiseConfig, *, noise_scale: float = 1.0,
               drift_compensation: bool = False) -> PCMNoiseConfig:
    """The preset with its programming, read and output noise multiplied by ``noise_scale``
    and drift compensation set (validated).

    Raises:
        HdsimError: unknown preset, ``noise_scale`` not a finite number >= 0,
            ``drift_compensation`` not a bool.

    Example:
        >>> cfg = imc_config("pcm-default", noise_scale=2.0, drift_compensation=True)
        >>> cfg.prog_scale, cfg.read_scale, cfg.out_noise, cfg.drift_compensation
        (2.0, 2.0, 0.12, True)
    """
    if isinstance(preset, str):
        cfg = get_preset(preset)
    elif isinstance(preset, PCMNoiseConfig):
        cfg = preset
    else:
        raise HdsimError(f"preset: expected a preset name or a PCMNoiseConfig, got {type(preset).__name__}")
    if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) \
            or not math.isfinite(noise_scale) or noise_scale < 0:
        raise HdsimError(f"noise_scale: must be a finite number >= 0, got {noise_scale!r}")
    if not isinstance(drift_compensation, bool):
        raise HdsimError(f"drift_compensation: expected a bool, got {drift_compensation!r}")
    s = float(noise_scale)
    return cfg.replace(prog_scale=cfg.prog_scale * s, read_scale=cfg.read_scale * s,
                       out_noise=cfg.out_noise * s, drift_compensation=drift_compensation)
