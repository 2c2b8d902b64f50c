"""Golden model of the attention algorithms (DESIGN.md section 4.8): dense (float64 and the FX16
pipeline the hardware computes), DSA prediction, SpAtten cascade pruning and progressive
quantization, HB-BSSA block-sparse attention with per-block precision.

Everything here is built from the unit golden models so that the algorithms and the hardware
share one numeric truth: :mod:`.numbers` (FX16/INTp quantization, ``requantize``,
``round_shift``), :mod:`.softmax` (``softmax_fx`` per row, over the kept positions of a sparse
row), :mod:`.detector` (granule scores, top-k/threshold masks; tests check the vectorized masks
here against it row by row), :mod:`.topk` (token/head selection) and :mod:`.progressive_quant`.

One head is ``q, k, v`` of shape ``(T, d)`` (the model's projections with bias, *unscaled*);
``T <= 512`` (MiniLM's positions). The run-time knobs of a head are one :class:`HeadConfig`.

FX16 pipeline (:func:`attend_fx`), the numeric contract of the hardware lane
    1. The ``1/sqrt(d)`` scale is folded into Q before quantization (a real deployment folds it
       into ``W_Q``, so the lane never multiplies by it): ``Qi = fx(q / sqrt(d))``,
       ``Ki = fx(k)``, ``Vi = fx(v)``, each FX16 with ``frac_bits`` fraction bits
       (:func:`.numbers.float_to_fx`: round half to even, saturate).
    2. ``S = Qi Ki^T`` accumulated exactly (``2*frac_bits`` fraction bits), requantized to FX16
       scores with ``frac_bits`` fraction bits: ``x = requantize(S, frac_bits, 16)``.
       A kept block at INT8 (HB-BSSA) instead multiplies INT8 copies of Q and K
       (:func:`int8_copy`: a per-tensor power-of-two right shift of the FX16 values,
       round half to even, saturate to 8 bits) and brings the product back to the same FX16 score
       format.
    3. ``p = softmax_fx(x[kept], SoftmaxFormat(in_bits=16, in_frac=frac_bits,
       out_frac=prob_frac, max_len=512))`` per row over its kept positions; pruned positions
       have probability 0.
    4. ``O = requantize(P Vi, prob_frac, 16)``: FX16 output with ``frac_bits`` fraction bits.
    A mask that keeps everything gives the dense FX16 result bit for bit (it is the same code).

DSA prediction (Liu et al., paper 001, Sec. 3)
    ``Q~ = q A``, ``K~ = (k - k_mean) B`` with ``A, B`` of shape ``(d, m)``, ``m = sigma * d``;
    the estimate is ``Q~ K~^T`` after INTp quantization of ``Q~`` and ``K~`` (per-tensor scale,
    symmetric, saturating; p in 2, 4, 8 or None for a float estimate). ``A = B = P`` for the
    paper's sparse random projection ``P in sqrt(2/m) * {-1, 0, +1}`` (probabilities 1/4, 1/2,
    1/4, so ``E[P P^T] = I``), or a *calibrated* pair fitted on calibration inputs without
    touching the model (:func:`calibrate_projection`): the rank-``m`` bilinear form minimizing
    ``||Q A B^T K_c^T - Q K_c^T||_F`` over the calibration rows (closed form: whiten Q and the
    centred K by their R factors, truncated SVD of ``R_q R_k^T``), with K centred (a constant
    key offset adds a per-row constant to the scores, which no softmax or top-k can see), the
    columns rebalanced so ``Q~`` and ``K~`` columns have equal spread, and static quantization
    scales clipped at the calibration data's 99th percentile of ``|Q~|``, ``|K~|``.
    The mask keeps, per row (element, 1xV) or per block row (BxB), the top ``keep_count``
    granules of the estimate (ties to the lower index, as :func:`.detector.topk_mask`), or
    every granule within ``threshold`` (natural-log units of estimated probability) of the
    row's (block row's) maximum; granule score = max over the granule (the detector's rule).

SpAtten (Wang et al., paper 002) -- whole-model, layer by layer (:class:`SpAttenState`)
    Cascade token pruning: a token's importance is the attention probability it receives,
    summed over heads and query rows, accumulated over layers; after each layer the top-k
    tokens by cumulative importance stay and the others are removed as keys and values from
    every later layer (never to reappear). Query rows of pruned tokens are still computed so
    that mean pooling covers every token (a conservative reading for a sentence-embedding
    model; SpAtten drops them too). Head pruning: a head index's importance is the magnitude
    (sum of |output|) of its output, accumulated over layers; pruned heads output 0 from then
    on. Local value pruning: per query row, only the V rows of the top fraction of probabilities
    are fetched (the others contribute 0, no renormalization). Progressive quantization on real
    rows: :func:`progressive_rows` (:mod:`.progressive_quant`).

HB-BSSA (paper 000) -- :func:`attend_bssa`
    Blocks ``b x b`` (b in 8, 16, 32) kept under a budget (top ``keep_count`` blocks per block
    row by block score, the same DSA estimate as above, so the mask is the detector's BxB
    granularity). Each kept block runs its ``Q_b K_b^T`` at INT8 when the RMS of its estimated
    score block (Frobenius norm / b, in natural-log units) is at most ``block_bound``, else at
    FX16. The paper picks 8, 16 or 32 bits; the RMMU's precisions are FX16/INT8/INT4/INT2, so
    its 8 bits map to INT8 and its 16 and 32 bits both to FX16 (the widest mode); a block is
    never below INT8. Softmax is per row (default) or the paper's block-wise softmax
    (``block_softmax=True``): each kept block's row segment is normalized on its own and the
    row's blocks are averaged (weight 1/kept blocks), which drops cross-block normalization.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .numbers import float_to_fx, fx_to_float, requantize, saturate, value_range
from .softmax import SoftmaxFormat, softmax_fx

__all__ = ["MAX_LEN", "GRANULARITIES", "ALGORITHMS", "PREDICTORS", "HeadConfig", "Projection",
           "keep_count", "attend_float", "attend_fx", "to_fx", "int8_copy", "random_projection",
           "calibrate_projection", "estimate", "granule_mask", "predict_mask", "oracle_mask",
           "attend_head", "attend_bssa", "block_precision", "recall", "local_value_prune",
           "SpAttenState", "progressive_rows", "model_attention", "fidelity"]

#: Longest sequence (MiniLM-L6's position table).
MAX_LEN = 512
#: Granularities of a mask: (rows, cols) of one granule.
GRANULARITIES = {"element": (1, 1), "1x4": (1, 4), "1x8": (1, 8), "8x8": (8, 8),
                 "16x16": (16, 16), "32x32": (32, 32)}
ALGORITHMS = ("dense", "dsa", "bssa")
PREDICTORS = ("random", "calibrated", "oracle")
_ESTIMATE_BITS = (None, 2, 4, 8)
_BLOCKS = (8, 16, 32)


def _check(cond, name, value, legal):
    if not cond:
        raise ValueError(f"{name} must be {legal}, not {value!r}")


@dataclass(frozen=True)
class HeadConfig:
    """Run-time knobs of one head (what an RTL lane is configured from).

    algorithm      "dense", "dsa" (predicted mask at ``granularity``) or "bssa" (HB-BSSA
                   blocks ``block x block`` with per-block precision)
    arithmetic     "fx16" (the hardware pipeline, :func:`attend_fx`) or "float" (float64 on the
                   kept positions: isolates the mask's effect)
    frac_bits      FX16 fraction bits of Q, K, V, scores and outputs (1..14)
    prob_frac      fraction bits of probabilities (4..14)
    predictor      "random", "calibrated" (needs a :class:`Projection`) or "oracle" (exact
                   scores: the best any predictor can do)
    sigma          projected dimension m = sigma * d, in (0, 1]
    estimate_bits  INTp of the estimate: 2, 4, 8, or None (float estimate)
    granularity    "element", "1x4", "1x8", "8x8", "16x16", "32x32"
    sparsity       fraction of granules pruned per row (block row), in [0, 1); top-k mode
    threshold      if not None: adaptive mode, keep granules whose estimate is within
                   ``threshold`` (>= 0, natural-log units) of the row maximum; ``sparsity``
                   is then ignored
    block          HB-BSSA block size: 8, 16 or 32
    block_bound    HB-BSSA: RMS estimated score (natural-log units) at or below which a kept
                   block runs at INT8 (>= 0; 0 puts (almost) every block at FX16)
    block_softmax  HB-BSSA: block-wise softmax instead of row softmax
    seed           seed of the random projection
    """
    algorithm: str = "dsa"
    arithmetic: str = "fx16"
    frac_bits: int = 8
    prob_frac: int = 12
    predictor: str = "calibrated"
    sigma: float = 0.25
    estimate_bits: int | None = 4
    granularity: str = "element"
    sparsity: float = 0.9
    threshold: float | None = None
    block: int = 16
    block_bound: float = 0.0
    block_softmax: bool = False
    seed: int = 0

    def __post_init__(self):
        _check(self.algorithm in ALGORITHMS, "algorithm", self.algorithm,
               f"one of {', '.join(ALGORITHMS)}")
        _check(self.arithmetic in ("fx16", "float"), "arithmetic", self.arithmetic,
               "one of fx16, float")
        _check(isinstance(self.frac_bits, int) and 1 <= self.frac_bits <= 14, "frac_bits",
               self.frac_bits, "an integer in [1, 14]")
        _check(isinstance(self.prob_frac, int) and 4 <= self.prob_frac <= 14, "prob_frac",
               self.prob_frac, "an integer in [4, 14]")
        _check(self.predictor in PREDICTORS, "predictor", self.predictor,
               f"one of {', '.join(PREDICTORS)}")
        _check(isinstance(self.sigma, (int, float)) and 0 < self.sigma <= 1, "sigma",
               self.sigma, "in (0, 1]")
        _check(self.estimate_bits in _ESTIMATE_BITS, "estimate_bits", self.estimate_bits,
               "one of 2, 4, 8 or None")
        _check(self.granularity in GRANULARITIES, "granularity", self.granularity,
               f"one of {', '.join(GRANULARITIES)}")
        _check(isinstance(self.sparsity, (int, float)) and 0 <= self.sparsity < 1, "sparsity",
               self.sparsity, "in [0, 1)")
        _check(self.threshold is None or (isinstance(self.threshold, (int, float))
                                          and self.threshold >= 0),
               "threshold", self.threshold, "None or >= 0")
        _check(self.block in _BLOCKS, "block", self.block, "one of 8, 16, 32")
        _check(isinstance(self.block_bound, (int, float)) and self.block_bound >= 0,
               "block_bound", self.block_bound, ">= 0")

    @property
    def gran(self):
        """``(rows, cols)`` of one granule (BSSA: the block)."""
        if self.algorithm == "bssa":
            return self.block, self.block
        return GRANULARITIES[self.granularity]

    def softmax_format(self):
        return SoftmaxFormat(in_bits=16, in_frac=self.frac_bits, out_frac=self.prob_frac,
                             max_len=MAX_LEN)

    def replace(self, **kw):
        """A copy with fields replaced (validated again)."""
        return dataclasses.replace(self, **kw)


def _check_head(q, k, v=None):
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    _check(q.ndim == 2 and k.ndim == 2 and q.shape == k.shape, "q and k shapes", q.shape,
           f"equal (T, d), k is {k.shape}")
    _check(1 <= q.shape[0] <= MAX_LEN, "sequence length", q.shape[0], f"in [1, {MAX_LEN}]")
    if v is not None:
        v = np.asarray(v, dtype=np.float64)
        _check(v.shape[0] == q.shape[0], "v rows", v.shape[0], f"{q.shape[0]} (T)")
    return q, k, v


def keep_count(n, sparsity):
    """Granules kept out of ``n`` at ``sparsity``: ``max(1, n - floor(sparsity * n))`` (so 0 %
    sparsity keeps all, and a row never loses every position)."""
    return max(1, n - int(math.floor(sparsity * n + 1e-9)))


# -- dense -----------------------------------------------------------------------------------------
def attend_float(q, k, v, mask=None):
    """float64 attention softmax(q k^T / sqrt(d)) v over the kept positions (``mask`` (T, T)
    bool, None = all). Returns (T, d) float64."""
    q, k, v = _check_head(q, k, v)
    s = q @ k.T / np.sqrt(q.shape[1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    return p @ v


def to_fx(q, k, v, frac_bits):
    """Step 1 of the FX16 pipeline: ``(Qi, Ki, Vi)`` with 1/sqrt(d) folded into Q."""
    q, k, v = _check_head(q, k, v)
    return (float_to_fx(q / np.sqrt(q.shape[1]), frac_bits), float_to_fx(k, frac_bits),
            float_to_fx(v, frac_bits))


def int8_copy(x):
    """INT8 copy of FX16 integers for an INT8 block: ``(x8, shift)`` with
    ``x8 = requantize(x, shift, 8)`` and ``shift`` the smallest that fits ``max|x|`` in 8 bits
    (so ``x ~ x8 << shift``)."""
    x = np.asarray(x, dtype=np.int64)
    m = int(np.abs(x).max()) if x.size else 0
    shift = 0
    while (m + (1 << shift >> 1)) >> shift > 127:
        shift += 1
    return requantize(x, shift, 8), shift


def _scores_fx(qi, ki, frac_bits, int8_blocks=None, block=None):
    """FX16 scores (step 2) and, for INT8 blocks ((Tb, Tb) bool), the INT8-path scores there."""
    x = requantize(qi @ ki.T, frac_bits, 16)
    if int8_blocks is not None and int8_blocks.any():
        q8, sq = int8_copy(qi)
        k8, sk = int8_copy(ki)
        acc = q8 @ k8.T                               # 2*frac_bits - sq - sk fraction bits
        sh = frac_bits - sq - sk
        x8 = requantize(acc, sh, 16) if sh >= 0 else saturate(acc << (-sh), 16)
        t = qi.shape[0]
        sel = np.kron(int8_blocks, np.ones((block, block), dtype=bool))[:t, :t]
        x = np.where(sel, x8, x)
    return x


def attend_fx(q, k, v, mask=None, *, frac_bits=8, prob_frac=12, int8_blocks=None, block=None,
              block_softmax=False):
    """The FX16 pipeline (module docstring). Returns ``(out_int, probs_int)``: FX16 outputs
    (T, d) with ``frac_bits`` fraction bits and probabilities (T, T) with ``prob_frac``."""
    qi, ki, vi = to_fx(q, k, v, frac_bits)
    t = qi.shape[0]
    x = _scores_fx(qi, ki, frac_bits, int8_blocks, block)
    fmt = SoftmaxFormat(in_bits=16, in_frac=frac_bits, out_frac=prob_frac, max_len=MAX_LEN)
    mask = np.ones((t, t), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    p = np.zeros((t, t), dtype=np.int64)
    if block_softmax:
        nb = -(-t // block)
        for i in range(t):
            segs = [np.nonzero(mask[i, j * block:(j + 1) * block])[0] + j * block
                    for j in range(nb)]
            segs = [s for s in segs if len(s)]
            for s in segs:
                p[i, s] = softmax_fx(x[i, s], fmt)
            # blocks averaged: divide by the kept block count (round half to even)
            n = len(segs)
            if n > 1:
                p[i] = _div_round(p[i], n)
    else:
        for i in range(t):
            cols = np.nonzero(mask[i])[0]
            p[i, cols] = softmax_fx(x[i, cols], fmt)
    out = requantize(p @ vi, prob_frac, 16)
    return out, p


def _div_round(x, n):
    """``x / n`` rounded half to even (integers)."""
    q, r = np.divmod(x, n)
    up = (2 * r > n) | ((2 * r == n) & (q % 2 == 1))
    return q + up


# -- DSA prediction --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Projection:
    """A predictor's projections: ``Q~ = q a``, ``K~ = (k - k_mean) b``; ``q_clip``/``k_clip``
    (|value| mapped to the INTp maximum) are static calibration scales, or None for dynamic
    per-tensor scaling (maximum of the tensor at hand)."""
    a: np.ndarray
    b: np.ndarray
    k_mean: np.ndarray
    q_clip: float | None = None
    k_clip: float | None = None
    kind: str = "random"

    @property
    def dim(self):
        return self.a.shape[1]


def _proj_dim(d, sigma):
    return max(1, int(round(sigma * d)))


def random_projection(d, sigma, seed=0):
    """DSA's sparse random projection ``P in sqrt(2/m) * {-1, 0, +1}^(d x m)`` (probabilities
    1/4, 1/2, 1/4), shared by Q and K, dynamic quantization scales."""
    _check(0 < sigma <= 1, "sigma", sigma, "in (0, 1]")
    m = _proj_dim(d, sigma)
    rng = np.random.default_rng(seed)
    p = np.sqrt(2.0 / m) * rng.choice(np.array([-1.0, 0.0, 0.0, 1.0]), size=(d, m))
    return Projection(p, p, np.zeros(d), kind="random")


def calibrate_projection(qs, ks, sigma, clip_percentile=99.0):
    """Calibrated projection (module docstring) from calibration heads ``qs``, ``ks`` (lists of
    (T_i, d) arrays of one layer/head, e.g. several long inputs). The model is not changed."""
    _check(0 < sigma <= 1, "sigma", sigma, "in (0, 1]")
    qc = np.concatenate([np.asarray(x, dtype=np.float64) for x in qs])
    kc = np.concatenate([np.asarray(x, dtype=np.float64) for x in ks])
    d = qc.shape[1]
    m = _proj_dim(d, sigma)
    k_mean = kc.mean(axis=0)
    kc = kc - k_mean
    rq = np.linalg.qr(qc, mode="r")
    rk = np.linalg.qr(kc, mode="r")
    u, s, vt = np.linalg.svd(rq @ rk.T)
    root = np.sqrt(s[:m])
    a = np.linalg.lstsq(rq, u[:, :m] * root, rcond=None)[0]
    b = np.linalg.lstsq(rk, vt[:m].T * root, rcond=None)[0]
    qa, kb = (qc @ a).std(axis=0), (kc @ b).std(axis=0)
    bal = np.sqrt(np.maximum(kb, 1e-12) / np.maximum(qa, 1e-12))
    a, b = a * bal, b / bal
    return Projection(a, b, k_mean, float(np.percentile(np.abs(qc @ a), clip_percentile)),
                      float(np.percentile(np.abs(kc @ b), clip_percentile)), kind="calibrated")


def _quant(x, bits, clip):
    hi = value_range(bits)[1]
    scale = (clip if clip else float(np.abs(x).max()) or 1.0) / hi
    return saturate(np.rint(x / scale).astype(np.int64), bits), scale


def estimate(q, k, proj, bits):
    """DSA estimate of the scores in natural-log units (comparable to q k^T / sqrt(d)):
    ``(est_float, est_int)``; ``est_int`` is the INTp product ``Q~i K~i^T`` the hardware's
    estimate path computes (None for a float estimate), ``est_float = est_int * scale``."""
    q, k, _ = _check_head(q, k)
    qt = q @ proj.a
    kt = (k - proj.k_mean) @ proj.b
    rs = 1.0 / np.sqrt(q.shape[1])
    if bits is None:
        return qt @ kt.T * rs, None
    qi, sq = _quant(qt, bits, proj.q_clip)
    ki, sk = _quant(kt, bits, proj.k_clip)
    e = qi @ ki.T
    return e * (sq * sk * rs), e


def granule_mask(scores, gran, sparsity=0.0, threshold=None):
    """Element mask (T, T) of granules ``gran = (R, C)`` kept by top-k (``keep_count`` per row
    or R-row group; ties to the lower index) or by ``threshold`` below the group maximum.
    Granule score = max over the granule (partial edge granules: over what exists), as
    :func:`.detector.granule_scores`."""
    s = np.asarray(scores, dtype=np.float64)
    t, n = s.shape
    r, c = gran
    gr, gc = -(-t // r), -(-n // c)
    pad = np.full((gr * r, gc * c), -np.inf)
    pad[:t, :n] = s
    g = pad.reshape(gr, r, gc, c).max(axis=(1, 3))               # (gr, gc)
    if threshold is not None:
        keep = g >= g.max(axis=1, keepdims=True) - threshold
    else:
        keep = _topk_rows(g, keep_count(gc, sparsity))
    return np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:t, :n]


def _topk_rows(g, kk):
    """Per row the ``kk`` largest entries; among equal values the lower index wins (the
    detector's and top-k engine's rule). Linear time per row: the k-th value by partition, then
    the ties at it taken in index order."""
    kth = -np.partition(-g, kk - 1, axis=1)[:, kk - 1:kk]
    above = g > kth
    ties = g == kth
    need = kk - above.sum(axis=1, keepdims=True)
    return above | (ties & (np.cumsum(ties, axis=1) <= need))


def predict_mask(q, k, cfg, proj=None):
    """The mask the configured predictor keeps, and the estimate it used (natural-log units)."""
    if cfg.predictor == "oracle":
        q, k, _ = _check_head(q, k)
        est = q @ k.T / np.sqrt(q.shape[1])
    else:
        if proj is None:
            _check(cfg.predictor == "random", "projection", None,
                   "a Projection for the calibrated predictor")
            proj = random_projection(np.asarray(q).shape[1], cfg.sigma, cfg.seed)
        est = estimate(q, k, proj, cfg.estimate_bits)[0]
    return granule_mask(est, cfg.gran, cfg.sparsity, cfg.threshold), est


def oracle_mask(q, k, cfg):
    """Top-k (or threshold) of the exact scores at the configured granularity."""
    return predict_mask(q, k, cfg.replace(predictor="oracle"))[0]


def recall(q, k, mask, frac=0.1):
    """Fraction of the oracle top-k positions (k = ``keep_count(T, 1 - frac)``, i.e. ``frac``
    of T rounded up, per row, exact scores) that ``mask`` keeps."""
    q, k, _ = _check_head(q, k)
    top = _topk_rows(q @ k.T, keep_count(q.shape[0], 1 - frac))
    return float((top & np.asarray(mask)).sum() / top.sum())


def block_precision(est, block, bound):
    """``(Tb, Tb) bool`` over all blocks: True where a block's estimated scores have RMS
    (Frobenius norm / number of elements ** 0.5) at most ``bound`` -> INT8, else FX16."""
    e = np.asarray(est, dtype=np.float64)
    t, n = e.shape
    gr, gc = -(-t // block), -(-n // block)
    pad = np.zeros((gr * block, gc * block))
    cnt = np.zeros_like(pad)
    pad[:t, :n] = e
    cnt[:t, :n] = 1
    sq = (pad ** 2).reshape(gr, block, gc, block).sum(axis=(1, 3))
    nn = cnt.reshape(gr, block, gc, block).sum(axis=(1, 3))
    return np.sqrt(sq / np.maximum(nn, 1)) <= bound


def attend_head(q, k, v, cfg, proj=None):
    """Run one head under ``cfg``: ``(out, info)`` with ``out`` (T, d) float64 (FX16 results
    converted) and ``info`` = {"mask", "kept_fraction", "est", ("int8_blocks")}."""
    q, k, v = _check_head(q, k, v)
    if cfg.algorithm == "bssa":
        return attend_bssa(q, k, v, cfg, proj)
    t = q.shape[0]
    if cfg.algorithm == "dense":
        mask, est = np.ones((t, t), dtype=bool), None
    else:
        mask, est = predict_mask(q, k, cfg, proj)
    out = _run(q, k, v, mask, cfg)
    return out, {"mask": mask, "kept_fraction": float(mask.mean()), "est": est}


def _run(q, k, v, mask, cfg, int8_blocks=None):
    if cfg.arithmetic == "float":
        return attend_float(q, k, v, mask)
    o, _ = attend_fx(q, k, v, mask, frac_bits=cfg.frac_bits, prob_frac=cfg.prob_frac,
                     int8_blocks=int8_blocks, block=cfg.block,
                     block_softmax=cfg.algorithm == "bssa" and cfg.block_softmax)
    return fx_to_float(o, cfg.frac_bits)


def attend_bssa(q, k, v, cfg, proj=None):
    """HB-BSSA head (module docstring): BxB blocks kept by the estimate under the budget
    (``sparsity``), INT8 where the block's estimated RMS score is at most ``block_bound``."""
    q, k, v = _check_head(q, k, v)
    cfg = cfg.replace(algorithm="bssa") if cfg.algorithm != "bssa" else cfg
    mask, est = predict_mask(q, k, cfg, proj)
    b = cfg.block
    nb = -(-q.shape[0] // b)
    kept_blocks = mask[::b, ::b][:nb, :nb]
    int8 = block_precision(est, b, cfg.block_bound) & kept_blocks
    out = _run(q, k, v, mask, cfg, int8_blocks=int8)
    return out, {"mask": mask, "kept_fraction": float(mask.mean()), "est": est,
                 "int8_blocks": int8, "int8_fraction": float(int8.sum() / max(1, kept_blocks.sum()))}


# -- SpAtten ---------------------------------------------------------------------------------------
def local_value_prune(p, keep_frac):
    """Local value pruning of probabilities ``p`` (T, T): per row keep the top ``keep_frac``
    (``keep_count`` of the row's nonzeros) and zero the rest (their V rows are never fetched)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros_like(p)
    for i in range(p.shape[0]):
        nz = np.nonzero(p[i])[0]
        kk = keep_count(len(nz), 1 - keep_frac)
        top = nz[np.argsort(-p[i, nz], kind="stable")[:kk]]
        out[i, top] = p[i, top]
    return out


class SpAttenState:
    """Cascade token and head pruning over the layers of one input (module docstring).

    ``token_keep[l]`` / ``head_keep[l]``: fraction of the tokens / heads still alive *after*
    layer ``l`` (non-increasing schedules; 1 = prune nothing). ``value_keep``: local value
    pruning fraction (1 = off). Call :meth:`__call__` as the model's attention hook, layer by
    layer; ``alive_tokens`` / ``alive_heads`` only shrink.
    """

    def __init__(self, token_keep=(1.0,) * 6, head_keep=(1.0,) * 6, value_keep=1.0):
        for name, sched in (("token_keep", token_keep), ("head_keep", head_keep)):
            for x in sched:
                _check(0 < x <= 1, name, x, "fractions in (0, 1]")
        _check(0 < value_keep <= 1, "value_keep", value_keep, "in (0, 1]")
        self.token_keep, self.head_keep, self.value_keep = token_keep, head_keep, value_keep
        self.alive_tokens = self.alive_heads = None
        self.token_score = self.head_score = None
        self.history = []

    def __call__(self, layer, q, k, v):
        h, t, d = q.shape
        if self.alive_tokens is None:
            self.alive_tokens = np.ones(t, dtype=bool)
            self.alive_heads = np.ones(h, dtype=bool)
            self.token_score = np.zeros(t)
            self.head_score = np.zeros(h)
        cols = self.alive_tokens
        s = q @ np.swapaxes(k, 1, 2) / np.sqrt(d)
        s = np.where(cols[None, None, :], s, -np.inf)
        s = s - s.max(axis=2, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=2, keepdims=True)
        if self.value_keep < 1:
            p = np.stack([local_value_prune(p[j], self.value_keep) for j in range(h)])
        out = p @ v
        out[~self.alive_heads] = 0.0
        # importance, accumulated
        self.token_score += p[self.alive_heads].sum(axis=(0, 1))
        self.head_score += np.abs(out).sum(axis=(1, 2))
        self.history.append((cols.sum(), self.alive_heads.sum()))
        self._prune(layer)
        return out

    def _prune(self, layer):
        from .topk import topk
        t, h = len(self.alive_tokens), len(self.alive_heads)
        nt = keep_count(t, 1 - self.token_keep[layer])
        if nt < self.alive_tokens.sum():
            score = np.where(self.alive_tokens, self.token_score, -np.inf)
            # the top-k engine's model on integer-scaled scores: ties to the lower index
            ints = np.where(self.alive_tokens, np.rint(score * 2 ** 20), -(2 ** 62)).astype(np.int64)
            _, win = topk(ints, nt)
            alive = np.zeros(t, dtype=bool)
            alive[win] = True
            self.alive_tokens = alive & self.alive_tokens
        nh = keep_count(h, 1 - self.head_keep[layer])
        if nh < self.alive_heads.sum():
            ints = np.where(self.alive_heads, np.rint(self.head_score * 2 ** 10),
                            -(2 ** 62)).astype(np.int64)
            _, win = topk(ints, nh)
            alive = np.zeros(h, dtype=bool)
            alive[win] = True
            self.alive_heads = alive & self.alive_heads


def progressive_rows(q, k, thresholds, msb_bits=4, lsb_bits=4, max_rows=None):
    """Progressive quantization (:mod:`.progressive_quant`) on one real head: keys as
    ``msb_bits + lsb_bits``-bit integers, queries INT8, both per-tensor scaled so that the
    softmax sees the true logits (scores q k^T / sqrt(d) with 8 fraction bits; the query scale
    absorbs the power-of-two ``score_shift``). Returns ``{threshold: fraction of rows that
    fetched the LSB plane}`` and the mean max |p - p_float| (probability units) per threshold."""
    from .progressive_quant import PQConfig, progressive_query
    q, k, _ = _check_head(q, k)
    t, d = q.shape
    rows = q if max_rows is None else q[:max_rows]
    kb = msb_bits + lsb_bits
    sk = float(np.abs(k).max()) / value_range(kb)[1]
    ki = saturate(np.rint(k / sk).astype(np.int64), kb)
    # logits * 256 = (q/sq)(k/sk) * sq*sk*256/sqrt(d) = s_int >> shift  =>  sq = sqrt(d)/(256 sk 2^shift)
    shift = 0
    while np.abs(rows).max() / (np.sqrt(d) / (256 * sk * 2 ** shift)) > 127:
        shift += 1
    sq = np.sqrt(d) / (256 * sk * 2 ** shift)
    qi = saturate(np.rint(rows / sq).astype(np.int64), 8)
    cfg = PQConfig(dim=d, q_bits=8, msb_bits=msb_bits, lsb_bits=lsb_bits, score_shift=shift,
                   softmax=SoftmaxFormat(in_bits=16, in_frac=8, out_frac=8, max_len=MAX_LEN))
    pf = np.exp(rows @ k.T / np.sqrt(d) - (rows @ k.T / np.sqrt(d)).max(1, keepdims=True))
    pf /= pf.sum(1, keepdims=True)
    out = {}
    for th in thresholds:
        fetched, err = 0, 0.0
        for i, qrow in enumerate(qi):
            p, f, _ = progressive_query(qrow, ki, int(round(th * 256)), cfg)
            fetched += f
            err += float(np.abs(p / 256.0 - pf[i]).max())
        out[th] = {"fetched_fraction": fetched / len(qi), "mean_max_err": err / len(qi)}
    return out


# -- whole model -----------------------------------------------------------------------------------
def model_attention(cfg, projections=None):
    """A :meth:`attnforge.golden.minilm.MiniLM.forward` attention hook running every head of
    every layer under ``cfg``; ``projections[(layer, head)]`` for the calibrated predictor."""
    def hook(layer, q, k, v):
        out = np.empty_like(q)
        for h in range(q.shape[0]):
            proj = projections.get((layer, h)) if projections else None
            out[h] = attend_head(q[h], k[h], v[h], cfg, proj)[0]
        return out
    return hook


def fidelity(a, b):
    """Cosine similarity of two embeddings (1 = identical direction)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
