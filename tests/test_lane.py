"""Golden model and cycle model of the attention lane (golden/lane.py, docs/lane.md)."""

import numpy as np
import pytest

from attnforge.golden import minilm
from attnforge.golden.attention import (HeadConfig, attend_float, attend_fx, int8_copy,
                                        keep_count, to_fx)
from attnforge.golden.attention_eval import fixture_projections
from attnforge.golden.lane import (DESC_ISSUE, LaneConfig, LaneParams, auto_config, cycles, fit_shift,
                                   gemm_cycles, int_projection, next_keep, run_lane)
from attnforge.golden.numbers import Precision, fx_to_float, requantize
from attnforge.golden.softmax import softmax_fx

P = LaneParams(max_t=64, d=8, rows=4, cols=2, est_rows=1, tile=8)
P512 = LaneParams(max_t=512, d=8, rows=4, cols=2, est_rows=1, tile=8)


def head(rng, t, d=8, scale=1.0):
    q, k, v = (rng.normal(0, scale, (t, d)) for _ in range(3))
    return to_fx(q, k, v, 8)


def sparse_cfg(params, qi, ki, pq, pk, **kw):
    return auto_config(params, LaneConfig(t=qi.shape[0], **kw), qi, ki, pq, pk)


def test_hand_worked_four_tokens():
    """T = 4, d = 2, one kept key per row (top-1 of the estimate), worked by hand."""
    p = LaneParams(max_t=4, d=2, rows=2, cols=1, est_rows=1, tile=4)
    qi = np.array([[256, 0], [0, 256], [256, 256], [-256, 0]])      # 1.0 in Q8.8
    ki = np.array([[256, 0], [0, 256], [-256, 0], [0, -256]])
    vi = np.array([[256, 0], [0, 256], [512, 512], [-256, -256]])
    pq = pk = np.eye(2, dtype=np.int64)                                # identity projection
    cfg = LaneConfig(t=4, est_bits=8, m=2, q_shift=2, k_shift=2, est_shift=6, k=1)
    r = run_lane(p, cfg, qi, ki, vi, pq, pk)
    # Q~ = K~ = x / 4 (64 = 1.0), E = Q~ K~^T >> 6: row 0 -> [64, 0, -64, 0]
    assert r.est[0].tolist() == [64, 0, -64, 0]
    assert r.est[3].tolist() == [-64, 0, 64, 0]
    # top-1 per row; row 2 ties keys 0 and 1 -> the lower index
    assert [int(np.argmax(m)) for m in r.mask] == [0, 1, 0, 2]
    assert r.mask.sum() == 4
    # one kept position -> probability exactly 1.0 (2**12), O = that V row
    assert (r.probs[r.mask] == 4096).all()
    assert r.out.tolist() == [[256, 0], [0, 256], [256, 0], [512, 512]]
    assert r.importance.tolist() == [2 * 4096, 4096, 4096, 0]


@pytest.mark.parametrize("gran", ["element", "1x4", "8x8"])
def test_zero_sparsity_is_dense_bit_for_bit(gran):
    rng = np.random.default_rng(1)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=1)
    c = GRAN_COLS = {"element": 1, "1x4": 4, "8x8": 8}[gran]
    cfg = sparse_cfg(P, qi, ki, pq, pk, granularity=gran, k=32 // GRAN_COLS)
    sparse = run_lane(P, cfg, qi, ki, vi, pq, pk)
    dense = run_lane(P, cfg.replace(mode="dense"), qi, ki, vi)
    assert sparse.mask.all() and c
    assert np.array_equal(sparse.out, dense.out)
    assert np.array_equal(sparse.probs, dense.probs)


@pytest.mark.parametrize("gran,k", [("element", 3), ("1x4", 2), ("1x8", 1), ("8x8", 1),
                                    ("16x16", 1)])
def test_kept_counts(gran, k):
    rng = np.random.default_rng(2)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 4, seed=3)
    params = LaneParams(max_t=64, d=8, rows=4, cols=2, est_rows=1, tile=16)
    cfg = sparse_cfg(params, qi, ki, pq, pk, m=4, granularity=gran, k=k)
    r = run_lane(params, cfg, qi, ki, vi, pq, pk)
    rows, cols = {"element": (1, 1), "1x4": (1, 4), "1x8": (1, 8), "8x8": (8, 8),
                  "16x16": (16, 16)}[gran]
    assert (r.mask.sum(axis=1) == k * cols).all()
    assert ((r.probs > 0) <= r.mask).all()
    # every row group keeps the same columns in block mode
    for r0 in range(0, 32, rows):
        assert (r.mask[r0:r0 + rows] == r.mask[r0]).all()
    # gather list = union of the tile's kept keys
    for i, g in enumerate(r.gather):
        assert g.tolist() == np.nonzero(r.mask[i * 16:(i + 1) * 16].any(axis=0))[0].tolist()


def test_threshold_mode_uses_detector_rule():
    rng = np.random.default_rng(3)
    qi, ki, vi = head(rng, 16)
    pq, pk = int_projection(8, 2)
    cfg = sparse_cfg(P, qi, ki, pq, pk, select="threshold", threshold=20)
    r = run_lane(P, cfg, qi, ki, vi, pq, pk)
    assert np.array_equal(r.mask, r.est >= 20)


def test_pruned_tokens_never_used():
    rng = np.random.default_rng(4)
    qi, ki, vi = head(rng, 24)
    pq, pk = int_projection(8, 2)
    keep = np.array([0, 3, 4, 9, 10, 11, 15, 20, 23])
    cfg = auto_config(P, LaneConfig(t=24, k=4), qi, ki, pq, pk, keep)
    r = run_lane(P, cfg, qi, ki, vi, pq, pk, keep=keep)
    pruned = np.setdiff1d(np.arange(24), keep)
    assert not r.mask[:, pruned].any() and not r.probs[:, pruned].any()
    assert (r.importance[pruned] == 0).all()
    # changing pruned tokens' K and V changes nothing
    k2, v2 = ki.copy(), vi.copy()
    k2[pruned] = 1000
    v2[pruned] = -1000
    r2 = run_lane(P, cfg, qi, k2, v2, pq, pk, keep=keep)
    assert np.array_equal(r.out, r2.out)
    assert (r.mask.sum(axis=1) == 4).all()
    # the loop: next keep-list by the top-k engine's rule
    nk = next_keep(r.importance, 5)
    assert len(nk) == 5 and set(nk) <= set(keep)
    assert np.all(np.diff(nk) > 0)


