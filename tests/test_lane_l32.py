"""DOTA's 32 x 16 point of the lane (docs/lane.md section 8, TODO 6): the per-pass term of the
cycle model when the compute group does not start at row 0 of the RMMU (Amaranth simulator,
small sizes of the same shape), and EstimateFeeder's K~ banks."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.attention import to_fx
from attnforge.golden.lane import LaneConfig, auto_config, cycles, gemm_cycles, int_projection, \
    run_lane
from attnforge.golden.numbers import Precision
from attnforge.golden.rmmu import Descriptor, RMMUModel
from attnforge.testbench import quick
from attnforge.testbench.rmmu import cmd_fields, random_operands

SEED = 32


def _rmmu_cycles(nrows, cols, tile_m, m, k, n, row0, precision=Precision.FX16):
    """One descriptor on the group at ``row0`` (rows ``0 .. row0 - 1`` belong to another
    group) with every operand beat ready and ``o`` always taken: the cycles from the accepted
    ``cmd`` to the last ``o`` beat (both counted), and the output beats."""
    from attnforge.rtl.rmmu import RMMU
    kw = dict(rows=nrows + row0, cols=cols, groups=2 if row0 else 1, tile_m=tile_m, max_m=64,
              max_k=64, max_n=64)
    dut, model = RMMU(**kw), RMMUModel(**kw)
    desc = Descriptor(row0, nrows, precision, m, k, n)
    rng = random.Random(SEED)
    a, b = random_operands(rng, desc)
    port = dut.g[1 if row0 else 0]
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got, seen = [], {}
    n_out = len(model.o_beats(desc, a, b)[1])

    async def clock(ctx):
        c = 0
        async for _, _, cv, cr, ov, orr in ctx.tick().sample(
                port.cmd.valid, port.cmd.ready, port.o.valid, port.o.ready):
            c += 1
            if cv and cr:
                seen.setdefault("cmd", c)
            if ov and orr:
                seen["o"] = c
    sim.add_testbench(quick.source(port.cmd, [cmd_fields(desc)], rng))
    sim.add_testbench(quick.source(port.a, [{"data": [int(x) for x in beat]}
                                            for beat in model.a_beats(desc, a)], rng))
    sim.add_testbench(quick.source(port.w, [{"data": [[int(x) for x in t] for t in beat]}
                                            for beat in model.w_beats(desc, b)], rng))
    sim.add_testbench(quick.sink(port.o, got, n_out, rng, 0,
                                 lambda p: [int(x) for x in p.lanes]))
    sim.add_testbench(clock, background=True)
    sim.add_testbench(quick.watchdog(4000), background=True)
    sim.run()
    want = model.o_beats(desc, a, b)[0]
    assert np.array_equal(np.array(got), want)
    return seen["o"] - seen["cmd"] + 1


# (nrows, cols, tile_m, m, k, n, row0): M-tiles below, at and above nrows + row0; FX16, INT8
@pytest.mark.parametrize("shape", [
    (4, 1, 4, 16, 8, 2, 0),       # row 0: an M-tile of nrows rows hides the loads
    (4, 1, 4, 16, 8, 2, 1),       # row0 1: a bubble per pass (91, not 76)
    (4, 1, 5, 15, 8, 2, 2),       # M-tile between nrows and nrows + row0
    (4, 1, 6, 18, 8, 2, 2),       # M-tile = nrows + row0: hidden again
    (4, 1, 3, 9, 8, 2, 2),        # M-tile below nrows
    (2, 1, 4, 8, 8, 1, 5),        # row0 above nrows
    (4, 1, 4, 8, 16, 2, 1, Precision.INT8),
])
def test_rmmu_pass_hides_loads_behind_nrows_plus_row0(shape):
    """The RMMU's per-pass cost is ``max(M-tile rows, nrows + row0)`` (a shadow tile frees
    when the pass's first word reaches its row, ``row0 + r + 1`` cycles after issue): measured
    cycles == :func:`gemm_cycles`. The earlier term, ``max(M-tile rows, nrows)``, is 15-21
    cycles short on the row0 > 0 shapes below ``nrows + row0`` (the 32 x 16 point's miss)."""
    *geo, row0 = shape[:7]
    nrows, cols, tile_m, m, k, n = geo
    prec = shape[7] if len(shape) > 7 else Precision.FX16
    assert _rmmu_cycles(nrows, cols, tile_m, m, k, n, row0, prec) == \
        gemm_cycles(m, k, n, nrows, cols, prec, tile_m, row0)


def _heads(dut, params, cases):
    rng = np.random.default_rng(SEED)
    out = []
    for mode, k, bits, int8 in cases:
        t = dut.max_t
        qi, ki, vi = to_fx(*(rng.normal(0, 1, (t, dut.d)) for _ in range(3)), dut.frac_bits)
        pq, pk = int_projection(dut.d, 2, seed=int(rng.integers(1 << 16)))
        cfg = LaneConfig(t=t, mode=mode, m=2, est_bits=bits, k=k,
                         granularity=f"{dut.block}x{dut.block}")
        cfg = auto_config(params, cfg, qi, ki, pq, pk)
        if int8:                                   # HB-BSSA: every kept block at INT8
            cfg = cfg.replace(int8_bound=(1 << 24) - 1)
        out.append((cfg, qi, ki, vi, pq, pk))
    return out


@pytest.mark.slow     # ~15-20 s of CPU each (Amaranth simulator, a whole lane)
@pytest.mark.parametrize("est_rows", [1, 2])
def test_lane_cycles_equal_model_with_m_tile_below_nrows_plus_row0(est_rows):
    """The 32 x 16 point's shape at a small size: the compute group (8 rows) starts at row
    ``est_rows`` and the query tile (= the RMMU's M-tile) is 8 = nrows queries, so every pass
    of the scores, A·V and projection descriptors pays ``row0`` cycles; the top level's status
    cycles equal ``cycles(..., schedule="rtl")`` on dense, top-k and HB-BSSA (INT8 scores)
    heads and the output rows are bit-exact (the earlier model was 17-34 cycles per tile
    short here: 60 cycles on the dense head). ``est_rows`` 2: the estimate group is wider
    than row 0 alone (``RTL_EST_WIDE``: one cycle less before the first tile)."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import expected_rows, lane_params, simulate_lane
    dut = Lane(max_t=16, d=8, max_m=2, rows=8 + est_rows, est_rows=est_rows, cols=1, block=8)
    params = lane_params(dut)
    heads = _heads(dut, params, [("dense", 1, 4, False), ("sparse", 1, 4, False),
                                 ("sparse", 2, 8, True)][:3 if est_rows == 1 else 2])
    results = simulate_lane(dut, heads, seed=SEED)
    for (cfg, *h), (got, status, _) in zip(heads, results):
        ref = run_lane(params, cfg, *h)
        assert got == expected_rows(ref.out, dut.cols), cfg
        assert status["cycles"] == cycles(params, cfg, ref)["total"], cfg


def _threshold_heads_after_an_empty_tile(params, d, t, block):
    """Two threshold heads (8x8 blocks, each block row keeping about half the rows' best
    blocks) in which a tile that kept nothing follows one that kept something and precedes
    one that did too, the latter with one and with two detector ``idx`` beats (its kept block
    is the row's last / it is not: a closing beat follows)."""
    nb, found = t // block, {}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        qi, ki, vi = to_fx(*(rng.normal(0, 1, (t, d)) for _ in range(3)), 8)
        pq, pk = int_projection(d, 2, seed=seed)
        cfg = auto_config(params, LaneConfig(t=t, m=2, est_bits=4, granularity="8x8",
                                             select="threshold"), qi, ki, pq, pk)
        est = run_lane(params, cfg.replace(threshold=-(1 << params.score_bits)), qi, ki, vi,
                       pq, pk, plan_only=True).est
        cfg = cfg.replace(threshold=int(np.median(
            est.reshape(nb, block, nb, block).max(axis=(1, 3)).max(axis=1))))
        kept = [sorted({int(k) // block for k in x})
                for x in run_lane(params, cfg, qi, ki, vi, pq, pk).gather]
        for b in range(1, nb - 1):
            if kept[b - 1] and not kept[b] and kept[b + 1]:
                beats = len(kept[b + 1]) + (kept[b + 1][-1] != nb - 1)
                found.setdefault(min(beats, 2), (cfg, qi, ki, vi, pq, pk, {}))
        if len(found) == 2:
            return [found[1], found[2]]
    raise AssertionError("no such heads in 200 seeds")


@pytest.mark.slow     # ~25 s of CPU (Amaranth simulator, a whole lane, three heads)
def test_lane_front_bound_tiles_with_a_wide_estimate_group():
    """Two cycle terms found at DOTA's 32 x 16 point (cocotb, session 7), checked at a small
    size with ``est_rows`` 2: ``RTL_EST_WIDE`` is charged per estimate descriptor, not once
    per head (every tile of a per-row head waits on its front: the model was one cycle long);
    and the tile after an empty one (threshold mode) is taken ``RTL_EMPTY_NEXT`` + its
    detector beats after the empty tile's first zero row (was a flat 2: 2-3 cycles long)."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import checked_heads, lane_params, simulate_lane
    dut = Lane(max_t=32, d=8, max_m=2, rows=5, est_rows=2, cols=2, block=8)
    params = lane_params(dut)
    rng = np.random.default_rng(SEED)
    qi, ki, vi = to_fx(*(rng.normal(0, 1, (32, 8)) for _ in range(3)), dut.frac_bits)
    pq, pk = int_projection(8, 2, seed=SEED)
    cfg = LaneConfig(t=32, m=2, est_bits=4, k=2, granularity="element")
    heads = [(auto_config(params, cfg, qi, ki, pq, pk), qi, ki, vi, pq, pk, {})]
    heads += _threshold_heads_after_an_empty_tile(params, 8, 32, 8)
    results = simulate_lane(dut, heads, seed=SEED)
    checked = list(checked_heads(dut, heads, results))
    assert len(checked) == 3
    for cfg, _, ref, status in checked:
        assert status["cycles"] == cycles(params, cfg, ref)["total"], cfg


# (est_rows, cols, block, max_t, max_m): K~ slots 2 (a key group of 8, max_t 16) and 4 (groups
# of 2, depth 3), n_keys partial, m not a multiple of a word
@pytest.mark.parametrize("geo", [(2, 4, 8, 16, 5), (1, 1, 8, 24, 3)])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_estimate_feeder_dim_major_k_banks(geo, bits):
    """EstimateFeeder with K~ in (dimension, key-group slot) banks: rows written column-wise
    as the projector does (a few values per beat, one write enable each, junk in the other
    values, rows in random order), then two tiles at ``n_keys`` below ``max_t``: the ``a`` and
    ``w`` beats equal ``RMMUModel.a_beats/w_beats`` of the golden descriptor under gaps and
    stalls."""
    from attnforge.golden.numbers import value_range
    from attnforge.rtl.lane_est import EstimateFeeder
    est_rows, cols, block, max_t, max_m = geo
    rng = np.random.default_rng(bits * 7 + cols)
    prng = random.Random(bits + cols)
    t, m = max_t - block // 2 - 1, max_m
    lo, hi = value_range(bits)
    qt, kt = (rng.integers(lo, hi + 1, size=(t, m)) for _ in range(2))
    loads = []
    for tgt, mat in ((0, qt), (1, kt)):
        for i in rng.permutation(t):
            for c0 in range(0, max_m, 2):                # two values per beat, like cols = 2
                row = [int(x) for x in rng.integers(-128, 128, max_m)]
                en = 0
                for c in range(c0, min(c0 + 2, m)):
                    row[c], en = int(mat[i, c]), en | (1 << c)
                loads.append({"target": tgt, "addr": int(i), "row": row, "en": en})
    p = Precision.parse(f"int{bits}")
    model = RMMUModel(rows=est_rows + 1, cols=cols, groups=2, tile_m=block, max_m=64,
                      max_k=64, max_n=64)
    tiles, want_a, want_w = [], [], []
    for q0 in (0, block):
        desc = Descriptor(0, est_rows, p, block, m, t, True, Precision.INT8, 0)
        tiles.append({"q0": q0, "n_keys": t, "m": m, "precision": p})
        want_a += [[int(x) for x in r] for r in model.a_beats(desc, qt[q0:q0 + block])]
        want_w += [[[int(x) for x in c] for c in b] for b in model.w_beats(desc, kt.T)]
    dut = EstimateFeeder(est_rows=est_rows, cols=cols, block=block, max_t=max_t, max_m=max_m,
                         words=est_rows + 1)
    got_a, got_w = quick.run_feeder(dut, loads, tiles, len(want_a), len(want_w), prng,
                                    load_gaps=0.2)
    assert got_a == want_a
    assert got_w == want_w
