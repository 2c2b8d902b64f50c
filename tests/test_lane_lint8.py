"""HB-BSSA INT8 blocks on their own RMMU row group (``Lane(int8_rows=N)``, docs/lane.md TODO 5
and 7): golden checks (the INT8 descriptors on the INT8 group, outputs unchanged, the cycle
model's concurrent scores) and quick Amaranth-simulator runs of small lanes -- every head
bit-exact against ``golden.lane.run_lane`` through ``testbench.lane.checked_heads``, status
cycles == ``golden.lane.cycles(schedule="rtl")``."""

import random

import numpy as np
import pytest

from attnforge.golden.attention import to_fx
from attnforge.golden.lane import (LaneConfig, LaneParams, auto_config, block_norms, cycles,
                                   descriptor_cycles, int_projection, run_lane, run_lane_rmmu)
from attnforge.golden.numbers import Precision

SEED = 8


def _small(int8_rows):
    """A small lane (a few seconds a head set): T <= 16, d = 2, a 1-row compute group."""
    return dict(max_t=16, d=2, max_m=1, rows=2 + int8_rows, cols=1, est_rows=1,
                int8_rows=int8_rows, block=8)


def _head(params, rng, t, bound, k=2):
    """A random FX16 head (``opt`` = {}) with ``int8_bound``: "all" (every kept block INT8),
    "mixed" (below the median of the kept blocks' distinct sums of squares: some blocks of a
    tile INT8, some FX16), None (HB-BSSA off)."""
    d = params.d
    qi, ki, vi = to_fx(*(rng.normal(0, 1, (t, d)) for _ in range(3)), 8)
    pq, pk = int_projection(d, 1, seed=int(rng.integers(1 << 16)))
    cfg = auto_config(params, LaneConfig(t=t, m=1, granularity="8x8", k=k), qi, ki, pq, pk)
    if bound is not None:
        plan = run_lane(params, cfg, qi, ki, vi, pq, pk, plan_only=True)
        norms = block_norms(plan.est, 8)[plan.mask[::8, ::8]]
        levels = np.unique(norms)                       # (ties: the median may be the max)
        cfg = cfg.replace(int8_bound=(1 << 24) if bound == "all"
                          else int(levels[max(0, len(levels) // 2 - 1)]))
    return (cfg, qi, ki, vi, pq, pk, {})


def _kinds(ref):
    """Per tile: "fx", "int8" or "both" (which scores descriptors it has)."""
    out = []
    for i, gath in enumerate(ref.gather):
        blocks = sorted({int(x) // 8 for x in gath})
        n8 = 0 if ref.int8_blocks is None else int(ref.int8_blocks[i, blocks].sum())
        out.append("int8" if n8 == len(blocks) else "fx" if n8 == 0 else "both")
    return out


def test_int8_rows_checked():
    """int8_rows: at most rows - est_rows - 1 (the compute group keeps a row), one-line
    ValueErrors naming it, in the golden parameters and the RTL record alike."""
    from attnforge.rtl.lane import Lane
    assert LaneParams(rows=4, est_rows=1, int8_rows=2).comp_rows == 1
    for make in (lambda: LaneParams(rows=4, est_rows=1, int8_rows=3),
                 lambda: Lane(rows=4, est_rows=1, int8_rows=3),
                 lambda: Lane(int8_rows=-1)):
        with pytest.raises(ValueError) as e:
            make()
        msg = str(e.value)
        assert msg.startswith("int8_rows") and "\n" not in msg and "[0, 2]" in msg


def test_int8_group_descriptors_and_unchanged_output():
    """With int8_rows the trace's INT8 scores descriptors run on the last int8_rows rows, the
    FX16 / A·V ones on the (narrower) compute group after the estimate group; the output is
    run_lane's bit for bit (which group computes a score does not change it)."""
    base = dict(max_t=32, d=8, rows=6, cols=2, est_rows=1, tile=8, tile_m=8, det_per_beat=1,
                sm_per_beat=1, schedule="rtl")
    rng = np.random.default_rng(SEED)
    params = LaneParams(**base, int8_rows=2)
    cfg, *h, _ = _head(params, rng, 32, "mixed", k=3)
    ref = run_lane(params, cfg, *h)
    res, trace = run_lane_rmmu(params, cfg, *h)
    assert "both" in _kinds(ref)
    assert np.array_equal(res.out, ref.out) and np.array_equal(res.importance, ref.importance)
    groups = {(d.precision, d.row0, d.nrows) for ph, _, d, _, _ in trace if ph != "estimate"}
    assert groups == {(Precision.FX16, 1, 3), (Precision.INT8, 4, 2)} or \
        groups == {(Precision.FX16, 1, 3), (Precision.INT8, 4, 2), (Precision.INT8, 1, 3)}
    for i, kind in enumerate(_kinds(ref)):          # all-INT8 tiles: on the compute group
        rows = {(d.row0, d.nrows) for ph, b0, d, _, _ in trace
                if ph == "scores" and b0 == 8 * i and d.precision == Precision.INT8}
        assert rows == {"fx": set(), "both": {(4, 2)}, "int8": {(1, 3)}}[kind]
    shared, _ = run_lane_rmmu(LaneParams(**base), cfg, *h)
    assert np.array_equal(shared.out, ref.out)


def test_cycle_model_runs_the_two_scores_descriptors_concurrently():
    """Per tile the scores cost the longer of the FX16 descriptor (compute group) and the INT8
    one (INT8 group: passes of nrows + row0 words, golden gemm_cycles), or, in a tile without
    FX16 blocks, the INT8 descriptor on the compute group; the shared group pays both.
    Checked on the phase totals of a head whose tiles mix both kinds."""
    base = dict(max_t=32, d=8, rows=6, cols=2, est_rows=1, tile=8, tile_m=8, det_per_beat=1,
                sm_per_beat=1, schedule="rtl")
    params = LaneParams(**base, int8_rows=2)
    cfg, *h, _ = _head(params, np.random.default_rng(SEED), 32, "mixed", k=3)
    ref = run_lane(params, cfg, *h)
    want_split = want_shared = 0
    for i, gath in enumerate(ref.gather):
        blocks = sorted({int(x) // 8 for x in gath})
        n8 = 8 * int(ref.int8_blocks[i, blocks].sum())
        fx = descriptor_cycles(len(gath) - n8, 8, 8, 3, 2, Precision.FX16, 8, 1)
        i8_own = descriptor_cycles(n8, 8, 8, 2, 2, Precision.INT8, 8, 4)
        i8_shared = descriptor_cycles(n8, 8, 8, 3, 2, Precision.INT8, 8, 1)
        want_split += max(fx, i8_own) if fx else i8_shared
        want_shared += fx + i8_shared
    assert cycles(params, cfg, ref)["phases"]["scores"] == want_split
    shared = LaneParams(**{**base, "rows": 4})                   # the same 3-row compute group
    assert cycles(shared, cfg, ref)["phases"]["scores"] == want_shared


def _run(int8_rows, heads_of, seed, **kw):
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import checked_heads, lane_params, simulate_lane
    dut = Lane(**_small(int8_rows))
    params = lane_params(dut)
    heads = heads_of(params, np.random.default_rng(seed))
    print("seed", seed, "int8_rows", int8_rows)
    return params, list(checked_heads(dut, heads, simulate_lane(dut, heads, seed=seed, **kw)))


@pytest.mark.parametrize("int8_rows", [1, pytest.param(2, marks=pytest.mark.long)])
def test_lane_int8_group_heads_cycles_equal_model(int8_rows):
    """All-INT8, mixed (tiles with both descriptors, concurrently on their groups) and
    HB-BSSA-off heads, no gaps or stalls: bit-exact, status cycles == the cycle model."""
    def heads(params, rng):
        return [_head(params, rng, 16, b) for b in ("all", "mixed", None)]
    params, checked = _run(int8_rows, heads, SEED + int8_rows)
    kinds = [set(_kinds(ref)) for _, _, ref, _ in checked]
    assert kinds[0] == {"int8"} and "both" in kinds[1] and kinds[2] == {"fx"}
    for cfg, _, ref, status in checked:
        assert status["cycles"] == cycles(params, cfg, ref)["total"], cfg


@pytest.mark.parametrize("int8_rows,seed", [pytest.param(1, 19, marks=pytest.mark.long),
                                            (2, 23)])
def test_lane_int8_group_gaps_stalls_reset_bad_config(int8_rows, seed):
    """Gaps on cfg/load, stalls on o/importance/status: a mixed head, a bad configuration (k
    above the block row: one error status, nothing else), a reset while the head computes,
    an all-INT8 head and the mixed head again -- each bit-exact."""
    def heads(params, rng):
        mixed = _head(params, rng, 16, "mixed")
        cfg, *h = mixed
        loads = 3 * 16 + 2 * params.d                       # Q, K, V rows, P_q, P_k
        return [mixed, (cfg.replace(k=5), *h), (cfg, *h[:-1], {"reset": (loads, 150)}),
                _head(params, rng, 16, "all"), mixed]
    _, checked = _run(int8_rows, heads, seed, gaps=0.3, stalls=0.3)
    assert len(checked) == 3 and "both" in _kinds(checked[0][2])


def test_feeder_beats_per_engine():
    """Which engine feeds which group: an FX16 tile only the compute group's (a, w); a tile
    whose blocks are all INT8 too (its INT8 descriptor on the compute group); a mixed tile the
    INT8 group's engines (a8, w8) with its INT8 blocks, concurrently. Beat counts exact (no
    beat after them, under gaps and stalls); the beats' values are checked end to end by the
    lane heads above."""
    from amaranth.sim import Simulator
    from attnforge.rtl.lane_feed import BackFeeder
    from attnforge.testbench import quick
    dut = BackFeeder(rows=1, cols=1, d=2, bq=8, max_t=16, block=8, tile_m=8, int8_rows=1)
    base = {"q0": 0, "nblk": 2, "blk": [0, 1], "fxs": [0, 1], "i8s": [0, 0], "q8_shift": 0,
            "k8_shift": 0, "fine": 0, "nkeys": 0, "keys": [0] * 16, "n8": 0}
    tiles = [base, {**base, "n8": 2, "fxs": [0, 0], "i8s": [0, 1]},
             {**base, "n8": 1, "fxs": [0, 0], "i8s": [1, 0]}]
    # d = 2 on a 1-row group, 8 queries: FX16 scores = 8 N-tiles x 2 passes, INT8 (2 values
    # a word) 4 N-tiles x 1 pass, per 8-key M-tile; A.V = 2 N-tiles x 16 passes of one key
    # tile 0 (16 FX16 keys): a 8*2*16, w 8*2*2 + 32; tile 1 (16 INT8 keys, compute group):
    # a 4*16, w 4*2 + 32; tile 2 (8 + 8): a 8*2*8, w 8*2 + 32, a8 4*8, w8 4
    want = {"a": 256 + 64 + 128, "w": 64 + 40 + 48, "a8": 32, "w8": 4}
    got = {k: [] for k in want}
    rng = random.Random(SEED)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(quick.source(dut.tile, tiles, rng, 0.2))
    for name, n in want.items():
        sim.add_testbench(quick.sink(getattr(dut, name), got[name], n, rng, 0.2))

    async def no_more(ctx):
        while any(len(got[k]) < n for k, n in want.items()):
            await ctx.tick()
        for _ in range(40):                 # every engine idle: no further beat offered
            assert not any(ctx.get(getattr(dut, k).valid) for k in want)
            await ctx.tick()
        assert ctx.get(dut.tile.ready)
    sim.add_testbench(no_more)
    sim.add_testbench(quick.watchdog(5000), background=True)
    sim.run()
    assert {k: len(v) for k, v in got.items()} == want
