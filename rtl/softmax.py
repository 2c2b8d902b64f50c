"""Streaming, max-subtracted, fixed-point softmax (DESIGN.md section 4.6; SpAtten / DOTA
multi-function unit). Bit-exact twin of :mod:`attnforge.golden.softmax`, whose docstring is the
numeric contract.

Design
------
A row needs its maximum before any exponential can be formed, and the sum of all exponentials
before any probability can be formed, so the unit buffers the row. The buffer is one
``amaranth.lib.memory.Memory`` of ``2 * max_len / lanes`` words split into two banks (ping-pong):
the *load* side writes a row into one bank at ``lanes`` elements per cycle, tracking its maximum,
while the *read* side works on the other bank in three phases:

* ``SUM``: read the row back, form ``e_i`` (shared exp unit), accumulate ``S``;
* ``DIV``: ``R = floor(2**Q / S)`` with a radix-2 restoring divider (one quotient bit per cycle,
  ``recip_bits`` cycles); the dividend is a power of two, so only ``S`` is a register;
* ``OUT``: read the row again, form ``e_i`` again with the *same* exp unit, multiply by ``R``,
  round, emit.

Exponentials are base 2: ``d * log2(e)`` (one constant multiply) splits into an integer part,
a right shift, and a ``table_bits``-bit fraction indexing a ``2**table_bits`` entry ROM of
``2**(-f)``. Recomputing ``e_i`` in ``OUT`` costs no hardware (the exp unit is idle then) and saves
a second buffer of exponentials.

Each element carries its column ``index`` through the buffer, so the unit works on a sparse row
given as its kept positions only; the output echoes the indices.

Latency and throughput
----------------------
A row of ``L`` elements is ``B = ceil(L / lanes)`` beats. The load side accepts one beat per
cycle. The read side takes ``1 + (B + 1) + recip_bits + (B + 1)`` cycles per row without
output stalls; the first output beat leaves ``B + recip_bits + 4`` cycles after the row's last
input beat was accepted (load side idle before). Loading the next row overlaps the read side's
work on the current one, so the steady-state throughput is ``L / (2 * B + recip_bits + 3)``
elements per cycle: close to ``lanes / 2`` for long rows.
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.softmax import SoftmaxFormat
from .numbers import round_shift
from .unit import Formal, Param, Range, Ref, SimPoint, Unit

__all__ = ["Softmax", "ExpUnit", "in_layout", "out_layout"]


def in_layout(lanes, in_bits, index_bits):
    """Payload of the input stream ``i``: one beat of up to ``lanes`` elements of a row."""
    return data.StructLayout({
        "data":  data.ArrayLayout(signed(in_bits), lanes),      # scores, lane 0 first
        "index": data.ArrayLayout(unsigned(index_bits), lanes),  # their column indices
        "count": range(lanes + 1),   # valid lanes of a last beat (0 or > lanes: all)
        "last":  1,                  # this beat ends the row
    })


def out_layout(lanes, out_frac, index_bits):
    """Payload of the output stream ``o``: probabilities of one beat, mirroring the input."""
    return data.StructLayout({
        "prob":     data.ArrayLayout(unsigned(out_frac + 1), lanes),
        "index":    data.ArrayLayout(unsigned(index_bits), lanes),
        "count":    range(lanes + 1),   # valid lanes (lanes for every beat but the last)
        "last":     1,
        "overflow": 1,                  # the row was longer than max_len (tail dropped)
    })


class ExpUnit:
    """Combinational ``e = 2**exp_frac * exp(-(d / 2**in_frac))`` of the golden model (steps
    2-3) for one lane: constant multiply, round, split, table lookup, rounding shift."""

    def __init__(self, fmt):
        self.fmt = fmt

    def __call__(self, m, d, name):
        fmt = self.fmt
        t = Signal(unsigned(len(d) + fmt.log2e.bit_length() - fmt.t_shift + 1), name=f"{name}_t")
        m.d.comb += t.eq(round_shift(d * Const(fmt.log2e), fmt.t_shift))
        n = t >> fmt.table_bits
        cap = fmt.exp_frac + 1
        n_c = Signal(range(cap + 1), name=f"{name}_n")
        m.d.comb += n_c.eq(Mux(n > cap, cap, n))
        table = Array(Const(int(v), unsigned(fmt.exp_frac + 1)) for v in fmt.table)
        v = Signal(unsigned(fmt.exp_frac + 1), name=f"{name}_v")
        m.d.comb += v.eq(table[t[:fmt.table_bits]])
        e = Signal(unsigned(fmt.exp_frac + 1), name=f"{name}_e")
        m.d.comb += e.eq(round_shift(v, n_c))
        return e


#: The softmax's numeric parameters, shared by every unit that embeds a softmax.
FORMAT_PARAMS = (
    Param("lanes", Range(1, 16), "elements per beat"),
    Param("max_len", Range(Ref("lanes"), 4096, multiple_of="lanes"), "longest row"),
    Param("in_bits", Range(2, 24), "signed input score width"),
    Param("in_frac", Range(0, Ref("in_bits")), "input fraction bits"),
    Param("out_frac", Range(2, 12), "probability fraction bits"),
    Param("table_bits", Range(2, 10), "exp table index bits (log2 of its size)"),
)
INDEX_BITS = Param("index_bits", Range(1, 24), "column index width")


def checked_format(*, lanes, max_len, in_bits, in_frac, out_frac, table_bits):
    """Validate the softmax generator parameters (``ValueError`` naming the bad one) and
    return their :class:`SoftmaxFormat`; shared by every unit that embeds a softmax."""
    params = dict(lanes=lanes, max_len=max_len, in_bits=in_bits, in_frac=in_frac,
                  out_frac=out_frac, table_bits=table_bits)
    for p in FORMAT_PARAMS:
        p.domain.check(p.name, params[p.name], params)
    return SoftmaxFormat(in_bits=in_bits, in_frac=in_frac, out_frac=out_frac,
                         table_bits=table_bits, max_len=max_len)


class Softmax(wiring.Component):
    """Streaming fixed-point softmax over rows of run-time length (dense or sparse).

    Parameters
    ----------
    lanes : int
        Elements per beat ``P``, 1..16 (default 4).
    max_len : int
        Longest row, a multiple of ``lanes``, ``lanes``..4096 (default 64). Sets the buffer
        (``2 * max_len`` elements) and the reciprocal width.
    in_bits, in_frac : int
        Input scores: signed ``in_bits`` (2..24, default 16) with ``in_frac`` fraction bits
        (0..in_bits, default 8).
    out_frac : int
        Probability fraction bits, 2..12 (default 8); outputs are ``out_frac + 1`` bits wide.
    table_bits : int
        Fraction bits of the base-2 exponent, i.e. log2 of the ``2**(-f)`` table size, 2..10
        (default 6: max error 0.8 LSB at ``out_frac = 8``).
    index_bits : int
        Width of the column index each element carries, 1..24 (default 12).

    Members
    -------
    i : ``In(stream.Signature(in_layout(...)))``
        Row beats; ``last`` ends a row; ``count`` of the last beat gives its valid lanes.
    o : ``Out(stream.Signature(out_layout(...)))``
        One output beat per kept input beat, in order, same lane positions.
    """

    def __init__(self, *, lanes=4, max_len=64, in_bits=16, in_frac=8, out_frac=8, table_bits=6,
                 index_bits=12):
        self._lanes = lanes
        self._fmt = checked_format(lanes=lanes, max_len=max_len, in_bits=in_bits,
                                   in_frac=in_frac, out_frac=out_frac, table_bits=table_bits)
        INDEX_BITS.domain.check("index_bits", index_bits, {})
        self._index_bits = index_bits
        super().__init__({
            "i": In(stream.Signature(in_layout(lanes, in_bits, index_bits))),
            "o": Out(stream.Signature(out_layout(lanes, out_frac, index_bits))),
        })

    lanes = property(lambda self: self._lanes, doc="Elements per beat.")
    max_len = property(lambda self: self._fmt.max_len, doc="Longest row.")
    in_bits = property(lambda self: self._fmt.in_bits, doc="Input score width.")
    in_frac = property(lambda self: self._fmt.in_frac, doc="Input fraction bits.")
    out_frac = property(lambda self: self._fmt.out_frac, doc="Output fraction bits.")
    table_bits = property(lambda self: self._fmt.table_bits, doc="Exp table index bits.")
    index_bits = property(lambda self: self._index_bits, doc="Column index width.")
    fmt = property(lambda self: self._fmt, doc="The golden :class:`SoftmaxFormat`.")

    @property
    def max_beats(self):
        return self.max_len // self.lanes

    @property
    def recip_bits(self):
        """Divider cycles per row (quotient bits of ``R``)."""
        return self._fmt.recip_bits

    def row_cycles(self, length):
        """Read-side cycles per row of ``length`` elements without output stalls."""
        b = -(-min(length, self.max_len) // self.lanes)
        return 2 * b + self.recip_bits + 3

    def elaborate(self, platform):
        m = Module()
        fmt, P, MB = self._fmt, self._lanes, self.max_beats
        word = data.StructLayout({"data": data.ArrayLayout(signed(fmt.in_bits), P),
                                  "index": data.ArrayLayout(unsigned(self._index_bits), P)})
        m.submodules.mem = mem = Memory(shape=word, depth=2 * MB, init=[])
        wp, rp = mem.write_port(), mem.read_port()

        meta_l = data.StructLayout({"max": signed(fmt.in_bits), "beats": range(MB + 1),
                                    "lastcount": range(P + 1), "overflow": 1})
        metas = [Signal(meta_l, name=f"meta{b}") for b in range(2)]
        fulls = [Signal(name=f"full{b}") for b in range(2)]

        # ---------------------------------------------------------------- load side
        bank_w = Signal()
        beat_w = Signal(range(MB + 1))
        max_w = Signal(signed(fmt.in_bits))
        ovf_w = Signal()
        ip = self.i.payload
        m.d.comb += self.i.ready.eq(~Mux(bank_w, fulls[1], fulls[0]))
        count_ok = ip.count != 0
        if (1 << len(ip.count)) - 1 > P:
            count_ok = count_ok & (ip.count <= P)
        n_in = Mux(ip.last & count_ok, ip.count, P)
        beat_max = ip.data[0]
        for j in range(1, P):
            beat_max = Mux((n_in > j) & (ip.data[j] > beat_max), ip.data[j], beat_max)
        new_max = Signal(signed(fmt.in_bits))
        m.d.comb += new_max.eq(Mux((beat_w == 0) | (beat_max > max_w), beat_max, max_w))
        m.d.comb += [wp.addr.eq(Mux(bank_w, MB, 0) + beat_w),
                     wp.data.data.eq(ip.data), wp.data.index.eq(ip.index)]
        row_meta = Signal(meta_l)        # the finished row's metadata, on its last beat
        with m.If(beat_w != MB):
            m.d.comb += [row_meta.max.eq(new_max), row_meta.beats.eq(beat_w + 1),
                         row_meta.lastcount.eq(n_in), row_meta.overflow.eq(ovf_w)]
        with m.Else():                      # past max_len: the beat is dropped, the row flagged
            m.d.comb += [row_meta.max.eq(max_w), row_meta.beats.eq(MB),
                         row_meta.lastcount.eq(P), row_meta.overflow.eq(1)]
        with m.If(self.i.valid & self.i.ready):
            with m.If(beat_w != MB):
                m.d.comb += wp.en.eq(1)
                m.d.sync += [max_w.eq(new_max), beat_w.eq(beat_w + 1)]
            with m.Else():
                m.d.sync += ovf_w.eq(1)
            with m.If(ip.last):
                for b in range(2):
                    with m.If(bank_w == b):
                        m.d.sync += [metas[b].eq(row_meta), fulls[b].eq(1)]
                m.d.sync += [bank_w.eq(~bank_w), beat_w.eq(0), ovf_w.eq(0)]

        # ---------------------------------------------------------------- read side
        bank_r = Signal()
        cur = Signal(meta_l)
        m.d.comb += cur.eq(Mux(bank_r, metas[1], metas[0]))
        cur_full = Mux(bank_r, fulls[1], fulls[0])
        addr = Signal(range(MB + 1))
        pend = Signal()                  # the read port holds a beat of this row
        pend_last = Signal()
        total = Signal(unsigned(fmt.sum_bits))
        rem = Signal(unsigned(fmt.sum_bits + 1))
        recip = Signal(unsigned(fmt.recip_bits))
        steps = Signal(range(fmt.recip_bits + 1))
        adv = Signal()
        m.d.comb += [rp.addr.eq(Mux(bank_r, MB, 0) + addr), rp.en.eq(adv)]

        # Shared exp unit on the read port, invalid lanes masked to zero.
        exp = ExpUnit(fmt)
        lane_ok = [~pend_last | (cur.lastcount > j) for j in range(P)]
        es = []
        for j in range(P):
            d = Signal(unsigned(fmt.in_bits + 1), name=f"d{j}")
            m.d.comb += d.eq(cur.max - rp.data.data[j])
            es.append(Mux(lane_ok[j], exp(m, d, f"exp{j}"), 0))
        e_sum = es[0]
        for e in es[1:]:
            e_sum = e_sum + e

        def issue():
            # One read per call; `pend` tells the next cycle a beat is at the port.
            with m.If(addr != cur.beats):
                m.d.sync += [addr.eq(addr + 1), pend.eq(1), pend_last.eq(addr + 1 == cur.beats)]
            with m.Else():
                m.d.sync += pend.eq(0)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        IDLE, SUM, DIV, OUT = range(4)
        phase = Signal(range(4))
        with m.If(phase == IDLE):
            m.d.comb += adv.eq(1)
            with m.If(cur_full):
                m.d.sync += [addr.eq(0), pend.eq(0), total.eq(0), phase.eq(SUM)]
        with m.Elif(phase == SUM):
            m.d.comb += adv.eq(1)
            issue()
            with m.If(pend):
                m.d.sync += total.eq(total + e_sum)
                with m.If(pend_last):
                    m.d.sync += [rem.eq(1 << (fmt.exp_frac - 1)), recip.eq(0),
                                 steps.eq(fmt.recip_bits), phase.eq(DIV)]
        with m.Elif(phase == DIV):
            m.d.comb += adv.eq(1)
            r2 = rem << 1
            ge = r2 >= total
            m.d.sync += [rem.eq(Mux(ge, r2 - total, r2)), recip.eq((recip << 1) | ge),
                         steps.eq(steps - 1)]
            with m.If(steps == 1):
                m.d.sync += [addr.eq(0), pend.eq(0), phase.eq(OUT)]
        with m.Else():                                          # OUT
            m.d.comb += adv.eq(~self.o.valid | self.o.ready)
            with m.If(adv):
                issue()
                op = self.o.payload
                shift = fmt.recip_q - fmt.out_frac
                m.d.sync += [self.o.valid.eq(pend), op.last.eq(pend_last),
                             op.count.eq(Mux(pend_last, cur.lastcount, P)),
                             op.overflow.eq(cur.overflow)]
                for j in range(P):
                    m.d.sync += [
                        op.prob[j].eq(round_shift(es[j] * recip, shift)),
                        op.index[j].eq(Mux(lane_ok[j], rp.data.index[j], 0))]
                with m.If(pend & pend_last):
                    for b in range(2):
                        with m.If(bank_r == b):
                            m.d.sync += fulls[b].eq(0)
                    m.d.sync += [bank_r.eq(~bank_r), phase.eq(IDLE)]
        return m


UNIT = Unit(
    "softmax", Softmax, "streaming max-subtracted fixed-point softmax (dense or sparse rows)",
    FORMAT_PARAMS + (INDEX_BITS,),
    sim=(SimPoint(), SimPoint({"lanes": 3, "max_len": 12, "in_bits": 8, "in_frac": 4,
                               "out_frac": 6, "table_bits": 8, "index_bits": 4})),
    formal=Formal(cover_depth=28))
