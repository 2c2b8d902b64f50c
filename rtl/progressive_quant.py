"""Progressive quantization support (DESIGN.md section 4.5, SpAtten): the bitwidth converter.

:class:`BitwidthConverter` unpacks ``p``-bit values packed densely (LSB first, straddling word
boundaries) in ``word_bits``-bit memory words into beats of ``lanes`` aligned fields, for every
``p`` in ``widths`` chosen at run time. Bit-exact twin of
:func:`attnforge.golden.progressive_quant.convert`.

Design: a bit buffer of ``CAP = word_bits + lanes * max(widths) - 1`` bits and a fill count.
A word is appended at bit ``cnt`` (one barrel shift); a beat is the low ``lanes * p`` bits and
leaves by a right shift of ``lanes * p`` (a mux over the supported widths, not a barrel
shifter). Both can happen in one cycle, so the converter sustains one word in per cycle and one
beat out per cycle whichever is slower. ``CAP`` guarantees that a word can always be accepted
when no complete beat is waiting, so the converter cannot deadlock, and a value that straddles
two words is simply complete once the second word has been appended (the straddle case that
the published SpAtten RTL gets wrong needs no special path here).

The input word that starts a plane carries ``first`` and the run-time width (an index into
``widths``): it discards leftover bits of the previous plane (fewer than one beat: ``first``
waits until every complete beat has been taken).

The top-level progressive-quantization unit (MSB-plane scores, softmax, threshold, LSB fetch)
is specified by :mod:`attnforge.golden.progressive_quant` but not built yet.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .numbers import check_int

__all__ = ["BitwidthConverter", "word_layout", "beat_layout"]


def word_layout(word_bits, n_widths):
    """Payload of the converter input: one memory word."""
    return data.StructLayout({
        "data":  word_bits,
        "width": range(max(n_widths, 2)),   # index into ``widths``, read on a first word
        "first": 1,                         # first word of a plane: drop leftover bits
    })


def beat_layout(lanes, max_width):
    """Payload of the converter output: ``lanes`` fields, zero-extended to ``max_width``."""
    return data.StructLayout({"lanes": data.ArrayLayout(unsigned(max_width), lanes)})


class BitwidthConverter(wiring.Component):
    """Dense ``p``-bit memory words -> aligned lanes, ``p`` chosen at run time.

    Parameters
    ----------
    word_bits : int
        Memory word width ``w``, 8..256 (default 64).
    lanes : int
        Fields per output beat, 1..64 (default 8).
    widths : tuple of int
        Supported field widths, each 1..16, at most 8 of them (default ``(2, 4, 6, 8)``).

    Members
    -------
    i : ``In(stream.Signature(word_layout(...)))``
    o : ``Out(stream.Signature(beat_layout(...)))``
    """

    def __init__(self, *, word_bits=64, lanes=8, widths=(2, 4, 6, 8)):
        self._word_bits = check_int("word_bits", word_bits, 8, 256)
        self._lanes = check_int("lanes", lanes, 1, 64)
        if not isinstance(widths, tuple) or not 1 <= len(widths) <= 8 or len(set(widths)) != \
                len(widths):
            raise ValueError(f"widths must be a tuple of 1 to 8 distinct ints, not {widths!r}")
        for p in widths:
            check_int("widths", p, 1, 16)
        self._widths = widths
        super().__init__({
            "i": In(stream.Signature(word_layout(word_bits, len(widths)))),
            "o": Out(stream.Signature(beat_layout(lanes, max(widths)))),
        })

    word_bits = property(lambda self: self._word_bits)
    lanes = property(lambda self: self._lanes)
    widths = property(lambda self: self._widths)

    @property
    def capacity(self):
        """Bits the buffer holds."""
        return self._word_bits + self._lanes * max(self._widths) - 1

    def elaborate(self, platform):
        m = Module()
        w, L, cap = self._word_bits, self._lanes, self.capacity
        buf = Signal(cap)
        cnt = Signal(range(cap + 1))
        sel = Signal(range(max(len(self._widths), 2)))

        def by_width(values, s=sel):
            out = values[0]
            for k in range(1, len(values)):
                out = Mux(s == k, values[k], out)
            return out

        beat_bits = Signal(range(L * max(self._widths) + 1))
        m.d.comb += beat_bits.eq(by_width([L * p for p in self._widths]))
        m.d.comb += self.o.valid.eq(cnt >= beat_bits)
        for lane in range(L):
            m.d.comb += self.o.payload.lanes[lane].eq(
                by_width([buf[lane * p:(lane + 1) * p] for p in self._widths]))

        take = self.o.valid & self.o.ready
        after_buf = Signal(cap)
        after_cnt = Signal(range(cap + 1))
        m.d.comb += [after_buf.eq(Mux(take, by_width([buf >> (L * p) for p in self._widths]),
                                      buf)),
                     after_cnt.eq(Mux(take, cnt - beat_bits, cnt))]
        first = self.i.payload.first
        m.d.comb += self.i.ready.eq(Mux(first, ~self.o.valid, cnt + w <= cap))
        with m.If(self.i.valid & self.i.ready):
            with m.If(first):
                m.d.sync += [buf.eq(self.i.payload.data), cnt.eq(w),
                             sel.eq(self.i.payload.width)]
            with m.Else():
                m.d.sync += [buf.eq(after_buf | (self.i.payload.data << after_cnt)),
                             cnt.eq(after_cnt + w)]
        with m.Else():
            m.d.sync += [buf.eq(after_buf), cnt.eq(after_cnt)]
        return m
