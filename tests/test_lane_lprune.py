"""The lane's threshold mode and token pruning (keep-list): golden checks (``rtl_error``,
``rtl_keep_error``, the RTL cycle model of empty tiles) and quick Amaranth-simulator runs of
the top level (docs/lane.md sections 3, 5 and 8; the cocotb bench ``testbench/lane.py`` plays
the same kinds of heads on Verilator, incl. the pruning loop)."""

import random

import numpy as np
import pytest

from attnforge.golden.attention import to_fx
from attnforge.golden.lane import (LaneConfig, LaneParams, auto_config, cycles, int_projection,
                                   next_keep, rtl_error, rtl_keep_error, run_lane)

SEED = 13
RTL = dict(max_t=32, max_m=4, block=8)


def _head(rng, t, *, keep=None, d=8, **kw):
    qi, ki, vi = to_fx(*(rng.normal(0, 1, (t, d)) for _ in range(3)), 8)
    pq, pk = int_projection(d, 2, seed=int(rng.integers(1 << 16)))
    params = LaneParams(max_t=32, d=d, rows=4, cols=2, est_rows=1, tile=8, tile_m=8,
                        det_per_beat=1, sm_per_beat=1, schedule="rtl")
    cfg = auto_config(params, LaneConfig(t=t, m=2, granularity="8x8", **kw), qi, ki, pq, pk,
                      keep=keep)
    return params, cfg, (qi, ki, vi, pq, pk)


def test_rtl_error_accepts_threshold_and_pruning():
    cfg = LaneConfig(t=32, m=2, granularity="8x8", select="threshold", threshold=-5, k=0)
    assert rtl_error(cfg, **RTL) is None                      # k is not checked in threshold
    keep = list(range(0, 32, 2))
    assert rtl_error(cfg.replace(select="topk", k=2), **RTL, keep=keep) is None
    assert rtl_error(cfg.replace(mode="dense"), **RTL, keep=keep[:8]) is None


@pytest.mark.parametrize("kw, field", [
    (dict(n_keep=0), "n_keep"), (dict(n_keep=40), "n_keep"), (dict(n_keep=12), "n_keep"),
    (dict(n_keep=16, cfg=dict(k=3)), "k"),                    # k above the kept key blocks
])
def test_rtl_error_rejects_keep_fields(kw, field):
    cfg = LaneConfig(t=32, m=2, granularity="8x8", k=1).replace(**kw.pop("cfg", {}))
    err = rtl_error(cfg, **RTL, keep=list(range(16)), **kw)
    assert err and err.startswith(field) and "\n" not in err


@pytest.mark.parametrize("keep, kw, word", [
    ([3, 2], {}, "ascending"), ([1, 1], {}, "ascending"), ([0, 40], {}, "[0, 31]"),
    ([0, 1], dict(prune=False), "without prune"), ([0, 1], dict(n_keep=3), "n_keep = 3"),
    ([0, 1, 2], dict(n_keep=2), "n_keep = 2"), (None, dict(prune=True, n_keep=8), "not 0"),
])
def test_rtl_keep_error(keep, kw, word):
    err = rtl_keep_error(32, keep, **kw)
    assert err and word in err
    assert rtl_keep_error(32, [0, 5, 31]) is None and rtl_keep_error(32, None) is None


