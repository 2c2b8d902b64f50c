"""The lane's figures machinery (lfig): the ``schedule="rtl"`` cycle model at a second size
(golden/lane.py ``_rtl_schedule``), the per-submodule area table (synth/lane_area.py) and the
benchmark's figures (benchmarks/lane.py)."""

import numpy as np
import pytest

from attnforge.golden.attention import to_fx
from attnforge.golden.lane import LaneConfig, auto_config, cycles, int_projection, run_lane

SEED = 2024


def _heads(dut, params, cases):
    rng = np.random.default_rng(SEED)
    out = []
    for t, m, bits, k in cases:
        q, k_, v = (rng.normal(0, 1, (t, dut.d)) for _ in range(3))
        qi, ki, vi = to_fx(q, k_, v, dut.frac_bits)
        pq, pk = int_projection(dut.d, m, seed=int(rng.integers(1 << 16)))
        cfg = LaneConfig(t=t, m=m, est_bits=bits, granularity=f"{dut.block}x{dut.block}", k=k)
        out.append((auto_config(params, cfg, qi, ki, pq, pk), qi, ki, vi, pq, pk))
    return out


@pytest.mark.slow     # ~17 s of CPU (Amaranth simulator, three heads)
def test_rtl_cycles_equal_model_at_a_second_size():
    """A lane of another shape than the record's point (4 columns: an INT2 N-tile of 32 keys
    holds four 8x8 blocks, an INT4 one two; T = 8 and 16: one and two granules per row):
    the top level's status cycles equal ``cycles(..., schedule="rtl")`` exactly and the output
    rows are bit-exact. The front term (packer hand-off of the last N-tile's granules, the
    detector's select over the row's granules) differs on every head here from the constant
    measured at d = 8, m = 2, T = 32 on 2 columns, so the old model fails this test."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import expected_rows, lane_params, simulate_lane
    dut = Lane(max_t=16, d=8, max_m=8, rows=3, est_rows=1, cols=4, block=8)
    params = lane_params(dut)
    heads = _heads(dut, params, [(16, 8, 2, 1), (8, 4, 4, 1), (16, 2, 8, 2)])
    results = simulate_lane(dut, heads, seed=SEED)
    for (cfg, *h), (got, status, _) in zip(heads, results):
        ref = run_lane(params, cfg, *h)
        assert got == expected_rows(ref.out, dut.cols), cfg
        assert status["cycles"] == cycles(params, cfg, ref)["total"], cfg
