"""Golden unit tests of the top-k engines and quick Amaranth-simulator tests of their RTL."""

import random
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.topk import (TopKModel, bad_request, beats, cycle_bound, digit_slices,
                                   lfsr_step, radix_select, row_error, score_beats, topk)
from attnforge.golden.topk_quickselect import QuickSelectModel, quickselect, quickselect_bound
from attnforge.rtl.topk import TopK
from attnforge.rtl.topk_bitonic import BitonicTopK
from attnforge.rtl.topk_parts import RankFinder
from attnforge.rtl.topk_quickselect import QuickSelectTopK
from attnforge.testbench.quick import sink, source, watchdog
from attnforge.testbench.topk import (adversarial, as_dict, distribution, model_of,
                                      random_requests)


# --- golden ----------------------------------------------------------------------------------

def test_topk_hand_worked():
    kth, idx = topk([5, 1, 5, 3, 9, 5], 3)
    assert kth == 5 and list(idx) == [0, 2, 4]        # 9, then the two lowest-indexed 5s
    kth, idx = topk([5, 1, 5, 3, 9, 5], 4)
    assert kth == 5 and list(idx) == [0, 2, 4, 5]
    kth, idx = topk([-3, -1, -2], 1)
    assert kth == -1 and list(idx) == [1]
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
        losers = np.setdiff1d(np.arange(n), idx)
        assert np.all(x[idx] >= kth) and np.all(x[losers] <= kth)
        tw, tl = idx[x[idx] == kth], losers[x[losers] == kth]
        assert not len(tl) or tw.max() < tl.min()
    with pytest.raises(ValueError, match="k must be"):
        topk([1, 2], 3)


def test_bad_request_and_row_errors():
    assert bad_request(0, 1, 8) and bad_request(9, 1, 8) and bad_request(4, 0, 8)
    assert bad_request(4, 5, 8) and not bad_request(8, 8, 8)
    row = score_beats([1, 2, 3, 4, 5], 4)
    assert [b["count"] for b in row] == [4, 1] and row[-1]["last"] == 1
    assert not row_error(5, row, 4) and row_error(6, row, 4) and row_error(4, row, 4)
    assert row_error(4, [{"count": 2, "last": 0}, {"count": 2, "last": 1}], 4)
    assert score_beats([], 4) == [{"data": [0] * 4, "count": 0, "last": 1}]
    model = TopKModel(max_n=8, per_beat=4)
    err = [{"kth": 0, "error": 1, "count": 0, "last": 1, "index": [0] * 4, "data": [0] * 4}]
    assert model.run(4, 5, [1, 2, 3, 4]) == err
    assert model.run(4, 2, [1, 2, 3, 4], score_beats([1, 2, 3], 4)) == err


@pytest.mark.parametrize("score_bits, digit_bits", [(16, 6), (8, 3), (5, 8), (32, 6)])
def test_radix_select_matches_topk(score_bits, digit_bits):
    rng = np.random.default_rng(score_bits)
    lo, hi = -(1 << (score_bits - 1)), (1 << (score_bits - 1)) - 1
    for _ in range(200):
        n = int(rng.integers(1, 300))
        P = int(rng.choice([1, 4, 16]))
        x = rng.integers(lo, hi + 1, n) if rng.random() < 0.6 else \
            rng.choice([lo, 0, 3, hi], n)
        k = int(rng.integers(1, n + 1))
        kth, quota, passes = radix_select(x, k, P, score_bits, digit_bits)
        ref, _ = topk(x, k)
        assert kth == ref and quota == k - np.count_nonzero(x > kth)
        assert len(passes) == len(digit_slices(score_bits, digit_bits)) - 1