def test_agrees_with_attention_fx_pipeline():
    """Same mask, max_t = 512 (golden.attention's softmax format) -> attend_fx bit for bit."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(0, 1, (40, 8)) for _ in range(3))
    qi, ki, vi = to_fx(q, k, v, 8)
    pq, pk = int_projection(8, 2, seed=2)
    cfg = sparse_cfg(P512, qi, ki, pq, pk, granularity="1x4", k=3)
    r = run_lane(P512, cfg, qi, ki, vi, pq, pk)
    ref, probs = attend_fx(q, k, v, r.mask)
    assert np.array_equal(r.out, ref) and np.array_equal(r.probs, probs)


def test_bssa_int8_blocks_match_attention():
    rng = np.random.default_rng(6)
    q, k, v = (rng.normal(0, 0.5, (32, 8)) for _ in range(3))
    qi, ki, vi = to_fx(q, k, v, 8)
    pq, pk = int_projection(8, 2, seed=2)
    cfg = sparse_cfg(P512, qi, ki, pq, pk, granularity="8x8", k=2)
    assert cfg.q8_shift == int8_copy(qi)[1] and cfg.k8_shift == int8_copy(ki)[1]
    norms = run_lane(P512, cfg, qi, ki, vi, pq, pk).est.astype(np.int64) ** 2
    bound = int(np.median(norms.reshape(4, 8, 4, 8).sum(axis=(1, 3))))
    r = run_lane(P512, cfg.replace(int8_bound=bound), qi, ki, vi, pq, pk)
    assert r.int8_blocks.any() and not r.int8_blocks.all()
    ref, _ = attend_fx(q, k, v, r.mask, int8_blocks=r.int8_blocks, block=8)
    assert np.array_equal(r.out, ref)


def test_softmax_row_uses_unit_model():
    rng = np.random.default_rng(7)
    qi, ki, vi = head(rng, 16)
    pq, pk = int_projection(8, 2)
    cfg = sparse_cfg(P, qi, ki, pq, pk, k=5)
    r = run_lane(P, cfg, qi, ki, vi, pq, pk)
    x = requantize(qi @ ki.T, 8, 16)
    for i in range(16):
        cols = np.nonzero(r.mask[i])[0]
        assert np.array_equal(r.probs[i, cols], softmax_fx(x[i, cols], P.softmax_format()))


@pytest.mark.parametrize("kw,msg", [
    ({"t": 65}, "t must be"), ({"est_bits": 3}, "est_bits"), ({"m": 9}, "m must be"),
    ({"k": 0}, "k must be"), ({"k": 17}, "k must be"), ({"granularity": "3x3"}, "granularity"),
    ({"granularity": "16x16", "k": 1}, "block 16 must divide"),
    ({"threshold": 300}, "threshold"), ({"int8_bound": 5}, "int8_bound needs"),
    ({"q8_shift": 5, "k8_shift": 4}, "q8_shift"),
])
def test_bad_config_is_one_error(kw, msg):
    cfg = LaneConfig(**{"t": 16, **kw})
    err = cfg.error(P)
    assert err and msg in err and "\n" not in err


def test_params_validated():
    with pytest.raises(ValueError, match="est_rows must be"):
        LaneParams(rows=4, est_rows=4)


def test_fit_shift():
    assert fit_shift([127], 8) == 0 and fit_shift([128], 8) == 1 and fit_shift([-129], 8) == 1
    x = np.array([5000, -7000])
    s = fit_shift(x, 4)
    assert np.abs(requantize(x, s, 4)).max() <= 7 and s > 0


def test_accuracy_on_fixture_head():
    """FX16 lane with the calibrated projection on a real head vs float64 dense."""
    f = minilm.load_fixture("medium_library")
    q, k, v = f["q"][2, 0].astype(float), f["k"][2, 0].astype(float), f["v"][2, 0].astype(float)
    t, d = q.shape
    qi, ki, vi = to_fx(q, k, v, 8)
    proj = fixture_projections(0.25)[(2, f["heads"][0])]
    pq, pk = int_projection(d, proj.dim, proj=proj)
    params = LaneParams(max_t=512, d=d, rows=32, cols=16, est_rows=4, tile=32)
    ref = attend_float(q, k, v)
    dense = run_lane(params, LaneConfig(t=t, mode="dense"), qi, ki, vi)
    err_d = np.abs(fx_to_float(dense.out, 8) - ref).mean() / np.abs(ref).mean()
    cfg = auto_config(params, LaneConfig.from_head(HeadConfig(sparsity=0.5), t, d=d), qi, ki,
                      pq, pk)
    assert cfg.k == keep_count(t, 0.5)
    sp = run_lane(params, cfg, qi, ki, vi, pq, pk)
    err_s = np.abs(fx_to_float(sp.out, 8) - ref).mean() / np.abs(ref).mean()
    assert err_d < 0.03
    assert err_s < 0.25


def test_gemm_cycles_matches_rmmu_doc():
    # docs/rmmu.md: INT2 K=256 M=512 4 N-tiles on 32 rows: 2,048 beats in 2,115 cycles
    assert gemm_cycles(512, 256, 4 * 16 * 8, 32, 16, Precision.INT2, 32) == 2115


def test_cycle_model_sparse_beats_dense():
    rng = np.random.default_rng(8)
    params = LaneParams(max_t=256, d=16, rows=8, cols=4, est_rows=2, tile=8)
    q, k, v = (rng.normal(0, 1, (256, 16)) for _ in range(3))
    qi, ki, vi = to_fx(q, k, v, 8)
    pq, pk = int_projection(16, 4)
    cfg = auto_config(params, LaneConfig(t=256, m=4, granularity="8x8", k=2), qi, ki, pq, pk)
    sp = cycles(params, cfg, run_lane(params, cfg, qi, ki, vi, pq, pk))
    de = cycles(params, cfg.replace(mode="dense"),
                run_lane(params, cfg.replace(mode="dense"), qi, ki, vi))
    assert sp["total"] < de["total"] / 4
    assert sp["gathered_fraction"] == pytest.approx(2 / 32)
    assert all(0 < u <= 1 for u in de["utilization"].values())
    assert de["phases"]["stalls"] >= 0 and sp["phases"]["stalls"] >= 0


@pytest.mark.parametrize("case", ["dense", "elem", "8x8", "bssa", "prune", "threshold"])
def test_rmmu_mapping_is_bit_exact(case):
    """The lane as RMMU descriptors (gathered keys x stationary Q tile; probability rows x
    stationary gathered V) gives run_lane's result bit for bit."""
    from attnforge.golden.lane import run_lane_rmmu
    rng = np.random.default_rng(9)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=4)
    keep = np.array([0, 1, 2, 5, 8, 9, 13, 16, 17, 20, 21, 22, 25, 28, 30, 31]) \
        if case == "prune" else None
    kw = {"dense": dict(mode="dense"), "elem": dict(k=3), "8x8": dict(granularity="8x8", k=2),
          "bssa": dict(granularity="8x8", k=2), "prune": dict(k=4),
          "threshold": dict(select="threshold", threshold=40)}[case]
    cfg = auto_config(P, LaneConfig(t=32, **kw), qi, ki, pq, pk, keep)
    e = None if case == "dense" else run_lane(P, cfg, qi, ki, vi, pq, pk, keep, plan_only=True).est
    if case == "threshold":
        cfg = cfg.replace(threshold=int(np.percentile(e, 85)))
    if case == "bssa":
        cfg = cfg.replace(int8_bound=int(np.median((e ** 2).reshape(4, 8, 4, 8).sum(axis=(1, 3)))))
    ref = run_lane(P, cfg, qi, ki, vi, pq, pk, keep)
    got, trace = run_lane_rmmu(P, cfg, qi, ki, vi, pq, pk, keep)
    assert np.array_equal(got.out, ref.out) and np.array_equal(got.probs, ref.probs)
    assert np.array_equal(got.importance, ref.importance)
    phases = {ph for ph, *_ in trace}
    assert phases == ({"scores", "av"} if case == "dense" else
                      {"project", "estimate", "scores", "av"})
    if case == "bssa":
        assert any(d.precision == Precision.INT8 for _, _, d, *_ in trace)


