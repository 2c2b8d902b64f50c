"""Sparse softmax: the detector's kept granules feed the softmax as sparse rows.

The worked example of composing existing units (docs/architecture.md, section 6) and the first
step of the attention lane's datapath (detect, then softmax over only what was kept). No logic
of its own: four Components joined port to port with ``wiring.connect``::

    cmd, i ──► Detector ──idx══► RowAdapter ══► RowPacker ══► Softmax ──► o
                  └──────mask──────────────────────────────────────────► mask

* :class:`~attnforge.rtl.detector.Detector` turns each command's row of scores into its kept
  granules: an ``idx`` row stream of (column index, granule score) with partial beats, and a
  ``mask`` beat;
* :class:`~attnforge.rtl.streams.RowAdapter` drops the scheduler ``lane`` field the softmax
  does not take;
* :class:`~attnforge.rtl.streams.RowPacker` repacks the partial beats into dense beats of the
  softmax's width (the softmax's row buffer holds beats, so a row of many partial beats could
  exceed it);
* :class:`~attnforge.rtl.softmax.Softmax` normalizes over exactly the kept scores, carrying
  each column index to the output.

The golden model is the composition of the two units' golden models
(:mod:`attnforge.golden.sparse_softmax`). Scores are INTp integers read as fixed point with
``in_frac`` fraction bits (the estimated scores' scale).

Timing: the detector's latency (first kept beat 3 cycles after a row's last score beat in
threshold mode, ``score_bits + 4`` in top-k), the packer's (one cycle), then the softmax's
latency from its last input beat (:attr:`Softmax.latency`); throughput is the slowest of the
three for the row mix (the detector takes ``per_beat`` scores per cycle; the softmax takes one
beat of ``out_per_beat`` kept scores per cycle).
"""

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import connect, flipped

from .detector import Detector, index_bits
from .softmax import Softmax
from .streams import RowAdapter, RowLayout, RowPacker
from .unit import Choice, Param, Range, Ref, SimPoint, Synth, Unit

__all__ = ["SparseSoftmax"]


class SparseSoftmax(wiring.Component):
    """Detector + softmax over the kept granules (see the module docstring).

    Parameters
    ----------
    per_beat, max_len, score_bits, sched_lanes : int
        The :class:`~attnforge.rtl.detector.Detector`'s (scores per input beat, longest row,
        score width, scheduler lanes).
    out_per_beat : int
        Kept elements per softmax beat (the softmax's ``per_beat``).
    in_frac, out_frac, table_bits : int
        The softmax's input fraction bits (scores are ``score_bits`` wide), probability
        fraction bits and exp table bits.

    Members
    -------
    cmd, i : the detector's command and score streams.
    mask : the detector's mask stream.
    o : the softmax's row stream: probabilities (``data``) and column indices (``index``).
    """

    def __init__(self, *, per_beat=8, max_len=64, score_bits=8, sched_lanes=4, out_per_beat=4,
                 in_frac=4, out_frac=8, table_bits=7):
        self.record.validate(per_beat=per_beat, max_len=max_len, score_bits=score_bits,
                             sched_lanes=sched_lanes, out_per_beat=out_per_beat,
                             in_frac=in_frac, out_frac=out_frac, table_bits=table_bits)
        self._det = dict(per_beat=per_beat, max_len=max_len, score_bits=score_bits,
                         sched_lanes=sched_lanes)
        self._sm = dict(per_beat=out_per_beat, max_len=-(-max_len // out_per_beat) * out_per_beat,
                        in_bits=score_bits,
                        in_frac=in_frac, out_frac=out_frac, table_bits=table_bits,
                        index_bits=index_bits(max_len))
        det, sm = Detector(**self._det), Softmax(**self._sm)
        super().__init__({"cmd": det.signature.members["cmd"],
                          "i": det.signature.members["i"],
                          "mask": det.signature.members["mask"],
                          "o": sm.signature.members["o"]})

    per_beat = property(lambda self: self._det["per_beat"], doc="Scores per input beat.")
    max_len = property(lambda self: self._det["max_len"], doc="Longest row, in scores.")
    score_bits = property(lambda self: self._det["score_bits"], doc="Score width.")
    sched_lanes = property(lambda self: self._det["sched_lanes"], doc="Scheduler lanes.")
    out_per_beat = property(lambda self: self._sm["per_beat"], doc="Kept elements per beat.")

    @property
    def detector_params(self):
        """Parameters of the embedded detector."""
        return dict(self._det)

    @property
    def softmax_params(self):
        """Parameters of the embedded softmax."""
        return dict(self._sm)

    def elaborate(self, platform):
        m = Module()
        m.submodules.detector = det = Detector(**self._det)
        m.submodules.softmax = sm = Softmax(**self._sm)
        kept = RowLayout(self.per_beat, signed(self.score_bits), index_bits(self.max_len))
        m.submodules.adapter = adapter = RowAdapter(det.idx.payload.shape(), kept)
        m.submodules.packer = packer = RowPacker(
            self.per_beat, self.out_per_beat, signed(self.score_bits), index_bits(self.max_len))
        connect(m, flipped(self.cmd), det.cmd)
        connect(m, flipped(self.i), det.i)
        connect(m, det.mask, flipped(self.mask))
        connect(m, det.idx, adapter.i)
        connect(m, adapter.o, packer.i)
        connect(m, packer.o, sm.i)
        connect(m, sm.o, flipped(self.o))
        return m


UNIT = Unit(
    "sparse_softmax", SparseSoftmax,
    "example composition: detector kept granules -> softmax over the kept scores",
    (Param("per_beat", Choice((1, 2, 4, 8, 16, 32)), "detector scores per input beat"),
     Param("max_len", Range(Ref("max(per_beat, 2)", lambda p: max(p["per_beat"], 2)), 1024,
                            multiple_of="per_beat"), "longest row, in scores"),
     Param("score_bits", Choice((2, 4, 8)), "score width (INTp estimate)"),
     Param("sched_lanes", Range(1, 16), "detector scheduler lanes"),
     Param("out_per_beat", Range(1, 16), "kept elements per softmax beat"),
     Param("in_frac", Range(0, Ref("score_bits")), "fraction bits of a score"),
     Param("out_frac", Range(2, 12), "probability fraction bits"),
     Param("table_bits", Range(2, 10), "softmax exp table bits")),
    sim=(SimPoint({"per_beat": 4, "max_len": 32, "score_bits": 8, "sched_lanes": 2,
                   "out_per_beat": 2, "in_frac": 4}),),
    synth=Synth(boards=("ulx3s-85f",)))
