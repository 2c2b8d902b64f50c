"""Golden-model tests of the detector + scheduler, and quick Amaranth-simulator tests of the RTL."""

import numpy as np
import pytest

from attnforge.golden.detector import (Command, DetectorModel, Gran, Mode, command_error,
                                       granule_scores, kth_cut, schedule, threshold_mask,
                                       topk_mask)


# ---------------------------------------------------------------- golden: hand-worked cases

def test_granule_scores_hand():
    s = [[1, -3, 5, 2, 0, -8, -8, 7, 4]]
    assert granule_scores(s, 1).tolist() == s[0]
    assert granule_scores(s, 4).tolist() == [5, 7, 4]          # partial last granule
    assert granule_scores(s, 8).tolist() == [7, 4]
    blk = [[0, 1, 2], [5, -1, -2]]
    assert granule_scores(blk, 2).tolist() == [5, 2]           # max over rows too


def test_threshold_ties_kept():
    assert threshold_mask([3, 2, 3, -1], 3).tolist() == [True, False, True, False]


def test_topk_ties_lower_index():
    g = [5, 7, 5, 5, 1]
    assert topk_mask(g, 1).tolist() == [False, True, False, False, False]
    assert topk_mask(g, 2).tolist() == [True, True, False, False, False]
    assert topk_mask(g, 3).tolist() == [True, True, True, False, False]
    assert kth_cut(g, 3) == (5, 2)
    assert topk_mask(g, 5).all()


def test_schedule_hand():
    lanes, loads = schedule([5, 1, 1, 3, 0, 2], 3)
    # loads: [5,0,0] -> lane1 [5,1,0] -> lane2 [5,1,1] -> lane1 [5,4,1] -> lane2 -> lane2
    assert lanes.tolist() == [0, 1, 2, 1, 2, 2]
    assert loads.tolist() == [5, 4, 3]
    lanes, _ = schedule([5, 1, 1], 2, restart=[False, False, True])
    assert lanes.tolist() == [0, 1, 0]


def test_command_errors():
    assert command_error(Command(length=0), 16)
    assert command_error(Command(length=17), 16)
    assert command_error(Command(gran=6, length=4), 16)
    assert command_error(Command(mode=Mode.TOPK, length=9, gran=Gran.VEC4, k=4), 16)  # G = 3
    assert command_error(Command(mode=Mode.TOPK, length=9, k=0), 16)
    assert command_error(Command(mode=Mode.TOPK, length=9, gran=Gran.VEC4, k=3), 16) is None
    assert command_error(Command(mode=Mode.THRESHOLD, length=9, k=0), 16) is None


def test_model_hand():
    m = DetectorModel(parallel=4, max_len=16, score_bits=4, lanes=2)
    ops = [(Command(length=6, threshold=2), [[2, 1, 3, -8, 7, 2]]),
           (Command(mode=Mode.TOPK, length=5, k=2, gran=Gran.VEC4), [[0, 0, 0, 0, 0]]),
           (Command(length=0), None),
           (Command(length=3, threshold=8), [[7, 7, 7]])]                   # keep nothing
    r = m.run(ops)
    assert [x["indices"] for x in r] == [[0, 2, 4, 5], [0, 1], [], []]
    assert [x["count"] for x in r] == [4, 2, 0, 0]
    assert [x["err"] for x in r] == [False, False, True, False]
    assert [x["lane"] for x in r] == [0, 1, 1, 1]
    assert r[0]["mask"] == 0b110101
    beats = m.idx_beats(r[0])
    assert [(b["idx"], b["n"], b["last"]) for b in beats] == [([0, 2, 0, 0], 2, False),
                                                              ([4, 5, 0, 0], 2, True)]
    assert [(b["n"], b["last"]) for b in m.idx_beats(r[2])] == [(0, True)]


# ---------------------------------------------------------------- golden: properties