# -- RTL: granule pool (Amaranth simulator) ----------------------------------------------------
def _pool_run(pool, cmds, beats, n_out, rng, gaps=0.3, stalls=0.3):
    from amaranth.sim import Simulator
    from attnforge.testbench import quick
    sim = Simulator(pool)
    sim.add_clock(1e-6)
    out = []

    def conv(p):
        return ([int(p.data[g]) for g in range(len(p.data))], int(p.count), int(p.last),
                int(p.error))
    sim.add_testbench(quick.source(pool.cmd, cmds, rng, gaps))
    sim.add_testbench(quick.source(pool.i, [x for b in beats for x in b], rng, gaps))
    sim.add_testbench(quick.sink(pool.o, out, n_out, rng, stalls, conv))
    sim.add_testbench(quick.sink(pool.sq, [], n_out, rng, stalls))   # tests/test_lane_lhb.py
    sim.add_testbench(quick.watchdog(20000), background=True)
    sim.run()
    return out


@pytest.mark.parametrize("block,width", [(4, 8), (8, 8), (2, 4), (8, 4), (8, 2)])
def test_granule_pool_matches_detector_granules(block, width):
    import random
    from attnforge.golden.detector import granule_scores
    from attnforge.rtl.lane_pool import GranulePool
    lanes = 16
    pool = GranulePool(lanes=lanes, in_bits=20, score_bits=8, block=block, max_n=64)
    rng = np.random.default_rng(block * 10 + width)
    prng = random.Random(1)
    cmds, beats, expect = [], [], []
    for n in (width, 2 * width + 3, 1, 37):
        est = rng.integers(-128, 128, size=(block, n))
        cmds.append({"n": n, "width": width})
        tile_beats, want = [], []
        n_t = -(-n // width)
        g_all = granule_scores(est, block)
        for nt in range(n_t):
            for r in range(block):
                lanesv = rng.integers(-128, 128, size=lanes)       # junk beyond the valid lanes
                seg = est[r, nt * width:(nt + 1) * width]
                lanesv[:len(seg)] = seg
                tile_beats.append({"lanes": [int(x) for x in lanesv], "last": 0, "error": 0})
            if (nt + 1) % max(1, block // width) and nt != n_t - 1:
                continue                       # W < B: a granule spans B / W N-tiles
            g0 = nt * width // block
            cnt = -(-min(width, n - nt * width) // block) if width >= block else 1
            data = [int(x) for x in g_all[g0:g0 + cnt]] + [0] * (lanes // block - cnt)
            want.append((data, cnt, int(nt == n_t - 1), 0))
        beats.append(tile_beats)
        expect.append(want)
    # a bad command: width not a multiple of the block (or 0): one error beat, nothing consumed
    cmds.insert(1, {"n": 5, "width": 0})
    beats.insert(1, [])
    expect.insert(1, [([0] * (lanes // block), 0, 1, 1)])
    expect = [x for want in expect for x in want]
    got = _pool_run(pool, cmds, beats, len(expect), prng)
    assert got == expect


@pytest.mark.parametrize("case", ["dense", "elem", "8x8", "bssa"])
def test_cycle_model_charges_the_traced_descriptors(case):
    """cycles() charges exactly gemm_cycles of the descriptors run_lane_rmmu issues."""
    from attnforge.golden.lane import run_lane_rmmu
    rng = np.random.default_rng(10)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=4)
    kw = {"dense": dict(mode="dense"), "elem": dict(k=3), "8x8": dict(granularity="8x8", k=2),
          "bssa": dict(granularity="8x8", k=3, int8_bound=2000)}[case]
    cfg = auto_config(P, LaneConfig(t=32, **kw), qi, ki, pq, pk)
    res, trace = run_lane_rmmu(P, cfg, qi, ki, vi, pq, pk)
    model = cycles(P, cfg, res)
    for phase in ("project", "estimate", "scores", "av"):
        want = sum(gemm_cycles(d.m, d.k, d.n, d.nrows, P.cols, d.precision, P.tile_m, d.row0)
                   + DESC_ISSUE for ph, _, d, *_ in trace if ph == phase)
        assert model["phases"][phase] == want, phase


# -- RTL: front half (RMMU estimate group -> pool -> packer -> detector) ------------------------
def test_lane_front_estimate_and_detect_bit_exact():
    """Tiles of 8 queries, 32 keys, INT4 estimate of m = 2 on a 1 x 2 estimate group, 8x8
    top-2: the detector's kept blocks equal the golden lane's mask, tile by tile."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import RMMUModel
    from attnforge.testbench.lane import front_stimulus
    from attnforge.rtl.lane_core import WithRMMU
    from attnforge.rtl.lane_front import LaneFront
    from attnforge.testbench import quick
    params = LaneParams(max_t=32, d=8, rows=2, cols=2, est_rows=1, tile=8)
    rng = np.random.default_rng(11)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=5)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2), qi, ki, pq, pk)
    plan, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    model = RMMUModel(rows=1, cols=2, groups=1, tile_m=8, max_m=8, max_k=16, max_n=32)
    tiles, a_items, w_items, starts = front_stimulus(trace, model, cfg.k)
    want = [sum(1 << j for j in range(4) if plan.mask[b0, 8 * j]) for b0 in starts]
    dut = WithRMMU(LaneFront(est_rows=1, cols=2, block=8, max_t=32, max_k=16, det_per_beat=1))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(3)
    masks, idx = [], []
    sim.add_testbench(quick.source(dut.tile, tiles, prng, 0.2))
    sim.add_testbench(quick.source(dut.a, a_items, prng, 0.2))
    sim.add_testbench(quick.source(dut.w, w_items, prng, 0.2))
    sim.add_testbench(quick.sink(dut.mask, masks, len(tiles), prng, 0.2,
                                 lambda p: (int(p.mask), int(p.count), int(p.error))))
    # idx: one beat per kept granule (per_beat 1), plus an empty last beat when the row's final
    # word keeps nothing (detector contract)
    n_idx = sum(2 + (0 if w >> 3 & 1 else 1) for w in want)
    sim.add_testbench(quick.sink(dut.idx, idx, n_idx, prng, 0.2,
                                 lambda p: (int(p.index[0]), int(p.count), int(p.last))))
    sim.add_testbench(quick.watchdog(20000), background=True)
    sim.run()
    assert [m for m, _, _ in masks] == want
    assert all(c == 2 and e == 0 for _, c, e in masks)
    kept = [[j for j in range(4) if w >> j & 1] for w in want]
    assert [i for i, c, _ in idx if c] == [j for ks in kept for j in ks]
    assert sum(last for _, _, last in idx) == len(tiles)


def test_lane_front_cycles_match_model():
    """No gaps or stalls: estimate tiles follow every gemm_cycles + DESC_ISSUE cycles (the
    cycle model's estimate phase), measured on the RTL front half; the first tile's mask is
    the model's estimate + detector latency + 6 cycles of pool/packer/detector ingest."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import Descriptor, RMMUModel
    from attnforge.rtl.lane_core import WithRMMU
    from attnforge.rtl.lane_front import LaneFront
    from attnforge.testbench import quick
    params = LaneParams(max_t=32, d=8, rows=2, cols=2, est_rows=1, tile=8, tile_m=8)
    rng = np.random.default_rng(11)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=5)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2), qi, ki, pq, pk)
    plan, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    model = RMMUModel(rows=1, cols=2, groups=1, tile_m=8, max_m=8, max_k=16, max_n=32)
    tiles, a_items, w_items = [], [], []
    for ph, b0, d, a, b in trace:
        if ph == "estimate":
            d1 = Descriptor(0, 1, d.precision, d.m, d.k, d.n, True, d.out_fmt, d.shift)
            tiles.append({"n": d.n, "k": d.k, "precision": d.precision, "shift": d.shift,
                          "k_keep": cfg.k})
            a_items += [{"data": [int(x) for x in r]} for r in model.a_beats(d1, a)]
            w_items += [{"data": [[int(x) for x in t] for t in w]} for w in model.w_beats(d1, b)]
    dut = WithRMMU(LaneFront(est_rows=1, cols=2, block=8, max_t=32, max_k=16, det_per_beat=1))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(3)
    times, masks, idx = [], [], []

    async def clock(ctx):
        c = 0
        while True:
            _, _, v, r = await ctx.tick().sample(dut.mask.valid, dut.mask.ready)
            c += 1
            if v and r:
                times.append(c)
    for port, items in ((dut.tile, tiles), (dut.a, a_items), (dut.w, w_items)):
        sim.add_testbench(quick.source(port, items, prng, 0))
    sim.add_testbench(quick.sink(dut.mask, masks, len(tiles), prng, 0))
    sim.add_testbench(quick.sink(dut.idx, idx, 1000, prng, 0), background=True)
    sim.add_testbench(clock, background=True)
    sim.run()
    per_tile = cycles(params, cfg, plan)["phases"]["estimate"] // len(tiles)
    assert per_tile == gemm_cycles(8, 2, 32, 1, 2, Precision.INT4, 8) + DESC_ISSUE == 38
    assert np.diff(times).tolist() == [per_tile] * (len(tiles) - 1)
    assert times[0] == per_tile - DESC_ISSUE + params.det_lat + 6


@pytest.mark.parametrize("g", [16, 13, 1])
def test_score_tile_rows(g):
    """RMMU scores beats (S^T, FX16) of one tile -> per-query score rows, bit-exact with the
    golden lane's scores, under gaps and stalls."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.rmmu import Descriptor, RMMUModel
    from attnforge.rtl.lane_scores import ScoreTile
    from attnforge.testbench import quick
    rng = np.random.default_rng(12 + g)
    qi, ki, _ = head(rng, 32)
    keys = np.sort(rng.choice(32, g, replace=False))
    model = RMMUModel(rows=3, cols=2, groups=1, tile_m=32, max_m=64, max_k=64, max_n=64)
    d = Descriptor(0, 3, Precision.FX16, g, 8, 8, True, Precision.FX16, 8)
    a, b = ki[keys], qi[:8].T
    lanes, _ = model.o_beats(d, a, b)
    s = requantize(qi[:8] @ ki[keys].T, 8, 16)          # the golden lane's scores
    dut = ScoreTile(cols=2, in_bits=model.out_bits, bq=8, max_g=32, per_beat=4, index_bits=8)
    expect = []
    for qq in range(8):
        for w0 in range(0, g, 4):
            vals = s[qq, w0:w0 + 4].tolist()
            n = len(vals)
            expect.append((vals + [0] * (4 - n), [w0 + i for i in range(n)] + [0] * (4 - n), n,
                           int(w0 + 4 >= g)))
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(g)
    sim.add_testbench(quick.source(dut.cmd, [{"g": g}] * 2, prng, 0.3))
    beats = [{"lanes": [int(x) for x in row], "last": 0, "error": 0} for row in lanes] * 2
    sim.add_testbench(quick.source(dut.s, beats, prng, 0.3))
    sim.add_testbench(quick.sink(dut.o, got, 2 * len(expect), prng, 0.3, lambda p: (
        [int(x) for x in p.data], [int(x) for x in p.index], int(p.count), int(p.last))))
    sim.add_testbench(quick.watchdog(20000), background=True)
    sim.run()
    assert got == expect * 2


def test_tile_softmax_probabilities_bit_exact():
    """S^T beats of a tile -> probability rows equal to the golden lane's probabilities
    (softmax over the tile's gathered keys, format max_len = max_t)."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.rmmu import Descriptor, RMMUModel
    from attnforge.rtl.lane_scores import TileSoftmax
    from attnforge.testbench import quick
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8)
    rng = np.random.default_rng(13)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=6)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2), qi, ki, pq, pk)
    ref = run_lane(params, cfg, qi, ki, vi, pq, pk)
    g = ref.gather[1]                                       # tile 1: queries 8..15
    model = RMMUModel(rows=3, cols=2, groups=1, tile_m=32, max_m=64, max_k=64, max_n=64)
    d = Descriptor(0, 3, Precision.FX16, len(g), 8, 8, True, Precision.FX16, 8)
    lanes, _ = model.o_beats(d, ki[g], qi[8:16].T)
    dut = TileSoftmax(cols=2, in_bits=model.out_bits, bq=8, max_g=32, per_beat=4, max_t=32)
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(4)
    sim.add_testbench(quick.source(dut.cmd, [{"g": len(g)}], prng, 0.2))
    sim.add_testbench(quick.source(dut.s, [{"lanes": [int(x) for x in r], "last": 0,
                                            "error": 0} for r in lanes], prng, 0.2))
    n_beats = 8 * -(-len(g) // 4)
    sim.add_testbench(quick.sink(dut.o, got, n_beats, prng, 0.2, lambda p: (
        [int(x) for x in p.data], [int(x) for x in p.index], int(p.count), int(p.last))))
    sim.add_testbench(quick.watchdog(50000), background=True)
    sim.run()
    rows, cur = [], []
    for data_, index, count, last in got:
        cur += [(int(g[i]), v) for v, i in zip(data_[:count], index[:count])]
        if last:
            rows.append(cur)
            cur = []
    assert len(rows) == 8
    for qq, row in enumerate(rows):
        want = [(int(k), int(ref.probs[8 + qq, k])) for k in g]
        assert row == want


@pytest.mark.slow
def test_real_rmmu_runs_the_lane_descriptors_concurrently():
    """The descriptor trace of a head (8x8 top-1, T = 16) on the RTL RMMU (4 x 2, 2 groups):
    the estimate on group 0 (row 0, INT4) concurrently with project/scores/A.V on group 1
    (rows 1-3, FX16), random gaps and stalls; every output beat as RMMUModel.o_beats says."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import RMMUModel
    from attnforge.rtl.rmmu import RMMU
    from attnforge.testbench import quick
    params = LaneParams(max_t=16, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8)
    rng = np.random.default_rng(14)
    qi, ki, vi = head(rng, 16)
    pq, pk = int_projection(8, 2, seed=7)
    cfg = auto_config(params, LaneConfig(t=16, m=2, granularity="8x8", k=1), qi, ki, pq, pk)
    ref, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    size = dict(rows=4, cols=2, groups=2, tile_m=8, max_m=32, max_k=32, max_n=32)
    model, dut = RMMUModel(**size), RMMU(**size)
    program = {0: [t for t in trace if t[0] == "estimate"],
               1: [t for t in trace if t[0] != "estimate"]}
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(5)
    got, want = {0: [], 1: []}, {0: [], 1: []}
    for g, ops in program.items():
        port = dut.g[g]
        cmds, acts, wts = [], [], []
        for _, _, d, a, b in ops:
            cmds.append({f: getattr(d, f) for f in ("row0", "nrows", "precision", "m", "k", "n",
                                                    "requant", "out_fmt", "shift")})
            acts += [{"data": [int(x) for x in r]} for r in model.a_beats(d, a)]
            wts += [{"data": [[int(x) for x in t] for t in w]} for w in model.w_beats(d, b)]
            lanes, last = model.o_beats(d, a, b)
            want[g] += [(r.tolist(), bool(x)) for r, x in zip(lanes, last)]
        for stream, items in ((port.cmd, cmds), (port.a, acts), (port.w, wts)):
            sim.add_testbench(quick.source(stream, items, prng, 0.2))
        sim.add_testbench(quick.sink(port.o, got[g], len(want[g]), prng, 0.2,
                                     lambda p: ([int(x) for x in p.lanes], bool(p.last))))
    sim.add_testbench(quick.watchdog(30000), background=True)
    sim.run()
    assert got == want
    # and the A.V beats are the golden lane's output rows
    av = [t for t in trace if t[0] == "av"]
    assert len(av) == 2 and np.array_equal(
        np.concatenate([model.gemm(d, a, b) for _, _, d, a, b in av]), ref.out)


@pytest.mark.parametrize("per_beat", [1, 3])
def test_prob_buffer_feeds_av_beats(per_beat):
    """Probability rows of a tile -> the A.V descriptor's a beats (A streamed once per N-tile),
    equal to RMMUModel.a_beats of the golden lane's A.V descriptor, gaps and stalls."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import RMMUModel
    from attnforge.rtl.lane_scores import ProbBuffer
    from attnforge.testbench import quick
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8)
    rng = np.random.default_rng(15)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=8)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2), qi, ki, pq, pk)
    ref, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    model = RMMUModel(rows=4, cols=2, groups=2, tile_m=8, max_m=64, max_k=64, max_n=64)
    _, b0, d, a, b = [t for t in trace if t[0] == "av"][1]
    g = a.shape[1]
    beats = []
    for q in range(8):
        for w0 in range(0, g, per_beat):
            vals = a[q, w0:w0 + per_beat].tolist()
            n = len(vals)
            beats.append({"data": vals + [0] * (per_beat - n),
                          "index": [w0 + i for i in range(n)] + [0] * (per_beat - n),
                          "count": n, "last": int(w0 + per_beat >= g), "error": 0})
    want = [[int(x) for x in r] for r in model.a_beats(d, a)]
    dut = ProbBuffer(rows=4, nrows=3, bq=8, max_g=32, per_beat=per_beat, prob_bits=13,
                     index_bits=5)
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(per_beat)
    sim.add_testbench(quick.source(dut.cmd, [{"g": g, "n_tiles": 4}], prng, 0.2))
    sim.add_testbench(quick.source(dut.i, beats, prng, 0.2))
    sim.add_testbench(quick.sink(dut.a, got, len(want), prng, 0.2,
                                 lambda p: [int(x) for x in p.data]))
    sim.add_testbench(quick.watchdog(20000), background=True)
    sim.run()
    assert d.nrows == 3 and d.row0 == 1
    assert got == want


