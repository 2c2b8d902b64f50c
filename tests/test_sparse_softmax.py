"""The sparse softmax composition: its golden model is the composition of the detector's and
the softmax's, and the RTL (four Components joined by ``wiring.connect``) matches it in the
Amaranth simulator under gaps and stalls (the cocotb regression runs it on Verilator)."""

import random

import pytest
from amaranth.sim import Simulator

from attnforge.golden.detector import Command, Gran, Mode
from attnforge.golden.softmax import softmax_fx
from attnforge.golden.sparse_softmax import SparseSoftmaxModel
from attnforge.rtl import build
from attnforge.testbench import quick
from attnforge.testbench.detector import bad_ops, expected_beats, mask_fields, random_ops
from attnforge.testbench.sparse_softmax import model_of, row_fields

SMALL = dict(per_beat=4, max_len=16, score_bits=8, sched_lanes=2, out_per_beat=2, in_frac=4)


def test_golden_by_hand():
    """Top-2 of a 5-element row: columns 1 and 3 survive; their softmax is that of the two
    scores alone, cut into one beat of 2; a threshold row that keeps nothing is one empty
    beat; a bad command is one error beat."""
    model = SparseSoftmaxModel(**SMALL)
    row = [[-3, 40, 0, 32, -128]]
    ops = [(Command(mode=Mode.TOPK, gran=Gran.ELEM, length=5, k=2), row),
           (Command(mode=Mode.THRESHOLD, gran=Gran.ELEM, length=5, threshold=127), row),
           (Command(mode=Mode.TOPK, gran=Gran.ELEM, length=0, k=1), None)]
    results, out = model.run(ops)
    assert results[0]["indices"] == [1, 3] and results[0]["scores"] == [40, 32]
    p = [int(x) for x in softmax_fx([40, 32], model.fmt)]
    assert out[0] == {"data": p, "index": [1, 3], "count": 2, "last": 1, "error": 0}
    assert p[0] > p[1] and abs(sum(p) - 256) <= 2
    assert out[1] == {"data": [0, 0], "index": [0, 0], "count": 0, "last": 1, "error": 0}
    assert out[2] == {"data": [0, 0], "index": [0, 0], "count": 0, "last": 1, "error": 1}
    assert len(out) == 3


@pytest.mark.parametrize("params, seed", [(dict(SMALL, out_per_beat=3), 2),
                                          (dict(SMALL, per_beat=2, out_per_beat=4), 3)])
def test_rtl_matches_composed_golden(params, seed):
    dut = build("sparse_softmax", **params)
    model = model_of(dut)
    rng = random.Random(seed)
    ops = random_ops(rng, model.detector, 30, bad_p=0.05) + bad_ops(rng, model.detector, 2)
    cmds, beats, masks, _ = expected_beats(model.detector, ops, rng)
    _, rows = model.run(ops)
    got_masks, got_rows = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(quick.source(dut.cmd, cmds, rng, 0.3))
    sim.add_testbench(quick.source(dut.i, beats, rng, 0.3))
    sim.add_testbench(quick.sink(dut.mask, got_masks, len(masks), rng, 0.3, mask_fields))
    sim.add_testbench(quick.sink(dut.o, got_rows, len(rows), rng, 0.3, row_fields))
    sim.add_testbench(quick.watchdog(40 * len(beats) + 100 * len(ops) + 500), background=True)
    sim.run()
    assert got_masks == masks
    assert got_rows == rows


def test_bad_parameter_is_one_line():
    with pytest.raises(ValueError, match=r"^in_frac must be an integer in \[0, 4\], not 5$"):
        build("sparse_softmax", score_bits=4, in_frac=5)
