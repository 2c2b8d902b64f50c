"""Back half of the attention lane (docs/lane.md section 3, SCORES -> SOFTMAX -> A·V for one
query tile at a time) on one RMMU row group.

Per ``tile`` command (``g`` gathered keys) the sequencer issues two RMMU descriptors on the
group: the scores ``S^T = K_G Q_b^T`` (``m = g``, ``k = d``, ``n = bq``, FX16, requantized by
``frac_bits``) and ``O_b = P_b V_G`` (``m = bq``, ``k = g``, ``n = d``, FX16, requantized by
``prob_frac``). The scores' output beats go to :class:`TileSoftmax` (score buffer -> softmax),
whose probability rows fill the :class:`ProbBuffer`, which is the ``a`` source of the A·V
descriptor; the A·V output beats are the tile's output rows ``o`` (one beat per output
N-tile and query: lanes = ``O[q, n0 + j]``, ``RMMUModel.o_beats`` order). ``ka`` (the gathered
K rows) and ``w`` (the query tile's ``Q^T`` tiles, then the gathered V rows) are streamed in
by the feeder (the testbench for now) in ``golden.rmmu`` order.

HB-BSSA (``n8`` > 0 INT8 blocks in the tile command): the scores are two descriptors, FX16 over
the FX16 blocks' keys (skipped when there are none), then INT8 (``precision`` INT8, the
operands' ``a``/``w`` beats from the feeder, requantized by ``shift8 = frac_bits - q8_shift -
k8_shift`` to FX16); :class:`ScoreTile` puts every result beat at its gathered position, so the
softmax sees each row in ascending key order, every score from its block's path.

With an INT8 row group (``int8_rows > 0``, docs/lane.md TODO 5/7) the INT8 scores descriptor
of a tile that has FX16 blocks too runs on its own group ``g8`` (rows ``int8_row0 ..``,
operands on ``ka8``/``w8``, results straight into :class:`ScoreTile`'s second input ``s8``),
issued with the tile's FX16 one, so the two run concurrently; the compute group ``g`` runs
the FX16 scores descriptor, then the A·V one. A tile whose kept blocks are all INT8 runs its
INT8 descriptor on ``g`` as without the group (the compute group would idle, and it is the
wider group nearer row 0: docs/lane.md TODO 7). The softmax starts once both have delivered.

Routing follows the RMMU's in-order streams: ``a`` comes from ``ka`` for the scores
descriptor's ``N-tiles x passes x g`` beats, then from the probability buffer; results go to
the softmax until the scores descriptor's ``last`` beat, then to ``o``.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.numbers import Precision
from .lane_front import group_port, rmmu_out_bits
from .lane_scores import ProbBuffer, TileSoftmax, score_cmd_layout
from .rmmu import act_layout, result_layout, weight_layout
from .streams import Fork

__all__ = ["LaneBack"]


class LaneBack(wiring.Component):
    """Parameters: ``rows``, ``cols`` (the compute group: ``rows`` PE rows from ``row0``),
    ``d``, ``bq`` (queries per tile, a multiple of ``cols``, at most ``tile_m``), ``max_t``
    (keys; the softmax format's ``max_len``), ``frac_bits``, ``prob_frac``, ``row0`` (first row
    of the group), ``rmmu`` (parameters of the RMMU whose group ``g`` drives; default an array
    of just these rows), ``tap`` (add the ``p`` output: every probability with its gathered
    position, for the importance accumulator), ``int8_rows`` / ``int8_row0`` (HB-BSSA's own
    INT8 row group, driven through ``g8``; 0: the INT8 descriptors run on ``g``). The RMMU is
    outside (see :class:`attnforge.rtl.lane_front.LaneFront`)."""

    def __init__(self, *, rows=3, cols=2, d=8, bq=8, max_t=32, frac_bits=8, prob_frac=12,
                 row0=0, rmmu=None, tap=False, int8_rows=0, int8_row0=0):
        self.rows, self.cols, self.d, self.bq, self.max_t = rows, cols, d, bq, max_t
        self.frac_bits, self.prob_frac, self.row0 = frac_bits, prob_frac, row0
        self.tap = tap
        self.int8_rows, self.int8_row0 = int8_rows, int8_row0
        big = max(max_t, d, bq)
        self.rmmu_params = rmmu or dict(rows=rows, cols=cols, tile_m=max(bq, 1), max_m=big,
                                        max_k=big, max_n=big)
        split = int8_rows > 0
        self.out_bits = rmmu_out_bits(self.rmmu_params["max_k"])
        words = self.rmmu_params["rows"]
        self.smax = TileSoftmax(cols=cols, in_bits=self.out_bits, bq=bq, max_g=max_t,
                                per_beat=1, max_t=max_t, frac_bits=frac_bits,
                                prob_frac=prob_frac, block=bq, int8_port=split)
        self.n_tiles_av = -(-d // cols)
        self.n_tiles_s = -(-bq // cols)
        self.passes_s = -(-d // rows)
        self.n_tiles_8 = -(-bq // (2 * cols))          # INT8: 2 queries per word
        self.passes_8 = -(-d // (2 * rows))
        members = {
            "tile": In(stream.Signature(data.StructLayout({
                **score_cmd_layout(max_t, bq).members, "shift8": 4}))),
            "g": group_port(self.rmmu_params),
            "ka": In(stream.Signature(act_layout(words))),
            "w": In(stream.Signature(weight_layout(cols))),
            "o": Out(stream.Signature(result_layout(cols, self.out_bits))),
        }
        if split:  # the INT8 group's port and operands
            members.update(g8=group_port(self.rmmu_params),
                           ka8=In(stream.Signature(act_layout(words))),
                           w8=In(stream.Signature(weight_layout(cols))))
        if tap:   # every probability as the softmax writes it (gathered position as index):
            members["p"] = Out(self.smax.o.signature)   # for the importance accumulator
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        rows, bq = self.rows, self.bq
        m.submodules.smax = smax = self.smax
        ib = max(1, (self.max_t - 1).bit_length())
        m.submodules.prob = prob = ProbBuffer(rows=self.rmmu_params["rows"], nrows=rows, bq=bq,
                                              max_g=self.max_t,
                                              per_beat=1, prob_bits=self.prob_frac + 1,
                                              index_bits=ib, max_tiles=self.n_tiles_av)
        g_port, split = self.g, self.int8_rows > 0
        wiring.connect(m, wiring.flipped(self.w), wiring.flipped(g_port.w))
        if split:
            wiring.connect(m, wiring.flipped(self.w8), wiring.flipped(self.g8.w))
            wiring.connect(m, wiring.flipped(self.ka8), wiring.flipped(self.g8.a))
            wiring.connect(m, wiring.flipped(self.g8.o), smax.s8)
        if self.tap:                 # (a Fork: the tap must be always ready or it stalls A.V)
            m.submodules.tap = tap = Fork(smax.o.signature.members["payload"].shape, 2)
            wiring.connect(m, smax.o, tap.i)
            wiring.connect(m, tap.o[0], prob.i)
            wiring.connect(m, tap.o[1], wiring.flipped(self.p))
        else:
            wiring.connect(m, smax.o, prob.i)

        # sequencer: tile -> [FX16 scores desc, INT8 scores desc, A.V desc] + softmax / prob
        # buffer commands (a scores descriptor over no keys is skipped)
        tp = self.tile.payload
        lb = bq.bit_length() - 1
        g, g8 = Signal(range(self.max_t + 1)), Signal(range(self.max_t + 1))
        scmd = Signal(score_cmd_layout(self.max_t, bq))
        shift8 = Signal(4)
        step = Signal(range(5))          # 0 idle, 1 FX16 scores, 4 INT8 scores, 2 A.V, 3 aux
        aux_s, aux_p = Signal(), Signal()
        m.d.comb += self.tile.ready.eq(step == 0)
        tile_g8 = tp.n8 << lb
        with m.If(self.tile.valid & self.tile.ready):
            m.d.sync += [g.eq(tp.g), g8.eq(tile_g8), shift8.eq(tp.shift8),
                         scmd.g.eq(tp.g), scmd.n8.eq(tp.n8), scmd.fxs.eq(tp.fxs),
                         scmd.i8s.eq(tp.i8s), scmd.fine.eq(tp.fine), scmd.mg.eq(tp.mg),
                         step.eq(Mux(tile_g8 == tp.g, 4, 1)), aux_s.eq(1), aux_p.eq(1)]
        # the descriptor is a register (scores on tile accept, A.V after the scores' issue):
        # the group's cmd port is never driven by constants (Verilator: ALWNEVER/UNDRIVEN)
        c = Signal.like(g_port.cmd.payload)
        m.d.comb += [g_port.cmd.payload.eq(c),
                     g_port.cmd.valid.eq((step == 1) | (step == 2) | (step == 4))]
        first8 = tile_g8 == tp.g                       # every kept block INT8
        with m.If(self.tile.valid & self.tile.ready):
            # the first scores descriptor: FX16, or INT8 if the tile has no FX16 block (with
            # an INT8 group too: the compute group would idle, and it is the wider one)
            m.d.sync += [c.row0.eq(self.row0), c.nrows.eq(rows), c.requant.eq(1),
                         c.out_fmt.eq(Precision.FX16),
                         c.precision.eq(Mux(first8, Precision.INT8, Precision.FX16)),
                         c.m.eq(Mux(first8, tile_g8, tp.g - tile_g8)), c.k.eq(self.d),
                         c.n.eq(bq), c.shift.eq(Mux(first8, tp.shift8, self.frac_bits))]
        if split:              # a mixed tile's INT8 scores descriptor on its own group, at once
            c8, pend8 = Signal.like(self.g8.cmd.payload), Signal()
            m.d.comb += [self.g8.cmd.payload.eq(c8), self.g8.cmd.valid.eq(pend8)]
            with m.If(self.tile.valid & self.tile.ready):
                m.d.sync += [c8.row0.eq(self.int8_row0), c8.nrows.eq(self.int8_rows),
                             c8.precision.eq(Precision.INT8), c8.requant.eq(1),
                             c8.out_fmt.eq(Precision.FX16), c8.m.eq(tile_g8),
                             c8.k.eq(self.d), c8.n.eq(bq), c8.shift.eq(tp.shift8),
                             pend8.eq((tile_g8 != 0) & ~first8)]
            with m.If(self.g8.cmd.valid & self.g8.cmd.ready):
                m.d.sync += pend8.eq(0)
        with m.If(g_port.cmd.valid & g_port.cmd.ready):
            # then INT8 on g too (never with an INT8 group: a mixed tile's runs on g8)
            with m.If((step == 1) & (g8 != 0) & (not split)):
                m.d.sync += [step.eq(4), c.precision.eq(Precision.INT8), c.m.eq(g8),
                             c.shift.eq(shift8)]
            with m.Elif((step == 1) | (step == 4)):
                m.d.sync += [step.eq(2), c.precision.eq(Precision.FX16), c.m.eq(bq), c.k.eq(g),
                             c.n.eq(self.d), c.shift.eq(self.prob_frac)]
            with m.Else():
                m.d.sync += step.eq(3)
        m.d.comb += [smax.cmd.valid.eq(aux_s), smax.cmd.payload.eq(scmd),
                     prob.cmd.valid.eq(aux_p), prob.cmd.payload.g.eq(g),
                     prob.cmd.payload.n_tiles.eq(self.n_tiles_av),
                     prob.cmd.payload.clear.eq(scmd.fine)]
        with m.If(smax.cmd.valid & smax.cmd.ready):
            m.d.sync += aux_s.eq(0)
        with m.If(prob.cmd.valid & prob.cmd.ready):
            m.d.sync += aux_p.eq(0)

        # a: the scores descriptor's beats from ka, then the probability buffer
        a_left = Signal(range(self.n_tiles_s * self.passes_s * self.max_t + 1))
        a_ext = Signal()
        with m.If(self.tile.valid & self.tile.ready):
            a_8 = self.n_tiles_8 * self.passes_8 * tile_g8
            if split:          # (the INT8 group takes a mixed tile's INT8 a beats on ka8)
                a_8 = Mux(first8, a_8, 0)
            m.d.sync += [a_left.eq(self.n_tiles_s * self.passes_s * (tp.g - tile_g8) + a_8),
                         a_ext.eq(1)]
        with m.If(a_ext):
            m.d.comb += [g_port.a.valid.eq(self.ka.valid), self.ka.ready.eq(g_port.a.ready),
                         g_port.a.payload.eq(self.ka.payload)]
            with m.If(self.ka.valid & g_port.a.ready):
                m.d.sync += a_left.eq(a_left - 1)
                with m.If(a_left == 1):
                    m.d.sync += a_ext.eq(0)
        with m.Else():
            m.d.comb += [g_port.a.valid.eq(prob.a.valid), prob.a.ready.eq(g_port.a.ready),
                         g_port.a.payload.eq(prob.a.payload)]

        # o: the scores results to the softmax until their last beat, then the A.V results out
        to_smax = Signal(range(3))       # scores descriptors whose results are still due
        with m.If(self.tile.valid & self.tile.ready):
            m.d.sync += to_smax.eq((tile_g8 != 0) + (tile_g8 != tp.g) if not split else 1)
        with m.If(to_smax != 0):
            m.d.comb += [smax.s.valid.eq(g_port.o.valid), g_port.o.ready.eq(smax.s.ready),
                         smax.s.payload.eq(g_port.o.payload)]
            with m.If(g_port.o.valid & smax.s.ready & g_port.o.payload.last):
                m.d.sync += to_smax.eq(to_smax - 1)
        with m.Else():
            m.d.comb += [self.o.valid.eq(g_port.o.valid), g_port.o.ready.eq(self.o.ready),
                         self.o.payload.eq(g_port.o.payload)]
            with m.If(g_port.o.valid & self.o.ready & g_port.o.payload.last & (step == 3)):
                m.d.sync += step.eq(0)
        return m