def test_lane_back_scores_softmax_av_bit_exact():
    """Back half on the RTL RMMU (3 x 2 compute group): per tile the scores descriptor, the
    tile softmax, the probability buffer and the A.V descriptor; the output beats equal the
    golden lane's O rows (8x8 top-2, two tiles, gaps and stalls)."""
    import random
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import Descriptor, RMMUModel
    from attnforge.rtl.lane_back import LaneBack
    from attnforge.rtl.lane_core import WithRMMU
    from attnforge.testbench.lane import run_back
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8)
    rng = np.random.default_rng(16)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=9)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2), qi, ki, pq, pk)
    ref, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    dut = WithRMMU(LaneBack(rows=3, cols=2, d=8, bq=8, max_t=32))
    big = 32
    model = RMMUModel(rows=3, cols=2, groups=1, tile_m=8, max_m=big, max_k=big, max_n=big)
    tiles, ka, w, avs = [], [], [], []
    by_tile = {}
    for ph, b0, d, a, b in trace:
        if ph in ("scores", "av"):
            by_tile.setdefault(b0, {})[ph] = (Descriptor(0, 3, d.precision, d.m, d.k, d.n, True,
                                                         d.out_fmt, d.shift), a, b)
    for b0 in sorted(by_tile)[:2]:
        (ds, as_, bs), (dv, av, bv) = by_tile[b0]["scores"], by_tile[b0]["av"]
        tiles.append({"g": ds.m})
        ka += [{"data": [int(x) for x in r]} for r in model.a_beats(ds, as_)]
        w += [{"data": [[int(x) for x in t] for t in beat]}
              for beat in np.concatenate([model.w_beats(ds, bs), model.w_beats(dv, bv)])]
        avs.append((model, dv, av, bv))
        assert np.array_equal(model.gemm(dv, av, bv), ref.out[b0:b0 + 8])
    got, want = run_back(dut, tiles, ka, w, avs, random.Random(6))
    assert got == want


