"""Golden model of the threshold detector and lane scheduler (DESIGN.md section 4.3; DOTA
Sec. 6.1/6.3, DSA Sec. 3.1 and 5.3-5.4, HB-BSSA block sparsity).

Contract (timing-free; the RTL produces exactly these output transactions, in order):

**Operations.** Every row (or row group) is described by one *command*:

* ``mode``: :class:`Mode` -- ``THRESHOLD`` keeps a granule whose score is ``>= threshold``;
  ``TOPK`` keeps the ``k`` granules with the largest scores, ties going to the lower index
  (the top-k engine's contract, DESIGN.md section 4.4).
* ``gran``: :class:`Gran` -- the granularity, a run-time field: ``ELEM`` (1 x 1), ``VEC4`` /
  ``VEC8`` (1 x V: V consecutive columns of one row), ``BLK8`` / ``BLK16`` / ``BLK32``
  (B x B: the command covers a group of B rows). A granule's score is the maximum of its
  elements; granule ``j`` covers columns ``[j*C, (j+1)*C)`` of the ``R`` rows of the command
  (``C`` = :attr:`Gran.cols`, ``R`` = :attr:`Gran.rows`). A row length that is not a multiple
  of ``C`` leaves a partial last granule: the maximum over the columns that exist.
* ``length``: the row length in scores, ``1 <= length <= max_len``. The row group has
  ``G = ceil(length / C)`` granules.
* ``threshold``: signed ``score_bits + 1`` bits (so that "keep nothing" -- ``2**(b-1)`` -- and
  "keep everything" are both expressible); per-row thresholds are one command per row, a
  per-head threshold is the same value repeated.
* ``k``: the top-k count, ``1 <= k <= G`` (ignored in threshold mode).
* ``restart``: clear the scheduler's lane loads before this row (start of a new head/op).

A command is **bad** when its ``gran`` code is not a :class:`Gran`, its ``length`` is outside
``[1, max_len]``, or (top-k) its ``k`` is outside ``[1, G]``. A bad command consumes no score
beats and yields an error result (``error = 1``, empty mask, ``count = 0``); it still takes a
lane (with zero work) and its ``restart`` still applies.

**Input.** A good command is followed by its ``R`` rows of scores, row by row, each row as
``ceil(length / P)`` beats of ``P`` signed ``score_bits`` lanes (lane ``i`` of beat ``w`` is
column ``w*P + i``). Lanes at columns ``>= length`` are ignored. INT2/INT4 scores are carried
sign-extended.

**Outputs, per command, in command order.**

* ``mask`` stream, one beat: ``mask`` (``max_len`` bits, bit ``j`` = granule ``j`` kept;
  bits ``>= G`` are 0), ``count`` (kept granules), ``lane`` (scheduler), ``error``.
* ``idx`` stream, a row stream (``rtl/streams.py``): the kept granules in ascending index
  order, CSR style, in one beat per group of ``P`` granules (``word`` ``w`` covers granules
  ``[w*P, (w+1)*P)``). A word's beat carries its kept granules in slots ``0..count-1``:
  ``index`` (granule index) and ``data`` (the granule's score); slots ``>= count`` are 0;
  plus ``lane`` and ``last`` (the row's final word) and ``error``. Words with no kept granule
  are skipped, except the final word, so every row ends with exactly one ``last`` beat
  (``count = 0`` for an empty row). An error row is one beat ``count = 0, last = 1,
  error = 1`` (with its lane, as on ``mask``).

**Scheduler.** Rows are assigned to ``L`` lanes by greedy least-loaded assignment in row
order (DOTA's token-parallel lanes): row ``r`` goes to the lane with the smallest load so far
(lowest lane index on ties), whose load then grows by the row's ``count``. All of a row's
index beats carry its lane, so each lane receives whole rows in order. ``restart`` zeroes the
loads first. (The hardware matches greedy exactly, which is within the issue's bound of "at
most one item above greedy".)

Top-k is defined by ranking (stable sort by descending score, ascending index). Equivalent
form used by the hardware (see :func:`kth_cut`): with ``t`` the k-th largest score and
``q = k - #{g > t}``, keep ``g > t``, and ``g == t`` for the first ``q`` such granules.
"""