def test_cycle_model_empty_tiles():
    """Threshold "keep nothing": every tile empty, no descriptor charged, the O buffer plays
    zero rows (``RTL_EMPTY``) -- and the golden output is 0 with importance 0."""
    params, cfg, h = _head(np.random.default_rng(SEED), 32, select="threshold", threshold=255)
    ref = run_lane(params, cfg, *h)
    assert not ref.out.any() and not ref.importance.any() and all(len(g) == 0 for g in
                                                                   ref.gather)
    c = cycles(params, cfg, ref)
    assert c["phases"]["scores"] == c["phases"]["av"] == 0
    nt = -(-params.d // params.cols)
    assert c["total"] >= 4 * params.tile * nt         # four tiles of zero rows, one at a time


def test_pruned_head_costs_fewer_cycles():
    """The same head with half its tokens pruned: the gathered keys and the model's cycles
    drop (cycles counted over kept keys)."""
    rng = np.random.default_rng(SEED)
    params, cfg, h = _head(rng, 32, k=2)
    keep = list(range(0, 32, 2))
    full = cycles(params, cfg, run_lane(params, cfg, *h))["total"]
    cfg_p = auto_config(params, cfg, *h[:2], *h[3:], keep=keep)
    pr = run_lane(params, cfg_p, *h, keep=keep)
    assert pr.importance[1::2].sum() == 0 and pr.importance[::2].sum() > 0
    assert cycles(params, cfg_p, pr)["total"] < full


# -- Amaranth simulator: the top level -------------------------------------------------------
def _check(dut, heads, results, params):
    from attnforge.testbench.lane import expected_importance, expected_rows, head_errors
    for (cfg, *h, opt), (got, status, imp) in zip(heads, results):
        if any(head_errors(cfg, dut, **opt)):
            assert status["error"] == 1 and got == [] and imp == [], opt
            continue
        ref = run_lane(params, cfg, *h, keep=opt.get("keep"))
        assert status["error"] == 0
        assert got == expected_rows(ref.out, dut.cols), (cfg, opt)
        assert imp == expected_importance(ref.importance), (cfg, opt)
        assert status["kept"] * dut.block ** 2 == ref.mask.sum()
        yield cfg, opt, ref, status


def test_lane_threshold_and_pruned_heads_bit_exact():
    """Threshold heads (keep all, keep nothing, a block score: some block rows empty) and
    pruned heads (n_keep = one block, T, random) with gaps and stalls, then a keep-list
    error (a token not ascending: the whole LOAD taken, one error status) and a good head."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params, pick_threshold, random_keep, simulate_lane
    dut = Lane()
    params = lane_params(dut)
    rng, nrng = random.Random(SEED), np.random.default_rng(SEED)
    heads = []
    for t, thr in ((16, -256), (16, 255), (32, None)):
        _, cfg, h = _head(nrng, t, select="threshold", threshold=0)
        thr = pick_threshold(params, cfg, h, rng) if thr is None else thr
        heads.append((cfg.replace(threshold=thr), *h, {}))
    for t, n_keep, kw in ((32, 8, dict(k=1)), (16, 16, dict(k=2)),
                          (32, None, dict(select="threshold", threshold=0))):
        keep = random_keep(rng, t, 8, n_keep)
        _, cfg, h = _head(nrng, t, keep=keep, **kw)
        heads.append((cfg, *h, dict(keep=keep)))
    _, cfg, h = _head(nrng, 16, k=1)
    heads += [(cfg, *h, dict(keep=[3, 2, 5, 6, 7, 8, 9, 10])), (cfg, *h, {})]
    ok = list(_check(dut, heads, simulate_lane(dut, heads, seed=SEED, gaps=0.2, stalls=0.2),
                     params))
    assert len(ok) == len(heads) - 1
    assert any(s["kept"] == 0 for *_, s in ok)


def test_lane_pruned_cycles_equal_model():
    """No gaps or stalls: a head with some empty block rows and the same head pruned to half
    its tokens -- status cycles == ``golden.lane.cycles(schedule="rtl")`` exactly."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import lane_params, simulate_lane
    dut = Lane()
    params = lane_params(dut)
    nrng = np.random.default_rng(SEED + 1)
    _, cfg, h = _head(nrng, 32, select="threshold", threshold=0)
    plan = run_lane(params, cfg.replace(threshold=-256), *h, plan_only=True)
    rows = plan.est.reshape(4, 8, 4, 8).max(axis=(1, 3)).max(axis=1)
    heads = [(cfg.replace(threshold=int(np.median(rows))), *h, {})]
    keep = list(range(0, 32, 2))
    _, cfg_p, _ = _head(np.random.default_rng(0), 32, k=1)
    heads.append((auto_config(params, cfg_p, *h[:2], *h[3:], keep=keep), *h, dict(keep=keep)))
    ok = list(_check(dut, heads, simulate_lane(dut, heads, seed=SEED), params))
    assert len(ok) == 2
    for cfg, opt, ref, status in ok:
        assert status["cycles"] == cycles(params, cfg, ref)["total"], opt
    assert any(len(g) == 0 for g in ok[0][2].gather)       # an empty tile was modelled


def test_next_keep_is_the_topk_engine_choice():
    """The loop's keep-list: the n_keep most important tokens, ascending, ties to the lower
    token (what the testbench feeds the next head)."""
    assert next_keep([5, 9, 9, 1, 7, 0], 3).tolist() == [1, 2, 4]