@pytest.mark.slow
def test_lane_back_cycles_vs_model():
    """No gaps/stalls, 4 tiles of G = 16: v0 runs a tile's phases back to back (one score and
    one probability buffer), so a tile takes the model's scores + A.V descriptors + the softmax
    rows (P = 1) + the softmax's latency + 13 cycles (buffer turnarounds); the model's pipelined
    schedule (double-buffered tiles, softmax hidden) charges scores + A.V only."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.lane import descriptor_cycles, run_lane_rmmu
    from attnforge.golden.rmmu import Descriptor, RMMUModel
    from attnforge.rtl.lane_back import LaneBack
    from attnforge.rtl.lane_core import WithRMMU
    from attnforge.rtl.softmax import Softmax
    from attnforge.testbench import quick
    dut = WithRMMU(LaneBack(rows=3, cols=2, d=8, bq=8, max_t=32))
    sm_latency = Softmax(per_beat=1, max_len=32, in_bits=16, in_frac=dut.block.frac_bits,
                         out_frac=dut.block.prob_frac, index_bits=5).latency
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8)
    rng = np.random.default_rng(16)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=9)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2), qi, ki, pq, pk)
    _, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    model = RMMUModel(rows=3, cols=2, groups=1, tile_m=8, max_m=32, max_k=32, max_n=32)
    tiles, ka, w, n_out, per_tile = [], [], [], 0, []
    by = {}
    for ph, b0, d, a, b in trace:
        if ph in ("scores", "av"):
            by.setdefault(b0, {})[ph] = (Descriptor(0, 3, d.precision, d.m, d.k, d.n, True,
                                                    d.out_fmt, d.shift), a, b)
    for b0 in sorted(by):
        (ds, as_, bs), (dv, av, bv) = by[b0]["scores"], by[b0]["av"]
        tiles.append({"g": ds.m})
        ka += [{"data": [int(x) for x in r]} for r in model.a_beats(ds, as_)]
        w += [{"data": [[int(x) for x in t] for t in beat]}
              for beat in np.concatenate([model.w_beats(ds, bs), model.w_beats(dv, bv)])]
        n_out += len(model.o_beats(dv, av, bv)[1])
        per_tile.append(descriptor_cycles(ds.m, 8, 8, 3, 2, Precision.FX16, 8)
                        + descriptor_cycles(8, ds.m, 8, 3, 2, Precision.FX16, 8) + 8 * ds.m
                        + sm_latency + 13)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng, got, ends = random.Random(6), [], []

    async def clock(ctx):
        c = 0
        while True:
            _, _, v, r, last = await ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                       dut.o.payload.last)
            c += 1
            if v and r and last:
                ends.append(c)
    for port, items in ((dut.tile, tiles), (dut.ka, ka), (dut.w, w)):
        sim.add_testbench(quick.source(port, items, prng, 0))
    sim.add_testbench(quick.sink(dut.o, got, n_out, prng, 0))
    sim.add_testbench(clock, background=True)
    sim.run()
    assert np.diff([0] + ends).tolist() == per_tile


def test_back_feeder_streams_equal_golden_beats():
    """Q/K/V memories + a tile's kept blocks -> the scores a beats and the scores + A.V w
    beats, equal to RMMUModel.a_beats/w_beats of the golden lane's descriptors (gaps/stalls)."""
    import random
    from attnforge.golden.lane import run_lane_rmmu
    from attnforge.golden.rmmu import Descriptor, RMMUModel
    from attnforge.rtl.lane_feed import BackFeeder
    from attnforge.testbench import quick
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8)
    rng = np.random.default_rng(17)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=10)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2), qi, ki, pq, pk)
    ref, trace = run_lane_rmmu(params, cfg, qi, ki, vi, pq, pk)
    model = RMMUModel(rows=3, cols=2, groups=1, tile_m=8, max_m=32, max_k=32, max_n=32)
    by = {}
    for ph, b0, d, a, b in trace:
        if ph in ("scores", "av"):
            by.setdefault(b0, {})[ph] = (Descriptor(0, 3, d.precision, d.m, d.k, d.n, True,
                                                    d.out_fmt, d.shift), a, b)
    loads = [{"target": tgt, "addr": i, "row": [int(x) for x in mat[i]]}
             for tgt, mat in ((0, qi), (1, ki), (2, vi)) for i in range(32)]
    tiles, want_a, want_w = [], [], []
    for i, b0 in enumerate(sorted(by)):
        blocks = sorted({int(x) // 8 for x in ref.gather[i]})
        tiles.append({"q0": b0, "nblk": len(blocks), "blk": blocks + [0] * (4 - len(blocks))})
        (ds, as_, bs), (dv, _, bv) = by[b0]["scores"], by[b0]["av"]
        want_a += [[int(x) for x in r] for r in model.a_beats(ds, as_)]
        want_w += [[[int(x) for x in t] for t in beat]
                   for beat in np.concatenate([model.w_beats(ds, bs), model.w_beats(dv, bv)])]
    dut = BackFeeder(rows=3, cols=2, d=8, bq=8, max_t=32, block=8, tile_m=8)
    got_a, got_w = quick.run_feeder(dut, loads, tiles, len(want_a), len(want_w),
                                    random.Random(7))
    assert len(want_a) == len(tiles) * 4 * 3 * 16 and len(want_w) > 100   # N-tiles x passes x G
    assert got_a == want_a
    assert got_w == want_w


@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.long     # ~1 min each; the top level's tests cover the core whole
def test_lane_core_whole_head_bit_exact(mode):
    """A whole head (T = 32, d = 8, 8x8 blocks = the query tile, top-2, INT4 estimate of m = 2)
    through the RTL lane core (estimate -> pool -> detector -> gather -> feeder -> scores ->
    softmax -> A.V), sparse and dense, under gaps and stalls: the output rows equal golden
    run_lane's O bit for bit. The estimate's operand beats come from the testbench."""
    from attnforge.rtl.lane_core import LaneCore
    from attnforge.testbench.lane import simulate_core
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8)
    rng = np.random.default_rng(18)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=11)
    cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=2, mode=mode), qi, ki,
                      pq, pk)
    ref = run_lane(params, cfg, qi, ki, vi, pq, pk)
    dut = LaneCore(est_rows=1, rows=3, cols=2, d=8, block=8, max_t=32, max_k=16)
    out, cyc = simulate_core(dut, params, cfg, qi, ki, vi, pq, pk, gaps=0.2, stalls=0.2)
    assert np.array_equal(out, ref.out)
    assert ref.mask.mean() == (0.5 if mode == "sparse" else 1.0)
    assert cyc > 0


