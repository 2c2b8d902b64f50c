"""Golden model of the sparse softmax (:mod:`attnforge.rtl.sparse_softmax`): the composition of
the detector's and the softmax's golden models, nothing else.

Per command, in order: the detector model (:class:`attnforge.golden.detector.DetectorModel`)
gives the ``mask`` beat and the kept granules (ascending column index, granule score); the kept
granules, cut into dense beats of ``out_per_beat`` (:func:`attnforge.golden.softmax.split_beats`;
an empty selection is one empty beat), carry the detector's ``error``; the softmax model
(:func:`attnforge.golden.softmax.beats_out`) turns that row into the output beats. A bad
command therefore gives an error ``mask`` beat and one output beat ``count = 0, last = 1,
error = 1``; a row that keeps nothing gives one empty output beat.
"""

from .detector import DetectorModel
from .softmax import SoftmaxFormat, beats_out, split_beats

__all__ = ["SparseSoftmaxModel"]


class SparseSoftmaxModel:
    """Reference for :class:`attnforge.rtl.sparse_softmax.SparseSoftmax` (same parameters)."""

    def __init__(self, *, per_beat=8, max_len=64, score_bits=8, sched_lanes=4, out_per_beat=4,
                 in_frac=4, out_frac=8, table_bits=7):
        self.detector = DetectorModel(per_beat=per_beat, max_len=max_len,
                                      score_bits=score_bits, sched_lanes=sched_lanes)
        self.out_per_beat = out_per_beat
        self.fmt = SoftmaxFormat(in_bits=score_bits, in_frac=in_frac, out_frac=out_frac,
                                 table_bits=table_bits,
                                 max_len=-(-max_len // out_per_beat) * out_per_beat)

    def kept_rows(self, results):
        """The softmax's input rows (lists of dense beats) for detector ``results``."""
        rows = []
        for r in results:
            beats = split_beats(r["scores"], r["indices"], self.out_per_beat)
            for b in beats:
                b["error"] = int(r["error"])
            rows.append(beats)
        return rows

    def run(self, ops):
        """``(results, out_beats)`` for ``ops = [(Command, scores), ...]``: the detector's
        results (as :meth:`DetectorModel.run`) and every expected ``o`` beat in order."""
        results = self.detector.run(ops)
        out = [b for row in self.kept_rows(results)
               for b in beats_out(row, self.out_per_beat, self.fmt)]
        return results, out
