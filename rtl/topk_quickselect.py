"""Baseline top-k engine (the engine before issue 12): quick-select over two partition buffers,
P comparators, run-time ``n`` and ``k``; same ports and beats as :class:`attnforge.rtl.topk.TopK`.

The cycle count is :meth:`attnforge.golden.topk_quickselect.QuickSelectModel.cycles`, matched
exactly.

Design
------
Three banked memories of ``max_n`` scores: ``mem`` (the scores as they arrive, read again by the
emission scan) and the candidate buffers ``buf[0]``, ``buf[1]``. A pass streams the candidates
(one row of P per cycle) past P comparators against the pivot. The ``>`` elements are compacted
(:class:`~.topk_parts.Compactor`) *in place* into the buffer being read, the ``<`` elements
into the other one, the ``==`` ones only counted; the side holding the target rank becomes the
candidate set (a 1-bit buffer swap). Pass 1 runs while the scores load (pivot: median of lanes
0, P/2, P-1 of beat 0); later pivots are sampled at an LFSR-chosen position of the candidates.
When the pivot's ``==`` group holds the target rank, the pivot is the k-th value and the
emission scan (:class:`~.topk_parts.WinnerEmitter`) runs.

Latency: ``ceil(n/P) + 2`` to load (and run pass 1), ``ceil(c/P) + 2`` per later pass,
``last_winner_row + 3`` to emit; worst case :func:`attnforge.golden.topk_quickselect.quickselect_bound`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.utils import exact_log2

from ..golden.topk import LFSR_BITS, LFSR_SEED
from .topk import PARAMS, banked
from .topk_parts import Compactor, RowScan, TopKShell, count_bits, lfsr_next, median3, popcount
from .unit import Formal, SimPoint, Synth, Unit

__all__ = ["QuickSelectTopK"]


class QuickSelectTopK(TopKShell):
    """Top-k by quick-select (baseline of ``topk``). Parameters as :class:`~.topk.TopK` without
    ``digit_bits``."""

    def __init__(self, *, max_n=256, score_bits=16, per_beat=4):
        super().__init__(max_n=max_n, score_bits=score_bits, per_beat=per_beat)

    @property
    def latency(self):
        """Cycles of the shortest request (``n = k = 1``: load ``1 + 2``, the pivot is the
        answer, emission ``1 + 2``)."""
        return 6

    def elaborate(self, platform):
        m = Module()
        P, W, N = self._per_beat, self._score_bits, self._max_n
        LP = exact_log2(P)
        D = N // P
        CB = count_bits(N)
        QB = CB + 1
        intake, em = self.intake_and_emitter(m)
        mem_w, mem_r = banked(m, "mem", P, D, W)
        buf_w, buf_r = [None, None], [None, None]
        buf_w[0], buf_r[0] = banked(m, "bufa", P, D, W)
        buf_w[1], buf_r[1] = banked(m, "bufb", P, D, W)
        m.submodules.greater = cg = Compactor(max_n=N, score_bits=W, per_beat=P)
        m.submodules.less = cl = Compactor(max_n=N, score_bits=W, per_beat=P)
        m.submodules.scan = scan = RowScan(max_n=N, per_beat=P)

        r = Signal(QB)                            # target rank among the candidates
        c = Signal(QB)                            # candidates
        cur = Signal()                            # buffer holding the candidates
        pivot = Signal(signed(W))
        lfsr = Signal(LFSR_BITS, init=LFSR_SEED)
        ecount = Signal(QB)
        piv_lane = Signal(range(P))
        s1_valid = Signal()
        s1_data = Signal(data.ArrayLayout(signed(W), P))
        s1_mask = Signal(P)
        pv, prow = scan.valid, scan.row           # a candidate row arrives this cycle
        rd_addr = Signal(range(max(D, 2)))

        IDLE, LOAD, LOADED, ERROR, DECIDE, PIVOT, PASS, EMIT = range(8)
        state = Signal(range(8))
        loading = (state == LOAD) | (state == LOADED)

        # --- partition datapath -------------------------------------------------------------
        part_valid = Signal()
        part_x = Signal(data.ArrayLayout(signed(W), P))
        part_m = Signal(P)
        m.d.comb += [scan.rows.eq((c + (P - 1)) >> LP), rd_addr.eq(scan.addr)]
        with m.If(loading):
            m.d.comb += [part_valid.eq(s1_valid), part_x.eq(s1_data), part_m.eq(s1_mask)]
        with m.Else():
            m.d.comb += part_valid.eq(pv)
            for j in range(P):
                m.d.comb += [part_x[j].eq(Mux(cur, buf_r[1][j].data, buf_r[0][j].data)),
                             part_m[j].eq(Cat(Const(j, LP), prow) < c)]
        gt = [part_m[j] & (part_x[j] > pivot) for j in range(P)]
        eq = [part_valid & part_m[j] & (part_x[j] == pivot) for j in range(P)]
        lt = [part_m[j] & (part_x[j] < pivot) for j in range(P)]
        for comp, mask in ((cg, gt), (cl, lt)):
            m.d.comb += [comp.valid.eq(part_valid), comp.x.eq(part_x), comp.keep.eq(Cat(*mask))]
        for b in range(2):                        # G goes back into the buffer being read
            for j in range(P):
                we = Mux(cur == b, cg.we[j], cl.we[j])
                m.d.comb += [buf_w[b][j].en.eq(we),
                             buf_w[b][j].addr.eq(Mux(cur == b, cg.addr[j], cl.addr[j])),
                             buf_w[b][j].data.eq(Mux(cur == b, cg.wdata[j], cl.wdata[j]))]
        m.d.sync += ecount.eq(ecount + popcount(eq))
        for b in range(2):
            for j in range(P):
                m.d.comb += [buf_r[b][j].addr.eq(rd_addr), buf_r[b][j].en.eq(1)]
        for j in range(P):
            m.d.comb += [mem_w[j].addr.eq(intake.beat_row), mem_w[j].data.eq(intake.beat_data[j]),
                         mem_w[j].en.eq(intake.beat_valid),
                         mem_r[j].addr.eq(em.addr), mem_r[j].en.eq(em.en),
                         em.rdata[j].eq(mem_r[j].data)]

        # --- control ------------------------------------------------------------------------
        m.d.comb += intake.free.eq(state == IDLE)
        beat0 = intake.beat_data
        pivot1 = median3(beat0[0], beat0[P // 2], beat0[P - 1]) if P >= 2 else beat0[0]
        g, e = cg.count, ecount
        new_c = Signal(QB)
        new_cur = Signal()
        with m.If(state == IDLE):
            with m.If(intake.start):
                m.d.comb += [cg.clear.eq(1), cl.clear.eq(1)]
                m.d.sync += [cur.eq(0), lfsr.eq(LFSR_SEED), ecount.eq(0), s1_valid.eq(0),
                             state.eq(LOAD)]
        with m.Elif(state == LOAD):
            m.d.sync += [s1_valid.eq(intake.beat_valid), s1_data.eq(intake.beat_data),
                         s1_mask.eq(intake.beat_mask)]
            with m.If(intake.beat_valid & (intake.beat_row == 0)):
                m.d.sync += pivot.eq(Mux(intake.n >= P, pivot1, beat0[0]))
            with m.If(intake.done):
                m.d.sync += [r.eq(intake.k), state.eq(Mux(intake.error, ERROR, LOADED))]
        with m.Elif(state == LOADED):
            m.d.sync += [s1_valid.eq(0), state.eq(DECIDE)]
        with m.Elif(state == ERROR):
            m.d.comb += em.start_error.eq(1)
            with m.If(em.start_error_done):
                m.d.sync += state.eq(IDLE)
        with m.Elif(state == DECIDE):
            with m.If(r <= g):
                m.d.comb += [new_c.eq(g), new_cur.eq(cur)]
            with m.Else():
                m.d.comb += [new_c.eq(cl.count), new_cur.eq(~cur)]
                m.d.sync += r.eq(r - g - e)
            step = lfsr_next(lfsr)
            sample = (step * new_c) >> LFSR_BITS
            m.d.comb += [rd_addr.eq(sample >> LP), cg.clear.eq(1), cl.clear.eq(1)]
            m.d.sync += [lfsr.eq(step), c.eq(new_c), cur.eq(new_cur), piv_lane.eq(sample),
                         ecount.eq(0)]
            with m.If((r > g) & (r <= g + e)):
                m.d.comb += [em.start.eq(1), em.kth.eq(pivot), em.quota.eq(r - g)]
                m.d.sync += [cur.eq(cur), r.eq(r), state.eq(EMIT)]
            with m.Else():
                m.d.sync += state.eq(PIVOT)
        with m.Elif(state == PIVOT):
            lanes = [Mux(cur, buf_r[1][j].data, buf_r[0][j].data) for j in range(P)]
            sel = lanes[0]
            for j in range(1, P):
                sel = Mux(piv_lane == j, lanes[j], sel)
            m.d.sync += [pivot.eq(sel), state.eq(PASS)]
            m.d.comb += scan.start.eq(1)
        with m.Elif(state == PASS):
            with m.If(scan.done):
                m.d.sync += state.eq(DECIDE)
        with m.Elif(state == EMIT):
            with m.If(~em.busy):
                m.d.sync += state.eq(IDLE)
        return m


UNIT = Unit(
    "topk_quickselect", QuickSelectTopK,
    "baseline: top-k by quick-select over partition buffers (the engine before issue 12)",
    PARAMS,
    sim=(SimPoint({"max_n": 64, "score_bits": 16, "per_beat": 16}),),
    testbench="attnforge.testbench.topk", baseline_of="topk",
    synth=Synth(boards=("ulx3s-85f", "orangecrab-r0.2")),
    formal=Formal(cover_depth=12))
