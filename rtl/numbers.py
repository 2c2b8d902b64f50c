"""Hardware twins of :mod:`attnforge.golden.numbers`: requantization and parameter checks.

Every generator builds its arithmetic from these expressions so that the behaviour defined once
in the golden package (round-half-to-even, then saturate) is implemented once in RTL too.
"""

from amaranth.hdl import Const, Mux, Value, signed

from ..golden.numbers import value_range

__all__ = ["saturate", "round_shift", "requantize", "check_int", "check_choice"]


def saturate(value, bits):
    """Clamp a signed expression to the signed ``bits``-bit range; result is ``signed(bits)``."""
    value = Value.cast(value)
    lo, hi = value_range(bits)
    shape = value.shape()
    if shape.width < bits or (shape.signed and shape.width == bits):
        return value            # already in range; extension happens on assignment
    return Mux(value > hi, Const(hi, signed(bits)),
               Mux(value < lo, Const(lo, signed(bits)), value[:bits].as_signed()))


def round_shift(value, shift):
    """``value / 2**shift``, rounded half to even. ``shift`` is a Python int (a wire of muxes
    costs nothing then) or an unsigned Amaranth value (a run-time barrel shift)."""
    value = Value.cast(value)
    if isinstance(shift, int):
        if shift == 0:
            return value
        q = value >> shift
        r = value.as_unsigned()[:shift]
        half = 1 << (shift - 1)
        up = (r > half) | ((r == half) & q[0])
        return q + up
    shift = Value.cast(shift)
    width = value.shape().width
    q = value >> shift
    mask = (Const(1, width + 1) << shift) - 1
    r = value.as_unsigned() & mask[:width]
    half = (Const(1, width + 1) << shift) >> 1
    up = (shift != 0) & ((r > half) | ((r == half) & q[0]))
    return q + up


def requantize(value, shift, bits):
    """Round-half-to-even right shift by ``shift``, then saturate to ``signed(bits)``."""
    return saturate(round_shift(value, shift), bits)


def check_int(name, value, lo, hi=None):
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int in ``[lo, hi]``."""
    legal = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or \
            (hi is not None and value > hi):
        raise ValueError(f"{name} must be {legal}, not {value!r}")
    return value


def check_choice(name, value, choices):
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        legal = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {legal}, not {value!r}")
    return value
