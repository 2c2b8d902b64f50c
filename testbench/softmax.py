"""cocotb testbench of the streaming softmax, checked against :mod:`attnforge.golden.softmax`.

Rows are generated first (random, peaked, equal scores, one dominant score, extreme values,
length 1, maximum length, empty rows, too long rows, sparse rows with random column indices,
partial beats anywhere, junk in the lanes past ``count``, rows with a beat flagged ``error``,
full beats whose ``count`` says more than ``per_beat`` -- read as ``per_beat``);
the golden model turns them into the
expected output beats; the driver puts the beats on ``i`` with random gaps while the monitor
takes ``o`` under random stalls, and the scoreboard checks every beat in order.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time

from ..golden.softmax import beats_out, peaked_row, random_row, split_beats
from ..rtl.softmax import in_layout, out_layout
from .kit import Bench, SIZE_BINS, scale, size_bin

PERIOD_NS = 10

#: The quick subset a mutant run uses (``make mutants``).
MUTANT_TESTS = ("random_rows", "reset_mid_stream", "latency", "kill_rows")

#: Directed rows (each sent as one beat, its first score in lane 0) that kill this unit's
#: mutant survivors of ``MUTANTS=6 MUTANT_SEED=1 make mutants UNITS=softmax`` (default
#: format: in_bits 16, in_frac 8, out_frac 8, table_bits 7), found with the golden model:
#: random rows exercise both places, but only few rows turn the change into a different
#: rounded probability.
KILL_ROWS = (
    # bit 2 of exponential-table entry 52 cleared in lane 0 of the normalization
    # (:func:`table_bit_row`: the row's lane-0 probability changes)
    (-2024, -1482), (-1492, -1433), (-1314, -1146),
    # the comparison of quotient step 17 of 20 of the reciprocal inverted in the copy of the
    # step that feeds only the remainder handed to the last stage (the Verilog repeats each
    # step per use): the last two quotient bits change when step 18 subtracts (the golden
    # model with that divider emulated, rows of 1-4 scores in [-3000, 3000): ~1 in 5 000)
    (-14, -87, 1726), (-2285, 146, -177, -33), (719, 150, 1240),
)


def table_bit_row(fmt, entry, bit, span=600, tops=range(-2000, 2000, 7)):
    """A two-score row ``(x0, x1)`` whose lane-0 probability (golden
    :func:`attnforge.golden.softmax.normalize` at the row's unmutated statistics) changes
    when ``bit`` of exponential-table entry ``entry`` is flipped, or None (a search over
    ``x1`` in ``tops``, ``x0`` in ``[x1 - span, x1]``; seconds)."""
    from ..golden import softmax as gs

    class Flipped(type(fmt)):
        @property
        def table(self):
            t = super().table.copy()
            t[entry] ^= 1 << bit
            return t
    flipped = Flipped(**{f: getattr(fmt, f) for f in fmt.__dataclass_fields__})
    for x1 in tops:
        x = np.stack([np.arange(x1 - span, x1 + 1), np.full(span + 1, x1)], axis=1)
        for row in x:
            k, _, r = gs.row_stats(row, fmt)
            if gs.normalize(row[:1], k, r, fmt)[0] != gs.normalize(row[:1], k, r, flipped)[0]:
                return tuple(int(v) for v in row)
    return None


def make_rows(rng, unit, n_rows, *, partial=0.3):
    """Rows as input-beat lists covering the corner cases listed in the module docstring."""
    fmt, P, L = unit.fmt, unit.per_beat, unit.max_len
    lo, hi = -(1 << (fmt.in_bits - 1)), (1 << (fmt.in_bits - 1)) - 1
    nrng = np.random.default_rng(rng.getrandbits(32))
    rows = []
    for k in range(n_rows):
        kind = k % 9
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
            x = random_row(nrng, L + rng.randint(1, 2 * P + 1), fmt, 2.0)
        elif kind == 6:                                   # empty row
            x = np.zeros(0, dtype=np.int64)
        else:                                             # kind 8: one beat flags error
            x = random_row(nrng, length, fmt, 4.0)
        n = len(x)
        if unit.index_bits and rng.random() < 0.5:        # sparse: sorted random columns
            idx = np.sort(nrng.choice(1 << unit.index_bits, n, replace=n > (1 << unit.index_bits)))
        else:
            idx = np.arange(n) % (1 << max(unit.index_bits, 1))
        sizes = None
        if n and rng.random() < partial:                  # partial (and empty) beats anywhere
            sizes, left = [], n
            while left:
                sizes.append(rng.randint(0, min(P, left)))
                left -= sizes[-1]
        beats = split_beats(x, idx, P, sizes)
        if kind == 8:
            beats[rng.randrange(len(beats))]["error"] = 1
        count_max = (1 << P.bit_length()) - 1             # what the count field can hold
        if count_max > P and rng.random() < 0.05:         # out of contract: counts as P
            for b in beats:
                if b["count"] == P:
                    b["count"] = rng.randint(P + 1, count_max)
        for b in beats:                                   # junk past count: must be ignored
            for j in range(b["count"], P):
                if rng.random() < 0.5:
                    b["data"][j] = rng.randint(lo, hi)
                    b["index"][j] = rng.randrange(1 << max(unit.index_bits, 1))
        rows.append(beats)
    return rows


class SoftmaxBench(Bench):
    """Source on ``i``, monitor + scoreboard on ``o``; :meth:`play` queues rows and their
    golden output beats."""

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        super().__init__(dut, "softmax", gaps=gaps, stalls=stalls)
        u = self.unit
        self.i = self.source("i", in_layout(u.per_beat, u.in_bits, u.index_bits))
        self.out_times = []
        self.o, self.board = self.sink("o", out_layout(u.per_beat, u.out_frac, u.index_bits),
                                       self.compare, callback=self._seen)
        self.beats = 0
        P = u.per_beat
        # Contract bins: row length against max_len (over max = too long, flagged), the count
        # of every input beat (0..P: partial beats drive each lane's enable), dense or sparse
        # indices, rows flagged error on input, output beats (count class, last, error) and
        # the probabilities' corners (0 and 1.0) in kept lanes.
        self.coverpoint("row_length", SIZE_BINS)
        self.coverpoint("in_count", list(range(P + 1))
                        + (["over per_beat"] if (1 << P.bit_length()) - 1 > P else []))
        self.coverpoint("row_shape", ["full beats", "partial beats", "empty beat"])
        if u.index_bits:
            self.coverpoint("indices", ["dense", "sparse"])
        self.coverpoint("in_error", [0, 1])
        self.coverpoint("out_beat", [(c, l, e) for c in ("empty", "partial", "full")
                                     for l in (0, 1) for e in (0, 1)])
        self.coverpoint("prob_corner", ["zero", "one"])

    def _seen(self, v):
        self.out_times.append(get_sim_time("ns"))
        n, P = int(v.count), self.unit.per_beat
        self.cover("out_beat", ("empty" if n == 0 else "full" if n == P else "partial",
                                int(v.last), int(v.error)))
        for x in set(int(x) for x in v.data[:n]):
            if x == 0:
                self.cover("prob_corner", "zero")
            elif x == 1 << self.unit.out_frac:
                self.cover("prob_corner", "one")

    def _cover_row(self, beats):
        P = self.unit.per_beat
        counts = [min(b["count"], P) for b in beats]
        self.cover("row_length", size_bin(sum(counts), self.unit.max_len))
        for b in beats:
            self.cover("in_count", b["count"] if b["count"] <= P else "over per_beat")
        self.cover("row_shape", "empty beat" if 0 in counts and len(counts) > 1 else
                   "full beats" if all(c == P for c in counts[:-1]) else "partial beats")
        if self.unit.index_bits and sum(counts):
            idx = [i for b in beats for i in b["index"][:b["count"]]]
            self.cover("indices", "dense" if idx == [i % (1 << self.unit.index_bits)
                                                     for i in range(len(idx))] else "sparse")
        self.cover("in_error", int(any(b.get("error", 0) for b in beats)))

    def compare(self, expected, actual):
        got = {"data": [int(x) for x in actual.data], "count": int(actual.count),
               "last": int(actual.last), "error": int(actual.error)}
        exp = {k: expected[k] for k in got}
        if self.unit.index_bits:
            got["index"] = [int(x) for x in actual.index]
            exp["index"] = expected["index"]
        return None if got == exp else f"expected {exp}, got {got}"

    def play(self, rows):
        for beats in rows:
            self.board.expect_all(beats_out(beats, self.unit.per_beat, self.unit.fmt))
            self.i.send_all(beats)
            self.beats += len(beats)
            self._cover_row(beats)

    async def finish(self):
        await super().finish(60 * (self.beats + 10) + 4 * self.unit.latency + 500)


@cocotb.test()
async def random_rows(dut):
    """Hundreds of rows of every kind under random input gaps and output stalls."""
    tb = SoftmaxBench(dut)
    await tb.start()
    tb.play(make_rows(tb.rng, tb.unit, scale(400)))
    await tb.finish()
    dut._log.info("checked %d beats", tb.board.checked)


@cocotb.test()
async def heavy_backpressure(dut):
    """Long output stalls and long input gaps: payload held, nothing lost or duplicated."""
    tb = SoftmaxBench(dut, gaps=0.7, stalls=0.8)
    await tb.start()
    tb.play(make_rows(tb.rng, tb.unit, 60))
    await tb.finish()


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset while rows are loading, being summed and being emitted drops them all; the next
    rows come out exactly as if the unit had just powered up."""
    tb = SoftmaxBench(dut, gaps=0, stalls=0.9)
    u = tb.unit
    await tb.start()
    await tb.reset()                    # a reset of the idle unit changes nothing
    for round_ in range(4):
        tb.play(make_rows(tb.rng, u, 3, partial=0))
        await ClockCycles(dut.clk, tb.rng.randint(1, 2 * u.max_beats + u.latency))
        await tb.reset()
        await ClockCycles(dut.clk, 2)
        assert not dut.o__valid.value, "an output survived the reset"
    tb.play(make_rows(tb.rng, u, 40))
    await tb.finish()


@cocotb.test()
async def kill_rows(dut):
    """The directed rows of :data:`KILL_ROWS` that fit the unit (scores in range, one beat),
    each as one beat, first score in lane 0: every output beat compared."""
    tb = SoftmaxBench(dut, gaps=0.2, stalls=0.2)
    u = tb.unit
    lo, hi = -(1 << (u.fmt.in_bits - 1)), (1 << (u.fmt.in_bits - 1)) - 1
    rows = [list(r) for r in KILL_ROWS if all(lo <= v <= hi for v in r)]
    await tb.start()
    tb.play([split_beats(r, list(range(len(r))), u.per_beat) for r in rows
             if len(r) <= min(u.per_beat, u.max_len)])
    await tb.finish()


@cocotb.test()
async def latency(dut):
    """A one-beat row into an idle unit: its output beat is valid ``latency`` cycles after the
    input beat was accepted."""
    tb = SoftmaxBench(dut, gaps=0, stalls=0)
    u = tb.unit
    await tb.start()
    tb.play([split_beats([1, 2, 3][:u.per_beat], [0, 1, 2][:u.per_beat], u.per_beat)])
    await tb.finish()
    cycles = (tb.out_times[0] - tb.i.accept_times[0]) / PERIOD_NS
    # A handshake seen at edge t was accepted in the cycle before it; so was the output.
    dut._log.info("latency %d cycles (property %d)", cycles, u.latency)
    assert cycles == u.latency, (cycles, u.latency)
    tb.figures({"latency": int(cycles)})


@cocotb.test()
async def throughput(dut):
    """No gaps, no stalls: back-to-back dense rows of 4, 16, 64, 256, 1024 elements (those up
    to max_len, and max_len) stream at one beat per cycle in and out; the figures go to the
    benchmark. Rows of at least 8 beats must reach 0.9 * per_beat elements per cycle."""
    tb = SoftmaxBench(dut, gaps=0, stalls=0)
    u = tb.unit
    await tb.start()
    nrng = np.random.default_rng(1)
    figures = {}
    for length in sorted({n for n in (4, 16, 64, 256, 1024) if n <= u.max_len} | {u.max_len}):
        n_rows = max(4, min(24, 1024 // length))
        rows = [split_beats(random_row(nrng, length, u.fmt), np.arange(length)
                            % (1 << max(u.index_bits, 1)), u.per_beat) for _ in range(n_rows)]
        first_in, first_out = len(tb.i.accept_times), len(tb.out_times)
        tb.play(rows)
        await tb.finish()
        t_in = tb.i.accept_times[first_in:]
        t_out = tb.out_times[first_out:]
        beats = len(t_in)
        cycles = (t_out[-1] - t_out[0]) / PERIOD_NS + 1        # output side, first to last beat
        rate = n_rows * length / cycles
        figures[str(length)] = {"rows": n_rows, "beats": beats, "cycles": int(cycles),
                                "elements_per_cycle": rate,
                                "input_cycles": int((t_in[-1] - t_in[0]) / PERIOD_NS + 1)}
        dut._log.info("rows of %d: %d beats in %d cycles, %.3f elements/cycle", length, beats,
                      cycles, rate)
        if length >= 8 * u.per_beat:
            assert rate >= 0.9 * u.per_beat, (length, rate)
        await ClockCycles(dut.clk, 4)
    tb.figures({"per_beat": u.per_beat, "max_len": u.max_len, "latency": u.latency,
                "rows": figures})
