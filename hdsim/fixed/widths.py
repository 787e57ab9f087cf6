"""Word widths of the fixed-point BCF datapath (SPEC section 5).

:class:`FixedWidths` holds the four free choices a hardware designer sweeps;
:class:`Datapath` derives every other signal's width for one configuration
(B, L, M, F, similarity, T, Tc, A) and checks that they can hold it. The table
of every signal (``Datapath.table()``) is what ``docs/fixed_point.md`` lists.

Number formats: ``Qm.n`` is an unsigned fixed-point number with ``m`` integer
and ``n`` fractional bits, stored in ``m + n`` bits; its value is the integer
divided by ``2^n``. GSBC entries (query, estimates, unbinding results) are
``Q0.n``: values in ``[0, 1)``, so an exact 1.0 saturates to ``1 - 2^-n``
(this buys one bit of resolution over ``Q1.(n-1)`` for the same width; a
one-hot block then reads ``1 - 2^-n``, still far above ``Tc``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from hdsim.errors import HdsimError
from hdsim.fixed.rounding import quantize_unsigned

__all__ = ["FixedWidths", "Datapath", "QUERY_PRESCALE_BITS"]

# Per-width cap: keeps every derived signal inside int64, the container of every datapath word
# (the unbinding accumulator needs max(Wq, Wu) + Wx <= 60 bits, the normalization product <= 62).
MAX_WORD = 30
INT64_BITS = 63  # magnitude bits of a signed 64-bit integer
# Query quantization first floors every entry to an integer of QUERY_PRESCALE_BITS bits relative to
# its block's largest power of two; the block sum is then an exact integer, so every implementation
# (the model, the compiled decoder, device code) gets the same words whatever its summation order.
QUERY_PRESCALE_BITS = 31  # v < 2^31; with Wq <= 30 every intermediate stays below 2^63


@dataclass(frozen=True)
class FixedWidths:
    """The designer's width choices, in bits.

    Attributes:
        query: ``Wq``, query entries ``Q0.Wq``.
        estimate: ``Wx``, estimate entries ``Q0.Wx``.
        unbound: ``Wu``, unbinding results and ``linf`` similarities ``Q0.Wu``
            (``dot`` similarities are ``Q(ceil log2 B).Wu``).
        recip_guard: ``G``, guard bits of the normalization reciprocal
            ``R = floor(2^(p+G) / S)``; the relative error of ``R`` is below ``2^-G``.
    """

    query: int = 8
    estimate: int = 8
    unbound: int = 8
    recip_guard: int = 10

    @classmethod
    def uniform(cls, bits: int) -> "FixedWidths":
        """All GSBC words ``bits`` wide; reciprocal guard ``bits + 2``."""
        return cls(bits, bits, bits, bits + 2)

    @classmethod
    def from_file(cls, path: str | Path) -> "FixedWidths":
        """Read a JSON object with (a subset of) the fields; the rest keep defaults."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise HdsimError(f"widths file: not found: {path}") from None
        except json.JSONDecodeError as e:
            raise HdsimError(f"widths file {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict):
            raise HdsimError(f"widths file {path}: expected a JSON object of widths")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise HdsimError(f"widths file {path}: unknown field(s) {sorted(unknown)}; "
                             f"expected {sorted(cls.__dataclass_fields__)}")
        w = cls(**data)
        w.validate()
        return w

    def validate(self) -> None:
        for name, v in asdict(self).items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise HdsimError(f"widths.{name}: expected an integer number of bits, got {v!r}")
            lo = 0 if name == "recip_guard" else 2
            if not lo <= v <= MAX_WORD:
                raise HdsimError(f"widths.{name}: must be in [{lo}, {MAX_WORD}] bits, got {v}")
        if self.recip_guard < self.estimate - 1:
            raise HdsimError(f"widths.recip_guard: must be >= estimate - 1 = {self.estimate - 1} "
                             f"so the normalization shift is non-negative, got {self.recip_guard}")

    def as_dict(self) -> dict:
        return asdict(self)


def _clog2(n: int) -> int:
    """Bits to hold ``n - 1``; bits to index ``n`` items (at least 1)."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


@dataclass(frozen=True)
class Datapath:
    """Every signal width of the fixed-point BCF for one configuration.

    Build with :meth:`build`, which validates that the widths can hold the config.
    """

    widths: FixedWidths
    B: int
    L: int
    M: tuple[int, ...]
    similarity: str
    T_int: int
    Tc_int: int
    A: int
    a_bits: int  # similarity
    s_bits: int  # bundle accumulator and per-block weight sum S
    recip_bits: int
    prod_bits: int  # s * R
    acc_bits: int  # unbinding accumulator
    idx_bits: int

    @classmethod
    def build(cls, widths: FixedWidths, B: int, L: int, M: tuple[int, ...], similarity: str,
              T: float, Tc: float, A: int) -> "Datapath":
        widths.validate()
        Wq, Wx, Wu, G = widths.query, widths.estimate, widths.unbound, widths.recip_guard
        a_bits = Wu if similarity == "linf" else Wu + _clog2(B)
        a_max = (1 << a_bits) - 1
        T_int = quantize_unsigned(T, Wu, a_bits)
        Tc_int = quantize_unsigned(Tc, Wu, a_bits + 1)
        if Tc_int > a_max:
            raise HdsimError(f"widths.unbound: Tc={Tc} quantizes to {Tc_int}, above the largest "
                             f"{similarity} similarity {a_max} of {a_bits} bits; widen unbound or lower Tc")
        if Tc_int == 0:
            raise HdsimError(f"widths.unbound: Tc={Tc} quantizes to 0 at {Wu} fractional bits; widen unbound")
        # Bundle: sum of up to M weights, each < 2^a_bits (or 1 when sampled / pulled up).
        s_bits = a_bits + _clog2(max(M) + 1)
        recip_bits = G + 2  # R in (2^G, 2^(G+1)]
        prod_bits = s_bits + recip_bits
        acc_bits = max(Wq, Wu) + Wx  # < (2^Win - 1) * sum(x) <= (2^Win - 1) * 2^Wx
        if prod_bits > 62:
            raise HdsimError(f"widths: normalization product needs {prod_bits} bits (> 62) for M={max(M)}; "
                             "narrow unbound or recip_guard")
        if acc_bits >= INT64_BITS:  # unreachable while MAX_WORD = 30 (acc_bits <= 60); kept with the cap
            raise HdsimError(f"widths: unbinding accumulator needs {acc_bits} bits, more than int64 holds")
        return cls(widths, B, L, tuple(M), similarity, T_int, Tc_int, A, a_bits, s_bits, recip_bits,
                   prod_bits, acc_bits, _clog2(max(M)))

    def table(self) -> list[dict]:
        """One row per signal: name, bits, format, producing op, rounding, overflow."""
        w = self.widths
        Wq, Wx, Wu = w.query, w.estimate, w.unbound
        ai = self.a_bits - Wu
        # Q0.(Win + Wx): Win = Wq when the query is unbound, Wu when an unbound result is (F >= 3)
        acc_format = f"Q0.{Wq + Wx}"
        if len(self.M) >= 3 and Wu != Wq:
            acc_format = f"Q0.{Wq + Wx} (from q), Q0.{Wu + Wx} (from u)"
        rows = [
            ("q", Wq, f"Q0.{Wq}", "query input: round_half_up(q / block sum * 2^Wq) (quantize_query)", "round-half-up",
             "saturate"),
            ("x_f", Wx, f"Q0.{Wx}", "estimate: (s * R) >> (p + G - Wx)", "floor", "saturate"),
            ("acc", self.acc_bits, acc_format, "unbind: sum_j t[(l+j) mod L] * x[j]", "exact", "cannot overflow (bound)"),
            ("u_f", Wu, f"Q0.{Wu}", "unbind result: acc / 2^(Win + Wx - Wu)", "round-half-up", "saturate"),
            ("a_m", self.a_bits, f"Q{ai}.{Wu}",
             "similarity: min_b u[b,c_b]" if self.similarity == "linf" else "similarity: sum_b u[b,c_b]",
             "exact", "saturate (only an added IMC perturbation can leave the range)"),
            ("T", self.a_bits, f"Q{ai}.{Wu}", f"constant round_half_up(T * 2^Wu) = {self.T_int}", "round-half-up", "saturate"),
            ("Tc", self.a_bits, f"Q{ai}.{Wu}", f"constant round_half_up(Tc * 2^Wu) = {self.Tc_int}", "round-half-up", "error if above range"),
            ("w_m", self.a_bits, f"Q{ai}.{Wu}", "bundling weight: a_m if kept, 1 if sampled or pulled up, else 0", "exact", "n/a"),
            ("s", self.s_bits, "integer", "bundle accumulator: sum_{m: X[m,b]=l} w_m", "exact", "cannot overflow (bound)"),
            ("S", self.s_bits, "integer", "per-block weight sum: sum_m w_m (the same for every block)", "exact", "cannot overflow (bound)"),
            ("p", _clog2(self.s_bits + 1), "integer", "bit length of S (priority encoder)", "exact", "n/a"),
            ("R", self.recip_bits, "integer", "reciprocal: floor(2^(p+G) / S)", "floor", "cannot overflow (bound)"),
            ("s*R", self.prod_bits, "integer", "normalization product", "exact", "cannot overflow (bound)"),
            ("idx_f", self.idx_bits, "integer", "argmax_m a_m (lowest index on ties)", "n/a", "n/a"),
            ("flags", 1, "bit", "sampled, pulled-up, converged per factor", "n/a", "n/a"),
        ]
        keys = ("signal", "bits", "format", "op", "rounding", "overflow")
        return [dict(zip(keys, r)) for r in rows]

    def as_dict(self) -> dict:
        return asdict(self)  # recursive: the widths as FixedWidths.as_dict gives them