@pytest.mark.parametrize("bits,m,t", [(8, 8, 32), (4, 3, 29), (2, 8, 21)])
def test_estimate_feeder_streams_equal_golden_beats(bits, m, t):
    """Q~/K~ memories -> the estimate descriptor's a and w beats at INT8/4/2 (two tiles, a
    partial last N-tile, m not a multiple of a pass), equal to RMMUModel.a_beats/w_beats of
    the golden descriptor, under gaps and stalls."""
    import random
    from amaranth.sim import Simulator
    from attnforge.golden.numbers import value_range
    from attnforge.golden.rmmu import Descriptor, RMMUModel
    from attnforge.rtl.lane_est import EstimateFeeder
    from attnforge.testbench import quick
    rng = np.random.default_rng(bits + m + t)
    lo, hi = value_range(bits)
    qt, kt = (rng.integers(lo, hi + 1, size=(t, m)) for _ in range(2))
    p = Precision.parse(f"int{bits}")
    model = RMMUModel(rows=4, cols=2, groups=2, tile_m=8, max_m=32, max_k=32, max_n=32)
    loads = [{"target": tgt, "addr": i, "row": [int(x) for x in mat[i]] + [0] * (8 - m),
              "en": 0xFF} for tgt, mat in ((0, qt), (1, kt)) for i in range(t)]
    tiles, want_a, want_w = [], [], []
    for q0 in (0, 8):
        d = Descriptor(0, 2, p, 8, m, t, True, Precision.INT8, 0)
        tiles.append({"q0": q0, "n_keys": t, "m": m, "precision": p})
        want_a += [[int(x) for x in r] for r in model.a_beats(d, qt[q0:q0 + 8])]
        want_w += [[[int(x) for x in c] for c in b] for b in model.w_beats(d, kt.T)]
    dut = EstimateFeeder(est_rows=2, cols=2, block=8, max_t=32, max_m=8, words=4)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    prng = random.Random(bits)
    got_a, got_w = [], []

    async def driver(ctx):
        await quick.source(dut.load, loads, prng, 0.0)(ctx)
        await quick.source(dut.tile, tiles, prng, 0.2)(ctx)
    sim.add_testbench(driver)
    sim.add_testbench(quick.sink(dut.a, got_a, len(want_a), prng, 0.2,
                                 lambda p_: [int(x) for x in p_.data]))
    sim.add_testbench(quick.sink(dut.w, got_w, len(want_w), prng, 0.2,
                                 lambda p_: [[int(x) for x in c] for c in p_.data]))
    sim.add_testbench(quick.watchdog(20000), background=True)
    sim.run()
    assert got_a == want_a
    assert got_w == want_w


