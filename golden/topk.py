"""Golden model of the top-k engine (DESIGN.md section 4.4, SpAtten's top-k engine).

Contract (what every output bit is)
-----------------------------------
A **request** ``(n, k)`` announces ``n`` signed ``width``-bit scores ``x[0..n-1]``, delivered
``lanes`` (P) per beat: beat ``b`` carries ``x[b*P .. b*P+P-1]``; lanes past ``n`` in the last
beat are ignored. The engine always consumes exactly ``ceil(n / P)`` beats (0 for ``n = 0``).

* A request is **bad** when ``n == 0``, ``n > max_n``, ``k == 0`` or ``k > n``
  (:func:`bad_request`). Its scores are consumed and dropped, and the answer is one beat with
  ``error = 1``, ``count = 0``, ``last = 1``, ``kth = 0`` and all index lanes 0.
* Otherwise the **winners** are the ``k`` largest scores, ties broken towards the lower index:
  sort by ``(-x[i], i)`` and take the first ``k``. ``kth`` is the value of the k-th of them
  (the k-th largest score). Exactly ``k`` indices leave: every index with ``x[i] > kth`` plus
  the lowest-indexed ``k - #{x > kth}`` indices with ``x[i] == kth``.
* The winners leave in **ascending index order**, grouped by memory row: one beat per row
  ``i // P`` that holds at least one winner, the row's winners packed into the low index lanes
  (``count`` of them, ascending), unused lanes 0. Every beat repeats ``kth`` with
  ``error = 0``; ``last`` marks the beat carrying the k-th winner.

Algorithm and cycle model
-------------------------
:func:`select` is the quick-select the RTL runs, step for step, so :meth:`TopKModel.cycles`
predicts its cycle count exactly (no input gaps, no output stalls). Candidates are kept as a
list in index order (a *stable* partition, like the RTL's compacting buffers):

1. Pass 1 runs while the scores load. Pivot: the median of lanes 0, P/2 and P-1 of beat 0 when
   ``n >= P``, else lane 0.
2. A pass splits the candidates into G (``> pivot``), E (``== pivot``, only counted) and L
   (``< pivot``). With target rank ``r`` (initially ``k``): ``r <= |G|`` -> recurse into G;
   ``r <= |G| + |E|`` -> the k-th value is the pivot; else recurse into L with
   ``r -= |G| + |E|``. The pivot is a candidate, so E is never empty and every pass strictly
   shrinks the candidate set: at most ``n`` passes (worst case, see :func:`cycle_bound`).
3. Later pivots: a 16-bit Galois LFSR (taps ``0xB400``, reseeded to ``0xACE1`` by every
   request) steps once per pass; the pivot is the candidate at position ``(lfsr * c) >> 16``
   of the ``c`` candidates.
4. Emission scans the score memory row by row up to the row of the last winner.
"""

import numpy as np

from .numbers import value_range

__all__ = ["LFSR_SEED", "LFSR_TAPS", "lfsr_step", "bad_request", "topk", "select", "beats",
           "TopKModel", "cycle_bound"]

LFSR_SEED = 0xACE1
LFSR_TAPS = 0xB400
LFSR_BITS = 16


def lfsr_step(state):
    """One step of the 16-bit Galois LFSR the pivot picker uses."""
    lsb = state & 1
    state >>= 1
    return state ^ LFSR_TAPS if lsb else state


def bad_request(n, k, max_n):
    """True when the request must be answered with the error beat."""
    return n == 0 or n > max_n or k == 0 or k > n


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


def _pivot1(x, lanes):
    if len(x) >= lanes:
        return int(np.median([x[0], x[lanes // 2], x[lanes - 1]]))
    return int(x[0])


def select(scores, k, lanes):
    """Run the engine's quick-select. Returns ``(kth, quota, passes)``.

    ``passes`` is a list of ``(candidates, pivot)`` per pass; ``quota`` is how many scores equal
    to ``kth`` win (``k - #{x > kth}``).
    """
    c = np.asarray(scores, dtype=np.int64)
    r, state = k, LFSR_SEED
    pivot = _pivot1(c, lanes)
    passes = []
    while True:
        passes.append((len(c), pivot))
        g = c[c > pivot]
        e = int(np.count_nonzero(c == pivot))
        if r <= len(g):
            c = g
        elif r <= len(g) + e:
            return pivot, r - len(g), passes
        else:
            r -= len(g) + e
            c = c[c < pivot]
        state = lfsr_step(state)
        pivot = int(c[(state * len(c)) >> LFSR_BITS])


def beats(indices, lanes):
    """Group ascending winner indices into output beats: ``[[idx, ...], ...]`` by row."""
    indices = np.asarray(indices, dtype=np.int64)
    rows = indices // lanes
    cut = np.flatnonzero(np.diff(rows)) + 1
    return [list(map(int, g)) for g in np.split(indices, cut)] if len(indices) else []


#: Cycle-model constants (see :meth:`TopKModel.cycles`).
LOAD_OVERHEAD = 2       # request accept -> first beat, last beat -> its partition
PASS_OVERHEAD = 2       # decide + pivot read per later pass
EMIT_OVERHEAD = 2       # read latency, output register


class TopKModel:
    """Reference for :class:`attnforge.rtl.topk.TopK` (and its bitonic baseline).

    Parameters mirror the generator: ``max_n``, ``width`` (signed score bits), ``lanes`` (P).
    """

    def __init__(self, *, max_n=256, width=16, lanes=4):
        self.max_n, self.width, self.lanes = max_n, width, lanes

    def check_scores(self, scores):
        lo, hi = value_range(self.width)
        x = np.asarray(scores, dtype=np.int64)
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"scores must lie in [{lo}, {hi}]")
        return x

    def run(self, n, k, scores):
        """Output beats for one request: list of dicts ``{kth, error, count, last, idx}``."""
        P = self.lanes
        if bad_request(n, k, self.max_n):
            return [{"kth": 0, "error": 1, "count": 0, "last": 1, "idx": [0] * P}]
        x = self.check_scores(scores)[:n]
        kth, win = topk(x, k)
        groups = beats(win, P)
        out = []
        for i, g in enumerate(groups):
            out.append({"kth": kth, "error": 0, "count": len(g), "last": int(i == len(groups) - 1),
                        "idx": g + [0] * (P - len(g))})
        return out

    def cycles(self, n, k, scores):
        """Cycles from the request handshake to the handshake of its last output beat, with
        every score beat offered at once and the output never stalled."""
        P = self.lanes
        rows = -(-n // P)
        if bad_request(n, k, self.max_n):
            # drain ceil(n/P) beats, then the error beat
            return rows + 2
        x = self.check_scores(scores)[:n]
        kth, quota, passes = select(x, k, P)
        total = rows + LOAD_OVERHEAD
        for c, _ in passes[1:]:
            total += -(-c // P) + PASS_OVERHEAD
        _, win = topk(x, k)
        total += int(win[-1]) // P + 1 + EMIT_OVERHEAD
        return total


def cycle_bound(n, lanes):
    """Worst-case cycles of a good request of ``n`` scores: every pass removes only the pivot
    (``n, n-1, ..., 2`` candidates in later passes) and the emission scans every row."""
    rows = -(-n // lanes)
    later = sum(-(-c // lanes) + PASS_OVERHEAD for c in range(1, n))
    return rows + LOAD_OVERHEAD + later + rows + EMIT_OVERHEAD
