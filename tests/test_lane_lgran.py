"""The lane at per-row granularity (element / 1xV, docs/lane.md sections 2, 3 and 8 TODO 5):
golden checks (``rtl_error``'s rules, the RTL cycle model's terms) and quick Amaranth-simulator
runs of a small top level -- element and 1x4 / 1x8 heads, top-k and threshold (empty rows and
an empty tile included), token pruning, bit-exact against ``golden.lane.run_lane`` (output rows
and importance), status cycles == ``golden.lane.cycles(schedule="rtl")``, gaps and stalls,
bad configurations answered by exactly one error status, reset mid-head. The cocotb bench
(``testbench/lane.py``) plays the same granularities on Verilator at the record's sim point."""

import random

import numpy as np
import pytest

from attnforge.golden.attention import to_fx
from attnforge.golden.lane import (FINE_GRANULARITIES, LaneConfig, LaneParams, auto_config,
                                   cycles, gemm_cycles, int_projection, rtl_error, run_lane,
                                   run_lane_rmmu)
from attnforge.golden.numbers import Precision

SEED = 21
RTL = dict(max_t=32, max_m=4, block=8)
#: A small lane for the quick simulations: T <= 16, d = 2, one estimate row + one compute row.
SMALL = dict(max_t=16, d=2, max_m=2, rows=2, cols=1, est_rows=1, block=8)


def _head(params, rng, t, gran, *, m=2, keep=None, quantile=None, **kw):
    """A random head at granularity ``gran`` (shifts fitted); ``quantile``: threshold mode at
    that quantile of the head's estimate (above 1: keep nothing)."""
    d = params.d
    qi, ki, vi = to_fx(*(rng.normal(0, 1, (t, d)) for _ in range(3)), 8)
    pq, pk = int_projection(d, m, seed=int(rng.integers(1 << 16)))
    cfg = auto_config(params, LaneConfig(t=t, m=m, granularity=gran, **kw), qi, ki, pq, pk,
                      keep=keep)
    if quantile is not None:
        plan = run_lane(params, cfg.replace(select="threshold", threshold=-256), qi, ki, vi,
                        pq, pk, keep=keep, plan_only=True)
        thr = int(np.quantile(plan.est, min(quantile, 1))) + (quantile > 1)
        cfg = cfg.replace(select="threshold", threshold=min(thr, 255))
    return (cfg, qi, ki, vi, pq, pk, {} if keep is None else dict(keep=keep))


