"""Golden number formats: packing, rounding, requantization, accumulator sizing."""

import numpy as np
import pytest
from amaranth.hdl import Module, signed, unsigned

from attnforge.golden.numbers import (Precision, acc_bits, float_to_fx, fx_to_float, pack,
                                      requantize, round_shift, saturate, unpack, value_range, wrap)


def test_precision_geometry():
    assert [(p.bits, p.lanes, p.digits, p.macs_per_word) for p in Precision] == \
        [(16, 1, 8, 1), (8, 2, 4, 4), (4, 4, 2, 16), (2, 8, 1, 64)]
    assert Precision.parse("int4") is Precision.INT4 and Precision.parse(3) is Precision.INT2
    with pytest.raises(ValueError, match="precision must be one of FX16, INT8, INT4, INT2"):
        Precision.parse("int3")


def test_pack_hand_worked():
    # INT4 lanes [1, -1, -8, 7]: 0x1, 0xF, 0x8, 0x7 -> 0x78F1
    assert pack([1, -1, -8, 7], "INT4") == 0x78F1
    assert list(unpack(0x78F1, "INT4")) == [1, -1, -8, 7]
    assert pack([-2, 1, 0, -1, 1, 1, -2, 0], "INT2") == 0b00_10_01_01_11_00_01_10
    assert pack([-32768], "FX16") == 0x8000


@pytest.mark.parametrize("prec", list(Precision))
def test_pack_roundtrip(prec):
    rng = np.random.default_rng(0)
    lo, hi = value_range(prec.bits)
    v = rng.integers(lo, hi + 1, size=(1000, prec.lanes))
    words = pack(v, prec)
    assert words.min() >= 0 and words.max() < 1 << 16
    assert (unpack(words, prec) == v).all()


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack([8, 0, 0, 0], "INT4")
    with pytest.raises(ValueError, match="4 lanes"):
        pack([1, 2], "INT4")


def test_round_shift_ties_to_even():
    x = np.array([5, 6, 7, 10, -5, -6, -7, -10, 3, -3])      # / 4
    # 1.25->1, 1.5->2, 1.75->2, 2.5->2, -1.25->-1, -1.5->-2, -1.75->-2, -2.5->-2, .75->1, -.75->-1
    assert list(round_shift(x, 2)) == [1, 2, 2, 2, -1, -2, -2, -2, 1, -1]
    assert list(round_shift(x, 0)) == list(x)


def test_round_shift_matches_float():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 40), 1 << 40, size=10000)
    for s in (1, 3, 8, 17):
        assert (round_shift(x, s) == np.round(x / 2.0 ** s).astype(np.int64)).all()


def test_requantize_saturates():
    assert list(requantize([1 << 20, -(1 << 20), 300, -300], 2, 8)) == [127, -128, 75, -75]
    assert list(saturate([128, -129, 5], 8)) == [127, -128, 5]
    assert list(wrap([128, -129, 255], 8)) == [-128, 127, -1]


def test_acc_bits_bound_holds():
    # the worst case (most negative squared, every term) must fit, one more term may not matter
    for bits, lanes, depth in [(16, 1, 1024), (8, 2, 1), (2, 8, 3), (4, 4, 1000)]:
        w = acc_bits(bits, lanes, depth)
        worst = lanes * depth * (1 << (2 * bits - 2))
        assert worst <= value_range(w)[1]
        assert -worst >= value_range(w)[0]


def test_fixed_point_conversion():
    assert list(float_to_fx([0.5, -1.0, 1000.0, 0.001953125], 8)) == [128, -256, 32767, 0]
    assert fx_to_float(384, 8) == 1.5


@pytest.mark.parametrize("shape", [signed(7), unsigned(6)])
def test_rtl_round_shift_runtime_exhaustive(shape):
    # every value of a small signed / unsigned input, every shift 0..15 (also beyond the width)
    from amaranth.hdl import Signal
    from amaranth.sim import Simulator

    from attnforge.rtl.numbers import requantize as rtl_requantize
    from attnforge.rtl.numbers import round_shift as rtl_round_shift

    x, s = Signal(shape), Signal(4)
    y, z = Signal(signed(12)), Signal(signed(4))
    m = Module()
    m.d.comb += [y.eq(rtl_round_shift(x, s)), z.eq(rtl_requantize(x, s, 4))]
    # the same with every shift as a Python int (wires, no shifter)
    fixed = [Signal(signed(12), name=f"fixed{k}") for k in range(16)]
    m.d.comb += [f.eq(rtl_round_shift(x, k)) for k, f in enumerate(fixed)]
    lo, hi = (-(1 << 6), 1 << 6) if shape.signed else (0, 1 << 6)
    values = np.arange(lo, hi)
    failures = []

    async def bench(ctx):
        for shift in range(16):
            for v in values:
                ctx.set(x, int(v))
                ctx.set(s, shift)
                got = (ctx.get(y), ctx.get(z), ctx.get(fixed[shift]))
                want = (int(round_shift(v, shift)), int(requantize(v, shift, 4)),
                        int(round_shift(v, shift)))
                if got != want:
                    failures.append((int(v), shift, got, want))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, failures[:5]
