"""Golden unit tests of the top-k engine and quick Amaranth-simulator tests of its RTL."""

import random
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.topk import (TopKModel, bad_request, beats, cycle_bound, lfsr_step, select,
                                   topk)
from attnforge.golden.numbers import value_range


# --- golden ----------------------------------------------------------------------------------

def test_topk_hand_worked():
    kth, idx = topk([5, 1, 5, 3, 9, 5], 3)
    assert kth == 5 and list(idx) == [0, 2, 4]        # 9, then the two lowest-indexed 5s
    kth, idx = topk([5, 1, 5, 3, 9, 5], 4)
    assert kth == 5 and list(idx) == [0, 2, 4, 5]
    kth, idx = topk([-3, -1, -2], 1)
    assert kth == -1 and list(idx) == [1]
    kth, idx = topk([7], 1)
    assert kth == 7 and list(idx) == [0]
    kth, idx = topk([2, 2, 2, 2], 2)
    assert kth == 2 and list(idx) == [0, 1]


def test_topk_properties_against_sort():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 80))
        x = rng.integers(-4, 5, n) if rng.random() < 0.5 else rng.integers(-1000, 1000, n)
        k = int(rng.integers(1, n + 1))
        kth, idx = topk(x, k)
        assert len(idx) == k and np.all(np.diff(idx) > 0)
        assert kth == sorted(x, reverse=True)[k - 1]
        assert np.all(x[idx] >= kth)
        losers = np.setdiff1d(np.arange(n), idx)
        assert np.all(x[losers] <= kth)
        # ties: every losing index equal to kth lies above every winning one equal to kth
        tw, tl = idx[x[idx] == kth], losers[x[losers] == kth]
        assert not len(tl) or tw.max() < tl.min()


def test_topk_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        topk([1, 2], 0)
    with pytest.raises(ValueError, match="k must be"):
        topk([1, 2], 3)


def test_bad_request_and_error_beat():
    assert bad_request(0, 1, 8) and bad_request(9, 1, 8) and bad_request(4, 0, 8)
    assert bad_request(4, 5, 8) and not bad_request(8, 8, 8) and not bad_request(1, 1, 8)
    out = TopKModel(max_n=8, lanes=4).run(4, 5, [1, 2, 3, 4])
    assert out == [{"kth": 0, "error": 1, "count": 0, "last": 1, "idx": [0] * 4}]