# -- golden ------------------------------------------------------------------------------------
@pytest.mark.parametrize("gran, k", [("element", 32), ("1x4", 8), ("1x8", 4)])
def test_rtl_error_accepts_fine_granularities(gran, k):
    cfg = LaneConfig(t=32, m=2, granularity=gran, k=k)
    assert rtl_error(cfg, **RTL) is None
    assert rtl_error(cfg.replace(select="threshold", k=0), **RTL) is None
    keep = list(range(8))                               # k counts the kept keys' granules
    assert rtl_error(cfg.replace(k=-(-8 // (32 // k))), **RTL, keep=keep) is None


@pytest.mark.parametrize("cfg, field", [
    (dict(granularity="element", k=33), "k"), (dict(granularity="1x4", k=9), "k"),
    (dict(granularity="1x8", k=5), "k"), (dict(granularity="element", k=0), "k"),
    (dict(granularity="element", int8_bound=100), "int8_bound"),
    (dict(granularity="1x4", int8_bound=0), "int8_bound"),
    (dict(granularity="16x16"), "granularity"),
])
def test_rtl_error_rejects_fine_fields(cfg, field):
    err = rtl_error(LaneConfig(t=32, m=2, k=1).replace(**cfg), **RTL)
    assert err and err.startswith(field) and "\n" not in err


def test_int8_bound_off_is_accepted_with_fine_granularity():
    """A negative bound is HB-BSSA off in the ``cfg`` beat (``hb = 0``): legal at element."""
    cfg = LaneConfig(t=32, m=2, k=1, granularity="element", int8_bound=-1)
    assert rtl_error(cfg, **RTL) is None


def test_short_pass_costs_nrows_plus_row0():
    """The gathered keys of an element-granularity tile leave a short last M-tile: a pass of
    at most ``nrows`` rows on the compute group (``row0`` = 1 at the sim point) costs
    ``nrows + row0`` cycles (measured: 1- and 3-row passes on the 3-row group take 4), the
    same per-pass rule as the 32 x 16 point's (``gemm_cycles``, tests/test_lane_l32.py); the
    last pass costs its rows."""
    fx = Precision.FX16
    nine = gemm_cycles(9, 8, 8, 3, 2, fx, 8, 1)          # M-tiles 8 + 1, 3 passes, 4 N-tiles
    eight = gemm_cycles(8, 8, 8, 3, 2, fx, 8, 1)
    assert nine - eight == 11 * (3 + 1) + 1             # 11 short passes + the last (1 row)
    assert gemm_cycles(9, 8, 8, 3, 2, fx, 8, 0) - gemm_cycles(8, 8, 8, 3, 2, fx, 8, 0) \
        == 11 * 3 + 1                                   # row0 0: nrows per short pass


def test_fine_golden_order_is_the_rmmu_mapping():
    """``run_lane`` (softmax over each row's kept keys, ascending) == ``run_lane_rmmu`` (the
    union's descriptors, each row's kept subset in gathered order) at element / 1x4."""
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8,
                        det_per_beat=1, sm_per_beat=1, schedule="rtl")
    rng = np.random.default_rng(SEED)
    for gran, kw in (("element", dict(k=3)), ("1x4", dict(k=2)), ("element", dict(quantile=0.9))):
        cfg, *h, _ = _head(params, rng, 32, gran, **kw)
        ref = run_lane(params, cfg, *h)
        res, _ = run_lane_rmmu(params, cfg, *h)
        assert np.array_equal(ref.out, res.out) and np.array_equal(ref.probs, res.probs)
        union = [len(g) for g in ref.gather]
        assert all(u >= ref.mask[b * 8:(b + 1) * 8].sum(axis=1).max() for b, u in
                   enumerate(union))
        c = cycles(params, cfg, ref)
        assert c["phases"]["detect"] > 0 and c["total"] > c["phases"]["project"]


# -- Amaranth simulator: the top level --------------------------------------------------------
def _run(dut, heads, *, gaps=0.0, stalls=0.0, check_cycles=False):
    from attnforge.testbench.lane import checked_heads, lane_params, simulate_lane
    params = lane_params(dut)
    results = simulate_lane(dut, heads, seed=SEED, gaps=gaps, stalls=stalls)
    ok = []
    for cfg, opt, ref, status in checked_heads(dut, heads, results):
        if check_cycles:
            assert status["cycles"] == cycles(params, cfg, ref)["total"], (cfg, opt)
        ok.append((cfg, ref))
    return ok


def _one_empty_tile(params, rng, t):
    """An element threshold head in which exactly the tile with the lowest estimate maximum
    keeps nothing (threshold = that maximum + 1), the others keep something."""
    while True:
        cfg, *h, opt = _head(params, rng, t, "element", quantile=0.5)
        plan = run_lane(params, cfg.replace(threshold=-256), *h, plan_only=True)
        top = plan.est.reshape(t // params.tile, -1).max(axis=1)
        if len(set(top.tolist())) == len(top):
            return (cfg.replace(threshold=int(top.min()) + 1), *h, opt)


def _fine_heads(params, seed):
    rng = np.random.default_rng(seed)
    t = params.max_t
    return [_head(params, rng, t, "element", k=2), _head(params, rng, t, "1x4", k=1),
            _one_empty_tile(params, rng, t),                         # an empty tile between
            _head(params, rng, t, "element", quantile=0.8),          # rows keep 0 .. many
            _head(params, rng, t, "1x8", quantile=2.0),              # nothing kept: empty tiles
            _head(params, rng, t, "1x4", quantile=0.5, keep=list(range(0, t, 2))),
            _head(params, rng, t, "8x8", k=1)]                       # BxB between them


def test_lane_fine_heads_bit_exact_cycles_equal_model():
    """Small lane, no gaps or stalls: element top-2, 1x4 top-1, element threshold with one
    empty tile, element threshold (per-row kept counts differ), 1x8 keeping nothing (every
    tile empty), a pruned 1x4 threshold head and a BxB head after them -- bit-exact, status
    cycles == the RTL model."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params
    dut = Lane(**SMALL)
    params = lane_params(dut)
    heads = _fine_heads(params, SEED)
    ok = _run(dut, heads, check_cycles=True)
    assert len(ok) == len(heads)
    rows = [ref.mask.sum(axis=1) for cfg, ref in ok if cfg.granularity == "element"]
    assert any(len(set(r.tolist())) > 1 for r in rows)           # per-row subsets differ
    assert any(not any(len(g) for g in ref.gather) for _, ref in ok)
    assert any(0 in (n := [len(g) for g in ref.gather]) and any(n) for _, ref in ok)


def test_lane_fine_heads_gaps_stalls_bad_configs_and_reset():
    """The same kinds of heads with gaps on ``cfg``/``load`` and stalls on every output,
    between them bad configurations (element k above the row's keys, 1x8 k above the kept
    keys' granules, element with HB-BSSA) -- each answered by exactly one error status --
    and a reset while a 1x4 head's tiles run; the next head is bit-exact."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params
    dut = Lane(**SMALL)
    params = lane_params(dut)
    rng = np.random.default_rng(SEED + 1)
    good = [_fine_heads(params, SEED + 1)[i] for i in (0, 1, 3)]
    cfg, *h, _ = good[0]
    bad = [(cfg.replace(k=17), *h, {}),
           (cfg.replace(granularity="1x8", k=2), *h, dict(keep=list(range(8)))),
           (cfg.replace(int8_bound=50), *h, {})]
    reset = _head(params, rng, 16, "1x4", k=1)
    reset = (*reset[:6], dict(reset=(10 ** 6, 300)))
    heads = [good[0], bad[0], good[1], bad[1], reset, good[2], bad[2]]
    ok = _run(dut, heads, gaps=0.3, stalls=0.3)
    assert len(ok) == 3


@pytest.mark.slow     # ~1 min: the cocotb bench plays these at the sim point too
def test_lane_fine_cycles_sim_point():
    """The record's sim point (``Lane()``: T = 32, d = 8, 4 x 2 RMMU): element top-3 and 1x4
    top-1 (the front-limited and a back-limited schedule), status cycles == model."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params
    dut = Lane()
    params = lane_params(dut)
    rng = np.random.default_rng(SEED + 2)
    heads = [_head(params, rng, 32, "element", k=3), _head(params, rng, 32, "1x4", k=2)]
    assert len(_run(dut, heads, check_cycles=True)) == 2


def test_fine_granularities_constant():
    assert set(FINE_GRANULARITIES) == {"element", "1x4", "1x8"}
    assert random.Random(SEED).random() < 1                  # (seeded; no wall-clock)
