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
from dataclasses import replace

import numpy as np
from amaranth.sim import Simulator

from ..golden.lane import (FINE_GRANULARITIES, GRAN_CODES, rtl_error, rtl_keep_error, run_lane,
                           run_lane_rmmu)
from ..golden.rmmu import Descriptor, RMMUModel
from . import quick

__all__ = ["core_stimulus", "simulate_core", "cfg_fields", "head_loads", "expected_rows",
           "expected_importance", "lane_params", "simulate_lane", "head_errors", "random_keep",
           "pick_threshold", "bad_config_fields", "bad_config_kinds", "run_back",
           "front_stimulus", "expected_kept", "checked_heads"]

#: The cocotb tests `attnforge mutants lane` runs against each mutant (the quick subset).
MUTANT_TESTS = ("random_heads", "bad_configs", "reset_mid_head", "per_row_masks",
                "block_max_every_lane")


def lane_params(lane):
    """The golden :class:`LaneParams` of a :class:`attnforge.rtl.lane.Lane` (its generator
    parameters; ``tile`` = ``block``; ``schedule="rtl"``: :func:`cycles` models the RTL as
    built)."""
    from ..golden.lane import LaneParams
    return LaneParams(max_t=lane.max_t, d=lane.d, rows=lane.rows, cols=lane.cols,
                      est_rows=lane.est_rows, int8_rows=lane.int8_rows, tile=lane.block,
                      tile_m=lane.block,
                      frac_bits=lane.frac_bits, prob_frac=lane.prob_frac, det_per_beat=1,
                      sm_per_beat=1, schedule="rtl")


def cfg_fields(cfg, keep=None, n_keep=None, prune=None):
    """The ``cfg`` beat of :class:`attnforge.rtl.lane.Lane` for a :class:`LaneConfig` and a
    keep-list ``keep`` (None: no token pruning; ``n_keep``/``prune`` override the fields that
    follow from it, for bad heads; fields a field cannot hold are clipped to a value the check
    rejects)."""
    from ..golden.lane import INT8_BOUND_BITS
    prune = keep is not None if prune is None else prune
    n_keep = (len(keep) if keep is not None else 0) if n_keep is None else n_keep
    hb = cfg.int8_bound is not None and cfg.int8_bound >= 0     # a negative bound: never INT8
    bound = min(int(cfg.int8_bound), (1 << INT8_BOUND_BITS) - 1) if hb else 0
    shifts8 = (cfg.q8_shift, cfg.k8_shift)
    if not all(0 <= x <= 15 for x in shifts8):
        shifts8 = (15, 15)                   # out of the 4-bit fields: a sum the check rejects

    def shift(x):                      # 7-bit field, [0, 63] legal: out of range -> 127
        return x if 0 <= x <= 63 else 127

    return {"t": cfg.t, "dense": int(cfg.mode == "dense"), "est_bits": cfg.est_bits & 15,
            "m": cfg.m, "est_shift": cfg.est_shift & 63, "select": int(cfg.select != "topk"),
            "k": cfg.k, "threshold": cfg.threshold,
            "gran": int(GRAN_CODES[cfg.granularity]) if cfg.granularity in GRAN_CODES else 7,
            "int8_bound": bound, "prune": int(prune), "n_keep": n_keep,
            "hb": int(hb), "q8_shift": shifts8[0], "k8_shift": shifts8[1],
            "q_shift": shift(cfg.q_shift), "k_shift": shift(cfg.k_shift)}


def head_errors(cfg, lane, keep=None, n_keep=None, prune=None):
    """``(cfg_error, load_error)`` the RTL answers this head with (strings or None):
    :func:`attnforge.golden.lane.rtl_error` (the ``cfg`` beat: nothing else taken) and, if that
    passes, :func:`attnforge.golden.lane.rtl_keep_error` (the KEEP beats: the whole LOAD is
    taken, then one error status)."""
    bad = rtl_error(cfg, max_t=lane.max_t, max_m=lane.max_m, block=lane.block, keep=keep,
                    n_keep=n_keep, prune=prune, frac_bits=lane.frac_bits)
    return bad, None if bad else rtl_keep_error(cfg.t, keep, n_keep=n_keep, prune=prune)


