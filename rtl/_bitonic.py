"""Comparison design for the top-k engine: the same job done by a full bitonic sorting network.

Same ports, parameters, request handling and emission scan as :class:`attnforge.rtl.topk.TopK`
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
from amaranth.utils import exact_log2

from ..golden.numbers import value_range
from .topk import LANE_CHOICES, _Emitter, _Shell, popcount
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


class BitonicTopK(_Shell):
    """Baseline top-k by sorting: registers + a bitonic sorting network + the shared emitter.

    Parameters as :class:`attnforge.rtl.topk.TopK` (default ``max_n`` 16: the network is slow
    to synthesize); ``max_n`` must also be a power of two.
    Latency: ``ceil(n/P) + 1`` to load, 2 to select, ``last_winner_row + 3`` to emit.
    """

    def __init__(self, *, max_n=16, width=16, lanes=4):
        super().__init__(max_n=max_n, width=width, lanes=lanes)

    def elaborate(self, platform):
        m = Module()
        P, W, N = self._lanes, self._width, self._max_n
        LP = exact_log2(P)
        D = N // P
        CB = N.bit_length()
        QB = CB + 1
        lo, _ = value_range(W)

        regs = [Signal(data.ArrayLayout(signed(W), P), name=f"row{i}") for i in range(D)]
        n = Signal(QB)
        k = Signal(QB)
        rows_left = Signal(QB)
        beat = Signal(range(D + 1))
        kth, quota, emitted, erow, d_valid, d_row = _Emitter.state(W, CB, D)
        rowdata = Signal(data.ArrayLayout(signed(W), P))

        em = _Emitter(m, self.o, P, [rowdata[j] for j in range(P)], d_valid, d_row, n, k,
                      kth, quota, emitted)
        with m.If(em.adv):                          # a synchronous "read port" on the registers
            sel = regs[0]
            for i in range(1, D):
                sel = Mux(erow == i, regs[i], sel)
            m.d.sync += rowdata.eq(sel)

        flat = []
        for i in range(D):
            for j in range(P):
                x = Signal(signed(W), name=f"pad{i * P + j}")
                m.d.comb += x.eq(Mux(i * P + j < n, regs[i][j], Const(lo, signed(W))))
                flat.append(x)
        ordered = bitonic_network(m, flat, W)
        kth_sel = Signal(signed(W))
        with m.Switch(k):
            for i in range(N):
                with m.Case(i + 1):
                    m.d.comb += kth_sel.eq(ordered[i])
            with m.Default():
                m.d.comb += kth_sel.eq(ordered[0])
        above = popcount([ordered[i] > kth for i in range(N)])

        # Control: a plain state register (if/elif, so the Verilog has no incomplete case).
        IDLE, DRAIN, ERROR, LOAD, SORT, COUNT, EMIT = range(7)
        state = Signal(range(7))
        if True:
            with m.If(state == IDLE):
                req = self.req.payload
                self._accept(m, state, rows_left, [n.eq(req.n), k.eq(req.k), beat.eq(0)],
                             ok=LOAD, drain=DRAIN, error=ERROR)
            with m.Elif(state == DRAIN):
                self._drain(m, state, rows_left, done=ERROR)
            with m.Elif(state == ERROR):
                self._error_beat(m, state, em.o_free, done=IDLE)
            with m.Elif(state == LOAD):
                m.d.comb += self.s.ready.eq(1)
                with m.If(self.s.valid):
                    for i in range(D):
                        with m.If(beat == i):
                            m.d.sync += regs[i].eq(self.s.payload.data)
                    m.d.sync += [beat.eq(beat + 1), rows_left.eq(rows_left - 1)]
                    with m.If(rows_left == 1):
                        m.d.sync += state.eq(SORT)
            with m.Elif(state == SORT):
                m.d.sync += kth.eq(kth_sel)
                m.d.sync += state.eq(COUNT)
            with m.Elif(state == COUNT):
                m.d.sync += [quota.eq(k - above), emitted.eq(0), erow.eq(0), d_valid.eq(0)]
                m.d.sync += state.eq(EMIT)
            with m.Elif(state == EMIT):
                with m.If(em.step(m, erow, (n + (P - 1)) >> LP)):
                    m.d.sync += state.eq(IDLE)
        return m


UNIT = Unit(
    "topk_bitonic", BitonicTopK, "baseline: top-k by a full bitonic sorting network",
    (Param("lanes", Choice(LANE_CHOICES), "P: scores per beat"),
     Param("max_n", Range(Ref("2 * lanes", lambda p: 2 * p["lanes"]), 1 << 16,
                          multiple_of="lanes", pow2=True), "largest n of a request"),
     Param("width", Range(2, 32), "signed score width")),
    sim=(SimPoint({"max_n": 16, "width": 6, "lanes": 4}),),
    testbench="attnforge.testbench.topk", baseline_of="topk",
    formal=Formal(cover_depth=12))
