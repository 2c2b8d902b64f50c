"""Multi-precision MAC / PE (DESIGN.md section 4.1, DOTA Sec. 6.2 and Fig. 16).

One datapath of 64 two-bit multipliers serves FX16, INT8, INT4 and INT2, chosen at run time per
packet. With ``n = 16 / p`` values per 16-bit word, the PE holds a stationary ``n x n`` weight
tile and every cycle multiplies one activation word by it: ``n`` dot products of ``n`` terms,
i.e. 1, 4, 16 or 64 MACs per cycle. Products accumulate over a packet of words at full width.

The design trick (Bit Fusion style, DOTA Fig. 16c) is a *fused reduction tree*. Multiplier
``(u, v)`` multiplies activation digit ``u`` by a weight digit chosen by the mode, so that in a
mode with ``d`` digits per value it computes ``a[j].digit(s) * W[i][j].digit(t)`` with
``u = j*d + s`` and ``v = i*d + t``. The tree then combines 2 x 2 blocks of sub-results level by
level. Inside a value (block size <= d) the upper children are shifted by two bits per digit
before they are added -- the sub-products fuse into a wider product; across values the same
adders add unshifted lanes -- the products of one output lane accumulate into a dot product. One
adder per child pair serves both uses; only the shift in front of it is muxed by the mode.

Two comparison designs share every other piece of the PE (weight double buffer, pipeline,
accumulators, requantization) so that area ratios measure the datapath alone:
:class:`FX16MAC` (one 16 x 16 multiplier, FX16 only) and :class:`SeparateMAC` (one native
multiplier array per precision, side by side, muxed by the mode).

Timing
------
Three register stages: input register -> datapath -> lane register -> accumulators, which drive
the output through the requantizer. A packet's result is valid 3 cycles after its ``last`` word
is accepted when the output is not stalled. ``a`` accepts one word per cycle
(II = 1) whenever the output is not stalled; a stalled output freezes the whole pipeline. The
weight port ``w`` is independent: while a tile is waiting in the shadow buffer ``w.ready`` is
low; a word with ``swap`` waits (``a.ready`` low) until a complete tile is in the shadow buffer.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.mac import MAX_LANES, TILE_ROWS, lane_bits
from ..golden.numbers import WORD_BITS, Precision
from .numbers import requantize
from .unit import Formal, Param, Range, SimPoint, Synth, Unit

__all__ = ["MAC", "FX16MAC", "SeparateMAC", "FusedDatapath", "FX16Datapath", "SeparateDatapath",
           "PRODUCT_BITS", "datapath_signature", "act_layout", "weight_layout", "result_layout"]

DIGITS = WORD_BITS // 2          # 2-bit digits in a word (8)


def act_layout():
    """Payload of the activation stream ``a``."""
    return data.StructLayout({
        "data":    WORD_BITS,    # n packed values, lane 0 in the low bits
        "mode":    Precision,    # taken from a packet's first word
        "requant": 1,            # taken from a packet's first word
        "swap":    1,            # make the next loaded tile active before this word
        "last":    1,            # this word ends the packet
    })


def weight_layout():
    """Payload of the weight stream ``w``: the rows of one tile, row 0 first."""
    return data.StructLayout({
        "data": WORD_BITS,       # row i: W[i][0..n-1], packed like an activation word
        "last": 1,               # last row of this tile (rows not written are zero)
    })


def result_layout(acc_bits):
    """Payload of the result stream ``o``."""
    return data.StructLayout({
        "lanes":    data.ArrayLayout(signed(acc_bits), MAX_LANES),
        "mode":     Precision,
        "requant":  1,
        "error":    1,           # the packet was longer than max_depth (lanes wrapped)
    })


#: Width of every lane of a datapath's output: an FX16 product (16 x 16 bits, signed).
PRODUCT_BITS = 2 * WORD_BITS


def datapath_signature(tile_rows=TILE_ROWS):
    """Ports of a MAC datapath: ``mode``, ``act`` and the ``tile_rows`` raw tile rows in, the 8
    lane results out (signed, :data:`PRODUCT_BITS` wide; lanes the mode does not use are 0)."""
    return wiring.Signature({
        "mode":  In(Precision),
        "act":   In(WORD_BITS),
        "rows":  In(data.ArrayLayout(WORD_BITS, tile_rows)),
        "lanes": Out(data.ArrayLayout(signed(PRODUCT_BITS), MAX_LANES)),
    })


class _Datapath(wiring.Component):
    """A combinational ``W @ a`` between ports (:func:`datapath_signature`).

    Subclasses give ``modes`` (the precisions computed), ``tile_rows`` (rows they read) and
    ``compute(m, mode, act, rows)``, which adds the logic to ``m`` and returns the lane values.
    """
    modes = tuple(Precision)
    tile_rows = TILE_ROWS

    def __init__(self):
        super().__init__(datapath_signature(self.tile_rows))

    def elaborate(self, platform):
        m = Module()
        rows = [self.rows[i] for i in range(self.tile_rows)]
        rows += [Const(0, WORD_BITS)] * (TILE_ROWS - self.tile_rows)
        lanes = self.compute(m, self.mode, self.act, rows)
        m.d.comb += [self.lanes[i].eq(v) for i, v in enumerate(lanes)]
        return m


class FusedDatapath(_Datapath):
    """Combinational multi-precision ``W @ a``: 64 two-bit multipliers and the fused tree.

    ``act`` is the 16-bit word, ``rows`` the 8 raw 16-bit tile rows; ``lanes[i]`` is lane ``i``
    of ``W @ a`` in the precision ``mode`` (lanes the mode does not use are zero).
    """
    modes = tuple(Precision)

    def compute(self, m, mode, act, rows):
        def ext(digit, top):
            # 2-bit digit -> 3-bit signed: sign-extend the top digit, zero-extend the others.
            return Cat(digit, top & digit[1]).as_signed()

        a_digits = [act[2 * u:2 * u + 2] for u in range(DIGITS)]
        products = {}
        for u in range(DIGITS):
            a_top = _mode_const_mux(mode, {p: (u % p.digits) == p.digits - 1 for p in Precision})
            for v in range(DIGITS):
                w_top = _mode_const_mux(mode, {p: (v % p.digits) == p.digits - 1
                                               for p in Precision})
                # weight digit W[i][j].digit(t): row i = v // d, digit (u // d) * d + v % d
                cands = {}
                for p in Precision:
                    d = p.digits
                    row, dig = v // d, (u // d) * d + v % d
                    cands[p] = rows[row][2 * dig:2 * dig + 2]
                w_digit = _mode_mux(mode, cands, 2)
                prod = Signal(signed(5), name=f"p_{u}_{v}")
                m.d.comb += prod.eq(ext(a_digits[u], a_top) * ext(w_digit, w_top))
                products[u, v] = prod

        # blocks[(u0, v0)] = list of slots (one per v digit in the block); slot 0 of a block
        # holds the fused value while the block lies inside one value.
        blocks = {(u, v): [products[u, v]] for u in range(DIGITS) for v in range(DIGITS)}
        size = 1
        while size < DIGITS:
            h, size = size, size * 2
            # fuse: this level still lies inside one value (size <= digits per value)
            fuse = _mode_const_mux(mode, {p: size <= p.digits for p in Precision})
            nxt = {}
            for u0 in range(0, DIGITS, size):
                for v0 in range(0, DIGITS, size):
                    halves = []
                    for b in (0, 1):
                        lo, hi = blocks[u0, v0 + b * h], blocks[u0 + h, v0 + b * h]
                        # slot 0: one adder, the upper child shifted only when fusing
                        x0 = lo[0] + Mux(fuse, hi[0] << (2 * h), hi[0])
                        halves.append([x0] + [lo[t] + hi[t] for t in range(1, h)])
                    fused = halves[0][0] + (halves[1][0] << (2 * h))
                    slot0 = Signal(signed(max(fused.shape().width, halves[0][0].shape().width)),
                                   name=f"s{size}_{u0}_{v0}_0")
                    m.d.comb += slot0.eq(Mux(fuse, fused, halves[0][0]))
                    slots = [slot0] + halves[0][1:] + halves[1]
                    nxt[u0, v0] = slots
            blocks = nxt
        slots = blocks[0, 0]

        lanes = []
        for i in range(MAX_LANES):
            # values fit PRODUCT_BITS: drop the tree's unused top bits before the lane mux
            cands = {p: slots[i * p.digits][:PRODUCT_BITS].as_signed() for p in Precision
                     if i < p.lanes}
            lanes.append(_mode_mux(mode, cands, None))
        return lanes


class FX16Datapath(_Datapath):
    """Baseline datapath: one signed 16 x 16 multiplier (FX16 only; reads row 0 only)."""
    modes = (Precision.FX16,)
    tile_rows = 1

    def compute(self, m, mode, act, rows):
        return [act.as_signed() * rows[0].as_signed()]


class SeparateDatapath(_Datapath):
    """Baseline datapath: a native multiplier array per precision, results muxed by the mode."""
    modes = tuple(Precision)

    def compute(self, m, mode, act, rows):
        per_mode = {}
        for p in Precision:
            n, bits = p.lanes, p.bits
            a = [act[j * bits:(j + 1) * bits].as_signed() for j in range(n)]
            outs = []
            for i in range(n):
                terms = [a[j] * rows[i][j * bits:(j + 1) * bits].as_signed() for j in range(n)]
                acc = terms[0]
                for t in terms[1:]:
                    acc = acc + t
                outs.append(acc)
            per_mode[p] = outs
        return [_mode_mux(mode, {p: per_mode[p][i] for p in Precision if i < p.lanes}, None)
                for i in range(MAX_LANES)]


def _mode_const_mux(mode, table):
    """1-bit function of the mode given as ``{Precision: bool}``."""
    hits = [mode == p for p, bit in table.items() if bit]
    if not hits:
        return Const(0, 1)
    if len(hits) == len(Precision):
        return Const(1, 1)
    return Cat(*hits).any()


def _mode_mux(mode, cands, width):
    """Select ``cands[mode]``; modes missing from ``cands`` give zero."""
    result = Const(0, width or 1)
    for p, value in cands.items():
        result = Mux(mode == p, value, result)
    return result


class _MACBase(wiring.Component):
    """The PE shell: weight double buffer, packet control, accumulators, requantization.

    Subclasses pick the datapath. See the module docstring for the contract and timing.
    """
    _datapath = None

    def __init__(self, *, frac_bits=8, max_depth=1024):
        self.record.validate(frac_bits=frac_bits, max_depth=max_depth)
        self._frac_bits = frac_bits
        self._max_depth = max_depth
        self._lane_bits = lane_bits(max_depth, self._datapath.modes)
        self._tile_rows = self._datapath.tile_rows
        super().__init__({
            "a": In(stream.Signature(act_layout())),
            "w": In(stream.Signature(weight_layout())),
            "o": Out(stream.Signature(result_layout(self.acc_bits))),
        })

    @property
    def frac_bits(self):
        """Fraction bits of an FX16 operand."""
        return self._frac_bits

    @property
    def max_depth(self):
        """Longest packet, in words, whose sums cannot wrap."""
        return self._max_depth

    @property
    def lane_bits(self):
        """Internal accumulator width of each output lane (0 where no mode uses the lane)."""
        return self._lane_bits

    @property
    def acc_bits(self):
        """Width of every lane in the result payload (the widest accumulator)."""
        return max(self._lane_bits)

    @property
    def modes(self):
        """Precisions this PE computes."""
        return self._datapath.modes

    @property
    def latency(self):
        """Cycles from accepting a packet's last word to its result being valid."""
        return 3

    def elaborate(self, platform):
        m = Module()
        rows_n = self._tile_rows

        # Weight double buffer: the shadow tile fills from `w` while the active one computes.
        shadow = [Signal(WORD_BITS, name=f"shadow_{i}") for i in range(rows_n)]
        active = [Signal(WORD_BITS, name=f"active_{i}") for i in range(rows_n)]
        shadow_full = Signal()
        row_ptr = Signal(range(rows_n + 1))

        # One global advance: a stalled output freezes every stage.
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)

        swap_ok = ~self.a.payload.swap | shadow_full
        m.d.comb += self.a.ready.eq(adv & swap_ok)
        take = self.a.valid & self.a.ready

        m.d.comb += self.w.ready.eq(~shadow_full)
        with m.If(self.w.valid & self.w.ready):
            for i in range(rows_n):
                with m.If(row_ptr == i):
                    m.d.sync += shadow[i].eq(self.w.payload.data)
            with m.If(self.w.payload.last):
                m.d.sync += [shadow_full.eq(1), row_ptr.eq(0)]
            with m.Elif(row_ptr != rows_n):
                m.d.sync += row_ptr.eq(row_ptr + 1)
        with m.If(take & self.a.payload.swap):
            m.d.sync += [a.eq(s) for a, s in zip(active, shadow)]
            m.d.sync += [s.eq(0) for s in shadow]
            m.d.sync += shadow_full.eq(0)

        # Packet framing: mode and requant are latched from a packet's first word.
        in_packet = Signal()
        pkt_mode = Signal(Precision)
        pkt_requant = Signal()
        first = ~in_packet
        mode_in = Mux(first, self.a.payload.mode, pkt_mode)
        if len(self.modes) == 1:        # single-precision baseline: the mode field is ignored
            mode_in = Const(self.modes[0].value, 2)
        requant_in = Mux(first, self.a.payload.requant, pkt_requant)
        with m.If(take):
            m.d.sync += in_packet.eq(~self.a.payload.last)
            with m.If(first):
                m.d.sync += [pkt_mode.eq(self.a.payload.mode),
                             pkt_requant.eq(self.a.payload.requant)]

        # Stage 1: input register.
        s1 = Signal(data.StructLayout({"valid": 1, "data": WORD_BITS, "mode": Precision,
                                       "requant": 1, "first": 1, "last": 1}))
        with m.If(adv):
            m.d.sync += [s1.valid.eq(take), s1.data.eq(self.a.payload.data),
                         s1.mode.eq(mode_in), s1.requant.eq(requant_in), s1.first.eq(first),
                         s1.last.eq(self.a.payload.last)]

        # Stage 2: datapath -> lane register.
        m.submodules.datapath = dp = self._datapath()
        m.d.comb += [dp.mode.eq(s1.mode), dp.act.eq(s1.data)]
        m.d.comb += [dp.rows[i].eq(row) for i, row in enumerate(active)]
        lanes = [dp.lanes[i] for i in range(MAX_LANES)]
        prod_bits = [self._prod_bits(i) for i in range(MAX_LANES)]
        s2 = Signal(data.StructLayout({"valid": 1, "mode": Precision, "requant": 1,
                                       "first": 1, "last": 1}))
        s2_lanes = [Signal(signed(max(w, 1)), name=f"prod_{i}") for i, w in enumerate(prod_bits)]
        with m.If(adv):
            m.d.sync += [s2.valid.eq(s1.valid), s2.mode.eq(s1.mode), s2.requant.eq(s1.requant),
                         s2.first.eq(s1.first), s2.last.eq(s1.last)]
            m.d.sync += [r.eq(x) for r, x in zip(s2_lanes, lanes) if r.shape().width > 1]

        # Stage 3: accumulators, one per lane at its own width, and the packet length counter.
        acc = [Signal(signed(max(w, 1)), name=f"acc_{i}") for i, w in enumerate(self._lane_bits)]
        count = Signal(range(self._max_depth + 2))
        s3 = Signal(data.StructLayout({"valid": 1, "mode": Precision, "requant": 1,
                                       "error": 1}))
        with m.If(adv):
            with m.If(s2.valid):
                for i, a in enumerate(acc):
                    if self._lane_bits[i]:
                        m.d.sync += a.eq(Mux(s2.first, 0, a) + s2_lanes[i])
                m.d.sync += count.eq(Mux(s2.first, 1,
                                         Mux(count > self._max_depth, count, count + 1)))
            m.d.sync += [s3.valid.eq(s2.valid & s2.last), s3.mode.eq(s2.mode),
                         s3.requant.eq(s2.requant)]
        m.d.comb += s3.error.eq(count > self._max_depth)


        # Output: the accumulators, frozen while the result waits, requantized on the way out.
        # No output register: the payload is stable while valid and not ready because a
        # stalled output stops the accumulators too.
        m.d.comb += [self.o.valid.eq(s3.valid), self.o.payload.mode.eq(s3.mode),
                     self.o.payload.requant.eq(s3.requant),
                     self.o.payload.error.eq(s3.error)]
        for i, a in enumerate(acc):
            if not self._lane_bits[i]:
                continue
            q = {p: requantize(a, self._frac_bits if p == Precision.FX16 else 0, p.bits)
                 for p in self.modes if i < p.lanes}
            m.d.comb += self.o.payload.lanes[i].eq(Mux(s3.requant, _mode_mux(s3.mode, q, None), a))
        return m

    def _prod_bits(self, lane):
        # W @ a lane result: 2p + ceil(log2(n)) bits, widest over the modes using the lane.
        return max((2 * p.bits + (p.lanes - 1).bit_length() for p in self.modes
                    if p.lanes > lane), default=0)