@pytest.mark.parametrize("seed", range(5))
def test_topk_equals_cut_rule(seed):
    """The hardware's rule (greater than the k-th value, plus the first q equal ones) is the
    ranking definition, on data with many ties."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = rng.integers(1, 40)
        g = rng.integers(-4, 4, n)
        k = int(rng.integers(1, n + 1))
        t, q = kth_cut(g, k)
        eq_before = np.cumsum(g == t) - (g == t)
        rule = (g > t) | ((g == t) & (eq_before < q))
        assert (rule == topk_mask(g, k)).all()
        assert topk_mask(g, k).sum() == k
        # float64 reference: k largest by a stable sort
        ref = np.zeros(n, bool)
        ref[np.argsort(-g.astype(np.float64), kind="stable")[:k]] = True
        assert (ref == topk_mask(g, k)).all()


@pytest.mark.parametrize("gran", list(Gran))
def test_granule_scores_property(gran):
    rng = np.random.default_rng(int(gran))
    for _ in range(50):
        n = int(rng.integers(1, 70))
        s = rng.integers(-128, 128, (gran.rows, n))
        g = granule_scores(s, gran.cols)
        assert len(g) == -(-n // gran.cols)
        for j, v in enumerate(g):
            assert v == s[:, j * gran.cols:(j + 1) * gran.cols].max()


def test_schedule_is_greedy_and_bounded():
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 30, 500)
    lanes, loads = schedule(counts, 4)
    assert loads.sum() == counts.sum()
    assert loads.max() - loads.min() <= counts.max()       # greedy's classic bound
    assert np.bincount(lanes, weights=counts, minlength=4).tolist() == loads.tolist()


def test_model_rejects_caller_bugs():
    m = DetectorModel(parallel=4, max_len=16, score_bits=4)
    with pytest.raises(ValueError, match="threshold"):
        m.run([(Command(length=1, threshold=16), [[0]])])
    with pytest.raises(ValueError, match="lie in"):
        m.run([(Command(length=1), [[8]])])
    with pytest.raises(ValueError, match="shape"):
        m.run([(Command(length=2, gran=Gran.BLK8), [[0, 1]])])


def test_input_beats_pad():
    m = DetectorModel(parallel=4, max_len=16, score_bits=4)
    beats = m.input_beats(Command(length=5), [[1, 2, 3, 4, 5]], fill=lambda n: [-8] * n)
    assert beats == [[1, 2, 3, 4], [5, -8, -8, -8]]
    assert m.input_beats(Command(length=0), None) == []


# ---------------------------------------------------------------- RTL: Amaranth simulator

import random  # noqa: E402

from amaranth.sim import Simulator  # noqa: E402

from attnforge.rtl.detector import Detector  # noqa: E402
from attnforge.testbench.detector import (bad_ops, compare_idx, compare_mask,  # noqa: E402
                                          expected_beats, random_ops)


def simulate(dut, ops, seed=0, *, gaps=0.3, stalls=0.3, max_cycles=20000):
    """Run ``ops`` through ``dut`` in the Amaranth simulator with random gaps and stalls;
    return ``(expected masks, got masks, expected idx beats, got idx beats, cycles)``."""
    model = DetectorModel(parallel=dut.parallel, max_len=dut.max_len,
                          score_bits=dut.score_bits, lanes=dut.lanes)
    rng = random.Random(seed)
    cmds, beats, masks, idx = expected_beats(model, ops, rng)
    got_m, got_i, state = [], [], {"cycles": 0, "accepted": []}

    def source(port, items, times=None):
        async def run(ctx):
            t = 0
            for item in items:
                while rng.random() < gaps:
                    ctx.set(port.valid, 0)
                    await ctx.tick()
                    t += 1
                ctx.set(port.payload, item)
                ctx.set(port.valid, 1)
                while True:
                    _, _, ready = await ctx.tick().sample(port.ready)
                    t += 1
                    if ready:
                        break
                if times is not None:
                    times.append(t)
            ctx.set(port.valid, 0)
        return run

    def sink(port, out):
        async def run(ctx):
            while True:
                ready = rng.random() >= stalls
                ctx.set(port.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
                if ready and valid:
                    out.append(payload)
        return run

    async def watch(ctx):
        while (len(got_m) < len(masks) or len(got_i) < len(idx)) and \
                state["cycles"] < max_cycles:
            await ctx.tick()
            state["cycles"] += 1
        await ctx.tick().repeat(5)                 # nothing extra may follow

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source(dut.cmd, cmds))
    sim.add_testbench(source(dut.i, [{"scores": b["scores"]} for b in beats], state["accepted"]))
    sim.add_testbench(sink(dut.mask, got_m), background=True)
    sim.add_testbench(sink(dut.idx, got_i), background=True)
    sim.add_testbench(watch)
    sim.run()
    return masks, got_m, idx, got_i, state["accepted"]


def _check(masks, got_m, idx, got_i):
    assert len(got_m) == len(masks) and len(got_i) == len(idx), \
        (len(got_m), len(masks), len(got_i), len(idx))
    for k, (e, a) in enumerate(zip(masks, got_m)):
        assert compare_mask(e, a) is None, (k, compare_mask(e, a))
    for k, (e, a) in enumerate(zip(idx, got_i)):
        assert compare_idx(e, a) is None, (k, compare_idx(e, a))


@pytest.mark.parametrize("params, seed", [
    (dict(parallel=4, max_len=16, score_bits=4, lanes=3), 1),
    (dict(parallel=2, max_len=8, score_bits=2, lanes=2), 2),
    (dict(parallel=8, max_len=32, score_bits=8, lanes=4), 3),
])
def test_sim_random(params, seed):
    dut = Detector(**params)
    model = DetectorModel(**{k: v for k, v in params.items()})
    ops = random_ops(random.Random(seed), model, 120, bad_p=0.08)
    _check(*simulate(dut, ops, seed)[:4])


def test_sim_bad_requests_only():
    dut = Detector(parallel=4, max_len=16, score_bits=4, lanes=2)
    model = DetectorModel(parallel=4, max_len=16, score_bits=4, lanes=2)
    ops = bad_ops(random.Random(5), model, 40)
    masks = simulate(dut, ops, 5)
    assert all(e["err"] for e in masks[0])
    _check(*masks[:4])


@pytest.mark.parametrize("length", [16, 13, 3])
def test_sim_no_bubbles(length):
    """Threshold rows of one length (every row of a head) back to back: every beat is accepted
    in consecutive cycles, whatever the granularity mix."""
    dut = Detector(parallel=4, max_len=16, score_bits=4, lanes=2)
    model = DetectorModel(parallel=4, max_len=16, score_bits=4, lanes=2)
    ops = random_ops(random.Random(length), model, 30, modes=(Mode.THRESHOLD,),
                     grans=(Gran.ELEM, Gran.VEC4, Gran.BLK8), lengths=[length])
    masks, got_m, idx, got_i, times = simulate(dut, ops, 9, gaps=0, stalls=0)
    _check(masks, got_m, idx, got_i)
    beats = sum(-(-c.length // 4) * Gran(c.gran).rows for c, _ in ops)
    assert len(times) == beats and times[-1] - times[0] + 1 == beats, (times[:5], beats)


@pytest.mark.parametrize("name, value, match", [
    ("parallel", 3, "parallel"), ("parallel", 64, "parallel"),
    ("max_len", 12, "multiple"), ("max_len", 2048, "max_len"), ("max_len", 4, "max_len"),
    ("score_bits", 16, "score_bits"), ("lanes", 0, "lanes"), ("lanes", 17, "lanes"),
])
def test_init_wrong_params(name, value, match):
    params = dict(parallel=8, max_len=64)
    params[name] = value
    with pytest.raises(ValueError, match=match):
        Detector(**params)
