"""Golden model of the streaming fixed-point softmax (DESIGN.md section 4.6).

Contract: every output bit is defined here; :class:`attnforge.rtl.softmax.Softmax` matches it.
The softmax is split in two, as the hardware is: a **statistics pass** (:func:`row_stats`) that
streams over the row once and yields per-row statistics ``(K, R)``, and a **normalization**
(:func:`normalize`) that turns any score of the row plus those statistics into its probability.
A consumer (the attention lane's A*V) can hold the statistics and normalize scores as it uses
them, so no row of probabilities has to be stored. :func:`softmax_fx` is the whole-row entry
point (stats pass, then normalization).

Formats (all from :class:`SoftmaxFormat`)
    * input score ``x``: signed ``in_bits`` two's complement with ``in_frac`` fraction bits;
    * probability ``p``: unsigned ``out_frac + 1`` bits with ``out_frac`` fraction bits
      (``2**out_frac`` is exactly 1.0, reached by a row of length 1 or a row whose other
      elements underflow);
    * internal: ``exp_frac = out_frac + 8`` fraction bits for exponentials, a ``2**table_bits``
      entry table of ``2**(-f)``, ``LOG2E = rint(log2(e) * 2**log2e_frac)`` with
      ``log2e_frac = table_bits + 8``.

Base-2 domain. ``v(x) = x * LOG2E`` (exact integer, ``OS = in_frac + log2e_frac`` fraction
bits) is the score in octaves; ``oct(x) = v(x) >> OS`` (floor). The **reference** of a row is an
octave boundary ``K`` (integer) above every score seen: ``K = max oct(x_i) + 1``.

Exponential of ``x`` at reference ``K`` (:func:`exp_fx`):

1. ``d = (K << OS) - v(x)`` (``> 0``);
2. ``t = round_shift(d, OS - table_bits)`` -- the distance in octaves with ``table_bits``
   fraction bits (round half to even);
3. ``n = min(t >> table_bits, exp_frac + 1)``, ``f = t mod 2**table_bits``,
   ``e = round_shift(TABLE[f], n)`` with ``TABLE[f] = rint(2**exp_frac * 2**(-f/2**table_bits))``.
   So ``e ~ 2**exp_frac * 2**(v(x)/2**OS - K)``, in ``(0, 2**exp_frac]`` for the row maximum.

Statistics pass (:func:`row_stats`), online normalizer, one element at a time in row order::

    K = -inf, S = 0
    for x in row:
        K' = max(K, oct(x) + 1)
        S  = (S >> (K' - K)) + exp_fx(x, K')      # rescale when the reference grows
        K  = K'

The reference is an octave count, so rescaling the running sum is a plain right shift (floor)
by an integer number of octaves -- no multiplier, no exponential of the max difference. The
result depends only on the row (not on how it is cut into beats): the RTL folds a beat of P
elements with the same per-element chain. ``2**(exp_frac-1) <= S <= L * 2**exp_frac`` for a
non-empty row. Then ``R = floor(2**Q / S)`` with ``Q = exp_frac + ceil(log2(max_len)) + out_frac
+ 4`` (``R`` keeps at least ``out_frac + 4`` significant bits; ``R < 2**recip_bits``). An empty
row has ``S = 0`` and ``R = 2**recip_bits - 1`` (what the restoring divider gives); it has no
element to normalize.

Normalization (:func:`normalize`): ``p = min(round_shift(exp_fx(x, K) * R, Q - out_frac),
2**out_frac)`` (the clamp guards the few units the floor rescaling removed from ``S``).

A sparse row is just the list of kept elements: the softmax runs over exactly the elements
given, and each element's column ``index`` travels with it unchanged.

Beats (the row-stream convention, :mod:`attnforge.rtl.streams`; :func:`beats_out`): a row
arrives as beats of ``per_beat`` lanes, each carrying ``count`` (0..per_beat) valid lanes; any
beat may be partial. A row is limited to ``max_len`` elements in at most ``max_beats =
max_len / per_beat`` beats (the row buffer holds beats). Past either limit the request is bad
with a defined answer: a beat that would start after ``max_len`` elements or after
``max_beats`` beats is dropped, a beat crossing ``max_len`` elements keeps only its first lanes
up to the limit; the softmax covers the kept elements; every output beat of the row has
``error`` set, and the last kept beat carries ``last``. An input row with ``error`` on any of
its beats (a producer's error row) gives output beats with ``error`` set too. Output beats
mirror the kept input beats (same counts); lanes at and above ``count`` read probability 0,
index 0.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .numbers import fx_to_float, round_shift, value_range

__all__ = ["SoftmaxFormat", "exp_fx", "octave", "row_stats", "reciprocal", "normalize",
           "softmax_fx", "softmax_float", "split_beats", "beats_out", "error_stats",
           "random_row", "peaked_row", "worst_rows"]


@dataclass(frozen=True)
class SoftmaxFormat:
    """Generator-level numeric parameters of the softmax (see the module docstring)."""
    in_bits: int = 16
    in_frac: int = 8
    out_frac: int = 8
    table_bits: int = 7
    max_len: int = 64

    @property
    def exp_frac(self):
        """Fraction bits of an exponential ``e`` (1.0 = ``2**exp_frac``)."""
        return self.out_frac + 8

    @property
    def log2e_frac(self):
        return self.table_bits + 8

    @property
    def log2e(self):
        """``log2(e)`` as an integer with :attr:`log2e_frac` fraction bits."""
        return int(np.rint(np.log2(np.e) * (1 << self.log2e_frac)))

    @property
    def oct_shift(self):
        """``OS``: fraction bits of ``v(x) = x * LOG2E`` (one octave = ``2**OS``)."""
        return self.in_frac + self.log2e_frac

    @property
    def t_shift(self):
        """Right shift taking ``d`` to ``table_bits`` fraction bits of an octave."""
        return self.oct_shift - self.table_bits

    @property
    def ref_range(self):
        """``(lo, hi)``: the references ``K = oct(x) + 1`` of every representable score; the
        hardware's "no element yet" value is ``lo - 1``."""
        lo, hi = value_range(self.in_bits)
        return ((lo * self.log2e) >> self.oct_shift) + 1, ((hi * self.log2e) >> self.oct_shift) + 1

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
        """Unsigned width of ``R`` (``R <= 2**(Q - exp_frac + 1)``, so quotient bits)."""
        return self.recip_q - self.exp_frac + 2

    @property
    def norm_shift(self):
        """Right shift of ``e * R`` to a probability."""
        return self.recip_q - self.out_frac

    @cached_property
    def table(self):
        """``TABLE[f] = rint(2**exp_frac * 2**(-f / 2**table_bits))``, int64."""
        f = np.arange(1 << self.table_bits, dtype=np.float64) / (1 << self.table_bits)
        return np.rint(np.exp2(-f) * (1 << self.exp_frac)).astype(np.int64)


