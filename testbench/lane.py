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

from ..golden.lane import GRAN_CODES, project, rtl_error, run_lane, run_lane_rmmu
from ..golden.rmmu import Descriptor, RMMUModel
from . import quick

__all__ = ["core_stimulus", "simulate_core", "cfg_fields", "head_loads", "expected_rows",
           "expected_importance", "lane_params", "simulate_lane", "bad_config_fields",
           "bad_config_kinds"]

#: The cocotb tests `attnforge mutants lane` runs against each mutant (the quick subset).
MUTANT_TESTS = ("random_heads", "bad_configs", "reset_mid_head")


def lane_params(lane):
    """The golden :class:`LaneParams` of a :class:`attnforge.rtl.lane.Lane` (its generator
    parameters; ``tile`` = ``block``; ``schedule="rtl"``: :func:`cycles` models the RTL as
    built)."""
    from ..golden.lane import LaneParams
    return LaneParams(max_t=lane.max_t, d=lane.d, rows=lane.rows, cols=lane.cols,
                      est_rows=lane.est_rows, tile=lane.block, tile_m=lane.block,
                      frac_bits=lane.frac_bits, prob_frac=lane.prob_frac, det_per_beat=1,
                      sm_per_beat=1, schedule="rtl")


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


def expected_importance(importance):
    """The ``importance`` beats of a head: one row, a beat per key (``count`` 1, ``index`` =
    key, ``last`` on the last key)."""
    n = len(importance)
    return [{"data": [int(x)], "index": [i], "count": 1, "last": int(i == n - 1), "error": 0}
            for i, x in enumerate(importance)]


