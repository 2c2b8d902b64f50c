"""HB-BSSA per-block precision in the lane RTL (docs/lane.md section 8, TODO 5): the granule
pool's block sums of squares, the per-tile INT8 flags, the back half's INT8 scores descriptor
and the top level with ``int8_bound`` set, all against ``golden.lane`` (quick Amaranth-simulator
tests; the cocotb bench ``testbench/lane.py`` plays HB-BSSA heads too)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.lane import (LaneConfig, auto_config, block_norms, int_projection,
                                   rtl_error, run_lane, sumsq_bits)
from attnforge.testbench import quick


def _pool_beats(rng, block, width, lanes, n):
    """A tile's estimate (block x n) and the RMMU beats carrying it (junk in masked lanes)."""
    est = rng.integers(-128, 128, size=(block, n))
    beats = []
    for nt in range(-(-n // width)):
        for r in range(block):
            v = rng.integers(-128, 128, size=lanes)
            seg = est[r, nt * width:(nt + 1) * width]
            v[:len(seg)] = seg
            beats.append({"lanes": [int(x) for x in v], "last": 0, "error": 0})
    return est, beats


@pytest.mark.parametrize("block,width", [(8, 8), (4, 8), (8, 4), (8, 16)])
def test_pool_sums_of_squares_match_block_norms(block, width):
    """``sq`` = golden ``block_norms`` of the tile's rows (partial last granule, W < B, an
    all -128 tile: the largest sum, which must fit ``sumsq_bits``), same beats as ``o``; gaps
    on both inputs, stalls on both outputs; a bad command gets an error beat on both."""
    from attnforge.rtl.lane_pool import GranulePool
    lanes = 16
    pool = GranulePool(lanes=lanes, in_bits=20, score_bits=8, block=block, max_n=64)
    assert pool.sq_bits == sumsq_bits(block) == (block * block * 128 * 128).bit_length()
    seed = block * 100 + width
    rng, prng = np.random.default_rng(seed), random.Random(seed)
    cmds, beats, want = [], [], []
    for n in (width, 2 * width + 3, 1, 37, 2 * block):
        est, b = _pool_beats(rng, block, width, lanes, n)
        if n == 2 * block:
            est[:] = -128
            for x in b:
                x["lanes"] = [-128] * lanes
        cmds.append({"n": n, "width": width})
        beats += b
        norms = block_norms(est, block)[0]
        per = max(1, width // block)
        for i in range(0, len(norms), per):
            part = [int(x) for x in norms[i:i + per]]
            want.append((part + [0] * (lanes // block - len(part)), len(part),
                         int(i + per >= len(norms)), 0))
    cmds.insert(1, {"n": 5, "width": 0})
    want.insert(1, ([0] * (lanes // block), 0, 1, 1))   # the first tile (n = W) is one beat
    sim = Simulator(pool)
    sim.add_clock(1e-6)
    got_o, got_sq = [], []

    def conv(p):
        return ([int(p.data[g]) for g in range(len(p.data))], int(p.count), int(p.last),
                int(p.error))
    sim.add_testbench(quick.source(pool.cmd, cmds, prng, 0.3))
    sim.add_testbench(quick.source(pool.i, beats, prng, 0.3))
    sim.add_testbench(quick.sink(pool.o, got_o, len(want), prng, 0.3, conv))
    sim.add_testbench(quick.sink(pool.sq, got_sq, len(want), prng, 0.5, conv))
    sim.add_testbench(quick.watchdog(20000), background=True)
    sim.run()
    print("seed", seed)
    assert got_sq == want
    assert [x[1:] for x in got_o] == [x[1:] for x in want]      # o: the same beat structure


@pytest.mark.parametrize("per_beat,nblk", [(1, 4), (2, 4), (4, 3)])
def test_int8_flags(per_beat, nblk):
    """One flags beat per tile: bit j = enable and sum j <= bound (at the bound: INT8)."""
    from attnforge.rtl.lane_pool import Int8Flags
    dut = Int8Flags(per_beat=per_beat, sq_bits=21, max_blk=nblk, bound_bits=25)
    rng, prng = np.random.default_rng(per_beat), random.Random(per_beat)
    bound = 1000
    tiles = [rng.integers(0, 2000, size=nblk) for _ in range(6)]
    tiles[0][:] = bound                                     # == bound: INT8
    beats, want = [], []
    for i, t in enumerate(tiles):
        for j in range(0, nblk, per_beat):
            part = [int(x) for x in t[j:j + per_beat]]
            beats.append({"data": part + [0] * (per_beat - len(part)), "count": len(part),
                          "last": int(j + per_beat >= nblk), "error": 0})
        want.append(sum(1 << j for j in range(nblk) if t[j] <= bound) if i != 3 else 0)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got = []

    async def drive(ctx):
        ctx.set(dut.bound, bound)
        for i in range(len(tiles)):
            ctx.set(dut.enable, int(i != 3))                # tile 3: HB-BSSA off
            n = -(-nblk // per_beat)
            await quick.source(dut.i, beats[i * n:(i + 1) * n], prng, 0.3)(ctx)
            while len(got) <= i:
                await ctx.tick()
    sim.add_testbench(drive)
    sim.add_testbench(quick.sink(dut.o, got, len(tiles), prng, 0.3,
                                 lambda p: int(p.flags)))
    sim.add_testbench(quick.watchdog(5000), background=True)
    sim.run()
    assert got == want


def test_lane_block_is_one_int8_select_per_key():
    """With the lane's block = the query tile, each tile is one block row: every row of a tile
    takes a gathered key from the same path, so golden ``_int8_select`` (any row INT8 -> the
    INT8 descriptor; all rows INT8 -> not in the FX16 one) reduces to a per-key choice and the
    two descriptors' keys partition the gathered keys (the RTL's mapping)."""
    from attnforge.golden.lane import LaneParams, run_lane_rmmu
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8,
                        det_per_beat=1, sm_per_beat=1, schedule="rtl")
    rng = np.random.default_rng(3)
    qi, ki, vi = (rng.integers(-600, 600, size=(32, 8)) for _ in range(3))
    pq, pk = int_projection(8, 2, seed=5)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=3), qi, ki, pq, pk)
    plan = run_lane(params, cfg, qi, ki, vi, pq, pk, plan_only=True)
    bound = int(np.median(block_norms(plan.est, 8)[plan.mask[::8, ::8]]))
    cfg = cfg.replace(int8_bound=bound)
    res, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    assert res.int8_blocks.any() and not res.int8_blocks[plan.mask[::8, ::8]].all()
    for b0, gath in zip(range(0, 32, 8), res.gather):
        rows = res.int8_blocks[b0 // 8][gath // 8]          # per gathered key: INT8 block?
        scores = [d for ph, t, d, _, _ in trace if ph == "scores" and t == b0]
        fx = [d.m for d in scores if d.precision.name == "FX16"]
        i8 = [d.m for d in scores if d.precision.name == "INT8"]
        assert sum(fx) == int((~rows).sum()) and sum(i8) == int(rows.sum())
        assert sum(fx) + sum(i8) == len(gath)


@pytest.mark.parametrize("bad", [dict(q8_shift=9), dict(q8_shift=5, k8_shift=4),
                                 dict(k8_shift=-1)])
def test_rtl_error_rejects_bad_int8_shifts(bad):
    cfg = LaneConfig(t=32, m=2, granularity="8x8", k=2, int8_bound=100)
    assert rtl_error(cfg, max_t=32, max_m=4, block=8) is None
    err = rtl_error(cfg.replace(**bad), max_t=32, max_m=4, block=8)
    assert err and "q8_shift + k8_shift" in err
    assert rtl_error(cfg.replace(q8_shift=4, k8_shift=4), max_t=32, max_m=4, block=8) is None


def _hb_head(seed, k=3, quantile=0.5, t=32, rng_scale=600):
    """A T = 32, d = 8 head at the lane's sim point with HB-BSSA: ``int8_bound`` = the
    ``quantile`` of its kept blocks' sums of squares (None: off; "huge": every kept block)."""
    from attnforge.golden.lane import LaneParams
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8,
                        det_per_beat=1, sm_per_beat=1, schedule="rtl")
    rng = np.random.default_rng(seed)
    qi, ki, vi = (rng.integers(-rng_scale, rng_scale, size=(t, 8)) for _ in range(3))
    pq, pk = int_projection(8, 2, seed=seed + 1)
    cfg = auto_config(params, LaneConfig(t=t, m=2, granularity="8x8", k=k), qi, ki, pq, pk)
    if quantile is not None:
        plan = run_lane(params, cfg, qi, ki, vi, pq, pk, plan_only=True)
        norms = block_norms(plan.est, 8)[plan.mask[::8, ::8]]
        bound = (1 << 30) if quantile == "huge" else int(np.quantile(norms, quantile))
        cfg = cfg.replace(int8_bound=bound)
    return params, cfg, (qi, ki, vi, pq, pk)


def _tile_lists(ref, i, b=8, max_blk=4):
    """The gather of tile ``i`` as the RTL carries it: kept blocks ascending, INT8 count, the
    slots (positions in the block list) of the FX16 and of the INT8 blocks."""
    blocks = sorted({int(x) // b for x in ref.gather[i]})
    i8 = [] if ref.int8_blocks is None else [j for j, x in enumerate(blocks)
                                              if ref.int8_blocks[i, x]]
    fx = [j for j in range(len(blocks)) if j not in i8]

    def pad(x):
        return x + [0] * (max_blk - len(x))
    return {"nblk": len(blocks), "blk": pad(blocks), "n8": len(i8), "fxs": pad(fx),
            "i8s": pad(i8)}


def _by_tile(trace):
    """Compute-group descriptors of each tile (re-based on a 3-row group at row 0)."""
    from attnforge.golden.rmmu import Descriptor
    by = {}
    for ph, b0, d, a, b in trace:
        if ph in ("scores", "av"):
            by.setdefault(b0, []).append((ph, Descriptor(0, 3, d.precision, d.m, d.k, d.n, True,
                                                         d.out_fmt, d.shift), a, b))
    return by


@pytest.mark.parametrize("quantile", [0.5, "huge"])
def test_back_feeder_int8_streams_equal_golden_beats(quantile):
    """The feeder's a/w beats with INT8 blocks (Q, K requantized to INT8 on the fly, two per
    word) = RMMUModel.a_beats/w_beats of the golden trace's FX16 + INT8 scores descriptors and
    the A.V descriptor, tile by tile (median bound: both kinds; huge: all INT8); gaps/stalls."""
    from attnforge.golden.rmmu import RMMUModel
    from attnforge.rtl.lane_feed import BackFeeder
    from attnforge.golden.lane import run_lane_rmmu
    params, cfg, h = _hb_head(21, quantile=quantile)
    ref, trace = run_lane_rmmu(params, cfg, *h)
    qi, ki, vi = h[:3]
    model = RMMUModel(rows=3, cols=2, groups=1, tile_m=8, max_m=32, max_k=32, max_n=32)
    by = _by_tile(trace)
    kinds = {d.precision.name for x in by.values() for ph, d, _, _ in x if ph == "scores"}
    assert kinds == ({"FX16", "INT8"} if quantile == 0.5 else {"INT8"})
    loads = [{"target": tgt, "addr": i, "row": [int(x) for x in mat[i]]}
             for tgt, mat in ((0, qi), (1, ki), (2, vi)) for i in range(32)]
    tiles, want_a, want_w = [], [], []
    for i, b0 in enumerate(sorted(by)):
        tiles.append({"q0": b0, **_tile_lists(ref, i), "q8_shift": cfg.q8_shift,
                      "k8_shift": cfg.k8_shift})
        for ph, d, a, b in by[b0]:
            if ph == "scores":
                want_a += [[int(x) for x in r] for r in model.a_beats(d, a)]
            want_w += [[[int(x) for x in t] for t in beat] for beat in model.w_beats(d, b)]
    dut = BackFeeder(rows=3, cols=2, d=8, bq=8, max_t=32, block=8, tile_m=8)
    got_a, got_w = quick.run_feeder(dut, loads, tiles, len(want_a), len(want_w),
                                    random.Random(7))
    assert got_a == want_a
    assert got_w == want_w


@pytest.mark.parametrize("quantile", [0.5, pytest.param("huge", marks=pytest.mark.slow),
                                      pytest.param(None, marks=pytest.mark.slow)])
def test_lane_back_int8_path_bit_exact(quantile):
    """Back half on the RTL RMMU (3 x 2 compute group): per tile the FX16 scores descriptor
    (skipped when every kept block is INT8), the INT8 one (skipped when none is), the scores
    merged per key into the score buffer, softmax, A.V: the output beats = the golden trace's
    A.V results = golden run_lane's O (median bound, huge bound, HB-BSSA off); gaps, stalls."""
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import RMMUModel
    from attnforge.rtl.lane_back import LaneBack
    from attnforge.rtl.lane_core import WithRMMU
    from attnforge.testbench.lane import run_back
    params, cfg, h = _hb_head(22, quantile=quantile)
    ref, trace = run_lane_rmmu(params, cfg, *h)
    dut = WithRMMU(LaneBack(rows=3, cols=2, d=8, bq=8, max_t=32))
    model = RMMUModel(rows=3, cols=2, groups=1, tile_m=8, max_m=32, max_k=32, max_n=32)
    tiles, ka, w, avs = [], [], [], []
    for i, (b0, descs) in enumerate(sorted(_by_tile(trace).items())):
        lists = _tile_lists(ref, i)
        tiles.append({"g": 8 * lists["nblk"], "n8": lists["n8"], "fxs": lists["fxs"],
                      "i8s": lists["i8s"],
                      "shift8": params.frac_bits - cfg.q8_shift - cfg.k8_shift})
        for ph, d, a, b in descs:
            if ph == "scores":
                ka += [{"data": [int(x) for x in r]} for r in model.a_beats(d, a)]
            w += [{"data": [[int(x) for x in t] for t in beat]} for beat in model.w_beats(d, b)]
        _, dv, av, bv = descs[-1]
        avs.append((model, dv, av, bv))
        assert np.array_equal(model.gemm(dv, av, bv), ref.out[b0:b0 + 8])
    got, want = run_back(dut, tiles, ka, w, avs, random.Random(6), timeout=60000)
    assert got == want


def _top_check(dut, heads, results, params):
    from attnforge.golden.lane import cycles
    from attnforge.testbench.lane import expected_importance, expected_rows
    for (cfg, *h), (got, status, imp) in zip(heads, results):
        bad = rtl_error(cfg, max_t=dut.max_t, max_m=dut.max_m, block=dut.block,
                        frac_bits=dut.frac_bits)
        assert status["error"] == int(bool(bad)), (cfg, bad)
        if bad:
            assert got == [] and imp == [] and status["kept"] == status["cycles"] == 0
            continue
        ref = run_lane(params, cfg, *h)
        assert got == expected_rows(ref.out, dut.cols), cfg
        assert imp == expected_importance(ref.importance), cfg
        assert status["kept"] * dut.block ** 2 == ref.mask.sum()
        yield ref, status["cycles"], cycles(params, cfg, ref)["total"]


@pytest.mark.long     # ~1 min; the cocotb bench (make test) plays HB-BSSA heads and bad shifts
def test_lane_top_hb_head_and_bad_shifts():
    """Top level (cfg -> load -> tiles -> O rows, importance, status) with HB-BSSA at the median
    bound (FX16 and INT8 blocks, tiles with both descriptors) under gaps and stalls, then a bad
    INT8 shift pair (q8_shift + k8_shift > frac_bits: exactly one error status, nothing
    consumed), then the head again: bit-exact against golden run_lane."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params, simulate_lane
    dut = Lane()
    params, cfg, h = _hb_head(31, quantile=0.5)
    heads = [(cfg, *h), (cfg.replace(q8_shift=5, k8_shift=4), *h)]
    checked = list(_top_check(dut, heads, simulate_lane(dut, heads, seed=31, gaps=0.2,
                                                        stalls=0.2), lane_params(dut)))
    ref = checked[0][0]
    assert len(checked) == 1 and 0 < ref.int8_blocks.sum() < ref.mask[::8, ::8].sum()


@pytest.mark.long     # ~30 s a head; the cocotb bench's cycles_vs_model asserts the same
@pytest.mark.parametrize("bound", ["zero", "huge", "median"])
def test_lane_top_hb_cycles_equal_model(bound):
    """No gaps or stalls: the status cycles of an HB-BSSA head equal golden cycles() with the
    RTL schedule (two scores descriptors where a tile mixes FX16 and INT8 blocks); bound 0
    (no INT8 block: the all-FX16 cycles), huge (every kept block INT8: fewer cycles), median."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params, simulate_lane
    dut = Lane()
    params, cfg, h = _hb_head(32, quantile={"zero": 0.5, "huge": "huge", "median": 0.5}[bound])
    if bound == "zero":
        cfg = cfg.replace(int8_bound=0)
    heads = [(cfg, *h)]
    [(ref, rtl, model)] = _top_check(dut, heads, simulate_lane(dut, heads, gaps=0, stalls=0),
                                     lane_params(dut))
    print(bound, "RTL cycles", rtl, "model", model)
    assert rtl == model
    n8 = int(ref.int8_blocks.sum())
    assert n8 == {"zero": 0, "huge": int(ref.mask[::8, ::8].sum())}.get(bound, n8) and \
        (bound != "median" or 0 < n8)


def test_lane_front_int8_flags_per_tile():
    """The front (estimate group -> pool -> detector, plus Int8Flags and its FIFO): one flags
    beat per tile, bit j = block j's sum of squared estimates <= int8_bound (golden
    ``block_norms`` of the RMMU's estimate; the gather ANDs it with the kept blocks), under
    gaps and stalls."""
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import RMMUModel
    from attnforge.testbench.lane import front_stimulus
    from attnforge.rtl.lane_core import WithRMMU
    from attnforge.rtl.lane_front import LaneFront
    params, cfg, h = _hb_head(33, k=4, quantile=0.5)
    plan, trace = run_lane_rmmu(params, cfg, *h)
    norms = block_norms(plan.est, 8)
    model = RMMUModel(rows=1, cols=2, groups=1, tile_m=8, max_m=8, max_k=16, max_n=32)
    tiles, a_items, w_items, _ = front_stimulus(trace, model, cfg.k)
    want = [sum(1 << j for j in range(4) if norms[i, j] <= cfg.int8_bound) for i in range(4)]
    assert 0 < sum(bin(x).count("1") for x in want) < 16
    dut = WithRMMU(LaneFront(est_rows=1, cols=2, block=8, max_t=32, max_k=16, det_per_beat=1))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(4)
    flags = []

    async def drive(ctx):
        ctx.set(dut.hb, 1)
        ctx.set(dut.bound, cfg.int8_bound)
        await quick.source(dut.tile, tiles, prng, 0.2)(ctx)
    sim.add_testbench(drive)
    sim.add_testbench(quick.source(dut.a, a_items, prng, 0.2))
    sim.add_testbench(quick.source(dut.w, w_items, prng, 0.2))
    sim.add_testbench(quick.sink(dut.mask, [], len(tiles), prng, 0.2))
    sim.add_testbench(quick.sink(dut.idx, [], 4 * len(tiles), prng, 0.2))   # top-4 of 4
    sim.add_testbench(quick.sink(dut.flags, flags, len(tiles), prng, 0.4,
                                 lambda p: int(p.flags)))
    sim.add_testbench(quick.watchdog(20000), background=True)
    sim.run()
    assert flags == want