def octave(x, fmt=SoftmaxFormat()):
    """``oct(x) = (x * LOG2E) >> OS``: the octave a score lies in (vectorized)."""
    return (np.asarray(x, dtype=np.int64) * np.int64(fmt.log2e)) >> np.int64(fmt.oct_shift)


def exp_fx(x, ref, fmt=SoftmaxFormat()):
    """Steps 1-3: ``e`` of scores ``x`` at reference octave(s) ``ref`` (vectorized; every
    ``ref`` must exceed ``oct(x)``)."""
    x = np.asarray(x, dtype=np.int64)
    ref = np.broadcast_to(np.asarray(ref, dtype=np.int64), x.shape)
    d = (ref << np.int64(fmt.oct_shift)) - x * np.int64(fmt.log2e)
    if np.any(d <= 0):
        raise ValueError("the reference must lie above every score")
    t = round_shift(d, fmt.t_shift)
    n = np.minimum(t >> fmt.table_bits, fmt.exp_frac + 1)
    v = fmt.table[t & ((1 << fmt.table_bits) - 1)]
    e = np.zeros_like(x)
    for shift in np.unique(n):
        sel = n == shift
        e[sel] = round_shift(v[sel], int(shift))
    return e


def _check_row(x, fmt):
    x = np.asarray(x, dtype=np.int64)
    lo, hi = value_range(fmt.in_bits)
    if x.ndim != 1 or not len(x) <= fmt.max_len:
        raise ValueError(f"row length must be in [0, {fmt.max_len}], got shape {x.shape}")
    if len(x) and (x.min() < lo or x.max() > hi):
        raise ValueError(f"scores must lie in [{lo}, {hi}]")
    return x