def simulate_lane(dut, heads, *, seed=8, gaps=0.0, stalls=0.0, limit=400000):
    """Run ``heads`` (a list of ``(cfg, qi, ki, vi, pq, pk)``) through ``dut`` (a
    :class:`attnforge.rtl.lane.Lane`) in the Amaranth simulator, one after the other:
    ``[(o beats, status dict, importance beats)]`` per head (beats as dicts). A head whose ``rtl_error`` is set is
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
import cocotb  # noqa: E402  (the Amaranth-simulator drivers above need no cocotb)
from cocotb.triggers import ClockCycles  # noqa: E402

from ..golden.attention import to_fx  # noqa: E402
from ..golden.lane import LaneConfig, auto_config, cycles, int_projection  # noqa: E402
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
        self.imp, self.iboard = self.sink("importance", u.imp_layout, self._cmp_row)
        self.status, self.sboard = self.sink("status", status_layout(),
                                             self._cmp_status)
        self.cycles = []              # (label, RTL status cycles, model cycles) per head
        self.coverpoint("mode", ["dense", "sparse", "error"])
        self.coverpoint("est_bits", [2, 4, 8])
        self.coverpoint("kept", [1, 2, 3, 4], xf=lambda k: min(4, k))
        nb = u.max_t // u.block
        # A k class needs enough blocks: "1" and "all" differ from 2 blocks on, "between"
        # needs 3. Dense mode runs every block (its est_bits is checked, not used).
        classes = ["all"] + ["1"] * (nb >= 2) + ["between"] * (nb >= 3)
        self.coverpoint("head", [("dense",)] + [("sparse", b, c) for b in (2, 4, 8)
                                                for c in classes])
        self.coverpoint("blocks", ["max"] + ["1"] * (nb >= 2) + ["between"] * (nb >= 3))
        self.coverpoint("bad_config", bad_config_kinds(u))

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

    def play(self, cfg, qi, ki, vi, pq=None, pk=None, label=""):
        u = self.unit
        bad = rtl_error(cfg, max_t=u.max_t, max_m=u.max_m, block=u.block)
        self.cfg.send(cfg_fields(cfg))
        self.cover("mode", "error" if bad else cfg.mode)
        if bad:
            self.cover("bad_config", (cfg.mode, _kind(bad)))
            self.sboard.expect({"error": 1, "kept": 0})
            return
        ref = run_lane(self.params, cfg, qi, ki, vi, pq, pk)
        kept = int(ref.mask.sum()) // u.block ** 2
        nb = cfg.t // u.block
        self.cover("est_bits", cfg.est_bits)
        self.cover("kept", cfg.k if cfg.mode == "sparse" else 4)
        self.cover("head", ("dense",) if cfg.mode == "dense" else (
            "sparse", cfg.est_bits, "all" if cfg.k == nb else "1" if cfg.k == 1 else "between"))
        self.cover("blocks", "max" if cfg.t == u.max_t else "1" if nb == 1 else "between")
        self.board.expect_all(expected_rows(ref.out, u.cols))
        self.iboard.expect_all(expected_importance(ref.importance))
        self.sboard.expect({"error": 0, "kept": kept, "label": label or cfg.mode,
                            "model": cycles(self.params, cfg, ref)["total"],
                            "pipelined": cycles(replace(self.params, schedule="pipelined"),
                                                cfg, ref)["total"]})
        self.load.send_all({**b, "target": b["target"].value}
                           for b in head_loads(cfg, qi, ki, vi, pq, pk))

    async def finish(self, heads=1):
        await super().finish(20000 * heads + 1000)


def bad_config_fields(lane):
    """``(mode, {field: value})`` per configuration the lane's check rejects, one field at a
    time from a good head of ``lane``'s largest size (top-k, the query-tile granularity);
    the checks of every mode in both modes, the sparse-only ones in sparse mode. Entries
    :func:`attnforge.golden.lane.rtl_error` accepts (a feature the RTL gained) drop out. Not
    sendable, so not listed: ``est_shift`` (its 6-bit field holds only legal values) and a
    keep-list (the bench sends none)."""
    u = lane
    common = [dict(t=0), dict(t=u.max_t + u.block), dict(t=u.block + 1), dict(est_bits=3),
              dict(est_bits=0), dict(m=0), dict(m=u.max_m + 1)]
    sparse = [dict(k=0), dict(k=u.max_t // u.block + 1), dict(select="threshold"),
              dict(int8_bound=7), dict(granularity="element")]
    base = _good_config(u)
    return [(mode, kw) for mode, kws in (("sparse", common + sparse), ("dense", common))
            for kw in kws if rtl_error(base.replace(mode=mode, **kw), max_t=u.max_t,
                                       max_m=u.max_m, block=u.block)]


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
                                          max_m=lane.max_m, block=lane.block)))
                   for mode, kw in bad_config_fields(lane)})


def _random_head(tb, t, *, mode="sparse", est_bits=4, k=2, m=2, sigma=1.0, seed=None):
    nrng = np.random.default_rng(tb.rng.getrandbits(32) if seed is None else seed)
    d = tb.unit.d
    q, k_, v = (nrng.normal(0, sigma, (t, d)) for _ in range(3))
    qi, ki, vi = to_fx(q, k_, v, tb.unit.frac_bits)
    return _head(tb, qi, ki, vi, mode=mode, est_bits=est_bits, k=k, m=m, seed=nrng)


def _head(tb, qi, ki, vi, *, mode, est_bits, k, m, seed):
    t, d = qi.shape
    pq, pk = int_projection(d, m, seed=int(np.random.default_rng(seed).integers(1 << 16)))
    b = tb.unit.block
    cfg = LaneConfig(t=t, mode=mode, est_bits=est_bits, m=m, granularity=f"{b}x{b}", k=k)
    return auto_config(tb.params, cfg, qi, ki, pq, pk), qi, ki, vi, pq, pk


@cocotb.test()
async def random_heads(dut):
    """Random heads: every estimate precision, dense and sparse, top-k from one block per row
    (the highest sparsity at this size) to all blocks (0 %), random m and scale, gaps on
    cfg/load, stalls on o/status; every output row through the scoreboard."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    n = scale(8)
    for i in range(n):
        t = u.block * tb.rng.randint(1, u.max_t // u.block)
        mode = "dense" if i % 4 == 3 else "sparse"
        cfg, *h = _random_head(tb, t, mode=mode, est_bits=(2, 4, 8)[i % 3],
                               k=tb.rng.randint(1, t // u.block),
                               m=tb.rng.randint(1, u.max_m), sigma=tb.rng.choice([0.5, 1, 2]))
        tb.play(cfg, *h)
    await tb.finish(n)
    dut._log.info("checked %d output beats, %d heads", tb.board.checked, tb.sboard.checked)


@cocotb.test()
async def fixture_heads(dut):
    """Heads of the real MiniLM fixtures (short_recipe, layers 0/2/5, heads 0/4/8), cropped to
    the lane's bounds (first max_t tokens, first d dims), INT4 and INT2, top-1 and top-2
    blocks, and the same heads dense."""
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
        assert rtl_error(cfg, max_t=u.max_t, max_m=u.max_m, block=u.block), kw
        tb.play(cfg, *good[1:])
    tb.play(*good)
    await tb.finish(3)
    assert tb.sboard.checked == len(bad) + 2


@cocotb.test()
async def reset_mid_head(dut):
    """A reset of the idle lane, then resets during the load, during the tiles and while
    output rows are stalled: the lane returns to IDLE (takes a new cfg at once) and the next
    heads (INT2 estimates, top-1 and all blocks) are bit-exact."""
    tb = LaneBench(dut)
    await tb.start()
    u = tb.unit
    await tb.reset()                    # idle: changes nothing
    for wait, k in ((20, 1), (600, u.max_t // u.block), (1500, 1)):
        tb.play(*_random_head(tb, u.max_t, k=2))
        await ClockCycles(dut.clk, wait)
        await tb.reset()
        await ClockCycles(dut.clk, 1)
        assert dut.cfg__ready.value == 1, "not IDLE after reset"
        tb.play(*_random_head(tb, u.max_t, k=k, est_bits=2))
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
    for label, h in heads:
        tb.play(*h, label=label)
        await tb.finish(1)
    figs = {label: {"rtl": rtl, "model_rtl": model, "model_pipelined": pipe}
            for label, rtl, model, pipe in tb.cycles}
    for label, f in figs.items():
        dut._log.info("%s: RTL %d cycles, model (rtl schedule) %d, model (pipelined) %d",
                      label, f["rtl"], f["model_rtl"], f["model_pipelined"])
    assert all(f["rtl"] == f["model_rtl"] for f in figs.values()), figs
    tb.figures({"cycles": figs, "params": {k: getattr(u, k) for k in (
        "max_t", "d", "max_m", "rows", "cols", "est_rows", "block")}})
