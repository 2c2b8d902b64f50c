"""Golden model of the top-k engines (DESIGN.md section 4.4, SpAtten's top-k engine).

Contract (what every output bit is)
-----------------------------------
A **request** ``(n, k)`` is followed on the score stream ``s`` by exactly one **score row**: a
row stream (:mod:`attnforge.rtl.streams`) of signed ``score_bits``-bit scores, ``per_beat`` (P)
per beat, ending with the beat that has ``last = 1``. A well-formed row is *dense*: every beat
but the last carries ``count = P`` and the counts add up to ``n`` (element ``b*P + j`` in lane
``j`` of beat ``b``); ``n = 0`` is the empty row (one beat, ``count = 0, last = 1``).
:func:`score_beats` builds the well-formed row of a score list.

* A request is **bad** when ``n == 0``, ``n > max_n``, ``k == 0`` or ``k > n``
  (:func:`bad_request`), and a row is **malformed** when its counts do not add up to ``n`` or a
  beat before ``last`` is not full (:func:`row_error`). Either way the whole row is consumed
  (up to its ``last`` beat, whatever its length) and dropped, and the answer is one beat with
  ``error = 1``, ``count = 0``, ``last = 1`` and every other field 0. Never a hang.
* Otherwise the **winners** are the ``k`` largest scores, ties broken towards the lower index:
  sort by ``(-x[i], i)`` and take the first ``k``. ``kth`` is the value of the k-th of them
  (the k-th largest score). Exactly ``k`` winners leave: every index with ``x[i] > kth`` plus
  the lowest-indexed ``k - #{x > kth}`` indices with ``x[i] == kth``.
* The winners leave in **ascending index order**, grouped by score-row position: one beat per
  group of P indices ``i // P`` that holds at least one winner, the group's winners packed into
  the low lanes (``count`` of them, ascending): ``index`` = the winners' indices, ``data`` =
  their scores; unused lanes 0. Every beat repeats ``kth`` with ``error = 0``; ``last`` marks
  the beat carrying the k-th winner.

Engines and their cycle models
------------------------------
Every engine answers the same beats; they differ in how they find ``kth`` and the tie quota.

``topk`` -- **radix select with a sampled bracket** (:func:`radix_select`,
:meth:`TopKModel.cycles`, matched exactly by the RTL). Scores are compared as unsigned *keys*
(``x + 2**(W-1)``, order preserving), split into digits of ``digit_bits`` (R) from the top.

1. While the scores load, a histogram of digit 1 over all ``n`` scores is built, and the scores
   are written to the score memory. The first ``S = max(1, rows >> SAMPLE_SHIFT)`` rows are the
   *sample*: they, and the row after them (in flight while the bracket is computed), are all
   copied into the candidate buffer. When the sample is in, its histogram (the running one at
   that moment) gives a *bracket* of digit-1 buckets: the buckets holding the sample ranks of
   :func:`bracket_ranks` (about ``k / 2**SAMPLE_SHIFT``, widened by a margin; rank 1 = largest;
   a rank past the sample is bucket 0). Every later score whose digit 1 lies in the bracket is copied into the candidate buffer
   too (compacted, index order).
2. After the load the full histogram names the bucket ``b1`` of rank ``k`` and the count above
   it. Pass 1 keeps the candidates whose digit 1 is ``b1`` (compacted in place) and builds the
   histogram of digit 2 among them. It reads the candidate buffer when ``b1`` lies in the
   bracket or every score was copied (``rows <= S + 1``) (a *hit*: ``ceil(c/P)`` rows), else
   the whole score memory (a *miss*: ``rows``).
3. Pass ``j`` (2 .. digits-1) reads the ``c_j`` survivors of pass ``j-1``, keeps those whose
   digit ``j`` is the chosen one and histograms digit ``j+1``. After the last digit the k-th
   value is known exactly, with its tie quota.
4. Emission scans the score memory row by row up to the row of the last winner.

Nothing is random: the cycle count is a function of the request, and a miss costs one extra
scan, so the worst case is bounded (:func:`cycle_bound`) whatever the data.

``topk_quickselect`` -- the previous engine, kept as the baseline
(:mod:`attnforge.golden.topk_quickselect`): quick-select over two partition buffers, pass 1
during the load with a median-of-3 pivot, later pivots at LFSR positions.

``topk_bitonic`` -- a full bitonic sorting network (:mod:`attnforge.golden.topk_bitonic`).

Every engine's cycle count is :meth:`TopKModel.cycles`: the load, the engine's selection
(:meth:`TopKModel.select_cycles`, overridden by each baseline's model) and the emission scan.
"""

import numpy as np

from .numbers import value_range

__all__ = ["LFSR_SEED", "LFSR_TAPS", "LFSR_BITS", "SAMPLE_SHIFT", "MARGIN", "MARGIN_SHIFT", "lfsr_step",
           "bad_request", "row_error", "score_beats", "topk", "keys", "digit_slices",
           "radix_select", "beats", "LOAD_OVERHEAD", "EMIT_OVERHEAD", "TopKModel", "cycle_bound"]

