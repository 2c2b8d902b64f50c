"""Importance accumulator of the attention lane (SpAtten cascade token pruning, docs/lane.md
section 3): ``imp[key] += p`` for every probability the softmax writes, then the head's ``T``
column sums streamed out (golden: ``LaneResult.importance`` = ``probs.sum(axis=0)``).

``i`` takes one probability per beat (``key``, ``p``; always ready unless a command runs, so
a :class:`attnforge.rtl.streams.Fork` feeding it never stalls the probability buffer). Each
beat is a read-modify-write of one word: the read is issued in the beat's cycle (a read port
transparent to the write port, so the same key in consecutive beats adds up), the sum is
written in the next cycle. ``cmd`` runs ``clear`` (``n`` words to zero, one per cycle: before
a head, while the rows load) or ``emit`` (words ``0 .. n-1`` on ``o`` as one row: ``count``
1, ``index`` = key, ``last`` on key ``n - 1``; one beat per cycle, held while stalled).
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .streams import RowLayout

__all__ = ["Importance"]


class Importance(wiring.Component):
    """Parameters: ``max_t`` (keys), ``prob_bits`` (width of one probability),
    ``acc_bits`` (width of a column sum: ``prob_bits + ceil(log2(max_t))`` holds any sum)."""

    def __init__(self, *, max_t=32, prob_bits=13, acc_bits=18):
        self.max_t, self.prob_bits, self.acc_bits = max_t, prob_bits, acc_bits
        self.out_layout = RowLayout(1, unsigned(acc_bits), max(1, (max_t - 1).bit_length()))
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"emit": 1,
                                                          "n": range(max_t + 1)}))),
            "i": In(stream.Signature(data.StructLayout({"key": range(max_t),
                                                        "p": unsigned(prob_bits)}))),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        mem = Memory(shape=self.acc_bits, depth=self.max_t, init=[])
        m.submodules.mem = mem
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=(wp,))
        busy, emit, v1 = Signal(), Signal(), Signal()
        n = Signal(range(self.max_t + 1))
        addr = Signal(range(self.max_t + 1))
        m.d.comb += self.cmd.ready.eq(~busy & ~self.i.valid & ~v1)
        with m.If(self.cmd.valid & self.cmd.ready & (self.cmd.payload.n != 0)):
            m.d.sync += [busy.eq(1), emit.eq(self.cmd.payload.emit), n.eq(self.cmd.payload.n),
                         addr.eq(0)]

        # accumulate: read in the beat's cycle, write the sum in the next one
        m.d.comb += self.i.ready.eq(~busy)
        take = self.i.valid & self.i.ready
        key1, p1 = Signal.like(self.i.payload.key), Signal(self.prob_bits)
        m.d.sync += [key1.eq(self.i.payload.key), p1.eq(self.i.payload.p), v1.eq(take)]

        # emit: read word addr, present it the next cycle, hold it while stalled
        pend, key_p = Signal(), Signal(range(self.max_t))
        issue = busy & emit & (addr < n) & (~pend | self.o.ready)
        with m.If(pend & self.o.ready):
            m.d.sync += pend.eq(0)
            with m.If(key_p == n - 1):
                m.d.sync += busy.eq(0)
        with m.If(issue):
            m.d.sync += [pend.eq(1), key_p.eq(addr), addr.eq(addr + 1)]
        m.d.comb += [rp.addr.eq(Mux(busy, addr, self.i.payload.key)),
                     rp.en.eq(Mux(busy, issue | ~pend, take))]
        m.d.comb += [self.o.valid.eq(pend), self.o.payload.count.eq(1),
                     self.o.payload.data[0].eq(rp.data), self.o.payload.index[0].eq(key_p),
                     self.o.payload.last.eq(key_p == n - 1), self.o.payload.error.eq(0)]

        # clear: one zero word per cycle; otherwise the accumulation's write
        clearing = busy & ~emit
        with m.If(clearing):
            m.d.comb += [wp.addr.eq(addr), wp.data.eq(0), wp.en.eq(1)]
            m.d.sync += addr.eq(addr + 1)
            with m.If(addr == n - 1):
                m.d.sync += busy.eq(0)
        with m.Else():
            m.d.comb += [wp.addr.eq(key1), wp.data.eq(rp.data + p1), wp.en.eq(v1)]
        return m