def test_select_matches_topk_and_beats():
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 100))
        lanes = int(rng.choice([1, 2, 4, 8, 16]))
        x = rng.integers(-3, 3, n) if rng.random() < 0.3 else rng.integers(-99, 99, n)
        k = int(rng.integers(1, n + 1))
        kth, quota, passes = select(x, k, lanes)
        ref, idx = topk(x, k)
        assert kth == ref and quota == k - np.count_nonzero(x > kth)
        assert [c for c, _ in passes] == sorted([c for c, _ in passes], reverse=True)
        b = beats(idx, lanes)
        assert sum(b, []) == list(idx) and all(len({i // lanes for i in g}) == 1 for g in b)


def test_model_beats_and_cycle_bound():
    model = TopKModel(max_n=64, width=8, lanes=4)
    out = model.run(10, 3, [0, 9, 1, 9, 2, 3, 9, 0, 0, 9])
    assert out == [{"kth": 9, "error": 0, "count": 2, "last": 0, "idx": [1, 3, 0, 0]},
                   {"kth": 9, "error": 0, "count": 1, "last": 1, "idx": [6, 0, 0, 0]}]
    rng = np.random.default_rng(7)
    for n in (1, 5, 64):
        x = rng.integers(-128, 128, n)
        for k in (1, n):
            assert model.cycles(n, k, x) <= cycle_bound(n, 4)
    # sorted input with k = n: pivots are sampled, not the first element, so few passes
    x = np.arange(64) - 32
    assert len(select(x, 64, 4)[2]) < 20


def test_lfsr_full_period():
    s, seen = 0xACE1, set()
    for _ in range(70000):
        s = lfsr_step(s)
        if s in seen:
            break
        seen.add(s)
    assert len(seen) == 65535


# --- generator parameters --------------------------------------------------------------------

def test_init_wrong_lanes():
    from attnforge.rtl.topk import TopK
    with pytest.raises(ValueError, match="lanes must be one of"):
        TopK(lanes=3)


def test_init_wrong_max_n():
    from attnforge.rtl.topk import TopK
    with pytest.raises(ValueError, match="max_n must be"):
        TopK(max_n=4, lanes=4)
    with pytest.raises(ValueError, match="max_n must be a multiple of lanes"):
        TopK(max_n=18, lanes=4)
    with pytest.raises(ValueError, match="max_n must be"):
        TopK(max_n=1 << 17)


def test_init_wrong_width():
    from attnforge.rtl.topk import TopK
    with pytest.raises(ValueError, match="width must be"):
        TopK(width=1)
    with pytest.raises(ValueError, match="width must be"):
        TopK(width=33)


# --- quick Amaranth-simulator tests ----------------------------------------------------------

def simulate(dut, requests, *, gaps=0.0, stalls=0.0, seed=0, max_cycles=200000):
    """Drive ``requests`` (list of ``(n, k, scores)``) through ``dut`` cycle by cycle, with
    random input gaps and output stalls. Returns the output beats (dicts like the golden
    model's) and, per request, the cycles from its handshake to its last output handshake."""
    P = dut.lanes
    rng = random.Random(seed)
    outs, req_times, last_times = [], [], []
    beats_in = []
    for n, k, x in requests:
        x = list(x) + [0] * (-len(x) % P)
        beats_in.append([x[b:b + P] for b in range(0, len(x), P)])

    async def bench(ctx):
        ri, bi, bj, cycle = 0, 0, 0, 0
        while len(last_times) < len(requests):
            # next score beat: beats of request bi, in order
            while bi < len(requests) and bj >= len(beats_in[bi]):
                bi, bj = bi + 1, 0
            req_v = ri < len(requests) and rng.random() >= gaps
            s_v = bi < len(requests) and rng.random() >= gaps
            o_r = rng.random() >= stalls
            ctx.set(dut.req.valid, req_v)
            if req_v:
                ctx.set(dut.req.payload, {"n": requests[ri][0], "k": requests[ri][1]})
            ctx.set(dut.s.valid, s_v)
            if s_v:
                ctx.set(dut.s.payload, {"data": beats_in[bi][bj]})
            ctx.set(dut.o.ready, o_r)
            req_hs = req_v and ctx.get(dut.req.ready)
            s_hs = s_v and ctx.get(dut.s.ready)
            o_hs = o_r and ctx.get(dut.o.valid)
            payload = ctx.get(dut.o.payload)
            await ctx.tick()
            if req_hs:
                req_times.append(cycle)
                ri += 1
            if s_hs:
                bj += 1
            if o_hs:
                outs.append({"kth": payload.kth, "error": payload.error,
                             "count": payload.count, "last": payload.last,
                             "idx": list(payload.idx)})
                if payload.last:
                    last_times.append(cycle)
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"timeout: {len(last_times)} of {len(requests)} done")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        sim.run()
    return outs, [t1 - t0 for t0, t1 in zip(req_times, last_times)]


def expected(model, requests):
    out = []
    for n, k, x in requests:
        out += model.run(n, k, x)
    return out


def test_sim_smoke():
    from attnforge.rtl.topk import TopK
    dut = TopK(max_n=32, width=8, lanes=4)
    model = TopKModel(max_n=32, width=8, lanes=4)
    reqs = [(10, 3, [0, 9, 1, 9, 2, 3, 9, 0, 0, 9]), (1, 1, [5]), (32, 32, list(range(32))),
            (0, 1, []), (5, 6, [1, 2, 3, 4, 5]), (40, 3, [1] * 40), (8, 0, [0] * 8)]
    outs, cyc = simulate(dut, reqs)
    assert outs == expected(model, reqs)
    assert cyc == [model.cycles(n, k, x) for n, k, x in reqs]


def random_requests(rng, max_n, width, count, *, lanes):
    """Random, sorted, reverse-sorted, all-equal, heavy-tie and bad requests."""
    lo, hi = value_range(width)
    reqs = []
    for _ in range(count):
        kind = rng.choice(["random", "random", "sorted", "reverse", "equal", "ties", "bad"])
        n = rng.randint(1, max_n)
        if kind == "random":
            x = [rng.choice([lo, hi, 0, -1, 1]) if rng.random() < 0.2 else rng.randint(lo, hi)
                 for _ in range(n)]
        elif kind == "sorted":
            x = sorted(rng.randint(lo, hi) for _ in range(n))
        elif kind == "reverse":
            x = sorted((rng.randint(lo, hi) for _ in range(n)), reverse=True)
        elif kind == "equal":
            x = [rng.randint(lo, hi)] * n
        else:
            x = [rng.choice([lo, 0, 3, hi]) for _ in range(n)]
        k = rng.choice([1, n, rng.randint(1, n)])
        if kind == "bad":
            n, k = rng.choice([(0, 1), (n, 0), (n, n + 1), (max_n + 1 + rng.randint(0, P_EXTRA),
                                                               1)])
            x = [rng.randint(lo, hi) for _ in range(n)]
        reqs.append((n, k, x))
    return reqs


P_EXTRA = 9


@pytest.mark.parametrize("max_n, width, lanes", [(32, 8, 4), (16, 4, 1), (64, 16, 16)])
def test_sim_random_exact_cycles(max_n, width, lanes):
    """No gaps, no stalls: every beat matches the golden model and every request takes
    exactly the modelled number of cycles (and no more than the worst-case bound)."""
    from attnforge.rtl.topk import TopK
    rng = random.Random(max_n * 100 + lanes)
    dut = TopK(max_n=max_n, width=width, lanes=lanes)
    model = TopKModel(max_n=max_n, width=width, lanes=lanes)
    reqs = random_requests(rng, max_n, width, 60, lanes=lanes)
    outs, cyc = simulate(dut, reqs)
    assert outs == expected(model, reqs)
    assert cyc == [model.cycles(n, k, x) for n, k, x in reqs]
    assert all(c <= cycle_bound(max(n, 1), lanes) for c, (n, k, x) in zip(cyc, reqs))


@pytest.mark.parametrize("max_n, width, lanes", [(32, 8, 4), (16, 6, 2)])
def test_sim_gaps_and_stalls(max_n, width, lanes):
    """Random input gaps and output stalls change timing, never the beats."""
    from attnforge.rtl.topk import TopK
    rng = random.Random(lanes)
    dut = TopK(max_n=max_n, width=width, lanes=lanes)
    model = TopKModel(max_n=max_n, width=width, lanes=lanes)
    reqs = random_requests(rng, max_n, width, 60, lanes=lanes)
    outs, _ = simulate(dut, reqs, gaps=0.3, stalls=0.4, seed=lanes)
    assert outs == expected(model, reqs)


def test_sim_bitonic_baseline():
    """The bitonic baseline gives the same beats as the golden model (gaps and stalls)."""
    from attnforge.rtl._bitonic import BitonicTopK
    rng = random.Random(11)
    dut = BitonicTopK(max_n=16, width=6, lanes=4)
    model = TopKModel(max_n=16, width=6, lanes=4)
    reqs = random_requests(rng, 16, 6, 50, lanes=4)
    outs, _ = simulate(dut, reqs, gaps=0.2, stalls=0.3, seed=3)
    assert outs == expected(model, reqs)


def test_init_wrong_bitonic_max_n():
    from attnforge.rtl._bitonic import BitonicTopK
    with pytest.raises(ValueError, match="max_n must be a power of two"):
        BitonicTopK(max_n=24, lanes=4)
