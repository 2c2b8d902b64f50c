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


#: The golden parameters of ``Lane()`` (the record's sim point; ``lane_params``).
P32 = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8, det_per_beat=1,
                 sm_per_beat=1, schedule="rtl")
#: A small lane for the quick simulations (a few seconds a head set).
SMALL = dict(max_t=16, d=2, max_m=1, rows=2, cols=1, est_rows=1, block=8)


def _head(rng, t, *, keep=None, params=P32, m=2, **kw):
    d = params.d
    qi, ki, vi = to_fx(*(rng.normal(0, 1, (t, d)) for _ in range(3)), 8)
    pq, pk = int_projection(d, m, seed=int(rng.integers(1 << 16)))
    cfg = auto_config(params, LaneConfig(t=t, m=m, granularity="8x8", **kw), qi, ki, pq, pk,
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
def _threshold_and_pruned_heads(dut, params, seed, m):
    from attnforge.testbench.lane import pick_threshold, random_keep
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    t, b = dut.max_t, dut.block
    lo, hi = -(1 << params.score_bits), (1 << params.score_bits) - 1
    heads = []
    for thr in (lo, hi, None, None):               # keep all, keep nothing, block scores
        _, cfg, h = _head(nrng, t, params=params, m=m, select="threshold", threshold=0)
        thr = pick_threshold(params, cfg, h, rng) if thr is None else thr
        heads.append((cfg.replace(threshold=thr), *h, {}))
    for n_keep, kw in ((b, dict(k=1)), (t, dict(k=2)), (None, dict(select="threshold")),
                       (b, dict(mode="dense"))):
        keep = random_keep(rng, t, b, n_keep)
        _, cfg, h = _head(nrng, t, params=params, m=m, keep=keep, **kw)
        if cfg.select == "threshold":
            cfg = cfg.replace(threshold=pick_threshold(params, cfg, h, rng, keep))
        heads.append((cfg, *h, dict(keep=keep)))
    _, cfg, h = _head(nrng, t, params=params, m=m, k=1)
    bad = list(range(b))
    bad[1], bad[2] = bad[2], bad[1]                   # not ascending: found in LOAD
    heads += [(cfg, *h, dict(keep=bad)), (cfg, *h, dict(keep=list(range(b)), n_keep=2 * b)),
              (cfg, *h, dict(keep=list(range(b)), prune=False)), (cfg, *h, {})]
    return heads


@pytest.mark.slow     # ~15 s (a small lane; the full set at T = 32 is the long test below)
def test_lane_threshold_and_pruned_heads_bit_exact():
    """Small lane (T = 16, d = 2): threshold heads (keep all, keep nothing, a block score of
    the head: some block rows empty), pruned heads (n_keep = one block with top-1, a random
    multiple of the block with a threshold) with gaps and stalls, then a keep-list error found in LOAD (not ascending: the
    whole LOAD taken, one error status) and a good head."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import checked_heads, lane_params, simulate_lane
    dut = Lane(**SMALL)
    params = lane_params(dut)
    heads = _threshold_and_pruned_heads(dut, params, SEED, 1)
    heads = [heads[i] for i in (0, 1, 2, 4, 6, 8, 11)]
    results = simulate_lane(dut, heads, seed=SEED, gaps=0.3, stalls=0.3)
    ok = list(checked_heads(dut, heads, results))
    assert len(ok) == len(heads) - 1
    assert any(s["kept"] == 0 for *_, s in ok)


@pytest.mark.long     # ~2 min: the cocotb bench (make test) plays these kinds of heads at 32
def test_lane_threshold_and_pruned_heads_bit_exact_t32():
    """The same at the record's sim point (``Lane()``: T = 32, d = 8, 4 x 2 RMMU)."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import checked_heads, lane_params, simulate_lane
    dut = Lane()
    params = lane_params(dut)
    heads = _threshold_and_pruned_heads(dut, params, SEED + 2, 2)
    results = simulate_lane(dut, heads, seed=SEED, gaps=0.2, stalls=0.2)
    ok = list(checked_heads(dut, heads, results))
    assert len(ok) == len(heads) - 3


@pytest.mark.long     # ~45 s: the cocotb test cycles_vs_model (make test) asserts the same
def test_lane_pruned_cycles_equal_model():
    """No gaps or stalls: a head with some empty block rows and the same head pruned to half
    its tokens -- status cycles == ``golden.lane.cycles(schedule="rtl")`` exactly."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import checked_heads, lane_params, simulate_lane
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
    ok = list(checked_heads(dut, heads, simulate_lane(dut, heads, seed=SEED)))
    assert len(ok) == 2
    for cfg, opt, ref, status in ok:
        assert status["cycles"] == cycles(params, cfg, ref)["total"], opt
    assert any(len(g) == 0 for g in ok[0][2].gather)       # an empty tile was modelled


def test_next_keep_is_the_topk_engine_choice():
    """The loop's keep-list: the n_keep most important tokens, ascending, ties to the lower
    token (what the testbench feeds the next head)."""
    assert next_keep([5, 9, 9, 1, 7, 0], 3).tolist() == [1, 2, 4]


@pytest.mark.slow     # ~10 s
def test_lane_reset_mid_pruned_head():
    """Reset while the keep-list loads, while the K/V rows load and while the tiles of a
    threshold head with empty block rows run: the lane returns to IDLE, the kept-token vector
    is forgotten, and the next (pruned) head is bit-exact."""
    from attnforge.rtl.lane import Lane
    from attnforge.testbench.lane import (checked_heads, lane_params, pick_threshold,
                                          random_keep, simulate_lane)
    dut = Lane(**SMALL)
    params = lane_params(dut)
    rng, nrng = random.Random(SEED + 5), np.random.default_rng(SEED + 5)
    t, b = dut.max_t, dut.block
    heads = []
    for n, wait in ((3, 0), (b + 10, 0), (10 ** 6, 150)):
        keep = random_keep(rng, t, b, b)
        _, cfg, h = _head(nrng, t, params=params, m=1, keep=keep, select="threshold")
        cfg = cfg.replace(threshold=pick_threshold(params, cfg, h, rng, keep))
        heads.append((cfg, *h, dict(keep=keep, reset=(n, wait))))
        keep2 = random_keep(rng, t, b, t - b)
        _, cfg2, h2 = _head(nrng, t, params=params, m=1, keep=keep2, k=1)
        heads.append((cfg2, *h2, dict(keep=keep2)))
    results = simulate_lane(dut, heads, seed=SEED, gaps=0.2, stalls=0.2)
    ok = list(checked_heads(dut, heads, results))
    assert len(ok) == 3
