"""PCM crossbar: programs a weight matrix into noisy conductances and runs noisy MVMs — SPEC section 6.

Orientation: the crossbar holds ``W`` of shape ``(rows, cols)``.

* :meth:`PCMCrossbar.forward` drives the rows: ``y = x @ W``, ``(N, rows) -> (N, cols)``.
  With ``W = X^T`` (a codebook ``X`` of shape ``(M, D)``) this is the similarity ``a = X u``.
* :meth:`PCMCrossbar.backward` drives the columns: ``y = x @ W^T``, ``(N, cols) -> (N, rows)``,
  the bundling ``X^T a``. Same devices, same programming noise and drift;
  independent read noise.

Weights lie in ``[-1, 1]``. Unipolar mode (``W >= 0``): one device per weight,
target ``w * g_max``. Differential mode (any ``w < 0``, or ``differential=True``):
a pair per weight, targets ``g+ = max(w, 0) g_max`` and ``g- = max(-w, 0) g_max``;
the effective weight is ``(g+ - g-) / g_max``. Both devices of a pair get their
own noise.

One MVM, per input vector ``x`` (``docs/imc.md`` has every formula)::

    s     = max|x| if input_scaling == "abs_max" else 1        (0 -> 1)
    c_i   = clip(floor(x_i / s / d_in + 1/2), -C_in, C_in)     DAC code, d_in = dac_bound / C_in
    S_j   = sum_i c_i w_ij(t)                                   in DAC-LSB units
          + sqrt(sum_i c_i^2 r_ij(t)^2) * z_j                  read noise (exact Gaussian sum)
          + out_noise / d_in * z'_j                             output noise
    k_j   = clip(floor(S_j * P/Q + 1/2), -C_out, C_out)         ADC code, P/Q = d_in / d_out exactly
    y_j   = k_j * d_out * alpha(t) * s

``C = 2^(bits-1) - 1``; ``w(t)``, ``r(t)`` are the drifted effective weights and
the per-device read-noise std in weight units; ``alpha(t)`` the drift
compensation factor (1 when off). Without a DAC ``c = clip(x / s, ±dac_bound)``
in units of 1, without an ADC ``y = clip(S * d_in, ±adc_bound)``.

Randomness: programming noise and drift exponents from
``np.random.Generator(np.random.PCG64(seed))`` at construction
(:func:`hdsim.imc.pcm.program`, the device model shared with the fixed-point
crossbar); per-MVM noise from a CPU torch generator seeded with
``derive_seed(seed, "read")``; drift-compensation reads from generators seeded
per time point. The device state is computed in float64 on the CPU and moved
to the device, and noise draws are made on the CPU in float32, so a seed gives
the same numbers on every backend.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hdsim.codes import seeded_generator
from hdsim.errors import HdsimError
from hdsim.imc import pcm
from hdsim.imc.config import PCMNoiseConfig
from hdsim.imc.pcm import adc_format, derive_seed, save_adc_perturbations

__all__ = [
    "PCMCrossbar",
    "derive_seed",
    "quantize",
    "adc_format",
    "save_adc_perturbations",
]

_code_max = pcm.code_max


def _round_half_up(v: Tensor) -> Tensor:
    # floor(v + 1/2): ties go up (toward +inf), as the RTL's add-half-then-truncate does;
    # torch.round would send ties to even.
    return torch.floor(v + 0.5)


def quantize(x: Tensor, bits: int, bound: float) -> Tensor:
    """Symmetric signed quantizer code: ``clip(floor(x / d + 1/2), -C, C)``, ``d = bound / C``, ``C = 2^(bits-1) - 1``.

    ``2^bits - 1`` levels ``-C..C`` (one code of the two's complement range unused,
    so the range is symmetric). Dequantized value: ``code * d``.

    Shapes:
        x: any; returns: same shape, same float dtype, integral values
    """
    C = _code_max(bits)
    return torch.clamp(_round_half_up(x * (C / bound)), -C, C)


class PCMCrossbar:
    """A weight matrix programmed into PCM conductances, read with noise.

    Args:
        weights: ``(rows, cols)`` real weights in ``[-1, 1]`` (binary ``{0, 1}``
            codebooks and bipolar ``{-1, 1}`` matrices are the usual cases).
        config: a :class:`PCMNoiseConfig` or a preset name (see :data:`hdsim.imc.PRESETS`).
        seed: seed of every random draw of this crossbar.
        differential: one device pair per weight; ``None``: pairs iff some weight is negative.
        device: torch device of the conductances and the MVMs.
        dtype: ``torch.float32`` (default) or ``torch.float64``.

    Attributes:
        g_target: ``(P, rows, cols)`` target conductances in µS (``P = 2``: ``g+`` then ``g-``; ``P = 1`` unipolar).
        g_prog: ``(P, rows, cols)`` programmed conductances at ``t0``, µS.
        nu: ``(P, rows, cols)`` drift exponents.

    Raises:
        HdsimError: weights not a finite 2-D tensor in ``[-1, 1]``, negative weights
            with ``differential=False``, invalid config, unknown preset.

    Example:
        >>> xb = PCMCrossbar(torch.tensor([[1., 0.], [1., 1.]]), "ideal")
        >>> xb.forward(torch.tensor([[1., 2.]]), t_inference=20.0)
        tensor([[3., 2.]])
    """

    def __init__(self, weights: Tensor, config: PCMNoiseConfig | str = "pcm-default", *, seed: int = 0,
                 differential: bool | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.config = pcm.resolve_config(config)
        if dtype not in (torch.float32, torch.float64):
            raise HdsimError(f"dtype: expected float32 or float64, got {dtype}")
        if not isinstance(weights, Tensor):
            raise HdsimError(f"weights: expected a torch.Tensor, got {type(weights).__name__}")
        if weights.dim() != 2 or weights.shape[0] < 1 or weights.shape[1] < 1:
            raise HdsimError(f"weights: expected a non-empty 2-D (rows, cols) tensor, got shape {tuple(weights.shape)}")
        W = weights.detach().to("cpu", torch.float64)
        if not torch.isfinite(W).all():
            raise HdsimError("weights: contains NaN or infinite values")
        if W.abs().max() > 1:
            raise HdsimError(f"weights: must lie in [-1, 1], found {float(W.abs().max()):.4g}")
        has_neg = bool((W < 0).any())
        if differential is None:
            differential = has_neg
        if has_neg and not differential:
            raise HdsimError("weights: negative weights need differential=True (a device pair per weight)")
        self.seed = int(seed)
        self.device = torch.device(device)
        self.dtype = dtype
        self.differential = bool(differential)
        self.weights = W  # exact targets (CPU, float64): the ideal MVM of the perturbation export
        self.rows, self.cols = int(W.shape[0]), int(W.shape[1])

        # The device model (programming noise, drift exponents, read-noise Q) is hdsim.imc.pcm's,
        # evaluated in float64 NumPy; the tensors below are its values on the crossbar's device.
        g_t = pcm.target_conductances(W.numpy(), self.config.g_max, self.differential)
        self._g_prog, self._nu, self._q = pcm.program(self.config, g_t, self.seed)

        self.g_target = self._dev(g_t)
        self.g_prog = self._dev(self._g_prog)
        self.nu = self._dev(self._nu)
        self._cache_t: float | None = None
        self._cache: tuple[Tensor, Tensor] | None = None
        self._alpha: dict[float, float] = {}
        self._baseline: float | None = None
        self.reset_read_noise()

    # ------------------------------------------------------------------ device model

    def _dev(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype)

    def _check_time(self, t_inference: float) -> float:
        return pcm.check_time(t_inference)

    def conductances(self, t_inference: float) -> Tensor:
        """Drifted conductances ``g(t) = g_prog * (max(t, t0) / t0)^(-nu)`` in µS, no read noise.

        Shapes:
            returns: ``(P, rows, cols)``
        """
        t = self._check_time(t_inference)
        return self._dev(pcm.conductances(self.config, self._g_prog, self._nu, t))

    def read_noise_std(self, t_inference: float) -> Tensor:
        """Per-device read-noise std at ``t`` in µS (``sigma_read`` of the config docstring).

        Shapes:
            returns: ``(P, rows, cols)``
        """
        t = self._check_time(t_inference)
        return self._dev(pcm.read_noise_std(self.config, self._g_prog, self._nu, self._q, t))

    def _state(self, t: float) -> tuple[Tensor, Tensor]:
        """Effective weights ``w(t)`` and read variance ``r(t)^2`` in weight units, cached per ``t``."""
        if self._cache_t != t or self._cache is None:
            w, r2 = pcm.effective_state(self.config, self._g_prog, self._nu, self._q, t)
            self._cache = (self._dev(w), self._dev(r2))
            self._cache_t = t
        return self._cache

    def effective_weights(self, t_inference: float) -> Tensor:
        """``(g+(t) - g-(t)) / g_max`` (or ``g(t) / g_max``): what an MVM sees before read noise.

        Shapes:
            returns: ``(rows, cols)``
        """
        return self._state(self._check_time(t_inference))[0].clone()

    def reset_read_noise(self, seed: int | None = None) -> None:
        """Restart the per-MVM noise stream (from ``derive_seed(seed or self.seed, "read")``)."""
        self._read_gen = seeded_generator(derive_seed(self.seed if seed is None else seed, "read"))

    # ------------------------------------------------------------------ MVM pipeline

    def _inputs(self, x: Tensor, transpose: bool) -> tuple[Tensor, bool]:
        n_in = self.cols if transpose else self.rows
        if not isinstance(x, Tensor):
            raise HdsimError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        shape = tuple(x.shape)
        single = x.dim() == 1
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != n_in:
            side = "cols" if transpose else "rows"
            raise HdsimError(f"x: expected shape (N, {n_in}) or ({n_in},) (vectors over the {side}), got {shape}")
        if x.dtype == torch.bool or x.is_complex():
            raise HdsimError(f"x: expected a real tensor, got dtype {x.dtype}")
        x = x.to(self.device, self.dtype)
        if not torch.isfinite(x).all():
            raise HdsimError("x: contains NaN or infinite values")
        return x, single

    def _dac(self, x: Tensor) -> tuple[Tensor, Tensor, float]:
        """Input scale ``s`` (N, 1), DAC output in units ``unit_in`` (N, n_in), and ``unit_in``."""
        cfg = self.config
        if cfg.input_scaling == "abs_max":
            s = x.abs().amax(dim=1, keepdim=True)
            s = torch.where(s > 0, s, torch.ones_like(s))
            x = x / s
        else:
            s = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        if cfg.dac_bits is None:
            return s, x.clamp(-cfg.dac_bound, cfg.dac_bound), 1.0
        return s, quantize(x, cfg.dac_bits, cfg.dac_bound), cfg.dac_bound / _code_max(cfg.dac_bits)

    def _adc(self, S: Tensor) -> Tensor:
        """ADC code of pre-ADC sums ``S`` (in input units): ``clip(floor((2 S P + Q) / (2 Q)), ±C)``."""
        cfg = self.config
        C = _code_max(cfg.adc_bits)  # type: ignore[arg-type]
        r = pcm.adc_ratio(cfg)
        P, Q = float(r.numerator), float(r.denominator)
        return torch.clamp(torch.floor((2.0 * P * S + Q) / (2.0 * Q)), -C, C)

    def _noisy_sum(self, c: Tensor, w: Tensor, r2: Tensor, unit_in: float, transpose: bool,
                   gen: torch.Generator) -> Tensor:
        """``S = c @ w + read noise + output noise`` in input units (one fresh draw per vector and output)."""
        cfg = self.config
        if transpose:
            w, r2 = w.T, r2.T
        S = c @ w
        shape = S.shape
        # Both draws are always made: the stream position depends only on the shapes of the calls.
        z_read = torch.randn(shape, generator=gen).to(S.device, S.dtype)
        z_out = torch.randn(shape, generator=gen).to(S.device, S.dtype)
        if cfg.read_scale > 0:
            # Sum over inputs of independent Gaussians c_i * n_ij: exactly N(0, sum_i c_i^2 r_ij^2).
            S = S + torch.sqrt((c * c) @ r2) * z_read
        if cfg.out_noise > 0:
            S = S + (cfg.out_noise / unit_in) * z_out
        return S

    def _compensation(self, t: float) -> float:
        """``alpha(t) = ref(t0) / ref(t)``, ``ref`` = mean |pre-ADC output| of an all-ones forward read.

        The reference reads (analog, before the ADC, so they never saturate) carry read
        and output noise from generators seeded by ``derive_seed(seed, "drift-ref:<t>")``:
        the factor depends only on the seed and ``t``, not on the MVMs before it.
        """
        if not self.config.drift_compensation:
            return 1.0
        if t not in self._alpha:
            if self._baseline is None:
                self._baseline = self._reference_read(self.config.t0)
            ref = self._reference_read(t)
            self._alpha[t] = self._baseline / ref if ref > 0 else 1.0
        return self._alpha[t]

    def _reference_read(self, t: float) -> float:
        ones = torch.ones(1, self.rows, dtype=self.dtype, device=self.device)
        _, c, unit_in = self._dac(ones)
        w, r2 = self._state(t)
        gen = seeded_generator(derive_seed(self.seed, f"drift-ref:{float(t).hex()}"))
        S = self._noisy_sum(c, w, r2, unit_in, False, gen)
        return float((S * unit_in).abs().mean())

    def _run(self, x: Tensor, t_inference: float, transpose: bool) -> tuple[Tensor, Tensor, float, Tensor | None, bool]:
        t = self._check_time(t_inference)
        x, single = self._inputs(x, transpose)
        s, c, unit_in = self._dac(x)
        w, r2 = self._state(t)
        S = self._noisy_sum(c, w, r2, unit_in, transpose, self._read_gen)
        alpha = self._compensation(t)
        codes = self._adc(S) if self.config.adc_bits is not None else None
        return s, S * unit_in if codes is None else S, alpha, codes, single

    def mvm(self, x: Tensor, t_inference: float, *, transpose: bool = False) -> Tensor:
        """Noisy ``x @ W`` (or ``x @ W^T`` with ``transpose``) at ``t_inference`` seconds after programming.

        Each call draws fresh read and output noise (one MVM per input vector).

        Shapes:
            x: ``(N, rows)`` (``(N, cols)`` when transposed) or a single vector
            returns: ``(N, cols)`` (``(N, rows)``), or ``(cols,)`` for a single vector; crossbar dtype
        Raises:
            HdsimError: bad shape, NaN/inf input, negative time.
        """
        cfg = self.config
        s, S, alpha, codes, single = self._run(x, t_inference, transpose)
        if codes is None:
            y = S.clamp(-cfg.adc_bound, cfg.adc_bound)
        else:
            y = codes * (cfg.adc_bound / _code_max(cfg.adc_bits))  # type: ignore[arg-type]
        y = y * alpha * s
        return y[0] if single else y

    def forward(self, x: Tensor, t_inference: float) -> Tensor:
        """``x @ W`` through the crossbar (similarity ``a = X u`` when ``W = X^T``). See :meth:`mvm`."""
        return self.mvm(x, t_inference)

    def backward(self, x: Tensor, t_inference: float) -> Tensor:
        """``x @ W^T`` through the crossbar (bundling ``X^T a`` when ``W = X^T``). See :meth:`mvm`."""
        return self.mvm(x, t_inference, transpose=True)

    __call__ = forward

    # ------------------------------------------------------------------ ADC codes and perturbations

    def _require_adc(self) -> None:
        if self.config.adc_bits is None:
            raise HdsimError("adc_bits: ADC codes need a configuration with an ADC (adc_bits is None)")

    def adc_codes(self, x: Tensor, t_inference: float, *, transpose: bool = False) -> Tensor:
        """ADC codes of one noisy MVM, as delivered to the digital side.

        ``k = clip(round_half_up(S P / Q), ±C)``; with drift compensation the digital
        side rescales: ``round_half_up(alpha(t) * k)`` (not clipped: a post-ADC word).
        Input scaling (``abs_max``) is not applied to the codes (digital, after).

        Shapes:
            returns: int64 ``(N, cols)`` (``(N, rows)`` when transposed)
        """
        self._require_adc()
        _, _, alpha, codes, single = self._run(x, t_inference, transpose)
        assert codes is not None
        if alpha != 1.0:
            codes = _round_half_up(codes * alpha)
        out = codes.to(torch.int64)
        return out[0] if single else out

    def ideal_adc_codes(self, x: Tensor, *, transpose: bool = False) -> Tensor:
        """ADC codes of the noise-free MVM on the target weights ``W`` (exact for integer weights).

        Same DAC, input scaling and ADC as :meth:`adc_codes`; no programming noise,
        drift, read or output noise. Computed in float64 on the CPU: for weights in
        ``{-1, 0, 1}`` the column sums are integers and the code is exact.

        Shapes:
            returns: int64 ``(N, cols)`` (``(N, rows)`` when transposed)
        """
        self._require_adc()
        x, single = self._inputs(x, transpose)
        _, c, _ = self._dac(x)
        W = self.weights.T if transpose else self.weights
        S = c.to("cpu", torch.float64) @ W
        out = self._adc(S).to(torch.int64)
        return out[0] if single else out

    def adc_perturbations(self, x: Tensor, t_inference: float, *, transpose: bool = False) -> Tensor:
        """Integer noise at the ADC output: ``adc_codes(x, t) - ideal_adc_codes(x)``.

        An RTL bench or the fixed-point model adds these to its ideal ADC codes to
        replay this noise realization. Export with :func:`save_adc_perturbations`;
        the code format is :func:`adc_format`.

        Shapes:
            returns: int64 ``(N, cols)`` (``(N, rows)`` when transposed)
        """
        noisy = self.adc_codes(x, t_inference, transpose=transpose).cpu()
        return noisy - self.ideal_adc_codes(x, transpose=transpose)
