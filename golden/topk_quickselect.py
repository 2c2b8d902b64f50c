"""Golden model of the ``topk_quickselect`` baseline (:mod:`attnforge.rtl.topk_quickselect`): the
top-k engine before the radix select, kept for comparison.

Its output beats are the top-k contract of :mod:`attnforge.golden.topk` (the same
:class:`~attnforge.golden.topk.TopKModel` beats); what is its own is the selection --
quick-select over partition buffers, P comparators per pass, the first pivot the median of lanes
0, P/2 and P-1 of the first beat, later pivots sampled at an LFSR-chosen position -- and therefore
the cycle count, which the RTL matches exactly.
"""

import numpy as np

from .topk import (EMIT_OVERHEAD, LFSR_BITS, LFSR_SEED, LOAD_OVERHEAD, TopKModel, lfsr_step)

__all__ = ["QS_PASS_OVERHEAD", "quickselect", "QuickSelectModel", "quickselect_bound"]

#: Cycles per pass after the first (which runs during the load): decide + pivot read.
QS_PASS_OVERHEAD = 2


def quickselect(scores, k, per_beat):
    """Run the ``topk_quickselect`` baseline's selection. Returns ``(kth, quota, passes)``.

    ``passes`` is a list of ``(candidates, pivot)`` per pass; ``quota`` is how many scores equal
    to ``kth`` win (``k - #{x > kth}``).
    """
    c = np.asarray(scores, dtype=np.int64)
    r, state = k, LFSR_SEED
    if len(c) >= per_beat:
        pivot = int(np.median([c[0], c[per_beat // 2], c[per_beat - 1]]))
    else:
        pivot = int(c[0])
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


class QuickSelectModel(TopKModel):
    """Beats (as :class:`TopKModel`) and cycle count of the quick-select baseline."""

    def select_cycles(self, x, k):
        """Every pass after the first streams its candidates: ``ceil(c / P) + 2`` cycles."""
        _, _, passes = quickselect(x, k, self.per_beat)
        return sum(-(-c // self.per_beat) + QS_PASS_OVERHEAD for c, _ in passes[1:])


def quickselect_bound(n, per_beat):
    """Worst-case cycles of the quick-select baseline: every pass removes only the pivot."""
    rows = -(-n // per_beat)
    later = sum(-(-c // per_beat) + QS_PASS_OVERHEAD for c in range(1, n))
    return rows + LOAD_OVERHEAD + later + rows + EMIT_OVERHEAD
