"""cocotb testbench of the sparse softmax (detector -> softmax over the kept granules), checked
against :class:`attnforge.golden.sparse_softmax.SparseSoftmaxModel`, the composition of the two
units' golden models.

The detector's stimulus generators are reused as they are (:func:`attnforge.testbench.detector
.random_ops`, :func:`~attnforge.testbench.detector.bad_ops`): commands and score beats go on
``cmd`` and ``i`` with random gaps; the ``mask`` and ``o`` monitors take beats under random
stalls and two scoreboards check every beat in order.
"""

import cocotb
from cocotb.triggers import ClockCycles

from ..golden.detector import Command, Gran, Mode
from ..golden.numbers import value_range
from ..golden.sparse_softmax import SparseSoftmaxModel
from ..rtl.detector import cmd_layout, mask_layout, score_layout
from ..rtl.softmax import out_layout
from .detector import (bad_ops, compare_mask, cover_command, declare_command_coverage,
                       expected_beats, random_ops)
from .kit import Bench, scale

__all__ = ["model_of", "compare_row", "SparseSoftmaxBench"]

#: The quick subset a mutant run uses (``make mutants``).
MUTANT_TESTS = ("random_rows", "reset_mid_row", "kill_rows")

#: Directed rows (8-bit scores, sent whole: element granularity, threshold at the minimum)
#: whose probabilities depend on the reciprocal's last quotient bit: found with the golden
#: model for survivor #2 of ``MUTANTS=5 MUTANT_SEED=1 make mutants UNITS=sparse_softmax``
#: (bit 13 of the partial remainder inverted in the subtraction of quotient step 17 of 19 of
#: the restoring divider, ``rtl/softmax.py:239``; since ``rem`` is a Python expression the
#: Verilog holds several copies of each step, and the mutated copy reaches only the
#: remainder handed to the last stage, and only when steps 17 and 18 both subtract: the last
#: quotient bit flips), by emulating that divider over random rows of 1-8 scores: about
#: one row in 10 000 tells it apart, so the random campaign (300 rows) misses it.
KILL_ROWS = (
    (-110, 73, 59, 1, -114, -25),
    (-69, 15, 13, 22, 47, -70, -91),
    (-33, -31, -57, -50, -93),
    (22, 43, 24, -57, 4, 64),
)


def model_of(unit):
    """The golden model configured like the generator object ``unit``."""
    sm = unit.softmax_params
    return SparseSoftmaxModel(**unit.detector_params, out_per_beat=sm["per_beat"],
                              in_frac=sm["in_frac"], out_frac=sm["out_frac"],
                              table_bits=sm["table_bits"])


def row_fields(actual):
    """An ``o`` payload (cocotb view or Amaranth constant) as the model's dict."""
    return {"data": [int(x) for x in actual["data"]], "index": [int(x) for x in actual["index"]],
            "count": int(actual["count"]), "last": int(actual["last"]),
            "error": int(actual["error"])}


def compare_row(expected, actual):
    got = row_fields(actual)
    return None if got == expected else f"expected {expected}, got {got}"


class SparseSoftmaxBench(Bench):
    """Drivers, monitors and scoreboards around the composition (history since the last reset
    is kept because the detector's scheduler state spans operations)."""

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        super().__init__(dut, "sparse_softmax", gaps=gaps, stalls=stalls)
        u = self.unit
        self.model = model_of(u)
        sm = u.softmax_params
        self.cmd = self.source("cmd", cmd_layout(u.max_len, u.score_bits))
        self.i = self.source("i", score_layout(u.per_beat, u.score_bits))
        self.mask, self.masks = self.sink("mask", mask_layout(u.max_len, u.sched_lanes),
                                          compare_mask, callback=lambda v: self.cover(
                                              "mask_lane", (int(v.lane), int(v.error))))
        self.o, self.rows = self.sink("o", out_layout(sm["per_beat"], sm["out_frac"],
                                                      sm["index_bits"]), compare_row,
                                      callback=self._cover_out)
        declare_command_coverage(self, self.model.detector)
        # Outputs: mask rows per scheduler lane with and without error; softmax beats by count
        # class and last, and the error row. The packer makes the rows dense, so a partial
        # beat is always a row's last and an empty one is a whole row (kept nothing, or the
        # error answer to a bad command: the only beats with error).
        self.coverpoint("mask_lane", [(lane, e) for lane in range(u.sched_lanes)
                                      for e in (0, 1)])
        self.coverpoint("out_beat", [("full", 0, 0), ("full", 1, 0), ("partial", 1, 0),
                                     ("empty", 1, 0), ("empty", 1, 1)])
        self.out_per_beat = sm["per_beat"]
        self.on_reset()

    def _cover_out(self, v):
        n = int(v.count)
        self.cover("out_beat", ("empty" if n == 0 else "full" if n == self.out_per_beat
                                else "partial", int(v.last), int(v.error)))

    def on_reset(self):
        self.ops, self.n_masks, self.n_rows, self.beats = [], 0, 0, 0

    def play(self, ops):
        """Queue ``ops`` after the current ones and expect their mask and output beats."""
        self.ops += ops
        for cmd, scores in ops:
            cover_command(self, self.model.detector, cmd, scores)
        _, _, masks, _ = expected_beats(self.model.detector, self.ops)
        _, rows = self.model.run(self.ops)
        self.masks.expect_all(masks[self.n_masks:])
        self.rows.expect_all(rows[self.n_rows:])
        self.n_masks, self.n_rows = len(masks), len(rows)
        cmds, beats, _, _ = expected_beats(self.model.detector, ops, self.rng)
        self.cmd.send_all(cmds)
        self.i.send_all(beats)
        self.beats += len(beats)

    async def finish(self):
        await super().finish(30 * self.beats + 80 * len(self.ops) + 300)


