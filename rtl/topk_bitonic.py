"""Comparison design for the top-k engine: the same job done by a full bitonic sorting network.

Same ports, request handling (:class:`~.topk_parts.RowIntake`) and emission scan
(:class:`~.topk_parts.WinnerEmitter`) as :class:`attnforge.rtl.topk.TopK`
and the same output beats (:mod:`attnforge.golden.topk`); only the selection differs. The
``max_n`` scores are held in registers (the network needs them all at once); after the load a
combinational bitonic network of ``max_n/2 * log2(max_n) * (log2(max_n)+1) / 2``
compare-exchange units sorts them in descending order (positions past ``n`` are padded with the
most negative value, which cannot change the first ``n`` sorted values), ``kth`` is sorted
position ``k - 1``, and ``max_n`` further comparators count the scores above it (for the tie
quota). Selection takes 2 cycles whatever the data; the cost is area, growing as
``N log^2 N``. ``max_n`` must be a power of two.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data

from ..golden.numbers import value_range
from .topk_parts import PER_BEAT_CHOICES, TopKShell, popcount
from .unit import Choice, Formal, Param, Range, Ref, SimPoint, Unit

__all__ = ["BitonicTopK", "bitonic_network"]


def bitonic_network(m, values, width):
    """Values sorted in descending order by a bitonic network (a list of signals).

    Every compare-exchange output is a named wire, so the netlist stays a DAG of
    ``N/2 * log N * (log N + 1) / 2`` units instead of an expression tree."""
    v = list(values)
    n = len(v)
    size = 2
    while size <= n:
        stride = size // 2
        while stride:
            for i in range(n):
                j = i ^ stride
                if j > i:
                    desc = (i & size) == 0          # descending blocks make a descending sort
                    a, b = v[i], v[j]
                    swap = (a < b) if desc else (a > b)
                    hi = Signal(signed(width), name=f"ce{size}_{stride}_{i}_a")
                    lo = Signal(signed(width), name=f"ce{size}_{stride}_{i}_b")
                    m.d.comb += [hi.eq(Mux(swap, b, a)), lo.eq(Mux(swap, a, b))]
                    v[i], v[j] = hi, lo
            stride //= 2
        size *= 2
    return v


class BitonicTopK(TopKShell):
    """Baseline top-k by sorting: registers + a bitonic sorting network + the shared
    :class:`~.topk_parts.RowIntake` and :class:`~.topk_parts.WinnerEmitter`.

    Parameters as :class:`attnforge.rtl.topk.TopK` without ``digit_bits`` (default ``max_n``
    16: the network is slow to synthesize); ``max_n`` must also be a power of two.
    Latency: ``ceil(n/P) + 2`` to load and select, ``last_winner_row + 3`` to emit
    (:class:`attnforge.golden.topk_bitonic.BitonicModel`).
    """

    def __init__(self, *, max_n=16, score_bits=16, per_beat=4):
        super().__init__(max_n=max_n, score_bits=score_bits, per_beat=per_beat)

    @property
    def latency(self):
        """Cycles of the shortest request (``n = k = 1``): load and sort ``1 + 2``, emission
        ``1 + 2`` (:meth:`attnforge.golden.topk_bitonic.BitonicModel.cycles`)."""
        return 6

    def elaborate(self, platform):
        m = Module()
        P, W, N = self._per_beat, self._score_bits, self._max_n
        D = N // P
        lo, _ = value_range(W)
        intake, em = self.intake_and_emitter(m)

        regs = [Signal(data.ArrayLayout(signed(W), P), name=f"row{i}") for i in range(D)]
        rowdata = Signal(data.ArrayLayout(signed(W), P))
        m.d.comb += em.rdata.eq(rowdata)
        with m.If(em.en):                           # a synchronous "read port" on the registers
            sel = regs[0]
            for i in range(1, D):
                sel = Mux(em.addr == i, regs[i], sel)
            m.d.sync += rowdata.eq(sel)
        with m.If(intake.beat_valid):
            for i in range(D):
                with m.If(intake.beat_row == i):
                    m.d.sync += regs[i].eq(intake.beat_data)

        n, k = intake.n, intake.k
        flat = []
        for i in range(D):
            for j in range(P):
                x = Signal(signed(W), name=f"pad{i * P + j}")
                m.d.comb += x.eq(Mux(i * P + j < n, regs[i][j], Const(lo, signed(W))))
                flat.append(x)
        ordered = bitonic_network(m, flat, W)
        kth = Signal(signed(W))
        kth_sel = Signal(signed(W))
        with m.Switch(k):
            for i in range(N):
                with m.Case(i + 1):
                    m.d.comb += kth_sel.eq(ordered[i])
            with m.Default():
                m.d.comb += kth_sel.eq(ordered[0])
        above = popcount([ordered[i] > kth for i in range(N)])

        # Control: a plain state register (if/elif, so the Verilog has no incomplete case).
        IDLE, LOAD, ERROR, SORT, COUNT, EMIT = range(6)
        state = Signal(range(6))
        m.d.comb += intake.free.eq(state == IDLE)
        with m.If(state == IDLE):
            with m.If(intake.start):
                m.d.sync += state.eq(LOAD)
        with m.Elif(state == LOAD):
            with m.If(intake.done):
                m.d.sync += state.eq(Mux(intake.error, ERROR, SORT))
        with m.Elif(state == ERROR):
            m.d.comb += em.start_error.eq(1)
            with m.If(em.start_error_done):
                m.d.sync += state.eq(IDLE)
        with m.Elif(state == SORT):
            m.d.sync += [kth.eq(kth_sel), state.eq(COUNT)]
        with m.Elif(state == COUNT):
            m.d.comb += [em.start.eq(1), em.kth.eq(kth), em.quota.eq(k - above)]
            m.d.sync += state.eq(EMIT)
        with m.Elif(state == EMIT):
            with m.If(~em.busy):
                m.d.sync += state.eq(IDLE)
        return m


UNIT = Unit(
    "topk_bitonic", BitonicTopK, "baseline: top-k by a full bitonic sorting network",
    (Param("per_beat", Choice(PER_BEAT_CHOICES), "P: scores per beat"),
     Param("max_n", Range(Ref("2 * per_beat", lambda p: 2 * p["per_beat"]), 1 << 16,
                          multiple_of="per_beat", pow2=True), "largest n of a request"),
     Param("score_bits", Range(2, 32), "signed score width")),
    sim=(SimPoint({"max_n": 16, "score_bits": 6, "per_beat": 4}),),
    testbench="attnforge.testbench.topk", baseline_of="topk",
    formal=Formal(cover_depth=12))
