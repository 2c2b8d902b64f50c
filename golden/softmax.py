"""Golden model of the streaming fixed-point softmax (DESIGN.md section 4.6).

Contract: every output bit is defined here; :class:`attnforge.rtl.softmax.Softmax` matches it.

Formats (all from :class:`SoftmaxFormat`)
    * input score ``x``: signed ``in_bits`` two's complement with ``in_frac`` fraction bits;
    * probability ``p``: unsigned ``out_frac + 1`` bits with ``out_frac`` fraction bits
      (``2**out_frac`` is exactly 1.0, reachable only by a row of length 1 or a row whose other
      elements underflow);
    * internal: ``exp_frac = out_frac + 8`` fraction bits for exponentials, a ``2**table_bits``
      entry table of ``2**(-f)``, ``log2(e)`` with ``table_bits + 8`` fraction bits.

Per row ``x[0..L-1]`` (``1 <= L <= max_len``), bit by bit:

1. ``m = max(x)``; ``d_i = m - x_i`` (``>= 0``, integer in input LSBs).
2. ``t_i = round_shift(d_i * LOG2E, in_frac + LOG2E_FRAC - table_bits)``: ``d_i * log2(e)`` in
   the base-2 domain with ``table_bits`` fraction bits (round half to even).
3. ``n_i = min(t_i >> table_bits, exp_frac + 1)``, ``f_i = t_i mod 2**table_bits``;
   ``e_i = round_shift(TABLE[f_i], n_i)`` where ``TABLE[f] = rint(2**exp_frac * 2**(-f /
   2**table_bits))``. So ``e_i ~ 2**exp_frac * exp(x_i - m)``; the maximum gives exactly
   ``2**exp_frac``, and ``n_i = exp_frac + 1`` always gives 0 (underflow).
4. ``S = sum(e_i)`` (exact; ``2**exp_frac <= S <= L * 2**exp_frac``).
5. ``R = floor(2**Q / S)`` with ``Q = exp_frac + ceil(log2(max_len)) + out_frac + 4``
   (a restoring divider in RTL; ``R`` keeps at least ``out_frac + 4`` significant bits).
6. ``p_i = round_shift(e_i * R, Q - out_frac)``; ``0 <= p_i <= 2**out_frac`` (no saturation
   needed: ``e_i * R <= S * R <= 2**Q``).

A sparse row is just the list of kept elements: the softmax runs over exactly the elements
given, and each element's column ``index`` travels with it unchanged.

Beats (the stream view, :func:`beats_out`): a row arrives as beats of ``lanes`` elements; every
beat but the last is full, the last carries ``count`` valid lanes (``count`` 0 or > ``lanes``
means ``lanes``). A row longer than ``max_len`` is a bad request with a defined answer: the
elements past ``max_len`` are dropped, the softmax covers the first ``max_len`` elements and
every output beat of that row has ``overflow`` set. Output beats mirror the (kept) input beats;
invalid lanes of a last beat read as probability 0, index 0.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .numbers import fx_to_float, round_shift, value_range

__all__ = ["SoftmaxFormat", "softmax_fx", "softmax_float", "split_beats", "beats_out",
           "error_stats", "random_row", "peaked_row"]


@dataclass(frozen=True)
class SoftmaxFormat:
    """Generator-level numeric parameters of the softmax (see the module docstring)."""
    in_bits: int = 16
    in_frac: int = 8
    out_frac: int = 8
    table_bits: int = 6
    max_len: int = 64

    @property
    def exp_frac(self):
        """Fraction bits of an exponential ``e_i`` (1.0 = ``2**exp_frac``)."""
        return self.out_frac + 8

    @property
    def log2e_frac(self):
        return self.table_bits + 8

    @property
    def log2e(self):
        """``log2(e)`` as an integer with :attr:`log2e_frac` fraction bits."""
        return int(np.rint(np.log2(np.e) * (1 << self.log2e_frac)))

    @property
    def t_shift(self):
        """Right shift taking ``d * LOG2E`` to ``table_bits`` fraction bits."""
        return self.in_frac + self.log2e_frac - self.table_bits

    @property
    def recip_q(self):
        """``Q``: the reciprocal is ``floor(2**Q / S)``."""
        return self.exp_frac + (self.max_len - 1).bit_length() + self.out_frac + 4

    @property
    def sum_bits(self):
        """Unsigned width of ``S``."""
        return (self.max_len << self.exp_frac).bit_length()

    @property
    def recip_bits(self):
        """Unsigned width of ``R`` (``R <= 2**(Q - exp_frac)``)."""
        return self.recip_q - self.exp_frac + 1

    @cached_property
    def table(self):
        """``TABLE[f] = rint(2**exp_frac * 2**(-f / 2**table_bits))``, int64."""
        f = np.arange(1 << self.table_bits, dtype=np.float64) / (1 << self.table_bits)
        return np.rint(np.exp2(-f) * (1 << self.exp_frac)).astype(np.int64)


def exp_fx(d, fmt):
    """Step 2-3: ``e_i`` for non-negative distances ``d_i = m - x_i`` (vectorized)."""
    d = np.asarray(d, dtype=np.int64)
    t = round_shift(d * np.int64(fmt.log2e), fmt.t_shift)
    n = np.minimum(t >> fmt.table_bits, fmt.exp_frac + 1)
    f = t & ((1 << fmt.table_bits) - 1)
    v = fmt.table[f]
    e = np.zeros_like(d)
    for shift in np.unique(n):
        sel = n == shift
        e[sel] = round_shift(v[sel], int(shift))
    return e


def softmax_fx(x, fmt=SoftmaxFormat()):
    """Bit-exact fixed-point softmax of one row of signed integers -> integers ``p_i``."""
    x = np.asarray(x, dtype=np.int64)
    lo, hi = value_range(fmt.in_bits)
    if x.ndim != 1 or not 1 <= len(x) <= fmt.max_len:
        raise ValueError(f"row length must be in [1, {fmt.max_len}], got shape {x.shape}")
    if x.min() < lo or x.max() > hi:
        raise ValueError(f"scores must lie in [{lo}, {hi}]")
    e = exp_fx(x.max() - x, fmt)
    s = int(e.sum())
    r = (1 << fmt.recip_q) // s
    return round_shift(e * np.int64(r), fmt.recip_q - fmt.out_frac)


def softmax_float(x, fmt=SoftmaxFormat()):
    """float64 softmax of the same fixed-point inputs (the reference for the error figures)."""
    xf = fx_to_float(x, fmt.in_frac)
    e = np.exp(xf - xf.max())
    return e / e.sum()


def error_stats(rows, fmt=SoftmaxFormat()):
    """``{max_abs, mean_abs, max_lsb}`` of ``p_fx - p_float64`` over the given rows."""
    errs = np.concatenate([fx_to_float(softmax_fx(r, fmt), fmt.out_frac) - softmax_float(r, fmt)
                           for r in rows])
    return {"max_abs": float(np.abs(errs).max()), "mean_abs": float(np.abs(errs).mean()),
            "max_lsb": float(np.abs(errs).max() * (1 << fmt.out_frac))}


def random_row(rng, length, fmt=SoftmaxFormat(), scale=2.0):
    """Gaussian scores with standard deviation ``scale`` (real units), quantized, saturated."""
    lo, hi = value_range(fmt.in_bits)
    return np.clip(np.rint(rng.normal(0, scale, length) * (1 << fmt.in_frac)), lo, hi) \
        .astype(np.int64)


def peaked_row(rng, length, fmt=SoftmaxFormat(), peaks=2, boost=6.0):
    """Real-looking attention scores: a low random background plus a few dominant positions."""
    x = rng.normal(0, 1.0, length)
    x[rng.choice(length, size=min(peaks, length), replace=False)] += boost * rng.random(
        min(peaks, length)) + boost / 2
    lo, hi = value_range(fmt.in_bits)
    return np.clip(np.rint(x * (1 << fmt.in_frac)), lo, hi).astype(np.int64)


def split_beats(values, indices, lanes):
    """A row as input beats: ``[{"data": [...], "index": [...], "count": n, "last": b}]``
    (lanes past ``count`` in the last beat are zero-filled)."""
    out = []
    for start in range(0, len(values), lanes):
        v = [int(a) for a in values[start:start + lanes]]
        i = [int(a) for a in indices[start:start + lanes]]
        n = len(v)
        out.append({"data": v + [0] * (lanes - n), "index": i + [0] * (lanes - n),
                    "count": n,
                    "last": int(start + lanes >= len(values))})
    return out


def beats_out(beats, lanes, fmt=SoftmaxFormat()):
    """Expected output beats for one row given as input beats (see the module docstring):
    ``[{"prob": [...], "index": [...], "count": n, "last": b, "overflow": o}]``."""
    values, indices = [], []
    for b in beats:
        n = b["count"] if (b["last"] and 1 <= b["count"] <= lanes) else lanes
        values += list(b["data"][:n])
        indices += list(b["index"][:n])
    overflow = len(values) > fmt.max_len
    values, indices = values[:fmt.max_len], indices[:fmt.max_len]
    p = softmax_fx(values, fmt)
    out = []
    for start in range(0, len(values), lanes):
        n = min(lanes, len(values) - start)
        out.append({"prob": [int(a) for a in p[start:start + n]] + [0] * (lanes - n),
                    "index": [int(a) for a in indices[start:start + n]] + [0] * (lanes - n),
                    "count": n, "last": int(start + lanes >= len(values)),
                    "overflow": int(overflow)})
    return out