LFSR_SEED = 0xACE1
LFSR_TAPS = 0xB400
LFSR_BITS = 16

#: The sample is the first ``rows >> SAMPLE_SHIFT`` rows (at least one).
SAMPLE_SHIFT = 3
#: Half-width of the bracket, in sample ranks.
MARGIN = 5
#: The bracket widens by ``min(mid, m - mid) >> MARGIN_SHIFT`` sample ranks.
MARGIN_SHIFT = 3


def lfsr_step(state):
    """One step of the 16-bit Galois LFSR the quick-select pivot picker uses."""
    lsb = state & 1
    state >>= 1
    return state ^ LFSR_TAPS if lsb else state


def bad_request(n, k, max_n):
    """True when the request must be answered with the error beat."""
    return n == 0 or n > max_n or k == 0 or k > n


def score_beats(scores, per_beat):
    """The well-formed score row of ``scores``: a list of ``{data, count, last}`` beats (unused
    lanes 0; the empty row is one beat ``count = 0, last = 1``)."""
    x = [int(v) for v in scores]
    out = []
    for b in range(0, max(len(x), 1), per_beat):
        chunk = x[b:b + per_beat]
        out.append({"data": chunk + [0] * (per_beat - len(chunk)), "count": len(chunk),
                    "last": 0})
    out[-1]["last"] = 1
    return out


def row_error(n, row, per_beat):
    """True when a score row (list of beats with ``count``, ``last``, optional ``error``; only
    the beats up to the first ``last`` count) is malformed for ``n``: counts not adding up to
    ``n``, a beat before the last one not full, or a beat flagged ``error``."""
    total = 0
    for b in row:
        total += b["count"]
        if b.get("error", 0):
            return True
        if b["last"]:
            return total != n
        if b["count"] != per_beat:
            return True
    raise ValueError("a score row must end with a last beat")


def topk(scores, k):
    """``(kth, indices)``: the k-th largest value and the k winners' indices, ascending.

    Ties go to the lower index. ``1 <= k <= len(scores)`` is required (``ValueError`` else).
    """
    x = np.asarray(scores, dtype=np.int64)
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in [1, {len(x)}], not {k}")
    order = np.lexsort((np.arange(len(x)), -x))        # by -x, then by index
    win = np.sort(order[:k])
    return int(x[order[k - 1]]), win


def keys(scores, score_bits):
    """Order-preserving unsigned keys of signed scores: ``x + 2**(score_bits-1)``."""
    return np.asarray(scores, dtype=np.int64) + (1 << (score_bits - 1))


def digit_slices(score_bits, digit_bits):
    """``[(shift, bits), ...]`` of the digits of a key, most significant first (the last digit
    may be narrower)."""
    out, top = [], score_bits
    while top > 0:
        bits = min(digit_bits, top)
        out.append((top - bits, bits))
        top -= bits
    return out


def _bucket_of_rank(hist, rank):
    """``(bucket, above)``: the bucket holding rank ``rank`` (1 = largest) of a histogram and
    the count of elements in higher buckets; a rank past the total gives ``(0, ...)``."""
    above = 0
    for b in range(len(hist) - 1, -1, -1):
        if rank <= above + hist[b]:
            return b, above
        above += hist[b]
    return 0, above - hist[0]


def sample_rows(rows):
    """Rows of the sample: ``max(1, rows >> SAMPLE_SHIFT)``."""
    return max(1, rows >> SAMPLE_SHIFT)


def bracket_ranks(k, m):
    """Sample ranks whose buckets bound the bracket, ``(high, low)``, for target rank ``k`` and
    ``m`` sampled scores: ``mid -+ (MARGIN + min(mid, m - mid) >> MARGIN_SHIFT)`` around
    ``mid = (k >> SAMPLE_SHIFT) + 1`` (the spread of a sample quantile grows towards the
    median)."""
    mid = (k >> SAMPLE_SHIFT) + 1
    margin = MARGIN + (min(mid, max(m - mid, 0)) >> MARGIN_SHIFT)
    return max(1, mid - margin), mid + margin


