"""Lane drivers for the Amaranth simulator (quick tests and the benchmark's RTL points).

:func:`simulate_core` runs one head through :class:`attnforge.rtl.lane_core.LaneCore`: it loads
Q, K, V through ``load``, sends one ``tile`` command per query tile and (sparse mode) the
estimate's operand beats, which v0 takes from outside, formatted by
``RMMUModel.a_beats/w_beats`` from the golden descriptor trace
(:func:`attnforge.golden.lane.run_lane_rmmu`). It returns the output rows (assembled from the
A·V output beats) and the cycles from the first tile command to the last output beat.
The cocotb bench on the ``Bench`` skeleton is TODO (docs/lane.md).
"""

import random

import numpy as np
from amaranth.sim import Simulator

from ..golden.lane import run_lane_rmmu
from ..golden.rmmu import Descriptor, RMMUModel
from . import quick

__all__ = ["core_stimulus", "simulate_core"]


def core_stimulus(params, cfg, qi, ki, vi, pq, pk):
    """``(loads, tiles, ea, ew)``: the payloads :class:`LaneCore` takes for this head. The
    estimate beats come from the sparse configuration's trace (dense mode ignores them)."""
    sparse = cfg.replace(mode="sparse")
    _, trace = run_lane_rmmu(params, sparse, qi, ki, vi, pq, pk)
    em = RMMUModel(rows=params.rows, cols=params.cols, groups=1, tile_m=params.tile,
                   max_m=params.tile, max_k=params.d, max_n=params.max_t)
    tiles, ea, ew = [], [], []
    for ph, _, d, a, b in trace:
        if ph != "estimate":
            continue
        d1 = Descriptor(0, params.est_rows, d.precision, d.m, d.k, d.n, True, d.out_fmt,
                        d.shift)
        tiles.append({"n": d.n, "k": d.k, "precision": d.precision, "shift": d.shift,
                      "k_keep": cfg.k})
        ea += [{"data": [int(x) for x in r]} for r in em.a_beats(d1, a)]
        ew += [{"data": [[int(x) for x in t] for t in w]} for w in em.w_beats(d1, b)]
    loads = [{"target": tgt, "addr": i, "row": [int(x) for x in mat[i]]}
             for tgt, mat in ((0, qi), (1, ki), (2, vi)) for i in range(len(qi))]
    return loads, tiles, ea, ew


def simulate_core(dut, params, cfg, qi, ki, vi, pq, pk, *, seed=8, gaps=0.0, stalls=0.0,
                  limit=200000):
    """``(out (T, d) int64, cycles)`` of one head on ``dut`` (a ``LaneCore`` built for
    ``params``: ``rows = params.comp_rows``, ``block = params.tile``)."""
    loads, tiles, ea, ew = core_stimulus(params, cfg, qi, ki, vi, pq, pk)
    t, d, bq, cols = len(qi), params.d, params.tile, params.cols
    n_nt = -(-d // cols)
    n_out = len(tiles) * n_nt * bq
    rng = random.Random(seed)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got, marks = [], {}

    async def driver(ctx):
        ctx.set(dut.dense, cfg.mode == "dense")
        await quick.source(dut.load, loads, rng, 0.0)(ctx)
        await quick.source(dut.tile, tiles, rng, gaps)(ctx)

    async def clock(ctx):
        c = 0
        while True:
            _, _, tv, tr, ov, orr = await ctx.tick().sample(dut.tile.valid, dut.tile.ready,
                                                            dut.o.valid, dut.o.ready)
            c += 1
            if tv and tr and "start" not in marks:
                marks["start"] = c
            if ov and orr:
                marks["end"] = c

    sim.add_testbench(driver)
    if cfg.mode == "sparse":
        sim.add_testbench(quick.source(dut.ea, ea, rng, gaps))
        sim.add_testbench(quick.source(dut.ew, ew, rng, gaps))
    sim.add_testbench(quick.sink(dut.o, got, n_out, rng, stalls,
                                 lambda p: [int(x) for x in p.lanes[:cols]]))
    sim.add_testbench(clock, background=True)
    sim.add_testbench(quick.watchdog(limit), background=True)
    sim.run()
    out = np.zeros((t, d), dtype=np.int64)
    for i, lanes in enumerate(got):
        tile, rest = divmod(i, n_nt * bq)
        nt, q = divmod(rest, bq)
        w = min(cols, d - nt * cols)
        out[tile * bq + q, nt * cols:nt * cols + w] = lanes[:w]
    return out, marks["end"] - marks["start"] + 1