@cocotb.test()
async def random_rows(dut):
    """Random commands in every mode and granularity (rows that keep nothing, everything,
    ties), a few bad commands, random gaps on both inputs, stalls on both outputs."""
    tb = SparseSoftmaxBench(dut)
    await tb.start()
    tb.play(random_ops(tb.rng, tb.model.detector, scale(300), bad_p=0.05))
    await tb.finish()
    dut._log.info("checked %d rows, %d softmax beats", tb.masks.checked, tb.rows.checked)


@cocotb.test()
async def topk_element_rows(dut):
    """The DSA use: element granularity, top-k of every row, heavy back-pressure."""
    tb = SparseSoftmaxBench(dut, gaps=0.5, stalls=0.7)
    await tb.start()
    tb.play(random_ops(tb.rng, tb.model.detector, 80, grans=(Gran.ELEM,), modes=(Mode.TOPK,)))
    await tb.finish()


@cocotb.test()
async def reset_mid_row(dut):
    """A reset while rows are in every stage drops them; the next rows come out as from
    power-up (the scheduler's loads restart too)."""
    tb = SparseSoftmaxBench(dut, gaps=0, stalls=0.9)
    await tb.start()
    await tb.reset()                    # a reset of the idle unit changes nothing
    tb.play(random_ops(tb.rng, tb.model.detector, 6))
    await ClockCycles(dut.clk, 3 * tb.beats // 2 + 5)
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.o__valid.value and not dut.mask__valid.value, "an output survived the reset"
    await tb.reset_while_busy(lambda: tb.play(random_ops(tb.rng, tb.model.detector, 6)))
    tb.stalls = 0.3
    tb.play(random_ops(tb.rng, tb.model.detector, 60) + bad_ops(tb.rng, tb.model.detector, 3))
    await tb.finish()


@cocotb.test()
async def kill_rows(dut):
    """The directed rows of :data:`KILL_ROWS` that fit the unit, each kept whole."""
    tb = SparseSoftmaxBench(dut, gaps=0.2, stalls=0.2)
    await tb.start()
    m = tb.model.detector
    lo, hi = value_range(m.score_bits)
    tb.play([(Command(gran=Gran.ELEM, length=len(r), threshold=lo), [list(r)])
             for r in KILL_ROWS if len(r) <= m.max_len and all(lo <= v <= hi for v in r)])
    await tb.finish()


@cocotb.test()
async def every_score_difference(dut):
    """Rows that keep everything, each led by the largest score and then descending, so that
    together they hold every difference to the row maximum the score range allows, in every
    output lane (each lane has its own exponential unit): every entry the scores can reach of
    each unit's exponential table is read (random rows leave some unread)."""
    tb = SparseSoftmaxBench(dut, gaps=0.1, stalls=0.1)
    await tb.start()
    m = tb.model.detector
    lo, hi = value_range(m.score_bits)
    diffs = list(range(1, hi - lo + 1))
    ops = []
    for lead in range(1, tb.out_per_beat + 1):              # shifts each difference's lane
        for start in range(0, len(diffs), m.max_len - lead):
            row = [hi] * lead + [hi - d for d in diffs[start:start + m.max_len - lead]]
            ops.append((Command(gran=Gran.ELEM, length=len(row), threshold=lo), [row]))
    tb.play(ops)
    await tb.finish()