def test_quickselect_and_beats():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 100))
        P = int(rng.choice([1, 2, 4, 8, 16]))
        x = rng.integers(-3, 3, n) if rng.random() < 0.3 else rng.integers(-99, 99, n)
        k = int(rng.integers(1, n + 1))
        kth, quota, _ = quickselect(x, k, P)
        ref, idx = topk(x, k)
        assert kth == ref and quota == k - np.count_nonzero(x > kth)
        b = beats(idx, P)
        assert sum(b, []) == list(idx) and all(len({i // P for i in g}) == 1 for g in b)


def test_model_beats_carry_scores():
    out = TopKModel(max_n=64, score_bits=8, per_beat=4).run(10, 3, [0, 9, 1, 9, 2, 3, 9, 0, 0, 9])
    assert out == [{"kth": 9, "error": 0, "count": 2, "last": 0, "index": [1, 3, 0, 0],
                    "data": [9, 9, 0, 0]},
                   {"kth": 9, "error": 0, "count": 1, "last": 1, "index": [6, 0, 0, 0],
                    "data": [9, 0, 0, 0]}]


def test_cycle_bounds_hold_on_adversarial_inputs():
    """The radix engine's worst case is deterministic: every input, adversarial ones included,
    stays within cycle_bound (about 3.1 N/P at 16-bit scores, R = 8)."""
    for n, P in ((1024, 16), (256, 4), (37, 4)):
        model = TopKModel(max_n=1024, per_beat=P)
        for x in adversarial(n).values():
            for k in (1, n // 10 + 1, n // 2, n):
                assert model.cycles(n, k, x) <= cycle_bound(n, P)
        qs = QuickSelectModel(max_n=1024, per_beat=P)
        x = np.arange(n) - n // 2
        assert qs.cycles(n, n, x) <= quickselect_bound(n, P)
    assert cycle_bound(1024, 16) / 64 < 3.1


def test_radix_engine_beats_target_on_uniform_data():
    """Issue 12 target (mean <= 2.5 N/P at N = 1024, P = 16), golden cycle model."""
    rng = np.random.default_rng(12)
    model = TopKModel(max_n=1024, per_beat=16)
    for k in (102, 512):
        c = [model.cycles(1024, k, distribution(rng, "uniform", 1024)) for _ in range(60)]
        assert np.mean(c) / 64 <= 2.55


def test_lfsr_full_period():
    s, seen = 0xACE1, set()
    for _ in range(70000):
        s = lfsr_step(s)
        if s in seen:
            break
        seen.add(s)
    assert len(seen) == 65535


# --- generator parameters --------------------------------------------------------------------

@pytest.mark.parametrize("cls", [TopK, QuickSelectTopK])
def test_bad_parameters(cls):
    with pytest.raises(ValueError, match="per_beat must be one of"):
        cls(per_beat=3)
    with pytest.raises(ValueError, match="max_n must be"):
        cls(max_n=4, per_beat=4)
    with pytest.raises(ValueError, match="max_n must be a multiple of per_beat"):
        cls(max_n=18, per_beat=4)
    with pytest.raises(ValueError, match="score_bits must be"):
        cls(score_bits=1)
    with pytest.raises(ValueError, match="max_n must be a power of two"):
        BitonicTopK(max_n=24, per_beat=4)
    with pytest.raises(ValueError, match="digit_bits must be"):
        TopK(digit_bits=9)


# --- quick Amaranth-simulator tests ----------------------------------------------------------

def simulate(dut, requests, *, gaps=0.0, stalls=0.0, seed=0):
    """Drive ``requests`` (``(n, k, scores, row)``) through ``dut`` with the quick stream
    drivers. Returns the output beats (golden-model dicts) and, per request, the cycles from
    its handshake to its last output handshake."""
    rng = random.Random(seed)
    model = model_of(dut)
    expected = sum((model.run(n, k, x, row) for n, k, x, row in requests), [])
    reqs = [{"n": n, "k": k} for n, k, _, _ in requests]
    rows = [dict(b, error=b.get("error", 0)) for *_, row in requests for b in row]
    outs, times = [], {"req": [], "last": []}

    async def timer(ctx):
        cycle = 0
        while len(times["last"]) < len(requests):
            _, _, rv, rr, ov, orr, last = await ctx.tick().sample(
                dut.req.valid, dut.req.ready, dut.o.valid, dut.o.ready, dut.o.payload.last)
            if rv and rr:
                times["req"].append(cycle)
            if ov and orr and last:
                times["last"].append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source(dut.req, reqs, rng, gaps))
    sim.add_testbench(source(dut.s, rows, rng, gaps))
    sim.add_testbench(sink(dut.o, outs, len(expected), rng, stalls, as_dict))
    sim.add_testbench(timer, background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        sim.run_until(1e-8 * (sum(8 * max(len(r[2]), 1) + 60 for r in requests) + 500))
    assert len(outs) == len(expected), f"{len(outs)} of {len(expected)} beats (hang?)"
    return outs, expected, [b - a for a, b in zip(times["req"], times["last"])]


def test_sim_smoke():
    dut = TopK(max_n=32, score_bits=8, per_beat=4, digit_bits=3)
    xs = [(10, 3, [0, 9, 1, 9, 2, 3, 9, 0, 0, 9]), (1, 1, [5]), (32, 32, list(range(32))),
          (0, 1, []), (5, 6, [1, 2, 3, 4, 5]), (40, 3, [1] * 40), (8, 0, [0] * 8)]
    reqs = [(n, k, x, score_beats(x, 4)) for n, k, x in xs]
    outs, expected, cyc = simulate(dut, reqs)
    assert outs == expected
    model = model_of(dut)
    assert cyc == [model.cycles(n, k, x) for n, k, x, _ in reqs]
    assert cyc[1] == dut.latency                     # the latency property, measured


@pytest.mark.parametrize("cls, params", [
    (TopK, {"max_n": 32, "score_bits": 8, "per_beat": 4, "digit_bits": 3}),
    (TopK, {"max_n": 16, "score_bits": 4, "per_beat": 1, "digit_bits": 2}),
    (TopK, {"max_n": 128, "score_bits": 16, "per_beat": 16, "digit_bits": 6}),
    (TopK, {"max_n": 64, "score_bits": 16, "per_beat": 4}),
    (TopK, {"max_n": 64, "score_bits": 7, "per_beat": 2, "digit_bits": 4}),
    (QuickSelectTopK, {"max_n": 32, "score_bits": 8, "per_beat": 4}),
    (QuickSelectTopK, {"max_n": 64, "score_bits": 16, "per_beat": 16}),
])
def test_sim_random_exact_cycles(cls, params):
    """No gaps, no stalls: every beat matches the golden model and every request takes
    exactly the modelled number of cycles."""
    dut = cls(**params)
    rng = random.Random(params["max_n"] * 100 + params["per_beat"])
    count = 50 if params["max_n"] * params["per_beat"] <= 128 else 20
    reqs = random_requests(rng, params["max_n"], params["score_bits"], params["per_beat"], count)
    outs, expected, cyc = simulate(dut, reqs)
    assert outs == expected
    model = model_of(dut)
    assert cyc == [model.cycles(n, k, x) if not row_error(n, row, dut.per_beat) else cyc[i]
                   for i, (n, k, x, row) in enumerate(reqs)]


@pytest.mark.slow
def test_sim_attention_rows_exact_cycles():
    """Benchmark-like rows (uniform, Gaussian, clustered, attention, adversarial) at P = 8:
    bracket hits and misses alike take exactly the modelled cycles."""
    dut = TopK(max_n=128, score_bits=16, per_beat=8)
    model = model_of(dut)
    rng = np.random.default_rng(1)
    rows = [distribution(rng, kind, 128) for kind in ("uniform", "gaussian", "clustered",
                                                      "attention")]
    rows += list(adversarial(128).values())
    reqs = [(128, k, list(x), score_beats(x, 8)) for i, x in enumerate(rows)
            for k in ((13, 64) if i < 4 else (13 + 50 * (i % 2),))]
    outs, expected, cyc = simulate(dut, reqs)
    assert outs == expected
    assert cyc == [model.cycles(n, k, x) for n, k, x, _ in reqs]
    sources = {radix_select(x, k, 8, 16, 8)[2][0][0] for _, k, x, _ in reqs}
    assert sources == {"buffer", "memory"}           # both pass-1 sources were exercised


@pytest.mark.parametrize("cls, params", [
    (TopK, {"max_n": 32, "score_bits": 8, "per_beat": 4, "digit_bits": 3}),
    (QuickSelectTopK, {"max_n": 16, "score_bits": 6, "per_beat": 2}),
    (BitonicTopK, {"max_n": 16, "score_bits": 6, "per_beat": 4}),
])
def test_sim_gaps_and_stalls(cls, params):
    """Random input gaps and output stalls change timing, never the beats."""
    dut = cls(**params)
    rng = random.Random(params["per_beat"])
    reqs = random_requests(rng, params["max_n"], params["score_bits"], params["per_beat"], 50)
    outs, expected, _ = simulate(dut, reqs, gaps=0.3, stalls=0.4, seed=3)
    assert outs == expected
    if cls is BitonicTopK:                           # its cycle model, without gaps and stalls
        _, _, cyc = simulate(dut, reqs[:12])
        model = model_of(dut)
        assert cyc == [model.cycles(n, k, x) if not row_error(n, row, dut.per_beat) else cyc[i]
                       for i, (n, k, x, row) in enumerate(reqs[:12])]
        assert dut.latency == model.cycles(1, 1, [0])


def test_rank_finder():
    dut = RankFinder(max_n=16, digit_bits=2, ranks=2)
    counts = [3, 0, 2, 1]                    # bucket 3 holds rank 1, bucket 2 ranks 2-3 ...

    async def bench(ctx):
        ctx.set(dut.counts, counts)
        for rank, (bucket, above) in {1: (3, 0), 2: (2, 1), 3: (2, 1), 4: (0, 3),
                                      6: (0, 3), 7: (0, None)}.items():
            ctx.set(dut.rank, [rank, 1])
            assert ctx.get(dut.bucket[0]) == bucket
            if above is not None:
                assert ctx.get(dut.above[0]) == above
            assert ctx.get(dut.bucket[1]) == 3

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("gap", [0, 1, 3])
def test_sim_gap_after_sample_row(gap):
    """A row of ``sample + 1`` rows whose last row arrives after a gap is filtered by the
    bracket (set while the row waited), so the engine must not assume every score reached the
    candidate buffer: here the largest score (top digit outside the bracket of the sample
    rows) is in that row. Before the fix this hung (pass 2 over zero candidates)."""
    dut = TopK(max_n=32, score_bits=8, per_beat=4, digit_bits=3)
    x = [-100, -97, -95, -92, 127]                   # rows = 2, the sample is row 0
    reqs = [(5, k, x) for k in (1, 2, 5)] + [(5, 1, [-9, -8, -7, -6, 40])]
    model = model_of(dut)
    expected = sum((model.run(n, k, xs) for n, k, xs in reqs), [])
    outs = []

    async def scores(ctx):
        for _, _, xs in reqs:
            for i, beat in enumerate(score_beats(xs, 4)):
                for _ in range(gap if i else 0):
                    await ctx.tick()
                ctx.set(dut.s.payload, dict(beat, error=0))
                ctx.set(dut.s.valid, 1)
                await ctx.tick().until(dut.s.ready)
                ctx.set(dut.s.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source(dut.req, [{"n": n, "k": k} for n, k, _ in reqs], random.Random(0)))
    sim.add_testbench(scores)
    sim.add_testbench(sink(dut.o, outs, len(expected), random.Random(0), 0.0, as_dict))
    sim.add_testbench(watchdog(400), background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        sim.run()
    assert outs == expected
