"""Golden model of the attention lane (DESIGN.md section 4.7, docs/lane.md): one head of dynamic
sparse attention as the lane's hardware computes it, bit for bit, plus its cycle model.

Contract (timing-free; ``docs/lane.md`` section 3 is the dataflow):

* Inputs are FX16 integers ``qi``, ``ki``, ``vi`` (``T x d``, ``frac_bits`` fraction bits, the
  ``1/sqrt(d)`` scale already folded into ``qi``: :func:`attnforge.golden.attention.to_fx`)
  and two integer projection matrices ``pq``, ``pk`` (``d x m``, INT8 entries; the sparse
  random ``{-1, 0, +1}`` projection or a calibrated one, :func:`int_projection`).
* Token pruning: an optional keep-list (ascending token indices) removes the other tokens as
  keys and values before anything else; every query row is still computed. Granules and
  ``k`` count over the kept keys (the hardware gathers them first).
* Estimate (the RMMU's estimate row group, INTp): ``Q~ = requantize(qi pq, q_shift, p)``,
  ``K~ = requantize(k pk, k_shift, p)``, ``E = requantize(Q~ K~^T, est_shift, score_bits)``.
* Mask: the detector's rules (:mod:`attnforge.golden.detector`) on ``E`` per row (element,
  1xV) or per ``B``-row group (BxB): granule score = max, top-``k`` (ties to the lower index)
  or ``>= threshold``. Dense mode keeps everything and runs no estimate.
* Scores (compute row group, FX16): ``x = requantize(qi ki^T, frac_bits, 16)``; with HB-BSSA
  (``int8_bound`` set, BxB granularity) a kept block whose sum of squared estimates is
  ``<= int8_bound`` uses ``requantize(q8 k8^T, frac_bits - q8_shift - k8_shift, 16)`` with
  ``q8 = requantize(qi, q8_shift, 8)``, ``k8 = requantize(k, k8_shift, 8)``.
* Softmax (the softmax unit, format ``in_frac = frac_bits``, ``out_frac = prob_frac``,
  ``max_len = max_t``) over each row's kept positions in ascending key order; the rest is 0.
  A row with nothing kept (threshold mode) is an empty softmax row: probabilities and output 0.
* ``O = requantize(P v, prob_frac, 16)`` (A·V with the normalization fused: the probabilities
  go straight from the softmax to the A·V operand buffer).
* Importance: column sums of ``P`` over the query rows (integers, token coordinates, 0 for a
  pruned token); :func:`next_keep` picks the next keep-list with the top-k engine's model.

With the same mask (and ``max_t = 512``) the output equals
:func:`attnforge.golden.attention.attend_fx` bit for bit (tested).

The cycle model (:func:`cycles`) is documented in docs/lane.md section 2-3; its figures are
model figures until the RTL confirms them.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from .attention import GRANULARITIES, keep_count, random_projection
from .detector import Gran, granule_scores, threshold_mask, topk_mask
from .numbers import Precision, float_to_fx, requantize, value_range
from .softmax import SoftmaxFormat, softmax_fx
from .topk import topk

__all__ = ["LaneParams", "LaneConfig", "LaneResult", "run_lane", "int_projection", "fit_shift",
           "auto_config", "next_keep", "gemm_cycles", "descriptor_cycles", "cycles",
           "GRAN_CODES", "DESC_ISSUE", "run_lane_rmmu", "rtl_error", "rtl_keep_error",
           "project", "block_norms", "INT8_BOUND_BITS", "sumsq_bits", "RTL_PROJ", "RTL_EST_WIDE",
           "DET_THRESHOLD_LATENCY", "FINE_GRANULARITIES"]

#: Lane granularity name -> detector code.
GRAN_CODES = {"element": Gran.ELEM, "1x4": Gran.VEC4, "1x8": Gran.VEC8, "8x8": Gran.BLK8,
              "16x16": Gran.BLK16, "32x32": Gran.BLK32}
_EST_BITS = (2, 4, 8)
#: The granularities the lane runs per query row (docs/lane.md section 2): the detector sees each
#: row's estimate, a tile gathers the union of its rows' kept keys, the softmax each row's own.
FINE_GRANULARITIES = ("element", "1x4", "1x8")
#: Latency of the RTL detector in threshold mode (:attr:`attnforge.rtl.detector.Detector.latency`).
DET_THRESHOLD_LATENCY = 3


def _check(cond, name, value, legal):
    if not cond:
        raise ValueError(f"{name} must be {legal}, not {value!r}")


@dataclass(frozen=True)
class LaneParams:
    """Generator parameters (what the RTL is built for).

    max_t        longest sequence            d            head dimension
    rows, cols   RMMU array                  est_rows     rows of the estimate group (the
                                                          compute group is the rest)
    int8_rows    HB-BSSA's own INT8 row group (0: the INT8 scores descriptors share the
                 compute group, one after the FX16 one; > 0: the last ``int8_rows`` rows run
                 them concurrently with the FX16 descriptor; the compute group is then
                 ``rows - est_rows - int8_rows`` rows)
    tile         query tile Bq (rows per tile; a multiple of the largest block used)
    tile_m       RMMU accumulator depth      frac_bits / prob_frac / score_bits  formats
    det_per_beat, sm_per_beat                detector / softmax elements per beat
    det_latency, sm_latency                  latencies (cycles, per tile); None (default):
                                             the units' own ``latency`` properties
                                             (:attr:`det_lat`, :attr:`sm_lat`)
    schedule     "pipelined" (the design's tile schedule, docs/lane.md section 3) or "rtl"
                 (the RTL top level as built: the projections before the first tile, a
                 tile's scores, softmax and A·V back to back; :func:`cycles` then equals
                 the RTL's status cycles)
    """
    max_t: int = 64
    d: int = 8
    rows: int = 4
    cols: int = 2
    est_rows: int = 1
    int8_rows: int = 0
    tile: int = 8
    tile_m: int = 32
    frac_bits: int = 8
    prob_frac: int = 12
    score_bits: int = 8
    det_per_beat: int = 8
    sm_per_beat: int = 4
    det_latency: int | None = None
    sm_latency: int | None = None
    schedule: str = "pipelined"

    def __post_init__(self):
        _check(2 <= self.max_t <= 4096, "max_t", self.max_t, "in [2, 4096]")
        _check(1 <= self.d <= 256, "d", self.d, "in [1, 256]")
        _check(2 <= self.rows <= 64, "rows", self.rows, "in [2, 64]")
        _check(1 <= self.est_rows < self.rows, "est_rows", self.est_rows,
               f"in [1, {self.rows - 1}]")
        _check(0 <= self.int8_rows <= self.rows - self.est_rows - 1, "int8_rows",
               self.int8_rows, f"in [0, {self.rows - self.est_rows - 1}]")
        _check(1 <= self.tile <= self.max_t, "tile", self.tile, f"in [1, {self.max_t}]")
        _check(self.schedule in ("pipelined", "rtl"), "schedule", self.schedule,
               "pipelined or rtl")

    @property
    def det_lat(self):
        """Detector latency: ``det_latency`` or the top-k latency of the RTL detector
        (:attr:`attnforge.rtl.detector.Detector.latency`: 3 + ``score_bits`` + 1)."""
        return self.det_latency if self.det_latency is not None else self.score_bits + 4

    def det_lat_for(self, select):
        """Detector latency in selection mode ``select`` ("topk": :attr:`det_lat`;
        "threshold": ``det_latency`` or :data:`DET_THRESHOLD_LATENCY`, no radix select)."""
        if select == "topk" or self.det_latency is not None:
            return self.det_lat
        return DET_THRESHOLD_LATENCY

    @property
    def sm_lat(self):
        """Softmax latency: ``sm_latency`` or the RTL softmax's for this format
        (:func:`attnforge.rtl.softmax.softmax_latency`)."""
        if self.sm_latency is not None:
            return self.sm_latency
        from ..rtl.softmax import softmax_latency
        return softmax_latency(self.softmax_format())

    @property
    def comp_rows(self):
        """Rows of the compute group (FX16 scores, A·V, projections)."""
        return self.rows - self.est_rows - self.int8_rows

    @property
    def int8_row0(self):
        """First row of the INT8 group (after the estimate and compute groups)."""
        return self.rows - self.int8_rows

    def softmax_format(self):
        return SoftmaxFormat(in_bits=16, in_frac=self.frac_bits, out_frac=self.prob_frac,
                             max_len=self.max_t)


@dataclass(frozen=True)
class LaneConfig:
    """Run-time configuration (one ``cfg`` beat, docs/lane.md section 5)."""
    t: int
    mode: str = "sparse"            # "dense" or "sparse"
    est_bits: int = 4
    m: int = 2
    q_shift: int = 0
    k_shift: int = 0
    est_shift: int = 0
    select: str = "topk"            # "topk" or "threshold"
    k: int = 1                      # granules kept per row (block row)
    threshold: int = 0              # signed score_bits + 1
    granularity: str = "element"
    int8_bound: int | None = None   # HB-BSSA: None = off
    q8_shift: int = 0
    k8_shift: int = 0

    @property
    def gran(self):
        return GRAN_CODES[self.granularity]

    def replace(self, **kw):
        return replace(self, **kw)

    def error(self, params, t_keys=None):
        """Why the lane rejects this configuration (a string), or None."""
        t_keys = self.t if t_keys is None else t_keys
        lo, hi = value_range(params.score_bits + 1)
        checks = (
            (1 <= self.t <= params.max_t, "t", self.t, f"in [1, {params.max_t}]"),
            (self.mode in ("dense", "sparse"), "mode", self.mode, "dense or sparse"),
            (self.est_bits in _EST_BITS, "est_bits", self.est_bits, "2, 4 or 8"),
            (1 <= self.m <= params.d, "m", self.m, f"in [1, {params.d}]"),
            (self.select in ("topk", "threshold"), "select", self.select, "topk or threshold"),
            (self.granularity in GRAN_CODES, "granularity", self.granularity,
             ", ".join(GRAN_CODES)),
            (min(self.q_shift, self.k_shift, self.est_shift, self.q8_shift, self.k8_shift) >= 0,
             "shifts", (self.q_shift, self.k_shift, self.est_shift), ">= 0"),
            (self.q8_shift + self.k8_shift <= params.frac_bits, "q8_shift + k8_shift",
             self.q8_shift + self.k8_shift, f"<= frac_bits ({params.frac_bits})"),
            (lo <= self.threshold <= hi, "threshold", self.threshold, f"in [{lo}, {hi}]"),
        )
        for ok, name, value, legal in checks:
            if not ok:
                return f"{name} must be {legal}, not {value!r}"
        if self.mode == "dense":
            return None
        r, c = GRANULARITIES[self.granularity]
        if r > 1 and params.tile % r:
            return f"block {r} must divide the query tile {params.tile}"
        g = -(-t_keys // c)
        if self.select == "topk" and not 1 <= self.k <= g:
            return f"k must be in [1, {g}], not {self.k}"
        if self.int8_bound is not None and r == 1:
            return "int8_bound needs a BxB granularity"
        return None

    @classmethod
    def from_head(cls, head, t, **kw):
        """The fields that coincide with :class:`attnforge.golden.attention.HeadConfig`:
        algorithm (dense -> dense mode), estimate bits, sigma (-> m), granularity (bssa:
        the block), sparsity (-> k = keep_count of the granules). Shifts etc. via ``kw``."""
        d = kw.pop("d")
        gran = head.granularity if head.algorithm != "bssa" else f"{head.block}x{head.block}"
        c = GRANULARITIES[gran][1]
        return cls(t=t, mode="dense" if head.algorithm == "dense" else "sparse",
                   est_bits=head.estimate_bits or 8, m=max(1, int(round(head.sigma * d))),
                   granularity=gran, k=keep_count(-(-t // c), head.sparsity), **kw)


def sumsq_bits(block, score_bits=8):
    """Bits of an unsigned sum of ``block x block`` squared ``score_bits`` estimates (the largest
    is ``block**2 * 2**(2*(score_bits-1))``, all at the most negative value)."""
    return (block * block << 2 * (score_bits - 1)).bit_length()


#: Width of the lane's ``cfg.int8_bound`` (RTL): holds :func:`sumsq_bits` of the largest
#: sparse block (32) at ``score_bits = 8``; a bound at or above a block's largest sum keeps
#: every kept block at INT8.
INT8_BOUND_BITS = sumsq_bits(32)


def rtl_error(cfg, *, max_t, max_m, block, keep=None, n_keep=None, prune=None,
              frac_bits=LaneParams.frac_bits):
    """Why the RTL top level (:class:`attnforge.rtl.lane.Lane`, generator bounds ``max_t``,
    ``max_m``, ``block``) answers the ``cfg`` beat of ``cfg`` with an error status (a string),
    or None: the checks its ``cfg`` stream applies, in this order, to the fields it carries
    (docs/lane.md section 5). The RTL runs the subset of :meth:`LaneConfig.error` that it
    implements: BxB blocks equal to the query tile or a per-row granularity
    (:data:`FINE_GRANULARITIES`: element, 1x4, 1x8; ``k`` then counts a row's granules of the
    kept keys; HB-BSSA off), top-k or threshold; HB-BSSA
    (``int8_bound`` None = off, else an INT8 block when its sum of squares is
    ``<= int8_bound``; ``q8_shift``, ``k8_shift`` >= 0 with ``q8_shift + k8_shift <=
    frac_bits``, checked in every mode as :meth:`LaneConfig.error` does); the projections'
    shifts are the RMMU's 6-bit shift (sparse mode); token pruning with ``n_keep`` (the ``cfg``
    field: ``len(keep)`` unless given; ``prune``: whether the field ``prune`` is set, default
    ``keep is not None``) in ``[1, t]`` and a multiple of the block (the RTL gathers whole
    blocks of kept keys). The keep-list's own beats are checked during LOAD:
    :func:`rtl_keep_error`. The testbench predicts every error response with these two
    functions (``frac_bits``: the lane's generator parameter)."""
    prune = keep is not None if prune is None else prune
    n_keep = (len(keep) if keep is not None else 0) if n_keep is None else n_keep
    keys = n_keep if prune else cfg.t
    checks = (
        (1 <= cfg.t <= max_t, "t", cfg.t, f"in [1, {max_t}]"),
        (cfg.t % block == 0, "t", cfg.t, f"a multiple of the block {block}"),
        (cfg.est_bits in _EST_BITS, "est_bits", cfg.est_bits, "2, 4 or 8"),
        (1 <= cfg.m <= max_m, "m", cfg.m, f"in [1, {max_m}]"),
        (0 <= cfg.est_shift <= 63, "est_shift", cfg.est_shift, "in [0, 63]"),
        (min(cfg.q8_shift, cfg.k8_shift) >= 0 and cfg.q8_shift + cfg.k8_shift <= frac_bits,
         "q8_shift + k8_shift", (cfg.q8_shift, cfg.k8_shift), f"in [0, frac_bits ({frac_bits})]"),
        (not prune or 1 <= n_keep <= cfg.t, "n_keep", n_keep, f"in [1, t = {cfg.t}]"),
        (not prune or n_keep % block == 0, "n_keep", n_keep, f"a multiple of the block {block}"),
    )
    fine = cfg.granularity in FINE_GRANULARITIES
    gcols = GRANULARITIES[cfg.granularity][1] if fine else block
    hb = cfg.int8_bound is not None and cfg.int8_bound >= 0      # the cfg field hb
    sparse = (
        (cfg.select in ("topk", "threshold"), "select", cfg.select, "topk or threshold"),
        (fine or cfg.granularity == f"{block}x{block}", "granularity", cfg.granularity,
         f"{block}x{block} (the query tile), " + ", ".join(FINE_GRANULARITIES)),
        (cfg.select != "topk" or 1 <= cfg.k <= keys // gcols, "k", cfg.k,
         f"in [1, {keys // gcols}] (top-k of the kept keys' granules)"),
        (0 <= cfg.q_shift <= 63, "q_shift", cfg.q_shift, "in [0, 63]"),
        (0 <= cfg.k_shift <= 63, "k_shift", cfg.k_shift, "in [0, 63]"),
        (not (fine and hb), "int8_bound", cfg.int8_bound,
         "off with element / 1xV granularity (HB-BSSA INT8 blocks are BxB only)"),
    )
    for ok, name, value, legal in checks + (sparse if cfg.mode == "sparse" else ()):
        if not ok:
            return f"{name} must be {legal}, not {value!r}"
    return None


def rtl_keep_error(t, keep, *, n_keep=None, prune=None):
    """Why the RTL top level answers a head whose ``cfg`` beat passed :func:`rtl_error` with an
    error status after its LOAD (a string), or None: the checks of the ``KEEP`` load beats
    (``keep``, token indices in the order sent, first in LOAD; None: no KEEP beat). ``prune``
    and ``n_keep`` are the ``cfg`` fields (defaults as in :func:`rtl_error`). A KEEP beat
    without ``prune``, a token ``>= t``, a token not above the previous one, more than
    ``n_keep`` KEEP beats, or fewer before the first other row (or the end of LOAD) is an
    error; the lane then takes (and drops) the rest of LOAD up to its ``last`` beat and answers
    one error status."""
    prune = keep is not None if prune is None else prune
    if keep is None or not len(keep):
        return "keep-list must have n_keep entries, not 0" if prune else None
    keep = [int(x) for x in keep]
    n_keep = len(keep) if n_keep is None else n_keep
    if not prune:
        return "keep-list must not be sent without prune"
    if any(x >= t or x < 0 for x in keep):
        return f"keep-list tokens must be in [0, {t - 1}], not {keep}"
    if any(b <= a for a, b in zip(keep, keep[1:])):
        return f"keep-list must be ascending, not {keep}"
    if len(keep) != n_keep:
        return f"keep-list must have n_keep = {n_keep} entries, not {len(keep)}"
    return None


@dataclass
class LaneResult:
    out: np.ndarray                  # (T, d) FX16
    probs: np.ndarray                # (T, T) prob_frac, token coordinates
    mask: np.ndarray                 # (T, T) bool, token coordinates
    est: np.ndarray | None           # (T, T') estimate (score_bits), kept-key coordinates
    int8_blocks: np.ndarray | None   # (T/B, T'/B) bool: kept blocks run at INT8
    importance: np.ndarray           # (T,) column sums of probs
    keys: np.ndarray                 # the kept tokens (keep-list or all)
    gather: list = field(default_factory=list)   # per query tile: gathered keys (token idx)


def fit_shift(x, bits):
    """Smallest right shift ``s`` with ``requantize(x, s, bits)`` unsaturated (a static
    calibration of a power-of-two scale: ``x ~ requantized << s``)."""
    x = np.asarray(x, dtype=np.int64)
    m = int(np.abs(x).max()) if x.size else 0
    hi = value_range(bits)[1]
    s = 0
    while (m + (1 << s >> 1)) >> s > hi:
        s += 1
    return s


def int_projection(d, m, seed=0, proj=None):
    """Integer projections ``(pq, pk)`` (``d x m`` INT8): DSA's sparse random projection
    ``{-1, 0, +1}`` (the ``sqrt(2/m)`` scale goes into the shifts), or a calibrated
    :class:`attnforge.golden.attention.Projection` quantized to INT8 with a power-of-two scale
    (the key mean is dropped: a per-row constant, invisible to top-k)."""
    if proj is None:
        p = np.sign(random_projection(d, m / d, seed).a).astype(np.int64)
        return p, p
    out = []
    for a in (proj.a, proj.b):
        f = 0
        while f < 14 and np.abs(a).max() * (1 << (f + 1)) < 127:
            f += 1
        out.append(float_to_fx(a, f, 8))
    return tuple(out)


def auto_config(params, cfg, qi, ki, pq, pk, keep=None):
    """``cfg`` with the shifts fitted to this head's data (what a calibration would store)."""
    kk = ki if keep is None else ki[np.asarray(keep)]
    p = cfg.est_bits
    qs = fit_shift(qi @ pq, p)
    ks = fit_shift(kk @ pk, p)
    qt = requantize(qi @ pq, qs, p)
    kt = requantize(kk @ pk, ks, p)
    es = fit_shift(qt @ kt.T, params.score_bits)
    return cfg.replace(q_shift=qs, k_shift=ks, est_shift=es, q8_shift=fit_shift(qi, 8),
                       k8_shift=fit_shift(kk, 8))


def project(cfg, qi, kk, pq, pk):
    """``(Q~, K~)``: the projected, INTp-requantized queries and (kept) keys the estimate
    multiplies (``requantize(qi pq, q_shift, p)``, ``requantize(kk pk, k_shift, p)``)."""
    p = cfg.est_bits
    return requantize(qi @ pq, cfg.q_shift, p), requantize(kk @ pk, cfg.k_shift, p)


def _estimate(params, cfg, qi, kk, pq, pk):
    qt, kt = project(cfg, qi, kk, pq, pk)
    return requantize(qt @ kt.T, cfg.est_shift, params.score_bits)


def _detect(params, cfg, est):
    """Element mask (T, T') from the detector's rules, row group by row group."""
    t, n = est.shape
    r, c = GRANULARITIES[cfg.granularity]
    mask = np.zeros((t, n), dtype=bool)
    for r0 in range(0, t, r):
        g = granule_scores(est[r0:r0 + r], c)
        keep = (topk_mask(g, cfg.k) if cfg.select == "topk" else
                threshold_mask(g, cfg.threshold))
        mask[r0:r0 + r] = np.repeat(keep, c)[:n]
    return mask


def block_norms(est, b):
    """Sum of squared estimates per ``b x b`` block of ``est`` (zero-padded at the edges): what
    HB-BSSA compares with ``int8_bound``, the granule pool's second output
    (:class:`attnforge.rtl.lane_pool.GranulePool`, ``sq``)."""
    t, n = est.shape
    gr, gc = -(-t // b), -(-n // b)
    pad = np.zeros((gr * b, gc * b), dtype=np.int64)
    pad[:t, :n] = est
    return (pad ** 2).reshape(gr, b, gc, b).sum(axis=(1, 3))


def _scores(params, cfg, qi, kk, int8_blocks, b):
    x = requantize(qi @ kk.T, params.frac_bits, 16)
    if int8_blocks is not None and int8_blocks.any():
        q8 = requantize(qi, cfg.q8_shift, 8)
        k8 = requantize(kk, cfg.k8_shift, 8)
        x8 = requantize(q8 @ k8.T, params.frac_bits - cfg.q8_shift - cfg.k8_shift, 16)
        sel = np.kron(int8_blocks, np.ones((b, b), dtype=bool))[:x.shape[0], :x.shape[1]]
        x = np.where(sel, x8, x)
    return x


def run_lane(params, cfg, qi, ki, vi, pq=None, pk=None, keep=None, mask=None, plan_only=False):
    """One head through the lane (module docstring). ``mask`` (T x T' bool) overrides the
    detector (a test hook: the same mask as another model). ``plan_only``: estimate, mask and
    gather lists only (what the cycle model needs; ``out``/``probs`` stay 0). Raises ``ValueError`` for a
    configuration the hardware answers with an error."""
    qi, ki, vi = (np.asarray(x, dtype=np.int64) for x in (qi, ki, vi))
    t = qi.shape[0]
    _check(qi.shape == ki.shape == vi.shape == (t, params.d), "q, k, v shapes", qi.shape,
           f"(T, {params.d})")
    keys = np.arange(t) if keep is None else np.asarray(keep, dtype=np.int64)
    _check(len(keys) >= 1 and np.all(np.diff(keys) > 0) and keys[0] >= 0 and keys[-1] < t,
           "keep-list", keep, f"ascending token indices in [0, {t - 1}], not empty")
    _check(cfg.t == t, "cfg.t", cfg.t, f"the head's length {t}")
    err = cfg.error(params, len(keys))
    if err:
        raise ValueError(err)
    kk, vk = ki[keys], vi[keys]
    est, int8 = None, None
    r = GRANULARITIES[cfg.granularity][0]
    if cfg.mode == "dense":
        kmask = np.ones((t, len(keys)), dtype=bool)
    else:
        est = _estimate(params, cfg, qi, kk, pq, pk)
        kmask = _detect(params, cfg, est) if mask is None else np.asarray(mask, dtype=bool)
        if cfg.int8_bound is not None:
            kept_blocks = kmask[::r, ::r]
            int8 = (block_norms(est, r) <= cfg.int8_bound) & kept_blocks
    if mask is not None:                              # dense mode with a mask: test hook
        kmask = np.asarray(mask, dtype=bool)
    fmt = params.softmax_format()
    pk_ = np.zeros((t, len(keys)), dtype=np.int64)
    x = None if plan_only else _scores(params, cfg, qi, kk, int8, r)
    for i in range(0 if plan_only else t):
        cols = np.nonzero(kmask[i])[0]
        if len(cols):                                 # threshold mode may keep nothing:
            pk_[i, cols] = softmax_fx(x[i, cols], fmt)   # an empty row, output 0
    out = requantize(pk_ @ vk, params.prob_frac, 16)
    probs = np.zeros((t, t), dtype=np.int64)
    probs[:, keys] = pk_
    full = np.zeros((t, t), dtype=bool)
    full[:, keys] = kmask
    gather = [keys[kmask[b0:b0 + params.tile].any(axis=0)] for b0 in range(0, t, params.tile)]
    return LaneResult(out, probs, full, est, int8, probs.sum(axis=0), keys, gather)


def next_keep(importance, n_keep):
    """The next head's keep-list: the ``n_keep`` most important tokens (ascending), chosen by
    the top-k engine's rule (:func:`attnforge.golden.topk.topk`, ties to the lower index)."""
    return topk(np.asarray(importance, dtype=np.int64), n_keep)[1]


# -- cycle model -----------------------------------------------------------------------------------
#: Cycles between back-to-back descriptors on one group beyond :func:`gemm_cycles` (the command
#: handshake; measured on ``rtl/lane_front.py``: estimate tiles every 37 + 1 cycles).
DESC_ISSUE = 1


def gemm_cycles(m, k, n, nrows, cols, precision, tile_m, row0=0):
    """Cycles of one RMMU descriptor (rtl/rmmu.py, docs/rmmu.md): ``nrows`` cycles of initial
    weight load, then per pass ``max(M-tile rows, nrows + row0)`` (the next tile set loads
    behind the pass; the last pass just its rows), then the drain ``row0 + nrows + 3``.

    The ``row0`` in the per-pass term: a row's shadow tile is free for the next pass's weights
    only once the pass's first word has reached that row, ``row0 + r + 1`` cycles after its
    issue (the skew line counts from the array's row 0), and the next pass issues once all
    ``nrows`` rows are loaded; so a group that does not start at row 0 hides its weight loads
    only behind passes of at least ``nrows + row0`` words (measured in the Amaranth simulator,
    tests/test_lane_l32.py: DOTA's 16 + 16 split pays 16 cycles per compute pass at
    ``M-tile = Bq = 16``)."""
    if m == 0:
        return 0
    lanes = Precision(precision).lanes
    t_n = -(-n // (cols * lanes))
    passes = -(-k // (nrows * lanes))
    tiles = [min(tile_m, m - i) for i in range(0, m, tile_m)]
    per = [rows for _ in range(t_n) for rows in tiles for _ in range(passes)]
    return nrows + sum(max(x, nrows + row0) for x in per[:-1]) + per[-1] + row0 + nrows + 3


def descriptor_cycles(*args, **kw):
    """A descriptor as the lane issues it: :func:`gemm_cycles` + :data:`DESC_ISSUE`."""
    c = gemm_cycles(*args, **kw)
    return c + DESC_ISSUE if c else 0


def _pipeline(n_tiles, est, det, det_lat, scores, smax, sm_lat, av, start):
    """List schedule of the tile pipeline (docs/lane.md section 3): estimate group, detector,
    compute group (order S0, S1, AV0, S2, AV1, ...), softmax. Returns the end cycle."""
    e_end = d_end = sm_end = start
    c_free = start
    s_end, sm_done = [0] * n_tiles, [0] * n_tiles
    order = []
    for b in range(n_tiles):
        order.append(("S", b))
        if b >= 1:
            order.append(("AV", b - 1))
    order.append(("AV", n_tiles - 1))
    d_ends = []
    for b in range(n_tiles):
        e_end = e_end + est[b]
        d_end = max(e_end + (det_lat if det[b] else 0), d_end + det[b])
        d_ends.append(d_end)
    for kind, b in order:
        if kind == "S":
            c_free = max(c_free, d_ends[b]) + scores[b]
            s_end[b] = c_free
            sm_end = max(sm_end, s_end[b]) + smax[b] + sm_lat
            sm_done[b] = sm_end
        else:
            c_free = max(c_free, sm_done[b]) + av[b]
    return c_free


def cycles(params, cfg, result):
    """Cycle model of one head (docs/lane.md): ``{"total", "phases": {name: busy cycles},
    "utilization": {name: fraction}, "kept_fraction", "gathered_fraction"}``. Phases:
    project, estimate, detect, scores, softmax, av, stalls (compute group idle)."""
    t, d = result.out.shape
    tk = len(result.keys)
    dense = cfg.mode == "dense"
    rtl = params.schedule == "rtl"            # the RTL's dense mode keeps the two groups
    e_rows, c_rows = (0, params.rows) if dense and not rtl else \
        (params.est_rows, params.comp_rows)
    row0 = e_rows
    fx, c, tm = Precision.FX16, params.cols, params.tile_m
    tiles = range(0, t, params.tile)
    n_tiles = len(tiles)
    g = [len(x) for x in result.gather]
    bq = [min(params.tile, t - b0) for b0 in tiles]
    macs = dict.fromkeys(("project", "estimate", "scores", "av"), 0)
    r, cg = GRANULARITIES[cfg.granularity]
    if dense:
        proj, est, det = 0, [0] * n_tiles, [0] * n_tiles
    else:
        proj = (descriptor_cycles(t, d, cfg.m, c_rows, c, fx, tm, row0)
                + descriptor_cycles(tk, d, cfg.m, c_rows, c, fx, tm, row0))
        proj += RTL_PROJ if rtl else 0
        macs["project"] = (t + tk) * d * cfg.m
        p = Precision.parse(f"int{cfg.est_bits}")
        est = [descriptor_cycles(rq, cfg.m, tk, e_rows, c, p, tm, 0)
               - (rtl and e_rows > 1) * RTL_EST_WIDE for rq in bq]
        macs["estimate"] = t * tk * cfg.m
        radix = params.score_bits + 1 if cfg.select == "topk" else 0
        per_cmd = -(-(-(-tk // cg)) // params.det_per_beat) + radix
        det = [(rq // r if r > 1 else rq) * per_cmd for rq in bq]
    scores, av, smax, two = [], [], [], []     # two: per tile, the RTL's scores offset
    beats = []                      # per tile, the detector's idx beats (BxB: RTL_EMPTY_NEXT)
    rows_mask = result.mask[:, result.keys]
    for i, b0 in enumerate(tiles):
        gb, rq = g[i], bq[i]
        pos = np.searchsorted(result.keys, result.gather[i])
        sel = _int8_select(result, r, slice(b0, b0 + rq), pos, tk)
        extra = 0                       # the RTL's measured offset of this tile's scores
        if sel is None:
            s = descriptor_cycles(gb, d, rq, c_rows, c, fx, tm, row0)
        else:
            n_fx, n8 = int((~sel.all(axis=0)).sum()), int(sel.any(axis=0).sum())
            s_fx = descriptor_cycles(n_fx, d, rq, c_rows, c, fx, tm, row0)
            i8_rows, i8_row0 = _int8_group(params, c_rows, row0, n_fx > 0)
            s8 = descriptor_cycles(n8, d, rq, i8_rows, c, Precision.INT8, tm, i8_row0)
            if params.int8_rows and n_fx:   # own row group: the two run concurrently
                s = max(s_fx, s8)
                extra = RTL_SCORES_SPLIT if n8 and n_fx else 0
            else:                       # shared compute group: one after the other
                s = s_fx + s8
                extra = RTL_SCORES2 if 0 < n8 < gb else 0
        two.append(extra)
        words = np.unique(pos // cg // params.det_per_beat) if not dense else ()
        last_word = (-(-tk // cg) - 1) // params.det_per_beat
        beats.append(len(words) + (last_word not in words))
        scores.append(s)
        av.append(descriptor_cycles(rq, gb, d, c_rows, c, fx, tm, row0) if gb else 0)
        kept_rows = rows_mask[b0:b0 + rq].sum(axis=1)
        smax.append(int(np.maximum(1, -(-kept_rows // params.sm_per_beat)).sum()))
        macs["scores"] += gb * d * rq
        macs["av"] += gb * d * rq
    fine = None
    if rtl and not dense and cfg.granularity in FINE_GRANULARITIES:
        fine = _rtl_fine_front(params, cfg, proj, est, rows_mask, g)
    if rtl:
        total = _rtl_schedule(params, dense, proj, est, scores, av, g, bq, -(-d // c),
                              params.det_lat_for(cfg.select),
                              0 if dense or fine else _rtl_front(params, cfg, tk), two, fine,
                              beats)
    else:
        total = _pipeline(n_tiles, est, det, params.det_lat_for(cfg.select), scores, smax,
                          params.sm_lat,
                          av, proj)
    phases = {"project": proj, "estimate": sum(est), "detect": sum(det),
              "scores": sum(scores), "softmax": sum(smax), "av": sum(av)}
    phases["stalls"] = total - proj - phases["scores"] - phases["av"]
    peak_c = c_rows * c
    util = {"scores": macs["scores"] / max(1, phases["scores"] * peak_c),
            "av": macs["av"] / max(1, phases["av"] * peak_c)}
    if not dense:
        util["project"] = macs["project"] / max(1, proj * peak_c)
        pe = e_rows * c * Precision.parse(f"int{cfg.est_bits}").macs_per_word
        util["estimate"] = macs["estimate"] / max(1, phases["estimate"] * pe)
    return {"total": int(total), "phases": phases, "utilization": util,
            "kept_fraction": float(rows_mask.mean()),
            "gathered_fraction": float(sum(gb * rq for gb, rq in zip(g, bq)) / (t * tk))}


#: RTL top level (``schedule="rtl"``), measured on rtl/lane.py (docs/lane.md section 7):
#: cycles from TILES to the first tile command; from a tile's last estimate beat to its
#: gathered block list beyond the detector's latency and the granule hand-off of
#: :func:`_rtl_front` (pool 1, packer 1, gather 1); per tile beyond the descriptors, the
#: softmax rows and its latency (less the A·V descriptor's first weight load, ``comp_rows``
#: cycles, which runs during the softmax); after the last A·V beat (the O buffer plays the
#: tile out).
RTL_START, RTL_DETECT, RTL_TILE, RTL_DRAIN = 1, 3, 0, 1
#: An empty tile (threshold mode, nothing kept): its first zero row leaves ``RTL_EMPTY`` cycles
#: after its block list is gathered or the O buffer's previous tile has left, whichever is
#: later. BxB: the next tile's detector beats (``idx``, one per word of kept granules, plus a
#: closing beat when the row's last word keeps none) queued behind the empty one; the back
#: takes that tile ``RTL_EMPTY_NEXT`` + (its beats) cycles after the first zero row (measured
#: in session 7 with per-handshake traces, Amaranth simulator, tests/test_lane_l32.py; the
#: earlier constant, 2 after the first zero row, held only where the next tile waited on its
#: own estimate). Per-row granularity: ``RTL_FINE_EMPTY_NEXT`` cycles after the first zero row.
RTL_EMPTY, RTL_EMPTY_NEXT, RTL_FINE_EMPTY_NEXT = 3, -2, 2
#: HB-BSSA: a tile with both an FX16 and an INT8 scores descriptor (measured on rtl/lane.py):
#: the second follows the first one cycle sooner than two :func:`descriptor_cycles` charge.
RTL_SCORES2 = -1
#: HB-BSSA with the INT8 row group (``int8_rows > 0``): a tile with both descriptors, which run
#: concurrently on their groups, ends this many cycles after the longer one
#: (:func:`descriptor_cycles`; measured on rtl/lane.py, tests/test_lane_lint8.py).
RTL_SCORES_SPLIT = 0


def _int8_group(params, c_rows, row0, beside_fx):
    """``(nrows, row0)`` of a tile's INT8 scores descriptor: the INT8 row group (the last
    ``int8_rows`` rows) if there is one and the tile has an FX16 descriptor too
    (``beside_fx``), else the compute group (``c_rows`` rows from ``row0``: a tile whose kept
    blocks are all INT8 would leave the compute group idle, and it is the wider group)."""
    if params.int8_rows and beside_fx:
        return params.int8_rows, params.int8_row0
    return c_rows, row0
#: An estimate group wider than row 0 alone (``est_rows > 1``): the RMMU's loader lets a pass
#: start in the cycle its last weight row is written (rtl/rmmu.py ``Loader.ready``), which
#: hides one cycle of ``EstimateFeeder``'s first ``w`` beat: every estimate descriptor takes
#: this much less than :func:`descriptor_cycles` (measured at est_rows 1 / 2 / 3 / 16 in the
#: Amaranth simulator and Verilator, tests/test_lane_l32.py, docs/lane.md TODO 6; charged per
#: descriptor since session 7: a tile whose start waits on the front -- after an empty tile,
#: or at per-row granularity -- showed the first tile alone was one cycle short).
RTL_EST_WIDE = 1
#: PROJECT (sparse): cycles of the projection phase beyond its two descriptors
#: (:func:`descriptor_cycles`), from the end of LOAD to TILES (rtl/lane_proj.py).
RTL_PROJ = 0


def _rtl_front(params, cfg, tk):
    """Cycles from a tile's last estimate beat to its gathered block list (sparse mode),
    beyond the detector's latency: :data:`RTL_DETECT`, plus the packer handing the last
    N-tile's granules (``W / B`` of them when the N-tile of ``W = cols * lanes`` keys holds
    several blocks, e.g. INT2) to the detector ``det_per_beat`` per cycle, plus the detector's
    select, one word of ``det_per_beat`` granules per cycle over the row's ``ceil(tk / B)``
    granules (``tk`` = the kept keys; measured in the Amaranth simulator,
    tests/test_lane_lfig.py; the select scan's dependence on ``tk`` also by lprune's pruned
    and T = 16 heads)."""
    cg = GRANULARITIES[cfg.granularity][1]
    w = params.cols * Precision.parse(f"int{cfg.est_bits}").lanes
    last = -(-(tk - (-(-tk // w) - 1) * w) // cg) if w >= cg else 1
    words = -(-(-(-tk // cg)) // params.det_per_beat)
    return RTL_DETECT + (-(-last // params.det_per_beat) - 1) + (words - 1)


#: Per-row granularity (element / 1xV, measured on rtl/lane.py): the first estimate descriptor
#: starts ``RTL_FINE_START`` cycles after PROJECT; a tile's gathered list, complete in cycle
#: ``full``, is the back's ``ready`` at ``full + RTL_FINE_READY``; the back takes a tile
#: (``go``) ``RTL_FINE_GO`` cycles before its start in :func:`_rtl_schedule`, an empty tile's
#: ``empty`` beat ``RTL_FINE_EMPTY`` cycles before its first zero row.
RTL_FINE_START, RTL_FINE_READY, RTL_FINE_GO, RTL_FINE_EMPTY = 2, -1, -1, 0


def _rtl_fine_front(params, cfg, proj, est, rows_mask, g):
    """The front half at per-row granularity (element / 1xV) as the RTL runs it, row by row
    (rtl/lane_front.py, docs/lane.md section 7): returns ``ready(b, go_prev)``, the cycle tile
    ``b``'s gathered key list is ready for the back given the cycle ``go_prev`` the back took
    tile ``b - 1`` (None for ``b = 0``); call it for ``b = 0, 1, ...`` in order.

    The row buffer (:class:`attnforge.rtl.lane_pool.EstimateRows`, two tiles) takes estimate
    tile ``b`` at ``E_b`` (after the buffer of tile ``b - 2`` is free) and plays it from
    ``R_b``; each row goes through the packer to the detector (one score per cycle): ingest
    ``F .. L`` (``n`` keys) once the select stage has copied the previous row, select (``S``:
    radix ``rad``, then one granule per cycle; an emitting word -- the first kept granule
    ``f`` or the last -- waits while the previous row's ``mask`` beat is not taken), the
    ``mask`` beat taken at ``T`` (the first row of a tile only once the gather has handed the
    previous tile to the back); the gather then lists the union's ``nk`` keys, one per cycle."""
    t = rows_mask.shape[0]
    tk = rows_mask.shape[1]
    cg = GRANULARITIES[cfg.granularity][1]
    ng = -(-tk // cg)
    rad = params.score_bits + 1 if cfg.select == "topk" else 0
    w = params.cols * Precision.parse(f"int{cfg.est_bits}").lanes
    w_last = tk - (-(-tk // w) - 1) * w
    gran_rows = np.zeros((t, ng), dtype=bool)
    for j in range(ng):
        gran_rows[:, j] = rows_mask[:, j * cg:(j + 1) * cg].any(axis=1)
    first = [int(np.argmax(r)) if r.any() else ng - 1 for r in gran_rows]
    neg = -(1 << 40)
    st = dict(L=neg, S=neg, X=neg, T=neg, E=[], rel=[])

    def ready(b, go_prev):
        e_list, rel = st["E"], st["rel"]
        if b == 0:
            e_b = proj + RTL_FINE_START
        else:
            e_b = e_list[-1] + est[b - 1] + 1
            if b >= 2:
                e_b = max(e_b, rel[b - 2] + 2)
        e_list.append(e_b)
        r_b = e_b + est[b] + 1
        if b >= 1:
            r_b = max(r_b, rel[b - 1] + 2)
        rows = range(b * params.tile, min(t, (b + 1) * params.tile))
        for i, r in enumerate(rows):
            cmd = max(st["L"], r_b + 1) if i == 0 else st["L"]
            f_ = max(cmd + 1, st["S"])
            l_ = f_ + tk - 1
            s_ = max(l_ + 1, st["X"])
            c1 = max(s_ + rad + 1 + first[r], st["T"])
            x_ = c1 + ng - 1 - first[r]
            t_ = x_ + 1
            if i == 0 and go_prev is not None:
                t_ = max(t_, go_prev + 1)
            st.update(L=l_, S=s_, X=x_, T=t_)
        rel.append(st["L"] - w_last - 1)
        return st["T"] + max(g[b], 1) + 1 + RTL_FINE_READY

    return ready


def _rtl_schedule(params, dense, proj, est, scores, av, g, bq, n_nt, det_lat, front, two=(),
                  fine=None, beats=()):
    """The RTL top level's schedule: in sparse mode the PROJECT phase (``proj`` cycles: the
    two projection descriptors on the compute group, :data:`RTL_PROJ` included) comes first;
    then the front (estimate -> detector, ``det_lat`` + ``front`` after a tile's estimate:
    :func:`_rtl_front`) runs ahead, tile by tile;
    the back runs each tile's scores descriptor, then the tile's softmax rows (one element per
    cycle, ``Bq + 1`` cycles per gathered key: the score buffer is written and read row by
    row), then the A·V descriptor; the O buffer plays each tile out (``Bq`` rows of
    ``ceil(d / cols)`` beats) while the back runs the next one. A tile that kept nothing
    (``g = 0``) issues no descriptor: the O buffer plays ``Bq`` zero rows once it is free.
    ``two[b]``: cycles to add to tile ``b``'s scores (HB-BSSA with an FX16 and an INT8
    descriptor: :data:`RTL_SCORES2` on a shared compute group, :data:`RTL_SCORES_SPLIT` with
    the INT8 row group).
    ``fine``: per-row granularity, the front's ``ready(b, go_prev)`` (:func:`_rtl_fine_front`)
    instead of the BxB front. ``beats[b]``: tile ``b``'s detector ``idx`` beats (BxB: the
    back takes a tile queued behind an empty one :data:`RTL_EMPTY_NEXT` + that many cycles
    after the empty tile's first zero row).
    Returns the cycle of the head's last output beat (the RTL's ``status.cycles``)."""
    ready, e_end, end, last = [], proj, proj + RTL_START, 0
    for e in est:
        e_end += e
        ready.append(RTL_START if dense else e_end + det_lat + front)
    go = None
    for b in range(len(g)):
        rb = fine(b, go) if fine else ready[b]
        if g[b] == 0:
            start = max(rb, last) + RTL_EMPTY
            go = start - RTL_FINE_EMPTY
            last = start + bq[b] * n_nt - 1
            if fine or b + 1 >= len(beats):
                end = max(end, start + RTL_FINE_EMPTY_NEXT)
            else:
                end = max(end, start + RTL_EMPTY_NEXT + beats[b + 1])
            continue
        sm = (-(-g[b] // params.sm_per_beat) * bq[b] + g[b]) + params.sm_lat + RTL_TILE \
            - params.comp_rows
        go = max(end, rb) - RTL_FINE_GO
        end = max(end, rb) + scores[b] + sm + av[b] + \
            (two[b] if b < len(two) else 0)
        last = end + bq[b] * n_nt + RTL_DRAIN
    return last


def _int8_select(plan, r, rows, g, tk):
    """HB-BSSA: ``(Bq, G)`` bool, True where a tile row's score at a gathered key comes from
    the INT8 path (its block is kept at INT8); None when no block runs at INT8. A key goes to
    the FX16 descriptor unless every row of the tile takes it from INT8, and to the INT8
    descriptor if any row does."""
    if plan.int8_blocks is None or not plan.int8_blocks.any():
        return None
    t = plan.mask.shape[0]
    sel = np.kron(plan.int8_blocks, np.ones((r, r), dtype=bool))[:t, :tk]
    return sel[rows][:, g]


# -- the lane as RMMU descriptors ------------------------------------------------------------------
def run_lane_rmmu(params, cfg, qi, ki, vi, pq=None, pk=None, keep=None):
    """The lane executed the way the RTL sequences it: every GEMM is an RMMU descriptor in the
    mapping of docs/lane.md section 2 (gathered keys streamed against a stationary Q tile;
    probability rows streamed against stationary gathered V rows), computed by
    :meth:`attnforge.golden.rmmu.RMMUModel.gemm` with the descriptor's own requantization.
    Returns ``(LaneResult, trace)`` with ``trace`` = ``[(phase, tile, Descriptor, A, B)]`` in
    issue order (``RMMUModel.a_beats(desc, A)`` / ``w_beats(desc, B)`` are the beats the feeder
    must produce); the result equals :func:`run_lane` bit for bit (tested), which checks the mapping
    (transposes, gathers, precisions, shifts) the feeder RTL must implement."""
    from .rmmu import Descriptor, RMMUModel
    qi, ki, vi = (np.asarray(x, dtype=np.int64) for x in (qi, ki, vi))
    plan = run_lane(params, cfg, qi, ki, vi, pq, pk, keep, plan_only=True)
    keys = plan.keys
    t, tk = qi.shape[0], len(keys)
    kk, vk = ki[keys], vi[keys]
    dense = cfg.mode == "dense"
    e_rows, c_rows = (0, params.rows) if dense else (params.est_rows, params.comp_rows)
    big = max(params.max_t, params.d) * 2
    rmmu = RMMUModel(rows=params.rows, cols=params.cols, groups=3 if params.int8_rows else 2,
                     tile_m=params.tile_m,
                     max_m=big, max_k=big, max_n=big)
    fx, trace = Precision.FX16, []

    def gemm(phase, tile, a, b, prec, row0, nrows, shift, out):
        d = Descriptor(row0, nrows, prec, a.shape[0], a.shape[1], b.shape[1], True, out, shift)
        trace.append((phase, tile, d, a, b))
        return rmmu.gemm(d, a, b)

    kmask = plan.mask[:, keys]
    if not dense:
        p = Precision.parse(f"int{cfg.est_bits}")
        qt = gemm("project", None, qi, pq, fx, e_rows, c_rows, cfg.q_shift, p)
        kt = gemm("project", None, kk, pk, fx, e_rows, c_rows, cfg.k_shift, p)
        est = np.zeros((t, tk), dtype=np.int64)
        sb = Precision.parse(f"int{params.score_bits}")
        for b0 in range(0, t, params.tile):
            rows = slice(b0, min(t, b0 + params.tile))
            est[rows] = gemm("estimate", b0, qt[rows], kt.T, p, 0, e_rows, cfg.est_shift, sb)
        assert np.array_equal(est, plan.est)          # the detector sees the RMMU's estimate
    r = GRANULARITIES[cfg.granularity][0]
    fmt = params.softmax_format()
    out = np.zeros((t, params.d), dtype=np.int64)
    probs = np.zeros((t, tk), dtype=np.int64)
    pos = {int(x): i for i, x in enumerate(keys)}
    for b0, gath in zip(range(0, t, params.tile), plan.gather):
        rows = slice(b0, min(t, b0 + params.tile))
        if not len(gath):
            continue
        g = np.array([pos[int(x)] for x in gath])     # gathered keys, kept-key coordinates
        sel = _int8_select(plan, r, rows, g, tk)      # (Bq, G): score from the INT8 path
        fx_keys = ~sel.all(axis=0) if sel is not None else np.ones(len(g), dtype=bool)
        st = np.zeros((len(g), rows.stop - rows.start), dtype=np.int64)
        if fx_keys.any():
            st[fx_keys] = gemm("scores", b0, kk[g[fx_keys]], qi[rows].T, fx, e_rows, c_rows,
                               params.frac_bits, fx)
        if sel is not None and sel.any():
            i8_keys = sel.any(axis=0)
            q8 = requantize(qi[rows], cfg.q8_shift, 8)
            k8 = requantize(kk[g[i8_keys]], cfg.k8_shift, 8)
            s8 = np.zeros_like(st)
            i8_rows, i8_row0 = _int8_group(params, c_rows, e_rows, fx_keys.any())
            s8[i8_keys] = gemm("scores", b0, k8, q8.T, Precision.INT8, i8_row0, i8_rows,
                               params.frac_bits - cfg.q8_shift - cfg.k8_shift, fx)
            st = np.where(sel.T, s8, st)
        s = st.T                                      # score buffer: (Bq, G), row per query
        pt = np.zeros_like(s)
        for i in range(s.shape[0]):
            kept = kmask[b0 + i, g]
            if kept.any():
                pt[i, kept] = softmax_fx(s[i, kept], fmt)
        probs[np.ix_(range(rows.start, rows.stop), g)] = pt
        out[rows] = gemm("av", b0, pt, vk[g], fx, e_rows, c_rows, params.prob_frac, fx)
    full = np.zeros((t, t), dtype=np.int64)
    full[:, keys] = probs
    res = LaneResult(out, full, plan.mask, plan.est, plan.int8_blocks, full.sum(axis=0), keys,
                     plan.gather)
    return res, trace