# -- RTL: the top level (rtl/lane.py) --------------------------------------------------------
def _top_heads(params, cases, seed=19):
    """One head per case (LaneConfig fields over 8x8 top-2, INT4, m = 2, T = 32), shifts
    fitted to the head's data when the configuration is legal."""
    from attnforge.golden.lane import rtl_error
    rng = np.random.default_rng(seed)
    qi, ki, vi = head(rng, 32)
    pq, pk = int_projection(8, 2, seed=seed)
    out = []
    for kw in cases:
        cfg = LaneConfig(t=32, m=2, granularity="8x8", k=2).replace(**kw)
        t = min(max(cfg.t, 1), 32)
        h = (qi[:t], ki[:t], vi[:t], pq, pk)
        if rtl_error(cfg, max_t=params.max_t, max_m=4, block=params.tile) is None:
            cfg = auto_config(params, cfg, qi[:t], ki[:t], pq, pk)
        out.append((cfg, *h))
    return out


def _check_top(dut, heads, results):
    from attnforge.golden.lane import rtl_error
    from attnforge.testbench.lane import expected_rows, lane_params
    params = lane_params(dut)
    from attnforge.testbench.lane import expected_importance
    for (cfg, *h), (got, status, imp) in zip(heads, results):
        bad = rtl_error(cfg, max_t=dut.max_t, max_m=dut.max_m, block=dut.block)
        assert status["error"] == int(bad is not None), (cfg, bad)
        if bad:
            assert got == [] and imp == [] and status["kept"] == 0
            continue
        ref = run_lane(params, cfg, *h)
        assert got == expected_rows(ref.out, dut.cols), cfg
        assert imp == expected_importance(ref.importance), cfg
        assert status["kept"] * dut.block ** 2 == ref.mask.sum() and status["cycles"] > 0


