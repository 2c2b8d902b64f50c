"""cocotb testbench of the streaming softmax, checked against :mod:`attnforge.golden.softmax`.

Rows are generated first (random, peaked, equal scores, one dominant score, extreme values,
length 1, maximum length, too long, sparse rows with random column indices); the golden model
turns them into the expected output beats; the driver puts the beats on ``i`` with random gaps
while the monitor takes ``o`` under random stalls, and the scoreboard checks every beat in order.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from ..golden.softmax import beats_out, peaked_row, random_row, split_beats
from ..rtl.softmax import in_layout, out_layout
from .kit import (BackPressure, Scoreboard, StreamSink, StreamSource, make_rng, reset, start,
                  unit_under_test)


def compare(expected, actual):
    got = {"prob": [int(x) for x in actual.prob], "index": [int(x) for x in actual.index],
           "count": int(actual.count), "last": int(actual.last),
           "overflow": int(actual.overflow)}
    return None if got == expected else f"expected {expected}, got {got}"


def make_rows(rng, unit, n_rows):
    """Rows as input-beat lists covering the corner cases listed in the module docstring."""
    fmt, P, L = unit.fmt, unit.lanes, unit.max_len
    lo, hi = -(1 << (fmt.in_bits - 1)), (1 << (fmt.in_bits - 1)) - 1
    nrng = np.random.default_rng(rng.getrandbits(32))
    rows = []
    for k in range(n_rows):
        kind = k % 8
        length = rng.choice([1, L, rng.randint(1, L), rng.randint(1, L)])
        if kind == 0:
            x = random_row(nrng, length, fmt, rng.choice([0.3, 2.0, 8.0]))
        elif kind == 1:
            x = peaked_row(nrng, length, fmt)
        elif kind == 2:                                   # equal scores (all ties)
            x = np.full(length, rng.randint(lo, hi))
        elif kind == 3:                                   # one dominant score
            x = np.full(length, rng.randint(lo, 0))
            x[rng.randrange(length)] = rng.randint(0, hi)
        elif kind == 4:                                   # extremes: most negative / positive
            x = nrng.choice([lo, hi, 0, -1, 1], length)
        elif kind == 5:                                   # too long: tail dropped, flagged
            length = L + rng.randint(1, 2 * P + 1)
            x = random_row(nrng, length, fmt, 2.0)
        else:
            x = random_row(nrng, length, fmt, 4.0)
        # Sparse rows: sorted random kept columns; dense rows: 0..L-1.
        if rng.random() < 0.5:
            idx = np.sort(nrng.choice(1 << unit.index_bits, length,
                                      replace=length > (1 << unit.index_bits)))
        else:
            idx = np.arange(length) % (1 << unit.index_bits)
        beats = split_beats(x, idx, P)
        if beats[-1]["count"] == P and rng.random() < 0.3:
            beats[-1]["count"] = 0                        # 0 means all lanes
        # Lanes past count carry junk: the unit must ignore it.
        n = beats[-1]["count"] or P
        for j in range(n, P):
            beats[-1]["data"][j] = rng.randint(lo, hi)
            beats[-1]["index"][j] = rng.randrange(1 << unit.index_bits)
        rows.append(beats)
    return rows


class SoftmaxBench:
    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        self.dut = dut
        self.unit = unit_under_test()
        u = self.unit
        self.rng = make_rng("softmax")
        self.i = StreamSource(dut, "i", in_layout(u.lanes, u.in_bits, u.index_bits), self.rng,
                              gaps=BackPressure(self.rng, gaps))
        self.board = Scoreboard("softmax.o", compare)
        self.stalls = stalls
        self.o = self._sink()
        self.beats = 0

    def _sink(self):
        u = self.unit
        return StreamSink(self.dut, "o", out_layout(u.lanes, u.out_frac, u.index_bits),
                          self.rng, self.board, stalls=BackPressure(self.rng, self.stalls))

    def play(self, rows):
        for beats in rows:
            self.board.expect_all(beats_out(beats, self.unit.lanes, self.unit.fmt))
            self.i.send_all(beats)
            self.beats += len(beats)

    async def finish(self):
        u = self.unit
        await self.board.wait(self.dut.clk,
                              (u.recip_bits + 20) * (self.beats + 10) + 500)

    async def reset(self):
        self.o.stop()
        await reset(self.dut)
        self.o = self._sink()


@cocotb.test()
async def random_rows(dut):
    """Hundreds of rows of every kind under random input gaps and output stalls."""
    await start(dut)
    tb = SoftmaxBench(dut)
    tb.play(make_rows(tb.rng, tb.unit, 400))
    await tb.finish()
    dut._log.info("checked %d beats", tb.board.checked)


@cocotb.test()
async def heavy_backpressure(dut):
    """Long output stalls and long input gaps: payload held, nothing lost or duplicated."""
    await start(dut)
    tb = SoftmaxBench(dut, gaps=0.7, stalls=0.8)
    tb.play(make_rows(tb.rng, tb.unit, 60))
    await tb.finish()


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset while one row is loading and another is being emitted drops both; the next
    rows come out exactly as if the unit had just powered up."""
    await start(dut)
    tb = SoftmaxBench(dut, gaps=0, stalls=0.9)
    u = tb.unit
    # Two rows fully in, one half in; outputs barely drained.
    rows = make_rows(tb.rng, u, 2)
    before = []                     # outputs taken before the reset: a prefix of the golden
    tb.o.callback = before.append
    for beats in rows:
        tb.i.send_all(beats)
    tb.i.send_all(split_beats(np.zeros(u.max_len, dtype=np.int64), np.arange(u.max_len),
                              u.lanes)[:max(1, u.max_beats // 2)])
    for _ in range(3 * u.max_beats + u.recip_bits + 4):
        await RisingEdge(dut.clk)
    while not tb.i.idle:
        await RisingEdge(dut.clk)
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.o__valid.value, "an output survived the reset"
    golden = [b for beats in rows for b in beats_out(beats, u.lanes, u.fmt)]
    assert len(before) < len(golden), "the reset came too late to cut a row"
    for k, (exp, got) in enumerate(zip(golden, before)):
        assert compare(exp, got) is None, f"before reset, beat {k}: {compare(exp, got)}"
    tb.board = Scoreboard("softmax.o", compare)
    tb.o.callback = tb.board
    tb.stalls = 0.3
    tb.play(make_rows(tb.rng, u, 40))
    await tb.finish()


@cocotb.test()
async def throughput(dut):
    """No gaps, no stalls: back-to-back rows of max_len cost at most ``row_cycles`` each
    (steady state ``L / (2 B + recip_bits + 3)`` elements per cycle)."""
    await start(dut)
    tb = SoftmaxBench(dut, gaps=0, stalls=0)
    u = tb.unit
    nrng = np.random.default_rng(1)
    n_rows = 8
    rows = [split_beats(random_row(nrng, u.max_len, u.fmt), np.arange(u.max_len), u.lanes)
            for _ in range(n_rows)]
    t0 = None
    tb.play(rows)
    while tb.board.checked == 0:
        await RisingEdge(dut.clk)
    t0 = get_sim_time("ns")
    await tb.finish()
    cycles = (get_sim_time("ns") - t0) / 10
    per_row = (cycles - (u.max_beats - 1)) / (n_rows - 1)   # first beat to first beat
    dut._log.info("%.1f cycles per row of %d: %.3f elements/cycle (bound %d)", per_row,
                  u.max_len, u.max_len / per_row, u.row_cycles(u.max_len))
    assert per_row <= u.row_cycles(u.max_len) + 1, (per_row, u.row_cycles(u.max_len))
