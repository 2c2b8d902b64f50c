"""HB-BSSA search (attnforge.sweep.search): the REINFORCE update on toy rewards with a known
optimum, and a tiny search end to end (real golden/cycle models, in-process Dask)."""

import json

import numpy as np
import pytest

from attnforge.sweep import run as sweep_run
from attnforge.sweep.search import Policy, reinforce, search
from attnforge.sweep.spec import SpecError, parse_spec


def test_update_moves_probability_toward_above_baseline_actions():
    p = Policy([3, 2])
    p.update([(2, 0)], [1.0], baseline=0.0, lr=1.0)
    probs = p.probs()
    assert probs[0][2] > 1 / 3 and probs[1][0] > 1 / 2
    # grad log softmax = onehot - pi: (2/3, -1/3, -1/3) for field 0 from uniform
    assert np.allclose(p.theta[0], [-1 / 3, -1 / 3, 2 / 3])
    q = Policy([3])
    q.update([(1,)], [0.0], baseline=1.0, lr=1.0)    # below the baseline: pushed away
    assert q.probs()[0][1] < 1 / 3
    r = Policy([3])
    r.update([(1,)], [5.0], baseline=5.0, lr=1.0)    # at the baseline: no change
    assert np.allclose(r.theta[0], 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_finds_the_toy_optimum(seed):
    optimum = (2, 0, 3)
    calls = []

    def rewards(actions):
        calls.append(len(actions))
        return [-sum((a - o) ** 2 for a, o in zip(act, optimum)) for act in actions]

    policy, hist = reinforce([3, 4, 5], rewards, seed=seed, episodes=80, batch=8, lr=0.3,
                             decay=0.8)
    assert policy.best() == optimum
    assert all(p[o] > 0.8 for p, o in zip(policy.probs(), optimum))
    assert sum(calls) == len(hist) == 640
    # reproducible: the same seed gives the same samples
    _, again = reinforce([3, 4, 5], rewards, seed=seed, episodes=80, batch=8, lr=0.3,
                         decay=0.8)
    assert again == hist


SPEC = """
name = "s"
seed = 5
[generator]
block = [8, 16]
max_t = 32
d = 32
max_m = 8
[workload]
seq_len = 32
layers = [2]
heads = [0, 4]
[search]
generator = { block = 16 }
blocks = [8, 16]
quantiles = ["off", 0.5]
sparsities = [0.25, 0.5, 0.75]
max_kept = 0.5
episodes = 3
batch = 3
seeds = [5, 6]
"""


def test_tiny_search_end_to_end(tmp_path, monkeypatch, client):
    monkeypatch.setattr(sweep_run, "BUILD", tmp_path)
    out = search(parse_spec(SPEC), client=client, progress=False)
    m = out["methods"]
    assert out["generator"]["block"] == 16              # [search] generator override
    assert set(m) == {"reinforce", "random", "heuristic", "exhaustive"}
    assert m["exhaustive"]["evaluations"] == out["space"] == 12
    best = m["exhaustive"]["best_reward"]
    for name, r in m.items():
        assert r["best_reward"] <= best + 1e-12 and r["gap_to_optimum"] >= -1e-12
        assert 1 <= r["evaluations_to_best"] <= r["evaluations"]
        assert r["kept_fraction"] <= 0.5 + 1e-9          # the best respects the budget
    assert m["random"]["evaluations"] == m["reinforce"]["evaluations"]
    assert m["heuristic"]["evaluations"] == 2
    assert m["heuristic"]["action"]["int8_quantile"] == 0.5
    assert m["heuristic"]["action"]["sparsity"] == 0.5    # the largest mask within budget
    assert m["exhaustive"]["on_frontier"]
    assert [r["seed"] for r in out["seeds"]["reinforce"]] == [5, 6]
    assert out["seeds"]["reinforce"][0]["best_reward"] == m["reinforce"]["best_reward"]
    data = json.loads((tmp_path / "sweeps" / "s" / "search" / "search.json").read_text())
    assert data["methods"]["exhaustive"]["best_reward"] == best
    assert (tmp_path / "sweeps" / "s" / "search" / "reward_vs_evals.png").stat().st_size > 1000
    # same seed, same answer
    again = search(parse_spec(SPEC), client=client, progress=False)
    assert again["methods"]["reinforce"] == m["reinforce"]


@pytest.mark.parametrize("old, new, message", [
    ("episodes = 3", "epochs = 3", "search.epochs: unknown key"),
    ("blocks = [8, 16]", "blocks = [8, 12]", "search.blocks"),
    ("episodes = 3", "workload = { seq_len = 4 }", "search.workload.seq_len"),
    ("block = 16 }", "block = 12 }", "search.generator: block must be .*power of two")])
def test_bad_search_key(old, new, message):
    spec = parse_spec(SPEC.replace(old, new))
    with pytest.raises(SpecError, match=message):
        search(spec, progress=False)