def radix_select(scores, k, per_beat, score_bits, digit_bits):
    """Run the ``topk`` engine's selection. Returns ``(kth, quota, passes)``: ``passes`` is a
    list of ``(source, rows)`` per pass after the load, ``source`` one of ``"buffer"`` (a
    bracket hit or a later pass) and ``"memory"`` (a miss)."""
    x = np.asarray(scores, dtype=np.int64)
    n, P = len(x), per_beat
    key = keys(x, score_bits)
    digits = digit_slices(score_bits, digit_bits)
    shift1, bits1 = digits[0]
    d1 = key >> shift1
    rows = -(-n // P)
    S = sample_rows(rows)
    hs = np.bincount(d1[:S * P], minlength=1 << bits1)
    hi_rank, lo_rank = bracket_ranks(k, min(S * P, n))
    bhi, _ = _bucket_of_rank(hs, hi_rank)
    blo, _ = _bucket_of_rank(hs, lo_rank)
    admitted = np.arange(n) < (S + 1) * P         # the sample, and the row in flight
    admitted |= (d1 >= blo) & (d1 <= bhi)
    hist = np.bincount(d1, minlength=1 << bits1)
    b, above = _bucket_of_rank(hist, k)
    r = k - above
    prefix = b
    passes = []
    if len(digits) > 1:
        hit = blo <= b <= bhi or rows <= S + 1
        cand = np.flatnonzero(admitted) if hit else np.arange(n)
        passes.append(("buffer" if hit else "memory",
                       -(-len(cand) // P) if hit else rows))
        for j in range(1, len(digits)):
            shift, bits = digits[j]
            pshift = digits[j - 1][0]
            cand = cand[(key[cand] >> pshift) == prefix]        # survivors of this pass
            d = (key[cand] >> shift) & ((1 << bits) - 1)
            hist = np.bincount(d, minlength=1 << bits)
            b, above = _bucket_of_rank(hist, r)
            r -= above
            prefix = (prefix << bits) | b
            if j + 1 < len(digits):
                passes.append(("buffer", -(-len(cand) // P)))
    kth = int(prefix) - (1 << (score_bits - 1))
    return kth, r, passes


def beats(indices, per_beat):
    """Group ascending winner indices into output beats: ``[[idx, ...], ...]`` by row."""
    indices = np.asarray(indices, dtype=np.int64)
    rows = indices // per_beat
    cut = np.flatnonzero(np.diff(rows)) + 1
    return [list(map(int, g)) for g in np.split(indices, cut)] if len(indices) else []


#: Cycle-model constants (see :meth:`TopKModel.cycles`).
LOAD_OVERHEAD = 2       # request accept -> first beat, last beat -> its partition
PASS_OVERHEAD = 1       # topk: the decide cycle (it also issues the pass's first read)
EMIT_OVERHEAD = 2       # read latency, output register


class TopKModel:
    """Reference for every top-k engine's beats and for :class:`attnforge.rtl.topk.TopK`'s
    cycle count. Parameters mirror the generator: ``max_n``, ``score_bits``, ``per_beat`` (P),
    ``digit_bits`` (R)."""

    def __init__(self, *, max_n=256, score_bits=16, per_beat=4, digit_bits=8):
        self.max_n, self.score_bits, self.per_beat = max_n, score_bits, per_beat
        self.digit_bits = digit_bits

    def check_scores(self, scores):
        lo, hi = value_range(self.score_bits)
        x = np.asarray(scores, dtype=np.int64)
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"scores must lie in [{lo}, {hi}]")
        return x

    def error_beat(self):
        P = self.per_beat
        return {"kth": 0, "error": 1, "count": 0, "last": 1, "index": [0] * P, "data": [0] * P}

    def run(self, n, k, scores, row=None):
        """Output beats for one request: list of dicts ``{kth, error, count, last, index,
        data}``. ``row`` (optional) is the score row as sent (:func:`score_beats` of
        ``scores`` by default); a malformed one gets the error beat."""
        P = self.per_beat
        row = score_beats(scores, P) if row is None else row
        if bad_request(n, k, self.max_n) or row_error(n, row, P):
            return [self.error_beat()]
        x = self.check_scores(scores)[:n]
        kth, win = topk(x, k)
        groups = beats(win, P)
        out = []
        for i, g in enumerate(groups):
            pad = [0] * (P - len(g))
            out.append({"kth": kth, "error": 0, "count": len(g),
                        "last": int(i == len(groups) - 1), "index": g + pad,
                        "data": [int(x[j]) for j in g] + pad})
        return out

    def _emit_cycles(self, x, k):
        _, win = topk(x, k)
        return int(win[-1]) // self.per_beat + 1 + EMIT_OVERHEAD

    def cycles(self, n, k, scores):
        """Cycles from the request handshake to the handshake of its last output beat, with
        every score beat offered at once (a well-formed row) and the output never stalled:
        the load, the engine's selection (:meth:`select_cycles`), the emission scan."""
        P = self.per_beat
        rows = -(-max(n, 1) // P)
        if bad_request(n, k, self.max_n):
            return rows + 2                     # drain the row, then the error beat
        x = self.check_scores(scores)[:n]
        return rows + LOAD_OVERHEAD + self.select_cycles(x, k) + self._emit_cycles(x, k)

    def select_cycles(self, x, k):
        """Cycles between the load and the emission scan: the radix passes after the load."""
        _, _, passes = radix_select(x, k, self.per_beat, self.score_bits, self.digit_bits)
        return sum(r + PASS_OVERHEAD for _, r in passes)


def cycle_bound(n, per_beat, score_bits=16, digit_bits=8):
    """Worst-case cycles of a good ``topk`` request of ``n`` scores: a bracket miss (pass 1
    scans the memory), every later pass keeps all ``n`` candidates, the emission scans every
    row."""
    rows = -(-n // per_beat)
    passes = len(digit_slices(score_bits, digit_bits)) - 1
    return rows + LOAD_OVERHEAD + passes * (rows + PASS_OVERHEAD) + rows + EMIT_OVERHEAD