def head_loads(cfg, qi, ki, vi, pq, pk, keep=None):
    """The ``load`` beats of one head: the keep-list (``KEEP`` beats, ``addr`` = token, in the
    order given) if any, Q, K, V rows (every token: the lane drops pruned K/V rows), then
    (sparse) the projection matrices' rows (``P_q``, ``P_k``: row ``i`` = ``P[i, :m]`` in the
    first ``m`` elements; the lane computes ``Q~``/``K~`` itself, ``K~`` over the kept keys);
    ``last`` on the final beat."""
    from ..rtl.lane import Target
    d = qi.shape[1]
    mats = [(Target.Q, qi), (Target.K, ki), (Target.V, vi)]
    if cfg.mode == "sparse":
        pad = np.zeros((d, d - cfg.m), dtype=np.int64)
        mats += [(Target.P_Q, np.hstack([np.asarray(pq)[:, :cfg.m], pad])),
                 (Target.P_K, np.hstack([np.asarray(pk)[:, :cfg.m], pad]))]
    beats = [{"target": Target.KEEP, "addr": int(x), "row": [0] * d, "last": 0}
             for x in (keep if keep is not None else ())]
    beats += [{"target": tgt, "addr": i, "row": [int(x) for x in mat[i]], "last": 0}
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


def expected_importance(importance):
    """The ``importance`` beats of a head: one row, a beat per key (``count`` 1, ``index`` =
    key, ``last`` on the last key)."""
    n = len(importance)
    return [{"data": [int(x)], "index": [i], "count": 1, "last": int(i == n - 1), "error": 0}
            for i, x in enumerate(importance)]


def expected_kept(cfg, ref, block):
    """``status.kept`` of a head: kept blocks at BxB, gathered keys (the union of the tiles'
    rows' kept keys) at per-row granularity."""
    if cfg.mode == "sparse" and cfg.granularity in FINE_GRANULARITIES:
        return sum(len(g) for g in ref.gather)
    return int(ref.mask.sum()) // block ** 2


def checked_heads(dut, heads, results):
    """Scoreboard of :func:`simulate_lane`'s ``results`` for ``heads``: a reset head gave
    nothing, an erroneous one exactly one error status and no rows, a good one the golden
    rows, importance and ``kept``; yields ``(cfg, opt, ref, status)`` per good head (the
    caller checks cycles or anything else it measures)."""
    params = lane_params(dut)
    for (cfg, *h, opt), res in zip(heads, results):
        if "reset" in opt:
            assert res is None
            continue
        got, status, imp = res
        if any(head_errors(cfg, dut, **opt)):
            assert status["error"] == 1 and got == [] and imp == [], (cfg, opt)
            continue
        ref = run_lane(params, cfg, *h, keep=opt.get("keep"))
        assert status["error"] == 0, (cfg, opt)
        assert got == expected_rows(ref.out, dut.cols), (cfg, opt)
        assert imp == expected_importance(ref.importance), (cfg, opt)
        assert status["kept"] == expected_kept(cfg, ref, dut.block), (cfg, opt)
        yield cfg, opt, ref, status


def simulate_lane(dut, heads, *, seed=8, gaps=0.0, stalls=0.0, limit=400000):
    """Run ``heads`` (a list of ``(cfg, qi, ki, vi, pq, pk)``, optionally a 7th element: a dict
    of :func:`head_errors`' keywords ``keep``, ``n_keep``, ``prune``) through ``dut`` (a
    :class:`attnforge.rtl.lane.Lane`) in the Amaranth simulator, one after the other:
    ``[(o beats, status dict, importance beats)]`` per head (beats as dicts). A head whose
    ``rtl_error`` is set is sent as its ``cfg`` beat only (the lane must answer one error
    status and take nothing else); one with a keep-list error is sent whole (its LOAD is taken,
    then one error status). The dict may also hold ``reset = (n, wait)``: send the ``cfg`` beat
    and the first ``n`` load beats, wait ``wait`` cycles, reset the lane (2 cycles); that head's
    result is None (the next head must find the lane IDLE)."""
    from amaranth.hdl import ClockDomain, Module
    rng = random.Random(seed)
    top = Module()                       # an explicit sync domain: its reset is ours to pulse
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-6)
    results = []

    async def run(ctx):
        for cfg, qi, ki, vi, pq, pk, *opt in heads:
            opt = dict(opt[0]) if opt else {}
            reset = opt.pop("reset", None)
            if reset is not None:
                n, wait = reset
                await quick.source(dut.cfg, [cfg_fields(cfg, **opt)], rng, gaps)(ctx)
                loads = head_loads(cfg, qi, ki, vi, pq, pk, opt.get("keep"))[:n]
                await quick.source(dut.load, loads, rng, gaps)(ctx)
                for _ in range(wait):
                    await ctx.tick()
                ctx.set(cd.rst, 1)
                await ctx.delay(2e-6)            # two clock periods (a tick would raise
                ctx.set(cd.rst, 0)               # DomainReset while the reset is high)
                results.append(None)
                continue
            bad_cfg, bad_load = head_errors(cfg, dut, **opt)
            bad = bad_cfg or bad_load
            got, status = [], []
            await quick.source(dut.cfg, [cfg_fields(cfg, **opt)], rng, gaps)(ctx)
            n_rows = 0 if bad else cfg.t * -(-dut.d // dut.cols)
            tasks = [quick.sink(dut.o, got, n_rows, rng, stalls, _beat)]
            if not bad_cfg:
                await quick.source(dut.load, head_loads(cfg, qi, ki, vi, pq, pk,
                                                        opt.get("keep")), rng, gaps)(ctx)
            await tasks[0](ctx)
            imp = []
            await quick.sink(dut.importance, imp, 0 if bad else cfg.t, rng, stalls,
                             _beat)(ctx)
            await quick.sink(dut.status, status, 1, rng, stalls, lambda p: {
                "error": int(p.error), "kept": int(p.kept), "cycles": int(p.cycles)})(ctx)
            results.append((got, status[0], imp))
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


# -- cocotb bench (Verilator) ----------------------------------------------------------------
def front_stimulus(trace, model, k_keep):
    """The front half's input (:class:`attnforge.rtl.lane_front.LaneFront` with a one-row
    estimate group, ``WithRMMU``) for the "estimate" descriptors of a golden
    :func:`attnforge.golden.lane.run_lane_rmmu` trace: ``(tiles, a, w, starts)`` -- the tile
    commands (top-``k_keep``), the ``a`` and ``w`` beats (``model.a_beats/w_beats`` of each
    descriptor moved to row 0), and each tile's first query."""
    tiles, a_items, w_items, starts = [], [], [], []
    for ph, b0, d, a, b in trace:
        if ph != "estimate":
            continue
        d1 = Descriptor(0, 1, d.precision, d.m, d.k, d.n, True, d.out_fmt, d.shift)
        tiles.append({"n": d.n, "k": d.k, "precision": d.precision, "shift": d.shift,
                      "k_keep": k_keep})
        a_items += [{"data": [int(x) for x in row]} for row in model.a_beats(d1, a)]
        w_items += [{"data": [[int(x) for x in t] for t in beat]}
                    for beat in model.w_beats(d1, b)]
        starts.append(b0)
    return tiles, a_items, w_items, starts


def run_back(dut, tiles, ka, w, av, rng, timeout=40000):
    """Run a back half (:class:`attnforge.rtl.lane_back.LaneBack` with its own RMMU,
    ``WithRMMU``) on ``tiles``, ``ka`` and ``w`` beats (random gaps and stalls from ``rng``)
    until it has produced the output beats of the A·V descriptors ``av`` (``(model, desc, a,
    b)`` each); returns ``(got, want)``, both as ``(lanes, last)`` per beat."""
    want = []
    for model, desc, a, b in av:
        lanes, last = model.o_beats(desc, a, b)
        want += [([int(x) for x in r], bool(x_)) for r, x_ in zip(lanes, last)]
    (got,) = quick.run_streams(
        dut, {dut.tile: tiles, dut.ka: ka, dut.w: w},
        {dut.o: (len(want), lambda p: ([int(x) for x in p.lanes], bool(p.last)))},
        rng, timeout=timeout)
    return got, want


import cocotb  # noqa: E402  (the Amaranth-simulator drivers above need no cocotb)
from cocotb.triggers import ClockCycles  # noqa: E402

from ..golden.attention import GRANULARITIES, to_fx  # noqa: E402
from ..golden.lane import (LaneConfig, auto_config, block_norms, cycles,  # noqa: E402
                           int_projection)
from ..golden.numbers import Precision  # noqa: E402
from .kit import Bench, scale  # noqa: E402


class LaneBench(Bench):
    """Sources on ``cfg`` and ``load`` (random gaps), monitors + scoreboards on ``o`` (every
    output row, against :func:`attnforge.golden.lane.run_lane`), ``importance`` (the head's
    column sums of P, ``LaneResult.importance``) and ``status`` (error and kept blocks; the
    cycles are recorded). :meth:`play` queues one head: a configuration the RTL
    rejects (:func:`attnforge.golden.lane.rtl_error`) is sent alone and expects one error
    status and nothing else."""

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        super().__init__(dut, "lane", gaps=gaps, stalls=stalls)
        from ..rtl.lane import cfg_layout, load_layout, status_layout
        u = self.unit
        self.params = lane_params(u)
        self.cfg = self.source("cfg", cfg_layout(u.max_t, u.max_m))
        self.load = self.source("load", load_layout(u.max_t, u.d))
        self.o, self.board = self.sink("o", u.out_layout, self._cmp_row)
        self.imp_seen = []            # every importance value taken (the pruning loop's input)
        self.imp, self.iboard = self.sink("importance", u.imp_layout, self._cmp_row,
                                          callback=lambda v: self.imp_seen.append(
                                              int(list(v["data"])[0])))
        self.status, self.sboard = self.sink("status", status_layout(),
                                             self._cmp_status)
        self.cycles = []              # (label, RTL status cycles, model cycles) per head
        self.coverpoint("mode", ["dense", "sparse", "error"])
        self.coverpoint("est_bits", [2, 4, 8])
        self.coverpoint("kept", [0, 1, 2, 3, 4])
        self.coverpoint("int8", ["off", "none", "some", "all"])   # HB-BSSA: INT8 kept blocks
        self.coverpoint("select", ["topk", "threshold", "error"])
        self.coverpoint("pruned", [False, True, "error"])
        nb = u.max_t // u.block
        # A k class needs enough blocks: "1" and "all" differ from 2 blocks on, "between"
        # needs 3. Dense mode runs every block (its est_bits is checked, not used); threshold
        # mode has its own coverpoint (select).
        classes = ["all"] + ["1"] * (nb >= 2) + ["between"] * (nb >= 3)
        self.coverpoint("head", [("dense",)] + [("sparse", b, c) for b in (2, 4, 8)
                                                for c in classes])
        self.coverpoint("blocks", ["max"] + ["1"] * (nb >= 2) + ["between"] * (nb >= 3))
        self.coverpoint("bad_config", bad_config_kinds(u))
        self.coverpoint("gran", ["BxB", *FINE_GRANULARITIES])     # sparse heads

    @staticmethod
    def _cmp_row(expected, actual):
        got = {k: (list(map(int, actual[k])) if k in ("data", "index") else int(actual[k]))
               for k in expected}
        return None if got == expected else f"expected {expected}, got {got}"

    def _cmp_status(self, expected, actual):
        got = {"error": int(actual.error), "kept": int(actual.kept)}
        if got != {k: expected[k] for k in got}:
            return f"expected {expected}, got {got}"
        if not got["error"]:
            self.cycles.append((expected["label"], int(actual.cycles), expected["model"],
                                expected["pipelined"]))
        return None

    def play(self, cfg, qi, ki, vi, pq=None, pk=None, label="", keep=None, n_keep=None,
             prune=None):
        """Queue one head (``keep``: its keep-list, sent as KEEP beats first in LOAD;
        ``n_keep``/``prune``: override the ``cfg`` fields, for bad heads). Returns the golden
        :class:`LaneResult` (None for a head the RTL answers with an error)."""
        u = self.unit
        opt = dict(keep=keep, n_keep=n_keep, prune=prune)
        bad_cfg, bad_load = head_errors(cfg, u, **opt)
        self.cfg.send(cfg_fields(cfg, **opt))
        self.cover("mode", "error" if bad_cfg or bad_load else cfg.mode)
        self.cover("select", "error" if bad_cfg or bad_load else cfg.select)
        self.cover("pruned", "error" if bad_cfg or bad_load else keep is not None)
        if bad_cfg:
            self.cover("bad_config", (cfg.mode, _kind(bad_cfg)))
        if bad_cfg or bad_load:
            self.sboard.expect({"error": 1, "kept": 0})
            if bad_load:              # the whole LOAD is taken (and dropped)
                self.load.send_all({**b, "target": b["target"].value}
                                   for b in head_loads(cfg, qi, ki, vi, pq, pk, keep))
            return None
        ref = run_lane(self.params, cfg, qi, ki, vi, pq, pk, keep=keep)
        fine = cfg.mode == "sparse" and cfg.granularity in FINE_GRANULARITIES
        if cfg.mode == "sparse":
            self.cover("gran", cfg.granularity if fine else "BxB")
        kept = expected_kept(cfg, ref, u.block)
        nb = cfg.t // u.block
        self.cover("est_bits", cfg.est_bits)
        if not fine:
            self.cover("kept", min(4, -(-kept // (cfg.t // u.block))))   # per block row (ceil)
        if cfg.mode == "sparse":
            n8 = 0 if ref.int8_blocks is None else int(ref.int8_blocks.sum())
            self.cover("int8", "off" if ref.int8_blocks is None else
                       "none" if n8 == 0 else "all" if n8 == kept else "some")
        nk = len(ref.keys) // u.block                  # key blocks (kept keys)
        if cfg.mode == "dense" or (cfg.select == "topk" and not fine):
            self.cover("head", ("dense",) if cfg.mode == "dense" else (
                "sparse", cfg.est_bits,
                "all" if cfg.k == nk else "1" if cfg.k == 1 else "between"))
        nb = cfg.t // u.block
        self.cover("blocks", "max" if cfg.t == u.max_t else "1" if nb == 1 else "between")
        self.board.expect_all(expected_rows(ref.out, u.cols))
        self.iboard.expect_all(expected_importance(ref.importance))
        self.sboard.expect({"error": 0, "kept": kept, "label": label or cfg.mode,
                            "model": cycles(self.params, cfg, ref)["total"],
                            "pipelined": cycles(replace(self.params, schedule="pipelined"),
                                                cfg, ref)["total"]})
        self.load.send_all({**b, "target": b["target"].value}
                           for b in head_loads(cfg, qi, ki, vi, pq, pk, keep))
        return ref

    async def finish(self, heads=1):
        await super().finish(20000 * heads + 1000)


def bad_config_fields(lane):
    """``(mode, {field: value})`` per configuration the lane's check rejects, one field at a
    time from a good head of ``lane``'s largest size (top-k, the query-tile granularity);
    the checks of every mode in both modes, the sparse-only ones in sparse mode. Entries
    :func:`attnforge.golden.lane.rtl_error` accepts (a feature the RTL gained) drop out. Not
    sendable, so not listed: ``est_shift`` (its 6-bit field holds only legal values). The
    keep-list's own rejections (``n_keep``, the KEEP beats: :func:`head_errors`) are sent by
    ``bad_configs`` too and counted in the ``pruned`` coverpoint's ``error`` bin."""
    u = lane
    common = [dict(t=0), dict(t=u.max_t + u.block), dict(t=u.block + 1), dict(est_bits=3),
              dict(est_bits=0), dict(m=0), dict(m=u.max_m + 1), dict(q8_shift=6, k8_shift=3),
              dict(q8_shift=16, int8_bound=5), dict(k8_shift=-1)]
    sparse = [dict(k=0), dict(k=u.max_t // u.block + 1), dict(select="threshold"),
              dict(int8_bound=7), dict(granularity="element"), dict(q_shift=64),
              dict(k_shift=100), dict(k_shift=-1), dict(granularity="element", int8_bound=7),
              dict(granularity="1x8", k=u.max_t // 8 + 1), dict(granularity="element", k=0),
              dict(granularity="32x32" if u.block != 32 else "16x16")]
    base = _good_config(u)
    return [(mode, kw) for mode, kws in (("sparse", common + sparse), ("dense", common))
            for kw in kws if rtl_error(base.replace(mode=mode, **kw), max_t=u.max_t,
                                       max_m=u.max_m, block=u.block, frac_bits=u.frac_bits)]


def _good_config(lane):
    """A configuration ``lane`` accepts in both modes (the base of the rejections)."""
    return LaneConfig(t=lane.max_t, m=1, k=1, granularity=f"{lane.block}x{lane.block}")


def _kind(error):
    """The field an :func:`attnforge.golden.lane.rtl_error` message names."""
    return error.split(" must be", 1)[0]


def bad_config_kinds(lane):
    """The ``bad_config`` bins: ``(mode, field)`` of every rejection
    :func:`bad_config_fields` sends (derived from the check, so they follow it)."""
    base = _good_config(lane)
    return sorted({(mode, _kind(rtl_error(base.replace(mode=mode, **kw), max_t=lane.max_t,
                                          max_m=lane.max_m, block=lane.block,
                                          frac_bits=lane.frac_bits)))
                   for mode, kw in bad_config_fields(lane)})


def _random_head(tb, t, *, mode="sparse", est_bits=4, k=2, m=2, sigma=1.0, seed=None,
                 int8=None, keep=None, threshold=None, gran=None, bump=None):
    nrng = np.random.default_rng(tb.rng.getrandbits(32) if seed is None else seed)
    d = tb.unit.d
    q, k_, v = (nrng.normal(0, sigma, (t, d)) for _ in range(3))
    qi, ki, vi = to_fx(q, k_, v, tb.unit.frac_bits)
    return _head(tb, qi, ki, vi, mode=mode, est_bits=est_bits, k=k, m=m, seed=nrng, int8=int8,
                 keep=keep, threshold=threshold, gran=gran, bump=bump)


def _head(tb, qi, ki, vi, *, mode, est_bits, k, m, seed, int8=None, keep=None, threshold=None,
          gran=None, bump=None):
    """One head's ``(cfg, qi, ki, vi, pq, pk)``: shifts fitted to its data (``auto_config``,
    over the kept keys with a keep-list), then the projections' shifts moved at random by
    -1 .. +2 (INT4 / INT8) or -2 .. 0 (INT2): saturated or coarser ``Q~``/``K~``, the on-chip
    projection must match the golden model either way. (INT2 is the exception because its
    fitted ``Q~``/``K~`` are already mostly 0: one step coarser and the whole estimate is 0
    for most heads -- a top-k of ties that checks no estimate value, the hole that let the
    lane mutant #21 live; two steps finer, about 3 in 4 estimates are nonzero.) ``bump``: that
    move for both shifts instead of a random one. ``threshold``: threshold mode at that value;
    ``int8`` (HB-BSSA): None (off), ``"zero"`` (``int8_bound`` 0), or a quantile of the head's
    kept-block sums of squares (1.0: every kept block at INT8); ``gran``: the granularity
    (default the block, BxB; element / 1xV heads take no ``int8``)."""
    t, d = qi.shape
    rng = np.random.default_rng(seed)
    pq, pk = int_projection(d, m, seed=int(rng.integers(1 << 16)))
    b = tb.unit.block
    cfg = LaneConfig(t=t, mode=mode, est_bits=est_bits, m=m, granularity=gran or f"{b}x{b}",
                     k=k)
    if threshold is not None:
        cfg = cfg.replace(select="threshold", threshold=threshold)
    cfg = auto_config(tb.params, cfg, qi, ki, pq, pk, keep=keep)
    lo, hi = (-2, 1) if est_bits == 2 else (-1, 3)
    dq, dk = (int(rng.integers(lo, hi)) for _ in range(2))
    if bump is not None:
        dq = dk = bump
    cfg = cfg.replace(q_shift=max(0, cfg.q_shift + dq), k_shift=max(0, cfg.k_shift + dk))
    if int8 == "zero":
        cfg = cfg.replace(int8_bound=0)
    elif int8 is not None and mode == "sparse":
        plan = run_lane(tb.params, cfg, qi, ki, vi, pq, pk, keep=keep, plan_only=True)
        norms = block_norms(plan.est, b)[plan.mask[::b, plan.keys][:, ::b]]
        if len(norms):                                # threshold mode may keep nothing
            cfg = cfg.replace(int8_bound=int(np.quantile(norms, int8)))
    return cfg, qi, ki, vi, pq, pk


def random_keep(rng, t, block, n_keep=None):
    """A random keep-list of ``t`` tokens (ascending) of ``n_keep`` tokens (default: a random
    multiple of ``block`` in ``[block, t]``, what the RTL takes)."""
    n = block * rng.randint(1, t // block) if n_keep is None else n_keep
    return sorted(rng.sample(range(t), n))


def pick_threshold(params, cfg, head, rng, keep=None):
    """A threshold for ``cfg`` on ``head`` (``qi, ki, vi, pq, pk``): with probability 1/4 each
    "keep every block" (the field's minimum), "keep nothing" (its maximum), else one of the
    head's block scores (every block row keeps the blocks at or above it: some rows may keep
    none)."""
    lo, hi = -(1 << params.score_bits), (1 << params.score_bits) - 1
    r = rng.random()
    if r < 0.25:
        return lo
    if r < 0.5:
        return hi
    plan = run_lane(params, cfg.replace(select="threshold", threshold=lo), *head, keep=keep,
                    plan_only=True)
    b = params.tile
    t, n = plan.est.shape
    blocks = plan.est.reshape(t // b, b, n // b, b).max(axis=(1, 3)).ravel()
    return int(rng.choice(sorted(set(int(x) for x in blocks))))


@cocotb.test()
async def random_heads(dut):
    """Random heads: every estimate precision, dense and sparse, top-k from one block per row
    (the highest sparsity at this size) to all blocks (0 %), threshold mode (random
    thresholds: keep all, keep nothing, a block score of the head: empty block rows), token
    pruning (random keep-lists of a multiple of the block, from one block to all T tokens),
    random m, scale and projection shifts (the lane projects Q and K itself), HB-BSSA off, at
    bound 0, at a random quantile of the kept blocks' sums of squares or at their maximum
    (every kept block INT8), gaps on cfg/load, stalls on o/status; every output row through
    the scoreboard."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    n = scale(12)
    for i in range(n):
        t = u.block * tb.rng.randint(1, u.max_t // u.block)
        mode = "dense" if i % 4 == 3 else "sparse"
        keep = random_keep(tb.rng, t, u.block) if i % 3 == 1 else None
        keys = t if keep is None else len(keep)
        # granularity: BxB half the time, else element / 1x4 / 1x8 (per-row masks, no HB-BSSA)
        gran = tb.rng.choice([None, None, None, *FINE_GRANULARITIES])
        gcols = GRANULARITIES[gran][1] if gran else u.block
        cfg, *h = _random_head(tb, t, mode=mode, est_bits=(2, 4, 8)[i % 3],
                               k=tb.rng.randint(1, keys // gcols),
                               m=tb.rng.randint(1, u.max_m), sigma=tb.rng.choice([0.5, 1, 2]),
                               int8=None if gran else tb.rng.choice([None, "zero", 0.25, 0.5,
                                                                     1.0]),
                               keep=keep, gran=gran)
        if mode == "sparse" and i % 2:
            cfg = cfg.replace(select="threshold",
                              threshold=pick_threshold(tb.params, cfg, h, tb.rng, keep))
        tb.play(cfg, *h, keep=keep)
    await tb.finish(n)
    dut._log.info("checked %d output beats, %d heads", tb.board.checked, tb.sboard.checked)


@cocotb.test()
async def fixture_heads(dut):
    """Heads of the real MiniLM fixtures (short_recipe, layers 0/2/5, heads 0/4/8), cropped to
    the lane's bounds (first max_t tokens, first d dims), INT4 and INT2, top-1 and top-2
    blocks, the same heads dense and at element / 1x4 / 1x8 granularity (top-2 or top-4
    granules per row)."""
    from ..golden import minilm
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    f = minilm.load_fixture("short_recipe")
    t = min(u.max_t, f["q"].shape[2] // u.block * u.block)
    n = 0
    for li, j, bits, k in ((0, 0, 4, 1), (2, 1, 4, 2), (5, 2, 2, 1), (2, 1, 8, 2)):
        q, k_, v = (np.asarray(f[x][li, j][:t, :u.d], dtype=np.float64) for x in "qkv")
        qi, ki, vi = to_fx(q, k_, v, u.frac_bits)
        for mode in ("sparse", "dense") if bits == 4 else ("sparse",):
            cfg, *h = _head(tb, qi, ki, vi, mode=mode, est_bits=bits, k=min(k, t // u.block),
                            m=min(2, u.max_m), seed=li * 10 + j)
            tb.play(cfg, *h, label=f"fixture L{li}H{j} {mode}")
            n += 1
        gran = {0: "element", 2: "1x4", 5: "1x8"}[li] if bits != 8 else "element"
        cfg, *h = _head(tb, qi, ki, vi, mode="sparse", est_bits=bits, k=2 * k,
                        m=min(2, u.max_m), seed=li * 10 + j, gran=gran)   # per-row masks
        tb.play(cfg, *h, label=f"fixture L{li}H{j} {gran}")
        n += 1
    await tb.finish(n)


@cocotb.test()
async def bad_configs(dut):
    """Every field the check rejects (:func:`bad_config_fields`: both modes), one at a time,
    between good heads: exactly one error status each, nothing else consumed, no hang."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    good = _random_head(tb, u.max_t, k=1)
    bad = bad_config_fields(u)
    tb.play(*good)
    for mode, kw in bad:
        cfg = good[0].replace(mode=mode, **kw)
        assert rtl_error(cfg, max_t=u.max_t, max_m=u.max_m, block=u.block,
                         frac_bits=u.frac_bits), kw
        tb.play(cfg, *good[1:])
    # token pruning: n_keep (cfg check, nothing else taken) and the keep-list's beats (checked
    # in LOAD: the whole LOAD is taken and dropped, then one error status)
    b, t = u.block, u.max_t
    keep = list(range(0, t, 2))[:t // 2 // b * b] or list(range(b))
    bad_keep = [dict(keep=keep, n_keep=0), dict(keep=keep, n_keep=len(keep) + 1),
                dict(keep=list(range(t)) + [0], n_keep=t + b),       # longer than T
                dict(keep=keep, prune=False),                        # KEEP beats, no prune
                dict(keep=keep[::-1]), dict(keep=keep[:-1] + [keep[-2]]),   # not ascending
                dict(keep=keep, n_keep=len(keep) + b),               # fewer than n_keep
                dict(keep=keep + list(range(keep[-1] + 1, t))[:b], n_keep=len(keep))]  # more
    heads = [good] * len(bad_keep)
    if t >= 2 * b:                               # a token >= T (and < max_t: the addr field)
        bad_keep.append(dict(keep=list(range(b - 1)) + [t // 2 + 1]))
        heads.append(_random_head(tb, t // 2, k=1))
    for head, kw in zip(heads, bad_keep):
        assert any(head_errors(head[0], u, **kw)), kw
        tb.play(*head, **kw)
    tb.play(*good)
    await tb.finish(3 + len(bad_keep))
    assert tb.sboard.checked == len(bad) + len(bad_keep) + 2


@cocotb.test()
async def reset_mid_head(dut):
    """A reset of the idle lane, then resets during the load, during the projections
    (PROJECT, ~250 cycles in), during the tiles and while output rows are stalled, of plain,
    HB-BSSA and pruned heads: the lane returns to IDLE (takes a new cfg at once) and the next
    heads (INT2 estimates: top-1, all blocks, threshold on pruned keys) are bit-exact."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    t, b = u.max_t, u.block
    await tb.reset()                    # idle: changes nothing
    for wait, pruned, k in ((20, False, 1), (250, False, 1), (600, False, t // b),
                            (1500, False, 1), (10, True, 1), (400, True, 1)):
        keep = random_keep(tb.rng, t, b, n_keep=t // 2 // b * b or b) if pruned else None
        tb.play(*_random_head(tb, t, k=min(3, t // 2 // b or 1), keep=keep,
                              int8=None if pruned else 0.5), keep=keep)   # HB-BSSA / pruned
        await ClockCycles(dut.clk, wait)
        await tb.reset()
        await ClockCycles(dut.clk, 1)
        assert dut.cfg__ready.value == 1, "not IDLE after reset"
        keep = random_keep(tb.rng, t, b) if pruned else None
        cfg, *h = _random_head(tb, t, k=k, est_bits=2, keep=keep)
        tb.play(cfg.replace(select="threshold", threshold=pick_threshold(
            tb.params, cfg, h, tb.rng, keep)) if pruned else cfg, *h, keep=keep)
        await tb.finish(1)


@cocotb.test()
async def cycles_vs_model(dut):
    """No gaps or stalls: the status cycles of dense and top-k heads (k = all .. 1 blocks,
    INT4 and INT8 estimates) equal the cycle model of the RTL schedule
    (``golden.lane.cycles`` with ``schedule="rtl"``) exactly; recorded with the pipelined
    design's model figure for the same head (benchmarks/lane.py)."""
    tb = LaneBench(dut, gaps=0, stalls=0)
    await tb.start()
    u = tb.unit
    nb = u.max_t // u.block
    heads = [("dense", _random_head(tb, u.max_t, mode="dense", seed=1))]
    heads += [(f"top-{k} of {nb}", _random_head(tb, u.max_t, k=k, seed=1))
              for k in range(nb, 0, -1)]
    heads += [(f"top-{k} of {nb} INT8", _random_head(tb, u.max_t, k=k, est_bits=8, seed=1))
              for k in (nb, 1)]
    heads += [(f"top-{k} of {nb} HB-BSSA {q}", _random_head(tb, u.max_t, k=k, seed=1, int8=q))
              for k in (nb, max(1, nb - 1)) for q in (0.5, 1.0)]
    # threshold mode: every block kept, none kept (empty tiles: zero rows), a block score
    lo, hi = -(1 << tb.params.score_bits), (1 << tb.params.score_bits) - 1
    heads += [(f"threshold {name}", _random_head(tb, u.max_t, k=1, seed=1, threshold=thr))
              for name, thr in (("keep all", lo), ("keep none", hi))]
    cfg, *h = _random_head(tb, u.max_t, seed=1, threshold=0)
    plan = run_lane(tb.params, cfg.replace(threshold=lo), *h, plan_only=True)
    blocks = plan.est.reshape(nb, u.block, nb, u.block).max(axis=(1, 3))
    thr = int(np.median(blocks.max(axis=1)))          # some block rows keep nothing
    heads.append(("threshold: empty rows", (cfg.replace(threshold=thr), *h)))
    # per-row granularity: element top-2 / top-8, 1x4 top-1, 1x8 threshold (rows keep 0 .. all)
    heads += [(f"{g} top-{k}", _random_head(tb, u.max_t, k=k, seed=1, gran=g))
              for g, k in (("element", 2), ("element", 8), ("1x4", 1))]
    heads.append(("1x8 threshold", _random_head(tb, u.max_t, seed=1, gran="1x8",
                                                threshold=int(np.median(plan.est)))))
    # token pruning: T/2 and one block of kept tokens, top-1 and dense (the same head unpruned:
    # top-1 and dense above)
    kp = {"pruned T/2": list(range(0, u.max_t, 2))[:u.max_t // 2 // u.block * u.block],
          "pruned 1 block": list(range(u.max_t - u.block, u.max_t))}
    heads += [(label, _random_head(tb, u.max_t, k=1, seed=1, keep=keep), keep)
              for label, keep in kp.items() if keep]
    heads += [(f"dense {label}", _random_head(tb, u.max_t, mode="dense", seed=1, keep=keep), keep)
              for label, keep in kp.items() if keep]
    for label, h, *keep in heads:
        tb.play(*h, label=label, keep=keep[0] if keep else None)
        await tb.finish(1)
    figs = {label: {"rtl": rtl, "model_rtl": model, "model_pipelined": pipe}
            for label, rtl, model, pipe in tb.cycles}
    for label, f in figs.items():
        dut._log.info("%s: RTL %d cycles, model (rtl schedule) %d, model (pipelined) %d",
                      label, f["rtl"], f["model_rtl"], f["model_pipelined"])
    assert all(f["rtl"] == f["model_rtl"] for f in figs.values()), figs
    tb.figures({"cycles": figs, "params": {k: getattr(u, k) for k in (
        "max_t", "d", "max_m", "rows", "cols", "est_rows", "block")}})


@cocotb.test()
async def pruning_loop(dut):
    """SpAtten's cascade token pruning, closed in the testbench: heads in a row on the same
    DUT, the keep-list of head ``h + 1`` = the top-``n_keep`` tokens of head ``h``'s importance
    output as the DUT produced it (its beats through the scoreboard first, then
    :func:`attnforge.golden.lane.next_keep`, the top-k engine's model); ``n_keep`` shrinks by
    one block per head (down to one block), so every head keeps a subset of the previous
    one's tokens' coordinates. Top-k and threshold heads alternate, gaps and stalls on."""
    from ..golden.lane import next_keep
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    t, b = u.max_t, u.block
    nrng = np.random.default_rng(tb.rng.getrandbits(32))
    q, k_, v = (nrng.normal(0, 1, (t, u.d)) for _ in range(3))
    qi, ki, vi = to_fx(q, k_, v, u.frac_bits)
    keep, n_heads = None, scale(5)
    for hd in range(n_heads):
        keys = t if keep is None else len(keep)
        cfg, *h = _head(tb, qi, ki, vi, mode="sparse", est_bits=4, k=max(1, keys // b // 2),
                        m=min(2, u.max_m), seed=hd, keep=keep)
        if hd % 2:
            cfg = cfg.replace(select="threshold",
                              threshold=pick_threshold(tb.params, cfg, h, tb.rng, keep))
        ref = tb.play(cfg, *h, keep=keep, label=f"loop head {hd}")
        await tb.finish(1)
        # the importance the DUT emitted (each beat checked by the scoreboard): the last T
        imp = [int(x) for x in tb.imp_seen[-t:]]
        assert imp == [int(x) for x in ref.importance], "importance scoreboard missed a head"
        n_keep = max(b, keys - b)
        keep = [int(x) for x in next_keep(imp, n_keep)]
        dut._log.info("head %d: %s, %d keys -> keep-list of %d tokens %s", hd, cfg.select, keys,
                      n_keep, keep)
    assert tb.iboard.checked >= n_heads * t


@cocotb.test()
async def every_head_class(dut):
    """One top-k head of the largest size per bin of the ``head`` coverpoint, deterministically
    (random heads draw them at random: seed 1 missed INT2 at a k between 1 and all blocks):
    every estimate precision x k = 1, a k between (when there are 3 blocks or more) and all
    blocks, plus a dense head, plus one HB-BSSA head per ``int8`` bin (bound 0: no kept block
    at INT8; the median kept-block norm; the largest: every kept block; random heads draw
    HB-BSSA only at BxB, half of them since element / 1xV, and seed 1 then missed "none");
    gaps and stalls on, every output row through the scoreboard."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    nb = u.max_t // u.block
    ks = sorted({1, nb} | ({(nb + 1) // 2} if nb >= 3 else set()))
    heads = [_random_head(tb, u.max_t, mode="dense")]
    heads += [_random_head(tb, u.max_t, est_bits=bits, k=k, m=tb.rng.randint(1, u.max_m))
              for bits in (2, 4, 8) for k in ks]
    heads += [_random_head(tb, u.max_t, k=ks[-1], m=tb.rng.randint(1, u.max_m), int8=int8)
              for int8 in ("zero", 0.5, 1.0)]
    for head in heads:
        tb.play(*head)
    await tb.finish(len(heads))
    assert tb.sboard.checked == len(heads)


def _beat_keys(unit, bits):
    """Keys per estimate beat at INT``bits``: ``cols`` PEs x their lanes at that precision
    (as ``LaneFront`` sets the pool's width; INT2 fills every pool lane)."""
    return unit.cols * Precision.parse(f"int{bits}").lanes


def _block_max_head(tb, bits, lane, tries=200):
    """A BxB threshold head at INT``bits`` whose threshold is the maximum of one estimate block
    that holds it once, in a key column on pool input lane ``lane`` (key ``c`` of an N-tile
    beat of ``W = cols * lanes(INT bits)`` keys arrives on lane ``c mod W``): that block is kept
    exactly, by its one element on that lane. Redrawn (the bench's random stream) until such a
    block exists; a few draws at most at the sim point."""
    u, b = tb.unit, tb.unit.block
    w = _beat_keys(u, bits)
    nb = u.max_t // b
    for _ in range(tries):
        cfg, *h = _random_head(tb, u.max_t, est_bits=bits, k=1, m=u.max_m, threshold=0)
        est = run_lane(tb.params, cfg, *h, plan_only=True).est
        for bi in range(nb):
            for bj in range(nb):
                blk = est[bi * b:(bi + 1) * b, bj * b:(bj + 1) * b]
                top = blk == blk.max()
                if top.sum() == 1 and (bj * b + int(np.argwhere(top)[0][1])) % w == lane:
                    return (cfg.replace(threshold=int(blk.max())), *h)
    raise AssertionError(f"no INT{bits} head with a block maximum alone on lane {lane} in "
                         f"{tries} draws")


@cocotb.test()
async def block_max_every_lane(dut):
    """BxB threshold heads whose threshold is one block's maximum, held by a single estimate
    on a chosen input lane of the granule pool (``GranulePool``, the front's block-max chain):
    lanes 0..3 at INT8 (4 keys per beat), 4..7 at INT4 (8), 8..15 at INT2 (16), one head per
    lane, so a compare or select of any lane that loses or invents a block maximum changes a
    kept block. (Random heads leave it to chance whether a block's maximum is unique and
    decides anything: the eighth session's mutant sample lost lane 0 from the chain and no
    test saw it.) Gaps and stalls on, every output row through the scoreboard."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    heads = []
    lane = 0
    for bits in (8, 4, 2):
        while lane < _beat_keys(u, bits):
            heads.append(_block_max_head(tb, bits, lane))
            lane += 1
    for head in heads:
        tb.play(*head)
    await tb.finish(len(heads))
    assert tb.sboard.checked == len(heads)


@cocotb.test()
async def per_row_masks(dut):
    """Element / 1x4 / 1x8 heads of the largest size whose rows each keep half of their
    granules (top-k), so a query tile gathers (nearly) every key -- every slot of the
    gathered-key list (``LaneCore._fine_gather``) is written -- while each of its rows skips
    some of the gathered positions: every bit of the per-row masks (``mg``) is driven both
    ways, for every row of the tile (random heads draw a random k and often gather few keys).
    Plus top-1 heads of the granularities finer than 1xB, whose tiles gather a number of
    keys that is not a multiple of the block: the scores GEMM then ends on a partial M-tile
    of the compute group. Estimates cycle through INT2 / INT4 / INT8: at INT2 an estimate
    row arrives in beats of 16 keys, so the per-row packer (16 -> 1) joins a row's second
    beat while its first drains. (The mutant sample of seed 1 left all three alive: slot 25 of
    the key list never written, such a tile's end unmarked, ``tag.last`` of ``Issuer``, and
    input lane 8 of that second beat also written into slot 8.) Plus two element heads with
    dense INT2 estimates at thresholds 0 and 1, whose kept keys follow every estimate value
    (the random INT2 heads were mostly all-zero estimates, which hid #21). Gaps and stalls on,
    every output row through the scoreboard; seven heads."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    t = u.max_t
    heads = []
    for gran in FINE_GRANULARITIES:
        per = GRANULARITIES[gran][1]                    # keys per granule
        for k in sorted({max(1, t // per // 2)} | ({1} if per < u.block else set())):
            heads.append(_random_head(tb, t, k=k, gran=gran, m=tb.rng.randint(1, u.max_m),
                                      est_bits=(2, 4, 8)[len(heads) % 3]))
    # INT2 estimates two shift steps finer than the fit (about 3 in 4 nonzero, -2 .. 2) at
    # thresholds 0 and 1, element granularity: each key's mask bit follows its estimate's sign
    # and zero-ness, so a wrong value anywhere in an estimate row -- such as an input lane of
    # the per-row packer's second beat written into a wrong slot -- changes the kept keys
    for thr in (0, 1):
        heads.append(_random_head(tb, t, gran="element", est_bits=2, m=u.max_m, threshold=thr,
                                  bump=-2))
    for head in heads:
        tb.play(*head)
    await tb.finish(len(heads))
    assert tb.sboard.checked == len(heads)
