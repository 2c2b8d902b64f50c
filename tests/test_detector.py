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