class MAC(_MACBase):
    """Multi-precision MAC / PE: FX16, INT8, INT4, INT2 on one fused 2-bit-multiplier datapath.

    Parameters
    ----------
    frac_bits : int
        Fraction bits of an FX16 operand, 0..15 (default 8). An FX16 product has
        ``2 * frac_bits``; a requantized FX16 result is shifted back by ``frac_bits``.
    max_depth : int
        Longest packet, in words, that the accumulators hold exactly, 1..2**24 (default 1024).
        Sets the lane widths (``lane_bits``); a longer packet sets ``error``.

    Members
    -------
    a : ``In(stream.Signature(act_layout()))``
        Activation words.
    w : ``In(stream.Signature(weight_layout()))``
        Weight tile rows into the shadow buffer.
    o : ``Out(stream.Signature(result_layout(acc_bits)))``
        One result per packet.
    """
    _datapath = FusedDatapath


class FX16MAC(_MACBase):
    """Comparison design: FX16 only, one 16 x 16 multiplier; same ports and shell as :class:`MAC`
    (``mode`` is ignored, every packet is FX16; only row 0 of a tile is kept)."""
    _datapath = FX16Datapath


class SeparateMAC(_MACBase):
    """Comparison design: four fixed-precision multiplier arrays side by side (1, 4, 16 and 64
    native multipliers), same ports, shell and throughput per mode as :class:`MAC`."""
    _datapath = SeparateDatapath


_PARAMS = (
    Param("frac_bits", Range(0, 15), "fraction bits of an FX16 operand"),
    Param("max_depth", Range(1, 1 << 24), "longest packet, in words, the accumulators hold"),
)

UNITS = (
    Unit("mac", MAC, "multi-precision MAC / PE (FX16, INT8, INT4, INT2)", _PARAMS,
         sim=(SimPoint(), SimPoint({"frac_bits": 0, "max_depth": 8})),
         formal=Formal(cover_depth=8),
         synth=Synth(boards=("ulx3s-85f", "orangecrab-r0.2"))),
    Unit("mac_fx16", FX16MAC, "baseline: FX16-only MAC with the same ports", _PARAMS,
         sim=(SimPoint({"max_depth": 8}),), testbench="attnforge.testbench.mac",
         baseline_of="mac"),
    Unit("mac_separate", SeparateMAC, "baseline: four fixed-precision MACs side by side",
         _PARAMS, sim=(SimPoint({"frac_bits": 4, "max_depth": 8}),),
         testbench="attnforge.testbench.mac", baseline_of="mac"),
)