@pytest.mark.parametrize("bad", [dict(t=0), dict(t=40), dict(t=28), dict(est_bits=3),
                                 dict(m=0), dict(m=5), dict(k=0), dict(k=5),
                                 dict(granularity="16x16"),
                                 dict(q8_shift=5, k8_shift=4)])
def test_rtl_error_rejects(bad):
    """The RTL subset's configuration check (golden side): one line naming the field."""
    from attnforge.golden.lane import rtl_error
    cfg = LaneConfig(t=32, m=2, granularity="8x8", k=2).replace(**bad)
    err = rtl_error(cfg, max_t=32, max_m=4, block=8)
    assert err and "\n" not in err and next(iter(bad)).split("_")[0] in err
    assert rtl_error(LaneConfig(t=32, m=2, granularity="8x8", k=2), max_t=32, max_m=4,
                     block=8) is None


def test_lane_top_bad_configs_then_a_head():
    """Bad configurations (each a field the check rejects) get exactly one error status and
    consume nothing else; the next head (8x8 top-1, INT2 estimate) is bit-exact."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params, simulate_lane
    dut = Lane()
    heads = _top_heads(lane_params(dut), [dict(t=40), dict(est_bits=3), dict(k=5),
                                          dict(granularity="16x16"), dict(q8_shift=9),
                                          dict(t=24, mode="dense", k=9),
                                          dict(k=1, est_bits=2)])
    _check_top(dut, heads, simulate_lane(dut, heads, gaps=0.2, stalls=0.2))


@pytest.mark.long     # ~2.5 min; the cocotb bench (make test) plays the same kinds of heads
def test_lane_top_heads_bit_exact():
    """Head after head through the top level (cfg -> load -> tiles -> O rows -> status):
    sparse INT4/INT8 top-2 and top-4 (0 % sparsity), dense, under gaps and stalls."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params, simulate_lane
    dut = Lane()
    heads = _top_heads(lane_params(dut), [dict(), dict(est_bits=8),
                                          dict(k=4), dict(mode="dense")], seed=20)
    _check_top(dut, heads, simulate_lane(dut, heads, gaps=0.2, stalls=0.2))
