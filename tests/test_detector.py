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
    m = DetectorModel(per_beat=4, max_len=16, score_bits=4, sched_lanes=2)
    ops = [(Command(length=6, threshold=2), [[2, 1, 3, -8, 7, 2]]),
           (Command(mode=Mode.TOPK, length=5, k=2, gran=Gran.VEC4), [[0, 0, 0, 0, 0]]),
           (Command(length=0), None),
           (Command(length=3, threshold=8), [[7, 7, 7]])]                   # keep nothing
    r = m.run(ops)
    assert [x["indices"] for x in r] == [[0, 2, 4, 5], [0, 1], [], []]
    assert [x["count"] for x in r] == [4, 2, 0, 0]
    assert [x["error"] for x in r] == [False, False, True, False]
    assert [x["scores"] for x in r] == [[2, 3, 7, 2], [0, 0], [], []]
    assert [x["lane"] for x in r] == [0, 1, 1, 1]
    assert r[0]["mask"] == 0b110101
    beats = m.idx_beats(r[0])
    assert [(b["index"], b["data"], b["count"], b["last"]) for b in beats] == [
        ([0, 2, 0, 0], [2, 3, 0, 0], 2, False), ([4, 5, 0, 0], [7, 2, 0, 0], 2, True)]
    assert [(b["count"], b["last"], b["error"]) for b in m.idx_beats(r[2])] == [(0, True, True)]
    assert [(b["count"], b["last"], b["error"]) for b in m.idx_beats(r[3])] == [(0, True, False)]


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
    m = DetectorModel(per_beat=4, max_len=16, score_bits=4)
    with pytest.raises(ValueError, match="threshold"):
        m.run([(Command(length=1, threshold=16), [[0]])])
    with pytest.raises(ValueError, match="lie in"):
        m.run([(Command(length=1), [[8]])])
    with pytest.raises(ValueError, match="shape"):
        m.run([(Command(length=2, gran=Gran.BLK8), [[0, 1]])])


def test_input_beats_pad():
    m = DetectorModel(per_beat=4, max_len=16, score_bits=4)
    beats = m.input_beats(Command(length=5), [[1, 2, 3, 4, 5]], fill=lambda n: [-8] * n)
    assert beats == [[1, 2, 3, 4], [5, -8, -8, -8]]
    assert m.input_beats(Command(length=0), None) == []


# ---------------------------------------------------------------- RTL: Amaranth simulator

import random  # noqa: E402

from amaranth.sim import Simulator  # noqa: E402

from attnforge.rtl.detector import Detector, Ingest, Scheduler, Select  # noqa: E402
from attnforge.testbench import quick  # noqa: E402
from attnforge.testbench.detector import (bad_ops, compare_idx,  # noqa: E402
                                          compare_mask, expected_beats, model_of, random_ops,
                                          simulate)


def _check(out):
    masks, got_m, idx, got_i = out["masks"], out["got_masks"], out["idx"], out["got_idx"]
    assert len(got_m) == len(masks) and len(got_i) == len(idx), \
        (len(got_m), len(masks), len(got_i), len(idx))
    for k, (e, a) in enumerate(zip(masks, got_m)):
        assert compare_mask(e, a) is None, (k, compare_mask(e, a))
    for k, (e, a) in enumerate(zip(idx, got_i)):
        assert compare_idx(e, a) is None, (k, compare_idx(e, a))


SMALL = dict(per_beat=4, max_len=16, score_bits=4, sched_lanes=2)


@pytest.mark.parametrize("params, seed", [
    (dict(per_beat=4, max_len=16, score_bits=4, sched_lanes=3), 1),
    (dict(per_beat=2, max_len=8, score_bits=2, sched_lanes=2), 2),
    (dict(per_beat=8, max_len=32, score_bits=8, sched_lanes=4), 3),
    (dict(per_beat=1, max_len=4, score_bits=4, sched_lanes=1), 4),
])
def test_sim_random(params, seed):
    dut = Detector(**params)
    ops = random_ops(random.Random(seed), model_of(dut), 120, bad_p=0.08)
    _check(simulate(dut, ops, seed, gaps=0.3, stalls=0.3))


def test_sim_bad_requests_only():
    dut = Detector(**SMALL)
    out = simulate(dut, bad_ops(random.Random(5), model_of(dut), 40), 5, gaps=0.3, stalls=0.3)
    assert all(e["error"] for e in out["masks"]) and all(e["error"] for e in out["idx"])
    _check(out)


