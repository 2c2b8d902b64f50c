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

from ..golden.lane import GRAN_CODES, project, rtl_error, run_lane, run_lane_rmmu
from ..golden.rmmu import Descriptor, RMMUModel
from . import quick

__all__ = ["core_stimulus", "simulate_core", "cfg_fields", "head_loads", "expected_rows",
           "lane_params", "simulate_lane"]


def lane_params(lane):
    """The golden :class:`LaneParams` of a :class:`attnforge.rtl.lane.Lane` (its generator
    parameters; ``tile`` = ``block``)."""
    from ..golden.lane import LaneParams
    return LaneParams(max_t=lane.max_t, d=lane.d, rows=lane.rows, cols=lane.cols,
                      est_rows=lane.est_rows, tile=lane.block, tile_m=lane.block,
                      frac_bits=lane.frac_bits, prob_frac=lane.prob_frac, det_per_beat=1,
                      sm_per_beat=1)


def cfg_fields(cfg, keep=None):
    """The ``cfg`` beat of :class:`attnforge.rtl.lane.Lane` for a :class:`LaneConfig` (fields
    a field cannot hold are clipped to a value the check rejects)."""
    bound = 0 if cfg.int8_bound is None else min(max(int(cfg.int8_bound), 1), 0xFFFF)
    return {"t": cfg.t, "dense": int(cfg.mode == "dense"), "est_bits": cfg.est_bits & 15,
            "m": cfg.m, "est_shift": cfg.est_shift & 63, "select": int(cfg.select != "topk"),
            "k": cfg.k, "threshold": cfg.threshold,
            "gran": int(GRAN_CODES[cfg.granularity]) if cfg.granularity in GRAN_CODES else 7,
            "int8_bound": bound, "prune": int(keep is not None)}


def head_loads(cfg, qi, ki, vi, pq, pk):
    """The ``load`` beats of one head: Q, K, V rows, then (sparse) the Q~ and K~ rows
    (:func:`attnforge.golden.lane.project`, INTp values in the low 8 bits of the first ``m``
    elements); ``last`` on the final beat."""
    from ..rtl.lane import Target
    d = qi.shape[1]
    mats = [(Target.Q, qi), (Target.K, ki), (Target.V, vi)]
    if cfg.mode == "sparse":
        qt, kt = project(cfg, qi, ki, pq, pk)
        pad = np.zeros((len(qi), d - qt.shape[1]), dtype=np.int64)
        mats += [(Target.Q_PROJ, np.hstack([qt, pad])), (Target.K_PROJ, np.hstack([kt, pad]))]
    beats = [{"target": tgt, "addr": i, "row": [int(x) for x in mat[i]], "last": 0}
             for tgt, mat in mats for i in range(len(mat))]
    beats[-1]["last"] = 1
    return beats


def expected_rows(out, cols):
    """The ``o`` beats of output rows ``out`` (T x d FX16): per row ``ceil(d/cols)`` beats of
    ``cols`` values, ``index`` = column, ``count``, ``last`` on the row's final beat."""
    t, d = out.shape
    beats = []
    for q in range(t):
        for c0 in range(0, d, cols):
            n = min(cols, d - c0)
            beats.append({"data": [int(x) for x in out[q, c0:c0 + n]] + [0] * (cols - n),
                          "index": list(range(c0, c0 + n)) + [0] * (cols - n), "count": n,
                          "last": int(c0 + cols >= d), "error": 0})
    return beats


def simulate_lane(dut, heads, *, seed=8, gaps=0.0, stalls=0.0, limit=400000):
    """Run ``heads`` (a list of ``(cfg, qi, ki, vi, pq, pk)``) through ``dut`` (a
    :class:`attnforge.rtl.lane.Lane`) in the Amaranth simulator, one after the other:
    ``[(o beats as dicts, status dict)]`` per head. A head whose ``rtl_error`` is set is
    sent as its ``cfg`` beat only (the lane must answer one error status and take nothing
    else)."""
    rng = random.Random(seed)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    results = []

    async def run(ctx):
        for cfg, qi, ki, vi, pq, pk in heads:
            bad = rtl_error(cfg, max_t=dut.max_t, max_m=dut.max_m, block=dut.block)
            got, status = [], []
            await quick.source(dut.cfg, [cfg_fields(cfg)], rng, gaps)(ctx)
            n_rows = 0 if bad else cfg.t * -(-dut.d // dut.cols)
            tasks = [quick.sink(dut.o, got, n_rows, rng, stalls, _beat)]
            if not bad:
                await quick.source(dut.load, head_loads(cfg, qi, ki, vi, pq, pk), rng,
                                   gaps)(ctx)
            await tasks[0](ctx)
            await quick.sink(dut.status, status, 1, rng, stalls, lambda p: {
                "error": int(p.error), "kept": int(p.kept), "cycles": int(p.cycles)})(ctx)
            results.append((got, status[0]))
    sim.add_testbench(run)
    sim.add_testbench(quick.watchdog(limit), background=True)
    sim.run()
    return results


def _beat(p):
    return {"data": [int(x) for x in p.data], "index": [int(x) for x in p.index],
            "count": int(p.count), "last": int(p.last), "error": int(p.error)}


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
