"""Granule pool of the attention lane (docs/lane.md section 2): the estimate row group's output
beats -> one row of B x B block scores for the detector.

The estimate of one query tile (``B`` query rows) leaves the RMMU N-tile by N-tile: for every
N-tile of ``W = cols * n`` keys, ``B`` beats (one per query row), lane ``j`` = the estimate of
key ``n0 + j`` (already requantized to ``score_bits`` by the RMMU's output lane). The pool keeps,
per granule of ``B`` consecutive keys, the maximum over the tile's ``B`` rows and emits one
row-stream beat per N-tile: ``data[g]`` = the score of granule ``n0 / B + g``, ``count`` = the
granules of this N-tile that exist (a partial last granule: the maximum over the keys that
exist), ``last`` on the final N-tile. That is the detector's BxB granule score
(:func:`attnforge.golden.detector.granule_scores`), so the detector can run in ELEM mode on
``T / B`` granules per tile instead of ingesting ``B x T`` scores.

Command (``cmd``, one per tile): ``n`` = keys (1..max_n), ``width`` = ``W`` (valid lanes per
N-tile beat, 1..cols*8, a multiple of ``block`` -- or a power of two below it: then a granule
spans ``block / W`` consecutive N-tiles, e.g. an INT8 estimate on 2 columns has ``W = 4``, and
one single-granule beat leaves after its last N-tile). A bad command (``n = 0``, ``width`` 0,
above the lanes, neither a multiple nor a power-of-two divisor of ``block``) is answered with
one beat ``count = 0``, ``last = error = 1`` and consumes no input beat.

Timing: an input beat is taken every cycle the output register is free or being emptied;
the granule beat of an N-tile is registered in the cycle after its last row arrives (latency 1).
Lanes at or beyond ``min(W, keys left)`` are masked (their content does not matter).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .streams import RowLayout

__all__ = ["GranulePool", "pool_cmd_layout"]


def pool_cmd_layout(lanes, max_n):
    return data.StructLayout({"n": range(max_n + 1), "width": range(lanes + 1)})


class GranulePool(wiring.Component):
    """``cmd`` + ``i`` (the RMMU group's ``o`` payload: ``lanes`` signed ``in_bits`` values,
    ``last``, ``error``) -> ``o`` (row stream of ``lanes // block`` signed ``score_bits``
    granule scores). Parameters: ``lanes`` (= RMMU ``cols * 8``), ``in_bits`` (RMMU
    ``out_bits``), ``score_bits``, ``block`` (B: rows of a tile and keys of a granule),
    ``max_n`` (largest key count)."""

    latency = 1

    def __init__(self, *, lanes=16, in_bits=32, score_bits=8, block=8, max_n=64):
        if not (1 <= block <= lanes and lanes % block == 0 and block & (block - 1) == 0):
            raise ValueError(f"block must be a power of two dividing lanes ({lanes}), "
                             f"not {block!r}")
        self.lanes, self.in_bits, self.score_bits = lanes, in_bits, score_bits
        self.block, self.max_n = block, max_n
        self.out_layout = RowLayout(lanes // block, signed(score_bits))
        super().__init__({
            "cmd": In(stream.Signature(pool_cmd_layout(lanes, max_n))),
            "i": In(stream.Signature(data.StructLayout({
                "lanes": data.ArrayLayout(signed(in_bits), lanes), "last": 1, "error": 1}))),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        b, g_max, sb = self.block, self.lanes // self.block, self.score_bits
        lb = b.bit_length() - 1                         # log2(block)
        low = -(1 << (sb - 1))
        busy = Signal()
        width = Signal(range(self.lanes + 1))
        left = Signal(range(self.max_n + 1))            # keys from this N-tile on
        row = Signal(range(b))
        acc = [Signal(signed(sb), name=f"acc{g}") for g in range(g_max)]
        bad = Signal()
        bad_pending = Signal()

        valid = Signal(range(self.lanes + 1))           # lanes valid in this N-tile
        m.d.comb += valid.eq(Mux(left < width, left, width))
        out_free = ~self.o.valid | self.o.ready
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        c = self.cmd.payload
        narrow = (c.width < b) & ((c.width & (c.width - 1)) == 0)     # W divides B
        m.d.comb += bad.eq((c.n == 0) | (c.width == 0) | (c.width > self.lanes)
                           | ((c.width[:lb] != 0) & ~narrow if lb else 0))
        sub = Signal(range(b + 1))                      # N-tiles of the granule so far (W < B)
        subs = Signal(range(b + 1))                     # N-tiles per granule: B / W (W < B)
        m.d.comb += subs.eq(Mux(width < b, b // Mux(width == 0, 1, width), 1))
        m.d.comb += self.cmd.ready.eq(~busy & ~bad_pending & out_free)
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.If(bad):
                m.d.sync += bad_pending.eq(1)
            with m.Else():
                m.d.sync += [busy.eq(1), width.eq(c.width), left.eq(c.n), row.eq(0),
                             sub.eq(0)]
        with m.If(bad_pending & out_free):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.count.eq(0),
                         self.o.payload.last.eq(1), self.o.payload.error.eq(1),
                         bad_pending.eq(0)]
            for g in range(g_max):
                m.d.sync += self.o.payload.data[g].eq(0)

        m.d.comb += self.i.ready.eq(busy & out_free)
        with m.If(self.i.valid & self.i.ready):
            new = []
            for g in range(g_max):
                best = Signal(signed(sb), name=f"best{g}")
                expr = low                                  # identity of max
                for j in range(g * b, (g + 1) * b):
                    x = self.i.payload.lanes[j][:sb].as_signed()
                    # a signal per step: as one expression the chain (``expr`` used twice per
                    # step) is a tree of 2**B nodes to Amaranth's checks and emitter
                    step = Signal(signed(sb), name=f"max{g}_{j - g * b}")
                    m.d.comb += step.eq(Mux((j < valid) & (x > expr), x, expr))
                    expr = step
                m.d.comb += best.eq(expr)
                nxt = Signal(signed(sb), name=f"next{g}")
                m.d.comb += nxt.eq(Mux(((row == 0) & (sub == 0)) | (best > acc[g]), best,
                                       acc[g]))
                new.append(nxt)
                m.d.sync += acc[g].eq(nxt)
            with m.If(row == b - 1):
                last = left <= width
                emit = last | (sub == subs - 1)
                m.d.sync += [row.eq(0), left.eq(Mux(last, 0, left - width)),
                             sub.eq(Mux(emit, 0, sub + 1))]
                with m.If(emit):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.last.eq(last),
                                 self.o.payload.error.eq(0),
                                 self.o.payload.count.eq(Mux(width < b, 1,
                                                             (valid + b - 1) >> lb))]
                    for g in range(g_max):
                        m.d.sync += self.o.payload.data[g].eq(
                            Mux((g * b < valid) | ((g == 0) & (width < b)), new[g], 0))
                with m.If(last):
                    m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += row.eq(row + 1)
        return m
