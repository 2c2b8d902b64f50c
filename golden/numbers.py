"""Number formats shared by every golden model and every generator (DESIGN.md section 3).

This module is the single definition of

* the run-time precisions (:class:`Precision`: FX16, INT8, INT4, INT2) and their lane geometry
  in a 16-bit word,
* two's-complement packing of lanes into 16-bit words (:func:`pack`, :func:`unpack`),
* signed ranges, wrapping and saturation (:func:`value_range`, :func:`wrap`, :func:`saturate`),
* requantization: round-half-to-even right shift, then saturate (:func:`requantize`),
* accumulator sizing (:func:`acc_bits`).

Everything is vectorized over NumPy ``int64`` arrays; the RTL matches these functions bit for
bit. Python ints are accepted wherever arrays are.
"""

import enum

import numpy as np

__all__ = [
    "WORD_BITS", "Precision", "value_range", "wrap", "saturate", "pack", "unpack",
    "round_shift", "requantize", "acc_bits", "fx_to_float", "float_to_fx",
]

#: Width of the activation/weight word every precision is packed into.
WORD_BITS = 16


class Precision(enum.IntEnum):
    """Run-time arithmetic precision.

    The integer values are the 2-bit hardware encoding of the ``mode`` field in every stream
    payload that carries a precision.
    """
    FX16 = 0
    INT8 = 1
    INT4 = 2
    INT2 = 3

    @property
    def bits(self):
        """Width of one value, in bits (16, 8, 4, 2)."""
        return {0: 16, 1: 8, 2: 4, 3: 2}[self.value]

    @property
    def lanes(self):
        """Values per 16-bit word: ``n = 16 / bits`` (1, 2, 4, 8)."""
        return WORD_BITS // self.bits

    @property
    def digits(self):
        """2-bit digits per value (8, 4, 2, 1)."""
        return self.bits // 2

    @property
    def macs_per_word(self):
        """Multiply-accumulates an ``n x n`` weight tile does per activation word (``n * n``)."""
        return self.lanes * self.lanes

    @classmethod
    def parse(cls, name):
        """Look a precision up by name (``"int4"``, ``"FX16"``) or by value; ``ValueError`` else."""
        if isinstance(name, cls):
            return name
        if isinstance(name, str):
            try:
                return cls[name.upper()]
            except KeyError:
                pass
        else:
            try:
                return cls(int(name))
            except (ValueError, TypeError):
                pass
        legal = ", ".join(p.name for p in cls)
        raise ValueError(f"precision must be one of {legal}, not {name!r}")


def value_range(bits):
    """Return ``(min, max)`` of a signed two's-complement number of ``bits`` bits."""
    if bits < 1:
        raise ValueError(f"bits must be at least 1, not {bits}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def wrap(x, bits):
    """Reduce ``x`` modulo ``2**bits`` into the signed range (what a ``bits``-wide register holds)."""
    x = np.asarray(x, dtype=np.int64)
    m = np.int64(1) << np.int64(bits)
    h = np.int64(1) << np.int64(bits - 1)
    return ((x + h) & (m - 1)) - h


def saturate(x, bits):
    """Clamp ``x`` to the signed ``bits``-bit range."""
    lo, hi = value_range(bits)
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def pack(values, precision):
    """Pack ``n = precision.lanes`` signed values (last axis) into 16-bit words.

    Lane ``j`` occupies bits ``[j*p, (j+1)*p)``: lane 0 is the least significant. Values must lie
    in the signed ``p``-bit range; anything else is a caller bug and raises ``ValueError``.
    Returns ``int64`` words in ``[0, 2**16)``.
    """
    precision = Precision.parse(precision)
    p, n = precision.bits, precision.lanes
    v = np.asarray(values, dtype=np.int64)
    if v.shape[-1:] != (n,):
        raise ValueError(f"pack: last axis must hold {n} lanes for {precision.name}, "
                         f"got shape {v.shape}")
    lo, hi = value_range(p)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"pack: values must lie in [{lo}, {hi}] for {precision.name}")
    fields = (v & ((1 << p) - 1)) << (np.arange(n, dtype=np.int64) * p)
    return fields.sum(axis=-1)


def unpack(words, precision):
    """Inverse of :func:`pack`: 16-bit words -> signed lanes on a new last axis."""
    precision = Precision.parse(precision)
    p, n = precision.bits, precision.lanes
    w = np.asarray(words, dtype=np.int64)[..., None]
    fields = (w >> (np.arange(n, dtype=np.int64) * p)) & ((1 << p) - 1)
    return wrap(fields, p)


def round_shift(x, shift):
    """``x / 2**shift`` rounded to the nearest integer, ties to even (exact, integer only)."""
    x = np.asarray(x, dtype=np.int64)
    if shift < 0:
        raise ValueError(f"shift must be non-negative, not {shift}")
    if shift == 0:
        return x
    q = x >> np.int64(shift)                     # floor
    r = x & np.int64((1 << shift) - 1)           # remainder, 0 <= r < 2**shift
    half = np.int64(1 << (shift - 1))
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    return q + up.astype(np.int64)


def requantize(x, shift, bits):
    """Requantize an accumulator: round-half-to-even right shift by ``shift``, then saturate to
    a signed ``bits``-bit value. The one definition every unit's RTL matches."""
    return saturate(round_shift(x, shift), bits)


def acc_bits(bits, lanes, depth):
    """Accumulator width that cannot overflow: ``2*bits + ceil(log2(lanes * depth))``.

    ``lanes * depth`` products of two ``bits``-bit signed values are summed; each product's
    magnitude is at most ``2**(2*bits - 2)``, so the sum fits with room to spare.
    """
    terms = lanes * depth
    if terms < 1:
        raise ValueError(f"lanes * depth must be at least 1, not {terms}")
    return 2 * bits + (terms - 1).bit_length()


def fx_to_float(x, frac_bits):
    """Interpret fixed-point integers with ``frac_bits`` fractional bits as float64."""
    return np.asarray(x, dtype=np.float64) / float(1 << frac_bits)


def float_to_fx(x, frac_bits, bits=16):
    """Quantize floats to ``bits``-bit fixed point, round-half-to-even, saturating."""
    scaled = np.rint(np.asarray(x, dtype=np.float64) * (1 << frac_bits))  # rint ties to even
    return saturate(scaled.astype(np.int64), bits)
