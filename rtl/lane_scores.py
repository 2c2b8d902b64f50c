"""Score buffer of the attention lane (docs/lane.md sections 2-4): the scores GEMM's transposed
output ``S^T`` of one query tile -> one score row per query for the softmax.

The compute group runs ``S^T = K_G Q_b^T`` (gathered keys streamed against the stationary
query tile), so its FX16 output leaves as, for every N-tile of ``cols`` queries, one beat per
gathered key ``m`` with lane ``j`` = the score of query ``nt*cols + j`` at gathered position
``m`` (requantized to FX16 by the RMMU). The buffer has one bank per query of the tile (words
of ``per_beat`` scores, lane-granular writes), so each RMMU beat writes ``cols`` banks at once;
then it plays out query row after query row, ``per_beat`` scores per beat with their gathered
positions as ``index`` (the row-stream convention: last beat partial, ``last`` on it).

HB-BSSA: with ``n8`` INT8 blocks (of ``block`` keys) the scores arrive as two descriptors, FX16
over the keys of the FX16 blocks (``cols`` queries per beat), then INT8 (``2*cols`` queries per
beat: INT8 packs two values per word, so an N-tile is ``2*cols`` queries); descriptor position
``i`` of a kind lands at gathered position ``slots[i // block] * block + i % block`` (``fxs`` /
``i8s``: the gathered slots of each kind, ascending), so the softmax sees the row in ascending
key order (the online softmax is order-sensitive) with each score from its block's path.

With ``int8_port`` (the lane's INT8 row group, ``int8_rows > 0``) the INT8 descriptor's beats
of a tile with FX16 blocks too come on their own input ``s8``, concurrently with the FX16 ones
on ``s`` (a tile whose blocks are all INT8 has its INT8 beats on ``s``): each input has its
own position counters and its own write port on every bank (the two descriptors' keys are
disjoint, so the two writes of a cycle never hit the same word); the read phase starts once
both descriptors' last beats are in.

Command ``cmd``: ``g`` = gathered keys of the tile (1..max_g), ``n8``, ``fxs``, ``i8s`` (0: FX16
only, slots ignored), ``fine``, ``mg``. Every row plays every gathered position (BxB: every row
of the tile keeps the same keys); with ``fine`` (per-row granularity, element / 1xV: the
gathered keys are the union of the rows' kept keys; ``per_beat`` = 1 only) a position row
``q`` does not keep (``mg[q]`` bit clear) leaves as a beat with ``count`` 0 (data and index
0), so the softmax sees exactly the row's kept scores in ascending key order, with the same
timing as BxB.

Timing: one RMMU beat per cycle in; out one beat per cycle (a read issued in cycle t is
presented in t + 1 and held by disabling the read port while stalled). Write and read phases do
not overlap in v0 (a second buffer would let tile b+1's scores arrive during b's play-out).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .streams import row_signature

__all__ = ["ScoreTile", "score_cmd_layout"]


def score_cmd_layout(max_g, block, bq=None):
    """Command of :class:`ScoreTile`: ``g`` gathered keys, ``n8`` INT8 blocks, the gathered
    slots of the FX16 (``fxs``) and INT8 (``i8s``) blocks, ascending; per-row granularity:
    ``fine`` and ``mg`` (``bq`` rows of ``max_g`` bits, bit ``i`` of row ``q``: query ``q``
    keeps gathered position ``i``)."""
    nb = max(1, max_g // block)
    slots = data.ArrayLayout(range(nb), nb)
    return data.StructLayout({"g": range(max_g + 1), "n8": range(nb + 1), "fxs": slots,
                              "i8s": slots, "fine": 1,
                              "mg": data.ArrayLayout(max_g, bq or block)})


class ScoreTile(wiring.Component):
    """Parameters: ``cols`` (RMMU columns; FX16 uses lanes ``0..cols-1`` of its ``cols*8``),
    ``in_bits`` (RMMU ``out_bits``), ``bq`` (queries per tile, a multiple of ``cols``),
    ``max_g`` (gathered keys, a multiple of ``per_beat``), ``per_beat`` (scores per beat out),
    ``index_bits`` (width of the position index)."""

    def __init__(self, *, cols=2, in_bits=36, bq=8, max_g=32, per_beat=4, index_bits=8,
                 block=None, int8_port=False):
        block = block or bq
        if bq % cols or max_g % per_beat or max_g > (1 << index_bits) or max_g % block:
            raise ValueError(f"bq must be a multiple of cols ({cols}) and max_g a multiple of "
                             f"per_beat ({per_beat}) and block ({block}) below 2**index_bits, "
                             f"not {bq}, {max_g}")
        self.cols, self.in_bits, self.bq = cols, in_bits, bq
        self.max_g, self.per_beat, self.index_bits = max_g, per_beat, index_bits
        self.block, self.max_blk = block, max_g // block
        self.int8_port = int8_port
        beats = stream.Signature(data.StructLayout({
            "lanes": data.ArrayLayout(signed(in_bits), cols * 8), "last": 1, "error": 1}))
        super().__init__({
            "cmd": In(stream.Signature(score_cmd_layout(max_g, block, bq))),
            "s": In(beats),
            **({"s8": In(beats)} if int8_port else {}),
            "o": Out(row_signature(per_beat, signed(16), index_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        p, cols, bq = self.per_beat, self.cols, self.bq
        words = self.max_g // p
        g = Signal(range(self.max_g + 1))
        nt = Signal(range(bq // cols))
        key = Signal(range(self.max_g))
        q = Signal(range(bq))
        w = Signal(range(words))
        nw = Signal(range(words + 1))
        q_pend, w_pend = Signal.like(q), Signal.like(w)
        pending = Signal()

        banks, banks8 = [], []                           # banks8: the INT8 input's ports
        for b in range(bq):
            mem = Memory(shape=16 * p, depth=words, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.write_port(granularity=16), mem.read_port()))
            if self.int8_port:
                banks8.append(mem.write_port(granularity=16))

        # HB-BSSA: segment 0 = the FX16 descriptor's beats, 1 = the INT8 descriptor's
        blk, nb, nb2 = self.block, self.max_blk, 2 * cols
        lb = blk.bit_length() - 1
        n8 = Signal(range(nb + 1))
        fxs, i8s = (Signal(data.ArrayLayout(range(nb), nb), name=x) for x in ("fxs", "i8s"))
        fine = Signal()
        mg = Signal(data.ArrayLayout(self.max_g, bq))
        g8 = Signal(range(self.max_g + 1))
        m.d.comb += g8.eq(n8 << lb)

        def write_beat(s, seg, key, nt, ports, take):
            """Write beat ``s`` of segment ``seg`` (descriptor position ``key`` of N-tile
            ``nt``) into its banks at its gathered position when ``take``; step ``key`` /
            ``nt``. Returns "the segment's last beat"."""
            g_seg = Mux(seg, g8, g - g8)
            nt_last = Mux(seg, -(-bq // nb2) - 1, bq // cols - 1)
            slot = Signal(range(nb), name="slot")
            bi = Signal(range(nb), name="slot_index")
            m.d.comb += bi.eq(key >> lb)
            m.d.comb += slot.eq(Mux(seg, Array([i8s[j] for j in range(nb)])[bi],
                                    Array([fxs[j] for j in range(nb)])[bi]))
            pos = Signal(range(self.max_g), name="pos")   # gathered position of this beat
            m.d.comb += pos.eq(Mux(n8 == 0, key, (slot << lb) | (key & (blk - 1))))
            for b, wp in enumerate(ports):
                lane = Mux(seg, s.payload.lanes[b % nb2][:16], s.payload.lanes[b % cols][:16])
                m.d.comb += [wp.addr.eq(pos // p), wp.data.eq(Cat(*[lane] * p))]
                with m.If(take & Mux(seg, nt == b // nb2, nt == b // cols)):
                    m.d.comb += wp.en.eq(1 << (pos % p))
            end_key = key == g_seg - 1
            with m.If(take):
                with m.If(end_key):
                    m.d.sync += [key.eq(0), nt.eq(nt + 1)]
                with m.Else():
                    m.d.sync += key.eq(key + 1)
            return end_key & (nt == nt_last)

        # named states (an explicit state register: Verilator -Wall clean, unlike m.FSM's cases)
        IDLE, WRITE, READ, DRAIN = range(4)
        state = Signal(range(4))
        seg = Signal()                                   # shared input: the segment arriving
        start8 = []                                      # int8_port: the s8 side's command
        if self.int8_port:
            key8, nt8 = Signal.like(key), Signal.like(nt)    # the INT8 input's counters
            s_left, i8_left = Signal(), Signal()             # inputs still due
            cp = self.cmd.payload
            start8 = [key8.eq(0), nt8.eq(0), s_left.eq(1),
                      i8_left.eq((cp.n8 != 0) & ((cp.n8 << lb) != cp.g))]
        with m.If(state == IDLE):
            m.d.comb += self.cmd.ready.eq(1)
            with m.If(self.cmd.valid):
                cp = self.cmd.payload
                m.d.sync += [g.eq(cp.g), nt.eq(0), key.eq(0), nw.eq((cp.g + p - 1) // p),
                             n8.eq(cp.n8), fxs.eq(cp.fxs), i8s.eq(cp.i8s),
                             fine.eq(cp.fine), mg.eq(cp.mg),
                             seg.eq((cp.n8 << lb) == cp.g), *start8]
                m.d.sync += state.eq(WRITE)
        with m.Elif(state == WRITE):
            if not self.int8_port:                       # one input: FX16 beats, then INT8
                m.d.comb += self.s.ready.eq(1)
                end = write_beat(self.s, seg, key, nt, [wp for wp, _ in banks], self.s.valid)
                with m.If(self.s.valid & end):
                    with m.If(~seg & (n8 != 0)):
                        m.d.sync += [seg.eq(1), nt.eq(0)]
                    with m.Else():
                        m.d.sync += [q.eq(0), w.eq(0), state.eq(READ)]
            else:              # two inputs, concurrently: s = FX16 (INT8 if all blocks are)
                m.d.comb += [self.s.ready.eq(s_left), self.s8.ready.eq(i8_left)]
                take, take8 = self.s.valid & s_left, self.s8.valid & i8_left
                end_s = take & write_beat(self.s, seg, key, nt, [wp for wp, _ in banks], take)
                end8 = take8 & write_beat(self.s8, 1, key8, nt8, banks8, take8)
                with m.If(end_s):
                    m.d.sync += s_left.eq(0)
                with m.If(end8):
                    m.d.sync += i8_left.eq(0)
                with m.If((~s_left | end_s) & (~i8_left | end8)):
                    m.d.sync += [q.eq(0), w.eq(0), state.eq(READ)]
        with m.Elif(state == READ):
            issue = ~pending | self.o.ready
            for _, rp in banks:
                m.d.comb += [rp.addr.eq(w), rp.en.eq(issue)]
            with m.If(issue):
                m.d.sync += [pending.eq(1), q_pend.eq(q), w_pend.eq(w)]
                with m.If(w == nw - 1):
                    m.d.sync += [w.eq(0), q.eq(q + 1)]
                    with m.If(q == bq - 1):
                        m.d.sync += state.eq(DRAIN)
                with m.Else():
                    m.d.sync += w.eq(w + 1)
        with m.Else():                                  # DRAIN
            for _, rp in banks:
                m.d.comb += rp.en.eq(0)
            with m.If(~pending | self.o.ready):
                m.d.sync += [pending.eq(0), state.eq(IDLE)]

        # output stage: the bank of the pending read, masked to the row's valid lanes
        rd = Signal(16 * p)
        for b, (_, rp) in enumerate(banks):
            with m.If(q_pend == b):
                m.d.comb += rd.eq(rp.data)
        left = Signal(range(self.max_g + 1))
        m.d.comb += left.eq(g - w_pend * p)
        count = Signal(range(p + 1))
        if p == 1:        # per-row granularity: a position this row does not keep is a count-0
            kept = mg[q_pend].bit_select(w_pend, 1)     # beat (no max, no sum, probability 0)
            m.d.comb += count.eq(Mux(left != 0, ~fine | kept, 0))
        else:
            m.d.comb += count.eq(Mux(left < p, left, p))
        m.d.comb += [self.o.valid.eq(pending), self.o.payload.count.eq(count),
                     self.o.payload.last.eq(w_pend == nw - 1), self.o.payload.error.eq(0)]
        for i in range(p):
            m.d.comb += [
                self.o.payload.data[i].eq(Mux(i < count, rd[16 * i:16 * (i + 1)].as_signed(), 0)),
                self.o.payload.index[i].eq(Mux(i < count, w_pend * p + i, 0))]
        return m


class TileSoftmax(wiring.Component):
    """:class:`ScoreTile` -> :class:`attnforge.rtl.softmax.Softmax`: the RMMU's ``S^T`` beats of
    a query tile in, one probability row per query out (``prob_frac`` fraction bits, gathered
    positions as ``index``) -- the lane's SCORES -> SOFTMAX hand-off. The softmax format is the
    golden lane's (``in_frac = frac_bits``, ``out_frac = prob_frac``, ``max_len = max_t``).
    ``max_g`` must be a multiple of ``per_beat`` and at most ``max_t``."""

    def __init__(self, *, cols=2, in_bits=36, bq=8, max_g=32, per_beat=4, max_t=32,
                 frac_bits=8, prob_frac=12, block=None, int8_port=False):
        from .softmax import Softmax
        ib = max(1, (max_g - 1).bit_length())
        self.tile = ScoreTile(cols=cols, in_bits=in_bits, bq=bq, max_g=max_g,
                              per_beat=per_beat, index_bits=ib, block=block,
                              int8_port=int8_port)
        self.softmax = Softmax(per_beat=per_beat, max_len=max_t, in_bits=16, in_frac=frac_bits,
                               out_frac=prob_frac, index_bits=ib)
        super().__init__({
            "cmd": In(self.tile.cmd.signature.flip()),
            "s": In(self.tile.s.signature.flip()),
            **({"s8": In(self.tile.s8.signature.flip())} if int8_port else {}),
            "o": Out(self.softmax.o.signature),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.tile = self.tile
        m.submodules.softmax = self.softmax
        wiring.connect(m, wiring.flipped(self.cmd), self.tile.cmd)
        wiring.connect(m, wiring.flipped(self.s), self.tile.s)
        if self.tile.int8_port:
            wiring.connect(m, wiring.flipped(self.s8), self.tile.s8)
        wiring.connect(m, self.tile.o, self.softmax.i)
        wiring.connect(m, self.softmax.o, wiring.flipped(self.o))
        return m


class ProbBuffer(wiring.Component):
    """Probability rows of a query tile (the softmax's output, positions as ``index``) -> the
    A·V GEMM's activation beats (``O_b = P_b V_G``: ``A = P_b``, ``bq x G``).

    One bank per query, words of ``nrows`` probabilities (``nrows`` = the compute group's rows,
    one FX16 pass of K); an input beat (positions ``w*P .. w*P+count-1``, ``P`` dividing
    ``nrows``) writes one word lane-granularly. Then, as the RMMU streams ``A`` once per
    N-tile: for each of ``n_tiles`` N-tiles, for each pass ``kp``, for each query ``q``: one
    ``a`` beat whose word ``r`` is ``P[q, kp*nrows + r]`` (words ``>= nrows`` and positions
    ``>= G`` zero). Requires ``bq <= tile_m`` (one M-tile). Command ``cmd``: ``g`` (gathered
    positions), ``n_tiles`` (``ceil(d / cols)``)."""

    def __init__(self, *, rows=4, nrows=3, bq=8, max_g=32, per_beat=4, prob_bits=13,
                 index_bits=5, max_tiles=16):
        if nrows % per_beat or nrows > rows:
            raise ValueError(f"per_beat ({per_beat}) must divide nrows and nrows ({nrows}) "
                             f"fit the rows ({rows})")
        self.rows, self.nrows, self.bq, self.max_g = rows, nrows, bq, max_g
        self.per_beat, self.prob_bits, self.max_tiles = per_beat, prob_bits, max_tiles
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({
                "g": range(max_g + 1), "n_tiles": range(max_tiles + 1), "clear": 1}))),
            "i": In(row_signature(per_beat, unsigned(prob_bits), index_bits)),
            "a": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(16, rows)}))),
        })

    def elaborate(self, platform):
        m = Module()
        p, nr, bq = self.per_beat, self.nrows, self.bq
        words = -(-self.max_g // nr)
        g = Signal(range(self.max_g + 1))
        n_tiles = Signal(range(self.max_tiles + 1))
        passes = Signal(range(words + 1))
        q = Signal(range(bq))
        kp = Signal(range(words))
        nt = Signal(range(self.max_tiles))
        q_pend, kp_pend = Signal.like(q), Signal.like(kp)
        pending = Signal()
        banks = []
        for b in range(bq):
            mem = Memory(shape=16 * nr, depth=words, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.write_port(granularity=16), mem.read_port()))

        IDLE, WRITE, READ, DRAIN, CLEAR = range(5)
        state = Signal(range(5))
        with m.If(state == IDLE):
            m.d.comb += self.cmd.ready.eq(1)
            with m.If(self.cmd.valid):
                m.d.sync += [g.eq(self.cmd.payload.g), n_tiles.eq(self.cmd.payload.n_tiles),
                             passes.eq((self.cmd.payload.g + nr - 1) // nr), q.eq(0), kp.eq(0),
                             state.eq(Mux(self.cmd.payload.clear, CLEAR, WRITE))]
        with m.Elif(state == CLEAR):                    # per-row granularity: zero the words
            for wp, _ in banks:                         # (kept positions are written later)
                m.d.comb += [wp.addr.eq(kp), wp.data.eq(0), wp.en.eq(-1)]
            m.d.sync += kp.eq(kp + 1)
            with m.If(kp == passes - 1):
                m.d.sync += [kp.eq(0), state.eq(WRITE)]
        with m.Elif(state == WRITE):
            m.d.comb += self.i.ready.eq(1)
            pos0 = self.i.payload.index[0]
            with m.If(self.i.valid & (self.i.payload.count != 0)):
                lane0 = (pos0 % nr) // p                 # which group of P lanes in the word
                for b, (wp, _) in enumerate(banks):
                    m.d.comb += [wp.addr.eq(pos0 // nr),
                                 wp.data.eq(Cat(*[Cat(self.i.payload.data[i], Const(0, 16 - self.prob_bits))
                                                  for _ in range(nr // p) for i in range(p)]))]
                    with m.If(q == b):
                        for grp in range(nr // p):
                            with m.If(lane0 == grp):
                                m.d.comb += wp.en.eq(((1 << p) - 1) << (grp * p))
            with m.If(self.i.valid):
                with m.If(self.i.payload.last):
                    m.d.sync += q.eq(q + 1)
                    with m.If(q == bq - 1):
                        m.d.sync += [q.eq(0), kp.eq(0), nt.eq(0), state.eq(READ)]
        with m.Elif(state == READ):
            issue = ~pending | self.a.ready
            for _, rp in banks:
                m.d.comb += [rp.addr.eq(kp), rp.en.eq(issue)]
            with m.If(issue):
                m.d.sync += [pending.eq(1), q_pend.eq(q), kp_pend.eq(kp)]
                with m.If(q == bq - 1):
                    m.d.sync += q.eq(0)
                    with m.If(kp == passes - 1):
                        m.d.sync += [kp.eq(0), nt.eq(nt + 1)]
                        with m.If(nt == n_tiles - 1):
                            m.d.sync += state.eq(DRAIN)
                    with m.Else():
                        m.d.sync += kp.eq(kp + 1)
                with m.Else():
                    m.d.sync += q.eq(q + 1)
        with m.Else():                                  # DRAIN
            for _, rp in banks:
                m.d.comb += rp.en.eq(0)
            with m.If(~pending | self.a.ready):
                m.d.sync += [pending.eq(0), state.eq(IDLE)]

        rd = Signal(16 * nr)
        for b, (_, rp) in enumerate(banks):
            with m.If(q_pend == b):
                m.d.comb += rd.eq(rp.data)
        m.d.comb += self.a.valid.eq(pending)
        for r in range(nr):
            pos = kp_pend * nr + r
            m.d.comb += self.a.payload.data[r].eq(Mux(pos < g, rd[16 * r:16 * (r + 1)], 0))
        return m
