"""Golden model of the ``topk_bitonic`` baseline (:mod:`attnforge.rtl.topk_bitonic`): top-k by a
full bitonic sorting network.

Its output beats are the top-k contract of :mod:`attnforge.golden.topk`; its selection is the
network -- sort all ``max_n`` registered scores, take sorted position ``k - 1``, count the scores
above it -- so its cycle count has no data-dependent passes.
"""

from .topk import TopKModel

__all__ = ["BitonicModel"]


class BitonicModel(TopKModel):
    """Beats (as :class:`TopKModel`) and cycle count of the bitonic baseline: load, 2 cycles
    of sorting and counting (no passes), emission."""

    def select_cycles(self, x, k):
        return 0