import enum
from dataclasses import dataclass, replace

import numpy as np

from .numbers import value_range

__all__ = ["Mode", "Gran", "Command", "granule_scores", "threshold_mask", "topk_mask",
           "kth_cut", "schedule", "command_error", "DetectorModel"]


class Mode(enum.IntEnum):
    """Selection mode (1-bit ``mode`` field)."""
    THRESHOLD = 0
    TOPK = 1


class Gran(enum.IntEnum):
    """Granularity (3-bit ``gran`` field; codes 6 and 7 are bad requests)."""
    ELEM = 0
    VEC4 = 1
    VEC8 = 2
    BLK8 = 3
    BLK16 = 4
    BLK32 = 5

    @property
    def cols(self):
        """Columns per granule (C)."""
        return (1, 4, 8, 8, 16, 32)[self.value]

    @property
    def rows(self):
        """Rows per command (R): 1 for element and vector granularity, B for blocks."""
        return (1, 1, 1, 8, 16, 32)[self.value]


@dataclass(frozen=True)
class Command:
    mode: int = Mode.THRESHOLD
    gran: int = Gran.ELEM
    length: int = 1
    threshold: int = 0
    k: int = 1
    restart: bool = False


def granule_scores(scores, cols):
    """Granule scores of a row group: ``scores`` ``(R, length)`` -> ``(ceil(length/cols),)``,
    each the maximum over its ``R x cols`` window (a partial last window: over what exists)."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.int64))
    r, n = s.shape
    g = -(-n // cols)
    pad = np.full((r, g * cols), np.iinfo(np.int64).min, dtype=np.int64)
    pad[:, :n] = s
    return pad.reshape(r, g, cols).max(axis=(0, 2))


def threshold_mask(g, threshold):
    """Keep ``g >= threshold``."""
    return np.asarray(g, dtype=np.int64) >= threshold


def topk_mask(g, k):
    """Keep the ``k`` largest of ``g``; among equal scores the lower index wins."""
    g = np.asarray(g, dtype=np.int64)
    order = np.lexsort((np.arange(len(g)), -g))       # by -g, then by index
    mask = np.zeros(len(g), dtype=bool)
    mask[order[:k]] = True
    return mask


def kth_cut(g, k):
    """``(t, q)``: the k-th largest value and how many granules equal to it are kept."""
    g = np.asarray(g, dtype=np.int64)
    t = int(np.sort(g)[::-1][k - 1])
    return t, k - int((g > t).sum())


def schedule(counts, lanes, restart=None):
    """Greedy least-loaded lane assignment of rows in order.

    Returns ``(lane_of_row, loads)``: the lane of every row and every lane's load after the
    last restart. ``restart[r]`` clears the loads before row ``r``.
    """
    loads = np.zeros(lanes, dtype=np.int64)
    out = np.zeros(len(counts), dtype=np.int64)
    for r, c in enumerate(counts):
        if restart is not None and restart[r]:
            loads[:] = 0
        lane = int(np.argmin(loads))                   # first minimum: lowest index on ties
        out[r] = lane
        loads[lane] += int(c)
    return out, loads


def command_error(cmd, max_len):
    """Why ``cmd`` is a bad request for a detector with rows of up to ``max_len``, or None."""
    if int(cmd.gran) not in tuple(Gran):
        return f"gran code {int(cmd.gran)} is not a granularity"
    if not 1 <= cmd.length <= max_len:
        return f"length {cmd.length} outside [1, {max_len}]"
    if int(cmd.mode) == Mode.TOPK:
        g = -(-cmd.length // Gran(cmd.gran).cols)
        if not 1 <= cmd.k <= g:
            return f"k {cmd.k} outside [1, {g}]"
    return None


class DetectorModel:
    """Reference for :class:`attnforge.rtl.detector.Detector`.

    Parameters mirror the generator: ``per_beat`` (P, scores per beat), ``max_len`` (row
    length bound), ``score_bits`` (lane width), ``sched_lanes`` (L, scheduler lanes).
    """

    def __init__(self, *, per_beat=8, max_len=64, score_bits=8, sched_lanes=4):
        self.per_beat = per_beat
        self.max_len = max_len
        self.score_bits = score_bits
        self.sched_lanes = sched_lanes

    def check(self, cmd, scores):
        """Validate what the caller passes (not run-time requests: those are :func:`command_error`).
        Returns the scores as an ``(R, length)`` array (``None`` for a bad command)."""
        lo, hi = value_range(self.score_bits + 1)
        if not lo <= cmd.threshold <= hi:
            raise ValueError(f"threshold {cmd.threshold} does not fit the {self.score_bits + 1}"
                             f"-bit field")
        if command_error(cmd, self.max_len):
            return None
        s = np.atleast_2d(np.asarray(scores, dtype=np.int64))
        want = (Gran(cmd.gran).rows, cmd.length)
        if s.shape != want:
            raise ValueError(f"scores must have shape {want}, not {s.shape}")
        lo, hi = value_range(self.score_bits)
        if s.size and (s.min() < lo or s.max() > hi):
            raise ValueError(f"scores must lie in [{lo}, {hi}]")
        return s

    def select(self, cmd, scores):
        """Kept-granule mask of one good command (bool array of length G)."""
        g = granule_scores(scores, Gran(cmd.gran).cols)
        if int(cmd.mode) == Mode.TOPK:
            return topk_mask(g, cmd.k)
        return threshold_mask(g, cmd.threshold)

    def run(self, ops):
        """Results of ``ops`` = ``[(Command, scores), ...]`` in order (scores ignored for bad
        commands). Each result: ``{"mask", "count", "indices", "scores", "lane", "error"}``
        (``scores``: the kept granules' scores, in index order)."""
        results = []
        for cmd, scores in ops:
            s = self.check(cmd, scores)
            if s is None:
                results.append({"mask": 0, "count": 0, "indices": [], "scores": [],
                                "error": True})
                continue
            g = granule_scores(s, Gran(cmd.gran).cols)
            keep = self.select(cmd, s)
            idx = np.flatnonzero(keep)
            results.append({"mask": int(sum(1 << int(j) for j in idx)), "count": len(idx),
                            "indices": [int(j) for j in idx],
                            "scores": [int(g[j]) for j in idx], "error": False,
                            "granules": len(keep)})
        lanes, _ = schedule([r["count"] for r in results], self.sched_lanes,
                            [c.restart for c, _ in ops])
        for r, lane in zip(results, lanes):
            r["lane"] = int(lane)
        return results

    def idx_beats(self, result):
        """The ``idx`` row-stream beats of one result: ``{"index" (P ints), "data" (P ints),
        "count", "lane", "last", "error"}``."""
        p = self.per_beat
        words = max(1, -(-result.get("granules", 0) // p))
        idx = np.asarray(result["indices"], dtype=np.int64)
        val = np.asarray(result["scores"], dtype=np.int64)
        beats = []
        for w in range(words):
            sel = (idx >= w * p) & (idx < (w + 1) * p)
            last = w == words - 1
            if sel.any() or last:
                pad = [0] * (p - int(sel.sum()))
                beats.append({"index": [int(x) for x in idx[sel]] + pad,
                              "data": [int(x) for x in val[sel]] + pad,
                              "count": int(sel.sum()), "lane": result["lane"], "last": last,
                              "error": result["error"]})
        return beats

    def input_beats(self, cmd, scores, fill=None):
        """Score beats of one command (none for a bad one). Lanes past the row end get
        ``fill(n)`` values (random junk in the testbench, to prove they are ignored)."""
        s = self.check(cmd, scores)
        if s is None:
            return []
        p = self.per_beat
        beats = []
        for row in s:
            words = -(-len(row) // p)
            pad = np.zeros(words * p, dtype=np.int64)
            pad[:len(row)] = row
            if fill is not None and words * p > len(row):
                pad[len(row):] = fill(words * p - len(row))
            beats += [[int(x) for x in pad[w * p:(w + 1) * p]] for w in range(words)]
        return beats


def with_fields(cmd, **kw):
    """A copy of ``cmd`` with fields replaced (convenience for tests)."""
    return replace(cmd, **kw)