def reciprocal(s, fmt=SoftmaxFormat()):
    """``R = floor(2**Q / S)``; ``2**recip_bits - 1`` for ``S = 0`` (restoring divider)."""
    return (1 << fmt.recip_q) // s if s else (1 << fmt.recip_bits) - 1


def row_stats(x, fmt=SoftmaxFormat()):
    """The statistics pass over one row: ``(K, S, R)`` (see the module docstring). An empty
    row gives ``K = ref_range[0] - 1``, ``S = 0``."""
    x = _check_row(x, fmt)
    if not len(x):
        return fmt.ref_range[0] - 1, 0, reciprocal(0, fmt)
    refs = np.maximum.accumulate(octave(x, fmt) + 1)       # K after each element
    e = exp_fx(x, refs, fmt)                               # each at its insertion reference
    starts = np.flatnonzero(np.diff(refs, prepend=refs[0] - 1))
    ends = np.append(starts[1:], len(x))
    s, k = 0, int(refs[0])
    for a, b in zip(starts, ends):                         # segments of constant reference
        s = (s >> (int(refs[a]) - k)) + int(e[a:b].sum())
        k = int(refs[a])
    return k, s, reciprocal(s, fmt)


def normalize(x, ref, recip, fmt=SoftmaxFormat()):
    """Probabilities of scores ``x`` of a row whose statistics are ``(ref, recip)``
    (vectorized; the normalization stage, also usable inside a consumer)."""
    e = exp_fx(x, ref, fmt)
    p = round_shift(e * np.int64(recip), fmt.norm_shift)
    return np.minimum(p, 1 << fmt.out_frac)


def softmax_fx(x, fmt=SoftmaxFormat()):
    """Bit-exact fixed-point softmax of one row of signed integers -> integers ``p_i``
    (:func:`row_stats` then :func:`normalize`)."""
    x = _check_row(x, fmt)
    if not len(x):
        raise ValueError(f"row length must be in [1, {fmt.max_len}], got shape {x.shape}")
    k, _, r = row_stats(x, fmt)
    return normalize(x, k, r, fmt)


def softmax_float(x, fmt=SoftmaxFormat()):
    """float64 softmax of the same fixed-point inputs (the reference for the error figures)."""
    xf = fx_to_float(x, fmt.in_frac)
    e = np.exp(xf - xf.max())
    return e / e.sum()


def row_error(x, fmt=SoftmaxFormat()):
    """max |p_fx - p_float64| of one row (real units)."""
    return float(np.abs(fx_to_float(softmax_fx(x, fmt), fmt.out_frac)
                        - softmax_float(x, fmt)).max())


def error_stats(rows, fmt=SoftmaxFormat()):
    """``{max_abs, mean_abs, max_lsb}`` of ``p_fx - p_float64`` over the given rows."""
    errs = np.concatenate([fx_to_float(softmax_fx(r, fmt), fmt.out_frac) - softmax_float(r, fmt)
                           for r in rows])
    return {"max_abs": float(np.abs(errs).max()), "mean_abs": float(np.abs(errs).mean()),
            "max_lsb": float(np.abs(errs).max() * (1 << fmt.out_frac))}