@pytest.mark.parametrize("length", [16, 13, 3])
def test_sim_no_bubbles(length):
    """Threshold rows of one length (every row of a head) back to back: every beat is accepted
    in consecutive cycles, whatever the granularity mix."""
    dut = Detector(**SMALL)
    ops = random_ops(random.Random(length), model_of(dut), 30, modes=(Mode.THRESHOLD,),
                     grans=(Gran.ELEM, Gran.VEC4, Gran.BLK8), lengths=[length])
    out = simulate(dut, ops, 9)
    _check(out)
    times = out["takes"]
    beats = sum(-(-c.length // 4) * Gran(c.gran).rows for c, _ in ops)
    assert len(times) == beats and times[-1] - times[0] + 1 == beats, (times[:5], beats)


@pytest.mark.parametrize("params", [SMALL, dict(per_beat=8, max_len=64, score_bits=8,
                                                sched_lanes=4)])
@pytest.mark.parametrize("mode", list(Mode))
def test_sim_latency(params, mode):
    """First ``idx`` beat of a row, counted from the cycle its last score beat is taken, equals
    :attr:`Detector.latency` (and docs/detector.md): 3 (threshold), score_bits + 4 (top-k)."""
    dut = Detector(**params)
    n = params["max_len"]
    ops = [(Command(mode=mode, length=n, threshold=0, k=1), [[1] * n])]
    out = simulate(dut, ops)
    _check(out)
    measured = out["idx_valid"][0] - out["takes"][-1]
    assert measured == dut.latency[mode] == {Mode.THRESHOLD: 3,
                                             Mode.TOPK: params["score_bits"] + 4}[mode]


# ---------------------------------------------------------------- RTL: each stage alone

def test_ingest_alone():
    """Ingest: granule rows (every granularity, partial granules, bad commands) equal the
    golden granule scores (slots past ``count`` are don't-care); stalls on ``o``."""
    rng = random.Random(11)
    dut = Ingest(per_beat=4, max_len=16, score_bits=4)
    model = DetectorModel(**SMALL)
    ops = random_ops(rng, model, 60, bad_p=0.15)
    cmds, beats, _, _ = expected_beats(model, ops, rng)
    want = []
    for c, s in ops:
        if model.check(c, s) is None:
            want.append((0, True, []))
        else:
            g = granule_scores(s, Gran(c.gran).cols).tolist()
            want.append((len(g), False, g))
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(quick.source(dut.cmd, cmds, rng, 0.3))
    sim.add_testbench(quick.source(dut.i, beats, rng, 0.3))
    sim.add_testbench(quick.sink(dut.o, got, len(want), rng, 0.4, lambda p: (
        int(p.count), bool(p.error), [int(x) for x in p.data][:int(p.count)])))
    sim.run()
    assert got == want


def test_select_alone_latency():
    """Select: a taken row's first beat is valid 2 cycles later (threshold; top-k adds
    score_bits + 1), and the kept indices and scores match the model."""
    for mode, extra in ((Mode.THRESHOLD, 0), (Mode.TOPK, 5)):
        dut = Select(per_beat=4, max_len=16, score_bits=4)
        row = {"data": [3, -2, 5, 5, 0, 7, -8, 1] + [0] * 8, "count": 8, "last": 1, "error": 0,
               "mode": mode, "threshold": 3, "k": 3, "restart": 0}
        seen = {}

        async def tb(ctx):
            ctx.set(dut.o.ready, 1)
            ctx.set(dut.i.payload, row)
            ctx.set(dut.i.valid, 1)
            for cycle in range(40):
                _, _, taken, valid, p = await ctx.tick().sample(
                    dut.i.valid & dut.i.ready, dut.o.valid, dut.o.payload)
                if taken and "take" not in seen:
                    seen["take"] = cycle
                    ctx.set(dut.i.valid, 0)
                if valid:
                    seen.setdefault("first", cycle)
                    seen.setdefault("beats", []).append(
                        ([int(x) for x in p.index][:int(p.count)],
                         [int(x) for x in p.data][:int(p.count)], bool(p.last)))
        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(tb)
        sim.run()
        assert seen["first"] - seen["take"] == 2 + extra
        want = ([([0, 2, 3], [3, 5, 5], False), ([5], [7], True)] if mode == Mode.THRESHOLD
                else [([2, 3], [5, 5], False), ([5], [7], True)])
        assert seen["beats"] == want


def test_scheduler_alone():
    """Scheduler: greedy lanes on random kept rows (restarts, error rows, multi-beat rows),
    every beat on ``idx`` with its lane, each row's last beat also on ``mask``; independent
    random stalls on both outputs."""
    rng = random.Random(12)
    dut = Scheduler(per_beat=2, max_len=8, score_bits=4, sched_lanes=3)
    beats, counts, restarts, rows = [], [], [], 60
    for _ in range(rows):
        nb, restart = rng.randint(1, 3), rng.random() < 0.1
        ns = [rng.randint(0, 2) for _ in range(nb)]
        counts.append(sum(ns))
        restarts.append(restart)
        for k, n in enumerate(ns):
            beats.append({"index": [rng.randint(0, 7) for _ in range(n)] + [0] * (2 - n),
                          "data": [0, 0], "count": n, "last": k == nb - 1, "error": 0,
                          "restart": restart, "mask": rng.getrandbits(8), "total": sum(ns)})
    from attnforge.golden.detector import schedule
    lanes, _ = schedule(counts, 3, restarts)
    want_idx, r = [], 0
    for b in beats:
        want_idx.append((b["index"], b["count"], int(lanes[r])))
        r += b["last"]
    want_mask = [(b["mask"], b["total"], int(lanes[k]))
                 for k, b in enumerate([b for b in beats if b["last"]])]
    got_idx, got_mask = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(quick.source(dut.i, beats, rng, 0.3))
    sim.add_testbench(quick.sink(dut.idx, got_idx, len(beats), rng, 0.4, lambda p: (
        [int(x) for x in p.index], int(p.count), int(p.lane))))
    sim.add_testbench(quick.sink(dut.mask, got_mask, len(want_mask), rng, 0.4, lambda p: (
        int(p.mask), int(p.count), int(p.lane))))
    sim.run()
    assert got_idx == want_idx and got_mask == want_mask


@pytest.mark.parametrize("name, value, match", [
    ("per_beat", 3, "per_beat"), ("per_beat", 64, "per_beat"),
    ("max_len", 12, "multiple"), ("max_len", 2048, "max_len"), ("max_len", 4, "max_len"),
    ("score_bits", 16, "score_bits"), ("sched_lanes", 0, "sched_lanes"),
    ("sched_lanes", 17, "sched_lanes"),
])
def test_init_wrong_params(name, value, match):
    params = dict(per_beat=8, max_len=64)
    params[name] = value
    with pytest.raises(ValueError, match=match):
        Detector(**params)
    if name != "sched_lanes":
        with pytest.raises(ValueError, match=match):
            Ingest(**params)
