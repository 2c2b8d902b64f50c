"""Softmax: golden-model unit tests and quick Amaranth-simulator tests of the RTL."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.numbers import fx_to_float
from attnforge.golden.softmax import (SoftmaxFormat, beats_out, error_stats, exp_fx, peaked_row,
                                      random_row, softmax_float, softmax_fx, split_beats)
from attnforge.rtl import build, verilog
from attnforge.rtl.softmax import Softmax
from attnforge.testbench.quick import source

FMT = SoftmaxFormat()


# ------------------------------------------------------------------ golden model

def test_exp_hand_worked():
    # d = 0 -> exactly 1.0; d = ln2 (one octave) -> 0.5; large d underflows to 0.
    assert exp_fx([0], FMT)[0] == 1 << FMT.exp_frac
    one_octave = round(np.log(2) * (1 << FMT.in_frac))          # 177 = 0.6914 real
    e = exp_fx([one_octave], FMT)[0] / (1 << FMT.exp_frac)
    assert abs(e - np.exp(-one_octave / 256)) < 2e-3
    assert exp_fx([40 << FMT.in_frac], FMT)[0] == 0
    assert exp_fx([(1 << 16) - 1], FMT)[0] == 0       # largest distance: no wrap


def test_exp_monotone_and_close():
    d = np.arange(0, 1 << 13)
    e = exp_fx(d, FMT)
    assert np.all(np.diff(e) <= 0)
    ref = np.exp(-d / (1 << FMT.in_frac)) * (1 << FMT.exp_frac)
    # table_bits = 6: the exponent is rounded to 1/64, relative error <= ln2 / 128 = 0.0054,
    # plus at most 1 unit from rounding the shifted table value.
    assert np.all(np.abs(e - ref) <= 0.006 * ref + 1)


def test_table_endpoints():
    assert FMT.table[0] == 1 << FMT.exp_frac
    assert np.all(np.diff(FMT.table) < 0)
    assert FMT.table[-1] > 1 << (FMT.exp_frac - 1)


def test_hand_worked_rows():
    assert list(softmax_fx([123], FMT)) == [256]                         # length 1 -> 1.0
    assert list(softmax_fx([-32768], FMT)) == [256]
    assert list(softmax_fx([5, 5], FMT)) == [128, 128]                   # ties split evenly
    assert list(softmax_fx([7] * 4, FMT)) == [64] * 4
    assert list(softmax_fx([32767, -32768], FMT)) == [256, 0]            # extreme spread
    # equal scores over 3: 1/3 = 85.33 LSB -> 85
    assert list(softmax_fx([0, 0, 0], FMT)) == [85, 85, 85]


def test_shift_invariance():
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = random_row(rng, 20, FMT, 1.0)
        assert np.array_equal(softmax_fx(x, FMT), softmax_fx(x + 1000, FMT))


@pytest.mark.parametrize("kind", ["random", "peaked"])
@pytest.mark.parametrize("length", [1, 2, 7, 64])
def test_error_within_target(kind, length):
    rng = np.random.default_rng(length)
    make = random_row if kind == "random" else peaked_row
    rows = [make(rng, length, FMT) for _ in range(200)]
    stats = error_stats(rows, FMT)
    assert stats["max_abs"] <= 2.0 ** -8, stats


def test_sum_close_to_one():
    rng = np.random.default_rng(7)
    for _ in range(100):
        p = softmax_fx(random_row(rng, 64, FMT), FMT)
        assert abs(int(p.sum()) - 256) <= 64 * 0.5 + 1


def test_row_length_checked():
    with pytest.raises(ValueError, match="row length"):
        softmax_fx(np.zeros(FMT.max_len + 1, dtype=np.int64), FMT)
    with pytest.raises(ValueError, match="scores"):
        softmax_fx([1 << 15], FMT)


def test_beats_roundtrip_and_overflow():
    fmt = SoftmaxFormat(max_len=8)
    vals, idx = [3, 1, 4, 1, 5], [10, 11, 12, 13, 14]
    out = beats_out(split_beats(vals, idx, 4), 4, fmt)
    assert [b["count"] for b in out] == [4, 1] and out[-1]["last"] == 1
    assert out[1]["index"] == [14, 0, 0, 0] and out[1]["prob"][1:] == [0, 0, 0]
    flat = out[0]["prob"] + out[1]["prob"][:1]
    assert flat == list(softmax_fx(vals, fmt))
    long = beats_out(split_beats(list(range(11)), list(range(11)), 4), 4, fmt)
    assert len(long) == 2 and all(b["overflow"] for b in long)
    assert long[0]["prob"] + long[1]["prob"] == list(softmax_fx(list(range(8)), fmt))


# ------------------------------------------------------------------ generator parameters

@pytest.mark.parametrize("name, value", [
    ("lanes", 0), ("lanes", 17), ("max_len", 2), ("max_len", 10), ("in_bits", 1),
    ("in_frac", 17), ("out_frac", 1), ("out_frac", 13), ("table_bits", 11), ("index_bits", 0),
])
def test_init_wrong(name, value):
    with pytest.raises(ValueError, match=name):
        Softmax(**{name: value})


def test_emits_verilog():
    text = verilog(build("softmax", lanes=2, max_len=8), name="softmax")
    assert "module softmax" in text


# ------------------------------------------------------------------ Amaranth simulation

def simulate(dut, rows, *, gaps=0.3, stalls=0.3, seed=0, max_cycles=200000):
    """Drive rows (lists of input beats) into ``dut`` with random gaps and stalls; return the
    output beats and the cycle count."""
    rng = random.Random(seed)
    beats = [b for row in rows for b in row]
    got = []
    state = {"cycles": 0, "done": False}
    n_expected = sum(len(beats_out(r, dut.lanes, dut.fmt)) for r in rows)

    async def sink(ctx):
        while len(got) < n_expected and state["cycles"] < max_cycles:
            ready = rng.random() >= stalls
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            state["cycles"] += 1
            if ready and valid:
                got.append({"prob": list(payload.prob), "index": list(payload.index),
                            "count": payload.count, "last": payload.last,
                            "overflow": payload.overflow})
        ctx.set(dut.o.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source(dut.i, beats, rng, gaps), background=True)
    sim.add_testbench(sink)
    sim.run()
    return got, state["cycles"]


def normalize(b):
    return {"prob": [int(x) for x in b["prob"]], "index": [int(x) for x in b["index"]],
            "count": int(b["count"]), "last": int(b["last"]), "overflow": int(b["overflow"])}


@pytest.mark.parametrize("params", [dict(lanes=2, max_len=8), dict(lanes=4, max_len=16,
                                                                     in_bits=10, in_frac=6)])
def test_sim_random_rows(params):
    dut = Softmax(**params)
    rng = np.random.default_rng(5)
    rows = []
    for k in range(40):
        length = int(rng.integers(1, dut.max_len + 3))    # a few too-long rows
        fmt = dut.fmt
        if k % 4 == 0:
            x = np.full(length, int(rng.integers(-50, 50)))
        elif k % 4 == 1:
            x = peaked_row(rng, length, fmt)
        else:
            x = random_row(rng, length, fmt, 3.0)
        idx = rng.integers(0, 1 << dut.index_bits, length)
        beats = split_beats(x, idx, dut.lanes)
        if k % 5 == 0:                                      # count 0 in a full last beat
            if beats[-1]["count"] == dut.lanes:
                beats[-1]["count"] = 0
        rows.append(beats)
    got, _ = simulate(dut, rows)
    exp = [b for r in rows for b in beats_out(r, dut.lanes, dut.fmt)]
    assert [normalize(g) for g in got] == exp


def test_sim_throughput_bound():
    """Without gaps and stalls a row of L elements costs at most ``row_cycles(L)`` cycles."""
    dut = Softmax(lanes=4, max_len=32)
    rng = np.random.default_rng(9)
    rows = [split_beats(random_row(rng, 32, dut.fmt), np.arange(32), 4) for _ in range(6)]
    got, cycles = simulate(dut, rows, gaps=0, stalls=0)
    assert len(got) == 6 * 8
    assert cycles <= 6 * dut.row_cycles(32) + 8 + dut.recip_bits, cycles