def worst_rows(rng, fmt=SoftmaxFormat(), *, lengths=(2, 3, 4, 5), n_random=3000, climb=300):
    """Search for rows with the largest error against float64: random short rows and near-tie
    rows (scores a few LSBs apart, or one score ~ln(k) above k others), each improved by a
    greedy hill climb (move one score by +-1..+-8 LSB while the error grows). Returns
    ``[(err, row)]``, worst first."""
    lo, hi = value_range(fmt.in_bits)
    one = 1 << fmt.in_frac
    seeds = []
    for _ in range(n_random):
        n = int(rng.choice(lengths))
        kind = rng.integers(3)
        if kind == 0:                                      # random spread of a few units
            x = rng.normal(0, rng.choice([0.3, 1.0, 3.0]) * one, n)
        elif kind == 1:                                    # near ties
            x = rng.integers(-8, 9, n).astype(np.float64) + rng.integers(lo // 2, hi // 2)
        else:                                              # one above k equal others
            x = np.zeros(n)
            x[0] = np.log(n - 1 + rng.random()) * one * rng.uniform(0.5, 2)
            x[1:] += rng.integers(-3, 4, n - 1)
        seeds.append(np.clip(np.rint(x), lo, hi).astype(np.int64))
    scored = sorted(((row_error(x, fmt), tuple(x)) for x in seeds), reverse=True)[:20]
    best = []
    for err, row in scored:
        x = np.array(row, dtype=np.int64)
        for _ in range(climb):
            y = x.copy()
            j = rng.integers(len(y))
            y[j] = np.clip(y[j] + rng.choice([-8, -3, -1, 1, 3, 8]), lo, hi)
            ey = row_error(y, fmt)
            if ey > err:
                x, err = y, ey
        best.append((err, [int(v) for v in x]))
    return sorted(best, reverse=True)


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


def split_beats(values, indices, per_beat, sizes=None):
    """A row as input beats ``[{"data", "index", "count", "last"}]``: full beats of
    ``per_beat`` (the last one partial), or beats of the given ``sizes`` (each 0..per_beat,
    summing to the row length: partial beats anywhere). Lanes past ``count`` are zero."""
    if sizes is None:
        sizes = [min(per_beat, len(values) - s) for s in range(0, len(values), per_beat)] or [0]
    if sum(sizes) != len(values) or any(not 0 <= n <= per_beat for n in sizes):
        raise ValueError(f"beat sizes {sizes} do not cut a row of {len(values)}")
    out, start = [], 0
    for k, n in enumerate(sizes):
        v = [int(a) for a in values[start:start + n]]
        i = [int(a) for a in indices[start:start + n]]
        out.append({"data": v + [0] * (per_beat - n), "index": i + [0] * (per_beat - n),
                    "count": n, "last": int(k == len(sizes) - 1)})
        start += n
    return out


def kept_beats(beats, per_beat, fmt=SoftmaxFormat()):
    """The input framing rule: ``(kept, error)`` where ``kept`` lists ``(beat, n)`` -- the
    kept input beats and how many of their lanes are kept."""
    max_beats = fmt.max_len // per_beat
    kept, elems, error = [], 0, False
    for b in beats:
        n = min(b["count"], per_beat)
        error |= bool(b.get("error", 0))
        if elems >= fmt.max_len or len(kept) >= max_beats:
            error = True
            continue
        keep = min(n, fmt.max_len - elems)
        error |= keep < n
        kept.append((b, keep))
        elems += keep
    return kept, error


def beats_out(beats, per_beat, fmt=SoftmaxFormat()):
    """Expected output beats for one row given as input beats (see the module docstring):
    ``[{"data": [...], "index": [...], "count": n, "last": b, "error": e}]``."""
    kept, error = kept_beats(beats, per_beat, fmt)
    values = [v for b, n in kept for v in b["data"][:n]]
    k, _, r = row_stats(values, fmt)
    out = []
    for j, (b, n) in enumerate(kept):
        p = [int(a) for a in normalize(b["data"][:n], k, r, fmt)] if n else []
        out.append({"data": p + [0] * (per_beat - n),
                    "index": [int(a) for a in b["index"][:n]] + [0] * (per_beat - n),
                    "count": n, "last": int(j == len(kept) - 1), "error": int(error)})
    return out
