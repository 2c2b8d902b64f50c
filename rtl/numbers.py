"""Hardware twins of :mod:`attnforge.golden.numbers`: requantization and parameter checks.

Every generator builds its arithmetic from these expressions so that the behaviour defined once
in the golden package (round-half-to-even, then saturate) is implemented once in RTL too.
"""

from amaranth.hdl import Cat, Const, Mux, Value, signed

from ..golden.numbers import value_range

__all__ = ["saturate", "round_shift", "requantize", "check_int"]


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
        if shift > value.shape().width:
            return Const(0, 1)    # |value| / 2**shift < 1/2 rounds to 0, negatives included
        q = value >> shift
        r = value.as_unsigned()[:shift]
        half = 1 << (shift - 1)
        up = (r > half) | ((r == half) & q[0])
        return q + up
    # Run-time shift: floor shift, then add 1 when the round bit (bit shift-1) is set and either
    # a lower bit is set or the result is odd. Built from shifts no wider than the value and a
    # thermometer mask, so the logic (and Amaranth's netlist) stays linear in the shift width.
    shift = Value.cast(shift)
    width = value.shape().width
    is_signed = value.shape().signed
    ext = Cat(value, value[-1] if is_signed else Const(0, 1))    # bits 0..width: all we need
    ext = ext.as_signed() if is_signed else ext
    q = ext >> shift
    round_bit = (Cat(Const(0, 1), ext) >> shift)[0]
    top = (1 << shift.shape().width) - 1                           # largest shift the wire holds
    below = Cat(*[shift > b + 1 if b + 1 < top else Const(0, 1)    # bits under the round bit
                  for b in range(width + 1)])
    sticky = (ext.as_unsigned() & below).any()
    rounded = q + (round_bit & (sticky | q[0]))
    if top <= width:
        return rounded
    # Beyond the value's width |value| / 2**shift < 1/2: the result is 0 (also for negatives).
    return Mux(shift > width, 0, rounded)


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
