"""Evaluating the attention algorithms (:mod:`.attention`) on real MiniLM-L6 attention: the
helpers shared by ``benchmarks/attention.py`` and ``attnforge attention``.

Head level (fixtures, no model package needed): calibration on the :data:`.minilm.CALIBRATION`
fixtures, evaluation on the other long fixtures (>= 256 tokens), so the two are disjoint.
End to end (needs the model): the algorithm replaces the attention of every layer; fidelity is
the cosine of the sentence embedding against the dense model's, and the ranking of the
sentence pairs of ``fixtures/pairs.txt`` is compared with the dense model's (Spearman rank
correlation of the pair similarities, and top-1 agreement: for each first sentence, is the
most similar second sentence the same as under dense attention).
"""

from functools import lru_cache

import numpy as np

from . import minilm
from .attention import (HeadConfig, attend_float, attend_head, calibrate_projection, fidelity,
                        model_attention)

__all__ = ["EVAL_LONG", "fixture_heads", "fixture_projections", "model_projections",
           "calibration_records", "head_error", "attention_weights_below", "spearman",
           "EndToEnd", "default_config"]

#: Long evaluation fixtures (disjoint from minilm.CALIBRATION).
EVAL_LONG = ("long_printing", "long_volcano", "long_orchestra")


def fixture_heads(names=EVAL_LONG):
    """``[(name, layer, head, q, k, v), ...]`` for every stored head of the fixtures ``names``."""
    out = []
    for name in names:
        f = minilm.load_fixture(name)
        for li in range(len(f["layers"])):
            for j, h in enumerate(f["heads"]):
                v = None if f["v"] is None else f["v"][li, j]
                out.append((name, li, h, f["q"][li, j], f["k"][li, j], v))
    return out


@lru_cache(maxsize=8)
def fixture_projections(sigma):
    """Calibrated projections ``{(layer, head): Projection}`` for the stored heads, fitted on the
    calibration fixtures (all of them concatenated per head)."""
    cal = [minilm.load_fixture(n) for n in minilm.CALIBRATION]
    out = {}
    for li in range(minilm.LAYERS):
        for j, h in enumerate(cal[0]["heads"]):
            out[(li, h)] = calibrate_projection([c["q"][li, j] for c in cal],
                                                [c["k"][li, j] for c in cal], sigma)
    return out


def model_projections(model, sigma, records=None):
    """Calibrated projections for all 72 heads, fitted on the calibration passages run through
    the dense model (``records``: cached ``{name: [(q, k, v) per layer]}``)."""
    if records is None:
        records = calibration_records(model)
    return {(li, h): calibrate_projection([r[li][0][h] for r in records.values()],
                                          [r[li][1][h] for r in records.values()], sigma)
            for li in range(minilm.LAYERS) for h in range(minilm.HEADS)}


def calibration_records(model):
    passages = minilm.read_passages()
    out = {}
    for name in minilm.CALIBRATION:
        rec = []
        model.forward(model.tokenize(passages[name]), record=rec)
        out[name] = rec
    return out


def head_error(q, k, v, cfg, proj=None, ref=None):
    """Relative Frobenius error of one head's output under ``cfg`` against dense float64."""
    ref = attend_float(q, k, v) if ref is None else ref
    out, info = attend_head(q, k, v, cfg, proj)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), info


def attention_weights_below(q, k, limits=(0.01, 0.001)):
    """Fractions of a head's dense attention weights below each limit (DSA Table 1)."""
    s = q @ k.T / np.sqrt(q.shape[1])
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return [float((p < lim).mean()) for lim in limits]


def spearman(a, b):
    """Spearman rank correlation (no ties expected among float similarities)."""
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    ra -= ra.mean()
    rb -= rb.mean()
    return float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))


class EndToEnd:
    """The whole model with an algorithm in every layer (needs the model package).

    ``texts``: the inputs whose embedding cosine is measured (default: the long evaluation
    passages, ``long_sleep``, the medium and one short passage); pairs from ``pairs.txt``.
    Dense embeddings are computed once.
    """

    def __init__(self, texts=None, pairs=None):
        self.model = minilm.load_model()
        passages = minilm.read_passages()
        if texts is None:
            names = list(EVAL_LONG) + list(minilm.END_TO_END_ONLY) + ["medium_library",
                                                                     "short_recipe"]
            texts = [passages[n] for n in names]
        self.ids = [self.model.tokenize(t) for t in texts]
        self.pairs = minilm.read_pairs() if pairs is None else pairs
        self.pair_ids = [(self.model.tokenize(a), self.model.tokenize(b)) for a, b in self.pairs]
        self.dense = [self.model.embed(i) for i in self.ids]
        self.dense_pairs = [(self.model.embed(a), self.model.embed(b)) for a, b in self.pair_ids]
        self._records = None
        self._proj = {}

    def projections(self, sigma):
        if sigma not in self._proj:
            if self._records is None:
                self._records = calibration_records(self.model)
            self._proj[sigma] = model_projections(self.model, sigma, self._records)
        return self._proj[sigma]

    def hook(self, cfg):
        """Attention hook for ``cfg`` that also records the kept fraction of every head."""
        proj = self.projections(cfg.sigma) if cfg.predictor == "calibrated" else None
        kept = []
        if cfg.algorithm == "dense":
            inner = model_attention(cfg)
        else:
            def inner(layer, q, k, v):
                out = np.empty_like(q)
                for h in range(q.shape[0]):
                    p = proj.get((layer, h)) if proj else None
                    out[h], info = attend_head(q[h], k[h], v[h], cfg, p)
                    kept.append(info["kept_fraction"])
                return out
        return inner, kept

    def run(self, cfg=None, hook=None, pairs=True):
        """``{"cosine" (mean), "cosines", "kept", "spearman", "top1"}`` for ``cfg`` (or a ready
        attention ``hook``, e.g. a :class:`.attention.SpAttenState` factory: called per input)."""
        cos, kept_all = [], []
        for ids, d in zip(self.ids, self.dense):
            if hook is None:
                h, kept = self.hook(cfg)
            else:
                h, kept = hook(), []
            cos.append(fidelity(self.model.embed(ids, h), d))
            kept_all += kept
        out = {"cosine": float(np.mean(cos)), "cosines": [float(c) for c in cos],
               "kept": float(np.mean(kept_all)) if kept_all else None}
        if pairs:
            embs = []
            for a, b in self.pair_ids:
                ha = self.hook(cfg)[0] if hook is None else hook()
                hb = self.hook(cfg)[0] if hook is None else hook()
                embs.append((self.model.embed(a, ha), self.model.embed(b, hb)))
            out.update(self._ranking(embs))
        return out

    def _ranking(self, embs):
        sims = np.array([fidelity(a, b) for a, b in embs])
        dsims = np.array([fidelity(a, b) for a, b in self.dense_pairs])
        cross = np.array([[fidelity(a, b2) for _, b2 in embs] for a, _ in embs])
        dcross = np.array([[fidelity(a, b2) for _, b2 in self.dense_pairs]
                           for a, _ in self.dense_pairs])
        top1 = float((cross.argmax(1) == dcross.argmax(1)).mean())
        return {"spearman": spearman(sims, dsims), "top1": top1}


def default_config(**kw):
    """The figures' predicted configuration: DSA, INT4 estimate, sigma 0.25, calibrated,
    element granularity, top-k; ``kw`` overrides."""
    return HeadConfig(**{"algorithm": "dsa", "estimate_bits": 4, "sigma": 0.25,
                         "predictor": "calibrated", **kw})
