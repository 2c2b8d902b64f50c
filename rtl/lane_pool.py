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

HB-BSSA (``sq``): next to the maximum the pool keeps, per granule, the sum of the squared
estimates over the tile's ``B`` rows and the granule's keys (masked lanes count 0), and emits
it on ``sq`` (same beats as ``o``: ``data[g]`` = the sum of granule ``n0 / B + g``, unsigned
:func:`attnforge.golden.lane.sumsq_bits` ``(block, score_bits)`` bits, enough for
``B * B * 2**(2*(score_bits-1))``) = :func:`attnforge.golden.lane.block_norms` of the tile's
estimate rows. ``o`` and ``sq`` leave together: the next beat waits until both are taken.
:class:`Int8Flags` turns the ``sq`` beats of a tile into one beat of per-block INT8 flags.

Timing: an input beat is taken every cycle the output register is free or being emptied;
the granule beat of an N-tile is registered in the cycle after its last row arrives (latency 1).
Lanes at or beyond ``min(W, keys left)`` are masked (their content does not matter).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.lane import sumsq_bits
from .streams import RowLayout

__all__ = ["GranulePool", "Int8Flags", "EstimateRows", "pool_cmd_layout"]


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
        self.sq_bits = sumsq_bits(block, score_bits)
        self.sq_layout = RowLayout(lanes // block, unsigned(self.sq_bits))
        super().__init__({
            "cmd": In(stream.Signature(pool_cmd_layout(lanes, max_n))),
            "i": In(stream.Signature(data.StructLayout({
                "lanes": data.ArrayLayout(signed(in_bits), lanes), "last": 1, "error": 1}))),
            "o": Out(stream.Signature(self.out_layout)),
            "sq": Out(stream.Signature(self.sq_layout)),
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
        sq = [Signal(self.sq_bits, name=f"sq{g}") for g in range(g_max)]
        bad = Signal()
        bad_pending = Signal()

        valid = Signal(range(self.lanes + 1))           # lanes valid in this N-tile
        m.d.comb += valid.eq(Mux(left < width, left, width))
        out_free = (~self.o.valid | self.o.ready) & (~self.sq.valid | self.sq.ready)
        for port in (self.o, self.sq):                  # o and sq: one beat, taken separately
            with m.If(port.valid & port.ready):
                m.d.sync += port.valid.eq(0)

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
            m.d.sync += bad_pending.eq(0)
            for port in (self.o, self.sq):
                m.d.sync += [port.valid.eq(1), port.payload.count.eq(0), port.payload.last.eq(1),
                             port.payload.error.eq(1)]
                for g in range(g_max):
                    m.d.sync += port.payload.data[g].eq(0)

        m.d.comb += self.i.ready.eq(busy & out_free)
        with m.If(self.i.valid & self.i.ready):
            new, sq_new = [], []
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
                sq_in = 0                                   # sum of squares of the valid lanes
                for j in range(g * b, (g + 1) * b):
                    x = self.i.payload.lanes[j][:sb].as_signed()
                    sq_in = sq_in + Mux(j < valid, x * x, 0)
                sq_nxt = Signal(self.sq_bits, name=f"sq_next{g}")
                m.d.comb += sq_nxt.eq(Mux((row == 0) & (sub == 0), 0, sq[g]) + sq_in)
                sq_new.append(sq_nxt)
                m.d.sync += sq[g].eq(sq_nxt)
            with m.If(row == b - 1):
                last = left <= width
                emit = last | (sub == subs - 1)
                m.d.sync += [row.eq(0), left.eq(Mux(last, 0, left - width)),
                             sub.eq(Mux(emit, 0, sub + 1))]
                with m.If(emit):
                    for port, vals in ((self.o, new), (self.sq, sq_new)):
                        m.d.sync += [port.valid.eq(1), port.payload.last.eq(last),
                                     port.payload.error.eq(0),
                                     port.payload.count.eq(Mux(width < b, 1,
                                                               (valid + b - 1) >> lb))]
                        for g in range(g_max):
                            m.d.sync += port.payload.data[g].eq(
                                Mux((g * b < valid) | ((g == 0) & (width < b)), vals[g], 0))
                with m.If(last):
                    m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += row.eq(row + 1)
        return m


class Int8Flags(wiring.Component):
    """HB-BSSA block precision: the ``sq`` beats of one tile (:class:`GranulePool`, granules in
    order, ``last`` on the tile's final beat) -> one ``o`` beat ``flags`` with bit ``j`` set when
    granule ``j`` of the tile runs at INT8: ``enable`` and its sum of squares ``<= bound``
    (``enable``, ``bound``: run-time inputs held for the head). Parameters: ``per_beat``
    (granules per ``sq`` beat), ``sq_bits``, ``max_blk`` (granules per tile), ``bound_bits``.
    Timing: one ``sq`` beat per cycle while ``o`` is free; the flags beat is registered with the
    tile's last ``sq`` beat (latency 1). An error beat (a bad pool command) ends the tile too."""

    def __init__(self, *, per_beat=2, sq_bits=21, max_blk=4, bound_bits=25):
        self.per_beat, self.sq_bits, self.max_blk = per_beat, sq_bits, max_blk
        super().__init__({
            "i": In(stream.Signature(RowLayout(per_beat, unsigned(sq_bits)))),
            "o": Out(stream.Signature(data.StructLayout({"flags": max_blk}))),
            "enable": In(1),
            "bound": In(bound_bits),
        })

    def elaborate(self, platform):
        m = Module()
        nb, p = self.max_blk, self.per_beat
        flags = Signal(nb)
        pos = Signal(range(nb + p))                      # granule index of lane 0
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        bits = []
        for j in range(nb):                              # flags with this beat's lanes merged
            hit = 0
            for i in range(p):
                hit = hit | ((pos + i == j) & (i < self.i.payload.count)
                             & (self.i.payload.data[i] <= self.bound))
            bits.append(flags[j] | (self.enable & hit))
        nxt = Signal(nb)
        m.d.comb += nxt.eq(Cat(*bits))
        with m.If(self.i.valid & self.i.ready):
            with m.If(self.i.payload.last):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.flags.eq(nxt), flags.eq(0),
                             pos.eq(0)]
            with m.Else():
                m.d.sync += [flags.eq(nxt), pos.eq(pos + self.i.payload.count)]
        return m


class EstimateRows(wiring.Component):
    """Per-row granularity (element / 1xV, docs/lane.md section 2): the estimate row group's
    output beats of one query tile -> its ``bq`` estimate rows, query after query, for the
    detector (which pools 1xV granules itself).

    ``cmd`` (one per tile, :func:`pool_cmd_layout`): ``n`` keys, ``width`` = ``W`` (lanes per
    N-tile beat). Input ``i`` as :class:`GranulePool`'s: for every N-tile of ``W`` keys, ``bq``
    beats (one per query row), lane ``j`` = the estimate of key ``n0 + j``. Output ``o``: a row
    stream of ``lanes`` signed ``score_bits`` values, per query row ``ceil(n / W)`` beats of
    ``min(W, keys left)`` valid lanes (the rest 0), ``last`` on the row's final beat.

    Two tile buffers (ping-pong) in one memory (a word = one beat's lanes, address
    ``(buffer * bq + q) * depth + nt``, ``depth = ceil(max_n / min_width)``): a command is taken
    when the next write buffer is free; ``armed`` is high from then until its tile's last beat is
    in (the lane issues the estimate descriptor only while armed, so the RMMU's output never
    waits: ``i.ready`` is high while armed). A written buffer plays out (``start`` pulses in its
    first read cycle), one beat per cycle while ``o`` is ready (a read issued in cycle t is
    presented in t + 1); the buffer is free again in the cycle its last beat is taken, and the
    next written buffer starts playing in the cycle after. No error path: the lane's check
    rejects bad tiles first."""

    def __init__(self, *, lanes=16, in_bits=32, score_bits=8, bq=8, max_n=64, min_width=4):
        self.lanes, self.in_bits, self.score_bits = lanes, in_bits, score_bits
        self.bq, self.max_n, self.min_width = bq, max_n, min_width
        self.depth = -(-max_n // min_width)
        self.out_layout = RowLayout(lanes, signed(score_bits))
        super().__init__({
            "cmd": In(stream.Signature(pool_cmd_layout(lanes, max_n))),
            "i": In(stream.Signature(data.StructLayout({
                "lanes": data.ArrayLayout(signed(in_bits), lanes), "last": 1, "error": 1}))),
            "o": Out(stream.Signature(self.out_layout)),
            "armed": Out(1),
            "start": Out(1),
        })

    def elaborate(self, platform):
        from amaranth.lib.memory import Memory
        m = Module()
        sb, lanes, bq, depth = self.score_bits, self.lanes, self.bq, self.depth
        mem = Memory(shape=sb * lanes, depth=2 * bq * depth, init=[])
        m.submodules.mem = mem
        wp, rp = mem.write_port(), mem.read_port()
        full = Signal(2)                                # buffer b holds an unread tile
        wb, rb = Signal(), Signal()
        # per buffer: keys, width, N-tiles of its tile
        n = [Signal(range(self.max_n + 1), name=f"n{b}") for b in range(2)]
        width = [Signal(range(lanes + 1), name=f"width{b}") for b in range(2)]
        nnt = [Signal(range(depth + 1), name=f"nnt{b}") for b in range(2)]
        # ---- write side
        armed = self.armed
        wq, wnt = Signal(range(bq)), Signal(range(depth))
        c = self.cmd.payload
        m.d.comb += self.cmd.ready.eq(~armed & ~full.bit_select(wb, 1))
        with m.If(self.cmd.valid & self.cmd.ready):
            wd = Mux(c.width == 0, 1, c.width)
            for b in range(2):
                with m.If(wb == b):
                    m.d.sync += [n[b].eq(c.n), width[b].eq(c.width),
                                 nnt[b].eq((c.n + wd - 1) // wd)]
            m.d.sync += [armed.eq(1), wq.eq(0), wnt.eq(0)]
        w_nnt = Mux(wb, nnt[1], nnt[0])
        m.d.comb += [wp.addr.eq((wb * bq + wq) * depth + wnt),
                     wp.data.eq(Cat(*[self.i.payload.lanes[j][:sb] for j in range(lanes)])),
                     self.i.ready.eq(armed), wp.en.eq(armed & self.i.valid)]
        set_full = Signal(2)
        with m.If(armed & self.i.valid):
            m.d.sync += wq.eq(Mux(wq == bq - 1, 0, wq + 1))
            with m.If(wq == bq - 1):
                m.d.sync += wnt.eq(wnt + 1)
                with m.If(wnt == w_nnt - 1):
                    m.d.sync += [wnt.eq(0), armed.eq(0), wb.eq(~wb)]
                    m.d.comb += set_full.eq(Mux(wb, 2, 1))
        # ---- read side
        reading, last_issued, pend = Signal(), Signal(), Signal()
        q, nt = Signal(range(bq)), Signal(range(depth))
        nt_p = Signal(range(depth))
        r_nnt = Mux(rb, nnt[1], nnt[0])
        clr_full = Signal(2)
        with m.If(~reading & full.bit_select(rb, 1)):
            m.d.sync += [reading.eq(1), q.eq(0), nt.eq(0), last_issued.eq(0)]
        m.d.comb += self.start.eq(reading & (q == 0) & (nt == 0) & ~last_issued & ~pend)
        issue = reading & ~last_issued & (~pend | self.o.ready)
        m.d.comb += [rp.addr.eq((rb * bq + q) * depth + nt), rp.en.eq(issue)]
        with m.If(pend & self.o.ready):
            m.d.sync += pend.eq(0)
            with m.If(last_issued):
                m.d.sync += [reading.eq(0), last_issued.eq(0), rb.eq(~rb)]
                m.d.comb += clr_full.eq(Mux(rb, 2, 1))
        with m.If(issue):
            m.d.sync += [pend.eq(1), nt_p.eq(nt)]
            with m.If(nt == r_nnt - 1):
                m.d.sync += [nt.eq(0), q.eq(q + 1)]
                with m.If(q == bq - 1):
                    m.d.sync += [q.eq(0), last_issued.eq(1)]
            with m.Else():
                m.d.sync += nt.eq(nt + 1)
        m.d.sync += full.eq((full | set_full) & ~clr_full)
        r_n, r_w = Mux(rb, n[1], n[0]), Mux(rb, width[1], width[0])
        left = Signal(range(self.max_n + 1))
        m.d.comb += left.eq(r_n - nt_p * r_w)
        count = Signal(range(lanes + 1))
        m.d.comb += count.eq(Mux(left < r_w, left, r_w))
        op = self.o.payload
        m.d.comb += [self.o.valid.eq(pend), op.count.eq(count), op.last.eq(nt_p == r_nnt - 1),
                     op.error.eq(0)]
        for j in range(lanes):
            m.d.comb += op.data[j].eq(Mux(j < count, rp.data[sb * j:sb * (j + 1)].as_signed(), 0))
        return m
