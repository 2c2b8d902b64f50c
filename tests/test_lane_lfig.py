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


def test_submodules_to_depth():
    """The per-part synthesis keeps the Amaranth submodules down to ``depth`` levels below the
    top (``core.front.det``), not the shared modules nor Amaranth's ``$``-suffixed names."""
    from attnforge.synth.yosys import submodules
    text = "\n".join(["module lane(clk, rst);", "module \\lane.core (clk);",
                      "module \\lane.core.front (clk);", "module \\lane.core.front.det (clk);",
                      "module \\lane.core.front.det.select (clk);", "module \\lane.out(clk);",
                      "module \\lane.core.x$12 (clk);", "module attnforge_rmmu_pe_r4(act);"])
    assert submodules(text, "lane", 3) == ["core", "core.front", "core.front.det", "out"]
    assert submodules(text, "lane", 1) == ["core", "out"]


def test_memory_bits_per_module():
    """``dump -m t:$mem_v2`` text -> bits per module (WIDTH x SIZE of each memory)."""
    from attnforge.synth.yosys import _memory_bits_by_module
    dump = "\n".join(["autoidx 9", "module \\lane.out", "  cell $mem_v2 $m1",
                      "    parameter \\SIZE 16", "    parameter \\WIDTH 32'00000000000000000000000000100000",
                      "  end", "end", "module \\lane.core.feed", "  cell $mem_v2 $m2",
                      "    parameter \\WIDTH 8", "    parameter \\SIZE 4", "  end",
                      "  cell $mem_v2 $m3", "    parameter \\SIZE 2", "    parameter \\WIDTH 3",
                      "  end", "end"])
    assert _memory_bits_by_module(dump) == {"lane.out": 512, "lane.core.feed": 38}


def test_bench_plot(tmp_path):
    """benchmarks/lane.py's figure: model curves vs T and the RTL-measured heads."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "lane_bench", Path(__file__).parents[1] / "benchmarks" / "lane.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cyc = {str(t): {m: t * (3 - i) for i, m in enumerate(bench.MODES)} for t in bench.TS}
    rtl = {"p": {"params": dict(max_t=32, d=8, rows=4, cols=2, est_rows=1, block=8),
                 "cycles": {"dense": {"rtl": 40, "model_rtl": 40, "model_pipelined": 30}},
                 "equal": True}}
    path = bench.plot(tmp_path / "x.png", cyc, cyc, rtl)
    assert path.read_bytes()[:4] == b"\x89PNG"
